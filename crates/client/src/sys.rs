//! The client's calls to the operating system, behind a small safe API: a UDP socket connected
//! to the server ([`Socket`]: send, receive with a time limit, drain without blocking), the
//! signals that stop a run, the bytes of a command-line argument, and the terminal's modes
//! ([`TerminalModes`]), put back when a run stops in the middle of an edited line.
//!
//! Unix code (`unix`) and a portable fallback on the standard library alone (`fallback`, what
//! Windows builds) are picked once, here, with `#[cfg]`; the rest of the crate never names a
//! platform. No `unsafe` of ours: `nix` and `signal-hook` wrap the system calls.
//!
//! Each call on the socket is traced here (`--trace`, [`SocketTrace`]) by the code that makes
//! it; the socket is opened with socket2 call by call (`socket`, `bind`, `connect`), since
//! std's `UdpSocket::bind` makes two calls in one.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

#[cfg(not(unix))]
use fallback as imp;
#[cfg(target_os = "linux")]
use linux_paths as paths;
#[cfg(not(target_os = "linux"))]
use portable_paths as paths;
use socket2::{Domain, Protocol, Type};
#[cfg(unix)]
use unix as imp;

use crate::Error;
use crate::capture::Tap;
use crate::icmp::PathError;
use crate::options::{self, SocketOptions, unspecified};
use crate::trace::{SocketTrace, errno, family};

/// Most datagrams [`Socket::drain`] discards in one call, so that a peer flooding us cannot keep
/// the client draining forever.
const MAX_DRAIN: usize = 1_024;

/// A UDP socket of the peer's family on an ephemeral port, connected to the peer: the kernel
/// drops datagrams from any other address and reports ICMP "port unreachable" as a refusal.
pub(crate) struct Socket {
    socket: UdpSocket,
    peer: SocketAddr,
    /// The receive timeout last set: setting it costs a system call, so it is set only when
    /// it changes (a wait is received in slices of the same length).
    timeout: Option<Duration>,
    /// Gets a copy of every datagram sent and received (`--pcap`, `--hexdump`).
    tap: Option<Tap>,
    /// `--trace`: each call on this socket printed as it is made (off: one branch per call).
    trace: SocketTrace,
}

/// The receive buffer the socket asks for: 2 MiB, which Linux caps at `net.core.rmem_max` and
/// doubles for its bookkeeping. `bench --window 32` with 16 KiB replies gets them back in one
/// burst; the default (about 208 KiB) holds about a dozen and would drop the rest.
pub(crate) const RECEIVE_BUFFER_BYTES: usize = 2 << 20;

impl Socket {
    /// Binds a socket of `peer`'s family (to `--source`, or any address), sets the socket
    /// options asked for, and connects it to `peer`; with `trace` on, each call is printed on
    /// stderr as it is made.
    pub(crate) fn connect(
        peer: SocketAddr,
        options: &SocketOptions,
        trace: bool,
    ) -> Result<Socket, Error> {
        Socket::open(peer, options, trace, true)
    }

    /// As [`Socket::connect`], without connecting: for a group or broadcast address, whose
    /// replies come from other addresses ([`Socket::send_to`], [`Socket::recv_from`]).
    pub(crate) fn unconnected(
        peer: SocketAddr,
        options: &SocketOptions,
        trace: bool,
    ) -> Result<Socket, Error> {
        Socket::open(peer, options, trace, false)
    }

    fn open(
        peer: SocketAddr,
        options: &SocketOptions,
        trace: bool,
        connect: bool,
    ) -> Result<Socket, Error> {
        let local = options.source.unwrap_or_else(|| unspecified(peer));
        if local.is_ipv4() != peer.is_ipv4() {
            return Err(Error::Usage {
                reason: format!(
                    "--source {local} is an {} address and the server {peer} an {} one; give a \
                     source of the server's family",
                    options::family_name(local.ip()),
                    options::family_name(peer.ip())
                ),
            });
        }
        let trace = SocketTrace::stderr(trace);
        let socket =
            socket2::Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP));
        if let Err(e) = &socket {
            trace.call(format_args!(
                "socket({}, SOCK_DGRAM) → {}",
                family(peer),
                errno(e)
            ));
        }
        let socket = socket.map_err(|source| Error::Socket {
            doing: "opening a socket",
            source,
        })?;
        let fd = imp::fd(&socket);
        let trace = trace.socket(fd);
        trace.call(format_args!(
            "socket({}, SOCK_DGRAM) → fd {fd}",
            family(peer)
        ));
        paths::set_options(&socket, peer, options, &trace)?;
        let bound = socket.bind(&local.into());
        trace.done(format_args!("bind({local})"), &bound);
        bound.map_err(|source| Error::Source {
            source_addr: local,
            source,
        })?;
        if connect {
            let connected = socket.connect(&peer.into());
            trace.done(format_args!("connect({peer})"), &connected);
            connected.map_err(|source| {
                if source.kind() == io::ErrorKind::PermissionDenied && peer.is_ipv4() {
                    Error::BroadcastRefused { peer }
                } else {
                    Error::Socket {
                        doing: "connecting",
                        source,
                    }
                }
            })?;
        }
        let socket = UdpSocket::from(socket);
        let grown = imp::grow_receive_buffer(&socket);
        if imp::GROWS_RECEIVE_BUFFER {
            trace.done(
                format_args!("setsockopt(SO_RCVBUF, {RECEIVE_BUFFER_BYTES})"),
                &grown,
            );
        }
        if let Err(e) = grown {
            log::debug!("the receive buffer keeps the system's default size: {e}");
        }
        Ok(Socket {
            socket,
            peer,
            timeout: None,
            tap: None,
            trace,
        })
    }

    /// Sends one datagram to the peer on an [unconnected](Socket::unconnected) socket.
    pub(crate) fn send_to(&mut self, datagram: &[u8]) -> io::Result<()> {
        loop {
            let made = self.trace.clock();
            let sent = self.socket.send_to(datagram, self.peer);
            self.trace.sent(
                made,
                format_args!("sendto(…, {} bytes, {})", datagram.len(), self.peer),
                &sent,
            );
            match sent {
                Ok(_) => {
                    if let Some(tap) = &mut self.tap {
                        tap.sent(datagram);
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Receives one datagram from any address into `buf`, waiting at most `wait`: its full
    /// length and who sent it; `None` when none came in time.
    pub(crate) fn recv_from(
        &mut self,
        buf: &mut [u8],
        wait: Duration,
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        if wait.is_zero() {
            return Ok(None);
        }
        self.set_timeout(wait)?;
        let received = self.socket.recv_from(buf);
        if self.trace.is_on() {
            match &received {
                Ok((len, from)) => self
                    .trace
                    .call(format_args!("recvfrom(…) → {len} bytes from {from}")),
                Err(e) => self.trace.failed("recvfrom(…)", e),
            }
        }
        match received {
            Ok((len, from)) => {
                if let Some(tap) = &mut self.tap {
                    tap.received(&buf[..len.min(buf.len())], len);
                }
                Ok(Some((len, from)))
            }
            Err(e) if nothing_came(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The newest ICMP error queued on the socket (IP_RECVERR / IPV6_RECVERR), the queue
    /// emptied; `None` when it is empty or this system has none.
    pub(crate) fn path_error(&mut self) -> Option<PathError> {
        paths::read_error_queue(&self.socket, &self.trace)
    }

    /// The path MTU the kernel knows towards the peer (IP_MTU / IPV6_MTU, connected sockets).
    pub(crate) fn path_mtu(&self) -> Option<u32> {
        let mtu = paths::path_mtu(&self.socket, self.peer);
        let option = if self.peer.is_ipv4() {
            "IP_MTU"
        } else {
            "IPV6_MTU"
        };
        self.trace.done(format_args!("getsockopt({option})"), &mtu);
        mtu.ok()
    }

    /// Copies every datagram from now on to `tap`, which learns this socket's addresses.
    pub(crate) fn set_tap(&mut self, mut tap: Option<Tap>) {
        if let Some(tap) = &mut tap {
            let local = self.socket.local_addr().unwrap_or(match self.peer {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            });
            tap.connected(local, self.peer);
        }
        self.tap = tap;
    }

    /// The tap, for the socket that replaces this one.
    pub(crate) fn take_tap(&mut self) -> Option<Tap> {
        self.tap.take()
    }

    /// The peer it is connected to.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Sends one datagram. A refusal (see [`refused`]) means nothing listens on the peer.
    pub(crate) fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        loop {
            let made = self.trace.clock();
            let sent = self.socket.send(datagram);
            self.trace.sent(
                made,
                format_args!("send(…, {} bytes)", datagram.len()),
                &sent,
            );
            match sent {
                Ok(_) => {
                    if let Some(tap) = &mut self.tap {
                        tap.sent(datagram);
                    }
                    return Ok(());
                }
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
        self.set_timeout(wait)?;
        let received = self.socket.recv(buf);
        if self.trace.is_on() {
            match &received {
                Ok(len) => self.trace.call(format_args!("recv(…) → {len} bytes")),
                Err(e) => self.trace.failed("recv(…)", e),
            }
        }
        match received {
            Ok(len) => {
                if let Some(tap) = &mut self.tap {
                    tap.received(&buf[..len.min(buf.len())], len);
                }
                Ok(Some(len))
            }
            Err(e) if nothing_came(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Discards the datagrams already waiting, without blocking; returns how many (at most
    /// [`MAX_DRAIN`]). A refusal pending on the socket is returned as the error it is.
    pub(crate) fn drain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let tap = &mut self.tap;
        imp::drain(&self.socket, buf, MAX_DRAIN, &self.trace, &mut |datagram| {
            if let Some(tap) = tap {
                tap.received(datagram, datagram.len());
            }
        })
    }

    /// Sets the receive timeout to `wait` unless it already is.
    fn set_timeout(&mut self, wait: Duration) -> io::Result<()> {
        if self.timeout != Some(wait) {
            let set = self.socket.set_read_timeout(Some(wait));
            self.trace.done(
                format_args!(
                    "setsockopt(SO_RCVTIMEO, {})",
                    humantime::format_duration(wait)
                ),
                &set,
            );
            set?;
            self.timeout = Some(wait);
        }
        Ok(())
    }

    /// Sends `datagrams` in as few system calls as the platform allows (one `sendmmsg` on
    /// Linux); returns how many went (fewer when the socket's buffer filled up).
    pub(crate) fn send_batch(
        &mut self,
        batch: &mut Batch,
        datagrams: &[Vec<u8>],
    ) -> io::Result<usize> {
        let datagrams = &datagrams[..datagrams.len().min(batch.capacity)];
        if datagrams.len() == 1 {
            return self.send(&datagrams[0]).map(|()| 1);
        }
        let sent = imp::send_batch(&self.socket, &mut batch.sys, datagrams, &self.trace)?;
        if let Some(tap) = &mut self.tap {
            for datagram in datagrams.iter().take(sent) {
                tap.sent(datagram);
            }
        }
        Ok(sent)
    }

    /// Receives what has arrived into `batch`, waiting at most `wait` for the first datagram
    /// (`recvmmsg` with `MSG_WAITFORONE` on Linux: whatever else is queued comes in the same
    /// call). Returns how many; 0 when none came in time. A zero `wait` does not block.
    pub(crate) fn recv_batch(&mut self, batch: &mut Batch, wait: Duration) -> io::Result<usize> {
        let flags_nonblocking = wait.is_zero();
        if !flags_nonblocking {
            self.set_timeout(wait)?;
        }
        batch.received = 0;
        let Batch {
            sys,
            bufs,
            lens,
            slot,
            capacity,
            ..
        } = batch;
        let received = imp::recv_batch(
            &self.socket,
            sys,
            &mut bufs[..*slot * *capacity],
            *slot,
            lens,
            flags_nonblocking,
            &self.trace,
        )?;
        batch.received = received;
        if let Some(tap) = &mut self.tap {
            for (datagram, len) in (0..received).filter_map(|i| batch.get(i)) {
                tap.received(datagram, len);
            }
        }
        Ok(received)
    }
}

impl Drop for Socket {
    /// The descriptor is closed right after this, when the standard library's socket drops.
    fn drop(&mut self) {
        self.trace.call(format_args!("close()"));
    }
}

/// Preallocated room for batched sends and receives: nothing is allocated per datagram.
pub(crate) struct Batch {
    sys: imp::BatchHeaders,
    capacity: usize,
    /// Bytes per received datagram kept; a longer one is cut (its full length is in `lens`).
    slot: usize,
    bufs: Vec<u8>,
    /// Full length of each datagram received.
    lens: Vec<usize>,
    received: usize,
}

impl Batch {
    /// Room for `capacity` datagrams at a time (at least 1), each received into `slot` bytes.
    pub(crate) fn new(capacity: usize, slot: usize) -> Batch {
        let capacity = capacity.max(1);
        Batch {
            sys: imp::BatchHeaders::new(capacity),
            capacity,
            slot: slot.max(1),
            bufs: vec![0; capacity * slot.max(1)],
            lens: vec![0; capacity],
            received: 0,
        }
    }

    /// How many datagrams a call sends or receives at most.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The `i`th datagram of the last receive (cut to the slot), and its full length.
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], usize)> {
        if i >= self.received {
            return None;
        }
        let len = self.lens[i];
        let start = i * self.slot;
        Some((&self.bufs[start..start + len.min(self.slot)], len))
    }
}

/// Whether `e`, from a send or a receive on the connected socket, is the peer's ICMP "port
/// unreachable": nothing listens. Unix reports it as a refusal (`ECONNREFUSED`); Windows as a
/// *reset* (`WSAECONNRESET`) on the next receive. A UDP socket has no connection to reset, so
/// on any system a reset can only mean that ICMP: both read the same, on every platform (which
/// also lets the test below run everywhere).
pub(crate) fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset
    )
}

/// The index of the interface named `name` (for `%IFNAME` scope ids), `None` if there is none.
pub(crate) fn interface_index(name: &str) -> Option<u32> {
    imp::interface_index(name)
}

/// Whether `e` says a datagram is over the MTU (EMSGSIZE).
pub(crate) fn too_big(e: &io::Error) -> bool {
    paths::too_big(e)
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

/// The modes of the terminal on standard input (echo, line mode, signals), as they were when
/// saved: the line editor switches them to raw mode while a line is edited and puts them back
/// when the line is done, but a run stopped by a signal or `--deadline` in the middle of a line
/// puts them back with this.
pub(crate) struct TerminalModes(imp::TerminalModes);

impl TerminalModes {
    /// The modes now; `None` when standard input is no terminal, or this system cannot say.
    pub(crate) fn save() -> Option<TerminalModes> {
        imp::TerminalModes::save().map(TerminalModes)
    }

    /// Puts the saved modes back, at once.
    pub(crate) fn restore(&self) -> io::Result<()> {
        self.0.restore()
    }
}

/// Sets the options socket2 sets the same way on every system, each traced: `--ttl`
/// (`--hop-limit`), `--broadcast` (IPv4 only) and `--multicast-ttl`.
fn set_hops(
    socket: &socket2::Socket,
    v4: bool,
    options: &SocketOptions,
    trace: &SocketTrace,
) -> Result<(), Error> {
    let hops = [
        (
            "--ttl",
            options.ttl,
            if v4 { "IP_TTL" } else { "IPV6_UNICAST_HOPS" },
            if v4 {
                socket2::Socket::set_ttl_v4
            } else {
                socket2::Socket::set_unicast_hops_v6
            } as fn(&socket2::Socket, u32) -> io::Result<()>,
        ),
        (
            "--multicast-ttl",
            options.multicast_ttl,
            if v4 {
                "IP_MULTICAST_TTL"
            } else {
                "IPV6_MULTICAST_HOPS"
            },
            if v4 {
                socket2::Socket::set_multicast_ttl_v4
            } else {
                socket2::Socket::set_multicast_hops_v6
            },
        ),
    ];
    for (flag, value, call, set) in hops {
        let Some(value) = value.map(u32::from) else {
            continue;
        };
        let set = set(socket, value);
        trace.done(format_args!("setsockopt({call}, {value})"), &set);
        set.map_err(|source| Error::Option { flag, source })?;
    }
    if options.broadcast && v4 {
        let set = socket.set_broadcast(true);
        trace.done(format_args!("setsockopt(SO_BROADCAST, 1)"), &set);
        set.map_err(|source| Error::Option {
            flag: "--broadcast",
            source,
        })?;
    }
    Ok(())
}

/// Whether a receive that failed with `e` simply got nothing: its timeout passed, or a signal
/// interrupted it (the caller looks at its stop flags and waits again).
fn nothing_came(e: &io::Error) -> bool {
    proto::trace::timed_out(e) || e.kind() == io::ErrorKind::Interrupted
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
    use crate::trace::SocketTrace;

    /// The socket's descriptor, as traces name it.
    pub(super) fn fd(socket: &socket2::Socket) -> i32 {
        socket.as_raw_fd()
    }

    /// `recv` with `MSG_DONTWAIT`: no switch of the socket to non-blocking mode and back.
    pub(super) fn drain(
        socket: &UdpSocket,
        buf: &mut [u8],
        max: usize,
        trace: &SocketTrace,
        seen: &mut dyn FnMut(&[u8]),
    ) -> io::Result<usize> {
        let mut drained = 0;
        while drained < max {
            let received = recv(socket.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT);
            if trace.is_on() {
                match received {
                    Ok(len) => trace.call(format_args!("recv(…, MSG_DONTWAIT) → {len} bytes")),
                    Err(Errno::EAGAIN) => trace.call(format_args!(
                        "recv(…, MSG_DONTWAIT) → EAGAIN (none waiting)"
                    )),
                    Err(errno) => trace.call(format_args!(
                        "recv(…, MSG_DONTWAIT) → {errno:?} ({})",
                        errno.desc()
                    )),
                }
            }
            match received {
                Ok(len) => {
                    seen(&buf[..len.min(buf.len())]);
                    drained += 1;
                }
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
        Ok(drained)
    }

    pub(super) fn interface_index(name: &str) -> Option<u32> {
        nix::net::if_::if_nametoindex(name)
            .ok()
            .filter(|index| *index > 0)
    }

    /// Whether [`grow_receive_buffer`] makes a system call.
    pub(super) const GROWS_RECEIVE_BUFFER: bool = true;

    /// Asks for a receive buffer of [`RECEIVE_BUFFER_BYTES`](super::RECEIVE_BUFFER_BYTES).
    pub(super) fn grow_receive_buffer(socket: &UdpSocket) -> io::Result<()> {
        let bytes = super::RECEIVE_BUFFER_BYTES;
        nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::RcvBuf, &bytes)
            .map_err(io::Error::from)
    }

    pub(super) use super::batch::{BatchHeaders, recv_batch, send_batch};

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

    pub(crate) struct TerminalModes(nix::sys::termios::Termios);

    impl TerminalModes {
        pub(crate) fn save() -> Option<TerminalModes> {
            nix::sys::termios::tcgetattr(io::stdin())
                .ok()
                .map(TerminalModes)
        }

        pub(crate) fn restore(&self) -> io::Result<()> {
            use nix::sys::termios::{SetArg, tcsetattr};
            tcsetattr(io::stdin(), SetArg::TCSANOW, &self.0).map_err(io::Error::from)
        }
    }
}

/// `sendmmsg`/`recvmmsg` through nix's safe wrappers, on Linux.
#[cfg(target_os = "linux")]
mod batch {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    use nix::errno::Errno;
    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, recvmmsg, sendmmsg};

    use crate::trace::SocketTrace;

    /// Most datagrams one call moves: the I/O vectors live on the stack, this many at a time.
    const MAX: usize = 64;

    /// The `mmsghdr` arrays, allocated once.
    pub(crate) struct BatchHeaders {
        send: MultiHeaders<()>,
        recv: MultiHeaders<()>,
    }

    impl BatchHeaders {
        pub(crate) fn new(capacity: usize) -> BatchHeaders {
            let n = capacity.min(MAX);
            BatchHeaders {
                send: MultiHeaders::preallocate(n, None),
                recv: MultiHeaders::preallocate(n, None),
            }
        }
    }

    pub(crate) fn send_batch(
        socket: &UdpSocket,
        headers: &mut BatchHeaders,
        datagrams: &[Vec<u8>],
        trace: &SocketTrace,
    ) -> io::Result<usize> {
        let n = datagrams.len().min(MAX);
        let iovs: [[IoSlice<'_>; 1]; MAX] = std::array::from_fn(|i| {
            [IoSlice::new(
                datagrams.get(i).map_or(&[][..], Vec::as_slice),
            )]
        });
        let addrs = [None::<()>; MAX];
        let cmsgs: [ControlMessage<'_>; 0] = [];
        loop {
            let made = trace.clock();
            let sent = sendmmsg(
                socket.as_raw_fd(),
                &mut headers.send,
                &iovs[..n],
                &addrs[..n],
                cmsgs,
                MsgFlags::empty(),
            )
            .map(Iterator::count);
            if trace.is_on() {
                trace.sent_batch(made, n, &sent.map_err(io::Error::from));
            }
            match sent {
                Ok(count) => return Ok(count),
                Err(Errno::EINTR) => {}
                Err(errno) => return Err(errno.into()),
            }
        }
    }

    pub(crate) fn recv_batch(
        socket: &UdpSocket,
        headers: &mut BatchHeaders,
        bufs: &mut [u8],
        slot: usize,
        lens: &mut [usize],
        nonblocking: bool,
        trace: &SocketTrace,
    ) -> io::Result<usize> {
        let mut chunks = bufs.chunks_mut(slot);
        let mut iovs: [[IoSliceMut<'_>; 1]; MAX] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or(&mut []))]);
        let n = lens.len().min(MAX);
        // MSG_TRUNC: the length reported is the datagram's, not what fitted.
        let mut flags = MsgFlags::MSG_WAITFORONE | MsgFlags::MSG_TRUNC;
        if nonblocking {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        let call = if nonblocking {
            "recvmmsg(…, MSG_DONTWAIT)"
        } else {
            "recvmmsg(…)"
        };
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut headers.recv,
            &mut iovs[..n],
            flags,
            None,
        )
        .map(|results| {
            let mut count = 0;
            for (len, message) in lens.iter_mut().zip(results) {
                *len = message.bytes;
                count += 1;
            }
            count
        });
        if trace.is_on() {
            match received {
                Ok(count) => {
                    let plural = if count == 1 { "" } else { "s" };
                    let bytes: usize = lens[..count].iter().sum();
                    trace.call(format_args!(
                        "{call} → {count} datagram{plural} ({bytes} bytes)"
                    ));
                }
                Err(Errno::EAGAIN) if nonblocking => {
                    trace.call(format_args!("{call} → EAGAIN (none waiting)"));
                }
                Err(errno) => trace.failed(call, &errno.into()),
            }
        }
        // EINTR (a signal) and EAGAIN (the timeout) are "nothing yet": the caller looks at
        // Stop and its clock, and calls again.
        match received {
            Ok(count) => Ok(count),
            Err(Errno::EINTR | Errno::EAGAIN) => Ok(0),
            Err(errno) => Err(errno.into()),
        }
    }
}

/// One datagram per system call, where there is no `sendmmsg`/`recvmmsg`.
#[cfg(not(target_os = "linux"))]
mod batch {
    use std::io;
    use std::net::UdpSocket;

    use crate::trace::SocketTrace;

    pub(crate) struct BatchHeaders;

    impl BatchHeaders {
        pub(crate) fn new(_capacity: usize) -> BatchHeaders {
            BatchHeaders
        }
    }

    pub(crate) fn send_batch(
        socket: &UdpSocket,
        _headers: &mut BatchHeaders,
        datagrams: &[Vec<u8>],
        trace: &SocketTrace,
    ) -> io::Result<usize> {
        let mut sent = 0;
        for datagram in datagrams {
            let made = trace.clock();
            let result = socket.send(datagram);
            trace.sent(
                made,
                format_args!("send(…, {} bytes)", datagram.len()),
                &result,
            );
            match result {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    pub(crate) fn recv_batch(
        socket: &UdpSocket,
        _headers: &mut BatchHeaders,
        bufs: &mut [u8],
        slot: usize,
        lens: &mut [usize],
        nonblocking: bool,
        trace: &SocketTrace,
    ) -> io::Result<usize> {
        let Some(first) = bufs.chunks_mut(slot).next() else {
            return Ok(0);
        };
        if nonblocking {
            socket.set_nonblocking(true)?;
        }
        let result = socket.recv(first);
        if nonblocking {
            socket.set_nonblocking(false)?;
        }
        if trace.is_on() {
            match &result {
                Ok(len) => trace.call(format_args!("recv(…) → {len} bytes")),
                Err(e) => trace.failed("recv(…)", e),
            }
        }
        match result {
            Ok(len) => {
                if let Some(l) = lens.first_mut() {
                    *l = len.min(first.len());
                }
                Ok(1)
            }
            Err(e) if super::nothing_came(&e) => Ok(0),
            Err(e) => Err(e),
        }
    }
}

#[cfg(not(unix))]
mod fallback {
    use std::ffi::OsString;
    use std::io;
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use crate::trace::SocketTrace;

    /// The socket's handle, as traces name it.
    #[cfg(windows)]
    pub(super) fn fd(socket: &socket2::Socket) -> u64 {
        std::os::windows::io::AsRawSocket::as_raw_socket(socket)
    }

    /// No descriptor to name.
    #[cfg(not(windows))]
    pub(super) fn fd(_: &socket2::Socket) -> &'static str {
        "?"
    }

    pub(super) fn interface_index(_name: &str) -> Option<u32> {
        None
    }

    /// Whether [`grow_receive_buffer`] makes a system call.
    pub(super) const GROWS_RECEIVE_BUFFER: bool = false;

    /// The system's default size serves; std cannot set another.
    pub(super) fn grow_receive_buffer(_: &UdpSocket) -> io::Result<()> {
        Ok(())
    }

    pub(super) fn drain(
        socket: &UdpSocket,
        buf: &mut [u8],
        max: usize,
        trace: &SocketTrace,
        seen: &mut dyn FnMut(&[u8]),
    ) -> io::Result<usize> {
        socket.set_nonblocking(true)?;
        let mut drained = 0;
        let mut result = Ok(());
        while drained < max {
            let received = socket.recv(buf);
            trace.done(format_args!("recv(…, non-blocking)"), &received);
            match received {
                Ok(len) => {
                    seen(&buf[..len.min(buf.len())]);
                    drained += 1;
                }
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

    /// The console's modes are the line editor's own business here: nothing saved.
    pub(crate) struct TerminalModes;

    impl TerminalModes {
        pub(crate) fn save() -> Option<TerminalModes> {
            None
        }

        pub(crate) fn restore(&self) -> io::Result<()> {
            Ok(())
        }
    }

    pub(super) use super::batch::{BatchHeaders, recv_batch, send_batch};
}

#[cfg(target_os = "linux")]
mod linux_paths {
    //! What the kernel says about a path (the error queue, the path MTU) and the options that
    //! choose it: Linux's calls, behind the same functions `portable_paths` gives elsewhere.
    use std::io::{self, IoSliceMut};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use super::imp::interface_index;

    use nix::errno::Errno;
    use nix::sys::socket::{
        ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
    };

    use crate::Error;
    use crate::icmp::{Origin, PathError};
    use crate::options::SocketOptions;
    use crate::trace::SocketTrace;

    pub(super) fn too_big(e: &io::Error) -> bool {
        e.raw_os_error() == Some(Errno::EMSGSIZE as i32)
    }

    /// Sets what `options` asks for on `socket` (before it is bound), and IP_RECVERR /
    /// IPV6_RECVERR always: ICMP errors are then queued with who sent them.
    pub(super) fn set_options(
        socket: &socket2::Socket,
        peer: SocketAddr,
        options: &SocketOptions,
        trace: &SocketTrace,
    ) -> Result<(), Error> {
        let v4 = peer.is_ipv4();
        let failed = |flag: &'static str| move |source: io::Error| Error::Option { flag, source };
        if let Some(name) = &options.interface {
            let bound = socket.bind_device(Some(name.as_bytes()));
            trace.done(
                format_args!("setsockopt(SO_BINDTODEVICE, {name:?})"),
                &bound,
            );
            bound.map_err(|source| Error::Interface {
                flag: "--interface",
                name: name.clone(),
                source: (source.raw_os_error() != Some(Errno::ENODEV as i32)).then_some(source),
            })?;
        }
        super::set_hops(socket, v4, options, trace)?;
        if let Some(tos) = options.tos {
            let tos = u32::from(tos);
            let (call, set) = if v4 {
                ("IP_TOS", socket.set_tos_v4(tos))
            } else {
                ("IPV6_TCLASS", socket.set_tclass_v6(tos))
            };
            trace.done(format_args!("setsockopt({call}, {tos})"), &set);
            set.map_err(failed("--tos"))?;
        }
        if options.dont_fragment {
            let (call, set) = if v4 {
                (
                    "IP_MTU_DISCOVER, IP_PMTUDISC_DO",
                    rustix::net::sockopt::set_ip_mtu_discover(
                        socket,
                        rustix::net::sockopt::Ipv4PathMtuDiscovery::DO,
                    )
                    .map_err(io::Error::from),
                )
            } else {
                (
                    "IPV6_DONTFRAG, 1",
                    setsockopt(socket, sockopt::Ipv6DontFrag, &true).map_err(io::Error::from),
                )
            };
            trace.done(format_args!("setsockopt({call})"), &set);
            set.map_err(failed("--dont-fragment"))?;
        }
        if let Some(name) = &options.multicast_if {
            let missing = || Error::Interface {
                flag: "--multicast-if",
                name: name.clone(),
                source: None,
            };
            let set = if v4 {
                // IP_MULTICAST_IF names the interface by one of its IPv4 addresses.
                let addr = nix::ifaddrs::getifaddrs()
                    .ok()
                    .into_iter()
                    .flatten()
                    .filter(|ifaddr| ifaddr.interface_name == *name)
                    .find_map(|ifaddr| {
                        ifaddr
                            .address
                            .and_then(|a| a.as_sockaddr_in().map(|sin| sin.ip()))
                    })
                    .ok_or_else(missing)?;
                let set = socket.set_multicast_if_v4(&addr);
                trace.done(format_args!("setsockopt(IP_MULTICAST_IF, {addr})"), &set);
                set
            } else {
                let index = interface_index(name).ok_or_else(missing)?;
                let set = socket.set_multicast_if_v6(index);
                trace.done(format_args!("setsockopt(IPV6_MULTICAST_IF, {index})"), &set);
                set
            };
            set.map_err(failed("--multicast-if"))?;
        }
        let (call, set) = if v4 {
            (
                "IP_RECVERR",
                setsockopt(socket, sockopt::Ipv4RecvErr, &true),
            )
        } else {
            (
                "IPV6_RECVERR",
                setsockopt(socket, sockopt::Ipv6RecvErr, &true),
            )
        };
        let set = set.map_err(io::Error::from);
        trace.done(format_args!("setsockopt({call}, 1)"), &set);
        if let Err(e) = set {
            log::debug!("ICMP errors will not say who sent them: {e}");
        }
        Ok(())
    }

    /// Empties the error queue (`recvmsg` with MSG_ERRQUEUE), returning its newest entry.
    pub(super) fn read_error_queue(socket: &UdpSocket, trace: &SocketTrace) -> Option<PathError> {
        let mut newest = None;
        // The queue holds a few entries at most; the bound keeps a flood from holding us here.
        for _ in 0..64 {
            let mut data = [0u8; 64];
            let mut iov = [IoSliceMut::new(&mut data)];
            let mut space = nix::cmsg_space!(nix::libc::sock_extended_err, nix::libc::sockaddr_in6);
            let received = recvmsg::<SockaddrStorage>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
            );
            let message = match received {
                Ok(message) => message,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(errno) => {
                    trace.failed("recvmsg(…, MSG_ERRQUEUE)", &errno.into());
                    break;
                }
            };
            let Ok(cmsgs) = message.cmsgs() else {
                break;
            };
            for cmsg in cmsgs {
                let (ee, offender) = match cmsg {
                    ControlMessageOwned::Ipv4RecvErr(ee, offender) => (
                        ee,
                        offender.map(|sin| {
                            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
                        }),
                    ),
                    ControlMessageOwned::Ipv6RecvErr(ee, offender) => (
                        ee,
                        offender.map(|sin6| IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr))),
                    ),
                    _ => continue,
                };
                let error = PathError {
                    // The kernel gives an offender of family AF_UNSPEC (all zeros) for none.
                    offender: offender.filter(|ip| !ip.is_unspecified()),
                    origin: match ee.ee_origin {
                        nix::libc::SO_EE_ORIGIN_LOCAL => Origin::Local,
                        nix::libc::SO_EE_ORIGIN_ICMP => Origin::Icmp,
                        nix::libc::SO_EE_ORIGIN_ICMP6 => Origin::Icmp6,
                        _ => Origin::Other,
                    },
                    icmp_type: ee.ee_type,
                    code: ee.ee_code,
                    info: ee.ee_info,
                };
                trace.call(format_args!(
                    "recvmsg(…, MSG_ERRQUEUE) → {error} from {}{}",
                    error.who(),
                    if error.info > 0 {
                        format!(", info {}", error.info)
                    } else {
                        String::new()
                    }
                ));
                newest = Some(error);
            }
        }
        newest
    }

    pub(super) fn path_mtu(socket: &UdpSocket, peer: SocketAddr) -> io::Result<u32> {
        let mtu = if peer.is_ipv4() {
            rustix::net::sockopt::ip_mtu(socket)
        } else {
            rustix::net::sockopt::ipv6_mtu(socket)
        };
        mtu.map_err(io::Error::from)
    }
}

#[cfg(not(target_os = "linux"))]
mod portable_paths {
    //! Elsewhere than Linux: no error queue and no path MTU to read; the options socket2 sets
    //! everywhere, the others refused with the reason.
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    use crate::Error;
    use crate::icmp::PathError;
    use crate::options::SocketOptions;
    use crate::trace::SocketTrace;

    pub(super) fn too_big(_: &io::Error) -> bool {
        false
    }

    /// The portable options through socket2; the others are Linux's.
    pub(super) fn set_options(
        socket: &socket2::Socket,
        peer: SocketAddr,
        options: &SocketOptions,
        trace: &SocketTrace,
    ) -> Result<(), Error> {
        let v4 = peer.is_ipv4();
        let unsupported = |flag: &'static str| Error::Option {
            flag,
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "this build of udptalk sets it on Linux only",
            ),
        };
        if options.interface.is_some() {
            return Err(unsupported("--interface"));
        }
        if options.dont_fragment {
            return Err(unsupported("--dont-fragment"));
        }
        if options.multicast_if.is_some() {
            return Err(unsupported("--multicast-if"));
        }
        if options.tos.is_some() && !v4 {
            return Err(unsupported("--tos"));
        }
        super::set_hops(socket, v4, options, trace)?;
        if let Some(tos) = options.tos {
            let set = socket.set_tos_v4(u32::from(tos));
            trace.done(format_args!("setsockopt(IP_TOS, {tos})"), &set);
            set.map_err(|source| Error::Option {
                flag: "--tos",
                source,
            })?;
        }
        Ok(())
    }

    /// No error queue here: a refusal is all the system says.
    pub(super) fn read_error_queue(_: &UdpSocket, _: &SocketTrace) -> Option<PathError> {
        None
    }

    pub(super) fn path_mtu(_: &UdpSocket, _: SocketAddr) -> io::Result<u32> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "this system does not tell the path MTU",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::refused;

    #[test]
    fn a_reset_reads_as_nothing_listens_like_a_refusal() {
        // Windows: WSAECONNRESET (10054) on the receive after an ICMP port unreachable.
        assert!(refused(&io::Error::from(io::ErrorKind::ConnectionReset)));
        assert!(refused(&io::Error::from(io::ErrorKind::ConnectionRefused)));
        // Unix: ECONNREFUSED, as the kernel gives it.
        #[cfg(unix)]
        assert!(refused(&io::Error::from_raw_os_error(
            nix::errno::Errno::ECONNREFUSED as i32
        )));
        // Windows: WSAECONNRESET, as the system gives it.
        #[cfg(windows)]
        assert!(refused(&io::Error::from_raw_os_error(10054)));
        for other in [
            io::ErrorKind::WouldBlock,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Interrupted,
            io::ErrorKind::PermissionDenied,
            io::ErrorKind::AddrNotAvailable,
        ] {
            assert!(!refused(&io::Error::from(other)), "{other:?}");
        }
    }
}
