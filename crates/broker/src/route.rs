//! Route connections: the listener, soliciting (with DNS re-resolution and back-off), the
//! handshake, and one task per route that reads interest and messages from a peer.
//!
//! Handshake, as nats-server: the accepting side sends INFO at once; the soliciting side
//! sends CONNECT then INFO. A route is registered when the peer's INFO arrives; a second
//! connection to an already registered server id is closed without touching the first, and
//! a connection to ourselves (same server id) is closed and its address never dialled again.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use midge_proto::encode;
use midge_proto::hash::{keyed_map, KeyedMap};
use midge_proto::parser::{parse_route_op, Limits, Parsed, RouteOp};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, trace, warn};

use crate::client::{self, ClientShared, CloseReason};
use crate::cluster::{self, join_host_port, Cluster, Route, RouteConnect, RouteInfo};
use crate::core::router::{self, MatchCache, Origin, Router};
use crate::core::{Subscriber, Subscription};
use crate::options::RouteUrl;
use crate::readbuf::ReadBuf;
use crate::server::ServerInner;

/// How long a route dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Back-off between attempts to reach a route: doubled after each failure up to the cap,
/// with jitter so that pods started together do not dial in lock step.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// Log a failing configured route at warn level on these attempts only; the rest go to
/// debug (a StatefulSet's peers are often missing for a while, that is not news).
const REPORT_EVERY: u32 = 30;
const MIN_READ_BUF: usize = 32 * 1024;
/// Accounts whose match caches a route reader keeps at once.
const MAX_ACCOUNT_CACHES: usize = 64;
/// Routes carry many clients' traffic: let full reads grow the buffer further than a client's.
const MAX_READ_BUF: usize = 256 * 1024;

/// Accepts route connections until shutdown.
pub(crate) async fn accept_loop(srv: Arc<ServerInner>, listener: TcpListener) {
    let mut shutdown = srv.shutdown_signal();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                tokio::spawn(run_route(srv.clone(), stream, peer, None));
            }
            Err(e) => {
                error!("Error accepting route connection: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    debug!("route accept loop stopped");
}

/// Starts soliciting every configured route (each retried forever).
pub(crate) fn solicit_configured(srv: &Arc<ServerInner>) {
    let opts = srv.opts();
    for text in &opts.cluster.routes {
        match RouteUrl::parse(text) {
            Ok(url) => spawn_connect(srv.clone(), url, true, None, Duration::ZERO),
            Err(e) => error!("{e}"),
        }
    }
}

/// Whether two route URLs name the same route: host names compare case-insensitively;
/// credentials count, so a changed password is a removed route plus an added one.
fn same_route(a: &RouteUrl, b: &RouteUrl) -> bool {
    a.port == b.port
        && a.host.eq_ignore_ascii_case(&b.host)
        && a.user == b.user
        && a.password == b.password
}

/// Whether `url` is still in the configured routes list (a reload may have removed it).
fn still_configured(srv: &ServerInner, url: &RouteUrl) -> bool {
    srv.opts()
        .cluster
        .routes
        .iter()
        .any(|t| RouteUrl::parse(t).is_ok_and(|u| same_route(&u, url)))
}

/// A reload changed `cluster.routes` (scale up or down): dial the added URLs as configured
/// routes (retried forever), and close the registered routes that were dialled through a
/// removed one without dialling them again, as nats-server does. Loops still trying a
/// removed URL stop at their next attempt (`connect_loop` checks the options in force,
/// which the reload has already switched). The other end of a closed route may still
/// come back: a peer that has us in its own routes list dials us again, and a removed
/// server that another member still knows is gossiped to us and connected to as an
/// implicit route, exactly as with nats-server; removing a server from the cluster means
/// removing it from every member's list (or stopping it).
pub(crate) fn reload_routes(
    srv: &Arc<ServerInner>,
    old: &crate::options::Options,
    new: &crate::options::Options,
) {
    let Some(cluster) = &srv.cluster else {
        return;
    };
    // Validation parsed every URL already; an unparsable one cannot be in force.
    let parse = |list: &[String]| -> Vec<RouteUrl> {
        list.iter()
            .filter_map(|t| RouteUrl::parse(t).ok())
            .collect()
    };
    let (before, after) = (parse(&old.cluster.routes), parse(&new.cluster.routes));
    let removed: Vec<&RouteUrl> = before
        .iter()
        .filter(|b| !after.iter().any(|a| same_route(a, b)))
        .collect();
    if !removed.is_empty() {
        let routes: Vec<Arc<Route>> = cluster.state.lock().routes.values().cloned().collect();
        for route in routes {
            let mut reconnect = route.reconnect.lock();
            let gone = matches!(&*reconnect, Some((url, true)) if removed.iter().any(|r| same_route(r, url)));
            if !gone {
                continue;
            }
            if let Some((url, _)) = reconnect.take() {
                info!(rid = route.rid, "Removed route {}", url.host_port());
            }
            drop(reconnect);
            route.conn.close(CloseReason::RouteRemoved);
        }
    }
    for url in after
        .iter()
        .filter(|a| !before.iter().any(|b| same_route(a, b)))
    {
        info!("Added route {}", url.host_port());
        spawn_connect(srv.clone(), url.clone(), true, None, Duration::ZERO);
    }
}

fn spawn_connect(
    srv: Arc<ServerInner>,
    url: RouteUrl,
    configured: bool,
    implicit_id: Option<String>,
    delay: Duration,
) {
    tokio::spawn(async move {
        let mut shutdown = srv.shutdown_signal();
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
        }
        connect_loop(&srv, url, configured).await;
        if let (Some(id), Some(cluster)) = (implicit_id, &srv.cluster) {
            cluster.state.lock().connecting.remove(&id);
        }
    });
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(rand::random_range(0.5..1.5))
}

/// Dials `url` until connected: host names are resolved again on every attempt (a
/// StatefulSet pod's name only resolves once the pod exists). Configured routes retry
/// forever; gossiped ones `connect_retries` times.
async fn connect_loop(srv: &Arc<ServerInner>, url: RouteUrl, configured: bool) {
    let Some(cluster) = &srv.cluster else {
        return;
    };
    let mut shutdown = srv.shutdown_signal();
    let mut attempts: u32 = 0;
    let mut delay = FIRST_RETRY;
    let target = url.host_port();
    loop {
        if srv.shutting_down.load(Ordering::Acquire) {
            return;
        }
        if configured && !still_configured(srv, &url) {
            debug!("Route {target} was removed from the configuration, no longer soliciting it");
            return;
        }
        let result: std::io::Result<(TcpStream, SocketAddr)> = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target).await?.collect();
            let candidates: Vec<SocketAddr> = {
                let selves = cluster.routes_to_self.lock();
                addrs
                    .iter()
                    .filter(|a| !selves.contains(a))
                    .copied()
                    .collect()
            };
            if candidates.is_empty() && !addrs.is_empty() {
                return Err(std::io::Error::other(SelfRoute));
            }
            // Every address in turn, from a random one: a name may resolve to several
            // (`localhost` to ::1 and 127.0.0.1) and not all of them listen.
            let mut last = std::io::Error::other("no address");
            let first = rand::random_range(0..candidates.len().max(1));
            for i in 0..candidates.len() {
                let addr = candidates[(first + i) % candidates.len()];
                trace!("Trying to connect to route on {target} ({addr})");
                match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(stream)) => return Ok((stream, addr)),
                    Ok(Err(e)) => last = e,
                    Err(_) => last = std::io::ErrorKind::TimedOut.into(),
                }
            }
            Err(last)
        }
        .await;
        match result {
            Ok((stream, addr)) => {
                let _ = stream.set_nodelay(true);
                run_route(srv.clone(), stream, addr, Some((url, configured))).await;
                return;
            }
            Err(e) if e.get_ref().is_some_and(|i| i.is::<SelfRoute>()) => {
                debug!("Route {target} is this server, ignoring it");
                if configured {
                    cluster.self_urls.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            Err(e) => {
                attempts += 1;
                if configured && (attempts == 1 || attempts % REPORT_EVERY == 0) {
                    warn!("Error trying to connect to route {target} (attempt {attempts}): {e}");
                } else {
                    debug!("Error trying to connect to route {target} (attempt {attempts}): {e}");
                }
                if !configured && attempts > srv.opts().cluster.connect_retries {
                    return;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(jittered(delay)) => {}
            _ = shutdown.changed() => return,
        }
        delay = (delay * 2).min(MAX_RETRY);
    }
}

/// Marker error: every address of a route URL is this server.
#[derive(Debug, thiserror::Error)]
#[error("route to self")]
struct SelfRoute;

/// Serves one route connection, from handshake to close, then decides whether to dial again.
async fn run_route(
    srv: Arc<ServerInner>,
    stream: TcpStream,
    peer: SocketAddr,
    solicited: Option<(RouteUrl, bool)>,
) {
    let Some(cluster) = srv.cluster.clone() else {
        return;
    };
    if srv.shutting_down.load(Ordering::Acquire) {
        return;
    }
    let rid = cluster.next_rid.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(ClientShared::new(rid, peer, stream));
    let tls = cluster.tls.read().clone();
    let tls_required = tls.is_some();
    let mut reader = RouteReader {
        router: Router::new(srv.clone(), rid),
        matches: keyed_map(),
        batch_in_msgs: 0,
        batch_in_bytes: 0,
        srv: srv.clone(),
        cluster: cluster.clone(),
        conn: conn.clone(),
        solicited,
        connected: false,
        route: None,
        self_route: false,
        duplicate: false,
        pings_out: 0,
        ping_sent: None,
        run: RouteRun::default(),
    };
    if let Some(tls) = tls {
        // As nats-server: TLS starts right away, before either side says anything.
        if let Err(e) = tls_handshake(&srv, &conn, &tls, reader.solicited.as_ref()).await {
            error!("{peer} - rid:{rid} - TLS route handshake error: {e}");
            reader.conn.close(CloseReason::TlsHandshakeError);
            reader.finish(CloseReason::TlsHandshakeError);
            return;
        }
    }
    let solicited = &reader.solicited;
    conn.append(0, 0, |out| {
        if let Some((url, _)) = solicited {
            let connect = RouteConnect {
                echo: true,
                verbose: false,
                pedantic: false,
                user: url.user.clone(),
                pass: url.password.clone(),
                tls_required,
                headers: true,
                name: srv.id.clone(),
                cluster: cluster.name(),
                dynamic: cluster.dynamic.load(Ordering::Relaxed),
                lang: None,
            };
            if let Ok(json) = serde_json::to_vec(&connect) {
                encode::connect(out, &json);
            }
        }
        if let Ok(json) = serde_json::to_vec(&cluster::route_info(&srv, &cluster)) {
            encode::info(out, &json);
        }
    });
    debug!("{peer} - rid:{rid} - Route connection created");
    let read = async {
        let reason = reader.read_loop().await;
        reader.end_of_read();
        reader.conn.close(reason);
        reason
    };
    let write = client::write_loop(&srv, &conn, true);
    let (reason, ()) = tokio::join!(read, write);
    reader.finish(reason);
}

/// Why a route's TLS handshake failed.
#[derive(Debug, thiserror::Error)]
enum RouteTlsError {
    #[error("{0}")]
    Handshake(#[from] crate::tls::HandshakeError),
    #[error("{0}")]
    ServerName(String),
    #[error("timeout")]
    Timeout,
    #[error("peer's certificate is not in pinned_certs")]
    NotPinned,
}

/// The TLS handshake of a new route: the client side when we dialled (verifying the peer
/// against `ca_file` under its URL's name), the server side otherwise (requiring a
/// certificate), both within the TLS timeout; then `pinned_certs`. Installs the session.
async fn tls_handshake(
    srv: &ServerInner,
    conn: &ClientShared,
    tls: &crate::tls::RouteTls,
    solicited: Option<&(RouteUrl, bool)>,
) -> Result<(), RouteTlsError> {
    let session = match solicited {
        Some((url, _)) => {
            let name = crate::tls::route_server_name(&url.host, &srv.opts().cluster.routes)
                .map_err(RouteTlsError::ServerName)?;
            let shake = crate::tls::client_handshake(&conn.stream, tls.dial.clone(), name);
            let c = tokio::time::timeout(tls.timeout, shake)
                .await
                .map_err(|_| RouteTlsError::Timeout)??;
            crate::tls::Session::new(*c)
        }
        None => {
            let mut started = false;
            let shake =
                crate::tls::handshake(&conn.stream, tls.accept.clone(), b"", false, &mut started);
            match tokio::time::timeout(tls.timeout, shake).await {
                Ok(Ok(crate::tls::Upgrade::Tls(c))) => crate::tls::Session::new(*c),
                Ok(Ok(crate::tls::Upgrade::Plain)) => {
                    return Err(crate::tls::HandshakeError::NotTls.into())
                }
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(RouteTlsError::Timeout),
            }
        }
    };
    if !crate::tls::pinned_ok(tls.pinned.as_deref(), session.peer_certificate().as_deref()) {
        return Err(RouteTlsError::NotPinned);
    }
    conn.set_tls(session);
    Ok(())
}

struct RouteReader {
    srv: Arc<ServerInner>,
    cluster: Arc<Cluster>,
    conn: Arc<ClientShared>,
    /// Local delivery of routed messages, batched like a client's.
    router: Router,
    /// Match results per account this route carries messages for.
    matches: KeyedMap<Box<[u8]>, MatchCache>,
    batch_in_msgs: u64,
    batch_in_bytes: u64,
    solicited: Option<(RouteUrl, bool)>,
    /// The accepting side got a valid CONNECT.
    connected: bool,
    route: Option<Arc<Route>>,
    self_route: bool,
    duplicate: bool,
    pings_out: u32,
    /// When the oldest unanswered PING went out: its PONG gives the route's RTT (`/routez`).
    ping_sent: Option<Instant>,
    /// Consecutive plain `RMSG`s of the current read to one account and subject, delivered
    /// together (see [`Router::route_run`]).
    run: RouteRun,
}

/// A run of `RMSG`s with no reply, queue groups, headers or origin, one after another to
/// the same account and subject, as ranges of the read buffer.
#[derive(Debug, Default)]
struct RouteRun {
    account: (usize, usize),
    subj: (usize, usize),
    payloads: Vec<(usize, usize)>,
    bytes: usize,
}

/// Messages larger than this are delivered one by one; a run ends at this many messages or
/// payload bytes (as a client's, see `client.rs`).
const RUN_MAX_PAYLOAD: usize = 4096;
const RUN_MAX_MSGS: usize = 1024;
const RUN_MAX_BYTES: usize = 32 * 1024;

impl RouteRun {
    /// Adds a message; false when it cannot join the current run: flush it first.
    #[inline]
    fn push(
        &mut self,
        buf: &[u8],
        account: (usize, usize),
        subj: (usize, usize),
        payload: (usize, usize),
    ) -> bool {
        let same = |a: (usize, usize), b: (usize, usize)| {
            router::same_subject(&buf[a.0..a.0 + a.1], &buf[b.0..b.0 + b.1])
        };
        if !self.payloads.is_empty() {
            if self.payloads.len() >= RUN_MAX_MSGS
                || self.bytes + payload.1 > RUN_MAX_BYTES
                || !same(self.subj, subj)
                || !same(self.account, account)
            {
                return false;
            }
        } else {
            self.account = account;
            self.subj = subj;
        }
        self.payloads.push(payload);
        self.bytes += payload.1;
        true
    }
}

enum Event {
    Read(std::io::Result<usize>),
    Kill,
    Ping,
    AuthTimeout,
}

impl RouteReader {
    async fn read_loop(&mut self) -> CloseReason {
        let limits = Limits {
            max_control_line: self.srv.opts().max_control_line.max(64 * 1024),
            max_payload: self.srv.opts().max_payload.max(64 * 1024 * 1024),
        };
        let mut rb = ReadBuf::new(MIN_READ_BUF, MAX_READ_BUF);
        let ping_interval = self.srv.opts().ping_interval;
        let ping = tokio::time::sleep(ping_interval);
        tokio::pin!(ping);
        let auth_timeout = tokio::time::sleep(self.srv.opts().cluster.auth_timeout);
        tokio::pin!(auth_timeout);
        let needs_auth = self.solicited.is_none() && self.srv.opts().cluster.user.is_some();
        let mut shutdown = self.srv.shutdown_signal();
        // TLS: the handshake's last read may already hold the peer's first bytes.
        let mut tls_more = self.conn.tls_established();
        self.conn.wake();
        loop {
            let room = rb.make_room();
            let event = tokio::select! {
                biased;
                _ = self.conn.kill.notified() => Event::Kill,
                _ = shutdown.changed() => Event::Kill,
                r = self.conn.stream.readable(), if !tls_more => match r {
                    Ok(()) => Event::Read(self.conn.read(&mut rb.buf[rb.end..], &mut tls_more)),
                    Err(e) => Event::Read(Err(e)),
                },
                // Decrypted bytes are waiting in the TLS session: the socket may have none.
                () = std::future::ready(()), if tls_more => {
                    Event::Read(self.conn.read(&mut rb.buf[rb.end..], &mut tls_more))
                }
                _ = &mut ping => Event::Ping,
                _ = &mut auth_timeout, if needs_auth && !self.connected => Event::AuthTimeout,
            };
            let n = match event {
                Event::Read(Ok(0)) => return CloseReason::ClientClosed,
                Event::Read(Ok(n)) => n,
                Event::Read(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Event::Read(Err(_)) => return CloseReason::ReadError,
                Event::Kill => {
                    return self
                        .conn
                        .close_reason()
                        .unwrap_or(CloseReason::ServerShutdown)
                }
                Event::AuthTimeout => {
                    self.send_err("Authentication Timeout");
                    return CloseReason::AuthenticationTimeout;
                }
                Event::Ping => {
                    if self.pings_out + 1 > self.srv.opts().ping_max {
                        self.send_err("Stale Connection");
                        return CloseReason::StaleConnection;
                    }
                    self.pings_out += 1;
                    self.ping_sent.get_or_insert_with(Instant::now);
                    self.send(encode::PING);
                    ping.as_mut()
                        .reset(tokio::time::Instant::now() + ping_interval);
                    continue;
                }
            };
            rb.end += n;
            if let Some(route) = &self.route {
                route.last_activity.store(
                    crate::monitor::unix_nanos(SystemTime::now()),
                    Ordering::Relaxed,
                );
            }
            loop {
                match parse_route_op(&rb.buf[rb.start..rb.end], &limits) {
                    Ok(Parsed::Op(op, used)) => {
                        rb.start += used;
                        if let RouteOp::Msg {
                            origin: None,
                            account,
                            subject,
                            reply: None,
                            queues: b"",
                            headers: None,
                            payload,
                        } = op
                        {
                            if self.route.is_some() && payload.len() <= RUN_MAX_PAYLOAD {
                                let base = rb.buf.as_ptr() as usize;
                                let at = |p: &[u8]| (p.as_ptr() as usize - base, p.len());
                                let (a, s, p) = (at(account), at(subject), at(payload));
                                if !self.run.push(&rb.buf, a, s, p) {
                                    self.flush_run(&rb.buf);
                                    self.run.push(&rb.buf, a, s, p);
                                }
                                continue;
                            }
                        }
                        self.flush_run(&rb.buf);
                        let result = match op {
                            // May wait for bcrypt, within the auth timeout; later ops wait.
                            RouteOp::Connect(json) => {
                                let checked = tokio::select! {
                                    r = self.process_connect(json) => Some(r),
                                    _ = &mut auth_timeout, if needs_auth && !self.connected => None,
                                };
                                checked.unwrap_or_else(|| {
                                    self.send_err("Authentication Timeout");
                                    Err(CloseReason::AuthenticationTimeout)
                                })
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
                        error!(rid = self.conn.cid, peer = %self.conn.peer, "Route parser error: {e}");
                        return CloseReason::ProtocolViolation;
                    }
                }
            }
            rb.settle(n, room);
            self.end_of_read();
        }
    }

    /// After each read: the read's inbound counters, and every receiver woken once.
    fn end_of_read(&mut self) {
        if self.batch_in_msgs > 0 {
            let stats = &self.srv.stats;
            stats
                .in_msgs
                .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
            stats
                .in_bytes
                .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            if let Some(route) = &self.route {
                route
                    .in_msgs
                    .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
                route
                    .in_bytes
                    .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            }
            self.batch_in_msgs = 0;
            self.batch_in_bytes = 0;
        }
        self.router.flush(false);
    }

    /// Delivers the pending run of `RMSG`s (ranges of `buf`, the read buffer): one message
    /// as usual, several as one batch.
    fn flush_run(&mut self, buf: &[u8]) {
        if self.run.payloads.is_empty() {
            return;
        }
        let mut payloads = std::mem::take(&mut self.run.payloads);
        let (aa, al) = self.run.account;
        let (sa, sl) = self.run.subj;
        let (account, subject) = (&buf[aa..aa + al], &buf[sa..sa + sl]);
        if payloads.len() == 1 {
            let (at, len) = payloads[0];
            self.deliver(None, account, subject, None, b"", None, &buf[at..at + len]);
        } else {
            self.batch_in_msgs += payloads.len() as u64;
            self.batch_in_bytes += self.run.bytes as u64;
            if let Some(cache) = self.account_cache(account) {
                let result = cache.lookup(subject);
                let acc = cache.account().clone();
                let origin = Origin::Route {
                    queues: b"",
                    origin: None,
                };
                self.router
                    .route_run(&acc, &result, origin, subject, buf, &payloads);
            }
        }
        payloads.clear();
        self.run.payloads = payloads;
        self.run.bytes = 0;
    }

    /// The match cache of `account`, made on first use; `None` for an unknown account.
    fn account_cache(&mut self, account: &[u8]) -> Option<&mut MatchCache> {
        if !self.matches.contains_key(account) {
            let Some(acc) = self.srv.accounts.get_bytes(account) else {
                trace!(
                    rid = self.conn.cid,
                    "message for unknown account {:?}",
                    String::from_utf8_lossy(account)
                );
                return None;
            };
            if self.matches.len() >= MAX_ACCOUNT_CACHES {
                self.matches.clear();
            }
            self.matches.insert(account.into(), MatchCache::new(acc));
        }
        self.matches.get_mut(account)
    }

    /// Delivers a routed message to this server's subscribers in `account` (one hop).
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        origin: Option<&[u8]>,
        account: &[u8],
        subject: &[u8],
        reply: Option<&[u8]>,
        queues: &[u8],
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        self.batch_in_msgs += 1;
        self.batch_in_bytes += (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        let Some(cache) = self.account_cache(account) else {
            return;
        };
        let result = cache.lookup(subject);
        let acc = cache.account().clone();
        self.router.route(
            &acc,
            &result,
            Origin::Route { queues, origin },
            subject,
            reply,
            headers,
            payload,
        );
    }

    fn send(&self, bytes: &[u8]) {
        self.conn.append(0, 0, |out| out.extend_from_slice(bytes));
        self.conn.wake();
    }

    fn send_err(&self, text: &str) {
        self.conn.append(0, 0, |out| encode::err(out, text));
        self.conn.wake();
    }

    fn process(&mut self, op: RouteOp<'_>) -> Result<(), CloseReason> {
        // As nats-server: an accepted route must start with CONNECT.
        if self.solicited.is_none() && !self.connected && !matches!(op, RouteOp::Connect(_)) {
            self.send_err("Authorization Violation");
            return Err(CloseReason::AuthenticationViolation);
        }
        match op {
            RouteOp::Msg {
                origin,
                account,
                subject,
                reply,
                queues,
                headers,
                payload,
            } => {
                if self.route.is_some() {
                    self.deliver(origin, account, subject, reply, queues, headers, payload);
                }
            }
            RouteOp::Sub {
                origin,
                account,
                subject,
                queue,
            } => self.remote_sub(origin, account, subject, queue),
            RouteOp::Unsub {
                account,
                subject,
                queue,
            } => self.remote_unsub(account, subject, queue),
            RouteOp::Ping => self.send(encode::PONG),
            RouteOp::Pong => {
                self.pings_out = 0;
                if let Some(sent) = self.ping_sent.take() {
                    let nanos = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    // 0 means "not measured yet".
                    self.conn.rtt_nanos.store(nanos.max(1), Ordering::Relaxed);
                }
            }
            // Handled by the read loop: checking credentials may have to wait.
            RouteOp::Connect(_) => {}
            RouteOp::Info(json) => return self.process_info(json),
            RouteOp::Ok => {}
            RouteOp::Err(text) => {
                let text = String::from_utf8_lossy(text);
                if self.route.is_some() {
                    error!(rid = self.conn.cid, "Route error: {text}");
                } else {
                    debug!(rid = self.conn.cid, "Route error: {text}");
                }
                return Err(CloseReason::ClientClosed);
            }
        }
        Ok(())
    }

    async fn process_connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        if self.solicited.is_some() {
            // We dialled: the peer is not supposed to send CONNECT; ignore it.
            return Ok(());
        }
        let c: RouteConnect = serde_json::from_slice(json).map_err(|e| {
            debug!(rid = self.conn.cid, "bad route CONNECT json: {e}");
            CloseReason::ProtocolViolation
        })?;
        if c.lang.as_deref().is_some_and(|l| !l.is_empty()) {
            self.send_err("attempted to connect to route port");
            return Err(CloseReason::ProtocolViolation);
        }
        let all_opts = self.srv.opts();
        let opts = &all_opts.cluster;
        if opts.user.is_some() {
            let auth = crate::options::Authorization {
                user: opts.user.clone(),
                password: opts.password.clone(),
                ..Default::default()
            };
            let copts = crate::info::ConnectOptions {
                user: c.user.clone(),
                pass: c.pass.clone(),
                ..Default::default()
            };
            let srv = self.srv.clone();
            if crate::auth::authenticate(
                &srv.verifier,
                &auth,
                None,
                crate::auth::Origin::PLAIN,
                &copts,
            )
            .await
            .is_err()
            {
                warn!(peer = %self.conn.peer, "Route authentication error");
                self.send_err("Authorization Violation");
                return Err(CloseReason::AuthenticationViolation);
            }
        }
        self.check_cluster_name(&c.cluster, c.dynamic, true)?;
        self.connected = true;
        Ok(())
    }

    /// A peer with another cluster name is refused, unless our name was generated: then,
    /// as nats-server, we take a configured name, or the greater of two generated ones.
    fn check_cluster_name(
        &mut self,
        theirs: &str,
        their_dynamic: bool,
        tell: bool,
    ) -> Result<(), CloseReason> {
        if theirs.is_empty() {
            return Ok(());
        }
        let mut ours = self.cluster.name.lock();
        if *ours == theirs {
            return Ok(());
        }
        if self.cluster.dynamic.load(Ordering::Relaxed)
            && (!their_dynamic || ours.as_str() < theirs)
        {
            info!("Cluster name updated to {theirs}");
            *ours = theirs.to_string();
            if !their_dynamic {
                self.cluster.dynamic.store(false, Ordering::Relaxed);
            }
            return Ok(());
        }
        let text =
            format!("Rejecting connection, cluster name \"{theirs}\" does not match \"{ours}\"");
        drop(ours);
        error!(peer = %self.conn.peer, "{text}");
        if tell {
            self.send_err(&text);
        }
        Err(CloseReason::ProtocolViolation)
    }

    fn process_info(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let raw: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
            debug!(rid = self.conn.cid, "bad route INFO json: {e}");
            CloseReason::ProtocolViolation
        })?;
        let info: RouteInfo = serde_json::from_value(raw.clone()).map_err(|e| {
            debug!(rid = self.conn.cid, "bad route INFO json: {e}");
            CloseReason::ProtocolViolation
        })?;
        if let Some(route) = self.route.clone() {
            if info.server_id != route.remote_id {
                // Gossip: a peer tells us about a server it just met.
                process_implicit(&self.srv, &self.cluster, &info);
            } else if info.ldm {
                route.connect_urls.lock().clear();
                cluster::send_async_info(&self.srv);
            } else if *route.connect_urls.lock() != info.connect_urls {
                *route.connect_urls.lock() = info.connect_urls.clone();
                cluster::send_async_info(&self.srv);
            }
            return Ok(());
        }
        if info.server_id == self.srv.id {
            // Our own routes list names us (a StatefulSet gives every pod the same list):
            // remember the address so it is never dialled again, and say nothing.
            self.self_route = true;
            if let Some((_, configured)) = &self.solicited {
                self.cluster.routes_to_self.lock().insert(self.conn.peer);
                if *configured {
                    self.cluster.self_urls.fetch_add(1, Ordering::Relaxed);
                }
            }
            debug!(peer = %self.conn.peer, "Detected route to self, ignoring");
            return Err(CloseReason::ClientClosed);
        }
        self.check_cluster_name(&info.cluster, info.dynamic, false)?;
        if self.solicited.is_none() && info.server_name == self.srv.name {
            error!(peer = %self.conn.peer, "Remote server has a duplicate name: {:?}", info.server_name);
            return Err(CloseReason::ProtocolViolation);
        }
        self.register(info, raw)
    }

    fn register(&mut self, info: RouteInfo, mut raw: serde_json::Value) -> Result<(), CloseReason> {
        let route = Arc::new(Route {
            rid: self.conn.cid,
            conn: self.conn.clone(),
            remote_id: info.server_id.clone(),
            remote_name: info.server_name.clone(),
            did_solicit: self.solicited.is_some(),
            reconnect: Mutex::new(self.solicited.clone()),
            connect_urls: Mutex::new(info.connect_urls.clone()),
            subs: Mutex::new(keyed_map()),
            origins: Mutex::new(keyed_map()),
            lnoc: info.lnoc,
            in_msgs: Default::default(),
            in_bytes: Default::default(),
            start: SystemTime::now(),
            last_activity: crate::monitor::unix_nanos(SystemTime::now()).into(),
        });
        let others: Vec<Arc<Route>> = {
            let mut state = self.cluster.state.lock();
            if let Some(existing) = state
                .remotes
                .get(&info.server_id)
                .and_then(|rid| state.routes.get(rid))
            {
                // Keep the first connection; let it inherit our URL so that a configured
                // peer is still retried forever if that connection drops.
                if let Some((url, configured)) = &self.solicited {
                    let mut r = existing.reconnect.lock();
                    if r.as_ref().is_none_or(|(_, c)| !c && *configured) {
                        *r = Some((url.clone(), *configured));
                    }
                }
                self.duplicate = true;
                debug!(
                    rid = self.conn.cid,
                    "Detected duplicate remote route {:?}", info.server_id
                );
                return Err(CloseReason::ClientClosed);
            }
            state.remotes.insert(info.server_id.clone(), route.rid);
            state.routes.insert(route.rid, route.clone());
            self.cluster
                .num_routes
                .store(state.routes.len(), Ordering::Release);
            self.cluster.ever_routed.store(true, Ordering::Release);
            cluster::send_all_interest(&state, &self.conn, route.lnoc);
            state
                .routes
                .values()
                .filter(|r| r.rid != route.rid && r.remote_id != info.server_id)
                .cloned()
                .collect()
        };
        // A first PING right away, so `/routez` has an RTT before the first ping interval
        // (minutes by default) has passed; any NATS peer answers it.
        self.ping_sent = Some(Instant::now());
        self.send(encode::PING);
        self.route = Some(route.clone());
        info!(
            rid = route.rid,
            "Route to {} ({}) registered, {} route(s)",
            info.server_name,
            self.conn.peer,
            others.len() + 1
        );
        // Gossip: tell the other members about the new one so they connect to it. When it
        // did not advertise an address, the one it connected from (with its route port) is
        // what the others should dial.
        if !others.is_empty() {
            if info.ip.is_empty() {
                let ip = format!(
                    "nats-route://{}/",
                    join_host_port(&self.conn.peer.ip().to_string(), info.port)
                );
                raw["ip"] = serde_json::Value::String(ip);
            }
            if let Ok(json) = serde_json::to_vec(&raw) {
                for other in &others {
                    other.conn.append(0, 0, |out| encode::info(out, &json));
                    other.conn.wake();
                }
            }
        }
        if !info.connect_urls.is_empty() && !self.srv.opts().cluster.no_advertise {
            cluster::send_async_info(&self.srv);
        }
        Ok(())
    }

    fn remote_sub(
        &mut self,
        origin: Option<&[u8]>,
        account: &[u8],
        subject: &[u8],
        queue: Option<(&[u8], u32)>,
    ) {
        let Some(route) = &self.route else {
            return;
        };
        let Some(acc) = self.srv.accounts.get_bytes(account) else {
            // As nats-server with static accounts: interest in an account this server
            // does not have is of no use here.
            debug!(
                rid = route.rid,
                "remote subscription for unknown account {:?}",
                String::from_utf8_lossy(account)
            );
            return;
        };
        let key = (
            acc.name.clone(),
            subject.into(),
            queue.map(|(q, _)| q.into()),
        );
        let weight = queue.map_or(1, |(_, w)| w);
        {
            // Kept before the subscription is added: leaf connections look it up as soon as
            // they hear of the subscription.
            let mut origins = route.origins.lock();
            match origin.and_then(|o| std::str::from_utf8(o).ok()) {
                Some(o) => {
                    origins.insert(key.clone(), Arc::from(o));
                }
                None => {
                    origins.remove(&key);
                }
            }
        }
        let mut subs = route.subs.lock();
        if let Some(existing) = subs.get(&key) {
            // A queue's new member count: the shared entry changes in place, so cached match
            // results see it too.
            existing.weight.store(weight, Ordering::Relaxed);
            return;
        }
        let sub = Subscription::new(
            Subscriber::Route(route.clone()),
            acc,
            subject,
            queue.map(|(q, _)| q),
            b"",
        );
        sub.weight.store(weight, Ordering::Relaxed);
        if router::subscribe(&self.srv, &sub).is_ok() {
            subs.insert(key, sub);
        } else {
            debug!(
                rid = route.rid,
                "invalid remote subscription {:?}",
                String::from_utf8_lossy(subject)
            );
        }
    }

    fn remote_unsub(&mut self, account: &[u8], subject: &[u8], queue: Option<&[u8]>) {
        let Some(route) = &self.route else {
            return;
        };
        let Some(acc) = self.srv.accounts.get_bytes(account) else {
            return;
        };
        let key: cluster::InterestKey = (acc.name.clone(), subject.into(), queue.map(Into::into));
        let removed = route.subs.lock().remove(&key);
        if let Some(sub) = removed {
            router::remove_from_account(&self.srv, &sub);
        }
        route.origins.lock().remove(&key);
    }

    /// After the connection ended: forget the route and its interest, then dial again
    /// when it was ours to dial and the peer is not connected some other way.
    fn finish(self, reason: CloseReason) {
        let srv = self.srv;
        let cluster = self.cluster;
        let mut reconnect = None;
        let mut remote_id = None;
        if let Some(route) = &self.route {
            let server_gone = {
                let mut state = cluster.state.lock();
                if state.remotes.get(&route.remote_id) == Some(&route.rid) {
                    state.remotes.remove(&route.remote_id);
                }
                state.routes.remove(&route.rid);
                cluster
                    .num_routes
                    .store(state.routes.len(), Ordering::Release);
                !state.remotes.contains_key(&route.remote_id)
            };
            // Its clients no longer count against accounts' `max_connections` here.
            if server_gone {
                for acc in srv.accounts.all() {
                    acc.forget_remote_server(&route.remote_id);
                }
            }
            let subs: Vec<_> = route.subs.lock().drain().map(|(_, s)| s).collect();
            for sub in subs {
                router::remove_from_account(&srv, &sub);
            }
            info!(
                rid = route.rid,
                "Route to {} ({}) closed: {reason}", route.remote_name, self.conn.peer
            );
            if !route.connect_urls.lock().is_empty() {
                cluster::send_async_info(&srv);
            }
            reconnect = route.reconnect.lock().clone();
            remote_id = Some(route.remote_id.clone());
        } else if !self.self_route && !self.duplicate {
            debug!(rid = self.conn.cid, peer = %self.conn.peer, "Route connection closed before registering: {reason}");
            reconnect = self.solicited.clone();
        }
        let Some((url, configured)) = reconnect else {
            return;
        };
        if srv.shutting_down.load(Ordering::Acquire) {
            return;
        }
        if let Some(id) = remote_id {
            if cluster.state.lock().remotes.contains_key(&id) {
                return;
            }
        }
        // A random pause so that two servers that dropped each other do not meet again
        // in lock step (nats-server does the same). A handshake that failed (a cluster name
        // conflict, bad credentials) waits longer: it will most likely fail again.
        let mut delay = Duration::from_millis(rand::random_range(0..100));
        if self.route.is_none() {
            delay += Duration::from_secs(1);
        } else if configured {
            delay += Duration::from_millis(200);
        }
        debug!(
            "Attempting reconnect for solicited route {}",
            url.host_port()
        );
        spawn_connect(srv, url, configured, None, delay);
    }
}

/// A peer told us about a server: connect to it unless it is us, already connected, being
/// connected to, or one of our configured routes (which are being dialled anyway).
fn process_implicit(srv: &Arc<ServerInner>, cluster: &Cluster, info: &RouteInfo) {
    if info.server_id == srv.id {
        return;
    }
    let url_text = if info.ip.is_empty() {
        join_host_port(&info.host, info.port)
    } else {
        info.ip.clone()
    };
    let Ok(mut url) = RouteUrl::parse(&url_text) else {
        debug!("Error parsing URL from INFO: {url_text}");
        return;
    };
    let host_port = url.host_port().to_ascii_lowercase();
    let configured =
        srv.opts().cluster.routes.iter().any(|r| {
            RouteUrl::parse(r).is_ok_and(|r| r.host_port().to_ascii_lowercase() == host_port)
        });
    if configured {
        return;
    }
    {
        let mut state = cluster.state.lock();
        if state.remotes.contains_key(&info.server_id) || state.connecting.contains(&info.server_id)
        {
            return;
        }
        state.connecting.insert(info.server_id.clone());
    }
    if info.auth_required {
        url.user = srv.opts().cluster.user.clone();
        url.password = srv.opts().cluster.password.clone();
    }
    debug!(
        "Connecting to implicit route {host_port} ({})",
        info.server_id
    );
    spawn_connect(
        srv.clone(),
        url,
        false,
        Some(info.server_id.clone()),
        Duration::from_millis(rand::random_range(0..50)),
    );
}
