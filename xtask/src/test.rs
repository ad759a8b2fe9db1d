//! `cargo xtask test`: the one test command, and what CI runs.
//!
//! Stages, in order, each announced, the first failure ending the run with a non-zero exit:
//! `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings`,
//! `cargo test --workspace`, `cargo check --workspace --all-targets --target T` for Windows
//! and macOS ([`crate::cross`]: skipped with the reason where a target's standard library is
//! missing), `cargo build --workspace --bins` (already done by the tests' build, so it only
//! checks), then the loopback matrix of [`crate::matrix`], the faults stage
//! of [`crate::faults`], the strace rows of [`crate::strace`] and the lab of [`crate::lab`]
//! (test hosts in network namespaces; skipped with the reason without root, `ip` or `nft`).
//! They share one [`Tally`](crate::tally::Tally), so the run ends with one line,
//! `N passed, M failed, K skipped`, counting the rows of all.

use crate::tally::{Outcome, Tally};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Skip fmt, clippy and cargo test: build the binaries and run only the matrix.
    #[arg(long, conflicts_with = "faults_only")]
    matrix_only: bool,
    /// Skip fmt, clippy, cargo test and the matrix: build the binaries and run only the faults
    /// (and the strace and lab rows).
    #[arg(long)]
    faults_only: bool,
    /// Run only the matrix, faults, strace and lab rows whose name contains this text (e.g.
    /// `v6`, `socat`, `flood`, `mtu`).
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
}

/// Runs the stages, stopping at the first that fails.
pub fn run(args: &Args) -> Result<(), String> {
    if !args.matrix_only && !args.faults_only {
        crate::cargo(&["fmt", "--all", "--check"])?;
        crate::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
        crate::cargo(&["test", "--workspace"])?;
    }
    let mut tally = Tally::default();
    if !args.matrix_only && !args.faults_only {
        println!("==> other systems (the workspace builds for Windows and macOS)");
        crate::cross::check(&mut tally)?;
    }
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let filter = args.filter.as_deref();
    if !args.faults_only {
        println!("==> loopback matrix");
        if cfg!(unix) {
            crate::matrix::run(filter, &mut tally)?;
        } else {
            tally.record(
                "loopback matrix",
                Outcome::Skip(
                    "Unix only: its rows pass non-UTF-8 bytes as arguments (a Windows command \
                     line is UTF-16), stop servers with SIGTERM and run nc, socat and python3 \
                     peers"
                        .to_owned(),
                ),
            );
        }
    }
    if !args.matrix_only {
        println!("==> faults");
        crate::faults::run(filter, &mut tally)?;
        println!("==> strace (--trace against the calls strace sees)");
        crate::strace::run(&crate::Bins::locate()?, filter, &mut tally)?;
        println!("==> lab (test hosts in network namespaces)");
        crate::lab::stage(&crate::Bins::locate()?, filter, false, &mut tally);
    }
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    if tally.failed == 0 {
        Ok(())
    } else {
        Err(format!("{} rows failed", tally.failed))
    }
}
