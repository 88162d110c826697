//! Prometheus metrics, all prefixed `pushgate_`, in a registry per gateway instance.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    /// Open SSE streams, all protocols (the autoscaling and breaker signal).
    pub connections: IntGauge,
    /// Open streams by protocol (`protocol::Protocol::as_str`); they sum to `connections`.
    pub streams: IntGaugeVec,
    /// Streams accepted, by protocol.
    pub streams_opened_total: IntCounterVec,
    /// Streams ended by their credential (`auth::lifetime::Ended::as_str`).
    pub streams_ended_by_credential_total: IntCounterVec,
    /// Streams refused for now, by reason (`admission::RefuseReason::label`).
    pub streams_rejected_total: IntCounterVec,
    /// Events acknowledged to publishers (duplicates excluded).
    pub events_published_total: IntCounter,
    /// Events written to streams (live and replayed), by protocol.
    pub events_delivered_total: IntCounterVec,
    /// Events written from history on resume.
    pub events_replayed_total: IntCounter,
    /// Subscribers disconnected because their queue was full.
    pub slow_consumer_disconnects_total: IntCounter,
    /// Events queued for subscribers but not yet written, summed.
    pub subscriber_lag_events: IntGauge,
    /// How late the runtime's periodic probe tick fired (last sample).
    pub event_loop_lag_seconds: Gauge,
    /// Resumes by outcome (`exact` or `reset`).
    pub resume_total: IntCounterVec,
    /// Device acknowledgements stored.
    pub device_acks_total: IntCounter,
    /// Streams that resumed from their device's acknowledged position.
    pub device_resumes_total: IntCounter,
    /// Events written to device streams (the loss rate's denominator, with
    /// the expired-unacknowledged ones).
    pub device_events_delivered_total: IntCounter,
    /// Events delivered to device streams open here that their device has
    /// not acknowledged yet, summed.
    pub device_unacked_events: IntGauge,
    /// Events that expired before their device acknowledged them: the loss
    /// numerator, counted once per device and event when the device resumes.
    pub messages_expired_unacked_total: IntCounter,
    /// Expired events a replay skipped (announced by `event: expired`).
    pub events_expired_total: IntCounter,
    /// Time from a device's stream closing to its next stream resuming here.
    pub conn_recovery_seconds: Histogram,
    /// Shadow patches that changed a document, by side (`desired`, `reported`).
    pub shadow_patches_total: IntCounterVec,
    /// Events queued for subscribers, by their topic's backpressure policy.
    pub subscriber_queue_events: IntGaugeVec,
    /// Events a slow subscriber skipped under `keep-latest` or `drop-oldest`.
    pub events_skipped_total: IntCounterVec,
    /// 1 while a layer (`connections`, `events`, `storage`) is degraded.
    pub degraded: IntGaugeVec,
    /// Times an `auto` breaker tripped, by layer.
    pub breaker_trips_total: IntCounterVec,
    /// Time from the publish of the last event a resuming client had (its
    /// cursor's timestamp) to the resume: how long it went without events.
    pub reconnect_gap_seconds: Histogram,
    /// Time to make a publish durable.
    pub publish_duration_seconds: Histogram,
    /// Failed store operations.
    pub store_errors_total: IntCounter,
    /// Bytes allocated on the heap (counting allocator of the `pushgate` binary).
    pub heap_bytes: IntGauge,
    /// Streams served by this pod, labelled with its track.
    pub streams_by_track: IntGaugeVec,
    /// Streams this pod forwards to the other track.
    pub proxied_streams: IntGauge,
    /// Streams closed because a routing change moved their bucket.
    pub streams_moved_total: IntCounter,
    /// Open TCP connections, by listener (`api`, `ops`).
    pub tcp_connections: IntGaugeVec,
    /// The cap on open TCP connections, by listener.
    pub tcp_connection_limit: IntGaugeVec,
    /// TCP connections closed by the edge, by reason.
    pub tcp_connections_closed_total: IntCounterVec,
    /// Open QUIC connections (HTTP/3).
    pub quic_connections: IntGauge,
    /// The cap on open QUIC connections.
    pub quic_connection_limit: IntGauge,
    /// QUIC connections refused or closed by the HTTP/3 listener, by reason.
    pub quic_connections_closed_total: IntCounterVec,
    /// The QUIC socket's buffers as the kernel granted them, by direction.
    pub quic_socket_buffer_bytes: IntGaugeVec,
    /// Requests refused by a limit, by the limit's layer ([`LimitLayer`]).
    pub limit_refusals_total: IntCounterVec,
}

/// The layers of limits a request can be refused at, from the socket in:
/// the label of `limit_refusals_total{layer}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitLayer {
    /// The API port's open TCP connections.
    Tcp,
    /// The process's streams: `max_connections` and `accept_rate`.
    Streams,
    /// Open streams of one identity (`max_streams_per_identity`).
    IdentityStreams,
    /// Open streams of one client address (`max_streams_per_address`).
    AddressStreams,
    /// Publishes of one identity (`publish_rate`).
    IdentityPublish,
    /// Publishes of one client address before auth (`publish_rate`).
    AddressPublish,
}

impl LimitLayer {
    /// Every layer, each exported at zero from the start.
    pub const ALL: [LimitLayer; 6] = [
        LimitLayer::Tcp,
        LimitLayer::Streams,
        LimitLayer::IdentityStreams,
        LimitLayer::AddressStreams,
        LimitLayer::IdentityPublish,
        LimitLayer::AddressPublish,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitLayer::Tcp => "tcp",
            LimitLayer::Streams => "streams",
            LimitLayer::IdentityStreams => "identity_streams",
            LimitLayer::AddressStreams => "address_streams",
            LimitLayer::IdentityPublish => "identity_publish",
            LimitLayer::AddressPublish => "address_publish",
        }
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    r.register(Box::new(m.clone()))
        .expect("metric names are unique");
    m
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Arc<Metrics> {
        let r = Registry::new_custom(Some("pushgate".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str| {
            register(&r, IntCounter::new(name, help).expect("valid metric"))
        };
        let gauge =
            |name: &str, help: &str| register(&r, IntGauge::new(name, help).expect("valid metric"));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            register(
                &r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                    .expect("valid metric"),
            )
        };
        let gauge_vec = |name: &str, help: &str, label: &str| {
            register(
                &r,
                IntGaugeVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            register(
                &r,
                IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric"),
            )
        };
        let latency = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        ];
        let gaps = vec![
            0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
        ];
        let m = Metrics {
            connections: gauge("connections", "Open SSE streams, all protocols"),
            streams: gauge_vec("streams", "Open streams, by protocol", "protocol"),
            streams_opened_total: counter_vec("streams_opened_total", "Streams accepted, by protocol", "protocol"),
            streams_rejected_total: counter_vec("streams_rejected_total", "SSE streams refused, by reason", "reason"),
            events_published_total: counter(
                "events_published_total",
                "Events acknowledged to publishers",
            ),
            events_delivered_total: counter_vec(
                "events_delivered_total",
                "Events written to streams, live or replayed, by protocol",
                "protocol",
            ),
            events_replayed_total: counter(
                "events_replayed_total",
                "Events written from history on resume",
            ),
            slow_consumer_disconnects_total: counter(
                "slow_consumer_disconnects_total",
                "Subscribers disconnected because their queue was full",
            ),
            subscriber_lag_events: gauge(
                "subscriber_lag_events",
                "Events queued for subscribers but not yet written, summed",
            ),
            event_loop_lag_seconds: register(
                &r,
                Gauge::new(
                    "event_loop_lag_seconds",
                    "How late the async runtime's periodic probe tick fired",
                )
                .expect("valid metric"),
            ),
            resume_total: counter_vec("resume_total", "Stream resumes by outcome", "outcome"),
            device_acks_total: counter("device_acks_total", "Device acknowledgements stored"),
            device_resumes_total: counter(
                "device_resumes_total",
                "Streams without Last-Event-ID that resumed from their device's acknowledged position",
            ),
            device_events_delivered_total: counter(
                "device_events_delivered_total",
                "Events written to device streams",
            ),
            device_unacked_events: gauge(
                "device_unacked_events",
                "Events delivered to device streams open here that their device has not acknowledged, summed",
            ),
            messages_expired_unacked_total: counter(
                "messages_expired_unacked_total",
                "Events that expired before their device acknowledged them (the loss numerator)",
            ),
            events_expired_total: counter(
                "events_expired_total",
                "Expired events skipped by replays and announced with event: expired",
            ),
            conn_recovery_seconds: histogram(
                "conn_recovery_seconds",
                "Time from a device's stream closing to its next stream resuming",
                vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0],
            ),
            subscriber_queue_events: gauge_vec(
                "subscriber_queue_events",
                "Events queued for subscribers, by backpressure policy",
                "policy",
            ),
            events_skipped_total: counter_vec(
                "events_skipped_total",
                "Events slow subscribers skipped by backpressure policy (announced with event: skipped)",
                "policy",
            ),
            degraded: gauge_vec("degraded", "1 while a layer is degraded", "layer"),
            breaker_trips_total: counter_vec(
                "breaker_trips_total",
                "Times an auto breaker tripped, by layer",
                "layer",
            ),
            shadow_patches_total: counter_vec(
                "shadow_patches_total",
                "Device shadow patches that changed a document, by side",
                "side",
            ),
            reconnect_gap_seconds: histogram(
                "reconnect_gap_seconds",
                "Time from the publish of the last event a resuming client had (its cursor's timestamp) to its resume",
                gaps,
            ),
            publish_duration_seconds: histogram(
                "publish_duration_seconds",
                "Time to make a publish durable",
                latency,
            ),
            store_errors_total: counter("store_errors_total", "Failed store operations"),
            heap_bytes: gauge("heap_bytes", "Bytes allocated on the heap"),
            streams_by_track: gauge_vec(
                "streams_by_track",
                "Streams served by this pod, by track",
                "track",
            ),
            proxied_streams: gauge("proxied_streams", "Streams forwarded to the other track"),
            streams_moved_total: counter(
                "streams_moved_total",
                "Streams closed because a routing change moved their bucket",
            ),
            tcp_connections: gauge_vec(
                "tcp_connections",
                "Open TCP connections, by listener",
                "listener",
            ),
            tcp_connection_limit: gauge_vec(
                "tcp_connection_limit",
                "Cap on open TCP connections, by listener",
                "listener",
            ),
            tcp_connections_closed_total: counter_vec("tcp_connections_closed_total", "TCP connections closed by the gateway's edge, by reason", "reason"),
            quic_connections: gauge("quic_connections", "Open QUIC (HTTP/3) connections"),
            quic_connection_limit: gauge("quic_connection_limit", "Cap on open QUIC connections"),
            quic_connections_closed_total: counter_vec(
                "quic_connections_closed_total",
                "QUIC connections refused or closed by the HTTP/3 listener, by reason",
                "reason",
            ),
            quic_socket_buffer_bytes: gauge_vec(
                "quic_socket_buffer_bytes",
                "Buffers of the QUIC (HTTP/3) UDP socket as the kernel granted them (Linux reports twice the usable size), by direction: recv, send",
                "direction",
            ),
            limit_refusals_total: counter_vec(
                "limit_refusals_total",
                "Requests refused by a limit, by layer: tcp, streams (per process), identity_streams, address_streams, identity_publish, address_publish",
                "layer",
            ),
            streams_ended_by_credential_total: counter_vec(
                "streams_ended_by_credential_total",
                "Streams ended because their token expired, its key was removed or the client certificate expired",
                "reason",
            ),
            registry: r,
        };
        for p in crate::config::Backpressure::ALL {
            m.subscriber_queue_events.with_label_values(&[p.as_str()]);
            m.events_skipped_total.with_label_values(&[p.as_str()]);
        }
        for p in crate::core::protocol::Protocol::ALL {
            m.streams.with_label_values(&[p.as_str()]);
            m.streams_opened_total.with_label_values(&[p.as_str()]);
            m.events_delivered_total.with_label_values(&[p.as_str()]);
        }
        for layer in LimitLayer::ALL {
            m.limit_refusals_total.with_label_values(&[layer.as_str()]);
        }
        // Every reason is exported from the start, at zero.
        for why in crate::auth::lifetime::Ended::ALL {
            m.streams_ended_by_credential_total
                .with_label_values(&[why.as_str()]);
        }
        Arc::new(m)
    }

    /// The handles the connection edge updates.
    pub fn edge(&self) -> crate::edges::tcp::EdgeMetrics {
        let by = |v: &IntGaugeVec| ["api", "ops"].map(|l| v.with_label_values(&[l]));
        crate::edges::tcp::EdgeMetrics {
            open: by(&self.tcp_connections),
            cap: by(&self.tcp_connection_limit),
            closed: self.tcp_connections_closed_total.clone(),
            refused: self.refused(LimitLayer::Tcp),
        }
    }

    /// The counter of refusals at `layer`.
    pub fn refused(&self, layer: LimitLayer) -> IntCounter {
        self.limit_refusals_total
            .with_label_values(&[layer.as_str()])
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.heap_bytes
            .set(crate::ops::alloc::allocated_bytes() as i64);
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }

    /// Samples how late a periodic tick fires, until the process ends.
    pub async fn probe_event_loop(self: Arc<Self>, period: Duration) {
        let mut next = tokio::time::Instant::now() + period;
        loop {
            tokio::time::sleep_until(next).await;
            let late = tokio::time::Instant::now().saturating_duration_since(next);
            self.event_loop_lag_seconds.set(late.as_secs_f64());
            next = tokio::time::Instant::now() + period;
        }
    }
}
