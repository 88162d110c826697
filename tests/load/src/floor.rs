//! The physical floor of a fan-out: a bare loop that `write()`s one frame
//! per loopback socket per event, in a process of its own, to sockets that
//! this process drains. Its CPU includes the loopback receive path the
//! kernel charges to the sender, so nothing that writes once per delivery
//! can use less.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream as StdStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use crate::modes::check_sockets;
use crate::stats;
use crate::summary::{Floor, Summary};

/// What `floor` measures.
pub struct FloorArgs {
    /// Label of the summary.
    pub label: String,
    /// Loopback sockets written to per event.
    pub sockets: usize,
    /// Events per second.
    pub rate: f64,
    /// Seconds of writing.
    pub duration: Duration,
    /// Bytes of one frame (pushgate's 2,000 × 50 frame is 121 bytes on the wire).
    pub frame_bytes: usize,
}

/// Runs the writer as a child process and drains its sockets here.
pub async fn floor(a: FloorArgs) -> anyhow::Result<Summary> {
    check_sockets(a.sockets)?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["floor-writer", "--addr", &addr.to_string()])
        .args(["--sockets", &a.sockets.to_string()])
        .args(["--rate", &a.rate.to_string()])
        .args(["--duration", &a.duration.as_secs_f64().to_string()])
        .args(["--frame-bytes", &a.frame_bytes.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("start the floor writer")?;
    let pid = child.id();
    let mut drains = Vec::with_capacity(a.sockets);
    for _ in 0..a.sockets {
        let (mut s, _) = listener.accept().await?;
        drains.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0u64;
            while let Ok(k) = s.read(&mut buf).await {
                if k == 0 {
                    break;
                }
                n += k as u64;
            }
            n
        }));
    }
    // The child's lines arrive on a thread: this runtime may have only one.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let line = rx.recv().await.unwrap_or_default();
    if line != "connected" {
        bail!("floor writer said {line:?}");
    }
    let cpu0 = stats::cpu_seconds(pid)?;
    let line = rx.recv().await.unwrap_or_default();
    let cpu1 = stats::cpu_seconds(pid)?;
    let writes: u64 = line
        .strip_prefix("wrote ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("floor writer said {line:?}"))?;
    drop(child.stdin.take());
    child.wait()?;
    let mut drained = 0;
    for d in drains {
        drained += d.await?;
    }
    let cpu = cpu1 - cpu0;
    Ok(Summary::Floor(Floor {
        label: a.label,
        sockets: a.sockets,
        rate: a.rate,
        duration_s: a.duration.as_secs_f64(),
        frame_bytes: a.frame_bytes,
        writes,
        bytes_drained: drained,
        writer_cpu_s: cpu,
        cpu_us_per_write: cpu * 1e6 / writes.max(1) as f64,
    }))
}

/// The child: connect, say so, write one frame per socket per tick, say
/// how many, and stay until the parent has read its CPU.
pub fn writer(
    addr: &str,
    sockets: usize,
    rate: f64,
    duration: Duration,
    frame: usize,
) -> anyhow::Result<()> {
    let mut conns = Vec::with_capacity(sockets);
    for _ in 0..sockets {
        let s = StdStream::connect(addr)?;
        s.set_nodelay(true)?;
        conns.push(s);
    }
    let frame = vec![b'x'; frame];
    let mut out = std::io::stdout();
    writeln!(out, "connected")?;
    out.flush()?;
    let tick = Duration::from_secs_f64(1.0 / rate);
    let ticks = (duration.as_secs_f64() * rate).round() as u64;
    let start = Instant::now();
    let mut writes = 0u64;
    for t in 0..ticks {
        for s in &mut conns {
            s.write_all(&frame)?;
            writes += 1;
        }
        let next = start + tick * (t as u32 + 1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    writeln!(out, "wrote {writes}")?;
    out.flush()?;
    // Wait for the parent to close stdin, then close the sockets.
    let _ = std::io::stdin().read_line(&mut String::new());
    Ok(())
}
