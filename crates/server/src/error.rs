//! The server's one error type: what stops it from serving, worded for the operator.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// What keeps the server from running. Everything a peer sends is handled and counted instead.
#[derive(Debug)]
pub enum Error {
    /// Occurs when another socket already holds the address (another server is running).
    AddrInUse {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Occurs when the address belongs to no interface of this machine.
    AddrNotAvailable {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Occurs when the system refuses the bind (a port below 1024 without privilege).
    PermissionDenied {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Occurs when binding fails for another reason.
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when a worker thread stops by a panic: a bug, since nothing a peer sends may
    /// panic the server.
    Worker {
        /// Which worker (0-based).
        worker: usize,
    },
    /// Occurs when the `--pcap` file cannot be created or written (a folder that does not exist,
    /// no permission, a full disk).
    Capture {
        /// The file asked for.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when a `--join` group cannot be joined (no such interface, an address the
    /// interface cannot join).
    Join {
        /// The group and interface, as given (`239.1.2.3%eth0`).
        join: String,
        /// What the system said.
        source: io::Error,
    },
    /// Occurs when the socket cannot be configured or read after binding.
    Socket {
        /// What was being done.
        doing: &'static str,
        /// What the system said.
        source: io::Error,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::AddrInUse { addr } => write!(
                f,
                "udp address {addr} is already in use (is another server running?); stop it, \
                 or pick another address with --bind, e.g. --bind 127.0.0.1:0 for any free port"
            ),
            Error::AddrNotAvailable { addr } => write!(
                f,
                "cannot bind {addr}: no interface of this machine has that address; \
                 use --bind with a local address such as 127.0.0.1:50000 or [::1]:50000"
            ),
            Error::PermissionDenied { addr } => write!(
                f,
                "not allowed to bind {addr} (ports below 1024 need privileges); \
                 use --bind with a port of 1024 or more"
            ),
            Error::Bind { addr, source } => {
                write!(
                    f,
                    "cannot bind udp {addr}: {source}; try another --bind address"
                )
            }
            Error::Worker { worker } => write!(
                f,
                "worker {worker} stopped unexpectedly (a bug: the log above says where); \
                 restart the server, with --workers 1 if it happens again, and please report it"
            ),
            Error::Capture { path, source } => write!(
                f,
                "cannot write the capture file {}: {source}; check that its folder exists and \
                 is writable, or give another --pcap FILE",
                path.display()
            ),
            Error::Join { join, source } => write!(
                f,
                "cannot join the multicast group --join {join}: {source}; check the interface's \
                 name or index with `ip link` and that the group is a multicast address it can \
                 join"
            ),
            Error::Socket { doing, source } => write!(
                f,
                "socket error while {doing}: {source}; this is unexpected, please report it"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Bind { source, .. }
            | Error::Capture { source, .. }
            | Error::Join { source, .. }
            | Error::Socket { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl Error {
    /// Sorts a bind failure into the variant that explains it best.
    pub(crate) fn from_bind(addr: SocketAddr, source: io::Error) -> Error {
        match source.kind() {
            io::ErrorKind::AddrInUse => Error::AddrInUse { addr },
            io::ErrorKind::AddrNotAvailable => Error::AddrNotAvailable { addr },
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { addr },
            _ => Error::Bind { addr, source },
        }
    }
}
