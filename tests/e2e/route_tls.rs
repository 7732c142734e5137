//! Routes over TLS (`cluster { tls {} }`) between midge and nats-server processes, with
//! certificates made in the test (rcgen): a mixed cluster whose messages and queue groups
//! cross TLS routes, a peer whose certificate comes from another CA refused both ways, and a
//! reloaded route certificate served to new route connections while the established route
//! keeps working.
//!
//! Every wait has a deadline; nothing sleeps to synchronise.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use midge_tests::{ServerKind, TestServer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::cluster::{
    client, crosses, full_mesh, http_json, members, queue_exactly_once, rand_token, reload_config,
    wait_log, Member,
};
use crate::tls::{Issued, Pki};
use ServerKind::{Midge, NatsServer};

const WAIT: Duration = Duration::from_secs(10);

/// A member's config: cluster "t" on `me.route` over TLS with `cert`, trusting `pki`'s CA,
/// soliciting `routes`; monitoring on `http` when given.
fn config(name: &str, me: Member, routes: &[u16], pki: &Pki, cert: &Issued) -> String {
    let routes: Vec<String> = routes
        .iter()
        .map(|p| format!("\"nats://127.0.0.1:{p}\""))
        .collect();
    format!(
        "server_name: {name}\ncluster {{\n  name: t\n  listen: 127.0.0.1:{}\n  routes: [{}]\n  \
         tls {{\n    cert_file: \"{}\"\n    key_file: \"{}\"\n    ca_file: \"{}\"\n    timeout: 2\n  }}\n}}\n",
        me.route,
        routes.join(", "),
        cert.cert.display(),
        cert.key.display(),
        pki.ca_file().display(),
    )
}

async fn start(kind: ServerKind, text: &str, me: Member) -> TestServer {
    TestServer::builder(kind)
        .config(text)
        .arg("-p")
        .arg(&me.client.to_string())
        .start()
        .await
}

#[tokio::test]
async fn two_midge_and_a_nats_server_route_over_tls() {
    if midge_tests::reference_only() {
        return;
    }
    let pki = Pki::new("route CA");
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let mut servers = Vec::new();
    for (i, kind) in [Midge, Midge, NatsServer].into_iter().enumerate() {
        let name = format!("s{i}");
        let cert = pki.route(&name);
        servers.push(start(kind, &config(&name, m[i], &all, &pki, &cert), m[i]).await);
    }
    let [a, b, c] = [&servers[0], &servers[1], &servers[2]];
    full_mesh(&[a, b, c]).await;
    queue_exactly_once(&[a, b, c]).await;
    queue_exactly_once(&[c, a, b]).await;
    for s in [a, b] {
        assert!(
            !s.log_text().contains("handshake error"),
            "{}",
            s.log_text()
        );
    }
}

#[tokio::test]
async fn a_peer_from_another_ca_is_refused_both_ways() {
    if midge_tests::reference_only() {
        return;
    }
    let (ours, theirs) = (Pki::new("our CA"), Pki::new("their CA"));
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let http = midge_tests::free_port();
    let a_text = format!(
        "http: 127.0.0.1:{http}\n{}",
        config("a", m[0], &all, &ours, &ours.route("a"))
    );
    let a = start(Midge, &a_text, m[0]).await;
    let b = start(
        Midge,
        &config("b", m[1], &all, &ours, &ours.route("b")),
        m[1],
    )
    .await;
    // The stranger trusts its own CA only, and presents a certificate from it.
    let c_text = config("c", m[2], &all, &theirs, &theirs.route("c"));
    let c = start(NatsServer, &c_text, m[2]).await;
    full_mesh(&[&a, &b]).await;
    // a dials c (c's certificate is unknown to a) and c dials a (a refuses c's
    // certificate, or c refuses a's): both directions fail in the handshake.
    let deadline = Instant::now() + WAIT;
    while a.log_text().matches("TLS route handshake error").count() < 2 {
        assert!(Instant::now() < deadline, "{}", a.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_log(&c, "handshake error").await;
    let routez = http_json(SocketAddr::from(([127, 0, 0, 1], http)), "/routez").await;
    assert_eq!(routez["num_routes"], 1, "{routez}");
    assert_eq!(routez["routes"][0]["remote_name"], "b", "{routez}");
    // Nothing from c reaches a.
    let (ca, cc) = (client(&a).await, client(&c).await);
    let subject = format!("probe.{}", rand_token());
    let mut sub = ca.subscribe(subject.clone()).await.expect("subscribe");
    ca.flush().await.expect("flush");
    for _ in 0..20 {
        cc.publish(subject.clone(), "x".into())
            .await
            .expect("publish");
    }
    cc.flush().await.expect("flush");
    let got = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(got.is_err(), "a message crossed a refused route: {got:?}");
}

/// The certificate a route port presents to a TLS client trusting `pki` and presenting
/// `cert`, or the handshake error.
async fn route_certificate(
    port: u16,
    pki: &Pki,
    cert: &Issued,
) -> Result<CertificateDer<'static>, std::io::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(pki.ca_file()).expect("read CA");
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.expect("CA PEM")).expect("add CA");
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
        .expect("read certificate")
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_file(&cert.key).expect("key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client certificate");
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let tls = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("handshake ends in time")?;
    Ok(tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("route certificate")
        .into_owned())
}

#[tokio::test]
async fn a_reloaded_route_certificate_serves_new_routes() {
    let (old_pki, new_pki) = (Pki::new("old CA"), Pki::new("new CA"));
    let m = members(2);
    let (a_old, a_new) = (old_pki.route("a"), new_pki.route("a2"));
    let a = start(
        Midge,
        &config("a", m[0], &[m[1].route], &old_pki, &a_old),
        m[0],
    )
    .await;
    let b_text = config("b", m[1], &[m[0].route], &old_pki, &old_pki.route("b"));
    let b = start(Midge, &b_text, m[1]).await;
    full_mesh(&[&a, &b]).await;
    let probe_old = old_pki.route("probe-old");
    let probe_new = new_pki.route("probe-new");
    let served = route_certificate(m[0].route, &old_pki, &probe_old)
        .await
        .expect("old certificate served");
    assert_eq!(served, a_old.der);

    reload_config(&a, &config("a", m[0], &[m[1].route], &new_pki, &a_new), 1).await;
    wait_log(&a, "Reloaded: cluster.tls").await;
    let served = route_certificate(m[0].route, &new_pki, &probe_new)
        .await
        .expect("new certificate served");
    assert_eq!(served, a_new.der);
    assert!(
        route_certificate(m[0].route, &old_pki, &probe_old)
            .await
            .is_err(),
        "the old CA no longer verifies a's certificate"
    );
    // The route established before the reload keeps its session.
    let (ca, cb) = (client(&a).await, client(&b).await);
    crosses(&ca, &cb, "a -> b after reload").await;
    crosses(&cb, &ca, "b -> a after reload").await;
}
