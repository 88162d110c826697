//! The Redis store passes the same conformance suite as the embedded store,
//! unchanged, against a real redis-server.

use std::sync::Arc;

use pushgate::config::RedisSettings;
use pushgate::store::redis::RedisStore;
use pushgate::store::{conformance, Store};
use pushgate_e2e::redis::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    conformance::run_all(move |opts| {
        let settings = RedisSettings {
            key_prefix: format!("conf{:x}", rand::random::<u32>()),
            ..RedisSettings::default()
        };
        let store = RedisStore::open(&url, &settings, opts).unwrap();
        async move { Arc::new(store) as Arc<dyn Store> }
    })
    .await;
}
