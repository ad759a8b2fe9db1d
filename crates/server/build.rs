//! Gives the crate the git revision it is built from, as `UDPTALK_GIT_REV` (`git rev-parse
//! --short HEAD`), for `--version`; `unknown` when there is no git or no repository (a source
//! tarball). The client has the same script: the two crates share no code.

use std::path::Path;
use std::process::Command;

fn main() {
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=UDPTALK_GIT_REV={rev}");
    println!("cargo:rerun-if-changed=build.rs");
    // Run again when HEAD moves: a commit moves the branch's ref (loose, or packed by gc), a
    // checkout moves HEAD. Only files that exist are named, since cargo reruns a script (and
    // so rebuilds the crate) on every build for a file that does not.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}

/// What git prints for `args`, trimmed; `None` when git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
