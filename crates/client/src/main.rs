//! The `udptalk-client` binary: parse arguments, set up logging, call [`client::run`].

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = client::Args::parse();
    init_logging(args.verbose);
    let result = client::Config::from_args(&args).and_then(|config| {
        let input = client::Input::from_args(args.messages);
        client::run(&config, input, &mut std::io::stdout().lock())
    });
    match result {
        Ok(report) => ExitCode::from(report.exit_code()),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e}");
            ExitCode::from(e.exit_code())
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
