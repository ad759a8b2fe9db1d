//! [`LineQueue`]: output that can never stop the server, and [`Console`], the server's two.
//!
//! A server that writes each datagram's lines to stdout before answering stops answering the
//! moment stdout blocks: a pipe into a slow reader (`udptalk-server | sleep 30`), a terminal
//! paused with Ctrl-S. So lines go into a bounded buffer instead, and a writer thread drains it
//! to the real stream in batches: a line appears as soon as the writer gets to it (well within
//! 100 ms when the stream keeps up), many lines go out in one write under load, and when the
//! buffer is full the line is dropped and counted rather than waited for. Stopping never waits
//! on the writer for more than the time it is given ([`Console::finish`]).

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// Bytes a queue holds before it drops lines: 1 MiB, about 10,000 datagrams' tutorial lines.
///
/// The bound is what the writer may fall behind while it is not running. A server answering
/// 300,000 datagrams a second produces about 30 MB/s of lines; pinned to one core with its
/// writer thread (`taskset -c 0`), the writer runs only when the scheduler preempts the server,
/// every few milliseconds, and then has 100-200 KiB to write. 8 KiB, the bound before, dropped
/// lines at every such pause; 1 MiB rides out pauses of 30 ms at that rate. Memory: two
/// buffers of this size per queue at most (the one filling and the one being written), whose
/// pages are only touched as far as they are used.
///
/// A stream that does not keep up at all (a paused terminal, `| sleep 30`) still costs nothing
/// but dropped, counted lines; a larger queue only means that, when a slow terminal resumes, it
/// shows up to 1 MiB of older lines first. An empty queue takes one push of any size, so a
/// datagram's lines are never too long to show.
pub const QUEUE_BYTES: usize = 1 << 20;

/// How long the writer, woken for a small batch, waits for more before writing: a server under
/// load then costs one write per 10 ms rather than one per datagram, and a line still appears
/// within 10 ms. Each wake of the writer and each write take CPU from the server's core: at one
/// request in flight, with server, client and writer sharing a core, that time adds to every
/// round trip, so fewer, larger writes (2 ms before) bring the printing server's RTT nearer
/// the quiet one's.
const LINGER: Duration = Duration::from_millis(10);

/// A batch this large is written at once, without [`LINGER`]ing.
const LARGE_BATCH: usize = 64 << 10;

/// What became of a line given to [`LineQueue::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the writer.
    Queued,
    /// Dropped (the queue was full, or the stream is closed) and counted; `first` for the first
    /// line this queue dropped, so the caller can say so once.
    Dropped {
        /// Whether no line was dropped before.
        first: bool,
    },
}

/// A bounded queue of output drained by its own writer thread. Clones share the queue.
#[derive(Debug, Clone)]
pub struct LineQueue {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when bytes are queued or the queue is closed.
    queued: Condvar,
    /// Signalled when the writer has written everything it took.
    written: Condvar,
    capacity: usize,
    dropped: AtomicU64,
    /// Set once the stream failed (a closed pipe): everything after is dropped.
    broken: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    pending: Vec<u8>,
    /// Whether the writer holds bytes it took and has not finished writing.
    writing: bool,
    /// Whether the writer is waiting for bytes and must be woken: only then does a push signal
    /// it (a futex call), so that a busy server makes no system call per line.
    sleeping: bool,
    closed: bool,
}

impl LineQueue {
    /// A queue of at most `capacity` bytes, drained into `out` by a new thread. `on_error` is
    /// called once, on the writer thread, if `out` fails (then every later line is dropped).
    pub fn spawn(
        out: impl Write + Send + 'static,
        capacity: usize,
        on_error: impl FnOnce(io::Error) + Send + 'static,
    ) -> LineQueue {
        // Both buffers get their whole room at once, so that they never grow (and reallocate)
        // while serving; the pages are touched only as far as the lines reach.
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::with_capacity(capacity),
                ..State::default()
            }),
            queued: Condvar::new(),
            written: Condvar::new(),
            capacity,
            dropped: AtomicU64::new(0),
            broken: AtomicBool::new(false),
        });
        let writer = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("output".to_owned())
            .spawn(move || writer.drain_into(out, on_error));
        if spawned.is_err() {
            // No thread, no output: every line is dropped and counted, and serving goes on.
            shared.broken.store(true, Ordering::Relaxed);
        }
        LineQueue { shared }
    }

    /// Queues `bytes` (whole lines), or drops them if they do not fit.
    pub fn push(&self, bytes: &[u8]) -> Pushed {
        if !self.shared.broken.load(Ordering::Relaxed) {
            let mut state = self.shared.lock();
            let fits = state.pending.is_empty()
                || state.pending.len() + bytes.len() <= self.shared.capacity;
            if fits && !state.closed {
                state.pending.extend_from_slice(bytes);
                let wake = std::mem::take(&mut state.sleeping);
                drop(state);
                if wake {
                    self.shared.queued.notify_one();
                }
                return Pushed::Queued;
            }
        }
        let before = self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        Pushed::Dropped { first: before == 0 }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Waits until everything queued is written, at most `wait`; returns whether it was. Lines
    /// pushed after this call may not be written.
    pub fn close(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut state = self.shared.lock();
        state.closed = true;
        self.shared.queued.notify_one();
        loop {
            if self.shared.broken.load(Ordering::Relaxed) {
                return false;
            }
            if state.pending.is_empty() && !state.writing {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .shared
                .written
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer thread: takes everything queued at once, writes it in one go, and repeats.
    /// Woken for a small batch, it first lingers a moment (without asking to be woken) so
    /// that the lines of many datagrams go out in one write.
    fn drain_into(&self, mut out: impl Write, on_error: impl FnOnce(io::Error)) {
        let mut batch = Vec::with_capacity(self.capacity);
        loop {
            let mut state = self.lock();
            while state.pending.is_empty() && !state.closed {
                state.sleeping = true;
                state = self
                    .queued
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.sleeping = false;
            if state.pending.len() < LARGE_BATCH && !state.closed {
                // Only `close` signals during the linger: pushes see `sleeping` false.
                state = self
                    .queued
                    .wait_timeout(state, LINGER)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            if state.pending.is_empty() {
                if state.closed {
                    return;
                }
                continue;
            }
            std::mem::swap(&mut batch, &mut state.pending);
            state.writing = true;
            drop(state);
            let result = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if result.is_err() {
                self.broken.store(true, Ordering::Relaxed);
            }
            self.lock().writing = false;
            self.written.notify_all();
            if let Err(e) = result {
                on_error(e);
                return;
            }
        }
    }
}

impl Write for LineQueue {
    /// Queues `buf` whole, or drops it: never blocks, never fails.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The server's stdout (the per-datagram lines) and stderr (the announce line, log lines and
/// the summary), each behind a [`LineQueue`].
#[derive(Debug, Clone)]
pub struct Console {
    /// The per-datagram lines.
    pub stdout: LineQueue,
    /// Everything else.
    pub stderr: LineQueue,
}

impl Console {
    /// Queues for the process's stdout and stderr, each with its writer thread.
    pub fn start() -> Console {
        Console {
            stdout: LineQueue::spawn(io::stdout(), QUEUE_BYTES, |e| {
                log::warn!("stdout is closed ({e}); serving on without per-datagram lines");
            }),
            // Nothing can be said about a stderr that fails.
            stderr: LineQueue::spawn(io::stderr(), QUEUE_BYTES, |_| {}),
        }
    }

    /// Lines dropped on both streams.
    pub fn dropped(&self) -> u64 {
        self.stdout.dropped() + self.stderr.dropped()
    }

    /// Gives both writers at most `wait` in all to write what is queued.
    pub fn finish(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        self.stdout.close(wait);
        self.stderr
            .close(deadline.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A stream that blocks every write until told to go on, and records what it wrote.
    struct Gate {
        go: mpsc::Receiver<()>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.go
                .recv()
                .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            self.written
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_stream_drops_and_counts_lines_instead_of_blocking() {
        let (go, gate) = mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let queue = LineQueue::spawn(
            Gate {
                go: gate,
                written: Arc::clone(&written),
            },
            10,
            |_| {},
        );
        // The writer takes "aaaa\n" and blocks on it; the queue then holds 10 bytes more.
        assert_eq!(queue.push(b"aaaa\n"), Pushed::Queued);
        let started = Instant::now();
        while !queue.shared.lock().writing {
            assert!(started.elapsed() < Duration::from_secs(10), "no writer");
            thread::yield_now();
        }
        let mut queued = 1;
        let mut dropped = Vec::new();
        for _ in 0..10 {
            match queue.push(b"bbbb\n") {
                Pushed::Queued => queued += 1,
                Pushed::Dropped { first } => dropped.push(first),
            }
        }
        assert_eq!(queued, 3, "two more lines fit in 10 bytes");
        assert_eq!(dropped.first(), Some(&true), "the first drop says so");
        assert!(dropped[1..].iter().all(|first| !first));
        assert_eq!(queue.dropped(), dropped.len() as u64);
        // Closing gives up after the wait rather than waiting on the stream.
        let started = Instant::now();
        assert!(!queue.close(Duration::from_millis(50)));
        assert!(started.elapsed() < Duration::from_secs(5));
        // Let the stream go on: what was queued is written, in order, in few writes.
        for _ in 0..4 {
            let _ = go.send(());
        }
        assert!(queue.close(Duration::from_secs(5)));
        let written = written.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(written.starts_with(b"aaaa\nbbbb\n"), "{written:?}");
        assert_eq!(written.len(), 5 * queued);
    }

    #[test]
    fn a_failed_stream_is_reported_once_and_drops_the_rest() {
        let (errors, reported) = mpsc::channel();
        let queue = LineQueue::spawn(
            io::Cursor::new([0_u8; 4]), // Fails once its 4 bytes are full.
            1 << 10,
            move |e| {
                let _ = errors.send(e.kind());
            },
        );
        queue.push(b"more than four bytes\n");
        assert_eq!(
            reported.recv_timeout(Duration::from_secs(5)),
            Ok(io::ErrorKind::WriteZero)
        );
        assert!(matches!(queue.push(b"x\n"), Pushed::Dropped { .. }));
        assert!(!queue.close(Duration::from_millis(10)));
    }

    /// A stream that counts its writes.
    struct Counted(Arc<AtomicU64>);

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn many_lines_go_out_in_few_writes() {
        let writes = Arc::new(AtomicU64::new(0));
        let queue = LineQueue::spawn(Counted(Arc::clone(&writes)), QUEUE_BYTES, |_| {});
        for _ in 0..1_000 {
            assert_eq!(
                queue.push(b"Message received from 127.0.0.1:40000.\n"),
                Pushed::Queued
            );
        }
        assert!(queue.close(Duration::from_secs(5)));
        // The writer lingers for more before writing a small batch: a handful of writes, not
        // one per line (100 leaves a tenfold margin for a writer descheduled between pushes).
        let writes = writes.load(Ordering::Relaxed);
        assert!(
            (1..100).contains(&writes),
            "{writes} writes for 1,000 lines"
        );
        assert_eq!(queue.dropped(), 0);
    }
}
