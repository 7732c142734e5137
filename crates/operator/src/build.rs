//! Builds the Kubernetes objects for a validated [`ClusterPlan`]. Pure and deterministic:
//! the same plan always yields byte-identical objects (maps are ordered, no clocks, no
//! random names), so server-side apply of an unchanged spec is a no-op.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    LocalObjectReference, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector as CoreSecretKeySelector, SecretVolumeSource,
    SecurityContext, Service, ServicePort, ServiceSpec, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use midge::options::{ClusterOptions, RemoteLeaf, RemoteTls, TlsOptions};
use midge::Options;

use crate::crd::{NodePool, PoolRole, ServiceType, TlsSecret};
use crate::validate::{
    Auth, ClusterPlan, NetworkPeers, PoolPlan, HEADLESS_SUFFIX, LEAFNODES_SUFFIX,
};

pub const FIELD_MANAGER: &str = "midge-operator";
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_POOL: &str = "midge.dev/pool";
/// `core` or `leaf` on every pod: selects the core servers for the client Service and the
/// leaf node Service, and the leaf servers in the NetworkPolicy. Not part of any
/// StatefulSet selector (those are immutable), so a pool may change its role.
pub const LABEL_ROLE: &str = "midge.dev/role";
pub const RESTART_HASH_ANNOTATION: &str = "midge.dev/restart-hash";

pub const CONFIG_DIR: &str = "/etc/midge";
pub const CONFIG_FILE: &str = "midge.conf";
pub const RUN_DIR: &str = "/var/run/midge";
pub const PID_FILE: &str = "/var/run/midge/midge.pid";
/// Where the Dockerfile puts the broker. The image is FROM scratch: no shell and no PATH,
/// so an exec hook must name the binary by its absolute path or it is "not found".
pub const BROKER_BIN: &str = "/midge";
const AUTH_DIR: &str = "/etc/midge-auth";
const USERS_FILE: &str = "users.conf";
/// How the config includes the users Secret: relative to the config file (an absolute path
/// would be joined onto its directory), and outside the ConfigMap's read-only directory.
pub const USERS_INCLUDE: &str = "../midge-auth/users.conf";
const CLIENT_TLS_DIR: &str = "/etc/midge-tls/client";
const ROUTE_TLS_DIR: &str = "/etc/midge-tls/routes";
const LEAF_TLS_DIR: &str = "/etc/midge-tls/leafnodes";
pub const AUTH_TOKEN_ENV: &str = "MIDGE_AUTH_TOKEN";
/// Leaf node credentials reach the pods as environment variables from their Secret, never
/// through the ConfigMap: first the Secret's values as they are...
pub const LEAF_SECRET_USER_ENV: &str = "MIDGE_LEAF_SECRET_USER";
pub const LEAF_SECRET_PASSWORD_ENV: &str = "MIDGE_LEAF_SECRET_PASSWORD";
/// ...then the variables the config names, which the kubelet composes from those
/// (`$(VAR)`) inside double quotes: the broker reads a variable's text as a config value,
/// where a bare `yes` would be a boolean and `1k` a number. On core pods, the user and
/// password the leaf node listener takes; on leaf pods, the whole remote URL with them
/// (the only place the broker's remotes take credentials).
pub const LEAF_USER_ENV: &str = "MIDGE_LEAF_USER";
pub const LEAF_PASSWORD_ENV: &str = "MIDGE_LEAF_PASSWORD";
pub const LEAF_URL_ENV: &str = "MIDGE_LEAF_URL";
/// The image runs as this numeric user and group; numeric so `runAsNonRoot` can be
/// verified by the kubelet without reading the image's passwd file.
const RUN_AS: i64 = 10001;
/// Time left after lame duck mode for the process to exit before SIGKILL.
const SHUTDOWN_SLACK_SECONDS: u64 = 20;

/// Everything reconcile applies for one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The config shared by the pools without one of their own.
    pub config_map: ConfigMap,
    /// One per pool with its own config (leaf pools, pools with their own limits), in
    /// spec order.
    pub pool_config_maps: Vec<ConfigMap>,
    pub headless_service: Service,
    /// The core servers' client port (every server's when there is no leaf pool).
    pub client_service: Service,
    /// The core servers' leaf node port, which leaf pools dial; only with leaf pools.
    pub leafnodes_service: Option<Service>,
    /// One client Service per leaf pool (`<cluster>-<pool>`), in spec order: edge clients
    /// stay on their edge servers.
    pub pool_client_services: Vec<Service>,
    /// One per pool, in spec order.
    pub stateful_sets: Vec<StatefulSet>,
    /// One per pool (same names as the StatefulSets), so that an unavailable server of one
    /// pool (an offline edge node) never blocks draining the nodes of another.
    pub pod_disruption_budgets: Vec<PodDisruptionBudget>,
    /// Absent when `spec.networkPolicy.enabled` is false (then it is deleted).
    pub network_policy: Option<NetworkPolicy>,
}

impl Children {
    /// Names of every ConfigMap, the shared one first.
    pub fn config_map_names(&self) -> Vec<String> {
        std::iter::once(&self.config_map)
            .chain(&self.pool_config_maps)
            .filter_map(|c| c.metadata.name.clone())
            .collect()
    }

    /// Names of every Service.
    pub fn service_names(&self) -> Vec<String> {
        [&self.headless_service, &self.client_service]
            .into_iter()
            .chain(&self.leafnodes_service)
            .chain(&self.pool_client_services)
            .filter_map(|s| s.metadata.name.clone())
            .collect()
    }

    /// Every object as a multi-document YAML stream, in apply order.
    pub fn to_yaml(&self) -> Result<String, serde_yaml::Error> {
        let mut docs = vec![serde_yaml::to_string(&self.config_map)?];
        for config_map in &self.pool_config_maps {
            docs.push(serde_yaml::to_string(config_map)?);
        }
        docs.push(serde_yaml::to_string(&self.headless_service)?);
        docs.push(serde_yaml::to_string(&self.client_service)?);
        if let Some(service) = &self.leafnodes_service {
            docs.push(serde_yaml::to_string(service)?);
        }
        for service in &self.pool_client_services {
            docs.push(serde_yaml::to_string(service)?);
        }
        for sts in &self.stateful_sets {
            docs.push(serde_yaml::to_string(sts)?);
        }
        for pdb in &self.pod_disruption_budgets {
            docs.push(serde_yaml::to_string(pdb)?);
        }
        if let Some(policy) = &self.network_policy {
            docs.push(serde_yaml::to_string(policy)?);
        }
        Ok(docs.iter().map(|d| format!("---\n{d}")).collect::<String>())
    }
}

pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}{HEADLESS_SUFFIX}")
}

pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}

pub fn stateful_set_name(cluster: &str, pool: &str) -> String {
    format!("{cluster}-{pool}")
}

/// The ConfigMap of a pool with its own config.
pub fn pool_config_map_name(cluster: &str, pool: &str) -> String {
    format!("{cluster}-{pool}-config")
}

/// The ConfigMap `pool`'s servers read.
pub fn config_map_of(plan: &ClusterPlan, pool: &NodePool) -> String {
    if ClusterPlan::has_own_config(pool) {
        pool_config_map_name(&plan.name, &pool.name)
    } else {
        config_map_name(&plan.name)
    }
}

pub fn leafnodes_service_name(cluster: &str) -> String {
    format!("{cluster}{LEAFNODES_SUFFIX}")
}

/// A leaf pool's client Service (the StatefulSet's name: another kind, no clash).
pub fn pool_client_service_name(cluster: &str, pool: &str) -> String {
    stateful_set_name(cluster, pool)
}

/// The URL leaf servers dial: the core servers' leaf node port behind their Service.
pub fn leaf_remote_url(plan: &ClusterPlan) -> String {
    leaf_remote_url_as(plan, "")
}

/// [`leaf_remote_url`] with `userinfo` (`user:password@`, or empty) in front of the host.
pub fn leaf_remote_url_as(plan: &ClusterPlan, userinfo: &str) -> String {
    format!(
        "nats-leaf://{userinfo}{}.{}.svc.{}:{}",
        leafnodes_service_name(&plan.name),
        plan.namespace,
        plan.cluster_domain,
        plan.ports.leafnodes
    )
}

/// The address edge clients of leaf pool `pool` use.
pub fn pool_client_url(plan: &ClusterPlan, pool: &str) -> String {
    let scheme = if plan.client_tls.is_some() {
        "tls"
    } else {
        "nats"
    };
    format!(
        "{scheme}://{}.{}.svc.{}:{}",
        pool_client_service_name(&plan.name, pool),
        plan.namespace,
        plan.cluster_domain,
        plan.ports.client
    )
}

/// The address clients inside the Kubernetes cluster use.
pub fn client_url(plan: &ClusterPlan) -> String {
    let scheme = if plan.client_tls.is_some() {
        "tls"
    } else {
        "nats"
    };
    format!(
        "{scheme}://{}.{}.svc.{}:{}",
        plan.name, plan.namespace, plan.cluster_domain, plan.ports.client
    )
}

/// Labels that select this cluster's pods (all pools). Never includes a version: a
/// selector that changes on upgrade strands the old pods outside their Service.
pub fn cluster_selector(plan: &ClusterPlan) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), "midge".to_string()),
        (LABEL_INSTANCE.to_string(), plan.name.clone()),
    ])
}

/// Label selector for every object this operator manages for one cluster.
pub fn managed_selector(cluster: &str) -> String {
    format!("{LABEL_NAME}=midge,{LABEL_INSTANCE}={cluster},{LABEL_MANAGED_BY}={FIELD_MANAGER}")
}

fn role_selector(plan: &ClusterPlan, role: PoolRole) -> BTreeMap<String, String> {
    let mut labels = cluster_selector(plan);
    labels.insert(LABEL_ROLE.to_string(), role_name(role).to_string());
    labels
}

fn role_name(role: PoolRole) -> &'static str {
    match role {
        PoolRole::Core => "core",
        PoolRole::Leaf => "leaf",
    }
}

fn pool_selector(plan: &ClusterPlan, pool: &str) -> BTreeMap<String, String> {
    let mut labels = cluster_selector(plan);
    labels.insert(LABEL_POOL.to_string(), pool.to_string());
    labels
}

fn labels(plan: &ClusterPlan, pool: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = match pool {
        Some(pool) => pool_selector(plan, pool),
        None => cluster_selector(plan),
    };
    labels.insert(LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string());
    labels
}

pub(crate) fn metadata(
    plan: &ClusterPlan,
    name: String,
    pool: Option<&str>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(plan.namespace.clone()),
        labels: Some(labels(plan, pool)),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..ObjectMeta::default()
    }
}

/// Builds every child object. `owner` is the controller reference to the NatsCluster; it
/// is absent when rendering a manifest that was never stored in a cluster (no uid yet).
pub fn build(plan: &ClusterPlan, owner: Option<&OwnerReference>) -> Children {
    let config = render_broker_config(plan, &plan.pools);
    Children {
        config_map: ConfigMap {
            metadata: metadata(plan, config_map_name(&plan.name), None, owner),
            data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), config)])),
            ..ConfigMap::default()
        },
        pool_config_maps: plan
            .pools
            .iter()
            .filter(|pool| ClusterPlan::has_own_config(pool))
            .map(|pool| ConfigMap {
                metadata: metadata(
                    plan,
                    pool_config_map_name(&plan.name, &pool.name),
                    Some(&pool.name),
                    owner,
                ),
                data: Some(BTreeMap::from([(
                    CONFIG_FILE.to_string(),
                    render_pool_config(plan, pool),
                )])),
                ..ConfigMap::default()
            })
            .collect(),
        headless_service: headless_service(plan, owner),
        client_service: client_service(plan, owner),
        leafnodes_service: plan
            .has_leaf_pools()
            .then(|| leafnodes_service(plan, owner)),
        pool_client_services: plan
            .leaf_pools()
            .map(|pool| pool_client_service(plan, pool, owner))
            .collect(),
        stateful_sets: plan
            .pools
            .iter()
            .map(|pool| stateful_set(plan, pool, owner))
            .collect(),
        pod_disruption_budgets: plan
            .pools
            .iter()
            .map(|pool| pod_disruption_budget(plan, pool, owner))
            .collect(),
        network_policy: plan
            .network_policy
            .as_ref()
            .map(|peers| network_policy(plan, peers, owner)),
    }
}

fn pod_disruption_budget(
    plan: &ClusterPlan,
    pool: &NodePool,
    owner: Option<&OwnerReference>,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(
            plan,
            stateful_set_name(&plan.name, &pool.name),
            Some(&pool.name),
            owner,
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(pool_selector(plan, &pool.name)),
                ..LabelSelector::default()
            }),
            // A pod that is not ready serves nobody: evicting it must not wait for it to
            // become ready (a crash-looping server would block every drain otherwise).
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// Who may reach the broker pods: the route port only from the cluster's own pods (any
/// pod reaching it would join the mesh and see every message), the client and monitoring
/// ports from the configured peers, every source when none are configured.
fn network_policy(
    plan: &ClusterPlan,
    peers: &NetworkPeers,
    owner: Option<&OwnerReference>,
) -> NetworkPolicy {
    let port = |number: i32| NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some("TCP".into()),
        ..NetworkPolicyPort::default()
    };
    let own_pods = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(cluster_selector(plan)),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    let from = |list: &[NetworkPolicyPeer]| (!list.is_empty()).then(|| list.to_vec());
    // Server-to-server ports, open to the cluster's own pods only: the route port, and the
    // core servers' leaf node port that leaf pools dial (when there are any).
    let mut mesh_ports = vec![port(plan.ports.cluster)];
    if plan.has_leaf_pools() {
        mesh_ports.push(port(plan.ports.leafnodes));
    }
    NetworkPolicy {
        metadata: metadata(plan, plan.name.clone(), None, owner),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(cluster_selector(plan)),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(vec![own_pods]),
                    ports: Some(mesh_ports),
                },
                NetworkPolicyIngressRule {
                    from: from(&peers.client_from),
                    ports: Some(vec![port(plan.ports.client)]),
                },
                NetworkPolicyIngressRule {
                    from: from(&peers.monitoring_from),
                    ports: Some(vec![port(plan.ports.monitor)]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..ServicePort::default()
    }
}

fn headless_service(plan: &ClusterPlan, owner: Option<&OwnerReference>) -> Service {
    Service {
        metadata: metadata(plan, headless_service_name(&plan.name), None, owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_string()),
            // Routes are dialled by pod DNS name before the peers are ready: a server only
            // becomes ready once it can reach the mesh, so waiting for readiness would
            // deadlock cluster formation.
            publish_not_ready_addresses: Some(true),
            selector: Some(cluster_selector(plan)),
            ports: Some({
                let mut ports = vec![
                    service_port("client", plan.ports.client),
                    service_port("cluster", plan.ports.cluster),
                    service_port("monitor", plan.ports.monitor),
                ];
                if plan.has_leaf_pools() {
                    ports.push(service_port("leafnodes", plan.ports.leafnodes));
                }
                ports
            }),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A client Service of the spec's type and annotations selecting `selector`.
fn typed_client_service(
    plan: &ClusterPlan,
    meta: ObjectMeta,
    selector: BTreeMap<String, String>,
) -> Service {
    let mut meta = meta;
    if !plan.service_annotations.is_empty() {
        meta.annotations = Some(plan.service_annotations.clone());
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(plan.service_type.as_str().to_string()),
            selector: Some(selector),
            ports: Some(vec![service_port("client", plan.ports.client)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The core servers' clients. Without leaf pools it selects every server of the cluster
/// as it always did, so existing clusters keep their selector; with them, only core
/// servers (cloud clients never land on an edge server).
fn client_service(plan: &ClusterPlan, owner: Option<&OwnerReference>) -> Service {
    let selector = if plan.has_leaf_pools() {
        role_selector(plan, PoolRole::Core)
    } else {
        cluster_selector(plan)
    };
    typed_client_service(
        plan,
        metadata(plan, plan.name.clone(), None, owner),
        selector,
    )
}

/// The clients of one leaf pool: edge clients connect to their own edge servers.
fn pool_client_service(
    plan: &ClusterPlan,
    pool: &NodePool,
    owner: Option<&OwnerReference>,
) -> Service {
    typed_client_service(
        plan,
        metadata(
            plan,
            pool_client_service_name(&plan.name, &pool.name),
            Some(&pool.name),
            owner,
        ),
        pool_selector(plan, &pool.name),
    )
}

/// The core servers' leaf node port, which every leaf server dials (cluster-internal).
/// Ready servers only: a core server in lame duck mode refuses leaf nodes.
fn leafnodes_service(plan: &ClusterPlan, owner: Option<&OwnerReference>) -> Service {
    Service {
        metadata: metadata(plan, leafnodes_service_name(&plan.name), None, owner),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(role_selector(plan, PoolRole::Core)),
            ports: Some(vec![service_port("leafnodes", plan.ports.leafnodes)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// DNS name of one server's route endpoint.
pub(crate) fn route_url(plan: &ClusterPlan, pool: &str, ordinal: i32) -> String {
    format!(
        "nats://{}-{ordinal}.{}.{}.svc.{}:{}",
        stateful_set_name(&plan.name, pool),
        headless_service_name(&plan.name),
        plan.namespace,
        plan.cluster_domain,
        plan.ports.cluster
    )
}

/// The broker options every server of the cluster runs with, as the broker's own type.
///
/// What `Options` cannot hold is added by [`render_broker_config`]: the per-pod server
/// name, the auth token (an environment variable), the users file (an include) and TLS
/// (the broker has no TLS yet). The routes list names every core pod, the pod's own name
/// included (the broker drops a route to itself), and is re-rendered on every scale so
/// running servers learn new peers from the file. With leaf pools in `pools`, the core
/// servers also listen for leaf nodes.
pub fn broker_options(plan: &ClusterPlan, pools: &[PoolPlan]) -> Options {
    let mut options = server_options(plan);
    options.jetstream = crate::jetstream::options(plan.jetstream.as_ref());
    options.cluster.name = Some(plan.name.clone());
    options.cluster.routes = pools
        .iter()
        .filter(|p| p.role == PoolRole::Core)
        .flat_map(|pool| (0..pool.replicas).map(|ordinal| route_url(plan, &pool.name, ordinal)))
        .collect();
    if pools.iter().any(|p| p.role == PoolRole::Leaf) {
        options.leafnodes.port = Some(port(plan.ports.leafnodes));
        if let Some(tls) = &plan.leaf_tls {
            let mut hub = TlsOptions::new(
                format!("{LEAF_TLS_DIR}/tls.crt"),
                format!("{LEAF_TLS_DIR}/tls.key"),
            );
            if tls.verify {
                hub.ca_file = Some(format!("{LEAF_TLS_DIR}/ca.crt").into());
                hub.verify = true;
            }
            options.leafnodes.tls = Some(hub);
        }
    }
    options
}

/// The options of a pool with its own config ([`ClusterPlan::has_own_config`]).
///
/// A core pool runs the cluster's options with its own limits. A leaf pool's servers are
/// routed among themselves only, as a cluster named `<cluster>-<pool>` (a different name
/// from the core's: that is how the hub tells a leaf cluster apart), and each dials the
/// core servers' leaf node Service. The route port is always open, also with one server,
/// so that scaling a leaf pool from one server to more is a reload, not a restart.
pub fn pool_broker_options(plan: &ClusterPlan, pool: &PoolPlan) -> Options {
    let mut options = match pool.role {
        PoolRole::Core => broker_options(plan, &plan.pools),
        PoolRole::Leaf => {
            let mut options = server_options(plan);
            options.cluster.name = Some(format!("{}-{}", plan.name, pool.name));
            options.cluster.routes = (0..pool.replicas)
                .map(|ordinal| route_url(plan, &pool.name, ordinal))
                .collect();
            let tls = plan.leaf_tls.as_ref().map(|tls| RemoteTls {
                ca_file: Some(format!("{LEAF_TLS_DIR}/ca.crt").into()),
                cert_file: tls.verify.then(|| format!("{LEAF_TLS_DIR}/tls.crt").into()),
                key_file: tls.verify.then(|| format!("{LEAF_TLS_DIR}/tls.key").into()),
                timeout: TlsOptions::DEFAULT_TIMEOUT,
            });
            options.leafnodes.remotes = vec![RemoteLeaf {
                urls: vec![leaf_remote_url(plan)],
                tls,
                ..RemoteLeaf::default()
            }];
            options
        }
    };
    options.jetstream = crate::jetstream::options(pool.jetstream.as_ref());
    let limit = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
    if let Some(b) = &pool.broker {
        if let Some(v) = b.max_payload {
            options.max_payload = limit(v);
        }
        if let Some(v) = b.max_connections {
            options.max_connections = limit(v);
        }
        if let Some(v) = b.max_subscriptions {
            options.max_subscriptions = limit(v);
        }
        if let Some(v) = b.max_pending {
            options.max_pending = limit(v);
        }
    }
    options
}

/// What every server runs with, core or leaf: ports, timers, the cluster's limits, and a
/// route listener (the routes themselves are the caller's).
fn server_options(plan: &ClusterPlan) -> Options {
    let b = &plan.broker;
    let mut options = Options {
        // Each pod sets its own name from `$POD_NAME` (see render_broker_config).
        server_name: None,
        port: port(plan.ports.client),
        http_port: Some(port(plan.ports.monitor)),
        // Explicit (the default listen address) because the file always names the
        // monitoring host, so the file reads back as exactly these options.
        http_host: Some(Options::default().host),
        pid_file: Some(PID_FILE.into()),
        // The kubelet swaps the ConfigMap's `..data` symlink on every update; watching it
        // is how running servers pick up new limits and routes without a restart.
        config_watch: true,
        lame_duck_duration: Duration::from_millis(b.lame_duck_duration.millis),
        lame_duck_grace_period: Duration::from_millis(b.lame_duck_grace_period.millis),
        cluster: ClusterOptions {
            port: Some(port(plan.ports.cluster)),
            // Clients coming through a load balancer or node port cannot reach pod IPs, so
            // the servers must not hand those out as reconnect URLs.
            no_advertise: plan.service_type != ServiceType::ClusterIP,
            ..ClusterOptions::default()
        },
        ..Options::default()
    };
    // Validation guarantees these are positive (and max_subscriptions >= 0); saturating
    // keeps a value the platform cannot represent at the platform's largest instead.
    let limit = |v: i64| usize::try_from(v).unwrap_or(usize::MAX);
    if let Some(v) = b.max_payload {
        options.max_payload = limit(v);
    }
    if let Some(v) = b.max_connections {
        options.max_connections = limit(v);
    }
    if let Some(v) = b.max_subscriptions {
        options.max_subscriptions = limit(v);
    }
    if let Some(v) = b.max_pending {
        options.max_pending = limit(v);
    }
    if let Some(v) = b.ping_max {
        options.ping_max = u32::try_from(v).unwrap_or(u32::MAX);
    }
    if let Some(d) = &b.ping_interval {
        options.ping_interval = Duration::from_millis(d.millis);
    }
    if let Some(d) = &b.write_deadline {
        options.write_deadline = Duration::from_millis(d.millis);
    }
    options
}

/// A port from the plan; validation keeps ports within 1..=65535.
fn port(value: i32) -> u16 {
    u16::try_from(value).unwrap_or(0)
}

/// Renders `midge.conf`: [`broker_options`] written by the broker itself
/// ([`Options::to_conf_string`], so the file always reads back as those options), plus the
/// few things a shared `Options` value cannot say. Those rely on the config format's rule
/// that a repeated key replaces the earlier value, so they come after the broker's text.
pub fn render_broker_config(plan: &ClusterPlan, pools: &[PoolPlan]) -> String {
    render_options(plan, &broker_options(plan, pools))
}

/// Renders the `midge.conf` of a pool with its own config ([`pool_broker_options`]): the
/// same file as [`render_broker_config`] apart from what the pool's options change.
pub fn render_pool_config(plan: &ClusterPlan, pool: &PoolPlan) -> String {
    render_options(plan, &pool_broker_options(plan, pool))
}

fn render_options(plan: &ClusterPlan, options: &Options) -> String {
    let mut out = String::new();
    // `write!` into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        out,
        "# Generated by midge-operator for NatsCluster {}/{}; edits are overwritten.",
        plan.namespace, plan.name
    );
    // One ConfigMap serves every pod, so the name comes from the pod's environment (the
    // downward API sets POD_NAME); `Options::server_name` could only hold one literal.
    let _ = writeln!(out, "server_name: $POD_NAME");
    let mut body = options.to_conf_string();
    if plan.route_tls.is_some() {
        let mut tls = String::new();
        render_tls(&mut tls, "  ", ROUTE_TLS_DIR, true);
        insert_into_block(&mut body, "cluster", &tls);
    }
    if plan.leaf_auth.is_some() {
        // The credentials are environment variables (see LEAF_USER_ENV): written into
        // `Options` they would be quoted as literals. The hub's block replaces the
        // broker's `authorization` (a repeated key wins), the remote's URL is the variable.
        if options.leafnodes.port.is_some() {
            let block = format!(
                "  authorization {{\n    user: ${LEAF_USER_ENV}\n    password: ${LEAF_PASSWORD_ENV}\n    timeout: \"{}\"\n  }}\n",
                midge::conf::format_duration(options.leafnodes.auth_timeout)
            );
            insert_into_block(&mut body, "leafnodes", &block);
        }
        if !options.leafnodes.remotes.is_empty() {
            body = body.replacen(
                &format!("\"{}\"", leaf_remote_url(plan)),
                &format!("${LEAF_URL_ENV}"),
                1,
            );
        }
    }
    out.push_str(&body);
    match &plan.auth {
        Some(Auth::Token(_)) => {
            // The token is a Secret exposed as an environment variable; written into
            // `Options` it would be quoted as a literal. Replaces the broker's block.
            let _ = writeln!(
                out,
                "authorization {{\n  token: ${AUTH_TOKEN_ENV}\n  timeout: \"{}\"\n}}",
                midge::conf::format_duration(options.auth.timeout)
            );
        }
        Some(Auth::Users(_)) => {
            // The users file (a Secret) holds an `authorization {}` block that replaces
            // the broker's. Includes are resolved relative to this file (an absolute path
            // would be joined onto its directory), and the Secret cannot be mounted below
            // the ConfigMap's read-only directory, hence the `..`.
            let _ = writeln!(out, "include \"{USERS_INCLUDE}\"");
        }
        None => {}
    }
    if let Some(tls) = &plan.client_tls {
        // midge has no TLS yet (it refuses `tls`), so `Options` has no field for it; the
        // block is written for the broker that will, and the tests pin the refusal.
        render_tls(&mut out, "", CLIENT_TLS_DIR, tls.verify);
    }
    out
}

/// Puts `block` at the end of the top-level block `name {}` (`cluster`, which the operator
/// always enables, or `leafnodes`): before the first line that closes a top-level block
/// after its opening. Should the block be missing, `block` lands at the end instead, which
/// the config tests catch as a parse difference.
fn insert_into_block(conf: &mut String, name: &str, block: &str) {
    let end = conf
        .find(&format!("\n{name} {{\n"))
        .and_then(|open| conf[open..].find("\n}\n").map(|close| open + close + 1));
    match end {
        Some(at) => conf.insert_str(at, block),
        _ => conf.push_str(block),
    }
}

fn render_tls(out: &mut String, indent: &str, dir: &str, verify: bool) {
    let _ = writeln!(out, "{indent}tls {{");
    let _ = writeln!(out, "{indent}  cert_file: \"{dir}/tls.crt\"");
    let _ = writeln!(out, "{indent}  key_file: \"{dir}/tls.key\"");
    if verify {
        let _ = writeln!(out, "{indent}  ca_file: \"{dir}/ca.crt\"");
        let _ = writeln!(out, "{indent}  verify: true");
    }
    let _ = writeln!(out, "{indent}}}");
}

/// Longer than lame duck grace + duration so clients have moved before SIGKILL.
pub fn termination_grace_seconds(plan: &ClusterPlan) -> i64 {
    let millis = plan.broker.lame_duck_duration.millis + plan.broker.lame_duck_grace_period.millis;
    let seconds = millis.div_ceil(1000) + SHUTDOWN_SLACK_SECONDS;
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

/// Liveness: the server answers. Readiness and start-up: it also joined its mesh once
/// (midge's `/healthz?routes=1`: a route connected, or nothing to join, or a minute passed),
/// so a rolling restart moves on only once the restarted server routes again.
const LIVENESS_PATH: &str = "/healthz";
const READINESS_PATH: &str = "/healthz?routes=1";

fn http_probe(path: &str, period: i32, timeout: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("monitor".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(timeout),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn secret_volume(name: &str, secret: &str, items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: name.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            items,
            // Group-readable so the non-root broker can read it through fsGroup.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

fn tls_volume(name: &str, tls: &TlsSecret) -> Volume {
    secret_volume(name, &tls.secret_name, None)
}

fn stateful_set(
    plan: &ClusterPlan,
    pool: &PoolPlan,
    owner: Option<&OwnerReference>,
) -> StatefulSet {
    let name = stateful_set_name(&plan.name, &pool.name);

    let mut pod_labels = pool.pod_labels.clone();
    pod_labels.extend(labels(plan, Some(&pool.name)));
    pod_labels.insert(LABEL_ROLE.into(), role_name(pool.role).into());
    let mut annotations = pool.pod_annotations.clone();
    if plan.metrics {
        annotations.insert("prometheus.io/scrape".into(), "true".into());
        annotations.insert("prometheus.io/port".into(), plan.ports.monitor.to_string());
        annotations.insert("prometheus.io/path".into(), "/metrics".into());
    }
    // Start-up options as the broker splits them (see `broker_config`): changing one rolls
    // the pods, while reloadable changes only update the ConfigMap the servers watch.
    annotations.insert(
        RESTART_HASH_ANNOTATION.into(),
        plan.restart_hash_of(pool).to_string(),
    );

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            // Mounted as a directory, never with subPath: the kubelet only propagates
            // ConfigMap updates into directory mounts, and the broker reloads on change.
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_of(plan, pool),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "run".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    let mut mounts = vec![
        mount("config", CONFIG_DIR, true),
        mount("run", RUN_DIR, false),
    ];
    let mut env = vec![EnvVar {
        name: "POD_NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    match &plan.auth {
        Some(Auth::Token(token)) => env.push(EnvVar {
            name: AUTH_TOKEN_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(CoreSecretKeySelector {
                    name: token.name.clone(),
                    key: token.key.clone(),
                    ..CoreSecretKeySelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }),
        Some(Auth::Users(users)) => {
            volumes.push(secret_volume(
                "auth",
                &users.name,
                Some(vec![KeyToPath {
                    key: users.key.clone(),
                    path: USERS_FILE.into(),
                    ..KeyToPath::default()
                }]),
            ));
            mounts.push(mount("auth", AUTH_DIR, true));
        }
        None => {}
    }
    if let Some(leaf) = &plan.leaf_auth {
        env.extend(leaf_credential_env(plan, pool, &leaf.secret_name));
    }
    if let Some(tls) = &plan.client_tls {
        volumes.push(tls_volume("tls-client", tls));
        mounts.push(mount("tls-client", CLIENT_TLS_DIR, true));
    }
    if let Some(tls) = &plan.route_tls {
        volumes.push(tls_volume("tls-routes", tls));
        mounts.push(mount("tls-routes", ROUTE_TLS_DIR, true));
    }
    // Core servers present it to leaf servers, which verify it (and with `verify` the
    // other way round too).
    let leaf_port = pool.role == PoolRole::Core && plan.has_leaf_pools();
    if let Some(tls) = &plan.leaf_tls {
        if leaf_port || pool.role == PoolRole::Leaf {
            volumes.push(tls_volume("tls-leafnodes", tls));
            mounts.push(mount("tls-leafnodes", LEAF_TLS_DIR, true));
        }
    }
    // The JetStream store: the pod's own claim, or scratch space for a pool with memory
    // streams only (the broker creates its directory there at start-up).
    let mut claims = Vec::new();
    if let Some(js) = &pool.jetstream {
        match &js.file_store {
            Some(file) => claims.push(crate::jetstream::volume_claim_template(file)),
            None => volumes.push(Volume {
                name: crate::jetstream::VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            }),
        }
        mounts.push(mount(
            crate::jetstream::VOLUME,
            crate::jetstream::STORE_DIR,
            false,
        ));
    }
    let mut ports = vec![
        container_port("client", plan.ports.client),
        container_port("cluster", plan.ports.cluster),
        container_port("monitor", plan.ports.monitor),
    ];
    if leaf_port {
        ports.push(container_port("leafnodes", plan.ports.leafnodes));
    }

    let container = Container {
        name: "midge".into(),
        image: Some(plan.image.clone()),
        image_pull_policy: plan.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(vec!["-c".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        env: Some(env),
        ports: Some(ports),
        resources: pool.resources.clone(),
        volume_mounts: Some(mounts),
        lifecycle: Some(Lifecycle {
            // Lame duck mode moves clients to the other servers before the pod dies.
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        BROKER_BIN.into(),
                        "--signal".into(),
                        format!("ldm={PID_FILE}"),
                    ]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        // Up to 3 minutes to start (image pull excluded), so a slow ARM node is not killed.
        startup_probe: Some(http_probe(READINESS_PATH, 2, 2, 90)),
        readiness_probe: Some(http_probe(READINESS_PATH, 5, 3, 3)),
        // Lenient: a server busy with a burst must not be restarted, which would only
        // move its load (and its clients) onto the others.
        liveness_probe: Some(http_probe(LIVENESS_PATH, 30, 10, 6)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };

    // Without explicit placement, spread a pool over nodes when possible so a single
    // node failure takes out as few servers as possible.
    let topology_spread_constraints =
        if pool.topology_spread_constraints.is_empty() && pool.affinity.is_none() {
            vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: "kubernetes.io/hostname".into(),
                when_unsatisfiable: "ScheduleAnyway".into(),
                label_selector: Some(LabelSelector {
                    match_labels: Some(pool_selector(plan, &pool.name)),
                    ..LabelSelector::default()
                }),
                ..TopologySpreadConstraint::default()
            }]
        } else {
            pool.topology_spread_constraints.clone()
        };

    let pod_spec = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        node_selector: (!pool.node_selector.is_empty()).then(|| pool.node_selector.clone()),
        tolerations: (!pool.tolerations.is_empty()).then(|| pool.tolerations.clone()),
        affinity: pool.affinity.clone(),
        topology_spread_constraints: (!topology_spread_constraints.is_empty())
            .then_some(topology_spread_constraints),
        termination_grace_period_seconds: Some(termination_grace_seconds(plan)),
        // The broker never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        image_pull_secrets: (!plan.image_pull_secrets.is_empty()).then(|| {
            plan.image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            fs_group: Some(RUN_AS),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    };

    StatefulSet {
        metadata: metadata(plan, name, Some(&pool.name), owner),
        spec: StatefulSetSpec {
            // Left out for an externally scaled pool: what server-side apply does not name,
            // the operator does not own, so `kubectl scale` and autoscalers keep it.
            replicas: (!pool.external).then_some(pool.replicas),
            service_name: Some(headless_service_name(&plan.name)),
            // All servers start together: each only needs DNS names of its peers, not
            // their readiness, and ordered start-up would make cluster formation slow.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(pool_selector(plan, &pool.name)),
                ..LabelSelector::default()
            },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    ..RollingUpdateStatefulSetStrategy::default()
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The leaf node credentials of `pool`'s servers (see [`LEAF_USER_ENV`]): from the Secret
/// `secret`, and composed by the kubelet into what a core server's listener or a leaf
/// server's remote needs.
fn leaf_credential_env(plan: &ClusterPlan, pool: &PoolPlan, secret: &str) -> Vec<EnvVar> {
    let from_secret = |name: &str, key: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(CoreSecretKeySelector {
                name: secret.into(),
                key: key.into(),
                ..CoreSecretKeySelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let quoted = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(format!("\"{value}\"")),
        ..EnvVar::default()
    };
    let mut env = vec![
        from_secret(LEAF_SECRET_USER_ENV, crate::leaf_auth::USER_KEY),
        from_secret(LEAF_SECRET_PASSWORD_ENV, crate::leaf_auth::PASSWORD_KEY),
    ];
    match pool.role {
        PoolRole::Core => {
            env.push(quoted(LEAF_USER_ENV, format!("$({LEAF_SECRET_USER_ENV})")));
            env.push(quoted(
                LEAF_PASSWORD_ENV,
                format!("$({LEAF_SECRET_PASSWORD_ENV})"),
            ));
        }
        PoolRole::Leaf => env.push(quoted(
            LEAF_URL_ENV,
            leaf_remote_url_as(
                plan,
                &format!("$({LEAF_SECRET_USER_ENV}):$({LEAF_SECRET_PASSWORD_ENV})@"),
            ),
        )),
    }
    env
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_string()),
        container_port: port,
        protocol: Some("TCP".to_string()),
        ..ContainerPort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NatsCluster;
    use crate::validate::validate;

    fn plan(spec: &str) -> ClusterPlan {
        let yaml = format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: demo, namespace: ns}}\nspec:\n{spec}"
        );
        let cluster: NatsCluster = serde_yaml::from_str(&yaml).expect("test manifest parses");
        validate(&cluster).expect("test manifest is valid")
    }

    fn pod(sts: &StatefulSet) -> &PodSpec {
        sts.spec.template.spec.as_ref().expect("pod spec")
    }

    fn container(sts: &StatefulSet) -> &Container {
        &pod(sts).containers[0]
    }

    fn config(children: &Children) -> &str {
        children
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_FILE))
            .expect("midge.conf")
    }

    /// The leaf credential variables as a pod would have them (see
    /// [`leaf_credentials_come_from_the_secret_as_environment`] for how the kubelet makes
    /// them).
    const LEAF_ENV_STANDINS: [(&str, &str); 3] = [
        (LEAF_USER_ENV, "leaf"),
        (LEAF_PASSWORD_ENV, "pw"),
        (LEAF_URL_ENV, "nats-leaf://leaf:pw@hub.test:7422"),
    ];

    /// The users file a Secret would hold, for the configs that include it.
    const USERS_FILE_TEXT: &str =
        "authorization {\n  users: [{user: alice, password: secret}]\n}\n";

    /// Parses a rendered config the way the broker in pod `demo-a-0` does: from
    /// `/etc/midge/midge.conf` with the users Secret in `/etc/midge-auth`, and with the
    /// pod's environment variables defined as variables in front of the file (only those
    /// the file uses: an unused key would be an unknown option).
    fn parse(conf: &str) -> Result<midge::conf::Map, midge::conf::ConfError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config_dir = dir.path().join("midge");
        let auth_dir = dir.path().join("midge-auth");
        std::fs::create_dir(&config_dir).expect("config dir");
        std::fs::create_dir(&auth_dir).expect("auth dir");
        std::fs::write(auth_dir.join(USERS_FILE), USERS_FILE_TEXT).expect("users file");
        let mut text = "POD_NAME: \"demo-a-0\"\n".to_string();
        if conf.contains(&format!("${AUTH_TOKEN_ENV}")) {
            text.push_str(&format!("{AUTH_TOKEN_ENV}: \"s3cret\"\n"));
        }
        for (name, value) in LEAF_ENV_STANDINS {
            if conf.contains(&format!("${name}")) {
                text.push_str(&format!("{name}: \"{value}\"\n"));
            }
        }
        text.push_str(conf);
        let path = config_dir.join(CONFIG_FILE);
        std::fs::write(&path, text).expect("config file");
        midge::conf::parse_file(&path)
    }

    fn load(conf: &str) -> Result<Options, midge::conf::ConfError> {
        Ok(Options::from_conf(&parse(conf)?)?.options)
    }

    /// Where the rendered config has `tls` blocks: (top level, inside `cluster {}`).
    fn tls_blocks(conf: &str) -> (bool, bool) {
        let map = parse(conf).expect("the config parses");
        let in_cluster = map
            .get("cluster")
            .and_then(|c| c.value.as_map("cluster").ok())
            .is_some_and(|c| c.get("tls").is_some());
        (map.get("tls").is_some(), in_cluster)
    }

    fn loaded(children: &Children) -> Options {
        let conf = config(children);
        load(conf).unwrap_or_else(|e| panic!("{e}\n{conf}"))
    }

    /// Every error in `err`, nested lists flattened.
    /// The TLS-related errors of a rendered config, as short labels; anything else fails.
    fn tls_errors(err: &midge::conf::ConfError, conf: &str) -> Vec<String> {
        flatten(err)
            .iter()
            .map(|e| match e {
                midge::conf::ConfError::Unsupported { key, .. } => format!("unsupported: {key}"),
                midge::conf::ConfError::Invalid { key, message, .. }
                    if message.contains("cannot read") =>
                {
                    format!("missing file: {key}")
                }
                other => panic!("unexpected error {other}\n{conf}"),
            })
            .collect()
    }

    fn flatten(err: &midge::conf::ConfError) -> Vec<&midge::conf::ConfError> {
        match err {
            midge::conf::ConfError::Many(all) => all.iter().flat_map(flatten).collect(),
            other => vec![other],
        }
    }

    const TWO_POOLS: &str = "  pools:\n  - {name: a, replicas: 2}\n  - {name: b, replicas: 1}\n";

    const CLOUD_AND_EDGE: &str = "  pools:\n  - {name: cloud, replicas: 3}\n  - {name: edge, replicas: 2, role: leaf, broker: {maxConnections: 64, maxPending: 1048576}}\n";

    fn pool_conf<'a>(children: &'a Children, name: &str) -> &'a str {
        children
            .pool_config_maps
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .and_then(|c| c.data.as_ref())
            .and_then(|d| d.get(CONFIG_FILE))
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    }

    /// A leaf pool's ConfigMap, read by the broker's loader: a cluster of its own servers
    /// only, one remote at the core's leaf node Service, its own limits; the core's config
    /// routes to core servers only and listens for leaf nodes.
    #[test]
    fn leaf_pool_config_has_remotes_and_no_cross_routes() {
        let children = build(&plan(CLOUD_AND_EDGE), None);
        assert_eq!(
            children.config_map_names(),
            ["demo-config", "demo-edge-config"]
        );
        let core = loaded(&children);
        assert_eq!(core.cluster.name.as_deref(), Some("demo"));
        assert_eq!(core.cluster.routes.len(), 3);
        assert!(core
            .cluster
            .routes
            .iter()
            .all(|r| r.contains("demo-cloud-")));
        assert_eq!(core.leafnodes.port, Some(7422));
        assert!(core.leafnodes.remotes.is_empty());

        let edge = load(pool_conf(&children, "demo-edge-config")).expect("edge config loads");
        assert_eq!(edge.cluster.name.as_deref(), Some("demo-edge"));
        assert_eq!(
            edge.cluster.routes,
            [
                "nats://demo-edge-0.demo-headless.ns.svc.cluster.local:6222",
                "nats://demo-edge-1.demo-headless.ns.svc.cluster.local:6222"
            ]
        );
        assert_eq!(
            edge.leafnodes.port, None,
            "a leaf pool does not listen for leafs"
        );
        assert_eq!(edge.leafnodes.remotes.len(), 1);
        // The URL with the credentials is the pod's variable (the Service's URL is in the
        // pod template, see leaf_credentials_come_from_the_secret_as_environment).
        assert_eq!(
            edge.leafnodes.remotes[0].urls,
            ["nats-leaf://leaf:pw@hub.test:7422"]
        );
        assert!(pool_conf(&children, "demo-edge-config").contains("{urls: [$MIDGE_LEAF_URL]"));
        assert_eq!(edge.leafnodes.remotes[0].tls, None);
        assert_eq!(
            (
                core.leafnodes.user.as_deref(),
                core.leafnodes.password.as_deref()
            ),
            (Some("leaf"), Some("pw"))
        );
        assert_eq!((edge.max_connections, edge.max_pending), (64, 1_048_576));
        assert_eq!(edge.max_payload, core.max_payload);
        // The edge pods mount their own ConfigMap and carry its restart hash.
        let sts = &children.stateful_sets[1];
        assert_eq!(
            pod(sts)
                .volumes
                .as_ref()
                .and_then(|v| v[0].config_map.as_ref())
                .map(|c| c.name.as_str()),
            Some("demo-edge-config")
        );
        let p = plan(CLOUD_AND_EDGE);
        let hash = |sts: &StatefulSet| {
            sts.spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(RESTART_HASH_ANNOTATION).cloned())
        };
        assert_eq!(hash(sts), Some(p.restart_hash_of(&p.pools[1]).to_string()));
        assert_eq!(
            hash(&children.stateful_sets[0]),
            Some(p.restart_hash.clone())
        );
        // Scaling the leaf pool is a reload (its route port is open with one server too).
        let one = plan("  pools:\n  - {name: cloud, replicas: 3}\n  - {name: edge, replicas: 1, role: leaf, broker: {maxConnections: 64, maxPending: 1048576}}\n");
        assert_eq!(
            one.restart_hash_of(&one.pools[1]),
            p.restart_hash_of(&p.pools[1])
        );
        // Pod labels carry the role; ports: the leaf node port on core pods only.
        let role = |sts: &StatefulSet| {
            sts.spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.as_ref())
                .and_then(|l| l.get(LABEL_ROLE).cloned())
        };
        assert_eq!(role(&children.stateful_sets[0]).as_deref(), Some("core"));
        assert_eq!(role(sts).as_deref(), Some("leaf"));
        let port_names = |sts: &StatefulSet| -> Vec<String> {
            container(sts)
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.name.clone())
                .collect()
        };
        assert!(port_names(&children.stateful_sets[0]).contains(&"leafnodes".to_string()));
        assert!(!port_names(sts).contains(&"leafnodes".to_string()));
    }

    /// Leaf node credentials never enter a ConfigMap: the core config's leaf listener and
    /// the edge config's remote name environment variables, which the pods take from the
    /// Secret (`secretKeyRef`) and the kubelet composes (`$(VAR)`), quoted, into the
    /// listener's user and password and the remote's URL at the leaf node Service. A
    /// cluster without leaf pools has none of it; `spec.auth.leafnodes` names the Secret.
    #[test]
    fn leaf_credentials_come_from_the_secret_as_environment() {
        let children = build(&plan(CLOUD_AND_EDGE), None);
        let core_conf = config(&children);
        let hub = parse(core_conf).expect("core config parses");
        let authorization = hub
            .get("leafnodes")
            .and_then(|l| l.value.as_map("leafnodes").ok())
            .and_then(|l| l.get("authorization"))
            .map(|a| a.value.clone());
        assert!(authorization.is_some(), "{core_conf}");
        assert!(
            core_conf.contains("    user: $MIDGE_LEAF_USER\n    password: $MIDGE_LEAF_PASSWORD\n"),
            "{core_conf}"
        );
        let env = |sts: &StatefulSet| -> Vec<(String, String)> {
            container(sts)
                .env
                .iter()
                .flatten()
                .map(|e| {
                    let source = match (&e.value, &e.value_from) {
                        (Some(v), _) => v.clone(),
                        (None, Some(from)) => from
                            .secret_key_ref
                            .as_ref()
                            .map(|r| format!("secret {}/{}", r.name, r.key))
                            .unwrap_or_else(|| "field".into()),
                        (None, None) => String::new(),
                    };
                    (e.name.clone(), source)
                })
                .collect()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        let from_secret = [
            pair(
                "MIDGE_LEAF_SECRET_USER",
                "secret demo-leaf-credentials/user",
            ),
            pair(
                "MIDGE_LEAF_SECRET_PASSWORD",
                "secret demo-leaf-credentials/password",
            ),
        ];
        let core_env = env(&children.stateful_sets[0]);
        assert_eq!(core_env[1..3], from_secret);
        assert_eq!(
            core_env[3..],
            [
                pair("MIDGE_LEAF_USER", "\"$(MIDGE_LEAF_SECRET_USER)\""),
                pair("MIDGE_LEAF_PASSWORD", "\"$(MIDGE_LEAF_SECRET_PASSWORD)\""),
            ]
        );
        let edge_env = env(&children.stateful_sets[1]);
        assert_eq!(edge_env[1..3], from_secret);
        assert_eq!(
            edge_env[3..],
            [pair(
                "MIDGE_LEAF_URL",
                "\"nats-leaf://$(MIDGE_LEAF_SECRET_USER):$(MIDGE_LEAF_SECRET_PASSWORD)@demo-leafnodes.ns.svc.cluster.local:7422\""
            )]
        );
        // What the kubelet makes of it, read by the broker as the pod's variables are.
        let composed = edge_env[3]
            .1
            .replace("$(MIDGE_LEAF_SECRET_USER)", "leaf")
            .replace("$(MIDGE_LEAF_SECRET_PASSWORD)", "pw");
        let text = format!(
            "POD_NAME: \"demo-edge-0\"\nMIDGE_LEAF_URL: {composed}\n{}",
            pool_conf(&children, "demo-edge-config")
        );
        let map = midge::conf::parse_str(&text, "/etc/midge/midge.conf").expect("parses");
        let edge = Options::from_conf(&map).expect("loads").options;
        assert_eq!(
            edge.leafnodes.remotes[0].urls,
            ["nats-leaf://leaf:pw@demo-leafnodes.ns.svc.cluster.local:7422"]
        );
        for conf in children.config_map_names().iter().map(|name| {
            std::iter::once(&children.config_map)
                .chain(&children.pool_config_maps)
                .find(|c| c.metadata.name.as_ref() == Some(name))
                .and_then(|c| c.data.as_ref())
                .map(|d| d[CONFIG_FILE].clone())
                .unwrap_or_default()
        }) {
            assert!(!conf.contains("leaf-credentials"), "{conf}");
        }

        // The user's Secret instead of the generated one.
        let children = build(
            &plan(&format!(
                "{CLOUD_AND_EDGE}  auth: {{leafnodes: {{secretName: my-leaf}}}}\n"
            )),
            None,
        );
        assert_eq!(
            env(&children.stateful_sets[1])[1],
            pair("MIDGE_LEAF_SECRET_USER", "secret my-leaf/user")
        );
        // No leaf pool, no leaf credentials (a leafnodes Secret is then not used).
        let children = build(
            &plan(&format!(
                "{TWO_POOLS}  auth: {{leafnodes: {{secretName: my-leaf}}}}\n"
            )),
            None,
        );
        assert!(!config(&children).contains("MIDGE_LEAF"));
        assert_eq!(env(&children.stateful_sets[0]).len(), 1, "POD_NAME only");
    }

    /// Cloud clients land on core servers only, edge clients have their own Service, and
    /// the leaf node Service fronts the core servers.
    #[test]
    fn leaf_pools_get_their_services() {
        let p = plan(CLOUD_AND_EDGE);
        let children = build(&p, None);
        let selector = |s: &Service| {
            s.spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default()
        };
        assert_eq!(
            selector(&children.client_service),
            role_selector(&p, PoolRole::Core)
        );
        let leaf = children
            .leafnodes_service
            .as_ref()
            .expect("leaf node Service");
        assert_eq!(leaf.metadata.name.as_deref(), Some("demo-leafnodes"));
        assert_eq!(selector(leaf), role_selector(&p, PoolRole::Core));
        let ports = leaf
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        assert_eq!(
            (ports[0].name.as_deref(), ports[0].port),
            (Some("leafnodes"), 7422)
        );
        assert_eq!(children.pool_client_services.len(), 1);
        let edge = &children.pool_client_services[0];
        assert_eq!(edge.metadata.name.as_deref(), Some("demo-edge"));
        assert_eq!(selector(edge), pool_selector(&p, "edge"));
        assert_eq!(
            pool_client_url(&p, "edge"),
            "nats://demo-edge.ns.svc.cluster.local:4222"
        );
        let headless: Vec<Option<String>> = children
            .headless_service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(
            headless.last().cloned().flatten().as_deref(),
            Some("leafnodes")
        );
        assert_eq!(
            children.service_names(),
            ["demo-headless", "demo", "demo-leafnodes", "demo-edge"]
        );

        // Without leaf pools nothing of it exists, and the client Service keeps the
        // selector it always had.
        let cloud_only = plan(TWO_POOLS);
        let children = build(&cloud_only, None);
        assert!(children.leafnodes_service.is_none());
        assert!(children.pool_client_services.is_empty());
        assert!(children.pool_config_maps.is_empty());
        assert_eq!(
            selector(&children.client_service),
            cluster_selector(&cloud_only)
        );
        assert_eq!(
            loaded(&children).leafnodes,
            midge::options::LeafOptions::default()
        );
    }

    /// The leaf node port is open to the cluster's own pods (the leaf pools' among them)
    /// next to the route port, only when there are leaf pools.
    #[test]
    fn network_policy_opens_the_leaf_port_to_the_cluster() {
        let ports = |spec: &str| -> Vec<IntOrString> {
            let children = build(&plan(spec), None);
            let rules = children
                .network_policy
                .and_then(|p| p.spec)
                .and_then(|s| s.ingress)
                .unwrap_or_default();
            rules[0]
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.clone())
                .collect()
        };
        assert_eq!(
            ports(CLOUD_AND_EDGE),
            [IntOrString::Int(6222), IntOrString::Int(7422)]
        );
        assert_eq!(ports(TWO_POOLS), [IntOrString::Int(6222)]);
    }

    /// `spec.tls.leafnodes`: core servers serve the Secret's certificate on the leaf port,
    /// leaf servers verify it with its CA (and present it with `verify`); the Secret is
    /// mounted on both.
    #[test]
    fn leaf_tls_is_passed_to_both_ends() {
        let p = plan(&format!(
            "{CLOUD_AND_EDGE}  tls: {{leafnodes: {{secretName: leaf-cert, verify: true}}}}\n"
        ));
        let children = build(&p, None);
        let core_conf = config(&children);
        let core = parse(core_conf).expect("core config parses");
        let leafnodes = core
            .get("leafnodes")
            .and_then(|l| l.value.as_map("leafnodes").ok())
            .expect("leafnodes");
        assert!(leafnodes.get("tls").is_some(), "{core_conf}");
        assert!(
            core_conf.contains("cert_file: \"/etc/midge-tls/leafnodes/tls.crt\""),
            "{core_conf}"
        );
        assert!(
            core_conf.contains("ca_file: \"/etc/midge-tls/leafnodes/ca.crt\""),
            "{core_conf}"
        );
        let edge_conf = pool_conf(&children, "demo-edge-config");
        assert!(
            edge_conf.contains("tls: {timeout: \"2s\", ca_file: \"/etc/midge-tls/leafnodes/ca.crt\", cert_file: \"/etc/midge-tls/leafnodes/tls.crt\", key_file: \"/etc/midge-tls/leafnodes/tls.key\"}"),
            "{edge_conf}"
        );
        for sts in &children.stateful_sets {
            let secret = pod(sts)
                .volumes
                .iter()
                .flatten()
                .find(|v| v.name == "tls-leafnodes")
                .and_then(|v| v.secret.as_ref())
                .and_then(|s| s.secret_name.clone());
            assert_eq!(secret.as_deref(), Some("leaf-cert"));
        }
        // Without leaf pools the Secret is not needed anywhere.
        let children = build(
            &plan(&format!(
                "{TWO_POOLS}  tls: {{leafnodes: {{secretName: leaf-cert}}}}\n"
            )),
            None,
        );
        assert!(pod(&children.stateful_sets[0])
            .volumes
            .iter()
            .flatten()
            .all(|v| v.name != "tls-leafnodes"));
    }

    #[test]
    fn pre_stop_names_the_binary_where_the_image_has_it() {
        // The hook is exec'd without a shell or PATH; the image's entrypoint is the truth.
        let dockerfile = include_str!("../../../Dockerfile");
        let entrypoint = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix("ENTRYPOINT "))
            .expect("the Dockerfile has an ENTRYPOINT");
        assert_eq!(entrypoint.trim(), format!("[\"{BROKER_BIN}\"]"));
        assert!(BROKER_BIN.starts_with('/'));
    }

    /// A pool with `scaling: External`: its StatefulSet names no `spec.replicas` (so the
    /// operator never owns the count that `kubectl scale` or an HPA sets), and the routes,
    /// the edge cluster's routes and the PDB follow the count the controller observed.
    #[test]
    fn externally_scaled_pools_leave_the_count_to_the_stateful_set() {
        let mut p = plan("  pools:\n  - {name: a, replicas: 2}\n  - {name: b, scaling: External}\n  - {name: edge, role: leaf, scaling: External}\n");
        let children = build(&p, None);
        let counts: Vec<Option<i32>> = children
            .stateful_sets
            .iter()
            .map(|s| s.spec.replicas)
            .collect();
        assert_eq!(counts, [Some(2), None, None]);
        assert_eq!(
            loaded(&children).cluster.routes.len(),
            3,
            "a new StatefulSet has one server"
        );

        p.observe_replicas("b", 4);
        p.observe_replicas("edge", 3);
        let children = build(&p, None);
        assert_eq!(children.stateful_sets[1].spec.replicas, None);
        let routes = loaded(&children).cluster.routes;
        assert_eq!(routes.len(), 6, "{routes:?}");
        assert_eq!(
            routes.last().map(String::as_str),
            Some("nats://demo-b-3.demo-headless.ns.svc.cluster.local:6222")
        );
        let edge = load(pool_conf(&children, "demo-edge-config")).expect("edge config loads");
        assert_eq!(edge.cluster.routes.len(), 3);
        assert_eq!(
            children.pod_disruption_budgets[1].metadata.name.as_deref(),
            Some("demo-b")
        );
    }

    /// `spec.jetstream`: the file store on a claim per pod mounted where the broker's
    /// `store_dir` points, the `jetstream {}` block read back by the broker; a pool with
    /// memory streams only gets scratch space there and its own config; JetStream options
    /// are start-up options in the broker's table, so changing one rolls the pods, and a
    /// cluster without JetStream has none of it.
    #[test]
    fn jetstream_puts_the_file_store_on_a_claim_per_pod() {
        let spec = "  pools:\n  - {name: a, replicas: 2}\n  - {name: m, replicas: 1, jetstream: {memoryStore: 64Mi, fileStore: {enabled: false}}}\n  jetstream: {memoryStore: 256Mi, fileStore: {size: 5Gi, storageClassName: fast}}\n";
        let p = plan(spec);
        let children = build(&p, None);
        let core = loaded(&children);
        let js = core.jetstream.clone().expect("jetstream {}");
        assert!(js.enabled);
        assert_eq!(js.store_dir.as_deref(), Some(std::path::Path::new("/data")));
        assert_eq!(
            (js.max_memory, js.max_file),
            (Some(256 << 20), Some((5u64 << 30) / 10 * 9))
        );
        let a = &children.stateful_sets[0];
        let claims = a.spec.volume_claim_templates.clone().unwrap_or_default();
        assert_eq!(claims.len(), 1);
        let claim = claims[0].spec.clone().unwrap_or_default();
        assert_eq!(claims[0].metadata.name.as_deref(), Some("jetstream"));
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(claim.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
        assert_eq!(
            claim
                .resources
                .and_then(|r| r.requests)
                .map(|r| r["storage"].0.clone()),
            Some("5Gi".to_string())
        );
        let mount_of = |sts: &StatefulSet| {
            container(sts)
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| m.name == "jetstream")
                .map(|m| (m.mount_path.clone(), m.read_only))
        };
        assert_eq!(mount_of(a), Some(("/data".into(), Some(false))));
        // Memory only: its own config with max_file_store 0, an emptyDir, no claim.
        assert_eq!(
            children.config_map_names(),
            ["demo-config", "demo-m-config"]
        );
        let m = load(pool_conf(&children, "demo-m-config")).expect("loads");
        let mjs = m.jetstream.expect("jetstream {}");
        assert_eq!((mjs.max_memory, mjs.max_file), (Some(64 << 20), Some(0)));
        let msts = &children.stateful_sets[1];
        assert_eq!(msts.spec.volume_claim_templates, None);
        assert_eq!(mount_of(msts), Some(("/data".into(), Some(false))));
        assert!(pod(msts)
            .volumes
            .iter()
            .flatten()
            .any(|v| v.name == "jetstream" && v.empty_dir.is_some()));
        // A restart, not a reload.
        let bigger = plan(&spec.replace("memoryStore: 256Mi", "memoryStore: 512Mi"));
        assert_ne!(bigger.restart_hash, p.restart_hash);
        // Without spec.jetstream: no block, no volume.
        let none = build(&plan("  replicas: 1\n"), None);
        assert_eq!(loaded(&none).jetstream, None);
        assert_eq!(none.stateful_sets[0].spec.volume_claim_templates, None);
        assert_eq!(mount_of(&none.stateful_sets[0]), None);
    }

    #[test]
    fn routes_list_every_core_pod_of_every_pool() {
        let children = build(&plan(TWO_POOLS), None);
        let opts = loaded(&children);
        assert_eq!(
            opts.cluster.routes,
            vec![
                "nats://demo-a-0.demo-headless.ns.svc.cluster.local:6222",
                "nats://demo-a-1.demo-headless.ns.svc.cluster.local:6222",
                "nats://demo-b-0.demo-headless.ns.svc.cluster.local:6222",
            ]
        );
        assert_eq!(opts.cluster.name.as_deref(), Some("demo"));
        assert_eq!(opts.cluster.port, Some(6222));
        assert_eq!(opts.server_name.as_deref(), Some("demo-a-0"));
        assert_eq!((opts.port, opts.http_port), (4222, Some(8222)));
        assert!(!opts.cluster.no_advertise);
        assert!(opts.config_watch, "the ConfigMap is reloaded live");
        assert!(
            config(&children).contains("server_name: $POD_NAME\n"),
            "{}",
            config(&children)
        );
    }

    #[test]
    fn broker_settings_are_rendered() {
        let children = build(
            &plan("  broker: {maxPayload: 2048, maxConnections: 10, maxSubscriptions: 0, maxPending: 4096, pingInterval: 30s, pingMax: 3, writeDeadline: 5s, lameDuckDuration: 1m, lameDuckGracePeriod: 5s}\n  service: {type: LoadBalancer}\n"),
            None,
        );
        let opts = loaded(&children);
        assert_eq!(
            (
                opts.max_payload,
                opts.max_connections,
                opts.max_subscriptions,
                opts.max_pending,
                opts.ping_max
            ),
            (2048, 10, 0, 4096, 3)
        );
        let secs = Duration::from_secs;
        assert_eq!(
            (
                opts.ping_interval,
                opts.write_deadline,
                opts.lame_duck_duration,
                opts.lame_duck_grace_period
            ),
            (secs(30), secs(5), secs(60), secs(5))
        );
        assert!(opts.cluster.no_advertise);
        // 60s + 5s of lame duck plus slack for the exit.
        assert_eq!(
            pod(&children.stateful_sets[0]).termination_grace_period_seconds,
            Some(85)
        );
    }

    /// The drift check: every rendered ConfigMap reads back, through the broker's own
    /// parser, as exactly [`broker_options`] plus what the operator adds around them.
    #[test]
    fn every_rendered_config_reads_back_as_the_broker_options() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/samples");
        let mut manifests: Vec<String> = [
            "  replicas: 1\n",
            TWO_POOLS,
            "  broker: {maxPayload: 2048, maxPending: 4096, pingInterval: 30s, pingMax: 3, writeDeadline: 5s, lameDuckDuration: 1m, lameDuckGracePeriod: 5s}\n  service: {type: NodePort}\n  ports: {client: 4000, cluster: 5000}\n  monitoring: {port: 9000}\n",
            "  replicas: 2\n  auth: {token: {name: creds, key: token}}\n",
            "  replicas: 2\n  auth: {users: {name: users, key: auth.conf}}\n",
        ]
        .iter()
        .map(|spec| {
            format!("apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: demo, namespace: ns}}\nspec:\n{spec}")
        })
        .collect();
        for entry in std::fs::read_dir(dir).expect("config/samples exists") {
            let path = entry.expect("directory entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                manifests.push(std::fs::read_to_string(&path).expect("readable sample"));
            }
        }
        let mut with_tls = 0;
        for manifest in &manifests {
            for cluster in crate::render::parse_manifests(manifest).expect("manifest parses") {
                let plan = validate(&cluster).expect("manifest is valid");
                let conf = render_broker_config(&plan, &plan.pools);
                let result = load(&conf);
                if plan.client_tls.is_some() || plan.route_tls.is_some() {
                    // Client and route TLS parse, but their certificate files come from
                    // Secret volumes that do not exist here. Those are the only errors,
                    // each from the block where it belongs.
                    with_tls += 1;
                    let err = result.expect_err("the TLS files are not mounted here");
                    let mut keys = tls_errors(&err, &conf);
                    keys.sort();
                    let blocks = (plan.client_tls.is_some(), plan.route_tls.is_some());
                    assert_eq!(tls_blocks(&conf), blocks, "{conf}");
                    let mut expected = Vec::new();
                    if blocks.1 {
                        expected.push("missing file: cluster.tls.cert_file".to_string());
                    }
                    if blocks.0 {
                        expected.push("missing file: tls.cert_file".to_string());
                    }
                    assert_eq!(keys, expected, "{conf}");
                    continue;
                }
                let got = result.unwrap_or_else(|e| panic!("{e}\n{conf}"));
                let mut expected = broker_options(&plan, &plan.pools);
                expected.server_name = Some("demo-a-0".into());
                if plan.leaf_auth.is_some() {
                    expected.leafnodes.user = Some("leaf".into());
                    expected.leafnodes.password = Some("pw".into());
                }
                match &plan.auth {
                    Some(Auth::Token(_)) => expected.auth.token = Some("s3cret".into()),
                    Some(Auth::Users(_)) => {
                        expected.auth.users = vec![midge::options::User {
                            user: "alice".into(),
                            password: "secret".into(),
                            permissions: None,
                            account: None,
                        }];
                    }
                    None => {}
                }
                assert_eq!(got, expected, "{conf}");
            }
        }
        assert!(with_tls >= 1, "a sample exercises TLS");
    }

    #[test]
    fn one_stateful_set_per_pool_with_stable_selector() {
        let children = build(&plan(TWO_POOLS), None);
        let names: Vec<_> = children
            .stateful_sets
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, vec!["demo-a", "demo-b"]);
        let sts = &children.stateful_sets[1];
        assert_eq!(sts.spec.replicas, Some(1));
        assert_eq!(sts.spec.service_name.as_deref(), Some("demo-headless"));
        assert_eq!(sts.spec.pod_management_policy.as_deref(), Some("Parallel"));
        let selector = sts.spec.selector.match_labels.clone().unwrap_or_default();
        assert_eq!(
            selector,
            BTreeMap::from([
                (LABEL_INSTANCE.to_string(), "demo".to_string()),
                (LABEL_NAME.to_string(), "midge".to_string()),
                (LABEL_POOL.to_string(), "b".to_string()),
            ])
        );
        for svc in [&children.headless_service, &children.client_service] {
            let selector = svc
                .spec
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default();
            assert!(selector.keys().all(|k| !k.contains("version")));
            assert_eq!(selector, cluster_selector(&plan(TWO_POOLS)));
        }
        let labels = sts.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_MANAGED_BY).map(String::as_str),
            Some("midge-operator")
        );
    }

    #[test]
    fn services_and_pdb() {
        let children = build(
            &plan("  replicas: 1\n  service: {type: NodePort}\n  monitoring: {port: 9000}\n"),
            None,
        );
        let headless = children.headless_service.spec.as_ref().expect("spec");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let ports: Vec<_> = headless
            .ports
            .iter()
            .flatten()
            .map(|p| (p.name.clone().unwrap_or_default(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("client".into(), 4222),
                ("cluster".into(), 6222),
                ("monitor".into(), 9000)
            ]
        );
        let client = children.client_service.spec.as_ref().expect("spec");
        assert_eq!(client.type_.as_deref(), Some("NodePort"));
        assert_eq!(
            children.client_service.metadata.name.as_deref(),
            Some("demo")
        );
        assert_eq!(children.pod_disruption_budgets.len(), 1);
        let pdb = children.pod_disruption_budgets[0]
            .spec
            .as_ref()
            .expect("spec");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    }

    /// One PDB per pool: an offline edge server only blocks evictions in its own pool,
    /// and an unready server can always be evicted.
    #[test]
    fn one_pdb_per_pool_selecting_only_that_pool() {
        let children = build(&plan(TWO_POOLS), None);
        let pdbs: Vec<(String, BTreeMap<String, String>, Option<String>)> = children
            .pod_disruption_budgets
            .iter()
            .map(|p| {
                let spec = p.spec.clone().unwrap_or_default();
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    spec.selector
                        .and_then(|s| s.match_labels)
                        .unwrap_or_default(),
                    spec.unhealthy_pod_eviction_policy,
                )
            })
            .collect();
        let expected = |pool: &str| {
            (
                format!("demo-{pool}"),
                pool_selector(&plan(TWO_POOLS), pool),
                Some("AlwaysAllow".to_string()),
            )
        };
        assert_eq!(pdbs, vec![expected("a"), expected("b")]);
        assert_eq!(pdbs[0].1.get(LABEL_POOL).map(String::as_str), Some("a"));
    }

    /// The route port only admits the cluster's own pods; client and monitoring ports
    /// admit the configured peers (everyone when none); disabled means no policy.
    #[test]
    fn network_policy_keeps_the_route_port_to_the_cluster() {
        let children = build(&plan("  replicas: 3\n"), None);
        let policy = children.network_policy.expect("enabled by default");
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(cluster_selector(&plan("  replicas: 3\n")))
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.unwrap_or_default();
        let ports = |i: usize| -> Vec<IntOrString> {
            rules[i]
                .ports
                .iter()
                .flatten()
                .filter_map(|p| p.port.clone())
                .collect()
        };
        assert_eq!(rules.len(), 3);
        assert_eq!(ports(0), vec![IntOrString::Int(6222)]);
        let route_from = rules[0].from.clone().unwrap_or_default();
        assert_eq!(route_from.len(), 1);
        assert_eq!(
            route_from[0]
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(cluster_selector(&plan("  replicas: 3\n")))
        );
        assert!(route_from[0].namespace_selector.is_none());
        assert_eq!(ports(1), vec![IntOrString::Int(4222)]);
        assert_eq!(rules[1].from, None, "clients from everywhere by default");
        assert_eq!(ports(2), vec![IntOrString::Int(8222)]);
        assert_eq!(rules[2].from, None);

        let children = build(
            &plan("  replicas: 1\n  networkPolicy:\n    clientFrom: [{namespaceSelector: {matchLabels: {team: a}}}]\n    monitoringFrom: [{namespaceSelector: {matchLabels: {name: monitoring}}}]\n"),
            None,
        );
        let rules = children
            .network_policy
            .and_then(|p| p.spec)
            .and_then(|s| s.ingress)
            .unwrap_or_default();
        assert_eq!(rules[1].from.as_ref().map(Vec::len), Some(1));
        assert_eq!(rules[2].from.as_ref().map(Vec::len), Some(1));

        let children = build(
            &plan("  replicas: 1\n  networkPolicy: {enabled: false}\n"),
            None,
        );
        assert!(children.network_policy.is_none());
    }

    #[test]
    fn scheduling_is_passed_through_and_defaults_to_spreading() {
        let children = build(
            &plan("  pools:\n  - name: edge\n    replicas: 1\n    nodeSelector: {kubernetes.io/arch: arm64}\n    tolerations: [{key: edge, operator: Exists, effect: NoSchedule}]\n    resources: {limits: {memory: 128Mi}}\n    podAnnotations: {a: b}\n    podLabels: {site: pi}\n  - {name: cloud, replicas: 1}\n"),
            None,
        );
        let edge = &children.stateful_sets[0];
        let spec = pod(edge);
        assert_eq!(
            spec.node_selector
                .clone()
                .unwrap_or_default()
                .get("kubernetes.io/arch")
                .map(String::as_str),
            Some("arm64")
        );
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        assert!(container(edge).resources.is_some());
        let meta = edge.spec.template.metadata.as_ref().expect("pod metadata");
        assert_eq!(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get("a"))
                .map(String::as_str),
            Some("b")
        );
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get("site"))
                .map(String::as_str),
            Some("pi")
        );
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_POOL))
                .map(String::as_str),
            Some("edge")
        );
        let spread = spec.topology_spread_constraints.clone().unwrap_or_default();
        assert_eq!(spread.len(), 1);
        assert_eq!(spread[0].topology_key, "kubernetes.io/hostname");
        assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    }

    #[test]
    fn token_auth_comes_from_a_secret_env_var() {
        let children = build(
            &plan("  replicas: 1\n  auth: {token: {name: creds, key: token}}\n"),
            None,
        );
        let conf = config(&children);
        assert!(conf.contains("  token: $MIDGE_AUTH_TOKEN\n"), "{conf}");
        assert_eq!(loaded(&children).auth.token.as_deref(), Some("s3cret"));
        let env = container(&children.stateful_sets[0])
            .env
            .clone()
            .unwrap_or_default();
        let token = env
            .iter()
            .find(|e| e.name == AUTH_TOKEN_ENV)
            .expect("token env");
        let secret = token
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secret ref");
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("creds", "token")
        );
    }

    #[test]
    fn users_auth_and_tls_are_mounted_from_secrets() {
        // Set directly (validation takes it too) to pin where route TLS goes.
        let mut with_routes = plan("  replicas: 1\n  auth: {users: {name: users, key: auth.conf}}\n  tls:\n    client: {secretName: client-cert, verify: true}\n");
        with_routes.route_tls = Some(TlsSecret {
            secret_name: "route-cert".into(),
            verify: false,
        });
        let children = build(&with_routes, None);
        let conf = config(&children);
        assert!(
            conf.contains("include \"../midge-auth/users.conf\""),
            "{conf}"
        );
        // The route TLS block sits inside `cluster {}`, the client one at the top level;
        // their files come from the Secret volumes, absent here: those are the only errors.
        assert_eq!(tls_blocks(conf), (true, true), "{conf}");
        let err = load(conf).expect_err("the certificate files are absent");
        let mut keys = tls_errors(&err, conf);
        keys.sort();
        assert_eq!(
            keys,
            [
                "missing file: cluster.tls.cert_file",
                "missing file: tls.cert_file"
            ],
            "{err}"
        );
        assert!(conf.contains("\ntls {\n  cert_file: \"/etc/midge-tls/client/tls.crt\"\n  key_file: \"/etc/midge-tls/client/tls.key\"\n  ca_file: \"/etc/midge-tls/client/ca.crt\"\n  verify: true\n}\n"), "{conf}");
        assert!(
            conf.contains("  tls {\n    cert_file: \"/etc/midge-tls/routes/tls.crt\""),
            "{conf}"
        );
        let sts = &children.stateful_sets[0];
        let volumes: Vec<(String, Option<String>)> = pod(sts)
            .volumes
            .iter()
            .flatten()
            .map(|v| {
                (
                    v.name.clone(),
                    v.secret.as_ref().and_then(|s| s.secret_name.clone()),
                )
            })
            .collect();
        assert_eq!(
            volumes,
            vec![
                ("config".into(), None),
                ("run".into(), None),
                ("auth".into(), Some("users".into())),
                ("tls-client".into(), Some("client-cert".into())),
                ("tls-routes".into(), Some("route-cert".into())),
            ]
        );
        let mounts: Vec<_> = container(sts)
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.clone())
            .collect();
        assert_eq!(
            mounts,
            vec![
                "/etc/midge",
                "/var/run/midge",
                "/etc/midge-auth",
                "/etc/midge-tls/client",
                "/etc/midge-tls/routes"
            ]
        );
        assert_eq!(
            client_url(&plan("  replicas: 1\n  tls: {client: {secretName: c}}\n")),
            "tls://demo.ns.svc.cluster.local:4222"
        );
    }

    #[test]
    fn probes_lifecycle_and_security_context() {
        let children = build(&plan("  replicas: 3\n"), None);
        let sts = &children.stateful_sets[0];
        let c = container(sts);
        assert_eq!(
            c.args.clone().unwrap_or_default(),
            vec!["-c", "/etc/midge/midge.conf"]
        );
        for (probe, path) in [
            (&c.startup_probe, "/healthz?routes=1"),
            (&c.readiness_probe, "/healthz?routes=1"),
            (&c.liveness_probe, "/healthz"),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .expect("http probe");
            assert_eq!(get.path.as_deref(), Some(path));
            assert_eq!(get.port, IntOrString::String("monitor".into()));
        }
        let liveness = c.liveness_probe.as_ref().expect("liveness");
        let readiness = c.readiness_probe.as_ref().expect("readiness");
        let tolerance =
            |p: &Probe| p.period_seconds.unwrap_or(10) * p.failure_threshold.unwrap_or(3);
        assert!(
            tolerance(liveness) > 4 * tolerance(readiness),
            "liveness must be lenient"
        );
        let pre_stop = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .and_then(|e| e.command.clone())
            .unwrap_or_default();
        assert_eq!(
            pre_stop,
            vec!["/midge", "--signal", "ldm=/var/run/midge/midge.pid"]
        );
        assert_eq!(
            loaded(&children).pid_file,
            Some(std::path::PathBuf::from("/var/run/midge/midge.pid"))
        );
        // Default lame duck is 30s + 10s grace.
        assert!(pod(sts).termination_grace_period_seconds.unwrap_or(0) > 40);

        let sc = c
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_string()])
        );
        let psc = pod(sts)
            .security_context
            .as_ref()
            .expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.run_as_user, Some(10001));
        assert_eq!(psc.run_as_group, Some(10001));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
    }

    /// The hash is the broker's own split: `spec.service.type` flips `no_advertise` in the
    /// `cluster {}` block, which the broker cannot reload, so it must roll the pods (the
    /// hand-written list this replaces missed it); limits, routes and auth reload.
    #[test]
    fn restart_hash_follows_the_brokers_startup_options() {
        let hash = |spec: &str| plan(spec).restart_hash;
        let base = hash("  replicas: 3\n");
        assert_eq!(base.len(), 64, "{base}");
        assert_eq!(
            base,
            hash("  replicas: 5\n  broker: {maxPayload: 10, pingInterval: 1s}\n  auth: {token: {name: a, key: b}}\n")
        );
        assert_ne!(base, hash("  replicas: 3\n  service: {type: NodePort}\n"));
        assert_ne!(base, hash("  replicas: 3\n  ports: {client: 4333}\n"));
        assert_ne!(base, hash("  replicas: 3\n  monitoring: {port: 8333}\n"));

        let children = build(
            &plan("  replicas: 3\n  service: {type: LoadBalancer}\n"),
            None,
        );
        let annotation = children.stateful_sets[0]
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(RESTART_HASH_ANNOTATION))
            .cloned();
        assert_eq!(
            annotation,
            Some(hash("  replicas: 3\n  service: {type: NodePort}\n"))
        );
        assert!(loaded(&children).cluster.no_advertise);
    }

    #[test]
    fn output_is_deterministic_and_owned() {
        let owner = OwnerReference {
            api_version: "midge.dev/v1alpha1".into(),
            kind: "NatsCluster".into(),
            name: "demo".into(),
            uid: "1234".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let a = build(&plan(TWO_POOLS), Some(&owner))
            .to_yaml()
            .expect("yaml");
        let b = build(&plan(TWO_POOLS), Some(&owner))
            .to_yaml()
            .expect("yaml");
        assert_eq!(a, b);
        // ConfigMap, 2 Services, 2 StatefulSets, 2 PDBs, the NetworkPolicy.
        assert_eq!(a.matches("uid: '1234'").count(), 8, "{a}");
        assert_eq!(a.matches("\n---\n").count() + 1, 8);
    }
}
