//! Gateway configuration: built-in defaults, overlaid by a YAML file, then by
//! `PUSHGATE_*` environment variables, then by command-line flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::auth::{AuthConfig, KeyAlgorithm};
pub use crate::cors::CorsConfig;
pub use crate::tls::TlsConfig;

/// Everything the gateway can be told. Field names are the YAML keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the API and the streams.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz`, `/readyz` (also served on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// `embedded` or a `redis://` URL.
    pub store: String,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `pushgate=debug`.
    pub log_level: String,
    /// Token authentication and topic authorisation (off unless a key is set).
    pub auth: AuthConfig,
    /// HTTPS on `listen` (plain HTTP/1.1 and h2c unless set).
    pub tls: TlsConfig,
    /// Cross-origin access for browser subscribers.
    pub cors: CorsConfig,
    /// Durability of the embedded store.
    pub fsync: FsyncPolicy,
    /// History kept per topic.
    pub retention: Retention,
    /// Stream behaviour.
    pub delivery: Delivery,
    /// Limits; exceeding one is a clear 4xx/503, never a crash.
    pub limits: Limits,
    /// TCP connections: head and idle deadlines, head size, caps.
    pub edge: crate::edge::EdgeConfig,
    /// Settings of the Redis store (used when `store` is a redis:// URL).
    pub redis: RedisSettings,
    /// Canary routing: this pod's track, the peer Service, the routing table source.
    pub routing: crate::routing::RoutingSettings,
    /// Serve the example browser subscriber (examples/web/index.html) at `/demo/`.
    pub demo_page: bool,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// When the embedded store syncs to disk before acknowledging a publish batch.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync every group commit (survives power loss).
    Always,
    /// Write to the OS before acknowledging; fsync at checkpoints (survives a process crash).
    Normal,
}

/// How much history a topic keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Events kept per topic (older ones are trimmed).
    pub max_events: u64,
    /// Events older than this are trimmed.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// How often trimming runs.
    #[serde(with = "humantime_serde")]
    pub trim_interval: Duration,
    /// Recent events per topic held in memory to serve replays.
    pub hot_cache_events: usize,
    /// How long an `Idempotency-Key` is remembered.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
}

/// Stream timings and queues.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Delivery {
    /// Interval of comment heartbeats.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Base `retry:`; every value sent is jittered ±50 % around it.
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
    /// Events queued per stream before it counts as a slow consumer.
    pub queue_size: usize,
    /// SIGTERM: open streams are closed spread over this window.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// A slow consumer that does not read its retry hint within this time has its connection cut.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_grace: Duration,
}

/// Redis store settings; the URL itself (with password, `rediss://` for TLS) is `store`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// Prefix of every key, so several gateways can share one Redis.
    pub key_prefix: String,
    /// Multiplexed connections used for commands.
    pub pool_size: usize,
    /// Shard streams carrying live events between replicas (all replicas must agree).
    pub live_shards: usize,
    /// Time allowed to connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for one command; a publish fails with 503 after it.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            key_prefix: "pushgate".into(),
            pool_size: 2,
            live_shards: 4,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_secs(2),
        }
    }
}

/// Request and load limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest event body (bytes).
    pub max_body_bytes: usize,
    /// Largest `POST /v1/publish` body (bytes).
    pub max_batch_bytes: usize,
    /// Topics one stream may carry.
    pub max_topics_per_stream: usize,
    /// Events per batch publish.
    pub max_batch: usize,
    /// Concurrent streams per process.
    pub max_connections: usize,
    /// New streams accepted per second (burst: the same number).
    pub accept_rate: u32,
    /// Events per second one publisher (client address) may publish (burst: the same number).
    pub publish_rate: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".parse().expect("static address"),
            metrics_listen: None,
            store: "embedded".into(),
            data_dir: PathBuf::from("./pushgate-data"),
            log_format: LogFormat::Text,
            log_level: "info".into(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            cors: CorsConfig::default(),
            fsync: FsyncPolicy::Always,
            retention: Retention::default(),
            delivery: Delivery::default(),
            limits: Limits::default(),
            edge: crate::edge::EdgeConfig::default(),
            redis: RedisSettings::default(),
            routing: crate::routing::RoutingSettings::default(),
            demo_page: false,
        }
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 10_000,
            max_age: Duration::from_secs(24 * 3600),
            trim_interval: Duration::from_secs(10),
            hot_cache_events: 256,
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
            queue_size: 1024,
            drain_window: Duration::from_secs(20),
            slow_consumer_grace: Duration::from_secs(2),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_batch_bytes: 1024 * 1024,
            max_topics_per_stream: 16,
            max_batch: 1000,
            max_connections: 10_000,
            accept_rate: 2_000,
            publish_rate: 5_000,
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Values given on the command line or in `PUSHGATE_*` variables; `None` leaves the file's value.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Address for the API and streams [default: 127.0.0.1:8080]
    #[arg(long, env = "PUSHGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Separate address for /metrics, /healthz and /readyz [default: none]
    #[arg(long, env = "PUSHGATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Storage: `embedded` (SQLite in --data-dir) or a `redis://` URL [default: embedded]
    #[arg(long, env = "PUSHGATE_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// Directory of the embedded store [default: ./pushgate-data]
    #[arg(long, env = "PUSHGATE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, env = "PUSHGATE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `pushgate=debug` [default: info]
    #[arg(long, env = "PUSHGATE_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Embedded store durability: `always` fsyncs each group commit, `normal` survives process crashes only [default: always]
    #[arg(long, env = "PUSHGATE_FSYNC", value_enum)]
    pub fsync: Option<FsyncPolicy>,
    /// Events kept per topic [default: 10000]
    #[arg(long, env = "PUSHGATE_RETENTION_MAX_EVENTS", value_name = "N")]
    pub retention_max_events: Option<u64>,
    /// Age after which events are trimmed, e.g. `24h` [default: 24h]
    #[arg(long, env = "PUSHGATE_RETENTION_MAX_AGE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retention_max_age: Option<Duration>,
    /// Interval between heartbeat comments [default: 15s]
    #[arg(long, env = "PUSHGATE_HEARTBEAT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat: Option<Duration>,
    /// Base reconnect delay sent as `retry:`, jittered ±50 % [default: 3s]
    #[arg(long, env = "PUSHGATE_RETRY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retry: Option<Duration>,
    /// Events queued per stream before the subscriber is disconnected as slow [default: 1024]
    #[arg(long, env = "PUSHGATE_QUEUE_SIZE", value_name = "N")]
    pub queue_size: Option<usize>,
    /// Window over which SIGTERM closes open streams [default: 20s]
    #[arg(long, env = "PUSHGATE_DRAIN_WINDOW", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain_window: Option<Duration>,
    /// This pod's canary track: stable or canary [default: stable]
    #[arg(long, env = "PUSHGATE_TRACK", value_name = "TRACK")]
    pub track: Option<crate::routing::Track>,
    /// Base URL of the other track's Service; streams of its buckets are proxied there [default: none]
    #[arg(long, env = "PUSHGATE_PEER_URL", value_name = "URL")]
    pub peer_url: Option<String>,
    /// File with the token both tracks put on requests they proxy to each other; required with --peer-url [default: none]
    #[arg(long, env = "PUSHGATE_PEER_TOKEN_FILE", value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// Routing table file, re-read on change [default: none]
    #[arg(long, env = "PUSHGATE_ROUTING_TABLE_FILE", value_name = "FILE")]
    pub routing_table_file: Option<PathBuf>,
    /// Routing table ConfigMap `namespace/name`, watched through the Kubernetes API [default: none]
    #[arg(long, env = "PUSHGATE_ROUTING_CONFIGMAP", value_name = "NS/NAME")]
    pub routing_configmap: Option<String>,
    /// Prefix of every Redis key [default: pushgate]
    #[arg(long, env = "PUSHGATE_REDIS_KEY_PREFIX", value_name = "PREFIX")]
    pub redis_key_prefix: Option<String>,
    /// Largest event body in bytes [default: 65536]
    #[arg(long, env = "PUSHGATE_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Concurrent streams per process [default: 10000]
    #[arg(long, env = "PUSHGATE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// New streams accepted per second [default: 2000]
    #[arg(long, env = "PUSHGATE_ACCEPT_RATE", value_name = "PER_SEC")]
    pub accept_rate: Option<u32>,
    /// Events per second per publisher address [default: 5000]
    #[arg(long, env = "PUSHGATE_PUBLISH_RATE", value_name = "PER_SEC")]
    pub publish_rate: Option<u32>,
    /// A new connection must send a complete request head within this [default: 10s]
    #[arg(long, env = "PUSHGATE_HEADER_READ_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub header_read_timeout: Option<Duration>,
    /// A connection with no request in flight is closed after this [default: 60s]
    #[arg(long, env = "PUSHGATE_IDLE_TIMEOUT", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Largest request head in bytes; larger ones get 431 [default: 16384]
    #[arg(long, env = "PUSHGATE_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Open TCP connections on the API port; 0 = open-file limit minus the reserve [default: 0]
    #[arg(long, env = "PUSHGATE_MAX_TCP_CONNECTIONS", value_name = "N")]
    pub max_tcp_connections: Option<usize>,
    /// Token verifying key: HS256 secret or RS256/ES256 public key (PEM); enables auth [default: none]
    #[arg(long, env = "PUSHGATE_AUTH_KEY_FILE", value_name = "FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// Token algorithm, fixed by the key [default: hs256]
    #[arg(long, env = "PUSHGATE_AUTH_ALGORITHM", value_enum)]
    pub auth_algorithm: Option<KeyAlgorithm>,
    /// Clock skew tolerated on exp/nbf [default: 30s]
    #[arg(long, env = "PUSHGATE_AUTH_LEEWAY", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub auth_leeway: Option<Duration>,
    /// Topic patterns anyone may subscribe to without a token, comma-separated [default: none]
    #[arg(
        long,
        env = "PUSHGATE_AUTH_ANONYMOUS_SUBSCRIBE",
        value_delimiter = ',',
        value_name = "PATTERNS"
    )]
    pub auth_anonymous_subscribe: Option<Vec<String>>,
    /// Topic patterns anyone may publish to without a token, comma-separated [default: none]
    #[arg(
        long,
        env = "PUSHGATE_AUTH_ANONYMOUS_PUBLISH",
        value_delimiter = ',',
        value_name = "PATTERNS"
    )]
    pub auth_anonymous_publish: Option<Vec<String>>,
    /// TLS certificate chain (PEM); with --tls-key-file serves HTTPS [default: none]
    #[arg(long, env = "PUSHGATE_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM) [default: none]
    #[arg(long, env = "PUSHGATE_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes [default: 5s]
    #[arg(long, env = "PUSHGATE_TLS_RELOAD_INTERVAL", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub tls_reload_interval: Option<Duration>,
    /// Origins allowed cross-origin access, comma-separated, or `*` [default: none]
    #[arg(
        long,
        env = "PUSHGATE_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Let browsers send cookies cross-origin (EventSource withCredentials) [default: false]
    #[arg(long, env = "PUSHGATE_CORS_ALLOW_CREDENTIALS", value_name = "BOOL")]
    pub cors_allow_credentials: Option<bool>,
    /// Serve the example EventSource page at /demo/ [default: false]
    #[arg(long, env = "PUSHGATE_DEMO_PAGE", value_name = "BOOL")]
    pub demo_page: Option<bool>,
}

impl Config {
    /// Loads: defaults ← file (if given) ← overrides (env and flags, already merged by clap).
    pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Self, ConfigError> {
        let mut c = match file {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        c.apply(o);
        c.validate()?;
        Ok(c)
    }

    /// Parses a YAML file (unknown keys are errors, so typos do not pass silently).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    fn apply(&mut self, o: &Overrides) {
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut self.listen, &o.listen);
        if o.auth_key_file.is_some() {
            self.auth.key_file = o.auth_key_file.clone();
        }
        set(&mut self.auth.algorithm, &o.auth_algorithm);
        set(&mut self.auth.leeway, &o.auth_leeway);
        set(
            &mut self.auth.anonymous_subscribe,
            &o.auth_anonymous_subscribe,
        );
        set(&mut self.auth.anonymous_publish, &o.auth_anonymous_publish);
        if o.tls_cert_file.is_some() {
            self.tls.cert_file = o.tls_cert_file.clone();
        }
        if o.tls_key_file.is_some() {
            self.tls.key_file = o.tls_key_file.clone();
        }
        set(&mut self.tls.reload_interval, &o.tls_reload_interval);
        set(&mut self.cors.allowed_origins, &o.cors_allowed_origins);
        set(&mut self.cors.allow_credentials, &o.cors_allow_credentials);
        set(&mut self.demo_page, &o.demo_page);
        if o.metrics_listen.is_some() {
            self.metrics_listen = o.metrics_listen;
        }
        set(&mut self.store, &o.store);
        set(&mut self.data_dir, &o.data_dir);
        set(&mut self.log_format, &o.log_format);
        set(&mut self.log_level, &o.log_level);
        set(&mut self.fsync, &o.fsync);
        set(&mut self.retention.max_events, &o.retention_max_events);
        set(&mut self.retention.max_age, &o.retention_max_age);
        set(&mut self.delivery.heartbeat, &o.heartbeat);
        set(&mut self.delivery.retry, &o.retry);
        set(&mut self.delivery.queue_size, &o.queue_size);
        set(&mut self.delivery.drain_window, &o.drain_window);
        set(&mut self.redis.key_prefix, &o.redis_key_prefix);
        set(&mut self.routing.track, &o.track);
        if o.peer_url.is_some() {
            self.routing.peer_url = o.peer_url.clone();
        }
        if o.peer_token_file.is_some() {
            self.routing.peer_token_file = o.peer_token_file.clone();
        }
        set(&mut self.edge.header_read_timeout, &o.header_read_timeout);
        set(&mut self.edge.idle_timeout, &o.idle_timeout);
        set(&mut self.edge.max_header_bytes, &o.max_header_bytes);
        set(&mut self.edge.max_tcp_connections, &o.max_tcp_connections);
        if o.routing_table_file.is_some() {
            self.routing.table_file = o.routing_table_file.clone();
        }
        if o.routing_configmap.is_some() {
            self.routing.configmap = o.routing_configmap.clone();
        }
        set(&mut self.limits.max_body_bytes, &o.max_body_bytes);
        set(&mut self.limits.max_connections, &o.max_connections);
        set(&mut self.limits.accept_rate, &o.accept_rate);
        set(&mut self.limits.publish_rate, &o.publish_rate);
    }

    /// Rejects values that would make the gateway misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.store != "embedded"
            && !self.store.starts_with("redis://")
            && !self.store.starts_with("rediss://")
        {
            return bad("store must be `embedded` or a redis:// / rediss:// URL");
        }
        let rt = &self.routing;
        if rt.table_file.is_some() && rt.configmap.is_some() {
            return bad("routing: give table_file or configmap, not both");
        }
        if let Some(u) = &rt.peer_url {
            if !(u.starts_with("http://") && u.parse::<axum::http::Uri>().is_ok()) {
                return bad("routing.peer_url must be an http:// URL");
            }
            if rt.peer_token_file.is_none() {
                return bad("routing.peer_url needs routing.peer_token_file: the tracks prove to each other that a request was proxied");
            }
        }
        let r = &self.redis;
        if r.key_prefix.is_empty() || r.key_prefix.contains(['{', '}']) {
            return bad("redis.key_prefix must be non-empty and contain no braces");
        }
        if r.pool_size == 0 || r.live_shards == 0 || r.live_shards > 1024 {
            return bad("redis.pool_size must be >= 1 and redis.live_shards 1..=1024");
        }
        if self.retention.max_events == 0 {
            return bad("retention.max_events must be at least 1");
        }
        if self.retention.hot_cache_events > 100_000 {
            return bad("retention.hot_cache_events must be at most 100000");
        }
        if self.delivery.queue_size == 0 {
            return bad("delivery.queue_size must be at least 1");
        }
        if self.delivery.heartbeat.is_zero() || self.delivery.retry.is_zero() {
            return bad("delivery.heartbeat and delivery.retry must be positive");
        }
        if self.limits.max_topics_per_stream == 0 || self.limits.max_batch == 0 {
            return bad("limits.max_topics_per_stream and limits.max_batch must be at least 1");
        }
        if self.limits.accept_rate == 0 || self.limits.publish_rate == 0 {
            return bad("limits.accept_rate and limits.publish_rate must be at least 1");
        }
        self.auth
            .validate()
            .and(self.edge.validate())
            .and(self.tls.validate())
            .and(self.cors.validate())
            .map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_then_overrides() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            "listen: 0.0.0.0:9000\nretention:\n  max_events: 5\ndelivery:\n  heartbeat: 2s\n  queue_size: 7"
        )
        .unwrap();
        let o = Overrides {
            queue_size: Some(9),
            ..Default::default()
        };
        let c = Config::load(Some(f.path()), &o).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.retention.max_events, 5);
        assert_eq!(c.delivery.heartbeat, Duration::from_secs(2));
        assert_eq!(c.delivery.queue_size, 9, "flag/env beats the file");
        assert_eq!(
            c.limits,
            Limits::default(),
            "untouched sections keep defaults"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "lsten: 0.0.0.0:9000").unwrap();
        let err = Config::load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let o = Overrides {
            store: Some("postgres://x".into()),
            ..Default::default()
        };
        assert!(Config::load(None, &o).is_err());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }
}
