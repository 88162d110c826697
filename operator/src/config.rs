//! Renders the gateway's `pushgate.yaml` from a spec with the gateway's own
//! config types (the contract crate), and checks the values the CRD schema
//! cannot (humantime durations). Only what differs from the gateway's
//! defaults is written, so its defaults apply to the rest.

use crate::crd::PushGatewaySpec;
use pushgate_contract::config::{CertificateGrant, Config, LogFormat};
use pushgate_contract::degrade::{AutoThresholds, Switches};
use pushgate_contract::routing::RoutingSettings;
use std::net::SocketAddr;
use std::time::Duration;

pub use pushgate_contract::names::{API_PORT, CONFIG_DIR, CONFIG_KEY, DATA_DIR, METRICS_PORT};

/// A spec the operator cannot turn into a working gateway.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct SpecError {
    /// JSON path of the offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
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

/// Sets `dst` when the spec gives a value.
fn set<T>(dst: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *dst = v;
    }
}

/// `spec.degrade` as the gateway reads it: the switches it sets and, if
/// `auto` is given, the complete marks (unset ones at their defaults).
pub fn degrade_table(spec: &PushGatewaySpec) -> Result<Switches, SpecError> {
    let Some(d) = &spec.degrade else {
        return Ok(Switches::default());
    };
    let mut s = d.switches();
    if let Some(a) = &d.auto {
        let mut m = AutoThresholds::default();
        set(&mut m.connections_trip, a.connections_trip);
        set(&mut m.connections_reset, a.connections_reset);
        let d = |field, v: &Option<String>| duration(field, v.as_ref());
        set(
            &mut m.event_loop_lag_trip,
            d("spec.degrade.auto.eventLoopLagTrip", &a.event_loop_lag_trip)?,
        );
        set(
            &mut m.event_loop_lag_reset,
            d(
                "spec.degrade.auto.eventLoopLagReset",
                &a.event_loop_lag_reset,
            )?,
        );
        set(
            &mut m.store_p99_trip,
            d("spec.degrade.auto.storeP99Trip", &a.store_p99_trip)?,
        );
        set(
            &mut m.store_p99_reset,
            d("spec.degrade.auto.storeP99Reset", &a.store_p99_reset)?,
        );
        set(&mut m.window, d("spec.degrade.auto.window", &a.window)?);
        set(
            &mut m.probe_interval,
            d("spec.degrade.auto.probeInterval", &a.probe_interval)?,
        );
        m.validate().map_err(|message| SpecError {
            field: "spec.degrade.auto",
            message,
        })?;
        s.auto = Some(m);
    }
    Ok(s)
}

/// The gateway config of a pod of `spec`, with `routing` as its routing section.
/// The Redis URL is not in it (it is a Secret, passed as a variable).
pub fn gateway_config(
    spec: &PushGatewaySpec,
    routing: Option<RoutingSettings>,
) -> Result<Config, SpecError> {
    let mut c = Config {
        listen: SocketAddr::from(([0, 0, 0, 0], API_PORT)),
        metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], METRICS_PORT))),
        log_format: LogFormat::Json,
        routing: routing.unwrap_or_default(),
        ..Config::default()
    };
    if spec.embedded_store() {
        c.data_dir = DATA_DIR.into();
        // No routing table to watch: the one pod takes the switches and
        // marks from its config (and restarts to change them).
        let s = c.degrade.switches().overridden_by(&degrade_table(spec)?);
        c.degrade.connections = s.connections.unwrap_or_default();
        c.degrade.events = s.events.unwrap_or_default();
        c.degrade.storage = s.storage.unwrap_or_default();
        c.degrade.auto = s.auto.unwrap_or_default();
    } else {
        // Checked here too, so a bad mark fails the reconcile before any
        // object changes; the marks themselves travel in the routing table.
        degrade_table(spec)?;
    }
    if let Some(r) = &spec.retention {
        set(&mut c.retention.max_events, r.max_events);
        set(
            &mut c.retention.max_age,
            duration("spec.retention.maxAge", r.max_age.as_ref())?,
        );
    }
    if let Some(d) = &spec.delivery {
        let dl = &mut c.delivery;
        set(
            &mut dl.heartbeat,
            duration("spec.delivery.heartbeat", d.heartbeat.as_ref())?,
        );
        set(
            &mut dl.retry,
            duration("spec.delivery.retry", d.retry.as_ref())?,
        );
        set(&mut dl.queue_size, d.queue_size.map(|n| n as usize));
        set(
            &mut dl.drain_window,
            duration("spec.delivery.drainWindow", d.drain_window.as_ref())?,
        );
        if let Some(t) = &d.tiers {
            let tiers = &mut dl.tiers;
            let tier = |field, v: Option<&String>| duration(field, v).map(|d| d.map(Some));
            set(
                &mut tiers.high,
                tier("spec.delivery.tiers.high", t.high.as_ref())?,
            );
            set(
                &mut tiers.normal,
                tier("spec.delivery.tiers.normal", t.normal.as_ref())?,
            );
            set(
                &mut tiers.low,
                tier("spec.delivery.tiers.low", t.low.as_ref())?,
            );
        }
    }
    if let Some(grants) = spec
        .auth
        .as_ref()
        .and_then(|a| a.certificate_grants.as_ref())
    {
        c.auth.certificate_grants = grants
            .iter()
            .map(|g| CertificateGrant {
                identity: g.identity.clone(),
                subscribe: g.subscribe.clone().unwrap_or_default(),
                publish: g.publish.clone().unwrap_or_default(),
            })
            .collect();
    }
    if spec.grpc_enabled() {
        c.protocols.grpc.enabled = true;
    }
    if let Some(port) = spec.http3_port() {
        c.protocols.http3.enabled = true;
        c.protocols.http3.advertise_port = Some(port);
    }
    if let Some(l) = &spec.limits {
        let lim = &mut c.limits;
        set(
            &mut lim.max_body_bytes,
            l.max_body_bytes.map(|n| n as usize),
        );
        set(
            &mut lim.max_topics_per_stream,
            l.max_topics_per_stream.map(|n| n as usize),
        );
        set(&mut lim.max_batch, l.max_batch.map(|n| n as usize));
        set(
            &mut lim.max_connections,
            l.max_connections.map(|n| n as usize),
        );
        set(&mut lim.accept_rate, l.accept_rate);
        set(&mut lim.publish_rate, l.publish_rate);
        set(
            &mut lim.max_streams_per_identity,
            l.max_streams_per_identity.map(|n| n as usize),
        );
        set(
            &mut lim.max_streams_per_address,
            l.max_streams_per_address.map(|n| n as usize),
        );
        if let Some(list) = &l.trusted_proxies {
            lim.trusted_proxies = list
                .iter()
                .map(|r| {
                    r.parse().map_err(|message| SpecError {
                        field: "spec.limits.trustedProxies",
                        message,
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        set(
            &mut lim.max_shadow_bytes,
            l.max_shadow_bytes.map(|n| n as usize),
        );
    }
    Ok(c)
}

/// Checks the fields the apiserver cannot validate.
pub fn validate(spec: &PushGatewaySpec) -> Result<(), SpecError> {
    gateway_config(spec, None).map(drop)
}

/// The drain window the gateway will use.
pub fn drain_window(spec: &PushGatewaySpec) -> Result<Duration, SpecError> {
    Ok(gateway_config(spec, None)?.delivery.drain_window)
}

/// Renders `pushgate.yaml` without routing (see [`render_with`]).
pub fn render(spec: &PushGatewaySpec) -> Result<String, SpecError> {
    render_with(spec, None)
}

/// Renders `pushgate.yaml`: only what differs from the gateway's defaults.
pub fn render_with(
    spec: &PushGatewaySpec,
    routing: Option<RoutingSettings>,
) -> Result<String, SpecError> {
    Ok(gateway_config(spec, routing)?.to_overlay_yaml())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DeliverySpec, RedisStore, SecretKeyRef, StoreSpec};

    #[test]
    fn client_limits_render_and_a_bad_proxy_range_names_its_field() {
        let spec = |proxies: &[&str]| PushGatewaySpec {
            limits: Some(crate::crd::LimitsSpec {
                max_streams_per_identity: Some(20),
                max_streams_per_address: Some(5),
                trusted_proxies: Some(proxies.iter().map(|p| p.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let yaml = render(&spec(&["10.0.0.0/8", "fd00::1"])).unwrap();
        assert!(
            yaml.contains(
                "limits:\n  max_streams_per_identity: 20\n  max_streams_per_address: 5\n  \
                 trusted_proxies:\n  - 10.0.0.0/8\n  - fd00::1/128\n"
            ),
            "{yaml}"
        );
        let err = render(&spec(&["10.0.0.0/8", "ingress"])).unwrap_err();
        assert_eq!(err.field, "spec.limits.trustedProxies");
        assert!(err.message.contains("\"ingress\""), "{err}");
    }

    #[test]
    fn minimal_spec_renders_only_fixed_keys() {
        let yaml = render(&PushGatewaySpec::default()).unwrap();
        assert_eq!(
            yaml,
            "listen: 0.0.0.0:8080\nmetrics_listen: 0.0.0.0:9090\n\
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
    fn delivery_tiers_reach_the_gateway_config() {
        let spec = PushGatewaySpec {
            delivery: Some(DeliverySpec {
                tiers: Some(crate::crd::TiersSpec {
                    high: Some("30s".into()),
                    low: Some("2d".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = gateway_config(&spec, None).unwrap();
        let t = &c.delivery.tiers;
        assert_eq!(t.high, Some(Duration::from_secs(30)));
        assert_eq!(
            t.normal,
            Some(Duration::from_secs(3600)),
            "unset keeps the default"
        );
        assert_eq!(t.low, Some(Duration::from_secs(2 * 86400)));
        let yaml = render(&spec).unwrap();
        assert!(
            yaml.contains("tiers:") && yaml.contains("high: 30s"),
            "{yaml}"
        );
        let bad = PushGatewaySpec {
            delivery: Some(DeliverySpec {
                tiers: Some(crate::crd::TiersSpec {
                    normal: Some("a while".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            render(&bad).unwrap_err().field,
            "spec.delivery.tiers.normal"
        );
    }

    #[test]
    fn degrade_marks_reach_the_config_and_bad_ones_name_the_field() {
        use crate::crd::{DegradeAutoSpec, DegradeSpec};
        let spec = |auto: DegradeAutoSpec| PushGatewaySpec {
            degrade: Some(DegradeSpec {
                auto: Some(auto),
                ..Default::default()
            }),
            ..Default::default()
        };
        let c = gateway_config(
            &spec(DegradeAutoSpec {
                store_p99_trip: Some("1s".into()),
                connections_trip: Some(0.9),
                ..Default::default()
            }),
            None,
        )
        .unwrap();
        assert_eq!(c.degrade.auto.store_p99_trip, Duration::from_secs(1));
        assert_eq!(c.degrade.auto.connections_trip, 0.9);
        let inverted = spec(DegradeAutoSpec {
            connections_reset: Some(0.99),
            ..Default::default()
        });
        assert_eq!(render(&inverted).unwrap_err().field, "spec.degrade.auto");
        let bad = spec(DegradeAutoSpec {
            window: Some("long".into()),
            ..Default::default()
        });
        assert_eq!(render(&bad).unwrap_err().field, "spec.degrade.auto.window");
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
