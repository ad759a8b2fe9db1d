//! `cargo xtask dist`: release binaries, shell completions and man pages, ready to install,
//! under `target/dist/` (or `$CARGO_TARGET_DIR/dist/`):
//!
//! ```text
//! target/dist/
//!   bin/udptalk-server, bin/udptalk-client
//!   completions/bash/udptalk-server, completions/bash/udptalk-client
//!   completions/zsh/_udptalk-server, completions/zsh/_udptalk-client
//!   completions/fish/udptalk-server.fish, completions/fish/udptalk-client.fish
//!   man/man1/udptalk-server.1, udptalk-client.1, udptalk-client-ping.1, udptalk-client-bench.1
//! ```
//!
//! The completions (clap_complete) and man pages (clap_mangen) are generated from the programs'
//! own clap definitions (`server::Args`, `client::Args`), so they cover every option there is; a
//! test below checks that each long option appears in each of them. Nothing here needs git or
//! a tag: the version the pages show is the one `--version` prints.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory};
use clap_complete::Shell;

/// The programs: their binary names and clap definitions.
fn programs() -> [(&'static str, Command); 2] {
    [
        ("udptalk-server", server::Args::command()),
        ("udptalk-client", client::Args::command()),
    ]
}

/// The shells completed, with where each one's script goes under `completions/` (the names
/// each shell looks for: bash-completion's `NAME`, zsh's `_NAME` in `$fpath`, fish's
/// `NAME.fish`).
const SHELLS: [(Shell, &str, &str, &str); 3] = [
    (Shell::Bash, "bash", "", ""),
    (Shell::Zsh, "zsh", "_", ""),
    (Shell::Fish, "fish", "", ".fish"),
];

/// One generated file: its path under `target/dist/` and its bytes.
struct Generated {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// Builds the release binaries and writes everything under the dist folder, emptied first.
pub fn run() -> Result<(), String> {
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "server",
        "--package",
        "client",
        "--bins",
    ])?;
    let target = target_dir();
    let dist = target.join("dist");
    if dist.exists() {
        fs::remove_dir_all(&dist)
            .map_err(|e| format!("cannot empty {}: {e}; remove it by hand", dist.display()))?;
    }
    let mut files = Vec::new();
    for (name, _) in programs() {
        let binary = format!("{name}{}", std::env::consts::EXE_SUFFIX);
        let from = target.join("release").join(&binary);
        let bytes = fs::read(&from).map_err(|e| {
            format!(
                "cannot read {} ({e}); did the release build run?",
                from.display()
            )
        })?;
        files.push(Generated {
            path: Path::new("bin").join(binary),
            bytes,
        });
    }
    files.extend(completions()?);
    files.extend(man_pages()?);
    for file in &files {
        write(&dist, file)?;
    }
    println!("==> {} files under {}:", files.len(), dist.display());
    for file in &files {
        println!("    {}", file.path.display());
    }
    Ok(())
}

/// Writes `file` under `dist`, executable when it is a binary.
fn write(dist: &Path, file: &Generated) -> Result<(), String> {
    let path = dist.join(&file.path);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    fs::write(&path, &file.bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    if file.path.starts_with("bin") {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
    }
    Ok(())
}

/// `$CARGO_TARGET_DIR` (relative to the project root) or `target/`.
fn target_dir() -> PathBuf {
    let root = crate::project_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Every program's completion script for every shell.
fn completions() -> Result<Vec<Generated>, String> {
    let mut files = Vec::new();
    for (name, mut command) in programs() {
        for (shell, folder, prefix, suffix) in SHELLS {
            let mut bytes = Vec::new();
            clap_complete::generate(shell, &mut command, name, &mut bytes);
            if shell == Shell::Bash {
                bytes = fix_bash_subcommands(name, &bytes);
            }
            files.push(Generated {
                path: Path::new("completions")
                    .join(folder)
                    .join(format!("{prefix}{name}{suffix}")),
                bytes,
            });
        }
    }
    Ok(files)
}

/// Works around clap_complete's bash script for a binary whose name has a hyphen
/// (clap-rs/clap#6421, open in 4.6.12): the loop that follows the words typed spells the state
/// `udptalk__client__subcmd__bench`, but the `case` arms spell it
/// `udptalk__subcmd__client__subcmd__bench`, so no subcommand's options were ever completed.
/// The arms are respelled as the loop spells them; once clap_complete is fixed, nothing
/// matches and this does nothing (the bash test below checks the behaviour either way).
fn fix_bash_subcommands(name: &str, script: &[u8]) -> Vec<u8> {
    let script = String::from_utf8_lossy(script);
    if !name.contains('-') {
        return script.into_owned().into_bytes();
    }
    let arm = format!("{}__subcmd__", name.replace('-', "__subcmd__"));
    let state = format!("{}__subcmd__", name.replace('-', "__"));
    script.replace(&arm, &state).into_bytes()
}

/// Every program's man page, and one per subcommand (`udptalk-client-ping.1`), as clap_mangen
/// names them.
fn man_pages() -> Result<Vec<Generated>, String> {
    let mut files = Vec::new();
    for (_, command) in programs() {
        let mut command = command.disable_help_subcommand(true);
        command.build();
        man_page(command, &mut files)?;
    }
    Ok(files)
}

fn man_page(command: Command, files: &mut Vec<Generated>) -> Result<(), String> {
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        man_page(sub.clone(), files)?;
    }
    let man = clap_mangen::Man::new(command);
    let mut bytes = Vec::new();
    man.render(&mut bytes)
        .map_err(|e| format!("cannot render {}: {e}", man.get_filename()))?;
    files.push(Generated {
        path: Path::new("man").join("man1").join(man.get_filename()),
        bytes,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every long option of `command` and its subcommands, with the name of the command that
    /// has it (`udptalk-client ping`), help and version included.
    fn long_options(command: &Command, path: &str, out: &mut Vec<(String, String)>) {
        for arg in command.get_arguments().filter(|arg| !arg.is_hide_set()) {
            if let Some(long) = arg.get_long() {
                out.push((path.to_owned(), long.to_owned()));
            }
        }
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            long_options(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    fn text(file: &Generated) -> String {
        String::from_utf8_lossy(&file.bytes).into_owned()
    }

    fn options_of(name: &str) -> Vec<(String, String)> {
        let mut command = programs()
            .into_iter()
            .find(|(program, _)| *program == name)
            .map(|(_, command)| command)
            .unwrap_or_default()
            .disable_help_subcommand(true);
        command.build();
        let mut options = Vec::new();
        long_options(&command, name, &mut options);
        options
    }

    #[test]
    fn every_long_option_is_completed_in_every_shell() -> Result<(), String> {
        let files = completions()?;
        assert_eq!(files.len(), 6, "two programs, three shells");
        for (name, _) in programs() {
            let options = options_of(name);
            assert!(options.len() > 10, "{name}: {options:?}");
            for (shell, folder, prefix, suffix) in SHELLS {
                let path = Path::new("completions")
                    .join(folder)
                    .join(format!("{prefix}{name}{suffix}"));
                let script = files
                    .iter()
                    .find(|file| file.path == path)
                    .map(text)
                    .ok_or(format!("no {}", path.display()))?;
                for (command, long) in &options {
                    // fish names long options `-l NAME`; bash and zsh write `--NAME`.
                    let needle = match shell {
                        Shell::Fish => format!("-l {long}"),
                        _ => format!("--{long}"),
                    };
                    assert!(
                        script.contains(&needle),
                        "{}: no {needle} (of `{command}`)",
                        path.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// What bash completes for `words` (the last one being typed) with `name`'s script;
    /// `None` (with the reason said) where bash is missing.
    fn bash_completes(name: &str, words: &[&str]) -> Result<Option<String>, String> {
        let files = completions()?;
        let script = files
            .iter()
            .find(|file| file.path == Path::new("completions/bash").join(name))
            .map(text)
            .ok_or(format!("no bash script for {name}"))?;
        let function = format!("_{}", name.replace('-', "__"));
        let cword = words.len() - 1;
        let (cur, prev) = (words[cword], words[cword.saturating_sub(1)]);
        let call = format!(
            "{script}\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\n{function} {name} '{cur}' '{prev}'\n\
             echo \"${{COMPREPLY[@]}}\"\n",
            words.join(" ")
        );
        match std::process::Command::new("bash")
            .arg("-c")
            .arg(call)
            .output()
        {
            Ok(output) if output.status.success() => Ok(Some(
                String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            )),
            Ok(output) => Err(format!(
                "bash failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )),
            Err(e) => {
                eprintln!("skipped: no bash to run the completions in ({e})");
                Ok(None)
            }
        }
    }

    #[test]
    fn bash_completes_options_after_a_subcommand() -> Result<(), String> {
        let cases = [
            (
                "udptalk-server",
                &["udptalk-server", "--ipv"][..],
                "--ipv6-only",
            ),
            (
                "udptalk-client",
                &["udptalk-client", "--dead"],
                "--deadline",
            ),
            (
                "udptalk-client",
                &["udptalk-client", "bench", "--dur"],
                "--duration",
            ),
            (
                "udptalk-client",
                &["udptalk-client", "ping", "--interv"],
                "--interval",
            ),
        ];
        for (name, words, expected) in cases {
            if let Some(completed) = bash_completes(name, words)? {
                assert_eq!(completed, expected, "{words:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn every_long_option_is_in_its_commands_man_page() -> Result<(), String> {
        let pages = man_pages()?;
        let names: Vec<_> = pages.iter().map(|page| page.path.clone()).collect();
        for (name, _) in programs() {
            for (command, long) in options_of(name) {
                let path = Path::new("man")
                    .join("man1")
                    .join(format!("{}.1", command.replace(' ', "-")));
                let page = pages
                    .iter()
                    .find(|page| page.path == path)
                    .map(text)
                    .ok_or(format!("no {} among {names:?}", path.display()))?;
                // roff writes each `-` of an option as `\-`.
                let needle = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    page.contains(&needle),
                    "{}: no {needle} (--{long})",
                    path.display()
                );
            }
        }
        Ok(())
    }
}
