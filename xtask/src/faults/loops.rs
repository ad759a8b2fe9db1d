//! Loops: one forged datagram must not set two programs talking forever.
//!
//! Two servers that answer everything ping-pong without end once one of them receives a
//! datagram that seems to come from the other (RFC 8085 §5.1 warns of exactly this). An
//! attacker needs a single spoofed datagram to start it. For each pair of peers below we start
//! both, forge ONE datagram "from A to B" ([`crate::forge`]), give the exchange [`SETTLE`] to
//! die out, stop both and count what they received in their summaries:
//!
//! - our server × our server, every ordered pair of modes (count, hello, echo), plus pairs of
//!   `--encoding json` and `--encoding plain` servers, with the plain payload `hello` and, for
//!   some, a JSON request: the datagrams sent by A and B together are A.received + B.received
//!   − 1 (the forged one was sent by neither);
//! - our server × the tutorial's `udp-server2.py` (IPv4 only: it binds 127.0.0.1) and × a socat
//!   echo: the forged datagram claims to come from the partner, and the partner only ever
//!   answers us, so everything sent by both is at most 2 × our received − 1.
//!
//! Each pair may send at most [`MAX_DATAGRAMS`]. The servers run with `--rate-limit 0`, so the
//! rate limiter cannot be what stops a loop. Pairs run [`PARALLEL`] at a time.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::{BACKSTOP_IDLE, Checks, STOP_DEADLINE, Summary};
use crate::Bins;
use crate::forge;
use crate::peers::{self, Proc, Server};

/// Datagrams a pair may send in all after the forged one.
const MAX_DATAGRAMS: u64 = 10;

/// How long after the forged datagram the pair is left alone before being stopped. A loop that
/// is cut off ends within milliseconds on loopback; an endless one has sent thousands by then.
const SETTLE: Duration = Duration::from_secs(1);

/// Pairs running at once: most of a pair's time is [`SETTLE`], and a looping pair (against a
/// server without the fix) keeps a core busy only until it is stopped.
const PARALLEL: usize = 8;

/// How long the tutorial's server may take to bind its port.
const BIND_TIMEOUT: Duration = Duration::from_secs(5);

/// The plain payload.
const PLAIN: &str = "hello";

/// The JSON payload: a request without `ack`.
const JSON: &str = r#"{"v":1,"id":5,"kind":"request","body":"hi"}"#;

/// The address family of a row.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn ip(self) -> IpAddr {
        match self {
            Family::V4 => Ipv4Addr::LOCALHOST.into(),
            Family::V6 => Ipv6Addr::LOCALHOST.into(),
        }
    }
}

/// The peer the forged datagram claims to come from.
#[derive(Clone)]
enum Partner {
    /// `udptalk-server --mode MODE --encoding ENCODING`.
    Ours {
        mode: &'static str,
        encoding: &'static str,
    },
    /// `python3 -u udp-server2.py PORT`.
    Tutorial,
    /// `socat UDP-LISTEN:0 PIPE`, as the matrix starts it.
    SocatEcho,
}

/// One pair: A (the partner) and B (our server), and the forged datagram A → B.
#[derive(Clone)]
struct Pair {
    a: Partner,
    b_mode: &'static str,
    b_encoding: &'static str,
    payload: &'static str,
}

impl Pair {
    fn name(&self) -> String {
        let ours = |mode: &str, encoding: &str| match encoding {
            "auto" => mode.to_owned(),
            _ => format!("{mode}/{encoding}"),
        };
        let a = match &self.a {
            Partner::Ours { mode, encoding } => ours(mode, encoding),
            Partner::Tutorial => "udp-server2.py".to_owned(),
            Partner::SocatEcho => "socat echo".to_owned(),
        };
        let payload = if self.payload == JSON { "json" } else { PLAIN };
        format!("{a} → {} ({payload})", ours(self.b_mode, self.b_encoding))
    }
}

/// The pairs of a family: the tutorial's server only on IPv4.
fn pairs(family: Family) -> Vec<Pair> {
    const MODES: [&str; 3] = ["count", "hello", "echo"];
    let ours = |mode, encoding| Partner::Ours { mode, encoding };
    let mut pairs = Vec::new();
    for a in MODES {
        for b in MODES {
            pairs.push(Pair {
                a: ours(a, "auto"),
                b_mode: b,
                b_encoding: "auto",
                payload: PLAIN,
            });
        }
    }
    for (a, b) in [("count", "count"), ("echo", "echo"), ("hello", "echo")] {
        pairs.push(Pair {
            a: ours(a, "auto"),
            b_mode: b,
            b_encoding: "auto",
            payload: JSON,
        });
    }
    for (a, b) in [
        ("json", "json"),
        ("json", "plain"),
        ("plain", "json"),
        ("plain", "plain"),
    ] {
        pairs.push(Pair {
            a: ours("echo", a),
            b_mode: "echo",
            b_encoding: b,
            payload: PLAIN,
        });
        pairs.push(Pair {
            a: ours("count", a),
            b_mode: "count",
            b_encoding: b,
            payload: JSON,
        });
    }
    for mode in MODES {
        if family == Family::V4 {
            pairs.push(Pair {
                a: Partner::Tutorial,
                b_mode: mode,
                b_encoding: "auto",
                payload: PLAIN,
            });
        }
        pairs.push(Pair {
            a: Partner::SocatEcho,
            b_mode: mode,
            b_encoding: "auto",
            payload: PLAIN,
        });
    }
    pairs
}

/// The independent programs, or why they are missing: pairs that need a missing one are
/// skipped, and named in the row's figures.
struct Tools {
    python: Result<(PathBuf, PathBuf), String>,
    socat: Result<PathBuf, String>,
}

impl Tools {
    fn probe() -> Tools {
        let root = crate::project_root();
        let script = root
            .parent()
            .unwrap_or(&root)
            .join("shared/seed/python/udp-server2.py");
        let python = match peers::which("python3") {
            None => Err("python3 is not installed".to_owned()),
            Some(_) if !script.is_file() => Err(format!("{} is missing", script.display())),
            Some(python) => Ok((python, script)),
        };
        Tools {
            python,
            socat: peers::which("socat").ok_or_else(|| "socat is not installed".to_owned()),
        }
    }

    fn missing(&self, partner: &Partner) -> Option<&str> {
        match partner {
            Partner::Ours { .. } => None,
            Partner::Tutorial => self.python.as_ref().err().map(String::as_str),
            Partner::SocatEcho => self.socat.as_ref().err().map(String::as_str),
        }
    }
}

/// What a pair showed.
struct Played {
    /// The pair's place in [`pairs`], so that failures print in table order.
    index: usize,
    name: String,
    /// Datagrams sent by both after the forged one (or a bound on them).
    sent: u64,
    /// How `sent` was reckoned, for the failure line.
    how: String,
    problems: Vec<String>,
    /// Summaries that are not of the expected form or whose books do not balance: the same
    /// problem in every server when the format is wrong, so the row shows one of them.
    books: Vec<String>,
}

/// The IPv4 row.
pub fn run_v4(bins: &Bins) -> Result<Checks, String> {
    run(bins, Family::V4)
}

/// The IPv6 row, skipped with the reason when `::1` cannot be bound.
pub fn run_v6(bins: &Bins) -> Result<Checks, String> {
    if let Err(reason) = peers::ipv6_loopback() {
        return Ok(Checks::skipped(reason));
    }
    run(bins, Family::V6)
}

fn run(bins: &Bins, family: Family) -> Result<Checks, String> {
    if let Err(reason) = forge::available() {
        return Ok(Checks::skipped(reason));
    }
    let tools = Tools::probe();
    let mut skipped = Vec::new();
    let pairs: Vec<Pair> = pairs(family)
        .into_iter()
        .filter(|pair| match tools.missing(&pair.a) {
            Some(reason) => {
                skipped.push(format!("{}: {reason}", pair.name()));
                false
            }
            None => true,
        })
        .collect();

    let queue = Mutex::new(pairs.iter().enumerate());
    let results = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..PARALLEL.min(pairs.len()) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut queue| queue.next());
                    let Some((index, pair)) = next else { break };
                    let mut played = Played {
                        index,
                        name: pair.name(),
                        sent: 0,
                        how: String::new(),
                        problems: Vec::new(),
                        books: Vec::new(),
                    };
                    if let Err(error) = play(bins, &tools, family, pair, &mut played) {
                        played.problems.push(error);
                    }
                    if let Ok(mut results) = results.lock() {
                        results.push(played);
                    }
                }
            });
        }
    });
    let mut results = results
        .into_inner()
        .map_err(|_| "a pair's thread panicked".to_owned())?;
    results.sort_by_key(|played| played.index);

    let mut checks = Checks::default();
    checks.check(results.len() == pairs.len(), || {
        format!("{} of {} pairs reported", results.len(), pairs.len())
    });
    for played in &results {
        for problem in &played.problems {
            checks.fail(format!("{}: {problem}", played.name));
        }
    }
    let books: Vec<(&str, &String)> = results
        .iter()
        .flat_map(|played| played.books.iter().map(|book| (played.name.as_str(), book)))
        .collect();
    if let Some((name, first)) = books.first() {
        let more = match books.len() - 1 {
            0 => String::new(),
            n => format!(" (and the same kind of problem in {n} more summaries)"),
        };
        checks.fail(format!("{name}: {first}{more}"));
    }
    let worst = results.iter().max_by_key(|played| played.sent);
    checks.figure(format!("{} pairs", results.len()));
    if let Some(worst) = worst {
        checks.figure(format!(
            "at most {} datagrams after the forged one ({}: {})",
            worst.sent, worst.name, worst.how
        ));
    }
    if !skipped.is_empty() {
        checks.figure(format!("skipped {}", skipped.join("; ")));
    }
    Ok(checks)
}

/// The partner, running.
enum Running {
    Ours(Server),
    Other(Proc),
}

/// Starts B and A, forges A → B, waits, stops both and checks the counts.
fn play(
    bins: &Bins,
    tools: &Tools,
    family: Family,
    pair: &Pair,
    played: &mut Played,
) -> Result<(), String> {
    let ip = family.ip();
    let b = start_ours(bins, ip, pair.b_mode, pair.b_encoding)?;
    let (a, a_addr) = match &pair.a {
        Partner::Ours { mode, encoding } => {
            let a = start_ours(bins, ip, mode, encoding)?;
            let addr = a.addr;
            (Running::Ours(a), addr)
        }
        Partner::Tutorial => {
            let (python, script) = tools.python.as_ref().map_err(Clone::clone)?;
            let port = peers::free_port(ip)?;
            let mut command = Command::new(python);
            command.arg("-u").arg(script).arg(port.to_string());
            let proc = Proc::spawn(command, None)?;
            wait_bound(&proc, port)?;
            (Running::Other(proc), SocketAddr::new(ip, port))
        }
        Partner::SocatEcho => {
            let socat = tools.socat.as_ref().map_err(Clone::clone)?;
            let (proc, addr, _) = peers::start_socat_echo(socat, ip)?;
            (Running::Other(proc), addr)
        }
    };

    let forged = forge::send_one(a_addr, b.addr, pair.payload.as_bytes());
    if forged.is_ok() {
        thread::sleep(SETTLE);
    }
    let b_received = stop_ours(b, "B", played)?;
    let a_received = match a {
        Running::Ours(a) => Some(stop_ours(a, "A", played)?),
        Running::Other(proc) => {
            drop(proc.kill());
            None
        }
    };
    forged?;

    let Some(b_received) = b_received else {
        return Ok(());
    };
    if b_received == 0 {
        played
            .problems
            .push("B received nothing: the forged datagram never arrived".to_owned());
        return Ok(());
    }
    (played.sent, played.how) = match a_received {
        Some(Some(a_received)) => (
            a_received + b_received - 1,
            format!("A received {a_received} + B received {b_received} − 1"),
        ),
        Some(None) => return Ok(()),
        None => (
            2 * b_received - 1,
            format!("≤ 2 × our received {b_received} − 1"),
        ),
    };
    if played.sent > MAX_DATAGRAMS {
        let sent = played.sent;
        let how = played.how.clone();
        played.problems.push(format!(
            "{sent} datagrams after one forged datagram ({how}), expected ≤ {MAX_DATAGRAMS}: \
             the two still answered each other after {:.1}s",
            SETTLE.as_secs_f64()
        ));
    }
    Ok(())
}

/// `udptalk-server --bind IP:0 --rate-limit 0 --quiet --mode MODE --encoding ENCODING`.
fn start_ours(bins: &Bins, ip: IpAddr, mode: &str, encoding: &str) -> Result<Server, String> {
    let bind = SocketAddr::new(ip, 0).to_string();
    Server::spawn(
        &bins.server,
        [
            "--bind",
            &bind,
            "--rate-limit",
            "0",
            "--quiet",
            "--idle",
            BACKSTOP_IDLE,
            "--mode",
            mode,
            "--encoding",
            encoding,
        ],
    )
}

/// Stops our server with SIGTERM; returns what it received, `None` (and a problem) when it
/// printed no usable summary.
fn stop_ours(server: Server, who: &str, played: &mut Played) -> Result<Option<u64>, String> {
    let output = server.terminate(STOP_DEADLINE)?;
    if output.code() != Some(0) {
        played.problems.push(format!(
            "{who} after SIGTERM: expected exit 0, got {}",
            output.describe_end()
        ));
    }
    let Some(summary) = Summary::find(&output.stderr_lines()) else {
        played
            .problems
            .push(format!("{who} printed no `summary: …` line"));
        return Ok(None);
    };
    if let Err(problem) = summary.server_books() {
        played.books.push(format!("{who}: {problem}"));
    }
    match summary.need("received") {
        Ok(received) => Ok(Some(received)),
        Err(problem) => {
            played.problems.push(format!("{who}: {problem}"));
            Ok(None)
        }
    }
}

/// Waits until `proc` holds a UDP socket on `port`: a forged datagram sent before would be
/// answered to a closed port, and the loop would never start.
fn wait_bound(proc: &Proc, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + BIND_TIMEOUT;
    loop {
        if peers::udp_ports_of(proc.id())?.contains(&port) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the tutorial's server did not bind port {port} within {}s",
                BIND_TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
}
