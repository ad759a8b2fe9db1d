//! The other systems' stage of `cargo xtask test`: `cargo check --workspace --all-targets
//! --target T` for Windows (x86_64-pc-windows-gnu) and macOS (x86_64-apple-darwin), so that the
//! server, the client and xtask keep building there from a Linux machine: their socket code
//! differs by `#[cfg]` (Linux's error queue, path MTU and batches; Windows' handles).
//! `cargo check` compiles without linking, so no cross linker is needed; only each target's
//! standard library (`rustup target add T`, which `.ci/run` tries). Where that library is
//! missing the target's row is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tally::{Outcome, Tally};

/// The targets checked, by the system's name: those whose standard library rustup installs
/// without a C toolchain.
pub const TARGETS: [(&str, &str); 2] = [
    ("windows", "x86_64-pc-windows-gnu"),
    ("macos", "x86_64-apple-darwin"),
];

/// Runs the checks, or records each skip with the reason; fails when a check fails.
pub fn check(tally: &mut Tally) -> Result<(), String> {
    let sysroot = sysroot();
    for (system, target) in TARGETS {
        let row = format!("{system}: cargo check --target {target}");
        let ready = sysroot
            .clone()
            .and_then(|sysroot| target_std(&sysroot, target));
        if let Err(reason) = ready {
            tally.record(&row, Outcome::Skip(reason));
            continue;
        }
        match crate::cargo(&["check", "--workspace", "--all-targets", "--target", target]) {
            Ok(()) => tally.record(&row, Outcome::Pass(None)),
            Err(error) => {
                tally.record(&row, Outcome::Fail(vec![error.clone()]));
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The sysroot of the `rustc` that cargo uses here (`$RUSTC`, else `rustc` run in the project
/// root, so that rustup picks the project's toolchain), or why it cannot be read.
fn sysroot() -> Result<PathBuf, String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let shown = format!("{} --print sysroot", Path::new(&rustc).display());
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .current_dir(crate::project_root())
        .output()
        .map_err(|e| format!("cannot run `{shown}` to find the target's standard library: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8(output.stdout)
        .map_err(|_| format!("`{shown}` printed a path that is not UTF-8"))?;
    match text.trim() {
        "" => Err(format!("`{shown}` printed nothing")),
        path => Ok(PathBuf::from(path)),
    }
}

/// `Ok` when `sysroot` holds the standard library of `target` (its `lib/rustlib/TARGET/lib`
/// directory); else the skip reason, with the command that installs it.
fn target_std(sysroot: &Path, target: &str) -> Result<(), String> {
    let lib = sysroot.join("lib").join("rustlib").join(target).join("lib");
    if lib.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "the {target} standard library is not installed ({} is missing): run `rustup \
             target add {target}`",
            lib.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory under the system's temporary directory, removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_missing_standard_library_is_a_skip_that_says_how_to_install_it() {
        let scratch = Scratch(std::env::temp_dir().join(format!(
            "xtask-cross-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )));
        for (_, target) in TARGETS {
            let reason = target_std(&scratch.0, target).err().unwrap_or_default();
            assert!(
                reason.contains(&format!("rustup target add {target}")),
                "{reason}"
            );
            let lib = scratch.0.join("lib/rustlib").join(target).join("lib");
            assert!(std::fs::create_dir_all(&lib).is_ok());
            assert_eq!(target_std(&scratch.0, target), Ok(()));
        }
    }

    #[test]
    fn the_toolchain_running_the_tests_has_a_sysroot_with_a_standard_library() {
        // At least the host's own standard library is there: the detection finds it.
        let sysroot = match sysroot() {
            Ok(sysroot) => sysroot,
            Err(reason) => panic!("{reason}"),
        };
        let targets: Vec<String> = std::fs::read_dir(sysroot.join("lib/rustlib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            targets
                .iter()
                .any(|target| target_std(&sysroot, target).is_ok()),
            "no target's standard library under {}: {targets:?}",
            sysroot.display()
        );
    }
}
