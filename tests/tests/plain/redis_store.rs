//! The Redis store passes the same conformance suite as the embedded store,
//! unchanged, against a real redis-server.

use std::sync::Arc;

use pushgate::config::RedisSettings;
use pushgate::core::topic::Topic;
use pushgate::store::redis::RedisStore;
use pushgate::store::{conformance, Store};
use pushgate_e2e::redis::{RedisCli, RedisServer};

/// Fails appends to one topic by putting a string where its stream belongs
/// (as a stray `SET` from another client would).
struct WrongType {
    cli: RedisCli,
    prefix: String,
}

#[async_trait::async_trait]
impl conformance::Faults for WrongType {
    async fn poison(&self, topic: &Topic) {
        let key = format!("{}:{{{}}}:s", self.prefix, topic.as_str());
        self.cli.run(&["SET", &key, "not a stream"]);
    }

    async fn heal(&self, topic: &Topic) {
        let key = format!("{}:{{{}}}:s", self.prefix, topic.as_str());
        self.cli.run(&["DEL", &key]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_conformance_suite() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let cli = redis.cli();
    conformance::run_all(move |opts| {
        let prefix = format!("conf{:x}", rand::random::<u32>());
        let settings = RedisSettings {
            key_prefix: prefix.clone(),
            ..RedisSettings::default()
        };
        let store = RedisStore::open(&url, &settings, opts).unwrap();
        let faults = Arc::new(WrongType {
            cli: cli.clone(),
            prefix,
        });
        async move {
            conformance::Built {
                store: Arc::new(store) as Arc<dyn Store>,
                faults,
            }
        }
    })
    .await;
}
