//! `--pcap FILE` and `--hexdump`: copies of every datagram the server receives and sends.
//!
//! [`Capture`] is what the workers share: the capture file's queue and stdout's. Each worker
//! has a [`Tap`] with its own reused buffers, which the receive loop calls after a batch's
//! answers are sent, so that nothing here delays an answer:
//!
//! - the capture: the worker writes each datagram's pcap record ([`proto::capture::Pcap`]) into
//!   a reused buffer and pushes it, whole, onto a bounded [`LineQueue`] whose writer thread
//!   writes the file. A disk that does not keep up costs records (dropped whole, so the file
//!   stays readable, and counted: a warning at exit says how many), never a wait. The file's
//!   header is written before serving, so a file that cannot be written is said at once; at
//!   exit the queue gets [`CAPTURE_EXIT_WAIT`] to reach the disk.
//! - the hex dump: each datagram's lines ([`proto::capture::hexdump`]) go to stdout's queue
//!   beside the tutorial's lines, dropped and counted like them when stdout is slow.
//!
//! Timestamps are the wall clock read once after the receive (for the batch's datagrams) and
//! once after the send (for its answers). With neither option the loop only tests that the
//! worker has no tap.

use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::capture::{Direction, Pcap, hexdump};

use crate::Error;
use crate::output::{LineQueue, Pushed};

/// Bytes of records the capture's queue holds before it drops them: 8 MiB, a full batch of the
/// largest datagrams and their answers (32 × 2 × 64 KiB) twice over. Its pages are touched only
/// as far as records reach.
pub const CAPTURE_QUEUE_BYTES: usize = 8 << 20;

/// How long the capture file's writer gets at exit to write what is queued (a disk that takes
/// longer loses the rest, and a warning says so): with the 250 ms the server waits for a stop
/// and the 250 ms its output gets, the server still exits within a second.
pub const CAPTURE_EXIT_WAIT: Duration = Duration::from_millis(500);

/// Room for the largest pcap record: its 16-byte header, an IPv6 and a UDP header, and a
/// whole receive buffer. A tap's record buffer has it from the start, so that no datagram,
/// however much longer than those before, makes it grow while serving.
const RECORD_ROOM: usize = 16 + 40 + 8 + proto::RECV_BUFFER;

/// Room for the hex dump of the largest datagram: a line of under 96 characters per 16 bytes,
/// and the line that names the peer.
const DUMP_ROOM: usize = proto::RECV_BUFFER / 16 * 96 + 128;

/// The capture file being written, and stdout for the hex dump: what all workers share.
#[derive(Debug, Clone, Default)]
pub struct Capture {
    file: Option<CaptureFile>,
    hexdump: Option<LineQueue>,
}

/// A capture file: its name (for messages) and the queue to its writer thread.
#[derive(Debug, Clone)]
struct CaptureFile {
    path: PathBuf,
    queue: LineQueue,
}

impl Capture {
    /// Creates `pcap` (when given) and writes its header, so that a file that cannot be written
    /// fails here, before serving; `hexdump` (when given) is where the dumps go.
    pub fn start(pcap: Option<&Path>, hexdump: Option<LineQueue>) -> Result<Capture, Error> {
        let file = match pcap {
            Some(path) => Some(CaptureFile::create(path)?),
            None => None,
        };
        Ok(Capture { file, hexdump })
    }

    /// Whether anything is to be captured or dumped.
    pub fn is_on(&self) -> bool {
        self.file.is_some() || self.hexdump.is_some()
    }

    /// Writes what is queued to the file, waiting at most [`CAPTURE_EXIT_WAIT`], and says on the
    /// log what the file misses, if anything.
    pub fn finish(&self) {
        let Some(file) = &self.file else {
            return;
        };
        let complete = file.queue.close(CAPTURE_EXIT_WAIT);
        let dropped = file.queue.dropped();
        if dropped > 0 {
            log::warn!(
                "the capture {} misses {dropped} datagrams: the disk did not keep up (they were \
                 dropped rather than delay answers); capture to a faster disk, e.g. /dev/shm",
                file.path.display()
            );
        }
        if !complete {
            log::warn!(
                "the capture {} may miss its last datagrams: the file could not be written \
                 within {} ms at exit",
                file.path.display(),
                CAPTURE_EXIT_WAIT.as_millis()
            );
        }
    }

    /// A worker's tap on this capture, which sees the datagrams of socket `local` (the address
    /// bound: its IP is used when a datagram's own local address is unknown).
    pub(crate) fn tap(&self, local: SocketAddr) -> Tap {
        Tap {
            capture: self.clone(),
            local,
            pcap: Pcap::new(),
            // Pages that are never written stay unmapped: the room costs only what is used.
            record: Vec::with_capacity(if self.file.is_some() { RECORD_ROOM } else { 0 }),
            dump: String::with_capacity(if self.hexdump.is_some() { DUMP_ROOM } else { 0 }),
            received_at: Duration::ZERO,
            sent_at: Duration::ZERO,
        }
    }
}

impl CaptureFile {
    fn create(path: &Path) -> Result<CaptureFile, Error> {
        let fail = |source| Error::Capture {
            path: path.to_owned(),
            source,
        };
        let mut file = File::create(path).map_err(fail)?;
        let mut header = Vec::new();
        Pcap::file_header(&mut header);
        file.write_all(&header)
            .and_then(|()| file.flush())
            .map_err(fail)?;
        let shown = path.display().to_string();
        let queue = LineQueue::spawn(file, CAPTURE_QUEUE_BYTES, move |e| {
            log::warn!("cannot write the capture {shown} ({e}): capture stopped, serving goes on");
        });
        Ok(CaptureFile {
            path: path.to_owned(),
            queue,
        })
    }
}

/// One worker's side of the [`Capture`], with the buffers it reuses.
pub(crate) struct Tap {
    capture: Capture,
    local: SocketAddr,
    pcap: Pcap,
    /// One pcap record.
    record: Vec<u8>,
    /// One datagram's dump.
    dump: String,
    /// When the batch was received and its answers sent, since the Unix epoch.
    received_at: Duration,
    sent_at: Duration,
}

impl Tap {
    /// Notes the time of the batch just received.
    pub(crate) fn batch_received(&mut self) {
        self.received_at = wall_clock();
    }

    /// Notes the time the batch's answers were sent.
    pub(crate) fn batch_sent(&mut self) {
        self.sent_at = wall_clock();
    }

    /// The local address of a datagram that came to `local` (`None`: the address bound).
    fn local(&self, local: Option<IpAddr>) -> SocketAddr {
        SocketAddr::new(local.unwrap_or(self.local.ip()), self.local.port())
    }

    /// Records a datagram received from `peer` at `local`.
    pub(crate) fn record_received(
        &mut self,
        peer: SocketAddr,
        local: Option<IpAddr>,
        datagram: &[u8],
    ) {
        let local = self.local(local);
        let at = self.received_at;
        self.record(at, peer, local, datagram);
    }

    /// Records an answer sent from `local` to `peer`.
    pub(crate) fn record_sent(&mut self, peer: SocketAddr, local: Option<IpAddr>, datagram: &[u8]) {
        let local = self.local(local);
        let at = self.sent_at;
        self.record(at, local, peer, datagram);
    }

    fn record(&mut self, at: Duration, src: SocketAddr, dst: SocketAddr, datagram: &[u8]) {
        let Some(file) = &self.capture.file else {
            return;
        };
        self.record.clear();
        self.pcap
            .record(at, src, dst, datagram, datagram.len(), &mut self.record);
        // Dropped whole when the queue is full, and counted; said at exit.
        file.queue.push(&self.record);
    }

    /// Shows a datagram exchanged with `peer` on stdout, when `--hexdump` asks.
    pub(crate) fn dump(&mut self, direction: Direction, peer: SocketAddr, datagram: &[u8]) {
        let Some(out) = &self.capture.hexdump else {
            return;
        };
        self.dump.clear();
        hexdump(direction, peer, datagram, datagram.len(), &mut self.dump);
        if let Pushed::Dropped { first: true } = out.push(self.dump.as_bytes()) {
            log::warn!(
                "stdout is not keeping up (a slow pipe or a paused terminal): dropping hex \
                 dumps rather than delaying answers; the summary counts them as `lines dropped`"
            );
        }
    }
}

/// Now, since the Unix epoch (zero for a clock set before 1970).
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
