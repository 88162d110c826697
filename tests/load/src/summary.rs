//! What each mode measured: one typed summary per mode, printed as one JSON
//! line and read back by the report with the same types.

use serde::{Deserialize, Serialize};

use crate::net::Proto;
use crate::stats::Latency;

/// One run's result, tagged by its mode.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Summary {
    /// `idle`.
    Idle(Idle),
    /// `fanout`.
    Fanout(Fanout),
    /// `publish`.
    Publish(Publish),
    /// `storm`.
    Storm(Storm),
    /// `parse-bench`.
    ParseBench(ParseBench),
    /// `floor`.
    Floor(Floor),
}

impl Summary {
    /// The system under test (`--label`).
    pub fn label(&self) -> &str {
        match self {
            Summary::Idle(s) => &s.label,
            Summary::Fanout(s) => &s.label,
            Summary::Publish(s) => &s.label,
            Summary::Storm(s) => &s.label,
            Summary::ParseBench(_) => "pushgate-load",
            Summary::Floor(s) => &s.label,
        }
    }
}

/// A summary with the case it belongs to and the command that made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The report section (`--case`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// The command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// What it measured.
    #[serde(flatten)]
    pub summary: Summary,
}

/// `idle`: memory per open stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Idle {
    pub label: String,
    pub proto: Proto,
    pub streams: usize,
    pub opened: usize,
    pub all_opened: bool,
    pub topics: usize,
    pub open_seconds: f64,
    pub open_latency: Latency,
    pub failures: u64,
    pub server_mem_before: u64,
    pub server_mem_after: u64,
    pub bytes_per_stream: f64,
}

/// `fanout`: delivery to N subscribers of one topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fanout {
    pub label: String,
    pub proto: Proto,
    pub subscribers: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub published: u64,
    pub acked: u64,
    pub publish_errors: u64,
    pub publish_backlog_max: usize,
    pub publish_seconds: f64,
    pub publish_latency: Latency,
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub dups: u64,
    pub deliveries_per_s: f64,
    pub latency: Latency,
    pub server_cpu_s: f64,
    pub server_cpu_us_per_delivery: f64,
    pub client_cpu_s: f64,
    pub server_mem_start: u64,
    pub server_mem_peak: u64,
    pub server_mem_end: u64,
    pub reconnects: u64,
    pub stream_failures: u64,
    /// Connect (TCP + TLS, or QUIC) to the 200 head, first connection.
    #[serde(default)]
    pub open_latency: Option<Box<Latency>>,
}

/// `publish`: acknowledged events per second.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publish {
    pub label: String,
    pub concurrency: usize,
    pub batch: usize,
    pub topics: usize,
    pub duration_s: f64,
    pub acked_events: u64,
    pub events_per_s: f64,
    pub requests_per_s: f64,
    pub errors: u64,
    pub request_latency: Latency,
    pub server_cpu_s: f64,
    pub server_cpu_us_per_event: f64,
    pub client_cpu_s: f64,
}

/// `storm`: a mass reconnect with `Last-Event-ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Storm {
    pub label: String,
    pub proto: Proto,
    pub streams: usize,
    pub topics: usize,
    pub missed: u64,
    pub base_delivered: bool,
    pub all_resumed: bool,
    pub resumed: usize,
    pub seconds_to_all_resumed: f64,
    pub resume_latency: Latency,
    pub expected: u64,
    pub lost: u64,
    pub dups: u64,
    pub publish_errors: u64,
    pub stream_failures: u64,
    pub reconnects: u64,
    pub server_cpu_s: f64,
}

/// `parse-bench`: the load tool's own SSE reader against the full WHATWG parser of `tests/sse`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParseBench {
    pub events: usize,
    pub ns_per_event_load_parser: f64,
    pub ns_per_event_whatwg_parser: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_reads_back_as_it_was_written() {
        let run = Run {
            case: Some("publish".into()),
            command: None,
            summary: Summary::Publish(Publish {
                label: "pushgate".into(),
                concurrency: 4,
                batch: 1,
                topics: 1,
                duration_s: 1.0,
                acked_events: 10,
                events_per_s: 10.0,
                requests_per_s: 10.0,
                errors: 0,
                request_latency: Latency::default(),
                server_cpu_s: 0.1,
                server_cpu_us_per_event: 1.0,
                client_cpu_s: 0.1,
            }),
        };
        let line = serde_json::to_string(&run).unwrap();
        assert!(line.contains("\"mode\":\"publish\""), "{line}");
        let back: Run = serde_json::from_str(&line).unwrap();
        assert_eq!(back.summary.label(), "pushgate");
        assert_eq!(back.case.as_deref(), Some("publish"));
    }
}

/// `floor`: CPU of a bare write loop, one frame per socket per event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    pub label: String,
    pub sockets: usize,
    pub rate: f64,
    pub duration_s: f64,
    pub frame_bytes: usize,
    pub writes: u64,
    pub bytes_drained: u64,
    pub writer_cpu_s: f64,
    pub cpu_us_per_write: f64,
}
