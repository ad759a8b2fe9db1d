//! [`JsonLines`]: `--output json`, the server's events as JSON Lines on stdout.
//!
//! One object per line, tagged by `event`: `listening` (the bound address), one `datagram` per
//! datagram (with its `outcome`), `summary` (every figure of the human summary) and `exit`.
//! docs/output.schema.json is the contract, and `cargo xtask test` validates every line the
//! matrix produces against it.
//!
//! Like [`TutorialLines`](crate::TutorialLines), the sink only pushes to the bounded
//! [`LineQueue`]: a slow reader costs dropped, counted lines, never a delayed answer. Each line
//! is serialized with serde_json into a buffer reused from datagram to datagram (addresses are
//! formatted on the stack by serde, base64 goes into a reused string), so showing a datagram
//! allocates nothing once the buffers have grown to the longest line.

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Serialize;

use crate::charset::EncodingHint;
use crate::core::Event;
use crate::loop_guard::LoopCause;
use crate::output::{LineQueue, Pushed};
use crate::sink::Sink;
use crate::summary::{PEER_TALLY_CAP, Summary};

/// The per-datagram JSON Lines of a server bound to one address.
pub struct JsonLines {
    /// The address bound (with its real port): the local address of every datagram, but for
    /// its IP on wildcard binds, which the socket reports per datagram.
    bound: SocketAddr,
    out: LineQueue,
    /// One line, reused.
    line: Vec<u8>,
    /// A non-UTF-8 message's base64, reused.
    base64: String,
    /// Said once: a datagram that is not UTF-8 but reads as Shift_JIS or EUC-JP.
    hint: EncodingHint,
}

/// The `datagram` object. Members that an outcome has no value for are left out, never `null`,
/// so that the schema can require exactly the members of each outcome.
#[derive(Serialize)]
struct DatagramLine<'a> {
    event: &'static str,
    peer: SocketAddr,
    local: SocketAddr,
    /// Its length on the wire.
    bytes: usize,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    access: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    /// The message kept (cut to `--buffer`), when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    /// The message kept, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    base64: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<bool>,
    /// A refusal's error code, and its message.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    /// The kind of an envelope a server does not answer (`reply`, `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    /// Why answering could start a loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    cause: Option<&'static str>,
}

impl JsonLines {
    /// Lines for a server bound to `bound`, queued on `out`.
    pub fn new(bound: SocketAddr, out: LineQueue) -> JsonLines {
        JsonLines {
            bound,
            out,
            line: Vec::with_capacity(1 << 10),
            base64: String::new(),
            hint: EncodingHint::default(),
        }
    }

    /// The line for one datagram (with its newline).
    pub fn format(
        &mut self,
        peer: SocketAddr,
        local: Option<IpAddr>,
        len: usize,
        event: &Event<'_>,
    ) -> &[u8] {
        let mut line = DatagramLine {
            event: "datagram",
            peer,
            local: SocketAddr::new(local.unwrap_or(self.bound.ip()), self.bound.port()),
            bytes: len,
            outcome: "",
            access: None,
            id: None,
            text: None,
            base64: None,
            truncated: None,
            code: None,
            message: None,
            kind: None,
            cause: None,
        };
        match event {
            Event::Counted {
                access,
                message,
                len,
            } => {
                line.outcome = "counted";
                line.access = Some(*access);
                line.bytes = *len;
                line.truncated = Some(*len > message.len());
                match std::str::from_utf8(message) {
                    Ok(text) => line.text = Some(text),
                    Err(_) => {
                        self.hint.datagram(peer, message, *len > message.len());
                        self.base64.clear();
                        BASE64.encode_string(message, &mut self.base64);
                        line.base64 = Some(&self.base64);
                    }
                }
            }
            Event::Resent { id, access } => {
                line.outcome = "resent";
                line.id = Some(id.get());
                line.access = Some(*access);
            }
            Event::Done { id } => {
                line.outcome = "done";
                line.id = Some(id.get());
            }
            Event::Busy { id } => {
                line.outcome = "busy";
                line.id = Some(id.get());
            }
            Event::Refused { code, message } => {
                line.outcome = "refused";
                line.code = Some(code.as_str());
                line.message = Some(message);
            }
            Event::Ignored { kind } => {
                line.outcome = "ignored";
                line.kind = Some(kind);
            }
            Event::RateLimited => line.outcome = "rate_limited",
            Event::Loop(cause) => {
                line.outcome = "loop";
                line.cause = Some(loop_cause(*cause));
            }
        }
        self.line.clear();
        write_line(&mut self.line, &line);
        &self.line
    }

    /// `{"event":"listening","address":ADDR}`: the first line, as `listening on udp ADDR` is
    /// stderr's.
    pub fn listening(address: SocketAddr) -> Vec<u8> {
        #[derive(Serialize)]
        struct Listening {
            event: &'static str,
            address: SocketAddr,
        }
        let mut line = Vec::new();
        write_line(
            &mut line,
            &Listening {
                event: "listening",
                address,
            },
        );
        line
    }

    /// The summary: every figure of the human one, the rare ones included as zeros.
    pub fn summary(summary: &Summary) -> Vec<u8> {
        #[derive(Serialize)]
        struct Sink {
            datagrams: u64,
            bytes: u64,
            lost: u64,
            reordered: u64,
            duplicated: u64,
        }
        #[derive(Serialize)]
        struct Line {
            event: &'static str,
            received: u64,
            counted: u64,
            duplicates: u64,
            malformed: u64,
            rate_limited: u64,
            busy: u64,
            loops: u64,
            group_ignored: u64,
            truncated: u64,
            peers: u64,
            /// Whether `peers` reached the tally's cap (then it is a lower bound).
            peers_capped: bool,
            lines_dropped: u64,
            amplification_dropped: u64,
            send_failures: u64,
            kernel_dropped: u64,
            sink: Option<Sink>,
        }
        let capped = summary.peers >= PEER_TALLY_CAP as u64;
        let mut line = Vec::new();
        write_line(
            &mut line,
            &Line {
                event: "summary",
                received: summary.received,
                counted: summary.counted,
                duplicates: summary.duplicates,
                malformed: summary.malformed,
                rate_limited: summary.rate_limited,
                busy: summary.busy,
                loops: summary.loops,
                group_ignored: summary.group_ignored,
                truncated: summary.truncated,
                peers: summary.peers,
                peers_capped: capped,
                lines_dropped: summary.lines_dropped,
                amplification_dropped: summary.amplification_dropped,
                send_failures: summary.send_failures,
                kernel_dropped: summary.kernel_dropped,
                sink: summary.sink.map(|sink| Sink {
                    datagrams: sink.datagrams,
                    bytes: sink.bytes,
                    lost: sink.lost,
                    reordered: sink.reordered,
                    duplicated: sink.duplicated,
                }),
            },
        );
        line
    }

    /// The last line: the exit code, and the error that ended the server, if one did (a
    /// signal or `--idle` ending it is `finished`: how a server is meant to stop).
    pub fn exit(code: u8, error: Option<&str>) -> Vec<u8> {
        #[derive(Serialize)]
        struct Exit<'a> {
            event: &'static str,
            code: u8,
            end: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        let mut line = Vec::new();
        write_line(
            &mut line,
            &Exit {
                event: "exit",
                code,
                end: if error.is_some() { "error" } else { "finished" },
                error,
            },
        );
        line
    }
}

impl Sink for JsonLines {
    fn event(&mut self, peer: SocketAddr, event: &Event<'_>) {
        self.datagram(peer, None, 0, event);
    }

    fn datagram(&mut self, peer: SocketAddr, local: Option<IpAddr>, len: usize, event: &Event<'_>) {
        self.format(peer, local, len, event);
        if let Pushed::Dropped { first: true } = self.out.push(&self.line) {
            log::warn!(
                "stdout is not keeping up (a slow pipe or a paused terminal): dropping \
                 per-datagram JSON lines rather than delaying answers; the summary counts them \
                 as `lines_dropped`"
            );
        }
    }
}

/// The loop rule's causes as the schema names them.
fn loop_cause(cause: LoopCause) -> &'static str {
    match cause {
        LoopCause::ServerReply => "server_reply",
        LoopCause::WellKnownPort => "well_known_port",
        LoopCause::Repeats => "repeats",
    }
}

/// Appends `value` as one line of JSON. Serializing these plain structs into a `Vec` cannot
/// fail (no maps with non-string keys, no failing writer), so there is no error to pass on.
fn write_line(line: &mut Vec<u8>, value: &impl Serialize) {
    if serde_json::to_writer(&mut *line, value).is_ok() {
        line.push(b'\n');
    } else {
        line.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io;
    use std::time::Duration;

    use proto::{ErrorCode, Id};

    use super::*;

    fn line(local: Option<IpAddr>, len: usize, event: &Event<'_>) -> String {
        let out = LineQueue::spawn(io::sink(), 1 << 10, |_| {});
        let mut sink = JsonLines::new(SocketAddr::from(([0, 0, 0, 0], 5000)), out.clone());
        let peer = SocketAddr::from(([127, 0, 0, 1], 54_321));
        let text = String::from_utf8_lossy(sink.format(peer, local, len, event)).into_owned();
        out.close(Duration::from_secs(1));
        text
    }

    #[test]
    fn datagrams_carry_text_or_base64_and_only_their_outcomes_members() {
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let counted = Event::Counted {
            access: 3,
            message: Cow::Borrowed(&b"Hello \"Server\"\n"[..]),
            len: 15,
        };
        expect_test::expect![[r#"
            {"event":"datagram","peer":"127.0.0.1:54321","local":"127.0.0.1:5000","bytes":15,"outcome":"counted","access":3,"text":"Hello \"Server\"\n","truncated":false}
        "#]]
        .assert_eq(&line(local, 15, &counted));
        let binary = Event::Counted {
            access: 4,
            message: Cow::Borrowed(&b"\xff\xfe"[..]),
            len: 5000,
        };
        expect_test::expect![[r#"
            {"event":"datagram","peer":"127.0.0.1:54321","local":"0.0.0.0:5000","bytes":5000,"outcome":"counted","access":4,"base64":"//4=","truncated":true}
        "#]]
        .assert_eq(&line(None, 5000, &binary));
        let refused = Event::Refused {
            code: ErrorCode::MissingField,
            message: "no body".to_owned(),
        };
        expect_test::expect![[r#"
            {"event":"datagram","peer":"127.0.0.1:54321","local":"127.0.0.1:5000","bytes":9,"outcome":"refused","code":"missing_field","message":"no body"}
        "#]]
        .assert_eq(&line(local, 9, &refused));
        let resent = Event::Resent {
            id: Id::MIN,
            access: 2,
        };
        expect_test::expect![[r#"
            {"event":"datagram","peer":"127.0.0.1:54321","local":"127.0.0.1:5000","bytes":50,"outcome":"resent","access":2,"id":1}
        "#]]
        .assert_eq(&line(local, 50, &resent));
        expect_test::expect![[r#"
            {"event":"datagram","peer":"127.0.0.1:54321","local":"127.0.0.1:5000","bytes":15,"outcome":"loop","cause":"server_reply"}
        "#]]
        .assert_eq(&line(local, 15, &Event::Loop(LoopCause::ServerReply)));
    }

    #[test]
    fn the_summary_has_every_figure() {
        let summary = Summary {
            received: 3,
            counted: 1,
            loops: 2,
            peers: PEER_TALLY_CAP as u64,
            ..Summary::default()
        };
        expect_test::expect![[r#"
            {"event":"summary","received":3,"counted":1,"duplicates":0,"malformed":0,"rate_limited":0,"busy":0,"loops":2,"group_ignored":0,"truncated":0,"peers":65536,"peers_capped":true,"lines_dropped":0,"amplification_dropped":0,"send_failures":0,"kernel_dropped":0,"sink":null}
        "#]]
        .assert_eq(&String::from_utf8_lossy(&JsonLines::summary(&summary)));
        expect_test::expect![[r#"
            {"event":"exit","code":1,"end":"error","error":"address in use"}
        "#]]
        .assert_eq(&String::from_utf8_lossy(&JsonLines::exit(
            1,
            Some("address in use"),
        )));
    }
}
