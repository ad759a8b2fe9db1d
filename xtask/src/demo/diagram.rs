//! `cargo xtask demo --diagram`: the tutorial's figure — the client's and the server's socket
//! calls side by side, each datagram an arrow from the call that sent it to the call that
//! received it — drawn from the calls the two programs traced in this run (`--trace`).
//!
//! A [`Part`] is one exchange of the demo. Its calls are merged by their wall-clock times, with
//! one correction: a receive is never drawn before the send of the datagram it received (the
//! two lines are stamped as each call returns, and a send returns after the receiver may
//! already have woken up). Datagrams are matched first come, first served per direction, by
//! size where both calls show it; a datagram from or to a peer outside the two programs (the
//! demo's own raw exchanges) is a dashed arrow from or to the middle.
//!
//! [`Part::text`] draws it for the terminal; [`svg`] draws every part into one SVG document.

use std::time::{Duration, SystemTime};

use svg::Document;
use svg::node::element::{Definitions, Group, Line, Marker, Path, Rectangle, Text};

use crate::trace::Call;

/// Which program made a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `udptalk-client`.
    Client,
    /// `udptalk-server`.
    Server,
}

/// One call of a part, in the merged order.
#[derive(Debug, Clone)]
pub struct Row {
    /// Who made it.
    pub side: Side,
    /// The call.
    pub call: Call,
    /// Whether it sends (`Some(true)`) or receives datagrams.
    pub sends: Option<bool>,
    /// Whether every datagram it carries is matched to a call of the other program.
    pub matched: bool,
}

/// One exchange of the demo, merged: its rows in order and its datagrams as (sending row,
/// receiving row) pairs.
#[derive(Debug, Clone)]
pub struct Part {
    /// The part's title.
    pub title: String,
    /// The time of the first call, from which the rows' times are counted.
    pub start: SystemTime,
    /// The calls of both programs.
    pub rows: Vec<Row>,
    /// Each matched datagram: the index of the row that sent it, and of the row that got it.
    pub arrows: Vec<(usize, usize)>,
}

/// The datagrams a call carries, with their sizes where the line shows them.
fn datagrams(call: &Call) -> Vec<Option<usize>> {
    let number = |text: &str| -> Option<usize> {
        text.split(|c: char| !c.is_ascii_digit())
            .find(|word| !word.is_empty())
            .and_then(|n| n.parse().ok())
    };
    let result = call.result().unwrap_or("");
    match (call.direction(), call.name()) {
        (None, _) => Vec::new(),
        // `send(…, 14 bytes)`, `sendto(…, 14 bytes, 127.0.0.1:4000)`.
        (Some(true), "send" | "sendto") => {
            let args = call.text.split(", ").nth(1).unwrap_or("");
            vec![number(args)]
        }
        // `sendmmsg(…, 3 datagrams) → 3`.
        (Some(true), _) => vec![None; number(result).unwrap_or(0)],
        // `recvmmsg(…) → 3 datagrams (14, 14, 14 bytes) from …` (the client shows a total).
        (Some(false), "recvmmsg") => {
            let count = number(result).unwrap_or(0);
            let sizes: Vec<Option<usize>> = result
                .split_once('(')
                .and_then(|(_, rest)| rest.split_once(" bytes)"))
                .map(|(list, _)| list.split(", ").map(|n| n.parse().ok()).collect())
                .unwrap_or_default();
            if sizes.len() == count {
                sizes
            } else {
                vec![None; count]
            }
        }
        // `recvfrom(…) → 14 bytes from 127.0.0.1:4000`, `recv(…) → 15 bytes`.
        (Some(false), _) => vec![number(result)],
    }
}

/// How long after its send a receive may be stamped and still get that datagram: the
/// programs are on one machine, so only scheduling separates the two.
const MATCH_WINDOW: Duration = Duration::from_secs(2);

impl Part {
    /// Merges the calls `client` and `server` traced in one exchange.
    pub fn new(title: &str, client: &[Call], server: &[Call]) -> Part {
        let calls: Vec<(Side, &Call)> = client
            .iter()
            .map(|c| (Side::Client, c))
            .chain(server.iter().map(|c| (Side::Server, c)))
            .collect();
        // Match each received datagram to the first unmatched one sent the other way.
        let mut sent: Vec<(usize, Option<usize>, SystemTime, Side)> = Vec::new();
        for (i, (side, call)) in calls.iter().enumerate() {
            if call.direction() == Some(true) {
                for size in datagrams(call) {
                    sent.push((i, size, call.at, *side));
                }
            }
        }
        let mut taken = vec![false; sent.len()];
        let mut needs: Vec<Vec<usize>> = vec![Vec::new(); calls.len()];
        let mut matched = vec![true; calls.len()];
        let mut pairs = Vec::new();
        // Receives in time order, so that first come is first served.
        let mut receives: Vec<usize> = (0..calls.len())
            .filter(|&i| calls[i].1.direction() == Some(false))
            .collect();
        receives.sort_by_key(|&i| calls[i].1.at);
        for i in receives {
            let (side, call) = calls[i];
            for size in datagrams(call) {
                let found = sent.iter().enumerate().position(|(k, (_, s, at, from))| {
                    !taken[k]
                        && *from != side
                        && (size.is_none() || s.is_none() || *s == size)
                        && *at <= call.at + MATCH_WINDOW
                });
                match found {
                    Some(k) => {
                        taken[k] = true;
                        needs[i].push(sent[k].0);
                        pairs.push((sent[k].0, i));
                    }
                    None => matched[i] = false,
                }
            }
        }
        for (k, (i, ..)) in sent.iter().enumerate() {
            if !taken[k] {
                matched[*i] = false;
            }
        }
        let order = merge(&calls, client.len(), &needs);
        let mut position = vec![0; calls.len()];
        for (at, &i) in order.iter().enumerate() {
            position[i] = at;
        }
        let rows = order
            .iter()
            .map(|&i| Row {
                side: calls[i].0,
                call: calls[i].1.clone(),
                sends: calls[i].1.direction(),
                matched: matched[i],
            })
            .collect();
        let mut arrows: Vec<(usize, usize)> = pairs
            .into_iter()
            .map(|(from, to)| (position[from], position[to]))
            .collect();
        arrows.sort_unstable();
        arrows.dedup();
        Part {
            title: title.to_owned(),
            start: calls
                .iter()
                .map(|(_, c)| c.at)
                .min()
                .unwrap_or(SystemTime::UNIX_EPOCH),
            rows,
            arrows,
        }
    }

    /// A row's time after the part's first call, in milliseconds.
    fn millis(&self, row: &Row) -> f64 {
        row.call
            .at
            .duration_since(self.start)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    }

    /// The part for a terminal: time, the client's calls, the arrows, the server's calls.
    pub fn text(&self) -> String {
        const CLIENT_WIDTH: usize = 46;
        let client_width = self
            .rows
            .iter()
            .filter(|r| r.side == Side::Client)
            .map(|r| r.call.shown.chars().count())
            .max()
            .unwrap_or(6)
            .clamp(6, CLIENT_WIDTH);
        let mut out = format!(
            "{:>10}  {:<client_width$}  {:<14}  {}\n",
            "ms", "client", "", "server"
        );
        for row in &self.rows {
            let arrow = match (row.side, row.sends, row.matched) {
                (_, None, _) => "",
                (Side::Client, Some(true), true) | (Side::Server, Some(false), true) => {
                    "─────────────▶"
                }
                (Side::Server, Some(true), true) | (Side::Client, Some(false), true) => {
                    "◀─────────────"
                }
                (Side::Client, Some(true), false) | (Side::Server, Some(false), false) => {
                    "      ╌╌╌╌╌╌╌▶"
                }
                (Side::Server, Some(true), false) | (Side::Client, Some(false), false) => {
                    "      ◀╌╌╌╌╌╌╌"
                }
            };
            let (left, right) = match row.side {
                Side::Client => (clip(&row.call.shown, client_width), String::new()),
                Side::Server => (String::new(), row.call.shown.clone()),
            };
            let line = format!(
                "{:>10.3}  {left:<client_width$}  {arrow:<14}  {right}",
                self.millis(row)
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` cut to `width` characters, with `…` at the cut.
fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The order of the rows: by time, except that a receive waits for the sends it received
/// from (`needs`), and each program's calls keep their own order. `calls` holds the client's
/// `client_len` calls, then the server's.
fn merge(calls: &[(Side, &Call)], client_len: usize, needs: &[Vec<usize>]) -> Vec<usize> {
    let mut done = vec![false; calls.len()];
    let mut order = Vec::with_capacity(calls.len());
    let (mut next_client, mut next_server) = (0, client_len);
    while next_client < client_len || next_server < calls.len() {
        let ready = |i: usize, end: usize| i < end && needs[i].iter().all(|&n| done[n]);
        let client_ready = ready(next_client, client_len);
        let server_ready = ready(next_server, calls.len());
        let take_client = match (client_ready, server_ready) {
            (true, true) => calls[next_client].1.at <= calls[next_server].1.at,
            (true, false) => true,
            (false, true) => false,
            // Cannot happen with matches made in time order; fall back to time.
            (false, false) => {
                next_server >= calls.len()
                    || (next_client < client_len
                        && calls[next_client].1.at <= calls[next_server].1.at)
            }
        };
        let i = if take_client {
            next_client += 1;
            next_client - 1
        } else {
            next_server += 1;
            next_server - 1
        };
        done[i] = true;
        order.push(i);
    }
    order
}

/// Pixels per row, and the layout's x positions.
const ROW: f64 = 18.0;
const TIME_X: f64 = 90.0;
const CLIENT_X: f64 = 440.0;
const SERVER_X: f64 = 660.0;
const WIDTH: f64 = 1200.0;

/// Every part as one SVG document: per part a heading, the two lifelines, each call written
/// beside its program's line at its row, and each datagram an arrow between the two.
pub fn svg(parts: &[Part]) -> Document {
    let arrowhead = Marker::new()
        .set("id", "arrow")
        .set("viewBox", "0 0 10 10")
        .set("refX", 10)
        .set("refY", 5)
        .set("markerWidth", 7)
        .set("markerHeight", 7)
        .set("orient", "auto-start-reverse")
        .add(
            Path::new()
                .set("d", "M 0 0 L 10 5 L 0 10 z")
                .set("fill", "#1f4e79"),
        );
    let mut body = Group::new()
        .set(
            "font-family",
            "DejaVu Sans Mono, Menlo, Consolas, monospace",
        )
        .set("font-size", 12);
    let mut y = 30.0;
    for part in parts {
        body = body.add(
            Text::new(part.title.as_str())
                .set("x", 10)
                .set("y", y)
                .set("font-weight", "bold")
                .set("font-size", 14),
        );
        y += 2.0 * ROW;
        for (x, name) in [(CLIENT_X, "udptalk-client"), (SERVER_X, "udptalk-server")] {
            body = body
                .add(
                    Rectangle::new()
                        .set("x", x - 60.0)
                        .set("y", y - 14.0)
                        .set("width", 120)
                        .set("height", 20)
                        .set("fill", "#dde8f3")
                        .set("stroke", "#1f4e79"),
                )
                .add(
                    Text::new(name)
                        .set("x", x)
                        .set("y", y)
                        .set("text-anchor", "middle"),
                );
        }
        let top = y + 8.0;
        let first = y + 1.5 * ROW;
        let row_y = |i: usize| first + ROW * i as f64;
        let bottom = row_y(part.rows.len());
        for x in [CLIENT_X, SERVER_X] {
            body = body.add(
                Line::new()
                    .set("x1", x)
                    .set("y1", top)
                    .set("x2", x)
                    .set("y2", bottom)
                    .set("stroke", "#888")
                    .set("stroke-dasharray", "4 3"),
            );
        }
        for (i, row) in part.rows.iter().enumerate() {
            let y = row_y(i);
            body = body.add(
                Text::new(format!("{:.3} ms", part.millis(row)))
                    .set("x", TIME_X)
                    .set("y", y + 4.0)
                    .set("text-anchor", "end")
                    .set("fill", "#666"),
            );
            let text = match row.side {
                Side::Client => Text::new(clip(&row.call.shown, 52))
                    .set("x", CLIENT_X - 8.0)
                    .set("text-anchor", "end"),
                Side::Server => Text::new(row.call.shown.as_str()).set("x", SERVER_X + 8.0),
            };
            body = body.add(text.set("y", y + 4.0));
            // A datagram of no matched pair: a dashed half arrow to or from the middle.
            if let (Some(sends), false) = (row.sends, row.matched) {
                let own = match row.side {
                    Side::Client => CLIENT_X,
                    Side::Server => SERVER_X,
                };
                let middle = (CLIENT_X + SERVER_X) / 2.0;
                let (x1, x2) = if sends { (own, middle) } else { (middle, own) };
                body = body.add(arrow(x1, y, x2, y).set("stroke-dasharray", "5 4"));
            }
        }
        for &(from, to) in &part.arrows {
            let x = |row: usize| match part.rows.get(row).map(|r| r.side) {
                Some(Side::Client) => CLIENT_X,
                _ => SERVER_X,
            };
            body = body.add(arrow(x(from), row_y(from), x(to), row_y(to)));
        }
        y = bottom + 2.0 * ROW;
    }
    Document::new()
        .set("width", WIDTH)
        .set("height", y)
        .set("viewBox", (0, 0, WIDTH, y))
        .add(Definitions::new().add(arrowhead))
        .add(
            Rectangle::new()
                .set("width", "100%")
                .set("height", "100%")
                .set("fill", "white"),
        )
        .add(body)
}

fn arrow(x1: f64, y1: f64, x2: f64, y2: f64) -> Line {
    Line::new()
        .set("x1", x1)
        .set("y1", y1)
        .set("x2", x2)
        .set("y2", y2)
        .set("stroke", "#1f4e79")
        .set("stroke-width", 1.5)
        .set("marker-end", "url(#arrow)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace;

    /// The first exchange as the two programs trace it; the server's receive is stamped before
    /// the client's send (both as their calls return), as happens on a busy machine.
    fn first_exchange() -> Result<Part, String> {
        let client = trace::parse(&trace::FIRST_EXCHANGE_CLIENT)?;
        // And a datagram from a stranger, which no send of the client's explains.
        let mut server = trace::FIRST_EXCHANGE_SERVER.to_vec();
        server.insert(
            4,
            "trace 2026-12-02T01:00:00.000550Z [fd 3] recvfrom(…) → 3 bytes from 127.0.0.1:6000",
        );
        let server = trace::parse(&server)?;
        Ok(Part::new("Part 1", &client, &server))
    }

    #[test]
    fn a_receive_follows_the_send_it_got_and_strangers_are_unmatched() -> Result<(), String> {
        let part = first_exchange()?;
        let names: Vec<String> = part
            .rows
            .iter()
            .map(|r| format!("{:?} {}", r.side, r.call.name()))
            .collect();
        assert_eq!(
            names,
            [
                "Server socket",
                "Server bind",
                "Client socket",
                "Client connect",
                "Client send",
                "Server recvfrom",
                "Server sendto",
                "Server recvfrom",
                "Client recv",
                "Client close",
                "Server close",
            ]
        );
        assert_eq!(part.arrows, [(4, 5), (6, 8)]);
        assert!(!part.rows[7].matched, "the 3 bytes came from another peer");
        let text = part.text();
        let line = |call: &str| text.lines().find(|l| l.contains(call)).unwrap_or("");
        assert!(
            line("send(…, 14 bytes)").ends_with("─────────────▶"),
            "{text}"
        );
        assert!(
            line("sendto(…").contains("◀─────────────  sendto(…, 14 bytes, 127.0.0.1:5000)"),
            "{text}"
        );
        assert!(line("3 bytes").contains("╌╌╌╌╌╌╌▶  recvfrom"), "{text}");
        Ok(())
    }

    #[test]
    fn the_svg_parses_as_xml_with_a_text_per_call_and_a_line_per_datagram() -> Result<(), String> {
        let part = first_exchange()?;
        let document = svg(std::slice::from_ref(&part)).to_string();
        let xml = roxmltree::Document::parse(&document).map_err(|e| e.to_string())?;
        let root = xml.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let texts: Vec<String> = root
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text().map(|t| t.trim().to_owned()))
            .collect();
        for row in &part.rows {
            assert!(
                texts.contains(&row.call.shown),
                "no text {:?}",
                row.call.shown
            );
        }
        let arrows = root
            .descendants()
            .filter(|n| n.has_tag_name("line") && n.attribute("marker-end").is_some())
            .count();
        // Two matched datagrams, one from a stranger.
        assert_eq!(arrows, 3);
        Ok(())
    }
}
