//! Talking to many hosts at once: to a multicast group, or a broadcast address with
//! `--broadcast`. The socket is not connected (answers come from each host's own address):
//! each message is sent once, and every reply from any address within `--timeout` is printed,
//! `Reply from ADDR: TEXT` (`group_reply` lines with `--output json`).

use std::io::Write;
use std::net::SocketAddr;
use std::time::Instant;

use proto::text::{Printable, SENT};
use proto::{Envelope, Id, RECV_BUFFER};

use crate::icmp::Meaning;
use crate::input::{Line, Lines};
use crate::sys::{self, Socket};
use crate::{
    Config, Encoding, End, Error, Exchange, Input, NoReply, Outcome, Output, Report, Stop, Which,
    json_lines,
};

/// Sends every message of `input` to the group or broadcast address `peer`, printing each
/// reply; a message counts answered when any host answered it, lost when none did.
pub(crate) fn run(
    config: &Config,
    peer: SocketAddr,
    input: Input,
    out: &mut dyn Write,
    stop: &Stop,
    report: &mut Report,
) -> Result<End, Error> {
    let mut socket = Socket::unconnected(peer, &config.options, config.trace)?;
    socket.set_tap(config.capture.start()?);
    let mut group = Group {
        socket,
        peer,
        config,
        buf: vec![0; RECV_BUFFER],
        next_id: rand::random_range(1..=proto::MAX_ID),
    };
    let max = proto::max_payload(peer.ip());
    match input {
        Input::Messages(messages) => {
            let mut all = Vec::with_capacity(messages.len());
            for (index, message) in messages.into_iter().enumerate() {
                let number = index + 1;
                let bytes = sys::arg_bytes(message).map_err(|_| Error::ArgNotUnicode { number })?;
                group.check(&bytes, Which::Message(number), max)?;
                all.push(bytes);
            }
            for bytes in &all {
                if let Some(interruption) = stop.check() {
                    return Ok(End::Interrupted(interruption));
                }
                if let Some(end) = group.talk(bytes, out, stop, report)? {
                    return Ok(end);
                }
            }
        }
        input => {
            let reader = match input {
                Input::Lines { reader, .. } => reader,
                _ => Box::new(std::io::BufReader::new(std::io::stdin())),
            };
            let lines = Lines::spawn(reader, max)?;
            for number in 1.. {
                let which = Which::Line(number);
                let line = match lines.next(stop)? {
                    Line::Text(line) => line,
                    Line::TooLong(len) => {
                        return Err(Error::TooLarge {
                            which,
                            len,
                            escaped: None,
                            limit: max,
                            encoding: config.encoding,
                        });
                    }
                    Line::Interrupted(interruption) => return Ok(End::Interrupted(interruption)),
                    Line::End => break,
                };
                group.check(&line, which, max)?;
                if let Some(end) = group.talk(&line, out, stop, report)? {
                    return Ok(end);
                }
            }
        }
    }
    Ok(End::Finished)
}

struct Group<'a> {
    socket: Socket,
    peer: SocketAddr,
    config: &'a Config,
    buf: Vec<u8>,
    next_id: u64,
}

impl Group<'_> {
    /// Refuses a message that one datagram cannot carry, or JSON cannot.
    fn check(&self, message: &[u8], which: Which, max: usize) -> Result<(), Error> {
        if self.config.encoding == Encoding::Json
            && let Err(e) = std::str::from_utf8(message)
        {
            return Err(Error::NotText {
                which,
                valid_up_to: e.valid_up_to(),
            });
        }
        if message.len() > max {
            return Err(Error::TooLarge {
                which,
                len: message.len(),
                escaped: None,
                limit: max,
                encoding: self.config.encoding,
            });
        }
        Ok(())
    }

    /// One message: sent once, then every reply within `--timeout` printed.
    fn talk(
        &mut self,
        message: &[u8],
        out: &mut dyn Write,
        stop: &Stop,
        report: &mut Report,
    ) -> Result<Option<End>, Error> {
        let human = self.config.output == Output::Human;
        let id = Id::new(self.next_id).unwrap_or(Id::MIN);
        self.next_id = if self.next_id >= proto::MAX_ID {
            1
        } else {
            self.next_id + 1
        };
        let datagram = match self.config.encoding {
            Encoding::Plain => message.to_vec(),
            Encoding::Json => Envelope::Request {
                id,
                body: String::from_utf8_lossy(message).into_owned(),
                ack: Some(id),
            }
            .encode_to_vec(),
        };
        let datagram_len = datagram.len();
        let sent_at = Instant::now();
        if let Err(e) = self.socket.send_to(&datagram) {
            return Err(self.failure(e, "sending"));
        }
        if human {
            write_out(out, format!("{SENT}\n").as_bytes())?;
        }
        let until = sent_at.checked_add(self.config.timeout);
        let mut replies = 0u64;
        let mut first = None;
        let mut interrupted = None;
        loop {
            let slice = match stop.slice(until) {
                Ok(slice) if slice.is_zero() => break,
                Ok(slice) => slice,
                Err(interruption) => {
                    interrupted = Some(interruption);
                    break;
                }
            };
            let (len, from) = match self.socket.recv_from(&mut self.buf, slice) {
                Ok(Some(got)) => got,
                Ok(None) => continue,
                Err(e) => {
                    // One host's ICMP error does not end a talk with the others.
                    let said = self.socket.path_error().map_or_else(
                        || e.to_string(),
                        |error| format!("{error} from {}", error.who()),
                    );
                    log::warn!("while collecting replies from {}: {said}", self.peer);
                    continue;
                }
            };
            let rtt = sent_at.elapsed();
            let datagram = &self.buf[..len.min(self.buf.len())];
            let body: Vec<u8> = match self.config.encoding {
                Encoding::Plain => datagram.to_vec(),
                Encoding::Json => match Envelope::decode(datagram, RECV_BUFFER) {
                    Ok(Envelope::Reply { id: got, body }) if got == id => body.as_bytes().to_vec(),
                    _ => {
                        log::debug!("from {from}: a datagram that answers no request; dropped");
                        continue;
                    }
                },
            };
            let kept = &body[..body.len().min(self.config.buffer)];
            replies += 1;
            if first.is_none() {
                first = Some((kept.to_vec(), body.len(), rtt));
            }
            let line = if human {
                format!("Reply from {from}: {}\n", Printable(kept))
            } else {
                json_lines::group_reply(json_lines::GroupReply {
                    group: self.peer,
                    from,
                    message,
                    wire_len: datagram_len,
                    id: (self.config.encoding == Encoding::Json).then_some(id),
                    kept,
                    len: body.len(),
                    rtt,
                })
            };
            write_out(out, line.as_bytes())?;
        }
        let outcome = match (&first, interrupted) {
            (Some((text, len, _)), _) => Outcome::Reply {
                text: text.clone(),
                len: *len,
                whole_chars: None,
            },
            (None, Some(interruption)) => Outcome::Interrupted(interruption),
            (None, None) => Outcome::NoReply(NoReply {
                peer: self.peer,
                after: self.config.timeout,
                attempts: 1,
            }),
        };
        let exchange = Exchange {
            outcome,
            attempts: 1,
            rtt: first.as_ref().map(|(_, _, rtt)| *rtt),
            dropped: 0,
        };
        report.record(&exchange);
        if replies > 1 {
            log::info!("{replies} replies from {}", self.peer);
        }
        if replies == 0 && interrupted.is_none() {
            crate::tell(format_args!(
                "error: no reply from any host to {} within {}: nothing listens there, the \
                 servers ignore datagrams sent to a group or broadcast address (start them with \
                 --answer-group, or --join GROUP%IFNAME), or a firewall drops them; raise \
                 --timeout, or check --multicast-if / --interface",
                self.peer,
                humantime::format_duration(self.config.timeout)
            ));
        }
        Ok(interrupted.map(End::Interrupted))
    }

    /// The error that ends the run after a failed send.
    fn failure(&mut self, e: std::io::Error, doing: &'static str) -> Error {
        if e.kind() == std::io::ErrorKind::PermissionDenied && !self.config.options.broadcast {
            return Error::BroadcastRefused { peer: self.peer };
        }
        match self.socket.path_error() {
            Some(error) if error.meaning() != Meaning::Other => Error::PathRefused {
                peer: self.peer,
                error,
            },
            _ => Error::Socket { doing, source: e },
        }
    }
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<(), Error> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Stdout { source })
}
