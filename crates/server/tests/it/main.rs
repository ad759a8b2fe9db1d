//! Server tests over real loopback sockets: the library driven in a thread, and the
//! `udptalk-server` binary spawned as a user runs it. Peers are plain `std::net::UdpSocket`s.
//! IPv6 is covered by the loopback matrix (`cargo xtask test`), whose table says `SKIP` with the
//! reason on a machine without `::1`.

mod binary;
mod capture;
mod dual_stack;
mod encoding;
mod library;
mod real_networks;
mod shell;
mod workers;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

/// A peer socket on loopback of `server`'s family, with a receive timeout so no test can hang.
fn peer_for(server: SocketAddr) -> Result<UdpSocket> {
    let local: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()?;
    let socket = UdpSocket::bind(local)?;
    socket.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(socket)
}

/// Sends `payload` to `server` and returns the answer.
fn ask(socket: &UdpSocket, server: SocketAddr, payload: &[u8]) -> Result<Vec<u8>> {
    socket.send_to(payload, server)?;
    let mut buf = vec![0; 65_536];
    let (len, from) = socket.recv_from(&mut buf)?;
    assert_eq!(from, server, "the answer comes from the address asked");
    buf.truncate(len);
    Ok(buf)
}
