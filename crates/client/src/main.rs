//! The `udptalk-client` binary: parse arguments, set up logging, signals and `--deadline`, call
//! [`client::run`], print how it ended and the summary, and decide the exit code, here alone.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use client::json_lines::{self, Ending};
use client::{
    BenchConfig, Command, End, Error, Interruption, Output, PingConfig, Report, Stop, tell,
};

fn main() -> ExitCode {
    let args = client::Args::parse();
    init_logging(args.verbose);
    let json = args.output == Output::Json;
    if let Some(command) = &args.command {
        let (code, ending, error) = measure(&args, command);
        if json {
            let _ = write!(
                std::io::stdout(),
                "{}",
                json_lines::exit(code, ending, error)
            );
        }
        return ExitCode::from(code);
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
    let code = exit_code(&report, &end);
    if json {
        let (ending, error) = match &end {
            Ok(End::Finished) => (Ending::Finished, None),
            Ok(End::Interrupted(interruption)) => {
                (Ending::Interrupted, Some(interruption.to_string()))
            }
            Err(e) => (Ending::Error, Some(e.to_string())),
        };
        // Nothing can be said about a stdout that fails; the exit code still tells.
        let _ = write!(
            std::io::stdout(),
            "{}{}",
            json_lines::summary(&report),
            json_lines::exit(code, ending, error)
        );
    }
    ExitCode::from(code)
}

/// `ping` or `bench`: the statistics are printed however it ended (Ctrl-C included); exit 0
/// when anything answered, 3 when nothing did, or the error's code. Returns the code, how the
/// run ended and the error that ended it, for `--output json`'s `exit` line.
fn measure(args: &client::Args, command: &Command) -> (u8, Ending, Option<String>) {
    let mut stop = Stop::new();
    if let Some(deadline) = args.deadline {
        stop = stop.with_deadline(deadline);
    }
    if let Err(e) = stop.listen_for_signals() {
        log::warn!("cannot catch signals ({e}); Ctrl-C will end the run without statistics");
    }
    let ended = match command {
        Command::Ping(ping) => PingConfig::from_args(args, ping).and_then(|config| {
            let mut out = std::io::stdout().lock();
            let summary = client::ping(&config, &mut out, &stop)?;
            let _ = match args.output {
                Output::Human => write!(out, "\n{summary}"),
                Output::Json => write!(out, "{}", json_lines::ping_statistics(&summary)),
            };
            Ok((summary.answered(), summary.interrupted))
        }),
        Command::Bench(bench) => BenchConfig::from_args(args, bench).and_then(|config| {
            let result = client::bench(&config, &stop)?;
            let mut out = std::io::stdout().lock();
            let _ = match args.output {
                Output::Human => write!(out, "{result}"),
                Output::Json => writeln!(out, "{}", result.to_json()),
            };
            Ok((result.answered(), result.interrupted))
        }),
    };
    match ended {
        Ok((answered, interrupted)) => (
            if answered { 0 } else { 3 },
            if interrupted.is_some() {
                Ending::Interrupted
            } else {
                Ending::Finished
            },
            interrupted.map(|i| i.to_string()),
        ),
        Err(e) => {
            tell(format_args!("error: {e}"));
            let error = e.to_string();
            (
                exit_code(&Report::default(), &Err(e)),
                Ending::Error,
                Some(error),
            )
        }
    }
}

/// The exit code, from how the run ended and what happened to its messages. An error or an
/// interruption ends the run and decides; otherwise the most serious outcome seen does:
/// 3 no reply, then 6 an error envelope, 5 a truncated reply, 0 all answered. 4 (nothing
/// listens) and 7 (a host on the way refused) are errors: they end the run at once.
fn exit_code(report: &Report, end: &Result<End, Error>) -> u8 {
    match end {
        Err(
            Error::BadServer { .. }
            | Error::TooLarge { .. }
            | Error::NotText { .. }
            | Error::ArgNotUnicode { .. }
            | Error::Usage { .. }
            | Error::TooBigForPath { .. }
            | Error::BroadcastRefused { .. }
            | Error::Source { .. }
            | Error::Interface { .. },
        ) => 2,
        Err(Error::Refused { .. }) => 4,
        Err(Error::PathRefused { .. }) => 7,
        Err(
            Error::NotEnvelope { .. }
            | Error::UnreadableEnvelope { .. }
            | Error::Socket { .. }
            | Error::Option { .. }
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
