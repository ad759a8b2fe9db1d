//! Encoding help on the server: a Shift_JIS datagram named once on stderr (still answered and
//! counted); a cut datagram told in bytes and characters.

use crate::binary::{sigterm, spawn};
use crate::{Result, ask, peer_for};

/// `こんにちは` in Shift_JIS (code page 932): what a Japanese Windows console's pipe gives.
const SJIS_KONNICHIWA: &[u8] = b"\x82\xb1\x82\xf1\x82\xc9\x82\xbf\x82\xcd";

#[test]
fn a_shift_jis_datagram_is_named_once_and_still_answered() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0"])?;
    let peer = peer_for(server.addr)?;
    for n in 1..=3 {
        let answer = ask(&peer, server.addr, SJIS_KONNICHIWA)?;
        assert_eq!(answer, format!("Access count: {n}").as_bytes());
    }
    assert_eq!(
        ask(&peer, server.addr, "こんにちは".as_bytes())?,
        b"Access count: 4"
    );
    sigterm(server.child.id())?;
    let port = peer.local_addr()?.port();
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    let hint = format!(
        "a datagram from 127.0.0.1:{port} is not UTF-8; it reads as Shift_JIS (「こんにちは」)"
    );
    assert_eq!(err.matches(&hint).count(), 1, "{err}");
    assert_eq!(err.matches("is not UTF-8;").count(), 1, "{err}");
    assert!(err.contains("chcp 65001"), "{err}");
    assert!(err.contains("received 4, counted 4"), "{err}");
    // Shown as received: `\xc9\x82` happens to be UTF-8 (ɂ), hence the half mojibake the
    // warning explains.
    assert!(
        out.contains("The message is [ \\x82\\xb1\\x82\\xf1\\x82ɂ\\xbf\\x82\\xcd ]."),
        "{out}"
    );
    Ok(())
}

#[test]
fn json_lines_name_a_shift_jis_datagram_once_too() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--output", "json"])?;
    let peer = peer_for(server.addr)?;
    for n in 1..=2 {
        let answer = ask(&peer, server.addr, SJIS_KONNICHIWA)?;
        assert_eq!(answer, format!("Access count: {n}").as_bytes());
    }
    sigterm(server.child.id())?;
    let (code, _, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        err.matches("is not UTF-8; it reads as Shift_JIS (「こんにちは」)")
            .count(),
        1,
        "{err}"
    );
    Ok(())
}

#[test]
fn a_datagram_cut_inside_a_character_is_told_in_bytes_and_characters() -> Result {
    let server = spawn(&["--bind", "127.0.0.1:0", "--mode", "echo", "--buffer", "4"])?;
    let peer = peer_for(server.addr)?;
    let answer = ask(&peer, server.addr, "こんにちは".as_bytes())?;
    assert_eq!(answer, b"\xe3\x81\x93\xe3", "the echo is what was kept");
    sigterm(server.child.id())?;
    let (code, out, err) = server.finish()?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("The message is [ こ\\xe3 ]."), "{out}");
    assert!(
        out.contains(
            "message cut to 4 of 15 bytes (1 whole character kept; the cut fell inside the 2nd \
             character, a 3-byte UTF-8 sequence, shown as \\xe3); --buffer is 4"
        ),
        "{out}"
    );
    assert!(!err.contains("not UTF-8"), "{err}");
    Ok(())
}
