//! What the pods of a NatsCluster would run, read from `midge-operator render`: the objects
//! the operator applies, parsed back into what a container runtime needs (image, args, env,
//! mounts, probe, preStop, grace period) and what the cluster's DNS would provide (the
//! StatefulSet pod names under the headless Service). Environment variables and volumes
//! that come from Secrets stay references ([`Pool::env`] resolves them), as in a pod spec:
//! a Secret's content is not part of the pods, and changing it does not change them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, Secret, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;

/// The pool label the operator puts on each StatefulSet.
const POOL_LABEL: &str = "midge.dev/pool";
/// Kubernetes' default cluster domain; routes are rendered with it.
const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("midge-operator render failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("cannot read the manifest {path}: {source}")]
    Manifest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the rendered YAML does not parse: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("the rendered objects are not what a cluster needs: {0}")]
    Shape(String),
}

fn shape(msg: impl Into<String>) -> RenderError {
    RenderError::Shape(msg.into())
}

/// An HTTP GET probe, its port resolved to a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
}

/// A Secret's data: key -> bytes (`data`, with `stringData` merged in).
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// A volume as the container mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The pool's ConfigMap ([`Pool::config_map`]), every key a file in `path`.
    ConfigMap { path: String, read_only: bool },
    /// Secret `secret` through the pod's volume `volume`: every key a file in `path`, or
    /// only the `items` (key -> file name) when the volume lists them; files get `mode`.
    Secret {
        volume: String,
        secret: String,
        path: String,
        items: Option<Vec<(String, String)>>,
        mode: u32,
    },
    /// A scratch directory that lives as long as the pod.
    EmptyDir { path: String },
}

impl Mount {
    /// The files a Secret volume shows for `data`: all keys, or the listed ones renamed (a
    /// listed key the Secret lacks keeps the pod from starting, as `None` says).
    pub fn secret_files(
        items: Option<&[(String, String)]>,
        data: &SecretData,
    ) -> Option<SecretData> {
        match items {
            None => Some(data.clone()),
            Some(items) => items
                .iter()
                .map(|(key, file)| Some((file.clone(), data.get(key)?.clone())))
                .collect(),
        }
    }
}

/// Why a pod's environment cannot be made: the kubelet would not start the container
/// (`CreateContainerConfigError`).
#[derive(Debug, thiserror::Error)]
#[error("env {var} takes key {key} of Secret {secret}, which {reason}")]
pub struct EnvError {
    pub var: String,
    pub secret: String,
    pub key: String,
    pub reason: &'static str,
}

/// One pool's StatefulSet, reduced to what it takes to run its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub stateful_set: String,
    /// The ConfigMap its pods mount: the cluster's, or the pool's own (a leaf pool).
    pub config_map: String,
    /// The pod template's labels (what Service selectors match).
    pub labels: BTreeMap<String, String>,
    pub replicas: u32,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub args: Vec<String>,
    /// Literal values and Secret keys; `POD_NAME` (downward API) and the Secrets' values
    /// are filled in per pod, and `$(NAME)` references expanded, by [`Pool::env`].
    env: Vec<(String, EnvSource)>,
    pub mounts: Vec<Mount>,
    /// Named container ports.
    pub ports: BTreeMap<String, u16>,
    pub readiness: HttpProbe,
    pub pre_stop: Option<Vec<String>>,
    pub grace_seconds: u64,
    /// `runAsUser:runAsGroup` from the pod's security context.
    pub user: Option<(i64, i64)>,
    /// The pod's `fsGroup`: the group of its Secret volumes' files.
    pub fs_group: Option<u32>,
    pub read_only_root: bool,
    /// Architectures the pool may be scheduled on (`kubernetes.io/arch`), from its node
    /// selector or required node affinity; empty when it does not say.
    pub arches: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvSource {
    /// `value`, where the kubelet expands `$(NAME)`.
    Value(String),
    /// A key of a Secret (`secretKeyRef`), its value taken as it is.
    SecretKey {
        name: String,
        key: String,
    },
    PodName,
}

/// The kubelet's expansion of `$(NAME)` in an environment value: a variable defined
/// earlier is replaced, `$$` is a `$`, anything else stays as written.
fn expand(value: &str, defined: &[(String, String)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$$") {
            out.push('$');
            rest = after;
            continue;
        }
        let reference = rest
            .strip_prefix("$(")
            .and_then(|r| r.find(')').map(|end| &r[..end]));
        match reference.and_then(|name| defined.iter().rev().find(|(n, _)| n == name)) {
            Some((name, v)) => {
                out.push_str(v);
                rest = &rest[name.len() + 3..];
            }
            None => {
                out.push('$');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl Pool {
    pub fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.stateful_set)
    }

    /// The container's environment for the pod with this ordinal as the kubelet makes it
    /// when it starts the container: Secret keys read from `secrets` (by Secret name) at
    /// that moment, `$(NAME)` references to variables defined before replaced.
    pub fn env(
        &self,
        ordinal: u32,
        secrets: &BTreeMap<String, SecretData>,
    ) -> Result<Vec<(String, String)>, EnvError> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(self.env.len());
        for (var, source) in &self.env {
            let value = match source {
                EnvSource::Value(v) => expand(v, &out),
                EnvSource::SecretKey { name, key } => {
                    let error = |reason| EnvError {
                        var: var.clone(),
                        secret: name.clone(),
                        key: key.clone(),
                        reason,
                    };
                    let bytes = secrets
                        .get(name)
                        .ok_or_else(|| error("does not exist"))?
                        .get(key)
                        .ok_or_else(|| error("it does not have"))?;
                    String::from_utf8(bytes.clone())
                        .map_err(|_| error("is not UTF-8 (the driver passes values as text)"))?
                }
                EnvSource::PodName => self.pod_name(ordinal),
            };
            out.push((var.clone(), value));
        }
        Ok(out)
    }

    /// The Secret keys the container's environment is made of, as (Secret, key).
    pub fn env_secret_keys(&self) -> BTreeSet<(String, String)> {
        self.env
            .iter()
            .filter_map(|(_, source)| match source {
                EnvSource::SecretKey { name, key } => Some((name.clone(), key.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn port(&self, name: &str) -> Option<u16> {
        self.ports.get(name).copied()
    }

    /// Whether pods of `self` and `other` run the same way (all but the replica count);
    /// when not, a StatefulSet would roll its pods.
    pub fn same_pods(&self, other: &Pool) -> bool {
        Pool {
            replicas: other.replicas,
            ..self.clone()
        } == *other
    }
}

/// Everything `render` produced for one NatsCluster.
#[derive(Debug, Clone)]
pub struct RenderedCluster {
    pub name: String,
    pub namespace: String,
    pub headless_service: String,
    /// The cluster-wide ConfigMap's files: name -> content.
    pub config_files: BTreeMap<String, String>,
    /// Every ConfigMap's files, by ConfigMap name (the cluster's and each pool's own).
    pub config_maps: BTreeMap<String, BTreeMap<String, String>>,
    /// The other Services (client, leaf node, per-pool client): name and selector.
    pub services: Vec<(String, BTreeMap<String, String>)>,
    pub pools: Vec<Pool>,
    /// The Secrets render printed: those the operator generates when they do not exist
    /// (leaf credentials, route TLS), each with a new value on every render.
    pub secrets: BTreeMap<String, SecretData>,
}

impl RenderedCluster {
    pub fn pool(&self, name: &str) -> Option<&Pool> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// The names cluster DNS gives a StatefulSet pod under its headless Service, shortest
    /// first: what resolves from a pod in the same namespace, in another, and the FQDN
    /// that the rendered routes use.
    /// What cluster DNS resolves to pod `pod` of `pool`: its own names ([`Self::dns_names`])
    /// and those of every Service selecting it (each Service's names resolve to all of its
    /// pods, as network aliases shared by several containers do).
    pub fn aliases(&self, pool: &Pool, pod: &str) -> Vec<String> {
        let mut names = self.dns_names(pod);
        for (service, selector) in &self.services {
            if selector.iter().all(|(k, v)| pool.labels.get(k) == Some(v)) {
                names.extend([
                    service.clone(),
                    format!("{service}.{}", self.namespace),
                    format!("{service}.{}.svc", self.namespace),
                    format!("{service}.{}.svc.{DEFAULT_CLUSTER_DOMAIN}", self.namespace),
                ]);
            }
        }
        names
    }

    pub fn dns_names(&self, pod: &str) -> Vec<String> {
        let base = format!("{pod}.{}", self.headless_service);
        vec![
            base.clone(),
            format!("{base}.{}", self.namespace),
            format!("{base}.{}.svc", self.namespace),
            format!("{base}.{}.svc.{DEFAULT_CLUSTER_DOMAIN}", self.namespace),
        ]
    }
}

/// How to run `midge-operator`: `$MIDGE_OPERATOR`, else the debug build in the target
/// directory, else `cargo run`.
fn operator_command() -> (String, Vec<String>) {
    if let Ok(bin) = std::env::var("MIDGE_OPERATOR") {
        return (bin, Vec::new());
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let built = target.join("debug/midge-operator");
    if built.is_file() {
        return (built.display().to_string(), Vec::new());
    }
    (
        "cargo".into(),
        ["run", "--quiet", "--locked", "-p", "midge-operator", "--"]
            .map(String::from)
            .to_vec(),
    )
}

/// Runs `midge-operator render -f -` on a manifest and parses what it prints.
pub async fn render(manifest: &str) -> Result<RenderedCluster, RenderError> {
    let yaml = render_yaml(manifest).await?;
    parse(&yaml)
}

pub async fn render_file(path: &Path) -> Result<RenderedCluster, RenderError> {
    let manifest =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| RenderError::Manifest {
                path: path.to_path_buf(),
                source,
            })?;
    render(&manifest).await
}

async fn render_yaml(manifest: &str) -> Result<String, RenderError> {
    use tokio::io::AsyncWriteExt;
    let (program, mut args) = operator_command();
    args.extend(["render".into(), "-f".into(), "-".into()]);
    let spawn_err = |source| RenderError::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(&program)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(manifest.as_bytes())
            .await
            .map_err(spawn_err)?;
    }
    let out = child.wait_with_output().await.map_err(spawn_err)?;
    if !out.status.success() {
        return Err(RenderError::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| shape("render printed non-UTF-8 output"))
}

#[derive(Deserialize)]
struct Kind {
    kind: String,
}

/// What a scenario deploys: the Secrets a user applies with the NatsCluster (a
/// certificate, a token), and the NatsCluster itself.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// In the NatsCluster's namespace: pods only read Secrets of their own.
    pub secrets: Vec<Secret>,
    /// The NatsCluster document, as YAML.
    pub cluster: String,
}

/// Splits a multi-document manifest into its Secrets and its one NatsCluster. A Secret
/// without a namespace is put in the NatsCluster's, as `kubectl apply -n` would.
pub fn split_manifest(yaml: &str) -> Result<Manifest, RenderError> {
    let mut secrets = Vec::new();
    let mut clusters = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let Kind { kind } = serde_yaml::from_value(value.clone())?;
        match kind.as_str() {
            "Secret" => secrets.push(serde_yaml::from_value::<Secret>(value)?),
            "NatsCluster" => clusters.push(value),
            other => {
                return Err(shape(format!(
                    "a manifest of Secrets and a NatsCluster, not {other}"
                )))
            }
        }
    }
    let [cluster]: [serde_yaml::Value; 1] = clusters
        .try_into()
        .map_err(|_| shape("a manifest holds exactly one NatsCluster"))?;
    let namespace = cluster["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    for secret in &mut secrets {
        let ns = secret
            .metadata
            .namespace
            .get_or_insert_with(|| namespace.clone());
        if *ns != namespace {
            return Err(shape(format!(
                "Secret {:?} is in namespace {ns}, the NatsCluster in {namespace}",
                secret.metadata.name
            )));
        }
    }
    Ok(Manifest {
        secrets,
        cluster: serde_yaml::to_string(&cluster)?,
    })
}

/// Parses a rendered multi-document stream.
pub fn parse(yaml: &str) -> Result<RenderedCluster, RenderError> {
    let mut config_maps = Vec::new();
    let mut services = Vec::new();
    let mut stateful_sets = Vec::new();
    let mut secrets: BTreeMap<String, SecretData> = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let Kind { kind } = serde_yaml::from_value(value.clone())?;
        match kind.as_str() {
            "ConfigMap" => config_maps.push(serde_yaml::from_value::<ConfigMap>(value)?),
            "Service" => services.push(serde_yaml::from_value::<Service>(value)?),
            "StatefulSet" => stateful_sets.push(serde_yaml::from_value::<StatefulSet>(value)?),
            // Secrets render prints with what it generated (leaf credentials, route TLS).
            "Secret" => {
                let secret = serde_yaml::from_value::<Secret>(value)?;
                secrets.insert(
                    secret.metadata.name.clone().unwrap_or_default(),
                    secret_data(&secret),
                );
            }
            _ => {}
        }
    }
    // The cluster's own ConfigMap has no pool label; pools with their own config have one.
    let shared = config_maps
        .iter()
        .find(|c| {
            c.metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(POOL_LABEL))
        })
        .ok_or_else(|| shape("no cluster-wide ConfigMap"))?;
    let config_files = shared.data.clone().unwrap_or_default();
    let namespace = shared
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let config_maps: BTreeMap<String, BTreeMap<String, String>> = config_maps
        .into_iter()
        .map(|c| {
            (
                c.metadata.name.unwrap_or_default(),
                c.data.unwrap_or_default(),
            )
        })
        .collect();
    let headless_service = services
        .iter()
        .find(|s| s.spec.as_ref().and_then(|spec| spec.cluster_ip.as_deref()) == Some("None"))
        .and_then(|s| s.metadata.name.clone())
        .ok_or_else(|| shape("no headless Service"))?;
    let other_services = services
        .iter()
        .filter(|s| s.metadata.name.as_ref() != Some(&headless_service))
        .map(|s| {
            (
                s.metadata.name.clone().unwrap_or_default(),
                s.spec
                    .as_ref()
                    .and_then(|spec| spec.selector.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let name = stateful_sets
        .first()
        .and_then(|s| s.metadata.labels.as_ref())
        .and_then(|l| l.get("app.kubernetes.io/instance").cloned())
        .ok_or_else(|| shape("no StatefulSet with an instance label"))?;
    let pools = stateful_sets
        .iter()
        .map(|sts| pool(sts, &config_maps, &headless_service))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RenderedCluster {
        name,
        namespace,
        headless_service,
        config_files,
        config_maps,
        services: other_services,
        pools,
        secrets,
    })
}

/// A Secret's keys and values: `data`, and `stringData` over it (as the API server merges
/// them on write).
pub fn secret_data(secret: &Secret) -> SecretData {
    let mut out: SecretData = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    out
}

fn pool(
    sts: &StatefulSet,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    headless: &str,
) -> Result<Pool, RenderError> {
    let sts_name = sts.metadata.name.clone().unwrap_or_default();
    let ctx = |msg: &str| shape(format!("StatefulSet {sts_name}: {msg}"));
    let spec = &sts.spec;
    if spec.service_name.as_deref() != Some(headless) {
        return Err(ctx("serviceName is not the headless Service"));
    }
    let name = sts
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POOL_LABEL).cloned())
        .ok_or_else(|| ctx("no pool label"))?;
    let pod: &PodSpec = spec.template.spec.as_ref().ok_or_else(|| ctx("no pod"))?;
    let [container]: &[Container; 1] = pod
        .containers
        .as_slice()
        .try_into()
        .map_err(|_| ctx("expected one container"))?;
    let ports: BTreeMap<String, u16> = container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let resolve = |port: &IntOrString| match port {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => ports.get(name).copied(),
    };
    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|g| {
            Some(HttpProbe {
                path: g.path.clone().unwrap_or_else(|| "/".into()),
                port: resolve(&g.port)?,
            })
        })
        .ok_or_else(|| ctx("no HTTP readiness probe on a known port"))?;

    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let source = match (&var.value, &var.value_from) {
            (Some(v), _) => EnvSource::Value(v.clone()),
            (None, Some(from))
                if from.field_ref.as_ref().map(|f| f.field_path.as_str())
                    == Some("metadata.name") =>
            {
                EnvSource::PodName
            }
            (None, None) => EnvSource::Value(String::new()),
            (None, Some(from)) if from.secret_key_ref.is_some() => {
                match from.secret_key_ref.as_ref() {
                    Some(r) if r.optional != Some(true) => EnvSource::SecretKey {
                        name: r.name.clone(),
                        key: r.key.clone(),
                    },
                    _ => {
                        return Err(ctx(&format!(
                        "env {} is an optional Secret key, which the docker driver does not model",
                        var.name
                    )))
                    }
                }
            }
            (None, Some(_)) => {
                return Err(ctx(&format!(
                    "env {} comes from a field or ConfigMap the docker driver does not model",
                    var.name
                )))
            }
        };
        env.push((var.name.clone(), source));
    }

    let volumes: BTreeMap<&str, _> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    let mut mounts = Vec::new();
    let mut config_map = None;
    for m in container.volume_mounts.iter().flatten() {
        let volume = volumes
            .get(m.name.as_str())
            .ok_or_else(|| ctx(&format!("mount of unknown volume {}", m.name)))?;
        if let Some(c) = volume
            .config_map
            .as_ref()
            .filter(|c| config_maps.contains_key(&c.name))
        {
            config_map = Some(c.name.clone());
            mounts.push(Mount::ConfigMap {
                path: m.mount_path.clone(),
                read_only: m.read_only.unwrap_or(false),
            });
        } else if volume.empty_dir.is_some() {
            mounts.push(Mount::EmptyDir {
                path: m.mount_path.clone(),
            });
        } else if let Some(secret) = &volume.secret {
            let items = match &secret.items {
                None => None,
                Some(items) => Some(
                    items
                        .iter()
                        .map(|i| match i.mode {
                            None => Ok((i.key.clone(), i.path.clone())),
                            Some(_) => Err(ctx(&format!(
                                "volume {}: per-item modes are not modelled",
                                m.name
                            ))),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            if m.sub_path.is_some() || secret.optional == Some(true) {
                return Err(ctx(&format!(
                    "volume {}: subPath and optional Secrets are not modelled",
                    m.name
                )));
            }
            mounts.push(Mount::Secret {
                volume: m.name.clone(),
                secret: secret
                    .secret_name
                    .clone()
                    .ok_or_else(|| ctx(&format!("volume {} names no Secret", m.name)))?,
                path: m.mount_path.clone(),
                items,
                // The API server's default for a Secret volume.
                mode: secret
                    .default_mode
                    .and_then(|m| u32::try_from(m).ok())
                    .unwrap_or(0o644),
            });
        } else {
            return Err(ctx(&format!(
                "volume {} is not a rendered ConfigMap, a Secret or an emptyDir",
                m.name
            )));
        }
    }
    let config_map = config_map.ok_or_else(|| ctx("mounts no ConfigMap"))?;
    let labels = spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();

    let pre_stop = container
        .lifecycle
        .as_ref()
        .and_then(|l| l.pre_stop.as_ref())
        .and_then(|h| h.exec.as_ref())
        .and_then(|e| e.command.clone());
    let security = pod.security_context.as_ref();
    let user = security.and_then(|s| Some((s.run_as_user?, s.run_as_group?)));
    let read_only_root = container
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        .unwrap_or(false);
    Ok(Pool {
        name,
        stateful_set: sts_name.clone(),
        config_map,
        labels,
        replicas: spec
            .replicas
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(1),
        image: container.image.clone().unwrap_or_default(),
        command: container.command.clone(),
        args: container.args.clone().unwrap_or_default(),
        env,
        mounts,
        ports,
        readiness,
        pre_stop,
        grace_seconds: pod
            .termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(30),
        user,
        fs_group: security
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok()),
        read_only_root,
        arches: arches(pod),
    })
}

/// `kubernetes.io/arch` values the pod may land on.
fn arches(pod: &PodSpec) -> Vec<String> {
    const ARCH: &str = "kubernetes.io/arch";
    if let Some(arch) = pod.node_selector.as_ref().and_then(|s| s.get(ARCH)) {
        return vec![arch.clone()];
    }
    pod.affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flat_map(|r| &r.node_selector_terms)
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.key == ARCH && e.operator == "In")
        .flat_map(|e| e.values.iter().flatten().cloned())
        .collect()
}

/// Sets a pool's replica count in a NatsCluster manifest, as `kubectl scale` or an edit
/// would: `spec.pools[name].replicas`.
pub fn with_replicas(manifest: &str, pool: &str, replicas: u32) -> Result<String, RenderError> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(manifest)?;
    let pools = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("pools"))
        .and_then(|p| p.as_sequence_mut())
        .ok_or_else(|| shape("the manifest has no spec.pools"))?;
    let entry = pools
        .iter_mut()
        .find(|p| p.get("name").and_then(|n| n.as_str()) == Some(pool))
        .ok_or_else(|| shape(format!("the manifest has no pool {pool}")))?;
    let map = entry
        .as_mapping_mut()
        .ok_or_else(|| shape(format!("pool {pool} is not a mapping")))?;
    map.insert("replicas".into(), u64::from(replicas).into());
    Ok(serde_yaml::to_string(&doc)?)
}

/// Sets `spec.broker.<key>` in a NatsCluster manifest.
pub fn with_broker_setting(
    manifest: &str,
    key: &str,
    value: serde_yaml::Value,
) -> Result<String, RenderError> {
    let mut doc: serde_yaml::Value = serde_yaml::from_str(manifest)?;
    let spec = doc
        .get_mut("spec")
        .and_then(|s| s.as_mapping_mut())
        .ok_or_else(|| shape("the manifest has no spec"))?;
    let broker = spec
        .entry("broker".into())
        .or_insert_with(|| serde_yaml::Mapping::new().into());
    broker
        .as_mapping_mut()
        .ok_or_else(|| shape("spec.broker is not a mapping"))?
        .insert(key.into(), value);
    Ok(serde_yaml::to_string(&doc)?)
}
