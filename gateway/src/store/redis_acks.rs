//! Device acknowledgements in the Redis store: one hash per device, field =
//! topic tag, value = `epoch:seq:ts`. The merge rule is [`Acked::merge`];
//! a compare-and-set script applies it without losing a concurrent ack from
//! another replica (it retries on conflict).

use redis::aio::ConnectionManager;
use redis::Script;

use super::{Ledger, StoreError};
use crate::core::device::{Acked, DeviceId};
use crate::core::position::{Epoch, Seq};

/// Compare-and-set rounds before giving up (each loses only to a newer write).
const ROUNDS: usize = 16;

/// A key of `device` (all of a device's keys share one hash slot). The id
/// goes in hex, so no character of it can change the key's hash slot.
pub fn device_key(prefix: &str, device: &DeviceId, suffix: &str) -> String {
    let hex: String = device
        .as_str()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}:{{d:{hex}}}:{suffix}")
}

/// The device's hash key of `ledger`.
pub fn key(prefix: &str, ledger: Ledger, device: &DeviceId) -> String {
    let suffix = match ledger {
        Ledger::Acked => "a",
        Ledger::Expired => "x",
    };
    device_key(prefix, device, suffix)
}

fn encode(a: &Acked) -> String {
    format!("{}:{}:{}", a.epoch.get(), a.seq.get(), a.ts_ms)
}

fn decode(tag: u32, text: &str) -> Option<Acked> {
    let mut parts = text.split(':').map(|p| p.parse::<u64>().ok());
    let (epoch, seq, ts_ms) = (parts.next()??, parts.next()??, parts.next()??);
    Some(Acked {
        tag,
        epoch: Epoch::new(epoch)?,
        seq: Seq::new(seq),
        ts_ms,
    })
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

async fn read_raw(
    conn: &mut ConnectionManager,
    key: &str,
    tags: &[u32],
) -> Result<Vec<Option<String>>, StoreError> {
    if tags.is_empty() {
        return Ok(Vec::new());
    }
    redis::cmd("HMGET")
        .arg(key)
        .arg(tags)
        .query_async(conn)
        .await
        .map_err(unavailable)
}

/// The stored positions among `tags`.
pub async fn read(
    conn: &mut ConnectionManager,
    key: &str,
    tags: &[u32],
) -> Result<Vec<Acked>, StoreError> {
    let raw = read_raw(conn, key, tags).await?;
    Ok(tags
        .iter()
        .zip(raw)
        .filter_map(|(tag, v)| decode(*tag, v.as_deref()?))
        .collect())
}

/// Merges `acks` into the device's hash; returns, per position, what was
/// stored before and what is stored after.
pub async fn merge(
    conn: &mut ConnectionManager,
    cas: &Script,
    key: &str,
    ttl_ms: u64,
    acks: &[Acked],
) -> Result<Vec<(Option<Acked>, Acked)>, StoreError> {
    let tags: Vec<u32> = acks.iter().map(|a| a.tag).collect();
    for _ in 0..ROUNDS {
        let raw = read_raw(conn, key, &tags).await?;
        let mut inv = cas.prepare_invoke();
        inv.key(key).arg(ttl_ms.max(1)).arg(acks.len());
        let mut after = Vec::with_capacity(acks.len());
        for (a, old) in acks.iter().zip(&raw) {
            let current = old.as_deref().and_then(|t| decode(a.tag, t));
            let merged = Acked::merge(current, *a);
            inv.arg(a.tag)
                .arg(old.as_deref().unwrap_or(""))
                .arg(encode(&merged));
            after.push((current, merged));
        }
        let written: i64 = inv.invoke_async(conn).await.map_err(unavailable)?;
        if written == 1 {
            return Ok(after);
        }
    }
    Err(unavailable("device acknowledgement kept conflicting"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_keys_stay_in_one_slot() {
        let a = Acked {
            tag: 3,
            epoch: Epoch::new(9).unwrap(),
            seq: Seq::new(60),
            ts_ms: 1234,
        };
        assert_eq!(decode(3, &encode(&a)), Some(a));
        assert_eq!(decode(3, "0:1:2"), None);
        assert_eq!(decode(3, "junk"), None);
        let k = key("pg", Ledger::Acked, &DeviceId::parse("a{b}").unwrap());
        assert_eq!(k, "pg:{d:617b627d}:a");
    }
}
