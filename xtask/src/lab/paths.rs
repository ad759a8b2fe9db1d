//! The lab rows of a path that fails between c1 and s1: a firewall on the router that drops or
//! rejects, nothing listening on the server's host, and a path MTU of 1,280 the client's
//! first datagram does not fit.

use super::{Lab, ROUTER_V4, ROUTER_V6, S1_V4, S1_V6, all_lines, port};
use crate::Bins;
use crate::faults::{Checks, check_exit, stop_server};

/// `ADDR:PORT` with IPv6 in brackets.
fn target(ip: &str, port: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The nftables match of datagrams to `ip` (`ip daddr` or `ip6 daddr`).
fn daddr(ip: &str) -> &'static str {
    if ip.contains(':') {
        "ip6 daddr"
    } else {
        "ip daddr"
    }
}

/// A port nothing listens on in the lab (fresh namespaces), from this run's pid.
fn quiet_port() -> String {
    (40_000 + std::process::id() % 20_000).to_string()
}

/// The client's last stderr line, for a row's figure.
fn last_words(output: &crate::peers::Output) -> String {
    output
        .stderr_lines()
        .into_iter()
        .rev()
        .find(|line| !line.starts_with("summary: "))
        .unwrap_or_default()
}

/// Firewall drop: the router drops requests to s1's port; the client times out, exit 3.
pub fn drop(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = lab.server(bins, "s1", &format!("{S1_V4}:0"), &[], &mut checks)?;
    let p = port(&server);
    lab.nft(
        "r",
        &format!("add rule inet ut forward ip daddr {S1_V4} udp dport {p} counter name req drop"),
    )?;
    let client = lab.client(
        bins,
        "c1",
        &["--server", &target(S1_V4, &p), "--timeout", "300ms"],
        &["Hello Server!!".to_owned()],
    )?;
    let (dropped, _) = lab.counter("r", "req")?;
    stop_server(server, &mut checks)?;
    check_exit(&client, 3, &mut checks);
    checks.check(dropped == 1, || {
        format!("the router dropped {dropped} datagrams, expected 1")
    });
    checks.figure(format!(
        "router dropped {dropped}, exit {:?}: {:?}",
        client.code(),
        last_words(&client)
    ));
    checks.output("client", &client);
    Ok(checks)
}

/// Nothing listens on s1's port: s1's kernel answers ICMP port unreachable, the client
/// exits 4.
fn reject_host(lab: &Lab, bins: &Bins, ip: &str) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let client = lab.client(
        bins,
        "c1",
        &["--server", &target(ip, &quiet_port()), "--timeout", "2s"],
        &["Hello Server!!".to_owned()],
    )?;
    check_exit(&client, 4, &mut checks);
    checks.figure(format!(
        "exit {:?}: {:?}",
        client.code(),
        last_words(&client)
    ));
    checks.output("client", &client);
    Ok(checks)
}

/// [`reject_host`] over IPv4.
pub fn reject_host_v4(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    reject_host(lab, bins, S1_V4)
}

/// [`reject_host`] over IPv6.
pub fn reject_host_v6(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    reject_host(lab, bins, S1_V6)
}

/// A firewall on the router rejects requests to a listening s1, with port unreachable and
/// then admin-prohibited: the client exits 7 and names the router's address.
fn reject_firewall(lab: &Lab, bins: &Bins, ip: &str, router: &str) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let bind = target(if ip.contains(':') { "::" } else { "0.0.0.0" }, "0");
    let server = lab.server(bins, "s1", &bind, &[], &mut checks)?;
    let p = port(&server);
    for how in ["reject", "reject with icmpx admin-prohibited"] {
        lab.nft(
            "r",
            &format!(
                "flush chain inet ut forward\n\
                 add rule inet ut forward {} {ip} udp dport {p} counter name req {how}",
                daddr(ip)
            ),
        )?;
        let client = lab.client(
            bins,
            "c1",
            &["--server", &target(ip, &p), "--timeout", "2s"],
            &["Hello Server!!".to_owned()],
        )?;
        checks.check(client.code() == Some(7), || {
            format!(
                "`{how}`: client must exit 7 (refused by a host on the way), got {}",
                client.describe_end()
            )
        });
        let stderr = client.stderr_lines().join("\n");
        checks.check(stderr.contains(router), || {
            format!("`{how}`: client's stderr must name the router {router}: {stderr:?}")
        });
        checks.figure(format!(
            "`{how}`: exit {:?}: {:?}",
            client.code(),
            last_words(&client)
        ));
        checks.output(&format!("client ({how})"), &client);
    }
    let (rejected, _) = lab.counter("r", "req")?;
    checks.figure(format!("router rejected {rejected}"));
    stop_server(server, &mut checks)?;
    Ok(checks)
}

/// [`reject_firewall`] over IPv4.
pub fn reject_firewall_v4(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    reject_firewall(lab, bins, S1_V4, ROUTER_V4)
}

/// [`reject_firewall`] over IPv6.
pub fn reject_firewall_v6(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    reject_firewall(lab, bins, S1_V6, ROUTER_V6)
}

/// The message of the MTU rows: 1,400 bytes, over the bridge's 1,280 with either header.
const BIG: usize = 1400;

/// The body of the MTU rows' JSON message: its envelope (79 bytes more, 1,379) is over 1,280
/// but fits c1's own link (1,500), so that the router, not c1, is what it does not fit.
const BIG_JSON: usize = 1300;

/// A 1,400-byte message from c1 to s1 over the router, whose bridge has MTU 1,280. c1's route
/// cache is flushed before each case, so each starts without a learned path MTU: without
/// --dont-fragment the client warns naming 1280 and is answered (plain and json); with it,
/// exit 2 naming 1280.
fn mtu(lab: &Lab, bins: &Bins, ip: &str) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = lab.server(bins, "s1", &target(ip, "0"), &[], &mut checks)?;
    let p = port(&server);
    let to = target(ip, &p);
    let family = if ip.contains(':') { "-6" } else { "-4" };
    let cases: [(&str, &[&str], usize, i32); 3] = [
        ("plain", &[], BIG, 0),
        ("json", &["--encoding", "json"], BIG_JSON, 0),
        ("--dont-fragment", &["--dont-fragment"], BIG, 2),
    ];
    for (case, extra, size, code) in cases {
        let message = vec!["x".repeat(size)];
        lab.ip("c1", &[family, "route", "flush", "cache"])?;
        let mut args = vec!["--server", to.as_str(), "--timeout", "1s"];
        args.extend_from_slice(extra);
        let client = lab.client(bins, "c1", &args, &message)?;
        checks.check(client.code() == Some(code), || {
            format!(
                "{case}: client must exit {code}, got {}",
                client.describe_end()
            )
        });
        let stderr = client.stderr_lines().join("\n");
        checks.check(stderr.contains("1280"), || {
            format!("{case}: client's stderr must name the path MTU 1280: {stderr:?}")
        });
        if code == 0 {
            let answered = client
                .stdout_lines()
                .iter()
                .any(|line| line.contains("Access count: "));
            checks.check(answered, || {
                format!("{case}: no answer printed: {}", all_lines(&client))
            });
        }
        checks.figure(format!(
            "{case}: exit {:?}: {:?}",
            client.code(),
            last_words(&client)
        ));
        checks.output(&format!("client ({case})"), &client);
    }
    stop_server(server, &mut checks)?;
    Ok(checks)
}

/// [`mtu`] over IPv4.
pub fn mtu_v4(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    mtu(lab, bins, S1_V4)
}

/// [`mtu`] over IPv6.
pub fn mtu_v6(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    mtu(lab, bins, S1_V6)
}
