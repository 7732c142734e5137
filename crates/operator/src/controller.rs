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
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::{build, client_url, cluster_selector, managed_selector, FIELD_MANAGER};
use crate::crd::{NatsCluster, NatsClusterStatus, PoolStatus};
use crate::secrets::{referenced, SecretDigests, SecretUse};
use crate::validate::{validate, ClusterPlan, PoolPlan, STATEFULSET_DEFAULT_REPLICAS};

/// Periodic resync while everything is ready; watches on the children trigger earlier.
const RESYNC: Duration = Duration::from_secs(300);
/// Poll interval while pods are still becoming ready.
const PROGRESS_POLL: Duration = Duration::from_secs(15);
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Field manager that takes over `spec.replicas` of an externally scaled pool's
/// StatefulSet from the operator (see [`hand_over_replicas`]).
pub const REPLICAS_HANDOVER_MANAGER: &str = "midge-operator-handover";

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
    #[error("listing {kind}s: {source}")]
    List {
        kind: &'static str,
        #[source]
        source: kube::Error,
    },
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    #[error("reading Secret {name}: {source}")]
    Secret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating Secret {name}: {source}")]
    CreateSecret {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    RouteTls(#[from] crate::route_tls::RouteTlsError),
    #[error("handing the server count of StatefulSet {name} over to kubectl scale and autoscalers: {source}")]
    Handover {
        name: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The API server's refusal of an object (a 4xx other than throttling): the request
    /// is wrong, not the connection, so the user must hear of it. As a stable message for
    /// the Degraded condition (no request ids, no timestamps).
    fn rejection(&self) -> Option<String> {
        let Error::Apply {
            kind,
            name,
            source: kube::Error::Api(status),
        } = self
        else {
            return None;
        };
        ((400..500).contains(&status.code) && status.code != 429).then(|| {
            format!(
                "the API server refused {kind} {name} ({} {}): {}",
                status.code, status.reason, status.message
            )
        })
    }

    /// Fixed, low-cardinality label for the error metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::NoNamespace(_) => "no_namespace",
            Error::Apply { .. } => "apply",
            Error::List { .. } => "list",
            Error::Delete { .. } => "delete",
            Error::Status(_) => "status",
            Error::Secret { .. } => "secret",
            Error::CreateSecret { .. } => "create_secret",
            Error::RouteTls(_) => "route_tls",
            Error::Handover { .. } => "handover",
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

    let mut plan = match validate(nc) {
        Ok(plan) => plan,
        Err(invalid) => {
            tracing::info!(cluster = %object_key(nc), error = %invalid, "invalid spec");
            let message = invalid.to_string();
            let status = invalid_status(nc, &current, &message, now);
            write_status(client, nc, &ns, &current, status).await?;
            if !is_degraded_with(&current, &message) {
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

    // Observe: the cluster's StatefulSets as they run. An externally scaled pool is built
    // for the count its StatefulSet has (routes, status), and its count is handed over
    // when the operator still owns it from before the pool switched.
    let live = list_owned::<StatefulSet>(client, nc, &ns).await?;
    for pool in plan.pools.iter().filter(|p| p.external) {
        if let Some(sts) = live.iter().find(|s| s.name_any() == sts_name(&plan, pool)) {
            if owns_replicas(sts) {
                hand_over_replicas(client, &ns, sts).await?;
            }
        }
    }
    for sts in &live {
        let replicas = sts.spec.replicas;
        let pool = sts.labels().get(crate::build::LABEL_POOL).cloned();
        if let Some(pool) = pool {
            plan.observe_replicas(&pool, replicas.unwrap_or(STATEFULSET_DEFAULT_REPLICAS));
        }
    }

    let mut children = build(&plan, nc.controller_owner_ref(&()).as_ref());
    // Kubernetes refuses a change of a StatefulSet's volume claim templates (the
    // JetStream file store): nothing is applied until the StatefulSet is recreated, which
    // deleting it (an owned StatefulSet event) makes the next reconcile do.
    let refused = volume_changes(nc, &plan, &live, &children.stateful_sets);
    if !refused.is_empty() {
        let message = refused.join("; ");
        tracing::info!(cluster = %object_key(nc), %message, "volume change refused");
        let status = refused_status(nc, &current, "VolumeChangeRefused", &message, now);
        write_status(client, nc, &ns, &current, status).await?;
        if !is_degraded_with(&current, &message) {
            publish(
                ctx,
                nc,
                EventType::Warning,
                "VolumeChangeRefused",
                "Validate",
                message,
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    // Digests of the referenced Secrets: into the config (reloaded) or the pod template
    // (rolled), see `crate::secrets`.
    let uses = referenced(&plan);
    let mut secrets = read_secrets(client, &ns, &uses).await?;
    ensure_route_secret(ctx, nc, &plan, &ns, &mut secrets).await?;
    ensure_leaf_secret(ctx, nc, &plan, &ns, &mut secrets).await?;
    SecretDigests::compute(&uses, &secrets).apply_to(&mut children);
    let applied_sets = match apply_children(client, &ns, &children).await {
        Ok(sets) => sets,
        Err(error) => {
            if let Some(message) = error.rejection() {
                let status = apply_failed_status(nc, &current, &message, now);
                write_status(client, nc, &ns, &current, status).await?;
                if !is_degraded_with(&current, &message) {
                    publish(ctx, nc, EventType::Warning, "ApplyFailed", "Apply", message).await;
                }
            }
            // Retried with back-off: the rejection may come from something outside the
            // spec (a quota, an admission webhook) that changes on its own.
            return Err(error);
        }
    };
    let removed_pools = delete_removed_pools(ctx, nc, &ns, &live, &children.stateful_sets).await?;
    // Pool ConfigMaps and Services only exist with leaf pools or per-pool limits, and only
    // go away with such a pool: a cloud-only cluster is spared the two lists.
    if removed_pools || !children.pool_config_maps.is_empty() {
        prune::<ConfigMap>(client, nc, &ns, &children.config_map_names()).await?;
        prune::<Service>(client, nc, &ns, &children.service_names()).await?;
    }
    let pdbs: Vec<String> = children
        .pod_disruption_budgets
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    // Also removes the single cluster-wide PDB of earlier operator versions.
    prune::<PodDisruptionBudget>(client, nc, &ns, &pdbs).await?;
    if children.network_policy.is_none() {
        prune::<NetworkPolicy>(client, nc, &ns, &[]).await?;
    }

    let status = running_status(nc, &plan, &current, &applied_sets, now);
    // Poll only while something rolls out; a settled cluster (zero servers included)
    // waits for the watches and the periodic resync.
    let rolling = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Progressing" && c.status == "True");
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
    Ok(Action::requeue(if rolling {
        PROGRESS_POLL
    } else {
        RESYNC
    }))
}

/// Reads the Secrets `uses` names; one that does not exist is left out (it digests as
/// absent, and its creation is a Secret event that reconciles again).
async fn read_secrets(
    client: &Client,
    ns: &str,
    uses: &[SecretUse],
) -> Result<BTreeMap<String, Secret>, Error> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = BTreeMap::new();
    for u in uses {
        if out.contains_key(&u.name) {
            continue;
        }
        let found = api.get_opt(&u.name).await.map_err(|source| Error::Secret {
            name: u.name.clone(),
            source,
        })?;
        if let Some(secret) = found {
            out.insert(u.name.clone(), secret);
        }
    }
    Ok(out)
}

/// With `spec.tls.routes.generate`, creates the route TLS Secret when `secrets` (just
/// read) does not hold it, and adds it there, so that it is digested like any other. An
/// existing Secret is never rewritten: deleting it is how a new pair is made. Created
/// without server-side apply on purpose: an apply would overwrite the pair each time.
async fn ensure_route_secret(
    ctx: &Context,
    nc: &NatsCluster,
    plan: &ClusterPlan,
    ns: &str,
    secrets: &mut BTreeMap<String, Secret>,
) -> Result<(), Error> {
    let Some(tls) = plan.route_tls.as_ref().filter(|_| plan.route_tls_generated) else {
        return Ok(());
    };
    let name = tls.secret_name.clone();
    if let Some(existing) = secrets.get(&name) {
        warn_if_expiring(ctx, nc, &name, existing).await;
        return Ok(());
    }
    let credentials = crate::route_tls::generate(plan, SystemTime::now())?;
    let secret =
        crate::route_tls::secret(plan, nc.controller_owner_ref(&()).as_ref(), &credentials);
    let (stored, created) = create_secret(ctx, ns, &secret).await?;
    if created {
        let note = format!("created Secret {name} with a new route CA and certificate");
        publish(
            ctx,
            nc,
            EventType::Normal,
            "RouteCredentialsCreated",
            "Create",
            note,
        )
        .await;
    }
    secrets.insert(name, stored);
    Ok(())
}

/// With leaf pools, creates the generated leaf credentials Secret when `secrets` (just
/// read) does not hold it, and adds it there, so that it is digested like any other;
/// never rewritten, as the route TLS Secret. The Secret in use, generated or the user's,
/// is checked: one the pods cannot use (a missing key, characters a URL does not carry)
/// is a Warning Event on every reconcile, which the recorder folds into a series. A
/// user's Secret that does not exist yet is waited for (the pods cannot start without
/// it, and its creation reconciles).
async fn ensure_leaf_secret(
    ctx: &Context,
    nc: &NatsCluster,
    plan: &ClusterPlan,
    ns: &str,
    secrets: &mut BTreeMap<String, Secret>,
) -> Result<(), Error> {
    let Some(leaf) = &plan.leaf_auth else {
        return Ok(());
    };
    let name = leaf.secret_name.clone();
    if let Some(existing) = secrets.get(&name) {
        if let Err(problem) = crate::leaf_auth::read(existing) {
            let note =
                format!("Secret {name}: {problem}; leaf servers cannot log in to the core servers");
            tracing::warn!(cluster = %object_key(nc), secret = %name, %problem, "unusable leaf credentials");
            publish(
                ctx,
                nc,
                EventType::Warning,
                "LeafCredentialsInvalid",
                "Check",
                note,
            )
            .await;
        }
        return Ok(());
    }
    if !leaf.generated {
        return Ok(());
    }
    let credentials = crate::leaf_auth::generate();
    let secret =
        crate::leaf_auth::secret(plan, nc.controller_owner_ref(&()).as_ref(), &credentials);
    let (stored, created) = create_secret(ctx, ns, &secret).await?;
    if created {
        let note = format!("created Secret {name} with a new leaf node user and password");
        publish(
            ctx,
            nc,
            EventType::Normal,
            "LeafCredentialsCreated",
            "Create",
            note,
        )
        .await;
    }
    secrets.insert(name, stored);
    Ok(())
}

/// Creates `secret` (a plain create: an existing Secret is never overwritten). Returns the
/// stored Secret and whether this call created it: one created since it was read (by
/// another operator replica, or a user) is read and used instead.
async fn create_secret(ctx: &Context, ns: &str, secret: &Secret) -> Result<(Secret, bool), Error> {
    let name = secret.name_any();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&params, secret).await {
        Ok(created) => Ok((created, true)),
        Err(kube::Error::Api(status)) if status.code == 409 => api
            .get(&name)
            .await
            .map(|stored| (stored, false))
            .map_err(|source| Error::Secret { name, source }),
        Err(source) => Err(Error::CreateSecret { name, source }),
    }
}

/// The generated certificate is never renewed by the operator: a Warning Event (repeated
/// on every reconcile, which the recorder folds into a series) once less than
/// [`crate::route_tls::EXPIRY_WARNING`] is left.
async fn warn_if_expiring(ctx: &Context, nc: &NatsCluster, name: &str, secret: &Secret) {
    let Some(left) = crate::route_tls::seconds_left(secret, SystemTime::now()) else {
        return;
    };
    let warn_at = i64::try_from(crate::route_tls::EXPIRY_WARNING.as_secs()).unwrap_or(i64::MAX);
    if left >= warn_at {
        return;
    }
    let when = if left > 0 {
        format!("expires in {} days", left / 86_400)
    } else {
        "has expired: routes cannot be established".to_string()
    };
    let note = format!(
        "the generated route certificate in Secret {name} {when}; delete the Secret to have a new pair generated"
    );
    tracing::warn!(cluster = %object_key(nc), secret = name, left_seconds = left, "route certificate expiring");
    publish(
        ctx,
        nc,
        EventType::Warning,
        "RouteCertificateExpiring",
        "Check",
        note,
    )
    .await;
}

/// Whether the stored status already reports this problem (then no second Event).
fn is_degraded_with(status: &NatsClusterStatus, message: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == "Degraded" && c.status == "True" && c.message == message)
}

/// Applies every child, in dependency order (the config before the servers reading it);
/// returns the StatefulSets as the API server answered, with their status.
async fn apply_children(
    client: &Client,
    ns: &str,
    children: &crate::build::Children,
) -> Result<Vec<StatefulSet>, Error> {
    apply(client, ns, &children.config_map).await?;
    for config_map in &children.pool_config_maps {
        apply(client, ns, config_map).await?;
    }
    apply(client, ns, &children.headless_service).await?;
    apply(client, ns, &children.client_service).await?;
    if let Some(service) = &children.leafnodes_service {
        apply(client, ns, service).await?;
    }
    for service in &children.pool_client_services {
        apply(client, ns, service).await?;
    }
    let mut applied_sets = Vec::with_capacity(children.stateful_sets.len());
    for sts in &children.stateful_sets {
        applied_sets.push(apply(client, ns, sts).await?);
    }
    for pdb in &children.pod_disruption_budgets {
        apply(client, ns, pdb).await?;
    }
    if let Some(policy) = &children.network_policy {
        apply(client, ns, policy).await?;
    }
    Ok(applied_sets)
}

/// Whether `object` is controlled by the NatsCluster `nc` (owner uid, not just the name:
/// a look-alike created by someone else is never touched).
fn owned_by(object: &impl Resource, nc: &NatsCluster) -> bool {
    let uid = nc.uid();
    object
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// This cluster's objects of kind `K`: labelled as the operator's and controlled by `nc`.
async fn list_owned<K>(client: &Client, nc: &NatsCluster, ns: &str) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::Resource,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let existing = api
        .list(&ListParams::default().labels(&managed_selector(&nc.name_any())))
        .await
        .map_err(|source| Error::List {
            kind: K::KIND,
            source,
        })?;
    Ok(existing
        .into_iter()
        .filter(|object| owned_by(object, nc))
        .collect())
}

/// Deletes this cluster's objects of kind `K` whose names are not in `wanted`; returns
/// the names deleted.
async fn prune<K>(
    client: &Client,
    nc: &NatsCluster,
    ns: &str,
    wanted: &[String],
) -> Result<Vec<String>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::Resource,
{
    let existing = list_owned::<K>(client, nc, ns).await?;
    delete_unwanted(client, nc, ns, &existing, wanted).await
}

/// Deletes the objects of `existing` (this cluster's) whose names are not in `wanted`.
async fn delete_unwanted<K>(
    client: &Client,
    nc: &NatsCluster,
    ns: &str,
    existing: &[K],
    wanted: &[String],
) -> Result<Vec<String>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::Resource,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let mut deleted = Vec::new();
    for object in existing {
        let name = object.name_any();
        if !wanted.contains(&name) {
            tracing::info!(cluster = %object_key(nc), kind = K::KIND, %name, "deleting");
            api.delete(&name, &DeleteParams::background())
                .await
                .map_err(|source| Error::Delete {
                    kind: K::KIND,
                    name: name.clone(),
                    source,
                })?;
            deleted.push(name);
        }
    }
    Ok(deleted)
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

/// Deletes the StatefulSets (of `live`, listed by this reconcile) of pools that left the
/// spec, with an Event for each.
async fn delete_removed_pools(
    ctx: &Context,
    nc: &NatsCluster,
    ns: &str,
    live: &[StatefulSet],
    desired: &[StatefulSet],
) -> Result<bool, Error> {
    let wanted: Vec<String> = desired.iter().map(ResourceExt::name_any).collect();
    let deleted = delete_unwanted(&ctx.client, nc, ns, live, &wanted).await?;
    let removed = !deleted.is_empty();
    for name in deleted {
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
    Ok(removed)
}

/// For each pool whose live StatefulSet cannot take the desired one's volume claim
/// templates, the spec field and why.
fn volume_changes(
    nc: &NatsCluster,
    plan: &ClusterPlan,
    live: &[StatefulSet],
    desired: &[StatefulSet],
) -> Vec<String> {
    plan.pools
        .iter()
        .zip(desired)
        .enumerate()
        .filter_map(|(i, (pool, want))| {
            let have = live.iter().find(|s| s.name_any() == want.name_any())?;
            let why = crate::jetstream::volume_change(have, want)?;
            let field = if nc.spec.pools.get(i).is_some_and(|p| p.jetstream.is_some()) {
                format!("spec.pools[{i}].jetstream")
            } else {
                "spec.jetstream".to_string()
            };
            Some(format!("{field}: pool {}: {why}", pool.name))
        })
        .collect()
}

fn sts_name(plan: &ClusterPlan, pool: &PoolPlan) -> String {
    crate::build::stateful_set_name(&plan.name, &pool.name)
}

/// Whether the operator's own applies own `spec.replicas` of `sts`: a pool that was scaled
/// by the operator and now is not. Leaving the field out of the next apply would then
/// delete it (Kubernetes would default it to 1, scaling the pool down), so the count is
/// handed over first.
fn owns_replicas(sts: &StatefulSet) -> bool {
    sts.metadata.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() == Some(FIELD_MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry.subresource.is_none()
            && entry
                .fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec"))
                .and_then(|spec| spec.get("f:replicas"))
                .is_some()
    })
}

/// Applies `spec.replicas` of `sts`, at the count it has, under a field manager of its own
/// ([`REPLICAS_HANDOVER_MANAGER`]): the count then has an owner besides the operator,
/// which can leave it out of its applies without the field being deleted, and which
/// `kubectl scale` or an autoscaler takes over on their first change. Not forced: should
/// the count move in between, the conflict is retried with the new count.
async fn hand_over_replicas(client: &Client, ns: &str, sts: &StatefulSet) -> Result<(), Error> {
    let name = sts.name_any();
    let replicas = sts.spec.replicas.unwrap_or(STATEFULSET_DEFAULT_REPLICAS);
    let patch = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas},
    });
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    api.patch(
        &name,
        &PatchParams::apply(REPLICAS_HANDOVER_MANAGER),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Handover { name, source })?;
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

/// Where one pool's StatefulSet stands, from the object the API server returned.
struct PoolRollout {
    status: PoolStatus,
    /// The StatefulSet controller saw the current spec, every desired pod exists, runs
    /// the current revision and is ready.
    done: bool,
}

fn pool_rollout(pool: &PoolPlan, sts: &StatefulSet) -> PoolRollout {
    let st = sts.status.clone().unwrap_or_default();
    let ready = st.ready_replicas.unwrap_or(0);
    let updated = st.updated_replicas.unwrap_or(0);
    let observed = st.observed_generation.unwrap_or(0) >= sts.metadata.generation.unwrap_or(0);
    let done = observed
        && st.replicas == pool.replicas
        && updated == pool.replicas
        && ready == pool.replicas
        && st.current_revision == st.update_revision;
    PoolRollout {
        status: PoolStatus {
            name: pool.name.clone(),
            replicas: pool.replicas,
            ready_replicas: ready.min(pool.replicas),
            updated_replicas: updated.min(pool.replicas),
        },
        done,
    }
}

fn running_status(
    nc: &NatsCluster,
    plan: &ClusterPlan,
    current: &NatsClusterStatus,
    applied: &[StatefulSet],
    now: Timestamp,
) -> NatsClusterStatus {
    let generation = nc.metadata.generation;
    let rollouts: Vec<PoolRollout> = plan
        .pools
        .iter()
        .zip(applied)
        .map(|(pool, sts)| pool_rollout(pool, sts))
        .collect();
    let replicas: i32 = rollouts.iter().map(|p| p.status.replicas).sum();
    let ready: i32 = rollouts.iter().map(|p| p.status.ready_replicas).sum();
    let updated: i32 = rollouts.iter().map(|p| p.status.updated_replicas).sum();
    let rolling: Vec<&str> = rollouts
        .iter()
        .filter(|p| !p.done)
        .map(|p| p.status.name.as_str())
        .collect();
    let (ready_now, ready_reason, progressing, progress_reason, message) = if replicas == 0 {
        (
            false,
            "NoServers",
            false,
            "NoServers",
            "the spec asks for no servers".to_string(),
        )
    } else if rolling.is_empty() {
        (
            true,
            "AllServersReady",
            false,
            "Stable",
            format!("{ready}/{replicas} servers ready on the current revision"),
        )
    } else {
        (
            false,
            "ServersNotReady",
            true,
            "RollingOut",
            format!(
                "{ready}/{replicas} servers ready, {updated}/{replicas} updated; rolling out: {}",
                rolling.join(", ")
            ),
        )
    };
    let prev = &current.conditions;
    NatsClusterStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        pools: rollouts.into_iter().map(|p| p.status).collect(),
        selector: Some(selector_string(plan)),
        client_url: Some(client_url(plan)),
        conditions: vec![
            condition(
                prev,
                "Ready",
                ready_now,
                ready_reason,
                message.clone(),
                generation,
                now,
            ),
            condition(
                prev,
                "Progressing",
                progressing,
                progress_reason,
                message,
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

/// The cluster's pod selector as the scale subresource reports it.
fn selector_string(plan: &ClusterPlan) -> String {
    cluster_selector(plan)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The API server refused an object: running objects are as they were, the rest of the
/// apply did not happen.
fn apply_failed_status(
    nc: &NatsCluster,
    current: &NatsClusterStatus,
    message: &str,
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
                    "ApplyFailed",
                    String::new(),
                    generation,
                    now,
                ),
            ),
            condition(
                prev,
                "Progressing",
                false,
                "ApplyFailed",
                "the spec could not be applied; retrying with back-off".into(),
                generation,
                now,
            ),
            condition(
                prev,
                "Degraded",
                true,
                "ApplyFailed",
                message.to_string(),
                generation,
                now,
            ),
        ],
        ..current.clone()
    }
}

fn invalid_status(
    nc: &NatsCluster,
    current: &NatsClusterStatus,
    message: &str,
    now: Timestamp,
) -> NatsClusterStatus {
    refused_status(nc, current, "InvalidSpec", message, now)
}

/// The spec is not applied (`reason`: `InvalidSpec`, `VolumeChangeRefused`): running
/// objects stay as they are until the spec (or the StatefulSet) changes.
fn refused_status(
    nc: &NatsCluster,
    current: &NatsClusterStatus,
    reason: &str,
    message: &str,
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
                condition(prev, "Ready", false, reason, String::new(), generation, now),
            ),
            condition(
                prev,
                "Progressing",
                false,
                reason,
                "running objects are left unchanged until the spec is fixed".into(),
                generation,
                now,
            ),
            condition(
                prev,
                "Degraded",
                true,
                reason,
                message.to_string(),
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
        serde_json::from_value(json!({"metadata": {"generation": 1}, "spec": {"selector": {}, "template": {}}, "status": sts_status(ready, ready, 1)}))
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

    /// A StatefulSet status: `ready` pods ready and `updated` on the update revision,
    /// generation `observed` seen by the StatefulSet controller (the object is at 1).
    fn sts_status(ready: i32, updated: i32, observed: i64) -> Value {
        let update_revision = if updated == ready { "r1" } else { "r2" };
        json!({"replicas": ready, "readyReplicas": ready, "updatedReplicas": updated,
               "observedGeneration": observed, "currentRevision": "r1",
               "updateRevision": update_revision})
    }

    /// Answers every apply (ConfigMap, Services, StatefulSets, their PDBs and, when
    /// `policy`, the NetworkPolicy), echoing each body; StatefulSets answer with
    /// generation 1 and `status`.
    async fn expect_applies_with(
        handle: &mut Handle,
        sets: &[&str],
        status: Value,
        policy: bool,
    ) -> Vec<Value> {
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
        paths.extend(
            sets.iter()
                .map(|s| format!("/apis/policy/v1/namespaces/ns/poddisruptionbudgets/{s}")),
        );
        if policy {
            paths.push("/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo".into());
        }
        for path in paths {
            let (mut body, send) = expect(handle, "PATCH", &format!("{path}{APPLY}")).await;
            assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], UID, "{path}");
            if path.contains("statefulsets") {
                body["metadata"]["generation"] = json!(1);
                body["status"] = status.clone();
            }
            respond(send, 200, body.clone());
            bodies.push(body);
        }
        bodies
    }

    /// Every apply answered with `ready` servers per pool, all rolled out.
    async fn expect_applies(handle: &mut Handle, sets: &[&str], ready: i32) -> Vec<Value> {
        expect_applies_with(handle, sets, sts_status(ready, ready, 1), true).await
    }

    /// Answers the list of this cluster's objects of one kind (`group` is `apis/<g>/<v>`).
    async fn expect_list_of(handle: &mut Handle, group: &str, plural: &str, items: Vec<Value>) {
        let (_, send) = expect(
            handle,
            "GET",
            &format!("/{group}/namespaces/ns/{plural}?&labelSelector=app.kubernetes.io%2Fname%3Dmidge%2Capp.kubernetes.io%2Finstance%3Ddemo%2Capp.kubernetes.io%2Fmanaged-by%3Dmidge-operator"),
        )
        .await;
        respond(
            send,
            200,
            json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}),
        );
    }

    /// The PDB prune step's list, answered with `items`.
    async fn expect_pdb_list(handle: &mut Handle, items: Vec<Value>) {
        expect_list_of(handle, "apis/policy/v1", "poddisruptionbudgets", items).await;
    }

    fn owned(name: &str, uid: &str) -> Value {
        json!({
            "metadata": {"name": name, "namespace": "ns", "ownerReferences": [{
                "apiVersion": "midge.dev/v1alpha1", "kind": "NatsCluster", "name": "demo",
                "uid": uid, "controller": true}]}
        })
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

    /// A StatefulSet of pool `pool` as listed: at `replicas` servers, and with
    /// `spec.replicas` owned by the operator's applies when `operator_owned`.
    fn pool_sts(name: &str, pool: &str, replicas: i32, operator_owned: bool) -> Value {
        let mut sts = owned_sts(name, UID);
        sts["metadata"]["labels"] = json!({"midge.dev/pool": pool});
        sts["spec"]["replicas"] = json!(replicas);
        if operator_owned {
            sts["metadata"]["managedFields"] = json!([{
                "manager": "midge-operator", "operation": "Apply", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:serviceName": {}}}
            }]);
        }
        sts
    }

    /// The route URLs of a rendered `midge.conf`.
    fn routes_in(conf: &Value) -> Vec<String> {
        conf.as_str()
            .unwrap_or_default()
            .split('"')
            .filter(|part| part.starts_with("nats://"))
            .map(str::to_string)
            .collect()
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
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            let bodies = expect_applies(&mut h, &["demo-default"], 0).await;
            assert_eq!(
                bodies[0]["data"]["midge.conf"]
                    .as_str()
                    .map(|c| c.matches("nats://").count()),
                Some(3)
            );
            assert_eq!(bodies[3]["spec"]["replicas"], 3);
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
            let status = expect_status(&mut h, &status_nc).await;
            assert_eq!(status["observedGeneration"], 2);
            assert_eq!(status["replicas"], 3);
            assert_eq!(status["readyReplicas"], 0);
            assert_eq!(status["clientUrl"], "nats://demo.ns.svc.cluster.local:4222");
            assert_eq!(
                status["pools"],
                json!([{"name": "default", "replicas": 3, "readyReplicas": 0, "updatedReplicas": 0}])
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
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            expect_applies(&mut h, &["demo-default"], 3).await;
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(RESYNC));
    }

    /// `scaling: External`: the pool's StatefulSet owns its count. `kubectl scale
    /// statefulset/demo-workers --replicas=5` (or an HPA) changes it, the StatefulSet event
    /// reconciles, and the ConfigMap's routes and the status follow the live count; the
    /// applied StatefulSet never names `spec.replicas`, so the operator never takes the
    /// count back.
    #[tokio::test]
    async fn externally_scaled_pool_follows_its_stateful_set() {
        let nc = cluster(
            "  pools:\n  - {name: core, replicas: 3}\n  - {name: workers, scaling: External}\n",
        );
        let mut status = None;
        for (count, event) in [(3, "Created"), (5, "Scaled")] {
            let mut nc = nc.clone();
            nc.status = status.take();
            let status_nc = nc.clone();
            let (tx, rx) = tokio::sync::oneshot::channel();
            run(nc, move |mut h| async move {
                expect_list(
                    &mut h,
                    vec![
                        owned_sts("demo-core", UID),
                        pool_sts("demo-workers", "workers", count, false),
                    ],
                )
                .await;
                let bodies = expect_applies(&mut h, &["demo-core", "demo-workers"], 3).await;
                let routes = routes_in(&bodies[0]["data"]["midge.conf"]);
                let workers: Vec<&String> = routes
                    .iter()
                    .filter(|r| r.contains("demo-workers-"))
                    .collect();
                assert_eq!(
                    workers.len(),
                    usize::try_from(count).unwrap_or(0),
                    "{routes:?}"
                );
                assert_eq!(routes.len(), 3 + workers.len());
                assert_eq!(bodies[3]["spec"]["replicas"], 3, "the operator's pool");
                assert!(
                    bodies[4]["spec"].get("replicas").is_none(),
                    "the external pool's count is not applied: {}",
                    bodies[4]["spec"]
                );
                // The PDB of the pool is there as for any other.
                assert_eq!(bodies[6]["metadata"]["name"], "demo-workers");
                expect_pdb_list(&mut h, vec![]).await;
                let status = expect_status(&mut h, &status_nc).await;
                assert_eq!(status["replicas"], 3 + count);
                assert_eq!(status["pools"][1]["name"], "workers");
                assert_eq!(status["pools"][1]["replicas"], count);
                let _ = tx.send(status);
                let note = expect_event(&mut h, event).await["note"].clone();
                if event == "Scaled" {
                    assert_eq!(note, "scaled from 6 to 8 servers");
                }
                h
            })
            .await
            .expect("reconcile succeeds");
            let written = rx.await.expect("status");
            status = Some(serde_json::from_value(written).expect("a status"));
        }
    }

    /// A pool switched from `replicas: 4` to `scaling: External` still has its count owned
    /// by the operator's applies: leaving it out of the next apply would delete the field
    /// and drop the StatefulSet to one server. The count is first applied as it is under a
    /// field manager of its own (not forced), then the operator's apply leaves it out.
    #[tokio::test]
    async fn switching_a_pool_to_external_scaling_hands_its_count_over() {
        let mut nc = cluster("  pools:\n  - {name: workers, scaling: External}\n");
        nc.status = Some(settled(&nc, 1));
        let status_nc = nc.clone();
        run(nc, |mut h| async move {
            expect_list(&mut h, vec![pool_sts("demo-workers", "workers", 4, true)]).await;
            let (body, send) = expect(
                &mut h,
                "PATCH",
                "/apis/apps/v1/namespaces/ns/statefulsets/demo-workers?&fieldManager=midge-operator-handover",
            )
            .await;
            assert_eq!(
                body,
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                       "metadata": {"name": "demo-workers", "namespace": "ns"},
                       "spec": {"replicas": 4}})
            );
            respond(send, 200, pool_sts("demo-workers", "workers", 4, true));
            let bodies = expect_applies(&mut h, &["demo-workers"], 4).await;
            assert!(bodies[3]["spec"].get("replicas").is_none(), "{}", bodies[3]);
            assert_eq!(routes_in(&bodies[0]["data"]["midge.conf"]).len(), 4);
            expect_pdb_list(&mut h, vec![owned("demo-workers", UID)]).await;
            let status = expect_status(&mut h, &status_nc).await;
            assert_eq!(status["replicas"], 4);
            expect_event(&mut h, "Scaled").await;
            h
        })
        .await
        .expect("reconcile succeeds");

        // Once handed over (the operator no longer owns the count), nothing more is done.
        let mut nc = cluster("  pools:\n  - {name: workers, scaling: External}\n");
        nc.status = Some(settled(&nc, 1));
        run(nc, |mut h| async move {
            expect_list(&mut h, vec![pool_sts("demo-workers", "workers", 1, false)]).await;
            expect_applies(&mut h, &["demo-workers"], 1).await;
            expect_pdb_list(&mut h, vec![owned("demo-workers", UID)]).await;
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    #[tokio::test]
    async fn scale_up_rerenders_routes_and_status() {
        let mut nc = cluster("  replicas: 5\n");
        nc.status = Some(settled(&cluster("  replicas: 3\n"), 3));
        let status_nc = nc.clone();
        run(nc, |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
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
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
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
            expect_list(
                &mut h,
                vec![
                    owned_sts("demo-a", UID),
                    owned_sts("demo-b", UID),
                    owned_sts("demo-c", "someone-else"),
                ],
            )
            .await;
            expect_applies(&mut h, &["demo-a"], 1).await;
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
            // A removed leaf pool leaves its ConfigMap and client Service: both go, the
            // cluster's own and someone else's stay.
            expect_list_of(
                &mut h,
                "api/v1",
                "configmaps",
                vec![
                    owned("demo-config", UID),
                    owned("demo-b-config", UID),
                    owned("demo-c-config", "someone-else"),
                ],
            )
            .await;
            let (_, send) = expect(
                &mut h,
                "DELETE",
                "/api/v1/namespaces/ns/configmaps/demo-b-config?",
            )
            .await;
            respond(send, 200, owned("demo-b-config", UID));
            expect_list_of(
                &mut h,
                "api/v1",
                "services",
                vec![
                    owned("demo", UID),
                    owned("demo-headless", UID),
                    owned("demo-leafnodes", UID),
                    owned("demo-b", UID),
                ],
            )
            .await;
            for service in ["demo-leafnodes", "demo-b"] {
                let (_, send) = expect(
                    &mut h,
                    "DELETE",
                    &format!("/api/v1/namespaces/ns/services/{service}?"),
                )
                .await;
                respond(send, 200, owned(service, UID));
            }
            // The removed pool's PDB goes too, and so does the single cluster-wide PDB
            // earlier operator versions made.
            expect_pdb_list(
                &mut h,
                vec![
                    owned("demo", UID),
                    owned("demo-a", UID),
                    owned("demo-b", UID),
                ],
            )
            .await;
            for pdb in ["demo", "demo-b"] {
                let (_, send) = expect(
                    &mut h,
                    "DELETE",
                    &format!("/apis/policy/v1/namespaces/ns/poddisruptionbudgets/{pdb}?"),
                )
                .await;
                respond(send, 200, owned(pdb, UID));
            }
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    /// A cluster with a leaf pool: the pool's own ConfigMap (its remotes, not the core's
    /// routes), the leaf node Service and the pool's client Service are applied between
    /// the shared objects and the StatefulSets, and the ConfigMaps and Services of pools
    /// that left are looked for.
    #[tokio::test]
    async fn leaf_pool_gets_its_own_config_and_services() {
        let mut nc =
            cluster("  pools:\n  - {name: cloud, replicas: 2}\n  - {name: edge, replicas: 2, role: leaf, broker: {maxConnections: 100}}\n");
        nc.status = Some(settled(&nc, 2));
        run(nc, |mut h| async move {
            expect_list(
                &mut h,
                vec![owned_sts("demo-cloud", UID), owned_sts("demo-edge", UID)],
            )
            .await;
            expect_secret(
                &mut h,
                "demo-leaf-credentials",
                Some(&[("user", "leaf"), ("password", "pw")]),
            )
            .await;
            let paths = [
                "/api/v1/namespaces/ns/configmaps/demo-config",
                "/api/v1/namespaces/ns/configmaps/demo-edge-config",
                "/api/v1/namespaces/ns/services/demo-headless",
                "/api/v1/namespaces/ns/services/demo",
                "/api/v1/namespaces/ns/services/demo-leafnodes",
                "/api/v1/namespaces/ns/services/demo-edge",
                "/apis/apps/v1/namespaces/ns/statefulsets/demo-cloud",
                "/apis/apps/v1/namespaces/ns/statefulsets/demo-edge",
                "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo-cloud",
                "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo-edge",
                "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo",
            ];
            let mut bodies = Vec::new();
            for path in paths {
                let (mut body, send) = expect(&mut h, "PATCH", &format!("{path}{APPLY}")).await;
                assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], UID, "{path}");
                if path.contains("statefulsets") {
                    body["metadata"]["generation"] = json!(1);
                    body["status"] = sts_status(2, 2, 1);
                }
                respond(send, 200, body.clone());
                bodies.push(body);
            }
            let core = bodies[0]["data"]["midge.conf"].as_str().unwrap_or_default();
            let edge = bodies[1]["data"]["midge.conf"].as_str().unwrap_or_default();
            assert!(core.contains("demo-cloud-1.demo-headless"), "{core}");
            assert!(
                !core.contains("demo-edge-"),
                "the core routes to no leaf: {core}"
            );
            assert!(core.contains("  port: 7422\n"), "{core}");
            assert!(edge.contains("{urls: [$MIDGE_LEAF_URL]}"), "{edge}");
            let edge_env =
                bodies[7]["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
            assert!(
                edge_env.contains("@demo-leafnodes.ns.svc.cluster.local:7422"),
                "{edge_env}"
            );
            // Leaf credentials are read at start-up: their digest is in the pod templates.
            for sts in [&bodies[6], &bodies[7]] {
                assert!(sts["spec"]["template"]["metadata"]["annotations"]
                    ["midge.dev/secret-restart-hash"]
                    .is_string());
            }
            assert!(
                !edge.contains("demo-cloud-"),
                "the edge routes to no core: {edge}"
            );
            assert!(edge.contains("max_connections: 100\n"), "{edge}");
            assert_eq!(bodies[5]["spec"]["selector"]["midge.dev/pool"], "edge");
            assert_eq!(bodies[3]["spec"]["selector"]["midge.dev/role"], "core");
            assert_eq!(
                bodies[7]["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"],
                "demo-edge-config"
            );
            expect_list_of(
                &mut h,
                "api/v1",
                "configmaps",
                vec![owned("demo-config", UID), owned("demo-edge-config", UID)],
            )
            .await;
            expect_list_of(
                &mut h,
                "api/v1",
                "services",
                vec![owned("demo", UID), owned("demo-edge", UID)],
            )
            .await;
            expect_pdb_list(
                &mut h,
                vec![owned("demo-cloud", UID), owned("demo-edge", UID)],
            )
            .await;
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    /// The leaf credentials Secret is created once when absent (owned by the cluster, a
    /// user `leaf` and a random password), digested into every pod template (the broker
    /// reads leaf credentials at start-up: a new password rolls the pods), and only read
    /// when present; deleting it (a Secret event) is how the password is rotated.
    #[tokio::test]
    async fn generated_leaf_credentials_are_created_once() {
        let spec =
            "  pools:\n  - {name: cloud, replicas: 1}\n  - {name: edge, replicas: 1, role: leaf}\n";
        let mut nc = cluster(spec);
        nc.status = Some(settled(&nc, 1));
        let sets = ["demo-cloud", "demo-edge"];
        let listed = || vec![owned_sts("demo-cloud", UID), owned_sts("demo-edge", UID)];
        let hash = |body: &Value| {
            body["spec"]["template"]["metadata"]["annotations"]["midge.dev/secret-restart-hash"]
                .as_str()
                .map(str::to_string)
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        run(nc.clone(), move |mut h| async move {
            expect_list(&mut h, listed()).await;
            expect_secret(&mut h, "demo-leaf-credentials", None).await;
            let (created, send) = expect(
                &mut h,
                "POST",
                "/api/v1/namespaces/ns/secrets?&fieldManager=midge-operator",
            )
            .await;
            respond(send, 201, created.clone());
            let event = expect_event(&mut h, "LeafCredentialsCreated").await;
            assert_eq!(
                event["note"],
                "created Secret demo-leaf-credentials with a new leaf node user and password"
            );
            let bodies = leaf_cluster_applies(&mut h, &sets).await;
            let _ = tx.send((created, hash(&bodies[6]), hash(&bodies[7])));
            h
        })
        .await
        .expect("reconcile succeeds");
        let (created, cloud_hash, edge_hash) = rx.await.expect("bodies");
        assert_eq!(created["metadata"]["name"], "demo-leaf-credentials");
        assert_eq!(created["type"], "Opaque");
        assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], UID);
        let decoded = |key: &str| {
            let secret: Secret = serde_json::from_value(created.clone()).expect("a Secret");
            secret.data.and_then(|d| d.get(key).map(|v| v.0.clone()))
        };
        assert_eq!(decoded("user").as_deref(), Some(&b"leaf"[..]));
        assert_eq!(decoded("password").map(|p| p.len()), Some(32));
        assert!(cloud_hash.is_some() && cloud_hash == edge_hash);

        // Present: read, digested, never written.
        run(nc, move |mut h| async move {
            expect_list(&mut h, listed()).await;
            expect_secret(
                &mut h,
                "demo-leaf-credentials",
                Some(&[("user", "leaf"), ("password", "another")]),
            )
            .await;
            let bodies = leaf_cluster_applies(&mut h, &sets).await;
            assert!(hash(&bodies[6]).is_some());
            assert_ne!(
                hash(&bodies[6]),
                cloud_hash,
                "a new password rolls the pods"
            );
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    /// A Secret of the user's (`spec.auth.leafnodes.secretName`) is only read; one the
    /// pods cannot use is said in a Warning Event, and the objects are applied as usual.
    #[tokio::test]
    async fn unusable_leaf_credentials_are_warned_about() {
        let spec = "  pools:\n  - {name: cloud, replicas: 1}\n  - {name: edge, replicas: 1, role: leaf}\n  auth: {leafnodes: {secretName: mine}}\n";
        let mut nc = cluster(spec);
        nc.status = Some(settled(&nc, 1));
        run(nc, |mut h| async move {
            expect_list(
                &mut h,
                vec![owned_sts("demo-cloud", UID), owned_sts("demo-edge", UID)],
            )
            .await;
            expect_secret(&mut h, "mine", Some(&[("user", "edge"), ("password", "p@ss")])).await;
            let event = expect_event(&mut h, "LeafCredentialsInvalid").await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(
                event["note"],
                "Secret mine: \"password\" holds characters other than letters, digits and '-._~' (it goes into the leaf remote's URL unescaped); leaf servers cannot log in to the core servers"
            );
            let bodies = leaf_cluster_applies(&mut h, &["demo-cloud", "demo-edge"]).await;
            let env = bodies[7]["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
            assert!(env.contains("\"name\":\"mine\""), "{env}");
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    /// Answers the applies of a cloud + edge cluster (pools `sets`, the edge one last),
    /// and the prune lists that follow; returns the applied bodies.
    async fn leaf_cluster_applies(h: &mut Handle, sets: &[&str]) -> Vec<Value> {
        let mut paths = vec![
            "/api/v1/namespaces/ns/configmaps/demo-config".to_string(),
            "/api/v1/namespaces/ns/configmaps/demo-edge-config".to_string(),
            "/api/v1/namespaces/ns/services/demo-headless".to_string(),
            "/api/v1/namespaces/ns/services/demo".to_string(),
            "/api/v1/namespaces/ns/services/demo-leafnodes".to_string(),
            "/api/v1/namespaces/ns/services/demo-edge".to_string(),
        ];
        for kind in [
            "apis/apps/v1/namespaces/ns/statefulsets",
            "apis/policy/v1/namespaces/ns/poddisruptionbudgets",
        ] {
            paths.extend(sets.iter().map(|s| format!("/{kind}/{s}")));
        }
        paths.push("/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo".into());
        let mut bodies = Vec::new();
        for path in paths {
            let (mut body, send) = expect(h, "PATCH", &format!("{path}{APPLY}")).await;
            if path.contains("statefulsets") {
                body["metadata"]["generation"] = json!(1);
                body["status"] = sts_status(1, 1, 1);
            }
            respond(send, 200, body.clone());
            bodies.push(body);
        }
        expect_list_of(h, "api/v1", "configmaps", vec![]).await;
        expect_list_of(h, "api/v1", "services", vec![]).await;
        expect_pdb_list(h, vec![]).await;
        bodies
    }

    /// Kubernetes refuses any change of a StatefulSet's volume claim templates: a new
    /// JetStream volume size for an existing pool is refused before anything is applied
    /// (Degraded/VolumeChangeRefused, a Warning Event, what to do), and applied once the
    /// StatefulSet is gone (deleted with `--cascade=orphan`: the pods stay and the new
    /// StatefulSet adopts them). A template as the API server stores it (with its
    /// defaults) is no change.
    #[tokio::test]
    async fn jetstream_volume_change_is_refused_until_the_stateful_set_is_recreated() {
        let stored = |size: &str| {
            let mut sts = owned_sts("demo-default", UID);
            sts["spec"]["volumeClaimTemplates"] = json!([{
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "jetstream"},
                "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                         "resources": {"requests": {"storage": size}}},
                "status": {"phase": "Pending"}
            }]);
            sts
        };
        let mut nc = cluster("  replicas: 3\n  jetstream: {fileStore: {size: 20Gi}}\n");
        nc.status = Some(settled(&nc, 3));
        let status_nc = nc.clone();
        let action = run(nc.clone(), move |mut h| async move {
            expect_list(&mut h, vec![stored("10Gi")]).await;
            let status = expect_status(&mut h, &status_nc).await;
            let degraded = condition_of(&status, "Degraded");
            assert_eq!(degraded["reason"], "VolumeChangeRefused");
            assert_eq!(
                degraded["message"],
                "spec.jetstream: pool default: the StatefulSet has jetstream of 10Gi (the default storage class), the spec asks for jetstream of 20Gi (the default storage class); Kubernetes cannot change a StatefulSet's volume claim templates: delete it with `kubectl delete statefulset demo-default --cascade=orphan` (the pods keep running) and the operator recreates it (README, \"Change a JetStream volume\")"
            );
            assert_eq!(condition_of(&status, "Ready")["status"], "True", "servers run on");
            let event = expect_event(&mut h, "VolumeChangeRefused").await;
            assert_eq!(event["type"], "Warning");
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::await_change());

        // The same size as stored: applied as usual.
        run(nc.clone(), move |mut h| async move {
            expect_list(&mut h, vec![stored("20480Mi")]).await;
            let bodies = expect_applies(&mut h, &["demo-default"], 3).await;
            assert_eq!(
                bodies[3]["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
                    ["storage"],
                "20Gi"
            );
            expect_pdb_list(&mut h, vec![]).await;
            h
        })
        .await
        .expect("reconcile succeeds");

        // Deleted with --cascade=orphan: created anew with the new template.
        run(nc, move |mut h| async move {
            expect_list(&mut h, vec![]).await;
            expect_applies(&mut h, &["demo-default"], 3).await;
            expect_pdb_list(&mut h, vec![]).await;
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
                "spec.pools: needs at least one pool with role core: leaf pools connect to the core pools and cannot run on their own"
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
        // object is authorised as create too). Kinds map to resources by their regular
        // English plural.
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
            let kind = doc["kind"].as_str().unwrap_or_default().to_lowercase();
            let resource = match kind.strip_suffix('y') {
                Some(stem) => format!("{stem}ies"),
                None => format!("{kind}s"),
            };
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
        for pruned in [
            "policy/poddisruptionbudgets",
            "networking.k8s.io/networkpolicies",
            "/configmaps",
            "/services",
        ] {
            needed.push(format!("{pruned}:list"));
            needed.push(format!("{pruned}:delete"));
        }
        // Referenced Secrets: watched (main.rs) and read by reconcile; the generated
        // route TLS Secret is created (never patched: an existing one is kept).
        for verb in ["get", "list", "watch", "create"] {
            needed.push(format!("/secrets:{verb}"));
        }
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
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
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

    /// Ready needs the rollout finished, not only ready pods: a StatefulSet whose
    /// controller has not seen the new spec yet, or whose pods are still on the old
    /// revision, leaves the cluster Progressing.
    #[tokio::test]
    async fn ready_waits_for_the_rollout() {
        for (status, expected) in [
            // 3 ready pods, only 1 on the new revision.
            (
                sts_status(3, 1, 1),
                "3/3 servers ready, 1/3 updated; rolling out: default",
            ),
            // Everything looks done, but for generation 0 (the new spec is generation 1).
            (
                sts_status(3, 3, 0),
                "3/3 servers ready, 3/3 updated; rolling out: default",
            ),
        ] {
            let mut nc = cluster("  replicas: 3\n");
            nc.status = Some(settled(&nc, 3));
            let status_nc = nc.clone();
            let action = run(nc, |mut h| async move {
                expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
                expect_applies_with(&mut h, &["demo-default"], status, true).await;
                expect_pdb_list(&mut h, vec![]).await;
                let status = expect_status(&mut h, &status_nc).await;
                let ready = condition_of(&status, "Ready");
                assert_eq!(ready["status"], "False");
                assert_eq!(ready["reason"], "ServersNotReady");
                assert_eq!(ready["message"], expected);
                assert_eq!(condition_of(&status, "Progressing")["status"], "True");
                assert_eq!(status["readyReplicas"], 3);
                h
            })
            .await
            .expect("reconcile succeeds");
            assert_eq!(action, Action::requeue(PROGRESS_POLL));
        }
    }

    /// A cluster scaled to zero serves nobody: not Ready.
    #[tokio::test]
    async fn zero_servers_is_not_ready() {
        let nc = cluster("  replicas: 0\n");
        let status_nc = nc.clone();
        let action = run(nc, |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            expect_applies(&mut h, &["demo-default"], 0).await;
            expect_pdb_list(&mut h, vec![]).await;
            let status = expect_status(&mut h, &status_nc).await;
            let ready = condition_of(&status, "Ready");
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], "NoServers");
            assert_eq!(condition_of(&status, "Progressing")["status"], "False");
            assert_eq!(
                status["selector"],
                "app.kubernetes.io/instance=demo,app.kubernetes.io/name=midge"
            );
            expect_event(&mut h, "Created").await;
            h
        })
        .await
        .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(RESYNC), "nothing to poll for");
    }

    /// A 422 from the API server reaches the user as Degraded/ApplyFailed and a Warning
    /// Event, the rest of the apply is skipped, and the reconcile backs off. Once the
    /// status says so, a retry writes nothing more.
    #[tokio::test]
    async fn rejected_apply_is_degraded_with_an_event() {
        let mut nc = cluster("  replicas: 3\n");
        nc.status = Some(settled(&nc, 3));
        let status_nc = nc.clone();
        let reject = |send| {
            respond(
                send,
                422,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "reason": "Invalid",
                       "message": "StatefulSet.apps \"demo-default\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden"}),
            )
        };
        let error = run(nc.clone(), |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            for path in [
                "/api/v1/namespaces/ns/configmaps/demo-config",
                "/api/v1/namespaces/ns/services/demo-headless",
                "/api/v1/namespaces/ns/services/demo",
            ] {
                let (body, send) = expect(&mut h, "PATCH", &format!("{path}{APPLY}")).await;
                respond(send, 200, body);
            }
            let (_, send) = expect(
                &mut h,
                "PATCH",
                &format!("/apis/apps/v1/namespaces/ns/statefulsets/demo-default{APPLY}"),
            )
            .await;
            reject(send);
            let status = expect_status(&mut h, &status_nc).await;
            let degraded = condition_of(&status, "Degraded");
            assert_eq!(degraded["status"], "True");
            assert_eq!(degraded["reason"], "ApplyFailed");
            assert_eq!(
                degraded["message"],
                "the API server refused StatefulSet demo-default (422 Invalid): StatefulSet.apps \"demo-default\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than 'replicas' are forbidden"
            );
            assert_eq!(condition_of(&status, "Ready")["status"], "True", "running servers stay");
            let event = expect_event(&mut h, "ApplyFailed").await;
            assert_eq!(event["type"], "Warning");
            assert_eq!(event["note"], degraded["message"]);
            h
        })
        .await
        .expect_err("reconcile fails and backs off");
        assert_eq!(error.metric_label(), "apply");

        // The status already says it: the retry only repeats the applies.
        let mut again = nc;
        let message = error.rejection().expect("a rejection");
        again.status = Some(apply_failed_status(
            &again,
            &settled(&again, 3),
            &message,
            now(),
        ));
        run(again, |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            for path in [
                "/api/v1/namespaces/ns/configmaps/demo-config",
                "/api/v1/namespaces/ns/services/demo-headless",
                "/api/v1/namespaces/ns/services/demo",
            ] {
                let (body, send) = expect(&mut h, "PATCH", &format!("{path}{APPLY}")).await;
                respond(send, 200, body);
            }
            let (_, send) = expect(
                &mut h,
                "PATCH",
                &format!("/apis/apps/v1/namespaces/ns/statefulsets/demo-default{APPLY}"),
            )
            .await;
            reject(send);
            h
        })
        .await
        .expect_err("still refused");
    }

    /// What the broker refuses (here its 30 s minimum lame duck duration) is refused
    /// before anything is applied, with the broker's message and the field.
    #[tokio::test]
    async fn spec_the_broker_refuses_applies_nothing() {
        let mut nc = cluster("  replicas: 3\n  broker: {lameDuckDuration: 10s}\n");
        nc.status = Some(settled(&cluster("  replicas: 3\n"), 3));
        let status_nc = nc.clone();
        run(nc, |mut h| async move {
            let status = expect_status(&mut h, &status_nc).await;
            let degraded = condition_of(&status, "Degraded");
            assert_eq!(degraded["reason"], "InvalidSpec");
            assert_eq!(
                degraded["message"],
                "spec.broker.lameDuckDuration: the broker refuses the rendered config: /etc/midge/midge.conf:14:21: lame_duck_duration: 10s is too short, the minimum is 30s"
            );
            assert_eq!(condition_of(&status, "Ready")["status"], "True");
            let event = expect_event(&mut h, "InvalidSpec").await;
            assert_eq!(event["type"], "Warning");
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    /// Answers the GET of Secret `name` with `data` (base64-encoded here), or 404.
    async fn expect_secret(handle: &mut Handle, name: &str, data: Option<&[(&str, &str)]>) {
        let (_, send) = expect(
            handle,
            "GET",
            &format!("/api/v1/namespaces/ns/secrets/{name}"),
        )
        .await;
        match data {
            Some(data) => {
                let secret = k8s_openapi::api::core::v1::Secret {
                    metadata: kube::api::ObjectMeta {
                        name: Some(name.into()),
                        namespace: Some("ns".into()),
                        ..Default::default()
                    },
                    data: Some(
                        data.iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    k8s_openapi::ByteString(v.as_bytes().to_vec()),
                                )
                            })
                            .collect(),
                    ),
                    ..Default::default()
                };
                let mut body = serde_json::to_value(&secret).expect("json");
                body["apiVersion"] = json!("v1");
                body["kind"] = json!("Secret");
                respond(send, 200, body);
            }
            None => respond(
                send,
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
                       "reason": "NotFound", "message": format!("secrets \"{name}\" not found")}),
            ),
        }
    }

    /// A rotated certificate (cert-manager renewing the client TLS Secret) reaches the
    /// servers through the config they watch: the reconcile the Secret event triggers
    /// reads the Secrets, and only the ConfigMap changes (its digest comment); the pod
    /// template stays, so nothing restarts.
    #[tokio::test]
    async fn rotated_certificate_changes_the_config_not_the_pods() {
        let spec = "  replicas: 3\n  auth: {users: {name: users, key: auth.conf}}\n  tls: {client: {secretName: cert}}\n";
        let mut nc = cluster(spec);
        nc.status = Some(settled(&nc, 3));
        let mut applied = Vec::new();
        for crt in ["certificate v1", "certificate v2"] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            run(nc.clone(), move |mut h| async move {
                expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
                expect_secret(
                    &mut h,
                    "users",
                    Some(&[("auth.conf", "authorization { token: t }")]),
                )
                .await;
                expect_secret(
                    &mut h,
                    "cert",
                    Some(&[("tls.crt", crt), ("tls.key", "k"), ("ca.crt", "ca")]),
                )
                .await;
                let bodies = expect_applies(&mut h, &["demo-default"], 3).await;
                expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
                let _ = tx.send(bodies);
                h
            })
            .await
            .expect("reconcile succeeds");
            applied.push(rx.await.expect("bodies"));
        }
        let conf = |bodies: &[Value]| {
            bodies[0]["data"]["midge.conf"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let (one, two) = (conf(&applied[0]), conf(&applied[1]));
        assert!(one.contains("# secret users: sha256:"), "{one}");
        assert!(one.contains("# secret tls-client: sha256:"), "{one}");
        assert_ne!(one, two, "the ConfigMap changes with the certificate");
        let users_line = |c: &str| {
            c.lines()
                .find(|l| l.starts_with("# secret users:"))
                .map(str::to_string)
        };
        assert_eq!(
            users_line(&one),
            users_line(&two),
            "the users digest did not move"
        );
        let template = |bodies: &[Value]| bodies[3]["spec"]["template"].clone();
        assert_eq!(template(&applied[0]), template(&applied[1]), "no roll");
        assert!(template(&applied[0])["metadata"]["annotations"]
            .get("midge.dev/secret-restart-hash")
            .is_none());
    }

    /// The token is an environment variable: a new token rolls the pods (a new pod
    /// template annotation) and leaves the config as it was. A Secret not created yet
    /// digests as absent and does not fail the reconcile.
    #[tokio::test]
    async fn rotated_token_rolls_the_pods() {
        let mut nc = cluster("  replicas: 3\n  auth: {token: {name: creds, key: token}}\n");
        nc.status = Some(settled(&nc, 3));
        let mut applied = Vec::new();
        for token in [None, Some("t1"), Some("t2")] {
            let (tx, rx) = tokio::sync::oneshot::channel();
            run(nc.clone(), move |mut h| async move {
                expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
                let data = token.map(|t| vec![("token", t)]);
                expect_secret(&mut h, "creds", data.as_deref()).await;
                let bodies = expect_applies(&mut h, &["demo-default"], 3).await;
                expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
                let _ = tx.send(bodies);
                h
            })
            .await
            .expect("reconcile succeeds");
            applied.push(rx.await.expect("bodies"));
        }
        let hash = |bodies: &[Value]| {
            bodies[3]["spec"]["template"]["metadata"]["annotations"]
                ["midge.dev/secret-restart-hash"]
                .as_str()
                .map(str::to_string)
        };
        let hashes: Vec<Option<String>> = applied.iter().map(|b| hash(b)).collect();
        assert!(hashes.iter().all(Option::is_some), "{hashes:?}");
        assert_ne!(hashes[0], hashes[1]);
        assert_ne!(hashes[1], hashes[2]);
        let conf = |bodies: &[Value]| bodies[0]["data"]["midge.conf"].clone();
        assert_eq!(
            conf(&applied[1]),
            conf(&applied[2]),
            "the config does not change"
        );
        assert!(!conf(&applied[1])
            .as_str()
            .unwrap_or_default()
            .contains("# secret"));
    }

    /// `tls.routes.generate`: an absent Secret is created once, owned by the cluster, and
    /// used like a user's (mounted, digested into the config); a present one is only read.
    #[tokio::test]
    async fn generated_route_secret_is_created_once() {
        let mut nc = cluster("  replicas: 3\n  tls: {routes: {generate: true}}\n");
        nc.status = Some(settled(&nc, 3));
        let (tx, rx) = tokio::sync::oneshot::channel();
        run(nc.clone(), move |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            expect_secret(&mut h, "demo-routes-tls", None).await;
            let (created, send) = expect(
                &mut h,
                "POST",
                "/api/v1/namespaces/ns/secrets?&fieldManager=midge-operator",
            )
            .await;
            respond(send, 201, created.clone());
            expect_event(&mut h, "RouteCredentialsCreated").await;
            let bodies = expect_applies(&mut h, &["demo-default"], 3).await;
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
            let _ = tx.send((created, bodies));
            h
        })
        .await
        .expect("reconcile succeeds");
        let (created, bodies) = rx.await.expect("bodies");
        assert_eq!(created["metadata"]["name"], "demo-routes-tls");
        assert_eq!(created["type"], "kubernetes.io/tls");
        let owner = &created["metadata"]["ownerReferences"][0];
        assert_eq!(owner["uid"], UID);
        assert_eq!(owner["kind"], "NatsCluster");
        assert_eq!(owner["controller"], true);
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            assert!(created["data"][key].is_string(), "{key}: {created}");
        }
        let conf = bodies[0]["data"]["midge.conf"].as_str().unwrap_or_default();
        let digest_line = conf
            .lines()
            .find(|l| l.starts_with("# secret tls-routes: sha256:"))
            .map(str::to_string);
        assert!(
            digest_line.is_some(),
            "the created Secret is digested: {conf}"
        );
        let volumes = bodies[3]["spec"]["template"]["spec"]["volumes"].to_string();
        assert!(
            volumes.contains("\"secretName\":\"demo-routes-tls\""),
            "{volumes}"
        );

        // Present (whatever it holds): read and digested, never written.
        let (tx, rx) = tokio::sync::oneshot::channel();
        run(nc, move |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            expect_secret(
                &mut h,
                "demo-routes-tls",
                Some(&[("tls.crt", "c"), ("tls.key", "k"), ("ca.crt", "ca")]),
            )
            .await;
            let bodies = expect_applies(&mut h, &["demo-default"], 3).await;
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
            let _ = tx.send(bodies);
            h
        })
        .await
        .expect("reconcile succeeds");
        let bodies = rx.await.expect("bodies");
        let conf = bodies[0]["data"]["midge.conf"].as_str().unwrap_or_default();
        assert!(conf.contains("# secret tls-routes: sha256:"), "{conf}");
        assert_ne!(
            conf.lines()
                .find(|l| l.starts_with("# secret tls-routes:"))
                .map(str::to_string),
            digest_line,
            "the stored Secret is the one digested"
        );
    }

    /// A generated certificate close to its end is not renewed (the Secret is kept) but
    /// warned about.
    #[tokio::test]
    async fn expiring_generated_route_certificate_is_warned_about() {
        let mut nc = cluster("  replicas: 3\n  tls: {routes: {generate: true}}\n");
        nc.status = Some(settled(&nc, 3));
        let plan = validate(&nc).expect("valid");
        // Made 340 days ago: 25 days left.
        let made = SystemTime::now() - Duration::from_secs(340 * 86_400);
        let creds = crate::route_tls::generate(&plan, made).expect("generated");
        run(nc, move |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            let data = [
                ("tls.crt", creds.tls_crt.as_str()),
                ("tls.key", creds.tls_key.as_str()),
                ("ca.crt", creds.ca_crt.as_str()),
            ];
            expect_secret(&mut h, "demo-routes-tls", Some(&data)).await;
            let event = expect_event(&mut h, "RouteCertificateExpiring").await;
            assert_eq!(event["type"], "Warning");
            let note = event["note"].as_str().unwrap_or_default();
            assert!(note.contains("demo-routes-tls expires in 2"), "{note}");
            expect_applies(&mut h, &["demo-default"], 3).await;
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
            h
        })
        .await
        .expect("reconcile succeeds");
    }

    /// `networkPolicy.enabled: false` deletes the policy the operator made, and only it.
    #[tokio::test]
    async fn disabled_network_policy_is_deleted() {
        let mut nc = cluster("  replicas: 3\n  networkPolicy: {enabled: false}\n");
        nc.status = Some(settled(&nc, 3));
        run(nc, |mut h| async move {
            expect_list(&mut h, vec![owned_sts("demo-default", UID)]).await;
            expect_applies_with(&mut h, &["demo-default"], sts_status(3, 3, 1), false).await;
            expect_pdb_list(&mut h, vec![owned("demo-default", UID)]).await;
            expect_list_of(
                &mut h,
                "apis/networking.k8s.io/v1",
                "networkpolicies",
                vec![owned("demo", UID), owned("demo-extra", "someone-else")],
            )
            .await;
            let (_, send) = expect(
                &mut h,
                "DELETE",
                "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo?",
            )
            .await;
            respond(send, 200, owned("demo", UID));
            h
        })
        .await
        .expect("reconcile succeeds");
    }
}
