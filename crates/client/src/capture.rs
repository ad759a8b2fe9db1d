//! `--pcap FILE` and `--hexdump`: copies of every datagram the client sends and receives.
//!
//! [`Capture`] is what the user asked for; [`Tap`] does it for one run. The socket
//! ([`crate::sys`]) hands the tap every datagram it sends and receives, whatever the mode
//! (messages, stdin, `ping`, `bench`), late replies discarded included, so nothing escapes it.
//! The tap writes a pcap record ([`proto::capture::Pcap`], timestamped with the wall clock
//! right after the system call) to a buffered file, and the hex dump
//! ([`proto::capture::hexdump`]) to stdout, beside the tutorial's lines. The client waits for
//! no one but its server, so a plain buffered file serves; the file is created, with its header,
//! before anything is sent, and flushed when the run ends however it ends (a signal and
//! `--deadline` included: they end the run, never the process).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proto::capture::{Direction, Pcap, hexdump};

use crate::{Error, tell};

/// What to copy the datagrams to: `--pcap FILE`, `--hexdump`, both or neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// The capture file to write (replaced if it exists).
    pub pcap: Option<PathBuf>,
    /// Show each datagram as offset / hex / ASCII lines on stdout.
    pub hexdump: bool,
}

impl Capture {
    /// The tap for a run: creates the capture file and writes its header, so that a file that
    /// cannot be written fails before anything is sent; `None` when nothing is asked for.
    pub(crate) fn start(&self) -> Result<Option<Tap>, Error> {
        let file = match &self.pcap {
            Some(path) => Some(CaptureFile::create(path)?),
            None => None,
        };
        if file.is_none() && !self.hexdump {
            return Ok(None);
        }
        let unset = SocketAddr::from(([0, 0, 0, 0], 0));
        Ok(Some(Tap {
            file,
            hexdump: self.hexdump,
            local: unset,
            peer: unset,
            pcap: Pcap::new(),
            record: Vec::new(),
            dump: String::new(),
        }))
    }
}

/// A capture file being written.
struct CaptureFile {
    path: PathBuf,
    out: BufWriter<File>,
}

impl CaptureFile {
    fn create(path: &Path) -> Result<CaptureFile, Error> {
        let fail = |source| Error::Capture {
            path: path.to_owned(),
            source,
        };
        let mut out = BufWriter::new(File::create(path).map_err(fail)?);
        let mut header = Vec::new();
        Pcap::file_header(&mut header);
        out.write_all(&header)
            .and_then(|()| out.flush())
            .map_err(fail)?;
        Ok(CaptureFile {
            path: path.to_owned(),
            out,
        })
    }
}

/// One run's copies of its datagrams, fed by the socket.
pub(crate) struct Tap {
    /// `None` once a write failed (said once; the run goes on without the capture).
    file: Option<CaptureFile>,
    hexdump: bool,
    /// The socket's address and its server's, as the frames show them.
    local: SocketAddr,
    peer: SocketAddr,
    pcap: Pcap,
    /// One record, reused.
    record: Vec<u8>,
    /// One dump, reused.
    dump: String,
}

impl Tap {
    /// Points the tap at a (new) connected socket from `local` to `peer`.
    pub(crate) fn connected(&mut self, local: SocketAddr, peer: SocketAddr) {
        self.local = local;
        self.peer = peer;
    }

    /// A datagram just sent to the server.
    pub(crate) fn sent(&mut self, datagram: &[u8]) {
        self.copy(Direction::Sent, datagram, datagram.len());
    }

    /// A datagram just received from the server: `datagram` is what was kept of it, `len` its
    /// real length.
    pub(crate) fn received(&mut self, datagram: &[u8], len: usize) {
        self.copy(Direction::Received, datagram, len);
    }

    fn copy(&mut self, direction: Direction, datagram: &[u8], len: usize) {
        if let Some(file) = &mut self.file {
            let (src, dst) = match direction {
                Direction::Sent => (self.local, self.peer),
                Direction::Received => (self.peer, self.local),
            };
            self.record.clear();
            self.pcap
                .record(wall_clock(), src, dst, datagram, len, &mut self.record);
            if let Err(e) = file.out.write_all(&self.record) {
                tell(format_args!(
                    "warning: cannot write the capture {} ({e}); the run goes on without it",
                    file.path.display()
                ));
                self.file = None;
            }
        }
        if self.hexdump {
            self.dump.clear();
            hexdump(direction, self.peer, datagram, len, &mut self.dump);
            // As for the tutorial's lines, a stdout that fails is the caller's to report, at
            // its next line.
            let mut out = io::stdout().lock();
            let _ = out
                .write_all(self.dump.as_bytes())
                .and_then(|()| out.flush());
        }
    }
}

impl Drop for Tap {
    /// Writes what is buffered: the run is over, however it ended.
    fn drop(&mut self) {
        if let Some(file) = &mut self.file
            && let Err(e) = file.out.flush()
        {
            tell(format_args!(
                "warning: cannot finish the capture {} ({e}); its last datagrams are missing",
                file.path.display()
            ));
        }
    }
}

/// Now, since the Unix epoch (zero for a clock set before 1970).
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}
