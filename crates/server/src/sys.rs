//! The server's socket, with the platform-specific parts behind one small safe API.
//!
//! A server bound to a wildcard address (`0.0.0.0`, `[::]`) must answer *from* the address each
//! request was sent to: a client that sent to 127.0.0.2, or to a host's second address, has a
//! connected socket that drops an answer from any other address. On Linux, `IP_PKTINFO` /
//! `IPV6_RECVPKTINFO` tell each receive which local address the datagram came to, and the same
//! control message on the send chooses the source address. Elsewhere, and for sockets bound to
//! one address (where the question does not arise), plain `recv_from`/`send_to` serve.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

/// A received datagram: its length, sender, and the local address it was sent to (when the
/// socket is bound to a wildcard address and the platform tells).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// Bytes received.
    pub len: usize,
    /// The sender.
    pub peer: SocketAddr,
    /// The address the datagram was sent to, to answer from.
    pub local: Option<IpAddr>,
}

/// The server's UDP socket.
pub struct ServerSocket {
    socket: UdpSocket,
    /// Whether receives report, and sends set, the local address (wildcard binds on Linux).
    pktinfo: bool,
}

impl ServerSocket {
    /// Binds `addr`; for a wildcard address, asks for each datagram's local address.
    pub fn bind(addr: SocketAddr) -> io::Result<ServerSocket> {
        let socket = UdpSocket::bind(addr)?;
        let pktinfo = addr.ip().is_unspecified() && imp::enable_pktinfo(&socket, addr)?;
        Ok(ServerSocket { socket, pktinfo })
    }

    /// The address really bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Bounds the next receives' wait.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.socket.set_read_timeout(Some(timeout))
    }

    /// Receives one datagram into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<RecvMeta> {
        if self.pktinfo {
            return imp::recv_with_local(&self.socket, buf);
        }
        let (len, peer) = self.socket.recv_from(buf)?;
        Ok(RecvMeta {
            len,
            peer,
            local: None,
        })
    }

    /// Sends `datagram` to `peer`, from `local` when given (see [`RecvMeta::local`]).
    pub fn send(&self, datagram: &[u8], peer: SocketAddr, local: Option<IpAddr>) -> io::Result<()> {
        match local {
            Some(local) if self.pktinfo => imp::send_from(&self.socket, datagram, peer, local),
            _ => self.socket.send_to(datagram, peer).map(drop),
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
    use std::os::fd::AsRawFd;

    use nix::cmsg_space;
    use nix::sys::socket::{
        ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, sendmsg,
        setsockopt, sockopt,
    };

    use super::RecvMeta;

    pub fn enable_pktinfo(socket: &UdpSocket, addr: SocketAddr) -> io::Result<bool> {
        match addr {
            SocketAddr::V4(_) => setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?,
            // On a dual-stack socket this also reports IPv4 datagrams, as mapped addresses.
            SocketAddr::V6(_) => setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?,
        }
        Ok(true)
    }

    pub fn recv_with_local(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let mut control = cmsg_space!(libc::in6_pktinfo);
        let mut iov = [IoSliceMut::new(buf)];
        let message = recvmsg::<SockaddrStorage>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::empty(),
        )?;
        let peer = message
            .address
            .and_then(|addr| to_socket_addr(&addr))
            .ok_or_else(|| io::Error::other("a datagram arrived without a sender address"))?;
        let mut local = None;
        for cmsg in message.cmsgs()? {
            match cmsg {
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    local = Some(IpAddr::from(
                        u32::from_be(info.ipi_addr.s_addr).to_be_bytes(),
                    ));
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    local = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        Ok(RecvMeta {
            len: message.bytes,
            peer,
            local,
        })
    }

    pub fn send_from(
        socket: &UdpSocket,
        datagram: &[u8],
        peer: SocketAddr,
        local: IpAddr,
    ) -> io::Result<()> {
        let iov = [IoSlice::new(datagram)];
        let to = SockaddrStorage::from(peer);
        let sent = match local {
            IpAddr::V4(v4) => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(v4).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
                sendmsg(
                    socket.as_raw_fd(),
                    &iov,
                    &cmsg,
                    MsgFlags::empty(),
                    Some(&to),
                )
            }
            IpAddr::V6(v6) => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: v6.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                let cmsg = [ControlMessage::Ipv6PacketInfo(&info)];
                sendmsg(
                    socket.as_raw_fd(),
                    &iov,
                    &cmsg,
                    MsgFlags::empty(),
                    Some(&to),
                )
            }
        };
        sent.map(drop).map_err(io::Error::from)
    }

    fn to_socket_addr(addr: &SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::from((v4.ip(), v4.port())));
        }
        addr.as_sockaddr_in6()
            .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::io;
    use std::net::{IpAddr, SocketAddr, UdpSocket};

    use super::RecvMeta;

    pub fn enable_pktinfo(_: &UdpSocket, _: SocketAddr) -> io::Result<bool> {
        Ok(false)
    }

    pub fn recv_with_local(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<RecvMeta> {
        let (len, peer) = socket.recv_from(buf)?;
        Ok(RecvMeta {
            len,
            peer,
            local: None,
        })
    }

    pub fn send_from(
        socket: &UdpSocket,
        datagram: &[u8],
        peer: SocketAddr,
        _: IpAddr,
    ) -> io::Result<()> {
        socket.send_to(datagram, peer).map(drop)
    }
}
