//! The docker driver: each pod of the rendered StatefulSets is a container of the real image
//! on a private network (see the crate documentation for what this proves and what not).
//!
//! It drives the `docker` CLI, so it needs nothing but a reachable engine. Clients and
//! probes dial the containers' addresses on the network's bridge, which the host routes to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::driver::{wait_for, ClusterDriver, Server};
use crate::http;
use crate::rendered::{self, Mount, Pool, RenderedCluster, SecretData};
use crate::volume::{self, FileMode};

/// Where the `uname -m` helper is mounted in every container.
pub const UNAME_IN_CONTAINER: &str = "/e2e-uname";
/// How long a rolling update waits for each new pod to pass its readiness probe (ARM pods
/// run under qemu).
const ROLL_READY_WITHIN: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot run docker: {0}")]
    Spawn(std::io::Error),
    #[error("docker {args} failed ({status}): {stderr}")]
    Failed {
        args: String,
        status: String,
        stderr: String,
    },
    #[error("{0} is not set; e2e/run-docker.sh builds the images and sets it")]
    MissingEnv(&'static str),
    #[error("{var}: '{entry}' is not arch=value")]
    BadEnv { var: &'static str, entry: String },
    #[error("no image for {0}")]
    NoImage(String),
    #[error("no server named {0}")]
    UnknownServer(String),
    #[error("pod {pod} mounts Secret {secret}, which {reason}")]
    SecretVolume {
        pod: String,
        secret: String,
        reason: &'static str,
    },
}

/// Docker's platform for a Kubernetes `kubernetes.io/arch` value.
pub fn platform(arch: &str) -> &'static str {
    match arch {
        "arm64" => "linux/arm64",
        "arm" => "linux/arm/v7",
        _ => "linux/amd64",
    }
}

/// Is a Docker engine reachable?
pub async fn available() -> bool {
    docker(&["info", "--format", "{{.ServerVersion}}"])
        .await
        .is_ok()
}

/// Runs `docker args...` and returns its standard output.
pub async fn docker(args: &[&str]) -> Result<String, DockerError> {
    let out = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(DockerError::Spawn)?;
    if !out.status.success() {
        return Err(DockerError::Failed {
            args: args.join(" "),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The images and `uname` helpers per architecture (`amd64`, `arm64`, `arm`).
#[derive(Debug, Clone)]
pub struct DockerConfig {
    pub images: BTreeMap<String, String>,
    pub uname: BTreeMap<String, PathBuf>,
}

impl DockerConfig {
    /// From `MIDGE_E2E_IMAGES` and `MIDGE_E2E_UNAME`, each a space separated list of
    /// `arch=value`, as e2e/run-docker.sh exports them.
    pub fn from_env() -> Result<Self, DockerError> {
        fn list(var: &'static str) -> Result<BTreeMap<String, String>, DockerError> {
            let text = std::env::var(var).map_err(|_| DockerError::MissingEnv(var))?;
            text.split_whitespace()
                .map(|entry| {
                    entry
                        .split_once('=')
                        .map(|(a, v)| (a.to_string(), v.to_string()))
                        .ok_or_else(|| DockerError::BadEnv {
                            var,
                            entry: entry.to_string(),
                        })
                })
                .collect()
        }
        Ok(Self {
            images: list("MIDGE_E2E_IMAGES")?,
            uname: list("MIDGE_E2E_UNAME")?
                .into_iter()
                .map(|(a, p)| (a, PathBuf::from(p)))
                .collect(),
        })
    }
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    pool: String,
    arch: String,
    running: bool,
    connected: bool,
}

#[derive(Debug)]
pub struct DockerDriver {
    config: DockerConfig,
    suffix: String,
    work: PathBuf,
    network: Option<String>,
    manifest: String,
    cluster: Option<RenderedCluster>,
    /// By pod name.
    containers: BTreeMap<String, Container>,
    /// Every container ever created, for teardown.
    created: BTreeSet<String>,
    /// The namespace's Secrets, by name: what the API server would hold.
    secrets: BTreeMap<String, SecretData>,
}

impl DockerDriver {
    pub fn new(config: DockerConfig) -> anyhow::Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let suffix = format!("{:08x}", nanos ^ std::process::id());
        let work = std::env::temp_dir().join(format!("midge-e2e-{suffix}"));
        std::fs::create_dir_all(&work).with_context(|| format!("create {}", work.display()))?;
        Ok(Self {
            config,
            suffix,
            work,
            network: None,
            manifest: String::new(),
            cluster: None,
            containers: BTreeMap::new(),
            created: BTreeSet::new(),
            secrets: BTreeMap::new(),
        })
    }

    fn cluster(&self) -> anyhow::Result<&RenderedCluster> {
        self.cluster.as_ref().context("nothing deployed yet")
    }

    fn network(&self) -> anyhow::Result<&str> {
        self.network.as_deref().context("no network yet")
    }

    fn container(&self, server: &str) -> Result<&Container, DockerError> {
        self.containers
            .get(server)
            .ok_or_else(|| DockerError::UnknownServer(server.to_string()))
    }

    fn pool_of(&self, server: &str) -> anyhow::Result<&Pool> {
        let c = self.container(server)?;
        self.cluster()?
            .pool(&c.pool)
            .with_context(|| format!("pool {} is no longer rendered", c.pool))
    }

    /// Where ConfigMap `name` is written (and mounted from).
    fn config_dir(&self, name: &str) -> PathBuf {
        self.work.join("configmaps").join(name)
    }

    /// Where the volume `volume` of Secret `secret` is written (and mounted from): one
    /// directory per Secret, one below it per volume that shows it (a volume may list
    /// only some keys, under other names).
    fn secret_dir(&self, secret: &str, volume: &str) -> PathBuf {
        self.work.join("secrets").join(secret).join(volume)
    }

    /// Writes every rendered ConfigMap, each as the kubelet updates a ConfigMap volume.
    fn write_config_map(&mut self) -> anyhow::Result<()> {
        let config_maps = self.cluster()?.config_maps.clone();
        for (name, files) in &config_maps {
            let files = files
                .iter()
                .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
                .collect();
            let mode = FileMode {
                mode: 0o644,
                group: None,
            };
            volume::write(&self.config_dir(name), &files, mode)
                .with_context(|| format!("ConfigMap {name}"))?;
        }
        Ok(())
    }

    /// Writes the volumes through which the pods see Secret `secret` (none when no pod
    /// mounts it) from the data the driver holds, each as the kubelet updates a Secret
    /// volume. A pod whose volume cannot be made would not start: that is an error.
    fn write_secret_volumes(&self, secret: &str) -> anyhow::Result<()> {
        let cluster = self.cluster()?;
        let mut written = BTreeSet::new();
        for pool in &cluster.pools {
            for mount in &pool.mounts {
                let Mount::Secret {
                    volume,
                    secret: name,
                    items,
                    mode,
                    ..
                } = mount
                else {
                    continue;
                };
                if name != secret || !written.insert(volume.clone()) {
                    continue;
                }
                let error = |reason| DockerError::SecretVolume {
                    pod: pool.pod_name(0),
                    secret: secret.to_string(),
                    reason,
                };
                let data = self
                    .secrets
                    .get(secret)
                    .ok_or_else(|| error("does not exist"))?;
                let files = Mount::secret_files(items.as_deref(), data)
                    .ok_or_else(|| error("lacks a key the volume lists"))?;
                let mode = FileMode {
                    mode: *mode,
                    group: pool.fs_group,
                };
                volume::write(&self.secret_dir(secret, volume), &files, mode)
                    .with_context(|| format!("volume {volume} of Secret {secret}"))?;
            }
        }
        Ok(())
    }

    /// Takes in the Secrets render printed as the operator does: created when absent,
    /// never rewritten (a re-render makes new values, which a cluster would not see).
    fn adopt_generated_secrets(&mut self, cluster: &RenderedCluster) {
        for (name, data) in &cluster.secrets {
            self.secrets
                .entry(name.clone())
                .or_insert_with(|| data.clone());
        }
    }

    /// Writes the volumes of every Secret the pods mount.
    fn write_all_secret_volumes(&self) -> anyhow::Result<()> {
        let mounted: BTreeSet<&String> = self
            .cluster()?
            .pools
            .iter()
            .flat_map(|p| &p.mounts)
            .filter_map(|m| match m {
                Mount::Secret { secret, .. } => Some(secret),
                _ => None,
            })
            .collect();
        for secret in mounted {
            self.write_secret_volumes(secret)?;
        }
        Ok(())
    }

    /// The architecture a pod of this pool runs as: the pool's allowed arches that have an
    /// image, taken in turn by ordinal (so a two-server edge pool gets one arm64 and one
    /// arm/v7 server), amd64 when the pool does not say.
    fn arch_for(&self, pool: &Pool, ordinal: u32) -> String {
        let usable: Vec<&String> = pool
            .arches
            .iter()
            .filter(|a| self.config.images.contains_key(*a))
            .collect();
        match usable.len() {
            0 => "amd64".into(),
            n => usable[ordinal as usize % n].clone(),
        }
    }

    /// The `docker run` arguments of pod `ordinal` of `pool_name` as the cluster is now
    /// rendered, its environment made from the Secrets as they are now, and the
    /// container's record.
    fn pod_spec(&self, pool_name: &str, ordinal: u32) -> anyhow::Result<(Vec<String>, Container)> {
        let cluster = self.cluster()?;
        let pool = cluster
            .pool(pool_name)
            .with_context(|| format!("no pool {pool_name}"))?;
        let pod = pool.pod_name(ordinal);
        let arch = self.arch_for(pool, ordinal);
        let image = self
            .config
            .images
            .get(&arch)
            .ok_or_else(|| DockerError::NoImage(arch.clone()))?
            .clone();
        let uname = self
            .config
            .uname
            .get(&arch)
            .ok_or_else(|| DockerError::NoImage(format!("uname helper for {arch}")))?
            .clone();
        let name = format!("midge-e2e-{}-{pod}", self.suffix);
        let network = self.network()?.to_string();

        let mut args: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--hostname".into(),
            pod.clone(),
            "--network".into(),
            network,
            "--platform".into(),
            platform(&arch).into(),
            "--label".into(),
            format!("midge-e2e={}", self.suffix),
            "--cap-drop".into(),
            "ALL".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--stop-timeout".into(),
            pool.grace_seconds.to_string(),
            "-v".into(),
            format!("{}:{UNAME_IN_CONTAINER}:ro", uname.display()),
        ];
        for alias in cluster.aliases(pool, &pod) {
            args.extend(["--network-alias".into(), alias]);
        }
        if let Some((user, group)) = pool.user {
            args.extend(["--user".into(), format!("{user}:{group}")]);
        }
        // The kubelet adds fsGroup to the container's groups: Secret files are its.
        if let Some(group) = pool.fs_group {
            args.extend(["--group-add".into(), group.to_string()]);
        }
        if pool.read_only_root {
            args.push("--read-only".into());
        }
        let (uid, gid) = pool.user.unwrap_or((0, 0));
        for mount in &pool.mounts {
            match mount {
                Mount::ConfigMap { path, read_only } => {
                    let mode = if *read_only { "ro" } else { "rw" };
                    args.extend([
                        "-v".into(),
                        format!(
                            "{}:{path}:{mode}",
                            self.config_dir(&pool.config_map).display()
                        ),
                    ]);
                }
                Mount::Secret {
                    volume,
                    secret,
                    path,
                    ..
                } => {
                    // Secret volumes are read-only whatever the mount says.
                    args.extend([
                        "-v".into(),
                        format!("{}:{path}:ro", self.secret_dir(secret, volume).display()),
                    ]);
                }
                Mount::EmptyDir { path } => {
                    // fsGroup makes an emptyDir writable by the pod's group.
                    args.extend([
                        "--tmpfs".into(),
                        format!("{path}:rw,uid={uid},gid={gid},mode=0770"),
                    ]);
                }
            }
        }
        let env = pool
            .env(ordinal, &self.secrets)
            .with_context(|| format!("pod {pod} cannot start"))?;
        for (key, value) in env {
            args.extend(["-e".into(), format!("{key}={value}")]);
        }
        let mut command = pool.command.clone().unwrap_or_default().into_iter();
        if let Some(entrypoint) = command.next() {
            args.extend(["--entrypoint".into(), entrypoint]);
        }
        args.push(image);
        args.extend(command);
        args.extend(pool.args.iter().cloned());
        let container = Container {
            name,
            pool: pool_name.to_string(),
            arch,
            running: true,
            connected: true,
        };
        Ok((args, container))
    }

    async fn run_pod(&mut self, pool_name: &str, ordinal: u32) -> anyhow::Result<()> {
        let (args, container) = self.pod_spec(pool_name, ordinal)?;
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.created.insert(container.name.clone());
        docker(&refs).await?;
        let pod = self
            .cluster()?
            .pool(pool_name)
            .map(|p| p.pod_name(ordinal))
            .with_context(|| format!("no pool {pool_name}"))?;
        self.containers.insert(pod, container);
        Ok(())
    }

    /// A StatefulSet's rolling update of `pool`, as the StatefulSet controller does it:
    /// highest ordinal first, each pod deleted (preStop, grace period) and created again
    /// under its name with the pod template as it is now, and Ready before the next.
    /// Returns the pods replaced.
    async fn roll_pool(&self, pool: &Pool) -> anyhow::Result<Vec<String>> {
        let mut replaced = Vec::new();
        for ordinal in (0..pool.replicas).rev() {
            let pod = pool.pod_name(ordinal);
            self.delete_pod(&pod, pool)
                .await
                .with_context(|| format!("rolling {pod}: delete"))?;
            let (args, _) = self.pod_spec(&pool.name, ordinal)?;
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            docker(&refs)
                .await
                .with_context(|| format!("rolling {pod}: create"))?;
            replaced.push(pod.clone());
            wait_for(
                &format!("the new {pod} to pass its readiness probe"),
                ROLL_READY_WITHIN,
                Duration::from_millis(250),
                || async { Ok(self.ready(&pod).await?.then_some(())) },
            )
            .await?;
        }
        Ok(replaced)
    }

    async fn ip(&self, server: &str) -> anyhow::Result<String> {
        let c = self.container(server)?;
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network()?
        );
        let ip = docker(&["inspect", "-f", &format, &c.name]).await?;
        let ip = ip.trim();
        anyhow::ensure!(!ip.is_empty(), "{server} has no address on the network");
        Ok(ip.to_string())
    }

    async fn ready(&self, server: &str) -> anyhow::Result<bool> {
        let pool = self.pool_of(server)?;
        let c = self.container(server)?;
        let running = docker(&["inspect", "-f", "{{.State.Running}}", &c.name]).await?;
        anyhow::ensure!(running.trim() == "true", "{server} is not running");
        let url = format!(
            "http://{}:{}{}",
            self.ip(server).await?,
            pool.readiness.port,
            pool.readiness.path
        );
        Ok(http::get(&url, Duration::from_secs(2))
            .await
            .is_ok_and(|r| r.status == 200))
    }

    /// Deletes the pod of a scaled-away ordinal of `pool` (as it was rendered before the
    /// change): preStop, stop within the grace period, remove.
    async fn delete_pod(&self, server: &str, pool: &Pool) -> anyhow::Result<()> {
        let c = self.container(server)?;
        if c.running {
            if let Some(command) = &pool.pre_stop {
                let mut args = vec!["exec", c.name.as_str()];
                args.extend(command.iter().map(String::as_str));
                docker(&args)
                    .await
                    .with_context(|| format!("preStop of {server}"))?;
            }
            docker(&["stop", "-t", &pool.grace_seconds.to_string(), &c.name]).await?;
        }
        docker(&["rm", "-f", &c.name]).await?;
        Ok(())
    }

    /// The architectures the edge servers report, for the report.
    pub fn arch_of(&self, server: &str) -> Option<&str> {
        self.containers.get(server).map(|c| c.arch.as_str())
    }
}

impl ClusterDriver for DockerDriver {
    fn name(&self) -> &str {
        "docker"
    }

    async fn deploy(&mut self, manifest: &str) -> anyhow::Result<()> {
        let manifest = rendered::split_manifest(manifest)?;
        let cluster = rendered::render(&manifest.cluster).await?;
        for secret in &manifest.secrets {
            let name = secret
                .metadata
                .name
                .clone()
                .context("a Secret without a name")?;
            self.secrets.insert(name, rendered::secret_data(secret));
        }
        self.adopt_generated_secrets(&cluster);
        self.manifest = manifest.cluster;
        self.cluster = Some(cluster.clone());
        self.write_config_map()?;
        self.write_all_secret_volumes()?;
        let network = format!("midge-e2e-{}", self.suffix);
        docker(&[
            "network",
            "create",
            "--label",
            &format!("midge-e2e={}", self.suffix),
            &network,
        ])
        .await?;
        self.network = Some(network);
        for pool in &cluster.pools {
            for ordinal in 0..pool.replicas {
                self.run_pod(&pool.name, ordinal).await?;
            }
        }
        Ok(())
    }

    /// Stands in for the operator, the StatefulSet controller and the kubelet: the
    /// ConfigMap is rewritten, surplus ordinals are deleted together (Parallel), missing
    /// ones started. A change to the pod template would roll the pods; the driver rolls
    /// them only for a changed Secret ([`ClusterDriver::update_secret`]) and refuses any
    /// other.
    async fn apply(&mut self, manifest: &str) -> anyhow::Result<()> {
        let new = rendered::render(manifest).await?;
        let old = self.cluster()?.clone();
        anyhow::ensure!(new.name == old.name, "a different NatsCluster");
        for pool in &new.pools {
            if let Some(before) = old.pool(&pool.name) {
                anyhow::ensure!(
                    before.same_pods(pool),
                    "the change rolls the pods of pool {}; the docker driver only scales and \
                     reloads",
                    pool.name
                );
            }
        }
        let mut removed = Vec::new();
        for pool in &old.pools {
            let keep = new.pool(&pool.name).map_or(0, |p| p.replicas);
            for ordinal in (keep..pool.replicas).rev() {
                removed.push((pool.pod_name(ordinal), pool.clone()));
            }
        }
        self.manifest = manifest.to_string();
        self.adopt_generated_secrets(&new);
        self.cluster = Some(new.clone());
        self.write_config_map()?;
        self.write_all_secret_volumes()?;
        let deletions = removed.iter().map(|(pod, pool)| self.delete_pod(pod, pool));
        for result in futures::future::join_all(deletions).await {
            result?;
        }
        for (pod, _) in &removed {
            self.containers.remove(pod);
        }
        for pool in &new.pools {
            let from = old.pool(&pool.name).map_or(0, |p| p.replicas);
            for ordinal in from..pool.replicas {
                self.run_pod(&pool.name, ordinal).await?;
            }
        }
        Ok(())
    }

    fn manifest(&self) -> &str {
        &self.manifest
    }

    /// Stands in for the API server, the operator, the StatefulSet controller and the
    /// kubelet: the volumes showing the Secret are swapped at once; the pools whose pods
    /// take a changed key as an environment variable roll, all at once and each one pod at
    /// a time (the operator's digest annotation changes every such StatefulSet together).
    async fn update_secret(&mut self, name: &str, data: SecretData) -> anyhow::Result<()> {
        let old = self.secrets.insert(name.to_string(), data.clone());
        self.write_secret_volumes(name)?;
        let changed = |key: &str| old.as_ref().and_then(|o| o.get(key)) != data.get(key);
        let rolling: Vec<Pool> = self
            .cluster()?
            .pools
            .iter()
            .filter(|p| {
                p.env_secret_keys()
                    .iter()
                    .any(|(secret, key)| secret == name && changed(key))
            })
            .cloned()
            .collect();
        let rolls = rolling.iter().map(|pool| self.roll_pool(pool));
        let results = futures::future::join_all(rolls).await;
        for pods in results {
            for pod in pods? {
                if let Some(c) = self.containers.get_mut(&pod) {
                    c.running = true;
                    c.connected = true;
                }
            }
        }
        Ok(())
    }

    fn servers(&self) -> Vec<Server> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        cluster
            .pools
            .iter()
            .flat_map(|pool| {
                (0..pool.replicas).map(|ordinal| Server {
                    pool: pool.name.clone(),
                    name: pool.pod_name(ordinal),
                    ordinal,
                })
            })
            .collect()
    }

    async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        for server in self.servers() {
            wait_for(
                &format!("{} to pass its readiness probe", server.name),
                within,
                Duration::from_millis(250),
                || async {
                    let ready = self.ready(&server.name).await?;
                    Ok(ready.then_some(()))
                },
            )
            .await?;
        }
        Ok(())
    }

    async fn client_url(&self, server: &str) -> anyhow::Result<String> {
        let port = self
            .pool_of(server)?
            .port("client")
            .context("no client port")?;
        Ok(format!("nats://{}:{port}", self.ip(server).await?))
    }

    async fn monitor_url(&self, server: &str) -> anyhow::Result<String> {
        let port = self
            .pool_of(server)?
            .port("monitor")
            .context("no monitor port")?;
        Ok(format!("http://{}:{port}", self.ip(server).await?))
    }

    async fn scale(&mut self, pool: &str, replicas: u32) -> anyhow::Result<()> {
        let manifest = rendered::with_replicas(&self.manifest, pool, replicas)?;
        self.apply(&manifest).await
    }

    async fn stop(&mut self, server: &str) -> anyhow::Result<String> {
        self.pre_stop(server).await?;
        let grace = self.pool_of(server)?.grace_seconds.to_string();
        let name = self.container(server)?.name.clone();
        docker(&["stop", "-t", &grace, &name]).await?;
        if let Some(c) = self.containers.get_mut(server) {
            c.running = false;
        }
        self.logs(server).await
    }

    async fn kill(&mut self, server: &str) -> anyhow::Result<()> {
        let name = self.container(server)?.name.clone();
        docker(&["kill", "--signal", "KILL", &name]).await?;
        if let Some(c) = self.containers.get_mut(server) {
            c.running = false;
        }
        Ok(())
    }

    async fn start(&mut self, server: &str) -> anyhow::Result<()> {
        let name = self.container(server)?.name.clone();
        docker(&["start", &name]).await?;
        if let Some(c) = self.containers.get_mut(server) {
            c.running = true;
        }
        Ok(())
    }

    async fn disconnect(&mut self, server: &str) -> anyhow::Result<()> {
        let name = self.container(server)?.name.clone();
        let network = self.network()?.to_string();
        docker(&["network", "disconnect", &network, &name]).await?;
        if let Some(c) = self.containers.get_mut(server) {
            c.connected = false;
        }
        Ok(())
    }

    async fn reconnect(&mut self, server: &str) -> anyhow::Result<()> {
        let name = self.container(server)?.name.clone();
        let network = self.network()?.to_string();
        let mut args = vec!["network".to_string(), "connect".to_string()];
        let pool = self.pool_of(server)?;
        for alias in self.cluster()?.aliases(pool, server) {
            args.extend(["--alias".into(), alias]);
        }
        args.extend([network, name]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&refs).await?;
        if let Some(c) = self.containers.get_mut(server) {
            c.connected = true;
        }
        Ok(())
    }

    async fn pre_stop(&self, server: &str) -> anyhow::Result<()> {
        let Some(command) = self.pool_of(server)?.pre_stop.clone() else {
            return Ok(());
        };
        let refs: Vec<&str> = command.iter().map(String::as_str).collect();
        self.exec(server, &refs)
            .await
            .with_context(|| format!("preStop of {server}"))?;
        Ok(())
    }

    async fn exec(&self, server: &str, command: &[&str]) -> anyhow::Result<String> {
        let name = &self.container(server)?.name;
        let mut args = vec!["exec", name.as_str()];
        args.extend_from_slice(command);
        Ok(docker(&args).await?)
    }

    async fn machine(&self, server: &str) -> anyhow::Result<String> {
        Ok(self
            .exec(server, &[UNAME_IN_CONTAINER])
            .await?
            .trim()
            .to_string())
    }

    async fn logs(&self, server: &str) -> anyhow::Result<String> {
        let name = &self.container(server)?.name;
        let out = tokio::process::Command::new("docker")
            .args(["logs", name])
            .kill_on_drop(true)
            .output()
            .await
            .map_err(DockerError::Spawn)?;
        Ok(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }

    async fn teardown(&mut self) -> anyhow::Result<()> {
        let names: Vec<String> = std::mem::take(&mut self.created).into_iter().collect();
        if !names.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(names.iter().map(String::as_str));
            docker(&args).await?;
        }
        if let Some(network) = self.network.take() {
            docker(&["network", "rm", &network]).await?;
        }
        self.containers.clear();
        let _ = std::fs::remove_dir_all(&self.work);
        Ok(())
    }
}

impl Drop for DockerDriver {
    /// A failed or panicking run still leaves nothing behind.
    fn drop(&mut self) {
        if !self.created.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.created)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        if let Some(network) = &self.network {
            let _ = std::process::Command::new("docker")
                .args(["network", "rm", network])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}
