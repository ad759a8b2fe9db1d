//! The lossy proxy: a fixed pattern of drops, duplicates, delays and swaps between the JSON
//! client and a count server, in both directions.
//!
//! The proxy numbers messages by their envelope id, in the order the ids first reach it
//! (message 1 is the client's first id), and numbers the datagrams of each message in each
//! direction as they arrive (1 is the first request, 2 its first resend; 1 is the first reply to
//! it, 2 the next). [`PATTERN`] picks datagrams by those numbers, never by time, so the same
//! faults hit the same messages on every run, however fast the machine. The client sends one
//! message at a time, so a swap holds a datagram until the next one in its direction, which is
//! the resend of the same message: the resend overtakes the original.
//!
//! What must hold: the client prints `Access count: 1` to `20`, in order, once each, and exits 0;
//! the server counts 20 and answers every other request it got (resends, duplicates, a request
//! delivered after its sender moved on) from its cache, counted as duplicates; the client drops
//! every reply it no longer waits for.

use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::{Checks, Summary, envelope_id, run_client, start_server, stop_server, wait_drained};
use crate::Bins;

/// Messages the client sends.
const MESSAGES: u32 = 20;

/// The client's options: short timeouts so the row stays fast, and enough resends (waits of
/// 100, 200, 400, 800, 800, 800, 800 ms) that no fault of the pattern can exhaust them.
const CLIENT_ARGS: [&str; 6] = ["--encoding", "json", "--timeout", "100ms", "--retries", "6"];

/// The longest a swapped datagram waits for its neighbour before it goes out alone.
const SWAP_LIMIT: Duration = Duration::from_secs(1);

/// How often the proxy's threads look at their stop flag.
const POLL: Duration = Duration::from_millis(20);

/// The proxy's threads stop after this long whatever happens.
const LIFETIME: Duration = Duration::from_secs(40);

/// Which way a datagram goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Dir {
    /// Client → server.
    Request,
    /// Server → client.
    Reply,
}

impl Dir {
    fn index(self) -> usize {
        match self {
            Dir::Request => 0,
            Dir::Reply => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dir::Request => "request",
            Dir::Reply => "reply",
        }
    }
}

/// What the proxy does to a datagram of the pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Never delivered.
    Drop,
    /// Delivered twice, at once.
    Duplicate,
    /// Delivered this much later.
    Delay(Duration),
    /// Held until the next datagram in its direction has gone out, then delivered.
    Swap,
}

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The faults: direction, message number, datagram number of that message in that direction,
/// what is done to it. Every other datagram goes straight through.
const PATTERN: [(Dir, u32, u32, Fault); 17] = [
    // Requests: a lost first attempt; the original overtaken by its resend and delivered 1 s
    // late, when the client is several messages further; duplicates; a swap; a message lost
    // twice; a shorter delay.
    (Dir::Request, 2, 1, Fault::Drop),
    (Dir::Request, 3, 1, Fault::Delay(ms(1000))),
    (Dir::Request, 4, 1, Fault::Duplicate),
    (Dir::Request, 6, 1, Fault::Swap),
    (Dir::Request, 7, 1, Fault::Drop),
    (Dir::Request, 7, 2, Fault::Drop),
    (Dir::Request, 10, 1, Fault::Delay(ms(300))),
    (Dir::Request, 11, 1, Fault::Duplicate),
    (Dir::Request, 14, 1, Fault::Drop),
    (Dir::Request, 17, 1, Fault::Duplicate),
    // Replies: lost (the resend must be answered from the cache, not counted), delayed past the
    // resend's answer, duplicated, overtaken by the answer to the resend.
    (Dir::Reply, 5, 1, Fault::Drop),
    (Dir::Reply, 8, 1, Fault::Delay(ms(600))),
    (Dir::Reply, 9, 1, Fault::Duplicate),
    (Dir::Reply, 12, 1, Fault::Drop),
    (Dir::Reply, 13, 1, Fault::Swap),
    (Dir::Reply, 16, 1, Fault::Duplicate),
    (Dir::Reply, 19, 1, Fault::Delay(ms(250))),
];

/// The pattern as a person reads it, for the row's figures.
fn pattern_text() -> String {
    PATTERN
        .iter()
        .map(|(dir, message, nth, fault)| {
            let what = match fault {
                Fault::Drop => "drop".to_owned(),
                Fault::Duplicate => "dup".to_owned(),
                Fault::Delay(by) => format!("delay {}ms", by.as_millis()),
                Fault::Swap => "swap".to_owned(),
            };
            format!("{} {message}#{nth} {what}", dir.name())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the proxy saw and did.
#[derive(Default)]
pub(crate) struct Log {
    /// Datagrams that reached the proxy, per direction.
    arrived: [usize; 2],
    /// The message number of each datagram delivered, per direction, in delivery order.
    delivered: [Vec<u32>; 2],
    /// The faults of the pattern applied, as `request 2#1 drop`.
    pub(crate) applied: Vec<String>,
    /// Datagrams without a readable id, passed through.
    unnumbered: usize,
    /// Sends that failed.
    pub(crate) errors: Vec<String>,
}

/// A datagram that goes out later.
struct Later {
    at: Instant,
    dir: Dir,
    message: u32,
    bytes: Vec<u8>,
}

/// A datagram read by one of the proxy's sockets.
struct Arrival {
    dir: Dir,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// The running proxy: the client sends to [`Proxy::addr`], the proxy forwards to the server.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    readers: Vec<JoinHandle<()>>,
    decider: JoinHandle<Log>,
}

impl Proxy {
    /// Binds the client's side and the server's side on 127.0.0.1 and starts the threads: one
    /// reader per socket, one thread that decides each datagram's fate and sends.
    pub(crate) fn start(server: SocketAddr) -> Result<Proxy, String> {
        let bind = |what: &str| {
            UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|socket| {
                    socket.set_read_timeout(Some(POLL))?;
                    Ok(socket)
                })
                .map_err(|e| format!("proxy: cannot bind its {what} socket on 127.0.0.1: {e}"))
        };
        let front = bind("client-side")?;
        let back = bind("server-side")?;
        back.connect(server)
            .map_err(|e| format!("proxy: cannot connect to {server}: {e}"))?;
        let addr = front.local_addr().map_err(|e| e.to_string())?;
        let clone = |socket: &UdpSocket| socket.try_clone().map_err(|e| format!("proxy: {e}"));
        let decider = Decider {
            front: clone(&front)?,
            back: clone(&back)?,
            client: None,
            messages: HashMap::new(),
            arrivals: HashMap::new(),
            later: Vec::new(),
            held: [None, None],
            log: Log::default(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let readers = vec![
            read(front, Dir::Request, tx.clone(), Arc::clone(&stop)),
            read(back, Dir::Reply, tx, Arc::clone(&stop)),
        ];
        let decider = thread::spawn(move || decider.run(&rx));
        Ok(Proxy {
            addr,
            stop,
            readers,
            decider,
        })
    }

    /// Stops reading, lets what is delayed or held go out at its time (at most a second), and
    /// returns the log.
    pub(crate) fn finish(self) -> Result<Log, String> {
        self.stop.store(true, Ordering::Relaxed);
        for reader in self.readers {
            reader
                .join()
                .map_err(|_| "proxy: a reader thread panicked".to_owned())?;
        }
        self.decider
            .join()
            .map_err(|_| "proxy: the deciding thread panicked".to_owned())
    }
}

/// Reads `socket` into `tx` until `stop` (or [`LIFETIME`]).
fn read(socket: UdpSocket, dir: Dir, tx: Sender<Arrival>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    thread::spawn(move || {
        let started = Instant::now();
        let mut buf = vec![0; 65_536];
        while !stop.load(Ordering::Relaxed) && started.elapsed() < LIFETIME {
            // A timeout lets the loop see `stop`; any other error (an interrupted call, a
            // refusal reported for an earlier datagram) changes nothing: keep reading.
            if let Ok((len, from)) = socket.recv_from(&mut buf) {
                let bytes = buf.get(..len).unwrap_or_default().to_vec();
                if tx.send(Arrival { dir, from, bytes }).is_err() {
                    break;
                }
            }
        }
    })
}

/// Decides each datagram's fate by [`PATTERN`] and sends it, now or later.
struct Decider {
    /// The client-side socket, to send replies from the address the client sent to.
    front: UdpSocket,
    /// The server-side socket, connected to the server.
    back: UdpSocket,
    /// Where the client's datagrams come from.
    client: Option<SocketAddr>,
    /// Message numbers by envelope id.
    messages: HashMap<u64, u32>,
    /// Datagrams seen so far per direction and message.
    arrivals: HashMap<(Dir, u32), u32>,
    /// Delayed datagrams.
    later: Vec<Later>,
    /// The datagram held for a swap, per direction.
    held: [Option<Later>; 2],
    log: Log,
}

impl Decider {
    fn run(mut self, rx: &Receiver<Arrival>) -> Log {
        loop {
            self.release(Instant::now());
            let wait = self
                .next_release()
                .map_or(POLL, |at| at.saturating_duration_since(Instant::now()))
                .min(POLL);
            match rx.recv_timeout(wait) {
                Ok(arrival) => self.arrive(arrival),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        // Nothing more comes in: what is delayed or held goes out at its time.
        while let Some(at) = self.next_release() {
            thread::sleep(at.saturating_duration_since(Instant::now()));
            self.release(Instant::now());
        }
        self.log
    }

    fn arrive(&mut self, Arrival { dir, from, bytes }: Arrival) {
        self.log.arrived[dir.index()] += 1;
        if dir == Dir::Request {
            self.client = Some(from);
        }
        let next = u32::try_from(self.messages.len() + 1).unwrap_or(u32::MAX);
        let message = match (envelope_id(&bytes), dir) {
            (Some(id), Dir::Request) => *self.messages.entry(id).or_insert(next),
            (Some(id), Dir::Reply) => self.messages.get(&id).copied().unwrap_or(0),
            (None, _) => 0,
        };
        if message == 0 {
            self.log.unnumbered += 1;
        }
        let nth = self.arrivals.entry((dir, message)).or_insert(0);
        *nth += 1;
        let nth = *nth;
        let fault = PATTERN
            .iter()
            .find(|&&(d, m, n, _)| d == dir && m == message && n == nth)
            .map(|&(_, _, _, fault)| fault);
        if let Some(fault) = fault {
            self.log
                .applied
                .push(format!("{} {message}#{nth} {fault:?}", dir.name()));
        }

        // A held datagram goes out after its neighbour, whatever happens to the neighbour.
        let held = self.held[dir.index()].take();
        let now = Instant::now();
        match fault {
            None => self.deliver(dir, message, &bytes),
            Some(Fault::Drop) => {}
            Some(Fault::Duplicate) => {
                self.deliver(dir, message, &bytes);
                self.deliver(dir, message, &bytes);
            }
            Some(Fault::Delay(by)) => self.later.push(Later {
                at: now + by,
                dir,
                message,
                bytes,
            }),
            Some(Fault::Swap) => {
                self.held[dir.index()] = Some(Later {
                    at: now + SWAP_LIMIT,
                    dir,
                    message,
                    bytes,
                });
            }
        }
        if let Some(held) = held {
            self.deliver(held.dir, held.message, &held.bytes);
        }
    }

    /// When the next delayed or held datagram is due.
    fn next_release(&self) -> Option<Instant> {
        self.later
            .iter()
            .chain(self.held.iter().flatten())
            .map(|later| later.at)
            .min()
    }

    /// Sends what is due by `now`, earliest first.
    fn release(&mut self, now: Instant) {
        for slot in 0..self.held.len() {
            if self.held[slot].as_ref().is_some_and(|held| held.at <= now) {
                if let Some(held) = self.held[slot].take() {
                    self.later.push(held);
                }
            }
        }
        self.later.sort_by_key(|later| later.at);
        let due = self.later.partition_point(|later| later.at <= now);
        let due: Vec<Later> = self.later.drain(..due).collect();
        for later in due {
            self.deliver(later.dir, later.message, &later.bytes);
        }
    }

    fn deliver(&mut self, dir: Dir, message: u32, bytes: &[u8]) {
        let sent = match (dir, self.client) {
            (Dir::Request, _) => self.back.send(bytes),
            (Dir::Reply, Some(client)) => self.front.send_to(bytes, client),
            (Dir::Reply, None) => Err(ErrorKind::NotConnected.into()),
        };
        match sent {
            Ok(_) => self.log.delivered[dir.index()].push(message),
            Err(e) => self
                .log
                .errors
                .push(format!("{} of message {message}: {e}", dir.name())),
        }
    }
}

/// The row: a count server, the proxy in front of it, the JSON client through the proxy.
pub fn run(bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = start_server(bins, "127.0.0.1:0", &[], &mut checks)?;
    let proxy = Proxy::start(server.addr)?;
    let messages: Vec<String> = (1..=MESSAGES).map(|n| format!("message {n}")).collect();
    let client = run_client(
        bins,
        proxy.addr,
        &CLIENT_ARGS,
        &messages,
        Duration::from_secs(30),
    );
    let log = proxy.finish()?;
    let client = client?;
    // Every delivered request must be read before the server is stopped, or it would be
    // missing from its books through no fault of its own.
    let drained = wait_drained(server.addr.port(), Duration::from_secs(2));
    let summary = stop_server(server, &mut checks)?;
    if let Err(problem) = drained {
        checks.fail(problem);
    }

    // The client: every answer once, in order, and nothing else.
    super::check_exit(&client, 0, &mut checks);
    let stdout = client.stdout_lines();
    let answers: Vec<&String> = stdout
        .iter()
        .filter(|line| line.starts_with("Server message: "))
        .collect();
    let expected: Vec<String> = (1..=MESSAGES)
        .map(|n| format!("Server message: Access count: {n}"))
        .collect();
    checks.check(answers == expected.iter().collect::<Vec<_>>(), || {
        let got: Vec<&str> = answers
            .iter()
            .map(|line| line.trim_start_matches("Server message: "))
            .collect();
        format!(
            "client must print `Access count: 1` to `{MESSAGES}` once each, in order; got {got:?}"
        )
    });
    let sent_lines = stdout.iter().filter(|l| *l == "Sent a message.").count();
    checks.check(sent_lines == MESSAGES as usize, || {
        format!("client printed `Sent a message.` {sent_lines} times, expected {MESSAGES}")
    });

    // The proxy: every fault of the pattern was applied, and nothing failed to send.
    checks.check(log.applied.len() == PATTERN.len(), || {
        format!(
            "the proxy applied {} of the {} faults of its pattern (applied: {})",
            log.applied.len(),
            PATTERN.len(),
            log.applied.join(", ")
        )
    });
    checks.check(log.errors.is_empty(), || {
        format!("the proxy could not send: {}", log.errors.join("; "))
    });
    let requests = &log.delivered[Dir::Request.index()];
    let replies = &log.delivered[Dir::Reply.index()];
    let distinct = requests.iter().collect::<HashSet<_>>().len();
    let extra_requests = requests.len().saturating_sub(distinct);

    // The server: each message counted once, everything else delivered answered as a duplicate.
    if let Some(summary) = &summary {
        summary.check_server_books(&mut checks);
        let figure = |name| summary.need(name);
        match (figure("received"), figure("counted"), figure("duplicates")) {
            (Ok(received), Ok(counted), Ok(duplicates)) => {
                checks.check(received == requests.len() as u64, || {
                    format!(
                        "server received {received}, but the proxy delivered {} requests",
                        requests.len()
                    )
                });
                checks.check(counted == u64::from(MESSAGES), || {
                    format!("server counted {counted}, expected {MESSAGES}: one per message")
                });
                checks.check(duplicates == extra_requests as u64, || {
                    format!(
                        "server's duplicates {duplicates}, expected {extra_requests}: the proxy \
                         delivered {} requests for {distinct} ids",
                        requests.len()
                    )
                });
            }
            (received, counted, duplicates) => {
                for problem in [received.err(), counted.err(), duplicates.err()]
                    .into_iter()
                    .flatten()
                {
                    checks.fail(problem);
                }
            }
        }
    }

    // The client's summary: what it sent matches what the proxy saw, and it dropped the
    // replies it no longer waited for (at least one; at most the extra replies delivered).
    let extra_replies = replies.len().saturating_sub(MESSAGES as usize) as u64;
    match Summary::find(&client.stderr_lines()) {
        Some(client_summary) => {
            let datagrams = log.arrived[Dir::Request.index()];
            // `20 messages sent in 32 datagrams`: a field that starts with its figure.
            let sent = format!("{MESSAGES} messages sent in {datagrams} datagrams");
            checks.check(
                client_summary
                    .fields
                    .iter()
                    .any(|(name, value)| name.is_empty() && *value == sent),
                || {
                    format!(
                        "client summary must say `{sent}` (what the proxy received): \
                         {client_summary}"
                    )
                },
            );
            checks.check(
                client_summary.get("answered") == Some(u64::from(MESSAGES))
                    && client_summary.get("lost") == Some(0),
                || {
                    format!(
                        "client summary must say `answered {MESSAGES}`, `lost 0`: {client_summary}"
                    )
                },
            );
            let dropped = client_summary.get("duplicates dropped");
            checks.check(
                dropped.is_some_and(|dropped| (1..=extra_replies).contains(&dropped)),
                || {
                    format!(
                        "client summary must say `duplicates dropped X` with 1 ≤ X ≤ \
                         {extra_replies} (the extra replies the proxy delivered): \
                         {client_summary}"
                    )
                },
            );
            checks.figure(format!(
                "client dropped {} stale replies",
                dropped.map_or("?".to_owned(), |d| d.to_string())
            ));
        }
        None => checks.fail("client printed no `summary: …` line, though it resent messages"),
    }

    checks.figure(format!(
        "client {} in {:.2}s",
        client.describe_end(),
        client.elapsed.as_secs_f64()
    ));
    checks.figure(format!(
        "proxy: requests {} in → {} delivered for {distinct} ids, replies {} in → {} delivered",
        log.arrived[Dir::Request.index()],
        requests.len(),
        log.arrived[Dir::Reply.index()],
        replies.len()
    ));
    if let Some(summary) = &summary {
        checks.figure(format!("server {summary}"));
    }
    if log.unnumbered > 0 {
        checks.figure(format!("{} datagrams without an id", log.unnumbered));
    }
    checks
        .context
        .insert(0, format!("pattern: {}", pattern_text()));
    checks.output("client", &client);
    Ok(checks)
}
