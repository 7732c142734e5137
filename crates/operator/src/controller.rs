//! Reconcile: validate -> build -> apply -> delete what is no longer produced -> status.
//!
//! Every write is a server-side apply under one field manager with forced conflicts, so
//! the operator owns exactly the fields it renders and an unchanged spec produces no
//! change in the cluster. The status is written only when it differs from the stored one:
//! writing it unconditionally would trigger a new watch event and a reconcile loop.
//!
//! Transitions a user should see in `kubectl describe` (created, scaled, pool removed,
//! invalid spec, paused) are also published as Kubernetes Events. They are derived from
//! the stored status, so a re-reconcile of an unchanged cluster publishes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::{build, client_url, managed_selector, FIELD_MANAGER};
use crate::crd::{NatsCluster, NatsClusterStatus, PoolStatus};
use crate::validate::{validate, ClusterPlan};

/// Periodic resync while everything is ready; watches on the children trigger earlier.
const RESYNC: Duration = Duration::from_secs(300);
/// Poll interval while pods are still becoming ready.
const PROGRESS_POLL: Duration = Duration::from_secs(15);
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("NatsCluster {0} has no namespace")]
    NoNamespace(String),
    #[error("applying {kind} {name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing StatefulSets: {0}")]
    List(#[source] kube::Error),
    #[error("deleting StatefulSet {name}: {source}")]
    Delete {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
}

impl Error {
    /// Fixed, low-cardinality label for the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoNamespace(_) => "no_namespace",
            Error::Apply { .. } => "apply",
            Error::List(_) => "list",
            Error::Delete { .. } => "delete",
            Error::Status(_) => "status",
        }
    }
}

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    reconciles: AtomicU64,
    reconcile_micros: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    fn observe(&self, elapsed: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.reconcile_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn error(&self, label: &'static str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(label).or_default() += 1;
        }
    }

    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let count = self.reconciles.load(Ordering::Relaxed);
        let seconds = self.reconcile_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let mut out = format!(
            "# HELP midge_operator_reconciles_total Reconciliations run.\n\
             # TYPE midge_operator_reconciles_total counter\n\
             midge_operator_reconciles_total {count}\n\
             # HELP midge_operator_reconcile_duration_seconds Time spent reconciling.\n\
             # TYPE midge_operator_reconcile_duration_seconds summary\n\
             midge_operator_reconcile_duration_seconds_sum {seconds}\n\
             midge_operator_reconcile_duration_seconds_count {count}\n\
             # HELP midge_operator_reconcile_errors_total Failed reconciliations by step.\n\
             # TYPE midge_operator_reconcile_errors_total counter\n"
        );
        if let Ok(errors) = self.errors.lock() {
            for (label, n) in errors.iter() {
                out.push_str(&format!(
                    "midge_operator_reconcile_errors_total{{step=\"{label}\"}} {n}\n"
                ));
            }
        }
        out
    }
}

/// State shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub metrics: Metrics,
    recorder: Recorder,
    /// Consecutive failures per object, for exponential back-off.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// `reporter` names this operator instance (its pod) in the Events it publishes.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Metrics::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for Context {
    // kube's Client has no Debug; the metrics are what is worth printing.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

fn object_key(nc: &NatsCluster) -> String {
    format!("{}/{}", nc.namespace().unwrap_or_default(), nc.name_any())
}

/// Reconciles one NatsCluster.
pub async fn reconcile(nc: Arc<NatsCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&nc, &ctx, Timestamp::now()).await;
    ctx.metrics.observe(started.elapsed());
    if result.is_ok() {
        if let Ok(mut failures) = ctx.failures.lock() {
            failures.remove(&object_key(&nc));
        }
    }
    result
}

/// Retries a failed reconcile with exponential back-off per object (5s, 10s, ... 5m), so a
/// broken API server or RBAC rule is not hammered.
pub fn error_policy(nc: Arc<NatsCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(error.metric_label());
    tracing::warn!(cluster = %object_key(&nc), %error, "reconcile failed");
    let attempt = match ctx.failures.lock() {
        Ok(mut failures) => {
            let n = failures.entry(object_key(&nc)).or_default();
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    Action::requeue(BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_MAX))
}

async fn reconcile_inner(nc: &NatsCluster, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    let name = nc.name_any();
    let ns = nc
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let client = &ctx.client;
    let current = nc.status.clone().unwrap_or_default();

    if nc.spec.paused {
        let status = paused_status(nc, &current, now);
        write_status(client, nc, &ns, &current, status).await?;
        if !has_reason(&current, "Progressing", "Paused") {
            let note = "spec.paused is set: changes are not applied until it is cleared";
            publish(ctx, nc, EventType::Normal, "Paused", "Pause", note.into()).await;
        }
        return Ok(Action::await_change());
    }

    let plan = match validate(nc) {
        Ok(plan) => plan,
        Err(invalid) => {
            tracing::info!(cluster = %object_key(nc), error = %invalid, "invalid spec");
            let message = invalid.to_string();
            let status = invalid_status(nc, &current, &message, now);
            write_status(client, nc, &ns, &current, status).await?;
            let known = current
                .conditions
                .iter()
                .any(|c| c.type_ == "Degraded" && c.status == "True" && c.message == message);
            if !known {
                publish(
                    ctx,
                    nc,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    message,
                )
                .await;
            }
            // Nothing can fix this but a new spec, and a spec change triggers a reconcile.
            return Ok(Action::await_change());
        }
    };

    let children = build(&plan, nc.controller_owner_ref(&()).as_ref());
    apply(client, &ns, &children.config_map).await?;
    apply(client, &ns, &children.headless_service).await?;
    apply(client, &ns, &children.client_service).await?;
    let mut applied_sets = Vec::with_capacity(children.stateful_sets.len());
    for sts in &children.stateful_sets {
        applied_sets.push(apply(client, &ns, sts).await?);
    }
    apply(client, &ns, &children.pod_disruption_budget).await?;
    delete_removed_pools(ctx, nc, &ns, &children.stateful_sets).await?;

    let status = running_status(nc, &plan, &current, &applied_sets, now);
    let ready = status.ready_replicas == status.replicas;
    let change = if current.pools.is_empty() {
        // No pool was ever recorded: this is the first time the objects were applied.
        Some((
            "Created",
            "Create",
            format!(
                "created {} servers in {} pools",
                status.replicas,
                status.pools.len()
            ),
        ))
    } else if current.replicas != status.replicas {
        Some((
            "Scaled",
            "Scale",
            format!(
                "scaled from {} to {} servers",
                current.replicas, status.replicas
            ),
        ))
    } else {
        None
    };
    write_status(client, nc, &ns, &current, status).await?;
    if let Some((reason, action, note)) = change {
        publish(ctx, nc, EventType::Normal, reason, action, note).await;
    }
    Ok(Action::requeue(if ready { RESYNC } else { PROGRESS_POLL }))
}

fn has_reason(status: &NatsClusterStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason)
}

/// Publishes an Event on the NatsCluster. Events only inform: failing to publish one is
/// logged and does not fail the reconcile, which would retry work that succeeded.
async fn publish(
    ctx: &Context,
    nc: &NatsCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &nc.object_ref(&())).await {
        tracing::warn!(cluster = %object_key(nc), %error, reason, "could not publish event");
    }
}

async fn apply<K>(client: &Client, ns: &str, object: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::Resource,
{
    let name = object.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: K::KIND,
        name,
        source,
    })
}

/// Deletes StatefulSets of pools that left the spec. Only the StatefulSets can become
/// orphans: every other child has one fixed name per cluster. Objects are matched by
/// label *and* owner uid, so a look-alike created by someone else is never touched.
async fn delete_removed_pools(
    ctx: &Context,
    nc: &NatsCluster,
    ns: &str,
    desired: &[StatefulSet],
) -> Result<(), Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), ns);
    let existing = api
        .list(&ListParams::default().labels(&managed_selector(&nc.name_any())))
        .await
        .map_err(Error::List)?;
    let uid = nc.uid();
    for sts in existing {
        let name = sts.name_any();
        let owned = sts
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref());
        let wanted = desired
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some(&name));
        if owned && !wanted {
            tracing::info!(cluster = %object_key(nc), statefulset = %name, "deleting removed pool");
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(|source| Error::Delete {
                    name: name.clone(),
                    source,
                })?;
            let note = format!("deleted StatefulSet {name}: its pool is no longer in the spec");
            publish(
                ctx,
                nc,
                EventType::Normal,
                "PoolRemoved",
                "DeletePool",
                note,
            )
            .await;
        }
    }
    Ok(())
}

async fn write_status(
    client: &Client,
    nc: &NatsCluster,
    ns: &str,
    current: &NatsClusterStatus,
    status: NatsClusterStatus,
) -> Result<(), Error> {
    if &status == current {
        return Ok(());
    }
    let api: Api<NatsCluster> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": NatsCluster::api_version(&()),
        "kind": NatsCluster::kind(&()),
        "status": status,
    });
    api.patch_status(
        &nc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Status)?;
    Ok(())
}

/// A condition in metav1.Condition shape; `lastTransitionTime` only moves when the
/// condition's status flips, so re-reconciling an unchanged cluster writes nothing.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Keeps a previous condition, e.g. `Ready` while reconciling is suspended: the running
/// servers are as ready as they were.
fn keep_or(previous: &[Condition], type_: &str, fallback: Condition) -> Condition {
    previous
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
        .unwrap_or(fallback)
}

fn running_status(
    nc: &NatsCluster,
    plan: &ClusterPlan,
    current: &NatsClusterStatus,
    applied: &[StatefulSet],
    now: Timestamp,
) -> NatsClusterStatus {
    let generation = nc.metadata.generation;
    let pools: Vec<PoolStatus> = plan
        .pools
        .iter()
        .zip(applied)
        .map(|(pool, sts)| PoolStatus {
            name: pool.name.clone(),
            replicas: pool.replicas,
            ready_replicas: sts
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0),
        })
        .collect();
    let replicas: i32 = pools.iter().map(|p| p.replicas).sum();
    let ready: i32 = pools.iter().map(|p| p.ready_replicas.min(p.replicas)).sum();
    let all_ready = ready == replicas;
    let prev = &current.conditions;
    let progress = format!("{ready}/{replicas} servers ready");
    NatsClusterStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        pools,
        client_url: Some(client_url(plan)),
        conditions: vec![
            condition(
                prev,
                "Ready",
                all_ready,
                if all_ready {
                    "AllServersReady"
                } else {
                    "ServersNotReady"
                },
                progress.clone(),
                generation,
                now,
            ),
            condition(
                prev,
                "Progressing",
                !all_ready,
                if all_ready { "Stable" } else { "RollingOut" },
                progress,
                generation,
                now,
            ),
            condition(
                prev,
                "Degraded",
                false,
                "AsExpected",
                String::new(),
                generation,
                now,
            ),
        ],
    }
}

fn invalid_status(
    nc: &NatsCluster,
    current: &NatsClusterStatus,
    reason: &str,
    now: Timestamp,
) -> NatsClusterStatus {
    let generation = nc.metadata.generation;
    let prev = &current.conditions;
    NatsClusterStatus {
        observed_generation: generation,
        conditions: vec![
            keep_or(
                prev,
                "Ready",
                condition(
                    prev,
                    "Ready",
                    false,
                    "InvalidSpec",
                    String::new(),
                    generation,
                    now,
                ),
            ),
            condition(
                prev,
                "Progressing",
                false,
                "InvalidSpec",
                "running objects are left unchanged until the spec is fixed".into(),
                generation,
                now,
            ),
            condition(
                prev,
                "Degraded",
                true,
                "InvalidSpec",
                reason.to_string(),
                generation,
                now,
            ),
        ],
        ..current.clone()
    }
}

fn paused_status(
    nc: &NatsCluster,
    current: &NatsClusterStatus,
    now: Timestamp,
) -> NatsClusterStatus {
    let generation = nc.metadata.generation;
    let prev = &current.conditions;
    NatsClusterStatus {
        observed_generation: generation,
        conditions: vec![
            keep_or(
                prev,
                "Ready",
                condition(
                    prev,
                    "Ready",
                    false,
                    "Paused",
                    String::new(),
                    generation,
                    now,
                ),
            ),
            condition(
                prev,
                "Progressing",
                false,
                "Paused",
                "spec.paused is set: nothing is applied".into(),
                generation,
                now,
            ),
            keep_or(
                prev,
                "Degraded",
                condition(
                    prev,
                    "Degraded",
                    false,
                    "Paused",
                    String::new(),
                    generation,
                    now,
                ),
            ),
        ],
        ..current.clone()
    }
}

/// Scenario tests against a scripted API server.
///
/// No real API server can run here (no container runtime, no etcd), and the point of these
/// tests is the exact conversation with one: `tower_test::mock` stands in for the HTTP
/// transport, each scenario lists the requests the reconciler must make (method, path,
/// key parts of the body) with the answers, and a missing or extra request fails the test.
#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{json, Value};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    const NOW: &str = "2026-01-01T00:00:00Z";
    const UID: &str = "0a1b2c";

    fn now() -> Timestamp {
        NOW.parse().expect("valid timestamp")
    }

    fn cluster(spec: &str) -> NatsCluster {
        let yaml = format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: demo, namespace: ns, uid: {UID}, generation: 2}}\nspec:\n{spec}"
        );
        serde_yaml::from_str(&yaml).expect("test manifest parses")
    }

    fn context() -> (Arc<Context>, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let reporter = Reporter {
            controller: "midge-operator".into(),
            instance: Some("midge-operator-0".into()),
        };
        (
            Arc::new(Context::new(Client::new(service, "ns"), reporter)),
            handle,
        )
    }

    /// The status the reconciler computes for `nc` when `ready` servers per pool are ready.
    fn settled(nc: &NatsCluster, ready: i32) -> NatsClusterStatus {
        let plan = validate(nc).expect("valid");
        let sets: Vec<StatefulSet> = plan.pools.iter().map(|_| sts_with_ready(ready)).collect();
        running_status(nc, &plan, &NatsClusterStatus::default(), &sets, now())
    }

    fn sts_with_ready(ready: i32) -> StatefulSet {
        serde_json::from_value(json!({"spec": {"selector": {}, "template": {}}, "status": {"replicas": ready, "readyReplicas": ready}}))
            .expect("statefulset")
    }

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Value) {
        let bytes = serde_json::to_vec(&body).expect("json");
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(bytes))
                .expect("response"),
        );
    }

    /// Next request: checks method and path (query included) and returns the JSON body.
    async fn expect(
        handle: &mut Handle,
        method: &str,
        uri: &str,
    ) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(
            request.method().as_str(),
            method,
            "method of {}",
            request.uri()
        );
        assert_eq!(request.uri().to_string(), uri);
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("json body")
        };
        (body, send)
    }

    const APPLY: &str = "?&force=true&fieldManager=midge-operator";

    /// Answers the five applies, echoing each body (StatefulSets with `ready` ready pods).
    async fn expect_applies(handle: &mut Handle, sets: &[&str], ready: i32) -> Vec<Value> {
        let mut bodies = Vec::new();
        let mut paths = vec![
            "/api/v1/namespaces/ns/configmaps/demo-config".to_string(),
            "/api/v1/namespaces/ns/services/demo-headless".to_string(),
            "/api/v1/namespaces/ns/services/demo".to_string(),
        ];
        paths.extend(
            sets.iter()
                .map(|s| format!("/apis/apps/v1/namespaces/ns/statefulsets/{s}")),
        );
        paths.push("/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo".to_string());
        for path in paths {
            let (mut body, send) = expect(handle, "PATCH", &format!("{path}{APPLY}")).await;
            assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], UID, "{path}");
            if path.contains("statefulsets") {
                body["status"] = json!({"replicas": ready, "readyReplicas": ready});
            }
            respond(send, 200, body.clone());
            bodies.push(body);
        }
        bodies
    }

    async fn expect_list(handle: &mut Handle, items: Vec<Value>) {
        let (_, send) = expect(
            handle,
            "GET",
            "/apis/apps/v1/namespaces/ns/statefulsets?&labelSelector=app.kubernetes.io%2Fname%3Dmidge%2Capp.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fmanaged-by%3Dmidge-operator",
        )
        .await;
        respond(
            send,
            200,
            json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": items}),
        );
    }

    async fn expect_status(handle: &mut Handle, nc: &NatsCluster) -> Value {
        let (body, send) = expect(
            handle,
            "PATCH",
            &format!("/apis/midge.dev/v1alpha1/namespaces/ns/natsclusters/demo/status{APPLY}"),
        )
        .await;
        let mut answer = serde_json::to_value(nc).expect("json");
        answer["status"] = body["status"].clone();
        respond(send, 200, answer);
        body["status"].clone()
    }

    /// Answers the next request, which must publish an Event on the cluster; returns it.
    async fn expect_event(handle: &mut Handle, reason: &str) -> Value {
        let (body, send) = expect(
            handle,
            "POST",
            "/apis/events.k8s.io/v1/namespaces/ns/events?",
        )
        .await;
        assert_eq!(body["reason"], reason, "{body}");
        assert_eq!(body["regarding"]["kind"], "NatsCluster");
        assert_eq!(body["regarding"]["name"], "demo");
        assert_eq!(body["regarding"]["uid"], UID);
        assert_eq!(body["reportingController"], "midge-operator");
        assert_eq!(body["reportingInstance"], "midge-operator-0");
        respond(send, 201, body.clone());
        body
    }

    fn owned_sts(name: &str, uid: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "ownerReferences": [{
                "apiVersion": "midge.dev/v1alpha1", "kind": "NatsCluster", "name": "demo",
                "uid": uid, "controller": true}]},
            "spec": {"selector": {}, "template": {}}
        })
    }

    fn condition_of<'a>(status: &'a Value, type_: &str) -> &'a Value {
        status["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == type_))
            .expect("condition present")
    }

    /// Runs one reconcile against the script, then checks the script saw no extra request.
    async fn run<F>(nc: NatsCluster, script: impl FnOnce(Handle) -> F) -> Result<Action, Error>
    where
        F: std::future::Future<Output = Handle> + Send + 'static,
    {
        let (ctx, handle) = context();
        let server = tokio::spawn(script(handle));
        // An unscripted request is never answered, so the reconcile would wait forever:
        // the timeout turns that into a failure that names the request.
        let result =
            tokio::time::timeout(Duration::from_secs(5), reconcile_inner(&nc, &ctx, now())).await;
        let mut handle = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("script finished")
            .expect("script did not panic");
        drop(ctx);
        let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        if let Ok(Some((request, _))) = extra {
            panic!(
                "unexpected extra request: {} {}",
                request.method(),
                request.uri()
            );
        }
        let Ok(result) = result else {
            panic!("reconcile stalled on a request the script did not answer");
        };
        result
    }

    #[tokio::test]
    async fn create_applies_everything_and_reports_progress() {
        let nc = cluster("  replicas: 3\n");
        let status_nc = nc.clone();
        let action = run(nc, |mut h| async move {
            let bodies = expect_applies(&mut h, &["demo-default"], 0).await;
            assert_eq!(
                bodies[0]["data"]["midge.conf"]
                    .as_str()
                    .map(|c| c.matches("nats://").count()),
                Some(3)
            );
            assert_eq!(bodies[3]["spec"]["replicas"], 3);
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            let status = expect_status(&mut h, &status_nc).await;
            assert_eq!(status["observedGeneration"], 2);
            assert_eq!(status["replicas"], 3);
            assert_eq!(status["readyReplicas"], 0);
            assert_eq!(status["clientUrl"], "nats://demo.ns.svc.cluster.local:4222");
            assert_eq!(
                status["pools"],
                json!([{"name": "default", "replicas": 3, "readyReplicas": 0}])
            );
            assert_eq!(condition_of(&status, "Ready")["status"], "False");
            assert_eq!(condition_of(&status, "Progressing")["status"], "True");
            assert_eq!(condition_of(&status, "Degraded")["status"], "False");
            assert_eq!(condition_of(&status, "Ready")["lastTransitionTime"], NOW);
            let event = expect_event(&mut h, "Created").await;
            assert_eq!(event["type"], "Normal");
            assert_eq!(event["note"], "created 3 servers in 1 pools");
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(PROGRESS_POLL));
    }

    #[tokio::test]
    async fn unchanged_cluster_writes_no_status() {
        let mut nc = cluster("  replicas: 3\n");
        nc.status = Some(settled(&nc, 3));
        let action = run(nc, |mut h| async move {
            expect_applies(&mut h, &["demo-default"], 3).await;
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(RESYNC));
    }

    #[tokio::test]
    async fn scale_up_rerenders_routes_and_status() {
        let mut nc = cluster("  replicas: 5\n");
        nc.status = Some(settled(&cluster("  replicas: 3\n"), 3));
        let status_nc = nc.clone();
        run(nc, |mut h| async move {
            let bodies = expect_applies(&mut h, &["demo-default"], 3).await;
            let conf = bodies[0]["data"]["midge.conf"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                conf.contains("nats://demo-default-4.demo-headless.ns.svc.cluster.local:6222"),
                "{conf}"
            );
            assert_eq!(bodies[3]["spec"]["replicas"], 5);
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            let status = expect_status(&mut h, &status_nc).await;
            assert_eq!(status["replicas"], 5);
            assert_eq!(condition_of(&status, "Ready")["reason"], "ServersNotReady");
            let event = expect_event(&mut h, "Scaled").await;
            assert_eq!(event["note"], "scaled from 3 to 5 servers");
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    #[tokio::test]
    async fn removed_pool_is_deleted_but_foreign_objects_are_not() {
        let mut nc = cluster("  pools: [{name: a, replicas: 1}]\n");
        nc.status = Some(settled(&nc, 1));
        run(nc, |mut h| async move {
            expect_applies(&mut h, &["demo-a"], 1).await;
            expect_list(
                &mut h,
                vec![
                    owned_sts("demo-a", UID),
                    owned_sts("demo-b", UID),
                    owned_sts("demo-c", "someone-else"),
                ],
            )
            .await;
            let (body, send) = expect(
                &mut h,
                "DELETE",
                "/apis/apps/v1/namespaces/ns/statefulsets/demo-b?",
            )
            .await;
            assert_eq!(body["propagationPolicy"], "Background");
            respond(send, 200, owned_sts("demo-b", UID));
            let event = expect_event(&mut h, "PoolRemoved").await;
            assert_eq!(
                event["note"],
                "deleted StatefulSet demo-b: its pool is no longer in the spec"
            );
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    #[tokio::test]
    async fn invalid_spec_sets_degraded_and_touches_nothing() {
        let nc = cluster("  pools: [{name: edge, replicas: 1, role: leaf}]\n");
        let status_nc = nc.clone();
        let action = run(nc.clone(), |mut h| async move {
            let status = expect_status(&mut h, &status_nc).await;
            let degraded = condition_of(&status, "Degraded");
            assert_eq!(degraded["status"], "True");
            assert_eq!(degraded["reason"], "InvalidSpec");
            assert_eq!(
                degraded["message"],
                "spec.pools[0].role: role leaf is reserved until leaf nodes are supported; spec.pools: at least one pool must have role core"
            );
            let event = expect_event(&mut h, "InvalidSpec").await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["note"], degraded["message"]);
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::await_change());

        // Same invalid spec again: the status already says so, so no request at all.
        let mut again = nc;
        again.status = Some(invalid_status(
            &again,
            &NatsClusterStatus::default(),
            &validate(&again).expect_err("invalid").to_string(),
            now(),
        ));
        let action = run(again, |h| async move { h })
            .await
            .expect("reconcile succeeds");
        assert_eq!(action, Action::await_change());
    }

    #[tokio::test]
    async fn paused_cluster_applies_nothing() {
        let mut nc = cluster("  replicas: 3\n  paused: true\n");
        nc.status = Some(settled(&nc, 3));
        let status_nc = nc.clone();
        let action = run(nc, |mut h| async move {
            let status = expect_status(&mut h, &status_nc).await;
            assert_eq!(condition_of(&status, "Progressing")["reason"], "Paused");
            assert_eq!(
                condition_of(&status, "Ready")["status"],
                "True",
                "running servers stay ready"
            );
            expect_event(&mut h, "Paused").await;
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::await_change());

        // Still paused, status already says so: no status write and no second event.
        let mut again = cluster("  replicas: 3\n  paused: true\n");
        again.status = Some(paused_status(&again, &settled(&again, 3), now()));
        let action = run(again, |h| async move { h })
            .await
            .expect("reconcile succeeds");
        assert_eq!(action, Action::await_change());
    }

    /// The ClusterRole users install (config/rbac is the chart rendered) must grant every
    /// call this controller makes: a new child kind without its rule fails here rather
    /// than with 403 in a cluster. Verbs are kept to what is used, so extras fail too.
    #[test]
    fn shipped_cluster_role_grants_exactly_what_the_controller_uses() {
        use k8s_openapi::api::rbac::v1::ClusterRole;
        use serde::Deserialize as _;

        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/rbac/rbac.yaml");
        let text = std::fs::read_to_string(path).expect("config/rbac/rbac.yaml");
        let role: ClusterRole = serde_yaml::Deserializer::from_str(&text)
            .filter_map(|doc| serde_yaml::Value::deserialize(doc).ok())
            .find(|doc| doc["kind"] == "ClusterRole")
            .map(|doc| serde_yaml::from_value(doc).expect("a valid ClusterRole"))
            .expect("a ClusterRole in config/rbac");
        let mut granted: Vec<String> = Vec::new();
        for rule in role.rules.iter().flatten() {
            for group in rule.api_groups.iter().flatten() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        granted.push(format!("{group}/{resource}:{verb}"));
                    }
                }
            }
        }
        granted.sort();

        // Every kind the build step produces is applied (server-side apply creating an
        // object is authorised as create too). Kinds map to resources by plural: all of
        // ours are regular (+s).
        let sample = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/samples/natscluster-production.yaml"
        );
        let nc = crate::render::parse_manifests(&std::fs::read_to_string(sample).expect("sample"))
            .expect("sample parses")
            .remove(0);
        let plan = validate(&nc).expect("valid sample");
        let yaml = build(&plan, None).to_yaml().expect("yaml");
        let mut needed: Vec<String> = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&yaml) {
            let doc = serde_yaml::Value::deserialize(doc).expect("object");
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let resource = format!(
                "{}s",
                doc["kind"].as_str().unwrap_or_default().to_lowercase()
            );
            for verb in ["create", "patch"] {
                needed.push(format!("{group}/{resource}:{verb}"));
            }
        }
        // Watched by the controller (main.rs), status written, pools deleted, Events.
        for watched in [
            "midge.dev/natsclusters",
            "apps/statefulsets",
            "/configmaps",
            "/services",
        ] {
            needed.push(format!("{watched}:list"));
            needed.push(format!("{watched}:watch"));
        }
        needed.push("midge.dev/natsclusters/status:patch".into());
        needed.push("apps/statefulsets:delete".into());
        needed.push("events.k8s.io/events:create".into());
        needed.push("events.k8s.io/events:patch".into());
        needed.sort();
        needed.dedup();
        assert_eq!(granted, needed);
    }

    #[tokio::test]
    async fn api_error_stops_the_pipeline_and_backs_off() {
        let nc = cluster("  replicas: 3\n");
        let error = run(nc.clone(), |mut h| async move {
            let (_, send) = expect(&mut h, "PATCH", &format!("/api/v1/namespaces/ns/configmaps/demo-config{APPLY}")).await;
            respond(
                send,
                500,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd unavailable", "reason": "InternalError", "code": 500}),
            );
            h
        })
        .await
        .expect_err("reconcile fails");
        assert_eq!(error.metric_label(), "apply");
        assert!(
            error
                .to_string()
                .starts_with("applying ConfigMap demo-config"),
            "{error}"
        );

        let (ctx, _handle) = context();
        let nc = Arc::new(nc);
        let delays: Vec<Action> = (0..3)
            .map(|_| error_policy(nc.clone(), &error, ctx.clone()))
            .collect();
        assert_eq!(
            delays,
            vec![
                Action::requeue(Duration::from_secs(5)),
                Action::requeue(Duration::from_secs(10)),
                Action::requeue(Duration::from_secs(20)),
            ]
        );
        assert!(ctx
            .metrics
            .render()
            .contains("midge_operator_reconcile_errors_total{step=\"apply\"} 3"));
    }
}
