//! The `udptalk-server` binary: parse arguments, set up logging and Ctrl-C, call [`server::run`].

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;

fn main() -> ExitCode {
    let args = server::Args::parse();
    init_logging(args.verbose);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)) {
        log::warn!("cannot catch Ctrl-C ({e}); stop the server with SIGKILL instead");
    }
    match server::run(server::Config::from(&args), &stop) {
        Ok(summary) => {
            let _ = writeln!(std::io::stderr(), "summary: {summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|out, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(out, "{level}: {}", record.args())
        })
        .init();
}
