//! The `udptalk-server` binary: parse arguments, start the output queues and logging, catch
//! SIGINT and SIGTERM, call [`server::run`], and decide the exit code, here and only here.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use server::{Console, JsonLines, LineQueue};

/// How long the output queues get to drain at exit. Whatever stdout is doing (a blocked pipe,
/// a paused terminal), the server exits within this after it stops serving.
const EXIT_WAIT: Duration = Duration::from_millis(250);

fn main() -> ExitCode {
    let args = server::Args::parse();
    if let Err(message) = args.check() {
        // Bad usage, exit 2, worded and shown as clap shows its own.
        server::Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, message)
            .exit();
    }
    let console = Console::start();
    init_logging(args.verbose, console.stderr.clone());
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = catch_stop_signals(&stop) {
        log::warn!("cannot catch SIGINT/SIGTERM ({e}); stop the server with SIGKILL instead");
    }
    let json = args.output == server::Output::Json;
    let code = match server::run(server::Config::from(&args), &stop, &console) {
        Ok(summary) => {
            console
                .stderr
                .push(format!("summary: {summary}\n").as_bytes());
            if json {
                console.stdout.push(&JsonLines::summary(&summary));
                console.stdout.push(&JsonLines::exit(0, None));
            }
            // SIGINT and SIGTERM are how a server is meant to stop: success, as service
            // managers expect.
            ExitCode::SUCCESS
        }
        Err(e) => {
            console.stderr.push(format!("error: {e}\n").as_bytes());
            if json {
                console
                    .stdout
                    .push(&JsonLines::exit(1, Some(&e.to_string())));
            }
            ExitCode::FAILURE
        }
    };
    console.finish(EXIT_WAIT);
    code
}

/// Sets `stop` on SIGINT (Ctrl-C) and SIGTERM; the server's watch sees it within 250 ms.
#[cfg(unix)]
fn catch_stop_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    signal_hook::flag::register(SIGINT, Arc::clone(stop))?;
    signal_hook::flag::register(SIGTERM, Arc::clone(stop))?;
    Ok(())
}

/// Sets `stop` on Ctrl-C (and, on Windows, on the console being closed).
#[cfg(not(unix))]
fn catch_stop_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    let flag = Arc::clone(stop);
    ctrlc::set_handler(move || flag.store(true, std::sync::atomic::Ordering::Relaxed))
        .map_err(std::io::Error::other)
}

/// Log lines go to stderr through its queue, so that a blocked stderr never blocks serving.
fn init_logging(verbose: u8, stderr: LineQueue) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format(|out, record| {
            let level = match record.level() {
                log::Level::Error => "error",
                log::Level::Warn => "warning",
                log::Level::Info => "info",
                log::Level::Debug => "debug",
                log::Level::Trace => "trace",
            };
            writeln!(out, "{level}: {}", record.args())
        })
        .target(env_logger::Target::Pipe(Box::new(stderr)))
        .init();
}
