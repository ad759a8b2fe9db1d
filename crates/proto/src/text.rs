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

/// Bytes from a peer, shown so that they cannot drive the reader's terminal.
///
/// Valid UTF-8 is shown as it is, except: control characters (C0, DEL and C1) are shown as
/// `\x1b` or `\u{9b}`, a backslash as `\\`, and each byte that is not part of valid UTF-8 as
/// `\xff`. The result is one line, and distinct inputs give distinct outputs.
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    c if (c as u32) < 0x20 || c as u32 == 0x7f => write!(f, "\\x{:02x}", c as u32)?,
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => fmt::Write::write_char(f, c)?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
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
    }

    #[test]
    fn mapped_peers_print_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:54321".parse().unwrap();
        assert_eq!(canonical_peer(mapped).to_string(), "127.0.0.1:54321");
        let v6: SocketAddr = "[::1]:54321".parse().unwrap();
        assert_eq!(canonical_peer(v6).to_string(), "[::1]:54321");
    }

    #[test]
    fn access_count_reply_matches_the_tutorial() {
        assert_eq!(access_count_reply(3), "Access count: 3");
    }
}
