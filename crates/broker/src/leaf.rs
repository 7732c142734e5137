//! Leaf node connections, as nats-server 2.9 has them: a server at the edge (the *leaf*)
//! dials a hub server and extends the hub's subject space over that one connection, for
//! one account on each side.
//!
//! - **Roles.** The hub accepts (`leafnodes { port }`), the leaf solicits (`leafnodes {
//!   remotes: [...] }`). On the leaf server that connection is a *spoke*: what arrives from
//!   the hub goes to local subscribers only (the hub sends each server of a leaf cluster
//!   its own copy), and only local interest (its clients', and that of leaf servers
//!   attached to it) is announced to the hub. On the hub the connection is a member of the
//!   account like a client: its interest goes to the routes and to other leafs, messages
//!   from it go everywhere but back.
//! - **Handshake.** The hub sends INFO (with `leafnode_urls`, `info_on_connect`) at once;
//!   the leaf answers CONNECT (no `lang`: a client on this port is refused), the hub
//!   checks the credentials (`leafnodes { authorization {} }`, users bound to accounts) and
//!   answers INFO with `connect_info`. Then both sides send their interest (`LS+ <subject>
//!   [<queue> <weight>]`) and keep it current (`LS+`/`LS-`); messages cross as `LMSG`
//!   (`HMSG` with headers), with the queue groups the sender chose this side for.
//! - **Loops.** Each server announces a random `$LDS.<id>` subject per account; seeing its
//!   own come back on a leaf connection means the topology loops: the connection is closed
//!   with an error and the leaf waits 30 s before dialling again.
//! - **Queue groups.** A member on the publisher's side is preferred: leaf members take a
//!   message only when no local or route member did (see `core/router.rs`).
//!
//! - **Leaf clusters.** Servers of one leaf cluster (same cluster name) each dial the hub;
//!   the hub never sends one of them what came from another, nor tells one the other's
//!   interest (they share both over their own routes).
//!
//! - **Deny lists.** A remote's `deny_exports` keeps messages on those subjects from being
//!   sent to the hub; `deny_imports` keeps interest in them from being asked for and drops
//!   messages on them that arrive anyway.
//!
//! - **TLS.** With `leafnodes { tls {} }` the hub sends INFO in plain text and expects the
//!   leaf to start TLS; a remote with `tls { ca_file }` (or a `tls://` URL) does so, verifying
//!   the hub's certificate. Sessions are the same `tls::Session` client connections use.
//!
//!   The hub reads its certificate for every accepted connection (and `leafnodes.tls` is
//!   reloadable), the leaf its CA for every dial, so rotated files take effect by themselves.
//!
//! - **Hub clusters.** A leaf cluster's servers may attach to different servers of a hub
//!   cluster: the hub's routes carry the leaf cluster's name with its interest and messages
//!   (nats-server's `lnoc`: `LS+ <origin> ...`, `LMSG <origin> ...`), so no hub server sends
//!   the leaf cluster what it already has.
//!
//! Not yet: credentials (JWT), websocket leafs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use midge_proto::encode;
use midge_proto::hash::{keyed_map, KeyedMap};
use midge_proto::parser::{parse_leaf_op, LeafOp, Limits, Parsed};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, error, info, warn};

use crate::client::{self, ClientShared, CloseReason};
use crate::core::router::{self, MatchCache, Origin, Router};
use crate::core::{Account, Subscriber, Subscription};
use crate::info::NATS_COMPAT_VERSION;
use crate::options::{RemoteLeaf, RouteUrl};
use crate::readbuf::ReadBuf;
use crate::server::ServerInner;

const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a soliciting leaf waits for the hub's INFO.
const INFO_WAIT: Duration = Duration::from_secs(2);
/// The longest wait between attempts while a hub stays unreachable (unless `reconnect` is
/// longer).
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Back-off before dialling again after a loop was detected (nats-server's).
const LOOP_DELAY: Duration = Duration::from_secs(30);
const MIN_READ_BUF: usize = 32 * 1024;
const MAX_READ_BUF: usize = 256 * 1024;
/// The error text nats-server sends a client that dials the leaf node port.
const CLIENT_ON_LEAF_PORT: &str = "Attempted To Connect To Leafnode Port";

/// A subject and optional queue: one line of interest.
type Key = (Box<[u8]>, Option<Box<[u8]>>);

/// One leaf node connection, on either side.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub id: u64,
    pub conn: Arc<ClientShared>,
    pub account: Arc<Account>,
    /// The spoke end (see the module documentation): messages from it stay local, and it
    /// is told only local interest.
    pub spoke: bool,
    pub remote_name: Mutex<String>,
    /// The other side's server id and cluster name (for `/leafz` and diagnostics).
    pub remote_id: Mutex<String>,
    pub remote_cluster: Option<Arc<str>>,
    /// Interest the other side announced: subscriptions of kind [`Subscriber::Leaf`].
    pub subs: Mutex<KeyedMap<Key, Arc<Subscription>>>,
    /// What this side announced to the other, with counts (queue keys carry the weight).
    smap: Mutex<Announced>,
    /// Set once interest may flow (after the handshake).
    ready: AtomicBool,
    /// `deny_exports` of the remote: subjects never sent over this connection.
    pub deny_out: Box<[Box<[u8]>]>,
    /// `deny_imports` of the remote: subjects never taken from it, nor asked for.
    pub deny_in: Box<[Box<[u8]>]>,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub start: SystemTime,
}

/// Whether `subject` (a publish subject, or a subscription's) falls under a deny list:
/// literal subjects by matching, wildcard subscriptions when the deny entry covers them.
fn denied(list: &[Box<[u8]>], subject: &[u8]) -> bool {
    !list.is_empty()
        && list.iter().any(|d| {
            midge_proto::subject::matches(d, subject)
                || midge_proto::subject::subset_match(subject, d)
        })
}

impl Leaf {
    /// Whether a message on `subject` may be sent over this connection.
    pub fn may_send(&self, subject: &[u8]) -> bool {
        !denied(&self.deny_out, subject)
    }

    /// Drops `sub` from this leaf's interest; false when it was not there (any more).
    pub(crate) fn forget_sub(&self, sub: &Arc<Subscription>) -> bool {
        let key: Key = (sub.subject.clone(), sub.queue.clone());
        let mut subs = self.subs.lock();
        match subs.get(&key) {
            Some(s) if Arc::ptr_eq(s, sub) => subs.remove(&key).is_some(),
            _ => false,
        }
    }

    /// Counts one subscription in or out of what this side announced; sends `LS+`/`LS-`
    /// when the other side must learn of it. Each subscription (`member`, its address; 0
    /// for the loop detection subject) counts once however often it is reported, so the
    /// snapshot a new connection starts from and changes racing with it agree.
    fn update(&self, member: usize, subject: &[u8], queue: Option<&[u8]>, change: Change) {
        if denied(&self.deny_in, subject) && !subject.starts_with(b"$LDS.") {
            return;
        }
        let key: Key = (subject.into(), queue.map(Into::into));
        let mut announced = self.smap.lock();
        let (add, sub) = match change {
            Change::Add(w) => {
                let w = w.max(1);
                if member != 0 && announced.members.insert(member, w).is_some() {
                    return;
                }
                (w, 0)
            }
            Change::Remove => match announced.members.remove(&member) {
                Some(w) => (0, w),
                None if member == 0 => (0, 1),
                None => return,
            },
            Change::Reweight(w) => {
                let w = w.max(1);
                match announced.members.get_mut(&member) {
                    Some(old) => {
                        let before = std::mem::replace(old, w);
                        (w, before)
                    }
                    None => return,
                }
            }
        };
        let n = announced.counts.entry(key.clone()).or_insert(0);
        let before = *n;
        *n = (*n + add).saturating_sub(sub);
        let after = *n;
        if after == 0 {
            announced.counts.remove(&key);
        }
        let send = match queue {
            None => (before == 0) != (after == 0),
            Some(_) => before != after,
        };
        if send && self.ready.load(Ordering::Acquire) {
            self.conn.append(0, 0, |out| {
                if after > 0 {
                    encode::ls_sub(out, subject, queue.map(|q| (q, after)));
                } else {
                    encode::ls_unsub(out, subject, queue);
                }
            });
            self.conn.wake();
        }
    }
}

/// What happened to one subscription, for [`Leaf::update`].
#[derive(Debug, Clone, Copy)]
enum Change {
    Add(u32),
    Remove,
    /// A queue member count changed in place.
    Reweight(u32),
}

/// What this side announced over one leaf connection.
#[derive(Debug, Default)]
struct Announced {
    /// Per subject (and queue): members, or the sum of their weights for a queue.
    counts: KeyedMap<Key, u32>,
    /// The subscriptions counted, with the weight each was counted with.
    members: FxHashMap<usize, u32>,
}

fn member(sub: &Subscription) -> usize {
    std::ptr::from_ref(sub) as usize
}

/// Every leaf connection of the server, and the loop detection subjects.
#[derive(Debug, Default)]
pub(crate) struct Leafs {
    conns: Mutex<FxHashMap<u64, Arc<Leaf>>>,
    /// `$LDS.<random>` per account name.
    lds: Mutex<KeyedMap<Arc<str>, String>>,
    /// The leaf node listener's address once bound.
    pub listen_addr: Mutex<Option<SocketAddr>>,
}

impl Leafs {
    pub fn count(&self) -> usize {
        self.conns.lock().len()
    }

    pub fn all(&self) -> Vec<Arc<Leaf>> {
        let mut v: Vec<_> = self.conns.lock().values().cloned().collect();
        v.sort_by_key(|l| l.id);
        v
    }

    fn lds(&self, account: &Account) -> String {
        self.lds
            .lock()
            .entry(account.name.clone())
            .or_insert_with(|| format!("$LDS.{}", crate::sys::random_id(22)))
            .clone()
    }
}

/// Where interest comes from, which decides which leaf connections hear of it.
fn should_tell(leaf: &Leaf, sub: &Subscription) -> bool {
    match &sub.owner {
        Subscriber::Leaf(from) => {
            // Never back to where it came from, nor to another connection of the same leaf
            // cluster (its servers know each other's interest over their own routes); a
            // spoke only hears of leafs attached here.
            let same_cluster =
                from.remote_cluster.is_some() && from.remote_cluster == leaf.remote_cluster;
            !std::ptr::eq(&**from, leaf) && !same_cluster && (!leaf.spoke || !from.spoke)
        }
        // Route interest is for the hub side only (a leaf cluster's servers each tell the
        // hub their own), and never for the leaf cluster it came from (another hub server
        // got it from there; cluster-wide no echo).
        Subscriber::Route(route) => {
            if leaf.spoke {
                return false;
            }
            let Some(cluster) = &leaf.remote_cluster else {
                return true;
            };
            let key = (
                sub.account.name.clone(),
                sub.subject.clone(),
                sub.queue.clone(),
            );
            route.origins.lock().get(&key) != Some(cluster)
        }
        // The exporter's reply wildcard is a local matter of service imports.
        // A leaf's clients reach their own server's JetStream API (nats-server keeps
        // JetStream APIs apart across leaf connections with domains).
        Subscriber::Responses(_) | Subscriber::JsApi(_) => false,
        // A stream takes what the other side publishes on its subjects.
        Subscriber::Client(_)
        | Subscriber::Internal(_)
        | Subscriber::Service(_)
        | Subscriber::Stream(_) => true,
    }
}

/// A subscription joined or left its account: tell the leaf connections that must know.
pub(crate) fn interest_changed(srv: &ServerInner, sub: &Subscription, added: bool) {
    let leafs: Vec<Arc<Leaf>> = {
        let conns = srv.leafs.conns.lock();
        if conns.is_empty() {
            return;
        }
        conns
            .values()
            .filter(|l| Arc::ptr_eq(&l.account, &sub.account))
            .cloned()
            .collect()
    };
    let weight = if sub.queue.is_some() {
        u32::try_from(sub.weight()).unwrap_or(u32::MAX)
    } else {
        1
    };
    for leaf in leafs {
        if should_tell(&leaf, sub) {
            let change = if added {
                Change::Add(weight)
            } else {
                Change::Remove
            };
            leaf.update(member(sub), &sub.subject, sub.queue.as_deref(), change);
        }
    }
}

/// A new leaf connection learns the whole interest it must know, and the loop detection
/// subject of its account.
fn send_all_interest(srv: &ServerInner, leaf: &Leaf) {
    let lds = srv.leafs.lds(&leaf.account);
    leaf.update(0, lds.as_bytes(), None, Change::Add(1));
    for s in leaf.account.sublist.all() {
        let sub = &s.0;
        if should_tell(leaf, sub) {
            let weight = if sub.queue.is_some() {
                u32::try_from(sub.weight()).unwrap_or(u32::MAX)
            } else {
                1
            };
            leaf.update(
                member(sub),
                &sub.subject,
                sub.queue.as_deref(),
                Change::Add(weight),
            );
        }
    }
    let smap = leaf.smap.lock();
    leaf.conn.append(0, 0, |out| {
        for ((subject, queue), &n) in smap.counts.iter() {
            encode::ls_sub(out, subject, queue.as_deref().map(|q| (q, n)));
        }
    });
    leaf.ready.store(true, Ordering::Release);
    drop(smap);
    leaf.conn.wake();
}

// ---------------------------------------------------------------------------------------
// Handshake documents
// ---------------------------------------------------------------------------------------

/// The INFO a hub sends on its leaf node port (the fields nats-server's leafs read).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct LeafInfo {
    server_id: String,
    server_name: String,
    version: String,
    go: String,
    host: String,
    port: u16,
    headers: bool,
    auth_required: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    tls_required: bool,
    max_payload: usize,
    proto: i32,
    #[serde(rename = "client_id")]
    cid: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    cluster: String,
    /// Always present (possibly empty): a leaf tells the leaf port from others by it.
    leafnode_urls: Option<Vec<String>>,
    #[serde(skip_serializing_if = "String::is_empty")]
    remote_account: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    connect_info: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    info_on_connect: bool,
}

/// A leaf's CONNECT.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct LeafConnect {
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pass: Option<String>,
    tls_required: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    server_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_hub: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    cluster: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    headers: bool,
    /// Set by clients only: a client that dialled the leaf port.
    #[serde(skip_serializing)]
    lang: Option<String>,
}

fn hub_info(srv: &ServerInner, cid: u64) -> LeafInfo {
    let opts = srv.opts();
    let addr = *srv.leafs.listen_addr.lock();
    let urls = if opts.leafnodes.no_advertise {
        Vec::new()
    } else if let Some(a) = &opts.leafnodes.advertise {
        vec![a.clone()]
    } else {
        addr.map(|a| vec![a.to_string()]).unwrap_or_default()
    };
    LeafInfo {
        server_id: srv.id.clone(),
        server_name: srv.name.clone(),
        version: NATS_COMPAT_VERSION.to_string(),
        go: concat!("midge/", env!("CARGO_PKG_VERSION")).to_string(),
        host: addr.map(|a| a.ip().to_string()).unwrap_or_default(),
        port: addr.map_or(0, |a| a.port()),
        headers: true,
        auth_required: opts.leafnodes.user.is_some() || !opts.leafnodes.users.is_empty(),
        tls_required: opts.leafnodes.tls.is_some(),
        max_payload: opts.max_payload,
        proto: 1,
        cid,
        cluster: srv.cluster.as_ref().map(|c| c.name()).unwrap_or_default(),
        leafnode_urls: Some(urls),
        remote_account: String::new(),
        connect_info: false,
        info_on_connect: true,
    }
}

// ---------------------------------------------------------------------------------------
// Listener and soliciting
// ---------------------------------------------------------------------------------------

/// Binds the leaf node port when configured and accepts leaf servers until shutdown.
pub(crate) async fn start(srv: &Arc<ServerInner>) -> Result<(), crate::error::Error> {
    let opts = srv.opts();
    if let Some(port) = opts.leafnodes.port {
        let bind = SocketAddr::new(opts.leafnodes.host, port);
        let listener = crate::server::listen(bind)
            .map_err(|source| crate::error::Error::Bind { addr: bind, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| crate::error::Error::Bind { addr: bind, source })?;
        *srv.leafs.listen_addr.lock() = Some(addr);
        info!("Listening for leafnode connections on {addr}");
        tokio::spawn(accept_loop(srv.clone(), listener));
    }
    for remote in &opts.leafnodes.remotes {
        tokio::spawn(solicit(srv.clone(), remote.clone()));
    }
    Ok(())
}

async fn accept_loop(srv: Arc<ServerInner>, listener: TcpListener) {
    let mut shutdown = srv.shutdown_signal();
    let mut lame_duck = srv.ops.lame_duck_signal();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
            // Lame duck mode: no new leafs (they dial another hub URL); the connected ones
            // stay until the server stops, then reconnect elsewhere by themselves.
            _ = lame_duck.wait_for(|ldm| *ldm) => {
                info!("Lame duck mode: no longer accepting leafnode connections");
                break;
            }
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(run(srv.clone(), stream, peer, None));
            }
            Err(e) => {
                error!("Error accepting leafnode connection: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        }
    }
}

/// Dials a remote's URLs in turn, for as long as the server runs.
async fn solicit(srv: Arc<ServerInner>, remote: RemoteLeaf) {
    let urls = remote.parsed_urls();
    if urls.is_empty() {
        return;
    }
    let mut shutdown = srv.shutdown_signal();
    let mut next = 0usize;
    let mut attempts = 0u32;
    loop {
        if srv.shutting_down.load(Ordering::Acquire) {
            return;
        }
        let url = urls[next % urls.len()].clone();
        next += 1;
        let target = url.host_port();
        let dialled = async {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&target).await?.collect();
            let mut last = std::io::Error::other("no address");
            for addr in addrs {
                match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => return Ok((s, addr)),
                    Ok(Err(e)) => last = e,
                    Err(_) => last = std::io::ErrorKind::TimedOut.into(),
                }
            }
            Err(last)
        }
        .await;
        let delay = match dialled {
            Ok((stream, addr)) => {
                attempts = 0;
                let _ = stream.set_nodelay(true);
                let reason = run(srv.clone(), stream, addr, Some((url, remote.clone()))).await;
                if reason == Some(CloseReason::LeafLoop) {
                    LOOP_DELAY
                } else {
                    srv.opts().leafnodes.reconnect
                }
            }
            Err(e) => {
                attempts += 1;
                if attempts == 1 || attempts % 30 == 0 {
                    warn!("Error trying to connect as leafnode to remote server {target} (attempt {attempts}): {e}");
                } else {
                    debug!("Error trying to connect as leafnode to {target}: {e}");
                }
                // Back-off while the hub stays unreachable, jittered so that a fleet of edge
                // servers does not dial in lock step when it comes back.
                let base = srv.opts().leafnodes.reconnect;
                let cap = base.max(MAX_RETRY);
                let grown = base.saturating_mul(1u32 << attempts.min(8).saturating_sub(1));
                grown.min(cap).mul_f64(rand::random_range(0.5..1.5))
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// One connection
// ---------------------------------------------------------------------------------------

/// Serves one leaf connection from handshake to close; returns why it ended (`None` when
/// it never started).
async fn run(
    srv: Arc<ServerInner>,
    stream: TcpStream,
    peer: SocketAddr,
    solicited: Option<(RouteUrl, RemoteLeaf)>,
) -> Option<CloseReason> {
    if srv.shutting_down.load(Ordering::Acquire) {
        return None;
    }
    let id = srv.next_cid.fetch_add(1, Ordering::Relaxed);
    let conn = Arc::new(ClientShared::new(id, peer, stream));
    let mut reader = LeafReader {
        srv: srv.clone(),
        conn: conn.clone(),
        solicited,
        leaf: None,
        router: Router::new(srv.clone(), id),
        matches: None,
        batch_in_msgs: 0,
        batch_in_bytes: 0,
        pings_out: 0,
        got_info: false,
    };
    if reader.solicited.is_none() {
        let info = hub_info(&srv, id);
        let mut json = Vec::new();
        if let Ok(body) = serde_json::to_vec(&info) {
            encode::info(&mut json, &body);
        }
        match srv.opts().leafnodes.tls.clone() {
            None => {
                conn.append(0, 0, |out| out.extend_from_slice(&json));
            }
            Some(tls_opts) => {
                // INFO in plain text, then the leaf starts TLS (as nats-server).
                let config = match crate::tls::load(&tls_opts) {
                    Ok(c) => c,
                    Err(e) => {
                        error!("Leafnode TLS configuration: {e}");
                        return Some(CloseReason::TlsHandshakeError);
                    }
                };
                let mut started = false;
                let shake = crate::tls::handshake(&conn.stream, config, &json, false, &mut started);
                match tokio::time::timeout(tls_opts.timeout, shake).await {
                    Ok(Ok(crate::tls::Upgrade::Tls(session))) => {
                        let session = crate::tls::Session::new(*session);
                        let cert = session.peer_certificate();
                        if !crate::tls::pinned_ok(tls_opts.pinned_certs.as_ref(), cert.as_deref()) {
                            error!("{peer} - lid:{id} - Leafnode TLS handshake error: certificate not pinned");
                            return Some(CloseReason::TlsHandshakeError);
                        }
                        conn.set_tls(session);
                    }
                    Ok(Ok(crate::tls::Upgrade::Plain)) => {
                        return Some(CloseReason::TlsHandshakeError)
                    }
                    Ok(Err(e)) => {
                        debug!("{peer} - lid:{id} - Leafnode TLS handshake error: {e}");
                        return Some(CloseReason::TlsHandshakeError);
                    }
                    Err(_) => {
                        debug!("{peer} - lid:{id} - Leafnode TLS handshake timeout");
                        return Some(CloseReason::TlsHandshakeError);
                    }
                }
            }
        }
    }
    debug!("{peer} - lid:{id} - Leafnode connection created");
    let read = async {
        let reason = reader.read_loop().await;
        reader.end_of_read();
        reader.conn.close(reason);
        reason
    };
    let write = client::write_loop(&srv, &conn, true);
    let (reason, ()) = tokio::join!(read, write);
    reader.finish(reason);
    Some(reason)
}

struct LeafReader {
    srv: Arc<ServerInner>,
    conn: Arc<ClientShared>,
    solicited: Option<(RouteUrl, RemoteLeaf)>,
    leaf: Option<Arc<Leaf>>,
    router: Router,
    matches: Option<MatchCache>,
    batch_in_msgs: u64,
    batch_in_bytes: u64,
    pings_out: u32,
    got_info: bool,
}

enum Event {
    Read(std::io::Result<usize>),
    Kill,
    Ping,
    Timeout,
}

impl LeafReader {
    async fn read_loop(&mut self) -> CloseReason {
        let opts = self.srv.opts();
        let limits = Limits {
            max_control_line: opts.max_control_line.max(64 * 1024),
            max_payload: opts.max_payload.max(64 * 1024 * 1024),
        };
        let mut rb = ReadBuf::new(MIN_READ_BUF, MAX_READ_BUF);
        let ping_interval = opts.ping_interval;
        let ping = tokio::time::sleep(ping_interval);
        tokio::pin!(ping);
        // The hub waits for CONNECT, the leaf for the hub's INFO, each for a bounded time.
        let first_wait = if self.solicited.is_some() {
            INFO_WAIT
        } else {
            opts.leafnodes.auth_timeout
        };
        let handshake = tokio::time::sleep(first_wait);
        tokio::pin!(handshake);
        let mut shutdown = self.srv.shutdown_signal();
        let mut tls_more = false;
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
                _ = &mut handshake, if self.leaf.is_none() => Event::Timeout,
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
                Event::Timeout => {
                    if self.solicited.is_none() {
                        self.send_err("Authentication Timeout");
                    }
                    return CloseReason::AuthenticationTimeout;
                }
                Event::Ping => {
                    if self.pings_out + 1 > self.srv.opts().ping_max {
                        self.send_err("Stale Connection");
                        return CloseReason::StaleConnection;
                    }
                    self.pings_out += 1;
                    self.send(encode::PING);
                    ping.as_mut()
                        .reset(tokio::time::Instant::now() + ping_interval);
                    continue;
                }
            };
            rb.end += n;
            loop {
                match parse_leaf_op(&rb.buf[rb.start..rb.end], &limits) {
                    Ok(Parsed::Op(op, used)) => {
                        rb.start += used;
                        let result = match op {
                            LeafOp::Connect(json) => {
                                let json = json.to_vec();
                                Box::pin(self.process_connect(&json)).await
                            }
                            LeafOp::Info(json) if self.solicited.is_some() && !self.got_info => {
                                let json = json.to_vec();
                                Box::pin(self.first_info(&json)).await
                            }
                            op => self.process(op),
                        };
                        if let Err(reason) = result {
                            return reason;
                        }
                    }
                    Ok(Parsed::Incomplete { need }) => {
                        rb.reserve(need);
                        break;
                    }
                    Err(e) => {
                        error!(lid = self.conn.cid, peer = %self.conn.peer, "Leafnode parser error: {e}");
                        return CloseReason::ProtocolViolation;
                    }
                }
            }
            rb.settle(n, room);
            self.end_of_read();
        }
    }

    fn send(&self, bytes: &[u8]) {
        self.conn.append(0, 0, |out| out.extend_from_slice(bytes));
        self.conn.wake();
    }

    fn send_err(&self, text: &str) {
        self.conn.append(0, 0, |out| encode::err(out, text));
        self.conn.wake();
    }

    fn end_of_read(&mut self) {
        if self.batch_in_msgs > 0 {
            let stats = &self.srv.stats;
            stats
                .in_msgs
                .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
            stats
                .in_bytes
                .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            if let Some(leaf) = &self.leaf {
                leaf.in_msgs
                    .fetch_add(self.batch_in_msgs, Ordering::Relaxed);
                leaf.in_bytes
                    .fetch_add(self.batch_in_bytes, Ordering::Relaxed);
            }
            self.batch_in_msgs = 0;
            self.batch_in_bytes = 0;
        }
        self.router.flush(false);
    }

    fn process(&mut self, op: LeafOp<'_>) -> Result<(), CloseReason> {
        match op {
            LeafOp::Msg {
                subject,
                reply,
                queues,
                headers,
                payload,
            } => self.deliver(subject, reply, queues, headers, payload),
            LeafOp::Sub { subject, queue } => return self.remote_sub(subject, queue),
            LeafOp::Unsub { subject, queue } => self.remote_unsub(subject, queue),
            LeafOp::Ping => self.send(encode::PONG),
            LeafOp::Pong => self.pings_out = 0,
            LeafOp::Info(json) => return self.process_info(json),
            LeafOp::Ok => {}
            LeafOp::Err(text) => {
                let text = String::from_utf8_lossy(text);
                error!(lid = self.conn.cid, "Leafnode error: {text}");
                if text.contains("Loop detected") {
                    return Err(CloseReason::LeafLoop);
                }
                return Err(CloseReason::ClientClosed);
            }
            LeafOp::Connect(_) => {}
        }
        Ok(())
    }

    /// An INFO after the first, on the leaf side: `connect_info` (the hub accepted us)
    /// lets interest flow.
    fn process_info(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        if self.solicited.is_none() {
            return Ok(());
        }
        let info: LeafInfo = match serde_json::from_slice(json) {
            Ok(i) => i,
            Err(e) => {
                error!(lid = self.conn.cid, "Leafnode INFO is not valid JSON: {e}");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if info.connect_info {
            if let Some(leaf) = &self.leaf {
                if !leaf.ready.load(Ordering::Acquire) {
                    send_all_interest(&self.srv, leaf);
                }
            }
        }
        Ok(())
    }

    /// The hub's first INFO, on the leaf side: TLS if either side asks for it, then CONNECT.
    async fn first_info(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        let Some((url, remote)) = self.solicited.clone() else {
            return Ok(());
        };
        self.got_info = true;
        let info: LeafInfo = match serde_json::from_slice(json) {
            Ok(i) => i,
            Err(e) => {
                error!(lid = self.conn.cid, "Leafnode INFO is not valid JSON: {e}");
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if info.cid == 0 || info.leafnode_urls.is_none() {
            error!(
                "Attempted to connect to a port that is not a leafnode port: {}",
                url.host_port()
            );
            return Err(CloseReason::ProtocolViolation);
        }
        if info.tls_required || remote.tls.is_some() {
            let Some(tls) = remote.tls.as_ref().filter(|t| t.ca_file.is_some()) else {
                error!(
                    "Leafnode {} requires TLS: the remote needs tls {{ ca_file }}",
                    url.host_port()
                );
                return Err(CloseReason::TlsHandshakeError);
            };
            let ca = tls.ca_file.as_deref().unwrap_or(std::path::Path::new(""));
            let cert = tls.cert_file.as_deref().zip(tls.key_file.as_deref());
            let config = match crate::tls::client_config(ca, cert) {
                Ok(c) => c,
                Err(e) => {
                    error!("Leafnode TLS configuration: {e}");
                    return Err(CloseReason::TlsHandshakeError);
                }
            };
            let name = match rustls::pki_types::ServerName::try_from(url.host.clone()) {
                Ok(n) => n,
                Err(e) => {
                    error!("Leafnode TLS: bad server name {}: {e}", url.host);
                    return Err(CloseReason::TlsHandshakeError);
                }
            };
            let shake = crate::tls::client_handshake(&self.conn.stream, config, name);
            match tokio::time::timeout(tls.timeout, shake).await {
                Ok(Ok(session)) => self.conn.set_tls(crate::tls::Session::new(*session)),
                Ok(Err(e)) => {
                    error!(
                        lid = self.conn.cid,
                        "Leafnode TLS handshake with {} failed: {e}",
                        url.host_port()
                    );
                    return Err(CloseReason::TlsHandshakeError);
                }
                Err(_) => {
                    error!(
                        lid = self.conn.cid,
                        "Leafnode TLS handshake with {} timed out",
                        url.host_port()
                    );
                    return Err(CloseReason::TlsHandshakeError);
                }
            }
        }
        let account = self.srv.accounts.for_user(remote.account.as_deref());
        let connect = LeafConnect {
            version: NATS_COMPAT_VERSION.to_string(),
            user: url.user.clone(),
            pass: url.password.clone(),
            tls_required: self.conn_is_tls(),
            server_id: self.srv.id.clone(),
            name: self.srv.name.clone(),
            is_hub: false,
            cluster: self
                .srv
                .cluster
                .as_ref()
                .map(|c| c.name())
                .unwrap_or_default(),
            headers: true,
            lang: None,
        };
        if let Ok(json) = serde_json::to_vec(&connect) {
            self.conn.append(0, 0, |out| encode::connect(out, &json));
        }
        let leaf = self.register(
            account,
            true,
            &info.server_name,
            &info.server_id,
            &info.cluster,
        );
        info!(
            lid = self.conn.cid,
            "Leafnode connection to {} ({}) created for account: {}",
            info.server_name,
            url.host_port(),
            leaf.account.name
        );
        if !info.info_on_connect {
            send_all_interest(&self.srv, &leaf);
        }
        self.conn.wake();
        Ok(())
    }

    fn conn_is_tls(&self) -> bool {
        self.solicited
            .as_ref()
            .is_some_and(|(_, r)| r.tls.is_some())
    }

    /// A leaf's CONNECT, on the hub side.
    async fn process_connect(&mut self, json: &[u8]) -> Result<(), CloseReason> {
        if self.solicited.is_some() || self.leaf.is_some() {
            return Ok(());
        }
        let connect: LeafConnect = match serde_json::from_slice(json) {
            Ok(c) => c,
            Err(_) => return Err(CloseReason::ProtocolViolation),
        };
        if connect.lang.as_deref().is_some_and(|l| !l.is_empty()) {
            self.send_err(CLIENT_ON_LEAF_PORT);
            return Err(CloseReason::ProtocolViolation);
        }
        let ours = self.srv.cluster.as_ref().map(|c| c.name());
        if !connect.cluster.is_empty() && ours.as_deref() == Some(connect.cluster.as_str()) {
            self.send_err("Leafnode Has Same Cluster Name");
            return Err(CloseReason::ProtocolViolation);
        }
        let opts = self.srv.opts();
        let lo = &opts.leafnodes;
        let user = connect.user.clone().unwrap_or_default();
        let pass = connect.pass.clone().unwrap_or_default();
        let account_name: Option<String> = if let Some(u) = &lo.user {
            let ok = *u == user
                && self
                    .srv
                    .verifier
                    .password_ok(lo.password.as_deref().unwrap_or(""), &pass)
                    .await;
            if !ok {
                self.send_err("Authorization Violation");
                warn!(lid = self.conn.cid, peer = %self.conn.peer, "leafnode authentication error");
                return Err(CloseReason::AuthenticationViolation);
            }
            lo.account.clone()
        } else if !lo.users.is_empty() {
            let found = lo.users.iter().find(|u| u.user == user).cloned();
            let ok = match &found {
                Some(u) => self.srv.verifier.password_ok(&u.password, &pass).await,
                None => false,
            };
            if !ok {
                self.send_err("Authorization Violation");
                warn!(lid = self.conn.cid, peer = %self.conn.peer, "leafnode authentication error");
                return Err(CloseReason::AuthenticationViolation);
            }
            found.and_then(|u| u.account)
        } else {
            lo.account.clone()
        };
        let account = self.srv.accounts.for_user(account_name.as_deref());
        let leaf = self.register(
            account.clone(),
            connect.is_hub,
            &connect.name,
            &connect.server_id,
            &connect.cluster,
        );
        info!(
            lid = self.conn.cid,
            "Leafnode connection from {} ({}) created for account: {}",
            connect.name,
            self.conn.peer,
            account.name
        );
        let mut info = hub_info(&self.srv, self.conn.cid);
        info.remote_account = account.name.to_string();
        info.connect_info = true;
        info.info_on_connect = false;
        if let Ok(json) = serde_json::to_vec(&info) {
            self.conn.append(0, 0, |out| encode::info(out, &json));
        }
        send_all_interest(&self.srv, &leaf);
        Ok(())
    }

    fn register(
        &mut self,
        account: Arc<Account>,
        spoke: bool,
        name: &str,
        id: &str,
        cluster: &str,
    ) -> Arc<Leaf> {
        let remote = self.solicited.as_ref().map(|(_, r)| r.clone());
        let deny = |pick: fn(&RemoteLeaf) -> &Vec<String>| -> Box<[Box<[u8]>]> {
            remote
                .as_ref()
                .map(|r| pick(r).iter().map(|s| s.as_bytes().into()).collect())
                .unwrap_or_default()
        };
        let leaf = Arc::new(Leaf {
            id: self.conn.cid,
            conn: self.conn.clone(),
            account: account.clone(),
            spoke: spoke || self.solicited.is_some(),
            remote_name: Mutex::new(name.to_string()),
            remote_id: Mutex::new(id.to_string()),
            remote_cluster: (!cluster.is_empty()).then(|| Arc::from(cluster)),
            subs: Mutex::new(keyed_map()),
            smap: Mutex::new(Announced {
                counts: keyed_map(),
                members: FxHashMap::default(),
            }),
            ready: AtomicBool::new(false),
            deny_out: deny(|r| &r.deny_exports),
            deny_in: deny(|r| &r.deny_imports),
            in_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            start: SystemTime::now(),
        });
        self.srv.leafs.conns.lock().insert(leaf.id, leaf.clone());
        self.matches = Some(MatchCache::new(account));
        self.leaf = Some(leaf.clone());
        leaf
    }

    fn remote_sub(
        &mut self,
        subject: &[u8],
        queue: Option<(&[u8], u32)>,
    ) -> Result<(), CloseReason> {
        let Some(leaf) = self.leaf.clone() else {
            return Ok(());
        };
        if subject.starts_with(b"$LDS.") && self.srv.leafs.lds(&leaf.account).as_bytes() == subject
        {
            let text = format!(
                "Loop detected for leafnode account=\"{}\". Delaying attempt to reconnect for {:?}",
                leaf.account.name, LOOP_DELAY
            );
            error!(lid = leaf.id, "{text}");
            self.send_err(&text);
            return Err(CloseReason::LeafLoop);
        }
        let key: Key = (subject.into(), queue.map(|(q, _)| q.into()));
        let weight = queue.map_or(1, |(_, w)| w);
        let existing = leaf.subs.lock().get(&key).cloned();
        if let Some(sub) = existing {
            // A queue's new member count: propagate the difference to the other leafs.
            let old = sub.weight.swap(weight, Ordering::Relaxed);
            if old != weight {
                for other in self.srv.leafs.all() {
                    if Arc::ptr_eq(&other.account, &leaf.account) && should_tell(&other, &sub) {
                        other.update(
                            member(&sub),
                            subject,
                            sub.queue.as_deref(),
                            Change::Reweight(weight),
                        );
                    }
                }
            }
            return Ok(());
        }
        let sub = Subscription::new(
            Subscriber::Leaf(leaf.clone()),
            leaf.account.clone(),
            subject,
            queue.map(|(q, _)| q),
            b"",
        );
        sub.weight.store(weight, Ordering::Relaxed);
        if router::subscribe(&self.srv, &sub).is_ok() {
            leaf.subs.lock().insert(key, sub);
        } else {
            debug!(
                lid = leaf.id,
                "invalid leafnode subscription {:?}",
                String::from_utf8_lossy(subject)
            );
        }
        Ok(())
    }

    fn remote_unsub(&mut self, subject: &[u8], queue: Option<&[u8]>) {
        let Some(leaf) = &self.leaf else {
            return;
        };
        let key: Key = (subject.into(), queue.map(Into::into));
        let removed = leaf.subs.lock().remove(&key);
        if let Some(sub) = removed {
            router::remove_from_account(&self.srv, &sub);
        }
    }

    fn deliver(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        queues: &[u8],
        headers: Option<&[u8]>,
        payload: &[u8],
    ) {
        let (Some(leaf), Some(cache)) = (&self.leaf, &mut self.matches) else {
            return;
        };
        if denied(&leaf.deny_in, subject) {
            return;
        }
        self.batch_in_msgs += 1;
        self.batch_in_bytes += (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        let result = cache.lookup(subject);
        let acc = cache.account().clone();
        self.router.route(
            &acc,
            &result,
            Origin::Leaf { leaf, queues },
            subject,
            reply,
            headers,
            payload,
        );
    }

    fn finish(self, reason: CloseReason) {
        let Some(leaf) = self.leaf else {
            debug!(lid = self.conn.cid, peer = %self.conn.peer, "Leafnode connection closed before the handshake: {reason}");
            return;
        };
        self.srv.leafs.conns.lock().remove(&leaf.id);
        let subs: Vec<_> = leaf.subs.lock().drain().map(|(_, s)| s).collect();
        router::remove_batch_from_account(&self.srv, &subs);
        info!(
            lid = leaf.id,
            "Leafnode connection to {} ({}) closed: {reason}",
            leaf.remote_name.lock(),
            self.conn.peer
        );
    }
}

/// One leaf connection as `/leafz` reports it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LeafStats {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub server_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub start: String,
    pub is_spoke: bool,
    pub account: String,
    pub ip: String,
    pub port: u16,
    pub rtt: String,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    pub subscriptions: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions_list: Option<Vec<String>>,
}

pub(crate) fn stats(srv: &ServerInner, subs: bool) -> Vec<LeafStats> {
    srv.leafs
        .all()
        .iter()
        .filter(|l| l.ready.load(Ordering::Acquire) || !l.subs.lock().is_empty())
        .map(|l| {
            let (out_msgs, out_bytes, _) = l.conn.out_stats();
            let list = subs.then(|| {
                let mut v: Vec<String> = l
                    .subs
                    .lock()
                    .keys()
                    .map(|(s, q)| match q {
                        Some(q) => format!(
                            "{} {}",
                            String::from_utf8_lossy(s),
                            String::from_utf8_lossy(q)
                        ),
                        None => String::from_utf8_lossy(s).into_owned(),
                    })
                    .collect();
                v.sort();
                v
            });
            LeafStats {
                name: l.remote_name.lock().clone(),
                server_id: l.remote_id.lock().clone(),
                cluster: l.remote_cluster.as_deref().map(str::to_string),
                start: crate::monitor::rfc3339(l.start),
                is_spoke: l.spoke,
                account: l.account.name.to_string(),
                ip: l.conn.peer.ip().to_string(),
                port: l.conn.peer.port(),
                rtt: crate::monitor::go_duration(Duration::from_nanos(
                    l.conn.rtt_nanos.load(Ordering::Relaxed),
                )),
                in_msgs: l.in_msgs.load(Ordering::Relaxed),
                out_msgs,
                in_bytes: l.in_bytes.load(Ordering::Relaxed),
                out_bytes,
                subscriptions: l.subs.lock().len(),
                subscriptions_list: list,
            }
        })
        .collect()
}
