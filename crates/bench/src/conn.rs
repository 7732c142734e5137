//! One client connection over blocking std::net: handshake, batched writes, and reads fed
//! to a [`Scanner`]. Server PINGs are answered here so that scenarios never see them.
//!
//! The bytes travel over a [`Transport`]: plain TCP, TLS (started after the plain-text INFO,
//! as NATS clients do) or WebSocket (optionally over TLS). Each read or write call costs one
//! match on the transport; the plain path is a `TcpStream` call behind it.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::args::Args;
use crate::scan::{Event, Scanner};
use crate::ws::{is_timeout, WsStream};

pub const CONNECT: &[u8] = b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"rust\",\"name\":\"midge-bench\",\"protocol\":1}\r\n";

/// Reads block at most this long so that every loop can check its deadline.
const READ_POLL: Duration = Duration::from_millis(100);

const READ_BUF: usize = 256 * 1024;

/// Longest INFO line read before a TLS upgrade.
const MAX_INFO: usize = 64 * 1024;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Where and how to connect: `host:port` plus the transport options.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port`, for connecting and for the WebSocket `Host` header.
    pub addr: String,
    pub tls: Option<TlsSetup>,
    pub ws: bool,
}

#[derive(Debug, Clone)]
pub struct TlsSetup {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl Endpoint {
    /// The endpoint for `url` (`nats://`, `tls://`, `ws://`, `wss://` or a bare `host[:port]`)
    /// with the transport options of `args`. `tls://` and `wss://` imply `--tls`, `ws://`
    /// and `wss://` imply `--ws`.
    pub fn new(url: &str, args: &Args) -> Result<Self> {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => (String::from("nats"), url),
        };
        let (scheme_tls, scheme_ws) = match scheme.as_str() {
            "nats" => (false, false),
            "tls" => (true, false),
            "ws" => (false, true),
            "wss" => (true, true),
            _ => bail!("unsupported URL scheme in {url} (nats, tls, ws or wss)"),
        };
        let ws = args.ws || scheme_ws;
        let tls = args.tls || scheme_tls;
        let rest = rest
            .rsplit('@')
            .next()
            .unwrap_or(rest)
            .trim_end_matches('/');
        if rest.is_empty() {
            bail!("no host in URL {url}");
        }
        let default_port = match (ws, tls) {
            (false, _) => 4222,
            (true, false) => 80,
            (true, true) => 443,
        };
        let (host, addr) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => {
                p.parse::<u16>()
                    .with_context(|| format!("bad port in URL {url}"))?;
                (h.to_string(), rest.to_string())
            }
            _ => (rest.to_string(), format!("{rest}:{default_port}")),
        };
        let tls = if tls {
            let name = match &args.tls_server_name {
                Some(n) => n.clone(),
                None => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
            };
            Some(TlsSetup::new(args, &name)?)
        } else {
            None
        };
        Ok(Endpoint { addr, tls, ws })
    }

    pub fn is_plain(&self) -> bool {
        self.tls.is_none() && !self.ws
    }
}

impl TlsSetup {
    fn new(args: &Args, server_name: &str) -> Result<Self> {
        let ca = args.tls_ca.as_ref().context(
            "--tls needs --tls-ca <PEM file> (the CA that signed the server certificate)",
        )?;
        let mut roots = rustls::RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            let cert = cert.with_context(|| format!("parsing {}", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding a certificate of {}", ca.display()))?;
            found += 1;
        }
        if found == 0 {
            bail!("no certificates in {}", ca.display());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = ServerName::try_from(server_name.to_string())
            .with_context(|| format!("bad TLS server name {server_name:?}"))?;
        Ok(TlsSetup {
            config: Arc::new(config),
            server_name,
        })
    }

    /// Runs the handshake over `sock` (which has a short read timeout), retrying timed-out
    /// reads until `deadline`.
    fn handshake(&self, mut sock: TcpStream, deadline: Instant) -> Result<TlsStream> {
        let mut conn =
            rustls::ClientConnection::new(Arc::clone(&self.config), self.server_name.clone())
                .context("starting TLS")?;
        while conn.is_handshaking() {
            check_deadline(deadline, "during the TLS handshake")?;
            match conn.complete_io(&mut sock) {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e).context("TLS handshake"),
            }
        }
        Ok(rustls::StreamOwned::new(conn, sock))
    }
}

/// The byte stream under a [`Conn`].
#[derive(Debug)]
pub enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
    Ws(Box<WsStream<Inner>>),
}

/// What a WebSocket runs over.
#[derive(Debug)]
pub enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Read for Inner {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Inner::Plain(s) => s.read(buf),
            Inner::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Inner {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Inner::Plain(s) => s.write(buf),
            Inner::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Inner::Plain(s) => s.flush(),
            Inner::Tls(s) => s.flush(),
        }
    }
}

impl Transport {
    /// Connects to `ep`: TCP, then the TLS handshake after INFO (NATS) or before the
    /// upgrade (WebSocket), then the WebSocket upgrade.
    pub fn connect(ep: &Endpoint, deadline: Instant) -> Result<Self> {
        let sock = dial(&ep.addr, deadline)?;
        if ep.ws {
            let inner = match &ep.tls {
                None => Inner::Plain(sock),
                Some(tls) => Inner::Tls(Box::new(tls.handshake(sock, deadline)?)),
            };
            return Ok(Transport::Ws(Box::new(WsStream::upgrade(
                inner, &ep.addr, deadline,
            )?)));
        }
        match &ep.tls {
            None => Ok(Transport::Plain(sock)),
            Some(tls) => {
                let mut sock = sock;
                read_info_line(&mut sock, deadline)?;
                Ok(Transport::Tls(Box::new(tls.handshake(sock, deadline)?)))
            }
        }
    }

    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
            Transport::Ws(s) => s.read(buf),
        }
    }

    /// Writes all of `data` (over WebSocket: as one frame).
    #[inline]
    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Transport::Plain(s) => s.write_all(data),
            Transport::Tls(s) => s.write_all(data),
            Transport::Ws(s) => s.write_frame(data),
        }
    }
}

/// Reads the server's plain-text INFO line byte batch by byte batch. The server sends
/// nothing more before the client's TLS hello, so nothing past the line is consumed.
fn read_info_line(sock: &mut TcpStream, deadline: Instant) -> Result<()> {
    let mut line = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        check_deadline(deadline, "waiting for INFO")?;
        let n = match sock.read(&mut buf) {
            Ok(0) => bail!("server closed the connection before INFO"),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e).context("reading INFO"),
        };
        line.extend_from_slice(&buf[..n]);
        if let Some(i) = memchr::memmem::find(&line, b"\r\n") {
            if !line.starts_with(b"INFO ") {
                bail!(
                    "expected INFO, got {:?}",
                    String::from_utf8_lossy(&line[..i])
                );
            }
            if i + 2 != line.len() {
                bail!("server sent more than INFO before the TLS handshake (handshake_first?)");
            }
            return Ok(());
        }
        if line.len() > MAX_INFO {
            bail!("INFO line over {MAX_INFO} bytes");
        }
    }
}

/// Opens a TCP connection, failing after `deadline`.
pub fn dial(addr: &str, deadline: Instant) -> Result<TcpStream> {
    let sock = addr
        .to_socket_addrs()
        .with_context(|| format!("resolving {addr}"))?
        .next()
        .with_context(|| format!("{addr} resolves to nothing"))?;
    let left = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .context("deadline passed before connecting")?;
    let stream = TcpStream::connect_timeout(&sock, left).map_err(|e| {
        // EMFILE: too many open files.
        let hint = if e.raw_os_error() == Some(24) {
            " (raise `ulimit -n`)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("connecting to {addr}{hint}"))
    })?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_POLL))?;
    Ok(stream)
}

#[derive(Debug)]
pub struct Conn {
    stream: Transport,
    scanner: Scanner,
    buf: Vec<u8>,
    pongs: u64,
}

impl Conn {
    /// Connects, sends CONNECT plus `setup` (e.g. SUB lines), and waits for the PONG
    /// that proves the server processed them.
    pub fn open(ep: &Endpoint, setup: &[u8], scanner: Scanner, deadline: Instant) -> Result<Self> {
        Self::open_as(ep, None, setup, scanner, deadline)
    }

    /// [`Conn::open`] logged in as `user` (the password is the user name).
    pub fn open_as(
        ep: &Endpoint,
        user: Option<&str>,
        setup: &[u8],
        scanner: Scanner,
        deadline: Instant,
    ) -> Result<Self> {
        let stream = Transport::connect(ep, deadline)?;
        let mut conn = Conn {
            stream,
            scanner,
            buf: vec![0; READ_BUF],
            pongs: 0,
        };
        let mut hello = match user {
            None => CONNECT.to_vec(),
            Some(u) => format!(
                "CONNECT {{\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"lang\":\"rust\",\"name\":\"midge-bench\",\"protocol\":1,\"user\":\"{u}\",\"pass\":\"{u}\"}}\r\n"
            )
            .into_bytes(),
        };
        hello.extend_from_slice(setup);
        conn.write_all(&hello)?;
        conn.flush(deadline, &mut |_| {})?;
        Ok(conn)
    }

    pub fn write_all(&mut self, data: &[u8]) -> Result<()> {
        self.stream
            .write_all(data)
            .context("writing to server (connection closed?)")
    }

    /// One read: feeds whatever arrived to the scanner. Returns without events when the
    /// read timed out. Fails on EOF, on a read error, and on `-ERR`.
    pub fn read_some(&mut self, on: &mut impl FnMut(&Event<'_>)) -> Result<()> {
        let n = match self.stream.read(&mut self.buf) {
            Ok(0) => bail!("server closed the connection (slow consumer?)"),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e).context("reading from server"),
        };
        let mut pings = 0;
        let mut err: Option<String> = None;
        let pongs = &mut self.pongs;
        self.scanner.feed(&self.buf[..n], &mut |ev| {
            match ev {
                Event::Ping => pings += 1,
                Event::Pong => *pongs += 1,
                Event::Err(text) => {
                    err.get_or_insert_with(|| String::from_utf8_lossy(text).into_owned());
                }
                _ => {}
            }
            on(&ev);
        })?;
        if let Some(text) = err {
            bail!("server sent -ERR {text}");
        }
        for _ in 0..pings {
            self.write_all(b"PONG\r\n")?;
        }
        Ok(())
    }

    /// Sends PING and reads until its PONG, passing other events to `on`.
    pub fn flush(&mut self, deadline: Instant, on: &mut impl FnMut(&Event<'_>)) -> Result<()> {
        let want = self.pongs + 1;
        self.write_all(b"PING\r\n")?;
        while self.pongs < want {
            check_deadline(deadline, "waiting for PONG")?;
            self.read_some(on)?;
        }
        Ok(())
    }
}

pub fn check_deadline(deadline: Instant, what: &str) -> Result<()> {
    if Instant::now() >= deadline {
        bail!("timed out {what}");
    }
    Ok(())
}
