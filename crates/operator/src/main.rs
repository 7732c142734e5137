use std::io::Read as _;

use std::sync::Arc;

use anyhow::{bail, Context as _};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, CustomResourceExt};
use midge_operator::controller::{error_policy, reconcile, Context};
use midge_operator::crd::NatsCluster;

const USAGE: &str = "usage: midge-operator <command>

environment (run):
  MIDGE_OPERATOR_HTTP_ADDR  address of /healthz and /metrics (default 0.0.0.0:8080)
  RUST_LOG                  log filter (default info)

commands:
  run                  reconcile NatsCluster resources (in a cluster or with a kubeconfig)
  crd                  print the NatsCluster CustomResourceDefinition as YAML
  render -f <file|->   print every object the operator would apply for a manifest
";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime")?
            .block_on(run()),
        Some("crd") => {
            print!(
                "{}",
                serde_yaml::to_string(&midge_operator::crd::NatsCluster::crd())?
            );
            Ok(())
        }
        Some("render") => {
            let path = match &args[1..] {
                [flag, path] if flag == "-f" || flag == "--filename" => path,
                _ => bail!("render needs -f <file> (or -f - for stdin)\n\n{USAGE}"),
            };
            let yaml = if path == "-" {
                let mut buf = String::new();
                std::io::stdin()
                    .read_to_string(&mut buf)
                    .context("reading stdin")?;
                buf
            } else {
                std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
            };
            print!("{}", midge_operator::render::render(&yaml)?);
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

/// Runs the controller until SIGTERM or Ctrl-C, then lets in-flight reconciles finish.
async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let client = Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let ctx = Arc::new(Context::new(client.clone()));

    let addr =
        std::env::var("MIDGE_OPERATOR_HTTP_ADDR").unwrap_or_else(|_| "0.0.0.0:8080".to_string());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(%addr, "serving /healthz and /metrics");
    let http = tokio::spawn(midge_operator::http::serve(listener, ctx.clone()));

    // Children are watched only through our label so unrelated objects cause no work.
    let children = watcher::Config::default().labels("app.kubernetes.io/managed-by=midge-operator");
    Controller::new(
        Api::<NatsCluster>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), children.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), children.clone())
    .owns(Api::<Service>::all(client), children)
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((object, _)) => tracing::debug!(cluster = %object, "reconciled"),
            Err(error) => tracing::debug!(%error, "reconcile error"),
        }
    })
    .await;
    http.abort();
    tracing::info!("stopped");
    Ok(())
}
