//! The Windows stage of `cargo xtask test`: `cargo check --workspace --all-targets --target
//! x86_64-pc-windows-gnu`, so that the server, the client and xtask keep building for Windows
//! from a Linux machine. `cargo check` compiles without linking, so no cross linker is needed;
//! only the target's standard library (`rustup target add x86_64-pc-windows-gnu`, which
//! `.ci/run` tries). Where that library is missing the stage is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tally::{Outcome, Tally};

/// The target checked: the one whose standard library rustup installs without a C toolchain.
pub const TARGET: &str = "x86_64-pc-windows-gnu";

/// The row's name in the run's tally.
const ROW: &str = "windows: cargo check --target x86_64-pc-windows-gnu";

/// Runs the check, or records the skip with the reason; fails when the check fails.
pub fn check(tally: &mut Tally) -> Result<(), String> {
    let sysroot = match sysroot() {
        Ok(sysroot) => sysroot,
        Err(reason) => {
            tally.record(ROW, Outcome::Skip(reason));
            return Ok(());
        }
    };
    if let Err(reason) = target_std(&sysroot, TARGET) {
        tally.record(ROW, Outcome::Skip(reason));
        return Ok(());
    }
    match crate::cargo(&["check", "--workspace", "--all-targets", "--target", TARGET]) {
        Ok(()) => {
            tally.record(ROW, Outcome::Pass(None));
            Ok(())
        }
        Err(error) => {
            tally.record(ROW, Outcome::Fail(vec![error.clone()]));
            Err(error)
        }
    }
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
            "xtask-windows-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )));
        let reason = target_std(&scratch.0, TARGET).err().unwrap_or_default();
        assert!(
            reason.contains("rustup target add x86_64-pc-windows-gnu"),
            "{reason}"
        );
        let lib = scratch.0.join("lib/rustlib").join(TARGET).join("lib");
        assert!(std::fs::create_dir_all(&lib).is_ok());
        assert_eq!(target_std(&scratch.0, TARGET), Ok(()));
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
