//! The demo's timeline: both programs' socket calls in the order they happened (as [`Part`]
//! merged them from `--trace`), each with the tutorial's words for it, and each program's own
//! output lines placed right after the call that produced them.
//!
//! The programs' stdout lines carry no time, so they are placed by what they say:
//! - the client's `Sent a message.` follows its next send, and the line that shows the reply
//!   (`Server message: …`, or the reply itself as `udp-client2.py` prints it) its next receive
//!   of a datagram; any other line stays beside the line before it;
//! - the server's lines about one datagram (from `New access.` or `Message received from
//!   ADDR.` to the next such line) follow its next reply to ADDR (a `sendto` naming it), since
//!   the server writes them from its output queue, not between its receive and its reply as the
//!   tutorial's `print` does; a datagram it does not answer puts them after its receive;
//! - the server's `listening on udp` line follows its last call before its first receive;
//!   stderr lines (errors, summaries) come at the end of their program's calls.
//!
//! Lines that cannot be placed so come last, so nothing a program printed is ever left out.

use super::diagram::{Part, Row, Side};

/// One line of the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Which program.
    pub side: Side,
    /// Milliseconds since the part's first call, for a call; `None` for an output line.
    pub ms: Option<f64>,
    /// The call as traced, or the output line.
    pub text: String,
    /// The tutorial's words for the call.
    pub words: &'static str,
}

/// The tutorial's words for a traced call: the Python line it stands for, or what the
/// result means for a learner; `(udptalk's own: …)` for a call the tutorial does not make.
pub fn words(row: &Row) -> &'static str {
    let call = &row.call;
    let client = row.side == Side::Client;
    let result = call.result().unwrap_or("");
    match (call.name(), call.errno()) {
        (_, Some("ECONNREFUSED")) => {
            "ICMP port unreachable came back: nothing listens (the tutorial's client would wait forever)"
        }
        (_, Some("EAGAIN" | "EWOULDBLOCK")) if call.text.contains("MSG_DONTWAIT") => {
            "(udptalk's own: a look for stale datagrams before sending)"
        }
        (_, Some("EAGAIN" | "EWOULDBLOCK")) => "no datagram within the timeout (settimeout)",
        ("shutdown", _) => "(udptalk's own: wakes its receive to end)",
        ("socket", _) if client => {
            "clilent_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
        }
        ("socket", _) => "server_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
        ("bind", _) if client => {
            "(the tutorial's client does it unseen: its first sendto takes a free port)"
        }
        ("bind", _) => "server_socket.bind((HOST, PORT))",
        ("connect", _) => {
            "(the footnote's \"other way\" to give the peer: on UDP it sends nothing)"
        }
        ("getsockname", _) => "(udptalk's own: reads the port the kernel chose)",
        ("setsockopt", _) if call.text.contains("SO_RCVTIMEO") => "settimeout(…)",
        ("setsockopt", _) => "(udptalk's own: a socket option)",
        ("send" | "sendto", _) if client => {
            "clilent_socket.sendto(message.encode('utf-8'), (HOST, PORT))"
        }
        ("send" | "sendto", _) => "server_socket.sendto(response.encode('utf-8'), client_address)",
        ("sendmmsg", _) => "sendto(…), several datagrams in one call",
        (_, _) if result.ends_with(" from ?") => "(udptalk's own: its receive woken to end)",
        ("recv" | "recvfrom", _) if client => "server_message = clilent_socket.recv(1024)",
        ("recv" | "recvfrom", _) => "client_message, client_address = server_socket.recvfrom(1024)",
        ("recvmmsg", _) => "recvfrom(1024), several datagrams in one call",
        ("close", _) if client => "clilent_socket.close()",
        ("close", _) => "server_socket.close()",
        _ => "(udptalk's own)",
    }
}

/// Whether a line of the client's stdout says it sent.
fn is_sent(line: &str) -> bool {
    line == "Sent a message."
}

/// The peer a server line group starts with (`Message received from ADDR.`), if it starts one.
fn server_group(line: &str) -> Option<Option<&str>> {
    if line.starts_with("New access.") {
        return Some(None);
    }
    line.strip_prefix("Message received from ")
        .map(|rest| Some(rest.trim_end_matches('.')))
}

/// The first row after `from` of `side` that carries datagrams the way `sends` says, and
/// whose text contains `peer` when given.
fn next_row(
    part: &Part,
    side: Side,
    from: Option<usize>,
    sends: bool,
    peer: Option<&str>,
) -> Option<usize> {
    let start = from.map_or(0, |i| i + 1);
    (start..part.rows.len()).find(|&i| {
        let row = &part.rows[i];
        row.side == side
            && row.sends == Some(sends)
            && peer.is_none_or(|p| row.call.text.contains(p))
    })
}

/// The client's receive after `from` that brought the answer it printed: the first data
/// receive after which it did not wait on (its next send or receive, a look for stale
/// datagrams aside, is a send, or nothing), else the first data receive. A receive followed by
/// more waiting got a reply it dropped (a duplicate, or the answer to an earlier message).
fn answer_row(part: &Part, from: Option<usize>) -> Option<usize> {
    let waits_on = |i: usize| {
        part.rows[i + 1..]
            .iter()
            .filter(|r| r.side == Side::Client && !r.call.text.contains("MSG_DONTWAIT"))
            .find(|r| {
                matches!(
                    r.call.name(),
                    "send" | "sendto" | "sendmmsg" | "recv" | "recvfrom" | "recvmmsg"
                )
            })
            .is_some_and(|next| next.sends != Some(true))
    };
    let mut at = from;
    let first = next_row(part, Side::Client, from, false, None);
    while let Some(i) = next_row(part, Side::Client, at, false, None) {
        if !waits_on(i) {
            return Some(i);
        }
        at = Some(i);
    }
    first
}

/// Builds the timeline of `part` with the programs' stdout and stderr lines (trace lines
/// already left out).
pub fn build(
    part: &Part,
    client_out: &[String],
    client_err: &[String],
    server_out: &[String],
    server_err: &[String],
) -> Vec<Entry> {
    let n = part.rows.len();
    let mut after: Vec<Vec<(Side, String)>> = vec![Vec::new(); n];
    let mut end: Vec<(Side, String)> = Vec::new();
    let mut put = |at: Option<usize>, side: Side, line: &str| match at {
        Some(i) if i < n => after[i].push((side, line.to_owned())),
        _ => end.push((side, line.to_owned())),
    };

    // The client: a send's line, a reply's line, the rest beside the line before.
    let mut cursor: Option<usize> = None;
    let mut awaiting_reply = false;
    for line in client_out {
        let at = if is_sent(line) {
            awaiting_reply = true;
            next_row(part, Side::Client, cursor, true, None)
        } else if awaiting_reply {
            awaiting_reply = false;
            answer_row(part, cursor)
        } else {
            cursor
        };
        let at = at.or(cursor);
        put(at, Side::Client, line);
        cursor = at;
    }

    // The server: the announce line after its setup, then its groups after their replies.
    let first_receive = next_row(part, Side::Server, None, false, None);
    let last_setup = (0..first_receive.unwrap_or(n))
        .rev()
        .find(|&i| part.rows[i].side == Side::Server);
    let (announce, rest_err) = match server_err.split_first() {
        Some((first, rest)) if first.starts_with("listening on ") => (Some(first), rest),
        _ => (None, server_err),
    };
    if let Some(line) = announce {
        put(last_setup, Side::Server, line);
    }
    // Lines before the first group stay after the setup; each group goes after its reply.
    let mut groups: Vec<Vec<&String>> = vec![Vec::new()];
    for (i, line) in server_out.iter().enumerate() {
        let opens = match server_group(line) {
            Some(Some(_)) => !(i > 0 && server_out[i - 1].starts_with("New access.")),
            Some(None) => true,
            None => false,
        };
        if opens {
            groups.push(Vec::new());
        }
        if let Some(group) = groups.last_mut() {
            group.push(line);
        }
    }
    let mut cursor = last_setup;
    let mut receive_cursor = last_setup;
    for (k, group) in groups.iter().enumerate() {
        if k > 0 {
            let peer = group.iter().find_map(|line| server_group(line).flatten());
            let receive = next_row(part, Side::Server, receive_cursor, false, None);
            let reply = next_row(part, Side::Server, cursor, true, peer);
            receive_cursor = receive.or(receive_cursor);
            cursor = reply.or(receive).or(cursor);
        }
        for line in group {
            put(cursor, Side::Server, line);
        }
    }
    for line in client_err {
        put(None, Side::Client, line);
    }
    for line in rest_err {
        put(None, Side::Server, line);
    }

    let mut entries = Vec::new();
    for (i, row) in part.rows.iter().enumerate() {
        entries.push(Entry {
            side: row.side,
            ms: Some(millis(part, row)),
            text: row.call.shown.clone(),
            words: words(row),
        });
        for (side, line) in &after[i] {
            entries.push(output(*side, line));
        }
    }
    for (side, line) in &end {
        entries.push(output(*side, line));
    }
    entries
}

fn output(side: Side, line: &str) -> Entry {
    Entry {
        side,
        ms: None,
        text: line.to_owned(),
        words: "",
    }
}

fn millis(part: &Part, row: &Row) -> f64 {
    row.call
        .at
        .duration_since(part.start)
        .unwrap_or_default()
        .as_secs_f64()
        * 1e3
}

/// The timeline for a terminal: `ms  [side] call   ⇐ the tutorial's words`, output lines
/// under their call without a time.
pub fn text(entries: &[Entry]) -> String {
    const CALL_WIDTH: usize = 58;
    let mut out = String::new();
    for entry in entries {
        let tag = match entry.side {
            Side::Client => "[client]",
            Side::Server => "[server]",
        };
        let line = match entry.ms {
            Some(ms) => {
                let words = if entry.words.is_empty() {
                    String::new()
                } else {
                    format!("  ⇐ {}", entry.words)
                };
                format!("{ms:>9.3} ms  {tag} {:<CALL_WIDTH$}{words}", entry.text)
            }
            None => format!("{:>12}  {tag}   {}", "", entry.text),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace;

    #[test]
    fn each_line_follows_the_call_that_produced_it() -> Result<(), String> {
        let client = trace::parse(&trace::FIRST_EXCHANGE_CLIENT)?;
        let server = trace::parse(&trace::FIRST_EXCHANGE_SERVER)?;
        let part = Part::new("Part 1", &client, &server);
        let own = |lines: &[&str]| lines.iter().map(|l| (*l).to_owned()).collect::<Vec<_>>();
        let entries = build(
            &part,
            &own(&["Sent a message.", "Server message: Hello Client!!"]),
            &[],
            &own(&[
                "Message received from 127.0.0.1:5000.",
                "The message is [ Hello Server!! ].",
            ]),
            &own(&["listening on udp 127.0.0.1:4000", "summary: received 1"]),
        );
        let shown: Vec<String> = entries
            .iter()
            .map(|e| {
                let who = if e.side == Side::Client { "c" } else { "s" };
                let text = e.text.split('(').next().unwrap_or("");
                format!("{who} {text}")
            })
            .collect();
        assert_eq!(
            shown,
            [
                "s socket",
                "s bind",
                "s listening on udp 127.0.0.1:4000",
                "c socket",
                "c connect",
                "c send",
                "c Sent a message.",
                "s recvfrom",
                "s sendto",
                "s Message received from 127.0.0.1:5000.",
                "s The message is [ Hello Server!! ].",
                "c recv",
                "c Server message: Hello Client!!",
                "c close",
                "s close",
                "s summary: received 1",
            ]
        );
        let text = text(&entries);
        assert!(
            text.lines()
                .any(|l| l.contains("[client] send(…, 14 bytes)")
                    && l.contains("⇐ clilent_socket.sendto(")),
            "{text}"
        );
        Ok(())
    }

    #[test]
    fn a_refused_receive_is_told_as_icmp_and_unplaceable_lines_come_last() -> Result<(), String> {
        let client = trace::parse(&[
            "trace 2026-12-02T01:00:00.000100Z [fd 3] send(…, 14 bytes)",
            "trace 2026-12-02T01:00:00.000200Z [fd 3] recv(…) → ECONNREFUSED (Connection refused)",
        ])?;
        let part = Part::new("no server", &client, &[]);
        let entries = build(
            &part,
            &["Sent a message.".to_owned()],
            &["error: nothing listens".to_owned()],
            &[],
            &[],
        );
        assert_eq!(entries.len(), 4);
        assert!(entries[2].words.contains("ICMP port unreachable"));
        assert_eq!(entries[1].text, "Sent a message.");
        assert_eq!(entries[3].text, "error: nothing listens");
        Ok(())
    }

    #[test]
    fn a_reply_line_follows_the_receive_that_ended_the_wait_not_a_dropped_duplicate()
    -> Result<(), String> {
        let client = trace::parse(&[
            "trace 2026-12-02T01:00:00.000100Z [fd 3] send(…, 88 bytes)",
            "trace 2026-12-02T01:00:00.000200Z [fd 3] recv(…) → 69 bytes",
            "trace 2026-12-02T01:00:00.000300Z [fd 3] send(…, 88 bytes)",
            "trace 2026-12-02T01:00:00.000400Z [fd 3] recv(…) → 69 bytes",
            "trace 2026-12-02T01:00:00.100400Z [fd 3] recv(…) → EAGAIN (timed out)",
            "trace 2026-12-02T01:00:00.100500Z [fd 3] send(…, 88 bytes)",
            "trace 2026-12-02T01:00:00.100600Z [fd 3] recv(…) → 69 bytes",
            "trace 2026-12-02T01:00:00.100700Z [fd 3] close()",
        ])?;
        let part = Part::new("lossy", &client, &[]);
        let out: Vec<String> = [
            "Sent a message.",
            "Server message: Access count: 1",
            "Sent a message.",
            "Server message: Access count: 2",
        ]
        .iter()
        .map(|l| (*l).to_owned())
        .collect();
        let entries = build(&part, &out, &[], &[], &[]);
        let position = |text: &str| entries.iter().position(|e| e.text == text);
        assert_eq!(position("Server message: Access count: 1"), Some(3));
        // After the resend's answer (row 7 of the calls), not the duplicate at row 4.
        assert_eq!(position("Server message: Access count: 2"), Some(10));
        assert_eq!(
            entries.get(9).map(|e| e.text.as_str()),
            Some("recv(…) → 69 bytes")
        );
        Ok(())
    }
}
