//! The `NatsCluster` custom resource (`midge.dev/v1alpha1`).
//!
//! The Rust types are the single source of truth: the CRD YAML in `config/crd/` is
//! generated from them (`midge-operator crd`) and CI fails when the two drift apart.
//! Schema constraints here catch what the API server can check on its own (ranges,
//! patterns, enums) and, as CEL rules (`x-kubernetes-validations`), the simple cross-field
//! rules the broker would refuse (lame duck timers, payload over pending, route TLS), so
//! `kubectl apply` refuses them. Everything else (unique pool names, the broker's full
//! checks of the rendered config) lives in [`crate::validate`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every midge resource.
pub const GROUP: &str = "midge.dev";

/// Image used when `spec.image` is empty: the broker released together with this
/// operator, so an operator upgrade never silently pairs with an untested broker. No
/// public registry holds it: users build and push it, or load it into kind (README).
pub fn default_image() -> String {
    format!("ghcr.io/midge-dev/midge:{}", env!("CARGO_PKG_VERSION"))
}

/// Desired state of a midge cluster.
///
/// The smallest useful manifest only sets `replicas`: that becomes one core pool named
/// `default`. Larger deployments describe `pools` instead (the two are mutually exclusive).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "midge.dev",
    version = "v1alpha1",
    kind = "NatsCluster",
    plural = "natsclusters",
    shortname = "nc",
    namespaced,
    status = "NatsClusterStatus",
    derive = "PartialEq",
    doc = "A NATS-compatible midge cluster: one or more pools of broker servers joined by routes.",
    // Raw JSON form: clippy's duplicated_attributes lint misfires on the structured form.
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status","description":"The Ready condition: every server ready on the current revision"}"#,
    printcolumn = r#"{"name":"Servers","type":"integer","jsonPath":".status.readyReplicas","description":"Servers that pass their readiness probe"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas","description":"Servers the spec asks for, over all pools"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1,"description":"Why the cluster is (not) ready"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    // `kubectl scale`, HPA and KEDA drive `spec.replicas`: the shorthand single pool. A
    // cluster with pools refuses it (CEL rule below); one pool is scaled by patching it,
    // or, with `scaling: External`, through its StatefulSet's own scale subresource.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    )
)]
#[serde(rename_all = "camelCase")]
// Cross-field rules the API server checks at admission (CEL), so `kubectl apply` refuses
// them; the operator checks the same and more with the broker's own loader.
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.replicas) || !has(self.pools) || size(self.pools) == 0",
        "message": "set either spec.replicas or spec.pools, not both: kubectl scale natscluster only applies to a cluster without pools; scale one pool by patching spec.pools[i].replicas, or give it scaling: External and scale its StatefulSet"
    },
    {
        "rule": "!has(self.pools) || size(self.pools) == 0 || self.pools.exists(p, !has(p.role) || p.role == 'core')",
        "message": "spec.pools needs at least one pool with role core: leaf pools connect to the core pools and cannot run on their own"
    }
]))]
pub struct NatsClusterSpec {
    /// Shorthand for a single core pool named `default` with this many servers.
    /// Mutually exclusive with `pools`. Defaults to 3 when neither is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Broker image. Defaults to the midge release matching this operator's version,
    /// `ghcr.io/midge-dev/midge:<version>`, which no public registry holds: build and push
    /// it yourself (and set this), or load it into kind under that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Image pull policy for the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// Names of Secrets in the cluster's namespace used to pull the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<String>,

    /// Node pools. Each becomes one StatefulSet. A list map keyed by `name`: server-side
    /// apply and strategic merges address a pool by its name, so two tools (or a
    /// `kubectl patch` and a GitOps controller) can own different pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub pools: Vec<NodePool>,

    /// Listening ports of every server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,

    /// Broker limits and timers. Unset fields keep the broker's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<BrokerSettings>,

    /// Client authentication, read from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// TLS for clients and routes, from cert-manager compatible Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,

    /// HTTP monitoring endpoint (/healthz, /varz, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,

    /// The Service clients connect through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ClientServiceSpec>,

    /// DNS domain of the Kubernetes cluster, used in route URLs. Defaults to `cluster.local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
    ))]
    pub cluster_domain: Option<String>,

    /// NetworkPolicy for the broker pods. Enabled by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

    /// JetStream (streams, consumers, key-value and object stores) on every server, each
    /// with its own store: clustered JetStream (streams replicated over Raft) is not built
    /// yet. Pools may override it (`pools[].jetstream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSpec>,

    /// Stop reconciling this cluster: running objects are left exactly as they are.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// When the kubelet pulls the broker image.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// A group of servers sharing scheduling, resources and a role.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.scaling) && self.scaling == 'External' ? !has(self.replicas) : has(self.replicas)",
        "message": "set replicas, or scaling: External without replicas (the StatefulSet <cluster>-<pool> then owns the count: kubectl scale statefulset, HPA, KEDA)"
    }
]))]
pub struct NodePool {
    /// Pool name, part of the StatefulSet and pod names (a DNS-1123 label).
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Number of servers in this pool. Required unless `scaling` is `External`, where it
    /// must be left out: the StatefulSet's own count is then the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Who sets this pool's server count. `Operator` (the default): `replicas` here, as
    /// for any other field. `External`: the StatefulSet `<cluster>-<pool>` owns it, so
    /// `kubectl scale statefulset/<cluster>-<pool>`, a HorizontalPodAutoscaler or KEDA
    /// targeting that StatefulSet scale the pool; the operator never sets the count (it
    /// starts at 1, or keeps the count the pool had when it switched) and follows it in
    /// the routes and the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<PoolScaling>,

    /// `core` servers form the full route mesh. `leaf` servers (an edge site) are routed
    /// only among themselves, dial the core pools as leaf nodes and have their own client
    /// Service `<cluster>-<pool>` and their own config.
    #[serde(default)]
    pub role: PoolRole,

    /// Limits for this pool's servers only (smaller ones for a Raspberry Pi, say), over
    /// `spec.broker`. A pool that sets them gets its own ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<PoolBrokerSettings>,

    /// JetStream for this pool's servers, field by field over `spec.jetstream` (a smaller
    /// volume or memory streams only for an edge pool, `enabled: false` for none). A pool
    /// that sets it gets its own ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetstream: Option<JetStreamSpec>,

    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Spread constraints for this pool's pods. When empty (and no affinity is set), pods
    /// are spread over nodes on a best-effort basis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra annotations on this pool's pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Extra labels on this pool's pods (the operator's own labels cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

/// Who owns a pool's server count.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PoolScaling {
    /// `spec.pools[i].replicas`.
    #[default]
    Operator,
    /// The StatefulSet's `spec.replicas`, through its scale subresource.
    External,
}

/// What a pool's servers do in the cluster.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PoolRole {
    /// Full-mesh route member.
    #[default]
    Core,
    /// Edge server joining the core pools as a leaf node.
    Leaf,
}

/// Per-pool limits; unset fields keep the cluster's (`spec.broker`) value.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolBrokerSettings {
    /// Largest message payload in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_payload: Option<i64>,
    /// Most client connections per server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
    /// Most subscriptions per connection; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_subscriptions: Option<i64>,
    /// Most bytes pending for one client before it is a slow consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending: Option<i64>,
}

/// JetStream settings. Every field is optional: a pool's block overrides the cluster's
/// field by field, and what neither sets has the default given here.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JetStreamSpec {
    /// Run JetStream. Defaults to true wherever a `jetstream` block applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Most bytes all memory-backed streams of one server hold (`max_memory_store`), a
    /// Kubernetes quantity such as `512Mi`. Defaults to half of the pool's memory limit;
    /// without a limit, to the broker's default (75% of the node's memory), so set one of
    /// the two. Must not exceed the pool's memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_store: Option<Quantity>,
    /// File-backed streams on a PersistentVolumeClaim per server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_store: Option<FileStoreSpec>,
    /// The JetStream domain (`$JS.<domain>.API`): give edge pools their own, so that
    /// clients address the hub's JetStream or the edge's across the leaf connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), regex(pattern = r"^[A-Za-z0-9_-]+$"))]
    pub domain: Option<String>,
}

/// The file store's volume. A StatefulSet's volume claim template cannot change once it
/// exists: the operator refuses a change of `enabled`, `size` or `storageClassName` on an
/// existing pool (Degraded, `VolumeChangeRefused`) until its StatefulSet is recreated
/// (README, "Change a JetStream volume").
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStoreSpec {
    /// Defaults to true. `false`: memory-backed streams only, no volume (file streams are
    /// refused for lack of space).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Size of each server's PersistentVolumeClaim. Defaults to `10Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class of the claims; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
    /// Most bytes all file-backed streams of one server hold (`max_file_store`). Defaults
    /// to 90% of `size` (the file system and the store's indexes take some of the volume);
    /// must not exceed it. A pool that sets its own `size` does not inherit the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<Quantity>,
}

/// Listening ports shared by every server of the cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ports {
    /// Client port. Defaults to 4222.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub client: Option<i32>,
    /// Route (cluster) port. Defaults to 6222.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub cluster: Option<i32>,
    /// Leaf node port of the core pools, which leaf pools dial. Defaults to 7422; only
    /// listened on when the cluster has a leaf pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub leafnodes: Option<i32>,
}

/// Who may reach the broker pods. The route port is open only to the cluster's own pods;
/// the client and monitoring ports to the peers listed here (every source when empty).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy. Defaults to true; false deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Sources allowed on the client port. Empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_from: Vec<NetworkPolicyPeer>,
    /// Sources allowed on the monitoring port (Prometheus, for instance). Empty: every
    /// source. Kubelet probes come from the node and are not affected on most networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub monitoring_from: Vec<NetworkPolicyPeer>,
}

/// Broker limits and timers, rendered into the broker config file.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.lameDuckDuration) || duration(self.lameDuckDuration) >= duration('30s')",
        "message": "lameDuckDuration must be at least 30s (the broker's minimum)"
    },
    {
        "rule": "duration(has(self.lameDuckGracePeriod) ? self.lameDuckGracePeriod : '10s') < duration(has(self.lameDuckDuration) ? self.lameDuckDuration : '30s')",
        "message": "lameDuckGracePeriod must be shorter than lameDuckDuration (defaults 10s and 30s)"
    },
    {
        "rule": "!has(self.maxPayload) || self.maxPayload <= (has(self.maxPending) ? self.maxPending : 67108864)",
        "message": "maxPayload must not exceed maxPending (default 64 MiB): no message could be delivered"
    }
]))]
pub struct BrokerSettings {
    /// Largest message payload in bytes (broker default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 67108864))]
    pub max_payload: Option<i64>,
    /// Most client connections per server (broker default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections: Option<i64>,
    /// Most subscriptions per connection; 0 means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub max_subscriptions: Option<i64>,
    /// Most bytes pending for one client before it is a slow consumer (broker default 64 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_pending: Option<i64>,
    /// Interval between server PINGs, e.g. `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub ping_interval: Option<String>,
    /// Unanswered PINGs before a connection is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub ping_max: Option<i32>,
    /// How long a write to a client may block, e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub write_deadline: Option<String>,
    /// Time over which a server in lame duck mode closes its clients. Defaults to `30s`
    /// (shorter than the broker's 2m so a rolling restart of a pool stays reasonable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub lame_duck_duration: Option<String>,
    /// Wait before a server in lame duck mode starts closing clients. Defaults to `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub lame_duck_grace_period: Option<String>,
}

/// Client authentication. Set at most one of `token` and `users`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.token) && has(self.users))", "message": "set either token or users, not both"}
]))]
pub struct AuthSpec {
    /// A shared token every client presents, read from a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretKeySelector>,
    /// A Secret key holding an `authorization { users: [...] }` config block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<SecretKeySelector>,
    /// The user leaf pools log in to the core pools with. Leaf connections are always
    /// authenticated: without this, the operator generates the Secret
    /// `<cluster>-leaf-credentials` (user `leaf`, a random password) once the cluster has a
    /// leaf pool, and keeps it until it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leafnodes: Option<LeafAuth>,
}

/// Leaf node credentials from a Secret of yours.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeafAuth {
    /// A Secret in the cluster's namespace with the keys `user` and `password`, each of
    /// letters, digits and `-._~` only (they go into the leaf remote's URL). Changing it
    /// rolls the pods: the broker reads leaf credentials at start-up only.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

/// One key of a Secret in the cluster's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// TLS settings. Each Secret has the cert-manager layout: `tls.crt`, `tls.key`, `ca.crt`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// TLS on the client port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<TlsSecret>,
    /// TLS between servers (mutual: both sides verify the peer against `ca.crt`), from a
    /// Secret of yours or one the operator generates. Only pods holding the Secret can
    /// join the route mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<RouteTls>,
    /// TLS on the leaf node connections from leaf pools to core pools. The Secret is
    /// mounted on both sides: core servers present `tls.crt` (it must name the Service
    /// `<cluster>-leafnodes.<namespace>.svc`), leaf servers verify it against `ca.crt`.
    /// With `verify`, leaf servers present the same certificate and core servers verify
    /// it (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leafnodes: Option<TlsSecret>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecret {
    /// Name of a `kubernetes.io/tls` Secret in the cluster's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// Require and verify client certificates against `ca.crt` (client and leaf node TLS).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

/// Route TLS: set exactly one of `secretName` and `generate: true`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.secretName) != (has(self.generate) && self.generate)",
        "message": "set exactly one of secretName and generate: true"
    }
]))]
pub struct RouteTls {
    /// Name of a `kubernetes.io/tls` Secret in the cluster's namespace (`tls.crt`,
    /// `tls.key`, `ca.crt`); its certificate must name the pods' DNS names
    /// (`*.<cluster>-headless.<namespace>.svc.<clusterDomain>`) and be usable as both a
    /// server and a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Let the operator create the Secret `<cluster>-routes-tls`: a private CA (ECDSA
    /// P-256, 10 years, its key not kept) and one certificate for every pod of the
    /// cluster (valid one year). Created only when absent and never renewed: delete the
    /// Secret to get a new pair. The Secret is owned by the cluster and goes with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generate: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Port of the HTTP monitoring endpoint. Defaults to 8222.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// Annotate pods for Prometheus scraping. Defaults to true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<bool>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientServiceSpec {
    /// Type of the client Service. Defaults to ClusterIP.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<ServiceType>,
    /// Annotations on the client Service (load balancer settings, external DNS...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Observed state, written by the operator only.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Desired servers over all pools.
    #[serde(default)]
    pub replicas: i32,
    /// Ready servers over all pools.
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
    /// Label selector of the cluster's pods, for the scale subresource (HPA, KEDA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// URL clients inside the Kubernetes cluster connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_url: Option<String>,
    /// `Ready`, `Progressing` and `Degraded`, in the standard metav1.Condition shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub name: String,
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Servers running the current pod template.
    #[serde(default)]
    pub updated_replicas: i32,
}

/// The CRD's CEL rules (`x-kubernetes-validations`), evaluated offline with kube-cel
/// against sample objects. No API server can run here; this evaluates the very rule text
/// the generated CRD carries, with a CEL implementation of Kubernetes' functions.
#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::{json, Value};

    use super::NatsCluster;

    fn schema() -> Value {
        let crd = NatsCluster::crd();
        let version = &crd.spec.versions[0];
        let schema = version
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema");
        serde_json::to_value(schema).expect("schema as JSON")
    }

    fn object(spec: &str) -> Value {
        let spec: Value = serde_yaml::from_str(spec).expect("test spec parses");
        json!({"apiVersion": "midge.dev/v1alpha1", "kind": "NatsCluster",
               "metadata": {"name": "demo", "namespace": "ns"}, "spec": spec})
    }

    /// `field: message` of every rule `spec` breaks.
    fn violations(spec: &str) -> Vec<String> {
        match kube_cel::Validator::new().validate(&schema(), &object(spec), None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors
                .as_slice()
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message))
                .collect(),
        }
    }

    fn rule_count(schema: &Value) -> usize {
        match schema {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("x-kubernetes-validations", Value::Array(rules)) => rules.len(),
                    _ => rule_count(v),
                })
                .sum(),
            Value::Array(items) => items.iter().map(rule_count).sum(),
            _ => 0,
        }
    }

    /// `pools` is a list map keyed by name (the API server then refuses two pools of one
    /// name, and server-side apply merges pools by name), which needs `name` required.
    #[test]
    fn pools_are_a_list_map_keyed_by_name() {
        let schema = schema();
        let pools = &schema["properties"]["spec"]["properties"]["pools"];
        assert_eq!(pools["x-kubernetes-list-type"], "map", "{pools}");
        assert_eq!(pools["x-kubernetes-list-map-keys"], json!(["name"]));
        let required = pools["items"]["required"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(required.contains(&json!("name")), "{pools}");
    }

    /// `kubectl get natsclusters` shows the Ready condition, the server counts and (wide)
    /// the reason.
    #[test]
    fn printer_columns_show_the_ready_condition() {
        let crd = NatsCluster::crd();
        let columns: Vec<(String, String, Option<i32>)> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.json_path.clone(), c.priority))
            .collect();
        let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(names, ["Ready", "Servers", "Replicas", "Reason", "Age"]);
        assert_eq!(
            columns[0].1,
            r#".status.conditions[?(@.type=="Ready")].status"#
        );
        assert_eq!(columns[3].2, Some(1), "the reason only with -o wide");
    }

    #[test]
    fn valid_specs_and_every_sample_pass() {
        for spec in [
            "{}",
            "{replicas: 3}",
            "{broker: {lameDuckDuration: 1m, lameDuckGracePeriod: 15s, maxPayload: 1024, maxPending: 2048}}",
            "{pools: [{name: a, replicas: 1}], auth: {token: {name: s, key: t}}, tls: {client: {secretName: c}}}",
            "{tls: {routes: {secretName: r}}}",
            "{tls: {routes: {generate: true}}}",
            "{tls: {routes: {secretName: r, generate: false}}}",
            "{pools: [{name: a, replicas: 1}, {name: e, replicas: 2, role: leaf, broker: {maxPayload: 1024}}]}",
            "{pools: [{name: a, scaling: External}, {name: b, replicas: 2, scaling: Operator}]}",
        ] {
            assert_eq!(violations(spec), Vec::<String>::new(), "{spec}");
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/samples");
        for entry in std::fs::read_dir(dir).expect("config/samples") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("sample");
            let sample: Value = serde_yaml::from_str(&text).expect("sample parses");
            let result = kube_cel::Validator::new().validate(&schema(), &sample, None);
            assert!(result.is_ok(), "{}: {result:?}", path.display());
        }
    }

    /// Each rule refuses what it is for, and the operator's own validation (the broker's
    /// loader) refuses the same spec: the API server never accepts less than that.
    #[test]
    fn cross_field_rules_refuse_what_the_broker_refuses() {
        let cases = [
            (
                "{broker: {lameDuckDuration: 10s, lameDuckGracePeriod: 5s}}",
                "spec.broker: lameDuckDuration must be at least 30s (the broker's minimum)",
            ),
            (
                "{broker: {lameDuckDuration: 30s, lameDuckGracePeriod: 45s}}",
                "spec.broker: lameDuckGracePeriod must be shorter than lameDuckDuration (defaults 10s and 30s)",
            ),
            // The default duration (30s) counts too.
            (
                "{broker: {lameDuckGracePeriod: 40s}}",
                "spec.broker: lameDuckGracePeriod must be shorter than lameDuckDuration (defaults 10s and 30s)",
            ),
            (
                "{broker: {maxPayload: 2048, maxPending: 1024}}",
                "spec.broker: maxPayload must not exceed maxPending (default 64 MiB): no message could be delivered",
            ),
            (
                "{tls: {routes: {secretName: r, generate: true}}}",
                "spec.tls.routes: set exactly one of secretName and generate: true",
            ),
            (
                "{tls: {routes: {}}}",
                "spec.tls.routes: set exactly one of secretName and generate: true",
            ),
            (
                "{tls: {routes: {generate: false}}}",
                "spec.tls.routes: set exactly one of secretName and generate: true",
            ),
            (
                "{auth: {token: {name: s, key: t}, users: {name: s, key: u}}}",
                "spec.auth: set either token or users, not both",
            ),
            (
                "{replicas: 2, pools: [{name: a, replicas: 1}]}",
                "spec: set either spec.replicas or spec.pools, not both: kubectl scale natscluster only applies to a cluster without pools; scale one pool by patching spec.pools[i].replicas, or give it scaling: External and scale its StatefulSet",
            ),
            (
                "{pools: [{name: a}]}",
                "spec.pools[0]: set replicas, or scaling: External without replicas (the StatefulSet <cluster>-<pool> then owns the count: kubectl scale statefulset, HPA, KEDA)",
            ),
            (
                "{pools: [{name: a, replicas: 3, scaling: External}]}",
                "spec.pools[0]: set replicas, or scaling: External without replicas (the StatefulSet <cluster>-<pool> then owns the count: kubectl scale statefulset, HPA, KEDA)",
            ),
            (
                "{pools: [{name: e, replicas: 1, role: leaf}, {name: f, replicas: 1, role: leaf}]}",
                "spec: spec.pools needs at least one pool with role core: leaf pools connect to the core pools and cannot run on their own",
            ),
        ];
        for (spec, expected) in cases {
            assert_eq!(violations(spec), vec![expected.to_string()], "{spec}");
            let cluster: NatsCluster = serde_json::from_value(object(spec)).expect("a NatsCluster");
            assert!(
                crate::validate::validate(&cluster).is_err(),
                "the operator accepts {spec}"
            );
        }
        // Every rule of the CRD has a case above.
        let mut rules: Vec<&str> = cases.iter().map(|(_, message)| *message).collect();
        rules.dedup();
        assert_eq!(rule_count(&schema()), rules.len());
    }
}
