//! `cargo xtask test`: the one test command, and what CI runs.
//!
//! Stages, in order, each announced, the first failure ending the run with a non-zero exit:
//! `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings`,
//! `cargo test --workspace`, `cargo build --workspace --bins` (already done by the tests'
//! build, so it only checks), then the loopback matrix of [`crate::matrix`].

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Skip fmt, clippy and cargo test: build the binaries and run only the matrix.
    #[arg(long)]
    matrix_only: bool,
    /// Run only the matrix rows whose name contains this text (e.g. `v6`, `socat`, `echo`).
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
}

/// Runs the stages, stopping at the first that fails.
pub fn run(args: &Args) -> Result<(), String> {
    if !args.matrix_only {
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
    crate::cargo(&["build", "--workspace", "--bins"])?;
    println!("==> loopback matrix");
    crate::matrix::run(args.filter.as_deref())
}
