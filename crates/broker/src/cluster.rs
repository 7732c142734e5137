//! Cluster state shared by every connection: the routes, the interest learned from them,
//! the interest this server announces, and the per-publisher forwarding of messages.
//!
//! Interest learned from routes lives in its own [`Sublist`] (`Cluster::sublist`), separate
//! from the local one, so that the client delivery path stays as it was when there is no
//! cluster and a route never sees interest that came from another route (one hop only).
//! A publishing connection asks its [`Forwarder`] which routes want a message, and the
//! forwarder appends one `RMSG`/`HMSG` per route to that route's outbound buffer, to be
//! flushed with the same once-per-read wake-up as local receivers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use midge_proto::encode;
use midge_proto::sublist::{MatchResult, Sublist};
use parking_lot::Mutex;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::client::ClientShared;
use crate::info::NATS_COMPAT_VERSION;
use crate::options::RouteUrl;
use crate::server::ServerInner;

/// The only account midge has: core NATS clients live in nats-server's global account.
pub(crate) const GLOBAL_ACCOUNT: &[u8] = b"$G";

/// Routes are never closed for a slow write (nats-server), but their pending data is
/// bounded so that a dead peer cannot take all memory; past this the route is closed and
/// solicited again.
pub(crate) const ROUTE_MIN_MAX_PENDING: usize = 256 * 1024 * 1024;

/// Key of an interest entry: subject and optional queue name.
pub(crate) type InterestKey = (Box<[u8]>, Option<Box<[u8]>>);

/// One server of the cluster we have a registered route to.
#[derive(Debug)]
pub(crate) struct Route {
    pub rid: u64,
    pub conn: Arc<ClientShared>,
    pub remote_id: String,
    pub remote_name: String,
    pub did_solicit: bool,
    /// Where to reconnect when this route drops: `(url, configured)`. Inherited from a
    /// duplicate solicited connection, as nats-server does, so a configured peer is retried
    /// forever whichever of the two connections survived.
    pub reconnect: Mutex<Option<(RouteUrl, bool)>>,
    /// Client URLs of the remote server (its INFO `connect_urls`).
    pub connect_urls: Mutex<Vec<String>>,
    /// Interest this remote announced, by subject and queue.
    pub subs: Mutex<FxHashMap<InterestKey, Arc<RouteSub>>>,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub start: SystemTime,
    /// Unix nanoseconds of the last read from this route.
    pub last_activity: AtomicU64,
}

/// Interest of one route in one subject (and queue group, with its member count).
#[derive(Debug)]
pub(crate) struct RouteSub {
    pub route: Arc<Route>,
    /// Queue members on the remote server; 0 for a plain subscription.
    pub weight: AtomicU32,
}

/// Sublist entry for remote interest, compared by identity.
#[derive(Debug, Clone)]
pub(crate) struct RouteSubRef(pub Arc<RouteSub>);

impl PartialEq for RouteSubRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// The route `INFO` document. Unknown fields of a peer's INFO are kept when it is
/// forwarded (gossip), so it is re-serialized from a `serde_json::Value`, not from this.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RouteInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: String,
    pub proto: i64,
    pub go: String,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub ip: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    #[serde(rename = "cluster_dynamic", skip_serializing_if = "is_false")]
    pub dynamic: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
}

/// The route `CONNECT` document (never `lang`: nats-server takes a `lang` as a client that
/// dialled the route port by mistake).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct RouteConnect {
    pub echo: bool,
    pub verbose: bool,
    pub pedantic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    pub tls_required: bool,
    pub headers: bool,
    pub name: String,
    pub cluster: String,
    #[serde(rename = "cluster_dynamic", skip_serializing_if = "is_false")]
    pub dynamic: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Routes and interest, under one lock so that a new route's initial interest and later
/// changes reach it in order.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    pub routes: FxHashMap<u64, Arc<Route>>,
    /// Server id -> rid of its registered route.
    pub remotes: FxHashMap<String, u64>,
    /// Local interest announced to routes: subscription count per subject and queue.
    pub interest: FxHashMap<InterestKey, u32>,
    /// Server ids an implicit (gossiped) connection attempt is under way for.
    pub connecting: FxHashSet<String>,
}

/// Everything about this server's membership in a cluster.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub name: Mutex<String>,
    /// The name was generated: a peer's configured name replaces it.
    pub dynamic: AtomicBool,
    pub listen_addr: SocketAddr,
    /// Host and port put in our route INFO, and `ip` (set with `advertise`).
    pub info_host: String,
    pub info_port: u16,
    pub info_ip: String,
    pub sublist: Sublist<RouteSubRef>,
    pub state: Mutex<ClusterState>,
    pub num_routes: AtomicUsize,
    pub next_rid: AtomicU64,
    /// Addresses that turned out to be this server; never dialled again.
    pub routes_to_self: Mutex<FxHashSet<SocketAddr>>,
    /// This server's own client URLs (`host:port`), as put in `connect_urls`.
    pub own_client_urls: Vec<String>,
    /// Set once clients were given other members' URLs: from then on `connect_urls` is never
    /// empty, so when the last member goes clients learn that only this server is left.
    shared_member_urls: AtomicBool,
}

impl Cluster {
    pub fn new(
        opts: &crate::options::Options,
        listen_addr: SocketAddr,
        client_addr: SocketAddr,
    ) -> Cluster {
        let c = &opts.cluster;
        let (name, dynamic) = match &c.name {
            Some(n) => (n.clone(), false),
            None => (generated_name(), true),
        };
        let (info_host, info_port, info_ip) = match &c.advertise {
            Some(adv) => {
                let (h, p) = split_host_port(adv, listen_addr.port());
                let ip = format!("nats-route://{}/", join_host_port(&h, p));
                (h, p, ip)
            }
            None => (c.host.to_string(), listen_addr.port(), String::new()),
        };
        let mut routes_to_self = FxHashSet::default();
        routes_to_self.insert(listen_addr);
        if listen_addr.ip().is_unspecified() {
            routes_to_self.insert(SocketAddr::new(
                IpAddr::from([127, 0, 0, 1]),
                listen_addr.port(),
            ));
            if let Some(ip) = primary_ip() {
                routes_to_self.insert(SocketAddr::new(ip, listen_addr.port()));
            }
        }
        Cluster {
            name: Mutex::new(name),
            dynamic: AtomicBool::new(dynamic),
            listen_addr,
            info_host,
            info_port,
            info_ip,
            sublist: Sublist::new(),
            state: Mutex::new(ClusterState::default()),
            num_routes: AtomicUsize::new(0),
            next_rid: AtomicU64::new(1),
            routes_to_self: Mutex::new(routes_to_self),
            own_client_urls: own_client_urls(opts, client_addr),
            shared_member_urls: AtomicBool::new(false),
        }
    }

    pub fn name(&self) -> String {
        self.name.lock().clone()
    }

    pub fn has_routes(&self) -> bool {
        self.num_routes.load(Ordering::Acquire) > 0
    }

    /// Client URLs of every member (this server first), for clients' `connect_urls`. Empty
    /// until another member is known, as nats-server (a lone server lists nothing); after
    /// that at least this server's own, as nats-server sends when the last route drops, so
    /// that clients prune the servers that are gone.
    pub fn connect_urls(&self) -> Vec<String> {
        let mut urls = self.own_client_urls.clone();
        let state = self.state.lock();
        for route in state.routes.values() {
            for url in route.connect_urls.lock().iter() {
                if !urls.contains(url) {
                    urls.push(url.clone());
                }
            }
        }
        if urls.len() > self.own_client_urls.len() {
            self.shared_member_urls.store(true, Ordering::Release);
        } else if !self.shared_member_urls.load(Ordering::Acquire) {
            urls.clear();
        }
        urls
    }
}

/// A generated cluster name (nats-server generates one too when none is configured).
fn generated_name() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..22)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub(crate) fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => match p.parse() {
            Ok(port) => (h.trim_matches(|c| c == '[' || c == ']').to_string(), port),
            Err(_) => (s.to_string(), default_port),
        },
        _ => (s.to_string(), default_port),
    }
}

pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The address this host uses to reach the outside: connecting a UDP socket sends nothing
/// but makes the kernel pick the source address. Used for a listener on 0.0.0.0, where
/// the listen address says nothing a peer or client could dial.
fn primary_ip() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect(("192.0.2.1", 9)).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn own_client_urls(opts: &crate::options::Options, client_addr: SocketAddr) -> Vec<String> {
    if let Some(adv) = &opts.client_advertise {
        let (h, p) = split_host_port(adv, client_addr.port());
        return vec![join_host_port(&h, p)];
    }
    let ip = if client_addr.ip().is_unspecified() {
        primary_ip().unwrap_or(client_addr.ip())
    } else {
        client_addr.ip()
    };
    vec![SocketAddr::new(ip, client_addr.port()).to_string()]
}

// ---------------------------------------------------------------------------------------
// Local interest -> routes
// ---------------------------------------------------------------------------------------

/// A local subscription was added (`added`) or removed: tell every route when the
/// interest it announces changes (plain: on 0->1 and 1->0; queue: the new weight on every
/// change, RS- at 0), as nats-server does.
pub(crate) fn local_interest(srv: &ServerInner, subject: &[u8], queue: Option<&[u8]>, added: bool) {
    let Some(cluster) = &srv.cluster else {
        return;
    };
    let mut state = cluster.state.lock();
    let key: InterestKey = (subject.into(), queue.map(Into::into));
    let count = state.interest.entry(key.clone()).or_insert(0);
    let before = *count;
    if added {
        *count += 1;
    } else {
        *count = count.saturating_sub(1);
    }
    let after = *count;
    if after == 0 {
        state.interest.remove(&key);
    }
    let send = match queue {
        None => (before == 0) != (after == 0),
        Some(_) => before != after,
    };
    if !send || state.routes.is_empty() {
        return;
    }
    for route in state.routes.values() {
        route.conn.append(0, 0, |out| {
            if after > 0 {
                encode::rs_sub(out, GLOBAL_ACCOUNT, subject, queue.map(|q| (q, after)));
            } else {
                encode::rs_unsub(out, GLOBAL_ACCOUNT, subject, queue);
            }
        });
        route.conn.wake();
    }
}

/// Appends the whole local interest to a new route's buffer. The caller holds the state lock.
pub(crate) fn send_all_interest(state: &ClusterState, conn: &ClientShared) {
    conn.append(0, 0, |out| {
        for ((subject, queue), &n) in &state.interest {
            encode::rs_sub(
                out,
                GLOBAL_ACCOUNT,
                subject,
                queue.as_deref().map(|q| (q, n)),
            );
        }
    });
}

// ---------------------------------------------------------------------------------------
// Forwarding published messages to routes
// ---------------------------------------------------------------------------------------

/// Per-publisher forwarding state, reused message after message so forwarding allocates
/// nothing once warmed up.
#[derive(Debug)]
pub(crate) struct Forwarder {
    gen: u64,
    subject: Vec<u8>,
    result: Option<Arc<MatchResult<RouteSubRef>>>,
    /// Routes this message goes to, once each.
    targets: Vec<Arc<Route>>,
    /// (index in `targets`, index of the queue group in `result.qsubs`).
    target_queues: Vec<(usize, usize)>,
    /// Queue groups of `result` already decided while choosing local members.
    handled: Vec<bool>,
    rng: u64,
    /// Pending-bytes limit of a route.
    max_pending: usize,
}

impl Forwarder {
    pub fn new(seed: u64, max_pending: usize) -> Self {
        Forwarder {
            gen: u64::MAX,
            subject: Vec::new(),
            result: None,
            targets: Vec::new(),
            target_queues: Vec::new(),
            handled: Vec::new(),
            rng: seed | 1,
            max_pending: max_pending.max(ROUTE_MIN_MAX_PENDING),
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Looks up which routes are interested in `subject`. False when none is, which is
    /// the only thing a server without routes pays for.
    pub fn begin(&mut self, cluster: &Cluster, subject: &[u8]) -> bool {
        self.targets.clear();
        self.target_queues.clear();
        if !cluster.has_routes() {
            return false;
        }
        let gen = cluster.sublist.generation();
        let fresh = gen == self.gen && self.subject == subject && self.result.is_some();
        if !fresh {
            self.result = Some(cluster.sublist.matches(subject));
            self.gen = gen;
            self.subject.clear();
            self.subject.extend_from_slice(subject);
        }
        let Some(result) = &self.result else {
            return false;
        };
        if result.psubs.is_empty() && result.qsubs.is_empty() {
            return false;
        }
        self.handled.clear();
        self.handled.resize(result.qsubs.len(), false);
        let result = result.clone();
        for s in &result.psubs {
            self.target(&s.0.route);
        }
        true
    }

    fn target(&mut self, route: &Arc<Route>) -> usize {
        match self.targets.iter().position(|t| Arc::ptr_eq(t, route)) {
            Some(i) => i,
            None => {
                self.targets.push(route.clone());
                self.targets.len() - 1
            }
        }
    }

    /// Picks a member of queue group `group` across the cluster, weighting each server by
    /// its member count. Returns `true` when one of the `local` members should get it;
    /// otherwise a route was chosen and will carry the queue name.
    pub fn choose_queue(&mut self, group: &[u8], local: usize) -> bool {
        let Some(result) = self.result.clone() else {
            return true;
        };
        let Some(gi) = result.qsubs.iter().position(|g| &*g.name == group) else {
            return true;
        };
        self.handled[gi] = true;
        let remote: u64 = result.qsubs[gi]
            .subs
            .iter()
            .map(|s| u64::from(s.0.weight.load(Ordering::Relaxed).max(1)))
            .sum();
        let pick = self.next_random() % (local as u64 + remote);
        if pick < local as u64 {
            return true;
        }
        self.pick_remote(&result, gi, pick - local as u64);
        false
    }

    fn pick_remote(&mut self, result: &MatchResult<RouteSubRef>, gi: usize, mut pick: u64) {
        for s in &result.qsubs[gi].subs {
            let w = u64::from(s.0.weight.load(Ordering::Relaxed).max(1));
            if pick < w {
                let t = self.target(&s.0.route);
                self.target_queues.push((t, gi));
                return;
            }
            pick -= w;
        }
    }

    /// Chooses routes for the queue groups with no local members, then appends one routed
    /// message per target route. Routes that got data are added to `to_wake` (once per
    /// read, like local receivers). True when at least one route got the message.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
        to_wake: &mut Vec<Arc<ClientShared>>,
        out_msgs: &mut u64,
        out_bytes: &mut u64,
    ) -> bool {
        let Some(result) = self.result.clone() else {
            return false;
        };
        for gi in 0..result.qsubs.len() {
            if self.handled[gi] {
                continue;
            }
            let total: u64 = result.qsubs[gi]
                .subs
                .iter()
                .map(|s| u64::from(s.0.weight.load(Ordering::Relaxed).max(1)))
                .sum();
            if total == 0 {
                continue;
            }
            let pick = self.next_random() % total;
            self.pick_remote(&result, gi, pick);
        }
        let size = (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        let mut sent = false;
        for (ti, route) in self.targets.iter().enumerate() {
            let queues = self
                .target_queues
                .iter()
                .filter(move |(t, _)| *t == ti)
                .map(|&(_, gi)| &*result.qsubs[gi].name);
            let pending = route.conn.append(1, size, |out| {
                encode::rmsg(
                    out,
                    GLOBAL_ACCOUNT,
                    subject,
                    reply,
                    queues,
                    headers,
                    payload,
                )
            });
            let Some(pending) = pending else {
                continue;
            };
            sent = true;
            *out_msgs += 1;
            *out_bytes += size;
            if pending > self.max_pending {
                tracing::warn!(rid = route.rid, remote = %route.remote_name, "Route pending data over {} bytes, closing the route", self.max_pending);
                route
                    .conn
                    .close(crate::client::CloseReason::SlowConsumerPendingBytes);
                continue;
            }
            if route.conn.claim_flush() {
                to_wake.push(route.conn.clone());
            }
        }
        sent
    }
}

// ---------------------------------------------------------------------------------------
// Snapshots for monitoring
// ---------------------------------------------------------------------------------------

/// One route as `/routez` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStats {
    pub rid: u64,
    pub remote_id: String,
    pub remote_name: String,
    pub did_solicit: bool,
    pub is_configured: bool,
    pub ip: String,
    pub port: u16,
    pub start: SystemTime,
    pub last_activity: SystemTime,
    pub pending_size: usize,
    /// Round trip of the last answered route PING; zero until one was answered.
    pub rtt: std::time::Duration,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    /// Subjects (with ` queue` appended for queue interest) the remote is interested in.
    pub subscriptions: Vec<String>,
}

pub(crate) fn route_stats(cluster: &Cluster) -> Vec<RouteStats> {
    let routes: Vec<Arc<Route>> = cluster.state.lock().routes.values().cloned().collect();
    let mut v: Vec<RouteStats> = routes
        .iter()
        .map(|r| {
            let (out_msgs, out_bytes, pending_size) = r.conn.out_stats();
            let subscriptions = r
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
            RouteStats {
                rid: r.rid,
                remote_id: r.remote_id.clone(),
                remote_name: r.remote_name.clone(),
                did_solicit: r.did_solicit,
                is_configured: r.reconnect.lock().as_ref().is_some_and(|(_, c)| *c),
                ip: r.conn.peer.ip().to_string(),
                port: r.conn.peer.port(),
                start: r.start,
                last_activity: crate::monitor::from_unix_nanos(
                    r.last_activity.load(Ordering::Relaxed),
                ),
                pending_size,
                rtt: std::time::Duration::from_nanos(r.conn.rtt_nanos.load(Ordering::Relaxed)),
                in_msgs: r.in_msgs.load(Ordering::Relaxed),
                in_bytes: r.in_bytes.load(Ordering::Relaxed),
                out_msgs,
                out_bytes,
                subscriptions,
            }
        })
        .collect();
    v.sort_by_key(|r| r.rid);
    v
}

/// The route INFO this server sends.
pub(crate) fn route_info(srv: &ServerInner, cluster: &Cluster) -> RouteInfo {
    RouteInfo {
        server_id: srv.id.clone(),
        server_name: srv.name.clone(),
        version: NATS_COMPAT_VERSION.to_string(),
        // nats-server's RouteProtoV2: routes carry accounts (`RS+ $G ...`).
        proto: 2,
        go: concat!("midge/", env!("CARGO_PKG_VERSION")).to_string(),
        host: cluster.info_host.clone(),
        port: cluster.info_port,
        headers: true,
        auth_required: srv.opts().cluster.user.is_some(),
        max_payload: srv.opts().max_payload,
        ip: cluster.info_ip.clone(),
        cluster: cluster.name(),
        dynamic: cluster.dynamic.load(Ordering::Relaxed),
        connect_urls: if srv.opts().cluster.no_advertise {
            Vec::new()
        } else {
            cluster.own_client_urls.clone()
        },
        ldm: false,
    }
}

/// Sends the current INFO (with the members' `connect_urls`) to every client that can take
/// an asynchronous INFO (protocol >= 1, past its first PING), so it knows where to fail over.
/// Each carries the client's own `client_id` and `client_ip`, as every INFO nats-server
/// sends a client does.
pub(crate) fn send_async_info(srv: &ServerInner) {
    if srv.opts().cluster.no_advertise {
        return;
    }
    let mut info = srv.info_template();
    let mut bytes = Vec::new();
    let clients: Vec<Arc<ClientShared>> = srv
        .clients
        .lock()
        .values()
        .filter(|c| c.wants_async_info())
        .cloned()
        .collect();
    for c in clients {
        info.client_id = c.cid;
        info.client_ip = c.peer.ip().to_string();
        bytes.clear();
        info.encode(&mut bytes);
        c.append(0, 0, |out| out.extend_from_slice(&bytes));
        c.wake();
    }
}

/// Lame duck mode: tell every route (`INFO` with `ldm: true`), so that the other servers
/// stop giving this server's client URLs to their clients.
pub(crate) fn announce_lame_duck(srv: &ServerInner) {
    let Some(cluster) = &srv.cluster else {
        return;
    };
    let mut info = route_info(srv, cluster);
    info.ldm = true;
    let Ok(json) = serde_json::to_vec(&info) else {
        return;
    };
    let routes: Vec<Arc<Route>> = cluster.state.lock().routes.values().cloned().collect();
    for route in routes {
        route.conn.append(0, 0, |out| encode::info(out, &json));
        route.conn.wake();
    }
}
