//! Clients identified by their certificates, against midge and nats-server processes started
//! from the same config file: `verify_and_map` (the user is the one the certificate names:
//! SAN e-mail, then the subject DN; permissions follow the user; an unknown certificate gets
//! 'Authorization Violation') and `pinned_certs` (a certificate whose public key is not
//! listed is refused; a reload that pins another key lets the new one in, refuses the old
//! one, and on midge closes the connection it no longer allows).
//!
//! Every wait has a deadline; nothing sleeps to synchronise.

use std::time::{Duration, Instant};

use async_nats::{ConnectErrorKind, ConnectOptions};
use futures::StreamExt;
use midge_tests::{ServerKind, TestServer};
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData, SanType};

use crate::cluster::reload_config;
use crate::tls::{Issued, Pki};

const WAIT: Duration = Duration::from_secs(10);

fn tls_block(pki: &Pki, server: &Issued, extra: &str) -> String {
    format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  {extra}\n}}\n",
        server.cert.display(),
        server.key.display(),
        pki.ca_file().display()
    )
}

fn options(pki: &Pki, client: &Issued) -> ConnectOptions {
    ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca_file())
        .add_client_certificate(client.cert.clone(), client.key.clone())
}

async fn connect(
    server: &TestServer,
    opts: ConnectOptions,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    tokio::time::timeout(WAIT, opts.connect(server.url()))
        .await
        .expect("connect attempt ends in time")
}

/// A client certificate with `sans` and subject `dn`.
fn client_cert(pki: &Pki, file: &str, sans: Vec<SanType>, dn: &[(DnType, &str)]) -> Issued {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    for (t, v) in dn {
        params.distinguished_name.push(t.clone(), *v);
    }
    pki.client_from(file, params)
}

/// Lower-case hex SHA-256 of the certificate key's SubjectPublicKeyInfo DER.
fn spki_pin(issued: &Issued) -> String {
    let pem = std::fs::read_to_string(&issued.key).expect("read key");
    let key = KeyPair::from_pem(&pem).expect("key PEM");
    let digest = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Subscribes to `subject` on `c` and checks a message published there comes back.
async fn echo(c: &async_nats::Client, subject: &str) -> bool {
    let Ok(mut sub) = c.subscribe(subject.to_string()).await else {
        return false;
    };
    if c.publish(subject.to_string(), "hi".into()).await.is_err() {
        return false;
    }
    let _ = c.flush().await;
    matches!(
        tokio::time::timeout(Duration::from_secs(2), sub.next()).await,
        Ok(Some(_))
    )
}

#[tokio::test]
async fn verify_and_map_takes_the_user_from_the_certificate() {
    let pki = Pki::new("mapping CA");
    let server = pki.server("server");
    let alice = client_cert(
        &pki,
        "alice",
        vec![SanType::Rfc822Name(
            "alice@example.com".try_into().expect("e-mail"),
        )],
        &[(DnType::CommonName, "ignored")],
    );
    let bob = client_cert(
        &pki,
        "bob",
        Vec::new(),
        &[
            (DnType::OrganizationName, "Acme"),
            (DnType::CommonName, "bob"),
        ],
    );
    let carol = client_cert(&pki, "carol", Vec::new(), &[(DnType::CommonName, "carol")]);
    let config = format!(
        "{}authorization {{\n  users: [\n    {{ user: \"alice@example.com\", permissions: {{ publish: \"a.>\", subscribe: \"a.>\" }} }}\n    {{ user: \"CN=bob,O=Acme\" }}\n  ]\n}}\n",
        tls_block(&pki, &server, "verify_and_map: true")
    );
    for kind in midge_tests::kinds() {
        let s = TestServer::start(kind, &config).await;
        let a = connect(&s, options(&pki, &alice))
            .await
            .unwrap_or_else(|e| panic!("{kind}: alice by her e-mail SAN: {e}"));
        assert!(echo(&a, "a.x").await, "{kind}: alice may use a.>");
        assert!(!echo(&a, "b.x").await, "{kind}: alice may not use b.>");
        let b = connect(&s, options(&pki, &bob))
            .await
            .unwrap_or_else(|e| panic!("{kind}: bob by his subject DN: {e}"));
        assert!(echo(&b, "b.x").await, "{kind}: bob has no limits");
        let e = connect(&s, options(&pki, &carol))
            .await
            .expect_err("carol is nobody");
        assert_eq!(
            e.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{kind}: {e}"
        );
    }
}

#[tokio::test]
async fn pinned_certs_refuse_other_keys_and_reload() {
    let pki = Pki::new("pinning CA");
    let server = pki.server("server");
    let alice = pki.client("alice");
    let bob = pki.client("bob");
    let config = |pin: &str| {
        tls_block(
            &pki,
            &server,
            &format!("verify: true\n  pinned_certs: [\"{pin}\"]"),
        )
    };
    for kind in midge_tests::kinds() {
        let s = TestServer::start(kind, &config(&spki_pin(&alice))).await;
        let a = connect(&s, options(&pki, &alice))
            .await
            .unwrap_or_else(|e| panic!("{kind}: alice's key is pinned: {e}"));
        assert!(echo(&a, "x").await, "{kind}");
        assert!(
            connect(&s, options(&pki, &bob)).await.is_err(),
            "{kind}: bob's key is not pinned"
        );

        reload_config(&s, &config(&spki_pin(&bob)), 1).await;
        let deadline = Instant::now() + WAIT;
        // nats-server (2.9.10 and still on main) compares its established client connections
        // with the old list instead of the new one (`recheckPinnedCerts`), so they stay;
        // midge closes them, as it (and nats-server) do for routes and leaf nodes.
        while kind == ServerKind::Midge
            && a.connection_state() == async_nats::connection::State::Connected
        {
            assert!(
                Instant::now() < deadline,
                "{kind}: alice's connection stays open after her pin was removed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let b = connect(&s, options(&pki, &bob))
            .await
            .unwrap_or_else(|e| panic!("{kind}: bob's key is pinned now: {e}"));
        assert!(echo(&b, "x").await, "{kind}");
        assert!(
            connect(&s, options(&pki, &alice)).await.is_err(),
            "{kind}: alice's key is no longer pinned"
        );
    }
}
