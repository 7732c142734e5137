//! The kind driver: the scenarios against a real Kubernetes cluster (kind, created by
//! `e2e/run-kind.sh` with `e2e/kind/cluster.yaml`) where the operator from the chart does the
//! work. The NatsCluster is applied with server-side apply, scaled by re-applying it with
//! new replicas, and read back through pod and NatsCluster status. Pods are reached through
//! `kubectl port-forward`, commands run with `kubectl exec`, and a node is cut off the way
//! kind nodes can be: `docker network disconnect kind <node>`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use k8s_openapi::ByteString;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, LogParams, Patch,
    PatchParams,
};
use kube::Client;
use tokio::io::AsyncBufReadExt;

use crate::driver::{wait_for, ClusterDriver, Server};
use crate::rendered::SecretData;

const FIELD_MANAGER: &str = "midge-e2e";
const POLL: Duration = Duration::from_millis(500);
const KIND_NETWORK: &str = "kind";
/// The pod template annotation the operator puts the digest of start-up-only Secrets in
/// (`midge_operator::secrets::SECRET_RESTART_ANNOTATION`).
const SECRET_RESTART_ANNOTATION: &str = "midge.dev/secret-restart-hash";
/// A rolling update of every pool: each pod through preStop, grace period and readiness.
const ROLLOUT_WITHIN: Duration = Duration::from_secs(900);

#[derive(Debug)]
struct Forward {
    child: tokio::process::Child,
    local_port: u16,
}

pub struct KindDriver {
    client: Client,
    resource: ApiResource,
    namespace: String,
    name: String,
    manifest: String,
    /// Pool name -> replicas, in spec order.
    pools: Vec<(String, u32)>,
    /// (pod, container port) -> a running `kubectl port-forward`.
    forwards: Mutex<BTreeMap<(String, u16), Forward>>,
    ports: BTreeMap<&'static str, u16>,
    /// Node -> its address on the kind network while it is disconnected.
    node_ips: Mutex<BTreeMap<String, String>>,
    /// The Secrets the driver applied, deleted with the cluster.
    secrets: Vec<String>,
}

impl std::fmt::Debug for KindDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindDriver")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .field("pools", &self.pools)
            .finish_non_exhaustive()
    }
}

impl KindDriver {
    /// Connects with the current kubeconfig context (run-kind.sh points it at the kind
    /// cluster).
    pub async fn new() -> anyhow::Result<Self> {
        let client = Client::try_default()
            .await
            .context("no Kubernetes cluster (kubeconfig) reachable")?;
        let gvk = GroupVersionKind::gvk("midge.dev", "v1alpha1", "NatsCluster");
        Ok(Self {
            client,
            resource: ApiResource::from_gvk_with_plural(&gvk, "natsclusters"),
            namespace: String::new(),
            name: String::new(),
            manifest: String::new(),
            pools: Vec::new(),
            forwards: Mutex::new(BTreeMap::new()),
            ports: BTreeMap::from([("client", 4222), ("monitor", 8222)]),
            node_ips: Mutex::new(BTreeMap::new()),
            secrets: Vec::new(),
        })
    }

    /// The API client, for the kind-only scenarios (`kind_only.rs`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The NatsCluster's namespace (known once deployed).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The NatsCluster's name (known once deployed).
    pub fn cluster_name(&self) -> &str {
        &self.name
    }

    fn clusters(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.namespace, &self.resource)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secret_api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn stateful_sets(&self) -> Api<StatefulSet> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Server-side applies a Secret under the driver's field manager.
    async fn apply_secret(&mut self, secret: &Secret) -> anyhow::Result<()> {
        let name = secret
            .metadata
            .name
            .clone()
            .context("a Secret without a name")?;
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.secret_api()
            .patch(&name, &params, &Patch::Apply(secret))
            .await
            .with_context(|| format!("server-side apply of Secret {name}"))?;
        if !self.secrets.contains(&name) {
            self.secrets.push(name);
        }
        Ok(())
    }

    /// The cluster's StatefulSets whose pods take one of `keys` of Secret `secret` as an
    /// environment variable, with the restart digest their template has now.
    async fn env_readers(
        &self,
        secret: &str,
        keys: &[String],
    ) -> anyhow::Result<Vec<(String, Option<String>)>> {
        let selector = format!("app.kubernetes.io/instance={}", self.name);
        let list = self
            .stateful_sets()
            .list(&ListParams::default().labels(&selector))
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|sts| {
                sts.spec
                    .template
                    .spec
                    .iter()
                    .flat_map(|p| &p.containers)
                    .flat_map(|c| c.env.iter().flatten())
                    .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                    .any(|r| r.name == secret && keys.contains(&r.key))
            })
            .filter_map(|sts| {
                let digest = restart_digest(&sts);
                Some((sts.metadata.name?, digest))
            })
            .collect())
    }

    /// Whether StatefulSet `name` carries a restart digest other than `before` and has
    /// rolled every pod to it, all Ready.
    async fn rolled_past(&self, name: &str, before: Option<&str>) -> anyhow::Result<bool> {
        let sts = self.stateful_sets().get(name).await?;
        if restart_digest(&sts).as_deref() == before {
            return Ok(false);
        }
        let want = sts.spec.replicas.unwrap_or(1);
        let Some(status) = sts.status else {
            return Ok(false);
        };
        Ok(status.observed_generation >= sts.metadata.generation
            && status.update_revision.is_some()
            && status.current_revision == status.update_revision
            && status.updated_replicas == Some(want)
            && status.ready_replicas == Some(want))
    }

    async fn apply_manifest(&mut self, manifest: &str) -> anyhow::Result<()> {
        let object: DynamicObject = serde_yaml::from_str(manifest)?;
        self.name = object.metadata.name.clone().context("no metadata.name")?;
        self.namespace = object
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        self.pools = object.data["spec"]["pools"]
            .as_array()
            .context("the e2e scenarios need spec.pools")?
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_string(),
                    u32::try_from(p["replicas"].as_u64().unwrap_or(1)).ok()?,
                ))
            })
            .collect();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.clusters()
            .patch(&self.name, &params, &Patch::Apply(&object))
            .await
            .context("server-side apply of the NatsCluster")?;
        self.manifest = manifest.to_string();
        Ok(())
    }

    /// A local port forwarded to `port` of `pod`, reusing a forward that still runs.
    async fn forward(&self, pod: &str, port: u16) -> anyhow::Result<u16> {
        let key = (pod.to_string(), port);
        if let Ok(mut forwards) = self.forwards.lock() {
            if let Some(f) = forwards.get_mut(&key) {
                if matches!(f.child.try_wait(), Ok(None)) {
                    return Ok(f.local_port);
                }
                forwards.remove(&key);
            }
        }
        let mut child = tokio::process::Command::new("kubectl")
            .args([
                "port-forward",
                "-n",
                &self.namespace,
                &format!("pod/{pod}"),
                &format!(":{port}"),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("kubectl port-forward")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        // "Forwarding from 127.0.0.1:41234 -> 4222"
        let local_port = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(p) = line
                    .strip_prefix("Forwarding from 127.0.0.1:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    return Ok(p);
                }
            }
            anyhow::bail!("kubectl port-forward exited")
        })
        .await
        .context("kubectl port-forward did not start")??;
        if let Ok(mut forwards) = self.forwards.lock() {
            forwards.insert(key, Forward { child, local_port });
        }
        Ok(local_port)
    }

    async fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new("kubectl")
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .context("cannot run kubectl")?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn node_of(&self, server: &str) -> anyhow::Result<String> {
        self.pods()
            .get(server)
            .await?
            .spec
            .and_then(|s| s.node_name)
            .with_context(|| format!("{server} is not scheduled"))
    }

    async fn pod_ready(&self, server: &str) -> anyhow::Result<bool> {
        let Some(pod) = self.pods().get_opt(server).await? else {
            return Ok(false);
        };
        Ok(pod.metadata.deletion_timestamp.is_none()
            && pod
                .status
                .and_then(|s| s.conditions)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    async fn cluster_ready(&self) -> anyhow::Result<bool> {
        let object = self.clusters().get(&self.name).await?;
        let status = &object.data["status"];
        let current = status["observedGeneration"].as_i64() == object.metadata.generation;
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        Ok(current && ready)
    }

    async fn wait_gone(&self, server: &str) -> anyhow::Result<()> {
        wait_for(
            &format!("{server} to be deleted"),
            Duration::from_secs(180),
            POLL,
            || async { Ok(self.pods().get_opt(server).await?.is_none().then_some(())) },
        )
        .await
    }
}

impl ClusterDriver for KindDriver {
    fn name(&self) -> &str {
        "kind"
    }

    async fn deploy(&mut self, manifest: &str) -> anyhow::Result<()> {
        let manifest = crate::rendered::split_manifest(manifest)?;
        let object: DynamicObject = serde_yaml::from_str(&manifest.cluster)?;
        self.namespace = object
            .metadata
            .namespace
            .unwrap_or_else(|| "default".into());
        for secret in &manifest.secrets {
            self.apply_secret(secret).await?;
        }
        self.apply_manifest(&manifest.cluster).await
    }

    fn manifest(&self) -> &str {
        &self.manifest
    }

    async fn update_secret(&mut self, name: &str, data: SecretData) -> anyhow::Result<()> {
        let existing = self.secret_api().get_opt(name).await?;
        let old = existing
            .as_ref()
            .map(crate::rendered::secret_data)
            .unwrap_or_default();
        let changed: Vec<String> = old
            .keys()
            .chain(data.keys())
            .filter(|k| old.get(*k) != data.get(*k))
            .cloned()
            .collect();
        let readers = self.env_readers(name, &changed).await?;
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            // Applied again as it is: left out, the apply would drop it, and it is immutable.
            type_: existing.and_then(|s| s.type_),
            data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Secret::default()
        };
        self.apply_secret(&secret).await?;
        for (sts, before) in &readers {
            wait_for(
                &format!("StatefulSet {sts} to roll for the new Secret {name}"),
                ROLLOUT_WITHIN,
                POLL,
                || async {
                    Ok(self
                        .rolled_past(sts, before.as_deref())
                        .await?
                        .then_some(()))
                },
            )
            .await?;
        }
        Ok(())
    }

    fn servers(&self) -> Vec<Server> {
        self.pools
            .iter()
            .flat_map(|(pool, replicas)| {
                (0..*replicas).map(move |ordinal| Server {
                    pool: pool.clone(),
                    name: format!("{}-{pool}-{ordinal}", self.name),
                    ordinal,
                })
            })
            .collect()
    }

    async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        for server in self.servers() {
            wait_for(&format!("{} Ready", server.name), within, POLL, || async {
                Ok(self.pod_ready(&server.name).await?.then_some(()))
            })
            .await?;
        }
        wait_for(
            "the NatsCluster's Ready condition",
            within,
            POLL,
            || async { Ok(self.cluster_ready().await?.then_some(())) },
        )
        .await
    }

    async fn client_url(&self, server: &str) -> anyhow::Result<String> {
        let port = self.forward(server, self.ports["client"]).await?;
        Ok(format!("nats://127.0.0.1:{port}"))
    }

    async fn monitor_url(&self, server: &str) -> anyhow::Result<String> {
        let port = self.forward(server, self.ports["monitor"]).await?;
        Ok(format!("http://127.0.0.1:{port}"))
    }

    async fn scale(&mut self, pool: &str, replicas: u32) -> anyhow::Result<()> {
        let manifest = crate::rendered::with_replicas(&self.manifest, pool, replicas)?;
        ClusterDriver::apply(self, &manifest).await
    }

    async fn apply(&mut self, manifest: &str) -> anyhow::Result<()> {
        let before = self.servers();
        self.apply_manifest(manifest).await?;
        let after = self.servers();
        for gone in before.iter().filter(|s| !after.contains(s)) {
            self.wait_gone(&gone.name).await?;
        }
        for new in after.iter().filter(|s| !before.contains(s)) {
            wait_for(
                &format!("{} to be created", new.name),
                Duration::from_secs(120),
                POLL,
                || async { Ok(self.pods().get_opt(&new.name).await?.map(|_| ())) },
            )
            .await?;
        }
        Ok(())
    }

    async fn stop(&mut self, server: &str) -> anyhow::Result<String> {
        let uid = self.pods().get(server).await?.metadata.uid;
        self.pods().delete(server, &DeleteParams::default()).await?;
        // The StatefulSet recreates it under the same name: wait for the old one to go,
        // reading its log while it terminates (it is gone with the pod).
        let last_log = Mutex::new(String::new());
        wait_for(
            &format!("{server} to terminate"),
            Duration::from_secs(180),
            POLL,
            || async {
                let now = self.pods().get_opt(server).await?;
                let same = now.and_then(|p| p.metadata.uid) == uid;
                if same {
                    if let Ok(log) = self.pods().logs(server, &LogParams::default()).await {
                        if let Ok(mut last) = last_log.lock() {
                            *last = log;
                        }
                    }
                }
                Ok((!same).then_some(()))
            },
        )
        .await?;
        Ok(last_log.into_inner().unwrap_or_default())
    }

    async fn kill(&mut self, server: &str) -> anyhow::Result<()> {
        self.pods()
            .delete(server, &DeleteParams::default().grace_period(0))
            .await?;
        Ok(())
    }

    async fn start(&mut self, server: &str) -> anyhow::Result<()> {
        // The StatefulSet controller starts it again; all there is to do is wait.
        wait_for(
            &format!("{server} to be recreated"),
            Duration::from_secs(180),
            POLL,
            || async { Ok(self.pods().get_opt(server).await?.map(|_| ())) },
        )
        .await
    }

    async fn disconnect(&mut self, server: &str) -> anyhow::Result<()> {
        let node = self.node_of(server).await?;
        let format =
            format!("{{{{(index .NetworkSettings.Networks \"{KIND_NETWORK}\").IPAddress}}}}");
        let ip = crate::docker::docker(&["inspect", "-f", &format, &node]).await?;
        crate::docker::docker(&["network", "disconnect", KIND_NETWORK, &node]).await?;
        if let Ok(mut ips) = self.node_ips.lock() {
            ips.insert(node, ip.trim().to_string());
        }
        Ok(())
    }

    async fn reconnect(&mut self, server: &str) -> anyhow::Result<()> {
        let node = self.node_of(server).await?;
        // The node must come back with its address: kubelet and the API server know it.
        let ip = self
            .node_ips
            .lock()
            .ok()
            .and_then(|ips| ips.get(&node).cloned())
            .with_context(|| format!("{node} was not disconnected"))?;
        crate::docker::docker(&["network", "connect", "--ip", &ip, KIND_NETWORK, &node]).await?;
        Ok(())
    }

    async fn pre_stop(&self, server: &str) -> anyhow::Result<()> {
        let pod = self.pods().get(server).await?;
        let command = pod
            .spec
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.lifecycle)
            .and_then(|l| l.pre_stop)
            .and_then(|h| h.exec)
            .and_then(|e| e.command)
            .unwrap_or_default();
        let refs: Vec<&str> = command.iter().map(String::as_str).collect();
        self.exec(server, &refs).await.map(|_| ())
    }

    async fn exec(&self, server: &str, command: &[&str]) -> anyhow::Result<String> {
        let mut args = vec!["exec", "-n", &self.namespace, server, "--"];
        args.extend_from_slice(command);
        self.kubectl(&args).await
    }

    async fn machine(&self, server: &str) -> anyhow::Result<String> {
        // The image has no uname; the node reports its architecture, named as uname does.
        let node = self.node_of(server).await?;
        let node: Node = Api::all(self.client.clone()).get(&node).await?;
        let arch = node
            .status
            .and_then(|s| s.node_info)
            .map(|i| i.architecture)
            .unwrap_or_default();
        Ok(match arch.as_str() {
            "amd64" => "x86_64".into(),
            "arm64" => "aarch64".into(),
            "arm" => "armv7l".into(),
            other => other.into(),
        })
    }

    async fn logs(&self, server: &str) -> anyhow::Result<String> {
        Ok(self.pods().logs(server, &LogParams::default()).await?)
    }

    async fn teardown(&mut self) -> anyhow::Result<()> {
        if let Ok(mut forwards) = self.forwards.lock() {
            forwards.clear();
        }
        if !self.name.is_empty() {
            self.clusters()
                .delete(&self.name, &DeleteParams::default())
                .await?;
        }
        for name in std::mem::take(&mut self.secrets) {
            self.secret_api()
                .delete(&name, &DeleteParams::default())
                .await?;
        }
        Ok(())
    }
}

fn restart_digest(sts: &StatefulSet) -> Option<String> {
    sts.spec
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(SECRET_RESTART_ANNOTATION)
        .cloned()
}
