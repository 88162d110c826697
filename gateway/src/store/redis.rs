//! The Redis store: many gateway replicas share history and live fan-out.
//!
//! - History: one stream per topic, entry id `<seq>-0`, so `read_after` is a
//!   plain `XRANGE`; a meta hash holds the epoch and the last seq. Appends run
//!   as one Lua script per topic (atomic, seq assignment included).
//! - Live: after an append, the event is handed to the local sink at once and
//!   added to one of a few shard streams (`XADD … MAXLEN ~`); every replica
//!   reads every shard with blocking `XREAD` from the last id it saw, so a
//!   reconnect loses nothing. Entries carry the writer's origin id: a
//!   replica skips its own (it delivered them already).
//! - Keys: `<prefix>:{<topic>}:m|s|i:<key>` share the topic's hash slot;
//!   shard streams are `<prefix>:live:{<n>}`; a device's acknowledgements
//!   are `<prefix>:{d:<hex id>}:a`. Cluster-safe naming throughout.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, Script, Value};
use tokio::task::JoinHandle;

use super::redis_acks;
use super::redis_scripts::{APPEND, COMPARE_AND_SET, SHADOW_CAS, WIPE};
use super::redis_shadow;
use super::{
    now_ms, Ack, Events, Ledger, LiveSink, NewEvent, Store, StoreError, StoreOptions, StoredEvent,
    TopicHead,
};
use crate::config::RedisSettings;
use crate::core::device::{Acked, DeviceId};
use crate::core::hash::fnv1a32;
use crate::core::position::{Epoch, Seq};
use crate::core::tier::Priority;
use crate::core::topic::Topic;

/// Entries a shard stream keeps (approximate): enough for any replica's reconnect.
const LIVE_MAXLEN: u64 = 100_000;
const LIVE_BATCH: usize = 512;
const LIVE_BLOCK_MS: u64 = 2_000;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

#[derive(Clone)]
struct Keys {
    prefix: String,
    shards: usize,
}

impl Keys {
    fn meta(&self, t: &Topic) -> String {
        format!("{}:{{{}}}:m", self.prefix, t)
    }
    fn stream(&self, t: &Topic) -> String {
        format!("{}:{{{}}}:s", self.prefix, t)
    }
    fn idem(&self, t: &Topic, key: &str) -> String {
        format!("{}:{{{}}}:i:{}", self.prefix, t, key)
    }
    /// Prefix of the keys holding payloads of events with a TTL
    /// (`<epoch>:<seq>` follows), in the topic's hash slot.
    fn payload(&self, t: &Topic) -> String {
        format!("{}:{{{}}}:p:", self.prefix, t)
    }
    fn topics(&self) -> String {
        format!("{}:topics", self.prefix)
    }
    fn live(&self, shard: usize) -> String {
        format!("{}:live:{{{}}}", self.prefix, shard)
    }
    fn live_of(&self, t: &Topic) -> String {
        self.live(fnv1a32(t.as_str().as_bytes()) as usize % self.shards)
    }
}

/// Redis-backed [`Store`].
pub struct RedisStore {
    conns: Vec<ConnectionManager>,
    next: AtomicUsize,
    keys: Keys,
    opts: StoreOptions,
    origin: String,
    append: Script,
    wipe: Script,
    cas: Script,
    shadow_cas: Script,
    readers: Vec<JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for r in &self.readers {
            r.abort();
        }
    }
}

impl RedisStore {
    /// Connects lazily (the gateway starts, unready, while Redis is down) and
    /// starts one live reader per shard stream.
    pub fn open(url: &str, s: &RedisSettings, opts: StoreOptions) -> Result<Self, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Rejected(format!("invalid redis URL: {e}")))?;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(s.connect_timeout))
            .set_response_timeout(Some(s.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conns = (0..s.pool_size.max(1))
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), cfg.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(unavailable)?;
        let keys = Keys {
            prefix: s.key_prefix.clone(),
            shards: s.live_shards.max(1),
        };
        let origin = format!("{:016x}", rand::random::<u64>());
        let readers = (0..keys.shards)
            .map(|shard| {
                tokio::spawn(read_live(
                    client.clone(),
                    s.connect_timeout,
                    keys.live(shard),
                    origin.clone(),
                    opts.sink.clone(),
                ))
            })
            .collect();
        Ok(RedisStore {
            conns,
            next: AtomicUsize::new(0),
            keys,
            opts,
            origin,
            append: Script::new(APPEND),
            wipe: Script::new(WIPE),
            cas: Script::new(COMPARE_AND_SET),
            shadow_cas: Script::new(SHADOW_CAS),
            readers,
        })
    }

    fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.conns.len();
        self.conns[i].clone()
    }

    /// Appends one topic's events atomically; returns acks in input order.
    async fn append_topic(
        &self,
        topic: &Topic,
        events: &[&NewEvent],
    ) -> Result<Vec<Ack>, StoreError> {
        let mut inv = self.append.prepare_invoke();
        inv.key(self.keys.meta(topic)).key(self.keys.stream(topic));
        let mut next_key = 3;
        inv.arg(Epoch::fresh(None).get())
            .arg(self.opts.retention.max_events)
            .arg(self.opts.retention.idempotency_ttl.as_millis() as u64)
            .arg(events.len())
            .arg(self.keys.payload(topic));
        for ev in events {
            match &ev.idempotency_key {
                Some(k) => {
                    inv.key(self.keys.idem(topic, k.as_str()));
                    inv.arg(next_key);
                    next_key += 1;
                }
                None => {
                    inv.arg(0);
                }
            }
            inv.arg(if ev.event_type.is_some() { "1" } else { "0" })
                .arg(ev.event_type.as_deref().unwrap_or(""))
                .arg(&*ev.data)
                .arg(ev.ttl.map_or(0, |t| t.as_millis().max(1) as u64))
                .arg(ev.priority.code());
        }
        let rows: Vec<(u64, u64, u64, u8)> = inv
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if rows.len() != events.len() {
            return Err(unavailable(
                "append script returned the wrong number of rows",
            ));
        }
        let mut acks = Vec::with_capacity(rows.len());
        let mut live = redis::pipe();
        let live_key = self.keys.live_of(topic);
        for ((epoch, seq, ts_ms, dup), ev) in rows.into_iter().zip(events) {
            let duplicate = dup == 1;
            let epoch =
                Epoch::new(epoch).ok_or_else(|| unavailable("append script returned epoch 0"))?;
            let seq = Seq::new(seq);
            let expires_ms = ev.expires_ms(ts_ms);
            let stored = Arc::new(StoredEvent {
                topic: topic.clone(),
                epoch,
                seq,
                ts_ms,
                event_type: ev.event_type.clone(),
                data: ev.data.clone(),
                expires_ms,
                priority: ev.priority,
                id: Default::default(),
            });
            // A retried publish re-announces its event to the other replicas:
            // if the first attempt stored it but failed before announcing,
            // this is what makes them see it. Streams drop the duplicate by seq.
            live.cmd("XADD")
                .arg(&live_key)
                .arg("MAXLEN")
                .arg("~")
                .arg(LIVE_MAXLEN)
                .arg("*")
                .arg("o")
                .arg(&self.origin)
                .arg("tp")
                .arg(topic.as_str())
                .arg("e")
                .arg(epoch.get())
                .arg("s")
                .arg(seq.get())
                .arg("ts")
                .arg(ts_ms)
                .arg("d")
                .arg(&*ev.data);
            if let Some(t) = &ev.event_type {
                live.arg("t").arg(&**t);
            }
            if let Some(x) = expires_ms {
                live.arg("x").arg(x);
            }
            if ev.priority != Priority::Normal {
                live.arg("p").arg(ev.priority.code());
            }
            live.ignore();
            let id = stored.id().clone();
            if !duplicate {
                (self.opts.sink)(stored);
            }
            acks.push(Ack {
                id,
                topic: topic.clone(),
                epoch,
                seq,
                ts_ms,
                duplicate,
                expires_ms,
            });
        }
        if acks.iter().any(|a| a.seq == Seq::new(1) && !a.duplicate) {
            live.cmd("SADD")
                .arg(self.keys.topics())
                .arg(topic.as_str())
                .ignore();
        }
        live.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(acks)
    }

    async fn known_topics(&self) -> Result<Vec<Topic>, StoreError> {
        let names: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys.topics())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(names
            .iter()
            .filter_map(|n| Topic::from_stored(n).ok())
            .collect())
    }

    async fn trim_topic(&self, t: &Topic) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let stream = self.keys.stream(t);
        let mut removed: u64 = redis::cmd("XTRIM")
            .arg(&stream)
            .arg("MAXLEN")
            .arg(self.opts.retention.max_events)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let cutoff = now_ms().saturating_sub(self.opts.retention.max_age.as_millis() as u64);
        // Find the first entry young enough to keep; everything before it goes.
        let mut start = "-".to_owned();
        let mut keep_from: Option<Seq> = None;
        let mut last_old: Option<Seq> = None;
        for _ in 0..10_000 {
            let page: Value = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(256)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            let entries = parse_entries(page)?;
            if entries.is_empty() {
                break;
            }
            for (seq, fields) in &entries {
                let ts: u64 = field(fields, "ts")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if ts >= cutoff {
                    keep_from = Some(*seq);
                    break;
                }
                last_old = Some(*seq);
            }
            if keep_from.is_some() {
                break;
            }
            start = format!("({}-0", entries.last().expect("non-empty").0);
        }
        let minid = match (keep_from, last_old) {
            (_, None) => None,
            (Some(k), Some(_)) => Some(k),
            (None, Some(old)) => Some(old.next()),
        };
        if let Some(minid) = minid {
            let n: u64 = redis::cmd("XTRIM")
                .arg(&stream)
                .arg("MINID")
                .arg(format!("{minid}-0"))
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            removed += n;
        }
        Ok(removed)
    }
}

type Fields = HashMap<String, String>;

fn field<'a>(f: &'a Fields, k: &str) -> Option<&'a str> {
    f.get(k).map(String::as_str)
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// Decodes an `XRANGE` reply into `(seq, fields)` from ids `<seq>-0`.
fn parse_entries(v: Value) -> Result<Vec<(Seq, Fields)>, StoreError> {
    let bad = || unavailable("unexpected XRANGE reply");
    let Value::Array(items) = v else {
        return if matches!(v, Value::Nil) {
            Ok(Vec::new())
        } else {
            Err(bad())
        };
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut pair) = item else {
            return Err(bad());
        };
        if pair.len() != 2 {
            return Err(bad());
        }
        let fields = pair.pop().expect("2 items");
        let id = text(pair.pop().expect("2 items")).ok_or_else(bad)?;
        let seq = id
            .split('-')
            .next()
            .and_then(|s| s.parse().ok())
            .map(Seq::new)
            .ok_or_else(bad)?;
        out.push((seq, parse_fields(fields).ok_or_else(bad)?));
    }
    Ok(out)
}

fn parse_fields(v: Value) -> Option<Fields> {
    let Value::Array(kv) = v else { return None };
    let mut f = HashMap::with_capacity(kv.len() / 2);
    let mut it = kv.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        f.insert(text(k)?, text(v)?);
    }
    Some(f)
}

fn stored_from(topic: &Topic, epoch: Epoch, seq: Seq, f: &Fields) -> StoredEvent {
    StoredEvent {
        topic: topic.clone(),
        epoch,
        seq,
        ts_ms: field(f, "ts").and_then(|v| v.parse().ok()).unwrap_or(0),
        event_type: field(f, "t").map(Arc::from),
        data: Arc::from(field(f, "d").unwrap_or("")),
        expires_ms: field(f, "x").and_then(|v| v.parse().ok()),
        priority: field(f, "p")
            .and_then(|v| v.parse().ok())
            .map_or(Priority::Normal, Priority::from_code),
        id: Default::default(),
    }
}

/// Puts payloads kept in their own keys (events with a TTL) back into
/// `events`. A payload Redis already dropped means the event expired, by
/// Redis' clock: it is marked expired now, whatever this host's clock says.
async fn fill_payloads(
    conn: &mut ConnectionManager,
    keys: &Keys,
    events: &mut [StoredEvent],
) -> Result<(), StoreError> {
    let now = now_ms();
    let pending: Vec<usize> = (0..events.len())
        .filter(|i| events[*i].expires_ms.is_some() && !events[*i].is_expired(now))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let mut mget = redis::cmd("MGET");
    for i in &pending {
        let e = &events[*i];
        mget.arg(format!(
            "{}{}:{}",
            keys.payload(&e.topic),
            e.epoch.get(),
            e.seq.get()
        ));
    }
    let found: Vec<Option<String>> = mget.query_async(conn).await.map_err(unavailable)?;
    for (i, data) in pending.into_iter().zip(found) {
        match data {
            Some(d) => events[i].data = Arc::from(d),
            None => events[i].expires_ms = Some(now),
        }
    }
    Ok(())
}

#[async_trait]
impl Store for RedisStore {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Ack>, StoreError> {
        // Atomic per topic (one script per topic); acks back in input order.
        let mut by_topic: BTreeMap<&Topic, Vec<usize>> = BTreeMap::new();
        for (i, ev) in batch.iter().enumerate() {
            by_topic.entry(&ev.topic).or_default().push(i);
        }
        let mut acks: Vec<Option<Ack>> = vec![None; batch.len()];
        for (topic, idx) in by_topic {
            let events: Vec<&NewEvent> = idx.iter().map(|i| &batch[*i]).collect();
            for (i, ack) in idx.iter().zip(self.append_topic(topic, &events).await?) {
                acks[*i] = Some(ack);
            }
        }
        Ok(acks
            .into_iter()
            .map(|a| a.expect("every event acked"))
            .collect())
    }

    async fn read_after(&self, topic: &Topic, after: Seq, limit: usize) -> Events {
        let (epoch, page): (Option<u64>, Value) = redis::pipe()
            .atomic()
            .hget(self.keys.meta(topic), "epoch")
            .cmd("XRANGE")
            .arg(self.keys.stream(topic))
            .arg(format!("{}-0", after.next()))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // No epoch: nothing was ever stored, so nothing to read.
        let Some(epoch) = epoch.and_then(Epoch::new) else {
            return Ok(Vec::new());
        };
        let mut events: Vec<StoredEvent> = parse_entries(page)?
            .into_iter()
            .map(|(seq, f)| stored_from(topic, epoch, seq, &f))
            .collect();
        fill_payloads(&mut self.conn(), &self.keys, &mut events).await?;
        Ok(events.into_iter().map(Arc::new).collect())
    }

    async fn head(&self, topic: &Topic) -> Result<TopicHead, StoreError> {
        let ((epoch, last), first): ((Option<u64>, Option<u64>), Value) = redis::pipe()
            .atomic()
            .cmd("HMGET")
            .arg(self.keys.meta(topic))
            .arg("epoch")
            .arg("last")
            .cmd("XRANGE")
            .arg(self.keys.stream(topic))
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(epoch) = epoch.and_then(Epoch::new) else {
            return Ok(TopicHead::default());
        };
        Ok(TopicHead {
            epoch: Some(epoch),
            first_seq: parse_entries(first)?.first().map(|e| e.0),
            last_seq: Seq::new(last.unwrap_or(0)),
        })
    }

    async fn wipe(&self, topic: &Topic) -> Result<TopicHead, StoreError> {
        let old = self.head(topic).await?.epoch;
        let epoch = Epoch::fresh(old);
        let _: i64 = self
            .wipe
            .key(self.keys.meta(topic))
            .key(self.keys.stream(topic))
            .arg(epoch.get())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let _: () = redis::cmd("SADD")
            .arg(self.keys.topics())
            .arg(topic.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(TopicHead {
            epoch: Some(epoch),
            first_seq: None,
            last_seq: Seq::ZERO,
        })
    }

    async fn trim(&self) -> Result<u64, StoreError> {
        let mut removed = 0;
        for t in self.known_topics().await? {
            removed += self.trim_topic(&t).await?;
        }
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn positions(
        &self,
        ledger: Ledger,
        device: &DeviceId,
        tags: &[u32],
    ) -> Result<Vec<Acked>, StoreError> {
        let key = redis_acks::key(&self.keys.prefix, ledger, device);
        redis_acks::read(&mut self.conn(), &key, tags).await
    }

    async fn shadow(&self, device: &DeviceId) -> Result<Option<(u64, String)>, StoreError> {
        let key = redis_shadow::key(&self.keys.prefix, device);
        redis_shadow::read(&mut self.conn(), &key).await
    }

    async fn put_shadow(
        &self,
        device: &DeviceId,
        expected: u64,
        version: u64,
        doc: String,
    ) -> Result<bool, StoreError> {
        let key = redis_shadow::key(&self.keys.prefix, device);
        let ttl = self.opts.retention.device_ack_ttl.as_millis() as u64;
        let cas = &self.shadow_cas;
        redis_shadow::put(&mut self.conn(), cas, &key, (expected, version, &doc), ttl).await
    }

    async fn merge_positions(
        &self,
        ledger: Ledger,
        device: &DeviceId,
        list: Vec<Acked>,
    ) -> Result<Vec<(Option<Acked>, Acked)>, StoreError> {
        if list.is_empty() {
            return Ok(Vec::new());
        }
        let ttl = self.opts.retention.device_ack_ttl.as_millis() as u64;
        let key = redis_acks::key(&self.keys.prefix, ledger, device);
        redis_acks::merge(&mut self.conn(), &self.cas, &key, ttl, &list).await
    }
}

/// Follows one shard stream forever, from the last id seen, across reconnects.
async fn read_live(
    client: Client,
    connect_timeout: Duration,
    key: String,
    origin: String,
    sink: LiveSink,
) {
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(Duration::from_millis(LIVE_BLOCK_MS) + connect_timeout));
    let mut last_id: Option<String> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, key, "live reader cannot connect");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if last_id.is_none() {
            match newest_id(&mut conn, &key).await {
                Ok(id) => last_id = Some(id),
                Err(_) => continue,
            }
        }
        backoff = Duration::from_millis(50);
        loop {
            let id = last_id.clone().expect("set above");
            let reply: Result<Value, _> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(LIVE_BATCH)
                .arg("BLOCK")
                .arg(LIVE_BLOCK_MS)
                .arg("STREAMS")
                .arg(&key)
                .arg(&id)
                .query_async(&mut conn)
                .await;
            let reply = match reply {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, key, "live reader lost Redis; reconnecting");
                    break;
                }
            };
            for (entry_id, f) in parse_xread(reply) {
                last_id = Some(entry_id);
                if field(&f, "o") == Some(origin.as_str()) {
                    continue;
                }
                let parsed = (|| {
                    let topic = Topic::from_stored(field(&f, "tp")?).ok()?;
                    let epoch = Epoch::new(field(&f, "e")?.parse().ok()?)?;
                    let seq = Seq::new(field(&f, "s")?.parse().ok()?);
                    Some(stored_from(&topic, epoch, seq, &f))
                })();
                match parsed {
                    Some(ev) => sink(Arc::new(ev)),
                    None => tracing::warn!(key, "skipping a malformed live entry"),
                }
            }
        }
    }
}

async fn newest_id(conn: &mut MultiplexedConnection, key: &str) -> redis::RedisResult<String> {
    let v: Value = redis::cmd("XREVRANGE")
        .arg(key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    let id = match v {
        Value::Array(mut items) if !items.is_empty() => match items.swap_remove(0) {
            Value::Array(mut pair) if !pair.is_empty() => text(pair.swap_remove(0)),
            _ => None,
        },
        _ => None,
    };
    Ok(id.unwrap_or_else(|| "0-0".to_owned()))
}

/// Decodes `XREAD` (one stream) into `(id, fields)`.
fn parse_xread(v: Value) -> Vec<(String, Fields)> {
    let mut out = Vec::new();
    let streams = match v {
        Value::Array(s) => s,
        Value::Map(m) => m
            .into_iter()
            .map(|(k, v)| Value::Array(vec![k, v]))
            .collect(),
        _ => return out,
    };
    for s in streams {
        let Value::Array(mut kv) = s else { continue };
        if kv.len() != 2 {
            continue;
        }
        let Value::Array(entries) = kv.pop().expect("2 items") else {
            continue;
        };
        for e in entries {
            let Value::Array(mut pair) = e else { continue };
            if pair.len() != 2 {
                continue;
            }
            let fields = pair.pop().expect("2 items");
            if let (Some(id), Some(f)) = (text(pair.pop().expect("2 items")), parse_fields(fields))
            {
                out.push((id, f));
            }
        }
    }
    out
}
