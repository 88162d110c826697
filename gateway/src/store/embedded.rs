//! The embedded store: SQLite in WAL mode. One writer thread owns the write
//! connection and group-commits whatever publishes are queued into a single
//! transaction, acknowledging them only after the commit (and its fsync, per
//! policy) returns. Readers use their own connections, concurrently.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use super::{
    now_ms, Ack, Events, Ledger, NewEvent, Store, StoreError, StoreOptions, StoredEvent, TopicHead,
};
use super::{sqlite_acks, sqlite_shadow};
use crate::config::{FsyncPolicy, Retention};
use crate::core::cursor::Cursor;
use crate::core::device::{Acked, DeviceId};
use crate::core::position::{Epoch, Seq};
use crate::core::tier::Priority;
use crate::core::topic::Topic;

/// Most events committed in one group (bounds latency of the first in line).
const MAX_GROUP_EVENTS: usize = 4096;
const READERS: usize = 2;
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL,
    etype TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (topic, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS idem (
    key TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idem_ts ON idem (ts);
";

/// Columns added after the first release, added to older databases on open.
const ADDED_COLUMNS: [(&str, &str); 2] = [
    ("expires", "ALTER TABLE events ADD COLUMN expires INTEGER"),
    (
        "prio",
        "ALTER TABLE events ADD COLUMN prio INTEGER NOT NULL DEFAULT 1",
    ),
];

/// Brings an older database's tables up to the current columns.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut have = Vec::new();
    {
        let mut stmt = conn.prepare("PRAGMA table_info(events)")?;
        let names = stmt.query_map([], |r| r.get::<_, String>(1))?;
        for n in names {
            have.push(n?);
        }
    }
    for (column, add) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == column) {
            conn.execute_batch(add)?;
        }
    }
    // Trimming finds expired payloads without scanning events that never expire.
    conn.execute_batch(
        "CREATE INDEX IF NOT EXISTS events_expires ON events (expires) WHERE expires IS NOT NULL",
    )
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

// Positions are plain integers in the database; typed everywhere else.
impl ToSql for Seq {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.get() as i64))
    }
}

impl FromSql for Seq {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        u64::column_result(v).map(Seq::new)
    }
}

impl ToSql for Epoch {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.get() as i64))
    }
}

impl FromSql for Epoch {
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Epoch::new(u64::column_result(v)?).ok_or(FromSqlError::OutOfRange(0))
    }
}

enum Command {
    Append(Vec<NewEvent>, Reply<Vec<Ack>>),
    DeviceAck(PendingAck),
    PutShadow(DeviceId, (u64, u64, String), Reply<bool>),
    Wipe(Topic, Reply<TopicHead>),
    Trim(Reply<u64>),
}

/// SQLite-backed [`Store`].
pub struct EmbeddedStore {
    /// Held for the store's life: one process per data directory.
    _lock: super::dirlock::DirLock,
    commands: mpsc::UnboundedSender<Command>,
    readers: Arc<[Mutex<Connection>]>,
    next_reader: AtomicUsize,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn open_conn(path: &Path, fsync: FsyncPolicy) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match fsync {
        FsyncPolicy::Always => "FULL",
        FsyncPolicy::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(conn)
}

impl EmbeddedStore {
    /// Opens (creating if needed) the database in `dir` and starts the writer thread.
    pub fn open(dir: &Path, fsync: FsyncPolicy, opts: StoreOptions) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| unavailable(format!("cannot create {}: {e}", dir.display())))?;
        let lock = super::dirlock::DirLock::acquire(dir, super::dirlock::LOCK_WAIT)?;
        let path = dir.join("pushgate.db");
        let writer = open_conn(&path, fsync).map_err(unavailable)?;
        writer.execute_batch(SCHEMA).map_err(unavailable)?;
        migrate(&writer).map_err(unavailable)?;
        writer
            .execute_batch(&sqlite_acks::schema())
            .map_err(unavailable)?;
        writer
            .execute_batch(sqlite_shadow::SCHEMA)
            .map_err(unavailable)?;
        let readers: Vec<Mutex<Connection>> = (0..READERS)
            .map(|_| open_conn(&path, fsync).map(Mutex::new))
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut w = Writer::new(writer, opts)?;
        std::thread::Builder::new()
            .name("pushgate-sqlite-writer".into())
            .spawn(move || w.run(rx))
            .map_err(unavailable)?;
        Ok(EmbeddedStore {
            _lock: lock,
            commands: tx,
            readers: readers.into(),
            next_reader: AtomicUsize::new(0),
        })
    }

    async fn command<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| unavailable("writer thread stopped"))?;
        rx.await.map_err(|_| unavailable("writer thread stopped"))?
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.readers.clone();
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % readers.len();
        tokio::task::spawn_blocking(move || {
            let mut conn = readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(unavailable)?
        .map_err(unavailable)
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn append(&self, batch: Vec<NewEvent>) -> Result<Vec<Ack>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.command(|r| Command::Append(batch, r)).await
    }

    async fn read_after(&self, topic: &Topic, after: Seq, limit: usize) -> Events {
        let topic = topic.clone();
        self.with_reader(move |conn| {
            let tx = conn.transaction()?;
            let epoch: Option<Epoch> = tx
                .query_row(
                    "SELECT epoch FROM topics WHERE name = ?1",
                    [topic.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            // No topic row: nothing was ever stored, so nothing to read.
            let Some(epoch) = epoch else {
                tx.finish()?;
                return Ok(Vec::new());
            };
            let mut stmt = tx.prepare_cached(
                "SELECT seq, ts, etype, data, expires, prio FROM events WHERE topic = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![topic.as_str(), after, limit as i64], |r| {
                Ok(Arc::new(StoredEvent {
                    topic: topic.clone(),
                    epoch,
                    seq: r.get(0)?,
                    ts_ms: r.get(1)?,
                    event_type: r.get::<_, Option<String>>(2)?.map(Arc::from),
                    data: Arc::from(r.get::<_, String>(3)?),
                    expires_ms: r.get(4)?,
                    priority: Priority::from_code(r.get(5)?),
                    id: Default::default(),
                }))
            })?;
            let out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
            drop(stmt);
            tx.finish()?;
            Ok(out)
        })
        .await
    }

    async fn head(&self, topic: &Topic) -> Result<TopicHead, StoreError> {
        let topic = topic.clone();
        self.with_reader(move |conn| {
            let tx = conn.transaction()?;
            let row: Option<(Epoch, Seq)> = tx
                .query_row(
                    "SELECT epoch, last_seq FROM topics WHERE name = ?1",
                    [topic.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let first: Option<Seq> = tx.query_row(
                "SELECT MIN(seq) FROM events WHERE topic = ?1",
                [topic.as_str()],
                |r| r.get(0),
            )?;
            tx.finish()?;
            Ok(match row {
                Some((epoch, last_seq)) => TopicHead {
                    epoch: Some(epoch),
                    first_seq: first,
                    last_seq,
                },
                None => TopicHead::default(),
            })
        })
        .await
    }

    async fn wipe(&self, topic: &Topic) -> Result<TopicHead, StoreError> {
        let topic = topic.clone();
        self.command(|r| Command::Wipe(topic, r)).await
    }

    async fn trim(&self) -> Result<u64, StoreError> {
        self.command(Command::Trim).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        if self.commands.is_closed() {
            return Err(unavailable("writer thread stopped"));
        }
        self.with_reader(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
            .await
    }

    async fn shadow(&self, device: &DeviceId) -> Result<Option<(u64, String)>, StoreError> {
        let device = device.clone();
        self.with_reader(move |conn| sqlite_shadow::read(conn, &device))
            .await
    }

    async fn put_shadow(
        &self,
        device: &DeviceId,
        expected: u64,
        version: u64,
        doc: String,
    ) -> Result<bool, StoreError> {
        let device = device.clone();
        self.command(|r| Command::PutShadow(device, (expected, version, doc), r))
            .await
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
        let device = device.clone();
        self.command(|reply| {
            Command::DeviceAck(PendingAck {
                ledger,
                device,
                list,
                reply,
            })
        })
        .await
    }

    async fn positions(
        &self,
        ledger: Ledger,
        device: &DeviceId,
        tags: &[u32],
    ) -> Result<Vec<Acked>, StoreError> {
        let (device, tags) = (device.clone(), tags.to_vec());
        self.with_reader(move |conn| sqlite_acks::read(conn, ledger, &device, &tags))
            .await
    }
}

/// A device position write waiting for the next commit.
struct PendingAck {
    ledger: Ledger,
    device: DeviceId,
    list: Vec<Acked>,
    reply: Reply<Vec<(Option<Acked>, Acked)>>,
}

/// Device position writes waiting for the next commit.
type PendingAcks = Vec<PendingAck>;

#[derive(Clone, Copy)]
struct TopicState {
    epoch: Epoch,
    last_seq: Seq,
}

/// Owns the write connection; the only place sequence numbers are assigned.
struct Writer {
    conn: Connection,
    topics: HashMap<Topic, TopicState>,
    opts: StoreOptions,
}

impl Writer {
    fn new(conn: Connection, opts: StoreOptions) -> Result<Self, StoreError> {
        let mut w = Writer {
            conn,
            topics: HashMap::new(),
            opts,
        };
        w.load_topics().map_err(unavailable)?;
        Ok(w)
    }

    fn load_topics(&mut self) -> rusqlite::Result<()> {
        self.topics.clear();
        let mut stmt = self
            .conn
            .prepare("SELECT name, epoch, last_seq FROM topics")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
        for row in rows {
            let (name, epoch, last_seq) = row?;
            // Names were validated before they were stored; skip anything foreign.
            if let Ok(t) = Topic::from_stored(&name) {
                self.topics.insert(t, TopicState { epoch, last_seq });
            }
        }
        Ok(())
    }

    fn run(&mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut appends = Vec::new();
            let mut acks: PendingAcks = Vec::new();
            let mut events = 0;
            let mut next = Some(first);
            while let Some(cmd) = next.take() {
                match cmd {
                    Command::Append(batch, reply) => {
                        events += batch.len();
                        appends.push((batch, reply));
                    }
                    Command::DeviceAck(pending) => {
                        events += pending.list.len();
                        acks.push(pending);
                    }
                    Command::Wipe(topic, reply) => {
                        self.commit_appends(std::mem::take(&mut appends));
                        self.commit_acks(std::mem::take(&mut acks));
                        let _ = reply.send(self.wipe(&topic).map_err(unavailable));
                    }
                    Command::PutShadow(device, put, reply) => {
                        self.commit_appends(std::mem::take(&mut appends));
                        self.commit_acks(std::mem::take(&mut acks));
                        let _ = reply.send(self.put_shadow(&device, put).map_err(unavailable));
                    }
                    Command::Trim(reply) => {
                        self.commit_appends(std::mem::take(&mut appends));
                        self.commit_acks(std::mem::take(&mut acks));
                        let _ = reply.send(self.trim().map_err(unavailable));
                    }
                }
                if events < MAX_GROUP_EVENTS {
                    next = rx.try_recv().ok();
                }
            }
            self.commit_appends(appends);
            self.commit_acks(acks);
        }
    }

    /// One transaction for every queued device acknowledgement, like appends.
    fn commit_acks(&mut self, acks: PendingAcks) {
        if acks.is_empty() {
            return;
        }
        let now = now_ms();
        let result = (|| {
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let merged = acks
                .iter()
                .map(|p| sqlite_acks::merge(&tx, p.ledger, &p.device, &p.list, now))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(merged)
        })();
        match result {
            Ok(merged) => {
                for (p, after) in acks.into_iter().zip(merged) {
                    let _ = p.reply.send(Ok(after));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "device acknowledgements not stored");
                for p in acks {
                    let _ = p.reply.send(Err(unavailable(&e)));
                }
            }
        }
    }

    /// One transaction for every queued append; each caller is answered after the commit.
    fn commit_appends(&mut self, appends: Vec<(Vec<NewEvent>, Reply<Vec<Ack>>)>) {
        if appends.is_empty() {
            return;
        }
        let before: Vec<(Topic, Option<TopicState>)> = appends
            .iter()
            .flat_map(|(b, _)| b.iter().map(|e| e.topic.clone()))
            .map(|t| {
                let s = self.topics.get(&t).copied();
                (t, s)
            })
            .collect();
        let mut live = Vec::new();
        match self.insert_all(&appends, &mut live) {
            Ok(acks) => {
                for event in live {
                    (self.opts.sink)(event);
                }
                for ((_, reply), acks) in appends.into_iter().zip(acks) {
                    let _ = reply.send(Ok(acks));
                }
            }
            Err(e) => {
                // Nothing was committed: forget the sequence numbers handed out.
                for (t, s) in before.into_iter().rev() {
                    match s {
                        Some(s) => self.topics.insert(t, s),
                        None => self.topics.remove(&t),
                    };
                }
                tracing::error!(error = %e, "group commit failed");
                for (_, reply) in appends {
                    let _ = reply.send(Err(unavailable(&e)));
                }
            }
        }
    }

    fn insert_all(
        &mut self,
        appends: &[(Vec<NewEvent>, Reply<Vec<Ack>>)],
        live: &mut Vec<Arc<StoredEvent>>,
    ) -> rusqlite::Result<Vec<Vec<Ack>>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let ts = now_ms();
        let mut all = Vec::with_capacity(appends.len());
        let mut touched: HashMap<Topic, TopicState> = HashMap::new();
        {
            let mut find_idem =
                tx.prepare_cached("SELECT epoch, seq, ts FROM idem WHERE key = ?1")?;
            let mut put_idem = tx.prepare_cached(
                "INSERT INTO idem (key, topic, epoch, seq, ts) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut put_event = tx.prepare_cached(
                "INSERT INTO events (topic, seq, ts, etype, data, expires, prio) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (batch, _) in appends {
                let mut acks = Vec::with_capacity(batch.len());
                for ev in batch {
                    let key = ev
                        .idempotency_key
                        .as_ref()
                        .map(|k| format!("{}\u{1f}{}", ev.topic, k.as_str()));
                    if let Some(key) = &key {
                        let found: Option<(Epoch, Seq, u64)> = find_idem
                            .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                            .optional()?;
                        if let Some((epoch, seq, ts_ms)) = found {
                            acks.push(Ack {
                                id: Cursor::single(&ev.topic, epoch, seq, ts_ms).encode().into(),
                                topic: ev.topic.clone(),
                                epoch,
                                seq,
                                ts_ms,
                                duplicate: true,
                                expires_ms: ev.expires_ms(ts_ms),
                            });
                            continue;
                        }
                    }
                    let state = self.topics.entry(ev.topic.clone()).or_insert(TopicState {
                        epoch: Epoch::fresh(None),
                        last_seq: Seq::ZERO,
                    });
                    state.last_seq = state.last_seq.next();
                    let (epoch, seq) = (state.epoch, state.last_seq);
                    touched.insert(ev.topic.clone(), *state);
                    let expires_ms = ev.expires_ms(ts);
                    put_event.execute(params![
                        ev.topic.as_str(),
                        seq,
                        ts as i64,
                        ev.event_type.as_deref(),
                        &*ev.data,
                        expires_ms.map(|e| e.min(i64::MAX as u64) as i64),
                        ev.priority.code()
                    ])?;
                    if let Some(key) = &key {
                        put_idem.execute(params![key, ev.topic.as_str(), epoch, seq, ts as i64])?;
                    }
                    let stored = Arc::new(StoredEvent {
                        topic: ev.topic.clone(),
                        epoch,
                        seq,
                        ts_ms: ts,
                        event_type: ev.event_type.clone(),
                        data: ev.data.clone(),
                        expires_ms,
                        priority: ev.priority,
                        id: Default::default(),
                    });
                    let id = stored.id().clone();
                    live.push(stored);
                    acks.push(Ack {
                        id,
                        topic: ev.topic.clone(),
                        epoch,
                        seq,
                        ts_ms: ts,
                        duplicate: false,
                        expires_ms,
                    });
                }
                all.push(acks);
            }
            let mut put_topic = tx.prepare_cached(
                "INSERT INTO topics (name, epoch, last_seq) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET epoch = excluded.epoch, last_seq = excluded.last_seq",
            )?;
            for (t, s) in &touched {
                put_topic.execute(params![t.as_str(), s.epoch, s.last_seq])?;
            }
        }
        tx.commit()?;
        Ok(all)
    }

    fn put_shadow(&mut self, device: &DeviceId, put: (u64, u64, String)) -> rusqlite::Result<bool> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let written = sqlite_shadow::put(&tx, device, (put.0, put.1, &put.2), now_ms())?;
        tx.commit()?;
        Ok(written)
    }

    fn wipe(&mut self, topic: &Topic) -> rusqlite::Result<TopicHead> {
        let old = self.topics.get(topic).map(|s| s.epoch);
        let state = TopicState {
            epoch: Epoch::fresh(old),
            last_seq: Seq::ZERO,
        };
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM events WHERE topic = ?1", [topic.as_str()])?;
        tx.execute(
            "INSERT INTO topics (name, epoch, last_seq) VALUES (?1, ?2, 0)
             ON CONFLICT(name) DO UPDATE SET epoch = excluded.epoch, last_seq = 0",
            params![topic.as_str(), state.epoch],
        )?;
        tx.commit()?;
        self.topics.insert(topic.clone(), state);
        Ok(TopicHead {
            epoch: Some(state.epoch),
            first_seq: None,
            last_seq: Seq::ZERO,
        })
    }

    fn trim(&mut self) -> rusqlite::Result<u64> {
        let Retention {
            max_events,
            max_age,
            idempotency_ttl,
            device_ack_ttl,
            ..
        } = self.opts.retention;
        let now = now_ms();
        let tx = self.conn.transaction()?;
        let mut removed = tx.execute(
            "DELETE FROM events WHERE ts < ?1",
            [now.saturating_sub(max_age.as_millis() as u64) as i64],
        )? as u64;
        // An expired event keeps its row (its place in the topic) so a replay
        // can count it; its payload is what retention reclaims.
        removed += tx.execute(
            "UPDATE events SET data = '', etype = NULL WHERE expires IS NOT NULL AND expires <= ?1 AND data != ''",
            [now.min(i64::MAX as u64) as i64],
        )? as u64;
        {
            let mut by_count =
                tx.prepare_cached("DELETE FROM events WHERE topic = ?1 AND seq <= ?2")?;
            for (t, s) in &self.topics {
                if s.last_seq.get() > max_events {
                    let upto = Seq::new(s.last_seq.get() - max_events);
                    removed += by_count.execute(params![t.as_str(), upto])? as u64;
                }
            }
        }
        tx.execute(
            "DELETE FROM idem WHERE ts < ?1",
            [now.saturating_sub(idempotency_ttl.as_millis() as u64) as i64],
        )?;
        let device_cutoff = now.saturating_sub(device_ack_ttl.as_millis() as u64);
        sqlite_acks::trim(&tx, device_cutoff)?;
        sqlite_shadow::trim(&tx, device_cutoff)?;
        tx.commit()?;
        Ok(removed)
    }
}
