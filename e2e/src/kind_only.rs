//! Scenarios only a real API server can run (the docker driver has no controller to
//! test): what the operator does when a user or the platform changes its objects behind
//! its back, when its leader dies, and when its CRD is upgraded in place. Run after
//! [`crate::scenarios::run_all`] on the same cluster by `e2e/tests/kind.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::driver::{wait_for, ClusterDriver};
use crate::kind::KindDriver;
use crate::report::{Counts, Report, Row};

/// Where the chart puts the operator (`e2e/run-kind.sh`) and the name of its Lease.
const OPERATOR_NAMESPACE: &str = "midge-system";
const LEASE: &str = "midge-operator";
const POLL: Duration = Duration::from_millis(500);
const WITHIN: Duration = Duration::from_secs(180);
/// The CRD as this checkout ships it: applied again, as a user upgrading does.
const CRD: &str = include_str!("../../config/crd/natsclusters.midge.dev.yaml");

/// The CRD this checkout ships, as the upgrade scenario applies it.
pub fn shipped_crd() -> anyhow::Result<CustomResourceDefinition> {
    serde_yaml::from_str(CRD).context("config/crd/natsclusters.midge.dev.yaml")
}

/// Runs the kind-only scenarios, numbered after the shared ones, into `report`.
pub async fn run(driver: &mut KindDriver, report: &mut Report) {
    let started = Instant::now();
    let outcome = statefulset_deleted(driver).await;
    push(
        report,
        "9 kind: deleted StatefulSet comes back",
        started,
        outcome,
    );

    let started = Instant::now();
    let outcome = configmap_edit_reverted(driver).await;
    push(
        report,
        "10 kind: hand-edited ConfigMap reverted",
        started,
        outcome,
    );

    let started = Instant::now();
    let outcome = leader_killed(driver).await;
    push(report, "11 kind: operator leader killed", started, outcome);

    let started = Instant::now();
    let outcome = crd_upgraded_in_place(driver).await;
    push(report, "12 kind: CRD upgraded in place", started, outcome);
}

fn push(report: &mut Report, scenario: &str, started: Instant, outcome: anyhow::Result<String>) {
    report.rows.push(Row {
        scenario: scenario.to_string(),
        duration: started.elapsed(),
        counts: Counts::default(),
        outcome: outcome.map_err(|e| format!("{e:#}")),
    });
}

/// Objects of the cluster carry `app.kubernetes.io/instance=<name>`.
fn selector(driver: &KindDriver) -> ListParams {
    ListParams::default().labels(&format!(
        "app.kubernetes.io/instance={}",
        driver.cluster_name()
    ))
}

/// `kubectl delete statefulset` of one pool (its pods go with it): the operator creates it
/// again and the pool serves again.
async fn statefulset_deleted(driver: &mut KindDriver) -> anyhow::Result<String> {
    let sets: Api<StatefulSet> = Api::namespaced(driver.client(), driver.namespace());
    let victim = sets
        .list(&selector(driver))
        .await?
        .items
        .into_iter()
        .next()
        .context("the cluster has no StatefulSet")?;
    let name = victim
        .metadata
        .name
        .clone()
        .context("unnamed StatefulSet")?;
    let old_uid = victim.metadata.uid.clone();
    sets.delete(&name, &DeleteParams::background()).await?;
    wait_for(
        &format!("StatefulSet {name} to be created again"),
        WITHIN,
        POLL,
        || async {
            let now = sets.get_opt(&name).await?;
            Ok(now
                .filter(|s| s.metadata.uid != old_uid && s.metadata.deletion_timestamp.is_none())
                .map(|_| ()))
        },
    )
    .await?;
    driver.wait_ready(WITHIN).await?;
    Ok(format!("{name} recreated, every server Ready again"))
}

/// A hand edit of a rendered ConfigMap is overwritten with what the spec renders.
async fn configmap_edit_reverted(driver: &KindDriver) -> anyhow::Result<String> {
    let maps: Api<ConfigMap> = Api::namespaced(driver.client(), driver.namespace());
    let original = maps
        .list(&selector(driver))
        .await?
        .items
        .into_iter()
        .find(|m| {
            m.data
                .as_ref()
                .is_some_and(|d| d.contains_key("midge.conf"))
        })
        .context("no ConfigMap with a midge.conf")?;
    let name = original
        .metadata
        .name
        .clone()
        .context("unnamed ConfigMap")?;
    let want: BTreeMap<String, String> = original.data.clone().unwrap_or_default();
    let mut edited = want.clone();
    if let Some(conf) = edited.get_mut("midge.conf") {
        conf.push_str("\n# edited by hand: the operator must put this back\n");
    }
    let patch = serde_json::json!({ "data": edited });
    maps.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .context("editing the ConfigMap")?;
    wait_for(
        &format!("ConfigMap {name} to be reverted"),
        WITHIN,
        POLL,
        || async {
            let now = maps.get(&name).await?;
            Ok((now.data.unwrap_or_default() == want).then_some(()))
        },
    )
    .await?;
    Ok(format!("{name} reverted"))
}

/// The pod holding the operator's Lease is killed: another replica (or the pod the
/// Deployment starts instead) takes the Lease and reconciles; a hand edit made afterwards is
/// reverted by the new leader.
async fn leader_killed(driver: &KindDriver) -> anyhow::Result<String> {
    let leases: Api<Lease> = Api::namespaced(driver.client(), OPERATOR_NAMESPACE);
    let holder = |lease: &Lease| {
        lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty())
    };
    let first = wait_for("the operator's Lease to be held", WITHIN, POLL, || async {
        Ok(leases.get_opt(LEASE).await?.as_ref().and_then(holder))
    })
    .await?;
    let pods: Api<Pod> = Api::namespaced(driver.client(), OPERATOR_NAMESPACE);
    pods.delete(&first, &DeleteParams::default().grace_period(0))
        .await
        .with_context(|| {
            format!("deleting the leader pod {first} (the holder's identity is its pod name)")
        })?;
    let second = wait_for(
        "another replica to take the Lease",
        WITHIN,
        POLL,
        || async {
            Ok(leases
                .get_opt(LEASE)
                .await?
                .as_ref()
                .and_then(holder)
                .filter(|h| *h != first))
        },
    )
    .await?;
    configmap_edit_reverted(driver)
        .await
        .context("the new leader does not reconcile")?;
    Ok(format!(
        "leader {first} killed, {second} took over and reconciles"
    ))
}

/// The CRD applied again over the running one (as `kubectl apply -f config/crd/` on an
/// upgrade does; Helm never upgrades `crds/`): it stays Established, the NatsCluster keeps
/// its spec and status, and the operator keeps reconciling it.
async fn crd_upgraded_in_place(driver: &mut KindDriver) -> anyhow::Result<String> {
    let crds: Api<CustomResourceDefinition> = Api::all(driver.client());
    let mut crd = shipped_crd()?;
    let name = crd.metadata.name.clone().context("unnamed CRD")?;
    let before = crds.get(&name).await?.metadata.generation;
    // A change the API server must store: the upgrade is really applied, not a no-op.
    crd.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(
            "midge.dev/e2e-upgrade".into(),
            format!("{}", std::process::id()),
        );
    crd.metadata.managed_fields = None;
    crds.patch(
        &name,
        &PatchParams::apply("midge-e2e-crd-upgrade").force(),
        &Patch::Apply(&crd),
    )
    .await
    .context("applying the CRD again")?;
    wait_for("the CRD to be Established", WITHIN, POLL, || async {
        let now = crds.get(&name).await?;
        let established = now
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Established" && c.status == "True");
        Ok(established.then_some(()))
    })
    .await?;
    driver.wait_ready(WITHIN).await?;
    configmap_edit_reverted(driver)
        .await
        .context("the operator stopped reconciling after the CRD upgrade")?;
    Ok(format!(
        "{name} re-applied (generation {before:?}), cluster Ready and reconciled"
    ))
}
