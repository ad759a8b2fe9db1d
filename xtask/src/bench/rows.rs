//! The rows of `cargo xtask bench`: who answers, who loads it, with what payload, window and
//! pinning, and which of issue 7's targets each row is judged by.
//!
//! Every dimension is covered once against the reference row, `count --quiet` at 32 in flight
//! with 14 bytes, rather than as a full cartesian product: modes (count, echo, hello), output
//! (`--quiet`, printing to a file), encodings (plain, JSON), `--workers 1` and `2`, payloads
//! (14 B, 1 KiB, 16 KiB) and windows (1, 32). Each `(payload, window, generator)` used has a
//! baseline row (the bare echo loop), measured in the same round as the rows it divides.

use std::fmt;

/// The payload of the 14-byte rows: the tutorial's `Hello Server!!` is 14 bytes, and so is the
/// smallest probe and sockperf's smallest message.
pub const SMALL: usize = 14;

/// `--size` of the JSON rows: the client's `--size` is the whole envelope with JSON, and an
/// envelope holding a probe takes about 93 bytes; 128 leaves room for any id. The row is
/// still divided by the 14-byte baseline: the envelope's cost is what target 3 measures.
pub const JSON_WIRE: usize = 128;

/// What a sockperf client's first message looks like (sequence 1, flags client | pong request,
/// length 14), for `bench --payload-hex` against `sockperf server`, which answers only
/// messages of its own format.
pub const SOCKPERF_PAYLOAD_HEX: &str = "000000000000000100030000000e";

/// Who answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Server {
    /// `echo-baseline ADDR`, or with `--sockperf` the same loop answering as sockperf's server.
    Baseline {
        /// Answer as `sockperf server` does (for `sockperf ping-pong`).
        sockperf: bool,
    },
    /// `udptalk-server --bind 127.0.0.1:0` with these arguments.
    Udptalk {
        /// Arguments after `--bind`.
        args: Vec<&'static str>,
        /// Per-datagram lines go to a file under `target/bench/` (else the row passes
        /// `--quiet`).
        print: bool,
    },
    /// `sockperf server -i 127.0.0.1 -p PORT`.
    Sockperf,
}

/// Who sends the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// `udptalk-client bench --output json`.
    Bench {
        /// `--encoding`.
        encoding: &'static str,
        /// `--payload-hex` instead of probes.
        payload_hex: Option<&'static str>,
    },
    /// `sockperf ping-pong --full-rtt`: one message in flight.
    SockperfPingPong,
}

impl Generator {
    /// The generator's family, which keys the baselines: rows are divided by a baseline
    /// measured with the same generator.
    pub fn family(self) -> &'static str {
        match self {
            Generator::Bench { .. } => "bench",
            Generator::SockperfPingPong => "sockperf ping-pong",
        }
    }
}

/// Which cores the two programs may run on (`taskset -c`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Both on core 0: at 1 in flight the server and the client take turns, and a shared core
    /// measures the path rather than the time to wake an idle core.
    SameCore,
    /// Server on core 1, client on core 0: at 32 in flight both work at once.
    SplitCores,
    /// Server free on cores 0 and 1 (its two workers spread), client on core 0.
    ServerBoth,
}

impl Pinning {
    /// The server's `taskset -c` list.
    pub fn server_cores(self, cores: usize) -> &'static str {
        match (self, cores) {
            (_, 0 | 1) | (Pinning::SameCore, _) => "0",
            (Pinning::SplitCores, _) => "1",
            (Pinning::ServerBoth, _) => "0,1",
        }
    }

    /// The client's `taskset -c` list.
    pub fn client_cores(self) -> &'static str {
        "0"
    }

    /// As the table shows it, e.g. `s1 c0`.
    pub fn describe(self, cores: usize) -> String {
        format!("s{} c{}", self.server_cores(cores), self.client_cores())
    }
}

/// One of issue 7's targets, judged on the row that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// 1: CPU per reply ≤ 1.1× the baseline's and replies/s ≥ 0.95× (count quiet, 32, 14 B).
    CountAtCap,
    /// 1: `bench` at 1 in flight against the baseline reaches ≥ 0.9× the replies/s of
    /// `sockperf ping-pong` against the same loop (carried by the ping-pong baseline row).
    GeneratorKeepsUp,
    /// 2: printing to a file ≥ 0.8× the baseline, no line dropped.
    PrintingAtCap,
    /// 3: JSON count quiet ≥ 0.85× the baseline.
    JsonAtCap,
    /// 4: at 1 in flight, RTT p50 ≤ 1.05× the baseline's.
    LatencyAtCap,
    /// 5: peak RSS under 16 MiB.
    SmallMemory,
    /// 6: against `sockperf server`, `bench --payload-hex` and `sockperf ping-pong` agree
    /// within 10% on replies/s and p50 (carried by the ping-pong row against sockperf).
    AgreesWithSockperf,
    /// 7: the server's `counted` = the bench's sent = received = highest `Access count`.
    ExactCount,
}

impl Target {
    /// The target's number in issue 7.
    pub fn number(self) -> u8 {
        match self {
            Target::CountAtCap | Target::GeneratorKeepsUp => 1,
            Target::PrintingAtCap => 2,
            Target::JsonAtCap => 3,
            Target::LatencyAtCap => 4,
            Target::SmallMemory => 5,
            Target::AgreesWithSockperf => 6,
            Target::ExactCount => 7,
        }
    }
}

/// One row of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Unique, e.g. `udptalk count --quiet 14 B @32`.
    pub name: String,
    /// Who answers.
    pub server: Server,
    /// Who loads it.
    pub generator: Generator,
    /// Payload bytes.
    pub size: usize,
    /// The client's `--size` when not `size` (JSON: the whole envelope, [`JSON_WIRE`]).
    pub wire_size: Option<usize>,
    /// Requests in flight.
    pub window: usize,
    /// Cores.
    pub pinning: Pinning,
    /// This row is the baseline of its `(size, window, generator family)`.
    pub baseline: bool,
    /// Targets judged on this row.
    pub targets: Vec<Target>,
}

/// The key that pairs a row with its baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BaselineKey {
    /// Payload bytes.
    pub size: usize,
    /// Requests in flight.
    pub window: usize,
    /// [`Generator::family`].
    pub family: &'static str,
}

impl Row {
    /// The key of the baseline this row is divided by.
    pub fn baseline_key(&self) -> BaselineKey {
        BaselineKey {
            size: self.size,
            window: self.window,
            family: self.generator.family(),
        }
    }

    /// The `udptalk-server` options the row needs that an older server may lack.
    pub fn needs_server_flags(&self) -> Vec<&'static str> {
        match &self.server {
            Server::Udptalk { args, .. } => args
                .iter()
                .copied()
                .filter(|arg| arg.starts_with("--workers"))
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// `14 B`, `1 KiB`, `16 KiB`.
pub fn show_size(size: usize) -> String {
    if size >= 1024 && size % 1024 == 0 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}

fn pinning_for(window: usize) -> Pinning {
    if window == 1 {
        Pinning::SameCore
    } else {
        Pinning::SplitCores
    }
}

fn bench(encoding: &'static str) -> Generator {
    Generator::Bench {
        encoding,
        payload_hex: None,
    }
}

fn baseline(size: usize, window: usize) -> Row {
    Row {
        name: format!("baseline echo {} @{window}", show_size(size)),
        server: Server::Baseline { sockperf: false },
        generator: bench("plain"),
        size,
        wire_size: None,
        window,
        pinning: pinning_for(window),
        baseline: true,
        targets: Vec::new(),
    }
}

/// A udptalk row: `mode`, `--quiet` unless `print`, extra server arguments, the client's
/// encoding, payload and window.
struct Ours {
    mode: &'static str,
    print: bool,
    extra: &'static [&'static str],
    encoding: &'static str,
    size: usize,
    window: usize,
    targets: &'static [Target],
}

impl Ours {
    fn row(self) -> Row {
        let mut args = vec!["--mode", self.mode];
        if self.encoding == "json" {
            args.extend(["--encoding", "auto"]);
        }
        args.extend_from_slice(self.extra);
        let output = if self.print { "> file" } else { "--quiet" };
        let mut name = format!("udptalk {} {output}", self.mode);
        for extra in self.extra {
            name.push(' ');
            name.push_str(extra);
        }
        if self.encoding != "plain" {
            name.push_str(&format!(" {}", self.encoding));
        }
        let wire_size = (self.encoding == "json").then_some(JSON_WIRE);
        match wire_size {
            Some(wire) => name.push_str(&format!(" {} envelope @{}", show_size(wire), self.window)),
            None => name.push_str(&format!(" {} @{}", show_size(self.size), self.window)),
        }
        let mut targets = self.targets.to_vec();
        targets.push(Target::SmallMemory);
        if self.window == 1 {
            targets.push(Target::LatencyAtCap);
        }
        Row {
            name,
            server: Server::Udptalk {
                args,
                print: self.print,
            },
            generator: bench(self.encoding),
            size: self.size,
            wire_size,
            window: self.window,
            pinning: if self.extra.contains(&"2") {
                Pinning::ServerBoth
            } else {
                pinning_for(self.window)
            },
            baseline: false,
            targets,
        }
    }
}

/// The table: baselines first, then udptalk's rows, then sockperf's.
pub fn rows() -> Vec<Row> {
    let ours = |mode, print, extra, encoding, size, window, targets| {
        Ours {
            mode,
            print,
            extra,
            encoding,
            size,
            window,
            targets,
        }
        .row()
    };
    let mut rows = vec![
        baseline(SMALL, 1),
        baseline(SMALL, 32),
        baseline(1024, 32),
        baseline(16 * 1024, 32),
    ];
    let exact: &[Target] = &[Target::ExactCount];
    rows.extend([
        ours(
            "count",
            false,
            &[],
            "plain",
            SMALL,
            32,
            &[Target::CountAtCap, Target::ExactCount],
        ),
        ours("count", false, &[], "plain", SMALL, 1, exact),
        ours(
            "count",
            true,
            &[],
            "plain",
            SMALL,
            32,
            &[Target::PrintingAtCap],
        ),
        ours("count", true, &[], "plain", SMALL, 1, &[]),
        ours("count", false, &[], "json", SMALL, 32, &[Target::JsonAtCap]),
        ours("echo", false, &[], "plain", SMALL, 32, &[]),
        ours("hello", false, &[], "plain", SMALL, 32, &[]),
        // Target 7 is judged where issue 7 states it (14 B, 1 and 2 workers); the table's
        // `exact` column still shows these rows' counts.
        ours("count", false, &[], "plain", 1024, 32, &[]),
        ours("count", false, &[], "plain", 16 * 1024, 32, &[]),
        ours("echo", false, &[], "plain", 16 * 1024, 32, &[]),
        ours(
            "count",
            false,
            &["--workers", "1"],
            "plain",
            SMALL,
            32,
            exact,
        ),
        ours(
            "count",
            false,
            &["--workers", "2"],
            "plain",
            SMALL,
            32,
            exact,
        ),
    ]);
    let sockperf_hex = Generator::Bench {
        encoding: "plain",
        payload_hex: Some(SOCKPERF_PAYLOAD_HEX),
    };
    rows.extend([
        Row {
            name: "sockperf server, bench --payload-hex 14 B @1".to_owned(),
            server: Server::Sockperf,
            generator: sockperf_hex,
            size: SMALL,
            wire_size: None,
            window: 1,
            pinning: Pinning::SameCore,
            baseline: false,
            targets: Vec::new(),
        },
        Row {
            name: "sockperf server, bench --payload-hex 14 B @32".to_owned(),
            server: Server::Sockperf,
            generator: sockperf_hex,
            size: SMALL,
            wire_size: None,
            window: 32,
            pinning: Pinning::SplitCores,
            baseline: false,
            targets: Vec::new(),
        },
        Row {
            name: "baseline --sockperf, sockperf ping-pong 14 B @1".to_owned(),
            server: Server::Baseline { sockperf: true },
            generator: Generator::SockperfPingPong,
            size: SMALL,
            wire_size: None,
            window: 1,
            pinning: Pinning::SameCore,
            baseline: true,
            targets: vec![Target::GeneratorKeepsUp],
        },
        Row {
            name: "sockperf server, sockperf ping-pong 14 B @1".to_owned(),
            server: Server::Sockperf,
            generator: Generator::SockperfPingPong,
            size: SMALL,
            wire_size: None,
            window: 1,
            pinning: Pinning::SameCore,
            baseline: false,
            targets: vec![Target::AgreesWithSockperf],
        },
    ]);
    rows
}

/// The rows whose name contains `filter`, with the baselines they are divided by and the rows
/// their targets compare with.
pub fn select(filter: Option<&str>) -> Vec<Row> {
    let all = rows();
    let Some(filter) = filter else {
        return all;
    };
    let chosen: Vec<&Row> = all.iter().filter(|row| row.name.contains(filter)).collect();
    let mut keys: Vec<BaselineKey> = chosen.iter().map(|row| row.baseline_key()).collect();
    for row in &chosen {
        for target in &row.targets {
            match target {
                Target::GeneratorKeepsUp => keys.push(BaselineKey {
                    size: SMALL,
                    window: 1,
                    family: "bench",
                }),
                // Its pair, `bench --payload-hex` against sockperf's server, needs bench's.
                Target::AgreesWithSockperf => keys.push(BaselineKey {
                    size: SMALL,
                    window: 1,
                    family: "bench",
                }),
                _ => {}
            }
        }
    }
    let sockperf_pair = chosen
        .iter()
        .any(|row| row.targets.contains(&Target::AgreesWithSockperf));
    all.iter()
        .filter(|row| {
            row.name.contains(filter)
                || (row.baseline && keys.contains(&row.baseline_key()))
                || (sockperf_pair
                    && row.server == Server::Sockperf
                    && row.window == 1
                    && row.generator.family() == "bench")
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_every_row_has_its_baseline() {
        let rows = rows();
        let names: HashSet<&str> = rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names.len(), rows.len());
        let baselines: Vec<BaselineKey> = rows
            .iter()
            .filter(|row| row.baseline)
            .map(Row::baseline_key)
            .collect();
        let unique: HashSet<&BaselineKey> = baselines.iter().collect();
        assert_eq!(unique.len(), baselines.len(), "one baseline per key");
        for row in &rows {
            assert!(baselines.contains(&row.baseline_key()), "{}", row.name);
        }
    }

    #[test]
    fn rows_are_few_and_cover_every_dimension() {
        let rows = rows();
        assert!((15..=22).contains(&rows.len()), "{} rows", rows.len());
        for text in [
            "count",
            "echo",
            "hello",
            "--quiet",
            "> file",
            "json",
            "--workers 1",
            "--workers 2",
            "14 B",
            "1 KiB",
            "16 KiB",
            "@1",
            "@32",
            "sockperf server",
        ] {
            assert!(rows.iter().any(|row| row.name.contains(text)), "{text}");
        }
    }

    #[test]
    fn a_filter_keeps_the_baselines_its_rows_need() {
        let rows = select(Some("json"));
        let names: Vec<&str> = rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "baseline echo 14 B @32",
                "udptalk count --quiet json 128 B envelope @32"
            ]
        );
        let rows = select(Some("sockperf server, sockperf"));
        assert_eq!(
            rows.len(),
            4,
            "{:?}",
            rows.iter().map(|r| &r.name).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_sockperf_payload_is_a_14_byte_client_message() {
        assert_eq!(SOCKPERF_PAYLOAD_HEX.len(), 2 * SMALL);
    }
}
