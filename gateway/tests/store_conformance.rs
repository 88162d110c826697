//! The embedded store passes the store conformance suite, and keeps what it
//! acknowledged across a reopen.

use std::sync::Arc;

use pushgate::config::{FsyncPolicy, Retention};
use pushgate::store::embedded::EmbeddedStore;
use pushgate::store::{conformance, NewEvent, Store, StoreOptions};
use pushgate::topic::Topic;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_passes_the_conformance_suite() {
    let dirs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = dirs.clone();
    conformance::run_all(move |opts| {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), FsyncPolicy::Always, opts).unwrap();
        keep.lock().unwrap().push(dir);
        async move { Arc::new(store) as Arc<dyn Store> }
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
                topic: t.clone(),
                event_type: None,
                data: Arc::from(i.to_string()),
                idempotency_key: Some(format!("k{i}")),
            })
            .collect();
        s.append(batch).await.unwrap()[0].epoch
    };
    let s = EmbeddedStore::open(dir.path(), FsyncPolicy::Normal, opts()).unwrap();
    let head = s.head(&t).await.unwrap();
    assert_eq!((head.epoch, head.first_seq, head.last_seq), (epoch, 1, 100));
    let again = NewEvent {
        topic: t.clone(),
        event_type: None,
        data: Arc::from("5"),
        idempotency_key: Some("k5".into()),
    };
    let ack = s.append(vec![again]).await.unwrap().remove(0);
    assert!(
        ack.duplicate && ack.seq == 6,
        "idempotency keys survive a restart"
    );
    let ack = s
        .append(vec![NewEvent {
            topic: t.clone(),
            event_type: None,
            data: Arc::from("new"),
            idempotency_key: None,
        }])
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (ack.epoch, ack.seq),
        (epoch, 101),
        "sequence continues after reopen"
    );
}
