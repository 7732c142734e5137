//! JetStream in the operator: `spec.jetstream` (and a pool's override) resolved per pool,
//! the broker's `jetstream {}` options, the file store's volume claim template, and the
//! check that a live StatefulSet can take the template (Kubernetes refuses any change of
//! a StatefulSet's volume claim templates).
//!
//! Each server runs JetStream on its own (no replication between servers yet). Its file
//! store is a PersistentVolumeClaim per pod (`jetstream-<pod>`) mounted at
//! [`STORE_DIR`], the broker's `store_dir`; a pool with memory streams only gets an
//! `emptyDir` there instead (the broker creates its directory at start-up, and the root
//! file system is read-only) and `max_file_store: 0`, which refuses file streams. Every
//! `jetstream {}` option is a start-up option in the broker's reload table: a change rolls
//! the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use midge::options::JetStreamOptions;

use crate::crd::{FileStoreSpec, JetStreamSpec, NodePool};

/// Where the store lives in the pod, the broker's `store_dir` (streams under
/// `<store_dir>/jetstream/<account>/`).
pub const STORE_DIR: &str = "/data";
/// Name of the volume (and of the volume claim template: PVCs are `jetstream-<pod>`).
pub const VOLUME: &str = "jetstream";
/// The file store's size when nothing sets it.
pub const DEFAULT_FILE_STORE_SIZE: &str = "10Gi";
// `max_file_store` defaults to 90% of the volume: the file system keeps some of it (ext4
// reserves 5% for root, and the broker does not run as root) and the store's indexes
// live beside the messages.

/// JetStream as one pool's servers run it.
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamPlan {
    /// `max_memory_store` in bytes; `None`: the broker's default.
    pub max_memory: Option<u64>,
    /// The volume; `None`: memory streams only.
    pub file_store: Option<FileStorePlan>,
    pub domain: Option<String>,
}

/// A pool's file store volume.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStorePlan {
    /// The claim's size as written.
    pub size: Quantity,
    pub size_bytes: u64,
    pub storage_class: Option<String>,
    /// `max_file_store` in bytes.
    pub max_bytes: u64,
}

/// One field's value and the spec path it came from (the pool's, or the cluster's).
struct Field<T> {
    value: T,
    path: String,
}

/// JetStream for `pool` (at `spec.pools[index]`, or the shorthand pool when `index` is
/// `None`): `pool.jetstream` over `cluster` field by field; `None` when neither turns it
/// on. Problems go to `err` with their field path.
pub fn resolve(
    cluster: Option<&JetStreamSpec>,
    pool: &NodePool,
    index: Option<usize>,
    err: &mut impl FnMut(&str, String),
) -> Option<JetStreamPlan> {
    let own = index.and(pool.jetstream.as_ref());
    if cluster.is_none() && own.is_none() {
        return None;
    }
    let pool_path = index.map(|i| format!("spec.pools[{i}].jetstream"));
    // The pool's value when it sets one, else the cluster's.
    let pick = |get: &dyn Fn(&JetStreamSpec) -> Option<Field<String>>| -> Option<Field<String>> {
        own.and_then(get)
            .map(|f| Field {
                path: format!("{}{}", pool_path.clone().unwrap_or_default(), f.path),
                value: f.value,
            })
            .or_else(|| {
                cluster.and_then(get).map(|f| Field {
                    path: format!("spec.jetstream{}", f.path),
                    value: f.value,
                })
            })
    };
    let enabled = own
        .and_then(|j| j.enabled)
        .or(cluster.and_then(|j| j.enabled))
        .unwrap_or(true);
    if !enabled {
        return None;
    }
    let memory = pick(&|j| {
        j.memory_store.as_ref().map(|q| Field {
            value: q.0.clone(),
            path: ".memoryStore".into(),
        })
    });
    let max_memory = memory.and_then(|m| {
        let bytes = quantity_bytes(&m.value)
            .map_err(|e| err(&m.path, e))
            .ok()?;
        if let Some(limit) = memory_limit(pool) {
            if bytes > limit.1 {
                err(
                    &m.path,
                    format!(
                        "{} is more than pool {}'s memory limit {}: memory streams would get its servers killed",
                        m.value, pool.name, limit.0
                    ),
                );
            }
        }
        Some(bytes)
    });
    if max_memory.is_none() {
        if let Some((limit, _)) = memory_limit(pool) {
            // The pool's own block when it has one (where a value would go for it alone).
            let path = match (own, &pool_path) {
                (Some(_), Some(path)) => path.clone(),
                _ => "spec.jetstream".into(),
            };
            err(
                &format!("{path}.memoryStore"),
                format!(
                    "is required when the pool has a memory limit (pool {} has {limit}): the broker's default, 75% of the node's memory, would exceed it",
                    pool.name
                ),
            );
        }
    }

    let file = |j: &JetStreamSpec| j.file_store.clone();
    let own_file: Option<FileStoreSpec> = own.and_then(file);
    let cluster_file: Option<FileStoreSpec> = cluster.and_then(file);
    let file_enabled = own_file
        .as_ref()
        .and_then(|f| f.enabled)
        .or(cluster_file.as_ref().and_then(|f| f.enabled))
        .unwrap_or(true);
    let file_store = file_enabled.then(|| {
        let file_field = |get: &dyn Fn(&FileStoreSpec) -> Option<String>, name: &str| {
            own_file
                .as_ref()
                .and_then(get)
                .map(|value| Field {
                    value,
                    path: format!("{}.fileStore.{name}", pool_path.clone().unwrap_or_default()),
                })
                .or_else(|| {
                    cluster_file.as_ref().and_then(get).map(|value| Field {
                        value,
                        path: format!("spec.jetstream.fileStore.{name}"),
                    })
                })
        };
        let size = file_field(&|f| f.size.as_ref().map(|q| q.0.clone()), "size").unwrap_or(Field {
            value: DEFAULT_FILE_STORE_SIZE.into(),
            path: "spec.jetstream.fileStore.size".into(),
        });
        let size_bytes = match quantity_bytes(&size.value) {
            Ok(0) => {
                err(&size.path, "must be more than zero".into());
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                err(&size.path, e);
                None
            }
        }?;
        // A pool that sizes its own volume does not inherit the cluster's maxSize.
        let own_size = own_file.as_ref().is_some_and(|f| f.size.is_some());
        let max = if own_size {
            own_file
                .as_ref()
                .and_then(|f| f.max_size.clone())
                .map(|q| Field {
                    value: q.0,
                    path: format!(
                        "{}.fileStore.maxSize",
                        pool_path.clone().unwrap_or_default()
                    ),
                })
        } else {
            file_field(&|f| f.max_size.as_ref().map(|q| q.0.clone()), "maxSize")
        };
        let max_bytes = match max {
            None => size_bytes / 10 * 9,
            Some(max) => match quantity_bytes(&max.value) {
                Ok(n) if n > size_bytes => {
                    err(
                        &max.path,
                        format!("{} is more than the volume ({})", max.value, size.value),
                    );
                    return None;
                }
                Ok(n) => n,
                Err(e) => {
                    err(&max.path, e);
                    return None;
                }
            },
        };
        Some(FileStorePlan {
            size: Quantity(size.value),
            size_bytes,
            storage_class: file_field(&|f| f.storage_class_name.clone(), "storageClassName")
                .map(|f| f.value),
            max_bytes,
        })
    });
    Some(JetStreamPlan {
        max_memory,
        // A refused size was reported; the plan is not used then.
        file_store: file_store.flatten(),
        domain: own
            .and_then(|j| j.domain.clone())
            .or(cluster.and_then(|j| j.domain.clone())),
    })
}

/// The pool's memory limit as written and in bytes, when it has one that parses.
fn memory_limit(pool: &NodePool) -> Option<(String, u64)> {
    let limit = pool
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("memory")?
        .0
        .clone();
    let bytes = quantity_bytes(&limit).ok()?;
    Some((limit, bytes))
}

/// The broker's `jetstream {}` options for `plan` (`None`: no block at all).
pub fn options(plan: Option<&JetStreamPlan>) -> Option<JetStreamOptions> {
    let plan = plan?;
    Some(JetStreamOptions {
        enabled: true,
        store_dir: Some(STORE_DIR.into()),
        max_memory: plan.max_memory,
        // Memory streams only: no file stream fits.
        max_file: Some(plan.file_store.as_ref().map_or(0, |f| f.max_bytes)),
        domain: plan.domain.clone(),
        ..JetStreamOptions::default()
    })
}

/// The volume claim template of a pool with a file store.
pub fn volume_claim_template(file: &FileStorePlan) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(VOLUME.into()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: file.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".into(), file.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// What a volume claim template asks for, in the terms that matter (the API server adds
/// defaults such as `volumeMode` and a status to the stored ones): name, size in bytes,
/// storage class, access modes.
fn claim_key(claim: &PersistentVolumeClaim) -> (String, Option<u64>, Option<String>, Vec<String>) {
    let spec = claim.spec.clone().unwrap_or_default();
    let size = spec
        .resources
        .and_then(|r| r.requests)
        .and_then(|r| r.get("storage").cloned())
        .and_then(|q| quantity_bytes(&q.0).ok());
    (
        claim.metadata.name.clone().unwrap_or_default(),
        size,
        spec.storage_class_name,
        spec.access_modes.unwrap_or_default(),
    )
}

/// Why `live` (the StatefulSet as it runs) cannot become `desired`: Kubernetes refuses
/// any change of a StatefulSet's volume claim templates. `None` when they ask for the
/// same volumes.
pub fn volume_change(live: &StatefulSet, desired: &StatefulSet) -> Option<String> {
    let describe = |sts: &StatefulSet| -> (Vec<String>, Vec<_>) {
        let claims = sts.spec.volume_claim_templates.clone().unwrap_or_default();
        let keys: Vec<_> = claims.iter().map(claim_key).collect();
        let text = claims
            .iter()
            .map(|c| {
                let spec = c.spec.clone().unwrap_or_default();
                let size = spec
                    .resources
                    .and_then(|r| r.requests)
                    .and_then(|r| r.get("storage").cloned())
                    .map_or_else(|| "no size".to_string(), |q| q.0);
                let class = spec.storage_class_name.map_or_else(
                    || "the default storage class".to_string(),
                    |c| format!("storage class {c}"),
                );
                format!(
                    "{} of {size} ({class})",
                    c.metadata.name.clone().unwrap_or_default()
                )
            })
            .collect();
        (text, keys)
    };
    let (live_text, live_keys) = describe(live);
    let (want_text, want_keys) = describe(desired);
    if live_keys == want_keys {
        return None;
    }
    let show = |t: Vec<String>| {
        if t.is_empty() {
            "no volume".to_string()
        } else {
            t.join(", ")
        }
    };
    Some(format!(
        "the StatefulSet has {}, the spec asks for {}; Kubernetes cannot change a StatefulSet's volume claim templates: delete it with `kubectl delete statefulset {} --cascade=orphan` (the pods keep running) and the operator recreates it (README, \"Change a JetStream volume\")",
        show(live_text),
        show(want_text),
        live.metadata.name.clone().unwrap_or_default()
    ))
}

/// Bytes of a Kubernetes quantity (`10Gi`, `512M`, `1.5Gi`, `1000`), rounded up to a
/// whole byte as Kubernetes does for byte values.
pub fn quantity_bytes(text: &str) -> Result<u64, String> {
    let bad = || {
        format!("{text:?} is not a size such as \"10Gi\", \"512Mi\" or \"1G\" (suffixes Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E)")
    };
    let t = text.trim();
    let number_len = t
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = t.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') {
        return Err(bad());
    }
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(bad()),
    };
    // Exact: whole * m + ceil(fraction * m / 10^digits).
    if fraction.len() > 18 {
        return Err(bad());
    }
    let parse = |s: &str| -> Result<u128, String> {
        if s.is_empty() {
            Ok(0)
        } else {
            s.parse::<u128>().map_err(|_| bad())
        }
    };
    let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| bad())?);
    let fraction_bytes = (parse(fraction)? * multiplier).div_ceil(scale);
    let bytes = parse(whole)?
        .checked_mul(multiplier)
        .and_then(|w| w.checked_add(fraction_bytes))
        .ok_or_else(bad)?;
    u64::try_from(bytes).map_err(|_| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::NatsCluster;
    use crate::validate::{validate, ClusterPlan};

    fn plan(spec: &str) -> Result<ClusterPlan, Vec<String>> {
        let yaml = format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: demo, namespace: ns}}\nspec:\n{spec}"
        );
        let nc: NatsCluster = serde_yaml::from_str(&yaml).expect("test manifest parses");
        validate(&nc).map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    const GI: u64 = 1 << 30;

    /// A pool's block overrides the cluster's field by field: a smaller volume, memory
    /// only, or none; what neither sets has the defaults (10Gi, max 90% of it).
    #[test]
    fn pools_override_the_cluster_field_by_field() {
        let p = plan("  pools:\n  - {name: a, replicas: 1}\n  - {name: b, replicas: 1, jetstream: {fileStore: {size: 2Gi}, domain: b}}\n  - {name: c, replicas: 1, jetstream: {fileStore: {enabled: false}}}\n  - {name: d, replicas: 1, jetstream: {enabled: false}}\n  jetstream: {memoryStore: 1Gi, fileStore: {size: 20Gi, storageClassName: fast, maxSize: 18Gi}}\n").expect("valid");
        let js: Vec<Option<&JetStreamPlan>> =
            p.pools.iter().map(|pool| pool.jetstream.as_ref()).collect();
        let a = js[0].expect("on");
        assert_eq!(a.max_memory, Some(GI));
        let file = a.file_store.as_ref().expect("a volume");
        assert_eq!((file.size.0.as_str(), file.size_bytes), ("20Gi", 20 * GI));
        assert_eq!(file.storage_class.as_deref(), Some("fast"));
        assert_eq!(file.max_bytes, 18 * GI);
        assert_eq!(p.jetstream.as_ref(), Some(a), "the shared config's");
        let b = js[1].expect("on");
        let file = b.file_store.as_ref().expect("a volume");
        assert_eq!(file.size_bytes, 2 * GI);
        assert_eq!(file.storage_class.as_deref(), Some("fast"), "inherited");
        assert_eq!(
            file.max_bytes,
            2 * GI / 10 * 9,
            "its own size: not the cluster's max"
        );
        assert_eq!((b.domain.as_deref(), b.max_memory), (Some("b"), Some(GI)));
        let c = js[2].expect("on");
        assert_eq!(c.file_store, None, "memory streams only");
        assert_eq!(js[3], None);
        // The defaults, on one pool only.
        let p = plan(
            "  pools:\n  - {name: a, replicas: 1}\n  - {name: b, replicas: 1, jetstream: {}}\n",
        )
        .expect("valid");
        assert_eq!(p.pools[0].jetstream, None);
        assert_eq!(p.jetstream, None);
        let b = p.pools[1].jetstream.clone().expect("on");
        let file = b.file_store.expect("a volume");
        assert_eq!((file.size.0.as_str(), file.storage_class), ("10Gi", None));
        assert_eq!(file.max_bytes, 10 * GI / 10 * 9);
        assert_eq!(
            b.max_memory, None,
            "the broker's default without a memory limit"
        );
    }

    #[test]
    fn sizes_that_cannot_work_are_refused_with_their_field() {
        assert_eq!(
            plan("  pools:\n  - name: a\n    replicas: 1\n    resources: {limits: {memory: 1Gi}}\n  - name: b\n    replicas: 1\n    resources: {limits: {memory: 256Mi}}\n    jetstream: {memoryStore: 512Mi, fileStore: {size: 1Gi, maxSize: 2Gi}}\n  jetstream: {memoryStore: 2Gi, fileStore: {size: 10 Gi}}\n"),
            Err(vec![
                "spec.jetstream.memoryStore: 2Gi is more than pool a's memory limit 1Gi: memory streams would get its servers killed".to_string(),
                "spec.jetstream.fileStore.size: \"10 Gi\" is not a size such as \"10Gi\", \"512Mi\" or \"1G\" (suffixes Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E)".to_string(),
                "spec.pools[1].jetstream.memoryStore: 512Mi is more than pool b's memory limit 256Mi: memory streams would get its servers killed".to_string(),
                "spec.pools[1].jetstream.fileStore.maxSize: 2Gi is more than the volume (1Gi)".to_string(),
            ])
        );
        assert_eq!(
            plan("  pools:\n  - name: a\n    replicas: 1\n    resources: {limits: {memory: 1Gi}}\n  jetstream: {fileStore: {size: \"0\"}}\n"),
            Err(vec![
                "spec.jetstream.memoryStore: is required when the pool has a memory limit (pool a has 1Gi): the broker's default, 75% of the node's memory, would exceed it".to_string(),
                "spec.jetstream.fileStore.size: must be more than zero".to_string(),
            ])
        );
    }

    fn sts(claims: serde_json::Value) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo-a"},
            "spec": {"selector": {}, "template": {}, "volumeClaimTemplates": claims}
        }))
        .expect("a StatefulSet")
    }

    /// What the API server stores (defaults, a status) is the same template; a new size,
    /// a new storage class, a volume added or removed is a change it refuses.
    #[test]
    fn volume_changes_are_what_a_stateful_set_refuses() {
        let file = |size: &str, class: Option<&str>| FileStorePlan {
            size: Quantity(size.into()),
            size_bytes: quantity_bytes(size).expect("size"),
            storage_class: class.map(str::to_string),
            max_bytes: 0,
        };
        let desired = |f: Option<FileStorePlan>| {
            sts(serde_json::to_value(f.map(|f| vec![volume_claim_template(&f)])).expect("json"))
        };
        let stored = sts(serde_json::json!([{
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "jetstream"},
            "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "10240Mi"}}},
            "status": {"phase": "Pending"}
        }]));
        assert_eq!(
            volume_change(&stored, &desired(Some(file("10Gi", None)))),
            None
        );
        let changed = volume_change(&stored, &desired(Some(file("20Gi", Some("fast")))));
        assert_eq!(
            changed.as_deref(),
            Some("the StatefulSet has jetstream of 10240Mi (the default storage class), the spec asks for jetstream of 20Gi (storage class fast); Kubernetes cannot change a StatefulSet's volume claim templates: delete it with `kubectl delete statefulset demo-a --cascade=orphan` (the pods keep running) and the operator recreates it (README, \"Change a JetStream volume\")")
        );
        let added = volume_change(
            &sts(serde_json::Value::Null),
            &desired(Some(file("1Gi", None))),
        );
        assert!(added
            .is_some_and(|m| m
                .starts_with("the StatefulSet has no volume, the spec asks for jetstream of 1Gi")));
        let removed = volume_change(&stored, &desired(None));
        assert!(removed.is_some_and(|m| m.contains("the spec asks for no volume")));
    }

    /// The broker's options: the store on the volume, its limit, and `max_file_store: 0`
    /// (no file stream fits) for a pool with memory streams only.
    #[test]
    fn options_put_the_store_on_the_volume() {
        let p = plan("  pools:\n  - {name: a, replicas: 1}\n  - {name: b, replicas: 1, jetstream: {memoryStore: 64Mi, fileStore: {enabled: false}}}\n  jetstream: {fileStore: {size: 1Gi, maxSize: 512Mi}}\n").expect("valid");
        let a = options(p.pools[0].jetstream.as_ref()).expect("on");
        assert!(a.enabled);
        assert_eq!(a.store_dir.as_deref(), Some(std::path::Path::new("/data")));
        assert_eq!((a.max_memory, a.max_file), (None, Some(512 << 20)));
        let b = options(p.pools[1].jetstream.as_ref()).expect("on");
        assert_eq!((b.max_memory, b.max_file), (Some(64 << 20), Some(0)));
        assert_eq!(options(None), None);
    }

    #[test]
    fn quantities_are_read_as_kubernetes_writes_them() {
        for (text, bytes) in [
            ("10Gi", 10u64 << 30),
            ("512Mi", 512 << 20),
            ("1G", 1_000_000_000),
            ("1000", 1000),
            ("1.5Gi", 3 << 29),
            ("0.5k", 500),
            ("1.0001k", 1001),
            ("0", 0),
        ] {
            assert_eq!(quantity_bytes(text), Ok(bytes), "{text}");
        }
        for text in ["", "Gi", "10GB", "1e3", "-1Gi", "1.2.3", "10 Gi"] {
            assert!(quantity_bytes(text).is_err(), "{text}");
        }
        assert_eq!(
            quantity_bytes("100Ei"),
            Err("\"100Ei\" is too large".to_string())
        );
    }
}
