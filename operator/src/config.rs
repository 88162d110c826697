//! Renders the gateway's `pushgate.yaml` from a spec and checks the values
//! the CRD schema cannot (humantime durations).

use crate::crd::PushGatewaySpec;
use serde::Serialize;
use std::time::Duration;

/// Gateway API port inside the pod.
pub const API_PORT: i32 = 8080;
/// Gateway metrics/health port inside the pod.
pub const METRICS_PORT: i32 = 9090;
/// Mount directory of the config file.
pub const CONFIG_DIR: &str = "/etc/pushgate";
/// ConfigMap key (and file name) of the config.
pub const CONFIG_KEY: &str = "pushgate.yaml";
/// Data directory of the embedded store.
pub const DATA_DIR: &str = "/var/lib/pushgate";
/// Gateway default drain window, used when the spec does not set one.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(20);

/// A spec the operator cannot turn into a working gateway.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// JSON path of the offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

#[derive(Serialize)]
struct GatewayConfig<'a> {
    listen: String,
    metrics_listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<&'a str>,
    log_format: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    retention: Option<Retention<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<Delivery<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limits: Option<Limits>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<&'a RoutingConfig>,
}

/// The gateway's `routing` section: this pod's track, the other track's
/// Service and the routing-table ConfigMap it watches.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    /// `stable` or `canary`.
    pub track: &'static str,
    /// Base URL of the other track's Service.
    pub peer_url: String,
    /// `namespace/name` of the routing-table ConfigMap.
    pub configmap: String,
    /// The mounted peer token the tracks prove proxied requests with.
    pub peer_token_file: String,
}

#[derive(Serialize)]
struct Retention<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_events: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_age: Option<&'a str>,
}

#[derive(Serialize)]
struct Delivery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drain_window: Option<&'a str>,
}

#[derive(Serialize)]
struct Limits {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_body_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_topics_per_stream: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_connections: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accept_rate: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish_rate: Option<u32>,
}

fn duration(field: &'static str, value: Option<&String>) -> Result<Option<Duration>, SpecError> {
    value
        .map(|v| {
            humantime::parse_duration(v).map_err(|e| SpecError {
                field,
                message: format!("{v:?} is not a duration like \"20s\" or \"5m\" ({e})"),
            })
        })
        .transpose()
}

/// Checks the fields the apiserver cannot validate.
pub fn validate(spec: &PushGatewaySpec) -> Result<(), SpecError> {
    drain_window(spec)?;
    if let Some(r) = &spec.retention {
        duration("spec.retention.maxAge", r.max_age.as_ref())?;
    }
    if let Some(d) = &spec.delivery {
        duration("spec.delivery.heartbeat", d.heartbeat.as_ref())?;
        duration("spec.delivery.retry", d.retry.as_ref())?;
    }
    Ok(())
}

/// The drain window the gateway will use.
pub fn drain_window(spec: &PushGatewaySpec) -> Result<Duration, SpecError> {
    let d = spec.delivery.as_ref().and_then(|d| d.drain_window.as_ref());
    Ok(duration("spec.delivery.drainWindow", d)?.unwrap_or(DEFAULT_DRAIN))
}

/// Renders `pushgate.yaml` without routing (see [`render_with`]).
pub fn render(spec: &PushGatewaySpec) -> Result<String, SpecError> {
    render_with(spec, None)
}

/// Renders `pushgate.yaml`. Keys the user did not set are left out so the
/// gateway's own defaults apply; the Redis URL never lands here (it is a secret).
pub fn render_with(
    spec: &PushGatewaySpec,
    routing: Option<&RoutingConfig>,
) -> Result<String, SpecError> {
    validate(spec)?;
    let embedded = spec.embedded_store();
    let cfg = GatewayConfig {
        listen: format!("0.0.0.0:{API_PORT}"),
        metrics_listen: format!("0.0.0.0:{METRICS_PORT}"),
        store: embedded.then_some("embedded"),
        data_dir: embedded.then_some(DATA_DIR),
        log_format: "json",
        retention: spec.retention.as_ref().map(|r| Retention {
            max_events: r.max_events,
            max_age: r.max_age.as_deref(),
        }),
        delivery: spec.delivery.as_ref().map(|d| Delivery {
            heartbeat: d.heartbeat.as_deref(),
            retry: d.retry.as_deref(),
            queue_size: d.queue_size,
            drain_window: d.drain_window.as_deref(),
        }),
        limits: spec.limits.as_ref().map(|l| Limits {
            max_body_bytes: l.max_body_bytes,
            max_topics_per_stream: l.max_topics_per_stream,
            max_batch: l.max_batch,
            max_connections: l.max_connections,
            accept_rate: l.accept_rate,
            publish_rate: l.publish_rate,
        }),
        routing,
    };
    Ok(serde_yaml::to_string(&cfg).expect("config serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DeliverySpec, RedisStore, SecretKeyRef, StoreSpec};

    #[test]
    fn minimal_spec_renders_only_fixed_keys() {
        let yaml = render(&PushGatewaySpec::default()).unwrap();
        assert_eq!(
            yaml,
            "listen: 0.0.0.0:8080\nmetrics_listen: 0.0.0.0:9090\nstore: embedded\n\
             data_dir: /var/lib/pushgate\nlog_format: json\n"
        );
    }

    #[test]
    fn redis_store_keeps_url_out_of_config() {
        let spec = PushGatewaySpec {
            store: Some(StoreSpec {
                redis: Some(RedisStore {
                    secret_ref: SecretKeyRef {
                        name: "r".into(),
                        key: None,
                    },
                }),
                ..Default::default()
            }),
            delivery: Some(DeliverySpec {
                drain_window: Some("30s".into()),
                queue_size: Some(64),
                ..Default::default()
            }),
            ..Default::default()
        };
        let yaml = render(&spec).unwrap();
        assert!(!yaml.contains("store"), "{yaml}");
        assert!(!yaml.contains("data_dir"), "{yaml}");
        assert!(
            yaml.contains("delivery:\n  queue_size: 64\n  drain_window: 30s\n"),
            "{yaml}"
        );
    }

    #[test]
    fn bad_duration_names_the_field() {
        let spec = PushGatewaySpec {
            delivery: Some(DeliverySpec {
                drain_window: Some("soon".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = render(&spec).unwrap_err();
        assert_eq!(err.field, "spec.delivery.drainWindow");
    }
}
