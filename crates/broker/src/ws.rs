//! The WebSocket transport (`websocket {}`): the listener, the HTTP upgrade, and RFC 6455
//! framing under the ordinary client protocol.
//!
//! A WebSocket client is a normal client connection (`client.rs`) with a framing layer: its
//! reader pulls raw bytes (decrypted first, with `wss://`) through [`WsReader`], which
//! unmasks and, with permessage-deflate, inflates the frames' payloads and hands the NATS
//! protocol bytes to the same parser; its writer wraps whatever is queued in one binary frame
//! per write ([`WsShared::frame`]). Delivery into the outbound buffer is unchanged, so the
//! router and TCP clients do not know the difference. Publishers never write to a WebSocket
//! client's socket directly; its writer task always does (the framing state is its own).
//!
//! nats-server's choices are kept: server frames are never masked; client frames must be;
//! compression is negotiated with no context takeover in either direction (each message is
//! deflated on its own) and only for writes over 64 bytes; browsers (`User-Agent:
//! Mozilla/...`) get frames of at most 4 KiB; close frames carry nats-server's status codes.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use parking_lot::Mutex;
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, warn};

use crate::client::{self, ClientShared, CloseReason};
use crate::options::{Options, WebsocketOptions};
use crate::server::ServerInner;
use crate::tls;

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;
const OP_PING: u8 = 9;
const OP_PONG: u8 = 10;
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const MASK: u8 = 0x80;
const MAX_CONTROL_PAYLOAD: usize = 125;
/// Writes this small are not worth compressing (nats-server's threshold).
const COMPRESS_THRESHOLD: usize = 64;
/// Browsers handle frames of this size better than one large one.
const BROWSER_FRAME: usize = 4096;
/// The request line and headers of an upgrade request must fit in this.
const MAX_REQUEST: usize = 8 * 1024;
/// What a deflated block ends with after a sync flush; permessage-deflate strips it.
const DEFLATE_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// RFC 6455 close status codes nats-server uses.
pub(crate) mod status {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const NO_STATUS: u16 = 1005;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const TLS_HANDSHAKE: u16 = 1015;
}

/// The close status nats-server sends for each reason a connection ends.
pub(crate) fn close_status(reason: CloseReason) -> u16 {
    use CloseReason::*;
    match reason {
        ClientClosed => status::NORMAL,
        AuthenticationTimeout
        | AuthenticationViolation
        | AuthenticationExpired
        | AuthenticationRevoked
        | MaxSubscriptionsExceeded
        | SlowConsumerPendingBytes
        | SlowConsumerWriteDeadline
        | MaxAccountConnectionsExceeded
        | MaxConnectionsExceeded
        | MaxControlLineExceeded => status::POLICY_VIOLATION,
        TlsHandshakeError => status::TLS_HANDSHAKE,
        ProtocolViolation => status::PROTOCOL_ERROR,
        MaxPayloadExceeded => status::MESSAGE_TOO_BIG,
        WriteError | ReadError | StaleConnection | ServerShutdown => status::GOING_AWAY,
        RouteRemoved | LeafLoop => status::INTERNAL_ERROR,
    }
}

/// An allowed origin: scheme, lower-case host and port (80/443 when not written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `http[s]://host[:port]` (a path is ignored), as an `Origin` header or an
    /// `allowed_origins` entry.
    pub fn parse(text: &str) -> Result<Origin, String> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| "not an absolute URL (scheme://host)".to_string())?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err("the scheme must be http or https".into()),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_authority(authority, default_port)?;
        if host.is_empty() {
            return Err("host is required".into());
        }
        Ok(Origin { scheme, host, port })
    }
}

/// `host[:port]` or `[v6][:port]` of a `Host` header or origin.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed [")?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err("garbage after ]".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| format!("invalid port \"{p}\""))?,
        None => default_port,
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// What the listener's connections use; built once at start-up (the block is not reloadable).
#[derive(Debug)]
struct Settings {
    tls: Option<(Arc<ServerConfig>, Duration)>,
    same_origin: bool,
    allowed: Vec<Origin>,
    compression: bool,
    handshake_timeout: Duration,
    jwt_cookie: Option<String>,
}

impl Settings {
    fn new(opts: &WebsocketOptions) -> Result<Self, tls::TlsError> {
        let tls = match (&opts.tls, opts.no_tls) {
            (Some(t), _) => Some((tls::load(t)?, t.timeout)),
            (None, _) => None,
        };
        Ok(Settings {
            tls,
            same_origin: opts.same_origin,
            allowed: opts
                .allowed_origins
                .iter()
                .filter_map(|o| Origin::parse(o).ok())
                .collect(),
            compression: opts.compression,
            handshake_timeout: opts.handshake_timeout,
            jwt_cookie: opts.jwt_cookie.clone(),
        })
    }
}

/// The bound WebSocket listener, before its accept loop runs.
#[derive(Debug)]
pub(crate) struct Listener {
    listener: TcpListener,
    settings: Arc<Settings>,
    pub addr: SocketAddr,
}

/// Loads the certificates and binds the listener, so a bad file or a taken port fails
/// start-up. `None` without a `websocket { port }`.
pub(crate) fn bind(opts: &Options) -> Result<Option<Listener>, crate::Error> {
    let ws = &opts.websocket;
    let Some(port) = ws.port else {
        return Ok(None);
    };
    let settings = Arc::new(Settings::new(ws)?);
    let bind = SocketAddr::new(ws.host, port);
    let listener =
        crate::server::listen(bind).map_err(|source| crate::Error::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| crate::Error::Bind { addr: bind, source })?;
    Ok(Some(Listener {
        listener,
        settings,
        addr,
    }))
}

/// Runs the accept loop of a bound listener.
pub(crate) fn start(srv: &Arc<ServerInner>, l: Listener) {
    let scheme = if l.settings.tls.is_some() {
        "wss"
    } else {
        "ws"
    };
    info!("Listening for websocket clients on {scheme}://{}", l.addr);
    if l.settings.tls.is_none() {
        warn!("Websocket not configured with TLS. DO NOT USE IN PRODUCTION!");
    }
    tokio::spawn(accept_loop(srv.clone(), l));
}

async fn accept_loop(srv: Arc<ServerInner>, l: Listener) {
    let mut shutdown = srv.shutdown_signal();
    let mut lame_duck = srv.ops.lame_duck_signal();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = l.listener.accept() => r,
            _ = shutdown.changed() => break,
            _ = lame_duck.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                if srv.shutting_down.load(Ordering::Acquire) {
                    break;
                }
                let _ = stream.set_nodelay(true);
                let cid = srv.next_cid.fetch_add(1, Ordering::Relaxed);
                srv.active.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(connection(
                    srv.clone(),
                    l.settings.clone(),
                    stream,
                    peer,
                    cid,
                ));
            }
            Err(e) => {
                error!("Error accepting websocket connection: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    debug!("websocket accept loop stopped");
}

/// One accepted socket: TLS, then the upgrade, both within the handshake timeout; then an
/// ordinary client connection.
async fn connection(
    srv: Arc<ServerInner>,
    settings: Arc<Settings>,
    stream: TcpStream,
    peer: SocketAddr,
    cid: u64,
) {
    let shared = Arc::new(ClientShared::new(cid, peer, stream));
    let mut shutdown = srv.shutdown_signal();
    let upgraded = tokio::select! {
        r = tokio::time::timeout(settings.handshake_timeout, handshake(&shared, &settings)) => match r {
            Ok(r) => r,
            Err(_) => Err("timeout".to_string()),
        },
        _ = shutdown.changed() => Err("server shutting down".to_string()),
    };
    match upgraded {
        Ok(upgrade) => {
            let reader = WsReader::new(
                upgrade.compress,
                !upgrade.no_masking,
                srv.opts().max_payload,
            );
            shared.set_ws(WsShared::new(&upgrade));
            client::spawn_ws(srv, shared, Box::new(reader), settings.tls.is_some());
        }
        Err(e) => {
            // As nats-server, a failed upgrade never was a client: logged, not counted.
            debug!(%peer, "websocket handshake error: {e}");
            let _ = rustix::net::shutdown(&shared.stream, rustix::net::Shutdown::Both);
            srv.connection_closed(cid);
        }
    }
}

/// What the upgrade request asked for and was granted.
#[derive(Debug, Default)]
struct Upgrade {
    compress: bool,
    /// `Nats-No-Masking: true`: the client sends unmasked frames (leaf nodes do).
    no_masking: bool,
    browser: bool,
    /// Safari cannot take fragmented compressed messages.
    no_compressed_fragments: bool,
    jwt: Option<String>,
}

/// TLS (with `wss://`), then reads the HTTP upgrade request and answers it: 101 and the
/// accepted extensions, or an HTTP error as nats-server sends it.
async fn handshake(shared: &ClientShared, settings: &Settings) -> Result<Upgrade, String> {
    if let Some((config, _)) = &settings.tls {
        let mut started = false;
        match tls::handshake(&shared.stream, config.clone(), b"", false, &mut started).await {
            Ok(tls::Upgrade::Tls(session)) => shared.set_tls(tls::Session::new(*session)),
            Ok(tls::Upgrade::Plain) => return Err("client is not using TLS".into()),
            Err(e) => return Err(format!("TLS handshake: {e}")),
        }
    }
    let mut buf = vec![0u8; 1024];
    let mut len = 0;
    let mut more = false;
    let (response, result) = loop {
        if len == buf.len() {
            if buf.len() >= MAX_REQUEST {
                break (
                    http_error(431, "Request Header Fields Too Large"),
                    Err("request headers too large".to_string()),
                );
            }
            buf.resize(buf.len() * 2, 0);
        }
        if !std::mem::take(&mut more) {
            shared.stream.readable().await.map_err(|e| e.to_string())?;
        }
        match shared.read(&mut buf[len..], &mut more) {
            Ok(0) => return Err("connection closed before the upgrade request".into()),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.to_string()),
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(used)) => {
                if used < len || more {
                    break (
                        http_error(400, "Bad Request"),
                        Err("client sent data before handshake is complete".into()),
                    );
                }
                break check_request(&req, settings, shared.tls_established());
            }
            Err(e) => {
                break (
                    http_error(400, "Bad Request"),
                    Err(format!("malformed request: {e}")),
                )
            }
        }
    };
    client::write_all(shared, &response)
        .await
        .map_err(|e| e.to_string())?;
    result
}

fn header<'a>(req: &'a httparse::Request<'_, '_>, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .map(str::trim)
}

/// Whether any of the `name` headers holds `value` in its comma-separated list.
fn header_has(req: &httparse::Request<'_, '_>, name: &str, value: &str) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(value))
}

/// nats-server's checks, in its order, with its status codes.
fn check_request(
    req: &httparse::Request<'_, '_>,
    settings: &Settings,
    tls: bool,
) -> (Vec<u8>, Result<Upgrade, String>) {
    let fail = |code: u16, text: &str, why: String| (http_error(code, text), Err(why));
    if req.method != Some("GET") {
        return fail(
            405,
            "Method Not Allowed",
            "request method must be GET".into(),
        );
    }
    let Some(host) = header(req, "Host").filter(|h| !h.is_empty()) else {
        return fail(400, "Bad Request", "'Host' missing in request".into());
    };
    if !header_has(req, "Upgrade", "websocket") {
        return fail(
            400,
            "Bad Request",
            "invalid value for header 'Upgrade'".into(),
        );
    }
    if !header_has(req, "Connection", "Upgrade") {
        return fail(
            400,
            "Bad Request",
            "invalid value for header 'Connection'".into(),
        );
    }
    let Some(key) = header(req, "Sec-WebSocket-Key").filter(|k| !k.is_empty()) else {
        return fail(400, "Bad Request", "key missing".into());
    };
    let key_ok = base64::engine::general_purpose::STANDARD
        .decode(key)
        .is_ok_and(|k| k.len() == 16);
    if !key_ok {
        return fail(400, "Bad Request", "invalid websocket key".into());
    }
    if !header_has(req, "Sec-WebSocket-Version", "13") {
        return fail(400, "Bad Request", "invalid version".into());
    }
    if let Err(why) = check_origin(req, settings, host, tls) {
        return fail(403, "Forbidden", format!("origin not allowed: {why}"));
    }
    let compress = settings.compression && offers_deflate(req);
    let no_masking = header(req, "Nats-No-Masking") == Some("true");
    let mut up = Upgrade {
        compress,
        no_masking,
        ..Upgrade::default()
    };
    if let Some(ua) = header(req, "User-Agent").filter(|ua| ua.starts_with("Mozilla/")) {
        up.browser = true;
        up.no_compressed_fragments = compress && ua.contains("Version/") && ua.contains("Safari/");
    }
    up.jwt = settings
        .jwt_cookie
        .as_deref()
        .and_then(|name| cookie(req, name));
    let mut resp = String::with_capacity(256);
    resp.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    resp.push_str(&accept_key(key));
    resp.push_str("\r\n");
    if compress {
        resp.push_str("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n");
    }
    if no_masking {
        resp.push_str("Nats-No-Masking: true\r\n");
    }
    resp.push_str("\r\n");
    (resp.into_bytes(), Ok(up))
}

/// A cookie's value from the `Cookie` headers.
fn cookie(req: &httparse::Request<'_, '_>, name: &str) -> Option<String> {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Cookie"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

/// `same_origin` and `allowed_origins`; a request without `Origin` passes (not a browser).
fn check_origin(
    req: &httparse::Request<'_, '_>,
    settings: &Settings,
    host: &str,
    tls: bool,
) -> Result<(), String> {
    if !settings.same_origin && settings.allowed.is_empty() {
        return Ok(());
    }
    let Some(origin) = header(req, "Origin")
        .or_else(|| header(req, "Sec-WebSocket-Origin"))
        .filter(|o| !o.is_empty())
    else {
        return Ok(());
    };
    let origin = Origin::parse(origin)?;
    if settings.same_origin {
        let scheme = if tls { "https" } else { "http" };
        let (rh, rp) = split_authority(host, if tls { 443 } else { 80 })?;
        if origin.host != rh || origin.port != rp || origin.scheme != scheme {
            return Err("not same origin".into());
        }
    }
    if !settings.allowed.is_empty() && !settings.allowed.contains(&origin) {
        return Err("not in the allowed list".into());
    }
    Ok(())
}

fn offers_deflate(req: &httparse::Request<'_, '_>) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Extensions"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|ext| {
            ext.split(';')
                .any(|p| p.trim().eq_ignore_ascii_case("permessage-deflate"))
        })
}

fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.as_bytes());
    ctx.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// An HTTP error response shaped like Go's `http.Error` as nats-server sends it.
fn http_error(code: u16, text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {text}\r\nContent-Type: text/plain; charset=utf-8\r\nSec-Websocket-Version: 13\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    )
    .into_bytes()
}

/// The writer side of one WebSocket connection, in its `ClientShared`.
pub(crate) struct WsShared {
    compress: bool,
    /// Largest frame to send (browsers), 0 for no limit.
    max_frame: usize,
    no_compressed_fragments: bool,
    /// Control frames (pongs, a close) the reader queued, sent before data.
    control: Mutex<Vec<u8>>,
    has_control: AtomicBool,
    close_sent: AtomicBool,
    compressor: Mutex<Option<Box<Compress>>>,
    /// The JWT from the `jwt_cookie` cookie, for JWT authentication.
    #[allow(dead_code)]
    pub jwt: Option<String>,
}

impl std::fmt::Debug for WsShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsShared")
            .field("compress", &self.compress)
            .field("max_frame", &self.max_frame)
            .finish_non_exhaustive()
    }
}

impl WsShared {
    fn new(up: &Upgrade) -> Self {
        WsShared {
            compress: up.compress,
            max_frame: if up.browser { BROWSER_FRAME } else { 0 },
            no_compressed_fragments: up.no_compressed_fragments,
            control: Mutex::new(Vec::new()),
            has_control: AtomicBool::new(false),
            close_sent: AtomicBool::new(false),
            compressor: Mutex::new(None),
            jwt: up.jwt.clone(),
        }
    }

    /// True when control frames wait for the writer.
    pub fn has_control(&self) -> bool {
        self.has_control.load(Ordering::Acquire)
    }

    fn queue_control(&self, op: u8, payload: &[u8]) {
        let mut c = self.control.lock();
        frame_header(&mut c, true, true, false, op, payload.len());
        c.extend_from_slice(payload);
        self.has_control.store(true, Ordering::Release);
    }

    /// Queues the close frame for `reason` (once per connection).
    pub fn queue_close(&self, code: u16, text: &str) {
        if self.close_sent.swap(true, Ordering::AcqRel) {
            return;
        }
        self.queue_control(OP_CLOSE, &close_payload(code, text));
    }

    /// Frames `data` (NATS protocol bytes) into `out`, after any queued control frames.
    pub fn frame(&self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.clear();
        if self.has_control.swap(false, Ordering::AcqRel) {
            out.append(&mut self.control.lock());
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut max_frame = self.max_frame;
        if self.compress && data.len() > COMPRESS_THRESHOLD {
            let mut slot = self.compressor.lock();
            let c = slot.get_or_insert_with(|| Box::new(Compress::new(Compression::fast(), false)));
            let mut deflated = Vec::with_capacity(data.len() / 2 + 64);
            deflate(c, data, &mut deflated)?;
            if self.no_compressed_fragments {
                max_frame = 0;
            }
            push_frames(out, &deflated, true, max_frame);
        } else {
            push_frames(out, data, false, max_frame);
        }
        Ok(())
    }
}

/// One message in frames of at most `max_frame` bytes (0: one frame).
fn push_frames(out: &mut Vec<u8>, payload: &[u8], compressed: bool, max_frame: usize) {
    if max_frame == 0 || payload.len() <= max_frame {
        frame_header(out, true, true, compressed, OP_BINARY, payload.len());
        out.extend_from_slice(payload);
        return;
    }
    let mut chunks = payload.chunks(max_frame).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let op = if first { OP_BINARY } else { OP_CONTINUATION };
        frame_header(out, first, last, compressed && first, op, chunk.len());
        out.extend_from_slice(chunk);
        first = false;
    }
}

fn frame_header(out: &mut Vec<u8>, _first: bool, fin: bool, compressed: bool, op: u8, len: usize) {
    let mut b0 = op;
    if fin {
        b0 |= FIN;
    }
    if compressed {
        b0 |= RSV1;
    }
    out.push(b0);
    if len <= 125 {
        out.push(len as u8);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

fn close_payload(code: u16, text: &str) -> Vec<u8> {
    let mut body = text;
    let mut ellipsis = false;
    if body.len() > MAX_CONTROL_PAYLOAD - 2 {
        let mut cut = MAX_CONTROL_PAYLOAD - 5;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body = &body[..cut];
        ellipsis = true;
    }
    let mut p = Vec::with_capacity(2 + body.len() + 3);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(body.as_bytes());
    if ellipsis {
        p.extend_from_slice(b"...");
    }
    p
}

/// Deflates one message with no context takeover: a fresh stream, a sync flush, and the
/// final empty block's 4 bytes stripped (RFC 7692).
fn deflate(c: &mut Compress, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    c.reset();
    loop {
        let consumed = c.total_in() as usize;
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(256));
        }
        c.compress_vec(&data[consumed..], out, FlushCompress::Sync)
            .map_err(|e| io::Error::other(e.to_string()))?;
        // A sync flush is complete when all input is in and the output was not filled.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.ends_with(&DEFLATE_TAIL) {
        out.truncate(out.len() - DEFLATE_TAIL.len());
    }
    Ok(())
}

/// Why reading frames failed: the close frame is already queued.
fn protocol_error(shared: &ClientShared, ws: &WsShared, why: &str) -> io::Error {
    debug!(cid = shared.cid, "websocket protocol error: {why}");
    ws.queue_close(status::PROTOCOL_ERROR, why);
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The reader side: raw bytes in, NATS protocol bytes out. Only the connection's reader
/// task touches it.
#[derive(Debug)]
pub(crate) struct WsReader {
    raw: Vec<u8>,
    start: usize,
    end: usize,
    /// Payload bytes left in the current data frame; `None` between frames.
    remaining: Option<u64>,
    mask: [u8; 4],
    mask_pos: usize,
    masked: bool,
    require_mask: bool,
    /// Inside a fragmented message (a final frame has not come yet).
    in_message: bool,
    /// The current message is compressed.
    compressed: bool,
    compress: bool,
    /// Compressed payload of the current message, inflated when its last frame arrives.
    deflated: Vec<u8>,
    /// Inflated bytes not yet handed to the parser.
    inflated: Vec<u8>,
    inflated_pos: usize,
    decompressor: Option<Box<Decompress>>,
    max_inflated: usize,
    /// The client sent a close frame: the stream ends here.
    closed: bool,
}

impl WsReader {
    pub(crate) fn new(compress: bool, require_mask: bool, max_payload: usize) -> Self {
        WsReader {
            raw: vec![0u8; 4096],
            start: 0,
            end: 0,
            remaining: None,
            mask: [0; 4],
            mask_pos: 0,
            masked: false,
            require_mask,
            in_message: false,
            compressed: false,
            compress,
            deflated: Vec::new(),
            inflated: Vec::new(),
            inflated_pos: 0,
            decompressor: None,
            // nats-server bounds one inflated message by max_payload; the op line around it
            // is allowed for here.
            max_inflated: max_payload.saturating_add(64 * 1024),
            closed: false,
        }
    }

    /// Reads NATS protocol bytes into `dst`. As [`ClientShared::read`]: `Ok(0)` is the end
    /// (also after a close frame, whose answer is queued), `WouldBlock` means wait for the
    /// socket, and `more` is set when bytes may be ready without waiting.
    pub(crate) fn read(
        &mut self,
        shared: &ClientShared,
        dst: &mut [u8],
        more: &mut bool,
    ) -> io::Result<usize> {
        let Some(ws) = shared.ws() else {
            return shared.read(dst, more);
        };
        let mut tls_more = false;
        loop {
            if self.inflated_pos < self.inflated.len() {
                let n = (self.inflated.len() - self.inflated_pos).min(dst.len());
                dst[..n].copy_from_slice(&self.inflated[self.inflated_pos..][..n]);
                self.inflated_pos += n;
                if self.inflated_pos == self.inflated.len() {
                    self.inflated.clear();
                    self.inflated_pos = 0;
                }
                *more = tls_more || self.pending();
                return Ok(n);
            }
            if self.closed {
                return Ok(0);
            }
            match self.next(shared, ws, dst)? {
                Some(n) if n > 0 => {
                    *more = tls_more || self.pending();
                    return Ok(n);
                }
                Some(_) => continue,
                None => {}
            }
            // Need more raw bytes.
            if self.start > 0 {
                self.raw.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.raw.len() {
                self.raw.resize(self.raw.len() * 2, 0);
            }
            tls_more = false;
            match shared.read(&mut self.raw[self.end..], &mut tls_more) {
                Ok(0) => return Ok(0),
                Ok(n) => self.end += n,
                Err(e) => {
                    *more = false;
                    return Err(e);
                }
            }
        }
    }

    /// Raw bytes or inflated data are waiting.
    fn pending(&self) -> bool {
        self.start < self.end || self.inflated_pos < self.inflated.len()
    }

    /// Processes raw bytes: `Some(n)` with `n` payload bytes in `dst` (0 when a control
    /// frame or an inflated message was handled), `None` when more raw bytes are needed.
    fn next(
        &mut self,
        shared: &ClientShared,
        ws: &WsShared,
        dst: &mut [u8],
    ) -> io::Result<Option<usize>> {
        let remaining = match self.remaining {
            Some(r) => r,
            None => match self.header(shared, ws)? {
                Header::Data(r) => r,
                Header::Handled => return Ok(Some(0)),
                Header::Incomplete => return Ok(None),
            },
        };
        let avail = self.end - self.start;
        if remaining > 0 && avail == 0 {
            return Ok(None);
        }
        let take = (remaining.min(avail as u64)) as usize;
        let take = if self.compressed {
            take
        } else {
            take.min(dst.len())
        };
        let chunk = &mut self.raw[self.start..self.start + take];
        if self.masked {
            for b in chunk.iter_mut() {
                *b ^= self.mask[self.mask_pos & 3];
                self.mask_pos += 1;
            }
        }
        self.start += take;
        let left = remaining - take as u64;
        self.remaining = (left > 0).then_some(left);
        if self.compressed {
            if self.deflated.len() + take > self.max_inflated {
                ws.queue_close(status::MESSAGE_TOO_BIG, "Maximum Payload Violation");
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "compressed message too large",
                ));
            }
            let chunk = &self.raw[self.start - take..self.start];
            self.deflated.extend_from_slice(chunk);
            if left == 0 && !self.in_message {
                self.inflate(shared, ws)?;
            }
            return Ok(Some(0));
        }
        dst[..take].copy_from_slice(&self.raw[self.start - take..self.start]);
        Ok(Some(take))
    }

    /// Parses one frame header at `start`. Control frames and empty data frames are handled
    /// whole here.
    fn header(&mut self, shared: &ClientShared, ws: &WsShared) -> io::Result<Header> {
        let buf = &self.raw[self.start..self.end];
        if buf.len() < 2 {
            return Ok(Header::Incomplete);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let op = b0 & 0x0f;
        let fin = b0 & FIN != 0;
        let rsv1 = b0 & RSV1 != 0;
        if b0 & 0x30 != 0 {
            return Err(protocol_error(shared, ws, "RSV2 and RSV3 must be clear"));
        }
        if rsv1 && !self.compress {
            return Err(protocol_error(
                shared,
                ws,
                "compressed frame received without negotiated permessage-deflate",
            ));
        }
        let masked = b1 & MASK != 0;
        if self.require_mask && !masked {
            return Err(protocol_error(shared, ws, "mask bit missing"));
        }
        let mut pos = 2;
        let mut len = u64::from(b1 & 0x7f);
        if len == 126 {
            let Some(b) = buf.get(2..4) else {
                return Ok(Header::Incomplete);
            };
            len = u64::from(u16::from_be_bytes([b[0], b[1]]));
            pos = 4;
        } else if len == 127 {
            let Some(b) = buf.get(2..10) else {
                return Ok(Header::Incomplete);
            };
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            len = u64::from_be_bytes(a);
            if len >> 63 != 0 {
                return Err(protocol_error(shared, ws, "invalid 64-bit payload length"));
            }
            pos = 10;
        }
        let mut mask = [0u8; 4];
        if masked {
            let Some(b) = buf.get(pos..pos + 4) else {
                return Ok(Header::Incomplete);
            };
            mask.copy_from_slice(b);
            pos += 4;
        }
        match op {
            OP_CLOSE | OP_PING | OP_PONG => {
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(protocol_error(
                        shared,
                        ws,
                        "control frame length bigger than maximum allowed of 125 bytes",
                    ));
                }
                if !fin {
                    return Err(protocol_error(
                        shared,
                        ws,
                        "control frame does not have final bit set",
                    ));
                }
                if rsv1 {
                    return Err(protocol_error(
                        shared,
                        ws,
                        "control frame must not be compressed",
                    ));
                }
                let total = pos + len as usize;
                let Some(payload) = buf.get(pos..total) else {
                    return Ok(Header::Incomplete);
                };
                let mut payload = payload.to_vec();
                if masked {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= mask[i & 3];
                    }
                }
                self.start += total;
                self.control(shared, ws, op, &payload)?;
                return Ok(Header::Handled);
            }
            OP_TEXT | OP_BINARY => {
                if self.in_message {
                    return Err(protocol_error(
                        shared,
                        ws,
                        "new message started before final frame for previous message was received",
                    ));
                }
                self.compressed = rsv1;
            }
            OP_CONTINUATION => {
                if !self.in_message || rsv1 {
                    return Err(protocol_error(shared, ws, "invalid continuation frame"));
                }
            }
            _ => return Err(protocol_error(shared, ws, &format!("unknown opcode {op}"))),
        }
        self.in_message = !fin;
        self.start += pos;
        self.mask = mask;
        self.mask_pos = 0;
        self.masked = masked;
        if len == 0 {
            self.remaining = None;
            if self.compressed && fin {
                self.inflate(shared, ws)?;
            }
            return Ok(Header::Handled);
        }
        self.remaining = Some(len);
        Ok(Header::Data(len))
    }

    fn control(
        &mut self,
        shared: &ClientShared,
        ws: &WsShared,
        op: u8,
        payload: &[u8],
    ) -> io::Result<()> {
        match op {
            OP_PING => {
                ws.queue_control(OP_PONG, payload);
                shared.wake();
            }
            OP_CLOSE => {
                if payload.len() == 1 {
                    return Err(protocol_error(
                        shared,
                        ws,
                        "close frame payload cannot be 1 byte",
                    ));
                }
                let mut code = status::NO_STATUS;
                let mut body = String::new();
                if payload.len() >= 2 {
                    code = u16::from_be_bytes([payload[0], payload[1]]);
                    if !valid_close_status(code) {
                        return Err(protocol_error(
                            shared,
                            ws,
                            &format!("invalid close status code {code}"),
                        ));
                    }
                    match std::str::from_utf8(&payload[2..]) {
                        Ok(s) => body = s.to_string(),
                        Err(_) => {
                            code = status::INVALID_PAYLOAD;
                            body = "invalid utf8 body in close frame".into();
                        }
                    }
                }
                // Echo the status (none when the client gave none), then end.
                if !ws.close_sent.swap(true, Ordering::AcqRel) {
                    let payload = if code == status::NO_STATUS {
                        Vec::new()
                    } else {
                        close_payload(code, &body)
                    };
                    ws.queue_control(OP_CLOSE, &payload);
                }
                shared.wake();
                self.closed = true;
            }
            _ => {}
        }
        Ok(())
    }

    fn inflate(&mut self, shared: &ClientShared, ws: &WsShared) -> io::Result<()> {
        self.deflated.extend_from_slice(&DEFLATE_TAIL);
        let d = self
            .decompressor
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        d.reset(false);
        let mut out = std::mem::take(&mut self.inflated);
        out.clear();
        let input = std::mem::take(&mut self.deflated);
        let result = loop {
            let consumed = d.total_in() as usize;
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            match d.decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync) {
                Ok(Status::StreamEnd) => break Ok(()),
                Ok(_) => {}
                Err(e) => break Err(e.to_string()),
            }
            if out.len() > self.max_inflated {
                break Err("too large".into());
            }
            if d.total_in() as usize == input.len() && out.len() < out.capacity() {
                break Ok(());
            }
        };
        self.deflated = input;
        self.deflated.clear();
        self.compressed = false;
        match result {
            Ok(()) => {
                self.inflated = out;
                self.inflated_pos = 0;
                Ok(())
            }
            Err(e) if e == "too large" => {
                ws.queue_close(status::MESSAGE_TOO_BIG, "Maximum Payload Violation");
                Err(io::Error::new(io::ErrorKind::InvalidData, e))
            }
            Err(e) => Err(protocol_error(
                shared,
                ws,
                &format!("invalid compressed data: {e}"),
            )),
        }
    }
}

/// What [`WsReader::header`] found.
enum Header {
    /// A data frame with this many payload bytes follows.
    Data(u64),
    /// A control frame or an empty data frame, dealt with.
    Handled,
    /// Not all of the header is there yet.
    Incomplete,
}

fn valid_close_status(code: u16) -> bool {
    !matches!(code, 1004 | 1005 | 1006 | 1015)
        && (1000..5000).contains(&code)
        && !(1016..=2999).contains(&code)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn origins_parse_with_default_ports() {
        let o = Origin::parse("https://Example.com").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("example.com", 443));
        let o = Origin::parse("http://h:8080/path").unwrap();
        assert_eq!((o.scheme.as_str(), o.port), ("http", 8080));
        assert!(Origin::parse("ftp://h").is_err());
        assert!(Origin::parse("h:80").is_err());
        assert!(Origin::parse("http://").is_err());
    }

    #[test]
    fn deflate_round_trips_without_context() {
        let data = b"MSG foo 1 11\r\nhello world\r\n".repeat(20);
        let mut c = Compress::new(Compression::fast(), false);
        let mut out = Vec::new();
        deflate(&mut c, &data, &mut out).unwrap();
        assert!(out.len() < data.len());
        let mut input = out.clone();
        input.extend_from_slice(&DEFLATE_TAIL);
        let mut d = Decompress::new(false);
        let mut plain = Vec::with_capacity(data.len() * 2);
        d.decompress_vec(&input, &mut plain, FlushDecompress::Sync)
            .unwrap();
        assert_eq!(plain, data);
        // A second message from the same (reset) compressor is independent.
        let mut again = Vec::new();
        deflate(&mut c, &data, &mut again).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn frames_split_for_browsers() {
        let mut out = Vec::new();
        push_frames(&mut out, &[7u8; 5000], false, BROWSER_FRAME);
        assert_eq!(out[0], OP_BINARY, "first of two: not final");
        assert_eq!(out[1], 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 4096);
        let second = 4 + 4096;
        assert_eq!(out[second], FIN | OP_CONTINUATION);
        assert_eq!(out[second + 1] as usize, 126);
        assert_eq!(u16::from_be_bytes([out[second + 2], out[second + 3]]), 904);
    }

    #[test]
    fn close_status_codes_follow_nats_server() {
        assert_eq!(close_status(CloseReason::ClientClosed), 1000);
        assert_eq!(close_status(CloseReason::AuthenticationViolation), 1008);
        assert_eq!(close_status(CloseReason::MaxPayloadExceeded), 1009);
        assert_eq!(close_status(CloseReason::ServerShutdown), 1001);
        assert_eq!(close_status(CloseReason::ProtocolViolation), 1002);
        let long = "x".repeat(200);
        let p = close_payload(1000, &long);
        assert_eq!(p.len(), MAX_CONTROL_PAYLOAD);
        assert!(p.ends_with(b"..."));
    }
}
