//! Where the routing table comes from: a file re-read when it changes, or a
//! ConfigMap watched through the Kubernetes API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use super::{Routing, RoutingTable};

use pushgate_contract::names::ROUTING_KEY as CONFIGMAP_KEY;

fn apply(routing: &Routing, table: RoutingTable, from: &str) {
    let moved = routing.apply(table);
    if moved > 0 {
        tracing::info!(moved, from, "closed streams whose bucket moved");
    }
}

fn load_text(routing: &Routing, text: &str, from: &str) {
    match RoutingTable::from_yaml(text) {
        Ok(t) => apply(routing, t, from),
        Err(e) => tracing::warn!(error = %e, from, "ignoring an invalid routing table"),
    }
}

fn read_table(path: &Path) -> anyhow::Result<RoutingTable> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("routing table {}: {e}", path.display()))?;
    RoutingTable::from_yaml(&text)
        .map_err(|e| anyhow::anyhow!("routing table {}: {e}", path.display()))
}

/// Loads the file now (an error stops startup), then re-reads it whenever it
/// changes; an invalid version keeps the table in use.
pub async fn watch_file(routing: Arc<Routing>, path: PathBuf) -> anyhow::Result<()> {
    apply(&routing, read_table(&path)?, "file");
    let file = path.clone();
    crate::ops::reload::spawn(
        "routing table",
        Arc::downgrade(&routing),
        vec![path],
        Duration::from_millis(500),
        move || read_table(&file),
        |routing: &Routing, table| apply(routing, table, "file"),
    );
    Ok(())
}

/// Watches `namespace/name` and applies every version of its `routing.yaml`;
/// waits (bounded) for the first one so early streams are routed right.
pub async fn watch_configmap(routing: Arc<Routing>, namespaced: &str) -> anyhow::Result<()> {
    let (ns, name) = namespaced
        .split_once('/')
        .ok_or_else(|| anyhow::anyhow!("routing.configmap must be namespace/name"))?;
    let client = Client::try_default().await?;
    let api: Api<ConfigMap> = Api::namespaced(client, ns);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut first_tx = Some(first_tx);
        let events = watcher(api, cfg).default_backoff().applied_objects();
        futures_util::pin_mut!(events);
        loop {
            match events.try_next().await {
                Ok(Some(cm)) => {
                    match cm.data.as_ref().and_then(|d| d.get(CONFIGMAP_KEY)) {
                        Some(text) => load_text(&routing, text, "configmap"),
                        None => tracing::warn!("routing ConfigMap has no {CONFIGMAP_KEY}"),
                    }
                    if let Some(tx) = first_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(None) => return,
                Err(e) => tracing::warn!(error = %e, "routing ConfigMap watch failed; retrying"),
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(10), first_rx)
        .await
        .is_err()
    {
        tracing::warn!("routing ConfigMap not seen yet; serving with weight 0 until it is");
    }
    Ok(())
}
