//! Turns a results file (one JSON object per line: the modes' summaries,
//! each tagged with a `case`, plus `meta`/`note` lines from the script) into
//! `docs/BENCHMARKS.md` and the latency plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::summary::{Fanout, Run, Summary};

use crate::plot::{self, Series};

/// A metric row: its label, how to print it, whether a ratio between two
/// systems means something, and where it is in a summary (`None` when the
/// summary is of another mode).
struct Metric(&'static str, Fmt, bool, fn(&Summary) -> Option<f64>);

/// A [`Metric`] of `$mode` summaries: `$value` reads it from the summary `$s`.
macro_rules! metric {
    ($mode:ident, $label:literal, $fmt:ident, $ratio:literal, |$s:ident| $value:expr) => {
        Metric($label, Fmt::$fmt, $ratio, |sum| match sum {
            Summary::$mode($s) => Some($value as f64),
            _ => None,
        })
    };
}

#[derive(Clone, Copy)]
enum Fmt {
    Int,
    F2,
    Ms,
    KiB,
    MiB,
    Us,
}

fn fmt(v: f64, f: Fmt) -> String {
    match f {
        Fmt::Int => format!("{}", v.round() as i64),
        Fmt::F2 => format!("{v:.2}"),
        Fmt::Ms => format!("{v:.2} ms"),
        Fmt::KiB => format!("{:.2} KiB", v / 1024.0),
        Fmt::MiB => format!("{:.1} MiB", v / 1048576.0),
        Fmt::Us => format!("{v:.2} µs"),
    }
}

/// The median of a non-empty set.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

const FLOOR: &[Metric] = &[
    metric!(Floor, "sockets", Int, false, |f| f.sockets),
    metric!(Floor, "frame bytes", Int, false, |f| f.frame_bytes),
    metric!(Floor, "writes", Int, false, |f| f.writes),
    metric!(Floor, "bytes drained", Int, false, |f| f.bytes_drained),
    metric!(Floor, "writer CPU (s)", F2, false, |f| f.writer_cpu_s),
    metric!(Floor, "CPU per write", Us, false, |f| f.cpu_us_per_write),
];

const FANOUT: &[Metric] = &[
    metric!(Fanout, "events published (acknowledged)", Int, false, |f| f
        .acked),
    metric!(Fanout, "deliveries expected", Int, false, |f| f.expected),
    metric!(Fanout, "deliveries", Int, false, |f| f.delivered),
    metric!(Fanout, "lost", Int, false, |f| f.lost),
    metric!(Fanout, "duplicated", Int, false, |f| f.dups),
    metric!(Fanout, "deliveries/s", Int, true, |f| f.deliveries_per_s),
    metric!(Fanout, "latency p50", Ms, true, |f| f.latency.p50_ms),
    metric!(Fanout, "latency p90", Ms, true, |f| f.latency.p90_ms),
    metric!(Fanout, "latency p99", Ms, true, |f| f.latency.p99_ms),
    metric!(Fanout, "latency p99.9", Ms, true, |f| f.latency.p999_ms),
    metric!(Fanout, "latency max", Ms, true, |f| f.latency.max_ms),
    metric!(Fanout, "server CPU per delivery", Us, true, |f| f
        .server_cpu_us_per_delivery),
    metric!(Fanout, "server CPU (s)", F2, true, |f| f.server_cpu_s),
    metric!(Fanout, "load-tool CPU (s)", F2, true, |f| f.client_cpu_s),
    metric!(Fanout, "server memory at start", MiB, true, |f| f
        .server_mem_start),
    metric!(Fanout, "server memory peak", MiB, true, |f| f
        .server_mem_peak),
    metric!(Fanout, "server memory at end", MiB, true, |f| f
        .server_mem_end),
    metric!(
        Fanout,
        "stream reconnects (slow-consumer kicks etc.)",
        Int,
        false,
        |f| f.reconnects
    ),
    metric!(Fanout, "publish errors", Int, false, |f| f.publish_errors),
    metric!(Fanout, "publish ack p99", Ms, true, |f| f
        .publish_latency
        .p99_ms),
];

const IDLE: &[Metric] = &[
    metric!(Idle, "streams opened", Int, false, |i| i.opened),
    metric!(Idle, "server memory per idle stream", KiB, true, |i| i
        .bytes_per_stream),
    metric!(Idle, "time to open all (s)", F2, true, |i| i.open_seconds),
    metric!(Idle, "open latency p50", Ms, true, |i| i
        .open_latency
        .p50_ms),
    metric!(Idle, "open latency p99", Ms, true, |i| i
        .open_latency
        .p99_ms),
    metric!(Idle, "refused/failed opens (retried)", Int, false, |i| i
        .failures),
    metric!(Idle, "server memory before", MiB, true, |i| i
        .server_mem_before),
    metric!(Idle, "server memory with streams", MiB, true, |i| i
        .server_mem_after),
];

const PUBLISH: &[Metric] = &[
    metric!(Publish, "acknowledged events/s", Int, true, |p| p
        .events_per_s),
    metric!(Publish, "requests/s", Int, true, |p| p.requests_per_s),
    metric!(Publish, "request latency p50", Ms, true, |p| p
        .request_latency
        .p50_ms),
    metric!(Publish, "request latency p99", Ms, true, |p| p
        .request_latency
        .p99_ms),
    metric!(Publish, "errors", Int, false, |p| p.errors),
    metric!(Publish, "server CPU per event", Us, true, |p| p
        .server_cpu_us_per_event),
    metric!(Publish, "load-tool CPU (s)", F2, true, |p| p.client_cpu_s),
];

const STORM: &[Metric] = &[
    metric!(Storm, "streams resumed", Int, false, |s| s.resumed),
    metric!(Storm, "time until all caught up (s)", F2, true, |s| s
        .seconds_to_all_resumed),
    metric!(Storm, "catch-up time p50", Ms, true, |s| s
        .resume_latency
        .p50_ms),
    metric!(Storm, "catch-up time p99", Ms, true, |s| s
        .resume_latency
        .p99_ms),
    metric!(Storm, "missed events to deliver", Int, false, |s| s
        .expected),
    metric!(Storm, "lost", Int, false, |s| s.lost),
    metric!(Storm, "duplicated", Int, false, |s| s.dups),
    metric!(
        Storm,
        "refused/failed reconnects (retried)",
        Int,
        false,
        |s| s.stream_failures
    ),
    metric!(Storm, "server CPU (s)", F2, true, |s| s.server_cpu_s),
];

fn metrics_for(s: &Summary) -> &'static [Metric] {
    match s {
        Summary::Idle(_) => IDLE,
        Summary::Publish(_) => PUBLISH,
        Summary::Storm(_) => STORM,
        Summary::Fanout(_) | Summary::ParseBench(_) => FANOUT,
        Summary::Floor(_) => FLOOR,
    }
}

/// Renders the markdown table of one case: a column per system (median of
/// its runs), and the ratio of the first to the second when there are two.
fn table(out: &mut String, runs: &[&Summary]) {
    let mut labels: Vec<String> = Vec::new();
    for r in runs {
        let l = r.label().to_owned();
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    fn of<'a>(runs: &'a [&'a Summary], l: &'a str) -> impl Iterator<Item = &'a &'a Summary> {
        runs.iter().filter(move |r| r.label() == l)
    }
    let n_runs: Vec<usize> = labels.iter().map(|l| of(runs, l).count()).collect();
    let _ = write!(out, "| metric |");
    for (l, n) in labels.iter().zip(&n_runs) {
        let _ = write!(
            out,
            " {l}{} |",
            if *n > 1 {
                format!(" (median of {n})")
            } else {
                String::new()
            }
        );
    }
    let ratio = labels.len() == 2;
    if ratio {
        let _ = write!(out, " {} / {} |", labels[0], labels[1]);
    }
    out.push('\n');
    out.push_str(&"|---".repeat(1 + labels.len() + ratio as usize));
    out.push_str("|\n");
    for Metric(name, f, show_ratio, get) in metrics_for(runs[0]) {
        let vals: Vec<Option<f64>> = labels
            .iter()
            .map(|l| {
                let mut v: Vec<f64> = of(runs, l).filter_map(|r| get(r)).collect();
                (!v.is_empty()).then(|| median(&mut v))
            })
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(out, "| {name} |");
        for (i, v) in vals.iter().enumerate() {
            let all: Vec<String> = of(runs, &labels[i])
                .filter_map(|r| get(r))
                .map(|x| fmt(x, *f))
                .collect();
            match v {
                Some(v) if all.len() > 1 && matches!(f, Fmt::Ms | Fmt::Us | Fmt::KiB) => {
                    let _ = write!(out, " **{}** ({}) |", fmt(*v, *f), all.join(", "));
                }
                Some(v) => {
                    let _ = write!(out, " {} |", fmt(*v, *f));
                }
                None => out.push_str(" – |"),
            }
        }
        if ratio {
            match (vals[0], vals[1]) {
                (Some(a), Some(b)) if *show_ratio && b != 0.0 => {
                    let _ = write!(out, " {:.2}× |", a / b);
                }
                _ => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The runs of each case.
type Cases<'a> = BTreeMap<String, Vec<&'a Summary>>;

/// The median of what `get` reads over the runs of `label` in `case`.
fn med(
    cases: &Cases<'_>,
    case: &str,
    label: &str,
    get: fn(&Summary) -> Option<f64>,
) -> Option<f64> {
    let mut v: Vec<f64> = cases
        .get(case)?
        .iter()
        .filter(|r| r.label() == label)
        .filter_map(|r| get(r))
        .collect();
    (!v.is_empty()).then(|| median(&mut v))
}

/// Reads one field of a fan-out, idle or publish summary.
macro_rules! field {
    ($mode:ident, |$s:ident| $value:expr) => {
        (|sum: &Summary| match sum {
            Summary::$mode($s) => Some($value as f64),
            _ => None,
        }) as fn(&Summary) -> Option<f64>
    };
}

/// The issue's goals, each with its measured value (medians of this run).
fn goals(cases: &Cases<'_>) -> String {
    let m = |c: &str, l: &str, get: fn(&Summary) -> Option<f64>| med(cases, c, l, get);
    let bytes = field!(Idle, |i| i.bytes_per_stream);
    let lost = field!(Fanout, |f| f.lost);
    let cpu = field!(Fanout, |f| f.server_cpu_us_per_delivery);
    let p99 = field!(Fanout, |f| f.latency.p99_ms);
    let events = field!(Publish, |p| p.events_per_s);
    let mut rows: Vec<(String, String, String, Option<bool>)> = Vec::new();
    let show = |v: Option<f64>, f: Fmt| {
        v.map(|v| fmt(v, f))
            .unwrap_or_else(|| "not measured".into())
    };
    let kib = |case: &str, label: &str| m(case, label, bytes);
    for (case, what) in [("idle", "15,000 streams"), ("idle-18k", "18,000 streams")] {
        let pg = kib(case, "pushgate");
        rows.push((
            format!("server memory per idle stream ({what})"),
            "≤ 4 KiB".into(),
            format!(
                "pushgate {}, nchan {}, pushgate on the hyper path {}",
                show(pg, Fmt::KiB),
                show(kib(case, "nchan"), Fmt::KiB),
                show(kib(case, "pushgate-hyper"), Fmt::KiB),
            ),
            pg.map(|v| v <= 4096.0),
        ));
    }
    rows.push((
        "memory per idle stream, 1 → 50 topics per stream".into(),
        "reported".into(),
        format!(
            "{} → {}",
            show(kib("idle-topics", "pushgate 1 topic"), Fmt::KiB),
            show(kib("idle-topics", "pushgate 50 topics"), Fmt::KiB)
        ),
        None,
    ));
    let seq = "fanout-50-seq";
    let (pc, nc, fc) = (
        m(seq, "pushgate", cpu),
        m(seq, "nchan", cpu),
        m("floor", "floor", field!(Floor, |f| f.cpu_us_per_write)),
    );
    rows.push((
        "2,000 × 50 ev/s (one sequential publisher): server CPU per delivery".into(),
        "≤ 1.2× the floor and ≤ 0.6× nchan's".into(),
        format!(
            "pushgate {}, nchan {}, floor {} (×{} the floor, ×{} nchan)",
            show(pc, Fmt::Us),
            show(nc, Fmt::Us),
            show(fc, Fmt::Us),
            show(pc.zip(fc).map(|(a, b)| a / b), Fmt::F2),
            show(pc.zip(nc).map(|(a, b)| a / b), Fmt::F2)
        ),
        pc.zip(nc)
            .zip(fc)
            .map(|((p, n), f)| p <= 1.2 * f && p <= 0.6 * n),
    ));
    let (pl, nl, lost_seq) = (
        m(seq, "pushgate", p99),
        m(seq, "nchan", p99),
        m(seq, "pushgate", lost),
    );
    rows.push((
        "2,000 × 50 ev/s (one sequential publisher): p99 publish→deliver, zero loss".into(),
        "≤ 0.5× nchan's, 0 lost".into(),
        format!(
            "pushgate {}, nchan {} (ratio {}), pushgate lost {}",
            show(pl, Fmt::Ms),
            show(nl, Fmt::Ms),
            show(pl.zip(nl).map(|(a, b)| a / b), Fmt::F2),
            show(lost_seq, Fmt::Int)
        ),
        pl.zip(nl)
            .zip(lost_seq)
            .map(|((a, b), l)| a <= b / 2.0 && l == 0.0),
    ));
    let proto_p99 = |l: &str| m("protocols", l, p99);
    rows.push((
        "h2c fan-out (2,000 × 50 ev/s, 100 streams per connection)".into(),
        "not worse than before".into(),
        format!(
            "p99 h2c {}, h1 {} (A/B against the binary before the lean path: \"What limits each figure\", h2c)",
            show(proto_p99("pushgate h2c"), Fmt::Ms),
            show(proto_p99("pushgate h1"), Fmt::Ms)
        ),
        None,
    ));
    let lost50 = m("fanout-50", "pushgate", lost);
    rows.push((
        "2,000 × 50 ev/s, 4 concurrent publishers: loss".into(),
        "0".into(),
        format!(
            "pushgate {}, nchan {}",
            show(lost50, Fmt::Int),
            show(m("fanout-50", "nchan", lost), Fmt::Int)
        ),
        lost50.map(|v| v == 0.0),
    ));
    let (l5, s5, p5, e5) = (
        m("fanout-500", "pushgate", lost),
        m(
            "fanout-500",
            "pushgate",
            field!(Fanout, |f| f.server_mem_start),
        ),
        m(
            "fanout-500",
            "pushgate",
            field!(Fanout, |f| f.server_mem_peak),
        ),
        m(
            "fanout-500",
            "pushgate",
            field!(Fanout, |f| f.server_mem_end),
        ),
    );
    rows.push((
        "2,000 × 500 ev/s: zero loss, bounded memory".into(),
        "0 lost; memory returns, no growth".into(),
        format!(
            "pushgate lost {}, dups {}, memory {} → peak {} → end {}, {} slow-consumer reconnects",
            show(l5, Fmt::Int),
            show(
                m("fanout-500", "pushgate", field!(Fanout, |f| f.dups)),
                Fmt::Int
            ),
            show(s5, Fmt::MiB),
            show(p5, Fmt::MiB),
            show(e5, Fmt::MiB),
            show(
                m("fanout-500", "pushgate", field!(Fanout, |f| f.reconnects)),
                Fmt::Int
            )
        ),
        l5.map(|l| l == 0.0),
    ));
    let pb = m("publish-batch", "pushgate", events);
    rows.push((
        "durable publishes/s, embedded store, group commit".into(),
        "≥ 100,000/s".into(),
        format!(
            "{} (batch endpoint; single-event requests: {})",
            show(pb, Fmt::Int),
            show(m("publish", "pushgate", events), Fmt::Int)
        ),
        pb.map(|v| v >= 100_000.0),
    ));
    let mut out = String::from("## Goals, measured in this run\n\nLean streams (issue 14) first, then the earlier goals that still hold (issue 8).\n\n| goal | target | measured (medians) | met |\n|---|---|---|---|\n");
    for (g, t, v, ok) in rows {
        let ok = match ok {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(out, "| {g} | {t} | {v} | {ok} |");
    }
    out.push('\n');
    out
}

/// Reads the results and writes the markdown and the PNG; `notes` (markdown) is appended.
pub fn write(results: &Path, md: &Path, png: &Path, appendix: Option<&Path>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(results).with_context(|| format!("{}", results.display()))?;
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let meta = lines
        .iter()
        .find(|v| v.get("meta").is_some())
        .map(|v| &v["meta"]);
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Generated by `tests/load/bench.sh` (do not edit by hand; rerun it). Command:\n\n```sh\n",
    );
    out.push_str(
        meta.and_then(|m| m["command"].as_str())
            .unwrap_or("tests/load/bench.sh"),
    );
    out.push_str("\n```\n\n");
    if let Some(m) = meta {
        if let Some(obj) = m.as_object() {
            for (k, v) in obj {
                if k != "command" {
                    let _ = writeln!(
                        out,
                        "- **{k}**: {}",
                        v.as_str().map(str::to_owned).unwrap_or(v.to_string())
                    );
                }
            }
            out.push('\n');
        }
    }
    if let Some(intro) = meta.and_then(|m| m.get("intro")).and_then(Value::as_str) {
        let _ = writeln!(out, "{intro}\n");
    }
    // Cases in first-appearance order; each summary line is a typed `Run`.
    let runs: Vec<Run> = lines
        .iter()
        .filter(|v| v.get("mode").is_some())
        .map(|v| serde_json::from_value(v.clone()))
        .collect::<Result<_, _>>()
        .context("a summary line does not match its mode")?;
    let mut order: Vec<String> = Vec::new();
    let mut cases: Cases<'_> = BTreeMap::new();
    let mut commands: BTreeMap<String, String> = BTreeMap::new();
    let mut titles: BTreeMap<String, String> = BTreeMap::new();
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let note_case = |case: &str, order: &mut Vec<String>| {
        if !order.iter().any(|c| c == case) {
            order.push(case.to_owned());
        }
    };
    for v in &lines {
        let Some(case) = v.get("case").and_then(Value::as_str) else {
            continue;
        };
        note_case(case, &mut order);
        if let Some(t) = v.get("title").and_then(Value::as_str) {
            titles.insert(case.to_owned(), t.to_owned());
        }
        if let Some(n) = v.get("note").and_then(Value::as_str) {
            notes.entry(case.to_owned()).or_default().push(n.to_owned());
        }
    }
    for r in &runs {
        let Some(case) = &r.case else { continue };
        note_case(case, &mut order);
        cases.entry(case.clone()).or_default().push(&r.summary);
        if let Some(c) = &r.command {
            commands.entry(case.clone()).or_insert_with(|| c.clone());
        }
    }
    out.push_str(&goals(&cases));
    for case in &order {
        let _ = writeln!(
            out,
            "## {}\n",
            titles.get(case).map(String::as_str).unwrap_or(case)
        );
        for n in notes.get(case).into_iter().flatten() {
            let _ = writeln!(out, "{n}\n");
        }
        if let Some(runs) = cases.get(case) {
            if let Some(cmd) = commands.get(case) {
                let _ = writeln!(out, "`{cmd}`\n");
            }
            table(&mut out, runs);
        }
    }
    // The plot: the fan-out latency curves (median run by p99 per system and case).
    let mut series = Vec::new();
    for case in order.iter().filter(|c| c.starts_with("fanout")) {
        let Some(runs) = cases.get(case) else {
            continue;
        };
        let fanouts: Vec<&Fanout> = runs
            .iter()
            .filter_map(|r| match r {
                Summary::Fanout(f) => Some(f),
                _ => None,
            })
            .collect();
        let mut labels: Vec<&str> = fanouts.iter().map(|f| f.label.as_str()).collect();
        labels.sort();
        labels.dedup();
        for l in labels {
            let mut rs: Vec<&&Fanout> = fanouts.iter().filter(|f| f.label == l).collect();
            rs.sort_by(|a, b| a.latency.p99_ms.total_cmp(&b.latency.p99_ms));
            let r = rs[rs.len() / 2];
            if !r.latency.curve.is_empty() {
                series.push(Series {
                    name: format!("{l} {} ev/s {:?}", r.rate, r.proto),
                    points: r.latency.curve.clone(),
                });
            }
        }
    }
    // The weak-network section is tests/load/weaknet.sh's: kept as it stands.
    if let Some(kept) = std::fs::read_to_string(md)
        .ok()
        .as_deref()
        .and_then(crate::weaknet::section_of)
    {
        out.push_str(kept);
        out.push_str("\n\n");
    }
    let png_name = png
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("latency.png");
    let _ = writeln!(
        out,
        "## Latency distribution\n\n![publish-to-deliver latency percentiles]({png_name})\n\nPublish→deliver latency percentiles of the fan-out runs (median run of each), \
         percentile on a \"nines\" axis, milliseconds on a log axis.\n"
    );
    if let Some(n) = appendix {
        out.push_str(&std::fs::read_to_string(n).with_context(|| format!("{}", n.display()))?);
    }
    std::fs::write(md, out)?;
    plot::write(png, "publish to deliver latency (fan-out)", &series)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_unsorted() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    fn fanout(label: &str, us: f64, p99: f64) -> Summary {
        let run = serde_json::json!({
            "mode": "fanout", "label": label, "proto": "H1", "subscribers": 1, "rate": 1.0,
            "duration_s": 1.0, "published": 1, "acked": 1, "publish_errors": 0,
            "publish_backlog_max": 0, "publish_seconds": 1.0,
            "publish_latency": crate::stats::Latency::default(),
            "expected": 1, "delivered": 1, "lost": 0, "dups": 0, "deliveries_per_s": 1.0,
            "latency": {"p99_ms": p99, "count": 1, "p50_ms": 0.0, "p90_ms": 0.0,
                        "p999_ms": 0.0, "max_ms": 0.0, "curve": []},
            "server_cpu_s": 0.0, "server_cpu_us_per_delivery": us, "client_cpu_s": 0.0,
            "server_mem_start": 0, "server_mem_peak": 0, "server_mem_end": 0,
            "reconnects": 0, "stream_failures": 0,
        });
        serde_json::from_value(run).unwrap()
    }

    #[test]
    fn table_takes_medians_and_ratios() {
        let runs: Vec<Summary> = [("a", 1.0), ("a", 3.0), ("a", 2.0), ("b", 8.0)]
            .iter()
            .map(|(l, us)| fanout(l, *us, 1.0))
            .collect();
        let refs: Vec<&Summary> = runs.iter().collect();
        let mut out = String::new();
        table(&mut out, &refs);
        assert!(
            out.contains("| metric | a (median of 3) | b | a / b |"),
            "{out}"
        );
        assert!(out.contains("| server CPU per delivery | **2.00 µs** (1.00 µs, 3.00 µs, 2.00 µs) | 8.00 µs | 0.25× |"), "{out}");
        assert!(out.contains("| lost | 0 | 0 | |"), "{out}");
    }

    #[test]
    fn goals_compare_medians_against_the_issue_targets() {
        let publish: Summary = serde_json::from_value(serde_json::json!({
            "mode": "publish", "label": "pushgate", "concurrency": 1, "batch": 1, "topics": 1,
            "duration_s": 1.0, "acked_events": 1, "events_per_s": 99_999.0, "requests_per_s": 1.0,
            "errors": 0, "request_latency": crate::stats::Latency::default(),
            "server_cpu_s": 0.0, "server_cpu_us_per_event": 0.0, "client_cpu_s": 0.0,
        }))
        .unwrap();
        let floor: Summary = serde_json::from_value(serde_json::json!({
            "mode": "floor", "label": "floor", "sockets": 1, "rate": 1.0, "duration_s": 1.0,
            "frame_bytes": 121, "writes": 1, "bytes_drained": 121, "writer_cpu_s": 0.0,
            "cpu_us_per_write": 2.0,
        }))
        .unwrap();
        let runs = [
            fanout("pushgate", 2.0, 10.0),
            fanout("nchan", 9.0, 30.0),
            publish,
            floor,
        ];
        let mut cases: Cases<'_> = BTreeMap::new();
        cases.insert("fanout-50-seq".into(), vec![&runs[0], &runs[1]]);
        cases.insert("floor".into(), vec![&runs[3]]);
        cases.insert("publish-batch".into(), vec![&runs[2]]);
        let g = goals(&cases);
        assert!(g.contains("(×1.00 the floor, ×0.22 nchan) | yes |"), "{g}");
        assert!(g.contains("(ratio 0.33), pushgate lost 0 | yes |"), "{g}");
        assert!(g.contains("| ≥ 100,000/s | 99999 "), "{g}");
        assert!(g.contains("not measured"), "{g}");
    }
}
