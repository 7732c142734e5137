//! Generated route credentials (`spec.tls.routes.generate`).
//!
//! The operator creates one Secret per cluster, `<cluster>-routes-tls`, in the layout of
//! a cert-manager Secret (`tls.crt`, `tls.key`, `ca.crt`), so that everything after its
//! creation (the mount, the rendered `cluster { tls {} }` block, the digest that makes
//! the servers reload) is the path of a user-provided `spec.tls.routes.secretName`.
//!
//! - `ca.crt`: a private CA made for this Secret alone (ECDSA P-256, ten years). Its key
//!   signs the one certificate below and is then dropped, so nothing can issue another
//!   certificate this cluster trusts.
//! - `tls.crt` / `tls.key`: one ECDSA P-256 certificate, valid for a year, shared by every
//!   pod of the cluster, both as the route server's certificate and as the client
//!   certificate a server presents when it dials a route (routes are mutual TLS). Its
//!   names cover every pod behind the headless Service (see [`dns_names`]).
//!
//! The controller creates the Secret only when it does not exist and never rewrites it:
//! a cluster keeps the first pair it gets. Deleting the Secret is how a new pair is
//! made (see the README, "Day 2 operations").

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::build::headless_service_name;
use crate::validate::ClusterPlan;

/// Suffix of the generated Secret's name: `<cluster>-routes-tls`.
pub const SECRET_SUFFIX: &str = "-routes-tls";

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Lifetime of the generated CA.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
/// Lifetime of the generated server/client certificate.
pub const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Both certificates start to be valid this long before they were made, so a node whose
/// clock is a little behind the operator's accepts them.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum RouteTlsError {
    #[error("generating the route TLS certificates: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Time left before the generated certificate expires at which the operator starts to
/// warn (a Warning Event on every reconcile) that the Secret should be deleted.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Seconds from `now` until the certificate in the Secret's `tls.crt` expires (negative
/// once expired); `None` when it holds no readable certificate.
pub fn seconds_left(secret: &Secret, now: SystemTime) -> Option<i64> {
    let data = secret.data.as_ref()?.get("tls.crt")?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&data.0).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).ok()?;
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).ok()?.as_secs()).ok()?;
    Some(cert.validity().not_after.timestamp() - now)
}

/// Name of the Secret the operator generates for `cluster`.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}{SECRET_SUFFIX}")
}

/// The names the generated certificate carries: every pod is
/// `<pod>.<cluster>-headless.<namespace>.svc.<clusterDomain>` in the route URLs, and the
/// shorter `...svc` form resolves too; the headless Service's own names are included for
/// tools that connect through it.
pub fn dns_names(plan: &ClusterPlan) -> Vec<String> {
    let service = format!(
        "{}.{}.svc",
        headless_service_name(&plan.name),
        plan.namespace
    );
    let qualified = format!("{service}.{}", plan.cluster_domain);
    vec![
        format!("*.{qualified}"),
        format!("*.{service}"),
        qualified,
        service,
    ]
}

/// A generated pair, PEM-encoded, by Secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteCredentials {
    pub ca_crt: String,
    pub tls_crt: String,
    pub tls_key: String,
}

/// Generates a CA and the cluster's route certificate, valid from `now`.
pub fn generate(plan: &ClusterPlan, now: SystemTime) -> Result<RouteCredentials, RouteTlsError> {
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let start = rcgen::date_time_ymd(1970, 1, 1) + since_epoch.saturating_sub(BACKDATE);
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    let cluster = format!("{}/{}", plan.namespace, plan.name);

    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, format!("midge routes CA {cluster}"));
    ca.distinguished_name
        .push(DnType::OrganizationName, "midge-operator");
    // Signs end-entity certificates only, never another CA.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = start;
    ca.not_after = now + CA_VALIDITY;
    let ca_crt = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("midge routes {cluster}"));
    leaf.subject_alt_names = dns_names(plan)
        .into_iter()
        .map(|name| Ok(SanType::DnsName(name.try_into()?)))
        .collect::<Result<_, rcgen::Error>>()?;
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // A server accepts a route with it and presents it when it dials one.
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = start;
    leaf.not_after = now + CERT_VALIDITY;
    let tls_crt = leaf.signed_by(&key, &issuer)?.pem();

    Ok(RouteCredentials {
        ca_crt,
        tls_crt,
        tls_key: key.serialize_pem(),
    })
}

/// The Secret holding `credentials`, labelled like the cluster's other objects and owned
/// by the cluster when `owner` is given (so that it is deleted with it).
pub fn secret(
    plan: &ClusterPlan,
    owner: Option<&OwnerReference>,
    credentials: &RouteCredentials,
) -> Secret {
    let data = [
        ("ca.crt", &credentials.ca_crt),
        ("tls.crt", &credentials.tls_crt),
        ("tls.key", &credentials.tls_key),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect::<BTreeMap<_, _>>();
    let mut metadata = crate::build::metadata(plan, secret_name(&plan.name), None, owner);
    metadata.annotations = Some(BTreeMap::from([(
        "midge.dev/routes-tls".to_string(),
        format!(
            "generated by midge-operator; kept until deleted (then a new pair is made); the certificate is valid for {} days",
            CERT_VALIDITY.as_secs() / DAY.as_secs()
        ),
    )]));
    Secret {
        metadata,
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use x509_parser::extensions::GeneralName;
    use x509_parser::pem::parse_x509_pem;

    use super::*;
    use crate::crd::NatsCluster;

    fn plan(spec: &str) -> ClusterPlan {
        let yaml = format!(
            "apiVersion: midge.dev/v1alpha1\nkind: NatsCluster\nmetadata: {{name: demo, namespace: ns}}\nspec:\n{spec}"
        );
        let nc: NatsCluster = serde_yaml::from_str(&yaml).expect("test manifest parses");
        crate::validate::validate(&nc).expect("valid")
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        let (rest, pem) = parse_x509_pem(pem.as_bytes()).expect("PEM");
        assert!(rest.iter().all(u8::is_ascii_whitespace), "one certificate");
        CertificateDer::from(pem.contents)
    }

    fn unix(time: SystemTime) -> UnixTime {
        UnixTime::since_unix_epoch(time.duration_since(UNIX_EPOCH).expect("after 1970"))
    }

    #[test]
    fn certificate_names_the_pods_and_chains_to_the_ca() {
        let plan = plan("  pools: [{name: a, replicas: 2}, {name: b, replicas: 1}]\n  clusterDomain: example.internal\n");
        let now = SystemTime::now();
        let creds = generate(&plan, now).expect("generated");

        let leaf = der(&creds.tls_crt);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("X.509");
        let mut sans: Vec<String> = cert
            .subject_alternative_name()
            .expect("well-formed extension")
            .expect("a SAN extension")
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some((*d).to_string()),
                _ => None,
            })
            .collect();
        sans.sort();
        assert_eq!(
            sans,
            [
                "*.demo-headless.ns.svc",
                "*.demo-headless.ns.svc.example.internal",
                "demo-headless.ns.svc",
                "demo-headless.ns.svc.example.internal",
            ]
        );
        assert!(!cert.is_ca());
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        let days = lifetime / 86_400;
        assert_eq!(days, 365, "about a year (plus the backdating hour)");

        let ca = der(&creds.ca_crt);
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca).expect("X.509");
        assert!(ca_cert.is_ca());
        let ca_days = (ca_cert.validity().not_after.timestamp()
            - ca_cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(ca_days, 3650);

        // Verified as the brokers do: a dialling server checks the peer's name from the
        // route URL against the CA, the accepting server checks the client certificate.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).expect("CA accepted as a root");
        let roots = Arc::new(roots);
        let servers = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .expect("server verifier");
        let routes: Vec<String> = [("a", 0), ("a", 1), ("b", 0)]
            .iter()
            .map(|(pool, i)| crate::build::route_url(&plan, pool, *i))
            .collect();
        for url in &routes {
            let host = url
                .trim_start_matches("nats://")
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
                .expect("host:port");
            let name = ServerName::try_from(host.clone()).expect("DNS name");
            servers
                .verify_server_cert(&leaf, &[], &name, &[], unix(now))
                .unwrap_or_else(|e| panic!("{host}: {e}"));
        }
        let outsider = ServerName::try_from("demo-a-0.other-headless.ns.svc.example.internal")
            .expect("DNS name");
        assert!(servers
            .verify_server_cert(&leaf, &[], &outsider, &[], unix(now))
            .is_err());
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .expect("client verifier");
        clients
            .verify_client_cert(&leaf, &[], unix(now))
            .expect("accepted as a client certificate");
        // Expired after the year.
        let later = now + CERT_VALIDITY + DAY;
        let name = ServerName::try_from("demo-a-0.demo-headless.ns.svc").expect("DNS name");
        assert!(servers
            .verify_server_cert(&leaf, &[], &name, &[], unix(later))
            .is_err());

        // The key is the certificate's.
        let key = KeyPair::from_pem(&creds.tls_key).expect("PKCS#8 key");
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            key.public_key_raw()
        );
    }

    /// Another generation is another CA: a pod holding one pair cannot join a mesh using
    /// another.
    #[test]
    fn each_generation_is_its_own_trust() {
        let plan = plan("  replicas: 1\n");
        let now = SystemTime::now();
        let one = generate(&plan, now).expect("generated");
        let two = generate(&plan, now).expect("generated");
        assert_ne!(one.ca_crt, two.ca_crt);
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&one.ca_crt)).expect("root");
        let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("client verifier");
        assert!(clients
            .verify_client_cert(&der(&two.tls_crt), &[], unix(now))
            .is_err());
    }

    #[test]
    fn secret_has_the_tls_layout_and_the_owner() {
        let plan = plan("  replicas: 1\n");
        let creds = generate(&plan, SystemTime::now()).expect("generated");
        let owner = OwnerReference {
            api_version: "midge.dev/v1alpha1".into(),
            kind: "NatsCluster".into(),
            name: "demo".into(),
            uid: "u1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let secret = secret(&plan, Some(&owner), &creds);
        assert_eq!(secret.metadata.name.as_deref(), Some("demo-routes-tls"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(secret.metadata.owner_references, Some(vec![owner]));
        let data = secret.data.expect("data");
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ca.crt", "tls.crt", "tls.key"]);
        assert_eq!(data["tls.crt"].0, creds.tls_crt.as_bytes());
    }

    #[test]
    fn expiry_is_read_from_the_secret() {
        let plan = plan("  replicas: 1\n");
        let now = SystemTime::now();
        let creds = generate(&plan, now).expect("generated");
        let secret = secret(&plan, None, &creds);
        let left = seconds_left(&secret, now).expect("a certificate");
        assert_eq!(left, i64::try_from(CERT_VALIDITY.as_secs()).expect("fits"));
        let later = now + CERT_VALIDITY + DAY;
        assert_eq!(seconds_left(&secret, later), Some(-86_400));
        let mut garbage = secret.clone();
        garbage.data = Some(BTreeMap::from([(
            "tls.crt".to_string(),
            ByteString(b"not a certificate".to_vec()),
        )]));
        assert_eq!(seconds_left(&garbage, now), None);
        assert_eq!(seconds_left(&Secret::default(), now), None);
    }
}
