//! Turns a results file (one JSON object per line: the modes' summaries,
//! each tagged with a `case`, plus `meta`/`note` lines from the script) into
//! `docs/BENCHMARKS.md` and the latency plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use crate::plot::{self, Series};

/// A metric row: JSON path (dots), row label, how to print it.
struct Metric(&'static str, &'static str, Fmt);

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

fn get(v: &Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for k in path.split('.') {
        cur = cur.get(k)?;
    }
    cur.as_f64()
        .or_else(|| cur.as_bool().map(|b| b as u8 as f64))
}

const FANOUT: &[Metric] = &[
    Metric("acked", "events published (acknowledged)", Fmt::Int),
    Metric("expected", "deliveries expected", Fmt::Int),
    Metric("delivered", "deliveries", Fmt::Int),
    Metric("lost", "lost", Fmt::Int),
    Metric("dups", "duplicated", Fmt::Int),
    Metric("deliveries_per_s", "deliveries/s", Fmt::Int),
    Metric("latency.p50_ms", "latency p50", Fmt::Ms),
    Metric("latency.p90_ms", "latency p90", Fmt::Ms),
    Metric("latency.p99_ms", "latency p99", Fmt::Ms),
    Metric("latency.p999_ms", "latency p99.9", Fmt::Ms),
    Metric("latency.max_ms", "latency max", Fmt::Ms),
    Metric(
        "server_cpu_us_per_delivery",
        "server CPU per delivery",
        Fmt::Us,
    ),
    Metric("server_cpu_s", "server CPU (s)", Fmt::F2),
    Metric("client_cpu_s", "load-tool CPU (s)", Fmt::F2),
    Metric("server_mem_start", "server memory at start", Fmt::MiB),
    Metric("server_mem_peak", "server memory peak", Fmt::MiB),
    Metric("server_mem_end", "server memory at end", Fmt::MiB),
    Metric(
        "reconnects",
        "stream reconnects (slow-consumer kicks etc.)",
        Fmt::Int,
    ),
    Metric("publish_errors", "publish errors", Fmt::Int),
    Metric("publish_latency.p99_ms", "publish ack p99", Fmt::Ms),
];

const IDLE: &[Metric] = &[
    Metric("opened", "streams opened", Fmt::Int),
    Metric(
        "bytes_per_stream",
        "server memory per idle stream",
        Fmt::KiB,
    ),
    Metric("open_seconds", "time to open all (s)", Fmt::F2),
    Metric("open_latency.p50_ms", "open latency p50", Fmt::Ms),
    Metric("open_latency.p99_ms", "open latency p99", Fmt::Ms),
    Metric("failures", "refused/failed opens (retried)", Fmt::Int),
    Metric("server_mem_before", "server memory before", Fmt::MiB),
    Metric("server_mem_after", "server memory with streams", Fmt::MiB),
];

const PUBLISH: &[Metric] = &[
    Metric("events_per_s", "acknowledged events/s", Fmt::Int),
    Metric("requests_per_s", "requests/s", Fmt::Int),
    Metric("request_latency.p50_ms", "request latency p50", Fmt::Ms),
    Metric("request_latency.p99_ms", "request latency p99", Fmt::Ms),
    Metric("errors", "errors", Fmt::Int),
    Metric("server_cpu_us_per_event", "server CPU per event", Fmt::Us),
    Metric("client_cpu_s", "load-tool CPU (s)", Fmt::F2),
];

const STORM: &[Metric] = &[
    Metric("resumed", "streams resumed", Fmt::Int),
    Metric(
        "seconds_to_all_resumed",
        "time until all caught up (s)",
        Fmt::F2,
    ),
    Metric("resume_latency.p50_ms", "catch-up time p50", Fmt::Ms),
    Metric("resume_latency.p99_ms", "catch-up time p99", Fmt::Ms),
    Metric("expected", "missed events to deliver", Fmt::Int),
    Metric("lost", "lost", Fmt::Int),
    Metric("dups", "duplicated", Fmt::Int),
    Metric(
        "stream_failures",
        "refused/failed reconnects (retried)",
        Fmt::Int,
    ),
    Metric("server_cpu_s", "server CPU (s)", Fmt::F2),
];

fn metrics_for(mode: &str) -> &'static [Metric] {
    match mode {
        "idle" => IDLE,
        "publish" => PUBLISH,
        "storm" => STORM,
        _ => FANOUT,
    }
}

/// Renders the markdown table of one case: a column per system (median of
/// its runs), and the ratio of the first to the second when there are two.
fn table(out: &mut String, runs: &[&Value]) {
    let mut labels: Vec<String> = Vec::new();
    for r in runs {
        let l = r["label"].as_str().unwrap_or("?").to_owned();
        if !labels.contains(&l) {
            labels.push(l);
        }
    }
    let mode = runs[0]["mode"].as_str().unwrap_or("");
    let n_runs: Vec<usize> = labels
        .iter()
        .map(|l| runs.iter().filter(|r| r["label"] == l.as_str()).count())
        .collect();
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
    for Metric(path, name, f) in metrics_for(mode) {
        let vals: Vec<Option<f64>> = labels
            .iter()
            .map(|l| {
                let mut v: Vec<f64> = runs
                    .iter()
                    .filter(|r| r["label"] == l.as_str())
                    .filter_map(|r| get(r, path))
                    .collect();
                (!v.is_empty()).then(|| median(&mut v))
            })
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(out, "| {name} |");
        for (i, v) in vals.iter().enumerate() {
            let all: Vec<String> = runs
                .iter()
                .filter(|r| r["label"] == labels[i].as_str())
                .filter_map(|r| get(r, path))
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
            let show = !matches!(f, Fmt::Int) || path.ends_with("per_s");
            match (vals[0], vals[1]) {
                (Some(a), Some(b)) if show && b != 0.0 => {
                    let _ = write!(out, " {:.2}× |", a / b);
                }
                _ => out.push_str(" |"),
            }
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The median of `path` over the runs of `label` in `case`.
fn med(cases: &BTreeMap<String, Vec<&Value>>, case: &str, label: &str, path: &str) -> Option<f64> {
    let mut v: Vec<f64> = cases
        .get(case)?
        .iter()
        .filter(|r| r["label"] == label)
        .filter_map(|r| get(r, path))
        .collect();
    (!v.is_empty()).then(|| median(&mut v))
}

/// The issue's goals, each with its measured value (medians of this run).
fn goals(cases: &BTreeMap<String, Vec<&Value>>) -> String {
    let m = |c: &str, l: &str, p: &str| med(cases, c, l, p);
    let mut rows: Vec<(String, String, String, Option<bool>)> = Vec::new();
    let show = |v: Option<f64>, f: Fmt| {
        v.map(|v| fmt(v, f))
            .unwrap_or_else(|| "not measured".into())
    };
    let pg_idle = m("idle", "pushgate", "bytes_per_stream");
    rows.push((
        "server memory per idle stream (15,000 streams)".into(),
        "≤ 4 KiB".into(),
        format!(
            "pushgate {}, nchan {}",
            show(pg_idle, Fmt::KiB),
            show(m("idle", "nchan", "bytes_per_stream"), Fmt::KiB)
        ),
        pg_idle.map(|v| v <= 4096.0),
    ));
    let lost = m("fanout-50", "pushgate", "lost");
    rows.push((
        "2,000 × 50 ev/s: loss".into(),
        "0".into(),
        format!(
            "pushgate {}, nchan {}",
            show(lost, Fmt::Int),
            show(m("fanout-50", "nchan", "lost"), Fmt::Int)
        ),
        lost.map(|v| v == 0.0),
    ));
    let (pc, nc) = (
        m("fanout-50", "pushgate", "server_cpu_us_per_delivery"),
        m("fanout-50", "nchan", "server_cpu_us_per_delivery"),
    );
    rows.push((
        "2,000 × 50 ev/s: server CPU per delivery".into(),
        "≤ 1/3 of nchan's".into(),
        format!(
            "pushgate {}, nchan {} (ratio {})",
            show(pc, Fmt::Us),
            show(nc, Fmt::Us),
            show(pc.zip(nc).map(|(a, b)| a / b), Fmt::F2)
        ),
        pc.zip(nc).map(|(a, b)| a <= b / 3.0),
    ));
    let (pl, nl) = (
        m("fanout-50", "pushgate", "latency.p99_ms"),
        m("fanout-50", "nchan", "latency.p99_ms"),
    );
    rows.push((
        "2,000 × 50 ev/s: p99 publish→deliver".into(),
        "≤ 1/5 of nchan's".into(),
        format!(
            "pushgate {}, nchan {} (ratio {})",
            show(pl, Fmt::Ms),
            show(nl, Fmt::Ms),
            show(pl.zip(nl).map(|(a, b)| a / b), Fmt::F2)
        ),
        pl.zip(nl).map(|(a, b)| a <= b / 5.0),
    ));
    let (l5, s5, p5, e5) = (
        m("fanout-500", "pushgate", "lost"),
        m("fanout-500", "pushgate", "server_mem_start"),
        m("fanout-500", "pushgate", "server_mem_peak"),
        m("fanout-500", "pushgate", "server_mem_end"),
    );
    rows.push((
        "2,000 × 500 ev/s: zero loss, bounded memory".into(),
        "0 lost; memory returns, no growth".into(),
        format!(
            "pushgate lost {}, dups {}, memory {} → peak {} → end {}, {} slow-consumer reconnects",
            show(l5, Fmt::Int),
            show(m("fanout-500", "pushgate", "dups"), Fmt::Int),
            show(s5, Fmt::MiB),
            show(p5, Fmt::MiB),
            show(e5, Fmt::MiB),
            show(m("fanout-500", "pushgate", "reconnects"), Fmt::Int)
        ),
        l5.map(|l| l == 0.0),
    ));
    let pb = m("publish-batch", "pushgate", "events_per_s");
    rows.push((
        "durable publishes/s, embedded store, group commit".into(),
        "≥ 100,000/s".into(),
        format!(
            "{} (batch endpoint; single-event requests: {})",
            show(pb, Fmt::Int),
            show(m("publish", "pushgate", "events_per_s"), Fmt::Int)
        ),
        pb.map(|v| v >= 100_000.0),
    ));
    let mut out = String::from("## Goals (issue 8), measured in this run\n\n| goal | target | measured (medians) | met |\n|---|---|---|---|\n");
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
    // Cases in first-appearance order.
    let mut order: Vec<String> = Vec::new();
    let mut cases: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    let mut titles: BTreeMap<String, String> = BTreeMap::new();
    let mut notes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in &lines {
        let Some(case) = v.get("case").and_then(Value::as_str) else {
            continue;
        };
        if !order.iter().any(|c| c == case) {
            order.push(case.to_owned());
        }
        if let Some(t) = v.get("title").and_then(Value::as_str) {
            titles.insert(case.to_owned(), t.to_owned());
        }
        if let Some(n) = v.get("note").and_then(Value::as_str) {
            notes.entry(case.to_owned()).or_default().push(n.to_owned());
        } else if v.get("mode").is_some() {
            cases.entry(case.to_owned()).or_default().push(v);
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
            if let Some(cmd) = runs[0].get("command").and_then(Value::as_str) {
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
        let mut labels: Vec<&str> = runs.iter().filter_map(|r| r["label"].as_str()).collect();
        labels.dedup();
        labels.sort();
        labels.dedup();
        for l in labels {
            let mut rs: Vec<&&Value> = runs.iter().filter(|r| r["label"] == l).collect();
            rs.sort_by(|a, b| {
                get(a, "latency.p99_ms")
                    .unwrap_or(0.0)
                    .total_cmp(&get(b, "latency.p99_ms").unwrap_or(0.0))
            });
            let r = rs[rs.len() / 2];
            let points: Vec<(f64, f64)> = r["latency"]["curve"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                        .collect()
                })
                .unwrap_or_default();
            if !points.is_empty() {
                let rate = r["rate"].as_f64().unwrap_or(0.0);
                let proto = r["proto"].as_str().unwrap_or("");
                series.push(Series {
                    name: format!("{l} {rate} ev/s {proto}"),
                    points,
                });
            }
        }
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

    #[test]
    fn table_takes_medians_and_ratios() {
        let runs: Vec<Value> = [("a", 1.0), ("a", 3.0), ("a", 2.0), ("b", 8.0)]
            .iter()
            .map(|(l, us)| serde_json::json!({"mode": "fanout", "label": l, "server_cpu_us_per_delivery": us, "lost": 0}))
            .collect();
        let refs: Vec<&Value> = runs.iter().collect();
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
        let runs: Vec<Value> = vec![
            serde_json::json!({"mode": "fanout", "label": "pushgate", "server_cpu_us_per_delivery": 2.0, "latency": {"p99_ms": 10.0}, "lost": 0}),
            serde_json::json!({"mode": "fanout", "label": "nchan", "server_cpu_us_per_delivery": 9.0, "latency": {"p99_ms": 30.0}, "lost": 0}),
            serde_json::json!({"mode": "publish", "label": "pushgate", "events_per_s": 99_999.0}),
        ];
        let mut cases: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        cases.insert("fanout-50".into(), vec![&runs[0], &runs[1]]);
        cases.insert("publish-batch".into(), vec![&runs[2]]);
        let g = goals(&cases);
        assert!(g.contains("(ratio 0.22) | yes |"), "{g}");
        assert!(g.contains("(ratio 0.33) | **no** |"), "{g}");
        assert!(g.contains("| ≥ 100,000/s | 99999 "), "{g}");
        assert!(g.contains("not measured"), "{g}");
    }
}
