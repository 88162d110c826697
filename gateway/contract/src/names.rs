//! Names both sides use literally: ConfigMap keys, environment variables,
//! ports and paths inside a gateway pod.

/// ConfigMap key (and file name) of the gateway config.
pub const CONFIG_KEY: &str = "pushgate.yaml";
/// ConfigMap key of the routing table.
pub const ROUTING_KEY: &str = "routing.yaml";

/// Port of the API and the streams inside a pod.
pub const API_PORT: u16 = 8080;
/// Port of `/metrics`, `/healthz` and `/readyz` inside a pod.
pub const METRICS_PORT: u16 = 9090;

/// Where a pod's config file is mounted.
pub const CONFIG_DIR: &str = "/etc/pushgate";
/// Data directory of the embedded store in a pod.
pub const DATA_DIR: &str = "/var/lib/pushgate";

/// Environment variables the gateway reads (each also a `--flag`).
pub mod env {
    /// The config file.
    pub const CONFIG: &str = "PUSHGATE_CONFIG";
    /// `--listen`.
    pub const LISTEN: &str = "PUSHGATE_LISTEN";
    /// `--metrics-listen`.
    pub const METRICS_LISTEN: &str = "PUSHGATE_METRICS_LISTEN";
    /// `--store`: `embedded` or a `redis://` URL (a Secret in a pod).
    pub const STORE: &str = "PUSHGATE_STORE";
    /// `--data-dir`.
    pub const DATA_DIR: &str = "PUSHGATE_DATA_DIR";
    /// `--log-format`.
    pub const LOG_FORMAT: &str = "PUSHGATE_LOG_FORMAT";
    /// `--log-level`.
    pub const LOG_LEVEL: &str = "PUSHGATE_LOG_LEVEL";
    /// `--fsync`.
    pub const FSYNC: &str = "PUSHGATE_FSYNC";
    /// `--retention-max-events`.
    pub const RETENTION_MAX_EVENTS: &str = "PUSHGATE_RETENTION_MAX_EVENTS";
    /// `--retention-max-age`.
    pub const RETENTION_MAX_AGE: &str = "PUSHGATE_RETENTION_MAX_AGE";
    /// `--heartbeat`.
    pub const HEARTBEAT: &str = "PUSHGATE_HEARTBEAT";
    /// `--retry`.
    pub const RETRY: &str = "PUSHGATE_RETRY";
    /// `--queue-size`.
    pub const QUEUE_SIZE: &str = "PUSHGATE_QUEUE_SIZE";
    /// `--drain-window`.
    pub const DRAIN_WINDOW: &str = "PUSHGATE_DRAIN_WINDOW";
    /// `--track`.
    pub const TRACK: &str = "PUSHGATE_TRACK";
    /// `--peer-url`.
    pub const PEER_URL: &str = "PUSHGATE_PEER_URL";
    /// `--peer-token-file`.
    pub const PEER_TOKEN_FILE: &str = "PUSHGATE_PEER_TOKEN_FILE";
    /// `--routing-table-file`.
    pub const ROUTING_TABLE_FILE: &str = "PUSHGATE_ROUTING_TABLE_FILE";
    /// `--routing-configmap`.
    pub const ROUTING_CONFIGMAP: &str = "PUSHGATE_ROUTING_CONFIGMAP";
    /// `--redis-key-prefix`.
    pub const REDIS_KEY_PREFIX: &str = "PUSHGATE_REDIS_KEY_PREFIX";
    /// `--max-body-bytes`.
    pub const MAX_BODY_BYTES: &str = "PUSHGATE_MAX_BODY_BYTES";
    /// `--max-connections`.
    pub const MAX_CONNECTIONS: &str = "PUSHGATE_MAX_CONNECTIONS";
    /// `--accept-rate`.
    pub const ACCEPT_RATE: &str = "PUSHGATE_ACCEPT_RATE";
    /// `--publish-rate`.
    pub const PUBLISH_RATE: &str = "PUSHGATE_PUBLISH_RATE";
    /// `--max-streams-per-identity`.
    pub const MAX_STREAMS_PER_IDENTITY: &str = "PUSHGATE_MAX_STREAMS_PER_IDENTITY";
    /// `--max-streams-per-address`.
    pub const MAX_STREAMS_PER_ADDRESS: &str = "PUSHGATE_MAX_STREAMS_PER_ADDRESS";
    /// `--trusted-proxies`.
    pub const TRUSTED_PROXIES: &str = "PUSHGATE_TRUSTED_PROXIES";
    /// `--header-read-timeout`.
    pub const HEADER_READ_TIMEOUT: &str = "PUSHGATE_HEADER_READ_TIMEOUT";
    /// `--idle-timeout`.
    pub const IDLE_TIMEOUT: &str = "PUSHGATE_IDLE_TIMEOUT";
    /// `--max-header-bytes`.
    pub const MAX_HEADER_BYTES: &str = "PUSHGATE_MAX_HEADER_BYTES";
    /// `--max-tcp-connections`.
    pub const MAX_TCP_CONNECTIONS: &str = "PUSHGATE_MAX_TCP_CONNECTIONS";
    /// `--lean-streams`.
    pub const LEAN_STREAMS: &str = "PUSHGATE_LEAN_STREAMS";
    /// `--auth-key-file`.
    pub const AUTH_KEY_FILE: &str = "PUSHGATE_AUTH_KEY_FILE";
    /// `--auth-key-dir`.
    pub const AUTH_KEY_DIR: &str = "PUSHGATE_AUTH_KEY_DIR";
    /// `--auth-reload-interval`.
    pub const AUTH_RELOAD_INTERVAL: &str = "PUSHGATE_AUTH_RELOAD_INTERVAL";
    /// `--auth-certificate-identity`.
    pub const AUTH_CERTIFICATE_IDENTITY: &str = "PUSHGATE_AUTH_CERTIFICATE_IDENTITY";
    /// `--auth-algorithm`.
    pub const AUTH_ALGORITHM: &str = "PUSHGATE_AUTH_ALGORITHM";
    /// `--auth-leeway`.
    pub const AUTH_LEEWAY: &str = "PUSHGATE_AUTH_LEEWAY";
    /// `--auth-anonymous-subscribe` (comma-separated).
    pub const AUTH_ANONYMOUS_SUBSCRIBE: &str = "PUSHGATE_AUTH_ANONYMOUS_SUBSCRIBE";
    /// `--auth-anonymous-publish` (comma-separated).
    pub const AUTH_ANONYMOUS_PUBLISH: &str = "PUSHGATE_AUTH_ANONYMOUS_PUBLISH";
    /// `--tls-cert-file`.
    pub const TLS_CERT_FILE: &str = "PUSHGATE_TLS_CERT_FILE";
    /// `--tls-key-file`.
    pub const TLS_KEY_FILE: &str = "PUSHGATE_TLS_KEY_FILE";
    /// `--tls-reload-interval`.
    pub const TLS_RELOAD_INTERVAL: &str = "PUSHGATE_TLS_RELOAD_INTERVAL";
    /// `--tls-client-ca-file`.
    pub const TLS_CLIENT_CA_FILE: &str = "PUSHGATE_TLS_CLIENT_CA_FILE";
    /// `--tls-client-auth`.
    pub const TLS_CLIENT_AUTH: &str = "PUSHGATE_TLS_CLIENT_AUTH";
    /// `--cors-allowed-origins` (comma-separated).
    pub const CORS_ALLOWED_ORIGINS: &str = "PUSHGATE_CORS_ALLOWED_ORIGINS";
    /// `--cors-allow-credentials`.
    pub const CORS_ALLOW_CREDENTIALS: &str = "PUSHGATE_CORS_ALLOW_CREDENTIALS";
    /// `--demo-page`.
    pub const DEMO_PAGE: &str = "PUSHGATE_DEMO_PAGE";
    /// `protocols.grpc.enabled`.
    pub const GRPC: &str = "PUSHGATE_GRPC";
    /// `protocols.http3.enabled`.
    pub const HTTP3: &str = "PUSHGATE_HTTP3";
    /// `protocols.http3.listen`.
    pub const HTTP3_LISTEN: &str = "PUSHGATE_HTTP3_LISTEN";
}
