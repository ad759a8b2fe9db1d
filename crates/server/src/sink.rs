//! Output sinks: what the receive loop shows of each datagram's [`Event`].
//!
//! The loop hands every event to a [`Sink`] after the answer is sent: [`TutorialLines`], the
//! tutorial's words on stdout, or [`JsonLines`](crate::JsonLines) (`--output json`). The
//! copies of the datagrams themselves (`--pcap`, `--hexdump`) go to a
//! [`Capture`](crate::Capture) instead, which sees their bytes. A sink must never block the
//! loop: the lines go through a [`LineQueue`], which drops and counts rather than waits.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use proto::charset::Cut;
use proto::text::Printable;

use crate::charset::EncodingHint;

use crate::core::Event;
use crate::output::{LineQueue, Pushed};
use crate::{Config, Mode};

/// Something that shows events.
pub trait Sink {
    /// Shows what happened to one datagram from `peer`.
    fn event(&mut self, peer: SocketAddr, event: &Event<'_>);

    /// Shows what happened to one datagram of `len` bytes from `peer`, sent to `local` when the
    /// socket reports it (wildcard binds). Sinks that show only the event need not implement
    /// it; the receive loop calls this one.
    fn datagram(&mut self, peer: SocketAddr, local: Option<IpAddr>, len: usize, event: &Event<'_>) {
        let _ = (local, len);
        self.event(peer, event);
    }
}

/// The tutorial's per-datagram lines, as `udp-server2.py` (count mode) or `udp-server1.py`
/// prints them, plus a line for each datagram that was not counted.
pub struct TutorialLines {
    mode: Mode,
    buffer: usize,
    out: LineQueue,
    /// One datagram's lines, reused.
    lines: String,
    /// The last peer shown and its text: most datagrams come from the peer before, and
    /// formatting an address costs more than the rest of a line.
    peer: Option<(SocketAddr, String)>,
    /// Said once: a datagram that is not UTF-8 but reads as Shift_JIS or EUC-JP.
    hint: EncodingHint,
}

impl TutorialLines {
    /// Lines for a server of `config`, queued on `out`.
    pub fn new(config: &Config, out: LineQueue) -> TutorialLines {
        TutorialLines {
            mode: config.mode,
            buffer: config.buffer,
            out,
            lines: String::new(),
            peer: None,
            hint: EncodingHint::default(),
        }
    }

    /// The lines for `event` from `peer` (empty when the event shows nothing).
    pub fn format(&mut self, peer: SocketAddr, event: &Event<'_>) -> &str {
        let peer_addr = peer;
        let lines = &mut self.lines;
        lines.clear();
        let (_, peer) = match &mut self.peer {
            Some(last) if last.0 == peer => last,
            slot => {
                let last = slot.get_or_insert_with(|| (peer, String::new()));
                last.0 = peer;
                last.1.clear();
                let _ = write!(last.1, "{peer}");
                last
            }
        };
        // Writing into a String cannot fail.
        match event {
            Event::RateLimited => return "",
            Event::Counted {
                access,
                message,
                len,
            } => {
                if self.mode == Mode::Count {
                    lines.push_str("New access.(access count: ");
                    lines.push_str(itoa::Buffer::new().format(*access));
                    lines.push_str(")\n");
                }
                lines.push_str("Message received from ");
                lines.push_str(peer);
                lines.push_str(".\nThe message is [ ");
                Printable(message).push_onto(lines);
                lines.push_str(" ].\n");
                let cut = *len > message.len();
                self.hint.datagram(peer_addr, message, cut);
                if cut {
                    let _ = writeln!(
                        lines,
                        "message cut to {}; --buffer is {}",
                        Cut::new(message, *len, None),
                        self.buffer
                    );
                }
            }
            other => {
                let _ = writeln!(lines, "Message received from {peer}.");
                let _ = writeln!(lines, "{other}");
            }
        }
        if self.mode == Mode::Count {
            lines.push('\n');
        }
        lines
    }
}

impl Sink for TutorialLines {
    fn event(&mut self, peer: SocketAddr, event: &Event<'_>) {
        if self.format(peer, event).is_empty() {
            return;
        }
        if let Pushed::Dropped { first: true } = self.out.push(self.lines.as_bytes()) {
            log::warn!(
                "stdout is not keeping up (a slow pipe or a paused terminal): dropping \
                 per-datagram lines rather than delaying answers; the summary counts them \
                 as `lines dropped`"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::loop_guard::LoopCause;

    fn lines(mode: Mode, event: &Event<'_>) -> String {
        let mut config = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.mode = mode;
        config.buffer = 4;
        let out = LineQueue::spawn(io::sink(), 1 << 10, |_| {});
        let mut sink = TutorialLines::new(&config, out.clone());
        let peer = SocketAddr::from(([127, 0, 0, 1], 54_321));
        let text = sink.format(peer, event).to_owned();
        out.close(Duration::from_secs(1));
        text
    }

    #[test]
    fn counted_messages_read_as_the_tutorial_with_the_cut_and_escapes() {
        let event = Event::Counted {
            access: 3,
            message: Cow::Borrowed(&b"\x1b[\xc2\x9b\xe2\x80\xae"[..]),
            len: 5000,
        };
        expect_test::expect![[r#"
            New access.(access count: 3)
            Message received from 127.0.0.1:54321.
            The message is [ \x1b[\u{9b}\u{202e} ].
            message cut to 7 of 5000 bytes (4 whole characters kept); --buffer is 4

        "#]]
        .assert_eq(&lines(Mode::Count, &event));
        expect_test::expect![[r#"
            Message received from 127.0.0.1:54321.
            The message is [ \x1b[\u{9b}\u{202e} ].
            message cut to 7 of 5000 bytes (4 whole characters kept); --buffer is 4
        "#]]
        .assert_eq(&lines(Mode::Hello, &event));
    }

    #[test]
    fn other_events_get_a_note_and_the_rate_limited_none() {
        expect_test::expect![[r#"
            Message received from 127.0.0.1:54321.
            Not answered: it is a server's answer; answering it could start a loop between two servers.
        "#]]
        .assert_eq(&lines(Mode::Echo, &Event::Loop(LoopCause::ServerReply)));
        assert_eq!(lines(Mode::Count, &Event::RateLimited), "");
    }
}
