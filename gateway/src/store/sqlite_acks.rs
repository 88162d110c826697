//! Device acknowledgements in the embedded store: one row per device and
//! topic tag. Only the writer thread writes them, so the merge rule runs in
//! Rust ([`Acked::merge`]) between a read and a write without racing.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::device::{Acked, DeviceId};

/// The table, created with the rest of the schema.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_acks (
    device TEXT NOT NULL,
    tag INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (device, tag)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS device_acks_updated ON device_acks (updated);
";

fn row(tag: u32, r: &rusqlite::Row<'_>) -> rusqlite::Result<Acked> {
    Ok(Acked {
        tag,
        epoch: r.get(0)?,
        seq: r.get(1)?,
        ts_ms: r.get(2)?,
    })
}

fn stored(conn: &Connection, device: &DeviceId, tag: u32) -> rusqlite::Result<Option<Acked>> {
    conn.prepare_cached("SELECT epoch, seq, ts FROM device_acks WHERE device = ?1 AND tag = ?2")?
        .query_row(params![device.as_str(), tag], |r| row(tag, r))
        .optional()
}

/// Merges one device's acknowledgements inside `tx`; returns what is stored after.
pub fn merge(
    tx: &Transaction<'_>,
    device: &DeviceId,
    acks: &[Acked],
    now_ms: u64,
) -> rusqlite::Result<Vec<Acked>> {
    let mut put = tx.prepare_cached(
        "INSERT INTO device_acks (device, tag, epoch, seq, ts, updated) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(device, tag) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq,
             ts = excluded.ts, updated = excluded.updated",
    )?;
    let mut out = Vec::with_capacity(acks.len());
    for a in acks {
        let after = Acked::merge(stored(tx, device, a.tag)?, *a);
        // Rewritten even when unchanged: `updated` is what retention reads.
        put.execute(params![
            device.as_str(),
            after.tag,
            after.epoch,
            after.seq,
            after.ts_ms as i64,
            now_ms as i64
        ])?;
        out.push(after);
    }
    Ok(out)
}

/// `device`'s stored positions among `tags`.
pub fn read(conn: &Connection, device: &DeviceId, tags: &[u32]) -> rusqlite::Result<Vec<Acked>> {
    let mut out = Vec::new();
    for &tag in tags {
        if let Some(a) = stored(conn, device, tag)? {
            out.push(a);
        }
    }
    Ok(out)
}

/// Drops positions not acknowledged since `cutoff_ms`.
pub fn trim(tx: &Transaction<'_>, cutoff_ms: u64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM device_acks WHERE updated < ?1",
        [cutoff_ms as i64],
    )
}
