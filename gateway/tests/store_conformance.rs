//! The embedded store passes the store conformance suite, and keeps what it
//! acknowledged across a reopen.

use std::sync::Arc;

use pushgate::config::{FsyncPolicy, Retention};
use pushgate::core::position::Seq;
use pushgate::core::topic::Topic;
use pushgate::store::embedded::EmbeddedStore;
use pushgate::store::{conformance, IdempotencyKey, NewEvent, Store, StoreOptions};

/// Fails appends to one topic with an SQLite trigger on the store's own
/// database file, created through a second connection as any tool could.
struct Trigger(std::path::PathBuf);

impl Trigger {
    fn name(topic: &Topic) -> String {
        format!(
            "poison_{:08x}",
            pushgate::core::hash::fnv1a32(topic.as_str().as_bytes())
        )
    }

    fn exec(&self, sql: &str) {
        let conn = rusqlite::Connection::open(&self.0).unwrap();
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .unwrap();
        conn.execute_batch(sql).unwrap();
    }
}

#[async_trait::async_trait]
impl conformance::Faults for Trigger {
    async fn poison(&self, topic: &Topic) {
        self.exec(&format!(
            "CREATE TRIGGER {} BEFORE INSERT ON events WHEN NEW.topic = '{}' \
             BEGIN SELECT RAISE(ABORT, 'poisoned by the test'); END;",
            Self::name(topic),
            topic.as_str()
        ));
    }

    async fn heal(&self, topic: &Topic) {
        self.exec(&format!("DROP TRIGGER {};", Self::name(topic)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = dirs.clone();
    conformance::run_all(move |opts| {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), FsyncPolicy::Always, opts).unwrap();
        let faults = Arc::new(Trigger(dir.path().join("pushgate.db")));
        keep.lock().unwrap().push(dir);
        async move {
            conformance::Built {
                store: Arc::new(store) as Arc<dyn Store>,
                faults,
            }
        }
    })
    .await;
}

#[tokio::test]
async fn acknowledged_events_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || StoreOptions {
        retention: Retention::default(),
        sink: Arc::new(|_| {}),
    };
    let t = Topic::parse("durable").unwrap();
    let epoch = {
        let s = EmbeddedStore::open(dir.path(), FsyncPolicy::Normal, opts()).unwrap();
        let batch = (0..100)
            .map(|i| NewEvent {
                idempotency_key: IdempotencyKey::parse(&format!("k{i}")).ok(),
                ..NewEvent::new(t.clone(), i.to_string())
            })
            .collect();
        s.append(batch).await.unwrap()[0].epoch
    };
    let s = EmbeddedStore::open(dir.path(), FsyncPolicy::Normal, opts()).unwrap();
    let head = s.head(&t).await.unwrap();
    assert_eq!(
        (head.epoch, head.first_seq, head.last_seq),
        (Some(epoch), Some(Seq::new(1)), Seq::new(100))
    );
    let again = NewEvent {
        idempotency_key: IdempotencyKey::parse("k5").ok(),
        ..NewEvent::new(t.clone(), "5")
    };
    let ack = s.append(vec![again]).await.unwrap().remove(0);
    assert!(
        ack.duplicate && ack.seq == Seq::new(6),
        "idempotency keys survive a restart"
    );
    let ack = s
        .append(vec![NewEvent::new(t.clone(), "new")])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (ack.epoch, ack.seq),
        (epoch, Seq::new(101)),
        "sequence continues after reopen"
    );
}
