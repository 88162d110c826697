//! Gateway configuration: built-in defaults, overlaid by a YAML file, then by
//! `PUSHGATE_*` environment variables, then by command-line flags. The file's
//! types and defaults are the contract crate's (the operator renders them);
//! this module adds the variables, the flags and the checks that need the
//! gateway's own parsers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use pushgate_contract::config::{
    AuthConfig, Backpressure, BackpressureRule, CertIdentity, ClientAuth, Config, CorsConfig,
    Delivery, EdgeConfig, FsyncPolicy, KeyAlgorithm, Limits, LogFormat, ProxyRange, RedisSettings,
    Retention, StoreKind, Tiers, TlsConfig, MAX_TTL,
};
use pushgate_contract::names::env;
use pushgate_contract::routing::Track;

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
    #[arg(long, env = env::LISTEN, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Separate address for /metrics, /healthz and /readyz [default: none]
    #[arg(long, env = env::METRICS_LISTEN, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Storage: `embedded` (SQLite in --data-dir) or a `redis://` URL [default: embedded]
    #[arg(long, env = env::STORE, value_name = "STORE")]
    pub store: Option<StoreKind>,
    /// Directory of the embedded store [default: ./pushgate-data]
    #[arg(long, env = env::DATA_DIR, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, env = env::LOG_FORMAT)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `pushgate=debug` [default: info]
    #[arg(long, env = env::LOG_LEVEL, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Embedded store durability: `always` fsyncs each group commit, `normal` survives process crashes only [default: always]
    #[arg(long, env = env::FSYNC)]
    pub fsync: Option<FsyncPolicy>,
    /// Events kept per topic [default: 10000]
    #[arg(long, env = env::RETENTION_MAX_EVENTS, value_name = "N")]
    pub retention_max_events: Option<u64>,
    /// Age after which events are trimmed, e.g. `24h` [default: 24h]
    #[arg(long, env = env::RETENTION_MAX_AGE, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retention_max_age: Option<Duration>,
    /// Interval between heartbeat comments [default: 15s]
    #[arg(long, env = env::HEARTBEAT, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat: Option<Duration>,
    /// Base reconnect delay sent as `retry:`, jittered ±50 % [default: 3s]
    #[arg(long, env = env::RETRY, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub retry: Option<Duration>,
    /// Events queued per stream before the subscriber is disconnected as slow [default: 1024]
    #[arg(long, env = env::QUEUE_SIZE, value_name = "N")]
    pub queue_size: Option<usize>,
    /// Window over which SIGTERM closes open streams [default: 20s]
    #[arg(long, env = env::DRAIN_WINDOW, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub drain_window: Option<Duration>,
    /// This pod's canary track: stable or canary [default: stable]
    #[arg(long, env = env::TRACK, value_name = "TRACK")]
    pub track: Option<Track>,
    /// Base URL of the other track's Service; streams of its buckets are proxied there [default: none]
    #[arg(long, env = env::PEER_URL, value_name = "URL")]
    pub peer_url: Option<String>,
    /// File with the token both tracks put on requests they proxy to each other; required with --peer-url [default: none]
    #[arg(long, env = env::PEER_TOKEN_FILE, value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// Routing table file, re-read on change [default: none]
    #[arg(long, env = env::ROUTING_TABLE_FILE, value_name = "FILE")]
    pub routing_table_file: Option<PathBuf>,
    /// Routing table ConfigMap `namespace/name`, watched through the Kubernetes API [default: none]
    #[arg(long, env = env::ROUTING_CONFIGMAP, value_name = "NS/NAME")]
    pub routing_configmap: Option<String>,
    /// Prefix of every Redis key [default: pushgate]
    #[arg(long, env = env::REDIS_KEY_PREFIX, value_name = "PREFIX")]
    pub redis_key_prefix: Option<String>,
    /// Largest event body in bytes [default: 65536]
    #[arg(long, env = env::MAX_BODY_BYTES, value_name = "BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Concurrent streams per process [default: 10000]
    #[arg(long, env = env::MAX_CONNECTIONS, value_name = "N")]
    pub max_connections: Option<usize>,
    /// New streams accepted per second [default: 2000]
    #[arg(long, env = env::ACCEPT_RATE, value_name = "PER_SEC")]
    pub accept_rate: Option<u32>,
    /// Events per second per publisher: token `sub` or certificate identity, else client address [default: 5000]
    #[arg(long, env = env::PUBLISH_RATE, value_name = "PER_SEC")]
    pub publish_rate: Option<u32>,
    /// Streams one token `sub` or certificate identity may hold open; 0 = no limit [default: 100]
    #[arg(long, env = env::MAX_STREAMS_PER_IDENTITY, value_name = "N")]
    pub max_streams_per_identity: Option<usize>,
    /// Streams one client address may hold open without a credential; 0 = no limit [default: 0]
    #[arg(long, env = env::MAX_STREAMS_PER_ADDRESS, value_name = "N")]
    pub max_streams_per_address: Option<usize>,
    /// Proxies whose X-Forwarded-For names the client: comma-separated CIDRs or addresses [default: none]
    #[arg(long, env = env::TRUSTED_PROXIES, value_name = "CIDR,...", value_delimiter = ',')]
    pub trusted_proxies: Option<Vec<ProxyRange>>,
    /// A new connection must send a complete request head within this [default: 10s]
    #[arg(long, env = env::HEADER_READ_TIMEOUT, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub header_read_timeout: Option<Duration>,
    /// A connection with no request in flight is closed after this [default: 60s]
    #[arg(long, env = env::IDLE_TIMEOUT, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Option<Duration>,
    /// Largest request head in bytes; larger ones get 431 [default: 16384]
    #[arg(long, env = env::MAX_HEADER_BYTES, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,
    /// Open TCP connections on the API port; 0 = open-file limit minus the reserve [default: 0]
    #[arg(long, env = env::MAX_TCP_CONNECTIONS, value_name = "N")]
    pub max_tcp_connections: Option<usize>,
    /// Serve HTTP/1.1 streams without a hyper connection each (true | false) [default: true]
    #[arg(long, env = env::LEAN_STREAMS, value_name = "BOOL")]
    pub lean_streams: Option<bool>,
    /// Token verifying key: HS256 secret or RS256/ES256 public key (PEM); enables auth [default: none]
    #[arg(long, env = env::AUTH_KEY_FILE, value_name = "FILE")]
    pub auth_key_file: Option<PathBuf>,
    /// Directory of token verifying keys, one file per `kid` [default: none]
    #[arg(long, env = env::AUTH_KEY_DIR, value_name = "DIR")]
    pub auth_key_dir: Option<PathBuf>,
    /// How often the key file or directory is checked for changes [default: 5s]
    #[arg(long, env = env::AUTH_RELOAD_INTERVAL, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub auth_reload_interval: Option<Duration>,
    /// Client-certificate field naming the caller: cn, dns or uri [default: cn]
    #[arg(long, env = env::AUTH_CERTIFICATE_IDENTITY)]
    pub auth_certificate_identity: Option<CertIdentity>,
    /// Token algorithm, fixed by the key [default: hs256]
    #[arg(long, env = env::AUTH_ALGORITHM)]
    pub auth_algorithm: Option<KeyAlgorithm>,
    /// Clock skew tolerated on exp/nbf [default: 30s]
    #[arg(long, env = env::AUTH_LEEWAY, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub auth_leeway: Option<Duration>,
    /// Topic patterns anyone may subscribe to without a token, comma-separated [default: none]
    #[arg(
        long,
        env = env::AUTH_ANONYMOUS_SUBSCRIBE,
        value_delimiter = ',',
        value_name = "PATTERNS"
    )]
    pub auth_anonymous_subscribe: Option<Vec<String>>,
    /// Topic patterns anyone may publish to without a token, comma-separated [default: none]
    #[arg(
        long,
        env = env::AUTH_ANONYMOUS_PUBLISH,
        value_delimiter = ',',
        value_name = "PATTERNS"
    )]
    pub auth_anonymous_publish: Option<Vec<String>>,
    /// TLS certificate chain (PEM); with --tls-key-file serves HTTPS [default: none]
    #[arg(long, env = env::TLS_CERT_FILE, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM) [default: none]
    #[arg(long, env = env::TLS_KEY_FILE, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// How often the certificate files are checked for changes [default: 5s]
    #[arg(long, env = env::TLS_RELOAD_INTERVAL, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub tls_reload_interval: Option<Duration>,
    /// CA bundle (PEM) client certificates must chain to [default: none]
    #[arg(long, env = env::TLS_CLIENT_CA_FILE, value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Ask TLS clients for a certificate: off, optional or required [default: off]
    #[arg(long, env = env::TLS_CLIENT_AUTH)]
    pub tls_client_auth: Option<ClientAuth>,
    /// Origins allowed cross-origin access, comma-separated, or `*` [default: none]
    #[arg(
        long,
        env = env::CORS_ALLOWED_ORIGINS,
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Let browsers send cookies cross-origin (EventSource withCredentials) [default: false]
    #[arg(long, env = env::CORS_ALLOW_CREDENTIALS, value_name = "BOOL")]
    pub cors_allow_credentials: Option<bool>,
    /// Serve the example EventSource page at /demo/ [default: false]
    #[arg(long, env = env::DEMO_PAGE, value_name = "BOOL")]
    pub demo_page: Option<bool>,
    /// Serve gRPC (pushgate.v1.Pushgate, health, reflection) on the API port [default: false]
    #[arg(long, env = env::GRPC, value_name = "BOOL")]
    pub grpc: Option<bool>,
    /// Serve the API over HTTP/3 (QUIC; needs TLS) [default: false]
    #[arg(long, env = env::HTTP3, value_name = "BOOL")]
    pub http3: Option<bool>,
    /// UDP address of HTTP/3 [default: the --listen address]
    #[arg(long, env = env::HTTP3_LISTEN, value_name = "ADDR")]
    pub http3_listen: Option<SocketAddr>,
}

/// Loads: defaults ← file (if given) ← overrides (env and flags, already merged by clap).
pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Config, ConfigError> {
    let mut c = match file {
        Some(path) => from_file(path)?,
        None => Config::default(),
    };
    o.apply(&mut c);
    validate(&c)?;
    Ok(c)
}

/// Parses a YAML file (unknown keys are errors, so typos do not pass silently).
pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Config::from_yaml(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Rejects values that would make the gateway misbehave: the contract's
/// rules, plus the auth topic patterns and certificate grants, which only
/// the gateway parses.
pub fn validate(c: &Config) -> Result<(), ConfigError> {
    c.validate().map_err(|e| ConfigError::Invalid(e.0))?;
    crate::auth::parse_patterns(&c.auth.anonymous_subscribe)
        .and(crate::auth::parse_patterns(&c.auth.anonymous_publish))
        .map_err(|e| ConfigError::Invalid(format!("auth.anonymous_*: {e}")))?;
    crate::auth::certs::CertGrants::parse(&c.auth.certificate_grants)
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(())
}

impl Overrides {
    /// Writes every value given into `c`.
    pub fn apply(&self, c: &mut Config) {
        let o = self;
        fn set<T: Clone>(dst: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *dst = v.clone();
            }
        }
        set(&mut c.listen, &o.listen);
        if o.auth_key_file.is_some() {
            c.auth.key_file = o.auth_key_file.clone();
        }
        if o.auth_key_dir.is_some() {
            c.auth.key_dir = o.auth_key_dir.clone();
        }
        set(&mut c.auth.reload_interval, &o.auth_reload_interval);
        set(
            &mut c.auth.certificate_identity,
            &o.auth_certificate_identity,
        );
        set(&mut c.auth.algorithm, &o.auth_algorithm);
        set(&mut c.auth.leeway, &o.auth_leeway);
        set(&mut c.auth.anonymous_subscribe, &o.auth_anonymous_subscribe);
        set(&mut c.auth.anonymous_publish, &o.auth_anonymous_publish);
        if o.tls_cert_file.is_some() {
            c.tls.cert_file = o.tls_cert_file.clone();
        }
        if o.tls_key_file.is_some() {
            c.tls.key_file = o.tls_key_file.clone();
        }
        set(&mut c.tls.reload_interval, &o.tls_reload_interval);
        if o.tls_client_ca_file.is_some() {
            c.tls.client_ca_file = o.tls_client_ca_file.clone();
        }
        set(&mut c.tls.client_auth, &o.tls_client_auth);
        set(&mut c.cors.allowed_origins, &o.cors_allowed_origins);
        set(&mut c.cors.allow_credentials, &o.cors_allow_credentials);
        set(&mut c.demo_page, &o.demo_page);
        set(&mut c.protocols.grpc.enabled, &o.grpc);
        set(&mut c.protocols.http3.enabled, &o.http3);
        if o.http3_listen.is_some() {
            c.protocols.http3.listen = o.http3_listen;
        }
        if o.metrics_listen.is_some() {
            c.metrics_listen = o.metrics_listen;
        }
        set(&mut c.store, &o.store);
        set(&mut c.data_dir, &o.data_dir);
        set(&mut c.log_format, &o.log_format);
        set(&mut c.log_level, &o.log_level);
        set(&mut c.fsync, &o.fsync);
        set(&mut c.retention.max_events, &o.retention_max_events);
        set(&mut c.retention.max_age, &o.retention_max_age);
        set(&mut c.delivery.heartbeat, &o.heartbeat);
        set(&mut c.delivery.retry, &o.retry);
        set(&mut c.delivery.queue_size, &o.queue_size);
        set(&mut c.delivery.drain_window, &o.drain_window);
        set(&mut c.redis.key_prefix, &o.redis_key_prefix);
        set(&mut c.routing.track, &o.track);
        if o.peer_url.is_some() {
            c.routing.peer_url = o.peer_url.clone();
        }
        if o.peer_token_file.is_some() {
            c.routing.peer_token_file = o.peer_token_file.clone();
        }
        set(&mut c.edge.header_read_timeout, &o.header_read_timeout);
        set(&mut c.edge.idle_timeout, &o.idle_timeout);
        set(&mut c.edge.max_header_bytes, &o.max_header_bytes);
        set(&mut c.edge.max_tcp_connections, &o.max_tcp_connections);
        set(&mut c.edge.lean_streams, &o.lean_streams);
        if o.routing_table_file.is_some() {
            c.routing.table_file = o.routing_table_file.clone();
        }
        if o.routing_configmap.is_some() {
            c.routing.configmap = o.routing_configmap.clone();
        }
        set(&mut c.limits.max_body_bytes, &o.max_body_bytes);
        set(&mut c.limits.max_connections, &o.max_connections);
        set(&mut c.limits.accept_rate, &o.accept_rate);
        set(&mut c.limits.publish_rate, &o.publish_rate);
        set(
            &mut c.limits.max_streams_per_identity,
            &o.max_streams_per_identity,
        );
        set(
            &mut c.limits.max_streams_per_address,
            &o.max_streams_per_address,
        );
        set(&mut c.limits.trusted_proxies, &o.trusted_proxies);
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
        let c = load(Some(f.path()), &o).unwrap();
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
        let err = load(Some(f.path()), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let o = Overrides {
            peer_url: Some("http://peer:8080".into()),
            ..Default::default()
        };
        let err = load(None, &o).unwrap_err().to_string();
        assert!(err.contains("peer_token_file"), "{err}");
        let o = Overrides {
            auth_key_file: Some("/k".into()),
            auth_anonymous_subscribe: Some(vec!["a/***".into()]),
            ..Default::default()
        };
        let err = load(None, &o).unwrap_err().to_string();
        assert!(
            err.contains("auth.anonymous_*"),
            "the gateway's own pattern check: {err}"
        );
    }

    #[test]
    fn defaults_are_valid() {
        validate(&Config::default()).unwrap();
    }
}
