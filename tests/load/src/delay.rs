//! The delay half of an impaired link. This kernel has no `sch_netem`, so
//! the benchmark queues a veth's outgoing packets to userspace with
//! iptables `-j NFQUEUE` and this stage lets each one through `delay` after
//! it arrived, in order. Nothing is copied but the metadata. The kernel
//! cuts GSO packets into wire-sized ones before queueing them, so a later
//! `-m statistic` rule drops single packets, not 64 KiB bursts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

/// What a delay stage did.
#[derive(Debug, Serialize)]
pub struct DelayStats {
    pub queue: u16,
    pub delay_ms: f64,
    pub packets: u64,
    /// Most packets held at once.
    pub held_max: usize,
    /// How late the latest release was past its due time, worst case (µs).
    pub late_max_us: u64,
}

/// Longest sleep between polls: the delay is exact to about this much.
const TICK: Duration = Duration::from_micros(200);

/// Set by SIGTERM/SIGINT: the stage lets everything through, reports and exits.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Holds every packet of NFQUEUE `queue` for `delay`, for `run_for`.
pub fn run(queue: u16, delay: Duration, run_for: Duration) -> anyhow::Result<DelayStats> {
    let mut q = nfq::Queue::open().context("open NFQUEUE (needs CAP_NET_ADMIN)")?;
    q.bind(queue)
        .with_context(|| format!("bind NFQUEUE {queue}"))?;
    q.set_copy_range(queue, 0)?;
    // Fail closed: a full queue drops (counted by the kernel), never
    // passes a packet undelayed.
    q.set_fail_open(queue, false)?;
    q.set_queue_max_len(queue, 200_000)?;
    q.set_nonblocking(true);
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    let mut stats = DelayStats {
        queue,
        delay_ms: delay.as_secs_f64() * 1000.0,
        packets: 0,
        held_max: 0,
        late_max_us: 0,
    };
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let end = Instant::now() + run_for;
    while Instant::now() < end && !STOP.load(Ordering::Relaxed) {
        loop {
            match q.recv() {
                Ok(msg) => {
                    held.push_back((Instant::now() + delay, msg));
                    stats.packets += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("NFQUEUE receive"),
            }
        }
        stats.held_max = stats.held_max.max(held.len());
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            let (due, mut msg) = held.pop_front().expect("checked");
            stats.late_max_us = stats
                .late_max_us
                .max(now.duration_since(due).as_micros() as u64);
            msg.set_verdict(nfq::Verdict::Accept);
            q.verdict(msg).context("NFQUEUE verdict")?;
        }
        let wait = held.front().map_or(TICK, |(due, _)| {
            due.saturating_duration_since(now).min(TICK)
        });
        std::thread::sleep(wait);
    }
    // Whatever is still held goes through: the run is over.
    for (_, mut msg) in held {
        msg.set_verdict(nfq::Verdict::Accept);
        let _ = q.verdict(msg);
    }
    Ok(stats)
}
