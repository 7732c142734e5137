//! Client TLS against an in-process midge, with certificates made in the test (rcgen): a CA,
//! server certificates for 127.0.0.1/localhost and client certificates.
//!
//! Covered: INFO in plain text with `tls_required`/`tls_verify`; async-nats over TLS with
//! large payloads and many messages between two TLS connections; a plain client refused with
//! `-ERR 'Secure Connection - TLS Required'` (whether it speaks NATS or says nothing);
//! client certificate verification (no certificate or one from another CA is rejected);
//! certificate rotation through `Server::reload_tls` (new connections see the new
//! certificate, existing ones keep working, a bad reload changes nothing); `allow_non_tls`
//! (TLS and plain clients on one port); HTTPS monitoring
//! (`https_port`) with the same certificate, its rotation, and its config errors.
//!
//! Every wait has a deadline; nothing sleeps to synchronise.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions};
use bytes::Bytes;
use futures::StreamExt;
use midge::{Options, Server, TlsOptions};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A throwaway CA writing PEM files into a temporary directory.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// Paths of one issued certificate and its key, plus the certificate itself.
pub(crate) struct Issued {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) der: CertificateDer<'static>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write CA");
        Pki { dir, ca }
    }

    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn issue(&self, name: &str, usages: &[ExtendedKeyUsagePurpose]) -> Issued {
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = usages.to_vec();
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        let issued = Issued {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}-key.pem")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }

    /// A client certificate made from `params` (its names, SANs), written as `file`.
    pub(crate) fn client_from(&self, file: &str, mut params: CertificateParams) -> Issued {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        let issued = Issued {
            cert: self.dir.path().join(format!("{file}.pem")),
            key: self.dir.path().join(format!("{file}-key.pem")),
            der: cert.der().clone(),
        };
        std::fs::write(&issued.cert, cert.pem()).expect("write certificate");
        std::fs::write(&issued.key, key.serialize_pem()).expect("write key");
        issued
    }

    pub(crate) fn server(&self, name: &str) -> Issued {
        self.issue(name, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    pub(crate) fn client(&self, name: &str) -> Issued {
        self.issue(name, &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// A route certificate: routes authenticate both ways, so it serves as both.
    pub(crate) fn route(&self, name: &str) -> Issued {
        self.issue(
            name,
            &[
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        )
    }
}

fn tls_options(pki: &Pki, server: &Issued, verify: bool) -> TlsOptions {
    TlsOptions {
        ca_file: Some(pki.ca_file()),
        verify,
        ..TlsOptions::new(&server.cert, &server.key)
    }
}

async fn start(tls: TlsOptions) -> Server {
    let opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        tls: Some(tls),
        ..Options::default()
    };
    opts.validate().expect("test options are valid");
    Server::start(opts).await.expect("midge starts")
}

fn client_options(pki: &Pki) -> ConnectOptions {
    ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca_file())
}

async fn connect(
    server: &Server,
    opts: ConnectOptions,
) -> Result<Client, async_nats::ConnectError> {
    timeout(WAIT, opts.connect(server.client_url()))
        .await
        .expect("connect attempt finishes in time")
}

/// Reads the plain-text INFO line a server sends first, and nothing after it.
pub(crate) async fn read_info(stream: &mut TcpStream) -> serde_json::Value {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let n = timeout(WAIT, stream.read(&mut byte))
            .await
            .expect("INFO in time")
            .expect("read INFO");
        assert_eq!(n, 1, "connection closed before INFO ended: {line:?}");
        line.push(byte[0]);
    }
    let text = std::str::from_utf8(&line).expect("INFO is UTF-8");
    let json = text
        .strip_prefix("INFO ")
        .unwrap_or_else(|| panic!("not an INFO line: {text:?}"));
    serde_json::from_str(json.trim_end()).expect("INFO JSON")
}

/// Everything the server sends until it closes the connection.
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut rest))
        .await
        .expect("server closes in time")
        .expect("read until close");
    rest
}

pub(crate) fn rustls_client(pki: &Pki) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(pki.ca_file()).expect("read CA");
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A raw TLS session the way NATS clients open one: INFO in plain text, then the handshake.
/// Returns the certificate the server presented, after checking that the protocol works
/// over the session (CONNECT and PING sent right after the handshake get a PONG).
async fn raw_tls_session(server: &Server, pki: &Pki) -> CertificateDer<'static> {
    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    let info = read_info(&mut tcp).await;
    // Required, or only available with allow_non_tls.
    assert!(
        info["tls_required"] == true || info["tls_available"] == true,
        "{info}"
    );
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let mut tls = timeout(WAIT, rustls_client(pki).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("server certificate")
        .into_owned();
    tls.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"PONG\r\n") {
        let n = timeout(WAIT, tls.read(&mut buf))
            .await
            .expect("PONG in time")
            .expect("read");
        assert!(n > 0, "closed before PONG: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    cert
}

/// Publishes `count` messages of `size` bytes from one TLS client to another and checks that
/// each arrives intact and in order.
async fn pub_sub(
    publisher: &Client,
    subscriber: &Client,
    subject: &str,
    count: usize,
    size: usize,
) {
    let mut sub = subscriber
        .subscribe(subject.to_string())
        .await
        .expect("sub");
    midge_tests::round_trip(subscriber).await;
    let payload = |i: usize| -> Bytes {
        let mut p = vec![(i % 251) as u8; size];
        p[..8].copy_from_slice(&(i as u64).to_be_bytes());
        p.into()
    };
    let send = async {
        for i in 0..count {
            publisher
                .publish(subject.to_string(), payload(i))
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
    };
    let receive = async {
        for i in 0..count {
            let msg = timeout(WAIT, sub.next())
                .await
                .unwrap_or_else(|_| panic!("message {i} of {count} in time"))
                .expect("subscription open");
            assert_eq!(msg.payload.len(), size, "message {i}");
            if msg.payload != payload(i) {
                let got = msg.payload.get(..8).map(|b| {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(b);
                    u64::from_be_bytes(n)
                });
                panic!(
                    "message {i}: got message {got:?} (intact: {})",
                    msg.payload.get(8..) == payload(i).get(8..)
                );
            }
        }
    };
    tokio::join!(send, receive);
}

#[tokio::test]
async fn async_nats_over_tls_with_large_payloads_and_many_messages() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let server = start(tls_options(&pki, &cert, false)).await;

    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    let info = read_info(&mut tcp).await;
    assert_eq!(info["tls_required"], true, "{info}");
    assert!(info.get("tls_verify").is_none(), "{info}");
    drop(tcp);

    let publisher = connect(&server, client_options(&pki))
        .await
        .expect("TLS client connects");
    let subscriber = connect(&server, client_options(&pki))
        .await
        .expect("TLS client connects");
    assert!(subscriber.server_info().tls_required);
    pub_sub(&publisher, &subscriber, "big", 40, 512 * 1024).await;
    pub_sub(&publisher, &subscriber, "small", 20_000, 100).await;
    // Request/reply over the same sessions: the latency path (direct writes) also works.
    let mut service = subscriber.subscribe("svc").await.expect("sub");
    midge_tests::round_trip(&subscriber).await;
    let responder = async {
        for _ in 0..100 {
            let msg = service.next().await.expect("request");
            let reply = msg.reply.expect("reply subject");
            subscriber
                .publish(reply, msg.payload)
                .await
                .expect("respond");
        }
    };
    let requester = async {
        for i in 0..100u32 {
            let answer = timeout(
                WAIT,
                publisher.request("svc", Bytes::from(i.to_string().into_bytes())),
            )
            .await
            .expect("reply in time")
            .expect("reply");
            assert_eq!(answer.payload, Bytes::from(i.to_string().into_bytes()));
        }
    };
    tokio::join!(responder, requester);
    assert_eq!(server.num_connections(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn raw_tls_client_gets_pong_right_after_the_handshake() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let server = start(tls_options(&pki, &cert, false)).await;
    assert_eq!(raw_tls_session(&server, &pki).await, cert.der);
    server.shutdown().await;
}

#[tokio::test]
async fn plain_client_is_refused_with_tls_required() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let server = start(TlsOptions {
        timeout: Duration::from_millis(300),
        ..tls_options(&pki, &cert, false)
    })
    .await;

    // A client speaking plain NATS.
    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    let info = read_info(&mut tcp).await;
    assert_eq!(info["tls_required"], true);
    tcp.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await
        .expect("write");
    assert_eq!(
        String::from_utf8_lossy(&read_to_end(&mut tcp).await),
        "-ERR 'Secure Connection - TLS Required'\r\n"
    );

    // A client that never starts the handshake is told the same when the TLS timeout ends.
    let started = Instant::now();
    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    read_info(&mut tcp).await;
    assert_eq!(
        String::from_utf8_lossy(&read_to_end(&mut tcp).await),
        "-ERR 'Secure Connection - TLS Required'\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    // async-nats without TLS configured still upgrades, because INFO says tls_required;
    // without the CA it cannot trust the server and fails.
    let refused = connect(&server, ConnectOptions::new()).await;
    let why = format!("{:?}", refused.expect_err("no TLS trust, no connection"));
    assert!(why.contains("UnknownIssuer"), "{why}");
    server.shutdown().await;
}

/// `allow_non_tls`: one server takes TLS clients and plain ones. As nats-server, INFO says
/// `tls_available` instead of `tls_required`, the first byte after INFO decides (0x16 starts
/// a TLS handshake), and a client silent for the whole TLS timeout is taken as plain.
#[tokio::test]
async fn allow_non_tls_serves_tls_and_plain_clients_side_by_side() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        tls: Some(TlsOptions {
            timeout: Duration::from_millis(300),
            ..tls_options(&pki, &cert, false)
        }),
        allow_non_tls: true,
        ..Options::default()
    };
    let server = Server::start(opts).await.expect("midge starts");

    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    let info = read_info(&mut tcp).await;
    assert_eq!(info["tls_available"], true, "{info}");
    assert!(info.get("tls_required").is_none(), "{info}");
    // Plain NATS right after INFO.
    tcp.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await
        .expect("write");
    let mut pong = [0u8; 6];
    timeout(WAIT, tcp.read_exact(&mut pong))
        .await
        .expect("PONG in time")
        .expect("read PONG");
    assert_eq!(&pong, b"PONG\r\n");

    // Silent past the TLS timeout, then plain NATS: still served.
    let mut late = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    read_info(&mut late).await;
    // Not a synchronisation: outlasting the 300 ms TLS timeout is the case under test.
    tokio::time::sleep(Duration::from_millis(500)).await;
    late.write_all(b"CONNECT {\"verbose\":false}\r\nPING\r\n")
        .await
        .expect("write");
    let mut pong = [0u8; 6];
    timeout(WAIT, late.read_exact(&mut pong))
        .await
        .expect("PONG in time")
        .expect("read PONG");
    assert_eq!(&pong, b"PONG\r\n");

    // A raw TLS session still gets the certificate and a PONG right after the handshake.
    assert_eq!(raw_tls_session(&server, &pki).await, cert.der);

    // async-nats over TLS and async-nats in plain text, talking to each other both ways.
    let secure = connect(&server, client_options(&pki))
        .await
        .expect("TLS client connects");
    let plain = connect(&server, ConnectOptions::new())
        .await
        .expect("plain client connects");
    assert!(!plain.server_info().tls_required);
    pub_sub(&secure, &plain, "to.plain", 200, 64 * 1024).await;
    pub_sub(&plain, &secure, "to.tls", 200, 64 * 1024).await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificates_are_verified() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let alice = pki.client("alice");
    let server = start(tls_options(&pki, &cert, true)).await;

    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    let info = read_info(&mut tcp).await;
    assert_eq!(info["tls_required"], true, "{info}");
    assert_eq!(info["tls_verify"], true, "{info}");
    drop(tcp);

    let with_cert =
        || client_options(&pki).add_client_certificate(alice.cert.clone(), alice.key.clone());
    let a = connect(&server, with_cert())
        .await
        .expect("client with a certificate connects");
    let b = connect(&server, with_cert())
        .await
        .expect("client with a certificate connects");
    pub_sub(&a, &b, "verified", 100, 1000).await;

    let without = connect(&server, client_options(&pki)).await;
    let why = format!(
        "{:?}",
        without.expect_err("a client without a certificate is refused")
    );
    assert!(why.contains("CertificateRequired"), "{why}");

    let other_ca = Pki::new("someone else's CA");
    let mallory = other_ca.client("mallory");
    let foreign = connect(
        &server,
        client_options(&pki).add_client_certificate(mallory.cert.clone(), mallory.key.clone()),
    )
    .await;
    let why = format!(
        "{:?}",
        foreign.expect_err("a certificate from another CA is refused")
    );
    assert!(why.contains("UnknownCA"), "{why}");

    // The accepted clients were not disturbed by the rejected ones.
    pub_sub(&b, &a, "verified.after", 10, 10).await;
    server.shutdown().await;
}

#[tokio::test]
async fn certificates_rotate_without_restart() {
    let pki = Pki::new("midge test CA");
    let old = pki.server("server-old");
    let new = pki.server("server-new");
    assert_ne!(old.der, new.der);
    let server = start(tls_options(&pki, &old, false)).await;
    assert_eq!(raw_tls_session(&server, &pki).await, old.der);
    let established = connect(&server, client_options(&pki))
        .await
        .expect("connect");

    server
        .reload_tls(&tls_options(&pki, &new, false))
        .expect("reload with the new certificate");
    assert_eq!(
        raw_tls_session(&server, &pki).await,
        new.der,
        "new connections see the new certificate"
    );

    // A reload with a missing key is refused, names the file, and changes nothing.
    let missing = pki.dir.path().join("missing-key.pem");
    let err = server
        .reload_tls(&TlsOptions::new(&new.cert, &missing))
        .expect_err("a missing key is refused");
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    assert_eq!(raw_tls_session(&server, &pki).await, new.der);

    // The session set up with the old certificate still works, with new ones too.
    let fresh = connect(&server, client_options(&pki))
        .await
        .expect("connect after rotation");
    pub_sub(&fresh, &established, "rotated", 100, 4096).await;
    pub_sub(&established, &fresh, "rotated.back", 100, 4096).await;
    server.shutdown().await;
}

/// Starts a server that must fail, and checks that the error names `want`.
async fn check(tls: TlsOptions, want: &Path) -> String {
    let opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        tls: Some(tls),
        ..Options::default()
    };
    let err = Server::start(opts).await.expect_err("start fails");
    let text = err.to_string();
    assert!(text.contains(&*want.to_string_lossy()), "{text}");
    text
}

#[tokio::test]
async fn bad_certificate_files_stop_start_up_with_the_file_named() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let other = pki.server("other");
    let missing = pki.dir.path().join("nope.pem");
    check(TlsOptions::new(&missing, &cert.key), &missing).await;
    check(TlsOptions::new(&cert.cert, &missing), &missing).await;
    // A key that belongs to another certificate.
    let text = check(TlsOptions::new(&cert.cert, &other.key), &other.key).await;
    assert!(text.contains("cannot be used together"), "{text}");
    // A certificate file given as the key.
    check(TlsOptions::new(&cert.cert, &cert.cert), &cert.cert).await;
    // verify without a CA.
    let err = Server::start(Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        tls: Some(TlsOptions {
            verify: true,
            ..TlsOptions::new(&cert.cert, &cert.key)
        }),
        ..Options::default()
    })
    .await
    .expect_err("verify needs a CA");
    assert!(err.to_string().contains("ca_file"), "{err}");
}

/// A rough TLS throughput figure: one async-nats publisher, one subscriber, both over TLS.
/// The subscriber reads in its own task; the publisher has no flow control, so the server's
/// max_pending is raised to let it buffer a whole run instead of cutting the subscriber off
/// as a slow consumer (which is what nats-server would do too).
/// `cargo test --release -p midge-tests --test e2e tls::throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn throughput() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        tls: Some(tls_options(&pki, &cert, false)),
        max_pending: 1 << 30,
        ..Options::default()
    };
    let server = Server::start(opts).await.expect("midge starts");
    let client = || client_options(&pki).subscription_capacity(1 << 20);
    let publisher = connect(&server, client()).await.expect("connect");
    let subscriber = connect(&server, client()).await.expect("connect");
    for (count, size) in [(500_000usize, 128usize), (20_000, 16 * 1024)] {
        let mut sub = subscriber.subscribe("bench").await.expect("sub");
        midge_tests::round_trip(&subscriber).await;
        let started = Instant::now();
        let receiver = tokio::spawn(async move {
            let mut bytes = 0;
            for _ in 0..count {
                match timeout(WAIT, sub.next()).await {
                    Ok(Some(m)) => bytes += m.payload.len(),
                    _ => break,
                }
            }
            bytes
        });
        let payload = Bytes::from(vec![7u8; size]);
        for _ in 0..count {
            publisher
                .publish("bench", payload.clone())
                .await
                .expect("publish");
        }
        publisher.flush().await.expect("flush");
        let bytes = receiver.await.expect("receiver");
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(bytes, count * size, "everything arrived");
        assert_eq!(server.stats().slow_consumers, 0);
        println!(
            "TLS pub/sub {count} x {size} B: {:.0} msgs/s, {:.1} MiB/s",
            count as f64 / secs,
            (count * size) as f64 / secs / (1024.0 * 1024.0)
        );
    }
    server.shutdown().await;
}

/// Rotation the way Kubernetes does it: the certificate files are replaced in place (same
/// paths, so the config file does not change) and the server is told to reload. New
/// connections must see the new certificate; the established one keeps working.
#[tokio::test]
async fn config_reload_rereads_certificates_replaced_in_place() {
    let pki = Pki::new("midge test CA");
    let old = pki.server("server-old");
    let new = pki.server("server-new");
    let live_cert = pki.dir.path().join("live.pem");
    let live_key = pki.dir.path().join("live-key.pem");
    std::fs::copy(&old.cert, &live_cert).expect("copy cert");
    std::fs::copy(&old.key, &live_key).expect("copy key");
    let conf = pki.dir.path().join("midge.conf");
    std::fs::write(
        &conf,
        format!(
            "listen: 127.0.0.1:-1\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
            live_cert.display().to_string(),
            live_key.display().to_string()
        ),
    )
    .expect("write config");
    let opts = Options::from_file(&conf).expect("config parses").options;
    let server = Server::start(opts).await.expect("start");
    assert_eq!(raw_tls_session(&server, &pki).await, old.der);
    let established = connect(&server, client_options(&pki))
        .await
        .expect("connect");

    std::fs::copy(&new.cert, &live_cert).expect("replace cert");
    std::fs::copy(&new.key, &live_key).expect("replace key");
    server.reload().await.expect("reload");
    assert_eq!(
        raw_tls_session(&server, &pki).await,
        new.der,
        "new connections see the replaced certificate"
    );
    let fresh = connect(&server, client_options(&pki))
        .await
        .expect("connect after rotation");
    pub_sub(&fresh, &established, "rotated.by.reload", 50, 1024).await;
    server.shutdown().await;
}

/// One request over `stream` with `Connection: close`; everything the server sent back until
/// it closed (or reset) the connection.
async fn http_exchange<S>(mut stream: S, target: &str) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    // A write may fail when the server has already given up on the connection.
    if stream.write_all(req.as_bytes()).await.is_err() {
        return Vec::new();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match timeout(WAIT, stream.read(&mut buf))
            .await
            .expect("server answers and closes in time")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// `GET target` over HTTPS trusting the test CA: the status code, the JSON body and the
/// certificate the server presented.
async fn https_get(
    addr: std::net::SocketAddr,
    pki: &Pki,
    target: &str,
) -> (u16, serde_json::Value, CertificateDer<'static>) {
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let tls = timeout(WAIT, rustls_client(pki).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("HTTPS handshake");
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("server certificate")
        .into_owned();
    let reply = http_exchange(tls, target).await;
    let text = String::from_utf8(reply).expect("UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let json = serde_json::from_str(body).expect("JSON body");
    (status, json, cert)
}

async fn start_https(tls: TlsOptions) -> Server {
    let opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        https_port: Some(0),
        tls: Some(tls),
        ..Options::default()
    };
    opts.validate().expect("test options are valid");
    Server::start(opts).await.expect("midge starts")
}

#[tokio::test]
async fn https_monitor_serves_the_handlers_with_the_tls_certificate() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let server = start_https(tls_options(&pki, &cert, false)).await;
    assert!(server.monitor_is_https());
    let addr = server.monitor_addr().expect("monitor address");
    assert_ne!(addr.port(), 0);

    let (status, health, presented) = https_get(addr, &pki, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(presented, cert.der);

    let (status, varz, _) = https_get(addr, &pki, "/varz").await;
    assert_eq!(status, 200);
    assert_eq!(varz["https_port"], addr.port());
    assert_eq!(varz["http_port"], 0);
    assert_eq!(varz["server_id"].as_str().map(str::len), Some(56));

    // Plain HTTP on the HTTPS port gets no HTTP answer: the handshake fails and it closes.
    let tcp = TcpStream::connect(addr).await.expect("tcp connect");
    let reply = http_exchange(tcp, "/healthz").await;
    assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");

    // The certificate is read per connection: after a reload, new ones see the new one.
    let rotated = pki.server("rotated");
    server
        .reload_tls(&tls_options(&pki, &rotated, false))
        .expect("reload");
    let (status, _, presented) = https_get(addr, &pki, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(presented, rotated.der);
}

#[tokio::test]
async fn https_monitor_asks_no_client_certificate_even_with_verify() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let server = start_https(tls_options(&pki, &cert, true)).await;
    let addr = server.monitor_addr().expect("monitor address");
    let (status, health, _) = https_get(addr, &pki, "/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
}

#[tokio::test]
async fn https_port_config_errors_name_the_key() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let tls_block = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        cert.cert.display(),
        cert.key.display()
    );
    let load = |name: &str, text: &str| {
        let path = pki.dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        Options::from_file(&path)
    };
    for (name, text) in [
        ("no-tls.conf", "https_port: -1\n".to_string()),
        (
            "no-tls-hostport.conf",
            "https: \"127.0.0.1:0\"\n".to_string(),
        ),
    ] {
        let err = load(name, &text).expect_err("https without tls");
        let err = format!("{err:#}");
        assert!(err.contains("https_port") && err.contains("tls"), "{err}");
    }
    let err = load(
        "both.conf",
        &format!("http_port: 8222\nhttps_port: 8443\n{tls_block}"),
    )
    .expect_err("http and https together");
    let err = format!("{err:#}");
    assert!(
        err.contains("http_port") && err.contains("https_port"),
        "{err}"
    );

    // Read back: the file form, and `to_conf_string` round-trips it.
    let loaded = load(
        "ok.conf",
        &format!("https: \"127.0.0.1:8443\"\n{tls_block}"),
    )
    .expect("https with tls loads");
    assert_eq!(loaded.options.https_port, Some(8443));
    assert_eq!(loaded.options.http_port, None);
    let again = load("again.conf", &loaded.options.to_conf_string()).expect("round trip");
    assert_eq!(again.options.https_port, Some(8443));

    // A program that skips `validate` still gets a clear start-up error.
    let err = Server::start(Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        https_port: Some(0),
        ..Options::default()
    })
    .await
    .expect_err("https without tls does not start");
    assert!(err.to_string().contains("https_port"), "{err}");
}

/// `tls { handshake_first: true }`: a client with async-nats's `tls_first` starts TLS at
/// once and reads INFO encrypted; a plain TCP socket gets no plain-text INFO (the server
/// waits for a ClientHello), and a client that waits for INFO first does not connect.
/// (nats-server 2.9.10 has no handshake_first, so there is no reference run.)
#[tokio::test]
async fn handshake_first_serves_tls_first_clients() {
    let pki = Pki::new("midge test CA");
    let cert = pki.server("server");
    let server = start(TlsOptions {
        handshake_first: true,
        ..tls_options(&pki, &cert, false)
    })
    .await;
    let first = connect(&server, client_options(&pki).tls_first())
        .await
        .expect("TLS-first client connects");
    let other = connect(&server, client_options(&pki).tls_first())
        .await
        .expect("TLS-first client connects");
    assert!(first.server_info().tls_required);
    pub_sub(&first, &other, "first", 100, 1000).await;

    let mut tcp = TcpStream::connect(server.client_addr())
        .await
        .expect("tcp connect");
    let mut buf = [0u8; 64];
    let quiet = timeout(Duration::from_millis(300), tcp.read(&mut buf)).await;
    assert!(
        quiet.is_err(),
        "no plain-text INFO before the handshake: {quiet:?}"
    );

    let waits_for_info = timeout(
        Duration::from_secs(5),
        client_options(&pki)
            .connection_timeout(Duration::from_secs(2))
            .connect(server.client_url()),
    )
    .await
    .expect("attempt ends");
    assert!(
        waits_for_info.is_err(),
        "a client waiting for INFO gets none"
    );
    server.shutdown().await;
}
