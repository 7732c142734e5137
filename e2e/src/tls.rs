//! Client TLS for the scenarios: a test CA and server certificates (rcgen), the client
//! configuration that trusts them, and a probe that reads which certificate a server
//! serves.
//!
//! Clients outside the cluster dial a server by an address the driver hands out (a
//! container's IP, a port-forward on 127.0.0.1), not by a name in the certificate, so the
//! client configuration verifies the chain against the CA and the certificate against one
//! fixed name, the client Service's, as an application inside the cluster would.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context as _};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::AsyncReadExt;

/// An INFO line longer than this is not a server's.
const MAX_INFO: usize = 64 * 1024;

/// A CA made for one test run; its key signs the server certificates.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

/// A server certificate and its key, PEM-encoded, with the serial it carries (hex).
#[derive(Clone)]
pub struct ServerCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
}

impl std::fmt::Debug for ServerCert {
    // The key stays out of failure messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// Makes `params` valid from an hour ago (a clock a little behind still accepts it) until
/// `until`.
fn validity(params: &mut CertificateParams, until: SystemTime) {
    let since_epoch = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let now = since_epoch(SystemTime::now());
    params.not_before = epoch + now.saturating_sub(Duration::from_secs(3600));
    params.not_after = epoch + since_epoch(until);
}

impl TestCa {
    pub fn new(common_name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity(
            &mut params,
            SystemTime::now() + Duration::from_secs(30 * 24 * 3600),
        );
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            cert_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A server certificate for `names` with serial `serial`, valid from an hour ago for
    /// `valid_for`, with a key of its own.
    pub fn issue(
        &self,
        names: &[String],
        serial: u64,
        valid_for: Duration,
    ) -> anyhow::Result<ServerCert> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let first = names.first().context("a certificate needs a name")?;
        params.distinguished_name.push(DnType::CommonName, first);
        params.subject_alt_names = names
            .iter()
            .map(|n| Ok(SanType::DnsName(n.clone().try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.serial_number = Some(SerialNumber::from(serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let not_after = SystemTime::now() + valid_for;
        validity(&mut params, not_after);
        let cert_pem = params.signed_by(&key, &self.issuer)?.pem();
        let der = pem_der(&cert_pem)?;
        Ok(ServerCert {
            serial: serial_of(&der)?,
            not_after: not_after
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }
}

fn pem_der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).context("not a PEM certificate")
}

/// A certificate's serial number, in hex as x509-parser prints it.
pub fn serial_of(der: &[u8]) -> anyhow::Result<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).context("not an X.509 certificate")?;
    Ok(cert.raw_serial_as_string())
}

/// Verifies the chain as WebPKI does, and the certificate against `name` instead of the
/// address dialled.
#[derive(Debug)]
struct NameVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

impl NameVerifier {
    fn new(ca_pems: &[&str], name: &str) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for pem in ca_pems {
            roots.add(pem_der(pem)?)?;
        }
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()?;
        Ok(Self {
            inner,
            name: ServerName::try_from(name.to_string())?,
        })
    }
}

/// A client configuration that trusts the CAs in `ca_pems` and expects certificates for
/// `name`.
pub fn client_config(ca_pems: &[&str], name: &str) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = NameVerifier::new(ca_pems, name)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// Connects to the NATS server at `url` (`nats://host:port`), reads its INFO (which must
/// require TLS), completes the TLS handshake with `config` and returns the serial of the
/// certificate the server presented. Fails if the handshake does (a certificate `config`
/// does not trust).
pub async fn served_serial(
    url: &str,
    config: Arc<rustls::ClientConfig>,
    within: Duration,
) -> anyhow::Result<String> {
    let address = url
        .strip_prefix("nats://")
        .with_context(|| format!("{url} is not a nats:// URL"))?
        .to_string();
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(&address).await?;
        // INFO comes in plain text first; the handshake follows it. Byte by byte, so that
        // nothing of the handshake is read here.
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            ensure!(
                line.len() < MAX_INFO,
                "no INFO line within {MAX_INFO} bytes"
            );
            line.push(tcp.read_u8().await?);
        }
        let text = String::from_utf8_lossy(&line);
        let info: serde_json::Value = serde_json::from_str(
            text.trim()
                .strip_prefix("INFO ")
                .with_context(|| format!("the server sent {text:?} before INFO"))?,
        )?;
        ensure!(
            info["tls_required"] == true,
            "the server does not require TLS: {info}"
        );
        let name = ServerName::try_from("client.invalid")?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let (_, session) = tls.get_ref();
        let leaf = session
            .peer_certificates()
            .and_then(|c| c.first())
            .context("the server presented no certificate")?;
        serial_of(leaf)
    };
    tokio::time::timeout(within, exchange)
        .await
        .with_context(|| format!("TLS probe of {url} timed out after {within:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration accepts a certificate of the CA for the expected name, whatever
    /// was dialled, and nothing else.
    #[test]
    fn verifier_pins_the_name_and_the_ca() -> anyhow::Result<()> {
        let ca = TestCa::new("test CA")?;
        let other = TestCa::new("other CA")?;
        let names = vec!["svc.ns.svc".to_string()];
        let good = ca.issue(&names, 7, Duration::from_secs(3600))?;
        assert_eq!(good.serial, "07");
        let wrong_name = ca.issue(&["else.ns.svc".to_string()], 8, Duration::from_secs(3600))?;
        let wrong_ca = other.issue(&names, 9, Duration::from_secs(3600))?;
        let verifier = NameVerifier::new(&[&ca.cert_pem], "svc.ns.svc")?;
        let dialled = ServerName::try_from("10.0.0.1")?;
        let check = |cert: &ServerCert| -> anyhow::Result<()> {
            let der = pem_der(&cert.cert_pem)?;
            verifier.verify_server_cert(&der, &[], &dialled, &[], UnixTime::now())?;
            Ok(())
        };
        check(&good)?;
        assert!(check(&wrong_name).is_err());
        assert!(check(&wrong_ca).is_err());
        Ok(())
    }
}
