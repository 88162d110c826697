//! What each gateway pod's `auto` breakers say. The operator reads the
//! pods' own `pushgate_degraded{layer}` gauges from their metrics port (the
//! one Prometheus scrapes), so the status can show a tripped breaker while
//! the pods keep their read-only identity.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;

use crate::config::METRICS_PORT;

/// The layers in the order of [`PodBreakers::degraded`].
pub const LAYERS: [&str; 3] = ["connections", "events", "storage"];

/// Largest metrics page read from a pod; a bigger one is no answer.
const MAX_PAGE: usize = 4 << 20;

/// One pod's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodBreakers {
    /// The pod's name.
    pub pod: String,
    /// Per layer of [`LAYERS`], whether the pod has it degraded; `None`
    /// when the pod did not answer in time or its page had no gauge.
    pub degraded: Option<[bool; 3]>,
}

/// The `pushgate_degraded` gauges of a Prometheus text page; `None` unless
/// all three layers are on it.
pub fn parse(page: &str) -> Option<[bool; 3]> {
    let mut seen = [None; 3];
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("pushgate_degraded{layer=\"") else {
            continue;
        };
        let Some((layer, value)) = rest.split_once("\"}") else {
            continue;
        };
        if let (Some(i), Ok(v)) = (
            LAYERS.iter().position(|l| *l == layer),
            value.trim().parse::<f64>(),
        ) {
            seen[i] = Some(v != 0.0);
        }
    }
    Some([seen[0]?, seen[1]?, seen[2]?])
}

/// Asks every running gateway pod in `pods` at once, each within `timeout`.
/// Pods without an IP yet, or terminating, are left out.
pub async fn observe(pods: &[Pod], timeout: Duration) -> Vec<PodBreakers> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let asks = pods.iter().filter_map(|p| {
        let name = p.metadata.name.clone()?;
        if p.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let ip = p.status.as_ref()?.pod_ip.clone()?;
        let client = client.clone();
        Some(async move {
            let degraded = tokio::time::timeout(timeout, page(&client, &ip))
                .await
                .ok()
                .flatten()
                .and_then(|text| parse(&text));
            PodBreakers {
                pod: name,
                degraded,
            }
        })
    });
    let mut out = join_all(asks).await;
    out.sort_by(|a, b| a.pod.cmp(&b.pod));
    out
}

async fn page(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    ip: &str,
) -> Option<String> {
    // An IPv6 pod address needs brackets in a URI.
    let host = match ip.contains(':') {
        true => format!("[{ip}]"),
        false => ip.to_owned(),
    };
    let uri: http::Uri = format!("http://{host}:{METRICS_PORT}/metrics")
        .parse()
        .ok()?;
    let res = client.get(uri).await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    let body = Limited::new(res.into_body(), MAX_PAGE)
        .collect()
        .await
        .ok()?;
    String::from_utf8(body.to_bytes().to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_gauges_and_nothing_else() {
        let page = "# HELP pushgate_degraded 1 while a layer is degraded\n\
                    # TYPE pushgate_degraded gauge\n\
                    pushgate_degraded{layer=\"connections\"} 1\n\
                    pushgate_degraded{layer=\"events\"} 0\n\
                    pushgate_degraded{layer=\"storage\"} 0\n\
                    pushgate_degraded_other{layer=\"storage\"} 1\n\
                    pushgate_breaker_trips_total{layer=\"connections\"} 3\n";
        assert_eq!(parse(page), Some([true, false, false]));
        let partial = "pushgate_degraded{layer=\"connections\"} 1\n";
        assert_eq!(
            parse(partial),
            None,
            "a page without every layer says nothing"
        );
        assert_eq!(parse("garbage"), None);
    }
}
