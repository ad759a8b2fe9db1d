//! The tutorial's words, and the escaping that makes a peer's bytes safe to print.
//!
//! The texts are the ones `udp-server1.py`, `udp-server2.py`, `udp-client1.py` and
//! `udp-client2.py` print or send, so that udptalk's screen reads like the tutorial's.

use std::fmt;
use std::net::SocketAddr;

/// What `udp-client1.py` sends.
pub const HELLO_SERVER: &str = "Hello Server!!";

/// What `udp-server1.py` answers.
pub const HELLO_CLIENT: &str = "Hello Client!!";

/// What `udp-server2.py` answers, followed by the access count.
pub const ACCESS_COUNT_PREFIX: &str = "Access count: ";

/// What `udp-client2.py` asks before each line.
pub const PROMPT: &str = "Please input any message: ";

/// What the tutorial's clients print after each send.
pub const SENT: &str = "Sent a message.";

/// The reply of the count server for access number `count`: `Access count: 3`.
pub fn access_count_reply(count: u64) -> String {
    format!("{ACCESS_COUNT_PREFIX}{count}")
}

/// Whether `datagram` is, byte for byte, one of the answers a tutorial server sends:
/// `Hello Client!!`, or `Access count: ` followed by one or more ASCII digits.
///
/// A server never answers such a datagram: it is another server's answer, and answering it
/// would start a loop between two servers (CVE-2024-2169; docs/PROTOCOL.md, "Loops").
pub fn is_server_reply(datagram: &[u8]) -> bool {
    if datagram == HELLO_CLIENT.as_bytes() {
        return true;
    }
    datagram
        .strip_prefix(ACCESS_COUNT_PREFIX.as_bytes())
        .is_some_and(|digits| !digits.is_empty() && digits.iter().all(u8::is_ascii_digit))
}

/// A peer's address as udptalk prints it: `127.0.0.1:54321` or `[::1]:54321`, with an
/// IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer) shown as the IPv4
/// address it is.
pub fn canonical_peer(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => peer,
        },
        SocketAddr::V4(_) => peer,
    }
}

/// Bytes from a peer, shown so that they cannot drive the reader's terminal or disguise text.
///
/// This is the one escaping function: every place that shows what a peer sent (the server's
/// per-datagram lines, error messages that quote a value, log lines, the client's replies and
/// errors) goes through it. Valid UTF-8 is shown as it is, except:
/// - a backslash is shown as `\\`, so that an escape in the output always means an escape;
/// - C0 controls and DEL as `\x1b`;
/// - every other character of the Unicode general categories Cc (controls, C1 included), Cf
///   (format characters: bidirectional overrides such as U+202E, zero-width characters), Zl, Zp
///   (line and paragraph separators), Co (private use) and Cn (unassigned) as `\u{202e}`;
/// - each byte that is not part of valid UTF-8 as `\xff`.
///
/// Space separators (Zs) are kept: `こんにちは　世界`, with its ideographic space, prints
/// unchanged. The result is one line, contains no character of the escaped categories, and
/// distinct inputs give distinct outputs.
pub struct Printable<'a>(pub &'a [u8]);

/// Whether `c` is shown escaped: a backslash, or a character of the categories that can drive
/// a terminal or disguise text.
pub fn needs_escape(c: char) -> bool {
    use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
    if c.is_ascii() {
        // The common case, without a table lookup: ASCII's only escapes are C0, DEL and `\`.
        return c.is_ascii_control() || c == '\\';
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::PrivateUse
            | GeneralCategory::Unassigned
    )
}

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            let valid = chunk.valid();
            let mut start = 0;
            for (at, c) in valid.char_indices() {
                if !needs_escape(c) {
                    continue;
                }
                f.write_str(&valid[start..at])?;
                start = at + c.len_utf8();
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
                    c => write!(f, "\\u{{{:x}}}", c as u32)?,
                }
            }
            f.write_str(&valid[start..])?;
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl Printable<'_> {
    /// Appends what this shows to `out`. Text that is all printable ASCII but the backslash, as nearly
    /// every datagram is, shows as it is: it is copied without the formatting machinery, which
    /// a server printing each datagram would otherwise run on every one.
    pub fn push_onto(&self, out: &mut String) {
        if self
            .0
            .iter()
            .all(|&b| (b' '..=b'~').contains(&b) && b != b'\\')
            && let Ok(text) = std::str::from_utf8(self.0)
        {
            out.push_str(text);
        } else {
            // Writing into a String cannot fail.
            let _ = fmt::write(out, format_args!("{self}"));
        }
    }
}

/// A peer's text shown as [`Printable`] shows its bytes.
pub fn printable(text: &str) -> String {
    Printable(text.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_what_could_drive_a_terminal() {
        let shown = Printable(b"ok \x1b[2J \xff\xfe tab\t back\\slash \xc2\x9b end").to_string();
        assert_eq!(
            shown,
            "ok \\x1b[2J \\xff\\xfe tab\\x09 back\\\\slash \\u{9b} end"
        );
    }

    #[test]
    fn printable_keeps_japanese_and_plain_text() {
        let text = "こんにちは Hello Server!!";
        assert_eq!(Printable(text.as_bytes()).to_string(), text);
        // U+3000, the ideographic space, is a space separator (Zs): kept.
        let spaced = "こんにちは\u{3000}世界";
        assert_eq!(Printable(spaced.as_bytes()).to_string(), spaced);
    }

    #[test]
    fn printable_escapes_format_separators_private_use_and_unassigned() {
        let text = "a\u{202e}b\u{200b}c\u{2028}d\u{2029}e\u{e000}f\u{10ffff}g\u{7f}h\u{378}i";
        assert_eq!(
            Printable(text.as_bytes()).to_string(),
            "a\\u{202e}b\\u{200b}c\\u{2028}d\\u{2029}e\\u{e000}f\\u{10ffff}g\\x7fh\\u{378}i"
        );
    }

    #[test]
    fn mapped_peers_print_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:54321".parse().unwrap();
        assert_eq!(canonical_peer(mapped).to_string(), "127.0.0.1:54321");
        let v6: SocketAddr = "[::1]:54321".parse().unwrap();
        assert_eq!(canonical_peer(v6).to_string(), "[::1]:54321");
    }

    #[test]
    fn server_replies_are_recognised_exactly() {
        for reply in [
            "Hello Client!!",
            "Access count: 1",
            "Access count: 18446744073709551616",
        ] {
            assert!(is_server_reply(reply.as_bytes()), "{reply}");
        }
        for other in [
            "Hello Server!!",
            "Hello Client!! ",
            "Access count: ",
            "Access count: 1x",
            "Access count: -1",
            "access count: 1",
            "",
        ] {
            assert!(!is_server_reply(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn access_count_reply_matches_the_tutorial() {
        assert_eq!(access_count_reply(3), "Access count: 3");
    }
}
