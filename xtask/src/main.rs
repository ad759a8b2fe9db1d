//! udptalk's tasks, run as `cargo xtask TASK` (the alias is in `.cargo/config.toml`).
//!
//! - `cargo xtask demo` builds the binaries and plays the tutorial on loopback; `--diagram`
//!   draws each exchange's traced socket calls as the tutorial's figure (text and SVG).
//! - `cargo xtask test` is the one test command, and the CI contract: fmt, clippy, the tests,
//!   the loopback matrix of `udptalk-server` × `udptalk-client` and independent peers, then the
//!   faults stage (loss, duplication, delay, reordering, loops started by a forged datagram,
//!   forged acks, a flood), the strace rows and the lab.
//! - `cargo xtask lab` runs only the lab: test hosts in network namespaces (a router with a
//!   firewall and a path MTU of 1,280, a bridge with two servers), as root; `--keep` leaves it
//!   up for debugging.
//! - `cargo xtask dist` writes release binaries, shell completions and man pages under
//!   `target/dist/`.
//! - `cargo xtask bench` measures udptalk against a bare echo loop and sockperf in interleaved
//!   rounds and writes `target/bench/report.json` and `report.svg`.
//!
//! Each task is a module with one `run` function. Cargo is invoked through `$CARGO`, so the
//! toolchain that runs xtask also builds and checks the workspace. xtask builds on Windows too,
//! and `demo` runs there; the matrix (it passes invalid UTF-8 as arguments, which only Unix
//! command lines carry), the faults and the bench (they read `/proc`), the strace rows and the
//! lab (Linux network namespaces) are Unix only and are skipped elsewhere with the reason.

mod bench;
mod cross;
mod demo;
mod dist;
mod faults;
mod forge;
mod lab;
mod matrix;
mod peers;
mod schema;
mod strace;
mod tally;
mod test;
mod trace;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use clap::{Parser, Subcommand};

/// udptalk's build tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build, then play the tutorial's exchanges on loopback, checking every reply
    /// (--diagram: draw each exchange's socket calls as a sequence diagram, text and SVG).
    Demo(demo::Args),
    /// fmt --check, clippy -D warnings, cargo test, the Windows check, the loopback matrix,
    /// then the faults, the strace rows and the lab.
    Test(test::Args),
    /// Measure udptalk against a bare echo loop (the cap) and sockperf: interleaved rounds,
    /// one table, target/bench/report.json and report.svg. Release builds; about 7 minutes
    /// (--quick: about one). proto's micro-benchmarks are separate and not run here:
    /// `cargo bench -p proto --bench codec -- --quick`.
    Bench(bench::Args),
    /// Release binaries, bash/zsh/fish completions and man pages under target/dist/.
    Dist,
    /// Build, then run only the lab rows: test hosts in network namespaces (a router with a
    /// firewall and a path MTU of 1280, a bridge with two servers). Needs root, `ip` and `nft`;
    /// without them every row is skipped with the reason.
    Lab(lab::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Demo(args) => demo::run(&args),
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Dist => dist::run(),
        Task::Lab(args) => lab::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: the parent of xtask's own directory.
pub fn project_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Runs `cargo ARGS` in the project root with the terminal's stdio, announcing it first and
/// failing with the command's name when it fails.
pub fn cargo(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let shown = format!("cargo {}", args.join(" "));
    println!("==> {shown}");
    let started = Instant::now();
    let status = Command::new(cargo)
        .args(args)
        .current_dir(project_root())
        .status()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if status.success() {
        println!("    ok: {shown} ({:.1}s)", started.elapsed().as_secs_f64());
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// The two binaries `cargo build --workspace --bins` leaves in the target directory.
pub struct Bins {
    /// `udptalk-server`.
    pub server: PathBuf,
    /// `udptalk-client`.
    pub client: PathBuf,
}

impl Bins {
    /// Finds the debug binaries in `$CARGO_TARGET_DIR` or `target/`, failing when one is missing.
    pub fn locate() -> Result<Bins, String> {
        let root = project_root();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) => root.join(dir),
            None => root.join("target"),
        };
        let debug = target.join("debug");
        let find = |name: &str| {
            let path = debug.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
            if path.is_file() {
                Ok(path)
            } else {
                Err(format!(
                    "{} is missing: run `cargo build --workspace --bins`",
                    path.display()
                ))
            }
        };
        Ok(Bins {
            server: find("udptalk-server")?,
            client: find("udptalk-client")?,
        })
    }
}
