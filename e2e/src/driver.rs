//! The interface scenarios are written against: what a user (or the platform under them)
//! can do to a deployed cluster. A server is named by its pod name (`fleet-cloud-0`).

use std::future::Future;
use std::time::Duration;

use crate::rendered::SecretData;

/// One running (or stopped) server as the driver knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub pool: String,
    pub name: String,
    pub ordinal: u32,
}

/// How scenarios act on a cluster. Every wait inside takes a deadline and fails past it.
pub trait ClusterDriver {
    /// Short name for the report: `docker`, `kind`.
    fn name(&self) -> &str;

    /// Deploys `manifest` (YAML): the Secrets in it, then its one NatsCluster
    /// ([`crate::rendered::split_manifest`]).
    fn deploy(&mut self, manifest: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Applies an edited NatsCluster (the same name) and returns once the servers the new
    /// spec adds run and those it removes are gone (each through its preStop hook and
    /// grace period). Readiness is not awaited.
    fn apply(&mut self, manifest: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The NatsCluster last deployed or applied (its document alone, without Secrets).
    fn manifest(&self) -> &str;

    /// Sets the data of Secret `name` in the cluster's namespace (creating it if need be),
    /// as `kubectl apply` of the Secret would, and returns once what Kubernetes and the
    /// operator do on their own has happened:
    ///
    /// - pods that take a changed key as an environment variable are replaced: the operator
    ///   digests those keys into its StatefulSets' pod template, and each StatefulSet rolls,
    ///   highest ordinal first, one pod at a time (preStop, grace period), each new pod
    ///   Ready before the next is deleted. Returns when every such StatefulSet has rolled.
    /// - pods that mount the Secret see the new files when the kubelet syncs the volume (an
    ///   atomic swap of the `..data` symlink); that is not waited for here: on kind it
    ///   takes up to the kubelet's sync period, the docker driver swaps them at once.
    fn update_secret(
        &mut self,
        name: &str,
        data: SecretData,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Every server the cluster should have now, pool by pool, by ordinal.
    fn servers(&self) -> Vec<Server>;

    /// Waits until every server passes its readiness probe.
    fn wait_ready(&self, within: Duration) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// A NATS URL a client outside the cluster can dial to reach this server.
    fn client_url(&self, server: &str) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// The base URL (`http://host:port`) of this server's monitoring endpoints.
    fn monitor_url(&self, server: &str) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// Changes a pool's replica count as an edit of the NatsCluster would (see `apply`).
    fn scale(
        &mut self,
        pool: &str,
        replicas: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Stops a server the way the kubelet deletes its pod: preStop, TERM, KILL after the
    /// grace period. The server comes back with `start`. Returns the server's log up to
    /// its end, so a scenario can see what the preStop hook made it do.
    fn stop(&mut self, server: &str) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// `kill -9` of the server's process. The server comes back with `start`.
    fn kill(&mut self, server: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Starts a stopped or killed server again under the same name.
    fn start(&mut self, server: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Cuts the server's node off the network (the process keeps running).
    fn disconnect(&mut self, server: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Puts a disconnected node back on the network.
    fn reconnect(&mut self, server: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Runs the pool's preStop command inside the server's container.
    fn pre_stop(&self, server: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Runs a command inside the server's container and returns its standard output.
    fn exec(
        &self,
        server: &str,
        command: &[&str],
    ) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// The machine the server's process runs on, as `uname -m` says it.
    fn machine(&self, server: &str) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// The server's log so far (for failure reports).
    fn logs(&self, server: &str) -> impl Future<Output = anyhow::Result<String>> + Send;

    /// Removes everything the driver created.
    fn teardown(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Polls `check` until it returns `Ok(Some(_))` or `within` passes; the last error or
/// `what` is in the message when it does not. Checks are spaced `every` apart.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut last = String::from("never true");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {within:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(every).await;
    }
}
