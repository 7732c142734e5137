//! Client TLS with rustls (ring provider): building the server config from [`TlsOptions`],
//! and driving one synchronous `rustls::ServerConnection` per client by hand.
//!
//! Why by hand and not with tokio-rustls: a connection's socket lives in `ClientShared` and is
//! used through `&self` (`readable()/try_read`, `writable()/try_write`) so that a publisher can
//! write into a receiver's socket right after its own read, and the receiver's writer task only
//! handles what would block. A split tokio-rustls stream cannot be shared like that. Instead
//! the rustls state machine sits in a mutex next to the socket: reads pull ciphertext with
//! `read_tls` through [`SocketReader`] (a `try_read` adapter, `WouldBlock` passes through),
//! writes push plaintext into rustls and records out with `write_tls` through
//! [`SocketWriter`]. The lock is never held across an `.await`.
//!
//! As nats-server: the server sends `INFO` in plain text (with `tls_required`), then the client
//! starts the handshake; the reader drives it before the protocol starts ([`handshake`]).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use tokio::net::TcpStream;

use crate::options::TlsOptions;

/// A TLS configuration that cannot be used. Each variant names the file at fault. The IO
/// error is part of the message rather than a chained source, so printing the chain (as the
/// binary does) does not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate file '{}': {error}", path.display())]
    ReadCert { path: PathBuf, error: io::Error },
    #[error("certificate file '{}': {reason}", path.display())]
    BadCert { path: PathBuf, reason: String },
    #[error("cannot read key file '{}': {error}", path.display())]
    ReadKey { path: PathBuf, error: io::Error },
    #[error("key file '{}': {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    #[error("cannot read CA file '{}': {error}", path.display())]
    ReadCa { path: PathBuf, error: io::Error },
    #[error("CA file '{}': {reason}", path.display())]
    BadCa { path: PathBuf, reason: String },
    #[error("certificate '{}' and key '{}' cannot be used together: {reason}", cert.display(), key.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("verify needs ca_file: the CA that client certificates must chain to")]
    VerifyWithoutCa,
    #[error("cluster tls needs ca_file: routes verify each other's certificates both ways")]
    RouteWithoutCa,
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Which option of the `tls {}` block an error is about, so a config file error can point at
/// the line that named the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsErrorSource {
    CertFile,
    KeyFile,
    CaFile,
    Verify,
    Other,
}

impl TlsError {
    pub fn source_option(&self) -> TlsErrorSource {
        match self {
            TlsError::ReadCert { .. } | TlsError::BadCert { .. } => TlsErrorSource::CertFile,
            TlsError::ReadKey { .. } | TlsError::BadKey { .. } | TlsError::KeyMismatch { .. } => {
                TlsErrorSource::KeyFile
            }
            TlsError::ReadCa { .. } | TlsError::BadCa { .. } => TlsErrorSource::CaFile,
            TlsError::VerifyWithoutCa => TlsErrorSource::Verify,
            TlsError::RouteWithoutCa | TlsError::Config(_) => TlsErrorSource::Other,
        }
    }
}

/// Builds the rustls server config for client connections: reads the certificate chain, the
/// private key and (with `verify`) the CA that client certificates must chain to.
pub fn load(opts: &TlsOptions) -> Result<Arc<ServerConfig>, TlsError> {
    load_both(opts).map(|(clients, _)| clients)
}

/// The client config and the HTTPS monitoring one, from one read of the files. As
/// nats-server, the monitor presents the same certificate but never asks for a client
/// certificate, so probes and scrapers work with `verify` on.
fn load_both(opts: &TlsOptions) -> Result<(Arc<ServerConfig>, Arc<ServerConfig>), TlsError> {
    let certs = read_certs(&opts.cert_file)?;
    let key = read_key(&opts.key_file)?;
    // The CA file is read even without `verify`, so a broken path is reported at start-up
    // rather than on the day someone turns verification on.
    let roots = match &opts.ca_file {
        Some(path) => Some(read_roots(path)?),
        None => None,
    };
    // An explicit provider: the process-wide default depends on which rustls features the
    // whole binary enables, which an embedding program controls, not us.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))
    };
    let mismatch = |e: rustls::Error| TlsError::KeyMismatch {
        cert: opts.cert_file.clone(),
        key: opts.key_file.clone(),
        reason: e.to_string(),
    };
    let clients = if opts.verify {
        let (Some(roots), Some(ca)) = (roots, &opts.ca_file) else {
            return Err(TlsError::VerifyWithoutCa);
        };
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::BadCa {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
        builder()?.with_client_cert_verifier(verifier)
    } else {
        builder()?.with_no_client_auth()
    };
    let monitor = builder()?
        .with_no_client_auth()
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(mismatch)?;
    let clients = clients.with_single_cert(certs, key).map_err(mismatch)?;
    Ok((Arc::new(clients), Arc::new(monitor)))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|error| TlsError::ReadCert {
        path: path.to_path_buf(),
        error,
    })?;
    let bad = |reason: String| TlsError::BadCert {
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|error| TlsError::ReadKey {
        path: path.to_path_buf(),
        error,
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::BadKey {
        path: path.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key in it (PKCS#8, PKCS#1 or SEC1)".into()
            }
            e => format!("invalid PEM: {e}"),
        },
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|error| TlsError::ReadCa {
        path: path.to_path_buf(),
        error,
    })?;
    let bad = |reason: String| TlsError::BadCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(format!("invalid PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(roots)
}

/// What new client connections use; a reload swaps the whole value.
#[derive(Debug, Clone)]
pub(crate) struct TlsSettings {
    pub config: Arc<ServerConfig>,
    /// For the HTTPS monitor (`https_port`): same certificate, no client certificate asked.
    pub monitor_config: Arc<ServerConfig>,
    pub verify: bool,
    pub timeout: Duration,
    /// A client that does not start a handshake stays in plain text (`allow_non_tls`).
    pub allow_non_tls: bool,
    /// TLS before INFO (`handshake_first`).
    pub handshake_first: bool,
    /// Client certificates whose key is not listed are refused (`pinned_certs`).
    pub pinned: Option<Arc<std::collections::BTreeSet<String>>>,
}

impl TlsSettings {
    pub fn load(opts: &TlsOptions, allow_non_tls: bool) -> Result<Self, TlsError> {
        let (config, monitor_config) = load_both(opts)?;
        Ok(TlsSettings {
            config,
            monitor_config,
            verify: opts.verify,
            timeout: opts.timeout,
            allow_non_tls,
            handshake_first: opts.handshake_first,
            pinned: opts.pinned_certs.clone().map(Arc::new),
        })
    }
}

/// What new route connections use (`cluster { tls {} }`); a reload swaps the whole value.
/// As nats-server, routes always authenticate both ways: the accepting side requires a
/// certificate chaining to `ca_file`, and the dialling side verifies the peer's against it.
#[derive(Debug, Clone)]
pub(crate) struct RouteTls {
    pub accept: Arc<ServerConfig>,
    pub dial: Arc<ClientConfig>,
    pub timeout: Duration,
    pub pinned: Option<Arc<std::collections::BTreeSet<String>>>,
}

impl RouteTls {
    pub fn load(opts: &TlsOptions) -> Result<Self, TlsError> {
        let Some(ca) = &opts.ca_file else {
            return Err(TlsError::RouteWithoutCa);
        };
        let verified = TlsOptions {
            verify: true,
            ..opts.clone()
        };
        Ok(RouteTls {
            accept: load(&verified)?,
            dial: client_config(ca, Some((&opts.cert_file, &opts.key_file)))?,
            timeout: opts.timeout,
            pinned: opts.pinned_certs.clone().map(Arc::new),
        })
    }
}

/// The SNI name and verified identity a dialled route must have: its URL's host. For an
/// address (gossiped routes are dialled by IP), the host name of a configured route
/// instead when there is one, as nats-server does: certificates usually name the
/// cluster's DNS names, not pod addresses.
pub(crate) fn route_server_name(
    host: &str,
    configured: &[String],
) -> Result<rustls::pki_types::ServerName<'static>, String> {
    let name = if host.parse::<std::net::IpAddr>().is_ok() {
        configured
            .iter()
            .filter_map(|r| crate::options::RouteUrl::parse(r).ok())
            .map(|u| u.host)
            .find(|h| h.parse::<std::net::IpAddr>().is_err())
            .unwrap_or_else(|| host.to_string())
    } else {
        host.to_string()
    };
    rustls::pki_types::ServerName::try_from(name.clone())
        .map_err(|e| format!("bad server name {name}: {e}"))
}

/// Lower-case hex SHA-256 of a certificate's SubjectPublicKeyInfo DER: the key nats-server's
/// `pinned_certs` lists (`openssl x509 -noout -pubkey | openssl pkey -pubin -outform DER |
/// sha256sum`). `None` when the certificate does not parse.
pub(crate) fn spki_sha256(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, parsed.public_key().raw);
    Some(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether a peer with leaf certificate `peer` may connect under `pinned_certs` (`None`:
/// no pinning). Without a certificate it may not.
pub(crate) fn pinned_ok(
    pinned: Option<&std::collections::BTreeSet<String>>,
    peer: Option<&[u8]>,
) -> bool {
    let Some(pinned) = pinned else {
        return true;
    };
    peer.and_then(spki_sha256)
        .is_some_and(|key| pinned.contains(&key))
}

/// `io::Read` over the shared non-blocking socket: `WouldBlock` passes through to rustls's
/// caller, which then waits for readiness.
struct SocketReader<'a>(&'a TcpStream);

impl Read for SocketReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `io::Write` over the shared non-blocking socket (see [`SocketReader`]).
struct SocketWriter<'a>(&'a TcpStream);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // rustls hands over several records at once; one syscall for all of them.
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The client's first byte does not start a TLS handshake record: it speaks plain NATS.
    #[error("client is not using TLS")]
    NotTls,
    #[error("connection closed during the TLS handshake")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Tls(#[from] rustls::Error),
}

/// TLS record type of a handshake message: the first byte of every ClientHello.
const HANDSHAKE_RECORD: u8 = 0x16;

/// How a connection goes on after INFO.
#[derive(Debug)]
pub(crate) enum Upgrade {
    Tls(Box<ServerConnection>),
    /// The client spoke plain NATS and `allow_non_tls` let it; its first bytes were only
    /// peeked at, so the reader still finds them on the socket.
    Plain,
}

/// Sends `info` in plain text, then performs the server side of the TLS handshake. `started`
/// becomes true once the client has sent its first byte (a timeout before that means the
/// client is waiting for something else, and gets a plain-text `-ERR`). With `allow_plain`,
/// a first byte that does not start a handshake record is a plain client, as in nats-server.
pub(crate) async fn handshake(
    stream: &TcpStream,
    config: Arc<ServerConfig>,
    info: &[u8],
    allow_plain: bool,
    started: &mut bool,
) -> Result<Upgrade, HandshakeError> {
    write_all_plain(stream, info).await?;
    let mut peek = [0u8; 1];
    if stream.peek(&mut peek).await? == 0 {
        return Err(HandshakeError::Closed);
    }
    *started = true;
    if peek[0] != HANDSHAKE_RECORD {
        return if allow_plain {
            Ok(Upgrade::Plain)
        } else {
            Err(HandshakeError::NotTls)
        };
    }
    let mut conn = ServerConnection::new(config)?;
    loop {
        // Send what rustls produced first (ServerHello and friends, session tickets, alerts).
        while conn.wants_write() {
            match conn.write_tls(&mut SocketWriter(stream)) {
                Ok(_) => {}
                Err(e) if would_block(&e) => stream.writable().await?,
                Err(e) => return Err(e.into()),
            }
        }
        if !conn.is_handshaking() {
            return Ok(Upgrade::Tls(Box::new(conn)));
        }
        stream.readable().await?;
        match conn.read_tls(&mut SocketReader(stream)) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) if would_block(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = conn.process_new_packets() {
            // rustls queued an alert saying why; the client deserves to see it.
            let _ = conn.write_tls(&mut SocketWriter(stream));
            return Err(e.into());
        }
    }
}

/// The client side of a TLS handshake (a leaf node dialling its hub), after the server's
/// plain-text INFO: drives `conn` until it is established.
pub(crate) async fn client_handshake(
    stream: &TcpStream,
    config: Arc<ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
) -> Result<Box<ClientConnection>, HandshakeError> {
    let mut conn = Box::new(ClientConnection::new(config, name)?);
    loop {
        while conn.wants_write() {
            match conn.write_tls(&mut SocketWriter(stream)) {
                Ok(_) => {}
                Err(e) if would_block(&e) => stream.writable().await?,
                Err(e) => return Err(e.into()),
            }
        }
        if !conn.is_handshaking() {
            return Ok(conn);
        }
        stream.readable().await?;
        match conn.read_tls(&mut SocketReader(stream)) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {}
            Err(e) if would_block(&e) => continue,
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = conn.process_new_packets() {
            let _ = conn.write_tls(&mut SocketWriter(stream));
            return Err(e.into());
        }
    }
}

/// A client TLS config: the server's certificate must chain to `ca_file` (required: no
/// system roots are bundled), and `cert_file`/`key_file`, when given, are presented.
pub(crate) fn client_config(
    ca_file: &Path,
    cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = read_roots(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match cert {
        Some((cert_file, key_file)) => {
            let certs = read_certs(cert_file)?;
            let key = read_key(key_file)?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::KeyMismatch {
                    cert: cert_file.to_path_buf(),
                    key: key_file.to_path_buf(),
                    reason: e.to_string(),
                })?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

async fn write_all_plain(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if would_block(&e) => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One established TLS session, shared by the connection's reader, its writer and publishers
/// writing to it directly.
#[derive(Debug)]
pub(crate) struct Session(Mutex<rustls::Connection>);

/// Result of [`Session::read`].
pub(crate) struct ReadOutcome {
    pub result: io::Result<usize>,
    /// More plaintext may already be decrypted: read again before waiting for the socket.
    pub more: bool,
    /// Reading made rustls queue records (an alert, a key update): the writer must send them.
    pub wants_write: bool,
}

impl Session {
    pub fn new(conn: impl Into<rustls::Connection>) -> Self {
        Session(Mutex::new(conn.into()))
    }

    /// Moves decrypted bytes into `dst`: what rustls already holds, else what one read of
    /// ciphertext from the socket yields. `Ok(0)` is the end of the stream; `WouldBlock`
    /// means wait for the socket.
    pub fn read(&self, stream: &TcpStream, dst: &mut [u8]) -> ReadOutcome {
        let mut conn = self.0.lock();
        let room = dst.len();
        let outcome = |result: io::Result<usize>, conn: &rustls::Connection| ReadOutcome {
            // A full `dst` may have left plaintext behind; a short read drained it.
            more: matches!(result, Ok(n) if n > 0 && n == room),
            wants_write: conn.wants_write(),
            result,
        };
        match conn.reader().read(dst) {
            Err(e) if would_block(&e) => {}
            result => return outcome(result, &conn),
        }
        // Plaintext is drained, so rustls has room: read ciphertext.
        match conn.read_tls(&mut SocketReader(stream)) {
            Ok(0) => return outcome(Ok(0), &conn),
            Ok(_) => {}
            Err(e) => return outcome(Err(e), &conn),
        }
        if let Err(e) = conn.process_new_packets() {
            // The alert rustls queued is sent by the writer; the connection then closes.
            return outcome(Err(io::Error::new(io::ErrorKind::InvalidData, e)), &conn);
        }
        // `WouldBlock` here means a record is still incomplete: wait for more ciphertext.
        let result = conn.reader().read(dst);
        outcome(result, &conn)
    }

    /// The peer's leaf certificate (DER), when it presented one.
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        let conn = self.0.lock();
        conn.peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
    }

    /// True when encrypted records wait to be sent.
    pub fn wants_write(&self) -> bool {
        self.0.lock().wants_write()
    }

    /// Encrypts `data` and sends it, waiting for the socket as needed. With empty `data` it
    /// sends what rustls already has queued.
    pub async fn write_all(&self, stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
        loop {
            {
                let mut conn = self.0.lock();
                loop {
                    // rustls takes plaintext up to its buffer limit (64 KiB), so a large batch
                    // is encrypted in slices as the socket drains instead of all at once.
                    let n = if data.is_empty() {
                        0
                    } else {
                        conn.writer().write(data)?
                    };
                    data = &data[n..];
                    if !conn.wants_write() {
                        if data.is_empty() {
                            return Ok(());
                        }
                        if n == 0 {
                            // Nothing accepted and nothing to send: the session is closed.
                            return Err(io::ErrorKind::WriteZero.into());
                        }
                        continue;
                    }
                    match conn.write_tls(&mut SocketWriter(stream)) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if would_block(&e) => break,
                        Err(e) => return Err(e),
                    }
                }
            }
            stream.writable().await?;
        }
    }

    /// Encrypts and sends as much of `data` as can go without waiting. `None` when someone
    /// else holds the session (the writer then does it). Otherwise the number of plaintext
    /// bytes rustls took, and whether everything, records included, went out.
    pub fn try_write(&self, stream: &TcpStream, data: &[u8]) -> Option<(usize, bool)> {
        let mut conn = self.0.try_lock()?;
        let mut taken = 0;
        loop {
            if taken < data.len() {
                taken += conn.writer().write(&data[taken..]).unwrap_or(0);
            }
            if !conn.wants_write() {
                return Some((taken, taken == data.len()));
            }
            match conn.write_tls(&mut SocketWriter(stream)) {
                Ok(n) if n > 0 => {}
                _ => return Some((taken, false)),
            }
        }
    }

    /// Sends close_notify (and whatever is still queued), waiting for the socket at most
    /// `limit`: a client that reads nothing must not hold the connection open.
    pub async fn close(&self, stream: &TcpStream, limit: Duration) {
        self.0.lock().send_close_notify();
        let _ = tokio::time::timeout(limit, self.write_all(stream, &[])).await;
    }
}

/// Certificates for unit tests: a CA, a server certificate and key signed by it, and a second
/// key that matches nothing, as PEM files in a temporary directory.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_pki {
    use std::path::PathBuf;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    pub struct Files {
        pub dir: tempfile::TempDir,
        pub ca: PathBuf,
        pub cert: PathBuf,
        pub key: PathBuf,
        pub other_key: PathBuf,
    }

    pub fn generate() -> Files {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("cert.pem"), cert.pem()).unwrap();
        std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(
            path("other-key.pem"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        Files {
            ca: path("ca.pem"),
            cert: path("cert.pem"),
            key: path("key.pem"),
            other_key: path("other-key.pem"),
            dir,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn load_reports_each_file_problem() {
        let pki = test_pki::generate();
        let ok = TlsOptions {
            ca_file: Some(pki.ca.clone()),
            verify: true,
            ..TlsOptions::new(&pki.cert, &pki.key)
        };
        load(&ok).unwrap();
        load(&TlsOptions::new(&pki.cert, &pki.key)).unwrap();

        let missing = pki.dir.path().join("missing.pem");
        let cases = [
            (
                TlsOptions::new(&missing, &pki.key),
                TlsErrorSource::CertFile,
            ),
            (
                TlsOptions::new(&pki.key, &pki.key),
                TlsErrorSource::CertFile,
            ),
            (
                TlsOptions::new(&pki.cert, &missing),
                TlsErrorSource::KeyFile,
            ),
            (
                TlsOptions::new(&pki.cert, &pki.cert),
                TlsErrorSource::KeyFile,
            ),
            (
                TlsOptions::new(&pki.cert, &pki.other_key),
                TlsErrorSource::KeyFile,
            ),
            (
                TlsOptions {
                    ca_file: Some(missing.clone()),
                    ..TlsOptions::new(&pki.cert, &pki.key)
                },
                TlsErrorSource::CaFile,
            ),
            (
                TlsOptions {
                    ca_file: Some(pki.key.clone()),
                    ..TlsOptions::new(&pki.cert, &pki.key)
                },
                TlsErrorSource::CaFile,
            ),
            (
                TlsOptions {
                    verify: true,
                    ..TlsOptions::new(&pki.cert, &pki.key)
                },
                TlsErrorSource::Verify,
            ),
        ];
        for (opts, source) in cases {
            let e = load(&opts).unwrap_err();
            assert_eq!(e.source_option(), source, "{e}");
        }
        let e = load(&TlsOptions::new(&pki.cert, &pki.other_key)).unwrap_err();
        assert!(e.to_string().contains("other-key.pem"), "{e}");
        assert!(e.to_string().contains("cert.pem"), "{e}");
    }
}
