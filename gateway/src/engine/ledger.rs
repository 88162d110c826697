//! A device stream's accounting: which expired events it lost (each counted
//! once per device, whichever replica resumes it), how many delivered
//! events its device has not acknowledged, and how long it took the device
//! to come back after its last stream closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::core::device::{Acked, DeviceId};
use crate::core::position::{Seq, StreamPos};
use crate::core::sequencer::Sequencer;
use crate::ops::metrics::Metrics;
use crate::store::{Store, StoreError, StoredEvent};

/// Devices whose last stream closed here, remembered this long at most.
const RECOVERY_MEMORY: Duration = Duration::from_secs(3600);
/// Closed devices remembered at most (beyond, the oldest are forgotten).
const RECOVERY_CAP: usize = 100_000;

/// When each device's last stream closed on this pod: the start of its
/// recovery time.
#[derive(Default)]
pub struct Recovery {
    closed: Mutex<HashMap<DeviceId, Instant>>,
}

impl Recovery {
    /// A stream of `device` closed now.
    pub fn closed(&self, device: &DeviceId) {
        let now = Instant::now();
        let mut m = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= RECOVERY_CAP {
            m.retain(|_, t| now.duration_since(*t) < RECOVERY_MEMORY);
            if m.len() >= RECOVERY_CAP {
                return;
            }
        }
        m.insert(device.clone(), now);
    }

    /// `device` resumed now: how long since its last stream closed, if it
    /// closed here within memory.
    pub fn resumed(&self, device: &DeviceId) -> Option<Duration> {
        let mut m = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        let at = m.remove(device)?;
        let gap = at.elapsed();
        (gap < RECOVERY_MEMORY).then_some(gap)
    }
}

/// Expired events one topic's replay skipped beyond the device's
/// acknowledged position: candidates for the loss counter.
struct Lost {
    topic: usize,
    /// Ascending.
    seqs: Vec<Seq>,
    last: StoredEvent,
}

/// Where a device stream's accounting goes: the store keeps the lost
/// marks and acknowledgements, metrics the SLIs, recovery the close times.
#[derive(Clone)]
pub struct Ledger {
    /// Lost marks and acknowledgements.
    pub store: Arc<dyn Store>,
    /// The device SLIs.
    pub metrics: Arc<Metrics>,
    /// When devices' streams closed.
    pub recovery: Arc<Recovery>,
}

/// What a device's stream tracks for its SLIs. Dropping it ends the
/// stream's share of the unacknowledged gauge and starts recovery time.
pub struct DeviceTrack {
    ledger: Ledger,
    device: DeviceId,
    /// The device's acknowledged position per topic of the stream.
    acked: Vec<Option<StreamPos>>,
    /// Where the stream started per topic: it delivered nothing before.
    start: Vec<StreamPos>,
    lost: Vec<Lost>,
    /// This stream's current share of `pushgate_device_unacked_events`.
    unacked: i64,
}

impl DeviceTrack {
    /// Tracks a stream of `device` starting at `start`, whose device had
    /// acknowledged `acked` (any order, any tags).
    pub fn new(ledger: Ledger, device: DeviceId, seq: &Sequencer, acked: &[Acked]) -> Self {
        let n = seq.topic_count();
        let mut t = DeviceTrack {
            ledger,
            device,
            acked: vec![None; n],
            start: (0..n).map(|i| seq.position(i)).collect(),
            lost: Vec::new(),
            unacked: 0,
        };
        t.set_acked(seq, acked);
        t
    }

    /// The device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    fn set_acked(&mut self, seq: &Sequencer, acked: &[Acked]) {
        for (i, slot) in self.acked.iter_mut().enumerate() {
            let tag = seq.topic(i).tag();
            if let Some(a) = acked.iter().find(|a| a.tag == tag) {
                *slot = Some(StreamPos {
                    epoch: Some(a.epoch),
                    seq: a.seq,
                });
            }
        }
    }

    /// The acknowledged seq of topic `i` if it is in `pos`'s history.
    fn acked_seq(&self, i: usize, pos: StreamPos) -> Option<Seq> {
        self.acked[i]
            .filter(|a| a.epoch.is_some() && a.epoch == pos.epoch)
            .map(|a| a.seq)
    }

    /// An expired event of topic `i` was skipped: a loss if the device had
    /// not acknowledged it.
    pub fn expired(&mut self, i: usize, ev: &StoredEvent) {
        let pos = StreamPos {
            epoch: Some(ev.epoch),
            seq: ev.seq,
        };
        if self.acked_seq(i, pos).is_some_and(|a| ev.seq <= a) {
            return;
        }
        match self.lost.iter_mut().find(|l| l.topic == i) {
            Some(l) if l.last.epoch == ev.epoch => {
                l.seqs.push(ev.seq);
                l.last = ev.clone();
            }
            Some(l) => {
                // A new epoch: the old one's candidates are settled first
                // in practice (epochs change rarely); keep the newest.
                l.seqs = vec![ev.seq];
                l.last = ev.clone();
            }
            None => self.lost.push(Lost {
                topic: i,
                seqs: vec![ev.seq],
                last: ev.clone(),
            }),
        }
    }

    /// Counts the candidates no stream of this device counted before, by
    /// moving the device's loss ledger past them. The write and the count
    /// run as their own task: a client that drops its connection meanwhile
    /// must not leave the ledger moved and the counter not.
    pub async fn settle_lost(&mut self, seq: &Sequencer) -> Result<(), StoreError> {
        if self.lost.is_empty() {
            return Ok(());
        }
        let lost = std::mem::take(&mut self.lost);
        let marks: Vec<Acked> = lost
            .iter()
            .map(|l| Acked {
                tag: seq.topic(l.topic).tag(),
                epoch: l.last.epoch,
                seq: l.last.seq,
                ts_ms: l.last.ts_ms,
            })
            .collect();
        let (ledger, device) = (self.ledger.clone(), self.device.clone());
        let task = tokio::spawn(async move {
            let before = ledger.store.record_lost(&device, marks.clone()).await?;
            let counted: u64 = lost
                .iter()
                .zip(&marks)
                .zip(before)
                .map(|((l, mark), before)| newly_lost(&l.seqs, mark, before))
                .sum();
            ledger
                .metrics
                .messages_expired_unacked_total
                .inc_by(counted);
            Ok(())
        });
        task.await
            .map_err(|e| StoreError::Unavailable(format!("loss accounting stopped: {e}")))?
    }

    /// An event was written to the stream.
    pub fn delivered(&self) {
        self.ledger.metrics.device_events_delivered_total.inc();
    }

    /// Brings this stream's share of the unacknowledged gauge up to date
    /// with where the stream stands.
    pub fn update_unacked(&mut self, seq: &Sequencer) {
        let mut now = 0i64;
        for i in 0..self.acked.len() {
            let pos = seq.position(i);
            let from = match self.acked_seq(i, pos) {
                Some(a) => a,
                None if self.start[i].epoch == pos.epoch => self.start[i].seq,
                None => Seq::ZERO,
            };
            now += pos.seq.get().saturating_sub(from.get()) as i64;
        }
        self.ledger
            .metrics
            .device_unacked_events
            .add(now - self.unacked);
        self.unacked = now;
    }

    /// Whether events are delivered that the device has not acknowledged
    /// (so re-reading its acknowledgements can change the gauge).
    pub fn has_unacked(&self) -> bool {
        self.unacked > 0
    }

    /// Re-reads the device's acknowledgements (they may arrive through
    /// another replica) and updates the gauge.
    pub async fn refresh_acked(&mut self, seq: &Sequencer) -> Result<(), StoreError> {
        let tags: Vec<u32> = (0..seq.topic_count()).map(|i| seq.topic(i).tag()).collect();
        let acked = self.ledger.store.acked(&self.device, &tags).await?;
        self.set_acked(seq, &acked);
        self.update_unacked(seq);
        Ok(())
    }
}

/// How many of `seqs` (expired, ascending, in `mark`'s epoch, up to
/// `mark`) the ledger did not cover before it moved to `mark`.
fn newly_lost(seqs: &[Seq], mark: &Acked, before: Option<Acked>) -> u64 {
    match before {
        Some(b) if !b.superseded_by(mark) => 0,
        Some(b) if b.epoch == mark.epoch => seqs.iter().filter(|s| **s > b.seq).count() as u64,
        _ => seqs.len() as u64,
    }
}

impl Drop for DeviceTrack {
    fn drop(&mut self) {
        self.ledger.metrics.device_unacked_events.sub(self.unacked);
        self.ledger.recovery.closed(&self.device);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_lost_event_is_counted_by_one_ledger_move() {
        let at = |epoch, seq, ts_ms| Acked {
            tag: 1,
            epoch: crate::core::position::Epoch::new(epoch).unwrap(),
            seq: Seq::new(seq),
            ts_ms,
        };
        let seqs: Vec<Seq> = [4, 5, 7].map(Seq::new).to_vec();
        let mark = at(9, 7, 70);
        assert_eq!(newly_lost(&seqs, &mark, None), 3);
        assert_eq!(newly_lost(&seqs, &mark, Some(at(9, 4, 40))), 2);
        assert_eq!(
            newly_lost(&seqs, &mark, Some(at(9, 7, 70))),
            0,
            "counted already"
        );
        assert_eq!(newly_lost(&seqs, &mark, Some(at(9, 8, 80))), 0);
        assert_eq!(
            newly_lost(&seqs, &mark, Some(at(3, 50, 10))),
            3,
            "an older epoch"
        );
    }

    #[test]
    fn recovery_is_measured_once_per_close() {
        let r = Recovery::default();
        let d = DeviceId::parse("dev-1").unwrap();
        assert_eq!(r.resumed(&d), None, "never closed here");
        r.closed(&d);
        assert!(r.resumed(&d).is_some());
        assert_eq!(r.resumed(&d), None, "one resume per close");
    }
}
