//! The `PushGateway` custom resource (group `pushgate.dev`, version `v1alpha1`).
//!
//! CEL rules live on the structs they constrain so `kubectl apply` rejects
//! impossible specs with a message a person understands.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscalerBehavior;
use k8s_openapi::api::core::v1::{ResourceRequirements, Sysctl, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Desired state of one pushgate deployment.
// Several printer columns share `type_ = "string"`, which the lint misreads
// as a repeated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "pushgate.dev",
    version = "v1alpha1",
    kind = "PushGateway",
    namespaced,
    shortname = "pgw",
    status = "PushGatewayStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A pushgate SSE push gateway managed by pushgate-operator",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Canary", type_ = "string", json_path = ".spec.canary.image"),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canary.weight"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(!has(self.store) || has(self.store.embedded)) || !has(self.replicas) || self.replicas <= 1",
        "message": "store.embedded keeps events on a single pod's volume, so replicas must be 1; use store.redis to run more replicas"
    },
    {
        "rule": "!(!has(self.store) || has(self.store.embedded)) || !has(self.autoscaling)",
        "message": "autoscaling needs a shared store: store.embedded cannot be autoscaled; use store.redis"
    },
    {
        "rule": "!has(self.canary) || (has(self.store) && has(self.store.redis))",
        "message": "canary needs a shared store (store.redis) so both tracks serve the same events"
    },
    {
        "rule": "!has(self.canary) || !has(self.tls)",
        "message": "canary cannot be combined with tls yet: the tracks proxy streams to each other over plain HTTP"
    },
    {
        "rule": "!has(self.auth) || !has(self.auth.certificateGrants) || size(self.auth.certificateGrants) == 0 || (has(self.tls) && has(self.tls.clientCA))",
        "message": "auth.certificateGrants need tls.clientCA: without client certificates nothing can match them"
    },
    {
        "rule": "!has(self.protocols) || !has(self.protocols.http3) || !self.protocols.http3.enabled || has(self.tls)",
        "message": "protocols.http3 needs tls: QUIC is always encrypted"
    }
]))]
pub struct PushGatewaySpec {
    /// Gateway image; defaults to ghcr.io/pushgate/pushgate:<operator version>.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of gateway pods when autoscaling is not set (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Container resource requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Where events are stored; the embedded store is used when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreSpec>,
    /// How long and how many events each topic keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSpec>,
    /// Stream delivery tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Degrade switches: every pod flips at once (with a shared store,
    /// through the routing table; the embedded store's one pod restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade: Option<DegradeSpec>,
    /// Per-pod limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,
    /// Horizontal autoscaling; requires store.redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// Canary track routed by trace-id hash; requires store.redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanarySpec>,
    /// The Service in front of the gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Token and client-certificate authentication; keys come from Secrets mounted into the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// HTTPS on the API port from a `kubernetes.io/tls` Secret (rotated in place).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Protocols served beside SSE over HTTP/1.1 and HTTP/2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocols: Option<ProtocolsSpec>,
    /// Extra pod settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_overrides: Option<PodOverrides>,
}

/// gRPC and HTTP/3 beside SSE.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProtocolsSpec {
    /// gRPC (`pushgate.v1.Pushgate`, health, reflection) over HTTP/2 on the
    /// pods' API port; `port` adds a Service port `grpc` to it (default 9000)
    /// for clients that expect gRPC on a port of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<ServedProtocol>,
    /// The API over HTTP/3 (QUIC) on UDP; needs `tls`. `port` is the UDP
    /// Service port `h3` (default: the API Service port, where browsers
    /// look after `Alt-Svc`), which TCP responses advertise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http3: Option<ServedProtocol>,
}

/// A protocol turned on, and its Service port.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServedProtocol {
    /// Serve it.
    pub enabled: bool,
    /// Its Service port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
}

/// Event store: exactly one of `embedded` or `redis`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.embedded) != has(self.redis)",
        "message": "store: set exactly one of embedded or redis"
    }
]))]
pub struct StoreSpec {
    /// Single-pod store on a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded: Option<EmbeddedStore>,
    /// Shared Redis store; the URL comes from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStore>,
}

/// PersistentVolumeClaim settings of the embedded store.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddedStore {
    /// Volume size (default 1Gi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// StorageClass of the claim; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// Redis store whose `redis://` URL is read from a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RedisStore {
    /// Secret (same namespace) holding the URL.
    pub secret_ref: SecretKeyRef,
}

/// A key in a Secret of the PushGateway's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key inside the Secret (default `url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Token and client-certificate authentication (docs/SECURITY.md).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.keySecretRef) && has(self.keysSecretRef))",
        "message": "give keySecretRef (one key) or keysSecretRef (a key set), not both"
    },
    {
        "rule": "has(self.keySecretRef) || has(self.keysSecretRef) || (has(self.certificateGrants) && size(self.certificateGrants) > 0)",
        "message": "auth needs keySecretRef, keysSecretRef or certificateGrants"
    }
]))]
pub struct AuthSpec {
    /// One verifying key: a Secret key with the HS256 secret or the RS256/ES256
    /// public key (PEM); key default `key`. Tokens need no `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
    /// A key set: every key of this Secret is a verifying key whose name is
    /// its `kid`. Add or remove keys to rotate; a removed key ends its streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_secret_ref: Option<SecretRef>,
    /// The one accepted algorithm (default `hs256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<JwtAlgorithm>,
    /// Topic patterns anyone may subscribe to without a token (`*` one segment, `**` any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_subscribe: Option<Vec<String>>,
    /// Topic patterns anyone may publish to without a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_publish: Option<Vec<String>>,
    /// Topics of client-certificate holders (needs tls.clientCA); the first
    /// entry whose identity pattern matches applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_grants: Option<Vec<CertificateGrantSpec>>,
}

/// A Secret, used whole.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name, in the PushGateway's namespace.
    pub name: String,
}

/// Topic patterns granted to client certificates whose identity matches.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertificateGrantSpec {
    /// Identity pattern, `*` for any run of characters (e.g. `sensor-*`).
    pub identity: String,
    /// Topic patterns to subscribe to; `{identity}` stands for the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Vec<String>>,
    /// Topic patterns to publish to; `{identity}` as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<String>>,
}

/// Token signature algorithm, fixed by the key.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 shared secret.
    #[default]
    Hs256,
    /// RSA public key.
    Rs256,
    /// ECDSA P-256 public key.
    Es256,
}

impl From<JwtAlgorithm> for pushgate_contract::config::KeyAlgorithm {
    fn from(a: JwtAlgorithm) -> Self {
        use pushgate_contract::config::KeyAlgorithm as K;
        match a {
            JwtAlgorithm::Hs256 => K::Hs256,
            JwtAlgorithm::Rs256 => K::Rs256,
            JwtAlgorithm::Es256 => K::Es256,
        }
    }
}

/// HTTPS certificate, and optionally client certificates for devices.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `kubernetes.io/tls` Secret (keys `tls.crt`, `tls.key`) in the same namespace.
    pub secret_name: String,
    /// Verify client certificates against this CA bundle (mutual TLS).
    #[serde(default, rename = "clientCA", skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<ClientCaSpec>,
}

/// Client-certificate verification; the bundle reloads when the Secret changes.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientCaSpec {
    /// Secret holding the CA bundle (PEM).
    pub secret_name: String,
    /// Key inside the Secret (default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `required` (default): no certificate, no handshake. `optional`:
    /// clients without one connect and authenticate by token or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ClientCertMode>,
    /// Which field names the device: `cn` (default), `dns` or `uri` (first SAN of that kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<CertIdentityField>,
}

/// Whether a client certificate is required.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertMode {
    /// The handshake fails without one.
    #[default]
    Required,
    /// Verified when offered.
    Optional,
}

impl From<ClientCertMode> for pushgate_contract::config::ClientAuth {
    fn from(m: ClientCertMode) -> Self {
        match m {
            ClientCertMode::Required => Self::Required,
            ClientCertMode::Optional => Self::Optional,
        }
    }
}

/// The certificate field that names a device.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertIdentityField {
    /// Subject common name.
    #[default]
    Cn,
    /// First DNS subject alternative name.
    Dns,
    /// First URI subject alternative name.
    Uri,
}

impl From<CertIdentityField> for pushgate_contract::config::CertIdentity {
    fn from(f: CertIdentityField) -> Self {
        match f {
            CertIdentityField::Cn => Self::Cn,
            CertIdentityField::Dns => Self::Dns,
            CertIdentityField::Uri => Self::Uri,
        }
    }
}

/// Retention per topic.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Events kept per topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u64>,
    /// Oldest event kept, as a duration like `24h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

/// One degrade switch.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DegradeSwitch {
    /// Not degraded.
    Off,
    /// Degraded now.
    On,
    /// Degraded while the pod's breaker for the layer is tripped.
    Auto,
}

/// The three degrade layers; an unset one keeps the gateway's default (off).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DegradeSpec {
    /// Refuse new streams (EventSource-safe); open streams stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<DegradeSwitch>,
    /// Fan out only high-priority events live; the rest is replayed on recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<DegradeSwitch>,
    /// Store slow or down: publishes 503, replays from the hot ring only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<DegradeSwitch>,
    /// Trip and reset marks of the `auto` breakers (with a Redis store they
    /// change on every pod at once, without a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<DegradeAutoSpec>,
}

/// The `auto` breakers' marks; durations are strings like `800ms`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DegradeAutoSpec {
    /// Share of `limits.maxConnections` that trips the connections layer (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_trip: Option<f64>,
    /// Share below which it resets (default 0.85).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections_reset: Option<f64>,
    /// Event-loop lag that trips the events layer (default 250ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_loop_lag_trip: Option<String>,
    /// Lag below which it resets (default 50ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_loop_lag_reset: Option<String>,
    /// Store probe p99 that trips the storage layer (default 800ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_p99_trip: Option<String>,
    /// p99 below which it resets (default 200ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_p99_reset: Option<String>,
    /// How long a condition must hold to trip or reset (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// How often the breakers measure (default 250ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<String>,
}

impl DegradeSpec {
    /// The gateway's form of the switches (the marks: `config::degrade_table`).
    pub fn switches(&self) -> pushgate_contract::degrade::Switches {
        use pushgate_contract::degrade::Switch;
        let s = |v: Option<DegradeSwitch>| {
            v.map(|v| match v {
                DegradeSwitch::Off => Switch::Off,
                DegradeSwitch::On => Switch::On,
                DegradeSwitch::Auto => Switch::Auto,
            })
        };
        pushgate_contract::degrade::Switches {
            connections: s(self.connections),
            events: s(self.events),
            storage: s(self.storage),
            auto: None,
        }
    }
}

/// Delivery tuning; durations are strings like `15s`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Interval of SSE heartbeat comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
    /// `retry:` hint sent to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Per-subscriber queue length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<u32>,
    /// Time streams get to finish on shutdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_window: Option<String>,
    /// Default TTL per priority for events published with a priority and no ttl.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiers: Option<TiersSpec>,
}

/// Default TTLs of the priority tiers, as durations like `2m`; unset keeps
/// the gateway's default (high 2m, normal 1h, low 7d).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TiersSpec {
    /// `priority=high`: commands (hot tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high: Option<String>,
    /// `priority=normal` (warm tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normal: Option<String>,
    /// `priority=low` (cold tier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low: Option<String>,
}

/// Per-pod limits of the gateway.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Largest accepted publish body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Topics one stream may subscribe to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_topics_per_stream: Option<u32>,
    /// Events per batch publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<u32>,
    /// Concurrent streams per pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// New streams accepted per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept_rate: Option<u32>,
    /// Publishes accepted per second per publisher: its token `sub` or
    /// certificate identity, or without a credential its client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_rate: Option<u32>,
    /// Streams one token `sub` or certificate identity may hold open per
    /// pod (gateway default 100); 0: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_identity: Option<u32>,
    /// Streams one client address may hold open per pod without a
    /// credential (gateway default 0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_streams_per_address: Option<u32>,
    /// Proxies in front of the gateway (ingress controllers, load
    /// balancers) whose `X-Forwarded-For` names the client: CIDR ranges or
    /// single addresses. Without them, every client behind a proxy shares
    /// the proxy's address in the per-address limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub trusted_proxies: Option<Vec<String>>,
    /// Largest device shadow document (and shadow patch), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 64))]
    pub max_shadow_bytes: Option<u32>,
}

/// Which autoscaler scales the gateway.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoscalingEngine {
    /// An autoscaling/v2 HPA on Pods metrics from custom.metrics.k8s.io
    /// (prometheus-adapter with the chart's rules).
    #[default]
    Hpa,
    /// A KEDA ScaledObject with Prometheus triggers (KEDA makes the HPA).
    Keda,
}

/// What KEDA's Prometheus triggers need.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KedaSpec {
    /// Prometheus that scrapes the gateway pods, e.g. `http://prometheus.monitoring:9090`.
    #[schemars(length(min = 1))]
    pub server_address: String,
}

/// HorizontalPodAutoscaler settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.minReplicas <= self.maxReplicas",
        "message": "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas"
    },
    {
        "rule": "!has(self.engine) || self.engine != 'keda' || has(self.keda)",
        "message": "autoscaling.engine keda needs autoscaling.keda.serverAddress (the Prometheus its triggers query)"
    }
]))]
pub struct AutoscalingSpec {
    /// `hpa` (default) or `keda`; the operator writes one or the other, never both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<AutoscalingEngine>,
    /// Required with `engine: keda`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keda: Option<KedaSpec>,
    /// Lower bound of replicas.
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound of replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Average event-loop lag per pod (default `50m`, i.e. 50ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_event_loop_lag: Option<Quantity>,
    /// Average subscriber lag in events per pod (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_subscriber_lag: Option<Quantity>,
    /// Average open streams per pod (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_connections_per_pod: Option<Quantity>,
    /// Average memory utilisation in percent of requests (default 80); 0
    /// leaves memory out. It needs `metrics.k8s.io` (metrics-server): without
    /// it the HPA cannot compute it and never scales down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub target_memory_utilization: Option<i32>,
    /// Passed through to the HPA's `spec.behavior` (with KEDA:
    /// `advanced.horizontalPodAutoscalerConfig.behavior`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

impl AutoscalingSpec {
    /// Whether KEDA scales the gateway.
    pub fn keda(&self) -> bool {
        self.engine == Some(AutoscalingEngine::Keda)
    }

    /// The memory target in percent, unless memory is left out (0).
    pub fn memory_target(&self) -> Option<i32> {
        Some(self.target_memory_utilization.unwrap_or(80)).filter(|v| *v > 0)
    }
}

/// Canary track: a second Deployment on `image` that serves the streams whose
/// routing key hashes below `weight` (docs/CANARY.md).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.weight >= 0 && self.weight <= 100",
        "message": "canary.weight is the percentage of streams sent to the canary and must be between 0 and 100"
    }
]))]
pub struct CanarySpec {
    /// Image of the canary track.
    pub image: String,
    /// Percentage of streams routed to the canary (0–100).
    pub weight: i32,
    /// How streams are assigned to a track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<CanaryHash>,
}

/// Routing-key settings for the canary split.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryHash {
    /// Header used as routing key when there is no `traceparent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Salt mixed into the hash; changing it reshuffles buckets. Defaults to
    /// the PushGateway's uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Header that forces a track (`stable` or `canary`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_header: Option<String>,
}

/// Service settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Service type (default ClusterIP).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Service port of the HTTP API (default 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Extra Service annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Pod template overrides.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra pod labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Namespaced sysctls, e.g. `net.ipv4.ip_local_port_range`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctls: Option<Vec<Sysctl>>,
}

/// Observed state written by the operator.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushGatewayStatus {
    /// `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Desired gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready gateway pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Image of the stable track.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// In-cluster URL of the HTTP API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The canary track, while `spec.canary` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
}

/// Observed state of the canary track.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// Image of the canary track.
    pub image: String,
    /// Ready canary pods.
    pub ready_replicas: i32,
    /// Percentage of streams the routing table sends to the canary.
    pub weight: i32,
}

/// A status condition in the usual Kubernetes shape.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// RFC 3339 time of the last status change.
    pub last_transition_time: String,
    /// Generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Default Service port of `protocols.grpc`.
pub const GRPC_SERVICE_PORT: i32 = 9000;

impl PushGatewaySpec {
    /// The API port of the Service (default 80).
    pub fn service_port(&self) -> i32 {
        self.service.as_ref().and_then(|s| s.port).unwrap_or(80)
    }

    /// The Service port of gRPC, when it is enabled.
    pub fn grpc_port(&self) -> Option<i32> {
        let g = self.protocols.as_ref()?.grpc.as_ref()?;
        g.enabled.then(|| g.port.unwrap_or(GRPC_SERVICE_PORT))
    }

    /// True when gRPC is enabled.
    pub fn grpc_enabled(&self) -> bool {
        self.grpc_port().is_some()
    }

    /// The UDP Service port of HTTP/3, when it is enabled.
    pub fn http3_port(&self) -> Option<u16> {
        let h = self.protocols.as_ref()?.http3.as_ref()?;
        let port = h.port.unwrap_or_else(|| self.service_port());
        h.enabled
            .then_some(port)
            .and_then(|p| u16::try_from(p).ok())
    }

    /// True when the single-pod embedded store is used (also the default).
    pub fn embedded_store(&self) -> bool {
        self.store.as_ref().is_none_or(|s| s.redis.is_none())
    }

    /// The embedded store's claim settings (defaults when unset).
    pub fn embedded_settings(&self) -> EmbeddedStore {
        self.store
            .as_ref()
            .and_then(|s| s.embedded.clone())
            .unwrap_or_default()
    }

    /// The canary's hashing settings (defaults when unset or without a canary).
    pub fn canary_hash(&self) -> CanaryHash {
        self.canary
            .as_ref()
            .and_then(|c| c.hash.clone())
            .unwrap_or_default()
    }
}
