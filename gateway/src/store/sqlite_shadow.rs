//! Device shadows in the embedded store: one row per device. Only the
//! writer thread writes, so its compare-and-set on the version is a read
//! and a write in one transaction.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::core::device::DeviceId;

/// The table, created with the rest of the schema.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS device_shadows (
    device TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    doc TEXT NOT NULL,
    updated INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS device_shadows_updated ON device_shadows (updated);
";

/// The stored version and document, if any.
pub fn read(conn: &Connection, device: &DeviceId) -> rusqlite::Result<Option<(u64, String)>> {
    conn.prepare_cached("SELECT version, doc FROM device_shadows WHERE device = ?1")?
        .query_row([device.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
}

/// Writes `doc` at `version` if `expected` is still stored (0: none).
pub fn put(
    tx: &Transaction<'_>,
    device: &DeviceId,
    (expected, version, doc): (u64, u64, &str),
    now_ms: u64,
) -> rusqlite::Result<bool> {
    let stored = read(tx, device)?.map_or(0, |(v, _)| v);
    if stored != expected {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO device_shadows (device, version, doc, updated) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(device) DO UPDATE SET version = excluded.version, doc = excluded.doc,
             updated = excluded.updated",
        params![device.as_str(), version as i64, doc, now_ms as i64],
    )?;
    Ok(true)
}

/// Drops shadows not changed since `cutoff_ms`.
pub fn trim(tx: &Transaction<'_>, cutoff_ms: u64) -> rusqlite::Result<usize> {
    tx.execute(
        "DELETE FROM device_shadows WHERE updated < ?1",
        [cutoff_ms as i64],
    )
}
