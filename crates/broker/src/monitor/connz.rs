//! `/connz`: open connections and a bounded ring of recently closed ones.
//!
//! Query parameters as nats-server's: `sort`, `auth`, `subs=1|detail`, `offset`, `limit`
//! (default 1024), `cid`, `state=open|closed|all`. Only the `cid` sort is ascending (and
//! `uptime` and `reason`, as in nats-server); every other sort puts the largest first.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::Serialize;

use super::query::{Query, QueryError};
use super::{from_unix_nanos, go_duration, rfc3339, uptime};
use crate::client::ClientShared;
use crate::server::ServerInner;

/// nats-server's default size of the list of closed connections.
pub(crate) const MAX_CLOSED_CONNS: usize = 10_000;
/// Default and largest page when no `limit` is given.
const DEFAULT_LIMIT: i64 = 1024;

/// What a client said about itself in CONNECT, kept for monitoring.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnMeta {
    pub name: String,
    pub lang: String,
    pub version: String,
    /// The user the client authenticated as (empty without user auth).
    pub user: String,
}

/// One subscription as `/connz?subs=detail` and `/subsz?subs=1` show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct SubDetail {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub account: String,
    pub subject: String,
    #[serde(rename = "qgroup", skip_serializing_if = "String::is_empty")]
    pub queue: String,
    pub sid: String,
    pub msgs: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub max: u64,
    pub cid: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A client's subscriptions, ordered by sid (numeric sids in numeric order).
pub(crate) fn sub_details(client: &ClientShared) -> Vec<SubDetail> {
    let mut v: Vec<SubDetail> = client
        .subs
        .lock()
        .values()
        .map(|s| SubDetail {
            account: String::new(),
            subject: String::from_utf8_lossy(&s.subject).into_owned(),
            queue: s
                .queue
                .as_deref()
                .map(|q| String::from_utf8_lossy(q).into_owned())
                .unwrap_or_default(),
            sid: String::from_utf8_lossy(&s.sid).into_owned(),
            // Counted for every delivery (see `Conn::deliver`), so exact; past an
            // auto-unsubscribe limit the counter may run over by racing publishers.
            msgs: {
                let max = s.max.load(Ordering::Relaxed);
                let n = s.delivered.load(Ordering::Relaxed);
                if max > 0 {
                    n.min(max)
                } else {
                    n
                }
            },
            max: s.max.load(Ordering::Relaxed),
            cid: client.cid,
        })
        .collect();
    v.sort_by(|a, b| (a.sid.len(), &a.sid).cmp(&(b.sid.len(), &b.sid)));
    v
}

/// A connection that ended, as remembered for `/connz?state=closed`.
#[derive(Debug, Clone)]
pub(crate) struct ClosedConn {
    cid: u64,
    ip: String,
    port: u16,
    start: SystemTime,
    last: SystemTime,
    stop: SystemTime,
    reason: String,
    rtt: Duration,
    in_msgs: u64,
    in_bytes: u64,
    out_msgs: u64,
    out_bytes: u64,
    meta: ConnMeta,
    account: Arc<str>,
    subs: Vec<SubDetail>,
}

impl ClosedConn {
    /// Snapshot of `client` as it ends; `subs` were taken before they left the sublist.
    pub fn new(client: &ClientShared, subs: Vec<SubDetail>) -> ClosedConn {
        let (out_msgs, out_bytes, _) = client.out_stats();
        ClosedConn {
            cid: client.cid,
            ip: client.peer.ip().to_string(),
            port: client.peer.port(),
            start: client.start,
            last: from_unix_nanos(client.last_activity.load(Ordering::Relaxed)),
            stop: SystemTime::now(),
            reason: client
                .close_reason()
                .map(|r| r.to_string())
                .unwrap_or_default(),
            rtt: Duration::from_nanos(client.rtt_nanos.load(Ordering::Relaxed)),
            in_msgs: client.in_msgs.load(Ordering::Relaxed),
            in_bytes: client.in_bytes.load(Ordering::Relaxed),
            out_msgs,
            out_bytes,
            meta: client.meta.lock().clone(),
            account: client.account.lock().clone(),
            subs,
        }
    }
}

/// The most recent [`MAX_CLOSED_CONNS`] closed connections, oldest first.
#[derive(Debug)]
pub(crate) struct ClosedRing {
    ring: Mutex<VecDeque<ClosedConn>>,
    cap: usize,
}

impl Default for ClosedRing {
    fn default() -> Self {
        ClosedRing::with_capacity(MAX_CLOSED_CONNS)
    }
}

impl ClosedRing {
    pub fn with_capacity(cap: usize) -> Self {
        ClosedRing {
            ring: Mutex::new(VecDeque::new()),
            cap,
        }
    }

    pub fn push(&self, c: ClosedConn) {
        let mut ring = self.ring.lock();
        if ring.len() >= self.cap {
            ring.pop_front();
        }
        ring.push_back(c);
    }

    fn snapshot(&self) -> Vec<ClosedConn> {
        self.ring.lock().iter().cloned().collect()
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Connz {
    server_id: String,
    now: String,
    num_connections: usize,
    total: usize,
    offset: i64,
    limit: i64,
    connections: Vec<ConnInfo>,
}

/// One connection; field names, order and omission rules as nats-server's `ConnInfo`.
#[derive(Debug, Serialize)]
struct ConnInfo {
    cid: u64,
    kind: &'static str,
    #[serde(rename = "type")]
    kind_type: &'static str,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    reason: String,
    rtt: String,
    uptime: String,
    idle: String,
    pending_bytes: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    lang: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    authorized_user: String,
    /// With `auth=1`, for clients outside the global account.
    #[serde(skip_serializing_if = "String::is_empty")]
    account: String,
    #[serde(rename = "subscriptions_list", skip_serializing_if = "Vec::is_empty")]
    subs: Vec<String>,
    #[serde(
        rename = "subscriptions_list_detail",
        skip_serializing_if = "Vec::is_empty"
    )]
    subs_detail: Vec<SubDetail>,
}

/// A connection with the raw values the sorts compare.
struct Row {
    info: ConnInfo,
    start: SystemTime,
    last: SystemTime,
    stop: Option<SystemTime>,
    rtt: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Cid,
    Subs,
    Pending,
    MsgsTo,
    MsgsFrom,
    BytesTo,
    BytesFrom,
    Last,
    Idle,
    Uptime,
    Stop,
    Reason,
    Rtt,
}

impl Sort {
    fn parse(s: &str) -> Result<Sort, QueryError> {
        Ok(match s {
            "cid" | "start" => Sort::Cid,
            "subs" => Sort::Subs,
            "pending" => Sort::Pending,
            "msgs_to" => Sort::MsgsTo,
            "msgs_from" => Sort::MsgsFrom,
            "bytes_to" => Sort::BytesTo,
            "bytes_from" => Sort::BytesFrom,
            "last" => Sort::Last,
            "idle" => Sort::Idle,
            "uptime" => Sort::Uptime,
            "stop" => Sort::Stop,
            "reason" => Sort::Reason,
            "rtt" => Sort::Rtt,
            other => return Err(QueryError::Sort(other.to_string())),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubsLevel {
    None,
    List,
    Detail,
}

/// Builds the `/connz` answer for these query parameters.
pub(crate) fn connz(srv: &ServerInner, q: &Query) -> Result<Connz, QueryError> {
    let sort = q
        .get("sort")
        .map(Sort::parse)
        .transpose()?
        .unwrap_or(Sort::Cid);
    let auth = q.bool("auth")?;
    let subs = match q.get("subs") {
        Some(v) if v.eq_ignore_ascii_case("detail") => SubsLevel::Detail,
        _ if q.bool("subs")? => SubsLevel::List,
        _ => SubsLevel::None,
    };
    let offset = q.int("offset")?.max(0);
    let mut limit = q.int("limit")?;
    if limit <= 0 {
        limit = DEFAULT_LIMIT;
    }
    let cid = q.uint("cid")?;
    let state = match q.get("state").map(str::to_ascii_lowercase).as_deref() {
        None | Some("open") => State::Open,
        Some("closed") => State::Closed,
        Some("all" | "any") => State::All,
        Some(other) => return Err(QueryError::State(other.to_string())),
    };
    match sort {
        Sort::Stop if state != State::Closed => return Err(QueryError::SortNeedsClosed("stop")),
        Sort::Reason if state != State::Closed => {
            return Err(QueryError::SortNeedsClosed("reason"))
        }
        _ => {}
    }
    if cid > 0 {
        limit = 1;
    }
    // `acc=`: only that account's connections (none for an account that does not exist).
    let acc = q.get("acc");
    let in_acc = |name: &str| acc.is_none_or(|a| a == name);

    let now = SystemTime::now();
    let mut rows = Vec::new();
    if state != State::Closed {
        let mut open: Vec<_> = srv.clients.lock().values().cloned().collect();
        if cid > 0 {
            open.retain(|c| c.cid == cid);
        }
        open.retain(|c| in_acc(&c.account.lock()));
        rows.extend(open.iter().map(|c| open_row(c, now, auth, subs)));
    }
    // A cid found open is not looked for among the closed (nats-server does the same).
    if state != State::Open && (cid == 0 || rows.is_empty()) {
        let mut closed = srv.closed.snapshot();
        if cid > 0 {
            closed.retain(|c| c.cid == cid);
        }
        closed.retain(|c| in_acc(&c.account));
        rows.extend(closed.into_iter().map(|c| closed_row(c, auth, subs)));
    }
    sort_rows(&mut rows, sort, now);

    let total = rows.len();
    let from = (offset as usize).min(total);
    let to = from.saturating_add(limit as usize).min(total);
    let connections: Vec<ConnInfo> = rows
        .into_iter()
        .skip(from)
        .take(to - from)
        .map(|r| r.info)
        .collect();
    Ok(Connz {
        server_id: srv.id.clone(),
        now: rfc3339(now),
        num_connections: connections.len(),
        total,
        offset,
        limit,
        connections,
    })
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or_default()
}

fn fill_subs(info: &mut ConnInfo, details: Vec<SubDetail>, level: SubsLevel) {
    match level {
        SubsLevel::None => {}
        SubsLevel::List => info.subs = details.into_iter().map(|d| d.subject).collect(),
        SubsLevel::Detail => info.subs_detail = details,
    }
}

fn open_row(c: &ClientShared, now: SystemTime, auth: bool, subs: SubsLevel) -> Row {
    let (out_msgs, out_bytes, pending_bytes) = c.out_stats();
    let last = from_unix_nanos(c.last_activity.load(Ordering::Relaxed));
    let rtt = Duration::from_nanos(c.rtt_nanos.load(Ordering::Relaxed));
    let meta = c.meta.lock().clone();
    let details = if subs == SubsLevel::None {
        Vec::new()
    } else {
        sub_details(c)
    };
    let mut info = ConnInfo {
        cid: c.cid,
        kind: "Client",
        kind_type: "nats",
        ip: c.peer.ip().to_string(),
        port: c.peer.port(),
        start: rfc3339(c.start),
        last_activity: rfc3339(last),
        stop: None,
        reason: String::new(),
        rtt: go_duration(rtt),
        uptime: uptime(since(now, c.start)),
        idle: uptime(since(now, last)),
        pending_bytes,
        in_msgs: c.in_msgs.load(Ordering::Relaxed),
        out_msgs,
        in_bytes: c.in_bytes.load(Ordering::Relaxed),
        out_bytes,
        subscriptions: u32::try_from(c.subs.lock().len()).unwrap_or(u32::MAX),
        name: meta.name,
        lang: meta.lang,
        version: meta.version,
        authorized_user: if auth { meta.user } else { String::new() },
        account: shown_account(auth, &c.account.lock()),
        subs: Vec::new(),
        subs_detail: Vec::new(),
    };
    fill_subs(&mut info, details, subs);
    Row {
        info,
        start: c.start,
        last,
        stop: None,
        rtt,
    }
}

/// nats-server names the account only when asked for auth details, and not `$G`.
fn shown_account(auth: bool, account: &str) -> String {
    if auth && account != crate::core::GLOBAL_ACCOUNT {
        account.to_string()
    } else {
        String::new()
    }
}

fn closed_row(c: ClosedConn, auth: bool, subs: SubsLevel) -> Row {
    let mut info = ConnInfo {
        cid: c.cid,
        kind: "Client",
        kind_type: "nats",
        ip: c.ip,
        port: c.port,
        start: rfc3339(c.start),
        last_activity: rfc3339(c.last),
        stop: Some(rfc3339(c.stop)),
        reason: c.reason,
        rtt: go_duration(c.rtt),
        // As nats-server: measured when the connection closed.
        uptime: uptime(since(c.stop, c.start)),
        idle: uptime(since(c.stop, c.last)),
        pending_bytes: 0,
        in_msgs: c.in_msgs,
        out_msgs: c.out_msgs,
        in_bytes: c.in_bytes,
        out_bytes: c.out_bytes,
        subscriptions: u32::try_from(c.subs.len()).unwrap_or(u32::MAX),
        name: c.meta.name,
        lang: c.meta.lang,
        version: c.meta.version,
        authorized_user: if auth { c.meta.user } else { String::new() },
        account: shown_account(auth, &c.account),
        subs: Vec::new(),
        subs_detail: Vec::new(),
    };
    fill_subs(&mut info, c.subs, subs);
    Row {
        info,
        start: c.start,
        last: c.last,
        stop: Some(c.stop),
        rtt: c.rtt,
    }
}

fn sort_rows(rows: &mut [Row], sort: Sort, now: SystemTime) {
    // Ties keep cid order, so pages are stable between requests.
    rows.sort_by_key(|r| r.info.cid);
    let up = |r: &Row| since(r.stop.unwrap_or(now), r.start);
    match sort {
        Sort::Cid => {}
        Sort::Subs => rows.sort_by_key(|r| Reverse(r.info.subscriptions)),
        Sort::Pending => rows.sort_by_key(|r| Reverse(r.info.pending_bytes)),
        Sort::MsgsTo => rows.sort_by_key(|r| Reverse(r.info.out_msgs)),
        Sort::MsgsFrom => rows.sort_by_key(|r| Reverse(r.info.in_msgs)),
        Sort::BytesTo => rows.sort_by_key(|r| Reverse(r.info.out_bytes)),
        Sort::BytesFrom => rows.sort_by_key(|r| Reverse(r.info.in_bytes)),
        Sort::Last => rows.sort_by_key(|r| Reverse(r.last)),
        Sort::Idle => rows.sort_by_key(|r| Reverse(since(now, r.last))),
        Sort::Uptime => rows.sort_by_key(|r| up(r)),
        Sort::Stop => rows.sort_by_key(|r| Reverse(r.stop)),
        Sort::Reason => rows.sort_by(|a, b| a.info.reason.cmp(&b.info.reason)),
        Sort::Rtt => rows.sort_by_key(|r| Reverse(r.rtt)),
    }
}

#[cfg(test)]
impl ClosedConn {
    pub fn for_test(cid: u64) -> ClosedConn {
        ClosedConn {
            cid,
            ip: "127.0.0.1".into(),
            port: 1,
            start: SystemTime::UNIX_EPOCH,
            last: SystemTime::UNIX_EPOCH,
            stop: SystemTime::UNIX_EPOCH,
            reason: "Client Closed".into(),
            rtt: Duration::ZERO,
            in_msgs: 0,
            in_bytes: 0,
            out_msgs: 0,
            out_bytes: 0,
            meta: ConnMeta::default(),
            account: crate::core::GLOBAL_ACCOUNT.into(),
            subs: Vec::new(),
        }
    }
}

#[cfg(test)]
impl ClosedRing {
    pub fn snapshot_cids(&self) -> Vec<u64> {
        self.snapshot().iter().map(|c| c.cid).collect()
    }

    /// (cid, subscriptions kept) of every closed connection in the ring.
    pub fn snapshot_sub_counts(&self) -> Vec<(u64, usize)> {
        self.snapshot()
            .iter()
            .map(|c| (c.cid, c.subs.len()))
            .collect()
    }
}
