//! A hostile server's bytes never reach the user's terminal raw: every path that shows them
//! (replies, error envelopes, the errors that quote a reply, log lines at -vv) escapes them.

use std::net::{SocketAddr, UdpSocket};

use proto::{Envelope, ErrorCode};

use crate::{Result, client, peer, text};

/// ESC (a terminal's control sequences), U+009B (the one-byte CSI), DEL, U+202E (right-to-left
/// override: disguises text) and bytes that are not UTF-8.
const HOSTILE: &[u8] = b"\x1b[2J \xc2\x9b31m \x7f \xe2\x80\xae \xff\xfe end";

/// [`HOSTILE`] as text, for JSON strings (which cannot carry bytes that are not UTF-8).
const HOSTILE_TEXT: &str = "\u{1b}[2J \u{9b}31m \u{7f} \u{202e} end";

/// [`HOSTILE_TEXT`] inside a JSON string: ESC escaped, as JSON requires; the rest raw, as JSON
/// allows.
const HOSTILE_JSON: &str = "\\u001b[2J \u{9b}31m \u{7f} \u{202e} end";

/// What the peer answers, whatever it is asked.
fn answering(
    answer: impl Fn(Option<proto::Id>) -> Vec<u8> + Send + 'static,
) -> impl Fn(&UdpSocket, SocketAddr, &[u8]) -> std::io::Result<()> + Send + 'static {
    move |s, from, got| {
        let id = Envelope::decode(got, 65_535).ok().and_then(|e| e.id());
        s.send_to(&answer(id), from).map(drop)
    }
}

#[test]
fn hostile_server_bytes_are_escaped_in_every_output() -> Result {
    type Answer = Box<dyn Fn(Option<proto::Id>) -> Vec<u8> + Send>;
    let cases: Vec<(&str, &str, Answer)> = vec![
        ("a plain reply", "plain", Box::new(|_| HOSTILE.to_vec())),
        (
            "a JSON reply's body",
            "json",
            Box::new(|id| {
                Envelope::Reply {
                    id: id.unwrap_or(proto::Id::MIN),
                    body: HOSTILE_TEXT.into(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "an error envelope's code and message",
            "json",
            Box::new(|id| {
                Envelope::Error {
                    id,
                    code: ErrorCode::parse(HOSTILE_TEXT),
                    message: HOSTILE_TEXT.into(),
                }
                .encode_to_vec()
            }),
        ),
        (
            "a reply that is no envelope, in JSON mode",
            "json",
            Box::new(|_| HOSTILE.to_vec()),
        ),
        (
            "an envelope of an unknown version",
            "json",
            Box::new(|_| {
                format!(r#"{{"v":"{HOSTILE_JSON}","id":1,"kind":"reply","body":"x"}}"#).into_bytes()
            }),
        ),
        (
            "an envelope of an unknown kind",
            "json",
            Box::new(|_| format!(r#"{{"v":1,"id":1,"kind":"{HOSTILE_JSON}"}}"#).into_bytes()),
        ),
    ];
    for (case, encoding, answer) in cases {
        let peer = peer("127.0.0.1", answering(answer))?;
        let out = client(
            &[
                "--server",
                &peer.addr.to_string(),
                "--encoding",
                encoding,
                "--timeout",
                "5s",
                "-vv",
                "x",
            ],
            None,
        )?;
        let mut shown = out.stdout.clone();
        shown.extend(&out.stderr);
        let all = text(&shown);
        assert!(
            String::from_utf8(shown.clone()).is_ok(),
            "{case}: raw bytes that are not UTF-8: {all}"
        );
        for (name, raw) in [("ESC", "\u{1b}"), ("U+009B", "\u{9b}"), ("DEL", "\u{7f}")] {
            assert!(!all.contains(raw), "{case}: a raw {name}: {all}");
        }
        assert!(!all.contains('\u{202e}'), "{case}: a raw U+202E: {all}");
        // Shown escaped, not dropped: where the client shows the text itself, the escape of
        // ESC is on the screen.
        if !case.contains("envelope of") && !case.contains("no envelope") {
            assert!(all.contains("\\x1b[2J"), "{case}: {all}");
        }
        peer.received()?;
    }
    Ok(())
}
