//! The reconcile loop: desired objects → server-side apply → status + Events.

use crate::breakers::{self, PodBreakers};
use crate::build::keda::ScaledObject;
use crate::build::plan::{self, Change, Kind, Owned, Weight};
use crate::build::{self, routing, Desired, Track, MANAGER};
use crate::config::SpecError;
use crate::crd::PushGateway;
use crate::metrics::Metrics;
use crate::status::{self, Failure};
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, ObjectReference, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{predicates, watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Label put on every owned object; also narrows the operator's watches.
const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=pushgate-operator";
/// Periodic resync of healthy objects.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon an unfinished rollout is looked at again.
const ROLLOUT_RECHECK: Duration = Duration::from_secs(10);
/// How often the pods' breakers are read while a layer is `auto` (default).
pub const DEFAULT_BREAKER_POLL: Duration = Duration::from_secs(5);
/// How long one pod may take to show its metrics page.
const BREAKER_TIMEOUT: Duration = Duration::from_secs(2);
/// First and largest retry delay after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec passed the CRD schema but cannot be rendered.
    #[error("invalid spec: {0}")]
    Spec(#[from] SpecError),
    /// An API call failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The API error.
        source: kube::Error,
    },
}

impl Error {
    /// CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Spec(_) => "InvalidSpec",
            Error::Kube { .. } => "ApplyFailed",
        }
    }
}

/// Shared state of all reconciles.
pub struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Metrics,
    failures: Mutex<HashMap<ObjectRef<PushGateway>, u32>>,
    breaker_poll: Duration,
}

impl Context {
    /// A context publishing Events as `pushgate-operator` / `instance`.
    pub fn new(client: Client, metrics: Metrics, instance: String) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            failures: Mutex::default(),
            breaker_poll: DEFAULT_BREAKER_POLL,
        }
    }

    /// How often the pods' `auto` breakers are read while a layer is `auto`.
    pub fn with_breaker_poll(mut self, every: Duration) -> Self {
        self.breaker_poll = every;
        self
    }

    /// Publishes an Event on `pgw`. `related` names the child concerned; the
    /// recorder folds events with equal (reason, action, related) into one
    /// series, so without it every child's creation would collapse into one.
    async fn event(
        &self,
        pgw: &PushGateway,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
        related: Option<ObjectReference>,
    ) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: related,
        };
        if let Err(e) = self.recorder.publish(&ev, &pgw.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing event failed");
        }
    }
}

fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Applies one object with the operator's field manager and reports
/// creation or change as an Event. Returns the object as stored.
async fn apply<K>(ctx: &Context, pgw: &PushGateway, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let ns = pgw.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
    let name = obj.name_any();
    let what = format!("{} {name}", K::kind(&()));
    let before = api
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading {what}")))?
        .and_then(|o| o.resource_version());
    let params = PatchParams::apply(MANAGER).force();
    let after = api
        .patch(&name, &params, &Patch::Apply(obj))
        .await
        .map_err(kube_err(format!("applying {what}")))?;
    let related = Some(after.object_ref(&()));
    match before {
        None => {
            let note = format!("created {what}");
            ctx.event(pgw, EventType::Normal, "Created", "Apply", note, related)
                .await
        }
        Some(rv) if after.resource_version().as_deref() != Some(rv.as_str()) => {
            let note = format!("updated {what}");
            ctx.event(pgw, EventType::Normal, "Updated", "Apply", note, related)
                .await
        }
        Some(_) => {}
    }
    Ok(after)
}

/// The degrade switches in the routing table as stored (`None` when there
/// is none yet, or it cannot be read: then no switch Event is due).
async fn degrade_switches(
    ctx: &Context,
    pgw: &PushGateway,
) -> Option<pushgate_contract::degrade::Switches> {
    let api: Api<ConfigMap> =
        Api::namespaced(ctx.client.clone(), &pgw.namespace().unwrap_or_default());
    let cm = api.get_opt(&routing::table_name(pgw)).await.ok()??;
    let yaml = cm.data?.remove(routing::ROUTING_KEY)?;
    Some(
        pushgate_contract::routing::RoutingTable::from_yaml(&yaml)
            .ok()?
            .degrade,
    )
}

/// `connections=on, events=auto, storage=off` (unset layers are off).
fn describe(s: &pushgate_contract::degrade::Switches) -> String {
    [
        ("connections", s.connections),
        ("events", s.events),
        ("storage", s.storage),
    ]
    .iter()
    .map(|(l, v)| format!("{l}={}", v.unwrap_or_default().as_str()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Creates `secret` unless a Secret of that name exists. Never reads or
/// overwrites one: the operator holds no `get` on Secrets, and a token the
/// pods already share must stay as it is.
async fn create_secret(ctx: &Context, pgw: &PushGateway, secret: &Secret) -> Result<(), Error> {
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &pgw.namespace().unwrap_or_default());
    let what = format!("Secret {}", secret.name_any());
    match api.create(&PostParams::default(), secret).await {
        Ok(created) => {
            let related = Some(created.object_ref(&()));
            let note = format!("created {what}");
            ctx.event(pgw, EventType::Normal, "Created", "Apply", note, related)
                .await;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(kube_err(format!("creating {what}"))(e)),
    }
}

/// Deletes an object this operator owns but no longer wants (e.g. the HPA
/// after autoscaling was removed).
async fn remove<K>(ctx: &Context, pgw: &PushGateway, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &pgw.namespace().unwrap_or_default());
    let what = format!("{} {name}", K::kind(&()));
    let Some(obj) = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading {what}")))?
    else {
        return Ok(());
    };
    let ours = obj
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == pgw.uid().as_ref());
    if ours {
        api.delete(name, &DeleteParams::default())
            .await
            .map_err(kube_err(format!("deleting {what}")))?;
        ctx.event(
            pgw,
            EventType::Normal,
            "Deleted",
            "Delete",
            format!("deleted {what}"),
            Some(obj.object_ref(&())),
        )
        .await;
    }
    Ok(())
}

/// The Deployments as stored after a successful apply.
struct Applied {
    stable: Deployment,
    /// `Some` while `spec.canary` is set: the canary Deployment and the
    /// weight written to the routing table.
    canary: Option<(Deployment, i32)>,
}

/// Applies one owned object.
async fn apply_owned(
    ctx: &Context,
    pgw: &PushGateway,
    o: &Owned,
) -> Result<Option<Deployment>, Error> {
    match o {
        Owned::ConfigMap(x) => apply(ctx, pgw, x).await.map(drop)?,
        Owned::Deployment(x) => return apply(ctx, pgw, x.as_ref()).await.map(Some),
        Owned::Service(x) => apply(ctx, pgw, x).await.map(drop)?,
        Owned::Pdb(x) => apply(ctx, pgw, x).await.map(drop)?,
        Owned::Pvc(x) => apply(ctx, pgw, x).await.map(drop)?,
        Owned::Hpa(x) => apply(ctx, pgw, x.as_ref()).await.map(drop)?,
        Owned::ScaledObject(x) => apply(ctx, pgw, x.as_ref()).await.map(drop)?,
        Owned::ServiceAccount(x) => apply(ctx, pgw, x).await.map(drop)?,
        Owned::Role(x) => apply(ctx, pgw, x).await.map(drop)?,
        Owned::RoleBinding(x) => apply(ctx, pgw, x).await.map(drop)?,
    }
    Ok(None)
}

/// Deletes one owned object, if it is there and ours.
async fn delete_owned(
    ctx: &Context,
    pgw: &PushGateway,
    kind: Kind,
    name: &str,
) -> Result<(), Error> {
    match kind {
        Kind::ConfigMap => remove::<ConfigMap>(ctx, pgw, name).await,
        Kind::Deployment => remove::<Deployment>(ctx, pgw, name).await,
        Kind::Service => remove::<Service>(ctx, pgw, name).await,
        Kind::Pdb => remove::<PodDisruptionBudget>(ctx, pgw, name).await,
        Kind::Pvc => remove::<PersistentVolumeClaim>(ctx, pgw, name).await,
        Kind::Hpa => remove::<HorizontalPodAutoscaler>(ctx, pgw, name).await,
        // Without KEDA's CRD there is no ScaledObject to delete: the API
        // answers 404 for the whole resource type.
        Kind::ScaledObject => match remove::<ScaledObject>(ctx, pgw, name).await {
            Err(Error::Kube {
                source: kube::Error::Api(e),
                ..
            }) if e.code == 404 => Ok(()),
            r => r,
        },
        Kind::ServiceAccount => remove::<ServiceAccount>(ctx, pgw, name).await,
        Kind::Role => remove::<Role>(ctx, pgw, name).await,
        Kind::RoleBinding => remove::<RoleBinding>(ctx, pgw, name).await,
    }
}

/// Carries out the planned writes in order.
async fn apply_all(ctx: &Context, pgw: &PushGateway, d: &Desired) -> Result<Applied, Error> {
    let stable_name = build::track_name(pgw, Track::Stable);
    let (mut stable, mut canary_dep, mut weight) = (None, None, None);
    for change in plan::changes(pgw, d) {
        match &change {
            Change::Apply(o) => {
                if let Some(dep) = apply_owned(ctx, pgw, o).await? {
                    if dep.name_any() == stable_name {
                        stable = Some(dep);
                    } else {
                        canary_dep = Some(dep);
                    }
                }
            }
            Change::Delete(kind, name) => delete_owned(ctx, pgw, *kind, name).await?,
            Change::CreateSecret(secret) => create_secret(ctx, pgw, secret).await?,
            Change::RoutingTable(w) => {
                // Streams go to the canary only once it has a ready pod to
                // serve them; until then (and whenever every canary pod is
                // down) the table holds weight 0 and stable serves everything.
                let ready = canary_dep
                    .as_ref()
                    .and_then(|c: &Deployment| c.status.as_ref())
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0);
                let w = match w {
                    Weight::Zero => 0,
                    Weight::CanaryReadiness => routing::effective_weight(pgw, ready),
                };
                let table = routing::table(pgw, w)?;
                let before = degrade_switches(ctx, pgw).await;
                apply(ctx, pgw, &table).await?;
                let after = crate::config::degrade_table(&pgw.spec)?;
                if before.is_some_and(|b| b != after) {
                    let marks = match before.is_some_and(|b| b.auto != after.auto) {
                        true => " (new auto marks)",
                        false => "",
                    };
                    let note = format!("degrade switches now {}{marks}", describe(&after));
                    let related = Some(table.object_ref(&()));
                    ctx.event(
                        pgw,
                        EventType::Normal,
                        "DegradeSwitched",
                        "Apply",
                        note,
                        related,
                    )
                    .await;
                }
                weight = Some(w);
            }
        }
    }
    Ok(Applied {
        stable: stable.expect("the plan always applies the stable Deployment"),
        canary: canary_dep.zip(weight.filter(|_| d.canary.is_some())),
    })
}

async fn write_status(
    ctx: &Context,
    pgw: &PushGateway,
    dep: Option<&Deployment>,
    canary: Option<status::CanaryObserved<'_>>,
    failure: Option<&Failure>,
    breakers: &[PodBreakers],
) -> Result<(), Error> {
    let api: Api<PushGateway> =
        Api::namespaced(ctx.client.clone(), &pgw.namespace().unwrap_or_default());
    let now = Timestamp::now().to_string();
    let status = status::compute(pgw, dep, canary, failure, breakers, &now);
    if pgw.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let prev = pgw.status.as_ref().map(|s| s.conditions.as_slice());
    for (reason, c) in status::breaker_changes(prev.unwrap_or_default(), &status.conditions) {
        let kind = match reason {
            "BreakerTripped" => EventType::Warning,
            _ => EventType::Normal,
        };
        ctx.event(pgw, kind, reason, "Observe", c.message.clone(), None)
            .await;
    }
    let patch = serde_json::json!({
        "apiVersion": PushGateway::api_version(&()),
        "kind": PushGateway::kind(&()),
        "status": status,
    });
    api.patch_status(
        &pgw.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(kube_err("writing status"))?;
    Ok(())
}

/// Reconciles; `Ok(true)` once every gateway pod is rolled out and ready.
async fn reconcile_inner(pgw: &PushGateway, ctx: &Context) -> Result<bool, Error> {
    let result = match build::desired(pgw) {
        Ok(d) => apply_all(ctx, pgw, &d).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(a) => {
            let canary = a.canary.as_ref().map(|(d, w)| status::CanaryObserved {
                deployment: Some(d),
                weight: *w,
            });
            let settled = status::rolled_out(Some(&a.stable))
                && a.canary
                    .as_ref()
                    .is_none_or(|(d, _)| status::rolled_out(Some(d)));
            // Everything applied, but a pod may still never start (a bad
            // image, a crash loop): that is a failure too, with its reason.
            // With an `auto` layer the pods are asked for their breakers.
            let auto = any_auto(pgw);
            let pods = match settled && !auto {
                true => None,
                false => gateway_pods(ctx, pgw).await,
            };
            let stuck = pods
                .as_deref()
                .filter(|_| !settled)
                .and_then(status::stuck_pod);
            let breakers = match (auto, &pods) {
                (true, Some(p)) => breakers::observe(p, BREAKER_TIMEOUT).await,
                _ => Vec::new(),
            };
            if let Some(f) = &stuck {
                ctx.event(
                    pgw,
                    EventType::Warning,
                    &f.reason,
                    "Rollout",
                    f.message.clone(),
                    None,
                )
                .await;
            }
            write_status(ctx, pgw, Some(&a.stable), canary, stuck.as_ref(), &breakers).await?;
            Ok(settled)
        }
        Err(err) => {
            let failure = Failure {
                reason: err.reason().into(),
                message: err.to_string(),
            };
            let dep = Api::<Deployment>::namespaced(
                ctx.client.clone(),
                &pgw.namespace().unwrap_or_default(),
            )
            .get_opt(&pgw.name_any())
            .await
            .ok()
            .flatten();
            ctx.event(
                pgw,
                EventType::Warning,
                err.reason(),
                "Reconcile",
                err.to_string(),
                None,
            )
            .await;
            let cdep = match pgw.spec.canary {
                Some(_) => Api::<Deployment>::namespaced(
                    ctx.client.clone(),
                    &pgw.namespace().unwrap_or_default(),
                )
                .get_opt(&build::track_name(pgw, Track::Canary))
                .await
                .ok()
                .flatten(),
                None => None,
            };
            // The table was not necessarily written: keep reporting the
            // weight last reported.
            let canary = pgw.spec.canary.as_ref().map(|_| status::CanaryObserved {
                deployment: cdep.as_ref(),
                weight: pgw
                    .status
                    .as_ref()
                    .and_then(|s| s.canary.as_ref())
                    .map_or(0, |c| c.weight),
            });
            // The pods are not asked on a failed reconcile: `auto` layers
            // read as armed until the next one succeeds.
            let written = write_status(ctx, pgw, dep.as_ref(), canary, Some(&failure), &[]);
            if let Err(e) = written.await {
                tracing::warn!(error = %e, "could not record failure in status");
            }
            Err(err)
        }
    }
}

/// The PushGateway's pods (both tracks). A failed list is no verdict:
/// `None`, and the next reconcile looks again.
async fn gateway_pods(ctx: &Context, pgw: &PushGateway) -> Option<Vec<Pod>> {
    let selector = build::instance_labels(pgw)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &pgw.namespace().unwrap_or_default());
    match pods.list(&ListParams::default().labels(&selector)).await {
        Ok(list) => Some(list.items),
        Err(e) => {
            tracing::debug!(error = %e, "cannot list gateway pods");
            None
        }
    }
}

/// Whether some degrade layer is left to the pods' breakers.
fn any_auto(pgw: &PushGateway) -> bool {
    let s = pgw.spec.degrade.clone().unwrap_or_default().switches();
    [s.connections, s.events, s.storage].contains(&Some(pushgate_contract::degrade::Switch::Auto))
}

/// Reconciles one PushGateway; called by the controller runtime.
pub async fn reconcile(pgw: Arc<PushGateway>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let span = tracing::info_span!(
        "reconcile",
        namespace = %pgw.namespace().unwrap_or_default(),
        name = %pgw.name_any(),
        generation = pgw.metadata.generation.unwrap_or_default(),
    );
    let result = reconcile_inner(&pgw, &ctx).instrument(span).await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics.reconciles.with_label_values(&[outcome]).inc();
    ctx.metrics
        .duration
        .with_label_values(&[outcome])
        .observe(start.elapsed().as_secs_f64());
    let settled = result?;
    ctx.failures
        .lock()
        .unwrap()
        .remove(&ObjectRef::from_obj(&*pgw));
    // Pod states (a pull that fails, a crash loop, a tripped breaker)
    // change no owned object: look again soon while the rollout is
    // unfinished or a layer is `auto`.
    let mut next = if settled { RESYNC } else { ROLLOUT_RECHECK };
    if any_auto(&pgw) {
        next = next.min(ctx.breaker_poll);
    }
    Ok(Action::requeue(next))
}

/// Delay before retry `n` (1-based): doubling from 1s, capped at 5 minutes.
pub fn backoff(n: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1u32 << n.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

/// Per-object exponential backoff after a failed reconcile.
pub fn error_policy(pgw: Arc<PushGateway>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.errors.with_label_values(&[err.reason()]).inc();
    let mut failures = ctx.failures.lock().unwrap();
    let n = failures.entry(ObjectRef::from_obj(&*pgw)).or_insert(0);
    *n += 1;
    let delay = backoff(*n);
    tracing::warn!(name = %pgw.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until a shutdown signal arrives.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
) -> anyhow::Result<()> {
    let ns = namespace.as_deref();
    let pgws: Api<PushGateway> = api(&client, ns);
    if let Err(e) = pgws.list(&ListParams::default().limit(1)).await {
        anyhow::bail!("cannot list PushGateways ({e}); is the CRD installed? kubectl apply -f crds/pushgate.dev_pushgateways.yaml");
    }
    let (reader, writer) = reflector::store();
    // Status writes do not bump metadata.generation, so filtering on it keeps
    // the operator's own status updates from triggering another reconcile.
    let stream = watcher(pgws, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let owned = || watcher::Config::default().labels(MANAGED_SELECTOR);
    Controller::for_stream(stream, reader)
        .owns(api::<ConfigMap>(&client, ns), owned())
        .owns(api::<Deployment>(&client, ns), owned())
        .owns(api::<Service>(&client, ns), owned())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned())
        .owns(api::<PersistentVolumeClaim>(&client, ns), owned())
        .owns(api::<HorizontalPodAutoscaler>(&client, ns), owned())
        .owns(api::<ServiceAccount>(&client, ns), owned())
        .owns(api::<Role>(&client, ns), owned())
        .owns(api::<RoleBinding>(&client, ns), owned())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "reconcile result");
            }
        })
        .await;
    Ok(())
}

#[cfg(test)]
mod mock_api;

#[cfg(test)]
mod tests {
    use super::backoff;
    use std::time::Duration;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(30), Duration::from_secs(300));
    }
}
