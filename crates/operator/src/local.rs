//! `midge-operator local`: runs the clusters of a manifest on this machine, one in-process
//! [`midge::Server`] per core pod, for trying midge without Kubernetes.
//!
//! Each server reads the very `midge.conf` the operator would put in the ConfigMap (with
//! `$POD_NAME` resolved to the pod's name), and only what cannot work off Kubernetes is
//! rewritten: every listener moves to 127.0.0.1 on a free port, and the routes list names
//! the loopback route ports of every core server, its own included, as on Kubernetes.
//!
//! Secrets (auth, TLS) cannot be read without a Kubernetes API, so manifests that
//! reference one are refused with the field to remove, rather than silently run open.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use kube::ResourceExt;

use crate::build::render_broker_config;
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
    };
    for plan in &plans {
        if let Err(e) = start_cluster(plan, &mut started.servers).await {
            started.shutdown().await;
            return Err(e);
        }
    }
    Ok(started)
}

fn refuse_secrets(plan: &ClusterPlan) -> Result<(), LocalError> {
    let field = match &plan.auth {
        Some(Auth::Token(_)) => Some("spec.auth.token"),
        Some(Auth::Users(_)) => Some("spec.auth.users"),
        None if plan.client_tls.is_some() => Some("spec.tls.client"),
        None if plan.route_tls.is_some() => Some("spec.tls.routes"),
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

/// The options pod `pod` reads from the rendered ConfigMap.
fn pod_options(plan: &ClusterPlan, conf: &str, pod: &str) -> Result<midge::Options, LocalError> {
    // The pod gets `$POD_NAME` from its environment; here it is defined in front of the
    // file instead, which the config format resolves first, so the process environment
    // (shared by all servers) is left alone.
    let text = format!("POD_NAME: \"{pod}\"\n{conf}");
    let origin = format!("{}/{}", crate::build::CONFIG_DIR, crate::build::CONFIG_FILE);
    midge::conf::parse_str(&text, &origin)
        .and_then(|map| midge::Options::from_conf(&map))
        .map(|loaded| loaded.options)
        .map_err(|source| LocalError::Config {
            cluster: format!("{}/{}", plan.namespace, plan.name),
            source,
        })
}

async fn start_cluster(
    plan: &ClusterPlan,
    servers: &mut Vec<LocalServer>,
) -> Result<(), LocalError> {
    let conf = render_broker_config(plan, &plan.pools);
    let pods: Vec<(String, String)> = plan
        .core_pools()
        .flat_map(|pool| {
            (0..pool.replicas).map(|ordinal| {
                let sts = crate::build::stateful_set_name(&plan.name, &pool.name);
                (pool.name.clone(), format!("{sts}-{ordinal}"))
            })
        })
        .collect();
    // Every route URL must be known before the first server starts, so the route ports
    // are reserved up front: all listeners are held at once (so the ports differ) and
    // released just before the servers bind them. Another process could take one in that
    // gap; the server then fails to start with the port in its error.
    let reserved: Vec<std::net::TcpListener> = pods
        .iter()
        .map(|_| std::net::TcpListener::bind(SocketAddr::new(LOOPBACK, 0)))
        .collect::<Result<_, _>>()
        .map_err(LocalError::ReservePort)?;
    let ports: Vec<u16> = reserved
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(LocalError::ReservePort)?;
    let routes: Vec<String> = ports
        .iter()
        .map(|p| format!("nats://{LOOPBACK}:{p}"))
        .collect();
    let mut options = Vec::with_capacity(pods.len());
    for ((_, pod), port) in pods.iter().zip(&ports) {
        let mut opts = pod_options(plan, &conf, pod)?;
        opts.host = LOOPBACK;
        opts.port = 0;
        opts.http_host = Some(LOOPBACK);
        opts.http_port = Some(0);
        opts.cluster.host = LOOPBACK;
        opts.cluster.port = Some(*port);
        opts.cluster.routes.clone_from(&routes);
        // The pid file is for the pod's preStop hook and lives in a pod volume; there is no
        // file to watch either: the config exists only in memory here.
        opts.pid_file = None;
        opts.config_watch = false;
        options.push(opts);
    }
    drop(reserved);
    let cluster = format!("{}/{}", plan.namespace, plan.name);
    for ((pool, name), opts) in pods.into_iter().zip(options) {
        let server = midge::Server::start(opts)
            .await
            .map_err(|source| LocalError::Start {
                server: name.clone(),
                source,
            })?;
        servers.push(LocalServer {
            cluster: cluster.clone(),
            pool,
            name,
            server,
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
        // Route TLS is refused before any Secret is needed: the broker does not have it.
        let err = start(&format!("{HEAD}  tls: {{routes: {{secretName: c}}}}\n"))
            .await
            .expect_err("route TLS is refused");
        assert!(
            err.to_string()
                .contains("spec.tls.routes: the broker refuses the rendered config"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn leaf_pools_and_empty_manifests_are_refused() {
        let err = start(&format!(
            "{HEAD}  pools: [{{name: e, replicas: 1, role: leaf}}]\n"
        ))
        .await
        .expect_err("leaf is rejected");
        assert!(err.to_string().contains("spec.pools[0].role"), "{err}");
        assert!(matches!(start("---\n").await, Err(LocalError::Empty)));
    }
}
