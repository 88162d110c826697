//! The gateway's config file (`pushgate.yaml`): every section, with its
//! defaults. Field names are the YAML keys; unknown keys are errors, so a
//! typo never passes silently. The gateway parses it (and overlays
//! `PUSHGATE_*` variables and flags); the operator renders it with
//! [`Config::to_overlay_yaml`], which writes only what differs from the
//! defaults, so that the gateway's own defaults apply to the rest.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::routing::RoutingSettings;

/// Everything the gateway can be told.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the API and the streams.
    pub listen: SocketAddr,
    /// Address of `/metrics`, `/healthz`, `/readyz` (also served on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Where history lives.
    pub store: StoreKind,
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
    pub edge: EdgeConfig,
    /// Settings of the Redis store (used when `store` is a redis:// URL).
    pub redis: RedisSettings,
    /// Canary routing: this pod's track, the peer Service, the routing table source.
    pub routing: RoutingSettings,
    /// Serve the example browser subscriber (examples/web/index.html) at `/demo/`.
    pub demo_page: bool,
    /// Degrade switches and their `auto` thresholds.
    pub degrade: crate::degrade::DegradeConfig,
    /// Protocols served beside SSE on the API port.
    pub protocols: Protocols,
}

/// Protocols served beside SSE.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Protocols {
    /// gRPC (`pushgate.v1.Pushgate`, health, reflection) over HTTP/2 on `listen`.
    pub grpc: GrpcSettings,
    /// The same API over HTTP/3 (QUIC), with the TCP listener's certificate.
    pub http3: Http3Settings,
}

/// The HTTP/3 listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Http3Settings {
    /// Serve it (needs `tls`: QUIC is always encrypted).
    pub enabled: bool,
    /// UDP address; unset: the same address and port as `listen`.
    pub listen: Option<SocketAddr>,
    /// The UDP port clients reach (a Service's), advertised in `Alt-Svc`;
    /// unset: the bound one.
    pub advertise_port: Option<u16>,
    /// Most QUIC connections at once; more are refused in the handshake.
    pub max_connections: usize,
    /// Most requests (streams) at once on one connection.
    pub max_streams_per_connection: u32,
    /// Most bytes written to one connection and not yet acknowledged by
    /// the client: what a client that stops reading can make the gateway
    /// hold before its stream's queue fills and the slow-consumer cut
    /// applies (quinn's default is 10 MiB).
    pub send_window_bytes: u64,
    /// Receive buffer of the QUIC socket (`SO_RCVBUF`), shared by every
    /// connection; 0: the kernel's default. Beyond `net.core.rmem_max` it
    /// needs CAP_NET_ADMIN or a larger sysctl (docs/OPERATIONS.md).
    pub recv_buffer_bytes: usize,
    /// Send buffer of the QUIC socket (`SO_SNDBUF`); 0: the kernel's default.
    pub send_buffer_bytes: usize,
}

impl Default for Http3Settings {
    fn default() -> Self {
        Http3Settings {
            enabled: false,
            listen: None,
            advertise_port: None,
            max_connections: 20_000,
            max_streams_per_connection: 100,
            send_window_bytes: 1024 * 1024,
            recv_buffer_bytes: 4 * 1024 * 1024,
            send_buffer_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The gRPC surface.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcSettings {
    /// Serve it (off by default: a surface nobody asked for is not exposed).
    pub enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], crate::names::API_PORT)),
            metrics_listen: None,
            store: StoreKind::Embedded,
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
            edge: EdgeConfig::default(),
            redis: RedisSettings::default(),
            routing: RoutingSettings::default(),
            demo_page: false,
            degrade: crate::degrade::DegradeConfig::default(),
            protocols: Protocols::default(),
        }
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Config {
    /// Parses the YAML form (unknown keys are errors; missing ones default).
    pub fn from_yaml(text: &str) -> Result<Config, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text)
    }

    /// The YAML form holding only what differs from [`Config::default`]:
    /// parsing it back gives this config, and every key left out takes the
    /// gateway's default.
    pub fn to_overlay_yaml(&self) -> String {
        let full = serde_yaml::to_value(self).expect("a config serializes");
        let base = serde_yaml::to_value(Config::default()).expect("a config serializes");
        match prune(full, &base) {
            Some(v) => serde_yaml::to_string(&v).expect("a config serializes"),
            None => String::new(),
        }
    }

    /// Every rule that needs nothing but the values (the gateway also parses
    /// the auth topic patterns, which this crate does not know).
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |m: &str| Err(Invalid(m.to_owned()));
        let rt = &self.routing;
        if rt.table_file.is_some() && rt.configmap.is_some() {
            return bad("routing: give table_file or configmap, not both");
        }
        if let Some(u) = &rt.peer_url {
            let host = u.strip_prefix("http://").unwrap_or("");
            if host.is_empty() || host.contains(char::is_whitespace) {
                return bad("routing.peer_url must be an http:// URL");
            }
            if rt.peer_token_file.is_none() {
                return bad("routing.peer_url needs routing.peer_token_file: the tracks prove to each other that a request was proxied");
            }
        }
        let h3 = &self.protocols.http3;
        if h3.send_window_bytes < 64 * 1024 {
            return bad("protocols.http3.send_window_bytes must be at least 65536: less stalls every stream");
        }
        if h3.recv_buffer_bytes > 1 << 30 || h3.send_buffer_bytes > 1 << 30 {
            return bad(
                "protocols.http3.recv_buffer_bytes and send_buffer_bytes must be at most 1 GiB",
            );
        }
        if h3.enabled && !self.tls.enabled() {
            return bad(
                "protocols.http3 needs tls.cert_file and tls.key_file: QUIC is always encrypted",
            );
        }
        if h3.enabled && (h3.max_connections == 0 || h3.max_streams_per_connection == 0) {
            return bad(
                "protocols.http3.max_connections and max_streams_per_connection must be at least 1",
            );
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
        self.degrade
            .auto
            .validate()
            .map_err(|m| Invalid(format!("degrade.auto: {m}")))?;
        for (name, ttl) in self.delivery.tiers.each() {
            if ttl.is_some_and(|t| t.is_zero() || t > MAX_TTL) {
                return Err(Invalid(format!(
                    "delivery.tiers.{name} must be between 1ms and 365d (or none)"
                )));
            }
        }
        if self.limits.max_topics_per_stream == 0 || self.limits.max_batch == 0 {
            return bad("limits.max_topics_per_stream and limits.max_batch must be at least 1");
        }
        if self.limits.max_shadow_bytes < 64 {
            return bad("limits.max_shadow_bytes must be at least 64");
        }
        if self.limits.accept_rate == 0 || self.limits.publish_rate == 0 {
            return bad("limits.accept_rate and limits.publish_rate must be at least 1");
        }
        if !self.auth.certificate_grants.is_empty() && self.tls.client_auth == ClientAuth::Off {
            return bad("auth.certificate_grants need tls.client_auth and tls.client_ca_file");
        }
        self.auth
            .validate()
            .and(self.edge.validate())
            .and(self.tls.validate())
            .and(self.cors.validate())
            .map_err(Invalid)
    }
}

/// `value` without the mapping entries equal to `base`'s; `None` if nothing is left.
fn prune(value: serde_yaml::Value, base: &serde_yaml::Value) -> Option<serde_yaml::Value> {
    use serde_yaml::Value;
    if &value == base {
        return None;
    }
    match (value, base) {
        (Value::Mapping(m), Value::Mapping(b)) => {
            let kept: serde_yaml::Mapping = m
                .into_iter()
                .filter_map(|(k, v)| match b.get(&k) {
                    Some(bv) => prune(v, bv).map(|v| (k, v)),
                    None => Some((k, v)),
                })
                .collect();
            Some(Value::Mapping(kept))
        }
        (v, _) => Some(v),
    }
}

/// Where history lives: `embedded` (SQLite under `data_dir`) or a Redis URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum StoreKind {
    /// SQLite in `data_dir`; one replica.
    Embedded,
    /// A `redis://` or `rediss://` URL (with password, TLS as it says).
    Redis(String),
}

impl std::str::FromStr for StoreKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "embedded" {
            Ok(StoreKind::Embedded)
        } else if s.starts_with("redis://") || s.starts_with("rediss://") {
            Ok(StoreKind::Redis(s.to_owned()))
        } else {
            Err("store must be `embedded` or a redis:// / rediss:// URL".into())
        }
    }
}

impl TryFrom<String> for StoreKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<StoreKind> for String {
    fn from(k: StoreKind) -> String {
        match k {
            StoreKind::Embedded => "embedded".into(),
            StoreKind::Redis(url) => url,
        }
    }
}

/// Declares a lowercase enum of the config with `FromStr`, so that the YAML,
/// the flags and the variables all spell its values alike.
macro_rules! config_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            /// The value as written in the config.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.to_ascii_lowercase().as_str() {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "{other:?} is not one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

config_enum! {
    /// Log output format.
    LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line.
        Json = "json",
    }
}

config_enum! {
    /// When the embedded store syncs to disk before acknowledging a publish batch.
    FsyncPolicy {
        /// fsync every group commit (survives power loss).
        Always = "always",
        /// Write to the OS before acknowledging; fsync at checkpoints (survives a process crash).
        Normal = "normal",
    }
}

config_enum! {
    /// The one signature algorithm a gateway accepts, fixed by its key file.
    KeyAlgorithm {
        /// HMAC-SHA256 with a shared secret file.
        Hs256 = "hs256",
        /// RSA PKCS#1 v1.5 SHA-256; the gateway holds the public key (PEM).
        Rs256 = "rs256",
        /// ECDSA P-256 SHA-256; the gateway holds the public key (PEM).
        Es256 = "es256",
    }
}

config_enum! {
    /// Whether the API listener asks TLS clients for a certificate.
    ClientAuth {
        /// No client certificates.
        Off = "off",
        /// A certificate is verified when offered; clients without one still connect.
        Optional = "optional",
        /// The handshake fails without a certificate from `tls.client_ca_file`.
        Required = "required",
    }
}

config_enum! {
    /// The part of a client certificate that names the device.
    CertIdentity {
        /// The subject's common name.
        Cn = "cn",
        /// The first DNS subject alternative name.
        Dns = "dns",
        /// The first URI subject alternative name (e.g. a SPIFFE ID).
        Uri = "uri",
    }
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
    /// How long a device's acknowledged positions are kept after its last ack.
    #[serde(with = "humantime_serde")]
    pub device_ack_ttl: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_events: 10_000,
            max_age: Duration::from_secs(24 * 3600),
            trim_interval: Duration::from_secs(10),
            hot_cache_events: 256,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            device_ack_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
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
    /// Default time-to-live of events published with a `priority` and no `ttl`.
    pub tiers: Tiers,
    /// What a full subscriber queue does, per topic pattern (first match
    /// wins; topics no rule matches disconnect the slow subscriber).
    pub backpressure: Vec<BackpressureRule>,
}

/// What happens when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backpressure {
    /// Cut the stream; the client resumes by cursor and misses nothing.
    #[default]
    Disconnect,
    /// Keep only the newest queued event of the topic; the skipped ones
    /// are announced with `event: skipped`.
    KeepLatest,
    /// Drop the topic's oldest queued event to make room, announced alike.
    DropOldest,
}

impl Backpressure {
    /// Every policy.
    pub const ALL: [Backpressure; 3] = [
        Backpressure::Disconnect,
        Backpressure::KeepLatest,
        Backpressure::DropOldest,
    ];

    /// As written in the config (and the metrics' `policy` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Backpressure::Disconnect => "disconnect",
            Backpressure::KeepLatest => "keep-latest",
            Backpressure::DropOldest => "drop-oldest",
        }
    }
}

/// One `delivery.backpressure` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureRule {
    /// Topic pattern (`*` one segment, `**` the rest), as in token grants.
    pub pattern: String,
    /// Its policy.
    pub policy: Backpressure,
}

/// The default TTL of each priority: hot commands expire in minutes, warm
/// state in an hour, cold history in days. An event published with neither
/// `ttl` nor `priority` has no TTL (retention alone bounds it); `null`
/// gives a tier no default.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tiers {
    /// `priority=high` (hot: commands).
    #[serde(with = "humantime_serde::option")]
    pub high: Option<Duration>,
    /// `priority=normal` (warm).
    #[serde(with = "humantime_serde::option")]
    pub normal: Option<Duration>,
    /// `priority=low` (cold).
    #[serde(with = "humantime_serde::option")]
    pub low: Option<Duration>,
}

/// Longest TTL an event may carry.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

impl Default for Tiers {
    fn default() -> Self {
        Tiers {
            high: Some(Duration::from_secs(120)),
            normal: Some(Duration::from_secs(3600)),
            low: Some(Duration::from_secs(7 * 24 * 3600)),
        }
    }
}

impl Tiers {
    /// Each tier's name and default, for checks and messages.
    pub fn each(&self) -> [(&'static str, Option<Duration>); 3] {
        [
            ("high", self.high),
            ("normal", self.normal),
            ("low", self.low),
        ]
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
            tiers: Tiers::default(),
            backpressure: Vec::new(),
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
    /// Events per second one publisher may publish (burst: the same number).
    /// A publisher is the token's `sub` or the client certificate's identity,
    /// and before auth (auth off, or anonymous) the client address.
    pub publish_rate: u32,
    /// Streams one identity (token `sub` or certificate identity) may hold
    /// open at once on this gateway; 0: no limit.
    pub max_streams_per_identity: usize,
    /// Streams one client address may hold open at once without a
    /// credential (auth off, or anonymous); 0: no limit. Behind a proxy,
    /// set `trusted_proxies` first, or every client shares the proxy's.
    pub max_streams_per_address: usize,
    /// Peers whose `X-Forwarded-For` names the client address (ingress
    /// controllers, load balancers): CIDR ranges or single addresses. A
    /// request from anywhere else is keyed on its peer address.
    pub trusted_proxies: Vec<ProxyRange>,
    /// Largest device shadow document, and largest shadow patch (bytes).
    pub max_shadow_bytes: usize,
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
            max_streams_per_identity: 100,
            max_streams_per_address: 0,
            trusted_proxies: Vec::new(),
            max_shadow_bytes: 16 * 1024,
        }
    }
}

/// An address range of trusted proxies: `10.0.0.0/8`, `fd00::/8`, or one
/// address (`10.0.0.7`, a /32 or /128). Written and read as that text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRange(ipnet::IpNet);

impl ProxyRange {
    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address (a
    /// dual-stack socket's view of an IPv4 peer) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl std::str::FromStr for ProxyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let net = if s.contains('/') {
            s.parse::<ipnet::IpNet>().map_err(|_| {
                format!("trusted proxy {s:?} is not an address range like 10.0.0.0/8 or fd00::/8")
            })?
        } else {
            s.parse::<IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("trusted proxy {s:?} is not an address or a CIDR range"))?
        };
        Ok(ProxyRange(net.trunc()))
    }
}

impl std::fmt::Display for ProxyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ProxyRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProxyRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Smallest head limit the gateway can enforce (its HTTP layer's minimum read buffer).
pub const MIN_HEADER_BYTES: usize = 8192;

/// TCP connection settings (config key `edge`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EdgeConfig {
    /// A new connection must complete its first request head within this.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) in bytes; a larger one gets 431.
    pub max_header_bytes: usize,
    /// Open TCP connections on the API port; 0 means the open-file limit minus `fd_reserve`.
    pub max_tcp_connections: usize,
    /// File descriptors kept out of the API port's share: the store, proxied
    /// streams' upstream connections, the Kubernetes watch, the metrics port.
    pub fd_reserve: usize,
    /// Open connections on the metrics port (taken from the reserve).
    pub max_ops_connections: usize,
    /// Serve plain HTTP/1.1 streams on the lean path (no hyper connection
    /// per stream, same bytes on the wire); false hands every request to hyper.
    pub lean_streams: bool,
    /// HTTP/2 control frames (SETTINGS, PING, PRIORITY, RST_STREAM) a
    /// connection may send per second, as many in a burst; a connection
    /// over it is closed. 0 means no budget.
    pub max_control_frames_per_s: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
            max_tcp_connections: 0,
            fd_reserve: 512,
            max_ops_connections: 64,
            lean_streams: true,
            max_control_frames_per_s: 1000,
        }
    }
}

impl EdgeConfig {
    /// Rejects settings the edge cannot honour.
    pub fn validate(&self) -> Result<(), String> {
        if self.header_read_timeout.is_zero() || self.idle_timeout.is_zero() {
            return Err("edge.header_read_timeout and edge.idle_timeout must be positive".into());
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err(format!(
                "edge.max_header_bytes must be at least {MIN_HEADER_BYTES}"
            ));
        }
        if self.max_ops_connections == 0 || self.max_ops_connections >= self.fd_reserve {
            return Err(
                "edge.max_ops_connections must be at least 1 and below edge.fd_reserve".into(),
            );
        }
        Ok(())
    }

    /// The API port's cap for an open-file limit of `nofile`.
    pub fn api_cap(&self, nofile: u64) -> usize {
        let budget = (nofile as usize).saturating_sub(self.fd_reserve).max(1);
        match self.max_tcp_connections {
            0 => budget,
            n => n.min(budget),
        }
    }
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

/// Longest accepted clock-skew leeway: more would make `exp` meaningless.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Most certificate grant entries; bounds the work of a check.
pub const MAX_CERTIFICATE_GRANTS: usize = 256;

/// Token and certificate checking. Everything is open unless `key_file`,
/// `key_dir` or `certificate_grants` is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// One verifying key: the HS256 secret, or the RS256/ES256 public key (PEM).
    pub key_file: Option<PathBuf>,
    /// A set of verifying keys, one file per key, named by the `kid` that
    /// selects it (a Secret mounted as a directory); dot files are ignored.
    pub key_dir: Option<PathBuf>,
    /// The only algorithm accepted; must fit the keys.
    pub algorithm: KeyAlgorithm,
    /// Clock skew tolerated on `exp` and `nbf`; a stream ends this long after
    /// its token's `exp`, when the token would no longer open one.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How often `key_file` or `key_dir` is checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Cookie that may carry the token (for `EventSource`); empty disables it.
    pub cookie: String,
    /// Accept the token in the `access_token` query parameter.
    pub query_token: bool,
    /// Topic patterns anyone may subscribe to without a token.
    pub anonymous_subscribe: Vec<String>,
    /// Topic patterns anyone may publish to without a token.
    pub anonymous_publish: Vec<String>,
    /// Which part of a verified client certificate is the caller's identity.
    pub certificate_identity: CertIdentity,
    /// Topics of client-certificate holders, by identity; the first match applies.
    pub certificate_grants: Vec<CertificateGrant>,
    /// The token claim that names the device a token speaks for (a string).
    pub device_claim: String,
}

/// Topic grants for client certificates whose identity matches `identity`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateGrant {
    /// Identity pattern: `*` stands for any run of characters, e.g. `sensor-*`.
    pub identity: String,
    /// Topic patterns to subscribe to; `{identity}` is replaced by the identity.
    pub subscribe: Vec<String>,
    /// Topic patterns to publish to; `{identity}` as above.
    pub publish: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            key_file: None,
            key_dir: None,
            algorithm: KeyAlgorithm::Hs256,
            leeway: Duration::from_secs(30),
            reload_interval: Duration::from_secs(5),
            issuer: None,
            audience: None,
            cookie: "pushgate_token".into(),
            query_token: true,
            anonymous_subscribe: Vec::new(),
            anonymous_publish: Vec::new(),
            certificate_identity: CertIdentity::Cn,
            certificate_grants: Vec::new(),
            device_claim: "sub".into(),
        }
    }
}

impl AuthConfig {
    /// True when tokens are checked.
    pub fn tokens(&self) -> bool {
        self.key_file.is_some() || self.key_dir.is_some()
    }

    /// True when requests are checked at all (tokens or certificates).
    pub fn enabled(&self) -> bool {
        self.tokens() || !self.certificate_grants.is_empty()
    }

    /// Checks what can be checked without the key files and the pattern parser.
    pub fn validate(&self) -> Result<(), String> {
        if self.leeway > MAX_LEEWAY {
            return Err(format!(
                "auth.leeway must be at most {}s",
                MAX_LEEWAY.as_secs()
            ));
        }
        if self.key_file.is_some() && self.key_dir.is_some() {
            return Err("auth.key_file and auth.key_dir exclude each other".into());
        }
        if self.reload_interval < Duration::from_millis(50) {
            return Err("auth.reload_interval must be at least 50ms".into());
        }
        let anonymous = !(self.anonymous_subscribe.is_empty() && self.anonymous_publish.is_empty());
        if anonymous && !self.enabled() {
            return Err(
                "auth.anonymous_* patterns need auth.key_file, auth.key_dir or \
                 auth.certificate_grants (without them everything is open)"
                    .into(),
            );
        }
        if self.certificate_grants.len() > MAX_CERTIFICATE_GRANTS {
            return Err(format!(
                "auth.certificate_grants holds at most {MAX_CERTIFICATE_GRANTS} entries"
            ));
        }
        if self
            .certificate_grants
            .iter()
            .any(|g| g.identity.is_empty())
        {
            return Err("auth.certificate_grants: every entry needs an identity pattern".into());
        }
        let cookie_ok = self
            .cookie
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !cookie_ok {
            return Err("auth.cookie must be letters, digits, `_`, `-` or `.`".into());
        }
        Ok(())
    }
}

/// The `tls` section: HTTPS when both files are set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for changes.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// CA bundle (PEM) that client certificates must chain to; re-read like the others.
    pub client_ca_file: Option<PathBuf>,
    /// Ask clients for a certificate: `off`, `optional` or `required`.
    pub client_auth: ClientAuth,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: None,
            key_file: None,
            reload_interval: Duration::from_secs(5),
            client_ca_file: None,
            client_auth: ClientAuth::Off,
        }
    }
}

impl TlsConfig {
    /// True when HTTPS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Both files or neither; a positive reload interval.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err("tls.cert_file and tls.key_file must be set together".into());
        }
        if self.reload_interval < Duration::from_millis(50) {
            return Err("tls.reload_interval must be at least 50ms".into());
        }
        let asks = self.client_auth != ClientAuth::Off;
        if asks != self.client_ca_file.is_some() {
            return Err(
                "tls.client_ca_file and tls.client_auth (optional or required) \
                        must be set together"
                    .into(),
            );
        }
        if asks && self.cert_file.is_none() {
            return Err("tls.client_auth needs tls.cert_file and tls.key_file".into());
        }
        Ok(())
    }
}

/// The `cors` section. No origins: no CORS headers at all (same-origin only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins such as `https://app.example.com`, or the single entry `*`.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (cookies, `withCredentials`).
    pub allow_credentials: bool,
    /// How long browsers may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for CorsConfig {
    fn default() -> Self {
        CorsConfig {
            allowed_origins: Vec::new(),
            allow_credentials: false,
            max_age: Duration::from_secs(600),
        }
    }
}

/// `scheme://host[:port]`, printable ASCII, nothing after the authority.
fn origin_ok(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '*', ' '])
        && o.bytes().all(|b| b.is_ascii_graphic())
}

impl CorsConfig {
    /// `*` alone and never with credentials (browsers refuse that pairing, and
    /// it would hand every site the user's cookie-carried token); otherwise
    /// exact `scheme://host[:port]` origins.
    pub fn validate(&self) -> Result<(), String> {
        let wildcard = self.allowed_origins.iter().any(|o| o == "*");
        if wildcard && (self.allowed_origins.len() > 1 || self.allow_credentials) {
            return Err(
                "cors.allowed_origins `*` must stand alone and excludes cors.allow_credentials"
                    .into(),
            );
        }
        if let Some(bad) = self
            .allowed_origins
            .iter()
            .find(|o| *o != "*" && !origin_ok(o))
        {
            return Err(format!(
                "cors.allowed_origins: {bad:?} is not an origin like https://app.example.com"
            ));
        }
        if self.allow_credentials && self.allowed_origins.is_empty() {
            return Err("cors.allow_credentials needs cors.allowed_origins".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_render_to_nothing() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().to_overlay_yaml(), "");
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    }

    #[test]
    fn the_overlay_holds_only_what_differs_and_parses_back() {
        let mut c = Config::default();
        c.delivery.queue_size = 64;
        c.delivery.drain_window = Duration::from_secs(30);
        c.metrics_listen = Some("0.0.0.0:9090".parse().unwrap());
        let yaml = c.to_overlay_yaml();
        assert_eq!(
            yaml,
            "metrics_listen: 0.0.0.0:9090\ndelivery:\n  queue_size: 64\n  drain_window: 30s\n"
        );
        assert_eq!(Config::from_yaml(&yaml).unwrap(), c);
    }

    #[test]
    fn store_kinds_parse_from_their_text() {
        assert_eq!("embedded".parse::<StoreKind>(), Ok(StoreKind::Embedded));
        assert_eq!(
            "rediss://h:1".parse::<StoreKind>(),
            Ok(StoreKind::Redis("rediss://h:1".into()))
        );
        assert!("postgres://x".parse::<StoreKind>().is_err());
        assert!(Config::from_yaml("store: mysql://x\n").is_err());
        assert!(Config::from_yaml("lsten: 0.0.0.0:1\n")
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }

    #[test]
    fn cors_origins_are_exact_and_wildcards_stand_alone() {
        let cfg = |origins: &[&str], creds: bool| CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: creds,
            ..Default::default()
        };
        cfg(&[], false).validate().unwrap();
        cfg(&["*"], false).validate().unwrap();
        cfg(&["https://a.example", "http://localhost:3000"], true)
            .validate()
            .unwrap();
        assert!(cfg(&["*"], true).validate().is_err());
        assert!(cfg(&["*", "https://a.example"], false).validate().is_err());
        assert!(cfg(&["https://a.example/"], false).validate().is_err());
        assert!(cfg(&["a.example"], false).validate().is_err());
        assert!(cfg(&["https://*.example"], false).validate().is_err());
        assert!(cfg(&[], true).validate().is_err());
    }

    #[test]
    fn enums_spell_alike_everywhere() {
        assert_eq!("JSON".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(FsyncPolicy::Normal.as_str(), "normal");
        assert!("md5".parse::<KeyAlgorithm>().unwrap_err().contains("hs256"));
    }
}
