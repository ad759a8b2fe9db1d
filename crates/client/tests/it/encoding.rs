//! Encoding help: Shift_JIS input named once, with what to do; a cut reply told in bytes and
//! characters.

use std::net::{SocketAddr, UdpSocket};

use crate::{Result, client, peer, text};

/// `こんにちは` in Shift_JIS (code page 932): what a Japanese Windows console's pipe gives.
const SJIS_KONNICHIWA: &[u8] = b"\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd";

/// The hint's words, as far as they do not depend on which message it was.
const HINT: &str = "is not UTF-8; it reads as Shift_JIS (「こんにちは」)";

/// A plain peer answering each datagram with itself.
fn echo_plain(s: &UdpSocket, from: SocketAddr, got: &[u8]) -> std::io::Result<()> {
    s.send_to(got, from).map(drop)
}

#[test]
fn shift_jis_lines_are_named_once_and_sent_unchanged() -> Result {
    let peer = peer("127.0.0.1", echo_plain)?;
    let mut input = Vec::new();
    for _ in 0..3 {
        input.extend_from_slice(SJIS_KONNICHIWA);
        input.push(b'\n');
    }
    input.extend_from_slice("ascii and こんにちは\n".as_bytes());
    let out = client(&["--server", &peer.addr.to_string()], Some(&input))?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // Three lines and three echoes in Shift_JIS: one warning, about the first line.
    assert_eq!(err.matches(HINT).count(), 1, "{err}");
    assert!(err.contains("warning: input line 1 is not UTF-8"), "{err}");
    assert!(err.contains("chcp 65001"), "{err}");
    assert!(err.contains("it is sent unchanged"), "{err}");
    let received = peer.received()?;
    assert_eq!(received.len(), 4);
    assert!(received[..3].iter().all(|d| d == SJIS_KONNICHIWA));
    Ok(())
}

#[test]
fn a_shift_jis_reply_is_named_once() -> Result {
    let peer = peer("127.0.0.1", |s, from, _| {
        s.send_to(SJIS_KONNICHIWA, from).map(drop)
    })?;
    let server = peer.addr.to_string();
    let out = client(&["--server", &server, "one", "two"], None)?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches(HINT).count(), 1, "{err}");
    assert!(err.contains("warning: the reply is not UTF-8"), "{err}");
    // The reply itself is still shown as received, its bytes escaped.
    assert!(
        text(&out.stdout).contains("Server message: \\x82\\xb1\\x82\\xf1"),
        "{}",
        text(&out.stdout)
    );
    peer.received()?;
    Ok(())
}

#[test]
fn utf8_and_ascii_are_never_named() -> Result {
    let peer = peer("127.0.0.1", echo_plain)?;
    let out = client(
        &["--server", &peer.addr.to_string()],
        Some("こんにちは\nHello Server!!\n\u{3000}世界\n".as_bytes()),
    )?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("not UTF-8"), "{err}");
    peer.received()?;
    Ok(())
}

#[test]
fn a_reply_cut_inside_a_character_is_told_in_bytes_and_characters() -> Result {
    let peer = peer("127.0.0.1", |s, from, _| {
        s.send_to("こんにちは".as_bytes(), from).map(drop)
    })?;
    let out = client(
        &["--server", &peer.addr.to_string(), "--buffer", "4", "x"],
        None,
    )?;
    assert_eq!(out.status.code(), Some(5), "a cut reply exits 5, as before");
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: こ\\xe3\n"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "warning: reply cut to 4 of 15 bytes (1 of 5 characters; the cut fell inside the \
             2nd character, a 3-byte UTF-8 sequence, shown as \\xe3); raise --buffer (now 4) \
             to see all of it"
        ),
        "{err}"
    );
    // A cut UTF-8 reply is UTF-8: no encoding hint.
    assert!(!err.contains("not UTF-8"), "{err}");
    peer.received()?;
    Ok(())
}

/// A server's `--buffer` cut inside a character, echoed back whole: UTF-8 cut short, which
/// also happens to decode as Shift_JIS (`縺薙`), and is not named as such.
#[test]
fn utf8_cut_by_the_server_is_not_named() -> Result {
    let peer = peer("127.0.0.1", |s, from, _| {
        s.send_to(&"こんにちは".as_bytes()[..4], from).map(drop)
    })?;
    let out = client(&["--server", &peer.addr.to_string(), "こんにちは"], None)?;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        text(&out.stdout),
        "Sent a message.\nServer message: こ\\xe3\n"
    );
    assert!(!err.contains("not UTF-8"), "{err}");
    peer.received()?;
    Ok(())
}
