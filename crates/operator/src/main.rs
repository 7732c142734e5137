use std::io::Read as _;

use std::future::Future;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::runtime::events::Reporter;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, CustomResourceExt};
use midge_operator::controller::{error_policy, reconcile, Context};
use midge_operator::crd::NatsCluster;
use midge_operator::leader::{run_while_leader, LeaderElector, LeaseConfig};
use midge_operator::secrets::clusters_referencing;

const USAGE: &str = "usage: midge-operator <command>

environment (run):
  MIDGE_OPERATOR_HTTP_ADDR     address of /healthz and /metrics (default 0.0.0.0:8080)
  MIDGE_OPERATOR_LEADER_ELECT  true: reconcile only while holding the Lease (default false)
  MIDGE_OPERATOR_LEASE_NAME    name of that Lease (default midge-operator)
  MIDGE_OPERATOR_WATCH_NAMESPACE  watch only this namespace (needs only a Role there);
                               empty: every namespace (needs the ClusterRole)
  POD_NAME                     this replica's identity in the Lease and in Events
  POD_NAMESPACE                namespace of the Lease (default: the client's namespace)
  RUST_LOG                     log filter (default info)

commands:
  run [--leader-elect] [--namespace <ns>]
                       reconcile NatsCluster resources (in a cluster or with a kubeconfig);
                       --namespace overrides MIDGE_OPERATOR_WATCH_NAMESPACE
  crd                  print the NatsCluster CustomResourceDefinition as YAML
  render -f <file|->   print every object the operator would apply for a manifest; a
                       generated route TLS Secret gets a new pair on every render (a
                       running cluster keeps the first one it gets)
  local -f <file|->    run the manifest's clusters on this machine (loopback ports, no
                       Kubernetes) until Ctrl-C; RUST_LOG=info shows the servers' logs
";

/// Name of the operator in Events and the default name of its Lease.
const OPERATOR: &str = "midge-operator";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => {
            let mut leader_elect = env_flag("MIDGE_OPERATOR_LEADER_ELECT")?;
            let mut namespace = non_empty_env("MIDGE_OPERATOR_WATCH_NAMESPACE");
            let mut rest = args[1..].iter();
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--leader-elect" => leader_elect = true,
                    "--namespace" => match rest.next().filter(|ns| !ns.is_empty()) {
                        Some(ns) => namespace = Some(ns.clone()),
                        None => bail!("--namespace needs a namespace\n\n{USAGE}"),
                    },
                    other => bail!("unknown argument to run: {other}\n\n{USAGE}"),
                }
            }
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(run(leader_elect, namespace))
        }
        Some("crd") => {
            print!(
                "{}",
                serde_yaml::to_string(&midge_operator::crd::NatsCluster::crd())?
            );
            Ok(())
        }
        Some("render") => {
            let yaml = read_manifest("render", &args[1..])?;
            print!("{}", midge_operator::render::render(&yaml)?);
            Ok(())
        }
        Some("local") => {
            let yaml = read_manifest("local", &args[1..])?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the tokio runtime")?
                .block_on(local(&yaml))
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// The manifest named by `-f <file>` (`-f -`: stdin).
fn read_manifest(command: &str, args: &[String]) -> anyhow::Result<String> {
    let path = match args {
        [flag, path] if flag == "-f" || flag == "--filename" => path,
        _ => bail!("{command} needs -f <file> (or -f - for stdin)\n\n{USAGE}"),
    };
    if path == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("reading stdin")?;
        Ok(buf)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))
    }
}

/// `local`: starts the servers, prints where they listen, and stops them on Ctrl-C or
/// SIGTERM.
async fn local(yaml: &str) -> anyhow::Result<()> {
    // Quiet by default: three servers' start-up lines would bury the URLs printed below.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let clusters = midge_operator::local::start(yaml).await?;
    for s in &clusters.servers {
        println!(
            "{:<24} client {:<24} monitor {}",
            s.name,
            s.client_url(),
            s.monitor_url().unwrap_or_else(|| "-".into())
        );
    }
    let mut names: Vec<&str> = clusters
        .servers
        .iter()
        .map(|s| s.cluster.as_str())
        .collect();
    names.dedup();
    println!(
        "{} server(s) of NatsCluster {} running on loopback; Ctrl-C stops them",
        clusters.servers.len(),
        names.join(", ")
    );
    shutdown_signal().await;
    clusters.shutdown().await;
    println!("stopped");
    Ok(())
}

/// A boolean setting: unset or empty is false; anything but true/false/1/0 is an error
/// rather than a silent default, so a typo cannot disable leader election unnoticed.
fn env_flag(name: &str) -> anyhow::Result<bool> {
    match std::env::var(name).unwrap_or_default().as_str() {
        "" | "false" | "0" => Ok(false),
        "true" | "1" => Ok(true),
        other => bail!("{name}={other}: expected true or false"),
    }
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Completes on SIGTERM (what the kubelet sends) or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the operator");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

/// Runs the controller until shutdown (or, with leader election, while this replica
/// leads), then lets in-flight reconciles finish.
async fn run(leader_elect: bool, watch_namespace: Option<String>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let pod_name = non_empty_env("POD_NAME");
    let reporter = Reporter {
        controller: OPERATOR.to_string(),
        instance: pod_name.clone(),
    };
    let ctx = Arc::new(Context::new(client.clone(), reporter));
    match &watch_namespace {
        Some(ns) => tracing::info!(namespace = %ns, "watching one namespace"),
        None => tracing::info!("watching every namespace"),
    }

    let addr =
        std::env::var("MIDGE_OPERATOR_HTTP_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".to_string());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    // A standby replica serves /healthz too: it is healthy while it waits for the Lease.
    let http = tokio::spawn(midge_operator::http::serve(listener, ctx.clone()));

    let shutdown = shutdown_signal().shared();
    if leader_elect {
        let Some(identity) = pod_name else {
            bail!(
                "leader election needs POD_NAME (set it from metadata.name with the downward API)"
            );
        };
        let namespace = non_empty_env("POD_NAMESPACE")
            .unwrap_or_else(|| client.default_namespace().to_string());
        let lease_name =
            non_empty_env("MIDGE_OPERATOR_LEASE_NAME").unwrap_or_else(|| OPERATOR.into());
        tracing::info!(%identity, %namespace, lease = %lease_name, "leader election enabled");
        let elector = LeaderElector::new(
            Api::namespaced(client.clone(), &namespace),
            LeaseConfig::new(lease_name, identity),
        );
        run_while_leader(elector, shutdown, |stop| {
            run_controller(client.clone(), watch_namespace.clone(), ctx.clone(), stop)
        })
        .await;
    } else {
        run_controller(client, watch_namespace, ctx, shutdown).await;
    }
    http.abort();
    tracing::info!("stopped");
    Ok(())
}

/// The controller, until `stop` completes; in-flight reconciles finish first. With a
/// namespace, every watch is limited to it (a Role there is enough).
async fn run_controller(
    client: Client,
    namespace: Option<String>,
    ctx: Arc<Context>,
    stop: impl Future<Output = ()> + Send + Sync + 'static,
) {
    fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    // Children are watched only through our label so unrelated objects cause no work.
    let children = watcher::Config::default().labels("app.kubernetes.io/managed-by=midge-operator");
    let controller = Controller::new(api::<NatsCluster>(&client, ns), watcher::Config::default());
    let clusters = controller.store();
    controller
        .owns(api::<StatefulSet>(&client, ns), children.clone())
        .owns(api::<ConfigMap>(&client, ns), children.clone())
        .owns(api::<Service>(&client, ns), children)
        // Users' Secrets carry none of our labels: every Secret event is mapped to the
        // clusters of its namespace that name it (usually none).
        .watches(
            api::<Secret>(&client, ns),
            watcher::Config::default(),
            move |secret| clusters_referencing(&clusters, &secret),
        )
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile error"),
            }
        })
        .await;
}
