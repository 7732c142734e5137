//! Secret rotation reaching a running midge process, the way the Kubernetes operator
//! deploys it: the config file comes from a ConfigMap volume, the certificate, key and an
//! `authorization {}` include from a Secret volume, and the server runs with
//! `config_watch`. Both volumes have the kubelet's layout (a timestamped directory, a
//! `..data` symlink swapped atomically, file symlinks through it), built here in a temporary
//! directory: no kubelet can run here, and the layout is all the broker sees of it.
//!
//! The kubelet updates the two volumes independently, so the ConfigMap (whose content
//! changes with the Secret's digest) may be swapped first: the reload it causes reads the
//! old certificate. The test does exactly that, then swaps the Secret alone, and checks
//! that the same process (no restart) now serves the new certificate to new connections
//! and accepts the new token while refusing the old one.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::{Duration, Instant};

use midge_tests::{ServerKind, TestServer};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::tls::{read_info, rustls_client, Issued, Pki};

const WAIT: Duration = Duration::from_secs(15);

/// Writes `files` into a new version directory of a kubelet-style volume at `dir` and
/// points `..data` at it (a rename over the old link, atomic as the kubelet's), creating
/// the per-file symlinks the first time.
fn publish_volume(dir: &Path, version: &str, files: &[(&str, &[u8])]) {
    let versioned = dir.join(version);
    std::fs::create_dir_all(&versioned).expect("version directory");
    for (name, content) in files {
        std::fs::write(versioned.join(name), content).expect("write volume file");
    }
    let tmp = dir.join("..data_tmp");
    symlink(version, &tmp).expect("..data_tmp");
    std::fs::rename(&tmp, dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).expect("file symlink");
        }
    }
}

fn secret_files(cert: &Issued, token: &str) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("tls.crt", std::fs::read(&cert.cert).expect("certificate")),
        ("tls.key", std::fs::read(&cert.key).expect("key")),
        (
            "users.conf",
            format!("authorization {{\n  token: \"{token}\"\n}}\n").into_bytes(),
        ),
    ]
}

fn as_refs<'a>(files: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
    files.iter().map(|(n, c)| (*n, c.as_slice())).collect()
}

/// The certificate a new TLS connection is served (INFO in plain text, then the handshake).
async fn served_certificate(server: &TestServer, pki: &Pki) -> CertificateDer<'static> {
    let mut tcp = TcpStream::connect(server.addr())
        .await
        .expect("tcp connect");
    let info = read_info(&mut tcp).await;
    assert_eq!(info["tls_required"], true, "{info}");
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let tls = timeout(WAIT, rustls_client(pki).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("server certificate")
        .into_owned()
}

async fn connect_with_token(
    server: &TestServer,
    pki: &Pki,
    token: &str,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    timeout(
        WAIT,
        async_nats::ConnectOptions::with_token(token.to_string())
            .require_tls(true)
            .add_root_certificates(pki.ca_file())
            .connect(format!("tls://127.0.0.1:{}", server.port())),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "connect with token {token} finished in time:\n{}",
            server.log_text()
        )
    })
}

/// Waits until `count` reloads are logged.
async fn wait_for_reloads(server: &TestServer, count: usize) {
    let until = Instant::now() + WAIT;
    while server
        .log_text()
        .matches("Reloaded server configuration")
        .count()
        < count
    {
        assert!(
            Instant::now() < until,
            "{count} reload(s) not logged within {WAIT:?}:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rotated_secret_files_reach_a_running_server_without_restart() {
    let pki = Pki::new("rotation CA");
    let (old_cert, new_cert) = (pki.server("server-v1"), pki.server("server-v2"));
    assert_ne!(old_cert.der, new_cert.der);

    let root = tempfile::tempdir().expect("tempdir");
    let (config_dir, secret_dir) = (root.path().join("config"), root.path().join("secret"));
    let config = |digest: &str| {
        format!(
            "# secret digest: {digest}\ntls {{\n  cert_file: \"{0}/tls.crt\"\n  key_file: \"{0}/tls.key\"\n}}\ninclude \"../secret/users.conf\"\nconfig_watch: true\n",
            secret_dir.display()
        )
    };
    publish_volume(
        &secret_dir,
        "..v1",
        &as_refs(&secret_files(&old_cert, "t1")),
    );
    publish_volume(
        &config_dir,
        "..v1",
        &[("midge.conf", config("one").as_bytes())],
    );
    let server = TestServer::builder(ServerKind::Midge)
        .arg("-c")
        .arg(config_dir.join("midge.conf").to_str().expect("utf-8"))
        .start()
        .await;
    let pid = server.pid();

    assert_eq!(served_certificate(&server, &pki).await, old_cert.der);
    connect_with_token(&server, &pki, "t1")
        .await
        .expect("the first token is accepted");
    connect_with_token(&server, &pki, "t2")
        .await
        .expect_err("the second token is not valid yet");

    // The ConfigMap moves first (the operator wrote the new digest into it); the Secret
    // volume still holds the old files, so this reload loads the old certificate again.
    publish_volume(
        &config_dir,
        "..v2",
        &[("midge.conf", config("two").as_bytes())],
    );
    wait_for_reloads(&server, 1).await;
    assert_eq!(served_certificate(&server, &pki).await, old_cert.der);

    // Then the Secret volume: the config file is unchanged, the watcher sees the files it
    // references change and reloads again.
    publish_volume(
        &secret_dir,
        "..v2",
        &as_refs(&secret_files(&new_cert, "t2")),
    );
    wait_for_reloads(&server, 2).await;
    assert_eq!(served_certificate(&server, &pki).await, new_cert.der);
    connect_with_token(&server, &pki, "t2")
        .await
        .expect("the rotated token is accepted");
    let refused = connect_with_token(&server, &pki, "t1")
        .await
        .expect_err("the old token is refused");
    assert!(
        refused.to_string().to_lowercase().contains("authorization"),
        "{refused}"
    );
    assert_eq!(server.pid(), pid, "the same process");
    let log = server.log_text();
    assert!(log.contains("tls.crt"), "the watcher names the file: {log}");
    assert_eq!(log.matches("Server is ready").count(), 1, "{log}");
}
