//! Device shadows in the Redis store: one hash per device (`v`, `doc`) in
//! the device's hash slot, replaced by a compare-and-set script on the
//! version, so two replicas patching at once cannot both win.

use redis::aio::ConnectionManager;
use redis::Script;

use super::redis_acks::device_key;
use super::StoreError;
use crate::core::device::DeviceId;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// The shadow's key.
pub fn key(prefix: &str, device: &DeviceId) -> String {
    device_key(prefix, device, "s")
}

/// The stored version and document, if any.
pub async fn read(
    conn: &mut ConnectionManager,
    key: &str,
) -> Result<Option<(u64, String)>, StoreError> {
    let (v, doc): (Option<u64>, Option<String>) = redis::cmd("HMGET")
        .arg(key)
        .arg("v")
        .arg("doc")
        .query_async(conn)
        .await
        .map_err(unavailable)?;
    Ok(v.zip(doc))
}

/// Writes `doc` at `version` if `expected` is still stored.
pub async fn put(
    conn: &mut ConnectionManager,
    cas: &Script,
    key: &str,
    (expected, version, doc): (u64, u64, &str),
    ttl_ms: u64,
) -> Result<bool, StoreError> {
    let written: i64 = cas
        .key(key)
        .arg(expected)
        .arg(version)
        .arg(doc)
        .arg(ttl_ms.max(1))
        .invoke_async(conn)
        .await
        .map_err(unavailable)?;
    Ok(written == 1)
}
