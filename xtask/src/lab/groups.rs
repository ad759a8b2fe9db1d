//! The lab rows of address forms on the bridge (s1, s2 and c2 share it): a link-local peer,
//! wildcard binds answering from the address asked, broadcast and multicast answered only
//! when the servers were told to, and by each server from its own unicast address.

use std::collections::BTreeSet;

use super::{Lab, S1_V4, S1_V6, S2_V4, port};
use crate::Bins;
use crate::faults::{Checks, Summary, stop_server};
use crate::peers::{Output, Server};
use crate::schema::OutputSchema;

/// The interface of s1, s2 and c2 on the bridge.
const DEV: &str = "eth0";

/// s1's second addresses, for the wildcard row.
const S1_SECOND_V4: &str = "198.51.100.12";
/// s1's second IPv6 address.
const S1_SECOND_V6: &str = "2001:db8:2::12";

/// The fixed port the group rows' servers share (the lab's namespaces are fresh, so any
/// port is free there): ≥ 40000, from this run's pid.
fn group_port() -> String {
    (40_000 + (std::process::id() * 7) % 20_000).to_string()
}

/// Sends `Hello Server!!` from c2 to `server` with `extra` flags and a short --timeout.
fn ask(lab: &Lab, bins: &Bins, server: &str, extra: &[&str]) -> Result<Output, String> {
    let mut args = vec!["--server", server, "--timeout", "1s"];
    args.extend_from_slice(extra);
    lab.client(bins, "c2", &args, &["Hello Server!!".to_owned()])
}

/// Checks that `client` exited 0 with an answer, for `what`; gives whether it did.
fn answered(client: &Output, what: &str, checks: &mut Checks) -> bool {
    let ok = client.code() == Some(0)
        && client
            .stdout_lines()
            .iter()
            .any(|line| line.starts_with("Server message: "));
    checks.check(ok, || {
        format!(
            "{what}: expected an answer and exit 0, got {}: {}",
            client.describe_end(),
            super::all_lines(client)
        )
    });
    ok
}

/// The addresses in `Reply from ADDR: TEXT` lines of `client`.
fn repliers(client: &Output) -> BTreeSet<String> {
    client
        .stdout_lines()
        .iter()
        .filter_map(|line| {
            let rest = line.strip_prefix("Reply from ")?;
            Some(rest.split_once(": ")?.0.to_owned())
        })
        .collect()
}

/// Stops `servers`, checks their books, and gives their summaries.
fn stop_all(servers: Vec<Server>, checks: &mut Checks) -> Result<Vec<Option<Summary>>, String> {
    let mut summaries = Vec::new();
    for server in servers {
        let summary = stop_server(server, checks)?;
        if let Some(summary) = &summary {
            summary.check_server_books(checks);
        }
        summaries.push(summary);
    }
    Ok(summaries)
}

/// The interface index of `dev` in `role`'s namespace (`/sys/class/net/DEV/ifindex` as seen
/// from inside it).
fn ifindex(lab: &Lab, role: &str, dev: &str) -> Result<String, String> {
    let command = lab.exec(role, "cat", &[&format!("/sys/class/net/{dev}/ifindex")]);
    let output = crate::peers::run(command, None, std::time::Duration::from_secs(5))?;
    output
        .stdout_lines()
        .first()
        .map(|line| line.trim().to_owned())
        .filter(|index| index.parse::<u32>().is_ok())
        .ok_or_else(|| format!("cannot read the index of {dev} in {}", lab.ns(role)))
}

/// Link-local: s1 on `[::]:0`; c2 asks `[fe80::10%eth0]:P` and `[fe80::10%INDEX]:P`.
pub fn link_local(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let server = lab.server(bins, "s1", "[::]:0", &[], &mut checks)?;
    let p = port(&server);
    let index = ifindex(lab, "c2", DEV)?;
    for scope in [DEV, index.as_str()] {
        let to = format!("[fe80::10%{scope}]:{p}");
        let client = ask(lab, bins, &to, &[])?;
        let _ = answered(&client, &to, &mut checks);
        checks.figure(format!("{to}: exit {:?}", client.code()));
        checks.output(&format!("client {to}"), &client);
    }
    stop_all(vec![server], &mut checks)?;
    Ok(checks)
}

/// Wildcards: s1 with a second address on its interface; servers on 0.0.0.0, [::] and
/// [::ffff:0.0.0.0] answer a request to each address from that address (the client is
/// connected, so it takes nothing else).
pub fn wildcards(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    lab.ip(
        "s1",
        &["addr", "add", &format!("{S1_SECOND_V4}/24"), "dev", DEV],
    )?;
    lab.ip(
        "s1",
        &[
            "-6",
            "addr",
            "add",
            &format!("{S1_SECOND_V6}/64"),
            "dev",
            DEV,
            "nodad",
        ],
    )?;
    let result = wildcards_with_two_addresses(lab, bins);
    let removed = lab
        .ip(
            "s1",
            &["addr", "del", &format!("{S1_SECOND_V4}/24"), "dev", DEV],
        )
        .and_then(|()| {
            lab.ip(
                "s1",
                &[
                    "-6",
                    "addr",
                    "del",
                    &format!("{S1_SECOND_V6}/64"),
                    "dev",
                    DEV,
                ],
            )
        });
    let mut checks = result?;
    if let Err(problem) = removed {
        checks.fail(problem);
    }
    Ok(checks)
}

/// [`wildcards`] once s1 has its second addresses.
fn wildcards_with_two_addresses(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let v4: &[&str] = &[S1_V4, S1_SECOND_V4];
    let both: &[&str] = &[S1_V4, S1_SECOND_V4, S1_V6, S1_SECOND_V6];
    let binds: [(&str, &[&str]); 3] = [
        ("0.0.0.0:0", v4),
        ("[::]:0", both),
        ("[::ffff:0.0.0.0]:0", v4),
    ];
    for (bind, addresses) in binds {
        let server = lab.server(bins, "s1", bind, &[], &mut checks)?;
        let p = port(&server);
        let mut ok = 0;
        for address in addresses {
            let to = if address.contains(':') {
                format!("[{address}]:{p}")
            } else {
                format!("{address}:{p}")
            };
            let client = ask(lab, bins, &to, &[])?;
            if answered(&client, &format!("{bind} asked at {to}"), &mut checks) {
                ok += 1;
            }
            checks.output(&format!("client {bind} → {to}"), &client);
        }
        checks.figure(format!("{bind}: {ok}/{} answered", addresses.len()));
        stop_all(vec![server], &mut checks)?;
    }
    Ok(checks)
}

/// Broadcast: s1 and s2 on `0.0.0.0:P` with --answer-group; c2 sends one broadcast and gets
/// two replies, one from each server's unicast address.
pub fn broadcast(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let p = group_port();
    let bind = format!("0.0.0.0:{p}");
    let servers = vec![
        lab.server(bins, "s1", &bind, &["--answer-group"], &mut checks)?,
        lab.server(bins, "s2", &bind, &["--answer-group"], &mut checks)?,
    ];
    let client = ask(lab, bins, &format!("198.51.100.255:{p}"), &["--broadcast"])?;
    let got = repliers(&client);
    let expected: BTreeSet<String> = [S1_V4, S2_V4]
        .iter()
        .map(|ip| format!("{ip}:{p}"))
        .collect();
    checks.check(client.code() == Some(0) && got == expected, || {
        format!(
            "expected exit 0 and replies from {expected:?}, got {} and replies from {got:?}",
            client.describe_end()
        )
    });
    checks.figure(format!("replies from {got:?}"));
    checks.output("client", &client);
    // The same in JSON Lines: a `group_reply` per host, every line valid by the schema.
    let json = ask(
        lab,
        bins,
        &format!("198.51.100.255:{p}"),
        &["--broadcast", "--output", "json"],
    )?;
    let schema = OutputSchema::load()?;
    let (problems, lines) =
        schema.check_stdout("client", &json.stdout_lines(), &mut BTreeSet::new());
    let from: BTreeSet<String> = lines
        .iter()
        .filter(|line| line["event"] == "group_reply")
        .filter_map(|line| line["from"].as_str().map(str::to_owned))
        .collect();
    checks.check(
        json.code() == Some(0) && problems.is_empty() && from == expected,
        || {
            format!(
                "--output json: expected exit 0 and group_reply lines from {expected:?}, valid \
                 by the schema; got {}, from {from:?}, problems {problems:?}",
                json.describe_end()
            )
        },
    );
    stop_all(servers, &mut checks)?;
    Ok(checks)
}

/// Group ignored (acceptance 2): servers without --answer-group or --join send nothing in
/// answer to a broadcast (0.0.0.0 and [::] servers) or to ff02::1 ([::] servers), by their
/// own output chain's counter; each datagram they received is counted as `group-ignored`. A
/// broadcast always reaches them (exactly 1 each); ff02::1 may be held back by the kernel
/// already (IPV6_MULTICAST_ALL off: the socket joined nothing), so at most 1.
pub fn group_ignored(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let p = group_port();
    let broadcast = format!("198.51.100.255:{p}");
    let all_nodes = format!("[ff02::1%{DEV}]:{p}");
    let v4 = format!("0.0.0.0:{p}");
    let v6 = format!("[::]:{p}");
    // Bind, where c2 asks, its flags, and whether the datagram must reach the servers.
    let cases: [(&str, &str, &[&str], bool); 3] = [
        (&v4, &broadcast, &["--broadcast"], true),
        (&v6, &broadcast, &["--broadcast"], true),
        (&v6, &all_nodes, &[], false),
    ];
    for (bind, to, extra, must_arrive) in cases {
        for server in ["s1", "s2"] {
            lab.nft(
                server,
                &format!(
                    "flush chain inet ut output\nreset counters table inet ut\n\
                     add rule inet ut output udp sport {p} counter name sent"
                ),
            )?;
        }
        let servers = vec![
            lab.server(bins, "s1", bind, &[], &mut checks)?,
            lab.server(bins, "s2", bind, &[], &mut checks)?,
        ];
        let client = ask(lab, bins, to, extra)?;
        let got = repliers(&client);
        checks.check(client.code() == Some(3) && got.is_empty(), || {
            format!(
                "{bind} asked at {to}: expected no reply (exit 3), got {} and replies from \
                 {got:?}",
                client.describe_end()
            )
        });
        checks.output(&format!("client {bind} → {to}"), &client);
        let mut sent = Vec::new();
        for server in ["s1", "s2"] {
            sent.push(lab.counter(server, "sent")?.0);
        }
        let summaries = stop_all(servers, &mut checks)?;
        checks.check(sent.iter().all(|&n| n == 0), || {
            format!(
                "{bind} asked at {to}: the servers sent {sent:?} datagrams (nft output), expected 0"
            )
        });
        let figures: Vec<(u64, u64)> = summaries
            .iter()
            .map(|summary| {
                summary.as_ref().map_or((0, 0), |s| {
                    (
                        s.get("received").unwrap_or(0),
                        s.get("group-ignored").unwrap_or(0),
                    )
                })
            })
            .collect();
        let ok = summaries.iter().all(Option::is_some)
            && figures.iter().all(|&(received, ignored)| {
                received == ignored
                    && if must_arrive {
                        ignored == 1
                    } else {
                        ignored <= 1
                    }
            });
        checks.check(ok, || {
            let lines: Vec<String> = summaries
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect();
            let want = if must_arrive {
                "exactly 1"
            } else {
                "at most 1"
            };
            format!(
                "{bind} asked at {to}: each summary must say `group-ignored N` ({want}) for all \
                 it received: {lines:?}"
            )
        });
        checks.figure(format!(
            "{bind} ← {to}: sent {sent:?}, group-ignored {:?}",
            figures
                .iter()
                .map(|&(_, ignored)| ignored)
                .collect::<Vec<_>>()
        ));
    }
    Ok(checks)
}

/// Multicast: s1 and s2 join `group` on eth0; c2 sends one datagram to it and collects two
/// replies, one from each server.
fn multicast(lab: &Lab, bins: &Bins, bind: &str, group: &str, to: &str) -> Result<Checks, String> {
    let mut checks = Checks::default();
    let join = format!("{group}%{DEV}");
    let servers = vec![
        lab.server(bins, "s1", bind, &["--join", &join], &mut checks)?,
        lab.server(bins, "s2", bind, &["--join", &join], &mut checks)?,
    ];
    let client = ask(lab, bins, to, &["--multicast-if", DEV])?;
    let got = repliers(&client);
    checks.check(client.code() == Some(0) && got.len() == 2, || {
        format!(
            "expected exit 0 and two replies, got {} and replies from {got:?}",
            client.describe_end()
        )
    });
    checks.figure(format!("replies from {got:?}"));
    checks.output("client", &client);
    stop_all(servers, &mut checks)?;
    Ok(checks)
}

/// [`multicast`] over IPv4, group 239.1.2.3.
pub fn multicast_v4(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let p = group_port();
    multicast(
        lab,
        bins,
        &format!("0.0.0.0:{p}"),
        "239.1.2.3",
        &format!("239.1.2.3:{p}"),
    )
}

/// [`multicast`] over IPv6, link-local group ff12::1.
pub fn multicast_v6(lab: &Lab, bins: &Bins) -> Result<Checks, String> {
    let p = group_port();
    multicast(
        lab,
        bins,
        &format!("[::]:{p}"),
        "ff12::1",
        &format!("[ff12::1%{DEV}]:{p}"),
    )
}
