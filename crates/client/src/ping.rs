//! `udptalk-client ping`: ping(8) over UDP. One probe per interval, a line per reply, and
//! ping's statistics at the end, with percentiles, duplicates and reordering beside them.
//!
//! The driver only does the I/O and the printing: which request a reply answers, loss, late,
//! duplicate and reordered replies, and the RTTs are the [`Window`]'s.

use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::client::{PathFailure, max_payload_for, path_failure};
use crate::json_lines;
use crate::probes::{self, Payload, Requests};
use crate::sys::Socket;
use crate::{Capture, Encoding, Error, Interruption, Output, Reply, SLICE, Stop, Tally, Window};

/// Everything `ping` needs, checked.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// Where the probes go.
    pub server: SocketAddr,
    /// Plain probes, or probes in JSON envelopes.
    pub encoding: Encoding,
    /// How long a probe is awaited before it counts lost.
    pub timeout: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// How many probes; `None`: until stopped.
    pub count: Option<u64>,
    /// Bytes on the wire per probe.
    pub size: usize,
    /// ping(8)'s lines, or JSON Lines.
    pub output: Output,
    /// Copies of the datagrams (`--pcap`, `--hexdump`).
    pub capture: Capture,
    /// Print each socket system call on stderr (`--trace`).
    pub trace: bool,
    /// `--source`, `--interface`, `--ttl`, `--tos`, `--dont-fragment`, ...
    pub options: crate::SocketOptions,
}

/// How a ping ended: its books, its RTTs and how long it ran.
#[derive(Debug)]
pub struct PingSummary {
    /// Where the probes went.
    pub server: SocketAddr,
    /// The window's books and RTTs.
    pub window: Window,
    /// From the first probe to the end.
    pub elapsed: Duration,
    /// What stopped it early, if anything did.
    pub interrupted: Option<Interruption>,
}

impl PingSummary {
    /// Whether any reply came: exit 0, else 3.
    pub fn answered(&self) -> bool {
        self.window.tally().received > 0
    }
}

/// Pings `config.server` until `config.count` probes are answered or lost, or `stop` says to
/// stop, printing ping(8)'s lines on `out`; returns the books (printed by [`PingSummary`]'s
/// `Display`).
pub fn ping(config: &PingConfig, out: &mut dyn Write, stop: &Stop) -> Result<PingSummary, Error> {
    let mut socket = Socket::connect(config.server, &config.options, config.trace)?;
    socket.set_tap(config.capture.start()?);
    let requests = Requests::new(config.encoding, Payload::Probe { size: config.size });
    // As many probes can be awaited at once as are sent in one timeout.
    let in_flight = (config.timeout.as_secs_f64() / config.interval.as_secs_f64()).ceil();
    let capacity = (in_flight as usize).clamp(1, 1 << 16) + 1;
    let mut pinger = Pinger {
        socket,
        requests,
        window: Window::new(capacity, config.timeout, 1, probes::random_first_id()),
        datagram: Vec::with_capacity(config.size),
        buf: vec![0; proto::RECV_BUFFER],
        server: config.server,
        output: config.output,
        dont_fragment: config.options.dont_fragment,
    };
    let line = match config.output {
        Output::Json => json_lines::ping_start(config.server, config.size, config.encoding),
        Output::Human => format!(
            "PING {}: {} data bytes{}\n",
            config.server,
            config.size,
            match config.encoding {
                Encoding::Plain => "",
                Encoding::Json => " (JSON envelopes)",
            }
        ),
    };
    write_out(out, line.as_bytes())?;
    let start = Instant::now();
    let mut next_send = start;
    let mut interrupted = None;
    loop {
        if let Some(interruption) = stop.check() {
            interrupted = Some(interruption);
            break;
        }
        let now = Instant::now();
        let more = config
            .count
            .is_none_or(|count| pinger.window.tally().sent < count);
        if more && now >= next_send {
            pinger.send(now)?;
            // Keep the schedule, unless far behind it (the machine slept): then start anew.
            next_send += config.interval;
            if next_send < now {
                next_send = now + config.interval;
            }
        }
        pinger.window.expire(now, |_| {});
        let more = config
            .count
            .is_none_or(|count| pinger.window.tally().sent < count);
        let until = if more {
            Some(next_send)
        } else {
            match pinger.window.next_expiry() {
                Some(expiry) => Some(expiry),
                // Every probe sent, and none awaited: done.
                None => break,
            }
        };
        let wait = until.map_or(SLICE, |until| {
            until.saturating_duration_since(Instant::now()).min(SLICE)
        });
        pinger.receive(wait, out)?;
    }
    Ok(PingSummary {
        server: config.server,
        window: pinger.window,
        elapsed: start.elapsed(),
        interrupted,
    })
}

struct Pinger {
    socket: Socket,
    requests: Requests,
    window: Window,
    datagram: Vec<u8>,
    buf: Vec<u8>,
    server: SocketAddr,
    output: Output,
    /// `--dont-fragment`: a probe over the path MTU ends the run.
    dont_fragment: bool,
}

impl Pinger {
    fn send(&mut self, now: Instant) -> Result<(), Error> {
        let seq = self.window.next_seq();
        let id = self.window.id_of(seq);
        let ack = self.window.ack_id().unwrap_or(id);
        self.requests.write(seq, id, ack, &mut self.datagram);
        if let Err(e) = self.socket.send(&self.datagram) {
            self.failed(e, "sending")?;
        }
        // Counted sent even when refused: it went, and nothing will answer it.
        self.window.send(now);
        Ok(())
    }

    /// Waits at most `wait` for replies, printing a line for each.
    fn receive(&mut self, wait: Duration, out: &mut dyn Write) -> Result<(), Error> {
        let len = match self.socket.recv(&mut self.buf, wait) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(()),
            Err(e) => return self.failed(e, "receiving"),
        };
        let now = Instant::now();
        let datagram = &self.buf[..len.min(self.buf.len())];
        let info = probes::read_reply(&self.requests, datagram);
        let server = self.server;
        let reply = self.window.reply(info.key, now);
        if self.output == Output::Json {
            let line = match reply {
                Reply::Matched { seq, rtt, late, .. } => {
                    json_lines::ping_reply(server, len, seq, rtt, late, false)
                }
                Reply::Duplicate { seq } => {
                    json_lines::ping_reply(server, len, seq, None, false, true)
                }
                Reply::Unknown => {
                    log::info!("a reply of {len} bytes from {server} answers no probe awaited");
                    return Ok(());
                }
            };
            return write_out(out, line.as_bytes());
        }
        let line = match reply {
            Reply::Matched { seq, rtt, late, .. } => {
                let time = rtt.map_or(String::new(), |rtt| format!(" time={}", Ms(rtt)));
                let late = if late { " (late)" } else { "" };
                format!("{len} bytes from {server}: seq={seq}{time}{late}\n")
            }
            Reply::Duplicate { seq } => format!("{len} bytes from {server}: seq={seq} (DUP!)\n"),
            Reply::Unknown => {
                log::info!("a reply of {len} bytes from {server} answers no probe awaited");
                return Ok(());
            }
        };
        write_out(out, line.as_bytes())
    }

    /// After a send or receive failed with `e`: like ping(8), a line saying who refused, and
    /// the probes go on; a probe over the path MTU with `--dont-fragment`, or a socket error,
    /// ends the run.
    fn failed(&mut self, e: std::io::Error, doing: &'static str) -> Result<(), Error> {
        let len = self.datagram.len();
        match path_failure(&mut self.socket, e, doing, len, self.dont_fragment) {
            PathFailure::Refused => crate::tell(format_args!(
                "From {}: port unreachable (nothing listens there; check --server)",
                self.server
            )),
            PathFailure::TooBig { mtu, error } => crate::tell(format_args!(
                "From {}: a probe of {len} bytes is over the path MTU {mtu} (it was lost; the \
                 next ones are fragmented by this host): give a --size of at most {}",
                error.map_or_else(|| "this host".to_owned(), |e| e.who()),
                max_payload_for(self.server, mtu)
            )),
            PathFailure::Error(Error::PathRefused { error, .. }) => crate::tell(format_args!(
                "From {}: {error} (a host on the way refused, not the server)",
                error.who()
            )),
            PathFailure::Error(error) => return Err(error),
        }
        Ok(())
    }
}

/// ping(8)'s statistics:
///
/// ```text
/// --- 127.0.0.1:50000 ping statistics ---
/// 5 packets transmitted, 5 received, 0% packet loss, time 4004ms
/// rtt min/avg/max/mdev = 0.041/0.062/0.093/0.017 ms
/// rtt p50/p90/p99 = 0.060/0.093/0.093 ms, 0 duplicated, 0 reordered
/// ```
impl fmt::Display for PingSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Tally {
            sent,
            received,
            duplicated,
            reordered,
            ..
        } = self.window.tally();
        writeln!(f, "--- {} ping statistics ---", self.server)?;
        write!(f, "{sent} packets transmitted, {received} received")?;
        if duplicated > 0 {
            write!(f, ", +{duplicated} duplicates")?;
        }
        let loss = if sent == 0 {
            0.0
        } else {
            (sent - received) as f64 * 100.0 / sent as f64
        };
        writeln!(
            f,
            ", {}% packet loss, time {}ms",
            Percent(loss),
            self.elapsed.as_millis()
        )?;
        let rtts = self.window.rtts();
        if let (Some(min), Some(avg), Some(max), Some(mdev)) =
            (rtts.min(), rtts.mean(), rtts.max(), rtts.mdev())
        {
            writeln!(
                f,
                "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                ms(min),
                ms(avg),
                ms(max),
                ms(mdev)
            )?;
        }
        let p = |q| rtts.percentile(q).map_or(f64::NAN, ms);
        if !rtts.is_empty() {
            write!(
                f,
                "rtt p50/p90/p99 = {:.3}/{:.3}/{:.3} ms, ",
                p(50.0),
                p(90.0),
                p(99.0)
            )?;
        }
        writeln!(f, "{duplicated} duplicated, {reordered} reordered")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in milliseconds as ping(8) prints it: `0.093 ms`.
struct Ms(Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", ms(self.0))
    }
}

/// A percentage as ping(8) prints it: `0`, `20`, `33.3333`.
struct Percent(f64);

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rounded = (self.0 * 1e4).round() / 1e4;
        write!(f, "{rounded}")
    }
}

fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<(), Error> {
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|source| Error::Stdout { source })
}
