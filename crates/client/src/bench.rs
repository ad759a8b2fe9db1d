//! `udptalk-client bench`: load a server and measure it.
//!
//! **Closed loop** (like sockperf ping-pong): `--window` requests in flight; each answer (or
//! loss, after `--timeout`) frees a slot that is refilled at once. **Open loop** (like
//! `iperf3 -u -b`): `--rate` requests a second on a schedule, whatever comes back.
//!
//! The loop is built not to be the bottleneck: requests are written into reused buffers and
//! sent with one `sendmmsg`, replies taken with `recvmmsg` and `MSG_WAITFORONE` (Linux; one
//! datagram per call elsewhere), no allocation per request (JSON replies excepted: decoding an
//! envelope allocates its body), the clock read once before a send and once after a receive,
//! and the progress bar touched at most ten times a second. The books are the [`Window`]'s.
//!
//! A warm-up (`--warmup`, default 200 ms) runs first with the same load and is not measured:
//! it ends by waiting for its replies, and the measured run starts with a fresh window.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use proto::probe::{SINK_REPORT_QUERY, SinkReport};

use crate::client::{PathFailure, max_payload_for, path_failure};
use crate::probes::{self, Payload, Requests};
use crate::sys::{Batch, Socket};
use crate::{Capture, Encoding, Error, Interruption, Reply, SLICE, Stop, Tally, Window};

/// How often the progress bar and [`Stop`] are looked at: ten times a second.
const TICK: Duration = Duration::from_millis(100);

/// Most requests sent or replies received in one system call.
const MAX_BATCH: usize = 64;

/// Everything `bench` needs, checked.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server.
    pub server: SocketAddr,
    /// Plain requests, or JSON envelopes.
    pub encoding: Encoding,
    /// Probes of a size, or fixed bytes.
    pub payload: Payload,
    /// A request unanswered this long is lost (and its slot refilled).
    pub timeout: Duration,
    /// How long to measure.
    pub duration: Duration,
    /// At most this many measured requests.
    pub count: Option<u64>,
    /// Requests in flight (closed loop).
    pub window: usize,
    /// Requests a second (open loop), instead of a window.
    pub rate: Option<f64>,
    /// Random spread of each open-loop send time, up to this.
    pub jitter: Option<Duration>,
    /// Unmeasured run first.
    pub warmup: Duration,
    /// Copies of the datagrams (`--pcap`, `--hexdump`).
    pub capture: Capture,
    /// Print each socket system call on stderr (`--trace`).
    pub trace: bool,
    /// `--source`, `--interface`, `--ttl`, `--tos`, `--dont-fragment`, ...
    pub options: crate::SocketOptions,
}

/// What a bench measured.
#[derive(Debug)]
pub struct BenchResult {
    /// The configuration it ran with.
    pub config: BenchConfig,
    /// Bytes per request on the wire.
    pub size: usize,
    /// The measured run's books and RTTs.
    pub window: Window,
    /// From the first measured send to the last (the drain not included).
    pub elapsed: Duration,
    /// The highest `Access count: N` among the replies, measured and warm-up ones.
    pub highest_access: Option<u64>,
    /// RFC 3550's interarrival jitter over the replies' RTTs.
    pub jitter: Option<Duration>,
    /// Warm-up requests sent and answered (a count server counted them too).
    pub warmup: Tally,
    /// The sink's report, when one was asked for and came.
    pub sink: Option<SinkReport>,
    /// Whether a sink report was asked for (open loop with no reply).
    pub sink_asked: bool,
    /// What stopped it early.
    pub interrupted: Option<Interruption>,
}

impl BenchResult {
    /// Whether anything answered: a reply, or the sink's report. Exit 0, else 3.
    pub fn answered(&self) -> bool {
        self.window.tally().received > 0 || self.sink.is_some()
    }

    /// Replies a second over the measured time.
    pub fn replies_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.window.tally().received as f64 / secs
        } else {
            0.0
        }
    }
}

/// Runs the bench of `config` until its duration or count is done, or `stop` says to stop.
pub fn bench(config: &BenchConfig, stop: &Stop) -> Result<BenchResult, Error> {
    let requests = Requests::new(config.encoding, config.payload.clone());
    let mut socket = Socket::connect(config.server, &config.options, config.trace)?;
    socket.set_tap(config.capture.start()?);
    let batch_size = match config.rate {
        Some(_) => MAX_BATCH,
        None => config.window.clamp(1, MAX_BATCH),
    };
    // A reply longer than this is cut, its length still known: only its start is read,
    // except for JSON envelopes, which are read whole.
    let slot = match config.encoding {
        Encoding::Plain => 2_048,
        Encoding::Json => proto::RECV_BUFFER,
    };
    let mut engine = Engine {
        socket,
        batch: Batch::new(batch_size, slot),
        requests,
        send_bufs: (0..batch_size).map(|_| Vec::with_capacity(2_048)).collect(),
        window: Window::new(1, config.timeout, 1, probes::random_first_id()),
        highest_access: None,
        jitter: Jitter::default(),
        dont_fragment: config.options.dont_fragment,
        warned_mtu: false,
    };
    let progress = progress_bar(config);
    let mut warmup = Tally::default();
    let mut interrupted = None;
    if !config.warmup.is_zero() {
        engine.reset(config);
        progress.set_message("warming up");
        let run = engine.run(config, config.warmup, None, stop, &ProgressBar::hidden())?;
        interrupted = run.interrupted;
        warmup = engine.window.tally();
    }
    engine.reset(config);
    engine.jitter = Jitter::default();
    let elapsed = if interrupted.is_none() {
        let run = engine.run(config, config.duration, config.count, stop, &progress)?;
        interrupted = run.interrupted;
        run.elapsed
    } else {
        Duration::ZERO
    };
    progress.finish_and_clear();
    let sink_asked = config.rate.is_some()
        && interrupted.is_none()
        && engine.window.tally().received == 0
        && warmup.received == 0;
    let sink = if sink_asked {
        engine.ask_sink(config.timeout, stop)?
    } else {
        None
    };
    Ok(BenchResult {
        config: config.clone(),
        size: engine.requests.size(),
        highest_access: engine.highest_access,
        jitter: engine.jitter.value(),
        window: engine.window,
        elapsed,
        warmup,
        sink,
        sink_asked,
        interrupted,
    })
}

fn progress_bar(config: &BenchConfig) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(config.duration.as_millis()).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr_with_hz(10),
    );
    if let Ok(style) = ProgressStyle::with_template("{bar:30} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar
}

/// RFC 3550's interarrival jitter (§6.4.1, A.8): J += (|D| − J)/16, D the difference between
/// the transit times of consecutive replies. Without the server's clock the transit is the RTT,
/// so this is the jitter of the round trip.
#[derive(Debug, Default, Clone, Copy)]
struct Jitter {
    last: Option<f64>,
    jitter: f64,
    samples: u64,
}

impl Jitter {
    fn add(&mut self, transit: Duration) {
        let transit = transit.as_secs_f64();
        if let Some(last) = self.last {
            let d = (transit - last).abs();
            self.jitter += (d - self.jitter) / 16.0;
            self.samples += 1;
        }
        self.last = Some(transit);
    }

    fn value(&self) -> Option<Duration> {
        (self.samples > 0).then(|| Duration::try_from_secs_f64(self.jitter).unwrap_or_default())
    }
}

struct Run {
    elapsed: Duration,
    interrupted: Option<Interruption>,
}

struct Engine {
    socket: Socket,
    batch: Batch,
    requests: Requests,
    send_bufs: Vec<Vec<u8>>,
    window: Window,
    highest_access: Option<u64>,
    jitter: Jitter,
    /// `--dont-fragment`: a request over the path MTU is refused, not lost.
    dont_fragment: bool,
    /// Whether a request over the path MTU was reported.
    warned_mtu: bool,
}

impl Engine {
    /// A fresh window for the next run, its sequence numbers following the last run's.
    fn reset(&mut self, config: &BenchConfig) {
        let capacity = match config.rate {
            // Open loop: as many in flight as one timeout of sending holds.
            Some(rate) => ((rate * config.timeout.as_secs_f64()).ceil() as usize).clamp(1, 1 << 20),
            None => config.window,
        };
        let first_seq = self.window.next_seq();
        let first_id = self.window.id_of(first_seq);
        self.window = Window::new(capacity, config.timeout, first_seq, first_id);
    }

    /// One run: send for `duration` (or `count` requests), then wait for what is outstanding
    /// (at most the timeout).
    fn run(
        &mut self,
        config: &BenchConfig,
        duration: Duration,
        count: Option<u64>,
        stop: &Stop,
        progress: &ProgressBar,
    ) -> Result<Run, Error> {
        let start = Instant::now();
        let end = start.checked_add(duration);
        let interval = config.rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        let mut scheduled: u64 = 0;
        let mut next_send = start;
        let mut next_tick = start + TICK;
        let mut next_expiry: Option<Instant> = None;
        let mut sending_until = None;
        let mut now = start;
        loop {
            let sending = sending_until.is_none()
                && end.is_none_or(|end| now < end)
                && count.is_none_or(|count| self.window.tally().sent < count);
            if !sending && sending_until.is_none() {
                sending_until = Some(now);
            }
            if sending {
                let want = match interval {
                    None => self.window.capacity_left(),
                    Some(interval) => {
                        // Every send whose time has come, at most a batch.
                        let mut due = 0;
                        while now >= next_send && due < MAX_BATCH {
                            due += 1;
                            scheduled += 1;
                            next_send = start + interval.mul_f64(scheduled as f64) + jitter(config);
                        }
                        due
                    }
                };
                let want = want.min(count.map_or(usize::MAX, |count| {
                    usize::try_from(count - self.window.tally().sent).unwrap_or(usize::MAX)
                }));
                if want > 0 {
                    self.send(want)?;
                    if next_expiry.is_none() {
                        next_expiry = self.window.next_expiry();
                    }
                }
            } else if self.window.outstanding() == 0 {
                break;
            }
            let wait = match (sending, interval) {
                (true, Some(_)) => next_send.saturating_duration_since(Instant::now()),
                _ => SLICE.min(config.timeout),
            };
            // Below a millisecond the receive does not block: the next send is nearly due.
            let wait = if wait < Duration::from_millis(1) {
                Duration::ZERO
            } else {
                wait
            };
            // The clock read at the receive serves the rest of the turn.
            now = match self.receive(wait)? {
                Some(received_at) => received_at,
                None => Instant::now(),
            };
            if next_expiry.is_some_and(|expiry| now >= expiry) {
                self.window.expire(now, |_| {});
                next_expiry = self.window.next_expiry();
            }
            if now >= next_tick {
                next_tick = now + TICK;
                if let Some(interruption) = stop.check() {
                    return Ok(Run {
                        elapsed: now - start,
                        interrupted: Some(interruption),
                    });
                }
                let elapsed = now - start;
                progress.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
                let secs = elapsed.as_secs_f64().max(1e-9);
                progress.set_message(format!(
                    "{:.0} replies/s, {} lost",
                    self.window.tally().received as f64 / secs,
                    self.window.tally().lost
                ));
            }
        }
        Ok(Run {
            elapsed: sending_until.unwrap_or(now) - start,
            interrupted: None,
        })
    }

    /// Writes and sends `want` requests, a batch per system call.
    fn send(&mut self, mut want: usize) -> Result<(), Error> {
        while want > 0 {
            let sent = self.send_batch(want)?;
            if sent == 0 {
                break;
            }
            want = want.saturating_sub(sent);
        }
        Ok(())
    }

    /// Writes and sends up to `want` requests (at most a batch) in one call; returns how many
    /// went.
    fn send_batch(&mut self, want: usize) -> Result<usize, Error> {
        let n = want.min(self.batch.capacity());
        let first = self.window.next_seq();
        let ack = self.window.ack().unwrap_or(first);
        let ack = self.window.id_of(ack);
        for (i, buf) in self.send_bufs.iter_mut().take(n).enumerate() {
            let seq = first + i as u64;
            self.requests.write(seq, self.window.id_of(seq), ack, buf);
        }
        let sent_at = Instant::now();
        let sent = self
            .socket
            .send_batch(&mut self.batch, &self.send_bufs[..n])
            .map_err(|e| {
                let len = self.send_bufs.first().map_or(0, Vec::len);
                socket_error(&mut self.socket, e, "sending", len, self.dont_fragment)
            })?;
        for _ in 0..sent {
            self.window.send(sent_at);
        }
        Ok(sent)
    }

    /// Takes the replies that arrive within `wait` (at least one, if any comes); returns when
    /// they were taken, if any came.
    fn receive(&mut self, wait: Duration) -> Result<Option<Instant>, Error> {
        let n = match self.socket.recv_batch(&mut self.batch, wait) {
            Ok(n) => n,
            Err(e) => {
                let len = self.send_bufs.first().map_or(0, Vec::len);
                let peer = self.socket.peer();
                return match path_failure(&mut self.socket, e, "receiving", len, self.dont_fragment)
                {
                    // Without --dont-fragment the request was lost, and the next ones are
                    // fragmented by this host: counted lost, said once.
                    PathFailure::TooBig { mtu, error } => {
                        if !self.warned_mtu {
                            self.warned_mtu = true;
                            log::warn!(
                                "requests of {len} bytes to {peer} are over the path MTU \
                                 {mtu}{}: one was lost, the next ones are fragmented by this \
                                 host (a lost fragment loses the request); a --size of at most \
                                 {} fits",
                                error.map_or(String::new(), |e| e.said_by()),
                                max_payload_for(peer, mtu)
                            );
                        }
                        Ok(None)
                    }
                    PathFailure::Refused => Err(Error::Refused { peer }),
                    PathFailure::Error(error) => Err(error),
                };
            }
        };
        if n == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        for i in 0..n {
            let Some((datagram, _len)) = self.batch.get(i) else {
                break;
            };
            let info = probes::read_reply(&self.requests, datagram);
            if let Some(access) = info.access {
                self.highest_access = Some(self.highest_access.map_or(access, |h| h.max(access)));
            }
            if let Reply::Matched { rtt: Some(rtt), .. } = self.window.reply(info.key, now) {
                self.jitter.add(rtt);
            }
        }
        Ok(Some(now))
    }

    /// Asks a sink for its report on us, waiting at most `timeout`.
    fn ask_sink(&mut self, timeout: Duration, stop: &Stop) -> Result<Option<SinkReport>, Error> {
        let len = SINK_REPORT_QUERY.len();
        let dont_fragment = self.dont_fragment;
        match self.socket.send(SINK_REPORT_QUERY) {
            Ok(()) => {}
            Err(e) => {
                return Err(socket_error(
                    &mut self.socket,
                    e,
                    "asking for the sink's report",
                    len,
                    dont_fragment,
                ));
            }
        }
        let until = Instant::now().checked_add(timeout);
        loop {
            let wait = match stop.slice(until) {
                Ok(wait) if wait.is_zero() => return Ok(None),
                Ok(wait) => wait,
                Err(_) => return Ok(None),
            };
            let n = self.socket.recv_batch(&mut self.batch, wait).map_err(|e| {
                socket_error(
                    &mut self.socket,
                    e,
                    "receiving the sink's report",
                    len,
                    dont_fragment,
                )
            })?;
            for i in 0..n {
                if let Some(report) = self.batch.get(i).and_then(|(d, _)| SinkReport::decode(d)) {
                    return Ok(Some(report));
                }
            }
        }
    }
}

/// A random spread of an open-loop send time, up to `--jitter`.
fn jitter(config: &BenchConfig) -> Duration {
    match config.jitter {
        Some(spread) if !spread.is_zero() => spread.mul_f64(rand::random_range(0.0..1.0)),
        _ => Duration::ZERO,
    }
}

/// The error that ends the run after `e` (from `doing`, datagrams of `len` bytes): the server
/// refused, a host on the way refused, or the requests are over the path MTU.
fn socket_error(
    socket: &mut Socket,
    e: std::io::Error,
    doing: &'static str,
    len: usize,
    dont_fragment: bool,
) -> Error {
    let peer = socket.peer();
    match path_failure(socket, e, doing, len, dont_fragment) {
        PathFailure::Refused => Error::Refused { peer },
        PathFailure::TooBig { mtu, .. } => Error::Usage {
            reason: format!(
                "the requests of {len} bytes to {peer} are over the path MTU {mtu}, and are \
                 lost or fragmented on the way: give a --size of at most {}",
                max_payload_for(peer, mtu)
            ),
        },
        PathFailure::Error(error) => error,
    }
}

impl BenchResult {
    /// The result as one JSON object, `bench` in docs/output.schema.json.
    pub fn to_json(&self) -> serde_json::Value {
        let tally = self.window.tally();
        let rtts = self.window.rtts();
        let us = |d: Option<Duration>| d.map(|d| d.as_secs_f64() * 1e6);
        let config = &self.config;
        serde_json::json!({
            "event": "bench",
            // The tag before `event` was: kept for scripts written against it.
            "kind": "bench",
            "server": config.server.to_string(),
            "mode": if config.rate.is_some() { "open" } else { "closed" },
            "encoding": match config.encoding {
                Encoding::Plain => "plain",
                Encoding::Json => "json",
            },
            "window": config.window,
            "rate": config.rate,
            "size": self.size,
            "duration_s": self.elapsed.as_secs_f64(),
            "warmup_s": config.warmup.as_secs_f64(),
            "warmup_sent": self.warmup.sent,
            "warmup_received": self.warmup.received,
            "sent": tally.sent,
            "received": tally.received,
            "lost": tally.lost,
            "late": tally.late,
            "duplicated": tally.duplicated,
            "reordered": tally.reordered,
            "unknown": tally.unknown,
            "replies_per_s": self.replies_per_s(),
            "rtt_us": {
                "min": us(rtts.min()),
                "mean": us(rtts.mean()),
                "p50": us(rtts.percentile(50.0)),
                "p90": us(rtts.percentile(90.0)),
                "p99": us(rtts.percentile(99.0)),
                "p999": us(rtts.percentile(99.9)),
                "max": us(rtts.max()),
            },
            "jitter_us": us(self.jitter),
            "highest_access": self.highest_access,
            "sink": self.sink.map(|sink| serde_json::json!({
                "datagrams": sink.datagrams,
                "bytes": sink.bytes,
                "lost": sink.lost,
                "reordered": sink.reordered,
                "duplicated": sink.duplicated,
            })),
            "interrupted": self.interrupted.map(|i| i.to_string()),
        })
    }
}

/// The report for people:
///
/// ```text
/// bench 127.0.0.1:5001: closed loop, window 1, 14 bytes, plain, 5.000 s measured (after a 200ms warm-up, not measured)
/// sent 612345, received 612345, lost 0, late 0, duplicated 0, reordered 0
/// replies/s 122469.0
/// rtt us: min 6.1, mean 8.0, p50 7.9, p90 8.6, p99 12.3, p99.9 25.0, max 310.2
/// highest access count 613000
/// ```
impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = &self.config;
        let tally = self.window.tally();
        write!(f, "bench {}: ", config.server)?;
        match config.rate {
            Some(rate) => write!(f, "open loop, {rate}/s")?,
            None => write!(f, "closed loop, window {}", config.window)?,
        }
        let encoding = match config.encoding {
            Encoding::Plain => "plain",
            Encoding::Json => "json",
        };
        write!(
            f,
            ", {} bytes, {encoding}, {:.3} s measured",
            self.size,
            self.elapsed.as_secs_f64()
        )?;
        if config.warmup.is_zero() {
            writeln!(f)?;
        } else {
            writeln!(
                f,
                " (after a {} warm-up of {} requests, not measured)",
                humantime::format_duration(config.warmup),
                self.warmup.sent
            )?;
        }
        if let Some(interruption) = self.interrupted {
            writeln!(f, "stopped early: {interruption}")?;
        }
        if self.sink.is_some() && tally.received == 0 {
            // A sink answers nothing: what counts is what it says arrived, below.
            writeln!(f, "sent {}, no replies (a sink answers none)", tally.sent)?;
        } else {
            writeln!(
                f,
                "sent {}, received {}, lost {}, late {}, duplicated {}, reordered {}",
                tally.sent,
                tally.received,
                tally.lost,
                tally.late,
                tally.duplicated,
                tally.reordered
            )?;
            writeln!(f, "replies/s {:.1}", self.replies_per_s())?;
        }
        let rtts = self.window.rtts();
        let us = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6);
        if !rtts.is_empty() {
            writeln!(
                f,
                "rtt us: min {:.1}, mean {:.1}, p50 {:.1}, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
                us(rtts.min()),
                us(rtts.mean()),
                us(rtts.percentile(50.0)),
                us(rtts.percentile(90.0)),
                us(rtts.percentile(99.0)),
                us(rtts.percentile(99.9)),
                us(rtts.max())
            )?;
        }
        if let Some(jitter) = self.jitter.filter(|_| config.rate.is_some()) {
            writeln!(
                f,
                "jitter {:.1} us (RFC 3550, over the replies' RTTs)",
                us(Some(jitter))
            )?;
        }
        if let Some(access) = self.highest_access {
            writeln!(f, "highest access count {access}")?;
        }
        match (self.sink_asked, self.sink) {
            (_, Some(sink)) => {
                // The sink counts from the first datagram it got, the warm-up's included.
                let sent = tally.sent + self.warmup.sent;
                writeln!(
                    f,
                    "sink report: {sink} (of {sent} sent, warm-up included: {:.2}% lost)",
                    if sent == 0 {
                        0.0
                    } else {
                        100.0 * sent.saturating_sub(sink.datagrams) as f64 / sent as f64
                    }
                )?;
            }
            (true, None) => writeln!(
                f,
                "no reply and no sink report within {}: is the server a udptalk sink, and running?",
                humantime::format_duration(config.timeout)
            )?,
            (false, None) => {}
        }
        Ok(())
    }
}
