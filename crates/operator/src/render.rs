//! `midge-operator render`: manifests in, every child object out, no cluster needed.
//!
//! A cluster with `spec.tls.routes.generate` also gets its route TLS Secret, with a pair
//! generated for this output, and a cluster with leaf pools (and no leaf credentials
//! Secret of the user's) its leaf credentials Secret, with a new password. In a cluster
//! the operator creates those Secrets once and keeps them, so the rendered ones are only
//! what the first reconcile would create.

use kube::ResourceExt;
use serde::Deserialize;

use crate::build::build;
use crate::crd::NatsCluster;
use crate::validate::{validate, ValidationError};

/// Namespace assumed for manifests that do not set one, as `kubectl apply` would.
pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("document {index} is not a NatsCluster: {source}")]
    Parse {
        index: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("NatsCluster {name} is invalid: {source}")]
    Invalid {
        name: String,
        #[source]
        source: ValidationError,
    },
    #[error("NatsCluster {name}: {source}")]
    RouteTls {
        name: String,
        #[source]
        source: crate::route_tls::RouteTlsError,
    },
    #[error("cannot serialise objects: {0}")]
    Serialise(#[from] serde_yaml::Error),
}

/// Reads every NatsCluster in a (multi-document) YAML stream.
pub fn parse_manifests(yaml: &str) -> Result<Vec<NatsCluster>, RenderError> {
    let mut clusters = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let value = serde_yaml::Value::deserialize(document)
            .map_err(|source| RenderError::Parse { index, source })?;
        // An empty document (a stray `---`) is not an error.
        if value.is_null() {
            continue;
        }
        let mut cluster: NatsCluster =
            serde_yaml::from_value(value).map_err(|source| RenderError::Parse { index, source })?;
        if cluster.namespace().is_none() {
            cluster.metadata.namespace = Some(DEFAULT_NAMESPACE.to_string());
        }
        clusters.push(cluster);
    }
    Ok(clusters)
}

/// Renders every object the operator would apply for the clusters in `yaml`.
pub fn render(yaml: &str) -> Result<String, RenderError> {
    let mut out = String::new();
    for cluster in parse_manifests(yaml)? {
        let plan = validate(&cluster).map_err(|source| RenderError::Invalid {
            name: cluster.name_any(),
            source,
        })?;
        // No owner reference: a manifest read from a file has no uid yet.
        if plan.route_tls_generated {
            let credentials = crate::route_tls::generate(&plan, std::time::SystemTime::now())
                .map_err(|source| RenderError::RouteTls {
                    name: cluster.name_any(),
                    source,
                })?;
            let secret = crate::route_tls::secret(&plan, None, &credentials);
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&secret)?);
        }
        if plan.leaf_auth.as_ref().is_some_and(|l| l.generated) {
            let secret = crate::leaf_auth::secret(&plan, None, &crate::leaf_auth::generate());
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&secret)?);
        }
        out.push_str(&build(&plan, None).to_yaml()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_renders() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/samples");
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("config/samples exists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        entries.sort();
        assert!(entries.len() >= 3, "{entries:?}");
        for path in entries {
            let yaml = std::fs::read_to_string(&path).expect("readable sample");
            let out = render(&yaml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(out.contains("kind: StatefulSet"), "{}", path.display());
        }
    }

    /// Offline, the generated route Secret is rendered (first, as the operator creates it
    /// before the servers) with a fresh pair, and the servers use it like any other.
    #[test]
    fn generated_route_tls_renders_its_secret() {
        let yaml = "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {name: x, namespace: ns}\nspec:\n  replicas: 2\n  tls: {routes: {generate: true}}\n";
        let out = render(yaml).expect("renders");
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out)
            .map(|d| serde_yaml::Value::deserialize(d).expect("object"))
            .collect();
        let secret = &docs[0];
        assert_eq!(secret["kind"], "Secret", "{out}");
        assert_eq!(secret["metadata"]["name"], "x-routes-tls");
        assert_eq!(secret["type"], "kubernetes.io/tls");
        for key in ["ca.crt", "tls.crt", "tls.key"] {
            assert!(
                secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
                "{key}"
            );
        }
        assert!(out.contains("secretName: x-routes-tls"), "{out}");
        assert!(
            out.contains("cert_file: \"/etc/midge-tls/routes/tls.crt\""),
            "{out}"
        );
        // A new pair on every render.
        assert_ne!(render(yaml).expect("renders"), out);
    }

    #[test]
    fn invalid_manifest_reports_the_field() {
        let err = render("apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {name: x}\nspec:\n  pools: [{name: e, replicas: 1, role: leaf}]\n")
            .expect_err("a leaf-only cluster is rejected");
        assert!(
            err.to_string()
                .contains("spec.pools: needs at least one pool with role core"),
            "{err}"
        );
    }
}
