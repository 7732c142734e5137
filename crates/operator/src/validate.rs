//! Semantic validation: turns a `NatsCluster` into a [`ClusterPlan`] with every default
//! resolved, or reports every problem at once, each with the exact field path.
//!
//! The CRD schema already rejects most malformed values at admission time, but the checks
//! are repeated here because `render` reads manifests that never went through an API server,
//! and because some cross-field rules (unique names, distinct ports) are not in the schema.
//! Last, the rendered broker config is checked by the broker's own loader
//! ([`crate::broker_config`]), so what the broker refuses is refused here. No client, no
//! clock (a spec with a users Secret has its stand-in file written to a scratch directory).

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::ResourceExt;

use crate::crd::{
    default_image, NatsCluster, NodePool, PoolRole, PoolScaling, PullPolicy, RouteTls,
    SecretKeySelector, ServiceType, TlsSecret,
};
use crate::jetstream::JetStreamPlan;

pub const DEFAULT_REPLICAS: i32 = 3;
pub const DEFAULT_POOL: &str = "default";
pub const DEFAULT_CLIENT_PORT: i32 = 4222;
pub const DEFAULT_CLUSTER_PORT: i32 = 6222;
pub const DEFAULT_MONITOR_PORT: i32 = 8222;
pub const DEFAULT_LEAFNODE_PORT: i32 = 7422;
pub const DEFAULT_LAME_DUCK_DURATION: &str = "30s";
pub const DEFAULT_LAME_DUCK_GRACE: &str = "10s";
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// A StatefulSet's pods carry a `controller-revision-hash` label `<sts>-<hash>` whose value
/// must fit the 63-character label limit; the hash takes up to 11 characters.
pub const MAX_STATEFULSET_NAME: usize = 52;
/// Suffix of the headless Service name; a Service name is a 63-character DNS label.
pub const HEADLESS_SUFFIX: &str = "-headless";
/// Suffix of the Service leaf pools dial the core pools' leaf node port through.
pub const LEAFNODES_SUFFIX: &str = "-leafnodes";

/// Labels the operator owns on every pod; users may not override them through
/// `podLabels` because the selectors depend on them.
pub const RESERVED_LABELS: [&str; 5] = [
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/managed-by",
    "midge.dev/pool",
    "midge.dev/role",
];

/// One problem in the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the offending field, e.g. `spec.pools[1].name`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found in a spec, in field order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError(pub Vec<FieldError>);

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for error in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// A duration as written in the spec, with its parsed length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duration {
    /// Passed verbatim to the broker, which parses the same syntax.
    pub text: String,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub client: i32,
    pub cluster: i32,
    pub monitor: i32,
    /// Leaf node port of the core servers (listened on when the cluster has leaf pools).
    pub leafnodes: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerLimits {
    pub max_payload: Option<i64>,
    pub max_connections: Option<i64>,
    pub max_subscriptions: Option<i64>,
    pub max_pending: Option<i64>,
    pub ping_interval: Option<Duration>,
    pub ping_max: Option<i32>,
    pub write_deadline: Option<Duration>,
    pub lame_duck_duration: Duration,
    pub lame_duck_grace_period: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    Token(SecretKeySelector),
    Users(SecretKeySelector),
}

/// How many servers a StatefulSet has when nobody sets `spec.replicas` (Kubernetes'
/// default): where an externally scaled pool starts.
pub const STATEFULSET_DEFAULT_REPLICAS: i32 = 1;

/// A pool of the spec with its server count resolved. It dereferences to the spec's
/// [`NodePool`] (name, role, scheduling...), so a plan's pool reads like the spec's, but
/// `replicas` is the count every object is built for.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPlan {
    pub spec: NodePool,
    /// `spec.pools[i].replicas` for a pool the operator scales. For one scaled through its
    /// StatefulSet ([`PoolPlan::external`]), the StatefulSet's own count once the
    /// controller has read it ([`ClusterPlan::observe_replicas`]), and until then the
    /// count a new StatefulSet starts with.
    pub replicas: i32,
    /// `scaling: External`: the StatefulSet owns its `spec.replicas`, which the operator
    /// leaves out of what it applies.
    pub external: bool,
    /// JetStream as this pool's servers run it (`spec.jetstream` with the pool's
    /// override); `None`: off.
    pub jetstream: Option<JetStreamPlan>,
}

impl std::ops::Deref for PoolPlan {
    type Target = NodePool;

    fn deref(&self) -> &NodePool {
        &self.spec
    }
}

/// A validated spec with every default filled in: what [`crate::build`] works from.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterPlan {
    pub name: String,
    pub namespace: String,
    pub image: String,
    pub image_pull_policy: Option<PullPolicy>,
    pub image_pull_secrets: Vec<String>,
    /// In spec order; the shorthand `replicas` becomes one core pool named `default`.
    pub pools: Vec<PoolPlan>,
    pub ports: Ports,
    pub broker: BrokerLimits,
    pub auth: Option<Auth>,
    pub client_tls: Option<TlsSecret>,
    /// Route TLS; with `spec.tls.routes.generate` the Secret is the generated one
    /// ([`crate::route_tls`]), used exactly like a user's.
    pub route_tls: Option<TlsSecret>,
    /// Whether the operator creates the route TLS Secret when it is absent.
    pub route_tls_generated: bool,
    /// TLS of the leaf node connections (leaf pools to core pools).
    pub leaf_tls: Option<TlsSecret>,
    /// The credentials leaf servers log in to the core servers with; only when the
    /// cluster has a leaf pool.
    pub leaf_auth: Option<LeafAuthPlan>,
    pub metrics: bool,
    pub service_type: ServiceType,
    pub service_annotations: BTreeMap<String, String>,
    pub cluster_domain: String,
    /// Hash of the broker's start-up options in the rendered config (see
    /// [`crate::broker_config`]); in the pod template, so changing one rolls the pods.
    pub restart_hash: String,
    /// The same for each pool with its own config ([`ClusterPlan::has_own_config`]), by
    /// pool name.
    pub pool_restart_hashes: BTreeMap<String, String>,
    /// Who may reach the client and monitoring ports; `None` when the NetworkPolicy is
    /// disabled.
    pub network_policy: Option<NetworkPeers>,
    /// `spec.jetstream` alone: what the shared config runs (pools that override it have
    /// their own config).
    pub jetstream: Option<JetStreamPlan>,
}

/// Where the leaf node credentials come from ([`crate::leaf_auth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafAuthPlan {
    /// The Secret with the keys `user` and `password`.
    pub secret_name: String,
    /// Whether the operator creates it when it is absent (`<cluster>-leaf-credentials`).
    pub generated: bool,
}

/// Allowed sources of the broker pods' NetworkPolicy (empty lists: every source).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NetworkPeers {
    pub client_from: Vec<NetworkPolicyPeer>,
    pub monitoring_from: Vec<NetworkPolicyPeer>,
}

impl ClusterPlan {
    /// Pools whose servers are route mesh members.
    pub fn core_pools(&self) -> impl Iterator<Item = &PoolPlan> {
        self.pools.iter().filter(|p| p.role == PoolRole::Core)
    }

    /// Pools whose servers are leaf nodes of the core pools (edge sites).
    pub fn leaf_pools(&self) -> impl Iterator<Item = &PoolPlan> {
        self.pools.iter().filter(|p| p.role == PoolRole::Leaf)
    }

    /// Sets the server count of the externally scaled pool `pool` to what its StatefulSet
    /// says (`spec.replicas` of the live object). Routes, leaf remotes, PDBs and status
    /// are then built for it. Pools the operator scales keep the spec's count.
    pub fn observe_replicas(&mut self, pool: &str, replicas: i32) {
        if let Some(p) = self.pools.iter_mut().find(|p| p.external && p.name == pool) {
            p.replicas = replicas.max(0);
        }
    }

    /// Whether the core servers listen for leaf nodes (only when a leaf pool exists).
    pub fn has_leaf_pools(&self) -> bool {
        self.leaf_pools().next().is_some()
    }

    /// Whether `pool` has a config of its own (a leaf pool, or a pool with its own
    /// limits or JetStream settings) instead of the cluster's shared one.
    pub fn has_own_config(pool: &NodePool) -> bool {
        pool.role == PoolRole::Leaf || pool.broker.is_some() || pool.jetstream.is_some()
    }

    /// The restart hash of `pool`'s config.
    pub fn restart_hash_of(&self, pool: &NodePool) -> &str {
        self.pool_restart_hashes
            .get(&pool.name)
            .map_or(self.restart_hash.as_str(), String::as_str)
    }
}

/// Validates `cluster` and resolves its defaults.
pub fn validate(cluster: &NatsCluster) -> Result<ClusterPlan, ValidationError> {
    let mut errors = Vec::new();
    // A problem of a field several pools inherit (`spec.jetstream`) is reported once.
    let mut err = |path: &str, message: String| {
        let error = FieldError {
            path: path.to_string(),
            message,
        };
        if !errors.contains(&error) {
            errors.push(error);
        }
    };
    let spec = &cluster.spec;

    let name = cluster.name_any();
    if name.is_empty() {
        err("metadata.name", "is required".into());
    } else if !is_dns1035_label(&name) {
        err(
            "metadata.name",
            format!("{name:?} must be a DNS-1035 label (lower case letters, digits and '-', starting with a letter) because it names Services"),
        );
    } else if name.len() + HEADLESS_SUFFIX.len() > 63 {
        err(
            "metadata.name",
            format!(
                "{name:?} is {} characters; at most {} fit the headless Service name",
                name.len(),
                63 - HEADLESS_SUFFIX.len()
            ),
        );
    }
    let namespace = cluster.namespace().unwrap_or_default();
    if namespace.is_empty() {
        err("metadata.namespace", "is required".into());
    }

    let image = match &spec.image {
        Some(image) if image.trim().is_empty() => {
            err("spec.image", "must not be empty".into());
            String::new()
        }
        Some(image) => image.clone(),
        None => default_image(),
    };
    for (i, secret) in spec.image_pull_secrets.iter().enumerate() {
        if !is_dns1123_subdomain(secret) {
            err(
                &format!("spec.imagePullSecrets[{i}]"),
                format!("{secret:?} is not a valid Secret name"),
            );
        }
    }

    let pools = if spec.pools.is_empty() {
        let replicas = spec.replicas.unwrap_or(DEFAULT_REPLICAS);
        if replicas < 0 {
            err("spec.replicas", format!("must be >= 0, got {replicas}"));
        }
        vec![PoolPlan {
            spec: NodePool {
                name: DEFAULT_POOL.into(),
                replicas: Some(replicas),
                ..NodePool::default()
            },
            replicas,
            external: false,
            jetstream: None,
        }]
    } else {
        if spec.replicas.is_some() {
            err(
                "spec.replicas",
                "set either spec.replicas or spec.pools, not both".into(),
            );
        }
        spec.pools
            .iter()
            .map(|pool| {
                let external = pool.scaling == Some(PoolScaling::External);
                PoolPlan {
                    spec: pool.clone(),
                    replicas: match pool.replicas {
                        Some(n) if !external => n,
                        _ => STATEFULSET_DEFAULT_REPLICAS,
                    },
                    external,
                    jetstream: None,
                }
            })
            .collect()
    };
    let mut pools = pools;
    for (i, pool) in pools.iter_mut().enumerate() {
        let index = (!spec.pools.is_empty()).then_some(i);
        pool.jetstream =
            crate::jetstream::resolve(spec.jetstream.as_ref(), &pool.spec, index, &mut err);
    }
    let jetstream = crate::jetstream::resolve(
        spec.jetstream.as_ref(),
        &NodePool::default(),
        None,
        &mut err,
    );

    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, pool) in spec.pools.iter().enumerate() {
        let path = format!("spec.pools[{i}]");
        if !is_dns1123_label(&pool.name) {
            err(
                &format!("{path}.name"),
                format!("{:?} must be a DNS-1123 label (lower case letters, digits and '-', starting and ending with a letter or digit)", pool.name),
            );
        } else if let Some(first) = seen.get(pool.name.as_str()) {
            err(
                &format!("{path}.name"),
                format!(
                    "duplicate pool name {:?} (also spec.pools[{first}].name)",
                    pool.name
                ),
            );
        } else {
            seen.insert(&pool.name, i);
        }
        let sts = format!("{name}-{}", pool.name);
        match (pool.replicas, pool.scaling.unwrap_or_default()) {
            (Some(n), PoolScaling::Operator) if n < 0 => {
                err(&format!("{path}.replicas"), format!("must be >= 0, got {n}"));
            }
            (Some(_), PoolScaling::External) => err(
                &format!("{path}.replicas"),
                format!("must not be set with scaling: External: the StatefulSet {sts} owns the count (kubectl scale statefulset/{sts}, an HPA or KEDA)"),
            ),
            (None, PoolScaling::Operator) => err(
                &format!("{path}.replicas"),
                "is required (or set scaling: External to scale the pool's StatefulSet with kubectl scale, an HPA or KEDA)".into(),
            ),
            _ => {}
        }
        // A leaf pool's client Service is `<cluster>-<pool>`: it must not take the name
        // of the cluster-wide Services.
        let service = format!("-{}", pool.name);
        if pool.role == PoolRole::Leaf
            && (service == HEADLESS_SUFFIX || service == LEAFNODES_SUFFIX)
        {
            err(
                &format!("{path}.name"),
                format!(
                    "{:?} is reserved: a leaf pool's client Service would take the name of the cluster's {} Service",
                    pool.name, pool.name
                ),
            );
        }
        let overrides = pool.broker.clone().unwrap_or_default();
        for (field, value, min) in [
            ("maxPayload", overrides.max_payload, 1),
            ("maxConnections", overrides.max_connections, 1),
            ("maxSubscriptions", overrides.max_subscriptions, 0),
            ("maxPending", overrides.max_pending, 1),
        ] {
            if let Some(value) = value {
                if value < min {
                    err(
                        &format!("{path}.broker.{field}"),
                        format!("must be >= {min}, got {value}"),
                    );
                }
            }
        }
        for key in pool.pod_labels.keys() {
            if RESERVED_LABELS.contains(&key.as_str()) {
                err(
                    &format!("{path}.podLabels[{key:?}]"),
                    "is set by the operator and cannot be overridden".into(),
                );
            }
        }
    }
    if !spec.pools.is_empty() && !spec.pools.iter().any(|p| p.role == PoolRole::Core) {
        err(
            "spec.pools",
            "needs at least one pool with role core: leaf pools connect to the core pools and cannot run on their own".into(),
        );
    }
    // Checked on the resolved pools so the shorthand `default` pool is covered too.
    if !name.is_empty() {
        for (i, pool) in pools.iter().enumerate() {
            let sts = format!("{name}-{}", pool.name);
            if sts.len() > MAX_STATEFULSET_NAME {
                let path = if spec.pools.is_empty() {
                    "metadata.name".to_string()
                } else {
                    format!("spec.pools[{i}].name")
                };
                err(
                    &path,
                    format!(
                        "StatefulSet name {sts:?} is {} characters; cluster and pool names together must stay within {MAX_STATEFULSET_NAME} so pod names and revision labels fit",
                        sts.len()
                    ),
                );
            }
        }
    }

    let ports_spec = spec.ports.clone().unwrap_or_default();
    let monitoring = spec.monitoring.clone().unwrap_or_default();
    let ports = Ports {
        client: ports_spec.client.unwrap_or(DEFAULT_CLIENT_PORT),
        cluster: ports_spec.cluster.unwrap_or(DEFAULT_CLUSTER_PORT),
        monitor: monitoring.port.unwrap_or(DEFAULT_MONITOR_PORT),
        leafnodes: ports_spec.leafnodes.unwrap_or(DEFAULT_LEAFNODE_PORT),
    };
    let named_ports = [
        ("spec.ports.client", "client", ports.client),
        ("spec.ports.cluster", "cluster", ports.cluster),
        ("spec.monitoring.port", "monitoring", ports.monitor),
        ("spec.ports.leafnodes", "leaf node", ports.leafnodes),
    ];
    for (i, (path, _, port)) in named_ports.iter().enumerate() {
        if !(1..=65535).contains(port) {
            err(path, format!("must be between 1 and 65535, got {port}"));
        } else if let Some((_, other, _)) = named_ports[..i].iter().find(|(_, _, p)| p == port) {
            err(path, format!("{port} is already the {other} port"));
        }
    }

    let broker = spec.broker.clone().unwrap_or_default();
    let mut duration = |path: &str, value: Option<&String>| -> Option<Duration> {
        let text = value?;
        match parse_duration(text) {
            Some(millis) if millis > 0 => Some(Duration {
                text: text.clone(),
                millis,
            }),
            Some(_) => {
                err(path, format!("{text:?} must be longer than zero"));
                None
            }
            None => {
                err(
                    path,
                    format!("{text:?} is not a duration such as \"10s\", \"2m\" or \"1h30m\" (units ms, s, m, h)"),
                );
                None
            }
        }
    };
    let ping_interval = duration("spec.broker.pingInterval", broker.ping_interval.as_ref());
    let write_deadline = duration("spec.broker.writeDeadline", broker.write_deadline.as_ref());
    let lame_duck_duration = duration(
        "spec.broker.lameDuckDuration",
        Some(
            &broker
                .lame_duck_duration
                .clone()
                .unwrap_or_else(|| DEFAULT_LAME_DUCK_DURATION.into()),
        ),
    );
    let lame_duck_grace_period = duration(
        "spec.broker.lameDuckGracePeriod",
        Some(
            &broker
                .lame_duck_grace_period
                .clone()
                .unwrap_or_else(|| DEFAULT_LAME_DUCK_GRACE.into()),
        ),
    );
    let limits = [
        ("spec.broker.maxPayload", broker.max_payload, 1),
        ("spec.broker.maxConnections", broker.max_connections, 1),
        ("spec.broker.maxSubscriptions", broker.max_subscriptions, 0),
        ("spec.broker.maxPending", broker.max_pending, 1),
        ("spec.broker.pingMax", broker.ping_max.map(i64::from), 1),
    ];
    for (path, value, min) in limits {
        if let Some(value) = value {
            if value < min {
                err(path, format!("must be >= {min}, got {value}"));
            }
        }
    }
    let auth_spec = spec.auth.clone().unwrap_or_default();
    let has_leaf_pools = pools.iter().any(|p| p.role == PoolRole::Leaf);
    let leaf_auth = match &auth_spec.leafnodes {
        _ if !has_leaf_pools => None,
        Some(leaf) => {
            check_secret_name(
                &mut err,
                "spec.auth.leafnodes.secretName",
                &leaf.secret_name,
            );
            Some(LeafAuthPlan {
                secret_name: leaf.secret_name.clone(),
                generated: false,
            })
        }
        None => Some(LeafAuthPlan {
            secret_name: crate::leaf_auth::secret_name(&name),
            generated: true,
        }),
    };
    let auth = match auth_spec {
        crate::crd::AuthSpec {
            token: Some(_),
            users: Some(_),
            ..
        } => {
            err("spec.auth", "set either token or users, not both".into());
            None
        }
        crate::crd::AuthSpec {
            token: Some(token), ..
        } => {
            check_secret_name(&mut err, "spec.auth.token.name", &token.name);
            Some(Auth::Token(token))
        }
        crate::crd::AuthSpec {
            users: Some(users), ..
        } => {
            check_secret_name(&mut err, "spec.auth.users.name", &users.name);
            Some(Auth::Users(users))
        }
        _ => None,
    };
    let tls = spec.tls.clone().unwrap_or_default();
    if let Some(client) = &tls.client {
        check_secret_name(&mut err, "spec.tls.client.secretName", &client.secret_name);
    }
    let route_tls = match &tls.routes {
        None => None,
        Some(RouteTls {
            secret_name: Some(secret_name),
            generate: false,
        }) => {
            check_secret_name(&mut err, "spec.tls.routes.secretName", secret_name);
            Some(TlsSecret {
                secret_name: secret_name.clone(),
                verify: true,
            })
        }
        Some(RouteTls {
            secret_name: None,
            generate: true,
        }) => {
            let secret_name = crate::route_tls::secret_name(&name);
            check_secret_name(&mut err, "spec.tls.routes.generate", &secret_name);
            Some(TlsSecret {
                secret_name,
                verify: true,
            })
        }
        Some(_) => {
            err(
                "spec.tls.routes",
                "set exactly one of secretName and generate: true".into(),
            );
            None
        }
    };
    let route_tls_generated = tls.routes.as_ref().is_some_and(|r| r.generate);
    if let Some(leaf) = &tls.leafnodes {
        check_secret_name(&mut err, "spec.tls.leafnodes.secretName", &leaf.secret_name);
    }

    let cluster_domain = spec
        .cluster_domain
        .clone()
        .unwrap_or_else(|| DEFAULT_CLUSTER_DOMAIN.into());
    if !is_dns1123_subdomain(&cluster_domain) {
        err(
            "spec.clusterDomain",
            format!("{cluster_domain:?} is not a DNS domain"),
        );
    }
    let service = spec.service.clone().unwrap_or_default();

    if !errors.is_empty() {
        return Err(ValidationError(errors));
    }
    // Only reachable when every duration parsed: errors were reported otherwise.
    let (Some(lame_duck_duration), Some(lame_duck_grace_period)) =
        (lame_duck_duration, lame_duck_grace_period)
    else {
        return Err(ValidationError(vec![FieldError {
            path: "spec.broker".into(),
            message: "lame duck timers are invalid".into(),
        }]));
    };

    let mut plan = ClusterPlan {
        name,
        namespace,
        image,
        image_pull_policy: spec.image_pull_policy,
        image_pull_secrets: spec.image_pull_secrets.clone(),
        pools,
        ports,
        broker: BrokerLimits {
            max_payload: broker.max_payload,
            max_connections: broker.max_connections,
            max_subscriptions: broker.max_subscriptions,
            max_pending: broker.max_pending,
            ping_interval,
            ping_max: broker.ping_max,
            write_deadline,
            lame_duck_duration,
            lame_duck_grace_period,
        },
        auth,
        client_tls: tls.client,
        route_tls,
        route_tls_generated,
        leaf_tls: tls.leafnodes,
        leaf_auth,
        metrics: monitoring.metrics.unwrap_or(true),
        service_type: service.type_.unwrap_or_default(),
        service_annotations: service.annotations,
        cluster_domain,
        restart_hash: String::new(),
        pool_restart_hashes: BTreeMap::new(),
        network_policy: {
            let policy = spec.network_policy.clone().unwrap_or_default();
            policy.enabled.unwrap_or(true).then_some(NetworkPeers {
                client_from: policy.client_from,
                monitoring_from: policy.monitoring_from,
            })
        },
        jetstream,
    };
    // Last, on a plan that is otherwise valid: the broker's own loader has the final word.
    // Every config a pod reads is checked: the shared one and each pool's own.
    // A cluster-wide problem is reported once, from the shared config.
    let conf = crate::build::render_broker_config(&plan, &plan.pools);
    let checked = crate::broker_config::check(&conf).map_err(ValidationError)?;
    plan.restart_hash = checked.restart_hash;
    let mut errors = Vec::new();
    for (i, pool) in plan.pools.iter().enumerate() {
        if !ClusterPlan::has_own_config(pool) {
            continue;
        }
        let conf = crate::build::render_pool_config(&plan, pool);
        match crate::broker_config::check(&conf) {
            Ok(checked) => {
                plan.pool_restart_hashes
                    .insert(pool.name.clone(), checked.restart_hash);
            }
            Err(e) => errors.extend(e.into_iter().map(|e| pool_field_error(pool, i, e))),
        }
    }
    if !errors.is_empty() {
        return Err(ValidationError(errors));
    }
    Ok(plan)
}

/// An error in the config of pool `i`: a limit the pool overrides is that pool's field,
/// and the message says whose config it is.
fn pool_field_error(pool: &NodePool, i: usize, error: FieldError) -> FieldError {
    let overrides = pool.broker.clone().unwrap_or_default();
    let overridden = [
        ("maxPayload", overrides.max_payload.is_some()),
        ("maxConnections", overrides.max_connections.is_some()),
        ("maxSubscriptions", overrides.max_subscriptions.is_some()),
        ("maxPending", overrides.max_pending.is_some()),
    ];
    let path = match error.path.strip_prefix("spec.broker.") {
        Some(field) if overridden.iter().any(|(f, set)| *f == field && *set) => {
            format!("spec.pools[{i}].broker.{field}")
        }
        _ => error.path,
    };
    FieldError {
        path,
        message: error.message.replacen(
            "the rendered config",
            &format!("pool {}'s rendered config", pool.name),
            1,
        ),
    }
}

fn check_secret_name(err: &mut impl FnMut(&str, String), path: &str, name: &str) {
    if !is_dns1123_subdomain(name) {
        err(path, format!("{name:?} is not a valid Secret name"));
    }
}

/// Parses the broker's duration syntax (`500ms`, `10s`, `2m`, `1h30m`) into milliseconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let mut rest = text;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total = total.checked_add(value.checked_mul(unit)?)?;
    }
    Some(total)
}

/// RFC 1123 label: what Kubernetes accepts for most object names.
pub fn is_dns1123_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// RFC 1035 label: a DNS-1123 label that starts with a letter (required for Service names).
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters (Secret names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(yaml: &str) -> NatsCluster {
        let mut c: NatsCluster = serde_yaml::from_str(yaml).expect("test manifest parses");
        c.metadata.namespace.get_or_insert_with(|| "ns".into());
        c
    }

    fn errors(yaml: &str) -> Vec<String> {
        match validate(&cluster(yaml)) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const HEAD: &str =
        "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {name: demo}\n";

    #[test]
    fn replicas_shorthand_becomes_one_default_core_pool() {
        let plan = validate(&cluster(&format!("{HEAD}spec: {{replicas: 5}}"))).expect("valid");
        assert_eq!(plan.pools.len(), 1);
        assert_eq!(plan.pools[0].name, "default");
        assert_eq!(plan.pools[0].replicas, 5);
        assert_eq!(plan.pools[0].role, PoolRole::Core);
        assert_eq!(
            plan.image,
            format!("ghcr.io/midge-dev/midge:{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            plan.ports,
            Ports {
                client: 4222,
                cluster: 6222,
                monitor: 8222,
                leafnodes: 7422
            }
        );
        assert_eq!(plan.broker.lame_duck_duration.millis, 30_000);
        assert!(plan.metrics);
    }

    #[test]
    fn empty_spec_defaults_to_three_replicas() {
        let plan = validate(&cluster(&format!("{HEAD}spec: {{}}"))).expect("valid");
        assert_eq!(plan.pools[0].replicas, DEFAULT_REPLICAS);
    }

    #[test]
    fn duplicate_and_malformed_pool_names_name_the_field() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: a, replicas: 1}}\n  - {{name: a, replicas: 1}}\n  - {{name: Bad_Name, replicas: 1}}\n"
        ));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with(
                "spec.pools[1].name: duplicate pool name \"a\" (also spec.pools[0].name)"
            ),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("spec.pools[2].name: \"Bad_Name\" must be a DNS-1123 label"),
            "{errs:?}"
        );
    }

    #[test]
    fn leaf_pools_need_a_core_pool_and_free_service_names() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: edge, replicas: 1, role: leaf}}\n"
        ));
        assert_eq!(
            errs,
            vec!["spec.pools: needs at least one pool with role core: leaf pools connect to the core pools and cannot run on their own"]
        );
        let errs = errors(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: a, replicas: 1}}\n  - {{name: headless, replicas: 1, role: leaf}}\n  - {{name: leafnodes, replicas: 1, role: leaf, broker: {{maxConnections: 0}}}}\n  ports: {{leafnodes: 6222}}\n"
        ));
        assert_eq!(
            errs,
            vec![
                "spec.pools[1].name: \"headless\" is reserved: a leaf pool's client Service would take the name of the cluster's headless Service",
                "spec.pools[2].name: \"leafnodes\" is reserved: a leaf pool's client Service would take the name of the cluster's leafnodes Service",
                "spec.pools[2].broker.maxConnections: must be >= 1, got 0",
                "spec.ports.leafnodes: 6222 is already the cluster port",
            ]
        );
        let plan = validate(&cluster(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: a, replicas: 1}}\n  - {{name: edge, replicas: 2, role: leaf}}\n"
        )))
        .expect("a core and a leaf pool");
        assert!(plan.has_leaf_pools());
        // The leaf pool's config differs in start-up options (no leaf listener, its own
        // cluster name): its restart hash is its own.
        assert_ne!(plan.restart_hash_of(&plan.pools[1]), plan.restart_hash);
        assert_eq!(plan.restart_hash_of(&plan.pools[0]), plan.restart_hash);
    }

    /// With a leaf pool, leaf connections are authenticated: by the user's Secret, or by
    /// the one the operator generates. Without one, nothing of it.
    #[test]
    fn leaf_pools_get_leaf_credentials() {
        let pools =
            "  pools:\n  - {name: a, replicas: 1}\n  - {name: edge, replicas: 2, role: leaf}\n";
        let plan = validate(&cluster(&format!("{HEAD}spec:\n{pools}"))).expect("valid");
        assert_eq!(
            plan.leaf_auth,
            Some(LeafAuthPlan {
                secret_name: "demo-leaf-credentials".into(),
                generated: true
            })
        );
        let plan = validate(&cluster(&format!(
            "{HEAD}spec:\n{pools}  auth: {{leafnodes: {{secretName: edge-login}}}}\n"
        )))
        .expect("valid");
        assert_eq!(
            plan.leaf_auth,
            Some(LeafAuthPlan {
                secret_name: "edge-login".into(),
                generated: false
            })
        );
        assert_eq!(
            errors(&format!(
                "{HEAD}spec:\n{pools}  auth: {{leafnodes: {{secretName: Bad_Name}}}}\n"
            )),
            vec!["spec.auth.leafnodes.secretName: \"Bad_Name\" is not a valid Secret name"]
        );
        let plan = validate(&cluster(&format!("{HEAD}spec: {{replicas: 1}}"))).expect("valid");
        assert_eq!(plan.leaf_auth, None);
    }

    /// Each pool's own config goes through the broker's loader too; an error in a limit
    /// the pool overrides names the pool's field and its config.
    #[test]
    fn pool_configs_are_checked_by_the_broker() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: a, replicas: 1}}\n  - {{name: pi, replicas: 1, role: leaf, broker: {{maxPayload: 4096, maxPending: 1024}}}}\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.pools[1].broker.maxPayload: the broker refuses pool pi's rendered config: /etc/midge/midge.conf: max_payload"),
            "{errs:?}"
        );
    }

    #[test]
    fn negative_replicas_are_rejected() {
        assert_eq!(
            errors(&format!("{HEAD}spec: {{replicas: -1}}")),
            vec!["spec.replicas: must be >= 0, got -1"]
        );
        assert_eq!(
            errors(&format!(
                "{HEAD}spec:\n  pools: [{{name: a, replicas: -2}}]\n"
            )),
            vec!["spec.pools[0].replicas: must be >= 0, got -2"]
        );
    }

    /// `scaling: External` leaves the count to the StatefulSet: `replicas` must be left
    /// out (and is required otherwise); the plan starts at the StatefulSet's default and
    /// takes the live count once the controller observed it.
    #[test]
    fn externally_scaled_pools_take_the_live_count() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: a, replicas: 2, scaling: External}}\n  - {{name: b}}\n"
        ));
        assert_eq!(
            errs,
            vec![
                "spec.pools[0].replicas: must not be set with scaling: External: the StatefulSet demo-a owns the count (kubectl scale statefulset/demo-a, an HPA or KEDA)",
                "spec.pools[1].replicas: is required (or set scaling: External to scale the pool's StatefulSet with kubectl scale, an HPA or KEDA)",
            ]
        );
        let mut plan = validate(&cluster(&format!(
            "{HEAD}spec:\n  pools:\n  - {{name: a, replicas: 2}}\n  - {{name: b, scaling: External}}\n"
        )))
        .expect("valid");
        let counts = |plan: &ClusterPlan| -> Vec<(i32, bool)> {
            plan.pools
                .iter()
                .map(|p| (p.replicas, p.external))
                .collect()
        };
        assert_eq!(
            counts(&plan),
            [(2, false), (STATEFULSET_DEFAULT_REPLICAS, true)]
        );
        plan.observe_replicas("b", 7);
        // Only an external pool follows its StatefulSet.
        plan.observe_replicas("a", 9);
        assert_eq!(counts(&plan), [(2, false), (7, true)]);
    }

    #[test]
    fn replicas_and_pools_are_mutually_exclusive() {
        assert_eq!(
            errors(&format!(
                "{HEAD}spec:\n  replicas: 3\n  pools: [{{name: a, replicas: 1}}]\n"
            )),
            vec!["spec.replicas: set either spec.replicas or spec.pools, not both"]
        );
    }

    #[test]
    fn ports_must_be_in_range_and_distinct() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  ports: {{client: 70000, cluster: 8222}}\n  monitoring: {{port: 8222}}\n"
        ));
        assert_eq!(
            errs,
            vec![
                "spec.ports.client: must be between 1 and 65535, got 70000",
                "spec.monitoring.port: 8222 is already the cluster port",
            ]
        );
    }

    #[test]
    fn durations_must_parse() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  broker: {{pingInterval: 2 minutes, writeDeadline: 0s, lameDuckDuration: 1h30m}}\n"
        ));
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("spec.broker.pingInterval: \"2 minutes\" is not a duration"));
        assert_eq!(
            errs[1],
            "spec.broker.writeDeadline: \"0s\" must be longer than zero"
        );
        assert_eq!(parse_duration("1h30m"), Some(5_400_000));
        assert_eq!(parse_duration("500ms"), Some(500));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    #[test]
    fn names_must_leave_room_for_pod_names() {
        let long_pool = "p".repeat(40);
        let errs = errors(&format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: a-rather-long-name}}\nspec:\n  pools: [{{name: {long_pool}, replicas: 1}}]\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.pools[0].name: StatefulSet name"),
            "{errs:?}"
        );

        let long_name = format!("x{}", "y".repeat(50));
        let errs = errors(&format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: {long_name}}}\nspec: {{replicas: 1}}\n"
        ));
        assert!(
            errs[0].starts_with("metadata.name: StatefulSet name"),
            "{errs:?}"
        );

        let errs = errors(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {name: 1abc}\nspec: {}\n",
        );
        assert!(
            errs[0].starts_with("metadata.name: \"1abc\" must be a DNS-1035 label"),
            "{errs:?}"
        );
    }

    #[test]
    fn reserved_pod_labels_and_double_auth_are_rejected() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  pools:\n  - name: a\n    replicas: 1\n    podLabels: {{midge.dev/pool: b, team: x}}\n  auth:\n    token: {{name: s, key: t}}\n    users: {{name: s, key: u}}\n"
        ));
        assert_eq!(
            errs,
            vec![
                "spec.pools[0].podLabels[\"midge.dev/pool\"]: is set by the operator and cannot be overridden",
                "spec.auth: set either token or users, not both",
            ]
        );
    }

    /// Specs the broker refuses are refused here, by the broker's own loader, each error
    /// naming the spec field and the line of the rendered file.
    #[test]
    fn what_the_broker_refuses_is_invalid() {
        assert_eq!(
            errors(&format!("{HEAD}spec:\n  broker: {{lameDuckDuration: 10s}}\n")),
            vec!["spec.broker.lameDuckDuration: the broker refuses the rendered config: /etc/midge/midge.conf:14:21: lame_duck_duration: 10s is too short, the minimum is 30s"]
        );
        let errs = errors(&format!(
            "{HEAD}spec:\n  broker: {{lameDuckDuration: 30s, lameDuckGracePeriod: 45s}}\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.broker.lameDuckGracePeriod: the broker refuses the rendered config: /etc/midge/midge.conf: lame_duck_grace_period (45s) must be shorter"),
            "{errs:?}"
        );
        // Route TLS (both sides verified against the Secret's ca.crt) is what the broker
        // runs: the rendered cluster block loads.
        assert!(errors(&format!(
            "{HEAD}spec:\n  tls: {{routes: {{secretName: route-cert}}}}\n"
        ))
        .is_empty());
        // The users Secret's file is a stand-in here: the spec itself is fine.
        assert!(errors(&format!(
            "{HEAD}spec:\n  auth: {{users: {{name: u, key: k}}}}\n  tls: {{client: {{secretName: c, verify: true}}}}\n"
        ))
        .is_empty());
    }

    /// `generate` names the operator's Secret and is then used like a user's Secret; one
    /// of the two must be set, not both.
    #[test]
    fn route_tls_is_a_secret_name_or_generated() {
        let plan = validate(&cluster(&format!(
            "{HEAD}spec:\n  tls: {{routes: {{generate: true}}}}\n"
        )))
        .expect("valid");
        assert!(plan.route_tls_generated);
        assert_eq!(
            plan.route_tls.as_ref().map(|t| t.secret_name.as_str()),
            Some("demo-routes-tls")
        );
        let plan = validate(&cluster(&format!(
            "{HEAD}spec:\n  tls: {{routes: {{secretName: mine}}}}\n"
        )))
        .expect("valid");
        assert!(!plan.route_tls_generated);
        assert_eq!(
            plan.route_tls.as_ref().map(|t| t.secret_name.as_str()),
            Some("mine")
        );
        for routes in [
            "{secretName: mine, generate: true}",
            "{}",
            "{generate: false}",
        ] {
            assert_eq!(
                errors(&format!("{HEAD}spec:\n  tls: {{routes: {routes}}}\n")),
                vec!["spec.tls.routes: set exactly one of secretName and generate: true"],
                "{routes}"
            );
        }
    }

    #[test]
    fn payload_larger_than_pending_is_rejected_by_the_broker() {
        let errs = errors(&format!(
            "{HEAD}spec:\n  broker: {{maxPayload: 2048, maxPending: 1024}}\n"
        ));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("spec.broker.maxPayload: the broker refuses the rendered config: /etc/midge/midge.conf: max_payload"),
            "{errs:?}"
        );
    }
}
