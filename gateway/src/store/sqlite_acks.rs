//! Device positions in the embedded store: one row per device and topic
//! tag, in one table per [`Ledger`]. Only the writer thread writes them, so
//! the merge rule runs in Rust ([`Acked::merge`]) between a read and a write
//! without racing.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::Ledger;
use crate::core::device::{Acked, DeviceId};

/// The tables (one per ledger), created with the rest of the schema.
pub fn schema() -> String {
    [Ledger::Acked, Ledger::Expired]
        .map(|l| {
            let t = table(l);
            format!(
                "CREATE TABLE IF NOT EXISTS {t} (
    device TEXT NOT NULL,
    tag INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (device, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {t}_updated ON {t} (updated);
"
            )
        })
        .concat()
}

fn table(ledger: Ledger) -> &'static str {
    match ledger {
        Ledger::Acked => "device_acks",
        Ledger::Expired => "device_expired",
    }
}

fn row(tag: u32, r: &rusqlite::Row<'_>) -> rusqlite::Result<Acked> {
    Ok(Acked {
        tag,
        epoch: r.get(0)?,
        seq: r.get(1)?,
        ts_ms: r.get(2)?,
    })
}

fn stored(
    conn: &Connection,
    ledger: Ledger,
    device: &DeviceId,
    tag: u32,
) -> rusqlite::Result<Option<Acked>> {
    let sql = format!(
        "SELECT epoch, seq, ts FROM {} WHERE device = ?1 AND tag = ?2",
        table(ledger)
    );
    conn.prepare_cached(&sql)?
        .query_row(params![device.as_str(), tag], |r| row(tag, r))
        .optional()
}

/// Merges one device's positions inside `tx`; returns, per position, what
/// was stored before and what is stored after.
pub fn merge(
    tx: &Transaction<'_>,
    ledger: Ledger,
    device: &DeviceId,
    acks: &[Acked],
    now_ms: u64,
) -> rusqlite::Result<Vec<(Option<Acked>, Acked)>> {
    let sql = format!(
        "INSERT INTO {} (device, tag, epoch, seq, ts, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(device, tag) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq,
             ts = excluded.ts, updated = excluded.updated",
        table(ledger)
    );
    let mut put = tx.prepare_cached(&sql)?;
    let mut out = Vec::with_capacity(acks.len());
    for a in acks {
        let before = stored(tx, ledger, device, a.tag)?;
        let after = Acked::merge(before, *a);
        // Rewritten even when unchanged: `updated` is what retention reads.
        put.execute(params![
            device.as_str(),
            after.tag,
            after.epoch,
            after.seq,
            after.ts_ms as i64,
            now_ms as i64
        ])?;
        out.push((before, after));
    }
    Ok(out)
}

/// `device`'s stored positions among `tags`.
pub fn read(
    conn: &Connection,
    ledger: Ledger,
    device: &DeviceId,
    tags: &[u32],
) -> rusqlite::Result<Vec<Acked>> {
    let mut out = Vec::new();
    for &tag in tags {
        if let Some(a) = stored(conn, ledger, device, tag)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Drops positions not written since `cutoff_ms`.
pub fn trim(tx: &Transaction<'_>, cutoff_ms: u64) -> rusqlite::Result<usize> {
    let mut n = 0;
    for ledger in [Ledger::Acked, Ledger::Expired] {
        n += tx.execute(
            &format!("DELETE FROM {} WHERE updated < ?1", table(ledger)),
            [cutoff_ms as i64],
        )?;
    }
    Ok(n)
}
