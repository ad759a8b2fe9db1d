//! `--output json`: the client's events as JSON Lines on stdout, one object per line, tagged
//! by `event`.
//!
//! Talking: one `exchange` per message (the request, how it ended, the reply or the server's
//! error, attempts and RTT), then `summary` (the [`Report`]). `ping`: `ping_start`, one
//! `ping_reply` per reply, `ping_statistics`. `bench`: its result, `bench`. Every run ends with
//! `exit` (the exit code, and the error that ended the run, if one did). docs/output.schema.json
//! is the contract; `cargo xtask test` validates every line the matrix produces against it.
//! Diagnostics (warnings, errors, `no reply from …`) stay text on stderr, so stdout carries
//! JSON only.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use proto::Id;
use serde::Serialize;

use crate::{Encoding, Exchange, Outcome, Outgoing, PingSummary, Report, Rtts, Tally};

/// Bytes a peer or a user gave: as text when they are UTF-8, else as base64.
#[derive(Serialize)]
struct Bytes<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
}

impl<'a> Bytes<'a> {
    fn of(bytes: &'a [u8]) -> Bytes<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Bytes {
                text: Some(text),
                base64: None,
            },
            Err(_) => Bytes {
                text: None,
                base64: Some(BASE64.encode(bytes)),
            },
        }
    }
}

#[derive(Serialize)]
struct Request<'a> {
    #[serde(flatten)]
    message: Bytes<'a>,
    /// The datagram's length on the wire (the envelope's, with `--encoding json`).
    bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
}

#[derive(Serialize)]
struct ReplyBody<'a> {
    #[serde(flatten)]
    message: Bytes<'a>,
    /// The reply's (or the envelope body's) length before the cut to `--buffer`.
    bytes: usize,
    truncated: bool,
}

#[derive(Serialize)]
struct ServerError<'a> {
    code: &'a str,
    message: &'a str,
}

#[derive(Serialize)]
struct ExchangeLine<'a> {
    event: &'static str,
    server: SocketAddr,
    request: Request<'a>,
    outcome: &'static str,
    attempts: u32,
    /// Milliseconds, `null` when the message was resent (Karn's rule) or not answered.
    rtt_ms: Option<f64>,
    /// Stray answers (duplicated, late, unknown ids) dropped while waiting.
    dropped: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply: Option<ReplyBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ServerError<'a>>,
    /// How long the client waited in all, for a message that got no reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    waited_ms: Option<f64>,
    /// What cut the wait short.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn line(value: &impl Serialize) -> String {
    // These plain structs always serialize; an empty object would fail the schema, not us.
    let mut line = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    line.push('\n');
    line
}

/// The `exchange` line of `message`, sent as `outgoing` to `server`.
pub(crate) fn exchange(
    server: SocketAddr,
    encoding: Encoding,
    message: &[u8],
    outgoing: &Outgoing,
    exchange: &Exchange,
) -> String {
    let mut out = ExchangeLine {
        event: "exchange",
        server,
        request: Request {
            message: Bytes::of(message),
            bytes: outgoing.wire_len(),
            id: (encoding == Encoding::Json).then(|| outgoing.id().get()),
        },
        outcome: "",
        attempts: exchange.attempts,
        rtt_ms: exchange.rtt.map(ms),
        dropped: exchange.dropped,
        reply: None,
        error: None,
        waited_ms: None,
        reason: None,
    };
    match &exchange.outcome {
        Outcome::Reply { text, len, .. } => {
            out.outcome = "reply";
            out.reply = Some(ReplyBody {
                message: Bytes::of(text),
                bytes: *len,
                truncated: *len > text.len(),
            });
        }
        Outcome::ServerError { code, message } => {
            out.outcome = "server_error";
            out.error = Some(ServerError {
                code: code.as_str(),
                message,
            });
        }
        Outcome::NoReply(no_reply) => {
            out.outcome = "no_reply";
            out.waited_ms = Some(ms(no_reply.after));
        }
        Outcome::Interrupted(interruption) => {
            out.outcome = "interrupted";
            out.reason = Some(interruption.to_string());
        }
    }
    line(&out)
}

/// One reply to a message sent to a group or broadcast address.
pub(crate) struct GroupReply<'a> {
    /// The group or broadcast address.
    pub group: SocketAddr,
    /// Who answered.
    pub from: SocketAddr,
    /// The message as given.
    pub message: &'a [u8],
    /// Its datagram's length.
    pub wire_len: usize,
    /// Its id, with `--encoding json`.
    pub id: Option<Id>,
    /// The reply as kept (cut to `--buffer`).
    pub kept: &'a [u8],
    /// The reply's length before the cut.
    pub len: usize,
    /// From the send to this reply.
    pub rtt: Duration,
}

/// The `group_reply` line: one host's answer to a message sent to a group or broadcast address.
pub(crate) fn group_reply(reply: GroupReply<'_>) -> String {
    #[derive(Serialize)]
    struct Line<'a> {
        event: &'static str,
        group: SocketAddr,
        from: SocketAddr,
        request: Request<'a>,
        rtt_ms: f64,
        reply: ReplyBody<'a>,
    }
    line(&Line {
        event: "group_reply",
        group: reply.group,
        from: reply.from,
        request: Request {
            message: Bytes::of(reply.message),
            bytes: reply.wire_len,
            id: reply.id.map(Id::get),
        },
        rtt_ms: ms(reply.rtt),
        reply: ReplyBody {
            message: Bytes::of(reply.kept),
            bytes: reply.len,
            truncated: reply.len > reply.kept.len(),
        },
    })
}

/// RTT figures in milliseconds; `null` where there is no RTT.
#[derive(Serialize)]
struct RttMs {
    min: Option<f64>,
    avg: Option<f64>,
    max: Option<f64>,
    mdev: Option<f64>,
    p50: Option<f64>,
    p90: Option<f64>,
    p99: Option<f64>,
}

impl RttMs {
    fn of(rtts: &Rtts) -> RttMs {
        RttMs {
            min: rtts.min().map(ms),
            avg: rtts.mean().map(ms),
            max: rtts.max().map(ms),
            mdev: rtts.mdev().map(ms),
            p50: rtts.percentile(50.0).map(ms),
            p90: rtts.percentile(90.0).map(ms),
            p99: rtts.percentile(99.0).map(ms),
        }
    }
}

/// The run's `summary`: every figure of the [`Report`].
pub fn summary(report: &Report) -> String {
    #[derive(Serialize)]
    struct Summary {
        event: &'static str,
        sent: u64,
        datagrams: u64,
        answered: u64,
        retried: u64,
        lost: u64,
        interrupted: u64,
        duplicates: u64,
        server_errors: u64,
        truncated: u64,
        rtt_ms: RttMs,
    }
    line(&Summary {
        event: "summary",
        sent: report.sent,
        datagrams: report.datagrams,
        answered: report.answered,
        retried: report.retried,
        lost: report.lost,
        interrupted: report.interrupted,
        duplicates: report.duplicates,
        server_errors: report.server_errors,
        truncated: report.truncated,
        rtt_ms: RttMs::of(&report.rtts),
    })
}

/// How a run ended, as the `exit` line says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It did all it was asked.
    Finished,
    /// A signal or `--deadline` cut it short.
    Interrupted,
    /// An error ended it.
    Error,
}

/// The last line: the exit code, how the run ended and the error, if one ended it.
pub fn exit(code: u8, ending: Ending, error: Option<String>) -> String {
    #[derive(Serialize)]
    struct Exit {
        event: &'static str,
        code: u8,
        end: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    line(&Exit {
        event: "exit",
        code,
        end: match ending {
            Ending::Finished => "finished",
            Ending::Interrupted => "interrupted",
            Ending::Error => "error",
        },
        error,
    })
}

/// `ping_start`: where the probes go, their size and encoding.
pub(crate) fn ping_start(server: SocketAddr, size: usize, encoding: Encoding) -> String {
    #[derive(Serialize)]
    struct Start {
        event: &'static str,
        server: SocketAddr,
        size: usize,
        encoding: &'static str,
    }
    line(&Start {
        event: "ping_start",
        server,
        size,
        encoding: encoding_name(encoding),
    })
}

/// One reply to a probe (`duplicate`: its probe was answered before; `late`: after it counted
/// lost).
pub(crate) fn ping_reply(
    server: SocketAddr,
    bytes: usize,
    seq: u64,
    rtt: Option<Duration>,
    late: bool,
    duplicate: bool,
) -> String {
    #[derive(Serialize)]
    struct PingReply {
        event: &'static str,
        server: SocketAddr,
        bytes: usize,
        seq: u64,
        rtt_ms: Option<f64>,
        late: bool,
        duplicate: bool,
    }
    line(&PingReply {
        event: "ping_reply",
        server,
        bytes,
        seq,
        rtt_ms: rtt.map(ms),
        late,
        duplicate,
    })
}

/// ping's statistics.
pub fn ping_statistics(summary: &PingSummary) -> String {
    #[derive(Serialize)]
    struct Statistics {
        event: &'static str,
        server: SocketAddr,
        sent: u64,
        received: u64,
        lost: u64,
        duplicated: u64,
        reordered: u64,
        loss_percent: f64,
        time_ms: f64,
        rtt_ms: RttMs,
        interrupted: Option<String>,
    }
    let Tally {
        sent,
        received,
        lost,
        duplicated,
        reordered,
        ..
    } = summary.window.tally();
    line(&Statistics {
        event: "ping_statistics",
        server: summary.server,
        sent,
        received,
        lost,
        duplicated,
        reordered,
        loss_percent: if sent == 0 {
            0.0
        } else {
            sent.saturating_sub(received) as f64 * 100.0 / sent as f64
        },
        time_ms: ms(summary.elapsed),
        rtt_ms: RttMs::of(summary.window.rtts()),
        interrupted: summary.interrupted.map(|i| i.to_string()),
    })
}

/// The encoding's name, as the flag spells it.
pub(crate) fn encoding_name(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::Plain => "plain",
        Encoding::Json => "json",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_text_or_base64() -> Result<(), serde_json::Error> {
        assert_eq!(
            serde_json::to_string(&Bytes::of(b"hi \"you\""))?,
            r#"{"text":"hi \"you\""}"#
        );
        assert_eq!(
            serde_json::to_string(&Bytes::of(b"\xff\x00"))?,
            r#"{"base64":"/wA="}"#
        );
        Ok(())
    }

    #[test]
    fn the_exit_line_says_the_code_and_the_error() {
        assert_eq!(
            exit(4, Ending::Error, Some("nothing listens".to_owned())),
            "{\"event\":\"exit\",\"code\":4,\"end\":\"error\",\"error\":\"nothing listens\"}\n"
        );
        assert_eq!(
            exit(0, Ending::Finished, None),
            "{\"event\":\"exit\",\"code\":0,\"end\":\"finished\"}\n"
        );
    }
}
