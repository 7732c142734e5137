//! `midge-operator local`: runs the clusters of a manifest on this machine, one in-process
//! [`midge::Server`] per pod, for trying midge without Kubernetes.
//!
//! Each server reads the very `midge.conf` the operator would put in its ConfigMap (with
//! `$POD_NAME` resolved to the pod's name), and only what cannot work off Kubernetes is
//! rewritten: every listener moves to 127.0.0.1 on a free port, a JetStream store to a
//! temporary directory of each server's, the routes list names the
//! loopback route ports of every core server (of every server of its own pool for a leaf
//! pool), its own included, as on Kubernetes, and a leaf pool's remote lists the core
//! servers' loopback leaf node ports instead of their Service.
//!
//! Secrets (auth, TLS) cannot be read without a Kubernetes API, so manifests that
//! reference one are refused with the field to remove, rather than silently run open. The
//! leaf node credentials the operator would generate into a Secret are generated here too
//! (in memory, see [`LocalClusters::leaf_credentials`]), so leaf servers log in to the core
//! servers as on Kubernetes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kube::ResourceExt;

use crate::build::{
    render_broker_config, render_pool_config, LEAF_PASSWORD_ENV, LEAF_URL_ENV, LEAF_USER_ENV,
};
use crate::crd::PoolRole;
use crate::leaf_auth::LeafCredentials;
use crate::render::{parse_manifests, RenderError};
use crate::validate::{validate, Auth, ClusterPlan};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Manifest(#[from] RenderError),
    #[error("the manifest holds no NatsCluster")]
    Empty,
    #[error(
        "NatsCluster {cluster}: {field} refers to a Kubernetes Secret, which cannot be read \
         without a cluster; remove {field} to run locally"
    )]
    NeedsSecret {
        cluster: String,
        field: &'static str,
    },
    #[error("NatsCluster {cluster}: the rendered midge.conf does not load: {source}")]
    Config {
        cluster: String,
        #[source]
        source: midge::conf::ConfError,
    },
    #[error("cannot reserve a loopback route port: {0}")]
    ReservePort(#[source] std::io::Error),
    #[error("cannot make a JetStream store directory: {0}")]
    StoreDir(#[source] std::io::Error),
    #[error("server {server} did not start: {source}")]
    Start {
        server: String,
        #[source]
        source: midge::Error,
    },
}

/// One running server of a local cluster.
#[derive(Debug)]
pub struct LocalServer {
    /// `namespace/name` of the NatsCluster.
    pub cluster: String,
    pub pool: String,
    /// The pod name the server has on Kubernetes (also its server name).
    pub name: String,
    pub server: midge::Server,
    /// Where a core server listens for leaf nodes (`nats-leaf://127.0.0.1:<port>`, no
    /// credentials), when the cluster has leaf pools.
    pub leafnodes_url: Option<String>,
    /// The JetStream store (the pod's volume on Kubernetes): a temporary directory of
    /// this server's, removed when this is dropped.
    pub store_dir: Option<tempfile::TempDir>,
}

impl LocalServer {
    pub fn client_url(&self) -> String {
        self.server.client_url()
    }

    /// The monitoring base URL (`/varz`, `/routez`, `/healthz`...).
    pub fn monitor_url(&self) -> Option<String> {
        self.server.monitor_addr().map(|a| format!("http://{a}"))
    }
}

/// Every server started from a manifest, in manifest, pool and ordinal order.
#[derive(Debug)]
pub struct LocalClusters {
    pub servers: Vec<LocalServer>,
    /// The leaf node credentials generated for each cluster with leaf pools, by
    /// `namespace/name`: what the Secret `<cluster>-leaf-credentials` would hold.
    pub leaf_credentials: std::collections::BTreeMap<String, LeafCredentials>,
}

impl LocalClusters {
    /// Shuts every server down (concurrently: each waits for its own clients).
    pub async fn shutdown(self) {
        futures::future::join_all(self.servers.into_iter().map(|s| s.server.shutdown())).await;
    }
}

/// Starts every NatsCluster in `yaml`. On error, the servers already started are shut
/// down before returning.
pub async fn start(yaml: &str) -> Result<LocalClusters, LocalError> {
    let clusters = parse_manifests(yaml)?;
    if clusters.is_empty() {
        return Err(LocalError::Empty);
    }
    let mut plans = Vec::new();
    for cluster in &clusters {
        let plan = validate(cluster).map_err(|source| RenderError::Invalid {
            name: cluster.name_any(),
            source,
        })?;
        refuse_secrets(&plan)?;
        plans.push(plan);
    }
    let mut started = LocalClusters {
        servers: Vec::new(),
        leaf_credentials: std::collections::BTreeMap::new(),
    };
    for plan in &plans {
        let leaf = plan
            .leaf_auth
            .as_ref()
            .map(|_| crate::leaf_auth::generate());
        if let Err(e) = start_cluster(plan, leaf.as_ref(), &mut started.servers).await {
            started.shutdown().await;
            return Err(e);
        }
        if let Some(leaf) = leaf {
            started
                .leaf_credentials
                .insert(format!("{}/{}", plan.namespace, plan.name), leaf);
        }
    }
    Ok(started)
}

fn refuse_secrets(plan: &ClusterPlan) -> Result<(), LocalError> {
    let field = match &plan.auth {
        Some(Auth::Token(_)) => Some("spec.auth.token"),
        Some(Auth::Users(_)) => Some("spec.auth.users"),
        None if plan.client_tls.is_some() => Some("spec.tls.client"),
        // Generated route credentials need the Secret volume too: refused alike.
        None if plan.route_tls_generated => Some("spec.tls.routes.generate"),
        None if plan.route_tls.is_some() => Some("spec.tls.routes"),
        None if plan.leaf_tls.is_some() => Some("spec.tls.leafnodes"),
        None if plan.leaf_auth.as_ref().is_some_and(|l| !l.generated) => {
            Some("spec.auth.leafnodes")
        }
        None => None,
    };
    match field {
        Some(field) => Err(LocalError::NeedsSecret {
            cluster: format!("{}/{}", plan.namespace, plan.name),
            field,
        }),
        None => Ok(()),
    }
}

/// The options pod `pod` reads from the rendered ConfigMap, with the leaf node
/// credentials `leaf` (and the remote URL `leaf_url` carrying them) where it names them.
fn pod_options(
    plan: &ClusterPlan,
    conf: &str,
    pod: &str,
    leaf: Option<&LeafCredentials>,
    leaf_url: &str,
) -> Result<midge::Options, LocalError> {
    // The pod gets `$POD_NAME` (and the leaf credentials) from its environment; here they
    // are defined in front of the file instead, which the config format resolves first,
    // so the process environment (shared by all servers) is left alone.
    let mut text = format!("POD_NAME: \"{pod}\"\n");
    if let Some(leaf) = leaf {
        for (name, value) in [
            (LEAF_USER_ENV, leaf.user.as_str()),
            (LEAF_PASSWORD_ENV, leaf.password.as_str()),
            (LEAF_URL_ENV, leaf_url),
        ] {
            if conf.contains(&format!("${name}")) {
                text.push_str(&format!("{name}: \"{value}\"\n"));
            }
        }
    }
    text.push_str(conf);
    let origin = format!("{}/{}", crate::build::CONFIG_DIR, crate::build::CONFIG_FILE);
    midge::conf::parse_str(&text, &origin)
        .and_then(|map| midge::Options::from_conf(&map))
        .map(|loaded| loaded.options)
        .map_err(|source| LocalError::Config {
            cluster: format!("{}/{}", plan.namespace, plan.name),
            source,
        })
}

/// One pod to run: its pool, its name and the config its ConfigMap holds.
struct LocalPod {
    pool: String,
    name: String,
    conf: String,
    leaf: bool,
}

/// Holds `n` loopback listeners at once (so their ports differ); they are released just
/// before the servers bind the ports. The ports are taken below Linux's ephemeral range
/// (32768-60999), where the kernel never picks the local port of an outgoing connection:
/// the servers that start first dial their peers at once, and such a dial could otherwise
/// take a port released here for a server still to start. Another process binding the
/// very port in that gap would still make that server fail, with the port in its error.
fn reserve(n: usize, held: &mut Vec<std::net::TcpListener>) -> Result<Vec<u16>, LocalError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    const LOW: usize = 20_000;
    const SPAN: usize = 32_768 - LOW;
    // Where the next search starts: this process's own region, then onwards, so that
    // clusters started one after the other (and parallel test processes) rarely meet.
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let _ = NEXT.compare_exchange(
        usize::MAX,
        (std::process::id() as usize).wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    let mut ports = Vec::with_capacity(n);
    let mut tried = 0;
    while ports.len() < n {
        if tried == SPAN {
            return Err(LocalError::ReservePort(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "no free loopback port between 20000 and 32767",
            )));
        }
        tried += 1;
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(LOW + offset).unwrap_or(20_000);
        if let Ok(listener) = std::net::TcpListener::bind(SocketAddr::new(LOOPBACK, port)) {
            ports.push(port);
            held.push(listener);
        }
    }
    Ok(ports)
}

async fn start_cluster(
    plan: &ClusterPlan,
    leaf: Option<&LeafCredentials>,
    servers: &mut Vec<LocalServer>,
) -> Result<(), LocalError> {
    let shared = render_broker_config(plan, &plan.pools);
    let pods: Vec<LocalPod> = plan
        .pools
        .iter()
        .flat_map(|pool| {
            let conf = if ClusterPlan::has_own_config(pool) {
                render_pool_config(plan, pool)
            } else {
                shared.clone()
            };
            (0..pool.replicas).map(move |ordinal| {
                let sts = crate::build::stateful_set_name(&plan.name, &pool.name);
                LocalPod {
                    pool: pool.name.clone(),
                    name: format!("{sts}-{ordinal}"),
                    conf: conf.clone(),
                    leaf: pool.role == PoolRole::Leaf,
                }
            })
        })
        .collect();
    // Every route and leaf node URL must be known before the first server starts, so
    // the ports are reserved up front: a route port for every server, a leaf node port
    // for every core server when the cluster has leaf pools.
    let mut held = Vec::new();
    let route_ports = reserve(pods.len(), &mut held)?;
    let core = pods.iter().filter(|p| !p.leaf).count();
    let leaf_ports = if plan.has_leaf_pools() {
        reserve(core, &mut held)?
    } else {
        Vec::new()
    };
    // Routes stay within a pool's role: every core server (as on Kubernetes), or the
    // servers of the same leaf pool. Leaf servers dial every core server's leaf port
    // (on Kubernetes, one Service in front of them).
    let routes_of = |pod: &LocalPod| -> Vec<String> {
        pods.iter()
            .zip(&route_ports)
            .filter(|(p, _)| {
                if pod.leaf {
                    p.pool == pod.pool
                } else {
                    !p.leaf
                }
            })
            .map(|(_, port)| format!("nats://{LOOPBACK}:{port}"))
            .collect()
    };
    let userinfo = leaf
        .map(|l| format!("{}:{}@", l.user, l.password))
        .unwrap_or_default();
    let hub_urls: Vec<String> = leaf_ports
        .iter()
        .map(|port| format!("nats-leaf://{userinfo}{LOOPBACK}:{port}"))
        .collect();
    let leaf_url = hub_urls.first().cloned().unwrap_or_default();
    let mut options = Vec::with_capacity(pods.len());
    let mut leafnodes_urls = Vec::with_capacity(pods.len());
    let mut stores = Vec::with_capacity(pods.len());
    let mut core_leaf_ports = leaf_ports.iter();
    for (pod, port) in pods.iter().zip(&route_ports) {
        let mut opts = pod_options(plan, &pod.conf, &pod.name, leaf, &leaf_url)?;
        opts.host = LOOPBACK;
        opts.port = 0;
        opts.http_host = Some(LOOPBACK);
        opts.http_port = Some(0);
        opts.cluster.host = LOOPBACK;
        opts.cluster.port = Some(*port);
        opts.cluster.routes = routes_of(pod);
        if pod.leaf {
            for remote in &mut opts.leafnodes.remotes {
                remote.urls.clone_from(&hub_urls);
            }
        } else if opts.leafnodes.port.is_some() {
            opts.leafnodes.host = LOOPBACK;
            opts.leafnodes.port = core_leaf_ports.next().copied();
        }
        leafnodes_urls.push(
            opts.leafnodes
                .port
                .map(|port| format!("nats-leaf://{LOOPBACK}:{port}")),
        );
        // The pid file is for the pod's preStop hook and lives in a pod volume; there is no
        // file to watch either: the config exists only in memory here.
        opts.pid_file = None;
        opts.config_watch = false;
        // Each server's own store instead of the pod's volume.
        let store = match &mut opts.jetstream {
            Some(js) => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("{}-", pod.name))
                    .tempdir()
                    .map_err(LocalError::StoreDir)?;
                js.store_dir = Some(dir.path().to_path_buf());
                Some(dir)
            }
            None => None,
        };
        stores.push(store);
        options.push(opts);
    }
    drop(held);
    let cluster = format!("{}/{}", plan.namespace, plan.name);
    // In pod order, as the StatefulSets' pods come up; a leaf server that starts before
    // its hub is up dials again a second later.
    let started = pods
        .into_iter()
        .zip(options)
        .zip(leafnodes_urls)
        .zip(stores);
    for (((pod, opts), leafnodes_url), store_dir) in started {
        let server = midge::Server::start(opts)
            .await
            .map_err(|source| LocalError::Start {
                server: pod.name.clone(),
                source,
            })?;
        servers.push(LocalServer {
            cluster: cluster.clone(),
            pool: pod.pool,
            name: pod.name,
            server,
            leafnodes_url,
            store_dir,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str =
        "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {name: demo}\nspec:\n";

    #[tokio::test]
    async fn secrets_are_refused_with_the_field() {
        for (spec, field) in [
            ("  auth: {token: {name: a, key: b}}\n", "spec.auth.token"),
            ("  auth: {users: {name: a, key: b}}\n", "spec.auth.users"),
            ("  tls: {client: {secretName: c}}\n", "spec.tls.client"),
            ("  tls: {routes: {secretName: c}}\n", "spec.tls.routes"),
            (
                "  tls: {routes: {generate: true}}\n",
                "spec.tls.routes.generate",
            ),
            (
                "  pools: [{name: a, replicas: 1}, {name: e, replicas: 1, role: leaf}]\n  auth: {leafnodes: {secretName: mine}}\n",
                "spec.auth.leafnodes",
            ),
        ] {
            let err = start(&format!("{HEAD}{spec}"))
                .await
                .expect_err("secrets cannot be read locally");
            assert!(
                matches!(&err, LocalError::NeedsSecret { field: f, .. } if *f == field),
                "{err}"
            );
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[tokio::test]
    async fn leaf_only_and_empty_manifests_are_refused() {
        let err = start(&format!(
            "{HEAD}  pools: [{{name: e, replicas: 1, role: leaf}}]\n"
        ))
        .await
        .expect_err("a leaf pool needs a core pool");
        assert!(
            err.to_string()
                .contains("spec.pools: needs at least one pool with role core"),
            "{err}"
        );
        assert!(matches!(start("---\n").await, Err(LocalError::Empty)));
    }
}
