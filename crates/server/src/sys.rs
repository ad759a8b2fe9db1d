//! The server's socket, with the platform-specific parts behind one small safe API.
//!
//! On Linux a [`ServerSocket`] receives up to [`BATCH`] datagrams with one `recvmmsg` and sends
//! a batch's answers with one `sendmmsg` (nix's safe wrappers, on headers allocated once per
//! socket). `recvmmsg` is called with `MSG_WAITFORONE`: it waits (up to the socket's
//! `SO_RCVTIMEO`, set once at bind) for the first datagram only, then takes whatever else is
//! already queued. Its own timeout argument is not used: the kernel checks it only after a
//! datagram arrives, so it cannot bound a wait. Elsewhere the batch is one datagram
//! (`recv_from`/`send_to`), and [`ServerSocket::recv`] takes exactly one datagram everywhere
//! (`--once`).
//!
//! Why nix's wrappers and not quinn-udp's: measured as bare echo loops (server pinned to one
//! core, 32 requests of 14 bytes in flight from the other, 5 interleaved rounds), server CPU per
//! reply was 3.35 µs with `std`'s `recv_from`/`send_to`, 3.24 µs with nix's
//! `recvmmsg`/`sendmmsg` and 3.62 µs with quinn-udp, which has no `MSG_WAITFORONE` (so a poll per
//! batch) and sends one `sendmsg` per datagram. quinn-udp also makes choices that suit QUIC, not
//! a general tool: it forbids fragmentation (`IP_PMTUDISC_PROBE`), enables GRO, swallows
//! `EMSGSIZE` and reports `ipi_addr` as the local address. socket2 has no `recvmmsg`.
//!
//! A server bound to a wildcard address (`0.0.0.0`, `[::]`) must answer *from* the address each
//! request was sent to: a client that sent to 127.0.0.2, or to a host's second address, has a
//! connected socket that drops an answer from any other address. On Linux, `IP_PKTINFO` /
//! `IPV6_RECVPKTINFO` tell each receive which local address the datagram came to, and the same
//! control message on the send chooses the source address. For IPv4 the source of the answer is
//! `ipi_spec_dst` (the local address the kernel would answer from), and the header's
//! destination `ipi_addr` tells a broadcast or multicast datagram ([`RecvMeta::group`]) apart.
//!
//! Several sockets can share one address with `SO_REUSEPORT` ([`ServerSocket::bind_group`]),
//! the kernel spreading peers across them by a hash of the 4-tuple.
//!
//! Every system call on a socket is made here, and each is traced here, by the code that makes
//! it ([`SocketTrace`], `--trace`): the sockets are opened with socket2 call by call (`socket`,
//! `setsockopt`, `bind`) rather than by std's `UdpSocket::bind`, which makes two calls in one.
//! With the trace off, each hook is one branch on an `Option`.
//!
//! Why nix's `recvmmsg`/`sendmmsg` (with `MultiHeaders`, allocated once, so a call allocates
//! nothing) rather than quinn-udp, the maintained batched UDP layer: quinn-udp is made for QUIC
//! and its choices do not fit a general tool. It sends one `sendmsg` per datagram (GSO instead
//! of `sendmmsg`); it calls `recvmmsg` without `MSG_WAITFORONE`, so it needs a non-blocking
//! socket and a `poll` per batch (a third system call); it turns fragmentation off
//! (`IP_PMTUDISC_PROBE`, DF), so an answer larger than the path MTU is refused; it enables GRO,
//! coalescing datagrams we must see one by one; it swallows `EMSGSIZE`, so an answer would be
//! lost without being counted; and it reports `ipi_addr`, the header's destination, as the
//! local address, which for a broadcast cannot be a source. socket2 has no `recvmmsg`. nix has
//! two quirks, handled below: one `sendmmsg` shares its control messages among all datagrams
//! (answers are sent in runs with the same source address), and `recvmmsg` does not reset the
//! headers' control-space length the kernel shrinks (headers are remade if that ever bites).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use proto::RECV_BUFFER;
use socket2::{Domain, Protocol, SockRef, Socket, Type};

use crate::trace::{SocketTrace, errno, family};

/// Datagrams taken by one receive, and answers sent by one send: 32 on Linux, where a batch of
/// 32 already brings the system calls per datagram to a few hundredths under load, while its
/// buffers (32 × [`RECV_BUFFER`], touched only as far as datagrams reach) stay small; 1
/// elsewhere.
#[cfg(target_os = "linux")]
pub const BATCH: usize = 32;

/// Datagrams taken by one receive: batching needs `recvmmsg`, which only Linux has here.
#[cfg(not(target_os = "linux"))]
pub const BATCH: usize = 1;

/// The receive buffer each socket asks for: 2 MiB, which Linux caps at `net.core.rmem_max` and
/// doubles for its bookkeeping. The default (about 208 KiB) holds fewer than a dozen 16 KiB
/// datagrams, so a client with 32 of them in flight would lose some before the server is even
/// scheduled; 4 MiB holds a full batch of the largest datagrams and thousands of small ones.
/// It costs the kernel memory only while datagrams wait in it.
pub const RECEIVE_BUFFER_BYTES: usize = 2 << 20;

/// A received datagram: its length, sender, and the local address it was sent to (when the
/// socket is bound to a wildcard address and the platform tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes received. Receive buffers are [`RECV_BUFFER`] bytes, more than any UDP payload,
    /// so this is always the datagram's real length.
    pub len: usize,
    /// The sender (`None` in the unexpected case that the system gave no address: the datagram
    /// cannot be answered).
    pub peer: Option<SocketAddr>,
    /// The address to answer from.
    pub local: Option<IpAddr>,
    /// Whether the datagram was sent to a broadcast or multicast address, so that every socket
    /// of a `SO_REUSEPORT` group received a copy of it.
    pub group: bool,
    /// Whether that address was a multicast one (a group the socket joined: with
    /// `IP_MULTICAST_ALL` off, it gets no other).
    pub multicast: bool,
    /// The interface it came in on (0 when the socket does not tell): an answer to a group
    /// datagram over IPv6 goes out on it.
    pub ifindex: u32,
}

impl RecvMeta {
    /// No datagram.
    pub const EMPTY: RecvMeta = RecvMeta {
        len: 0,
        peer: None,
        local: None,
        group: false,
        multicast: false,
        ifindex: 0,
    };
}

/// One answer to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// The answer's bytes.
    pub datagram: &'a [u8],
    /// Whom to.
    pub peer: SocketAddr,
    /// The address to send from (see [`RecvMeta::local`]).
    pub local: Option<IpAddr>,
    /// The interface to send on, 0 for the one the routes choose (see [`RecvMeta::ifindex`]).
    pub ifindex: u32,
}

/// How the server's sockets are set up, beyond the address.
#[derive(Debug, Clone, Default)]
pub struct SocketOptions {
    /// On an IPv6 address, serve IPv6 alone (`IPV6_V6ONLY`).
    pub v6only: bool,
    /// The receive buffer to ask for (`SO_RCVBUF`); `None`: [`RECEIVE_BUFFER_BYTES`].
    pub recv_buffer: Option<usize>,
}

/// The receive buffer a socket got: what was asked, and what the kernel granted (Linux
/// reports twice the usable size; `granted` is that report halved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvBuffer {
    /// Bytes asked for.
    pub asked: usize,
    /// Bytes the kernel granted, as far as the system tells (`None` if it does not).
    pub granted: Option<usize>,
}

/// The index of the interface named `name` (`if_nametoindex`), or why there is none.
pub fn interface_index(name: &str) -> io::Result<u32> {
    imp::interface_index(name)
}

/// Whether `e`, from a receive on the (unconnected) server socket, is the ICMP "port
/// unreachable" an earlier answer drew: Windows reports it on the next receive as a *reset*
/// (`WSAECONNRESET`, the well-known `SIO_UDP_CONNRESET` behaviour), some systems as a refusal.
/// The server ignores it: one client gone says nothing about the others.
pub fn earlier_answer_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// Ends a [`ServerSocket`]'s waits, from another thread, when the server stops: on Linux, it
/// shuts the socket's receiving side down (`shutdown(SHUT_RD)`), which wakes a receive that
/// waits and makes every later one return at once with an error, so the loop sees its stop
/// flag. (On UDP the call also reports "not connected", which is expected.) Elsewhere it does
/// nothing: receives there wait at most the time [`ServerSocket::limit_waits`] gives them.
pub struct Waker {
    /// The same socket, through a second descriptor.
    socket: UdpSocket,
    /// The socket's trace: the call is made on it, from the watch's thread.
    trace: SocketTrace,
}

impl Waker {
    /// Ends the socket's current and future waits (Linux).
    pub fn wake(&self) {
        #[cfg(target_os = "linux")]
        {
            // Reports ENOTCONN on an unconnected UDP socket, yet marks it shut and wakes it.
            let shut = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Read);
            self.trace.done(format_args!("shutdown(SHUT_RD)"), &shut);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (&self.socket, &self.trace);
    }
}

/// The server's UDP socket.
pub struct ServerSocket {
    socket: UdpSocket,
    /// Whether receives report, and sends set, the local address (wildcard binds on Linux).
    pktinfo: bool,
    /// Whether the bound address itself is a broadcast or multicast one, so that every datagram
    /// reaches all sockets of a group: `Some(multicast)`.
    group_bind: Option<bool>,
    /// `--trace`: each call on this socket printed as it is made (off: one branch per call).
    trace: SocketTrace,
    /// The address really bound, read once (`getsockname`) when the socket is set up.
    local: SocketAddr,
    /// The receive buffer asked for and granted.
    recv_buffer: RecvBuffer,
}

/// The headers a socket's batched receives and sends reuse. Made by [`ServerSocket::batch`]
/// on the thread that uses it (the system's headers hold pointers, so it cannot move between
/// threads).
pub struct Batch {
    headers: imp::Batch,
    /// Receives left in one-at-a-time mode before the next batched receive looks for a
    /// backlog; `None` in batched mode. See [`ServerSocket::recv_batch`].
    single: Option<u8>,
}

/// In one-at-a-time mode, every this many receives one is batched, to notice a backlog.
const SINGLE_RUN: u8 = 16;

impl ServerSocket {
    /// Binds `workers` sockets to `addr`; for a wildcard address, each asks for every
    /// datagram's local address. The first is bound without `SO_REUSEPORT`, so that an
    /// address another program holds fails here with "address in use" as a lone server's
    /// would; only then is `SO_REUSEPORT` set on it and the others bound to the same address
    /// (the port it got, for port 0) with it. Linux lets a bound socket join a reuseport group
    /// this way: the group is made when the second socket binds.
    ///
    /// On an IPv6 address `IPV6_V6ONLY` is set as `v6only` says, before binding, rather than
    /// left to the system's default (Linux's `net.ipv6.bindv6only` sysctl, which some systems
    /// turn on): `[::]` serves IPv4 too (as mapped addresses) unless `v6only`.
    pub fn bind_group(
        addr: SocketAddr,
        workers: usize,
        options: &SocketOptions,
        trace: &SocketTrace,
    ) -> io::Result<Vec<ServerSocket>> {
        let v6only = options.v6only;
        let name = |worker: usize| (workers > 1).then_some(worker);
        let (first, first_trace) = open(addr, name(0), v6only, false, trace)?;
        if workers <= 1 {
            return Ok(vec![ServerSocket::from_std(
                first,
                addr,
                options,
                first_trace,
            )?]);
        }
        let reuse = imp::set_reuse_port(SockRef::from(&first));
        first_trace.done(format_args!("setsockopt(SO_REUSEPORT, 1)"), &reuse);
        reuse?;
        let first = ServerSocket::from_std(first, addr, options, first_trace)?;
        let bound = first.local_addr()?;
        let mut sockets = Vec::with_capacity(workers);
        sockets.push(first);
        for worker in 1..workers {
            let (socket, socket_trace) = open(bound, name(worker), v6only, true, trace)?;
            sockets.push(ServerSocket::from_std(socket, addr, options, socket_trace)?);
        }
        Ok(sockets)
    }

    fn from_std(
        socket: UdpSocket,
        addr: SocketAddr,
        options: &SocketOptions,
        trace: SocketTrace,
    ) -> io::Result<ServerSocket> {
        let asked = options.recv_buffer.unwrap_or(RECEIVE_BUFFER_BYTES);
        let grown = imp::grow_receive_buffer(&socket, asked);
        if imp::GROWS_RECEIVE_BUFFER {
            trace.done(format_args!("setsockopt(SO_RCVBUF, {asked})"), &grown);
        }
        if let Err(e) = &grown {
            log::debug!("the receive buffer keeps the system's default size: {e}");
        }
        let granted = imp::receive_buffer(&socket);
        if imp::GROWS_RECEIVE_BUFFER {
            match &granted {
                Ok(size) => trace.call(format_args!("getsockopt(SO_RCVBUF) → {size}")),
                Err(e) => trace.failed("getsockopt(SO_RCVBUF)", e),
            }
        }
        // Linux reports twice what it granted (the other half is its bookkeeping).
        let granted = granted
            .ok()
            .map(|size| size / imp::RECEIVE_BUFFER_REPORT_FACTOR);
        // `[::ffff:0.0.0.0]` is the IPv4 wildcard, through an IPv6 socket.
        let wildcard = addr.ip().to_canonical().is_unspecified();
        let pktinfo = wildcard && imp::enable_pktinfo(&socket, addr, options.v6only, &trace)?;
        imp::receive_only_joined_groups(&socket, addr, options.v6only, &trace);
        imp::count_kernel_drops(&socket, &trace);
        let group_bind = match addr.ip().to_canonical() {
            IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
            IpAddr::V6(v6) => v6.is_multicast(),
        };
        let multicast_bind = addr.ip().to_canonical().is_multicast();
        let local = socket.local_addr();
        match &local {
            Ok(local) => trace.call(format_args!("getsockname() → {local}")),
            Err(e) => trace.failed("getsockname()", e),
        }
        Ok(ServerSocket {
            socket,
            pktinfo,
            group_bind: group_bind.then_some(multicast_bind),
            trace,
            local: local?,
            recv_buffer: RecvBuffer { asked, granted },
        })
    }

    /// Joins multicast `group` on the interface `ifindex` (`IP_ADD_MEMBERSHIP`,
    /// `IPV6_ADD_MEMBERSHIP`).
    pub fn join(&self, group: IpAddr, ifindex: u32) -> io::Result<()> {
        imp::join(&self.socket, group, ifindex, &self.trace)
    }

    /// The receive buffer asked for and granted.
    pub fn recv_buffer(&self) -> RecvBuffer {
        self.recv_buffer
    }

    /// Datagrams the kernel dropped for this socket (its receive buffer full), read at the
    /// end: the count the last datagram received through `batch` carried (`SO_RXQ_OVFL`), or
    /// the socket's row of `/proc/net/udp` if it says more. A datagram carries the count as it
    /// was when the datagram was queued, so drops after the last one queued (a flood that ends
    /// while the buffer is full) and datagrams taken one at a time (`recvfrom`, which reads no
    /// control message) show only in the latter. 0 where the system tells neither.
    pub fn kernel_dropped(&self, batch: &Batch) -> u64 {
        let carried = u64::from(batch.headers.dropped());
        // A file read, not a call on the socket: logged, not traced.
        let listed = imp::listed_drops(&self.socket);
        match &listed {
            Ok(Some(drops)) => {
                log::debug!("the kernel dropped {drops} datagrams of {}", self.local)
            }
            Ok(None) => {}
            Err(e) => log::debug!("cannot read the kernel's drops in /proc/net/udp: {e}"),
        }
        carried.max(listed.ok().flatten().unwrap_or(0))
    }

    /// The headers for [`recv_batch`](Self::recv_batch) and [`send_batch`](Self::send_batch).
    pub fn batch(&self) -> io::Result<Batch> {
        let v6 = self.local_addr()?.is_ipv6();
        Ok(Batch {
            headers: imp::Batch::new(self.pktinfo, v6),
            single: None,
        })
    }

    /// The address really bound (read when the socket was set up: no system call).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// Where a waiting receive cannot be ended by a [`Waker`], bounds every later receive's
    /// wait to `poll`, so that the loop sees a stop request in time (set once: it is a system
    /// call). On Linux it does nothing: a receive waits without a timeout, and the
    /// [`Waker`] ends the wait. A timeout arms a kernel timer each time a receive waits, which
    /// ping-pong (one request at a time: every receive waits) pays on every exchange.
    pub fn limit_waits(&self, poll: Duration) -> io::Result<()> {
        if cfg!(target_os = "linux") {
            return Ok(());
        }
        let set = self.socket.set_read_timeout(Some(poll));
        self.trace.done(
            format_args!(
                "setsockopt(SO_RCVTIMEO, {})",
                humantime::format_duration(poll)
            ),
            &set,
        );
        set
    }

    /// A handle that ends this socket's waits from another thread, for good.
    pub fn waker(&self) -> io::Result<Waker> {
        Ok(Waker {
            socket: self.socket.try_clone()?,
            trace: self.trace.clone(),
        })
    }

    /// Receives exactly one datagram into `buf`; another one queued stays in the socket.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let mut meta = if self.pktinfo {
            let meta = imp::recv_with_local(&self.socket, buf);
            self.trace_recv(imp::RECV_WITH_LOCAL, &meta);
            meta?
        } else {
            self.recv_from(buf)?
        };
        if let Some(multicast) = self.group_bind {
            meta.group = true;
            meta.multicast = multicast;
        }
        Ok(meta)
    }

    /// One `recvfrom`. A receive that brings no sender address (a socket the [`Waker`] shut
    /// returns 0 bytes from no one) gives `peer: None`, not an error, as the system said it.
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let meta = imp::recv_from(&self.socket, buf).map(|(len, peer)| RecvMeta {
            len,
            peer,
            ..RecvMeta::EMPTY
        });
        self.trace_recv("recvfrom(…)", &meta);
        meta
    }

    /// Traces a receive of one datagram.
    #[inline]
    fn trace_recv(&self, call: &'static str, meta: &io::Result<RecvMeta>) {
        if self.trace.is_on() {
            match meta {
                Ok(meta) => self.trace.call(format_args!(
                    "{call} → {} bytes from {}{}",
                    meta.len,
                    Shown(meta.peer),
                    To(meta.local)
                )),
                Err(e) => self.trace.failed(call, e),
            }
        }
    }

    /// Receives up to `metas.len()` datagrams (at most [`BATCH`]), the `i`th into the `i`th
    /// [`RECV_BUFFER`]-byte slot of `bufs`, waiting only for the first; returns how many.
    ///
    /// When a batched receive brings a single datagram, the load is one request at a time
    /// (ping-pong), where `recvmmsg` only costs more than `recvfrom` (it copies a header per
    /// slot and tries a second datagram before it returns): the next receives take one
    /// datagram with `recvfrom`, and every [`SINGLE_RUN`]th is batched again to notice a
    /// backlog, which brings back batches as soon as one forms. On wildcard binds (which need
    /// the packet-info control message) every receive is batched.
    pub fn recv_batch(
        &self,
        batch: &mut Batch,
        bufs: &mut [u8],
        metas: &mut [RecvMeta],
    ) -> io::Result<usize> {
        if let Some(left) = batch.single
            && left > 0
            && !self.pktinfo
            && let (Some(buf), Some(meta)) = (bufs.get_mut(..RECV_BUFFER), metas.first_mut())
        {
            batch.single = Some(left - 1);
            *meta = RecvMeta {
                group: self.group_bind.is_some(),
                multicast: self.group_bind == Some(true),
                ..self.recv_from(buf)?
            };
            return Ok(1);
        }
        let received = imp::recv_batch(&self.socket, &mut batch.headers, bufs, metas);
        if self.trace.is_on() {
            match &received {
                Ok(n) => self.trace.call(format_args!(
                    "{} → {}",
                    imp::RECV_BATCH,
                    Received(&metas[..*n])
                )),
                Err(e) => self.trace.failed(imp::RECV_BATCH, e),
            }
        }
        let n = received?;
        batch.single = (n == 1 && BATCH > 1).then_some(SINGLE_RUN - 1);
        if let Some(multicast) = self.group_bind {
            for meta in &mut metas[..n] {
                meta.group = true;
                meta.multicast = multicast;
            }
        }
        Ok(n)
    }

    /// Sends every answer in `out`, batched where the platform can; an answer the system
    /// refuses is reported to `failed` with its index in `out`, and the rest still go.
    pub fn send_batch(
        &self,
        batch: &mut Batch,
        out: &[Outgoing<'_>],
        failed: &mut dyn FnMut(usize, io::Error),
    ) {
        // One answer from a socket that needs no control message: `sendto` costs less than
        // a `sendmmsg` of one.
        if let [one] = out
            && (!self.pktinfo || one.local.is_none() && one.ifindex == 0)
        {
            loop {
                let made = self.trace.clock();
                let sent = imp::send_to(&self.socket, one.datagram, one.peer);
                self.trace.sent(
                    made,
                    format_args!("sendto(…, {} bytes, {})", one.datagram.len(), one.peer),
                    &sent,
                );
                match sent {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break failed(0, e),
                    Ok(_) => break,
                }
            }
            return;
        }
        imp::send_batch(&self.socket, &mut batch.headers, out, failed, &self.trace);
    }
}

impl Drop for ServerSocket {
    /// The descriptor is closed right after this, when the standard library's socket drops.
    fn drop(&mut self) {
        self.trace.call(format_args!("close()"));
    }
}

/// Opens a UDP socket of `addr`'s family and binds it to `addr` (with `IPV6_V6ONLY` set as
/// `v6only` says on IPv6, and `SO_REUSEPORT` first when `reuse_port`), each call traced; returns
/// it with its trace (named `w{worker}` with several workers).
fn open(
    addr: SocketAddr,
    worker: Option<usize>,
    v6only: bool,
    reuse_port: bool,
    trace: &SocketTrace,
) -> io::Result<(UdpSocket, SocketTrace)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP));
    if let Err(e) = &socket {
        trace.call(format_args!(
            "socket({}, SOCK_DGRAM) → {}",
            family(addr),
            errno(e)
        ));
    }
    let socket = socket?;
    let fd = imp::fd(&socket);
    let trace = trace.socket(worker, fd);
    trace.call(format_args!(
        "socket({}, SOCK_DGRAM) → fd {fd}",
        family(addr)
    ));
    if addr.is_ipv6() {
        let only = socket.set_only_v6(v6only);
        trace.done(
            format_args!("setsockopt(IPV6_V6ONLY, {})", u8::from(v6only)),
            &only,
        );
        only?;
    }
    if reuse_port {
        let reuse = imp::set_reuse_port(SockRef::from(&socket));
        trace.done(format_args!("setsockopt(SO_REUSEPORT, 1)"), &reuse);
        reuse?;
    }
    let bound = socket.bind(&addr.into());
    trace.done(format_args!("bind({addr})"), &bound);
    bound?;
    Ok((socket.into(), trace))
}

/// An address as a trace shows it (`?` when the system gave none).
struct Shown(Option<SocketAddr>);

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("?"),
        }
    }
}

/// The local address a datagram came to, when the socket reports it.
struct To(Option<IpAddr>);

impl std::fmt::Display for To {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => write!(f, " to {ip}"),
            None => Ok(()),
        }
    }
}

/// A batch received: `3 datagrams (14, 14, 14 bytes) from 127.0.0.1:54321`.
struct Received<'a>(&'a [RecvMeta]);

impl std::fmt::Display for Received<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let metas = self.0;
        let plural = if metas.len() == 1 { "" } else { "s" };
        write!(f, "{} datagram{plural} (", metas.len())?;
        for (i, meta) in metas.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}", meta.len)?;
        }
        f.write_str(" bytes)")?;
        match metas.first() {
            Some(first) if metas.iter().all(|m| m.peer == first.peer) => {
                write!(f, " from {}{}", Shown(first.peer), To(first.local))
            }
            Some(_) => f.write_str(" from several peers"),
            None => Ok(()),
        }
    }
}

/// The `drops` column (the last) of the row of `/proc/net/udp`'s `text` whose `inode` column
/// (the tenth) is `inode`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn drops_of(text: &str, inode: &str) -> Option<u64> {
    text.lines().skip(1).find_map(|row| {
        let columns: Vec<&str> = row.split_whitespace().collect();
        (columns.get(9) == Some(&inode))
            .then(|| columns.last()?.parse().ok())
            .flatten()
    })
}

/// The slots of a batch's receive buffer.
fn slots(bufs: &mut [u8]) -> std::slice::ChunksExactMut<'_, u8> {
    bufs.chunks_exact_mut(RECV_BUFFER)
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::cmsg_space;
    use nix::errno::Errno;
    use nix::sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg,
        recvmsg, sendmmsg, setsockopt, sockopt,
    };
    use socket2::{SockRef, Socket};

    use super::{BATCH, Outgoing, RECV_BUFFER, RecvMeta, slots};
    use crate::trace::SocketTrace;

    /// The call [`recv_with_local`] makes, as a trace names it.
    pub const RECV_WITH_LOCAL: &str = "recvmsg(…)";

    /// The call [`recv_batch`] makes, as a trace names it.
    pub const RECV_BATCH: &str = "recvmmsg(…)";

    /// The socket's descriptor, as traces name it.
    pub fn fd(socket: &Socket) -> i32 {
        socket.as_raw_fd()
    }

    /// The headers of `recvmmsg` and `sendmmsg`, allocated once per socket.
    pub struct Batch {
        recv: MultiHeaders<SockaddrStorage>,
        send: MultiHeaders<SockaddrStorage>,
        pktinfo: bool,
        v6: bool,
        /// The kernel's count of datagrams dropped for a full receive buffer, as the last
        /// datagram that carried it said (`SO_RXQ_OVFL`).
        dropped: u32,
    }

    impl Batch {
        pub fn dropped(&self) -> u32 {
            self.dropped
        }

        pub fn new(pktinfo: bool, v6: bool) -> Batch {
            Batch {
                dropped: 0,
                recv: recv_headers(pktinfo),
                // The send headers' control space is exactly one packet-info message of the
                // socket's family: the kernel reads all of `msg_controllen`, so it must hold
                // nothing else.
                send: MultiHeaders::preallocate(
                    BATCH,
                    match (pktinfo, v6) {
                        (false, _) => None,
                        (true, false) => Some(cmsg_space!(libc::in_pktinfo)),
                        (true, true) => Some(cmsg_space!(libc::in6_pktinfo)),
                    },
                ),
                pktinfo,
                v6,
            }
        }
    }

    /// The receive headers' control space: on a wildcard socket, the packet info of either
    /// family (a dual-stack socket gets both for an IPv4 datagram) and the drop count; on
    /// others, the drop count, which the kernel adds only once it has dropped something.
    fn recv_headers(pktinfo: bool) -> MultiHeaders<SockaddrStorage> {
        MultiHeaders::preallocate(
            BATCH,
            Some(if pktinfo {
                cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo, u32)
            } else {
                cmsg_space!(u32)
            }),
        )
    }

    pub fn set_reuse_port(socket: SockRef<'_>) -> io::Result<()> {
        socket.set_reuse_port(true)
    }

    pub fn interface_index(name: &str) -> io::Result<u32> {
        nix::net::if_::if_nametoindex(name).map_err(io::Error::from)
    }

    /// Whether [`grow_receive_buffer`] makes a system call.
    pub const GROWS_RECEIVE_BUFFER: bool = true;

    /// Linux reports (`getsockopt(SO_RCVBUF)`) twice the size it granted.
    pub const RECEIVE_BUFFER_REPORT_FACTOR: usize = 2;

    pub fn grow_receive_buffer(socket: &UdpSocket, bytes: usize) -> io::Result<()> {
        SockRef::from(socket).set_recv_buffer_size(bytes)
    }

    pub fn receive_buffer(socket: &UdpSocket) -> io::Result<usize> {
        SockRef::from(socket).recv_buffer_size()
    }

    pub fn enable_pktinfo(
        socket: &UdpSocket,
        addr: SocketAddr,
        v6only: bool,
        trace: &SocketTrace,
    ) -> io::Result<bool> {
        if addr.is_ipv6() {
            let set =
                setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true).map_err(io::Error::from);
            trace.done(format_args!("setsockopt(IPV6_RECVPKTINFO, 1)"), &set);
            set?;
            if v6only {
                return Ok(true);
            }
        }
        // On a dual-stack socket IPV6_RECVPKTINFO reports an IPv4 datagram's header
        // destination only (a broadcast address is no source for the answer); IP_PKTINFO adds
        // `ipi_spec_dst`, the receiving interface's own address.
        let set = setsockopt(socket, sockopt::Ipv4PacketInfo, &true).map_err(io::Error::from);
        trace.done(format_args!("setsockopt(IP_PKTINFO, 1)"), &set);
        set?;
        Ok(true)
    }

    /// Turns `IP_MULTICAST_ALL` (and `IPV6_MULTICAST_ALL`, Linux 4.20+) off, so that the
    /// socket gets the datagrams of the multicast groups it joined, not those every other
    /// socket of the host joined. A kernel without the option keeps its default (traced).
    pub fn receive_only_joined_groups(
        socket: &UdpSocket,
        addr: SocketAddr,
        v6only: bool,
        trace: &SocketTrace,
    ) {
        let socket = SockRef::from(socket);
        if addr.is_ipv4() || !v6only {
            let set = socket.set_multicast_all_v4(false);
            trace.done(format_args!("setsockopt(IP_MULTICAST_ALL, 0)"), &set);
            if let Err(e) = set {
                log::debug!("IP_MULTICAST_ALL stays on: {e}");
            }
        }
        if addr.is_ipv6() {
            let set = socket.set_multicast_all_v6(false);
            trace.done(format_args!("setsockopt(IPV6_MULTICAST_ALL, 0)"), &set);
            if let Err(e) = set {
                log::debug!("IPV6_MULTICAST_ALL stays on (a kernel before 4.20): {e}");
            }
        }
    }

    /// Joins `group` on the interface `ifindex`.
    pub fn join(
        socket: &UdpSocket,
        group: IpAddr,
        ifindex: u32,
        trace: &SocketTrace,
    ) -> io::Result<()> {
        let socket = SockRef::from(socket);
        match group {
            IpAddr::V4(group) => {
                let set = socket
                    .join_multicast_v4_n(&group, &socket2::InterfaceIndexOrAddress::Index(ifindex));
                trace.done(
                    format_args!("setsockopt(IP_ADD_MEMBERSHIP, {group}, ifindex {ifindex})"),
                    &set,
                );
                set
            }
            IpAddr::V6(group) => {
                let set = socket.join_multicast_v6(&group, ifindex);
                trace.done(
                    format_args!("setsockopt(IPV6_ADD_MEMBERSHIP, {group}, ifindex {ifindex})"),
                    &set,
                );
                set
            }
        }
    }

    /// The `drops` column of the socket's row in `/proc/net/udp` or `/proc/net/udp6` (found
    /// by the socket's inode, `/proc/self/fd/N` → `socket:[INODE]`): the kernel's count of
    /// datagrams dropped for this socket, the one `SO_RXQ_OVFL` reports.
    pub fn listed_drops(socket: &UdpSocket) -> io::Result<Option<u64>> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", socket.as_raw_fd()))?;
        let link = link.to_string_lossy();
        let Some(inode) = link
            .strip_prefix("socket:[")
            .and_then(|rest| rest.strip_suffix(']'))
        else {
            return Ok(None);
        };
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            let text = std::fs::read_to_string(table)?;
            if let Some(drops) = super::drops_of(&text, inode) {
                return Ok(Some(drops));
            }
        }
        Ok(None)
    }

    /// Asks for the count of datagrams dropped for a full receive buffer with each datagram
    /// received after a drop (`SO_RXQ_OVFL`). Without a drop the kernel adds nothing, so this
    /// costs nothing in steady state.
    pub fn count_kernel_drops(socket: &UdpSocket, trace: &SocketTrace) {
        let set = setsockopt(socket, sockopt::RxqOvfl, &1).map_err(io::Error::from);
        trace.done(format_args!("setsockopt(SO_RXQ_OVFL, 1)"), &set);
        if let Err(e) = set {
            log::debug!("the kernel's drops will not be counted: {e}");
        }
    }

    /// One `recvfrom`, with the sender when the system gave one: a socket the
    /// [`Waker`](super::Waker) shut returns 0 bytes from no one, which std's `recv_from` cannot
    /// express (it panicked on the empty address in release builds).
    ///
    /// Through rustix, which makes the system call itself: glibc's `recvfrom` is a
    /// cancellation point, which in a program with threads (the writer, the watch) costs two
    /// more calls around every receive, and this is the one-request-at-a-time path.
    pub fn recv_from(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<SocketAddr>)> {
        let (_, len, peer) = rustix::net::recvfrom(socket, buf, rustix::net::RecvFlags::empty())?;
        Ok((len, peer.and_then(|peer| SocketAddr::try_from(peer).ok())))
    }

    /// One `sendto`, through rustix for the reason [`recv_from`] gives.
    pub fn send_to(socket: &UdpSocket, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
        Ok(rustix::net::sendto(
            socket,
            datagram,
            rustix::net::SendFlags::empty(),
            &peer,
        )?)
    }

    pub fn recv_with_local(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let mut control = cmsg_space!(libc::in6_pktinfo, libc::in_pktinfo, u32);
        let mut iov = [IoSliceMut::new(buf)];
        let message = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::empty(),
        )?;
        let mut meta = RecvMeta {
            len: message.bytes,
            peer: message.address.as_ref().and_then(to_socket_addr),
            ..RecvMeta::EMPTY
        };
        if let Ok(cmsgs) = message.cmsgs() {
            for cmsg in cmsgs {
                read_pktinfo(&cmsg, &mut meta);
            }
        }
        Ok(meta)
    }

    pub fn recv_batch(
        socket: &UdpSocket,
        batch: &mut Batch,
        bufs: &mut [u8],
        metas: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let bufs_len = bufs.len();
        let mut slots = slots(bufs);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(slots.next().unwrap_or_default())]);
        let count = metas.len().min(BATCH).min(bufs_len / RECV_BUFFER);
        let mut lost_control = false;
        let mut dropped = batch.dropped;
        let mut n = 0;
        {
            let results = recvmmsg(
                socket.as_raw_fd(),
                &mut batch.recv,
                iovs[..count].iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            )?;
            for (message, meta) in results.zip(metas.iter_mut()) {
                *meta = RecvMeta {
                    len: message.bytes,
                    peer: message.address.as_ref().and_then(to_socket_addr),
                    ..RecvMeta::EMPTY
                };
                match message.cmsgs() {
                    Ok(cmsgs) => {
                        for cmsg in cmsgs {
                            if let ControlMessageOwned::RxqOvfl(count) = cmsg {
                                dropped = dropped.max(count);
                            } else {
                                read_pktinfo(&cmsg, meta);
                            }
                        }
                    }
                    Err(_) => lost_control = true,
                }
                lost_control |= message.flags.contains(MsgFlags::MSG_CTRUNC)
                    || batch.pktinfo && meta.local.is_none();
                n += 1;
            }
        }
        batch.dropped = dropped;
        // nix leaves each header's `msg_controllen` as the kernel set it (the length of the
        // last message's control data), so a datagram with less control data (none, or an
        // IPv6 datagram's one packet info on a dual-stack socket) shrinks its slot's control
        // space, and a later one's is cut (MSG_CTRUNC). Fresh headers restore it. In steady
        // state of one family this does not happen: every datagram of a wildcard socket
        // carries the same packet info, and after the kernel's first drop every datagram
        // carries the drop count. A dual-stack wildcard socket serving IPv4 and IPv6 peers at
        // once does remake them whenever an IPv4 datagram (72 bytes of control data: its
        // IPv6 and IPv4 packet info) lands in a slot an IPv6 one (40) used: up to three
        // allocations per batch (tests/allocations.rs shows the figure). No set of socket
        // options evens the two sizes out; the real fix is for nix's `recvmmsg` to reset
        // `msg_controllen` before each call, as its `recvmsg` does.
        if lost_control {
            batch.recv = recv_headers(batch.pktinfo);
        }
        Ok(n)
    }

    /// Reads the local address from a packet-info control message.
    fn read_pktinfo(cmsg: &ControlMessageOwned, meta: &mut RecvMeta) {
        match cmsg {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                let spec_dst = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                let header_dst = Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr));
                // For a unicast datagram the two are the same; for a broadcast or multicast
                // one, `ipi_addr` is the group's address and `ipi_spec_dst` this host's
                // address on that network, the one to answer from.
                meta.group = header_dst != spec_dst
                    || header_dst.is_broadcast()
                    || header_dst.is_multicast();
                meta.multicast = header_dst.is_multicast();
                meta.local = Some(IpAddr::V4(spec_dst));
                meta.ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0);
            }
            // On a dual-stack socket an IPv4 datagram brings this one first, then the IPv4
            // one above, which has the last word.
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                let dst = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                meta.group = match dst.to_ipv4_mapped() {
                    Some(v4) => v4.is_broadcast() || v4.is_multicast(),
                    None => dst.is_multicast(),
                };
                meta.multicast = dst.to_canonical().is_multicast();
                meta.ifindex = info.ipi6_ifindex;
                // A group address cannot be a source: an unspecified one lets the kernel
                // choose.
                meta.local = Some(IpAddr::V6(if meta.group {
                    Ipv6Addr::UNSPECIFIED
                } else {
                    dst
                }));
            }
            _ => {}
        }
    }

    pub fn send_batch(
        socket: &UdpSocket,
        batch: &mut Batch,
        out: &[Outgoing<'_>],
        failed: &mut dyn FnMut(usize, io::Error),
        trace: &SocketTrace,
    ) {
        let mut start = 0;
        while start < out.len() {
            // One sendmmsg shares its control message among all its datagrams, so a run of
            // answers from the same local address goes in one call (on a socket bound to one
            // address, all of them; on a wildcard one, nearly always all of them too).
            let key = |o: &Outgoing<'_>| (o.local, o.ifindex, is_mapped(o.peer));
            let first = key(&out[start]);
            let (local, ifindex, _) = first;
            let mut end = start + 1;
            while end < out.len()
                && end - start < BATCH
                && (!batch.pktinfo || key(&out[end]) == first)
            {
                end += 1;
            }
            let mut next = start;
            while next < end {
                let made = trace.clock();
                let sent = send_run(socket, batch, &out[next..end], local, ifindex);
                if trace.is_on() {
                    trace.sent_batch(made, end - next, &sent.map_err(io::Error::from));
                }
                match sent {
                    // The kernel stops at the first datagram it cannot send and says how many
                    // went: the next call starts with that one and reports its error.
                    Ok(sent) if sent > 0 => next += sent,
                    Ok(_) => {
                        failed(next, io::Error::other("the system sent nothing"));
                        next += 1;
                    }
                    Err(Errno::EINTR) => {}
                    Err(e) => {
                        failed(next, io::Error::from(e));
                        next += 1;
                    }
                }
            }
            start = end;
        }
    }

    /// Whether `peer` is an IPv4 peer of a dual-stack socket.
    fn is_mapped(peer: SocketAddr) -> bool {
        matches!(peer, SocketAddr::V6(v6) if v6.ip().to_ipv4_mapped().is_some())
    }

    /// Sends `run` (at most [`BATCH`] answers, all from `local` on `ifindex`, all to IPv4 or
    /// all to IPv6 peers) with one `sendmmsg`.
    fn send_run(
        socket: &UdpSocket,
        batch: &mut Batch,
        run: &[Outgoing<'_>],
        local: Option<IpAddr>,
        ifindex: u32,
    ) -> Result<usize, Errno> {
        let iovs: [[IoSlice<'_>; 1]; BATCH] =
            std::array::from_fn(|i| [IoSlice::new(run.get(i).map_or(&[][..], |o| o.datagram))]);
        let addrs: [Option<SockaddrStorage>; BATCH] =
            std::array::from_fn(|i| run.get(i).map(|o| SockaddrStorage::from(o.peer)));
        let count = run.len().min(BATCH);
        let mut send = |cmsg: &[ControlMessage<'_>]| {
            sendmmsg(
                socket.as_raw_fd(),
                &mut batch.send,
                &iovs[..count],
                &addrs[..count],
                cmsg,
                MsgFlags::empty(),
            )
            .map(|sent| sent.count())
        };
        if !batch.pktinfo {
            return send(&[]);
        }
        // An unspecified source (no packet info received) lets the kernel choose, as a plain
        // send would.
        // (To an IPv4 peer of a dual-stack socket the kernel takes only a mapped source.)
        if batch.v6 {
            let v6 = match local {
                Some(IpAddr::V6(v6)) => v6,
                Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
                None if run.first().is_some_and(|o| is_mapped(o.peer)) => {
                    Ipv4Addr::UNSPECIFIED.to_ipv6_mapped()
                }
                None => Ipv6Addr::UNSPECIFIED,
            };
            // A group datagram's answer goes from the unspecified address (the kernel picks
            // the interface's own) out of the interface the datagram came in on.
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: v6.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            send(&[ControlMessage::Ipv6PacketInfo(&info)])
        } else {
            let v4 = match local {
                Some(IpAddr::V4(v4)) => v4,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(v4).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            send(&[ControlMessage::Ipv4PacketInfo(&info)])
        }
    }

    /// The sender, whole: a link-local IPv6 peer keeps its scope id (the interface it is on),
    /// without which no answer can reach it (`EINVAL`).
    pub(super) fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::from((v4.ip(), v4.port())));
        }
        addr.as_sockaddr_in6().map(|v6| {
            SocketAddr::V6(std::net::SocketAddrV6::new(
                v6.ip(),
                v6.port(),
                v6.flowinfo(),
                v6.scope_id(),
            ))
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::net::{SocketAddr, UdpSocket};

    use socket2::{SockRef, Socket};

    use super::{Outgoing, RecvMeta, slots};
    use crate::trace::SocketTrace;

    /// The call [`recv_with_local`] makes, as a trace names it.
    pub const RECV_WITH_LOCAL: &str = "recvfrom(…)";

    /// The call [`recv_batch`] makes, as a trace names it.
    pub const RECV_BATCH: &str = "recvfrom(…)";

    /// The socket's descriptor, as traces name it.
    #[cfg(unix)]
    pub fn fd(socket: &Socket) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(socket)
    }

    /// The socket's handle, as traces name it.
    #[cfg(windows)]
    pub fn fd(socket: &Socket) -> u64 {
        std::os::windows::io::AsRawSocket::as_raw_socket(socket)
    }

    /// Not told here.
    pub fn listed_drops(_: &UdpSocket) -> io::Result<Option<u64>> {
        Ok(None)
    }

    /// No batch state: one datagram at a time.
    pub struct Batch;

    impl Batch {
        pub fn new(_: bool, _: bool) -> Batch {
            Batch
        }

        /// Not told here.
        pub fn dropped(&self) -> u32 {
            0
        }
    }

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "several workers on one address need Linux's SO_REUSEPORT",
        )
    }

    pub fn set_reuse_port(_: SockRef<'_>) -> io::Result<()> {
        Err(unsupported())
    }

    pub fn interface_index(name: &str) -> io::Result<u32> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("interfaces by name ({name}) need Linux here; give its index instead"),
        ))
    }

    /// Whether [`grow_receive_buffer`] makes a system call.
    pub const GROWS_RECEIVE_BUFFER: bool = false;

    /// What the system reports is what it granted.
    pub const RECEIVE_BUFFER_REPORT_FACTOR: usize = 1;

    /// The system's default size serves.
    pub fn grow_receive_buffer(_: &UdpSocket, _: usize) -> io::Result<()> {
        Ok(())
    }

    pub fn receive_buffer(socket: &UdpSocket) -> io::Result<usize> {
        SockRef::from(socket).recv_buffer_size()
    }

    pub fn enable_pktinfo(
        _: &UdpSocket,
        _: SocketAddr,
        _: bool,
        _: &SocketTrace,
    ) -> io::Result<bool> {
        Ok(false)
    }

    pub fn receive_only_joined_groups(_: &UdpSocket, _: SocketAddr, _: bool, _: &SocketTrace) {}

    pub fn join(
        socket: &UdpSocket,
        group: std::net::IpAddr,
        ifindex: u32,
        trace: &SocketTrace,
    ) -> io::Result<()> {
        let socket = SockRef::from(socket);
        let set = match group {
            std::net::IpAddr::V4(group) => {
                socket.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED)
            }
            std::net::IpAddr::V6(group) => socket.join_multicast_v6(&group, ifindex),
        };
        trace.done(format_args!("join {group} on {ifindex}"), &set);
        set
    }

    pub fn count_kernel_drops(_: &UdpSocket, _: &SocketTrace) {}

    /// One `recvfrom`.
    pub fn recv_from(
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, Option<SocketAddr>)> {
        socket.recv_from(buf).map(|(len, peer)| (len, Some(peer)))
    }

    /// One `sendto`.
    pub fn send_to(socket: &UdpSocket, datagram: &[u8], peer: SocketAddr) -> io::Result<usize> {
        socket.send_to(datagram, peer)
    }

    pub fn recv_with_local(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (len, peer) = socket.recv_from(buf)?;
        Ok(RecvMeta {
            len,
            peer: Some(peer),
            ..RecvMeta::EMPTY
        })
    }

    pub fn recv_batch(
        socket: &UdpSocket,
        _: &mut Batch,
        bufs: &mut [u8],
        metas: &mut [RecvMeta],
    ) -> io::Result<usize> {
        let (Some(buf), Some(meta)) = (slots(bufs).next(), metas.first_mut()) else {
            return Ok(0);
        };
        *meta = recv_with_local(socket, buf)?;
        Ok(1)
    }

    pub fn send_batch(
        socket: &UdpSocket,
        _: &mut Batch,
        out: &[Outgoing<'_>],
        failed: &mut dyn FnMut(usize, io::Error),
        trace: &SocketTrace,
    ) {
        for (i, answer) in out.iter().enumerate() {
            let made = trace.clock();
            let sent = socket.send_to(answer.datagram, answer.peer);
            trace.sent(
                made,
                format_args!(
                    "sendto(…, {} bytes, {})",
                    answer.datagram.len(),
                    answer.peer
                ),
                &sent,
            );
            if let Err(e) = sent {
                failed(i, e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::{drops_of, earlier_answer_unreachable};

    /// A link-local sender keeps its scope id (and flow label) through the system's address
    /// and back: without it, the answer cannot be sent (EINVAL).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_link_local_peer_keeps_its_scope_id_both_ways() {
        use nix::sys::socket::SockaddrStorage;
        use std::net::{SocketAddr, SocketAddrV6};
        let peer = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 40_000, 5, 7));
        let storage = SockaddrStorage::from(peer);
        let sin6 = storage.as_sockaddr_in6().unwrap();
        assert_eq!((sin6.scope_id(), sin6.flowinfo()), (7, 5));
        assert_eq!(super::imp::to_socket_addr(&storage), Some(peer));
        assert_eq!(peer.to_string(), "[fe80::1%7]:40000");
    }

    #[test]
    fn the_drops_of_a_socket_are_read_from_its_row() {
        let text = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  383: 0100007F:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 198
  384: 0100007F:1B59 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4243 2 0000000000000000 0
";
        assert_eq!(drops_of(text, "4242"), Some(198));
        assert_eq!(drops_of(text, "4243"), Some(0));
        assert_eq!(drops_of(text, "999"), None);
        assert_eq!(drops_of("", "4242"), None);
    }

    #[test]
    fn a_reset_on_receive_is_an_earlier_answers_icmp_and_nothing_else_is() {
        // Windows: WSAECONNRESET (10054) on the receive after an answer drew port unreachable.
        assert!(earlier_answer_unreachable(&io::Error::from(
            io::ErrorKind::ConnectionReset
        )));
        assert!(earlier_answer_unreachable(&io::Error::from(
            io::ErrorKind::ConnectionRefused
        )));
        for other in [
            io::ErrorKind::WouldBlock,
            io::ErrorKind::TimedOut,
            io::ErrorKind::Interrupted,
            io::ErrorKind::NotConnected,
            io::ErrorKind::InvalidInput,
        ] {
            assert!(
                !earlier_answer_unreachable(&io::Error::from(other)),
                "{other:?}"
            );
        }
    }
}
