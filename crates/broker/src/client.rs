//! One client connection: its reader (parse, check, route) and its writer (batched flushes).
//!
//! Message flow: the publisher's reader task parses a `PUB` straight out of its read
//! buffer, looks the subject up (first in its own cache of sublist results, then in the
//! shared [`Sublist`](midge_proto::sublist::Sublist)), and appends one `MSG` frame per
//! receiver to that receiver's outbound buffer. Each receiver is remembered once per read;
//! when the read has been processed, every remembered receiver's writer is woken once, and
//! it writes everything queued so far in one `write` call.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use midge_proto::encode;
use midge_proto::hash::{keyed_map, KeyedMap};
use midge_proto::parser::{parse_client_op, ClientOp, Limits, ParseError, Parsed};
use midge_proto::subject;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tracing::{debug, trace, warn};

use crate::auth::{self, ClientPermissions, DeliveryPermissions};
use crate::core::router::{self, MatchCache, Origin, Router};
use crate::core::{Subscriber, Subscription};
use crate::info::ConnectOptions;
use crate::monitor::{self, ClosedConn, ConnMeta};
use crate::options::Options;
use crate::readbuf::ReadBuf;
use crate::server::ServerInner;
use crate::tls::{self, HandshakeError};

/// Why a connection ended; shown by monitoring and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    ServerShutdown,
    ReadError,
    WriteError,
    SlowConsumerPendingBytes,
    SlowConsumerWriteDeadline,
    ProtocolViolation,
    AuthenticationViolation,
    AuthenticationTimeout,
    StaleConnection,
    MaxPayloadExceeded,
    MaxControlLineExceeded,
    MaxConnectionsExceeded,
    /// The account's `max_connections` was reached.
    MaxAccountConnectionsExceeded,
    /// A JWT user (or its account) allowed no subscriptions.
    MaxSubscriptionsExceeded,
    /// A JWT user whose JWT expired (or whose time window ended) while connected.
    AuthenticationExpired,
    /// A JWT user revoked by its account while connected.
    AuthenticationRevoked,
    TlsHandshakeError,
    /// A route whose URL a config reload removed.
    RouteRemoved,
    /// A leaf node connection that closed a loop in the topology.
    LeafLoop,
}

impl CloseReason {
    fn is_slow_consumer(self) -> bool {
        matches!(
            self,
            CloseReason::SlowConsumerPendingBytes | CloseReason::SlowConsumerWriteDeadline
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The texts nats-server's /connz reports as `reason`.
        f.write_str(match self {
            CloseReason::ClientClosed => "Client Closed",
            CloseReason::ServerShutdown => "Server Shutdown",
            CloseReason::ReadError => "Read Error",
            CloseReason::WriteError => "Write Error",
            CloseReason::SlowConsumerPendingBytes => "Slow Consumer (Pending Bytes)",
            CloseReason::SlowConsumerWriteDeadline => "Slow Consumer (Write Deadline)",
            CloseReason::ProtocolViolation => "Protocol Violation",
            CloseReason::AuthenticationViolation => "Authentication Failure",
            CloseReason::AuthenticationTimeout => "Authentication Timeout",
            CloseReason::AuthenticationExpired => "Authentication Expired",
            CloseReason::AuthenticationRevoked => "Authentication Revoked",
            CloseReason::StaleConnection => "Stale Connection",
            CloseReason::MaxPayloadExceeded => "Maximum Message Payload Exceeded",
            CloseReason::MaxControlLineExceeded => "Maximum Control Line Exceeded",
            CloseReason::MaxConnectionsExceeded => "Maximum Connections Exceeded",
            CloseReason::MaxAccountConnectionsExceeded => "Maximum Account Connections Exceeded",
            CloseReason::MaxSubscriptionsExceeded => "Maximum Subscriptions Exceeded",
            CloseReason::LeafLoop => "Leafnode Loop Detected",
            CloseReason::TlsHandshakeError => "TLS Handshake Failure",
            CloseReason::RouteRemoved => "Route Removed",
        })
    }
}

/// The part of a connection other connections touch while delivering to it.
#[derive(Debug)]
pub(crate) struct ClientShared {
    pub cid: u64,
    /// Shared so that a publisher can write straight to this socket after its read (no
    /// task wake-up on the common path); the writer task takes over when that would block.
    pub(crate) stream: TcpStream,
    /// The TLS session once the handshake is done; unset for plain connections (and for TLS
    /// ones until then, while INFO or a plain-text -ERR go out as they are). Checked once per
    /// read or write, never per message.
    /// Boxed: most connections are plain, and a session is large.
    tls: OnceLock<Box<tls::Session>>,
    /// WebSocket framing for clients of the `websocket {}` listener; unset for NATS over TCP.
    ws: OnceLock<Box<crate::ws::WsShared>>,
    pub peer: SocketAddr,
    pub start: SystemTime,
    out: Mutex<Outbound>,
    writer_wake: Notify,
    /// Woken each time the writer finished a write: producers stalled on this client
    /// (its pending data over half of `max_pending`) look again.
    drained: Notify,
    pub(crate) kill: Notify,
    closed: AtomicBool,
    /// Set while this client sits in some publisher's list of writers to wake.
    flush_queued: AtomicBool,
    headers: AtomicBool,
    /// Set once CONNECT said protocol >= 1: the client takes INFO updates (lame duck mode).
    async_info: AtomicBool,
    delivery_perms: OnceLock<Arc<DeliveryPermissions>>,
    pub subs: Mutex<KeyedMap<Box<[u8]>, Arc<Subscription>>>,
    /// Name of the account the client is bound to (set at CONNECT), for monitoring.
    pub account: Mutex<Arc<str>>,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    /// What CONNECT said (name, lang, version, user), for monitoring.
    pub meta: Mutex<ConnMeta>,
    /// Unix nanoseconds of the last read from this client (`/connz` `last_activity`).
    pub last_activity: AtomicU64,
    /// Last measured round trip in nanoseconds; 0 until known.
    pub rtt_nanos: AtomicU64,
}

/// What [`ClientShared::queue_for`] did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Append {
    /// Queued; `reached_max`: this delivery used up the subscription's limit.
    Done { queued: Queued, reached_max: bool },
    /// The connection is closing.
    Closed,
    /// The subscription's auto-unsubscribe limit was reached (or, for a batch, is set).
    Limited,
}

/// What [`ClientShared::queue_for`] queued: pending bytes after it, and its size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Queued {
    pub pending: usize,
    pub size: u64,
}

#[derive(Debug, Default)]
struct Outbound {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written by a partial direct write.
    head: usize,
    /// Bytes the writer (or a direct write) has taken and not finished writing; they still
    /// count as pending.
    in_flight: usize,
    /// Set while a publisher writes taken bytes straight to the socket: the writer task must
    /// not take the buffer until it is clear (what the socket did not take goes back in front).
    direct: bool,
    out_msgs: u64,
    out_bytes: u64,
    close: Option<CloseReason>,
}

impl ClientShared {
    pub(crate) fn new(cid: u64, peer: SocketAddr, stream: TcpStream) -> Self {
        let start = SystemTime::now();
        ClientShared {
            cid,
            stream,
            tls: OnceLock::new(),
            ws: OnceLock::new(),
            peer,
            start,
            out: Mutex::new(Outbound::default()),
            writer_wake: Notify::new(),
            drained: Notify::new(),
            kill: Notify::new(),
            closed: AtomicBool::new(false),
            flush_queued: AtomicBool::new(false),
            headers: AtomicBool::new(false),
            async_info: AtomicBool::new(false),
            delivery_perms: OnceLock::new(),
            subs: Mutex::new(keyed_map()),
            account: Mutex::new(crate::core::GLOBAL_ACCOUNT.into()),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            meta: Mutex::new(ConnMeta::default()),
            last_activity: AtomicU64::new(monitor::unix_nanos(start)),
            rtt_nanos: AtomicU64::new(0),
        }
    }

    /// Appends to the outbound buffer (routes and async INFO use this), counting `msgs` and
    /// `bytes` as delivered. Returns the pending byte count, or `None` once closed.
    pub(crate) fn append(
        &self,
        msgs: u64,
        bytes: u64,
        f: impl FnOnce(&mut Vec<u8>),
    ) -> Option<usize> {
        let mut out = self.out.lock();
        if out.close.is_some() {
            return None;
        }
        f(&mut out.buf);
        out.out_msgs += msgs;
        out.out_bytes += bytes;
        Some(out.buf.len() - out.head + out.in_flight)
    }

    /// True when the caller must put this connection on its list of writers to wake.
    pub(crate) fn claim_flush(&self) -> bool {
        // A plain load first: a receiver that got several messages of one read is already
        // queued, and a swap would be a locked read-modify-write per message.
        !self.flush_queued.load(Ordering::Acquire)
            && !self.flush_queued.swap(true, Ordering::AcqRel)
    }

    /// Installs the TLS session of a connection whose handshake is done (leaf nodes; client
    /// connections install theirs in the reader).
    pub(crate) fn set_tls(&self, session: tls::Session) {
        let _ = self.tls.set(Box::new(session));
    }

    /// Installs the WebSocket framing of a connection whose upgrade is done.
    pub(crate) fn set_ws(&self, ws: crate::ws::WsShared) {
        let _ = self.ws.set(Box::new(ws));
    }

    /// The WebSocket framing, for clients of the WebSocket listener.
    pub(crate) fn ws(&self) -> Option<&crate::ws::WsShared> {
        self.ws.get().map(|b| &**b)
    }

    /// The peer's certificate (DER), on a TLS connection where it presented one.
    pub(crate) fn peer_certificate(&self) -> Option<Vec<u8>> {
        self.tls.get().and_then(|s| s.peer_certificate())
    }

    /// True once a TLS session is installed.
    pub(crate) fn tls_established(&self) -> bool {
        self.tls.get().is_some()
    }

    /// Wakes the writer task now.
    pub(crate) fn wake(&self) {
        self.writer_wake.notify_one();
    }

    /// Ends the connection: the writer flushes what is queued (nothing, for a slow
    /// consumer) and closes the socket; the reader stops. True for the call that closed it
    /// (the one that records and counts the reason); false when it was already closed.
    pub fn close(&self, reason: CloseReason) -> bool {
        {
            let mut out = self.out.lock();
            if out.close.is_some() {
                return false;
            }
            out.close = Some(reason);
            if reason.is_slow_consumer() {
                out.buf = Vec::new();
                out.head = 0;
            }
        }
        self.closed.store(true, Ordering::Release);
        self.kill.notify_one();
        self.writer_wake.notify_one();
        true
    }

    /// Queues protocol bytes from outside the connection's own task (an async INFO, an
    /// -ERR before a close) and wakes its writer.
    pub fn enqueue(&self, write: impl FnOnce(&mut Vec<u8>)) {
        {
            let mut out = self.out.lock();
            if out.close.is_some() {
                return;
            }
            write(&mut out.buf);
        }
        self.writer_wake.notify_one();
    }

    /// Makes the reader look at the options again now, even when the client is idle.
    pub fn wake_for_reload(&self) {
        self.kill.notify_one();
    }

    /// Whether the client asked for INFO updates (CONNECT with protocol >= 1).
    pub fn wants_async_info(&self) -> bool {
        self.async_info.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn close_reason(&self) -> Option<CloseReason> {
        self.out.lock().close
    }

    /// Delivery permissions other connections check when delivering to this client.
    pub(crate) fn delivery_perms(&self) -> Option<&Arc<DeliveryPermissions>> {
        self.delivery_perms.get()
    }

    /// Whether the client negotiated headers (it gets `HMSG`; others get messages with
    /// their headers stripped).
    pub(crate) fn wants_headers(&self) -> bool {
        self.headers.load(Ordering::Relaxed)
    }

    /// Appends `msgs` messages for subscription `sub` of this client: `encode` writes their
    /// frames given the sid, `size` is what they count as delivered bytes. Deliveries are
    /// counted against the subscription's auto-unsubscribe limit here, under this client's
    /// lock: every delivery to a client's subscription holds it, so a plain load and store
    /// count exactly and the hot path pays no atomic read-modify-write for it. A batch of
    /// several messages is only taken while the subscription has no limit.
    pub(crate) fn queue_for(
        &self,
        sub: &Subscription,
        msgs: u64,
        size: u64,
        encode: impl FnOnce(&mut Vec<u8>, &[u8]),
    ) -> Append {
        let mut out = self.out.lock();
        if out.close.is_some() {
            return Append::Closed;
        }
        let n = sub.delivered.load(Ordering::Relaxed) + msgs;
        let max = sub.max.load(Ordering::Acquire);
        if max != 0 && (n > max || msgs > 1) {
            return Append::Limited;
        }
        sub.delivered.store(n, Ordering::Release);
        encode(&mut out.buf, &sub.sid);
        out.out_msgs += msgs;
        out.out_bytes += size;
        Append::Done {
            queued: Queued {
                pending: out.buf.len() - out.head + out.in_flight,
                size,
            },
            reached_max: max != 0 && n == max,
        }
    }

    /// Appends one `MSG` (or `HMSG`, when the client negotiated headers and the message
    /// has them) for subscription `sid`. `None` once the connection is closing.
    #[cfg(test)]
    pub(crate) fn queue_msg(
        &self,
        sid: &[u8],
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> Option<Queued> {
        let with_headers = headers.filter(|_| self.headers.load(Ordering::Relaxed));
        let size = (payload.len() + with_headers.map_or(0, <[u8]>::len)) as u64;
        let mut out = self.out.lock();
        if out.close.is_some() {
            return None;
        }
        match with_headers {
            Some(h) => encode::hmsg(&mut out.buf, subj, sid, reply, h, payload),
            None => encode::msg(&mut out.buf, subj, sid, reply, payload),
        }
        out.out_msgs += 1;
        out.out_bytes += size;
        Some(Queued {
            pending: out.buf.len() - out.head + out.in_flight,
            size,
        })
    }

    /// Called once per publisher read for a receiver that got data: write it out now when
    /// `direct` and the socket takes it without blocking, else wake the writer task.
    pub(crate) fn flush_or_wake(&self, direct: bool) {
        // Clear first: data queued after this point queues the client again.
        self.flush_queued.store(false, Ordering::Release);
        if !direct || !self.try_flush_now() {
            self.writer_wake.notify_one();
        }
    }

    /// Drops `sub` from this client's table; false when it was not there (any more).
    pub(crate) fn forget_sub(&self, sub: &Arc<Subscription>) -> bool {
        let mut subs = self.subs.lock();
        match subs.get(&sub.sid) {
            Some(s) if Arc::ptr_eq(s, sub) => subs.remove(&sub.sid).is_some(),
            _ => false,
        }
    }

    /// Writes queued data now if that cannot block: the socket takes it and no write is in
    /// progress. True when nothing is left for the writer. The buffer is taken out of the
    /// lock for the syscall (and the TLS encryption), so producers queueing to this client
    /// meanwhile never wait on a write; the writer task leaves the buffer alone until the
    /// direct write has put back what the socket did not take.
    fn try_flush_now(&self) -> bool {
        let (buf, head) = {
            let Some(mut out) = self.out.try_lock() else {
                return false;
            };
            // A WebSocket client's bytes are framed by its writer task.
            if out.in_flight > 0 || out.direct || out.close.is_some() || self.ws.get().is_some() {
                return false;
            }
            if out.buf.is_empty() {
                return true;
            }
            let head = std::mem::take(&mut out.head);
            let buf = std::mem::take(&mut out.buf);
            out.in_flight = buf.len() - head;
            out.direct = true;
            (buf, head)
        };
        #[cfg(test)]
        tests::direct_write_hook(self);
        // (bytes taken, whether nothing is left for the writer once they are)
        let (n, sent) = match self.tls.get() {
            None => match self.stream.try_write(&buf[head..]) {
                Ok(n) => (n, true),
                Err(_) => (0, false),
            },
            // Plaintext rustls took is encrypted and its own; records the socket did not
            // take yet are left to the writer.
            Some(tls) => tls
                .try_write(&self.stream, &buf[head..])
                .unwrap_or((0, false)),
        };
        let mut out = self.out.lock();
        out.direct = false;
        out.in_flight = 0;
        let closing = out.close;
        if closing.is_some_and(CloseReason::is_slow_consumer) {
            // Cut off meanwhile: nothing more goes to this client.
            return false;
        }
        let done = head + n;
        if done == buf.len() {
            if out.buf.is_empty() {
                // Small buffers are kept for the next message (request/reply goes this way);
                // a larger one (the INFO that opened the connection, a burst) goes back.
                if buf.capacity() <= KEEP_DIRECT_BUF {
                    let mut buf = buf;
                    buf.clear();
                    out.buf = buf;
                }
                // A close meanwhile waits for this write: its writer must look again.
                sent && closing.is_none()
            } else {
                false
            }
        } else {
            if out.buf.is_empty() {
                // Remember the progress instead of moving the rest of the buffer.
                out.buf = buf;
                out.head = done;
            } else {
                // Queued while the socket was busy: goes after what it did not take.
                let mut rest = buf;
                rest.drain(..done);
                rest.extend_from_slice(&out.buf[out.head..]);
                out.buf = rest;
                out.head = 0;
            }
            false
        }
    }

    /// Reads what the client sent into `dst` (decrypted, with TLS). `more` is set when
    /// decrypted bytes may be left over, to be read before waiting for the socket again.
    pub(crate) fn read(&self, dst: &mut [u8], more: &mut bool) -> std::io::Result<usize> {
        match self.tls.get() {
            None => self.stream.try_read(dst),
            Some(tls) => {
                let r = tls.read(&self.stream, dst);
                if r.wants_write {
                    self.writer_wake.notify_one();
                }
                *more = r.more;
                r.result
            }
        }
    }

    /// Outbound counters: (messages, bytes, pending bytes).
    pub fn out_stats(&self) -> (u64, u64, usize) {
        let out = self.out.lock();
        (
            out.out_msgs,
            out.out_bytes,
            out.buf.len() - out.head + out.in_flight,
        )
    }
}

/// How long a publisher waits for a receiver with `pending` bytes queued (nats-server's
/// rule: 100 ms, growing by 100 ms per tenth of the upper half, 1 s at the limit).
fn stall_duration(pending: usize, max_pending: usize) -> Duration {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);
    let half = max_pending / 2;
    if pending >= max_pending {
        MAX
    } else if pending > half {
        let step = (half / 10).max(1);
        (MIN + MIN * u32::try_from((pending - half) / step).unwrap_or(10)).min(MAX)
    } else {
        MIN
    }
}

/// Registers a new client; true when that puts the server over `max_connections`.
fn register(srv: &ServerInner, shared: &Arc<ClientShared>) -> bool {
    let mut clients = srv.clients.lock();
    clients.insert(shared.cid, shared.clone());
    clients.len() > srv.opts().max_connections
}

/// Starts serving a WebSocket client whose upgrade is done (`ws.rs`): INFO goes out framed
/// like everything after it, then it is an ordinary client.
pub(crate) fn spawn_ws(
    srv: Arc<ServerInner>,
    shared: Arc<ClientShared>,
    reader: Box<crate::ws::WsReader>,
    wss: bool,
) {
    srv.stats.total_connections.fetch_add(1, Ordering::Relaxed);
    let over_limit = register(&srv, &shared);
    let nonce;
    {
        let opts = srv.opts();
        let mut info = srv.info_template();
        info.client_id = shared.cid;
        info.client_ip = shared.peer.ip().to_string();
        // As nats-server: TLS is the WebSocket listener's, and so are host and port.
        info.tls_required = wss;
        info.tls_available = wss;
        info.tls_verify = wss && opts.websocket.tls.as_ref().is_some_and(|t| t.verify);
        let auth = client_auth(&opts, true).0;
        info.auth_required = auth.required();
        nonce = auth.nonce_required().then(auth::new_nonce);
        info.nonce.clone_from(&nonce);
        if let Some(addr) = *srv.ws_addr.lock() {
            let (host, port) = match &opts.websocket.advertise {
                Some(adv) => crate::server::split_host_port(adv, addr.port()),
                None => (addr.ip().to_string(), addr.port()),
            };
            info.host = host;
            info.port = port;
        }
        info.connect_urls = Vec::new();
        info.encode(&mut shared.out.lock().buf);
    }
    tokio::spawn(run(srv, shared, over_limit, None, Some(reader), nonce));
}

/// The authorization a client is checked against and its `no_auth_user`: the server's, or
/// for a WebSocket client the `websocket {}` block's when that has its own (nats-server's
/// auth override: its user/password/token replace the server's, the users list stays).
pub(crate) fn client_auth(
    opts: &Options,
    ws: bool,
) -> (
    std::borrow::Cow<'_, crate::options::Authorization>,
    Option<&str>,
) {
    if ws && opts.websocket.auth_override() {
        let w = &opts.websocket;
        let auth = crate::options::Authorization {
            token: w.token.clone(),
            user: w.user.clone(),
            password: w.password.clone(),
            users: opts.auth.users.clone(),
            nkeys: opts.auth.nkeys.clone(),
            operator: opts.auth.operator.clone(),
            timeout: w.auth_timeout.unwrap_or(opts.auth.timeout),
        };
        (std::borrow::Cow::Owned(auth), w.no_auth_user.as_deref())
    } else {
        (
            std::borrow::Cow::Borrowed(&opts.auth),
            opts.no_auth_user.as_deref(),
        )
    }
}

/// Starts serving one accepted connection.
pub(crate) fn spawn(srv: Arc<ServerInner>, stream: TcpStream, peer: SocketAddr, cid: u64) {
    let shared = Arc::new(ClientShared::new(cid, peer, stream));
    let over_limit = register(&srv, &shared);
    // With TLS, INFO is still plain text (the client upgrades after reading it), but the
    // reader sends it itself right before the handshake so that no plain byte can be left in
    // the outbound buffer once the session is installed. A refused client (over the limit)
    // gets INFO and its -ERR in plain text, as from nats-server.
    let tls = if over_limit {
        None
    } else {
        srv.tls.read().clone()
    };
    let mut tls_info = Vec::new();
    let nonce = srv.opts().auth.nonce_required().then(auth::new_nonce);
    {
        let mut info = srv.info_template();
        info.client_id = cid;
        info.client_ip = peer.ip().to_string();
        info.nonce.clone_from(&nonce);
        match tls {
            Some(_) => info.encode(&mut tls_info),
            None => info.encode(&mut shared.out.lock().buf),
        }
    }
    tokio::spawn(run(
        srv,
        shared,
        over_limit,
        tls.map(|t| Box::new((t, tls_info))),
        None,
        nonce,
    ));
}

/// The life of a client connection: reader and writer until it closes, then clean-up.
async fn run(
    srv: Arc<ServerInner>,
    shared: Arc<ClientShared>,
    over_limit: bool,
    // Boxed, as every state a plain connection does not need (see `spawn`).
    tls: Option<Box<(tls::TlsSettings, Vec<u8>)>>,
    ws: Option<Box<crate::ws::WsReader>>,
    nonce: Option<String>,
) {
    let cid = shared.cid;
    let peer = shared.peer;
    {
        let mut conn = Conn::new(srv.clone(), shared.clone());
        conn.ws = ws;
        conn.nonce = nonce;
        let reader = async {
            let reason = if over_limit {
                conn.send_err("maximum connections exceeded");
                CloseReason::MaxConnectionsExceeded
            } else if let Some(tls) = tls {
                let (tls, tls_info) = *tls;
                match Box::pin(conn.tls_handshake(tls, &tls_info)).await {
                    Ok(()) => conn.read_loop().await,
                    Err(reason) => reason,
                }
            } else {
                conn.read_loop().await
            };
            conn.wake_writers();
            conn.shared.close(reason);
            // Taken before the subscriptions go, for `/connz?state=closed&subs=1`; without
            // a monitoring port nobody can ask, so the ring keeps no copy.
            let subs = if conn.opts.monitoring() {
                monitor::sub_details(&conn.shared)
            } else {
                Vec::new()
            };
            conn.remove_all_subs().await;
            let account = conn.matches.account();
            account.client_left();
            let (out_msgs, out_bytes, _) = conn.shared.out_stats();
            account.add_closed_traffic(
                conn.shared.in_msgs.load(Ordering::Relaxed),
                conn.shared.in_bytes.load(Ordering::Relaxed),
                out_msgs,
                out_bytes,
            );
            (subs, conn.connected)
        };
        let writer = write_loop(&srv, &shared, false);
        let ((subs, connected), ()) = tokio::join!(reader, writer);
        if let Some(r) = shared.close_reason() {
            debug!(cid, %peer, "Client connection closed: {r}");
            if connected {
                crate::sys::client_disconnected(&srv, &shared, r);
            }
        }
        srv.closed.push(ClosedConn::new(&shared, subs));
        srv.connection_closed(cid);
    }
    // Every connection holds this future for its whole life: rare, large states (the TLS
    // handshake, bcrypt, a reload, a producer stall) are boxed inside it so an idle plain
    // connection stays small (2 KB here, 4.8 KB in all with its buffers and subscription).
}

/// Writes whatever is queued for this client when a publisher could not write it
/// directly, in as few syscalls as possible, and closes the socket at the end.
/// A route (`route: true`) is never closed for a slow write, as in nats-server; its pending
/// data is bounded by the forwarder instead.
pub(crate) async fn write_loop(srv: &ServerInner, shared: &ClientShared, route: bool) {
    let mut opts = srv.opts_tx.subscribe();
    let mut deadline = opts.borrow_and_update().write_deadline;
    let mut batch: Vec<u8> = Vec::new();
    // WebSocket clients: the framed bytes of each batch.
    let mut framed: Vec<u8> = Vec::new();
    loop {
        // A reload may change the write deadline: one check per write, not per message.
        if opts.has_changed().unwrap_or(false) {
            deadline = opts.borrow_and_update().write_deadline;
        }
        let mut head = 0;
        let direct = {
            let mut out = shared.out.lock();
            if out.direct {
                true
            } else {
                out.in_flight = 0;
                if out.buf.is_empty() {
                    if out.close.is_some() {
                        break;
                    }
                } else {
                    batch.clear();
                    std::mem::swap(&mut batch, &mut out.buf);
                    head = std::mem::take(&mut out.head);
                    out.in_flight = batch.len() - head;
                }
                false
            }
        };
        if direct {
            // A publisher is writing; it wakes this task if it leaves anything behind.
            shared.writer_wake.notified().await;
            continue;
        }
        if batch.is_empty() {
            // Encrypted records a direct write or a read left behind when the socket was full.
            let tls_pending = shared.tls.get().is_some_and(|s| s.wants_write());
            // Control frames (a pong, a close) the WebSocket reader queued.
            let ws_pending = shared.ws.get().is_some_and(|w| w.has_control());
            if !tls_pending && !ws_pending {
                shared.writer_wake.notified().await;
                continue;
            }
        }
        let data = match shared.ws.get() {
            None => &batch[head..],
            Some(ws) => {
                if let Err(e) = ws.frame(&batch[head..], &mut framed) {
                    trace!(cid = shared.cid, "websocket framing error: {e}");
                    shared.close(CloseReason::WriteError);
                    break;
                }
                &framed[..]
            }
        };
        let write = write_all(shared, data);
        let written = if route {
            Ok(write.await)
        } else {
            tokio::time::timeout(deadline, write).await
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                trace!(cid = shared.cid, "write error: {e}");
                shared.close(CloseReason::WriteError);
                break;
            }
            Err(_) => {
                // Already closed as a slow consumer by a publisher: counted once, there.
                if shared.close(CloseReason::SlowConsumerWriteDeadline) {
                    warn!(cid = shared.cid, peer = %shared.peer, "Slow Consumer Detected: WriteDeadline of {:?} exceeded", deadline);
                    srv.count_slow_consumer(shared);
                }
                break;
            }
        }
        shared.out.lock().in_flight = 0;
        shared.drained.notify_waiters();
        // Keep a burst's buffer for the next burst, but not forever; a small write (INFO,
        // a PONG, a few messages) gives its buffer back: regrowing one is cheap, and most
        // connections are idle most of the time.
        if batch.len() - head <= SMALL_WRITE || batch.capacity() > MAX_IDLE_OUT_BUF {
            batch = Vec::new();
        } else {
            batch.clear();
        }
        if framed.capacity() > MAX_IDLE_OUT_BUF {
            framed = Vec::new();
        }
    }
    if let Some(ws) = shared.ws.get() {
        // The close frame with nats-server's status for the reason (unless the client's own
        // close frame was already answered); none for a slow or broken connection.
        if let Some(r) = shared
            .close_reason()
            .filter(|r| !r.is_slow_consumer() && *r != CloseReason::WriteError)
        {
            ws.queue_close(crate::ws::close_status(r), &r.to_string());
            if ws.frame(&[], &mut framed).is_ok() {
                let _ = Box::pin(tokio::time::timeout(deadline, write_all(shared, &framed))).await;
            }
        }
    }
    if let Some(tls) = shared.tls.get() {
        // close_notify lets the client tell a clean close from a cut connection; a slow
        // consumer or a broken socket gets none.
        if matches!(shared.close_reason(), Some(r) if !r.is_slow_consumer() && r != CloseReason::WriteError)
        {
            Box::pin(tls.close(&shared.stream, deadline)).await;
        }
    }
    let _ = rustix::net::shutdown(&shared.stream, rustix::net::Shutdown::Both);
}

pub(crate) async fn write_all(shared: &ClientShared, data: &[u8]) -> std::io::Result<()> {
    match shared.tls.get() {
        None => write_all_plain(&shared.stream, data).await,
        // Boxed: its state is large, and plain connections should not carry it.
        Some(tls) => Box::pin(tls.write_all(&shared.stream, data)).await,
    }
}

async fn write_all_plain(stream: &TcpStream, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match stream.try_write(data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reader-side state of one connection; only its own task touches it. A route's reader
/// uses one too, for its local deliveries.
pub(crate) struct Conn {
    srv: Arc<ServerInner>,
    shared: Arc<ClientShared>,
    /// The options this connection works with; replaced between reads after a reload.
    opts: Arc<Options>,
    opts_rx: watch::Receiver<Arc<Options>>,
    limits: Limits,
    auth_required: bool,
    connected: bool,
    copts: ConnectOptions,
    /// The nonce of this client's INFO, when one was sent (nkey users sign it).
    nonce: Option<String>,
    /// JWT users: when the login ends, once known (the read loop arms its timer with it).
    expires_at: Option<tokio::time::Instant>,
    /// JWT users: their own subscription and payload limits (`None`: unlimited).
    user_max_subs: Option<usize>,
    user_max_payload: Option<usize>,
    perms: Option<ClientPermissions>,
    /// Match results of this connection's account (the account is the cache's).
    matches: MatchCache,
    /// Fan-out of this connection's messages to every kind of subscriber.
    router: Router,
    pings_out: u32,
    /// Whether the client sent anything since the last ping timer; an active client is not pinged.
    active: bool,
    rtt_known: bool,
    /// A SUB or UNSUB in the current read: activity for monitoring.
    interest_changed: bool,
    /// When the last server PING went out, to measure the round trip at its PONG.
    ping_sent_at: Option<Instant>,
    batch_in_msgs: u64,
    batch_in_bytes: u64,
    /// A WebSocket client: its deframer (taken by the read loop) and whether the
    /// `websocket {}` block's authorization applies.
    ws: Option<Box<crate::ws::WsReader>>,
    is_ws: bool,
    /// Whether to poll the socket a little before parking (see `spin.rs`).
    spin: crate::spin::SpinState,
    /// Consecutive PUBs of the current read to one subject, routed together (boxed: made
    /// by the first PUB, so connections that only subscribe do not carry it).
    run: Option<Box<PubRun>>,
}

/// Messages larger than this are routed one by one (a run's encoded copy stays small).
const RUN_MAX_PAYLOAD: usize = 4096;
/// A run ends at this many messages or payload bytes.
const RUN_MAX_MSGS: usize = 1024;
const RUN_MAX_BYTES: usize = 32 * 1024;

/// A run of PUBs without reply, one after another in one read to the same subject, as
/// ranges of the read buffer: a streaming publisher's read is routed as one batch (see
/// [`Router::route_run`]), in order, before anything else in the read is processed.
#[derive(Debug, Default)]
struct PubRun {
    subj: (usize, usize),
    payloads: Vec<(usize, usize)>,
    bytes: usize,
}

impl PubRun {
    /// Adds a message; false when it cannot join the current run (another subject, or the
    /// run is full): flush it first.
    #[inline]
    fn push(&mut self, buf: &[u8], subj: (usize, usize), payload: (usize, usize)) -> bool {
        if !self.payloads.is_empty() {
            let (a, b) = (self.subj, subj);
            if self.payloads.len() >= RUN_MAX_MSGS
                || self.bytes + payload.1 > RUN_MAX_BYTES
                || !router::same_subject(&buf[a.0..a.0 + a.1], &buf[b.0..b.0 + b.1])
            {
                return false;
            }
        } else {
            self.subj = subj;
        }
        self.payloads.push(payload);
        self.bytes += payload.1;
        true
    }
}

/// One read of protocol bytes: straight from the socket (or TLS session), or through the
/// WebSocket deframer.
fn read_some(
    shared: &ClientShared,
    ws: Option<&mut crate::ws::WsReader>,
    dst: &mut [u8],
    more: &mut bool,
) -> std::io::Result<usize> {
    match ws {
        None => shared.read(dst, more),
        Some(ws) => ws.read(shared, dst, more),
    }
}

/// A timer a connection holds only while it needs it (see `Conn::read_loop`).
type Timer = std::pin::Pin<Box<tokio::time::Sleep>>;

/// Whether the ping timer or a login's expiry is due: a spinning reader leaves the spin
/// for the select that handles them.
fn timers_due(ping: &tokio::time::Sleep, expiry: Option<&Timer>) -> bool {
    let now = tokio::time::Instant::now();
    ping.deadline() <= now || expiry.is_some_and(|t| t.deadline() <= now)
}

/// Waits for `timer`; never, when there is none.
async fn fire(timer: &mut Option<Timer>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

const DIRECT_FLUSH_MAX_MSGS: u64 = 4;
/// Outbound buffers larger than this are released once written.
const MAX_IDLE_OUT_BUF: usize = 1 << 20;
/// A direct write that emptied the buffer keeps it up to this capacity.
const KEEP_DIRECT_BUF: usize = 256;
/// Writes up to this size release their buffer instead of keeping it for the next one.
const SMALL_WRITE: usize = 2048;
const MIN_READ_BUF: usize = 512;
const MAX_READ_BUF: usize = 64 * 1024;
/// First server PING comes this soon after CONNECT so a dead client is found early.
const FIRST_PING: Duration = Duration::from_secs(2);

enum Event {
    Read(std::io::Result<usize>),
    Kill,
    Ping,
    AuthTimeout,
    Expired,
}

impl Conn {
    pub(crate) fn new(srv: Arc<ServerInner>, shared: Arc<ClientShared>) -> Self {
        let mut opts_rx = srv.opts_tx.subscribe();
        let opts = opts_rx.borrow_and_update().clone();
        let limits = Limits {
            max_control_line: opts.max_control_line,
            max_payload: opts.max_payload,
        };
        let is_ws = shared.ws.get().is_some();
        let (auth, no_auth_user) = client_auth(&opts, is_ws);
        let auth_required = auth.required();
        // Before CONNECT (allowed when no authentication is required) a client is in the
        // account of `no_auth_user`, or the global one.
        let account = srv.accounts.for_user(
            no_auth_user
                .and_then(|u| opts.auth.users.iter().find(|x| x.user == u))
                .and_then(|u| u.account.as_deref()),
        );
        drop(auth);
        account.client_joined();
        *shared.account.lock() = account.name.clone();
        Conn {
            auth_required,
            ws: None,
            is_ws,
            opts,
            opts_rx,
            limits,
            connected: false,
            copts: ConnectOptions::default(),
            nonce: None,
            expires_at: None,
            user_max_subs: None,
            user_max_payload: None,
            perms: None,
            matches: MatchCache::new(account),
            router: Router::new(srv.clone(), shared.cid),
            pings_out: 0,
            active: false,
            rtt_known: false,
            interest_changed: false,
            ping_sent_at: None,
            batch_in_msgs: 0,
            batch_in_bytes: 0,
            spin: crate::spin::SpinState::default(),
            run: None,
            srv,
            shared,
        }
    }

    async fn read_loop(&mut self) -> CloseReason {
        let mut rb = ReadBuf::new(MIN_READ_BUF, MAX_READ_BUF);
        let mut ping_interval = self.opts.ping_interval;
        let ping = tokio::time::sleep(ping_interval.min(FIRST_PING));
        tokio::pin!(ping);
        let auth_timeout = match self.opts.websocket.auth_timeout {
            Some(t) if self.is_ws => t,
            _ => self.opts.auth_timeout(),
        };
        // Timers only some connections need live on the heap, and only while needed: every
        // connection's task carries its future for its whole life (idle connections stay
        // small). The login deadline goes once the client is in; JWT users get an expiry,
        // armed when the login is accepted (see `expires_at`).
        let mut auth: Option<Timer> = self
            .auth_required
            .then(|| Box::pin(tokio::time::sleep(auth_timeout)));
        let mut expiry: Option<Timer> = None;
        self.wake_writers();
        let mut ws = self.ws.take();
        // TLS: the handshake's last read may already hold the client's first ops.
        let mut tls_more = self.shared.tls.get().is_some();
        loop {
            // A reload wakes every reader (see `ClientShared::wake_for_reload`), so the
            // new options apply before the next read, also on an idle connection. One
            // atomic load per read.
            if self.opts_rx.has_changed().unwrap_or(false) {
                let new = self.opts_rx.borrow_and_update().clone();
                let result = Box::pin(self.apply_reload(new)).await;
                self.wake_writers();
                if let Err(reason) = result {
                    return reason;
                }
                if self.opts.ping_interval != ping_interval {
                    ping_interval = self.opts.ping_interval;
                    ping.as_mut()
                        .reset(tokio::time::Instant::now() + ping_interval);
                }
            }
            let mut room = 0;
            if let Some(at) = self.expires_at.take() {
                expiry = Some(Box::pin(tokio::time::sleep_until(at)));
            }
            if self.connected && auth.is_some() {
                auth = None;
            }
            // A client trading one message at a time polls its socket a little before it
            // parks (see `spin.rs`); plain TCP only, and never past a timer that is due
            // (the ping, a login's expiry): those fire in the select below.
            let spun = if self.spin.take_armed()
                && !self.opts.spin_wait.is_zero()
                && ws.is_none()
                && !tls_more
                && auth.is_none()
                && !timers_due(&ping, expiry.as_ref())
            {
                room = rb.make_room();
                Box::pin(crate::spin::spin_read(
                    &self.srv.spinners,
                    &mut self.spin,
                    &self.shared,
                    &mut rb.buf[rb.end..],
                    self.opts.spin_wait,
                ))
                .await
            } else {
                None
            };
            let event = if let Some(r) = spun {
                Event::Read(r)
            } else if std::mem::take(&mut tls_more) {
                // Decrypted bytes are waiting in the TLS session: the socket may have nothing.
                room = rb.make_room();
                Event::Read(read_some(
                    &self.shared,
                    ws.as_deref_mut(),
                    &mut rb.buf[rb.end..],
                    &mut tls_more,
                ))
            } else {
                rb.release_if_idle();
                tokio::select! {
                    biased;
                    _ = self.shared.kill.notified() => Event::Kill,
                    r = self.shared.stream.readable() => match r {
                        Ok(()) => {
                            room = rb.make_room();
                            Event::Read(read_some(&self.shared, ws.as_deref_mut(), &mut rb.buf[rb.end..], &mut tls_more))
                        }
                        Err(e) => Event::Read(Err(e)),
                    },
                    _ = &mut ping => Event::Ping,
                    _ = fire(&mut auth), if auth.is_some() && !self.connected => Event::AuthTimeout,
                    _ = fire(&mut expiry), if expiry.is_some() => Event::Expired,
                }
            };
            let n = match event {
                Event::Read(Ok(0)) => return CloseReason::ClientClosed,
                Event::Read(Ok(n)) => n,
                Event::Read(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Event::Read(Err(_)) => return CloseReason::ReadError,
                Event::Kill => match self.shared.close_reason() {
                    Some(reason) => return reason,
                    // Woken for a reload: applied at the top of the loop.
                    None => continue,
                },
                Event::AuthTimeout => {
                    self.send_err("Authentication Timeout");
                    return CloseReason::AuthenticationTimeout;
                }
                Event::Expired => {
                    self.send_err("User Authentication Expired");
                    return CloseReason::AuthenticationExpired;
                }
                Event::Ping => {
                    if let Err(reason) = self.ping_timer() {
                        return reason;
                    }
                    self.wake_writers();
                    ping.as_mut()
                        .reset(tokio::time::Instant::now() + ping_interval);
                    continue;
                }
            };
            self.active = true;
            rb.end += n;
            loop {
                match parse_client_op(&rb.buf[rb.start..rb.end], &self.limits) {
                    Ok(Parsed::Op(op, used)) => {
                        rb.start += used;
                        if let ClientOp::Pub {
                            subject,
                            reply: None,
                            payload,
                        } = op
                        {
                            if self.connected
                                && payload.len() <= RUN_MAX_PAYLOAD
                                && !self.copts.verbose
                                && !self.copts.pedantic
                            {
                                let base = rb.buf.as_ptr() as usize;
                                let subj = (subject.as_ptr() as usize - base, subject.len());
                                let pay = (payload.as_ptr() as usize - base, payload.len());
                                let run = self.run.get_or_insert_with(Box::default);
                                if !run.push(&rb.buf, subj, pay) {
                                    self.flush_run(&rb.buf);
                                    if let Some(run) = &mut self.run {
                                        run.push(&rb.buf, subj, pay);
                                    }
                                }
                                continue;
                            }
                        }
                        self.flush_run(&rb.buf);
                        let result = match op {
                            // Checking the credentials may wait for bcrypt: nothing after
                            // this CONNECT is processed until they are decided.
                            ClientOp::Connect(json) if self.auth_required && !self.connected => {
                                let deadline = auth.get_or_insert_with(|| {
                                    Box::pin(tokio::time::sleep(auth_timeout))
                                });
                                Box::pin(self.connect_with_auth(json, deadline.as_mut())).await
                            }
                            op => self.process(op),
                        };
                        if let Err(reason) = result {
                            return reason;
                        }
                    }
                    Ok(Parsed::Incomplete { need }) => {
                        self.flush_run(&rb.buf);
                        rb.reserve(need);
                        break;
                    }
                    Err(e) => {
                        self.flush_run(&rb.buf);
                        let first = rb.buf.get(rb.start).copied();
                        return self.parse_error(e, first);
                    }
                }
            }
            rb.settle(n, room);
            let few = self.batch_in_msgs <= DIRECT_FLUSH_MAX_MSGS;
            self.end_of_read();
            self.spin.arm(few && self.shared.tls.get().is_none());
            if self.router.has_stalled() {
                Box::pin(self.stall_for_receivers()).await;
            }
        }
    }
}

impl Conn {
    /// Sends INFO in plain text and performs the TLS handshake the client then starts, within
    /// the TLS timeout. A client that speaks plain NATS instead, or sends nothing in time, gets
    /// a plain-text `-ERR 'Secure Connection - TLS Required'`. (nats-server 2.9/2.10 closes
    /// such clients with no readable error: Go's TLS layer rejects the plain bytes, and its
    /// timeout -ERR goes into the unfinished TLS session. The explicit text tells a
    /// misconfigured client what is wrong, and clients already know it as a closing error.)
    async fn tls_handshake(
        &mut self,
        tls: tls::TlsSettings,
        info: &[u8],
    ) -> Result<(), CloseReason> {
        let shared = self.shared.clone();
        let mut started = false;
        // handshake_first: nothing before the handshake; INFO is the first encrypted bytes.
        let first = tls.handshake_first;
        let allow_plain = tls.allow_non_tls && !first;
        let plain_info = if first { &[][..] } else { info };
        let result = tokio::select! {
            biased;
            _ = shared.kill.notified() => {
                return Err(shared.close_reason().unwrap_or(CloseReason::ServerShutdown));
            }
            r = tokio::time::timeout(
                tls.timeout,
                tls::handshake(&shared.stream, tls.config, plain_info, allow_plain, &mut started),
            ) => r,
        };
        let cid = shared.cid;
        match result {
            Ok(Ok(tls::Upgrade::Tls(session))) => {
                let session = tls::Session::new(*session);
                let cert = session.peer_certificate();
                if !tls::pinned_ok(tls.pinned.as_deref(), cert.as_deref()) {
                    debug!(cid, peer = %shared.peer, "TLS handshake error: certificate not pinned");
                    return Err(CloseReason::TlsHandshakeError);
                }
                let _ = shared.tls.set(Box::new(session));
                if first {
                    shared.out.lock().buf.extend_from_slice(info);
                }
                Ok(())
            }
            Ok(Ok(tls::Upgrade::Plain)) => Ok(()),
            Ok(Err(HandshakeError::NotTls)) => {
                debug!(cid, peer = %shared.peer, "TLS handshake error: client sent plain text");
                self.send_err("Secure Connection - TLS Required");
                Err(CloseReason::TlsHandshakeError)
            }
            Ok(Err(HandshakeError::Closed)) => Err(CloseReason::ClientClosed),
            Ok(Err(e)) => {
                debug!(cid, peer = %shared.peer, "TLS handshake error: {e}");
                Err(CloseReason::TlsHandshakeError)
            }
            // A silent client may be a plain one waiting for something; nats-server too
            // takes it as plain once the TLS timeout is over.
            Err(_) if !started && allow_plain => Ok(()),
            Err(_) => {
                debug!(cid, peer = %shared.peer, "TLS handshake timeout");
                // Mid-handshake, a plain-text error would only garble the client's records.
                if !started && !first {
                    self.send_err("Secure Connection - TLS Required");
                }
                Err(CloseReason::TlsHandshakeError)
            }
        }
    }

    /// Handles one parsed operation. `Err` closes the connection with that reason (after
    /// flushing whatever was queued for the client, such as an `-ERR`).
    fn process(&mut self, op: ClientOp<'_>) -> Result<(), CloseReason> {
        if self.auth_required && !self.connected && !matches!(op, ClientOp::Connect(_)) {
            self.send_err("Authorization Violation");
            return Err(CloseReason::AuthenticationViolation);
        }
        match op {
            ClientOp::Pub {
                subject,
                reply,
                payload,
            } => {
                self.process_msg(subject, reply, None, payload);
            }
            ClientOp::HPub {
                subject,
                reply,
                headers,
                payload,
            } => {
                if !self.copts.headers {
                    // As nats-server: a client that did not negotiate headers is closed
                    // without an -ERR.
                    return Err(CloseReason::ProtocolViolation);
                }
                self.process_msg(subject, reply, Some(headers), payload);
            }
            ClientOp::Sub {
                subject,
                queue,
                sid,
            } => {
                self.interest_changed = true;
                self.process_sub(subject, queue, sid)
            }
            ClientOp::Unsub { sid, max } => {
                self.interest_changed = true;
                self.process_unsub(sid, max)
            }
            ClientOp::Ping => {
                self.send(encode::PONG);
            }
            ClientOp::Pong => {
                self.pings_out = 0;
                self.rtt_known = true;
                if let Some(sent) = self.ping_sent_at.take() {
                    self.set_rtt(sent.elapsed());
                }
            }
            ClientOp::Connect(json) => return self.process_connect(json),
            ClientOp::Info(_) | ClientOp::Ok => {}
            ClientOp::Err(text) => {
                debug!(
                    cid = self.shared.cid,
                    "client sent -ERR {}",
                    String::from_utf8_lossy(text)
                );
                return Err(CloseReason::ClientClosed);
            }
        }
        Ok(())
    }

    fn parse_error(&mut self, e: ParseError, first: Option<u8>) -> CloseReason {
        debug!(cid = self.shared.cid, peer = %self.shared.peer, "Client parser ERROR: {e}");
        if self.auth_required && !self.connected && !matches!(first, Some(b'C' | b'c')) {
            self.send_err("Authorization Violation");
            return CloseReason::AuthenticationViolation;
        }
        match e {
            ParseError::UnknownOp | ParseError::MissingPayloadTerminator => {
                self.send_err("Unknown Protocol Operation");
                CloseReason::ProtocolViolation
            }
            ParseError::ControlLineTooLong => {
                self.send_err("maximum control line exceeded");
                CloseReason::MaxControlLineExceeded
            }
            ParseError::PayloadTooLarge { .. } => {
                self.send_err("Maximum Payload Violation");
                CloseReason::MaxPayloadExceeded
            }
            // nats-server closes on malformed arguments without telling the client why.
            ParseError::BadArgs { .. } => CloseReason::ProtocolViolation,
        }
    }

    /// A CONNECT that needs no authentication: without authorization, or a repeated one
    /// (credentials are checked once; see `connect_with_auth`).
    fn process_connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let copts = self.parse_connect(json)?;
        self.finish_connect(copts, Ok(auth::Authenticated::default()))
    }

    /// The first CONNECT when authorization is required. The check runs while the read loop
    /// waits (bcrypt runs on the blocking pool, see `auth::Verifier`), bounded by what is
    /// left of the auth timeout.
    async fn connect_with_auth(
        &mut self,
        json: &[u8],
        auth_deadline: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Result<(), CloseReason> {
        let copts = self.parse_connect(json)?;
        let srv = self.srv.clone();
        let opts = self.opts.clone();
        let (auth, no_auth_user) = client_auth(&opts, self.is_ws);
        let mut copts = copts;
        let origin = self.origin();
        let verdict = match self.mapped_user(&opts) {
            Some(mapped) => Some(mapped.map(|(name, who)| {
                // Named in logs, `/connz` and later reload checks, as nats-server does.
                copts.user = Some(name);
                who
            })),
            None => tokio::select! {
                v = auth::authenticate(&srv.verifier, &auth, no_auth_user, origin, &copts) => Some(v),
                _ = auth_deadline => None,
            },
        };
        let Some(verdict) = verdict else {
            self.send_err("Authentication Timeout");
            return Err(CloseReason::AuthenticationTimeout);
        };
        self.finish_connect(copts, verdict)
    }

    /// With `verify_and_map` (and a `users` list), who the client certificate names, instead
    /// of CONNECT's credentials (see `certmap`); `None` when mapping is off.
    fn mapped_user(&self, opts: &Options) -> Option<Result<(String, auth::Authenticated), ()>> {
        opts.tls
            .as_ref()
            .filter(|t| t.verify_and_map && !self.is_ws)?;
        if opts.auth.users.is_empty() {
            return None;
        }
        let cert = self.shared.tls.get().and_then(|s| s.peer_certificate());
        let user = cert.and_then(|c| crate::certmap::user_for(&c, &opts.auth.users));
        if let Some(u) = user {
            debug!(cid = self.shared.cid, user = %u.user, "user mapped from the client certificate");
        }
        Some(
            user.map(|u| (u.user.clone(), auth::Authenticated::of(u)))
                .ok_or(()),
        )
    }

    fn parse_connect(&mut self, json: &[u8]) -> Result<ConnectOptions, CloseReason> {
        let copts: ConnectOptions = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(e) => {
                debug!(cid = self.shared.cid, "bad CONNECT json: {e}");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if !(0..=1).contains(&copts.protocol) {
            self.send_err("invalid client protocol");
            return Err(CloseReason::ProtocolViolation);
        }
        if copts.no_responders && !copts.headers {
            self.send_err("no responders requires headers support");
            return Err(CloseReason::ProtocolViolation);
        }
        Ok(copts)
    }

    /// Applies a parsed CONNECT; `verdict` is the authentication result, used only for the
    /// first one.
    fn finish_connect(
        &mut self,
        copts: ConnectOptions,
        verdict: Result<auth::Authenticated, ()>,
    ) -> Result<(), CloseReason> {
        // A repeated CONNECT is not authenticated again: a JWT user keeps its name.
        let mut jwt_user = if self.connected && self.copts.jwt.is_some() {
            Some(self.shared.meta.lock().user.clone())
        } else {
            None
        };
        if !self.connected {
            match verdict {
                Ok(who) => {
                    self.set_jwt_limits(&who);
                    jwt_user = who.name.clone();
                    let who_closed = who.no_connections;
                    self.set_permissions(who.permissions);
                    self.bind_account(who.account.as_deref());
                    let over = self.matches.account().over_max_connections();
                    if over || who_closed {
                        self.send_err("maximum account active connections exceeded");
                        return Err(CloseReason::MaxAccountConnectionsExceeded);
                    }
                    // As nats-server: a JWT user allowed no subscriptions at all is told so
                    // and closed.
                    if self.user_max_subs == Some(0) {
                        self.send_err("maximum subscriptions exceeded");
                        return Err(CloseReason::MaxSubscriptionsExceeded);
                    }
                    self.apply_account_limits();
                }
                Err(()) => {
                    warn!(cid = self.shared.cid, peer = %self.shared.peer, user = copts.user.as_deref().unwrap_or(""), "authentication error");
                    self.send_err("Authorization Violation");
                    return Err(CloseReason::AuthenticationViolation);
                }
            }
        }
        self.shared.headers.store(copts.headers, Ordering::Release);
        self.shared
            .async_info
            .store(copts.protocol >= 1, Ordering::Release);
        if !self.connected {
            // Like nats-server, a first estimate of the round trip: INFO went out on
            // accept and this CONNECT answers it. Server PINGs refine it later.
            self.set_rtt(self.shared.start.elapsed().unwrap_or_default());
            self.shared
                .last_activity
                .store(monitor::unix_nanos(SystemTime::now()), Ordering::Relaxed);
        }
        *self.shared.meta.lock() = ConnMeta {
            name: copts.name.clone().unwrap_or_default(),
            lang: copts.lang.clone().unwrap_or_default(),
            version: copts.version.clone().unwrap_or_default(),
            // nats-server shows an nkey or JWT user by its public key.
            user: copts
                .user
                .clone()
                .or_else(|| copts.nkey.clone())
                .or(jwt_user)
                .unwrap_or_default(),
        };
        self.copts = copts;
        let first = !self.connected;
        self.connected = true;
        if self.copts.verbose {
            self.send(encode::OK);
        }
        if first {
            crate::sys::client_connected(&self.srv, &self.shared);
        }
        Ok(())
    }

    fn process_msg(
        &mut self,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        self.batch_in_msgs += 1;
        self.batch_in_bytes += (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        if let Some(perms) = &mut self.perms {
            if !perms.can_publish(subj) {
                let text = format!(
                    "Permissions Violation for Publish to \"{}\"",
                    String::from_utf8_lossy(subj)
                );
                self.send_err(&text);
                return;
            }
        }
        if self.copts.pedantic && !subject::is_valid_literal_subject(subj) {
            self.send_err("Invalid Publish Subject");
        }
        if self.copts.verbose {
            self.send(encode::OK);
        }
        let result = self.matches.take(subj);
        let origin = Origin::Client {
            conn: &self.shared,
            echo: self.copts.echo,
        };
        let delivered = self.router.route(
            self.matches.account(),
            &result,
            origin,
            subj,
            reply,
            headers,
            payload,
        );
        self.matches.restore(result);
        if !delivered && self.copts.no_responders {
            if let Some(reply) = reply {
                self.no_responders(subj, reply);
            }
        }
    }

    /// Routes the pending run of PUBs (ranges of `buf`, the read buffer): one message as
    /// usual, several as one batch.
    fn flush_run(&mut self, buf: &[u8]) {
        let Some(run) = self.run.as_mut().filter(|r| !r.payloads.is_empty()) else {
            return;
        };
        let mut payloads = std::mem::take(&mut run.payloads);
        let run_bytes = std::mem::take(&mut run.bytes);
        let (at, len) = run.subj;
        let subj = &buf[at..at + len];
        // A subject allowed only as a reply (`allow_responses`) is counted per message.
        let allowed = match &mut self.perms {
            Some(perms) => perms.publish_allowed(subj),
            None => true,
        };
        if payloads.len() == 1 || !allowed {
            for &(at, len) in &payloads {
                self.process_msg(subj, None, None, &buf[at..at + len]);
            }
        } else {
            self.batch_in_msgs += payloads.len() as u64;
            self.batch_in_bytes += run_bytes as u64;
            let result = self.matches.take(subj);
            let origin = Origin::Client {
                conn: &self.shared,
                echo: self.copts.echo,
            };
            self.router.route_run(
                self.matches.account(),
                &result,
                origin,
                subj,
                buf,
                &payloads,
            );
            self.matches.restore(result);
        }
        payloads.clear();
        if let Some(run) = &mut self.run {
            run.payloads = payloads;
        }
    }

    /// Tells a requester nobody is listening: an empty message with status 503 on the reply
    /// subject, for the requester's own subscription that matches it.
    fn no_responders(&mut self, subj: &[u8], reply: &[u8]) {
        let result = self.matches.lookup(reply);
        let Some(sub) = result
            .psubs
            .iter()
            .find(|s| matches!(&s.0.owner, Subscriber::Client(c) if Arc::ptr_eq(c, &self.shared)))
        else {
            return;
        };
        let mut hdr = Vec::with_capacity(32 + subj.len());
        hdr.extend_from_slice(b"NATS/1.0 503\r\nNats-Subject: ");
        hdr.extend_from_slice(subj);
        hdr.extend_from_slice(b"\r\n\r\n");
        let sub = sub.0.clone();
        let mut out = self.shared.out.lock();
        encode::hmsg(&mut out.buf, reply, &sub.sid, None, &hdr, b"");
        drop(out);
        self.queue_self_flush();
    }

    /// SUB, checked in nats-server's order: permissions, the subscription limit, a duplicate
    /// sid (silently accepted), then the subject itself.
    fn process_sub(&mut self, subj: &[u8], queue: Option<&[u8]>, sid: &[u8]) {
        if let Some(perms) = &self.perms {
            if !perms.can_subscribe(subj) {
                let text = match queue {
                    Some(q) => format!(
                        "Permissions Violation for Subscription to \"{}\" using queue \"{}\"",
                        String::from_utf8_lossy(subj),
                        String::from_utf8_lossy(q)
                    ),
                    None => format!(
                        "Permissions Violation for Subscription to \"{}\"",
                        String::from_utf8_lossy(subj)
                    ),
                };
                self.send_err(&text);
                return;
            }
        }
        let server_max = self.opts.max_subscriptions;
        let account_max = self.matches.account().limits.read().max_subscriptions;
        let max_subs = match (server_max, account_max) {
            (0, a) => a,
            (s, 0) => s,
            (s, a) => s.min(a),
        };
        // A JWT user's own `subs` limit counts too (0: no subscriptions at all).
        let n = self.shared.subs.lock().len();
        let over = (max_subs > 0 && n >= max_subs) || self.user_max_subs.is_some_and(|u| n >= u);
        if over {
            self.send_err("maximum subscriptions exceeded");
            return;
        }
        let sub = {
            let mut subs = self.shared.subs.lock();
            if subs.contains_key(sid) {
                None
            } else {
                let sub = Subscription::new(
                    Subscriber::Client(self.shared.clone()),
                    self.matches.account().clone(),
                    subj,
                    queue,
                    sid,
                );
                subs.insert(sid.into(), sub.clone());
                Some(sub)
            }
        };
        if let Some(sub) = sub {
            // The sublist validates the subject as it inserts it.
            if router::subscribe(&self.srv, &sub).is_err() {
                self.shared.subs.lock().remove(sid);
                self.send_err("Invalid Subject");
                return;
            }
        }
        if self.copts.verbose {
            self.send(encode::OK);
        }
    }

    fn process_unsub(&mut self, sid: &[u8], max: Option<u64>) {
        let sub = self.shared.subs.lock().get(sid).cloned();
        if let Some(sub) = sub {
            match max {
                Some(m) if m > 0 && sub.delivered.load(Ordering::Acquire) < m => {
                    sub.max.store(m, Ordering::Release)
                }
                _ => self.remove_sub(&sub),
            }
        }
        if self.copts.verbose {
            self.send(encode::OK);
        }
    }

    /// Removes a subscription from the account and from its owner's table.
    fn remove_sub(&self, sub: &Arc<Subscription>) {
        router::unsubscribe(&self.srv, sub);
    }

    /// Takes every subscription of a closing client out of its account: in batches under
    /// one sublist write lock each, yielding between batches, so that publishers on other
    /// connections are not starved while a client with many subscriptions goes.
    async fn remove_all_subs(&mut self) {
        const BATCH: usize = 1024;
        let subs: Vec<_> = self.shared.subs.lock().drain().map(|(_, s)| s).collect();
        for chunk in subs.chunks(BATCH) {
            router::remove_batch_from_account(&self.srv, chunk);
            if chunk.len() == BATCH {
                tokio::task::yield_now().await;
            }
        }
        self.matches.clear();
    }

    /// Switches to reloaded options between two reads: new limits apply to the next
    /// operation; a connected client is checked against the new authorization and closed
    /// with 'Authorization Violation' when its user was removed or its password changed,
    /// and loses the subscriptions its new permissions deny (as nats-server).
    async fn apply_reload(&mut self, new: Arc<Options>) -> Result<(), CloseReason> {
        let old = std::mem::replace(&mut self.opts, new);
        let new = self.opts.clone();
        self.limits = Limits {
            max_control_line: new.max_control_line,
            max_payload: new.max_payload,
        };
        self.router.set_max_pending(new.max_pending);
        self.apply_account_limits();
        let (auth, no_auth_user) = client_auth(&new, self.is_ws);
        self.auth_required = auth.required();
        let mapping = |o: &Options| o.tls.as_ref().is_some_and(|t| t.verify_and_map);
        if !self.connected
            || (mapping(&old) == mapping(&new)
                && crate::reload::same_credentials(&old, &new, &self.copts))
        {
            return Ok(());
        }
        let srv = self.srv.clone();
        let origin = self.origin();
        let who = match self.mapped_user(&new) {
            Some(mapped) => mapped.map(|(_, who)| who),
            None => {
                auth::authenticate(&srv.verifier, &auth, no_auth_user, origin, &self.copts).await
            }
        };
        // A client whose user moved to another account is closed like one whose user went:
        // its subscriptions live in the old account's subject space.
        let same_account = |a: &Option<String>| {
            Arc::ptr_eq(
                self.matches.account(),
                &self.srv.accounts.for_user(a.as_deref()),
            )
        };
        match who {
            Ok(who) if same_account(&who.account) => {
                self.set_jwt_limits(&who);
                self.apply_account_limits();
                self.set_permissions(who.permissions);
                self.drop_denied_subs();
                Ok(())
            }
            _ if auth::jwt_revoked(&new.auth, &self.copts) => {
                warn!(cid = self.shared.cid, peer = %self.shared.peer, "User Authentication Revoked after config reload");
                self.send_err("User Authentication Revoked");
                Err(CloseReason::AuthenticationRevoked)
            }
            _ => {
                warn!(cid = self.shared.cid, peer = %self.shared.peer, user = self.copts.user.as_deref().unwrap_or(""), "Authorization Violation after config reload");
                self.send_err("Authorization Violation");
                Err(CloseReason::AuthenticationViolation)
            }
        }
    }

    /// Binds the client to the account its user belongs to (the global one for `None`).
    /// What authentication knows of this client besides its CONNECT.
    fn origin(&self) -> auth::Origin<'_> {
        auth::Origin {
            nonce: self.nonce.as_deref(),
            ip: Some(self.shared.peer.ip()),
            kind: if self.is_ws { "WEBSOCKET" } else { "STANDARD" },
        }
    }

    /// The account's `max_payload` where it is lower than the server's (and a JWT user's
    /// own where lower still).
    fn apply_account_limits(&mut self) {
        let l = *self.matches.account().limits.read();
        let server = self.opts.max_payload;
        self.limits.max_payload = if l.max_payload > 0 {
            l.max_payload.min(server)
        } else {
            server
        };
        if let Some(user) = self.user_max_payload {
            self.limits.max_payload = self.limits.max_payload.min(user);
        }
    }

    /// A JWT user's own limits and the end of its login.
    fn set_jwt_limits(&mut self, who: &auth::Authenticated) {
        self.user_max_subs = who.max_subs;
        self.user_max_payload = who.max_payload;
        self.expires_at = who.valid_for.map(|d| tokio::time::Instant::now() + d);
    }

    fn bind_account(&mut self, name: Option<&str>) {
        let account = self.srv.accounts.for_user(name);
        if Arc::ptr_eq(&account, self.matches.account()) {
            return;
        }
        // Subscriptions made before CONNECT stay where they are: move them first.
        let subs: Vec<_> = self.shared.subs.lock().values().cloned().collect();
        for s in &subs {
            router::remove_from_account(&self.srv, s);
        }
        self.matches.account().client_left();
        account.client_joined();
        *self.shared.account.lock() = account.name.clone();
        self.matches.set_account(account.clone());
        let mut table = self.shared.subs.lock();
        for s in subs {
            let moved = Subscription::new(
                s.owner.clone(),
                account.clone(),
                &s.subject,
                s.queue.as_deref(),
                &s.sid,
            );
            if router::subscribe(&self.srv, &moved).is_ok() {
                table.insert(moved.sid.clone(), moved);
            }
        }
    }

    /// Installs the permissions of the authenticated user (`None`: everything allowed),
    /// updating in place the part other connections check while delivering.
    fn set_permissions(&mut self, perms: Option<crate::options::Permissions>) {
        let existing = self.shared.delivery_perms.get().cloned();
        match perms {
            Some(p) => {
                let had = existing.is_some();
                let p = ClientPermissions::with_delivery(p, existing);
                if !had && p.delivery.is_active() {
                    let _ = self.shared.delivery_perms.set(p.delivery.clone());
                }
                self.perms = Some(p);
            }
            None => {
                if let Some(d) = existing {
                    d.update(Vec::new(), None);
                }
                self.perms = None;
            }
        }
    }

    /// After a reload: removes the subscriptions the new permissions no longer allow and
    /// tells the client about each.
    fn drop_denied_subs(&mut self) {
        let Some(perms) = &self.perms else {
            return;
        };
        let denied: Vec<_> = self
            .shared
            .subs
            .lock()
            .values()
            .filter(|s| !perms.can_subscribe(&s.subject))
            .cloned()
            .collect();
        for sub in denied {
            self.remove_sub(&sub);
            let subject = String::from_utf8_lossy(&sub.subject).into_owned();
            let sid = String::from_utf8_lossy(&sub.sid).into_owned();
            let text = match &sub.queue {
                Some(q) => format!(
                    "Permissions Violation for Subscription to \"{subject}\" using queue \"{}\" (sid \"{sid}\")",
                    String::from_utf8_lossy(q)
                ),
                None => format!("Permissions Violation for Subscription to \"{subject}\" (sid \"{sid}\")"),
            };
            tracing::info!(
                cid = self.shared.cid,
                "Removed sub \"{subject}\" (sid \"{sid}\") - not authorized"
            );
            self.send_err(&text);
        }
    }

    /// Server PING timer: ask an idle client for a PONG; too many unanswered means stale.
    /// As in nats-server it also runs before CONNECT, so a socket that never speaks is closed
    /// after about `ping_interval * ping_max` even without authorization; with it, the auth
    /// timer closes such a client first, and PINGs would only garble its transcript.
    fn ping_timer(&mut self) -> Result<(), CloseReason> {
        if !self.connected && self.auth_required {
            return Ok(());
        }
        if self.pings_out + 1 > self.opts.ping_max {
            self.send_err("Stale Connection");
            return Err(CloseReason::StaleConnection);
        }
        // The first PING goes out regardless of activity: its PONG tells us the round trip.
        if !std::mem::take(&mut self.active) || !self.rtt_known {
            self.pings_out += 1;
            self.ping_sent_at = Some(Instant::now());
            self.send(encode::PING);
        }
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) {
        self.shared.out.lock().buf.extend_from_slice(bytes);
        self.queue_self_flush();
    }

    fn send_err(&mut self, text: &str) {
        {
            let mut out = self.shared.out.lock();
            encode::err(&mut out.buf, text);
        }
        self.queue_self_flush();
    }

    fn queue_self_flush(&mut self) {
        self.router.queue_wake(&self.shared);
    }

    /// `/connz` `last_activity` as nats-server keeps it: a read that carried messages or
    /// changed interest, and a delivery to a receiver. Once per read, not per message:
    /// one vDSO clock read and plain atomic stores, no lock.
    fn record_activity(&mut self) {
        let own = self.batch_in_msgs > 0 || std::mem::take(&mut self.interest_changed);
        if !own && self.router.pending_wakes().is_empty() {
            return;
        }
        let now = monitor::unix_nanos(SystemTime::now());
        if own {
            self.shared.last_activity.store(now, Ordering::Relaxed);
        }
        for c in self.router.pending_wakes() {
            if !Arc::ptr_eq(c, &self.shared) {
                c.last_activity.store(now, Ordering::Relaxed);
            }
        }
    }

    fn set_rtt(&self, rtt: Duration) {
        let nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.shared.rtt_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Slows this publisher down, as nats-server does, when a receiver it just wrote to
    /// holds more than half of `max_pending`: the next read waits until that receiver's
    /// writer has drained below the half, for at most [`stall_duration`] per receiver. A
    /// healthy subscriber that reads as fast as it can is then never cut off by a burst;
    /// one that stops reading still reaches `max_pending` (or the write deadline) and is.
    async fn stall_for_receivers(&mut self) {
        // Streams are waited for without a deadline: their messages must not be lost, and
        // their queues drain as fast as the store takes them.
        for ingest in self.router.take_stalled_streams() {
            loop {
                let drained = ingest.drained.notified();
                if ingest.is_under_half() {
                    break;
                }
                drained.await;
            }
        }
        let stalled = self.router.take_stalled();
        if stalled.is_empty() {
            return;
        }
        let max_pending = self.opts.max_pending;
        for r in &stalled {
            if Arc::ptr_eq(r, &self.shared) {
                continue;
            }
            let (_, _, pending) = r.out_stats();
            let until = tokio::time::Instant::now() + stall_duration(pending, max_pending);
            loop {
                let drained = r.drained.notified();
                let (_, _, pending) = r.out_stats();
                if pending <= max_pending / 2 || r.is_closed() {
                    break;
                }
                if tokio::time::timeout_at(until, drained).await.is_err() {
                    debug!(
                        cid = self.shared.cid,
                        receiver = r.cid,
                        "Timed out of fast producer stall"
                    );
                    break;
                }
            }
        }
        self.router.restore_stalled(stalled);
    }

    /// Called after each read has been processed: publish counters, wake receivers once.
    pub(crate) fn end_of_read(&mut self) {
        self.record_activity();
        // A read that carried few messages is latency-bound (requests, replies, chat): write
        // them out now. A busy read is throughput-bound: leave the writes to the receivers'
        // writers, which then coalesce several reads' worth into each syscall.
        let direct = self.batch_in_msgs <= DIRECT_FLUSH_MAX_MSGS;
        if self.batch_in_msgs > 0 {
            let stats = &self.srv.stats;
            stats
                .in_msgs
                .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
            stats
                .in_bytes
                .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            self.shared
                .in_msgs
                .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
            self.shared
                .in_bytes
                .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            self.batch_in_msgs = 0;
            self.batch_in_bytes = 0;
        }
        self.router.flush(direct);
    }

    fn wake_writers(&mut self) {
        self.router.flush(true);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The direct write path over a real loopback socket: the buffer lock is free while the
    //! socket write runs, and bytes keep their order when the socket takes only part of them.

    use super::*;
    use std::cell::RefCell;
    use std::io::Read;

    type Hook = Box<dyn Fn(&ClientShared)>;

    thread_local! {
        static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
    }

    /// Called by `try_flush_now` between taking the buffer and writing it.
    pub(crate) fn direct_write_hook(shared: &ClientShared) {
        HOOK.with(|h| {
            if let Some(f) = h.borrow().as_ref() {
                f(shared);
            }
        });
    }

    fn set_hook(f: impl Fn(&ClientShared) + 'static) {
        HOOK.with(|h| *h.borrow_mut() = Some(Box::new(f)));
    }

    async fn pair() -> (ClientShared, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = std::net::TcpStream::connect(addr).expect("connect");
        let (server, remote) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        let stream = TcpStream::from_std(server).expect("tokio stream");
        // The reactor learns the socket is writable on its first turn.
        stream.writable().await.expect("writable");
        (ClientShared::new(1, remote, stream), peer)
    }

    fn frame(subject: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode::msg(&mut v, subject, b"1", None, payload);
        v
    }

    /// Reads what the kernel already holds for `peer`, without waiting for more.
    fn read_available(peer: &mut std::net::TcpStream) -> Vec<u8> {
        peer.set_nonblocking(true).expect("nonblocking");
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match peer.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn producers_do_not_wait_on_a_direct_write() {
        let (shared, mut peer) = pair().await;
        shared
            .queue_msg(b"1", b"first", None, None, b"one")
            .expect("queued");
        set_hook(|s| {
            // Before the fix the publisher held the buffer lock across the syscall.
            assert!(s.out.try_lock().is_some(), "buffer locked during the write");
            s.queue_msg(b"1", b"second", None, None, b"two")
                .expect("queued");
            // The writer task's view: a write is in flight, the buffer is not its to take.
            assert!(s.out.lock().direct);
        });
        shared.flush_or_wake(true);
        HOOK.with(|h| h.borrow_mut().take());
        // The second message waits for the writer (the caller wakes it).
        {
            let out = shared.out.lock();
            assert!(!out.direct);
            assert_eq!(&out.buf[out.head..], &frame(b"second", b"two")[..]);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        let want = frame(b"first", b"one");
        while got.len() < want.len() && Instant::now() < deadline {
            got.extend(read_available(&mut peer));
            tokio::task::yield_now().await;
        }
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn a_partial_direct_write_keeps_the_order() {
        let (shared, mut peer) = pair().await;
        // Larger than any socket buffer: the socket takes only part of it.
        let big = vec![b'x'; 16 << 20];
        shared
            .queue_msg(b"1", b"big", None, None, &big)
            .expect("queued");
        set_hook(|s| {
            s.queue_msg(b"1", b"after", None, None, b"tail")
                .expect("queued");
        });
        assert!(
            !shared.try_flush_now(),
            "16 MiB cannot all be taken at once"
        );
        HOOK.with(|h| h.borrow_mut().take());
        let mut want = frame(b"big", &big);
        want.extend(frame(b"after", b"tail"));
        let sent = read_available(&mut peer);
        assert!(!sent.is_empty() && sent.len() < want.len());
        let out = shared.out.lock();
        let mut all = sent;
        all.extend_from_slice(&out.buf[out.head..]);
        assert_eq!(all.len(), want.len());
        assert!(all == want, "bytes out of order after a partial write");
        assert_eq!(out.in_flight, 0);
    }
}
