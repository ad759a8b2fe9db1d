//! `client` is udptalk's UDP client: the tutorial's `udp-client1.py` (send the messages given on
//! the command line) and `udp-client2.py` (send each line typed or piped) as one [`Client`] that
//! never waits forever and always says why a message got no answer.
//!
//! [`Client::connect`] opens a *connected* UDP socket, so the kernel drops datagrams from any
//! other address and reports ICMP "port unreachable" as a refusal; [`Client::exchange`] sends one
//! message and waits, at most `--timeout`, for its answer. [`run`] drives the exchanges, prints the
//! tutorial's lines and returns the run's [`Report`] and how it ended: [`End::Finished`],
//! [`End::Interrupted`] (a signal, or `--deadline`, seen by [`Stop`]), or an [`Error`].
//!
//! With `--pcap FILE` or `--hexdump` ([`Capture`]), the socket hands a copy of every datagram
//! it sends and receives to a tap: a pcap record in the file, a hex dump on stdout.
//!
//! `main.rs` only parses arguments into a [`Config`], calls [`run`] and decides the exit code
//! from what it returns. The operating system is called from `sys.rs` alone.

mod args;
mod backoff;
mod bench;
mod capture;
mod charset;
mod client;
mod collect;
mod editor;
mod error;
mod icmp;
mod input;
pub mod json_lines;
mod options;
mod ping;
mod probes;
mod report;
mod rtt;
mod stop;
mod sys;
mod trace;
mod window;

pub use args::{
    Args, BenchArgs, Command, Config, Encoding, MAX_DURATION, Output, PingArgs, resolve_server,
};
pub use backoff::Backoff;
pub use bench::{BenchConfig, BenchResult, bench};
pub use capture::Capture;
pub use client::{Client, Exchange, NoReply, Outcome, Outgoing};
pub use error::{Error, Which};
pub use icmp::{Meaning, Origin, PathError};
pub use input::Input;
pub use options::SocketOptions;
pub use ping::{PingConfig, PingSummary, ping};
pub use probes::{Payload, min_size};
pub use report::Report;
pub use rtt::Rtts;
pub use stop::{Interruption, SLICE, Signal, Stop};
pub use window::{HISTORY, Key, Reply, Tally, Window};

use std::io::{self, Write};

use proto::text::{PROMPT, Printable, SENT};

use crate::charset::EncodingHint;
use crate::editor::Editor;
use crate::input::{Line, Lines};

/// How a run ended, when no [`Error`] ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every message was sent and its wait is over (answered, or reported unanswered).
    Finished,
    /// A signal or `--deadline` stopped the run; a message in flight counts as interrupted.
    Interrupted(Interruption),
}

/// Sends every message of `input` to the server of `config`, one at a time, printing the
/// tutorial's lines on `out`, until the input is done or `stop` says to stop. Returns what
/// happened to the messages, whatever ended the run, and how it ended.
pub fn run(
    config: &Config,
    input: Input,
    out: &mut dyn Write,
    stop: &Stop,
) -> (Report, Result<End, Error>) {
    let mut report = Report::default();
    let end = run_into(config, input, out, stop, &mut report);
    (report, end)
}

fn run_into(
    config: &Config,
    input: Input,
    out: &mut dyn Write,
    stop: &Stop,
    report: &mut Report,
) -> Result<End, Error> {
    if let Some(&peer) = config.servers.first()
        && config.options.collects(peer)
    {
        return collect::run(config, peer, input, out, stop, report);
    }
    let mut client = Client::connect(config)?;
    let mut hint = EncodingHint::default();
    // The editor draws its prompt on stdout, which JSON Lines keep for JSON alone: typed lines
    // are then read as piped ones are.
    let input = match input {
        Input::Terminal if config.output == Output::Json => Input::Lines {
            reader: Box::new(std::io::BufReader::new(std::io::stdin())),
            prompt: false,
        },
        input => input,
    };
    match input {
        Input::Messages(messages) => {
            // Refuse a message that cannot be sent before anything is sent, so a run is never
            // half done because of a usage error.
            let mut outgoing = Vec::with_capacity(messages.len());
            for (index, message) in messages.into_iter().enumerate() {
                let number = index + 1;
                let bytes = sys::arg_bytes(message).map_err(|_| Error::ArgNotUnicode { number })?;
                let prepared = prepare(&mut client, &mut hint, &bytes, Which::Message(number))?;
                outgoing.push((bytes, prepared));
            }
            for (bytes, message) in &outgoing {
                if let Some(interruption) = stop.check() {
                    return Ok(End::Interrupted(interruption));
                }
                let view = View {
                    output: config.output,
                    label: "Server message: ",
                    text: bytes,
                };
                if let Some(interruption) =
                    exchange(&mut client, message, view, out, stop, report, &mut hint)?
                {
                    return Ok(End::Interrupted(interruption));
                }
            }
        }
        Input::Lines { reader, prompt } => {
            let lines = Lines::spawn(reader, client.max_payload())?;
            // The prompt is for people: with JSON Lines, stdout carries JSON only.
            let prompt = prompt && config.output == Output::Human;
            for number in 1.. {
                if prompt {
                    write_out(out, PROMPT.as_bytes())?;
                }
                let which = Which::Line(number);
                let line = match lines.next(stop)? {
                    Line::Text(line) => line,
                    Line::TooLong(len) => return Err(client.too_large(len, which)),
                    Line::Interrupted(interruption) => {
                        if prompt {
                            // End the prompt's line, so what follows starts on a line of its own.
                            write_out(out, b"\n")?;
                        }
                        return Ok(End::Interrupted(interruption));
                    }
                    Line::End => {
                        if prompt {
                            write_out(out, b"\n")?;
                        }
                        break;
                    }
                };
                let sent = send_line(
                    &mut client,
                    &mut hint,
                    &line,
                    which,
                    config,
                    out,
                    stop,
                    report,
                );
                if let Some(interruption) = sent? {
                    return Ok(End::Interrupted(interruption));
                }
            }
        }
        Input::Terminal => {
            // The editor prints the prompt and ends its line itself, Ctrl-C and Ctrl-D included.
            let mut editor = Editor::spawn(client.max_payload(), stop)?;
            for number in 1.. {
                let which = Which::Line(number);
                let line = match editor.next(stop)? {
                    Line::Text(line) => line,
                    Line::TooLong(len) => return Err(client.too_large(len, which)),
                    Line::Interrupted(interruption) => return Ok(End::Interrupted(interruption)),
                    Line::End => break,
                };
                let sent = send_line(
                    &mut client,
                    &mut hint,
                    &line,
                    which,
                    config,
                    out,
                    stop,
                    report,
                );
                if let Some(interruption) = sent? {
                    return Ok(End::Interrupted(interruption));
                }
            }
        }
    }
    Ok(End::Finished)
}

/// One line of input (piped or typed at the editor's prompt): checked, encoded, sent and
/// answered; returns why the wait was cut short, if it was.
#[allow(clippy::too_many_arguments)]
fn send_line(
    client: &mut Client,
    hint: &mut EncodingHint,
    line: &[u8],
    which: Which,
    config: &Config,
    out: &mut dyn Write,
    stop: &Stop,
    report: &mut Report,
) -> Result<Option<Interruption>, Error> {
    let message = prepare(client, hint, line, which)?;
    let view = View {
        output: config.output,
        label: "",
        text: line,
    };
    exchange(client, &message, view, out, stop, report, hint)
}

/// How one message's exchange is shown.
struct View<'a> {
    output: Output,
    /// What goes before the reply in the tutorial's lines.
    label: &'a str,
    /// The message as given (the envelope's body with `--encoding json`).
    text: &'a [u8],
}

/// One message: send it, print `Sent a message.`, wait, record it in `report` and print the
/// answer after `label` (with `--output json`, one `exchange` line once it is over). Returns
/// why the wait was cut short, if it was.
fn exchange(
    client: &mut Client,
    message: &Outgoing,
    view: View<'_>,
    out: &mut dyn Write,
    stop: &Stop,
    report: &mut Report,
    hint: &mut EncodingHint,
) -> Result<Option<Interruption>, Error> {
    let human = view.output == Output::Human;
    let exchange = client.exchange(
        message,
        || {
            if human {
                write_out(out, format!("{SENT}\n").as_bytes())
            } else {
                Ok(())
            }
        },
        stop,
    )?;
    report.record(&exchange);
    if let Some(rtt) = exchange.rtt {
        log::info!("reply in {:.3} ms", rtt.as_secs_f64() * 1e3);
    }
    if !human {
        let encoding = client.encoding();
        let line = json_lines::exchange(client.peer(), encoding, view.text, message, &exchange);
        write_out(out, line.as_bytes())?;
        // The diagnostics stay on stderr, as in the tutorial's lines.
        return Ok(match exchange.outcome {
            Outcome::Reply {
                text,
                len,
                whole_chars,
            } => {
                hint.reply(&text, len > text.len());
                warn_if_truncated(&text, len, whole_chars);
                None
            }
            Outcome::NoReply(no_reply) => {
                tell(format_args!("error: {no_reply}"));
                None
            }
            Outcome::Interrupted(interruption) => Some(interruption),
            Outcome::ServerError { .. } => None,
        });
    }
    let label = view.label;
    match exchange.outcome {
        Outcome::Reply {
            text,
            len,
            whole_chars,
        } => {
            hint.reply(&text, len > text.len());
            write_out(out, format!("{label}{}\n", Printable(&text)).as_bytes())?;
            warn_if_truncated(&text, len, whole_chars);
        }
        Outcome::ServerError { code, message } => {
            let line = format!(
                "Server error: {}: {}\n",
                Printable(code.as_str().as_bytes()),
                Printable(message.as_bytes())
            );
            write_out(out, line.as_bytes())?;
        }
        Outcome::NoReply(no_reply) => tell(format_args!("error: {no_reply}")),
        Outcome::Interrupted(interruption) => return Ok(Some(interruption)),
    }
    Ok(None)
}

/// Says on stderr that a reply of `len` bytes (`whole_chars` characters) was cut to `kept`.
fn warn_if_truncated(kept: &[u8], len: usize, whole_chars: Option<usize>) {
    if let Some(report) = charset::cut_report(kept, len, whole_chars) {
        tell(format_args!("warning: {report}"));
    }
}

/// Checks and encodes a message (as [`Client::prepare`]), saying first, once a run, when it
/// is not UTF-8 but reads as Shift_JIS or EUC-JP.
fn prepare(
    client: &mut Client,
    hint: &mut EncodingHint,
    message: &[u8],
    which: Which,
) -> Result<Outgoing, Error> {
    let prepared = client.prepare(message, which);
    hint.message(which, message, prepared.is_ok());
    prepared
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
