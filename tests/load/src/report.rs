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

/// Reads the results and writes the markdown and the PNG.
pub fn write(results: &Path, md: &Path, png: &Path) -> anyhow::Result<()> {
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
    if let Some(closing) = meta.and_then(|m| m.get("closing")).and_then(Value::as_str) {
        let _ = writeln!(out, "{closing}\n");
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
}
