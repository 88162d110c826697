//! Counting what arrived (exactly-once bookkeeping per subscriber), latency
//! percentiles, and the server's CPU and memory from `/proc`.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Which sequence numbers a subscriber has seen: a bitset, so loss and
/// duplicates are exact whatever order events arrive in.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    bits: Vec<u64>,
    /// Distinct sequence numbers seen.
    pub unique: u64,
    /// Deliveries of a sequence number already seen.
    pub dups: u64,
}

impl Seen {
    /// Records `seq`; false if it was already seen.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.bits.len() {
            self.bits.resize((w + 1).next_power_of_two(), 0);
        }
        let mask = 1u64 << b;
        if self.bits[w] & mask != 0 {
            self.dups += 1;
            return false;
        }
        self.bits[w] |= mask;
        self.unique += 1;
        true
    }

    /// Whether `seq` was seen.
    pub fn contains(&self, seq: u64) -> bool {
        let w = (seq / 64) as usize;
        w < self.bits.len() && self.bits[w] & (1 << (seq % 64)) != 0
    }

    /// How many of `from..=to` were not seen.
    pub fn missing(&self, from: u64, to: u64) -> u64 {
        (from..=to).filter(|s| !self.contains(*s)).count() as u64
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct Latency {
    /// Samples recorded.
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// `(percentile, ms)` points of the whole distribution, for plots.
    pub curve: Vec<(f64, f64)>,
}

/// Percentiles drawn in the latency plot: dense in the tail, where servers differ.
pub const CURVE_POINTS: &[f64] = &[
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 100.0,
];

/// A histogram of microseconds from 1 µs to 10 min, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds are valid")
}

/// Records a latency, clamping into the histogram's range rather than dropping it.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let v = us.clamp(h.low(), h.high());
    h.record(v).expect("clamped into range");
}

/// Summarises a histogram of microseconds.
pub fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Latency {
        count: h.len(),
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
        curve: CURVE_POINTS.iter().map(|p| (*p, ms(p / 100.0))).collect(),
    }
}

/// The exact nearest-rank percentile of sorted samples (what the histogram approximates).
pub fn exact_percentile(sorted: &[u64], pct: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat_cpu(&stat)
        .map(|ticks| ticks as f64 / clock_ticks())
        .ok_or_else(|| std::io::Error::other("unparsable /proc/PID/stat"))
}

/// utime + stime in clock ticks from the text of `/proc/PID/stat`.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Memory a process holds, in bytes: its proportional set size (so pages
/// shared between nginx workers count once overall), else its RSS.
pub fn mem_bytes(pid: u32) -> std::io::Result<u64> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        if let Some(kb) = field_kb(&s, "Pss:") {
            return Ok(kb * 1024);
        }
    }
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    field_kb(&s, "VmRSS:")
        .map(|kb| kb * 1024)
        .ok_or_else(|| std::io::Error::other("no VmRSS"))
}

/// The value in kB of a `Name:   123 kB` line.
pub fn field_kb(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Sums over a set of server processes; a process that is gone counts 0.
pub fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_seconds(*p).ok()).sum()
}

/// Sums memory over a set of server processes.
pub fn total_mem(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| mem_bytes(*p).ok()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_unique_dups_and_gaps() {
        let mut s = Seen::default();
        for seq in [1, 2, 3, 5, 3, 1000, 5] {
            s.insert(seq);
        }
        assert_eq!(s.unique, 5);
        assert_eq!(s.dups, 2);
        assert_eq!(s.missing(1, 5), 1);
        assert_eq!(s.missing(1, 1000), 995);
        assert!(s.contains(1000) && !s.contains(4) && !s.contains(1 << 20));
    }

    #[test]
    fn histogram_percentiles_match_exact_ranks() {
        // A skewed distribution: mostly ~1 ms, a tail to 200 ms.
        let mut samples: Vec<u64> = (0..100_000u64)
            .map(|i| {
                let x = (i * 2_654_435_761) % 100_000;
                if x < 99_000 {
                    800 + x % 400
                } else {
                    5_000 + (x - 99_000) * 195
                }
            })
            .collect();
        let mut h = new_histogram();
        for s in &samples {
            record(&mut h, *s);
        }
        samples.sort_unstable();
        let l = latency(&h);
        assert_eq!(l.count, 100_000);
        for (pct, got_ms) in [
            (50.0, l.p50_ms),
            (90.0, l.p90_ms),
            (99.0, l.p99_ms),
            (99.9, l.p999_ms),
        ] {
            let exact = exact_percentile(&samples, pct) as f64 / 1000.0;
            // 3 significant digits: within 0.1 % (plus one bucket) of the exact rank.
            assert!(
                (got_ms - exact).abs() <= exact * 0.001 + 0.001,
                "p{pct}: histogram {got_ms} vs exact {exact}"
            );
        }
        assert!((l.max_ms - *samples.last().unwrap() as f64 / 1000.0).abs() < 0.2);
        assert_eq!(l.curve.len(), CURVE_POINTS.len());
        assert!(
            l.curve.windows(2).all(|w| w[0].1 <= w[1].1),
            "curve is monotonic"
        );
    }

    #[test]
    fn exact_percentile_is_nearest_rank() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(exact_percentile(&v, 50.0), 5);
        assert_eq!(exact_percentile(&v, 90.0), 9);
        assert_eq!(exact_percentile(&v, 99.0), 10);
        assert_eq!(exact_percentile(&v, 0.0), 1);
        assert_eq!(exact_percentile(&[], 50.0), 0);
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = new_histogram();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(latency(&h).max_ms >= 599_000.0);
        assert_eq!(latency(&new_histogram()), Latency::default());
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let stat = "1234 (nginx: worker (x) ) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_cpu(stat), Some(325));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(
            field_kb("Rss:  10 kB\nPss:     2048 kB\n", "Pss:"),
            Some(2048)
        );
        assert!(cpu_seconds(std::process::id()).is_ok());
        assert!(mem_bytes(std::process::id()).unwrap() > 0);
    }
}
