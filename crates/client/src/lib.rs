//! `client` is udptalk's UDP client: the tutorial's `udp-client1.py` (send the messages given on
//! the command line) and `udp-client2.py` (send each line typed or piped) as one [`Client`] that
//! never waits forever and always says why a message got no answer.
//!
//! [`Client::connect`] opens a *connected* UDP socket, so the kernel drops datagrams from any
//! other address and reports ICMP "port unreachable" as a refusal; [`Client::exchange`] sends one
//! message and waits, at most `--timeout`, for its answer. [`run`] drives the exchanges, prints the
//! tutorial's lines and returns a [`Report`] whose [`Report::exit_code`] is the most serious
//! outcome seen.
//!
//! `main.rs` only parses arguments into a [`Config`] and maps an [`Error`] to an exit code.

mod args;
mod backoff;
mod client;
mod error;
mod report;

pub use args::{Args, Config, Encoding};
pub use backoff::Backoff;
pub use client::{Client, Exchange, Outcome};
pub use error::Error;
pub use report::Report;

use std::ffi::OsString;
use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Mutex, PoisonError};

use proto::text::{PROMPT, Printable, SENT};

/// Where the messages come from.
pub enum Input {
    /// Messages given on the command line: `Server message: REPLY` (udp-client1.py).
    Messages(Vec<OsString>),
    /// One message per line of this reader: the bare reply (udp-client2.py). `prompt` asks for
    /// each line first, as on a terminal.
    Lines {
        /// The lines.
        reader: Box<dyn BufRead>,
        /// Whether to print `Please input any message: ` before each line.
        prompt: bool,
    },
}

impl Input {
    /// The messages of the command line, or, when there are none, the lines of stdin (with the
    /// tutorial's prompt when stdin is a terminal).
    pub fn from_args(messages: Vec<OsString>) -> Input {
        if messages.is_empty() {
            let stdin = io::stdin();
            let prompt = stdin.is_terminal();
            Input::Lines {
                reader: Box::new(stdin.lock()),
                prompt,
            }
        } else {
            Input::Messages(messages)
        }
    }
}

/// Sends every message of `input` to the server of `config`, one at a time, printing the
/// tutorial's lines on `out`; returns when the last answer has arrived (or the last wait ended).
pub fn run(config: &Config, input: Input, out: &mut dyn Write) -> Result<Report, Error> {
    let report = Mutex::new(Report::default());
    let result = run_with(config, input, out, &report);
    let report = report.into_inner().unwrap_or_else(PoisonError::into_inner);
    result.map(|()| report)
}

/// [`run`], keeping its [`Report`] in `report` as it goes, so that another thread (a Ctrl-C
/// handler) can print it at any time.
pub fn run_with(
    config: &Config,
    input: Input,
    out: &mut dyn Write,
    report: &Mutex<Report>,
) -> Result<(), Error> {
    let mut client = Client::connect(config)?;
    match input {
        Input::Messages(messages) => {
            // Refuse a message that cannot be sent before anything is sent, so a run is never
            // half done because of a usage error.
            for message in &messages {
                client.check_message(message.as_bytes())?;
            }
            for message in &messages {
                exchange(
                    &mut client,
                    message.as_bytes(),
                    "Server message: ",
                    out,
                    report,
                )?;
            }
        }
        Input::Lines { mut reader, prompt } => {
            let mut line = Vec::new();
            let mut number = 0u64;
            loop {
                if prompt {
                    write_out(out, PROMPT.as_bytes())?;
                }
                number += 1;
                if !read_line(&mut *reader, client.max_payload(), &mut line, number)? {
                    if prompt {
                        write_out(out, b"\n")?;
                    }
                    break;
                }
                exchange(&mut client, &line, "", out, report)?;
            }
        }
    }
    Ok(())
}

/// One message: send it, print `Sent a message.`, wait, print the answer after `label`.
fn exchange(
    client: &mut Client,
    message: &[u8],
    label: &str,
    out: &mut dyn Write,
    report: &Mutex<Report>,
) -> Result<(), Error> {
    let exchange = client.exchange(message, || write_out(out, format!("{SENT}\n").as_bytes()))?;
    // Held only to record, never while writing, so a Ctrl-C handler printing it cannot wait on
    // a blocked stdout.
    report
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .record(&exchange);
    match exchange.outcome {
        Outcome::Reply { text, len } => {
            write_out(out, format!("{label}{}\n", Printable(&text)).as_bytes())?;
            if len > text.len() {
                tell(format_args!(
                    "warning: truncated: {len} bytes, buffer {} (the reply was cut; raise \
                     --buffer to see all of it)",
                    text.len()
                ));
            }
        }
        Outcome::ServerError { code, message } => {
            let line = format!("Server error: {code}: {message}");
            write_out(out, format!("{}\n", Printable(line.as_bytes())).as_bytes())?;
        }
        Outcome::NoReply {
            peer,
            after,
            attempts,
        } => {
            tell(format_args!(
                "error: {}",
                Error::NoReply {
                    peer,
                    after,
                    attempts
                }
            ));
        }
    }
    if let Some(rtt) = exchange.rtt {
        log::info!("reply in {:.3} ms", rtt.as_secs_f64() * 1e3);
    }
    Ok(())
}

/// Reads one line into `line`, without its `\n` or `\r\n`; `false` at end of input. A line
/// longer than `max` is refused rather than cut.
fn read_line(
    reader: &mut dyn BufRead,
    max: usize,
    line: &mut Vec<u8>,
    number: u64,
) -> Result<bool, Error> {
    line.clear();
    // Room for the longest datagram plus "\r\n", and one byte more to see that a line is too long.
    let cap = max as u64 + 3;
    let read = reader
        .take(cap)
        .read_until(b'\n', line)
        .map_err(|source| Error::Stdin { source })?;
    if read == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
    if line.len() > max {
        return Err(Error::LineTooLarge { number, max });
    }
    Ok(true)
}

/// Writes a line for the user on stderr, whatever the log level. Nothing can be done if stderr is closed.
pub fn tell(line: std::fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "{line}");
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<(), Error> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Stdout { source })
}
