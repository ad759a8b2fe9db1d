//! `--pcap FILE` and `--hexdump` on the spawned binary: the capture is read back
//! (`proto::capture::read_capture`) and compared with what the peer sent and got, frame by frame.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;

use proto::capture::{Captured, read_capture};

use crate::binary::{sigterm, spawn};
use crate::{Result, ask, peer_for};

/// A file in the tests' scratch folder, removed when the test ends, failed or not.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let unique = format!(
            "{name}-{}-{:?}.pcap",
            std::process::id(),
            std::thread::current().id()
        );
        Scratch(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(unique.replace(['(', ')'], "")))
    }

    fn arg(&self) -> Result<&str> {
        Ok(self.0.to_str().ok_or("a scratch path that is not UTF-8")?)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The frames a capture must hold for `exchanges` (request, answer) between `peer` and `server`
/// (seen from `local`, the address the peer sent to), in order.
fn expected(
    peer: SocketAddr,
    local: SocketAddr,
    exchanges: &[(&[u8], Vec<u8>)],
) -> Vec<(SocketAddr, SocketAddr, Vec<u8>, usize, bool)> {
    exchanges
        .iter()
        .flat_map(|(request, answer)| {
            [
                (peer, local, request.to_vec(), request.len(), true),
                (local, peer, answer.clone(), answer.len(), true),
            ]
        })
        .collect()
}

fn frames(captured: &[Captured]) -> Vec<(SocketAddr, SocketAddr, Vec<u8>, usize, bool)> {
    captured
        .iter()
        .map(|c| (c.src, c.dst, c.payload.clone(), c.len, c.valid))
        .collect()
}

/// Serves a few requests on `bind` with `--pcap`, stops the server with SIGTERM (or, `once`,
/// with `--once`), and checks the capture against what went over the wire.
fn capture_round(bind: &str, once: bool) -> Result {
    let file = Scratch::new("server");
    let mut args = vec!["--bind", bind, "--mode", "echo", "--buffer", "8", "--quiet"];
    args.extend(["--pcap", file.arg()?]);
    if once {
        args.push("--once");
    }
    let server = spawn(&args)?;
    let addr = server.addr;
    let peer = peer_for(addr)?;
    // The third is longer than --buffer: cut for the server's lines, captured whole.
    let requests: &[&[u8]] = if once {
        &[b"Hello Server!!"]
    } else {
        &[
            b"Hello Server!!",
            b"\x00\xff\x1b[2J",
            b"longer than the buffer of eight bytes",
        ]
    };
    let mut exchanges = Vec::new();
    for request in requests {
        exchanges.push((*request, ask(&peer, server.addr, request)?));
    }
    if !once {
        sigterm(server.child.id())?;
    }
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    let captured = read_capture(&std::fs::read(&file.0)?)?;
    assert_eq!(
        frames(&captured),
        expected(peer.local_addr()?, addr, &exchanges)
    );
    assert!(
        captured.windows(2).all(|pair| pair[0].at <= pair[1].at),
        "timestamps in order"
    );
    Ok(())
}

#[test]
fn a_capture_holds_every_datagram_with_addresses_ports_payloads_and_checksums() -> Result {
    capture_round("127.0.0.1:0", false)
}

#[test]
fn an_ipv6_capture_is_complete_after_once() -> Result {
    if UdpSocket::bind("[::1]:0").is_err() {
        println!("skipped: this machine has no ::1");
        return Ok(());
    }
    capture_round("[::1]:0", true)
}

/// On a wildcard bind, each frame has the address the peer really sent to (IP_PKTINFO).
#[cfg(target_os = "linux")]
#[test]
fn a_wildcard_server_captures_the_address_each_datagram_came_to() -> Result {
    let file = Scratch::new("wildcard");
    let server = spawn(&["--bind", "0.0.0.0:0", "--quiet", "--pcap", file.arg()?])?;
    let to = SocketAddr::from(([127, 0, 0, 2], server.addr.port()));
    let peer = peer_for(to)?;
    let answer = ask(&peer, to, b"to 127.0.0.2")?;
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    let captured = read_capture(&std::fs::read(&file.0)?)?;
    assert_eq!(
        frames(&captured),
        expected(peer.local_addr()?, to, &[(b"to 127.0.0.2", answer)])
    );
    Ok(())
}

#[test]
fn an_unwritable_capture_file_is_named_before_serving() -> Result {
    let output = Command::new(env!("CARGO_BIN_EXE_udptalk-server"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--pcap",
            "/nonexistent-udptalk-dir/x.pcap",
        ])
        .output()?;
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8(output.stderr)?;
    assert!(
        err.starts_with(
            "error: cannot write the capture file /nonexistent-udptalk-dir/x.pcap: No such file \
             or directory"
        ),
        "{err}"
    );
    assert!(err.contains("give another --pcap FILE"), "{err}");
    assert!(!err.contains("listening on"), "no announce line: {err}");
    Ok(())
}

#[test]
fn hexdump_shows_each_datagram_beside_the_tutorial_lines() -> Result {
    let server = spawn(&[
        "--bind",
        "127.0.0.1:0",
        "--mode",
        "hello",
        "--once",
        "--hexdump",
    ])?;
    let peer = peer_for(server.addr)?;
    assert_eq!(
        ask(&peer, server.addr, b"Hello Server!!\x00\x7f\xff and more")?,
        b"Hello Client!!"
    );
    let me = peer.local_addr()?;
    let (code, out, _) = server.finish()?;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "< 26 bytes from {me}\n\
             0000:   48 65 6c 6c 6f 20 53 65  72 76 65 72 21 21 00 7f   Hello Server!!..\n\
             0010:   ff 20 61 6e 64 20 6d 6f  72 65                     . and more\n\
             Message received from {me}.\n\
             The message is [ Hello Server!!\\x00\\x7f\\xff and more ].\n\
             > 14 bytes to {me}\n\
             0000:   48 65 6c 6c 6f 20 43 6c  69 65 6e 74 21 21         Hello Client!!\n"
        )
    );
    Ok(())
}
