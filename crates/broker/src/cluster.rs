//! Cluster state shared by every connection: the routes, the interest learned from them,
//! the interest this server announces, and the per-publisher forwarding of messages.
//!
//! Interest learned from a route (`RS+ <account> <subject> [<queue> <weight>]`) is a
//! subscription of kind [`Subscriber::Route`] in that account's sublist, next to the local
//! ones, so a publish is one lookup and the router (`core::router`) decides per subscriber
//! kind: a route gets one `RMSG` per message, never for a message that came over a route.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use midge_proto::encode;
use midge_proto::hash::{keyed_set, KeyedMap, KeyedSet};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::client::ClientShared;
use crate::core::{Account, Subscription};
use crate::info::NATS_COMPAT_VERSION;
use crate::options::RouteUrl;
use crate::server::ServerInner;

/// Routes are never closed for a slow write (nats-server), but their pending data is
/// bounded so that a dead peer cannot take all memory; past this the route is closed and
/// solicited again.
pub(crate) const ROUTE_MIN_MAX_PENDING: usize = 256 * 1024 * 1024;

/// Key of an interest entry: account, subject and optional queue name.
pub(crate) type InterestKey = (Arc<str>, Box<[u8]>, Option<Box<[u8]>>);

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
    /// Interest this remote announced, by account, subject and queue: subscriptions of
    /// kind [`Subscriber::Route`] in the accounts' sublists.
    pub subs: Mutex<KeyedMap<InterestKey, Arc<Subscription>>>,
    /// The leaf cluster each of those came from, when the remote said (`LS+ <origin> ...`).
    pub origins: Mutex<KeyedMap<InterestKey, Arc<str>>>,
    /// The remote understands leaf-origin interest and messages (`lnoc` in its INFO).
    pub lnoc: bool,
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub start: SystemTime,
    /// Unix nanoseconds of the last read from this route.
    pub last_activity: AtomicU64,
}

impl Route {
    /// Drops `sub` from this route's interest; false when it was not there (any more).
    pub(crate) fn forget_sub(&self, sub: &Arc<Subscription>) -> bool {
        let key: InterestKey = (
            sub.account.name.clone(),
            sub.subject.clone(),
            sub.queue.clone(),
        );
        let mut subs = self.subs.lock();
        match subs.get(&key) {
            Some(s) if Arc::ptr_eq(s, sub) => subs.remove(&key).is_some(),
            _ => false,
        }
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
    /// Leaf-origin interest and messages are understood (`LS+`/`LMSG` with an origin).
    #[serde(skip_serializing_if = "is_false")]
    pub lnoc: bool,
    /// Routes use TLS, and (always, with routes) verify the peer's certificate.
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
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

/// Local interest in one subject (and queue).
#[derive(Debug, Default, Clone)]
pub(crate) struct Interest {
    /// Subscriptions (a queue's weight).
    pub count: u32,
    /// Of those, how many came from the leaf cluster `origin`.
    pub from_origin: u32,
    pub origin: Option<Arc<str>>,
}

impl Interest {
    /// The leaf cluster all of this interest comes from, if it all comes from one.
    pub fn origin(&self) -> Option<&Arc<str>> {
        self.origin
            .as_ref()
            .filter(|_| self.count > 0 && self.from_origin == self.count)
    }
}

/// Routes and interest, under one lock so that a new route's initial interest and later
/// changes reach it in order.
#[derive(Debug, Default)]
pub(crate) struct ClusterState {
    pub routes: FxHashMap<u64, Arc<Route>>,
    /// Server id -> rid of its registered route.
    pub remotes: KeyedMap<String, u64>,
    /// Local interest announced to routes: subscription count per subject and queue.
    pub interest: KeyedMap<InterestKey, Interest>,
    /// Server ids an implicit (gossiped) connection attempt is under way for.
    pub connecting: KeyedSet<String>,
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
    pub state: Mutex<ClusterState>,
    pub num_routes: AtomicUsize,
    pub next_rid: AtomicU64,
    /// Addresses that turned out to be this server; never dialled again.
    pub routes_to_self: Mutex<KeyedSet<SocketAddr>>,
    /// Configured route URLs found to name this server (a StatefulSet's list names every
    /// pod): when they are all of them, the server has no peers to join.
    pub self_urls: AtomicUsize,
    /// Set when the first route registered: the server has joined its mesh once
    /// (`/healthz?routes=1`).
    pub ever_routed: AtomicBool,
    /// This server's own client URLs (`host:port`), as put in `connect_urls`.
    pub own_client_urls: Vec<String>,
    /// Set once clients were given other members' URLs: from then on `connect_urls` is never
    /// empty, so when the last member goes clients learn that only this server is left.
    shared_member_urls: AtomicBool,
    /// Route TLS for new connections (`cluster { tls {} }`); a reload swaps it, established
    /// routes keep their sessions.
    pub tls: parking_lot::RwLock<Option<crate::tls::RouteTls>>,
}

impl Cluster {
    pub fn new(
        opts: &crate::options::Options,
        listen_addr: SocketAddr,
        client_addr: SocketAddr,
        tls: Option<crate::tls::RouteTls>,
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
        let mut routes_to_self = keyed_set();
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
            state: Mutex::new(ClusterState::default()),
            num_routes: AtomicUsize::new(0),
            next_rid: AtomicU64::new(1),
            routes_to_self: Mutex::new(routes_to_self),
            self_urls: AtomicUsize::new(0),
            ever_routed: AtomicBool::new(false),
            own_client_urls: own_client_urls(opts, client_addr),
            shared_member_urls: AtomicBool::new(false),
            tls: parking_lot::RwLock::new(tls),
        }
    }

    pub fn name(&self) -> String {
        self.name.lock().clone()
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
pub(crate) fn local_interest(
    srv: &ServerInner,
    account: &Account,
    subject: &[u8],
    queue: Option<&[u8]>,
    added: bool,
    origin: Option<&Arc<str>>,
) {
    let Some(cluster) = &srv.cluster else {
        return;
    };
    let mut state = cluster.state.lock();
    let key: InterestKey = (account.name.clone(), subject.into(), queue.map(Into::into));
    let entry = state.interest.entry(key.clone()).or_default();
    let before = entry.count;
    let origin_before = entry.origin().cloned();
    if added {
        entry.count += 1;
    } else {
        entry.count = entry.count.saturating_sub(1);
    }
    if let Some(o) = origin {
        if entry.origin.as_ref().is_none_or(|e| e == o) {
            entry.origin = Some(o.clone());
            if added {
                entry.from_origin += 1;
            } else {
                entry.from_origin = entry.from_origin.saturating_sub(1);
            }
        }
    }
    let after = entry.count;
    let origin_after = entry.origin().cloned();
    if after == 0 {
        state.interest.remove(&key);
    }
    let send = match queue {
        None => (before == 0) != (after == 0) || (after > 0 && origin_before != origin_after),
        Some(_) => before != after || origin_before != origin_after,
    };
    if !send || state.routes.is_empty() {
        return;
    }
    let acc = account.name.as_bytes();
    for route in state.routes.values() {
        route.conn.append(0, 0, |out| {
            if after > 0 {
                announce(
                    out,
                    route.lnoc,
                    origin_after.as_deref(),
                    acc,
                    subject,
                    queue,
                    after,
                );
            } else {
                encode::rs_unsub(out, acc, subject, queue);
            }
        });
        route.conn.wake();
    }
}

/// `RS+`, or `LS+` with the origin for a peer that understands it.
fn announce(
    out: &mut Vec<u8>,
    lnoc: bool,
    origin: Option<&str>,
    account: &[u8],
    subject: &[u8],
    queue: Option<&[u8]>,
    n: u32,
) {
    match origin {
        Some(o) if lnoc => {
            encode::ls_sub_origin(out, o.as_bytes(), account, subject, queue.map(|q| (q, n)));
        }
        _ => encode::rs_sub(out, account, subject, queue.map(|q| (q, n))),
    }
}

/// Appends the whole local interest to a new route's buffer. The caller holds the state lock.
pub(crate) fn send_all_interest(state: &ClusterState, conn: &ClientShared, lnoc: bool) {
    conn.append(0, 0, |out| {
        for ((account, subject, queue), interest) in &state.interest {
            announce(
                out,
                lnoc,
                interest.origin().map(|o| &**o),
                account.as_bytes(),
                subject,
                queue.as_deref(),
                interest.count,
            );
        }
    });
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
                .map(|(_, s, q)| match q {
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
        lnoc: true,
        tls_required: cluster.tls.read().is_some(),
        tls_verify: cluster.tls.read().is_some(),
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
