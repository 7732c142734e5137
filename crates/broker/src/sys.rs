//! The system account: what the server tells about itself and its clients, and what it
//! answers when asked, on nats-server's `$SYS` subjects and in its JSON shapes, so that
//! `nats server ls`, `nats event` and other tools work unchanged.
//!
//! - Events: `$SYS.ACCOUNT.<account>.CONNECT` / `.DISCONNECT` for clients of every account
//!   but the global one (as nats-server), `$SYS.SERVER.<id>.STATSZ` every
//!   [`STATSZ_INTERVAL`], `$SYS.SERVER.<id>.LAMEDUCK` and `.SHUTDOWN`,
//!   `$SYS.ACCOUNT.<account>.SERVER.CONNS` (and the older
//!   `$SYS.SERVER.ACCOUNT.<account>.CONNS`) when an account's connections change and
//!   every 30 s while it has some. Nothing is built or sent when nobody listens.
//! - Services: `$SYS.REQ.SERVER.PING` (statsz), and `$SYS.REQ.SERVER.PING.<Z>` /
//!   `$SYS.REQ.SERVER.<id>.<Z>` for `STATSZ`, `IDZ`, `VARZ`, `CONNZ`, `SUBSZ`, `ROUTEZ`,
//!   `LEAFZ`, `ACCOUNTZ` and `HEALTHZ`; `$SYS.REQ.ACCOUNT.<account>.<Z>` for an account's
//!   `CONNZ`, `SUBSZ`, `LEAFZ`, `JSZ`, `INFO`, `STATZ` and `CONNS`, and
//!   `$SYS.REQ.ACCOUNT.PING.STATZ`. The request body may filter by `server_name`,
//!   `cluster`, `host`, `tags` and `domain`, and carry the endpoint's options.
//! - Every other account imports `$SYS.REQ.SERVER.PING.CONNZ` and
//!   `$SYS.REQ.ACCOUNT.PING.CONNZ` (its own `CONNZ`) and `$SYS.REQ.ACCOUNT.PING.STATZ`
//!   (its own `STATZ`) from the system account, as in nats-server, so its users can see
//!   their own connections across the cluster (see `core::imports`).
//!
//! Everything goes through the router in the system account, so routes carry events and
//! requests across a cluster (mixed with nats-server too) like any other message. The
//! services are one internal subscriber served by one task: a request never runs on a
//! client's task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::client::{ClientShared, CloseReason};
use crate::core::router::{self, Origin, Router};
use crate::core::{Account, InternalMsg, InternalSub, Subscriber, Subscription};
use crate::info::NATS_COMPAT_VERSION;
use crate::monitor::{self, rfc3339};
use crate::server::ServerInner;

/// How often `$SYS.SERVER.<id>.STATSZ` goes out while someone listens (nats-server's
/// steady-state interval).
pub(crate) const STATSZ_INTERVAL: Duration = Duration::from_secs(10);
/// Requests and events waiting for the services task; past this, they are dropped (an
/// asker times out, as with an overloaded nats-server; a lost account-connections event is
/// made good by the next one or the 30 s heartbeat). Room for every server of a large
/// cluster reporting a few hundred accounts at once.
const REQUEST_QUEUE: usize = 4096;

/// Event sequence numbers (`server.seq` in every event), and the accounts whose
/// connection counts changed since their last `SERVER.CONNS` event.
#[derive(Debug, Default)]
pub(crate) struct SysState {
    seq: AtomicU64,
    conns_changed: parking_lot::Mutex<Vec<Arc<str>>>,
    /// Accounts whose connection counts were asked of the other servers.
    asked_conns: parking_lot::Mutex<std::collections::HashSet<Arc<str>>>,
    conns_wake: Arc<tokio::sync::Notify>,
}

/// `SERVER.CONNS` events of one account go out at most this often: each one sums the
/// account's clients, so a storm of connections costs one sum per interval, not one each.
const ACCOUNT_CONNS_MIN_GAP: Duration = Duration::from_millis(100);

/// `server` in every event and answer.
#[derive(Debug, Serialize)]
struct ServerInfo<'a> {
    name: &'a str,
    host: String,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    ver: &'static str,
    jetstream: bool,
    flags: u64,
    seq: u64,
    time: String,
}

fn server_info(srv: &ServerInner) -> ServerInfo<'_> {
    ServerInfo {
        name: &srv.name,
        host: srv.opts().host.to_string(),
        id: &srv.id,
        cluster: srv.cluster.as_ref().map(|c| c.name()),
        ver: NATS_COMPAT_VERSION,
        jetstream: srv.jetstream.is_some(),
        flags: 0,
        seq: srv.sys.seq.fetch_add(1, Ordering::Relaxed) + 1,
        time: rfc3339(SystemTime::now()),
    }
}

/// A client as events describe it (nats-server's `ClientInfo`).
#[derive(Debug, Serialize)]
pub(crate) struct ClientInfo {
    start: String,
    host: String,
    id: u64,
    acc: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    user: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    lang: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    ver: String,
    /// Nanoseconds, as Go encodes a `time.Duration`.
    #[serde(skip_serializing_if = "is_zero")]
    rtt: u64,
    server: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    kind: &'static str,
    client_type: &'static str,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn client_info(
    srv: &ServerInner,
    c: &ClientShared,
    stop: Option<SystemTime>,
) -> ClientInfo {
    let meta = c.meta.lock().clone();
    ClientInfo {
        start: rfc3339(c.start),
        host: c.peer.ip().to_string(),
        id: c.cid,
        acc: c.account.lock().to_string(),
        user: meta.user,
        name: meta.name,
        lang: meta.lang,
        ver: meta.version,
        rtt: c.rtt_nanos.load(Ordering::Relaxed),
        server: srv.name.clone(),
        cluster: srv.cluster.as_ref().map(|c| c.name()),
        stop: stop.map(rfc3339),
        kind: "Client",
        client_type: "nats",
    }
}

#[derive(Debug, Serialize)]
struct DataStats {
    msgs: u64,
    bytes: u64,
}

#[derive(Debug, Serialize)]
struct ConnectEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    server: ServerInfo<'a>,
    client: ClientInfo,
}

#[derive(Debug, Serialize)]
struct DisconnectEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    server: ServerInfo<'a>,
    client: ClientInfo,
    sent: DataStats,
    received: DataStats,
    reason: String,
}

/// An event id: 22 random base-62 characters, the shape of a NUID.
fn event_id() -> String {
    random_id(22)
}

/// `len` random base-62 characters.
pub(crate) fn random_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// True when some subscriber of the system account would receive `subject`.
fn has_interest(account: &Account, subject: &str) -> bool {
    let r = account.sublist.matches(subject.as_bytes());
    !r.psubs.is_empty() || !r.qsubs.is_empty()
}

/// Publishes `payload` in the system account. True when someone received it.
fn publish(srv: &Arc<ServerInner>, subject: &str, payload: &[u8]) -> bool {
    publish_with_reply(srv, subject, None, payload)
}

/// [`publish`] with a reply subject.
fn publish_with_reply(
    srv: &Arc<ServerInner>,
    subject: &str,
    reply: Option<&str>,
    payload: &[u8],
) -> bool {
    let Some(account) = srv.accounts.system().cloned() else {
        return false;
    };
    let result = account.sublist.matches(subject.as_bytes());
    if result.psubs.is_empty() && result.qsubs.is_empty() {
        return false;
    }
    let mut router = Router::new(srv.clone(), rand::random());
    let delivered = router.route(
        &account,
        &result,
        Origin::Internal,
        subject.as_bytes(),
        reply.map(str::as_bytes),
        None,
        payload,
    );
    router.flush(true);
    delivered
}

fn publish_json<T: Serialize>(srv: &Arc<ServerInner>, subject: &str, value: &T) {
    match serde_json::to_vec(value) {
        Ok(json) => {
            publish(srv, subject, &json);
        }
        Err(e) => tracing::warn!("system event {subject}: cannot encode: {e}"),
    }
}

/// Whether a client's account is one whose activity is reported (not the global one).
fn reported(srv: &ServerInner, c: &ClientShared) -> Option<(Arc<Account>, Arc<str>)> {
    let system = srv.accounts.system()?.clone();
    let acc = c.account.lock().clone();
    if &*acc == crate::core::GLOBAL_ACCOUNT {
        return None;
    }
    Some((system, acc))
}

/// A client finished CONNECT: `$SYS.ACCOUNT.<account>.CONNECT`.
pub(crate) fn client_connected(srv: &Arc<ServerInner>, c: &ClientShared) {
    let Some((system, acc)) = reported(srv, c) else {
        return;
    };
    account_conns_changed(srv, &acc);
    let subject = format!("$SYS.ACCOUNT.{acc}.CONNECT");
    if !has_interest(&system, &subject) {
        return;
    }
    let event = ConnectEvent {
        kind: "io.nats.server.advisory.v1.client_connect",
        id: event_id(),
        timestamp: rfc3339(SystemTime::now()),
        server: server_info(srv),
        client: client_info(srv, c, None),
    };
    publish_json(srv, &subject, &event);
}

/// A connected client is gone: `$SYS.ACCOUNT.<account>.DISCONNECT`, with its traffic and
/// the reason `/connz?state=closed` shows.
pub(crate) fn client_disconnected(srv: &Arc<ServerInner>, c: &ClientShared, reason: CloseReason) {
    let Some((system, acc)) = reported(srv, c) else {
        return;
    };
    account_conns_changed(srv, &acc);
    let subject = format!("$SYS.ACCOUNT.{acc}.DISCONNECT");
    if !has_interest(&system, &subject) {
        return;
    }
    let (out_msgs, out_bytes, _) = c.out_stats();
    let event = DisconnectEvent {
        kind: "io.nats.server.advisory.v1.client_disconnect",
        id: event_id(),
        timestamp: rfc3339(SystemTime::now()),
        server: server_info(srv),
        client: client_info(srv, c, Some(SystemTime::now())),
        sent: DataStats {
            msgs: out_msgs,
            bytes: out_bytes,
        },
        received: DataStats {
            msgs: c.in_msgs.load(Ordering::Relaxed),
            bytes: c.in_bytes.load(Ordering::Relaxed),
        },
        reason: reason.to_string(),
    };
    publish_json(srv, &subject, &event);
}

/// `$SYS.SERVER.<id>.LAMEDUCK` or `.SHUTDOWN` (`what`), with the server's info.
pub(crate) fn server_event(srv: &Arc<ServerInner>, what: &str) {
    let Some(system) = srv.accounts.system() else {
        return;
    };
    let subject = format!("$SYS.SERVER.{}.{what}", srv.id);
    if has_interest(system, &subject) {
        publish_json(srv, &subject, &server_info(srv));
    }
}

#[derive(Debug, Serialize)]
struct RouteStat {
    rid: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    sent: DataStats,
    received: DataStats,
    pending: usize,
}

#[derive(Debug, Serialize)]
struct ServerStats {
    start: String,
    mem: u64,
    cores: usize,
    cpu: f64,
    connections: usize,
    total_connections: u64,
    active_accounts: usize,
    subscriptions: u32,
    sent: DataStats,
    received: DataStats,
    slow_consumers: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<RouteStat>,
}

#[derive(Debug, Serialize)]
struct StatszMsg<'a> {
    server: ServerInfo<'a>,
    statsz: ServerStats,
}

fn statsz(srv: &ServerInner) -> StatszMsg<'_> {
    let stats = &srv.stats;
    let routes = srv
        .cluster
        .as_ref()
        .map(|c| crate::cluster::route_stats(c))
        .unwrap_or_default()
        .into_iter()
        .map(|r| RouteStat {
            rid: r.rid,
            name: r.remote_name,
            sent: DataStats {
                msgs: r.out_msgs,
                bytes: r.out_bytes,
            },
            received: DataStats {
                msgs: r.in_msgs,
                bytes: r.in_bytes,
            },
            pending: r.pending_size,
        })
        .collect();
    StatszMsg {
        server: server_info(srv),
        statsz: ServerStats {
            start: rfc3339(srv.start),
            mem: monitor::resident_memory(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: 0.0,
            connections: srv.num_connections(),
            total_connections: stats.total_connections.load(Ordering::Relaxed),
            active_accounts: srv
                .accounts
                .all()
                .iter()
                .filter(|a| a.num_clients.load(Ordering::Relaxed) > 0)
                .count(),
            subscriptions: u32::try_from(srv.accounts.num_subscriptions()).unwrap_or(u32::MAX),
            sent: DataStats {
                msgs: stats.out_msgs.load(Ordering::Relaxed),
                bytes: stats.out_bytes.load(Ordering::Relaxed),
            },
            received: DataStats {
                msgs: stats.in_msgs.load(Ordering::Relaxed),
                bytes: stats.in_bytes.load(Ordering::Relaxed),
            },
            slow_consumers: stats.slow_consumers.load(Ordering::Relaxed),
            routes,
        },
    }
}

/// The endpoints of `$SYS.REQ.ACCOUNT.<account>.<endpoint>` (`STATZ` also answers
/// `$SYS.REQ.ACCOUNT.PING.STATZ`, every account at once).
const ACCOUNT_ENDPOINTS: [&str; 7] = ["SUBSZ", "CONNZ", "LEAFZ", "JSZ", "INFO", "STATZ", "CONNS"];

/// Other servers' account connection counts (nats-server 2.9 sends and reads this older
/// subject; midge sends both) and shutdowns, which end a server's counts.
const REMOTE_CONNS: &str = "$SYS.SERVER.ACCOUNT.*.CONNS";
const REMOTE_SHUTDOWN: &str = "$SYS.SERVER.*.SHUTDOWN";

/// The subjects the services answer on (and the events they follow).
fn service_subjects(id: &str) -> Vec<String> {
    let mut v = vec![
        "$SYS.REQ.SERVER.PING".to_string(),
        "$SYS.REQ.SERVER.PING.*".to_string(),
        format!("$SYS.REQ.SERVER.{id}.*"),
        REMOTE_CONNS.to_string(),
        REMOTE_SHUTDOWN.to_string(),
        conns_inbox(id),
    ];
    v.extend(
        ACCOUNT_ENDPOINTS
            .iter()
            .map(|e| format!("$SYS.REQ.ACCOUNT.*.{e}")),
    );
    v
}

/// How often an account with connections here tells the cluster how many it has
/// (nats-server's events heartbeat).
const ACCOUNT_CONNS_INTERVAL: Duration = Duration::from_secs(30);

/// `AccountNumConns`: an account's connections on this server, sent when they change, every
/// [`ACCOUNT_CONNS_INTERVAL`] while there are some, and in answer to `.CONNS` requests
/// (nats-server counts an account's connections across the cluster from them).
#[derive(Debug, Serialize)]
struct AccountNumConns<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    timestamp: String,
    server: ServerInfo<'a>,
    #[serde(flatten)]
    stat: monitor::AccountStat,
}

fn account_num_conns<'a>(srv: &'a ServerInner, acc: &Account) -> AccountNumConns<'a> {
    AccountNumConns {
        kind: "io.nats.server.advisory.v1.account_connections",
        id: event_id(),
        timestamp: rfc3339(SystemTime::now()),
        server: server_info(srv),
        stat: monitor::account_stat(srv, acc),
    }
}

fn account_conns_subjects(account: &str) -> [String; 2] {
    [
        format!("$SYS.ACCOUNT.{account}.SERVER.CONNS"),
        format!("$SYS.SERVER.ACCOUNT.{account}.CONNS"),
    ]
}

/// The connections of `account` changed: its `SERVER.CONNS` event is due (sent by the
/// services task, see [`send_account_conns`]) when someone listens.
fn account_conns_changed(srv: &Arc<ServerInner>, account: &Arc<str>) {
    let Some(system) = srv.accounts.system() else {
        return;
    };
    if &**account == crate::core::GLOBAL_ACCOUNT {
        return;
    }
    if !others_listen_for_conns(system, account) {
        return;
    }
    let mut changed = srv.sys.conns_changed.lock();
    if !changed.contains(account) {
        changed.push(account.clone());
    }
    drop(changed);
    srv.sys.conns_wake.notify_one();
}

/// Whether someone besides this server's own services (which follow the older subject
/// for the other servers' counts) listens for `account`'s connection events: another
/// server over a route, or a client.
fn others_listen_for_conns(system: &Account, account: &str) -> bool {
    let [new, old] = account_conns_subjects(account);
    let count = |subject: &str| {
        let r = system.sublist.matches(subject.as_bytes());
        r.psubs.len() + r.qsubs.len()
    };
    count(&new) > 0 || count(&old) > 1
}

/// `$SYS.ACCOUNT.<account>.SERVER.CONNS` and the older `$SYS.SERVER.ACCOUNT.<account>.CONNS`,
/// to whoever listens (nats-server peers do).
fn send_account_conns(srv: &Arc<ServerInner>, account: &str) {
    let Some(system) = srv.accounts.system() else {
        return;
    };
    if !others_listen_for_conns(system, account) {
        return;
    }
    let subjects = account_conns_subjects(account);
    let Some(acc) = srv.accounts.get(account) else {
        return;
    };
    let event = account_num_conns(srv, &acc);
    for subject in &subjects {
        publish_json(srv, subject, &event);
    }
    // The first time: ask the other servers for their counts of the account, as
    // nats-server does, instead of waiting for their next change or heartbeat (a server
    // that just started knows nothing of the clients already elsewhere).
    if srv.sys.asked_conns.lock().insert(acc.name.clone()) {
        let request = serde_json::json!({"server": server_info(srv), "acc": account});
        if let Ok(body) = serde_json::to_vec(&request) {
            publish_with_reply(
                srv,
                &format!("$SYS.REQ.ACCOUNT.{account}.CONNS"),
                Some(&conns_inbox(&srv.id)),
                &body,
            );
        }
    }
}

/// Where other servers answer this server's `.CONNS` requests (nats-server's subject).
fn conns_inbox(id: &str) -> String {
    format!("$SYS._INBOX_.{id}")
}

/// Starts the services of the system account (nothing with `no_system_account`).
pub(crate) fn start(srv: &Arc<ServerInner>, http_addr: Option<(std::net::SocketAddr, bool)>) {
    let Some(account) = srv.accounts.system().cloned() else {
        return;
    };
    let (handler, mut rx) = InternalSub::new(REQUEST_QUEUE);
    let mut subs = Vec::new();
    for subject in service_subjects(&srv.id) {
        let sub = Subscription::new(
            Subscriber::Internal(handler.clone()),
            account.clone(),
            subject.as_bytes(),
            None,
            b"",
        );
        if router::subscribe(srv, &sub).is_ok() {
            subs.push(sub);
        }
    }
    // A directory resolver takes account JWT pushes and answers lookups.
    let full_resolver = srv
        .opts()
        .auth
        .operator
        .as_ref()
        .is_some_and(|m| matches!(m.resolver, crate::options::Resolver::Full { .. }));
    if full_resolver {
        for subject in CLAIM_SUBJECTS {
            let sub = Subscription::new(
                Subscriber::Internal(handler.clone()),
                account.clone(),
                subject.as_bytes(),
                None,
                b"",
            );
            if router::subscribe(srv, &sub).is_ok() {
                subs.push(sub);
            }
        }
    }
    let monitor = monitor::MonitorState::detached(srv.clone(), http_addr);
    let weak = Arc::downgrade(srv);
    let mut shutdown = srv.shutdown_signal();
    let system = account;
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(STATSZ_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conns_ticks = tokio::time::interval(ACCOUNT_CONNS_INTERVAL);
        conns_ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut conns_due = tokio::time::Instant::now();
        let Some(conns_wake) = weak.upgrade().map(|s| s.sys.conns_wake.clone()) else {
            return;
        };
        loop {
            // One reading of the clock for both branches: one of them is always armed.
            let conns_ready = conns_due <= tokio::time::Instant::now();
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let Some(srv) = weak.upgrade() else { break };
                    answer(&srv, &monitor, msg);
                }
                _ = ticks.tick() => {
                    let Some(srv) = weak.upgrade() else { break };
                    let subject = format!("$SYS.SERVER.{}.STATSZ", srv.id);
                    if has_interest(&system, &subject) {
                        publish_json(&srv, &subject, &statsz(&srv));
                    }
                }
                _ = conns_ticks.tick() => {
                    let Some(srv) = weak.upgrade() else { break };
                    for acc in srv.accounts.all() {
                        if acc.num_clients.load(Ordering::Relaxed) > 0 {
                            account_conns_changed(&srv, &acc.name);
                        }
                    }
                }
                () = conns_wake.notified(), if conns_ready => {
                    let Some(srv) = weak.upgrade() else { break };
                    let changed = std::mem::take(&mut *srv.sys.conns_changed.lock());
                    for account in changed {
                        send_account_conns(&srv, &account);
                    }
                    conns_due = tokio::time::Instant::now() + ACCOUNT_CONNS_MIN_GAP;
                }
                () = tokio::time::sleep_until(conns_due), if !conns_ready => {}
                _ = shutdown.changed() => break,
            }
        }
        if let Some(srv) = weak.upgrade() {
            for sub in &subs {
                router::unsubscribe(&srv, sub);
            }
        }
    });
}

/// The part of a request body every endpoint understands (nats-server's
/// `EventFilterOptions`): a server answers when its name, host and cluster contain the
/// strings given, it has every tag given (midge has none) and is in the domain given.
#[derive(Debug, Default, serde::Deserialize)]
struct Filter {
    #[serde(default)]
    server_name: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    domain: String,
}

impl Filter {
    /// True when the request is not for this server.
    fn skips(&self, srv: &ServerInner) -> bool {
        let opts = srv.opts();
        let domain = opts.jetstream.as_ref().and_then(|j| j.domain.as_deref());
        (!self.server_name.is_empty() && !srv.name.contains(&self.server_name))
            || (!self.cluster.is_empty()
                && !srv
                    .cluster
                    .as_ref()
                    .is_some_and(|c| c.name().contains(&self.cluster)))
            || (!self.host.is_empty() && !opts.host.to_string().contains(&self.host))
            || !self.tags.is_empty()
            || (!self.domain.is_empty() && domain != Some(self.domain.as_str()))
    }
}

/// The options of `STATZ` requests (nats-server's `AccountStatzOptions`).
#[derive(Debug, Default, serde::Deserialize)]
struct StatzOptions {
    #[serde(default)]
    accounts: Vec<String>,
    #[serde(default)]
    include_unused: bool,
}

#[derive(Debug, Serialize)]
struct ApiError {
    code: u16,
    description: String,
}

#[derive(Debug, Serialize)]
struct ApiResponse<'a> {
    server: ServerInfo<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ApiError>,
}

#[derive(Debug, Serialize)]
struct ServerId<'a> {
    name: &'a str,
    host: String,
    id: &'a str,
}

/// Account claim pushes and lookups (directory resolver), as nats-server's.
const CLAIM_SUBJECTS: [&str; 5] = [
    "$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE",
    "$SYS.REQ.CLAIMS.UPDATE",
    "$SYS.REQ.ACCOUNT.*.CLAIMS.LOOKUP",
    "$SYS.REQ.CLAIMS.LIST",
    "$SYS.REQ.CLAIMS.DELETE",
];

/// The account keys the directory resolver holds (`<key>.jwt` in its `dir`), sorted.
fn stored_accounts(srv: &ServerInner) -> std::io::Result<Vec<String>> {
    let opts = srv.opts();
    let Some(dir) = opts.auth.operator.as_ref().and_then(|m| m.resolver_dir()) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(key) = name.strip_suffix(".jwt") {
            if !key.starts_with('.') {
                keys.push(key.to_string());
            }
        }
    }
    keys.sort();
    Ok(keys)
}

/// `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE` / `$SYS.REQ.CLAIMS.UPDATE` (the pushed JWT is the
/// body), `$SYS.REQ.ACCOUNT.<key>.CLAIMS.LOOKUP` (answered with the JWT, or not at all
/// when unknown, so that another server may answer), `$SYS.REQ.CLAIMS.LIST` (the stored
/// account keys) and `$SYS.REQ.CLAIMS.DELETE` (see `reload::delete_account_claims`).
/// `false`: not a claims subject.
fn answer_claims(srv: &Arc<ServerInner>, msg: &InternalMsg) -> bool {
    let subject = String::from_utf8_lossy(&msg.subject).into_owned();
    let reply = msg
        .reply
        .as_ref()
        .and_then(|r| std::str::from_utf8(r).ok())
        .map(str::to_string);
    let account = subject
        .strip_prefix("$SYS.REQ.ACCOUNT.")
        .and_then(|rest| rest.split('.').next())
        .map(str::to_string);
    if subject == "$SYS.REQ.CLAIMS.LIST" {
        // One answer with every stored account key; none (the asker times out) when the
        // directory cannot be read, as nats-server.
        let Some(reply) = reply else {
            return true;
        };
        match stored_accounts(srv) {
            Ok(keys) => publish_json(
                srv,
                &reply,
                &serde_json::json!({"server": server_info(srv), "data": keys}),
            ),
            Err(e) => tracing::warn!("claims list request: {e}"),
        }
        return true;
    }
    if subject == "$SYS.REQ.CLAIMS.DELETE" {
        let token = String::from_utf8_lossy(&msg.payload).into_owned();
        let weak = Arc::downgrade(srv);
        tokio::spawn(async move {
            let Some(srv) = weak.upgrade() else { return };
            let result = crate::reload::delete_account_claims(&srv, &token).await;
            let server = server_info(&srv);
            let response = match result {
                Ok(message) => serde_json::json!({"server": server,
                    "data": {"code": 200, "message": message}}),
                Err(description) => {
                    tracing::warn!("account claims delete refused: {description}");
                    serde_json::json!({"server": server,
                        "error": {"code": 500, "description": description}})
                }
            };
            if let Some(reply) = reply {
                publish_json(&srv, &reply, &response);
            }
        });
        return true;
    }
    if subject.ends_with(".CLAIMS.LOOKUP") {
        let (Some(reply), Some(account)) = (reply, account) else {
            return true;
        };
        let jwt = srv
            .opts()
            .auth
            .operator
            .as_ref()
            .and_then(|m| m.resolver_dir())
            .and_then(|dir| std::fs::read_to_string(dir.join(format!("{account}.jwt"))).ok());
        if let Some(jwt) = jwt {
            publish(srv, &reply, jwt.trim().as_bytes());
        }
        return true;
    }
    if !subject.ends_with(".CLAIMS.UPDATE") {
        return false;
    }
    let token = String::from_utf8_lossy(&msg.payload).into_owned();
    let weak = Arc::downgrade(srv);
    tokio::spawn(async move {
        let Some(srv) = weak.upgrade() else { return };
        let result = crate::reload::update_account_claims(&srv, &token, account.as_deref()).await;
        let Some(reply) = reply else { return };
        let server = server_info(&srv);
        let response = match result {
            Ok(key) => serde_json::json!({"server": server,
                "data": {"account": key, "code": 200, "message": "jwt updated"}}),
            Err((key, description)) => {
                tracing::warn!("account claim update refused: {description}");
                serde_json::json!({"server": server,
                    "error": {"account": key, "code": 500, "description": description}})
            }
        };
        publish_json(&srv, &reply, &response);
    });
    true
}

/// Another server's account connections (`SERVER.CONNS`) or its shutdown: the remote
/// counts `max_connections` adds up. Over the limit, the account's newest local clients
/// are closed, as nats-server does (each server does the same, so it may close a few
/// more than needed: they reconnect). `false`: not such an event.
fn follow_remote_conns(srv: &Arc<ServerInner>, msg: &InternalMsg) -> bool {
    let subject = String::from_utf8_lossy(&msg.subject);
    let tokens: Vec<&str> = subject.split('.').collect();
    match tokens[..] {
        ["$SYS", "SERVER", id, "SHUTDOWN"] => {
            if id != srv.id {
                for acc in srv.accounts.all() {
                    acc.forget_remote_server(id);
                }
            }
            true
        }
        ["$SYS", "SERVER", "ACCOUNT", _, "CONNS"] | ["$SYS", "_INBOX_", _] => {
            #[derive(serde::Deserialize)]
            struct Server {
                id: String,
            }
            #[derive(serde::Deserialize)]
            struct Conns {
                server: Server,
                acc: String,
                #[serde(default)]
                conns: u32,
            }
            let Ok(m) = serde_json::from_slice::<Conns>(&msg.payload) else {
                return true;
            };
            if m.server.id == srv.id {
                return true;
            }
            let Some(acc) = srv.accounts.get(&m.acc) else {
                return true;
            };
            acc.set_remote_clients(&m.server.id, m.conns);
            close_over_max_connections(srv, &acc);
            true
        }
        _ => false,
    }
}

/// Closes the newest local clients of `acc` beyond its `max_connections`, counting the
/// cluster's.
fn close_over_max_connections(srv: &Arc<ServerInner>, acc: &Account) {
    let max = acc.limits.read().max_connections;
    if max == 0 || !acc.over_max_connections() {
        return;
    }
    let local = acc.num_clients.load(Ordering::Relaxed) as usize;
    // Saturating: clients may have left since the check.
    let over = (local + acc.remote_clients() as usize).saturating_sub(max);
    let mut clients: Vec<_> = srv
        .clients
        .lock()
        .values()
        .filter(|c| *c.account.lock() == acc.name && !c.is_closed())
        .cloned()
        .collect();
    clients.sort_by_key(|c| std::cmp::Reverse(c.start));
    for c in clients.into_iter().take(over) {
        tracing::warn!(cid = c.cid, account = %acc.name, "maximum account active connections exceeded across the cluster");
        c.enqueue(|b| {
            b.extend_from_slice(b"-ERR 'maximum account active connections exceeded'\r\n")
        });
        c.close(CloseReason::MaxAccountConnectionsExceeded);
    }
}

/// Answers one request of the services.
fn answer(srv: &Arc<ServerInner>, monitor: &monitor::MonitorState, msg: InternalMsg) {
    if follow_remote_conns(srv, &msg) || answer_claims(srv, &msg) {
        return;
    }
    let Some(reply) = msg.reply.as_ref().and_then(|r| std::str::from_utf8(r).ok()) else {
        return;
    };
    let subject = String::from_utf8_lossy(&msg.subject);
    let endpoint = if subject == "$SYS.REQ.SERVER.PING" {
        "STATSZ"
    } else {
        subject.rsplit('.').next().unwrap_or_default()
    };
    let body: Option<serde_json::Value> = if msg.payload.is_empty() {
        None
    } else {
        match serde_json::from_slice(&msg.payload) {
            Ok(v) => Some(v),
            Err(e) => {
                let response = ApiResponse {
                    server: server_info(srv),
                    data: None,
                    error: Some(ApiError {
                        code: 400,
                        description: e.to_string(),
                    }),
                };
                publish_json(srv, reply, &response);
                return;
            }
        }
    };
    if let Some(v) = &body {
        let filter: Filter = serde_json::from_value(v.clone()).unwrap_or_default();
        if filter.skips(srv) {
            return;
        }
    }
    // `$SYS.REQ.ACCOUNT.<account>.<endpoint>`: five tokens.
    let tokens: Vec<&str> = subject.split('.').collect();
    if let ["$SYS", "REQ", "ACCOUNT", account, _] = tokens[..] {
        answer_account(srv, monitor, account, endpoint, reply, body.as_ref());
        return;
    }
    match endpoint {
        "STATSZ" => publish_json(srv, reply, &statsz(srv)),
        "IDZ" => publish_json(
            srv,
            reply,
            &ServerId {
                name: &srv.name,
                host: srv.opts().host.to_string(),
                id: &srv.id,
            },
        ),
        "VARZ" | "CONNZ" | "SUBSZ" | "ROUTEZ" | "LEAFZ" | "ACCOUNTZ" | "JSZ" | "HEALTHZ" => {
            let query = monitor::Query::from_json(body.as_ref());
            let (data, error) = match monitor::endpoint_json(monitor, endpoint, &query) {
                Ok(v) => (Some(v), None),
                Err(e) => (
                    None,
                    Some(ApiError {
                        code: 400,
                        description: e,
                    }),
                ),
            };
            let response = ApiResponse {
                server: server_info(srv),
                data,
                error,
            };
            publish_json(srv, reply, &response);
        }
        // KICK, LDM, RELOAD and the rest are not offered: the asker times out, as with a
        // server that does not know the request.
        _ => {}
    }
}

/// Answers `$SYS.REQ.ACCOUNT.<account>.<endpoint>` as nats-server does: the account's part
/// of `CONNZ`, `SUBSZ`, `LEAFZ`, `JSZ`, its `INFO`; `STATZ` only when it has connections
/// here (always with `include_unused`), for every account when `account` is `PING`; `CONNS` only
/// when it has connections here. Errors come back as `error` with code 500.
fn answer_account(
    srv: &Arc<ServerInner>,
    monitor: &monitor::MonitorState,
    account: &str,
    endpoint: &str,
    reply: &str,
    body: Option<&serde_json::Value>,
) {
    let data = match endpoint {
        "STATZ" => {
            let opts: StatzOptions = body
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            let accounts = if account == "PING" {
                opts.accounts
            } else {
                vec![account.to_string()]
            };
            let statz = monitor::account_statz(srv, &accounts, opts.include_unused);
            if statz.account_statz.is_empty() && !opts.include_unused {
                return;
            }
            serde_json::to_value(&statz).map_err(|e| e.to_string())
        }
        "CONNS" => {
            // The body, when there is one, names the same account (`accNumConnsReq`).
            if let Some(named) = body.and_then(|v| v.get("acc")).and_then(|v| v.as_str()) {
                if named != account {
                    return;
                }
            }
            let Some(acc) = srv.accounts.get(account) else {
                return;
            };
            if acc.num_clients.load(Ordering::Relaxed) == 0 {
                return;
            }
            publish_json(srv, reply, &account_num_conns(srv, &acc));
            return;
        }
        _ => monitor::account_endpoint_json(
            monitor,
            endpoint,
            account,
            monitor::Query::from_json(body),
        ),
    };
    let (data, error) = match data {
        Ok(v) => (Some(v), None),
        Err(description) => (
            None,
            Some(ApiError {
                code: 500,
                description,
            }),
        ),
    };
    let response = ApiResponse {
        server: server_info(srv),
        data,
        error,
    };
    publish_json(srv, reply, &response);
}
