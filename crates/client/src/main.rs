//! The `udptalk-client` binary: parse arguments, set up logging, Ctrl-C and `--deadline`,
//! call [`client::run_with`], print the summary and map the outcome to an exit code.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Parser;
use client::{Error, Report, tell};

fn main() -> ExitCode {
    let args = client::Args::parse();
    init_logging(args.verbose);
    let verbose = args.verbose > 0;
    let config = match client::Config::from_args(&args) {
        Ok(config) => config,
        Err(e) => return fail(&e),
    };
    let report = Arc::new(Mutex::new(Report::default()));
    let on_signal = Arc::clone(&report);
    if let Err(e) = ctrlc::set_handler(move || {
        summarize(&on_signal, true);
        std::process::exit(130);
    }) {
        log::warn!("cannot catch Ctrl-C ({e}); no summary will be printed if it is pressed");
    }
    if let Some(deadline) = args.deadline {
        watch_deadline(deadline, Arc::clone(&report), verbose);
    }
    let input = client::Input::from_args(args.messages);
    let result = client::run_with(&config, input, &mut std::io::stdout().lock(), &report);
    summarize(&report, verbose);
    match result {
        Ok(()) => ExitCode::from(lock(&report).exit_code()),
        Err(e) => fail(&e),
    }
}

/// Ends the run when `deadline` passes, whatever it is waiting for (a reply, or a line of input).
fn watch_deadline(deadline: Duration, report: Arc<Mutex<Report>>, verbose: bool) {
    std::thread::spawn(move || {
        std::thread::sleep(deadline);
        tell(format_args!(
            "error: {}",
            Error::Deadline { after: deadline }
        ));
        summarize(&report, verbose);
        std::process::exit(3);
    });
}

/// Prints the summary on stderr when asked, or when anything was resent or lost.
fn summarize(report: &Mutex<Report>, always: bool) {
    let report = lock(report);
    if always || report.eventful() {
        tell(format_args!("summary: {report}"));
    }
}

fn lock(report: &Mutex<Report>) -> std::sync::MutexGuard<'_, Report> {
    report.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fail(e: &Error) -> ExitCode {
    tell(format_args!("error: {e}"));
    ExitCode::from(e.exit_code())
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
