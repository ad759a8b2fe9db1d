//! The lines `--trace` makes the two programs print on stderr, read back: [`Call`] is one
//! socket system call (when, which socket, what, with what result), [`parse`] picks them out of
//! a program's stderr. The strace stage compares them with strace's list, and
//! `demo --diagram` merges two programs' calls by time into the tutorial's figure.
//!
//! A line reads `trace 2026-12-02T01:23:45.123456Z [fd 3] recvfrom(…) → 14 bytes from
//! 127.0.0.1:54321`. The first timeout of a run is printed as it comes; the line that follows
//! it for the rest of the run ends with `, N more times` (or `, 1 more time`) and stands for
//! those N calls.

use std::time::SystemTime;

/// One traced call (or a run of the same timed-out receive, [`Call::times`] > 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// When it returned (the last of the run).
    pub at: SystemTime,
    /// The socket: `fd 3`, `w1 fd 4`.
    pub who: String,
    /// The call and its result, as printed, without the `N more times` ending.
    pub text: String,
    /// The whole call as printed, the `N more times` ending included.
    pub shown: String,
    /// How many calls the line stands for.
    pub times: u32,
}

impl Call {
    /// The call's name as the program makes it: `recvfrom`, `send`, `close`.
    pub fn name(&self) -> &str {
        self.text.split('(').next().unwrap_or("")
    }

    /// The result after `→`, if the line shows one.
    pub fn result(&self) -> Option<&str> {
        self.text.split_once(" → ").map(|(_, result)| result)
    }

    /// The errno's name when the call failed (`EAGAIN`, `ECONNREFUSED`).
    pub fn errno(&self) -> Option<&str> {
        let result = self.result()?;
        let name = result.split([' ', ',']).next()?;
        (name.len() > 1
            && name.starts_with('E')
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        .then_some(name)
    }

    /// Whether the call carries datagrams, and which way: `Some(true)` for a send. A receive
    /// from no sender (`→ 0 bytes from ?`: the server's socket shut by its watch at exit)
    /// carries none.
    pub fn direction(&self) -> Option<bool> {
        if self.errno().is_some() || self.result().is_some_and(|r| r.ends_with(" from ?")) {
            return None;
        }
        match self.name() {
            "send" | "sendto" | "sendmsg" | "sendmmsg" => Some(true),
            "recv" | "recvfrom" | "recvmsg" | "recvmmsg" => Some(false),
            _ => None,
        }
    }
}

/// The trace lines among `lines` (a program's stderr), in order; other lines are skipped. A
/// line that starts like a trace line but cannot be read is an error naming it.
pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<Vec<Call>, String> {
    let mut calls = Vec::new();
    for line in lines {
        let line = line.as_ref();
        let Some(rest) = line.strip_prefix("trace ") else {
            continue;
        };
        let bad = || format!("a trace line that cannot be read: {line:?}");
        let (time, rest) = rest.split_once(' ').ok_or_else(bad)?;
        let at = humantime::parse_rfc3339(time).map_err(|_| bad())?;
        let rest = rest.strip_prefix('[').ok_or_else(bad)?;
        let (who, shown) = rest.split_once("] ").ok_or_else(bad)?;
        let (text, times) = match shown.rsplit_once(", ") {
            Some((call, more)) if more.ends_with(" more times") || more.ends_with(" more time") => {
                let count = more.split(' ').next().and_then(|n| n.parse::<u32>().ok());
                (call, count.ok_or_else(bad)?)
            }
            _ => (shown, 1),
        };
        calls.push(Call {
            at,
            who: who.to_owned(),
            text: text.to_owned(),
            shown: shown.to_owned(),
            times,
        });
    }
    Ok(calls)
}

/// The tutorial's first exchange as the client traces it, for the tests of what reads traces.
#[cfg(test)]
pub const FIRST_EXCHANGE_CLIENT: [&str; 5] = [
    "trace 2026-12-02T01:00:00.000100Z [fd 3] socket(AF_INET, SOCK_DGRAM) → fd 3",
    "trace 2026-12-02T01:00:00.000200Z [fd 3] connect(127.0.0.1:4000)",
    "trace 2026-12-02T01:00:00.000420Z [fd 3] send(…, 14 bytes)",
    "trace 2026-12-02T01:00:00.000600Z [fd 3] recv(…) → 14 bytes",
    "trace 2026-12-02T01:00:00.000700Z [fd 3] close()",
];

/// The same exchange as the server traces it; its receive is stamped before the client's
/// send (both as their calls return), as happens on a busy machine.
#[cfg(test)]
pub const FIRST_EXCHANGE_SERVER: [&str; 5] = [
    "trace 2026-12-02T01:00:00.000000Z [fd 3] socket(AF_INET, SOCK_DGRAM) → fd 3",
    "trace 2026-12-02T01:00:00.000050Z [fd 3] bind(127.0.0.1:4000)",
    "trace 2026-12-02T01:00:00.000410Z [fd 3] recvfrom(…) → 14 bytes from 127.0.0.1:5000",
    "trace 2026-12-02T01:00:00.000500Z [fd 3] sendto(…, 14 bytes, 127.0.0.1:5000)",
    "trace 2026-12-02T01:00:00.000800Z [fd 3] close()",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_with_their_time_socket_call_and_repeats() -> Result<(), String> {
        let calls = parse(&[
            "listening on udp 127.0.0.1:4000",
            "trace 2026-12-02T01:23:45.123456Z [w1 fd 4] recvmmsg(…) → 2 datagrams (5, 5 bytes) from 127.0.0.1:5",
            "trace 2026-12-02T01:23:45.200000Z [fd 3] recv(…) → EAGAIN (timed out), 3 more times",
            "summary: received 2",
        ])?;
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].name(), calls[0].who.as_str(), calls[0].times),
            ("recvmmsg", "w1 fd 4", 1)
        );
        assert_eq!(calls[0].direction(), Some(false));
        assert_eq!(calls[1].errno(), Some("EAGAIN"));
        assert_eq!(calls[1].times, 3);
        assert_eq!(calls[1].direction(), None);
        assert!(calls[0].at < calls[1].at);
        Ok(())
    }

    #[test]
    fn a_broken_trace_line_is_an_error() {
        assert!(parse(&["trace yesterday [fd 3] close()"]).is_err());
    }
}
