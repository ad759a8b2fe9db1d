//! The client's calls to the operating system, behind a small safe API: a UDP socket connected
//! to the server ([`Socket`]: send, receive with a time limit, drain without blocking), the
//! signals that stop a run, and the bytes of a command-line argument.
//!
//! Unix code (`unix`) and a portable fallback on the standard library alone (`fallback`, what
//! Windows builds) are picked once, here, with `#[cfg]`; the rest of the crate never names a
//! platform. No `unsafe` of ours: `nix` and `signal-hook` wrap the system calls.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

#[cfg(not(unix))]
use fallback as imp;
#[cfg(unix)]
use unix as imp;

use crate::Error;

/// Most datagrams [`Socket::drain`] discards in one call, so that a peer flooding us cannot keep
/// the client draining forever.
const MAX_DRAIN: usize = 1_024;

/// A UDP socket of the peer's family on an ephemeral port, connected to the peer: the kernel
/// drops datagrams from any other address and reports ICMP "port unreachable" as a refusal.
pub(crate) struct Socket {
    socket: UdpSocket,
    /// The receive timeout last set: setting it costs a system call, so it is set only when
    /// it changes (a wait is received in slices of the same length).
    timeout: Option<Duration>,
}

impl Socket {
    /// Binds a socket of `peer`'s family and connects it to `peer`.
    pub(crate) fn connect(peer: SocketAddr) -> Result<Socket, Error> {
        let local: SocketAddr = match peer {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local).map_err(|source| Error::Socket {
            doing: "binding",
            source,
        })?;
        socket.connect(peer).map_err(|source| Error::Socket {
            doing: "connecting",
            source,
        })?;
        Ok(Socket {
            socket,
            timeout: None,
        })
    }

    /// Sends one datagram. A refusal (see [`refused`]) means nothing listens on the peer.
    pub(crate) fn send(&self, datagram: &[u8]) -> io::Result<()> {
        loop {
            match self.socket.send(datagram) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one datagram into `buf`, waiting at most `wait`; `None` when none came in time
    /// (or a signal interrupted the wait: the caller checks for signals between calls).
    pub(crate) fn recv(&mut self, buf: &mut [u8], wait: Duration) -> io::Result<Option<usize>> {
        // A zero timeout means "block forever" to the system: a wait that is over is no receive.
        if wait.is_zero() {
            return Ok(None);
        }
        if self.timeout != Some(wait) {
            self.socket.set_read_timeout(Some(wait))?;
            self.timeout = Some(wait);
        }
        match self.socket.recv(buf) {
            Ok(len) => Ok(Some(len)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Discards the datagrams already waiting, without blocking; returns how many (at most
    /// [`MAX_DRAIN`]). A refusal pending on the socket is returned as the error it is.
    pub(crate) fn drain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        imp::drain(&self.socket, buf, MAX_DRAIN)
    }
}

/// Whether `e`, from a send or a receive, is the peer's ICMP "port unreachable": nothing listens.
pub(crate) fn refused(e: &io::Error) -> bool {
    imp::refused(e)
}

/// Makes SIGINT, SIGTERM and SIGHUP store their [`crate::Signal`] number in `flag` instead of
/// ending the process, so that the run stops where it can still print its summary.
pub(crate) fn listen_for_signals(flag: &Arc<AtomicUsize>) -> io::Result<()> {
    imp::listen_for_signals(flag)
}

/// The bytes of a command-line argument, or the argument back when this system cannot give
/// them as they are (on Windows, arguments are UTF-16: only valid Unicode becomes bytes).
pub(crate) fn arg_bytes(arg: OsString) -> Result<Vec<u8>, OsString> {
    imp::arg_bytes(arg)
}

#[cfg(unix)]
mod unix {
    use std::ffi::OsString;
    use std::io;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStringExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

    use crate::Signal;

    /// `recv` with `MSG_DONTWAIT`: no switch of the socket to non-blocking mode and back.
    pub(super) fn drain(socket: &UdpSocket, buf: &mut [u8], max: usize) -> io::Result<usize> {
        let mut drained = 0;
        while drained < max {
            match recv(socket.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => drained += 1,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(drained)
    }

    pub(super) fn refused(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::ConnectionRefused
    }

    pub(super) fn listen_for_signals(flag: &Arc<AtomicUsize>) -> io::Result<()> {
        // A second signal while the first is being handled (say, the run is stuck writing to a
        // stdout nobody reads) gets the signal's default action: the process ends at once.
        let again = Arc::new(AtomicBool::new(false));
        for (number, signal) in [
            (SIGINT, Signal::Interrupt),
            (SIGTERM, Signal::Terminate),
            (SIGHUP, Signal::Hangup),
        ] {
            signal_hook::flag::register_conditional_default(number, Arc::clone(&again))?;
            signal_hook::flag::register(number, Arc::clone(&again))?;
            signal_hook::flag::register_usize(number, Arc::clone(flag), signal as usize)?;
        }
        Ok(())
    }

    pub(super) fn arg_bytes(arg: OsString) -> Result<Vec<u8>, OsString> {
        Ok(arg.into_vec())
    }
}

#[cfg(not(unix))]
mod fallback {
    use std::ffi::OsString;
    use std::io;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    pub(super) fn drain(socket: &UdpSocket, buf: &mut [u8], max: usize) -> io::Result<usize> {
        socket.set_nonblocking(true)?;
        let mut drained = 0;
        let mut result = Ok(());
        while drained < max {
            match socket.recv(buf) {
                Ok(_) => drained += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // The receive timeout is kept across the switch: the cached value stays true.
        socket.set_nonblocking(false)?;
        result.map(|()| drained)
    }

    /// Windows reports ICMP "port unreachable" on a UDP socket as WSAECONNRESET.
    pub(super) fn refused(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
        )
    }

    #[cfg(windows)]
    pub(super) fn listen_for_signals(flag: &Arc<AtomicUsize>) -> io::Result<()> {
        let flag = Arc::clone(flag);
        ctrlc::set_handler(move || {
            flag.store(
                crate::Signal::Interrupt as usize,
                std::sync::atomic::Ordering::SeqCst,
            );
        })
        .map_err(io::Error::other)
    }

    /// No signals to listen for: the system's default action applies.
    #[cfg(not(windows))]
    pub(super) fn listen_for_signals(_flag: &Arc<AtomicUsize>) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn arg_bytes(arg: OsString) -> Result<Vec<u8>, OsString> {
        arg.into_string().map(String::into_bytes)
    }
}
