//! The loopback matrix: an explicit table of exchanges, each run against the real binaries.
//!
//! A [`Row`] names who answers (our server with its arguments, a closed or silent port, socat,
//! a tutorial Python server), who sends (our client with its arguments and messages, `nc`, socat,
//! a tutorial Python client), what goes on the client's stdin, the lines the client must print,
//! its exit code, the line the server must print and the server's exit summary. [`rows`] is the
//! table; [`run`] plays it a few rows at a time and prints one line per row, counting them in
//! the [`Tally`](crate::tally::Tally) that `cargo xtask test` closes with
//! `N passed, M failed, K skipped`.
//!
//! Every server binds port 0 on loopback (never 50000) and is told `--once` or `--idle`, so it
//! ends by itself and prints its summary; the runner still kills anything that overstays.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::peers::abbreviate;

mod json_events;
mod runner;

pub use runner::run;

/// How long a client may run when nothing should make it wait.
const CLIENT_DEADLINE: Duration = Duration::from_secs(15);

/// The client's `--timeout` where a reply is expected: generous, as a reply on loopback takes
/// microseconds and only a loaded machine could need more.
const REPLY_TIMEOUT: &str = "5s";

/// The `--idle` given to servers that receive several datagrams: they end this long after the
/// last one.
const MULTI_IDLE: &str = "2s";

/// The address family a row runs over, on loopback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `127.0.0.1`.
    V4,
    /// `::1`.
    V6,
}

impl Family {
    fn ip(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Family::V6 => IpAddr::V6(Ipv6Addr::LOCALHOST),
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    /// The largest UDP payload: 65,535 − 20 (IPv4 header) − 8 (UDP header), or 65,535 − 8 over
    /// IPv6, whose header is outside the payload length.
    fn max_payload(self) -> usize {
        match self {
            Family::V4 => 65_507,
            Family::V6 => 65_527,
        }
    }
}

/// How a line must read.
#[derive(Clone, Debug)]
pub enum Expect {
    /// Exactly this.
    Exact(String),
    /// Starting with this.
    Prefix(String),
    /// Containing this.
    Contains(String),
}

impl Expect {
    fn matches(&self, line: &str) -> bool {
        match self {
            Expect::Exact(text) => line == text,
            Expect::Prefix(text) => line.starts_with(text.as_str()),
            Expect::Contains(text) => line.contains(text.as_str()),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (how, text) = match self {
            Expect::Exact(text) => ("", text),
            Expect::Prefix(text) => ("starting ", text),
            Expect::Contains(text) => ("containing ", text),
        };
        write!(f, "{how}{:?}", abbreviate(text, 100))
    }
}

fn exact(text: impl Into<String>) -> Expect {
    Expect::Exact(text.into())
}

fn prefix(text: impl Into<String>) -> Expect {
    Expect::Prefix(text.into())
}

fn contains(text: impl Into<String>) -> Expect {
    Expect::Contains(text.into())
}

/// Who answers the client.
#[derive(Clone, Debug)]
pub enum Target {
    /// `udptalk-server --bind LOOPBACK:0` with these arguments.
    Ours(Vec<String>),
    /// `socat UDP-LISTEN:0 PIPE`: sends every datagram of its first peer back.
    SocatEcho,
    /// One of the tutorial's servers, `python3 -u SCRIPT PORT`, on a port reserved for it.
    Python(&'static str),
}

/// Who sends.
#[derive(Clone, Debug)]
pub enum Sender {
    /// `udptalk-client --server ADDR` with these arguments, then `--` and the messages.
    Ours {
        /// Options.
        args: Vec<String>,
        /// Messages given as arguments, any bytes.
        messages: Vec<Vec<u8>>,
    },
    /// netcat-openbsd: `nc -u -w1 HOST PORT`, the message on stdin.
    Nc,
    /// `socat -t1 - UDP:ADDR`, the message on stdin.
    Socat,
    /// One of the tutorial's clients, `python3 -u SCRIPT PORT`.
    Python(&'static str),
}

/// One exchange of the matrix and everything it must show.
#[derive(Clone, Debug)]
pub struct Row {
    /// What the row checks, e.g. `v4 plain→auto/echo invalid-utf8`.
    pub name: String,
    /// The address family, on loopback.
    pub family: Family,
    /// Who answers.
    pub server: Target,
    /// Who sends.
    pub client: Sender,
    /// The client's stdin; `None` is `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Lines the client must print on stdout, in this order (other lines may come between).
    pub replies: Vec<Expect>,
    /// A line the client must print on stderr.
    pub client_stderr: Option<Expect>,
    /// The client's exit code.
    pub exit: i32,
    /// A line the server must print on stdout.
    pub server_line: Option<Expect>,
    /// A line `udptalk-server` must print on stderr as it ends: its summary.
    pub summary: Option<Expect>,
    /// After the client, send `probe` from another socket and expect an answer: with a `--once`
    /// server this proves the client's datagram never reached it.
    pub probe: bool,
    /// How long the client may run before we kill it.
    pub deadline: Duration,
    /// Our programs run with `--output json`: every line they print on stdout must validate
    /// against docs/output.schema.json and their last line is `exit` with the exit code; the
    /// human lines ([`Row::replies`] of our client, [`Row::server_line`]) are the human row's
    /// to check, stderr's lines are checked alike.
    pub json: bool,
}

impl Row {
    fn new(family: Family, name: impl fmt::Display, server: Target, client: Sender) -> Row {
        Row {
            name: format!("{} {name}", family.tag()),
            family,
            server,
            client,
            stdin: None,
            replies: Vec::new(),
            client_stderr: None,
            exit: 0,
            server_line: None,
            summary: None,
            probe: false,
            deadline: CLIENT_DEADLINE,
            json: false,
        }
    }

    /// The same row with our programs' `--output json`, if any of ours takes part.
    fn json_variant(&self) -> Option<Row> {
        let ours =
            matches!(self.server, Target::Ours(_)) || matches!(self.client, Sender::Ours { .. });
        ours.then(|| Row {
            name: format!("{} [--output json]", self.name),
            json: true,
            ..self.clone()
        })
    }

    fn stdin(mut self, bytes: &[u8]) -> Row {
        self.stdin = Some(bytes.to_vec());
        self
    }

    fn replies(mut self, lines: impl IntoIterator<Item = Expect>) -> Row {
        self.replies = lines.into_iter().collect();
        self
    }

    fn client_stderr(mut self, line: Expect) -> Row {
        self.client_stderr = Some(line);
        self
    }

    fn exit(mut self, code: i32) -> Row {
        self.exit = code;
        self
    }

    fn server_line(mut self, line: Expect) -> Row {
        self.server_line = Some(line);
        self
    }

    fn summary(mut self, line: Expect) -> Row {
        self.summary = Some(line);
        self
    }

    fn probe(mut self) -> Row {
        self.probe = true;
        self
    }
}

/// `udptalk-server` arguments.
fn server(args: &[&str]) -> Target {
    Target::Ours(args.iter().map(|arg| (*arg).to_owned()).collect())
}

/// `udptalk-client` with `args` sending `messages`.
fn client(args: &[&str], messages: &[&[u8]]) -> Sender {
    Sender::Ours {
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        messages: messages.iter().map(|m| m.to_vec()).collect(),
    }
}

/// The summary of a server that received `n` datagrams, all counted, `truncated` of them cut.
fn counted(n: usize, truncated: usize) -> Expect {
    prefix(format!(
        "summary: received {n}, counted {n}, duplicates 0, malformed 0, rate-limited 0, busy 0, \
         loops 0, truncated {truncated},"
    ))
}

/// The summary of a server that refused its one datagram with an error envelope.
fn rejected() -> Expect {
    prefix("summary: received 1, counted 0, duplicates 0, malformed 1,")
}

/// `n` bytes of `0123456789…`: a cut shows, and which end was cut shows too.
fn digits(n: usize) -> Vec<u8> {
    (0..n).map(|i| b"0123456789"[i % 10]).collect()
}

/// A payload of the plain and JSON rows.
struct Payload {
    /// Its name in the row name.
    name: String,
    /// The bytes sent.
    bytes: Vec<u8>,
    /// How udptalk prints them: escaped as the contract says (`\xff` for invalid UTF-8).
    shown: String,
    /// The server's `--buffer`, when not the default.
    buffer: Option<usize>,
}

impl Payload {
    fn text(name: &str, text: &str) -> Payload {
        Payload {
            name: name.to_owned(),
            bytes: text.as_bytes().to_vec(),
            shown: text.to_owned(),
            buffer: None,
        }
    }

    fn digits(len: usize, buffer: Option<usize>) -> Payload {
        let bytes = digits(len);
        let name = match buffer {
            Some(buffer) if len > buffer => format!("{len}B --buffer {buffer} (truncated)"),
            Some(buffer) => format!("{len}B --buffer {buffer} (fits)"),
            None => format!("{len}B"),
        };
        Payload {
            name,
            shown: String::from_utf8_lossy(&bytes).into_owned(),
            bytes,
            buffer,
        }
    }

    /// The payload as the server keeps it: cut to its buffer. Only the ASCII digit payloads
    /// are ever cut, so characters are bytes.
    fn kept(&self) -> String {
        match self.buffer {
            Some(buffer) if self.bytes.len() > buffer => self.shown.chars().take(buffer).collect(),
            _ => self.shown.clone(),
        }
    }

    fn truncated(&self) -> bool {
        self.buffer.is_some_and(|buffer| self.bytes.len() > buffer)
    }
}

/// The plain client's payloads: the tutorial's, the awkward ones, and the sizes around the
/// tutorial's 4,096-byte buffer and the UDP limit.
fn plain_payloads(family: Family) -> Vec<Payload> {
    let mut payloads = vec![
        Payload::text("empty", ""),
        Payload::text("ascii", "Hello Server!!"),
        Payload::text("japanese", "こんにちは、世界"),
        Payload {
            name: "invalid-utf8".to_owned(),
            bytes: b"caf\xe9 \xff\xfe ok".to_vec(),
            shown: r"caf\xe9 \xff\xfe ok".to_owned(),
            buffer: None,
        },
        Payload::digits(4096, Some(4096)),
        Payload::digits(4097, Some(4096)),
        Payload::digits(65_507, None),
        Payload::digits(65_507, Some(4096)),
    ];
    if family == Family::V6 {
        payloads.push(Payload::digits(65_527, None));
    }
    payloads
}

/// The JSON client's bodies.
fn json_payloads() -> Vec<Payload> {
    let mut body = Payload::digits(4096, None);
    body.name = "4096B body".to_owned();
    vec![
        Payload::text("empty", ""),
        Payload::text("ascii", "Hello Server!!"),
        Payload::text("japanese", "こんにちは、世界"),
        body,
    ]
}

/// The reply a server in `mode` gives to `payload`, as the client prints it.
fn reply(mode: &str, payload: &Payload) -> String {
    match mode {
        "count" => "Access count: 1".to_owned(),
        "hello" => "Hello Client!!".to_owned(),
        _ => payload.kept(),
    }
}

/// Our client against our server: every encoding pair that must work, every mode, every payload.
fn exchange_rows(family: Family) -> Vec<Row> {
    let mut rows = Vec::new();
    for (client_encoding, server_encodings, payloads) in [
        ("plain", ["plain", "auto"], plain_payloads(family)),
        ("json", ["json", "auto"], json_payloads()),
    ] {
        for server_encoding in server_encodings {
            for mode in ["count", "hello", "echo"] {
                for payload in &payloads {
                    let mut args = vec!["--mode", mode, "--encoding", server_encoding, "--once"];
                    let buffer = payload.buffer.map(|b| b.to_string());
                    if let Some(buffer) = &buffer {
                        args.extend(["--buffer", buffer]);
                    }
                    let server_line = if payload.truncated() {
                        format!(
                            "message cut to {} of {} bytes; --buffer is {}",
                            payload.buffer.unwrap_or_default(),
                            payload.bytes.len(),
                            payload.buffer.unwrap_or_default()
                        )
                    } else {
                        format!("The message is [ {} ].", payload.shown)
                    };
                    rows.push(
                        Row::new(
                            family,
                            format_args!(
                                "{client_encoding}→{server_encoding}/{mode} {}",
                                payload.name
                            ),
                            server(&args),
                            client(
                                &["--encoding", client_encoding, "--timeout", REPLY_TIMEOUT],
                                &[&payload.bytes],
                            ),
                        )
                        .replies([
                            exact("Sent a message."),
                            exact(format!("Server message: {}", reply(mode, payload))),
                        ])
                        .server_line(exact(server_line))
                        .summary(counted(1, usize::from(payload.truncated()))),
                    );
                }
            }
        }
    }

    // The tutorial's second client: lines on stdin, an empty one, a `\r\n` ending.
    rows.push(
        Row::new(
            family,
            "plain stdin 3 lines→auto/count (Access count: 1, 2, 3)",
            server(&["--mode", "count", "--idle", MULTI_IDLE]),
            client(&["--timeout", REPLY_TIMEOUT], &[]),
        )
        .stdin("Hello Server!!\r\nこんにちは\n\n".as_bytes())
        .replies([
            exact("Sent a message."),
            exact("Access count: 1"),
            exact("Access count: 2"),
            exact("Access count: 3"),
        ])
        .server_line(exact("The message is [ こんにちは ]."))
        .summary(counted(3, 0)),
    );
    rows
}

/// What must fail, and how.
fn negative_rows(family: Family) -> Vec<Row> {
    let hello: &[u8] = b"Hello Server!!";
    let big_body = digits(5000);
    let over = digits(family.max_payload() + 1);
    let mut rows = vec![
        Row::new(
            family,
            "plain→json/count answered with a bad_json error envelope (exit 0)",
            server(&["--encoding", "json", "--once"]),
            client(&["--timeout", REPLY_TIMEOUT], &[hello]),
        )
        .replies([
            exact("Sent a message."),
            prefix(r#"Server message: {"v":1,"id":null,"kind":"error","code":"bad_json""#),
        ])
        .server_line(prefix("Rejected: bad_json: "))
        .summary(rejected()),
        Row::new(
            family,
            "json→plain/count reply is not an envelope (exit 1)",
            server(&["--encoding", "plain", "--once"]),
            client(
                &["--encoding", "json", "--timeout", REPLY_TIMEOUT],
                &[hello],
            ),
        )
        .exit(1)
        .client_stderr(contains("is not a JSON envelope"))
        .server_line(prefix(r#"The message is [ {"v":1,"#))
        .summary(counted(1, 0)),
        Row::new(
            family,
            format_args!(
                "plain {}B over the UDP limit refused, nothing sent (exit 2)",
                over.len()
            ),
            server(&["--once"]),
            client(&["--timeout", REPLY_TIMEOUT], &[&over]),
        )
        .exit(2)
        .client_stderr(prefix("error: "))
        .probe()
        .server_line(exact("The message is [ probe ]."))
        .summary(counted(1, 0)),
        Row::new(
            family,
            "plain→auto/echo reply cut by client --buffer 16 (exit 5)",
            server(&["--mode", "echo", "--once"]),
            client(
                &["--buffer", "16", "--timeout", REPLY_TIMEOUT],
                &[&digits(42)],
            ),
        )
        .exit(5)
        .replies([
            exact("Sent a message."),
            exact("Server message: 0123456789012345"),
        ])
        .client_stderr(contains("reply cut to 16 of 42 bytes"))
        .server_line(exact(
            "The message is [ 012345678901234567890123456789012345678901 ].",
        ))
        .summary(counted(1, 0)),
    ];
    for encoding in ["json", "auto"] {
        rows.push(
            Row::new(
                family,
                format_args!("json 5000B body→{encoding}/count --buffer 4096 too_large (exit 6)"),
                server(&["--encoding", encoding, "--buffer", "4096", "--once"]),
                client(
                    &["--encoding", "json", "--timeout", REPLY_TIMEOUT],
                    &[&big_body],
                ),
            )
            .exit(6)
            .replies([
                exact("Sent a message."),
                prefix("Server error: too_large: "),
            ])
            .server_line(prefix("Rejected: too_large: "))
            .summary(rejected()),
        );
    }
    rows
}

/// Independent peers: netcat and socat on both families, the tutorial's Python programs on IPv4
/// (they hard-code `127.0.0.1`).
fn interop_rows(family: Family) -> Vec<Row> {
    let mut rows = vec![
        Row::new(
            family,
            "nc -u → count (netcat-openbsd as client)",
            server(&["--mode", "count", "--once"]),
            Sender::Nc,
        )
        .stdin(b"hello")
        .replies([exact("Access count: 1")])
        .server_line(exact("The message is [ hello ]."))
        .summary(counted(1, 0)),
        Row::new(
            family,
            "socat → hello (socat as client)",
            server(&["--mode", "hello", "--once"]),
            Sender::Socat,
        )
        .stdin("こんにちは".as_bytes())
        .replies([exact("Hello Client!!")])
        .server_line(exact("The message is [ こんにちは ]."))
        .summary(counted(1, 0)),
        Row::new(
            family,
            "client → socat echo (ascii, japanese, invalid-utf8, 65507B)",
            Target::SocatEcho,
            client(
                &["--timeout", REPLY_TIMEOUT],
                &[
                    b"Hello Server!!",
                    "こんにちは".as_bytes(),
                    b"caf\xe9 \xff",
                    &digits(65_507),
                ],
            ),
        )
        .replies([
            exact("Server message: Hello Server!!"),
            exact("Server message: こんにちは"),
            exact(r"Server message: caf\xe9 \xff"),
            exact(format!(
                "Server message: {}",
                String::from_utf8_lossy(&digits(65_507))
            )),
        ]),
    ];
    if family == Family::V4 {
        rows.extend([
            Row::new(
                family,
                "udp-client1.py → hello --once (Server message: Hello Client!!)",
                server(&["--mode", "hello", "--once"]),
                Sender::Python("udp-client1.py"),
            )
            .replies([
                exact("Sent a message."),
                exact("Server message: Hello Client!!"),
            ])
            .server_line(exact("The message is [ Hello Server!! ]."))
            .summary(counted(1, 0)),
            Row::new(
                family,
                "udp-client2.py 2 lines → count (Access count: 1, 2)",
                server(&["--mode", "count", "--idle", MULTI_IDLE]),
                Sender::Python("udp-client2.py"),
            )
            .stdin("Hello Server!!\nこんにちは\n".as_bytes())
            .replies([exact("Access count: 1"), exact("Access count: 2")])
            .server_line(exact("The message is [ こんにちは ]."))
            .summary(counted(2, 0)),
            Row::new(
                family,
                "client → udp-server1.py (Hello Client!!)",
                Target::Python("udp-server1.py"),
                client(&["--timeout", REPLY_TIMEOUT], &[b"Hello Server!!"]),
            )
            .replies([
                exact("Sent a message."),
                exact("Server message: Hello Client!!"),
            ])
            .server_line(exact("The message is [ Hello Server!! ].")),
            Row::new(
                family,
                "client 2 messages → udp-server2.py (Access count: 1, 2)",
                Target::Python("udp-server2.py"),
                client(
                    &["--timeout", REPLY_TIMEOUT],
                    &[b"Hello Server!!", b"again"],
                ),
            )
            .replies([
                exact("Server message: Access count: 1"),
                exact("Server message: Access count: 2"),
            ])
            .server_line(exact("New access.(access count: 2)")),
        ]);
    }
    rows
}

/// The whole table, IPv4 first; each row where our programs take part is played twice, the
/// second time with `--output json`.
pub fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for family in [Family::V4, Family::V6] {
        let human: Vec<Row> = exchange_rows(family)
            .into_iter()
            .chain(negative_rows(family))
            .chain(interop_rows(family))
            .collect();
        let json: Vec<Row> = human.iter().filter_map(Row::json_variant).collect();
        rows.extend(human);
        rows.extend(json);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn row_names_are_unique() {
        let rows = rows();
        let names: HashSet<&str> = rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names.len(), rows.len());
    }

    #[test]
    fn every_row_checks_something_on_the_client() {
        for row in rows() {
            assert!(
                !row.replies.is_empty() || row.client_stderr.is_some(),
                "{}",
                row.name
            );
        }
    }

    #[test]
    fn servers_never_bind_the_tutorial_port() {
        for row in rows() {
            if let Target::Ours(args) = &row.server {
                assert!(
                    !args.iter().any(|arg| arg.contains("50000")),
                    "{}",
                    row.name
                );
                assert!(!args.iter().any(|arg| arg == "--bind"), "{}", row.name);
            }
        }
    }

    /// Rows on `::1` where it cannot be bound are skipped with a reason that says so.
    #[test]
    fn the_ipv6_skip_reason_names_the_missing_loopback() {
        let error = std::io::Error::from(std::io::ErrorKind::AddrNotAvailable);
        let reason = crate::peers::no_ipv6_reason(&error);
        assert!(reason.starts_with("no IPv6 loopback: "), "{reason}");
    }

    #[test]
    fn truncated_payloads_are_cut_at_the_front() {
        let payload = Payload::digits(4097, Some(4096));
        assert!(payload.truncated());
        assert_eq!(payload.kept().len(), 4096);
        assert!(payload.kept().starts_with("0123"));
        assert!(!Payload::digits(4096, Some(4096)).truncated());
    }
}
