//! The lab: test hosts in network namespaces, for what loopback cannot show (a router between
//! client and server, a firewall on it, a path MTU, loss made by the kernel, a shared broadcast
//! domain). `cargo xtask lab` runs its rows alone; `cargo xtask test` runs them as a stage after
//! strace. Both print into the shared [`Tally`].
//!
//! Topology, every namespace named `ut-<pid>-<role>`:
//!
//! ```text
//!  c1 (192.0.2.2, 2001:db8:1::2)  MTU 1500
//!   │ eth0 ─ c1
//!  r  (192.0.2.1 | br0 198.51.100.1, 2001:db8:2::1; forwarding; nftables `inet ut` forward)
//!   │ br0 (MTU 1280), ports s1, s2, c2
//!  ├ s1 (198.51.100.10, 2001:db8:2::10, fe80::10)   nftables `inet ut` output
//!  ├ s2 (198.51.100.11, 2001:db8:2::11, fe80::11)   nftables `inet ut` output
//!  └ c2 (198.51.100.20, 2001:db8:2::20, fe80::20)
//! ```
//!
//! So c1 → s1 crosses the router (its firewall, its loss, the path MTU 1,280), and s1, s2, c2
//! share a broadcast domain. Addresses are added with `nodad`, each veth has a fixed link-local
//! address, and ICMP rate limits are off in every namespace. nftables tables live only inside
//! the namespaces, never in the host's.
//!
//! [`Lab`] is the guard: its `Drop` deletes every namespace it made (links and tables go with
//! them), after a failed row or a panic too; at start, leftovers `ut-<pid>-*` of processes
//! that are gone are deleted. The last row checks that nothing of the run is left.
//!
//! Without root, `ip`, `nft` or network namespaces, every row is skipped with the reason.
//! Traffic stays inside the lab's namespaces.

mod groups;
mod limits;
mod paths;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::Bins;
use crate::faults::{BACKSTOP_IDLE, Checks};
use crate::peers::{self, Output, Server};
use crate::tally::{Outcome, Tally};

/// Options of `cargo xtask lab`.
#[derive(clap::Args)]
pub struct Args {
    /// Run only the lab rows whose name contains this text (e.g. `mtu`, `v6`, `broadcast`).
    #[arg(long, value_name = "TEXT")]
    filter: Option<String>,
    /// Leave the lab's namespaces up at the end, for debugging, and print how to remove them.
    #[arg(long)]
    keep: bool,
}

/// `cargo xtask lab`: builds the binaries, then runs the lab rows.
pub fn run(args: &Args) -> Result<(), String> {
    crate::cargo(&["build", "--workspace", "--bins"])?;
    let mut tally = Tally::default();
    println!("==> lab (test hosts in network namespaces)");
    stage(
        &Bins::locate()?,
        args.filter.as_deref(),
        args.keep,
        &mut tally,
    );
    println!(
        "{} passed, {} failed, {} skipped",
        tally.passed, tally.failed, tally.skipped
    );
    if tally.passed + tally.failed + tally.skipped == 0 {
        return Err(format!(
            "no lab row's name contains {:?}: `cargo xtask lab` lists them all without --filter",
            args.filter.as_deref().unwrap_or_default()
        ));
    }
    if tally.failed == 0 {
        Ok(())
    } else {
        Err(format!("{} rows failed", tally.failed))
    }
}

/// A lab row: its name and the function that plays it in the lab.
type Row = (&'static str, fn(&Lab, &Bins) -> Result<Checks, String>);

/// The rows, in the order they run. [`LEFT_NOTHING`] follows them, once the lab is gone.
const ROWS: [Row; 16] = [
    (
        "lab rate limit: c1 → s1 (198.51.100.10, default 1000/s, burst 2000): router counts \
         answers of a fast burst, then of a steady 3000/s",
        limits::rate_limit,
    ),
    (
        "lab amplification: 1-byte datagrams to a json server on 198.51.100.10: router counts \
         answer bytes ≤ 3 × request bytes",
        limits::amplification,
    ),
    (
        "lab kernel loss: router drops 20% of udp both ways (numgen random): json client, 100 \
         messages, each answered once, server counted 100, duplicates > 0",
        limits::kernel_loss,
    ),
    (
        "lab firewall drop: router `udp dport P drop` → client exit 3",
        paths::drop,
    ),
    (
        "lab reject by the server's host v4: nothing listens on 198.51.100.10:P → client exit 4",
        paths::reject_host_v4,
    ),
    (
        "lab reject by the server's host v6: nothing listens on [2001:db8:2::10]:P → client \
         exit 4",
        paths::reject_host_v6,
    ),
    (
        "lab firewall reject v4: router `reject` and `reject with icmpx admin-prohibited` → \
         client exit 7 naming 192.0.2.1",
        paths::reject_firewall_v4,
    ),
    (
        "lab firewall reject v6: router `reject` and `reject with icmpx admin-prohibited` → \
         client exit 7 naming 2001:db8:1::1",
        paths::reject_firewall_v6,
    ),
    (
        "lab path mtu v4: 1400 B plain, 1379 B json over a 1280 path: answered with a warning \
         naming 1280; --dont-fragment → exit 2 naming 1280",
        paths::mtu_v4,
    ),
    (
        "lab path mtu v6: 1400 B plain, 1379 B json over a 1280 path: answered with a warning \
         naming 1280; --dont-fragment → exit 2 naming 1280",
        paths::mtu_v6,
    ),
    (
        "lab link-local: s1 on [::]:0, c2 → [fe80::10%eth0]:P and [fe80::10%INDEX]:P answered",
        groups::link_local,
    ),
    (
        "lab wildcards: s1 on 0.0.0.0, [::], [::ffff:0.0.0.0] with two addresses: each \
         answered from the address asked",
        groups::wildcards,
    ),
    (
        "lab broadcast: s1 and s2 on 0.0.0.0:P --answer-group, c2 --broadcast to \
         198.51.100.255:P → two replies, one from each (also as JSON Lines, valid by the \
         schema)",
        groups::broadcast,
    ),
    (
        "lab group ignored: s1 and s2 on 0.0.0.0:P / [::]:P without --answer-group: broadcast \
         and ff02::1 get nothing, 0 sent (nft), every datagram received group-ignored",
        groups::group_ignored,
    ),
    (
        "lab multicast v4: s1 and s2 --join 239.1.2.3%eth0, c2 → 239.1.2.3:P → two replies",
        groups::multicast_v4,
    ),
    (
        "lab multicast v6: s1 and s2 --join ff12::1%eth0, c2 → [ff12::1%eth0]:P → two replies",
        groups::multicast_v6,
    ),
];

/// The name of the last row, which checks that the lab left nothing behind.
const LEFT_NOTHING: &str = "lab left nothing behind: no ut-<pid>-* namespace (links and nft \
                            tables go with them)";

/// The lab stage: builds the lab (or finds why it cannot), plays the rows whose name contains
/// `filter` and removes the lab (unless `keep`), then checks that nothing is left (that row
/// runs whenever the lab was built, whatever the filter).
pub fn stage(bins: &Bins, filter: Option<&str>, keep: bool, tally: &mut Tally) {
    let started = Instant::now();
    let wanted = |name: &str| filter.is_none_or(|filter| name.contains(filter));
    let rows: Vec<&Row> = ROWS.iter().filter(|(name, _)| wanted(name)).collect();
    if rows.is_empty() && !wanted(LEFT_NOTHING) {
        return;
    }
    let names = rows.iter().map(|(name, _)| *name).chain([LEFT_NOTHING]);
    let stop = Stop::listen();
    let lab = match Lab::build(keep) {
        Ok(lab) => lab,
        Err(Unusable::Skip(reason)) => {
            for name in names {
                tally.record(name, Outcome::Skip(reason.clone()));
            }
            return;
        }
        Err(Unusable::Fail(problem)) => {
            for name in names {
                tally.record(name, Outcome::Fail(vec![problem.clone()]));
            }
            return;
        }
    };
    for (index, (name, row)) in rows.iter().enumerate() {
        if let Some(signal) = stop.caught() {
            for (name, _) in &rows[index..] {
                tally.record(
                    name,
                    Outcome::Fail(vec![format!(
                        "not run: the lab was interrupted ({signal}) and is being removed"
                    )]),
                );
            }
            break;
        }
        let outcome = match row(&lab, bins) {
            Ok(checks) => checks.outcome(),
            Err(error) => Outcome::Fail(vec![error]),
        };
        // The next row starts from a clean router and servers, or this one fails.
        let outcome = match lab.reset() {
            Ok(()) => outcome,
            Err(problem) => Outcome::Fail(vec![problem]),
        };
        tally.record(name, outcome);
    }
    let prefix = lab.prefix.clone();
    drop(lab);
    let outcome = if keep {
        Outcome::Skip("--keep: the lab is left up on purpose".to_owned())
    } else {
        match namespaces() {
            Ok(names) => {
                let left: Vec<String> = names
                    .into_iter()
                    .filter(|name| name.starts_with(&prefix))
                    .collect();
                if left.is_empty() {
                    Outcome::Pass(Some(format!("0 namespaces {prefix}*")))
                } else {
                    Outcome::Fail(vec![format!("left behind: {}", left.join(", "))])
                }
            }
            Err(problem) => Outcome::Fail(vec![problem]),
        }
    };
    tally.record(LEFT_NOTHING, outcome);
    println!(
        "lab: {} rows in {:.1}s",
        rows.len() + 1,
        started.elapsed().as_secs_f64()
    );
}

/// SIGINT, SIGTERM and SIGHUP while the lab is up: caught as a flag rather than ending xtask,
/// so that the rows stop and [`Lab`]'s `Drop` still removes the namespaces (a Ctrl-C also
/// reaches the row's programs, which end, so the row in progress fails at once).
struct Stop {
    #[cfg(unix)]
    caught: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Stop {
    #[cfg(unix)]
    fn listen() -> Stop {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let caught = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            // Only if it cannot be caught does a signal end xtask as before; leftovers of a
            // run that is gone are removed by the next one.
            if let Err(e) =
                signal_hook::flag::register_usize(signal, caught.clone(), signal as usize)
            {
                eprintln!(
                    "lab: cannot catch signal {signal} ({e}); if it comes, the next run removes what this one leaves"
                );
            }
        }
        Stop { caught }
    }

    #[cfg(not(unix))]
    fn listen() -> Stop {
        Stop {}
    }

    /// The signal caught, named, if any.
    fn caught(&self) -> Option<&'static str> {
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
            match self.caught.load(std::sync::atomic::Ordering::SeqCst) {
                0 => None,
                n if n == SIGINT as usize => Some("SIGINT"),
                n if n == SIGTERM as usize => Some("SIGTERM"),
                n if n == SIGHUP as usize => Some("SIGHUP"),
                _ => Some("a signal"),
            }
        }
        #[cfg(not(unix))]
        None
    }
}

/// The hosts of the lab, each a namespace `ut-<pid>-<role>`.
pub const ROLES: [&str; 5] = ["c1", "r", "s1", "s2", "c2"];

/// s1's address on the bridge.
pub const S1_V4: &str = "198.51.100.10";
/// s1's IPv6 address on the bridge.
pub const S1_V6: &str = "2001:db8:2::10";
/// s2's address on the bridge.
pub const S2_V4: &str = "198.51.100.11";
/// The router's address on c1's link: the source of its ICMP errors to c1.
pub const ROUTER_V4: &str = "192.0.2.1";
/// The router's IPv6 address on c1's link.
pub const ROUTER_V6: &str = "2001:db8:1::1";

/// How long a client in the lab may run before it is killed (its own timeouts are shorter).
const CLIENT_DEADLINE: Duration = Duration::from_secs(30);

/// Why the lab cannot be built.
enum Unusable {
    /// Not here (no root, no `ip`, no `nft`, no namespaces): the rows are skipped.
    Skip(String),
    /// It should have worked: the rows fail.
    Fail(String),
}

/// The lab's namespaces, deleted when dropped (unless kept).
pub struct Lab {
    /// `ut-<pid>-`.
    prefix: String,
    /// The namespaces made so far.
    made: Vec<String>,
    keep: bool,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.keep {
            println!("lab: kept up for debugging; remove it with:");
            for ns in &self.made {
                println!("    ip netns del {ns}");
            }
            return;
        }
        for ns in self.made.iter().rev() {
            if let Err(problem) = ip(&["netns", "del", ns]) {
                eprintln!("lab: cannot remove namespace {ns}: {problem}");
            }
        }
    }
}

impl Lab {
    /// Checks what the lab needs, removes leftovers of dead runs and builds the topology.
    fn build(keep: bool) -> Result<Lab, Unusable> {
        if !cfg!(target_os = "linux") {
            return Err(Unusable::Skip(
                "network namespaces are Linux only".to_owned(),
            ));
        }
        if !is_root() {
            return Err(Unusable::Skip(
                "needs root (network namespaces, veth, nftables); CI runs it as root".to_owned(),
            ));
        }
        for (program, package) in [("ip", "iproute2"), ("nft", "nftables")] {
            if peers::which(program).is_none() {
                return Err(Unusable::Skip(format!(
                    "`{program}` is not installed (package {package}; .ci/run installs it)"
                )));
            }
        }
        remove_dead_leftovers();
        let prefix = format!("ut-{}-", std::process::id());
        let mut lab = Lab {
            prefix,
            made: Vec::new(),
            keep,
        };
        for role in ROLES {
            let ns = lab.ns(role);
            ip(&["netns", "add", &ns]).map_err(|problem| {
                Unusable::Skip(format!("cannot make a network namespace here: {problem}"))
            })?;
            lab.made.push(ns);
        }
        // nftables may be missing from the kernel even where `nft` is installed.
        lab.nft("r", "add table inet ut").map_err(Unusable::Skip)?;
        lab.topology().map_err(Unusable::Fail)?;
        Ok(lab)
    }

    /// The namespace of `role`: `ut-<pid>-<role>`.
    pub fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    /// `ip -n NS ARGS…` for `role`.
    pub fn ip(&self, role: &str, args: &[&str]) -> Result<(), String> {
        let ns = self.ns(role);
        let mut full = vec!["-n", ns.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// Writes `value` to `/proc/sys/KEY` (dots for slashes) inside `role`'s namespace.
    fn sysctl(&self, role: &str, key: &str, value: &str) -> Result<(), String> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        let script = format!("echo {value} > {path}");
        let output = peers::run(self.exec(role, "sh", &["-c", &script]), None, CMD_DEADLINE)?;
        ok(&output, &format!("{} in {}", script, self.ns(role)))
    }

    /// `ip netns exec NS PROGRAM ARGS…` for `role`, not started.
    pub fn exec(&self, role: &str, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.ns(role)])
            .arg(program)
            .args(args);
        command
    }

    /// Runs the nftables `script` (commands, one a line) in `role`'s namespace.
    pub fn nft(&self, role: &str, script: &str) -> Result<(), String> {
        let output = peers::run(
            self.exec(role, "nft", &["-f", "-"]),
            Some(script.as_bytes().to_vec()),
            CMD_DEADLINE,
        )?;
        ok(&output, &format!("nft in {}: {script:?}", self.ns(role)))
    }

    /// The packets and bytes of the named counter `name` of table `inet ut` in `role`.
    pub fn counter(&self, role: &str, name: &str) -> Result<(u64, u64), String> {
        let output = peers::run(
            self.exec(role, "nft", &["list", "counter", "inet", "ut", name]),
            None,
            CMD_DEADLINE,
        )?;
        ok(&output, &format!("nft list counter inet ut {name}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |word: &str| {
            words
                .iter()
                .position(|w| *w == word)
                .and_then(|at| words.get(at + 1)?.parse::<u64>().ok())
        };
        match (after("packets"), after("bytes")) {
            (Some(packets), Some(bytes)) => Ok((packets, bytes)),
            _ => Err(format!(
                "cannot read packets and bytes of counter {name} in {}: {text:?}",
                self.ns(role)
            )),
        }
    }

    /// The UDP datagrams `role`'s kernel dropped for a full receive buffer (`RcvbufErrors` of
    /// `/proc/net/snmp` as seen from inside the namespace).
    pub fn rcvbuf_errors(&self, role: &str) -> Result<u64, String> {
        let output = peers::run(
            self.exec(role, "cat", &["/proc/net/snmp"]),
            None,
            CMD_DEADLINE,
        )?;
        ok(&output, "cat /proc/net/snmp")?;
        let udp: Vec<Vec<String>> = output
            .stdout_lines()
            .iter()
            .filter_map(|line| line.strip_prefix("Udp: "))
            .map(|line| line.split_whitespace().map(str::to_owned).collect())
            .collect();
        let (Some(names), Some(values)) = (udp.first(), udp.get(1)) else {
            return Err(format!(
                "no Udp lines in /proc/net/snmp of {}",
                self.ns(role)
            ));
        };
        names
            .iter()
            .position(|name| name == "RcvbufErrors")
            .and_then(|at| values.get(at)?.parse().ok())
            .ok_or_else(|| format!("no RcvbufErrors in /proc/net/snmp of {}", self.ns(role)))
    }

    /// Builds the links, addresses, routes, sysctls and nftables tables.
    fn topology(&self) -> Result<(), String> {
        for role in ROLES {
            self.ip(role, &["link", "set", "lo", "up"])?;
            self.sysctl(role, "net.ipv4.icmp_ratelimit", "0")?;
            self.sysctl(role, "net.ipv6.icmp.ratelimit", "0")?;
            self.sysctl(role, "net.ipv6.conf.all.accept_dad", "0")?;
            self.sysctl(role, "net.ipv6.conf.default.accept_dad", "0")?;
        }
        self.sysctl("r", "net.ipv4.ip_forward", "1")?;
        self.sysctl("r", "net.ipv6.conf.all.forwarding", "1")?;
        let c1 = self.ns("c1");
        self.ip(
            "r",
            &[
                "link", "add", "c1", "type", "veth", "peer", "name", "eth0", "netns", &c1,
            ],
        )?;
        self.ip(
            "r",
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ],
        )?;
        for host in ["s1", "s2", "c2"] {
            let ns = self.ns(host);
            self.ip(
                "r",
                &[
                    "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            self.ip(host, &["link", "set", "eth0", "mtu", "1280"])?;
            self.ip("r", &["link", "set", host, "mtu", "1280", "master", "br0"])?;
        }
        self.ip("r", &["link", "set", "br0", "mtu", "1280"])?;
        let links: [Link; 6] = [
            (
                "c1",
                "eth0",
                "192.0.2.2/24",
                "2001:db8:1::2/64",
                "fe80::2/64",
                Some((ROUTER_V4, ROUTER_V6)),
            ),
            (
                "r",
                "c1",
                "192.0.2.1/24",
                "2001:db8:1::1/64",
                "fe80::1/64",
                None,
            ),
            (
                "r",
                "br0",
                "198.51.100.1/24",
                "2001:db8:2::1/64",
                "fe80::1/64",
                None,
            ),
            (
                "s1",
                "eth0",
                "198.51.100.10/24",
                "2001:db8:2::10/64",
                "fe80::10/64",
                Some(("198.51.100.1", "2001:db8:2::1")),
            ),
            (
                "s2",
                "eth0",
                "198.51.100.11/24",
                "2001:db8:2::11/64",
                "fe80::11/64",
                Some(("198.51.100.1", "2001:db8:2::1")),
            ),
            (
                "c2",
                "eth0",
                "198.51.100.20/24",
                "2001:db8:2::20/64",
                "fe80::20/64",
                Some(("198.51.100.1", "2001:db8:2::1")),
            ),
        ];
        for (role, dev, v4, v6, local, gateways) in links {
            self.ip(role, &["link", "set", dev, "addrgenmode", "none"])?;
            self.ip(role, &["addr", "add", v4, "brd", "+", "dev", dev])?;
            for v6 in [v6, local] {
                self.ip(role, &["-6", "addr", "add", v6, "dev", dev, "nodad"])?;
            }
            self.ip(role, &["link", "set", dev, "up"])?;
            if let Some((via4, via6)) = gateways {
                self.ip(role, &["route", "add", "default", "via", via4])?;
                self.ip(role, &["-6", "route", "add", "default", "via", via6])?;
            }
        }
        for port in ["s1", "s2", "c2"] {
            self.ip("r", &["link", "set", port, "up"])?;
        }
        self.nft("r", ROUTER_TABLE)?;
        for server in ["s1", "s2"] {
            self.nft(server, "add table inet ut")?;
            self.nft(server, SERVER_TABLE)?;
        }
        Ok(())
    }

    /// After each row: the rules it added are flushed and the counters reset.
    fn reset(&self) -> Result<(), String> {
        self.nft(
            "r",
            "flush chain inet ut forward\nreset counters table inet ut",
        )?;
        for server in ["s1", "s2"] {
            self.nft(
                server,
                "flush chain inet ut output\nreset counters table inet ut",
            )?;
        }
        Ok(())
    }

    /// `udptalk-server --bind BIND --quiet --idle 30s ARGS…` in `role`'s namespace, announced.
    pub fn server(
        &self,
        bins: &Bins,
        role: &str,
        bind: &str,
        args: &[&str],
        checks: &mut Checks,
    ) -> Result<Server, String> {
        let ns = self.ns(role);
        let mut full: Vec<&std::ffi::OsStr> = vec![
            "netns".as_ref(),
            "exec".as_ref(),
            ns.as_ref(),
            bins.server.as_os_str(),
        ];
        full.extend(
            ["--bind", bind, "--quiet", "--idle", BACKSTOP_IDLE]
                .iter()
                .chain(args)
                .map(|arg| std::ffi::OsStr::new(*arg)),
        );
        let server = Server::spawn_after_logs(Path::new("ip"), full, 5)?;
        checks.check(server.early.is_empty(), || {
            format!(
                "`{}`: the first stderr line must be `listening on udp ADDR`; before it came {:?}",
                server.shown, server.early
            )
        });
        Ok(server)
    }

    /// `udptalk-client ARGS… [-- MESSAGES…]` in `role`'s namespace, run to its end.
    pub fn client(
        &self,
        bins: &Bins,
        role: &str,
        args: &[&str],
        messages: &[String],
    ) -> Result<Output, String> {
        let mut command = self.exec(role, &bins.client, args);
        if !messages.is_empty() {
            command.arg("--").args(messages);
        }
        peers::run(command, None, CLIENT_DEADLINE)
    }
}

/// A host's end of a link: role, interface, IPv4, IPv6 and link-local addresses, and the
/// gateways of its default routes (IPv4, IPv6), if any.
type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<(&'static str, &'static str)>,
);

/// The router's table: named counters the rows count into, and the forward chain they add
/// their rules to.
const ROUTER_TABLE: &str = "table inet ut {
    counter req {}
    counter ans {}
    chain forward { type filter hook forward priority 0; policy accept; }
}";

/// A server's table: a named counter of what it sent, and the output chain.
const SERVER_TABLE: &str = "table inet ut {
    counter sent {}
    chain output { type filter hook output priority 0; policy accept; }
}";

/// How long one `ip` or `nft` command may take.
const CMD_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `ip ARGS…`.
fn ip(args: &[&str]) -> Result<(), String> {
    let mut command = Command::new("ip");
    command.args(args);
    let output = peers::run(command, None, CMD_DEADLINE)?;
    ok(&output, &format!("ip {}", args.join(" ")))
}

/// `Ok` if the command exited 0, else what it printed.
fn ok(output: &Output, what: &str) -> Result<(), String> {
    if output.code() == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "`{what}` failed ({}): {}",
            output.describe_end(),
            String::from_utf8_lossy(&output.stderr).trim_end()
        ))
    }
}

/// Whether this process runs as root (uid 0 in `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// The names of the network namespaces (`ip netns list`, first word of each line).
fn namespaces() -> Result<Vec<String>, String> {
    let mut command = Command::new("ip");
    command.args(["netns", "list"]);
    let output = peers::run(command, None, CMD_DEADLINE)?;
    ok(&output, "ip netns list")?;
    Ok(output
        .stdout_lines()
        .iter()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect())
}

/// Deletes `ut-<pid>-*` namespaces whose process is gone (a run killed before its cleanup).
fn remove_dead_leftovers() {
    let Ok(names) = namespaces() else { return };
    for name in names {
        let Some(pid) = name
            .strip_prefix("ut-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            println!("lab: removing {name}, left by a run that is gone (pid {pid})");
            if let Err(problem) = ip(&["netns", "del", &name]) {
                eprintln!("lab: cannot remove {name}: {problem}");
            }
        }
    }
}

/// The `listening on udp ADDR` port of `server`, as text.
pub fn port(server: &Server) -> String {
    server.addr.port().to_string()
}

/// The lines of `output`'s stdout and stderr together, for messages.
pub fn all_lines(output: &Output) -> String {
    let mut lines = output.stdout_lines();
    lines.extend(output.stderr_lines());
    lines.join("\n")
}
