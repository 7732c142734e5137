//! The render parser against the real `midge-operator render` of the edge sample: the
//! docker driver runs what this finds, so it must find what the pods would run.

use midge_e2e::rendered::{self, Mount};

const SAMPLE: &str = include_str!("../../config/samples/natscluster-edge.yaml");

#[tokio::test]
async fn edge_sample_renders_into_runnable_pools() -> anyhow::Result<()> {
    let cluster = rendered::render(SAMPLE).await?;
    assert_eq!(cluster.name, "fleet");
    assert_eq!(cluster.namespace, "iot");
    let conf = cluster
        .config_files
        .get("midge.conf")
        .expect("the ConfigMap holds midge.conf");
    let names: Vec<_> = cluster.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["cloud", "edge"]);
    for pool in &cluster.pools {
        // Each pool's routes are in the ConfigMap it mounts: the edge pool's own.
        let conf = cluster.config_maps[&pool.config_map]
            .get("midge.conf")
            .expect("the pool's ConfigMap holds midge.conf");
        for ordinal in 0..pool.replicas {
            let pod = pool.pod_name(ordinal);
            // The FQDN in the rendered routes is one of the network aliases.
            let fqdn = cluster.dns_names(&pod).pop().expect("dns names");
            assert!(conf.contains(&format!("nats://{fqdn}:6222")), "{fqdn}");
            assert!(pool
                .env(ordinal, &cluster.secrets)?
                .contains(&("POD_NAME".into(), pod.clone())));
        }
        // Ready once joined: the probe the docker driver polls is the pods' own.
        assert_eq!(pool.readiness.path, "/healthz?routes=1");
        assert_eq!(Some(pool.readiness.port), pool.port("monitor"));
        assert_eq!(pool.args, ["-c", "/etc/midge/midge.conf"]);
        assert!(pool.mounts.contains(&Mount::ConfigMap {
            path: "/etc/midge".into(),
            read_only: true
        }));
        let pre_stop = pool.pre_stop.clone().unwrap_or_default();
        assert_eq!(pre_stop.first().map(String::as_str), Some("/midge"));
        assert!(pool.read_only_root);
        assert!(pool.grace_seconds > 40);
    }
    let cloud = cluster.pool("cloud").expect("cloud pool");
    let edge = cluster.pool("edge").expect("edge pool");
    assert_eq!((cloud.replicas, edge.replicas), (3, 2));
    assert!(
        edge.env(0, &Default::default()).is_err(),
        "no Secret, no pod"
    );
    assert_eq!(cloud.arches, ["amd64"]);
    assert_eq!(edge.arches, ["arm64", "arm"]);
    // The edge pool is a leaf pool: its own config dials the cloud's leaf node Service,
    // whose names the cloud containers carry (and the edge ones do not); the client
    // Services split the same way.
    assert_eq!(cloud.config_map, "fleet-config");
    assert_eq!(edge.config_map, "fleet-edge-config");
    let edge_conf = &cluster.config_maps["fleet-edge-config"]["midge.conf"];
    // The remote URL, with the generated leaf credentials, is the edge pods' variable:
    // the kubelet composes it from the Secret render printed; the ConfigMap names it only.
    assert!(edge_conf.contains("urls: [$MIDGE_LEAF_URL]"), "{edge_conf}");
    let generated: Vec<&String> = cluster.secrets.keys().collect();
    assert_eq!(generated, ["fleet-leaf-credentials"]);
    let leaf_keys = [
        ("fleet-leaf-credentials".to_string(), "password".to_string()),
        ("fleet-leaf-credentials".to_string(), "user".to_string()),
    ];
    assert_eq!(edge.env_secret_keys(), leaf_keys.clone().into());
    assert_eq!(cloud.env_secret_keys(), leaf_keys.into());
    let edge_env = edge.env(0, &cluster.secrets)?;
    let url = edge_env
        .iter()
        .find(|(name, _)| name == "MIDGE_LEAF_URL")
        .map(|(_, value)| value.clone())
        .expect("the edge pods have the remote URL");
    let password = edge_env
        .iter()
        .find(|(name, _)| name == "MIDGE_LEAF_SECRET_PASSWORD")
        .map(|(_, value)| value.clone())
        .expect("the edge pods have the password");
    assert_eq!(password.len(), 32);
    assert_eq!(
        url,
        format!("\"nats-leaf://leaf:{password}@fleet-leafnodes.iot.svc.cluster.local:7422\"")
    );
    let hub_env = cloud.env(0, &cluster.secrets)?;
    assert!(hub_env.contains(&("MIDGE_LEAF_PASSWORD".into(), format!("\"{password}\""))));
    assert!(!conf.contains(&password) && !edge_conf.contains(&password));
    assert!(!conf.contains("fleet-edge-0"), "{conf}");
    assert!(!edge_conf.contains("fleet-cloud-0"), "{edge_conf}");
    assert_eq!(cloud.port("leafnodes"), Some(7422));
    let cloud_aliases = cluster.aliases(cloud, &cloud.pod_name(0));
    let edge_aliases = cluster.aliases(edge, &edge.pod_name(0));
    for service in ["fleet-leafnodes.iot.svc.cluster.local", "fleet"] {
        assert!(
            cloud_aliases.iter().any(|a| a == service),
            "{cloud_aliases:?}"
        );
        assert!(
            !edge_aliases.iter().any(|a| a == service),
            "{edge_aliases:?}"
        );
    }
    assert!(edge_aliases.iter().any(|a| a == "fleet-edge.iot.svc"));
    Ok(())
}

#[tokio::test]
async fn edits_change_only_what_they_name() -> anyhow::Result<()> {
    let scaled = rendered::with_replicas(SAMPLE, "cloud", 5)?;
    let rotated = rendered::with_broker_setting(&scaled, "maxPayload", 2_000_000u64.into())?;
    let cluster = rendered::render(&rotated).await?;
    let replicas: Vec<_> = cluster.pools.iter().map(|p| p.replicas).collect();
    assert_eq!(replicas, [5, 2]);
    let conf = &cluster.config_files["midge.conf"];
    assert!(conf.contains("max_payload: 2000000"), "{conf}");
    assert!(conf.contains("fleet-cloud-4.fleet-headless"));
    assert!(rendered::with_replicas(SAMPLE, "nope", 1).is_err());
    Ok(())
}

/// Every render generates new leaf credentials; the pods name the Secret's keys, not the
/// values, so a re-render (a scale) leaves the pods as they are and the drivers keep the
/// Secret the cluster already has, as the operator does.
#[tokio::test]
async fn re_rendering_keeps_the_pods() -> anyhow::Result<()> {
    let one = rendered::render(SAMPLE).await?;
    let two = rendered::render(&rendered::with_replicas(SAMPLE, "cloud", 5)?).await?;
    assert_ne!(one.secrets, two.secrets, "a new password on every render");
    for (a, b) in one.pools.iter().zip(&two.pools) {
        assert!(a.same_pods(b), "pool {} would roll", a.name);
    }
    Ok(())
}

/// The rotation cluster: the user's Secrets split off the NatsCluster, the certificate
/// and the generated route pair mounted read-only with the operator's mode, the token an
/// environment variable taken from its Secret.
#[tokio::test]
async fn rotation_cluster_mounts_and_reads_its_secrets() -> anyhow::Result<()> {
    let manifest = rendered::split_manifest(&midge_e2e::rotation::manifest_for_checks()?)?;
    let users: Vec<_> = manifest
        .secrets
        .iter()
        .map(|s| (s.metadata.name.clone(), s.metadata.namespace.clone()))
        .collect();
    assert_eq!(
        users,
        [
            (Some("vault-client-tls".into()), Some("iot".into())),
            (Some("vault-token".into()), Some("iot".into()))
        ]
    );
    let cluster = rendered::render(&manifest.cluster).await?;
    let generated: Vec<&String> = cluster.secrets.keys().collect();
    assert_eq!(generated, ["vault-routes-tls"]);
    let [pool] = cluster.pools.as_slice() else {
        panic!("one pool: {:?}", cluster.pools)
    };
    let secret_mounts: Vec<(&str, &str, &str, u32)> = pool
        .mounts
        .iter()
        .filter_map(|m| match m {
            Mount::Secret {
                volume,
                secret,
                path,
                items: None,
                mode,
            } => Some((volume.as_str(), secret.as_str(), path.as_str(), *mode)),
            _ => None,
        })
        .collect();
    assert_eq!(
        secret_mounts,
        [
            (
                "tls-client",
                "vault-client-tls",
                "/etc/midge-tls/client",
                0o440
            ),
            (
                "tls-routes",
                "vault-routes-tls",
                "/etc/midge-tls/routes",
                0o440
            )
        ]
    );
    assert_eq!(pool.fs_group, Some(10001), "the pod's fsGroup");
    assert_eq!(
        pool.env_secret_keys(),
        [("vault-token".to_string(), "token".to_string())].into()
    );
    let mut secrets = cluster.secrets.clone();
    for s in &manifest.secrets {
        let name = s.metadata.name.clone().unwrap_or_default();
        secrets.insert(name, rendered::secret_data(s));
    }
    let env = pool.env(0, &secrets)?;
    assert!(
        env.contains(&("MIDGE_AUTH_TOKEN".into(), "t".into())),
        "{env:?}"
    );
    assert!(rendered::split_manifest("kind: ConfigMap\n").is_err());
    Ok(())
}

/// The kind-only CRD upgrade scenario applies the shipped CRD file: it must read as one.
#[test]
fn shipped_crd_reads_as_a_custom_resource_definition() -> anyhow::Result<()> {
    let crd = midge_e2e::kind_only::shipped_crd()?;
    assert_eq!(crd.metadata.name.as_deref(), Some("natsclusters.midge.dev"));
    assert_eq!(crd.spec.group, "midge.dev");
    Ok(())
}
