//! The `udptalk-client` binary: parse arguments, set up logging, signals and `--deadline`, call
//! [`client::run`], print how it ended and the summary, and decide the exit code, here alone.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use client::{
    BenchConfig, Command, End, Error, Interruption, Output, PingConfig, Report, Stop, tell,
};

fn main() -> ExitCode {
    let args = client::Args::parse();
    init_logging(args.verbose);
    if let Some(command) = &args.command {
        return ExitCode::from(measure(&args, command));
    }
    let (report, end) = match client::Config::from_args(&args) {
        Ok(config) => {
            let mut stop = Stop::new();
            if let Some(deadline) = config.deadline {
                stop = stop.with_deadline(deadline);
            }
            if let Err(e) = stop.listen_for_signals() {
                log::warn!(
                    "cannot catch signals ({e}); Ctrl-C will end the client without a summary"
                );
            }
            let input = client::Input::from_args(args.messages);
            client::run(&config, input, &mut std::io::stdout().lock(), &stop)
        }
        Err(e) => (Report::default(), Err(e)),
    };
    match &end {
        Err(e) => tell(format_args!("error: {e}")),
        Ok(End::Interrupted(deadline @ Interruption::DeadlinePassed { .. })) => {
            tell(format_args!("error: {deadline}"));
        }
        Ok(End::Interrupted(Interruption::Signal(_)) | End::Finished) => {}
    }
    if args.verbose > 0 || report.eventful() || matches!(end, Ok(End::Interrupted(_))) {
        tell(format_args!("summary: {report}"));
    }
    ExitCode::from(exit_code(&report, &end))
}

/// `ping` or `bench`: the statistics are printed however it ended (Ctrl-C included); exit 0
/// when anything answered, 3 when nothing did, or the error's code.
fn measure(args: &client::Args, command: &Command) -> u8 {
    let mut stop = Stop::new();
    if let Some(deadline) = args.deadline {
        stop = stop.with_deadline(deadline);
    }
    if let Err(e) = stop.listen_for_signals() {
        log::warn!("cannot catch signals ({e}); Ctrl-C will end the run without statistics");
    }
    let answered = match command {
        Command::Ping(ping) => PingConfig::from_args(args, ping).and_then(|config| {
            let mut out = std::io::stdout().lock();
            let summary = client::ping(&config, &mut out, &stop)?;
            let _ = write!(out, "\n{summary}");
            Ok(summary.answered())
        }),
        Command::Bench(bench) => BenchConfig::from_args(args, bench).and_then(|config| {
            let result = client::bench(&config, &stop)?;
            let mut out = std::io::stdout().lock();
            match bench.output {
                Output::Human => {
                    let _ = write!(out, "{result}");
                }
                Output::Json => {
                    let _ = writeln!(out, "{}", result.to_json());
                }
            }
            Ok(result.answered())
        }),
    };
    match answered {
        Ok(true) => 0,
        Ok(false) => 3,
        Err(e) => {
            tell(format_args!("error: {e}"));
            exit_code(&Report::default(), &Err(e))
        }
    }
}

/// The exit code, from how the run ended and what happened to its messages. An error or an
/// interruption ends the run and decides; otherwise the most serious outcome seen does:
/// 3 no reply, then 6 an error envelope, 5 a truncated reply, 0 all answered.
fn exit_code(report: &Report, end: &Result<End, Error>) -> u8 {
    match end {
        Err(
            Error::BadServer { .. }
            | Error::TooLarge { .. }
            | Error::NotText { .. }
            | Error::ArgNotUnicode { .. }
            | Error::Usage { .. },
        ) => 2,
        Err(Error::Refused { .. }) => 4,
        Err(
            Error::NotEnvelope { .. }
            | Error::UnreadableEnvelope { .. }
            | Error::Socket { .. }
            | Error::Capture { .. }
            | Error::Stdin { .. }
            | Error::Stdout { .. },
        ) => 1,
        Ok(End::Interrupted(Interruption::Signal(signal))) => 128 + signal.number(),
        Ok(End::Interrupted(Interruption::DeadlinePassed { .. })) => 3,
        Ok(End::Finished) if report.lost > 0 => 3,
        Ok(End::Finished) if report.server_errors > 0 => 6,
        Ok(End::Finished) if report.truncated > 0 => 5,
        Ok(End::Finished) => 0,
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
            // The same words as the lines `tell` writes: `warning:`, `error:`.
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(out, "{level}: {}", record.args())
        })
        .init();
}
