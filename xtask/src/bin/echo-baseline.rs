//! `echo-baseline`: the cap that `cargo xtask bench` measures udptalk against — the least a UDP
//! echo server can do, a `recv_from`/`send_to` loop over one buffer with `std::net`.
//!
//! `echo-baseline [--sockperf] ADDR` binds `ADDR` (port 0 for any free port), announces
//! `listening on udp ADDR` on stderr as `udptalk-server` does, and sends every datagram back to
//! its sender until it is killed (SIGTERM's default action ends it).
//!
//! With `--sockperf` it answers as `sockperf server` does, so that `sockperf ping-pong` accepts
//! its replies: a sockperf message starts with a 14-byte header (sequence number, 8 bytes; flags,
//! 2 bytes; length, 4 bytes; big-endian), and the server's answer is the same message with the
//! flags' client bit (0x0001) cleared. Datagrams shorter than the header are echoed as they are.

use std::net::UdpSocket;
use std::process::ExitCode;

/// The byte of a sockperf header that holds the low bits of its big-endian flags.
const SOCKPERF_FLAGS_LOW: usize = 9;

/// The length of a sockperf header: sequence number (8), flags (2), length (4).
const SOCKPERF_HEADER: usize = 14;

/// The flags' bit that marks a message sent by sockperf's client.
const SOCKPERF_CLIENT: u8 = 0x01;

/// One more than the largest UDP payload, so that no datagram is cut.
const BUFFER: usize = 65_536;

fn main() -> ExitCode {
    let mut sockperf = false;
    let mut addr = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--sockperf" => sockperf = true,
            _ if addr.is_none() && !arg.starts_with('-') => addr = Some(arg),
            _ => {
                eprintln!(
                    "echo-baseline: unexpected argument {arg:?}; usage: echo-baseline \
                     [--sockperf] ADDR (e.g. 127.0.0.1:0)"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(addr) = addr else {
        eprintln!("echo-baseline: no address; usage: echo-baseline [--sockperf] ADDR");
        return ExitCode::from(2);
    };
    match serve(&addr, sockperf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo-baseline: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Binds `addr` and echoes forever; returns only on an error.
fn serve(addr: &str, sockperf: bool) -> Result<(), String> {
    let socket = UdpSocket::bind(addr)
        .map_err(|e| format!("cannot bind {addr}: {e}; try another address or port 0"))?;
    let local = socket
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    eprintln!("listening on udp {local}");
    let mut buf = vec![0; BUFFER];
    loop {
        let (len, peer) = socket
            .recv_from(&mut buf)
            .map_err(|e| format!("receive failed: {e}"))?;
        if sockperf && len >= SOCKPERF_HEADER {
            buf[SOCKPERF_FLAGS_LOW] &= !SOCKPERF_CLIENT;
        }
        // A send that fails (the peer's port closed: ECONNREFUSED from an earlier ICMP error)
        // is the peer's business; an echo loop goes on.
        let _ = socket.send_to(&buf[..len], peer);
    }
}
