//! The bench's results: per-round figures reduced to medians, issue 7's targets judged, one
//! aligned table on stdout, `report.json` (every round's raw figures and the medians) and
//! `report.svg` (replies/s ratio and p99 per row, drawn with plotters' SVG backend).

use std::path::Path;
use std::time::Duration;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::{Value, json};

use super::Outcome;
use super::load::{Kit, Sample};
use super::rows::{Generator, Row, Server, Target};

/// Target 5: peak RSS under 16 MiB.
const RSS_LIMIT_KIB: u64 = 16 * 1024;

/// What one round gave for one row, divided by its baseline of the same round.
struct Round {
    sample: Option<Sample>,
    error: Option<String>,
    /// Replies/s over the baseline's.
    ratio: Option<f64>,
    /// CPU per reply over the baseline's.
    cpu_ratio: Option<f64>,
    /// RTT p50 over the baseline's.
    p50_ratio: Option<f64>,
    /// The server's count equals what the bench sent and saw (count rows only).
    exact: Option<bool>,
}

/// A row's medians over its rounds.
#[derive(Default)]
struct Medians {
    replies_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_reply: f64,
    /// The largest over rounds: a peak.
    peak_rss_kib: u64,
    ratio: Option<f64>,
    cpu_ratio: Option<f64>,
    p50_ratio: Option<f64>,
    /// The largest over rounds.
    lines_dropped: Option<u64>,
    /// Every round exact.
    exact: Option<bool>,
}

/// A target judged on a row.
struct Verdict {
    number: u8,
    /// `None`: the figures it needs are missing (a row skipped).
    pass: Option<bool>,
    detail: String,
}

struct Entry {
    skip: Option<String>,
    rounds: Vec<Round>,
    medians: Option<Medians>,
    verdicts: Vec<Verdict>,
}

/// The whole run's results.
pub struct Report<'a> {
    rows: &'a [Row],
    entries: Vec<Entry>,
    cores: usize,
    pinned: bool,
    nice: bool,
    rounds: usize,
    duration: Duration,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn is_count(row: &Row) -> bool {
    matches!(&row.server, Server::Udptalk { args, .. } if args.windows(2).any(|w| w == ["--mode", "count"]))
}

impl<'a> Report<'a> {
    /// Divides every row by its baseline round by round, takes the medians and judges the
    /// targets.
    pub fn new(
        rows: &'a [Row],
        skips: &[Option<String>],
        outcomes: &[Vec<Option<Outcome>>],
        kit: &Kit,
        rounds: usize,
        duration: Duration,
    ) -> Report<'a> {
        let sample = |index: usize, round: usize| -> Option<&Sample> {
            outcomes.get(index)?.get(round)?.as_ref()?.as_ref().ok()
        };
        let baseline_of = |row: &Row| {
            rows.iter()
                .position(|other| other.baseline && other.baseline_key() == row.baseline_key())
        };
        let mut entries: Vec<Entry> = rows
            .iter()
            .enumerate()
            .map(|(index, row)| {
                let base = baseline_of(row);
                let rounds: Vec<Round> = (0..rounds)
                    .map(|round| {
                        let outcome = outcomes[index][round].as_ref();
                        let mine = sample(index, round);
                        let theirs = base.and_then(|b| sample(b, round));
                        let pair = mine.zip(theirs);
                        Round {
                            sample: mine.cloned(),
                            error: outcome.and_then(|o| o.as_ref().err().cloned()),
                            ratio: pair.and_then(|(m, t)| {
                                ratio(m.load.replies_per_s, t.load.replies_per_s)
                            }),
                            cpu_ratio: pair
                                .and_then(|(m, t)| ratio(m.cpu_us_per_reply, t.cpu_us_per_reply)),
                            p50_ratio: pair.and_then(|(m, t)| ratio(m.load.p50_us, t.load.p50_us)),
                            exact: mine.filter(|_| is_count(row)).map(|s| {
                                let load = &s.load;
                                s.counted == Some(load.all_sent())
                                    && load.all_received() == load.all_sent()
                                    && load.lost == 0
                                    && load.highest_access == s.counted
                            }),
                        }
                    })
                    .collect();
                let medians = medians(&rounds);
                Entry {
                    skip: skips[index].clone(),
                    rounds,
                    medians,
                    verdicts: Vec::new(),
                }
            })
            .collect();
        for index in 0..rows.len() {
            let verdicts = rows[index]
                .targets
                .iter()
                .map(|&target| judge(target, index, rows, &entries))
                .collect();
            entries[index].verdicts = verdicts;
        }
        Report {
            rows,
            entries,
            cores: kit.cores,
            pinned: kit.taskset.is_some(),
            nice: kit.nice,
            rounds,
            duration,
        }
    }

    /// Rows that failed to run in at least one round.
    pub fn failed_rows(&self) -> usize {
        self.entries
            .iter()
            .filter(|entry| entry.rounds.iter().any(|round| round.error.is_some()))
            .count()
    }

    /// The table, aligned, then the targets' details and the errors.
    pub fn print_table(&self) {
        let header = [
            "row",
            "pin",
            "replies/s",
            "ratio",
            "p50 µs",
            "p99 µs",
            "CPU µs/reply",
            "CPU ratio",
            "RSS MiB",
            "dropped",
            "exact",
            "targets",
        ];
        let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
        for (row, entry) in self.rows.iter().zip(&self.entries) {
            let pin = if self.pinned {
                row.pinning.describe(self.cores)
            } else {
                "none".to_owned()
            };
            let mut line = vec![row.name.clone(), pin];
            if entry.skip.is_some() {
                line.extend(std::iter::repeat_n("-".to_owned(), 9));
                line.push("SKIP (below)".to_owned());
            } else if let Some(m) = &entry.medians {
                let opt = |v: Option<f64>, digits: usize| {
                    v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
                };
                line.extend([
                    format!("{:.0}", m.replies_per_s),
                    opt(m.ratio, 2),
                    opt(finite(m.p50_us), 1),
                    opt(finite(m.p99_us), 1),
                    opt(finite(m.cpu_us_per_reply), 2),
                    opt(m.cpu_ratio, 2),
                    format!("{:.1}", m.peak_rss_kib as f64 / 1024.0),
                    m.lines_dropped.map_or("-".to_owned(), |n| n.to_string()),
                    m.exact
                        .map_or("-", |e| if e { "yes" } else { "NO" })
                        .to_owned(),
                    self.verdict_text(entry),
                ]);
            } else {
                line.extend(std::iter::repeat_n("-".to_owned(), 9));
                line.push("ERROR: could not run (below)".to_owned());
            }
            table.push(line);
        }
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                table
                    .iter()
                    .map(|line| line[column].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for (n, line) in table.iter().enumerate() {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, width))| {
                    let pad = width - cell.chars().count();
                    // Text columns left, figures right.
                    if column <= 1 || column == header.len() - 1 {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            println!("| {} |", cells.join(" | ").trim_end());
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                println!("|-{}-|", rule.join("-|-"));
            }
        }
        println!(
            "medians of {} interleaved rounds of {:.1}s loads; ratio = median of per-round \
             replies/s over the same round's baseline (same payload, window, generator, \
             pinning); pin sN cM = server on core(s) N, client on core M (taskset -c){}",
            self.rounds,
            self.duration.as_secs_f64(),
            if self.nice { "; both at nice -10" } else { "" }
        );
        println!(
            "CPU = the server's user + system time (all threads) over the load ÷ replies; RSS = \
             its peak (VmHWM); dropped = its summary's `lines dropped`; exact = its `counted` = \
             the bench's sent = received = highest Access count, every round (count rows)"
        );
        for (row, entry) in self.rows.iter().zip(&self.entries) {
            for verdict in &entry.verdicts {
                println!(
                    "  target {} on {}: {}",
                    verdict.number, row.name, verdict.detail
                );
            }
        }
        for (row, entry) in self.rows.iter().zip(&self.entries) {
            if let Some(reason) = &entry.skip {
                println!("  SKIP {}: {reason}", row.name);
            }
        }
        for (row, entry) in self.rows.iter().zip(&self.entries) {
            for (round, r) in entry.rounds.iter().enumerate() {
                if let Some(error) = &r.error {
                    println!("  ERROR {} round {}: {error}", row.name, round + 1);
                }
            }
        }
    }

    fn verdict_text(&self, entry: &Entry) -> String {
        entry
            .verdicts
            .iter()
            .map(|v| {
                let word = match v.pass {
                    Some(true) => "PASS",
                    Some(false) => "FAIL",
                    None => "n/a",
                };
                format!("{} {word}", v.number)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `report.json`: the run's settings, and per row every round's figures and the medians.
    pub fn write_json(&self, path: &Path, elapsed: Duration) -> Result<(), String> {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .zip(&self.entries)
            .map(|(row, entry)| {
                let rounds: Vec<Value> = entry
                    .rounds
                    .iter()
                    .enumerate()
                    .map(|(n, r)| {
                        let sample = r.sample.as_ref().map(|s| {
                            json!({
                                "replies_per_s": s.load.replies_per_s,
                                "rtt_p50_us": finite(s.load.p50_us),
                                "rtt_p99_us": finite(s.load.p99_us),
                                "sent": s.load.sent,
                                "received": s.load.received,
                                "lost": s.load.lost,
                                "warmup_sent": s.load.warmup_sent,
                                "warmup_received": s.load.warmup_received,
                                "highest_access": s.load.highest_access,
                                "cpu_us_per_reply": finite(s.cpu_us_per_reply),
                                "peak_rss_kib": s.peak_rss_kib,
                                "counted": s.counted,
                                "lines_dropped": s.lines_dropped,
                                "summary": s.summary,
                                "generator": s.load.raw,
                            })
                        });
                        json!({
                            "round": n + 1,
                            "figures": sample,
                            "error": r.error,
                            "ratio": r.ratio,
                            "cpu_ratio": r.cpu_ratio,
                            "p50_ratio": r.p50_ratio,
                            "exact": r.exact,
                        })
                    })
                    .collect();
                let medians = entry.medians.as_ref().map(|m| {
                    json!({
                        "replies_per_s": m.replies_per_s,
                        "rtt_p50_us": finite(m.p50_us),
                        "rtt_p99_us": finite(m.p99_us),
                        "cpu_us_per_reply": finite(m.cpu_us_per_reply),
                        "peak_rss_kib": m.peak_rss_kib,
                        "ratio": m.ratio,
                        "cpu_ratio": m.cpu_ratio,
                        "p50_ratio": m.p50_ratio,
                        "lines_dropped": m.lines_dropped,
                        "exact": m.exact,
                    })
                });
                let targets: Vec<Value> = entry
                    .verdicts
                    .iter()
                    .map(|v| json!({"target": v.number, "pass": v.pass, "detail": v.detail}))
                    .collect();
                json!({
                    "name": row.name,
                    "server": format!("{:?}", row.server),
                    "generator": format!("{:?}", row.generator),
                    "size": row.size,
                    "window": row.window,
                    "pinning": if self.pinned { row.pinning.describe(self.cores) } else { "none".to_owned() },
                    "baseline": row.baseline,
                    "skip": entry.skip,
                    "rounds": rounds,
                    "medians": medians,
                    "targets": targets,
                })
            })
            .collect();
        let report = json!({
            "kind": "udptalk bench",
            "rounds": self.rounds,
            "duration_s": self.duration.as_secs_f64(),
            "elapsed_s": elapsed.as_secs_f64(),
            "cores": self.cores,
            "pinned": self.pinned,
            "nice": if self.nice { Some(-10) } else { None },
            "rows": rows,
        });
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("cannot serialize the report: {e}"))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// `report.svg`: two bar charts side by side, the replies/s ratio to the baseline and the
    /// RTT p99 of every row that ran.
    pub fn write_svg(&self, path: &Path) -> Result<(), String> {
        let bars: Vec<(&str, f64, f64)> = self
            .rows
            .iter()
            .zip(&self.entries)
            .filter_map(|(row, entry)| {
                let m = entry.medians.as_ref()?;
                Some((
                    row.name.as_str(),
                    m.ratio.unwrap_or(0.0),
                    finite(m.p99_us).unwrap_or(0.0),
                ))
            })
            .collect();
        draw(path, &bars).map_err(|e| format!("cannot draw {}: {e}", path.display()))
    }
}

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

fn medians(rounds: &[Round]) -> Option<Medians> {
    let samples: Vec<&Sample> = rounds.iter().filter_map(|r| r.sample.as_ref()).collect();
    if samples.is_empty() {
        return None;
    }
    let of = |f: fn(&Sample) -> f64| median(samples.iter().map(|s| f(s)).collect());
    let of_round = |f: fn(&Round) -> Option<f64>| median(rounds.iter().filter_map(f).collect());
    let exacts: Vec<bool> = rounds.iter().filter_map(|r| r.exact).collect();
    Some(Medians {
        replies_per_s: of(|s| s.load.replies_per_s).unwrap_or(0.0),
        p50_us: of(|s| s.load.p50_us).unwrap_or(f64::NAN),
        p99_us: of(|s| s.load.p99_us).unwrap_or(f64::NAN),
        cpu_us_per_reply: of(|s| s.cpu_us_per_reply).unwrap_or(f64::NAN),
        peak_rss_kib: samples.iter().map(|s| s.peak_rss_kib).max().unwrap_or(0),
        ratio: of_round(|r| r.ratio),
        cpu_ratio: of_round(|r| r.cpu_ratio),
        p50_ratio: of_round(|r| r.p50_ratio),
        lines_dropped: samples.iter().filter_map(|s| s.lines_dropped).max(),
        exact: (!exacts.is_empty()).then(|| exacts.iter().all(|&e| e)),
    })
}

/// Median over rounds of `f(mine, theirs)` between the rows `mine` and `theirs`.
fn paired(
    entries: &[Entry],
    mine: usize,
    theirs: usize,
    f: fn(&Sample, &Sample) -> Option<f64>,
) -> Option<f64> {
    let values = entries[mine]
        .rounds
        .iter()
        .zip(&entries[theirs].rounds)
        .filter_map(|(a, b)| f(a.sample.as_ref()?, b.sample.as_ref()?))
        .collect();
    median(values)
}

fn judge(target: Target, index: usize, rows: &[Row], entries: &[Entry]) -> Verdict {
    let number = target.number();
    let missing = |what: &str| Verdict {
        number,
        pass: None,
        detail: format!("n/a: {what}"),
    };
    let Some(m) = entries[index].medians.as_ref() else {
        return missing("the row did not run");
    };
    let verdict = |pass: bool, detail: String| Verdict {
        number,
        pass: Some(pass),
        detail: format!("{} ({detail})", if pass { "PASS" } else { "FAIL" }),
    };
    let find = |want: &dyn Fn(&Row) -> bool| rows.iter().position(want);
    match target {
        Target::CountAtCap => match (m.cpu_ratio, m.ratio) {
            (Some(cpu), Some(rate)) => verdict(
                cpu <= 1.1 && rate >= 0.95,
                format!("CPU/reply {cpu:.2}× baseline (≤ 1.10), replies/s {rate:.2}× (≥ 0.95)"),
            ),
            _ => missing("no baseline in the same rounds"),
        },
        Target::PrintingAtCap => match m.ratio {
            Some(rate) => {
                let dropped = m.lines_dropped.unwrap_or(0);
                verdict(
                    rate >= 0.8 && dropped == 0,
                    format!("replies/s {rate:.2}× baseline (≥ 0.80), lines dropped {dropped} (0)"),
                )
            }
            None => missing("no baseline in the same rounds"),
        },
        Target::JsonAtCap => match m.ratio {
            Some(rate) => verdict(
                rate >= 0.85,
                format!("replies/s {rate:.2}× baseline (≥ 0.85)"),
            ),
            None => missing("no baseline in the same rounds"),
        },
        Target::LatencyAtCap => match m.p50_ratio {
            Some(p50) => verdict(
                p50 <= 1.05,
                format!("RTT p50 {p50:.2}× baseline's (≤ 1.05)"),
            ),
            None => missing("no baseline in the same rounds"),
        },
        Target::SmallMemory => verdict(
            m.peak_rss_kib < RSS_LIMIT_KIB,
            format!(
                "peak RSS {:.1} MiB (< 16 MiB)",
                m.peak_rss_kib as f64 / 1024.0
            ),
        ),
        Target::ExactCount => match m.exact {
            Some(exact) => verdict(
                exact,
                "server's counted = bench's sent = received = highest Access count (warm-up \
                 included), lost 0, every round"
                    .to_owned(),
            ),
            None => missing("no count figures"),
        },
        Target::GeneratorKeepsUp => {
            let bench = find(&|row| {
                row.baseline && matches!(row.generator, Generator::Bench { .. }) && row.window == 1
            });
            match bench.and_then(|b| {
                paired(entries, b, index, |a, b| {
                    ratio(a.load.replies_per_s, b.load.replies_per_s)
                })
            }) {
                Some(rate) => verdict(
                    rate >= 0.9,
                    format!(
                        "bench @1 reaches {rate:.2}× sockperf ping-pong's replies/s on the \
                         baseline (≥ 0.90)"
                    ),
                ),
                None => missing("bench @1 against the baseline did not run"),
            }
        }
        Target::AgreesWithSockperf => {
            let bench = find(&|row| {
                row.server == Server::Sockperf
                    && matches!(row.generator, Generator::Bench { .. })
                    && row.window == 1
            });
            let rate = bench.and_then(|b| {
                paired(entries, b, index, |a, b| {
                    ratio(a.load.replies_per_s, b.load.replies_per_s)
                })
            });
            let p50 = bench.and_then(|b| {
                paired(entries, b, index, |a, b| {
                    ratio(a.load.p50_us, b.load.p50_us)
                })
            });
            match (rate, p50) {
                (Some(rate), Some(p50)) => verdict(
                    (rate - 1.0).abs() <= 0.1 && (p50 - 1.0).abs() <= 0.1,
                    format!(
                        "bench --payload-hex / sockperf ping-pong against sockperf server: \
                         replies/s {rate:.2}×, p50 {p50:.2}× (each within 0.90-1.10)"
                    ),
                ),
                _ => missing("bench --payload-hex against sockperf server did not run"),
            }
        }
    }
}

/// Draws the two charts into `path`.
fn draw(path: &Path, bars: &[(&str, f64, f64)]) -> Result<(), Box<dyn std::error::Error>> {
    let height = 120 + 26 * bars.len().max(1) as u32;
    let root = SVGBackend::new(path, (1400, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(900);
    let n = bars.len().max(1) as f64;
    let ratio_max = bars.iter().map(|b| b.1).fold(1.2_f64, f64::max).ceil();
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "replies/s ÷ baseline (same round; median)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(380)
        .build_cartesian_2d(0.0..ratio_max, 0.0..n)?;
    chart
        .configure_mesh()
        .y_labels(0)
        .disable_y_mesh()
        .disable_x_mesh()
        .draw()?;
    // The row names, right-aligned left of their bars (plotters' own y labels would fall on
    // round numbers, not on the bars).
    let name_style =
        TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    for (i, (name, _, _)) in bars.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(0.0, n - 0.5 - i as f64));
        left.draw(&Text::new(name.to_string(), (x - 8, y), name_style.clone()))?;
    }
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, ratio, _))| {
        let y = n - 1.0 - i as f64;
        let color = if *ratio >= 0.95 {
            GREEN.mix(0.6)
        } else {
            RED.mix(0.6)
        };
        Rectangle::new([(0.0, y + 0.15), (*ratio, y + 0.85)], color.filled())
    }))?;
    chart.draw_series(LineSeries::new(vec![(1.0, 0.0), (1.0, n)], BLACK))?;

    // A log scale: p99 at 1 in flight is tens of µs, at 32 thousands.
    let p99_max = bars.iter().map(|b| b.2).fold(10.0_f64, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&right)
        .caption("RTT p99 µs (median; log scale)", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(10)
        .build_cartesian_2d((1.0..p99_max).log_scale(), 0.0..n)?;
    chart
        .configure_mesh()
        .y_labels(0)
        .disable_y_mesh()
        .disable_x_mesh()
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, _, p99))| {
        let y = n - 1.0 - i as f64;
        Rectangle::new(
            [(1.0, y + 0.15), (p99.max(1.0), y + 0.85)],
            BLUE.mix(0.5).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }

    #[test]
    fn the_plot_is_an_svg_with_every_row() -> Result<(), Box<dyn std::error::Error>> {
        let path = std::env::temp_dir().join(format!("udptalk-bench-{}.svg", std::process::id()));
        draw(
            &path,
            &[
                ("baseline echo 14 B @1", 1.0, 30.0),
                ("udptalk count", 0.8, 45.0),
            ],
        )?;
        let svg = std::fs::read_to_string(&path)?;
        std::fs::remove_file(&path)?;
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.contains("udptalk count"));
        Ok(())
    }
}
