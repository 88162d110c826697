//! `pushgate-load`: see the crate docs and `tests/load/bench.sh`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use pushgate_load::floor;
use pushgate_load::modes::{self, PublishBody, SubTarget};
use pushgate_load::net::{Proto, Template};
use pushgate_load::parse::{write_payload, SseItem, SseReader};
use pushgate_load::report;
use pushgate_load::summary::{ParseBench, Run, Summary};

/// Raw SSE load generator; every mode prints one JSON line.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Runtime worker threads (1: a current-thread runtime).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    /// Tags the summary with a case name (for the report); the command line is added too.
    #[arg(long, global = true)]
    case: Option<String>,
    /// Accept a non-loopback target; refused unless this process runs in its own network namespace.
    #[arg(long, global = true)]
    netns_target: bool,
    /// CA certificates (PEM) trusted for https:// targets, QUIC and gRPC.
    #[arg(long, global = true)]
    ca_file: Option<PathBuf>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Args, Clone)]
struct Common {
    /// Name of the system under test, copied into the summary.
    #[arg(long, default_value = "server")]
    label: String,
    /// Server process ids whose CPU and memory are measured (repeat for nginx workers).
    #[arg(long = "server-pid")]
    pids: Vec<u32>,
    /// Connections opened at once while ramping up.
    #[arg(long, default_value_t = 500)]
    concurrency: usize,
}

#[derive(Args, Clone)]
struct SubOpts {
    /// Stream URL template, e.g. http://127.0.0.1:8080/v1/stream?topic={topic}
    #[arg(long)]
    sub_url: String,
    /// HTTP version of the streams.
    #[arg(long, value_enum, default_value = "h1")]
    proto: Proto,
    /// h2c: streams multiplexed per connection.
    #[arg(long, default_value_t = 1)]
    streams_per_conn: usize,
    /// Longest wait (ms) before reconnecting, whatever `retry:` says.
    #[arg(long, default_value_t = 5000)]
    max_retry_ms: u64,
}

impl SubOpts {
    fn target(&self) -> anyhow::Result<Arc<SubTarget>> {
        let url = Template::parse(&self.sub_url)?;
        match (self.proto, url.tls) {
            (Proto::H2c, true) => anyhow::bail!("h2c is cleartext: use --proto h2 for https://"),
            (Proto::H2 | Proto::H3 | Proto::Grpc, false) => {
                anyhow::bail!(
                    "--proto {:?} runs over TLS: give an https:// URL",
                    self.proto
                )
            }
            _ => {}
        }
        Ok(Arc::new(SubTarget {
            url,
            proto: self.proto,
            streams_per_conn: self.streams_per_conn,
            max_retry_ms: self.max_retry_ms,
        }))
    }
}

#[derive(Subcommand)]
enum Mode {
    /// Open N idle streams; report server memory per stream and open times.
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sub: SubOpts,
        #[arg(long, default_value_t = 1000)]
        streams: usize,
        #[arg(long, default_value_t = 100)]
        topics: usize,
        /// Seconds to hold the streams before measuring.
        #[arg(long, default_value_t = 3.0)]
        hold: f64,
    },
    /// N subscribers on one topic, a publisher at a fixed rate: loss, dups, latency, server CPU.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sub: SubOpts,
        /// Publish URL template (POST, body = payload).
        #[arg(long)]
        pub_url: String,
        #[arg(long, default_value = "fanout")]
        topic: String,
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Events per second.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// Seconds of publishing.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Concurrent publish connections.
        #[arg(long, default_value_t = 4)]
        publishers: usize,
        /// Seconds to wait after the last publish for deliveries to complete.
        #[arg(long, default_value_t = 15.0)]
        drain: f64,
    },
    /// C concurrent publishers as fast as acknowledgements come back.
    Publish {
        #[command(flatten)]
        common: Common,
        /// Single-event URL template (POST, body = payload), e.g. .../v1/topics/{topic}/events
        #[arg(long, conflicts_with = "batch_url")]
        pub_url: Option<String>,
        /// Batch URL (pushgate's /v1/publish): JSON arrays of --batch events.
        #[arg(long)]
        batch_url: Option<String>,
        /// Device ack URL template, e.g. .../v1/devices/{topic}/ack: acks of
        /// cursors first published through --pub-url, one device per publisher.
        #[arg(long, requires = "pub_url")]
        ack_url: Option<String>,
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long, default_value_t = 16)]
        publishers: usize,
        #[arg(long, default_value_t = 64)]
        topics: usize,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 64)]
        size: usize,
    },
    /// The physical floor: a bare loop writing one frame per loopback socket per event.
    Floor {
        #[arg(long, default_value = "floor")]
        label: String,
        #[arg(long, default_value_t = 2000)]
        sockets: usize,
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        #[arg(long, default_value_t = 121)]
        frame_bytes: usize,
    },
    /// The writer process of `floor` (started by it).
    #[command(hide = true)]
    FloorWriter {
        #[arg(long)]
        addr: String,
        #[arg(long)]
        sockets: usize,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        duration: f64,
        #[arg(long)]
        frame_bytes: usize,
    },
    /// N streams drop at once and reconnect with Last-Event-ID after M missed events.
    Storm {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        sub: SubOpts,
        #[arg(long)]
        pub_url: String,
        #[arg(long, default_value_t = 2000)]
        streams: usize,
        #[arg(long, default_value_t = 50)]
        topics: usize,
        /// Events each stream misses while disconnected.
        #[arg(long, default_value_t = 100)]
        missed: u64,
        #[arg(long, default_value_t = 8)]
        publishers: usize,
        /// Seconds to wait for everyone to catch up.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Holds every packet of an NFQUEUE for a fixed delay (the impaired
    /// link's delay; run inside the namespace whose iptables queue to it).
    Delay {
        /// NFQUEUE number.
        #[arg(long)]
        queue: u16,
        /// Milliseconds each packet is held.
        #[arg(long)]
        ms: f64,
        /// Seconds to run, then let everything through and exit.
        #[arg(long)]
        seconds: f64,
    },
    /// Time the stream parser per event (this crate's and the WHATWG one of tests/sse).
    ParseBench {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Write the weak-network section of docs/BENCHMARKS.md from `weaknet.sh` results.
    ReportProtocols {
        #[arg(long)]
        results: PathBuf,
        /// The Markdown file whose marked section is replaced.
        #[arg(long)]
        out: PathBuf,
        /// Markdown added at the end of the section (what the figures mean).
        #[arg(long)]
        notes: Option<PathBuf>,
    },
    /// Write docs/BENCHMARKS.md and the latency plot from a results file (JSON lines).
    Report {
        /// Results, one JSON object per line (what the modes print, plus `meta` lines).
        #[arg(long)]
        results: PathBuf,
        /// Markdown output.
        #[arg(long)]
        out: PathBuf,
        /// PNG output (latency distribution).
        #[arg(long)]
        png: PathBuf,
        /// Markdown appended at the end (the analysis of what limits each figure).
        #[arg(long)]
        notes: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    modes::now_us();
    if cli.netns_target {
        pushgate_load::net::allow_netns_targets()?;
    }
    if let Some(ca) = &cli.ca_file {
        pushgate_load::net::trust_ca(ca)?;
        pushgate_load::grpc::trust_ca(std::fs::read_to_string(ca)?);
    }
    if let Mode::Delay { queue, ms, seconds } = cli.mode {
        let d = Duration::from_secs_f64;
        let stats = pushgate_load::delay::run(queue, d(ms / 1000.0), d(seconds))?;
        println!("{}", serde_json::to_string(&stats)?);
        return Ok(());
    }
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()?
    };
    let out = rt.block_on(async {
        let out = run(cli.mode).await;
        pushgate_load::quic::close_all(std::time::Duration::from_secs(5)).await;
        out
    })?;
    if let Some(summary) = out {
        let command = cli.case.is_some().then(|| {
            let args: Vec<String> = std::env::args().skip(1).collect();
            format!("pushgate-load {}", args.join(" "))
        });
        let run = Run {
            case: cli.case,
            command,
            summary,
        };
        println!("{}", serde_json::to_string(&run)?);
    }
    Ok(())
}

async fn run(mode: Mode) -> anyhow::Result<Option<Summary>> {
    let secs = Duration::from_secs_f64;
    Ok(Some(match mode {
        Mode::Idle {
            common,
            sub,
            streams,
            topics,
            hold,
        } => {
            modes::idle(modes::IdleArgs {
                label: common.label,
                target: sub.target()?,
                streams,
                topics,
                hold: secs(hold),
                pids: common.pids,
                concurrency: common.concurrency,
            })
            .await?
        }
        Mode::Fanout {
            common,
            sub,
            pub_url,
            topic,
            subscribers,
            rate,
            duration,
            size,
            publishers,
            drain,
        } => {
            modes::fanout(modes::FanoutArgs {
                label: common.label,
                target: sub.target()?,
                publish: Template::parse(&pub_url)?,
                topic,
                subscribers,
                rate,
                duration: secs(duration),
                size,
                publishers,
                drain: secs(drain),
                pids: common.pids,
                concurrency: common.concurrency,
            })
            .await?
        }
        Mode::Publish {
            common,
            pub_url,
            batch_url,
            ack_url,
            batch,
            publishers,
            topics,
            duration,
            size,
        } => {
            let body = match (pub_url, batch_url, ack_url) {
                (Some(u), None, None) => PublishBody::Single {
                    url: Template::parse(&u)?,
                },
                (None, Some(u), None) => PublishBody::Batch {
                    url: Template::parse(&u)?,
                    batch,
                },
                (Some(p), None, Some(u)) => PublishBody::Ack {
                    url: Template::parse(&u)?,
                    pub_url: Template::parse(&p)?,
                },
                _ => anyhow::bail!("give --pub-url, --batch-url, or --pub-url with --ack-url"),
            };
            modes::publish(modes::PublishArgs {
                label: common.label,
                body,
                concurrency: publishers,
                topics,
                duration: secs(duration),
                size,
                pids: common.pids,
            })
            .await?
        }
        Mode::Storm {
            common,
            sub,
            pub_url,
            streams,
            topics,
            missed,
            publishers,
            timeout,
        } => {
            modes::storm(modes::StormArgs {
                label: common.label,
                target: sub.target()?,
                publish: Template::parse(&pub_url)?,
                streams,
                topics,
                missed,
                publishers,
                timeout: secs(timeout),
                concurrency: common.concurrency,
                pids: common.pids,
            })
            .await?
        }
        Mode::ParseBench { events } => parse_bench(events),
        Mode::Delay { .. } => unreachable!("run before the runtime starts"),
        Mode::Floor {
            label,
            sockets,
            rate,
            duration,
            frame_bytes,
        } => {
            floor::floor(floor::FloorArgs {
                label,
                sockets,
                rate,
                duration: secs(duration),
                frame_bytes,
            })
            .await?
        }
        Mode::FloorWriter {
            addr,
            sockets,
            rate,
            duration,
            frame_bytes,
        } => {
            floor::writer(&addr, sockets, rate, secs(duration), frame_bytes)?;
            return Ok(None);
        }
        Mode::ReportProtocols {
            results,
            out,
            notes,
        } => {
            pushgate_load::weaknet::write(&results, &out, notes.as_deref())?;
            return Ok(None);
        }
        Mode::Report {
            results,
            out,
            png,
            notes,
        } => {
            report::write(&results, &out, &png, notes.as_deref())?;
            return Ok(None);
        }
    }))
}

/// Nanoseconds per event for both parsers over the same chunked byte stream,
/// fed in 4 KiB reads as a socket would deliver it.
fn parse_bench(events: usize) -> Summary {
    let mut wire = Vec::new();
    let mut payload = Vec::new();
    for seq in 1..=events as u64 {
        write_payload(&mut payload, seq, seq * 7, 64);
        let block = format!(
            "data: {}\nid: AQKgjAHxBgJ2nKc3AhUoRg{seq}\n\n",
            String::from_utf8_lossy(&payload)
        );
        wire.extend_from_slice(format!("{:x}\r\n{block}\r\n", block.len()).as_bytes());
    }
    let time = |f: &mut dyn FnMut() -> u64| {
        let t = Instant::now();
        let n = f();
        (t.elapsed().as_nanos() as f64 / events as f64, n)
    };
    let (ours, n1) = time(&mut || {
        let mut d = pushgate_load::parse::Dechunker::new();
        let mut r = SseReader::new();
        let mut sum = 0u64;
        for piece in wire.chunks(4096) {
            d.feed(piece, |b| {
                r.feed(b, |item| {
                    if let SseItem::Event(data) = item {
                        if let Some((seq, _)) = pushgate_load::parse::parse_payload(data) {
                            sum += seq;
                        }
                    }
                })
            })
            .expect("valid chunking");
        }
        sum
    });
    let (whatwg, n2) = time(&mut || {
        let mut d = pushgate_load::parse::Dechunker::new();
        let mut p = pushgate_test_sse::Parser::new();
        let mut sum = 0u64;
        for piece in wire.chunks(4096) {
            d.feed(piece, |b| {
                for ev in p.feed(b) {
                    if let Some((seq, _)) = pushgate_load::parse::parse_payload(ev.data.as_bytes())
                    {
                        sum += seq;
                    }
                }
            })
            .expect("valid chunking");
        }
        sum
    });
    assert_eq!(n1, n2, "both parsers saw the same events");
    Summary::ParseBench(ParseBench {
        events,
        ns_per_event_load_parser: ours,
        ns_per_event_whatwg_parser: whatwg,
    })
}
