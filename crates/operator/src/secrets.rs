//! Secrets referenced by a NatsCluster (`spec.auth`, `spec.tls`) and how a change of one
//! reaches the running servers.
//!
//! The controller watches Secrets; a Secret event is mapped to the NatsClusters of its
//! namespace that reference it by name ([`clusters_referencing`]), which are reconciled.
//! The reconcile reads each referenced Secret and digests the keys the servers use
//! ([`digest`]); where a digest goes depends on whether the broker can load the new value
//! while running ([`Placement`]):
//!
//! - **Reload**: the users file (an `include`) and the TLS certificate files are read
//!   again on every reload. Their digests go into `midge.conf` as comment lines, so the
//!   ConfigMap changes and the servers' `config_watch` reloads. The kubelet updates a
//!   ConfigMap volume and a Secret volume independently, so that reload may still read the
//!   old files; the broker's watcher therefore also watches the files the config refers to
//!   and reloads again when the Secret volume catches up.
//! - **Restart**: the token and the leaf node credentials are environment variables
//!   (from `secretKeyRef`), fixed when the process starts (the broker does not reload
//!   leaf credentials either). Their digest goes into the pod template
//!   ([`SECRET_RESTART_ANNOTATION`]), so the StatefulSets roll.
//!
//! A Secret that does not exist (yet) digests as `absent`: the pods cannot start without
//! it, and its creation changes the digest and triggers what a change would.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::build::Children;
use crate::crd::{NatsCluster, PoolRole};
use crate::validate::{Auth, ClusterPlan};

/// Pod template annotation holding the digest of the Secrets only read at start-up.
pub const SECRET_RESTART_ANNOTATION: &str = "midge.dev/secret-restart-hash";

/// How a change of a referenced Secret reaches the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The broker loads the new value on a config reload (files it reads again).
    Reload,
    /// The value is fixed at process start (an environment variable): pods roll.
    Restart,
}

/// One Secret the servers use, with the keys that matter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// Fixed role name (`token`, `users`, `leaf-credentials`, `tls-client`, `tls-routes`,
    /// `tls-leafnodes`): written into the config file, so never the user-chosen Secret name.
    pub role: &'static str,
    pub name: String,
    pub keys: Vec<String>,
    pub placement: Placement,
}

const TLS_KEYS: [&str; 3] = ["tls.crt", "tls.key", "ca.crt"];

/// The Secrets a validated cluster mounts or reads, in a fixed order.
pub fn referenced(plan: &ClusterPlan) -> Vec<SecretUse> {
    let mut uses = Vec::new();
    match &plan.auth {
        Some(Auth::Token(s)) => uses.push(SecretUse {
            role: "token",
            name: s.name.clone(),
            keys: vec![s.key.clone()],
            placement: Placement::Restart,
        }),
        Some(Auth::Users(s)) => uses.push(SecretUse {
            role: "users",
            name: s.name.clone(),
            keys: vec![s.key.clone()],
            placement: Placement::Reload,
        }),
        None => {}
    }
    if let Some(leaf) = &plan.leaf_auth {
        // Environment variables on every pod (core pods listen, leaf pods dial), and
        // leaf credentials are not reloadable anyway.
        uses.push(SecretUse {
            role: "leaf-credentials",
            name: leaf.secret_name.clone(),
            keys: vec![
                crate::leaf_auth::USER_KEY.into(),
                crate::leaf_auth::PASSWORD_KEY.into(),
            ],
            placement: Placement::Restart,
        });
    }
    for (role, tls) in [
        ("tls-client", &plan.client_tls),
        ("tls-routes", &plan.route_tls),
        ("tls-leafnodes", &plan.leaf_tls),
    ] {
        if let Some(tls) = tls {
            uses.push(SecretUse {
                role,
                name: tls.secret_name.clone(),
                keys: TLS_KEYS.iter().map(|k| (*k).to_string()).collect(),
                placement: Placement::Reload,
            });
        }
    }
    uses
}

/// Names of the Secrets a NatsCluster's spec references (valid or not: a spec being
/// fixed still wants its Secrets watched), the generated route Secret included: deleting
/// it reconciles the cluster, which makes a new one.
fn spec_secret_names(nc: &NatsCluster) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Some(auth) = &nc.spec.auth {
        names.extend(auth.token.iter().chain(&auth.users).map(|s| s.name.clone()));
    }
    if nc.spec.pools.iter().any(|p| p.role == PoolRole::Leaf) {
        match nc.spec.auth.as_ref().and_then(|a| a.leafnodes.as_ref()) {
            Some(leaf) => names.push(leaf.secret_name.clone()),
            None => names.push(crate::leaf_auth::secret_name(&nc.name_any())),
        }
    }
    if let Some(tls) = &nc.spec.tls {
        names.extend(
            tls.client
                .iter()
                .chain(&tls.leafnodes)
                .map(|t| t.secret_name.clone()),
        );
        if let Some(routes) = &tls.routes {
            names.extend(routes.secret_name.clone());
            if routes.generate {
                names.push(crate::route_tls::secret_name(&nc.name_any()));
            }
        }
    }
    names
}

/// The NatsClusters to reconcile when `secret` changes: those of its namespace that
/// reference it by name. Used as the controller's mapper for Secret events.
pub fn clusters_referencing(
    clusters: &Store<NatsCluster>,
    secret: &Secret,
) -> Vec<ObjectRef<NatsCluster>> {
    let (name, ns) = (secret.name_any(), secret.namespace());
    clusters
        .state()
        .iter()
        .filter(|nc| nc.namespace() == ns && spec_secret_names(nc).contains(&name))
        .map(|nc| ObjectRef::from_obj(nc.as_ref()))
        .collect()
}

/// `sha256:<hex>` over the listed keys of a Secret's data, each key named and
/// length-prefixed so that moving bytes between keys changes it; a missing key counts as
/// missing, not empty. `absent` when the Secret does not exist.
pub fn digest(secret: Option<&Secret>, keys: &[String]) -> String {
    let Some(secret) = secret else {
        return "absent".into();
    };
    let data = secret.data.clone().unwrap_or_default();
    let strings = secret.string_data.clone().unwrap_or_default();
    let mut hash = Sha256::new();
    for key in keys {
        hash.update((key.len() as u64).to_be_bytes());
        hash.update(key.as_bytes());
        let value = data
            .get(key)
            .map(|v| v.0.as_slice())
            .or_else(|| strings.get(key).map(String::as_bytes));
        match value {
            Some(v) => {
                hash.update([1]);
                hash.update((v.len() as u64).to_be_bytes());
                hash.update(v);
            }
            None => hash.update([0]),
        }
    }
    let mut out = String::from("sha256:");
    for b in hash.finalize() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The digests of a cluster's Secrets, by where they go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDigests {
    /// `(role, digest)` of the Secrets the broker reloads, in [`referenced`] order.
    pub reload: Vec<(&'static str, String)>,
    /// One digest over the start-up-only Secrets; `None` when there are none.
    pub restart: Option<String>,
}

impl SecretDigests {
    /// Digests of `uses` from the Secrets read, by name (missing names are absent).
    pub fn compute(uses: &[SecretUse], secrets: &BTreeMap<String, Secret>) -> Self {
        let mut out = SecretDigests::default();
        let mut restart = Vec::new();
        for u in uses {
            let d = digest(secrets.get(&u.name), &u.keys);
            match u.placement {
                Placement::Reload => out.reload.push((u.role, d)),
                Placement::Restart => restart.push(format!("{}={d}", u.role)),
            }
        }
        if !restart.is_empty() {
            let joined = restart.join("\n");
            let mut hex = String::from("sha256:");
            for b in Sha256::digest(joined.as_bytes()) {
                let _ = write!(hex, "{b:02x}");
            }
            out.restart = Some(hex);
        }
        out
    }

    /// Puts the digests into the built objects: reloadable ones as comment lines at the
    /// end of `midge.conf` (the servers' config watcher reloads on the change, and a
    /// comment changes no option, so the restart hash and the broker's config digest stay
    /// the same), start-up-only ones into every pod template.
    pub fn apply_to(&self, children: &mut Children) {
        if !self.reload.is_empty() {
            // Every pool's config (the shared one and those of pools with their own): all
            // servers read the same Secret files.
            let maps = std::iter::once(&mut children.config_map)
                .chain(children.pool_config_maps.iter_mut());
            for map in maps {
                let data = map.data.get_or_insert_with(BTreeMap::new);
                if let Some(conf) = data.get_mut(crate::build::CONFIG_FILE) {
                    conf.push_str(
                        "# Digests of the Secrets the servers read files from; a change reloads them.\n",
                    );
                    for (role, digest) in &self.reload {
                        let _ = writeln!(conf, "# secret {role}: {digest}");
                    }
                }
            }
        }
        if let Some(hash) = &self.restart {
            for sts in &mut children.stateful_sets {
                let meta = sts
                    .spec
                    .template
                    .metadata
                    .get_or_insert_with(Default::default);
                meta.annotations
                    .get_or_insert_with(BTreeMap::new)
                    .insert(SECRET_RESTART_ANNOTATION.into(), hash.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{build, CONFIG_FILE};
    use crate::validate::validate;
    use k8s_openapi::ByteString;

    fn plan(spec: &str) -> ClusterPlan {
        let yaml = format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: demo, namespace: ns}}\nspec:\n{spec}"
        );
        let nc: NatsCluster = serde_yaml::from_str(&yaml).expect("test manifest parses");
        validate(&nc).expect("valid")
    }

    fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn secrets(list: &[Secret]) -> BTreeMap<String, Secret> {
        list.iter().map(|s| (s.name_any(), s.clone())).collect()
    }

    fn conf(children: &Children) -> String {
        children.config_map.data.as_ref().expect("data")[CONFIG_FILE].clone()
    }

    fn template_annotation(children: &Children) -> Option<String> {
        children.stateful_sets[0]
            .spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(SECRET_RESTART_ANNOTATION))
            .cloned()
    }

    #[test]
    fn digest_covers_the_used_keys_only() {
        let keys = vec!["tls.crt".to_string(), "tls.key".to_string()];
        let a = secret("c", &[("tls.crt", "A"), ("tls.key", "K"), ("other", "x")]);
        let b = secret("c", &[("tls.crt", "A"), ("tls.key", "K"), ("other", "y")]);
        let c = secret("c", &[("tls.crt", "B"), ("tls.key", "K")]);
        assert_eq!(digest(Some(&a), &keys), digest(Some(&b), &keys));
        assert_ne!(digest(Some(&a), &keys), digest(Some(&c), &keys));
        // Bytes moved from one key to the other, or a key emptied versus missing.
        let moved = secret("c", &[("tls.crt", "AK"), ("tls.key", "")]);
        let missing = secret("c", &[("tls.crt", "AK")]);
        assert_ne!(digest(Some(&moved), &keys), digest(Some(&a), &keys));
        assert_ne!(digest(Some(&moved), &keys), digest(Some(&missing), &keys));
        assert_eq!(digest(None, &keys), "absent");
        assert_eq!(digest(Some(&a), &keys).len(), 7 + 64);
    }

    /// Files the broker reloads (users include, client TLS) put their digests in the
    /// config, which the servers watch; the pod template is untouched, so nothing rolls.
    #[test]
    fn reloadable_secrets_go_into_the_config_only() {
        let plan = plan("  replicas: 3\n  auth: {users: {name: users, key: auth.conf}}\n  tls: {client: {secretName: cert}}\n");
        let uses = referenced(&plan);
        assert_eq!(
            uses.iter()
                .map(|u| (u.role, u.name.as_str(), u.placement))
                .collect::<Vec<_>>(),
            [
                ("users", "users", Placement::Reload),
                ("tls-client", "cert", Placement::Reload)
            ]
        );
        let v1 = secrets(&[
            secret("users", &[("auth.conf", "authorization { token: a }")]),
            secret("cert", &[("tls.crt", "1"), ("tls.key", "k")]),
        ]);
        let v2 = secrets(&[
            secret("users", &[("auth.conf", "authorization { token: a }")]),
            secret("cert", &[("tls.crt", "2"), ("tls.key", "k")]),
        ]);
        let render = |s: &BTreeMap<String, Secret>| {
            let mut children = build(&plan, None);
            SecretDigests::compute(&uses, s).apply_to(&mut children);
            children
        };
        let (one, two) = (render(&v1), render(&v2));
        let bare = build(&plan, None);
        assert!(
            conf(&one).starts_with(&conf(&bare)),
            "appended after the config"
        );
        assert_eq!(conf(&one).matches("# secret ").count(), 2, "{}", conf(&one));
        assert!(conf(&one).contains(&format!(
            "# secret users: {}\n",
            digest(v1.get("users"), &["auth.conf".into()])
        )));
        assert_ne!(conf(&one), conf(&two));
        assert_eq!(one.stateful_sets, bare.stateful_sets, "no roll");
        assert_eq!(template_annotation(&one), None);
        // The comment is no option: the broker loads the same options from it.
        let checked = crate::broker_config::check(&conf(&two)).map_err(|e| format!("{e:?}"));
        assert!(checked.is_ok(), "{checked:?}");
    }

    /// The token is an environment variable, read once: its Secret rolls the pods and
    /// leaves the config alone.
    #[test]
    fn startup_only_secrets_go_into_the_pod_template() {
        let plan = plan("  pools: [{name: a, replicas: 1}, {name: b, replicas: 2}]\n  auth: {token: {name: creds, key: token}}\n");
        let uses = referenced(&plan);
        assert_eq!(uses[0].placement, Placement::Restart);
        let render = |token: &str| {
            let mut children = build(&plan, None);
            SecretDigests::compute(&uses, &secrets(&[secret("creds", &[("token", token)])]))
                .apply_to(&mut children);
            children
        };
        let (one, two) = (render("t1"), render("t2"));
        assert_eq!(conf(&one), conf(&build(&plan, None)));
        assert_eq!(conf(&one), conf(&two));
        let hashes = |c: &Children| -> Vec<Option<String>> {
            c.stateful_sets
                .iter()
                .map(|s| {
                    s.spec
                        .template
                        .metadata
                        .as_ref()
                        .and_then(|m| m.annotations.as_ref())
                        .and_then(|a| a.get(SECRET_RESTART_ANNOTATION).cloned())
                })
                .collect()
        };
        assert_eq!(hashes(&one).len(), 2);
        assert!(hashes(&one).iter().all(Option::is_some));
        assert_ne!(hashes(&one), hashes(&two));
        assert_eq!(hashes(&one), hashes(&render("t1")), "deterministic");
    }

    #[test]
    fn no_secrets_change_nothing() {
        let plan = plan("  replicas: 3\n");
        let mut children = build(&plan, None);
        SecretDigests::compute(&referenced(&plan), &BTreeMap::new()).apply_to(&mut children);
        assert_eq!(children, build(&plan, None));
    }

    #[test]
    fn secret_events_map_to_the_clusters_referencing_them() {
        let (reader, mut writer) = kube::runtime::reflector::store::<NatsCluster>();
        let cluster = |name: &str, ns: &str, spec: &str| -> NatsCluster {
            serde_yaml::from_str(&format!(
                "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
            ))
            .expect("manifest")
        };
        for nc in [
            cluster("a", "ns", "  tls: {client: {secretName: cert}}\n"),
            cluster("b", "ns", "  auth: {users: {name: cert, key: u}}\n"),
            cluster("c", "other", "  tls: {client: {secretName: cert}}\n"),
            cluster("d", "ns", "  replicas: 1\n"),
            cluster("e", "ns", "  tls: {routes: {generate: true}}\n"),
            cluster(
                "f",
                "ns",
                "  pools: [{name: a, replicas: 1}, {name: b, replicas: 1, role: leaf}]\n",
            ),
            cluster(
                "g",
                "ns",
                "  pools: [{name: a, replicas: 1}, {name: b, replicas: 1, role: leaf}]\n  auth: {leafnodes: {secretName: edge-login}}\n",
            ),
            // Without a leaf pool the leaf Secret is not used.
            cluster("h", "ns", "  replicas: 1\n  auth: {leafnodes: {secretName: edge-login}}\n"),
        ] {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(nc));
        }
        let mut names: Vec<String> = clusters_referencing(&reader, &secret("cert", &[]))
            .into_iter()
            .map(|r| r.name)
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
        assert!(clusters_referencing(&reader, &secret("unrelated", &[])).is_empty());
        // The generated route Secret: deleting it reconciles its cluster (a new one).
        let generated: Vec<String> = clusters_referencing(&reader, &secret("e-routes-tls", &[]))
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(generated, ["e"]);
        // The leaf credentials, generated (deleting them rotates them) or the user's.
        for (secret_name, cluster) in [("f-leaf-credentials", "f"), ("edge-login", "g")] {
            let found: Vec<String> = clusters_referencing(&reader, &secret(secret_name, &[]))
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert_eq!(found, [cluster], "{secret_name}");
        }
    }

    /// Leaf credentials are environment variables on every pod: their digest rolls
    /// both the core and the leaf pools.
    #[test]
    fn leaf_credentials_roll_every_pool() {
        let plan = plan("  pools: [{name: a, replicas: 1}, {name: e, replicas: 1, role: leaf}]\n");
        let uses = referenced(&plan);
        assert_eq!(
            uses.iter()
                .map(|u| (u.role, u.name.as_str(), u.placement))
                .collect::<Vec<_>>(),
            [(
                "leaf-credentials",
                "demo-leaf-credentials",
                Placement::Restart
            )]
        );
        let mut children = build(&plan, None);
        SecretDigests::compute(
            &uses,
            &secrets(&[secret(
                "demo-leaf-credentials",
                &[("user", "leaf"), ("password", "x")],
            )]),
        )
        .apply_to(&mut children);
        for sts in &children.stateful_sets {
            let annotations = sts
                .spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref());
            assert!(annotations.is_some_and(|a| a.contains_key(SECRET_RESTART_ANNOTATION)));
        }
    }
}
