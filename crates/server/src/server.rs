//! The receive loop: per worker one socket, one batch of receive and answer buffers, the
//! [`Core`] that decides; one [`Sink`] that shows, shared by the workers.
//!
//! A batch goes in three steps, so that output never delays an answer: every datagram is
//! decided ([`Core::handle`]), all answers go out (one `sendmmsg` on Linux), then the events go
//! to the sink (and, with `--pcap` or `--hexdump`, the datagrams to the worker's [`Tap`]).
//! Nothing is allocated per batch or per datagram in steady state: the buffers are made once,
//! and the events of a batch, which borrow its receive buffers, live in a vector whose
//! allocation is handed from batch to batch ([`recycle`]).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use proto::RECV_BUFFER;
use proto::capture::Direction;
use proto::text::canonical_peer;

use crate::capture::{Capture, Tap};
use crate::core::{Answer, Core, Handled};
use crate::shared::{Shared, lock};
use crate::sink::Sink;
use crate::sys::{
    self, BATCH, Batch, Outgoing, RecvBuffer, RecvMeta, ServerSocket, SocketOptions, Waker,
};
use crate::trace::SocketTrace;
use crate::unanswered::Unanswered;
use crate::{Config, Error, Interface, Summary};

/// How often the watch (see [`Server::run`]) looks at the stop flag: a stop request is seen
/// within this long. Signals are never relied on to interrupt a receive (EINTR is not
/// guaranteed with SA_RESTART handlers).
const POLL: Duration = Duration::from_millis(250);

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    /// One socket per worker, all on the same address.
    sockets: Vec<ServerSocket>,
    config: Config,
    shared: Arc<Shared>,
    /// Shared by the workers, each taking it once per batch.
    sink: Option<Mutex<Box<dyn Sink + Send>>>,
    /// `--pcap` and `--hexdump`, when asked for.
    capture: Option<Capture>,
}

impl Server {
    /// Binds the socket `config.bind` names, one per worker (`config.workers`; with
    /// `config.once`, one).
    pub fn bind(config: Config) -> Result<Server, Error> {
        Server::bind_traced(config, &SocketTrace::off())
    }

    /// Like [`bind`](Server::bind), with every call on the sockets printed to `trace`
    /// (`--trace`).
    pub fn bind_traced(config: Config, trace: &SocketTrace) -> Result<Server, Error> {
        let workers = if config.once {
            1
        } else {
            config.workers.max(1)
        };
        let options = SocketOptions {
            v6only: config.ipv6_only,
            recv_buffer: config.recv_buffer,
        };
        let sockets = ServerSocket::bind_group(config.bind, workers, &options, trace)
            .map_err(|e| Error::from_bind(config.bind, e))?;
        for join in &config.joins {
            let failed = |source| Error::Join {
                join: join.to_string(),
                source,
            };
            let ifindex = match &join.interface {
                Interface::Index(index) => *index,
                Interface::Name(name) => sys::interface_index(name).map_err(failed)?,
            };
            // Every socket of the group joins: membership is per socket.
            for socket in &sockets {
                socket.join(join.group, ifindex).map_err(failed)?;
            }
        }
        for socket in &sockets {
            // Set once here: the loop makes no system call but the receive and the send.
            socket.limit_waits(POLL).map_err(|source| Error::Socket {
                doing: "setting the receive timeout",
                source,
            })?;
        }
        Ok(Server {
            shared: Arc::new(Shared::new(&config, sockets.len())),
            sockets,
            config,
            sink: None,
            capture: None,
        })
    }

    /// Shows every datagram's event on `sink` (by default, nothing is shown).
    pub fn with_sink(mut self, sink: Box<dyn Sink + Send>) -> Server {
        self.sink = Some(Mutex::new(sink));
        self
    }

    /// Copies every datagram received and sent to `capture` (by default, none is copied).
    pub fn with_capture(mut self, capture: Capture) -> Server {
        self.capture = capture.is_on().then_some(capture);
        self
    }

    /// The receive buffer the (first) socket asked for and got.
    pub fn recv_buffer(&self) -> Option<RecvBuffer> {
        self.sockets.first().map(ServerSocket::recv_buffer)
    }

    /// The configuration it serves by.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The address really bound (with the port the system chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.sockets
            .first()
            .and_then(|socket| socket.local_addr().ok())
            .unwrap_or(self.config.bind)
    }

    /// Serves until `stop` is set, `--idle` passes without a datagram on any worker, or, with
    /// `--once`, the first datagram has been handled; returns the books of all workers, summed.
    ///
    /// Each worker gets a thread; the calling thread keeps the watch: it looks at `stop`
    /// (and `--idle`) every [`POLL`] and as soon as a worker ends, and then ends every worker's
    /// wait ([`Waker`]), so that all of them stop within [`POLL`] of a request, and when one of
    /// them ends (for any reason), the others end too.
    pub fn run(self, stop: &AtomicBool) -> Result<Summary, Error> {
        let Server {
            sockets,
            config,
            shared,
            sink,
            capture,
        } = self;
        let wakers = sockets
            .iter()
            .map(ServerSocket::waker)
            .collect::<io::Result<Vec<Waker>>>()
            .map_err(|source| Error::Socket {
                doing: "preparing to stop",
                source,
            })?;
        let common = Common {
            config: &config,
            stop,
            halt: AtomicBool::new(false),
            ended: Condvar::new(),
            watch: Mutex::new(()),
            started: Instant::now(),
            last_datagram: AtomicU64::new(0),
            sink: sink.as_ref(),
            capture: capture.as_ref(),
            workers: sockets.len(),
            finished: sockets.iter().map(|_| AtomicBool::new(false)).collect(),
        };
        let start = |index: usize, socket: ServerSocket| -> Result<Summary, Error> {
            let _halt = HaltOnDrop(&common, index);
            let worker = Worker::new(index, socket, &config, Arc::clone(&shared), common.capture)?;
            Ok(worker.run(&common))
        };
        let summaries: Vec<Result<Summary, Error>> = thread::scope(|scope| {
            let mut running = Vec::with_capacity(common.workers);
            let mut failed = None;
            for (index, socket) in sockets.into_iter().enumerate() {
                let start = &start;
                match thread::Builder::new()
                    .name(format!("worker-{index}"))
                    .spawn_scoped(scope, move || start(index, socket))
                {
                    Ok(handle) => running.push((index, handle)),
                    Err(source) => {
                        common.halt.store(true, Ordering::Relaxed);
                        failed = Some(Error::Socket {
                            doing: "starting a worker thread",
                            source,
                        });
                        break;
                    }
                }
            }
            common.watch(&wakers);
            let mut results: Vec<Result<Summary, Error>> = running
                .into_iter()
                .map(|(worker, handle)| handle.join().unwrap_or(Err(Error::Worker { worker })))
                .collect();
            results.extend(failed.map(Err));
            results
        });
        let mut total = Summary::default();
        for summary in summaries {
            add(&mut total, &summary?);
        }
        debug_assert_eq!(total.counted, shared.counter.total());
        Ok(total)
    }
}

/// What every worker of one server reads.
struct Common<'a> {
    config: &'a Config,
    /// Set by the user (a signal).
    stop: &'a AtomicBool,
    /// Set when the workers are to end: by the watch, or by a worker that ended.
    halt: AtomicBool,
    /// Told when a worker ends, so that the watch ends the others' waits at once.
    ended: Condvar,
    /// The watch's lock, for [`ended`](Common::ended).
    watch: Mutex<()>,
    started: Instant,
    /// When the last datagram came to any worker, in nanoseconds since `started`.
    last_datagram: AtomicU64,
    sink: Option<&'a Mutex<Box<dyn Sink + Send>>>,
    capture: Option<&'a Capture>,
    workers: usize,
    /// Which workers have ended (the watch leaves their sockets alone).
    finished: Vec<AtomicBool>,
}

impl Common<'_> {
    fn datagram_at(&self, now: Instant) {
        let nanos = u64::try_from(now.duration_since(self.started).as_nanos()).unwrap_or(u64::MAX);
        self.last_datagram.store(nanos, Ordering::Relaxed);
    }

    fn since_last_datagram(&self) -> Duration {
        let last = self.started + Duration::from_nanos(self.last_datagram.load(Ordering::Relaxed));
        last.elapsed()
    }

    /// Waits until the workers are to end — a stop request, `--idle` passed, or a worker
    /// ended — then sets `halt` and ends every worker's wait.
    fn watch(&self, wakers: &[Waker]) {
        let mut guard = lock(&self.watch);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                log::info!("stop requested");
                break;
            }
            if self.halt.load(Ordering::Relaxed) {
                break;
            }
            let mut wait = POLL;
            if let Some(idle) = self.config.idle {
                let quiet = self.since_last_datagram();
                if quiet >= idle {
                    log::info!(
                        "no datagram for {}: exiting",
                        humantime::format_duration(idle)
                    );
                    break;
                }
                wait = wait.min(idle - quiet);
            }
            guard = match self.ended.wait_timeout(guard, wait) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        drop(guard);
        self.halt.store(true, Ordering::Relaxed);
        // A worker that has ended (`--once`) needs no waking: its socket is closed, or about to be.
        for (waker, finished) in wakers.iter().zip(&self.finished) {
            if !finished.load(Ordering::Relaxed) {
                waker.wake();
            }
        }
    }
}

/// Sets `halt` when worker `.1` ends, however it ends (a panic included), notes it ended, and
/// tells the watch.
struct HaltOnDrop<'a, 'b>(&'a Common<'b>, usize);

impl Drop for HaltOnDrop<'_, '_> {
    fn drop(&mut self) {
        if let Some(finished) = self.0.finished.get(self.1) {
            finished.store(true, Ordering::Relaxed);
        }
        self.0.halt.store(true, Ordering::Relaxed);
        let _watch = lock(&self.0.watch);
        self.0.ended.notify_all();
    }
}

/// One datagram of a batch, decided: the event borrows the batch's receive buffer.
struct Decided<'a> {
    /// Its slot in the batch (which answer buffer).
    slot: usize,
    /// The sender, canonical (IPv4-mapped addresses as IPv4), as shown and judged.
    peer: SocketAddr,
    /// The sender as the socket knows it, to answer.
    to: SocketAddr,
    local: Option<IpAddr>,
    /// The interface it came in on (see [`RecvMeta::ifindex`]).
    ifindex: u32,
    handled: Handled<'a>,
}

/// Which datagrams sent to a broadcast or multicast address the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GroupPolicy {
    /// `--answer-group`: all of them.
    all: bool,
    /// `--join`: those sent to a multicast group (with `IP_MULTICAST_ALL` off, the socket gets
    /// only the groups it joined).
    joined: bool,
}

impl GroupPolicy {
    fn new(config: &Config) -> GroupPolicy {
        GroupPolicy {
            all: config.answer_group,
            joined: !config.joins.is_empty(),
        }
    }

    /// Whether the datagram `meta` tells of is answered.
    fn answers(self, meta: &RecvMeta) -> bool {
        !meta.group || self.all || self.joined && meta.multicast
    }
}

/// One worker: a socket and everything its loop reuses.
struct Worker {
    index: usize,
    socket: ServerSocket,
    batch: Batch,
    core: Core,
    /// For the claims on broadcast and multicast datagrams.
    shared: Arc<Shared>,
    /// [`BATCH`] receive slots of [`RECV_BUFFER`] bytes: the kernel never cuts a datagram; the
    /// cut to `--buffer` is made (and reported) by the core. Made zeroed in one piece, so that
    /// the system maps its pages only as datagrams reach them.
    bufs: Vec<u8>,
    metas: [RecvMeta; BATCH],
    /// One answer buffer per slot, grown to the longest answer and then reused.
    answers: Vec<Vec<u8>>,
    /// Copies of the datagrams (`--pcap`, `--hexdump`), when asked for.
    tap: Option<Tap>,
    /// Which group datagrams are answered.
    groups: GroupPolicy,
    /// Whether this worker knows the first group datagram ignored has been told of (once per
    /// server, [`Shared::group_told`]); saves the shared flag's cache line.
    told_group: bool,
    /// The warnings about answers the system would not send, throttled.
    unanswered: Unanswered,
}

impl Worker {
    fn new(
        index: usize,
        socket: ServerSocket,
        config: &Config,
        shared: Arc<Shared>,
        capture: Option<&Capture>,
    ) -> Result<Worker, Error> {
        let local = socket.local_addr().map_err(|source| Error::Socket {
            doing: "reading the bound address",
            source,
        })?;
        Ok(Worker {
            index,
            batch: socket.batch().map_err(|source| Error::Socket {
                doing: "reading the bound address",
                source,
            })?,
            socket,
            core: Core::with_shared(config, Arc::clone(&shared)),
            shared,
            bufs: vec![0; BATCH * RECV_BUFFER],
            metas: [RecvMeta::EMPTY; BATCH],
            // Room for any answer from the start, so that the first answer to land in a slot
            // (a sink answers one datagram in thousands) allocates nothing; pages never
            // written stay unmapped.
            answers: (0..BATCH)
                .map(|_| Vec::with_capacity(RECV_BUFFER))
                .collect(),
            tap: capture.map(|capture| capture.tap(local)),
            groups: GroupPolicy::new(config),
            told_group: false,
            unanswered: Unanswered::default(),
        })
    }

    fn run(mut self, common: &Common<'_>) -> Summary {
        let config = common.config;
        loop {
            if common.halt.load(Ordering::Relaxed) || common.stop.load(Ordering::Relaxed) {
                break;
            }
            // `--once` takes exactly one datagram: a second one queued stays in the socket.
            let received = if config.once {
                self.socket.recv(&mut self.bufs[..RECV_BUFFER]).map(|meta| {
                    self.metas[0] = meta;
                    1
                })
            } else {
                self.socket
                    .recv_batch(&mut self.batch, &mut self.bufs, &mut self.metas)
            };
            let count = match received {
                Ok(count) => count,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // An ICMP "port unreachable" for an earlier answer (Windows reports it on the
                // next receive, as a reset): that client is gone, which says nothing about the
                // datagrams still to come. Neither counted nor fatal.
                Err(e) if sys::earlier_answer_unreachable(&e) => {
                    log::debug!("an earlier answer's peer is unreachable ({e}); ignored");
                    continue;
                }
                // Any other receive error can surface here on some systems; it says nothing
                // about the datagrams still to come either.
                Err(e) => {
                    log::debug!("receive error, ignored: {e}");
                    continue;
                }
            };
            // A receive the watch ended (see `Waker`) may report an empty datagram with a
            // stale sender: once `halt` is set, nothing received is served.
            if count == 0 || common.halt.load(Ordering::Relaxed) {
                continue;
            }
            let now = Instant::now();
            common.datagram_at(now);
            self.serve(count, now, common);
            if config.once {
                break;
            }
        }
        let mut summary = self.core.into_summary();
        summary.kernel_dropped = self.socket.kernel_dropped(&self.batch);
        summary
    }

    /// Decides, answers and shows the first `count` datagrams of the batch.
    fn serve(&mut self, count: usize, now: Instant, common: &Common<'_>) {
        let Worker {
            index,
            socket,
            batch,
            core,
            shared,
            bufs,
            metas,
            answers,
            tap,
            groups,
            told_group,
            unanswered,
        } = self;
        // On the stack: a batch's list borrows its buffers, and making an empty one is free.
        let mut decided = ArrayVec::<Decided<'_>, BATCH>::new();
        if let Some(tap) = tap {
            tap.batch_received();
        }

        // 1. Decide every datagram.
        for (slot, (meta, datagram)) in metas[..count]
            .iter()
            .zip(bufs.chunks_exact(RECV_BUFFER))
            .enumerate()
        {
            let Some(to) = meta.peer else {
                log::debug!("a datagram came without a sender address: ignored");
                continue;
            };
            let datagram = &datagram[..meta.len.min(RECV_BUFFER)];
            // Every socket of the group got this broadcast or multicast datagram: the first
            // worker to claim it answers and counts it, the others drop their copies unseen.
            if meta.group
                && common.workers > 1
                && !lock(&shared.claims).claim(*index, to, datagram, now)
            {
                continue;
            }
            let peer = canonical_peer(to);
            // Answering every broadcast or multicast datagram would make each one draw an
            // answer from every server on the link: only those asked for are.
            if !groups.answers(meta) {
                core.group_ignored(peer);
                if !*told_group && !shared.group_told.swap(true, Ordering::Relaxed) {
                    *told_group = true;
                    log::warn!(
                        "{peer}: a datagram sent to a broadcast or multicast address, not \
                         answered (counted as group-ignored); --answer-group or --join \
                         GROUP%IFNAME answers such datagrams"
                    );
                }
                continue;
            }
            let Some(answer) = answers.get_mut(slot) else {
                continue;
            };
            let handled = core.handle(datagram, peer, now, answer);
            if handled.answer == Answer::OverBudget {
                log::debug!(
                    "{peer}: answer of {} bytes dropped: over 3× what the source sent",
                    answer.len()
                );
            }
            decided.push(Decided {
                slot,
                peer,
                to,
                local: meta.local,
                ifindex: if meta.group { meta.ifindex } else { 0 },
                handled,
            });
        }

        // 2. Send every answer, in one call where the platform can. The list of answers is
        // filled only as far as it is used (ping-pong: one), never initialised whole.
        let mut out = ArrayVec::<Outgoing<'_>, BATCH>::new();
        let mut whose = ArrayVec::<usize, BATCH>::new();
        let mut failed = [false; BATCH];
        for (at, d) in decided.iter().enumerate() {
            if d.handled.answer == Answer::Send
                && let Some(answer) = answers.get(d.slot)
                && !out.is_full()
            {
                out.push(Outgoing {
                    datagram: answer,
                    peer: d.to,
                    local: d.local,
                    ifindex: d.ifindex,
                });
                whose.push(at);
            }
        }
        let sending = out.len();
        socket.send_batch(batch, &out, &mut |k, e| {
            core.send_failed();
            if let Some(failed) = failed.get_mut(k) {
                *failed = true;
            }
            let peer = whose.get(k).and_then(|&at| decided.get(at)).map(|d| d.peer);
            if let Some(line) = unanswered.failed(peer, &e, now) {
                log::warn!("{line}");
            }
        });
        if let Some(report) = core.take_rate_report(now) {
            log::warn!("{report}");
        }
        if let Some(report) = unanswered.take_report(now) {
            log::warn!("{report}");
        }

        // 3. Capture and show what happened.
        if let Some(tap) = tap {
            tap.batch_sent();
            capture(tap, &decided, &out, &failed, metas, bufs);
        }
        let mut sink = common.sink.map(|sink| lock(sink));
        let mut next_sent = 0;
        for (at, d) in decided.iter().enumerate() {
            log::debug!("{}: {}", d.peer, d.handled.event);
            if let Some(tap) = tap {
                tap.dump(Direction::Received, d.peer, received(metas, bufs, d.slot));
            }
            if let Some(sink) = &mut sink {
                let len = metas.get(d.slot).map_or(0, |meta| meta.len);
                sink.datagram(d.peer, d.local, len, &d.handled.event);
            }
            if let Some(tap) = tap
                && next_sent < sending
                && whose[next_sent] == at
            {
                if !failed[next_sent] {
                    tap.dump(Direction::Sent, d.peer, out[next_sent].datagram);
                }
                next_sent += 1;
            }
        }
    }
}

/// Records a batch in the capture file: the datagrams received (as decided: not a group copy
/// another worker claimed), then the answers sent (not those the system refused).
fn capture(
    tap: &mut Tap,
    decided: &[Decided<'_>],
    sent: &[Outgoing<'_>],
    failed: &[bool; BATCH],
    metas: &[RecvMeta; BATCH],
    bufs: &[u8],
) {
    for d in decided {
        tap.record_received(d.to, d.local, received(metas, bufs, d.slot));
    }
    for (answer, failed) in sent.iter().zip(failed) {
        if !failed {
            tap.record_sent(answer.peer, answer.local, answer.datagram);
        }
    }
}

/// The datagram received in `slot` of a batch.
fn received<'a>(metas: &[RecvMeta; BATCH], bufs: &'a [u8], slot: usize) -> &'a [u8] {
    let len = metas.get(slot).map_or(0, |meta| meta.len.min(RECV_BUFFER));
    bufs.get(slot * RECV_BUFFER..)
        .and_then(|slot| slot.get(..len))
        .unwrap_or_default()
}

/// Adds a worker's books to the server's. Every field is named, so that a new one cannot be
/// forgotten. Peers are summed: `SO_REUSEPORT` keeps each peer (address and port) on one
/// worker, so the sum is the number of distinct peers.
fn add(total: &mut Summary, part: &Summary) {
    let Summary {
        received,
        counted,
        duplicates,
        malformed,
        rate_limited,
        busy,
        loops,
        group_ignored,
        truncated,
        peers,
        lines_dropped,
        amplification_dropped,
        send_failures,
        kernel_dropped,
        sink,
    } = part;
    total.received += received;
    total.counted += counted;
    total.duplicates += duplicates;
    total.malformed += malformed;
    total.rate_limited += rate_limited;
    total.busy += busy;
    total.loops += loops;
    total.group_ignored += group_ignored;
    total.truncated += truncated;
    total.peers += peers;
    total.lines_dropped += lines_dropped;
    total.amplification_dropped += amplification_dropped;
    total.send_failures += send_failures;
    total.kernel_dropped += kernel_dropped;
    if let Some(part) = sink {
        let proto::probe::SinkReport {
            datagrams,
            bytes,
            lost,
            reordered,
            duplicated,
        } = part;
        let sum = total.sink.get_or_insert_with(Default::default);
        sum.datagrams += datagrams;
        sum.bytes += bytes;
        sum.lost += lost;
        sum.reordered += reordered;
        sum.duplicated += duplicated;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_datagrams_are_answered_only_when_asked_for() {
        let unicast = RecvMeta::EMPTY;
        let broadcast = RecvMeta {
            group: true,
            ..RecvMeta::EMPTY
        };
        let multicast = RecvMeta {
            group: true,
            multicast: true,
            ..RecvMeta::EMPTY
        };
        let mut config = Config::new("0.0.0.0:0".parse().unwrap());
        let by_default = GroupPolicy::new(&config);
        assert!(by_default.answers(&unicast));
        assert!(!by_default.answers(&broadcast));
        assert!(!by_default.answers(&multicast));
        config.joins = vec![crate::args::parse_join("239.1.2.3%1").unwrap()];
        let joined = GroupPolicy::new(&config);
        assert!(joined.answers(&unicast));
        assert!(
            !joined.answers(&broadcast),
            "--join does not answer broadcasts"
        );
        assert!(joined.answers(&multicast));
        config.joins.clear();
        config.answer_group = true;
        let all = GroupPolicy::new(&config);
        assert!(all.answers(&broadcast) && all.answers(&multicast) && all.answers(&unicast));
    }

    #[test]
    fn the_books_of_workers_add_up() {
        let part = Summary {
            received: 3,
            counted: 2,
            loops: 1,
            peers: 2,
            send_failures: 1,
            ..Summary::default()
        };
        let mut total = Summary::default();
        add(&mut total, &part);
        add(&mut total, &part);
        assert_eq!(
            total,
            Summary {
                received: 6,
                counted: 4,
                loops: 2,
                peers: 4,
                send_failures: 2,
                ..Summary::default()
            }
        );
    }
}
