//! The server's per-datagram path allocates nothing in steady state: a counting global allocator
//! watches a real [`server::Server`] on loopback answer thousands of datagrams in every mode,
//! in both encodings, with the tutorial's lines on and off, and with `--pcap` and `--hexdump`.
//!
//! This is its own test binary (not a module of `tests/it`) because a global allocator counts
//! every thread of the process: no other test may run beside it. For the same reason all the
//! cases run in one `#[test]`, one after the other.
//!
//! `unsafe_code` is denied workspace-wide; this file allows it for one reason: implementing
//! [`GlobalAlloc`] is an `unsafe impl` by definition. The implementation only counts and then
//! forwards every call, unchanged, to [`System`].
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use proto::probe::{SINK_REPORT_QUERY, SinkReport, write_probe};
use proto::{Envelope, Id};
use server::{
    Capture, Config, Encoding, JsonLines, LineQueue, Mode, Output, QUEUE_BYTES, Server,
    TutorialLines,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Counts allocations (and reallocations, which may move) of every thread.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards its arguments unchanged to `System`, which upholds
// `GlobalAlloc`'s contract; the counter is an atomic and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's guarantees for `alloc` are passed on as they are.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` come from this allocator, which got them from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Exchanges before measuring, at least: the tables, buffers and queues reach their working
/// size.
const WARM_UP: u64 = 1_000;
/// How long the warm-up lasts, at least: past one turn of the loop guard's generations
/// ([`server::REPEAT_WINDOW`]), whose second table gets its room at the first turn.
const WARM_UP_TIME: Duration = Duration::from_millis(1_200);
/// Exchanges measured.
const MEASURED: u64 = 10_000;
/// Probes a sink gets between two report queries (its answers pace the sender).
const SINK_BATCH: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Wire {
    Plain,
    Json,
}

/// Datagram `n` a client sends: probe `n + 1` (each distinct, so that an echo of one is never
/// mistaken for a loop), as plain text or as the body of a request with id `first + n`
/// acknowledging everything before it, as udptalk's client and `bench` send them.
fn datagram(wire: Wire, n: u64) -> Vec<u8> {
    let mut probe = Vec::new();
    write_probe(n + 1, proto::probe::MIN_PROBE_SIZE, &mut probe);
    match wire {
        Wire::Plain => probe,
        Wire::Json => {
            let id = Id::MIN.wrapping_add(1_000_000 + n);
            Envelope::Request {
                id,
                body: String::from_utf8_lossy(&probe).into_owned(),
                ack: Some(id),
            }
            .encode_to_vec()
        }
    }
}

/// Sends each datagram and waits for its answer (a sink answers only report queries: it gets
/// a batch of probes, then a query), into a buffer allocated before.
fn exchange(
    socket: &UdpSocket,
    mode: Mode,
    datagrams: &[Vec<u8>],
    buf: &mut [u8],
) -> io::Result<()> {
    for (n, datagram) in (0..).zip(datagrams) {
        socket.send(datagram)?;
        if mode != Mode::Sink {
            socket.recv(buf)?;
        } else if n % SINK_BATCH == SINK_BATCH - 1 {
            socket.send(SINK_REPORT_QUERY)?;
            socket.recv(buf)?;
        }
    }
    Ok(())
}

/// Allocations per case while a server answers `MEASURED` datagrams after `WARM_UP`, showing
/// each as `lines` says (`None`: `--quiet`), and with `--pcap` and `--hexdump` if `captured`.
fn allocations(
    mode: Mode,
    wire: Wire,
    lines: Option<Output>,
    limited: bool,
    captured: bool,
) -> Result<u64> {
    // The limited case also binds the wildcard address, so every receive reads and every send
    // writes the IP_PKTINFO control message (the traffic stays on 127.0.0.1).
    let bind = if limited { "0.0.0.0:0" } else { "127.0.0.1:0" };
    let mut config = Config::new(bind.parse()?);
    // A limit no test reaches: the limiter's table is consulted for every datagram.
    config.rate_limit = limited.then_some(server::RateLimit::per_second(10_000_000));
    config.mode = mode;
    config.encoding = match wire {
        Wire::Plain => Encoding::Plain,
        Wire::Json => Encoding::Json,
    };
    config.quiet = lines.is_none();
    let mut server = Server::bind(config.clone())?;
    let queue = LineQueue::spawn(io::sink(), QUEUE_BYTES, |_| {});
    match lines {
        None => {}
        Some(Output::Human) => {
            server = server.with_sink(Box::new(TutorialLines::new(&config, queue.clone())));
        }
        Some(Output::Json) => {
            let bound = server.local_addr();
            server = server.with_sink(Box::new(JsonLines::new(bound, queue.clone())));
        }
    }
    // `--pcap` to a scratch file (removed below, whatever happened) and `--hexdump`.
    let pcap = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("allocations-{}.pcap", std::process::id()));
    let capture = match captured {
        true => Capture::start(Some(&pcap), Some(queue.clone()))?,
        false => Capture::default(),
    };
    server = server.with_capture(capture.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], server.local_addr().port()));
    let stop = Arc::new(AtomicBool::new(false));
    let running = thread::spawn({
        let stop = Arc::clone(&stop);
        move || server.run(&stop)
    });

    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    socket.connect(addr)?;
    let mut buf = vec![0_u8; 1 << 16];

    // Warm up (allocating freely on this side), then measure datagrams encoded beforehand.
    let started = Instant::now();
    let mut sent = 0;
    let mut exchanged = Ok(());
    while exchanged.is_ok() && (sent < WARM_UP || started.elapsed() < WARM_UP_TIME) {
        let batch: Vec<_> = (sent..sent + SINK_BATCH)
            .map(|n| datagram(wire, n))
            .collect();
        exchanged = exchange(&socket, mode, &batch, &mut buf);
        sent += SINK_BATCH;
    }
    let measured: Vec<_> = (sent..sent + MEASURED).map(|n| datagram(wire, n)).collect();
    sent += MEASURED;
    let exchanged = exchanged.and_then(|()| {
        let before = ALLOCATIONS.load(Ordering::SeqCst);
        exchange(&socket, mode, &measured, &mut buf)?;
        Ok(ALLOCATIONS.load(Ordering::SeqCst) - before)
    });
    let report = if mode == Mode::Sink {
        socket.send(SINK_REPORT_QUERY)?;
        let len = socket.recv(&mut buf)?;
        SinkReport::decode(&buf[..len])
    } else {
        None
    };

    // The stop path: the flag ends the loop, which returns its books.
    stop.store(true, Ordering::Relaxed);
    let summary = running.join().map_err(|_| "the server thread panicked");
    capture.finish();
    let _ = std::fs::remove_file(&pcap);
    let summary = summary??;
    queue.close(Duration::from_secs(5));
    let allocated = exchanged.map_err(|e| format!("{mode:?} {wire:?}: no answer: {e}"))?;

    // A sink counts its report queries too, one per batch and the last one.
    let queries = if mode == Mode::Sink {
        sent / SINK_BATCH + 1
    } else {
        0
    };
    assert_eq!(
        summary.counted,
        sent + queries,
        "{mode:?} {wire:?}: {summary}"
    );
    assert_eq!(summary.lines_dropped, 0);
    if mode == Mode::Sink {
        let report = report.ok_or("the sink's last report did not read back")?;
        assert_eq!((report.datagrams, report.lost), (sent, 0), "{report}");
    }
    Ok(allocated)
}

#[test]
fn no_allocation_per_datagram_in_any_mode_or_encoding() -> Result {
    let mut failures = Vec::new();
    let mut table = String::new();
    for mode in [Mode::Count, Mode::Hello, Mode::Echo, Mode::Sink] {
        for wire in [Wire::Plain, Wire::Json] {
            for lines in [None, Some(Output::Human), Some(Output::Json)] {
                // The rate limiter is on by default only off loopback; the tables it consults
                // are the same in every mode, so count mode checks it, in both encodings (and
                // the wildcard bind gives the JSON lines a local address per datagram).
                let limits = if mode == Mode::Count && lines.is_some() {
                    2
                } else {
                    1
                };
                for limited in [false, true].into_iter().take(limits) {
                    let allocated = allocations(mode, wire, lines, limited, false)?;
                    table.push_str(&format!(
                        "{mode:?} {wire:?} lines {lines:?} rate limit and wildcard bind {limited}: {allocated} \
                         allocations in {MEASURED} datagrams\n"
                    ));
                    if allocated != 0 {
                        failures.push((mode, wire, lines, allocated));
                    }
                }
            }
        }
    }
    // The copies made for `--pcap` and `--hexdump` reuse their buffers too.
    for (mode, wire) in [(Mode::Count, Wire::Plain), (Mode::Echo, Wire::Json)] {
        let allocated = allocations(mode, wire, Some(Output::Human), true, true)?;
        table.push_str(&format!(
            "{mode:?} {wire:?} lines, wildcard bind, --pcap and --hexdump: {allocated} \
             allocations in {MEASURED} datagrams\n"
        ));
        if allocated != 0 {
            failures.push((mode, wire, Some(Output::Human), allocated));
        }
    }
    // A dual-stack wildcard socket answering IPv4 and IPv6 peers in turn. Shown, not held to
    // zero: an IPv4 datagram brings two packet-info messages (72 bytes of control data, the
    // IPv4 one for `ipi_spec_dst`, which tells a subnet broadcast apart), an IPv6 one a single
    // one (40); nix's `recvmmsg` leaves each header's control length as the kernel shrank it,
    // so an IPv4 datagram in a slot an IPv6 one used before is cut and the headers are remade
    // (see `sys::imp::recv_batch`). Each family alone allocates nothing (the cases above).
    match mixed_families()? {
        Some(allocated) => table.push_str(&format!(
            "[::] dual-stack, IPv4 and IPv6 peers in turn (not held to 0): {allocated} \
             allocations in {MEASURED} datagrams\n"
        )),
        None => table.push_str("[::] dual-stack: skipped, no IPv6 loopback here\n"),
    }
    eprint!("{table}");
    assert!(failures.is_empty(), "allocations in steady state:\n{table}");
    Ok(())
}

/// Allocations while a `[::]` server answers a peer on 127.0.0.1 and one on ::1 in turn, one
/// datagram at a time (so each lands in the same receive slot as the other family's before);
/// `None` where this machine has no IPv6 loopback.
fn mixed_families() -> Result<Option<u64>> {
    let Ok(v6) = UdpSocket::bind("[::1]:0") else {
        return Ok(None);
    };
    let mut config = Config::new("[::]:0".parse()?);
    config.quiet = true;
    // A wildcard bind limits each source by default; these two send faster than that.
    config.rate_limit = None;
    let server = Server::bind(config)?;
    let port = server.local_addr().port();
    let stop = Arc::new(AtomicBool::new(false));
    let running = thread::spawn({
        let stop = Arc::clone(&stop);
        move || server.run(&stop)
    });
    let v4 = UdpSocket::bind("127.0.0.1:0")?;
    v4.connect(("127.0.0.1", port))?;
    v6.connect(("::1", port))?;
    for socket in [&v4, &v6] {
        socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    }
    let mut buf = vec![0_u8; 1 << 16];
    let mut turn = |n: u64| -> io::Result<()> {
        let socket = if n % 2 == 0 { &v4 } else { &v6 };
        socket.send(b"Hello Server!!")?;
        socket.recv(&mut buf).map(drop)
    };
    let mut exchanged = (0..WARM_UP).try_for_each(&mut turn);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    if exchanged.is_ok() {
        exchanged = (0..MEASURED).try_for_each(&mut turn);
    }
    let allocated = ALLOCATIONS.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::Relaxed);
    let summary = running.join().map_err(|_| "the server thread panicked")??;
    exchanged.map_err(|e| format!("[::] dual-stack: no answer: {e}"))?;
    assert_eq!(summary.counted, WARM_UP + MEASURED, "{summary}");
    Ok(Some(allocated))
}
