//! The router: the one publisher-side path from a published message to every interested
//! subscriber of any kind, whoever published it (a client, a route, the server itself).
//!
//! It is nats-server's `processMsgResults` in shape: the account's match result holds
//! subscribers of every kind, and each is served by its kind:
//! - a client gets a `MSG`/`HMSG` appended to its outbound buffer (headers stripped when it
//!   did not negotiate them, its delivery permissions and auto-unsubscribe honoured);
//! - a route collects the message once per route, with the queue names it was chosen for,
//!   and gets one `RMSG` at the end; never for a message that came over a route;
//! - an internal subscriber gets an owned copy on its channel.
//!
//! Each queue group gets the message once: one member is drawn with every member
//! weighted by what it stands for (a client 1, a route the member count its server
//! announced), so the choice is uniform over all members in the cluster. A local member
//! that cannot take it (closed, over its limit) passes it to the next local member, then
//! to a route. A message from a route is given to local members of the groups it names only.
//!
//! Receivers are woken once per read of the publisher (see [`Router::flush`]), and
//! written to directly when the read carried few messages (latency) or by their own writer
//! tasks when it carried many (throughput).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use midge_proto::encode;
use midge_proto::hash::{keyed_map, KeyedMap};
use midge_proto::parser::queue_names;
use midge_proto::sublist::{MatchResult, SublistError};
use tracing::warn;

use super::imports::{self, Responses, ServiceImport, Shadow};
use super::{Account, InternalSub, SubRef, Subscriber, Subscription};
use crate::client::{Append, ClientShared, CloseReason, Queued};
use crate::cluster::{self, Route};
use crate::jetstream::stream::StreamIngest;
use crate::leaf::Leaf;
use crate::server::ServerInner;

/// Who published a message, which decides where it may go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Origin<'a> {
    /// A client; `echo: false` keeps its own subscriptions out.
    Client {
        conn: &'a Arc<ClientShared>,
        echo: bool,
    },
    /// A route, with the queue groups the sending server chose this server for, and the
    /// leaf cluster the message came from when the sender said (`LMSG <origin>`).
    Route {
        queues: &'a [u8],
        origin: Option<&'a [u8]>,
    },
    /// A leaf node connection, with the queue groups the other side chose this side for.
    Leaf {
        leaf: &'a Arc<Leaf>,
        queues: &'a [u8],
    },
    /// The server itself (system events, service replies): goes everywhere.
    Internal,
}

impl Origin<'_> {
    fn is_route(&self) -> bool {
        matches!(self, Origin::Route { .. })
    }

    /// Queue groups named by the sender (routes and leafs choose for us); `None` for a
    /// publisher that lets this server choose.
    fn named_queues(&self) -> Option<&[u8]> {
        match self {
            Origin::Route { queues, .. } | Origin::Leaf { queues, .. } => Some(queues),
            _ => None,
        }
    }

    /// Whether a message from here may go out over routes: not from a route (one hop), and
    /// not from a spoke leaf (the hub sent every server of this leaf cluster its own copy).
    fn may_use_routes(&self) -> bool {
        match self {
            Origin::Route { .. } => false,
            Origin::Leaf { leaf, .. } => !leaf.spoke,
            _ => true,
        }
    }

    /// Whether a message from here may go to leaf connection `to`: never back where it
    /// came from, and from a route only to hub-side leafs (a spoke's hub gets it directly).
    fn may_use_leaf(&self, to: &Arc<Leaf>) -> bool {
        match self {
            // Nor to another connection of the same leaf cluster: it had the message on
            // its own routes (nats-server's cluster-wide no echo).
            Origin::Leaf { leaf, .. } => {
                !Arc::ptr_eq(leaf, to)
                    && (leaf.remote_cluster.is_none() || leaf.remote_cluster != to.remote_cluster)
            }
            // Not back into the leaf cluster it came from (cluster-wide no echo).
            Origin::Route { origin, .. } => {
                !to.spoke
                    && (origin.is_none()
                        || *origin != to.remote_cluster.as_deref().map(str::as_bytes))
            }
            _ => true,
        }
    }

    /// True when `c` is the publishing client and it asked not to get its own messages.
    fn skips(&self, c: &Arc<ClientShared>) -> bool {
        matches!(self, Origin::Client { conn, echo: false } if Arc::ptr_eq(conn, c))
    }
}

/// A publisher's match results for one account, valid for one generation of the account's
/// sublist. The last subject is kept apart: publishers often repeat one, and then the
/// lookup costs neither hashing nor a reference count.
#[derive(Debug)]
pub(crate) struct MatchCache {
    account: Arc<Account>,
    gen: u64,
    map: KeyedMap<Box<[u8]>, Arc<MatchResult<SubRef>>>,
    last_subject: Vec<u8>,
    /// The result for `last_subject`, computed in generation `last_gen`.
    last: Option<Arc<MatchResult<SubRef>>>,
    last_gen: u64,
}

const CACHE_MAX: usize = 256;

/// Byte equality for the short subjects of the last-subject check, inline: a call into
/// libc's `memcmp` for a handful of bytes was 7-9% of a publish-only run (perf). Subjects up
/// to 16 bytes compare as two (overlapping) words, longer ones with `==`.
#[inline(always)]
pub(crate) fn same_subject(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let half = |s: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    };
    match n {
        0..=3 => a.iter().zip(b).all(|(x, y)| x == y),
        4..=7 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        8..=16 => word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8),
        _ => a == b,
    }
}

impl MatchCache {
    pub fn new(account: Arc<Account>) -> Self {
        MatchCache {
            account,
            gen: u64::MAX,
            map: keyed_map(),
            last_subject: Vec::new(),
            last: None,
            last_gen: u64::MAX,
        }
    }

    pub fn account(&self) -> &Arc<Account> {
        &self.account
    }

    /// Moves the cache to another account (a client's account changed at CONNECT).
    pub fn set_account(&mut self, account: Arc<Account>) {
        if !Arc::ptr_eq(&account, &self.account) {
            *self = MatchCache::new(account);
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.last = None;
        self.gen = u64::MAX;
        self.last_gen = u64::MAX;
    }

    /// The result for a subject about to be published; give it back with
    /// [`MatchCache::restore`] once delivered.
    pub fn take(&mut self, subj: &[u8]) -> Arc<MatchResult<SubRef>> {
        if let Some(r) = self.last.take() {
            if same_subject(&self.last_subject, subj)
                && self.account.sublist.generation() == self.last_gen
            {
                return r;
            }
        }
        let r = self.lookup(subj);
        self.last_subject.clear();
        self.last_subject.extend_from_slice(subj);
        self.last_gen = self.gen;
        r
    }

    pub fn restore(&mut self, r: Arc<MatchResult<SubRef>>) {
        self.last = Some(r);
    }

    /// The result for any subject, from the cache while the sublist has not changed.
    pub fn lookup(&mut self, subj: &[u8]) -> Arc<MatchResult<SubRef>> {
        let gen = self.account.sublist.generation();
        if gen != self.gen {
            self.map.clear();
            self.gen = gen;
        } else if let Some(r) = self.map.get(subj) {
            return r.clone();
        }
        let r = self.account.sublist.matches(subj);
        if subj.len() > midge_proto::sublist::MAX_CACHED_SUBJECT {
            return r;
        }
        if self.map.len() >= CACHE_MAX {
            self.map.clear();
        }
        self.map.insert(subj.into(), r.clone());
        r
    }
}

/// Delivery state of one publisher (a connection's reader task), reused message after
/// message so routing allocates nothing once warmed up.
#[derive(Debug)]
pub(crate) struct Router {
    srv: Arc<ServerInner>,
    /// Receivers that got data during the current read, woken once after it.
    to_wake: Vec<Arc<ClientShared>>,
    rng: u64,
    max_pending: usize,
    route_max_pending: usize,
    /// Routes the current message goes to, once each.
    targets: Vec<Arc<Route>>,
    /// (index in `targets`, index of the queue group in the match result).
    target_queues: Vec<(usize, usize)>,
    /// Leaf connections the current message goes to, once each, and their queue groups.
    leaf_targets: Vec<Arc<Leaf>>,
    leaf_target_queues: Vec<(usize, usize)>,
    pub batch_out_msgs: u64,
    pub batch_out_bytes: u64,
    /// Receivers over half of `max_pending` during this read: the publisher's transport
    /// waits for them before reading more (see `client::Conn::stall_for_receivers`).
    stalled: Vec<Arc<ClientShared>>,
    /// Imports being followed (an import may lead into an account that imports again);
    /// bounded by [`MAX_IMPORT_DEPTH`] so a cycle of imports cannot loop.
    depth: u8,
    /// Streams whose ingest queue went over its mark during this read.
    stalled_streams: Vec<Arc<StreamIngest>>,
    /// The current run of messages (see [`Router::route_run`]), encoded once.
    /// Boxed: only publishers that stream to several receivers need it, and every
    /// connection carries a router.
    run_frames: Option<Box<RunFrames>>,
}

/// A run of messages encoded once for all its receivers. The frames differ between
/// receivers only in the sid, so a receiver whose sid has the length of the one the run was
/// encoded with gets a copy of the whole run with its sid written over at each frame's sid
/// offset: one copy and a store per message instead of an encoding per message. (Clients
/// number their subscriptions from 1 per connection, so fan-out receivers usually have
/// sids of one length, often the same sid.)
#[derive(Debug, Default)]
struct RunFrames {
    valid: bool,
    sid_len: usize,
    bytes: Vec<u8>,
    /// Where each frame's sid starts in `bytes`.
    sid_at: Vec<usize>,
}

/// A run buffer larger than this is released after a read that carried few messages.
const MAX_IDLE_RUN_BUF: usize = 64 * 1024;

impl RunFrames {
    /// Appends the run's frames for `sid` to `out`.
    fn append(
        &mut self,
        out: &mut Vec<u8>,
        subj: &[u8],
        sid: &[u8],
        buf: &[u8],
        payloads: &[(usize, usize)],
    ) {
        if !self.valid || self.sid_len != sid.len() {
            self.bytes.clear();
            self.sid_at.clear();
            for &(at, len) in payloads {
                // `MSG `, the subject and a space come before the sid.
                self.sid_at.push(self.bytes.len() + 4 + subj.len() + 1);
                encode::msg(&mut self.bytes, subj, sid, None, &buf[at..at + len]);
            }
            self.sid_len = sid.len();
            self.valid = true;
        }
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let frames = &mut out[start..];
        if let [one] = sid {
            for &at in &self.sid_at {
                frames[at] = *one;
            }
        } else {
            for &at in &self.sid_at {
                frames[at..at + sid.len()].copy_from_slice(sid);
            }
        }
    }
}

/// How many imports one message may pass through.
const MAX_IMPORT_DEPTH: u8 = 4;

/// Writing for a few receivers in place saves a task wake-up each; past that the publisher
/// would spend its time writing for others, so their writers do it.
const MAX_DIRECT_FLUSHES: usize = 16;

impl Router {
    pub fn new(srv: Arc<ServerInner>, seed: u64) -> Self {
        let max_pending = srv.opts().max_pending;
        Router {
            srv,
            to_wake: Vec::new(),
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            max_pending,
            route_max_pending: max_pending.max(cluster::ROUTE_MIN_MAX_PENDING),
            targets: Vec::new(),
            target_queues: Vec::new(),
            leaf_targets: Vec::new(),
            leaf_target_queues: Vec::new(),
            batch_out_msgs: 0,
            batch_out_bytes: 0,
            depth: 0,
            stalled: Vec::new(),
            stalled_streams: Vec::new(),
            run_frames: None,
        }
    }

    /// Whether some receiver went over half of `max_pending` (or some stream's queue
    /// over its mark) during this read.
    pub fn has_stalled(&self) -> bool {
        !self.stalled.is_empty() || !self.stalled_streams.is_empty()
    }

    /// The streams whose queues went over their mark during this read: the publisher
    /// waits for them to drain before reading more.
    pub fn take_stalled_streams(&mut self) -> Vec<Arc<StreamIngest>> {
        std::mem::take(&mut self.stalled_streams)
    }

    /// The receivers to wait for after this read (the vector goes back with
    /// [`Router::restore_stalled`] to keep its allocation).
    pub fn take_stalled(&mut self) -> Vec<Arc<ClientShared>> {
        std::mem::take(&mut self.stalled)
    }

    pub fn restore_stalled(&mut self, mut v: Vec<Arc<ClientShared>>) {
        v.clear();
        if self.stalled.is_empty() {
            self.stalled = v;
        }
    }

    /// A reload changed `max_pending`.
    pub fn set_max_pending(&mut self, max_pending: usize) {
        self.max_pending = max_pending;
        self.route_max_pending = max_pending.max(cluster::ROUTE_MIN_MAX_PENDING);
    }

    /// Receivers waiting to be woken at the end of this read.
    pub fn pending_wakes(&self) -> &[Arc<ClientShared>] {
        &self.to_wake
    }

    /// Puts a connection on the list of writers to wake after this read (its own replies).
    pub fn queue_wake(&mut self, c: &Arc<ClientShared>) {
        if c.claim_flush() {
            self.to_wake.push(c.clone());
        }
    }

    /// xorshift: picks queue members without a shared RNG on the hot path.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Delivers one message published in `account` to everything in `result` (the account's
    /// match for `subj`). True when at least one subscriber got it.
    #[allow(clippy::too_many_arguments)]
    pub fn route(
        &mut self,
        account: &Account,
        result: &MatchResult<SubRef>,
        origin: Origin<'_>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let mut delivered = false;
        let from_route = origin.is_route();
        for s in &result.psubs {
            if let Some(shadow) = &s.0.shadow {
                delivered |= self.deliver_shadow(shadow, origin, subj, reply, headers, payload);
                continue;
            }
            match &s.0.owner {
                Subscriber::Client(c) => {
                    if !origin.skips(c) {
                        delivered |= self.deliver_client(&s.0, c, subj, reply, headers, payload);
                    }
                }
                Subscriber::Route(r) => {
                    if origin.may_use_routes() {
                        self.target(r);
                    }
                }
                Subscriber::Leaf(l) => {
                    if origin.may_use_leaf(l) && l.may_send(subj) {
                        self.leaf_target(l);
                    }
                }
                Subscriber::Internal(i) => {
                    delivered |= self.deliver_internal(&s.0, i, subj, reply, headers, payload);
                }
                Subscriber::Service(si) => {
                    // The server that got the request from its client ran the import.
                    if !from_route {
                        delivered |= self.service_request(si, subj, reply, headers, payload);
                    }
                }
                Subscriber::Responses(rs) => {
                    delivered |= self.service_response(rs, subj, headers, payload);
                }
                Subscriber::Stream(ingest) => {
                    if !from_route {
                        delivered |= self.deliver_stream(ingest, subj, reply, headers, payload);
                    }
                }
                Subscriber::JsApi(inbox) => {
                    if !from_route {
                        let client = match &origin {
                            Origin::Client { conn, .. } => Some(*conn),
                            _ => None,
                        };
                        delivered |= inbox.deliver(subj, reply, headers, payload, client);
                    }
                }
            }
        }
        for (gi, group) in result.qsubs.iter().enumerate() {
            if let Some(queues) = origin.named_queues() {
                if !queue_names(queues).any(|q| q == &*group.name) {
                    continue;
                }
            }
            delivered |= self.deliver_queue(gi, &group.subs, origin, subj, reply, headers, payload);
        }
        if !self.targets.is_empty() {
            let from_cluster = match origin {
                Origin::Leaf { leaf, .. } => leaf.remote_cluster.as_deref(),
                _ => None,
            };
            delivered |=
                self.send_to_routes(account, result, from_cluster, subj, reply, headers, payload);
        }
        if !self.leaf_targets.is_empty() {
            delivered |= self.send_to_leafs(result, subj, reply, headers, payload);
        }
        delivered
    }

    /// Delivers a run of messages one client published in one read to one subject, with
    /// no reply and no headers (`payloads`: ranges of `buf`), in order. When every
    /// subscriber is a client's plain subscription (no queue groups, routes, leafs,
    /// imports or internal subscribers), each receiver takes the whole run under one lock;
    /// with several receivers the run is encoded once and copied to each (see
    /// [`RunFrames`]): a delivery is then a copy instead of a lock, checks and an encoding
    /// per message.
    /// Anything else goes message by message through [`Router::route`].
    #[allow(clippy::too_many_arguments)]
    pub fn route_run(
        &mut self,
        account: &Account,
        result: &MatchResult<SubRef>,
        origin: Origin<'_>,
        subj: &[u8],
        buf: &[u8],
        payloads: &[(usize, usize)],
    ) {
        let plain = result.qsubs.is_empty()
            && result.psubs.iter().all(|s| {
                s.0.shadow.is_none()
                    && matches!(s.0.owner, Subscriber::Client(_) | Subscriber::Route(_))
            });
        if !plain || matches!(origin, Origin::Leaf { .. }) {
            for &(at, len) in payloads {
                self.route(
                    account,
                    result,
                    origin,
                    subj,
                    None,
                    None,
                    &buf[at..at + len],
                );
            }
            return;
        }
        if let Some(frames) = &mut self.run_frames {
            frames.valid = false;
        }
        let msgs = payloads.len() as u64;
        let size: u64 = payloads.iter().map(|p| p.1 as u64).sum();
        let shared_frames = result.psubs.len() > 1;
        for s in &result.psubs {
            let sub = &s.0;
            let c = match &sub.owner {
                Subscriber::Client(c) => c,
                Subscriber::Route(r) => {
                    if origin.may_use_routes() {
                        self.target(r);
                    }
                    continue;
                }
                _ => continue,
            };
            if origin.skips(c) || c.is_closed() {
                continue;
            }
            if let Some(dp) = c.delivery_perms() {
                if sub.is_wildcard && dp.denies(subj) {
                    continue;
                }
            }
            let appended = if shared_frames {
                let frames = self.run_frames.get_or_insert_with(Box::default);
                c.queue_for(sub, msgs, size, |out, sid| {
                    frames.append(out, subj, sid, buf, payloads);
                })
            } else {
                c.queue_for(sub, msgs, size, |out, sid| {
                    for &(at, len) in payloads {
                        encode::msg(out, subj, sid, None, &buf[at..at + len]);
                    }
                })
            };
            match appended {
                Append::Done {
                    queued: Queued { pending, size },
                    ..
                } => self.after_queue(c, msgs, pending, size),
                Append::Closed => {}
                // An auto-unsubscribe limit: counted message by message.
                Append::Limited => {
                    for &(at, len) in payloads {
                        self.deliver_client(sub, c, subj, None, None, &buf[at..at + len]);
                    }
                }
            }
        }
        if !self.targets.is_empty() {
            self.send_run_to_routes(account, subj, buf, payloads, size);
        }
    }

    /// A run for every route with interest: one `RMSG` per message, all under one lock.
    fn send_run_to_routes(
        &mut self,
        account: &Account,
        subj: &[u8],
        buf: &[u8],
        payloads: &[(usize, usize)],
        size: u64,
    ) {
        let msgs = payloads.len() as u64;
        let targets = std::mem::take(&mut self.targets);
        for route in &targets {
            let pending = route.conn.append(msgs, size, |out| {
                for &(at, len) in payloads {
                    encode::rmsg(
                        out,
                        account.name.as_bytes(),
                        subj,
                        None,
                        std::iter::empty(),
                        None,
                        &buf[at..at + len],
                    );
                }
            });
            self.after_route_append(route, msgs, size, pending);
        }
        self.targets = targets;
        self.targets.clear();
        self.target_queues.clear();
    }

    /// Counts what was appended for a route (`pending`: its buffer after it, `None` when it
    /// is closing) and applies its pending-bytes limit. True when something was appended.
    fn after_route_append(
        &mut self,
        route: &Arc<Route>,
        msgs: u64,
        size: u64,
        pending: Option<usize>,
    ) -> bool {
        let Some(pending) = pending else {
            return false;
        };
        self.batch_out_msgs += msgs;
        self.batch_out_bytes += size;
        if pending > self.route_max_pending {
            warn!(rid = route.rid, remote = %route.remote_name, "Route pending data over {} bytes, closing the route", self.route_max_pending);
            let _ = route.conn.close(CloseReason::SlowConsumerPendingBytes);
        } else {
            self.queue_wake(&route.conn);
        }
        true
    }

    /// One member of a queue group: drawn with weights, then the local members from there
    /// on until one takes it, then any route.
    #[allow(clippy::too_many_arguments)]
    fn deliver_queue(
        &mut self,
        gi: usize,
        members: &[SubRef],
        origin: Origin<'_>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let n = members.len();
        if n == 0 {
            return false;
        }
        let use_routes = origin.may_use_routes();
        // Leaf members are on the other side: they take a message only when nobody on
        // this side (local or over a route) did, so they weigh nothing in the draw.
        let weight = |s: &Subscription| match s.owner {
            Subscriber::Leaf(_) => 0,
            Subscriber::Route(_) if !use_routes => 0,
            _ => s.weight(),
        };
        let start = if !use_routes {
            self.next_random() as usize % n
        } else {
            let total: u64 = members.iter().map(|s| weight(&s.0)).sum();
            if total == 0 {
                0
            } else {
                let mut pick = self.next_random() % total;
                let mut chosen = 0;
                for (i, s) in members.iter().enumerate() {
                    let w = weight(&s.0);
                    if pick < w {
                        chosen = i;
                        break;
                    }
                    pick -= w;
                }
                if let Subscriber::Route(r) = &members[chosen].0.owner {
                    let t = self.target(r);
                    self.target_queues.push((t, gi));
                    return true;
                }
                chosen
            }
        };
        let mut fallback: Option<&Arc<Route>> = None;
        let mut leaf_fallback: Option<&Arc<Leaf>> = None;
        for i in 0..n {
            let s = &members[(start + i) % n].0;
            if let Some(shadow) = &s.shadow {
                if self.deliver_shadow(shadow, origin, subj, reply, headers, payload) {
                    return true;
                }
                continue;
            }
            let ok = match &s.owner {
                Subscriber::Client(c) => {
                    !origin.skips(c) && self.deliver_client(s, c, subj, reply, headers, payload)
                }
                Subscriber::Internal(h) => {
                    self.deliver_internal(s, h, subj, reply, headers, payload)
                }
                Subscriber::Route(r) => {
                    fallback.get_or_insert(r);
                    false
                }
                Subscriber::Leaf(l) => {
                    if origin.may_use_leaf(l) && l.may_send(subj) {
                        leaf_fallback.get_or_insert(l);
                    }
                    false
                }
                // Imports, responses and JetStream never join queue groups.
                Subscriber::Service(_)
                | Subscriber::Responses(_)
                | Subscriber::Stream(_)
                | Subscriber::JsApi(_) => false,
            };
            if ok {
                return true;
            }
        }
        match (fallback, leaf_fallback) {
            (Some(r), _) if use_routes => {
                let t = self.target(r);
                self.target_queues.push((t, gi));
                true
            }
            (_, Some(l)) => {
                let t = self.leaf_target(l);
                self.leaf_target_queues.push((t, gi));
                true
            }
            _ => false,
        }
    }

    fn leaf_target(&mut self, leaf: &Arc<Leaf>) -> usize {
        match self.leaf_targets.iter().position(|t| Arc::ptr_eq(t, leaf)) {
            Some(i) => i,
            None => {
                self.leaf_targets.push(leaf.clone());
                self.leaf_targets.len() - 1
            }
        }
    }

    /// One `LMSG` per target leaf connection, naming the queue groups it was chosen for.
    fn send_to_leafs(
        &mut self,
        result: &MatchResult<SubRef>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let size = (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        let mut sent = false;
        let targets = std::mem::take(&mut self.leaf_targets);
        for (ti, leaf) in targets.iter().enumerate() {
            let queues = self
                .leaf_target_queues
                .iter()
                .filter(move |(t, _)| *t == ti)
                .map(|&(_, gi)| &*result.qsubs[gi].name);
            let pending = leaf.conn.append(1, size, |out| {
                encode::lmsg(out, subj, reply, queues, headers, payload)
            });
            let Some(pending) = pending else {
                continue;
            };
            sent = true;
            self.batch_out_msgs += 1;
            self.batch_out_bytes += size;
            if pending > self.route_max_pending {
                warn!(
                    lid = leaf.id,
                    "Leafnode pending data over {} bytes, closing the connection",
                    self.route_max_pending
                );
                let _ = leaf.conn.close(CloseReason::SlowConsumerPendingBytes);
                continue;
            }
            self.queue_wake(&leaf.conn);
        }
        self.leaf_targets = targets;
        self.leaf_targets.clear();
        self.leaf_target_queues.clear();
        sent
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

    /// Counts a delivery to an internal subscriber against the subscription's
    /// auto-unsubscribe limit (a client's are counted under its lock, see
    /// [`ClientShared::queue_for`]). False when the limit was already reached; the delivery
    /// that reaches it removes the subscription.
    fn count_delivery(&self, sub: &Arc<Subscription>) -> bool {
        // Counted for every subscription so that `UNSUB <sid> <max>` can tell whether
        // `max` messages were already delivered.
        let n = sub.delivered.fetch_add(1, Ordering::AcqRel) + 1;
        let max = sub.max.load(Ordering::Acquire);
        if max != 0 {
            if n > max {
                return false;
            }
            if n == max {
                unsubscribe(&self.srv, sub);
            }
        }
        true
    }

    /// Queues one message for one client subscription. False when nothing was queued.
    fn deliver_client(
        &mut self,
        sub: &Arc<Subscription>,
        target: &Arc<ClientShared>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if target.is_closed() {
            return false;
        }
        let perms = target.delivery_perms();
        if let Some(dp) = perms {
            if sub.is_wildcard && dp.denies(subj) {
                return false;
            }
        }
        let headers = headers.filter(|_| target.wants_headers());
        let size = (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        let queued = target.queue_for(sub, 1, size, |out, sid| match headers {
            Some(h) => encode::hmsg(out, subj, sid, reply, h, payload),
            None => encode::msg(out, subj, sid, reply, payload),
        });
        let Append::Done {
            queued: Queued { pending, size },
            reached_max,
        } = queued
        else {
            return false;
        };
        if reached_max {
            unsubscribe(&self.srv, sub);
        }
        if let (Some(dp), Some(r)) = (perms, reply) {
            dp.record_reply(r);
        }
        self.after_queue(target, 1, pending, size);
        true
    }

    /// Counts what was queued for `target` and applies the pending-bytes rules: over
    /// `max_pending` it is cut off as a slow consumer; over half of it the publisher waits
    /// for it after this read. Otherwise it is woken after the read.
    fn after_queue(&mut self, target: &Arc<ClientShared>, msgs: u64, pending: usize, size: u64) {
        self.batch_out_msgs += msgs;
        self.batch_out_bytes += size;
        if pending > self.max_pending {
            // Several publishers can see the same receiver over the limit: one counts it.
            if target.close(CloseReason::SlowConsumerPendingBytes) {
                warn!(cid = target.cid, peer = %target.peer, "Slow Consumer Detected: MaxPending of {} Exceeded", self.max_pending);
                self.srv.count_slow_consumer(target);
            }
            return;
        }
        if pending > self.max_pending / 2 && !self.stalled.iter().any(|s| Arc::ptr_eq(s, target)) {
            self.stalled.push(target.clone());
        }
        self.queue_wake(target);
    }

    /// A message for a stream: queued for its task. Over the queue's mark, the publisher is
    /// remembered to wait after its read (back-pressure, never loss).
    fn deliver_stream(
        &mut self,
        ingest: &Arc<StreamIngest>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if ingest.is_closed() {
            return false;
        }
        if ingest.push(subj, reply, headers, payload)
            && !self.stalled_streams.iter().any(|s| Arc::ptr_eq(s, ingest))
        {
            self.stalled_streams.push(ingest.clone());
        }
        true
    }

    fn deliver_internal(
        &mut self,
        sub: &Arc<Subscription>,
        handler: &InternalSub,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if !self.count_delivery(sub) {
            return false;
        }
        match handler.queue() {
            Some(queue) => self.deliver_stream(queue, subj, reply, headers, payload),
            None => handler.deliver(subj, reply, headers, payload),
        }
    }

    /// A message for a shadow subscription: delivered to the importing subscriber under
    /// the subject it has in its own account, counted on its own subscription.
    fn deliver_shadow(
        &mut self,
        shadow: &Shadow,
        origin: Origin<'_>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let Some(parent) = shadow.parent.upgrade() else {
            return false;
        };
        let mapped = shadow.map.apply(subj);
        if !midge_proto::subject::matches(&parent.subject, &mapped) {
            return false;
        }
        match &parent.owner {
            Subscriber::Client(c) => {
                !origin.skips(c)
                    && self.deliver_client(&parent, c, &mapped, reply, headers, payload)
            }
            Subscriber::Internal(h) => {
                self.deliver_internal(&parent, h, &mapped, reply, headers, payload)
            }
            // A stream of the importing account stores what it imports.
            Subscriber::Stream(ingest) => {
                !origin.is_route() && self.deliver_stream(ingest, &mapped, reply, headers, payload)
            }
            _ => false,
        }
    }

    /// Publishes `subj` again in `account` (an import's other side): everything there,
    /// routes included, as if the server published it.
    fn route_in(
        &mut self,
        account: &Account,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if self.depth >= MAX_IMPORT_DEPTH {
            return false;
        }
        let result = account.sublist.matches(subj);
        // The outer message's route targets are not this one's.
        let targets = std::mem::take(&mut self.targets);
        let target_queues = std::mem::take(&mut self.target_queues);
        let leaf_targets = std::mem::take(&mut self.leaf_targets);
        let leaf_target_queues = std::mem::take(&mut self.leaf_target_queues);
        self.depth += 1;
        let delivered = self.route(
            account,
            &result,
            Origin::Internal,
            subj,
            reply,
            headers,
            payload,
        );
        self.depth -= 1;
        self.targets = targets;
        self.target_queues = target_queues;
        self.leaf_targets = leaf_targets;
        self.leaf_target_queues = leaf_target_queues;
        delivered
    }

    /// A request through a service import: published in the exporting account with a
    /// reply subject that leads back to the requester.
    fn service_request(
        &mut self,
        si: &ServiceImport,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let target = si.subject.as_deref().unwrap_or(subj);
        let mapped_reply = reply.and_then(|r| {
            si.responses
                .register(si.importer.clone(), r, si.response_type, si.threshold)
        });
        let exporter = si.exporter.clone();
        self.route_in(&exporter, target, mapped_reply.as_deref(), headers, payload)
    }

    /// A reply on an exporter's response subject: to the requester's reply subject in the
    /// importing account.
    fn service_response(
        &mut self,
        rs: &Responses,
        subj: &[u8],
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        match rs.resolve(subj) {
            Some((importer, reply)) => self.route_in(&importer, &reply, None, headers, payload),
            None => false,
        }
    }

    /// One `RMSG` per target route, naming the queue groups it was chosen for (`LMSG` with
    /// the origin, for a message from a leaf cluster to a route that understands it).
    #[allow(clippy::too_many_arguments)]
    fn send_to_routes(
        &mut self,
        account: &Account,
        result: &MatchResult<SubRef>,
        from_cluster: Option<&str>,
        subj: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        let size = (payload.len() + headers.map_or(0, <[u8]>::len)) as u64;
        let mut sent = false;
        let targets = std::mem::take(&mut self.targets);
        for (ti, route) in targets.iter().enumerate() {
            let queues = self
                .target_queues
                .iter()
                .filter(move |(t, _)| *t == ti)
                .map(|&(_, gi)| &*result.qsubs[gi].name);
            let pending = route.conn.append(1, size, |out| match from_cluster {
                Some(c) if route.lnoc => encode::lmsg_origin(
                    out,
                    c.as_bytes(),
                    account.name.as_bytes(),
                    subj,
                    reply,
                    queues,
                    headers,
                    payload,
                ),
                _ => encode::rmsg(
                    out,
                    account.name.as_bytes(),
                    subj,
                    reply,
                    queues,
                    headers,
                    payload,
                ),
            });
            sent |= self.after_route_append(route, 1, size, pending);
        }
        self.targets = targets;
        self.targets.clear();
        self.target_queues.clear();
        sent
    }

    /// Publishes the read's outbound counters and wakes every receiver once. `direct`:
    /// the read carried few messages, so write for the first receivers in place.
    pub fn flush(&mut self, direct: bool) {
        if self.batch_out_msgs > 0 {
            let stats = &self.srv.stats;
            stats
                .out_msgs
                .fetch_add(self.batch_out_msgs, Ordering::Relaxed);
            stats
                .out_bytes
                .fetch_add(self.batch_out_bytes, Ordering::Relaxed);
            self.batch_out_msgs = 0;
            self.batch_out_bytes = 0;
        }
        for (i, c) in self.to_wake.drain(..).enumerate() {
            c.flush_or_wake(direct && i < MAX_DIRECT_FLUSHES);
        }
        if direct
            && self
                .run_frames
                .as_ref()
                .is_some_and(|f| f.bytes.capacity() > MAX_IDLE_RUN_BUF)
        {
            self.run_frames = None;
        }
    }
}

/// Adds a subscription to its account, announcing new interest to the routes when it is
/// local (a client's or an internal one).
pub(crate) fn subscribe(srv: &ServerInner, sub: &Arc<Subscription>) -> Result<(), SublistError> {
    sub.account
        .sublist
        .insert(&sub.subject, sub.queue.as_deref(), SubRef(sub.clone()))?;
    if announced(sub) {
        cluster::local_interest(
            srv,
            &sub.account,
            &sub.subject,
            sub.queue.as_deref(),
            true,
            leaf_origin(sub),
        );
    }
    crate::leaf::interest_changed(srv, sub, true);
    imports::add_shadows(srv, sub);
    Ok(())
}

/// The leaf cluster a subscription's interest comes from, for routes that keep it apart.
fn leaf_origin(sub: &Subscription) -> Option<&Arc<str>> {
    match &sub.owner {
        Subscriber::Leaf(l) => l.remote_cluster.as_ref(),
        _ => None,
    }
}

/// Whether routes hear of a subscription: not of their own, nor of service imports (each
/// server runs its own), nor of what a hub told this leaf server (the hub tells each
/// server of a leaf cluster itself).
fn announced(sub: &Subscription) -> bool {
    match &sub.owner {
        _ if sub.shadow.is_some() => true,
        Subscriber::Route(_)
        | Subscriber::Service(_)
        | Subscriber::Stream(_)
        | Subscriber::JsApi(_) => false,
        Subscriber::Leaf(l) => !l.spoke,
        _ => true,
    }
}

/// Removes a subscription from its owner's table and its account. Safe to call twice.
pub(crate) fn unsubscribe(srv: &ServerInner, sub: &Arc<Subscription>) {
    let owned = match &sub.owner {
        Subscriber::Client(c) => c.forget_sub(sub),
        Subscriber::Route(r) => r.forget_sub(sub),
        Subscriber::Leaf(l) => l.forget_sub(sub),
        Subscriber::Internal(_)
        | Subscriber::Service(_)
        | Subscriber::Responses(_)
        | Subscriber::Stream(_)
        | Subscriber::JsApi(_) => true,
    };
    if owned {
        remove_from_account(srv, sub);
    }
}

/// Takes a subscription out of its account's sublist (its owner already forgot it).
pub(crate) fn remove_from_account(srv: &ServerInner, sub: &Arc<Subscription>) {
    if sub
        .account
        .sublist
        .remove(&sub.subject, sub.queue.as_deref(), &SubRef(sub.clone()))
        .is_ok()
    {
        if announced(sub) {
            cluster::local_interest(
                srv,
                &sub.account,
                &sub.subject,
                sub.queue.as_deref(),
                false,
                leaf_origin(sub),
            );
        }
        crate::leaf::interest_changed(srv, sub, false);
    }
    imports::remove_shadows(srv, sub);
}

/// [`remove_from_account`] for many subscriptions of one owner at once (a closing
/// client's): each account's sublist is changed under one write lock.
pub(crate) fn remove_batch_from_account(srv: &ServerInner, subs: &[Arc<Subscription>]) {
    let Some(first) = subs.first() else {
        return;
    };
    let refs: Vec<SubRef> = subs.iter().map(|s| SubRef(s.clone())).collect();
    let same_account = subs.iter().all(|s| Arc::ptr_eq(&s.account, &first.account));
    if same_account {
        first.account.sublist.remove_batch(
            subs.iter()
                .zip(&refs)
                .map(|(s, r)| (&*s.subject, s.queue.as_deref(), r)),
        );
    } else {
        for s in subs {
            let _ = s
                .account
                .sublist
                .remove(&s.subject, s.queue.as_deref(), &SubRef(s.clone()));
        }
    }
    for s in subs {
        if announced(s) {
            cluster::local_interest(
                srv,
                &s.account,
                &s.subject,
                s.queue.as_deref(),
                false,
                leaf_origin(s),
            );
        }
        crate::leaf::interest_changed(srv, s, false);
        imports::remove_shadows(srv, s);
    }
}

/// The router without client sockets: an embedded server (its listener bound on loopback,
/// never connected to) with internal subscribers, driven through `Server::publish`.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::core::sub::InternalSub;
    use crate::options::{AccountOptions, Options};
    use crate::Server;

    #[test]
    fn same_subject_agrees_with_slice_equality() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..base.len() {
            let a = &base[..n];
            assert!(same_subject(a, a));
            // A difference at every position, and a length difference, are seen.
            for at in 0..n {
                let mut b = a.to_vec();
                b[at] ^= 0x20;
                assert!(!same_subject(a, &b), "len {n}, differs at {at}");
            }
            assert!(!same_subject(a, &base[..n + 1]));
        }
    }

    async fn server(accounts: &[&str]) -> Server {
        let opts = Options {
            host: [127, 0, 0, 1].into(),
            port: 0,
            accounts: accounts
                .iter()
                .map(|a| AccountOptions {
                    name: (*a).to_string(),
                    ..AccountOptions::default()
                })
                .collect(),
            ..Options::default()
        };
        match Server::start(opts).await {
            Ok(s) => s,
            Err(e) => panic!("server starts: {e}"),
        }
    }

    #[test]
    fn long_subjects_are_not_kept_in_the_publisher_cache() {
        let mut cache = MatchCache::new(Account::new("$G"));
        let long = vec![b'a'; midge_proto::sublist::MAX_CACHED_SUBJECT + 1];
        assert!(cache.lookup(&long).psubs.is_empty());
        assert!(cache.map.is_empty());
        cache.lookup(b"short");
        assert_eq!(cache.map.len(), 1);
    }

    #[tokio::test]
    async fn plain_and_wildcard_subscribers_each_get_a_copy() {
        let srv = server(&[]).await;
        let mut exact = srv.subscribe(None, "a.b", None).expect("subscribe");
        let mut star = srv.subscribe(None, "a.*", None).expect("subscribe");
        let mut tail = srv.subscribe(None, ">", None).expect("subscribe");
        let mut other = srv.subscribe(None, "c.>", None).expect("subscribe");
        assert!(srv
            .publish(
                None,
                "a.b",
                Some("r.1"),
                Some(b"NATS/1.0\r\nk: v\r\n\r\n"),
                b"hi"
            )
            .expect("publish"));
        for sub in [&mut exact, &mut star, &mut tail] {
            let m = sub.try_next().expect("delivered");
            assert_eq!(&m.subject[..], b"a.b");
            assert_eq!(m.reply.as_deref(), Some(&b"r.1"[..]));
            // Internal subscribers always get the headers.
            assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0\r\nk: v\r\n\r\n"[..]));
            assert_eq!(&m.payload[..], b"hi");
            assert!(sub.try_next().is_none(), "exactly one copy");
        }
        assert!(other.try_next().is_none());
        srv.shutdown().await;
    }

    #[tokio::test]
    async fn nobody_listening_is_reported_for_no_responders() {
        let srv = server(&[]).await;
        assert!(!srv
            .publish(None, "nobody.home", Some("r"), None, b"")
            .expect("publish"));
        let sub = srv.subscribe(None, "nobody.home", None).expect("subscribe");
        assert!(srv
            .publish(None, "nobody.home", None, None, b"")
            .expect("publish"));
        drop(sub);
        assert!(
            !srv.publish(None, "nobody.home", None, None, b"")
                .expect("publish"),
            "dropping the subscription unsubscribes"
        );
        srv.shutdown().await;
    }

    #[tokio::test]
    async fn queue_group_members_share_each_message_once() {
        let srv = server(&[]).await;
        let mut members: Vec<_> = (0..3)
            .map(|_| srv.subscribe(None, "work", Some("q")).expect("subscribe"))
            .collect();
        let mut plain = srv.subscribe(None, "work", None).expect("subscribe");
        const N: usize = 3000;
        for i in 0..N {
            srv.publish(None, "work", None, None, i.to_string().as_bytes())
                .expect("publish");
        }
        let mut seen = HashMap::new();
        let mut shares = Vec::new();
        for m in &mut members {
            let mut n = 0;
            while let Some(msg) = m.try_next() {
                *seen.entry(msg.payload).or_insert(0) += 1;
                n += 1;
            }
            shares.push(n);
        }
        assert_eq!(seen.len(), N, "every message reached the group");
        assert!(seen.values().all(|&c| c == 1), "and exactly one member");
        // Uniform choice: each of 3 members gets ~1000 of 3000; below 700 has a
        // probability far under 1e-20.
        assert!(shares.iter().all(|&n| n > 700), "shares {shares:?}");
        let mut plain_count = 0;
        while plain.try_next().is_some() {
            plain_count += 1;
        }
        assert_eq!(plain_count, N, "a plain subscriber still gets everything");
        srv.shutdown().await;
    }

    #[tokio::test]
    async fn accounts_are_separate_subject_spaces() {
        let srv = server(&["A", "B"]).await;
        let mut a = srv.subscribe(Some("A"), "x", None).expect("subscribe");
        let mut g = srv.subscribe(None, "x", None).expect("subscribe");
        assert!(!srv
            .publish(Some("B"), "x", None, None, b"b")
            .expect("publish"));
        assert!(srv
            .publish(Some("A"), "x", None, None, b"a")
            .expect("publish"));
        assert_eq!(a.try_next().map(|m| m.payload), Some("a".into()));
        assert!(a.try_next().is_none());
        assert!(g.try_next().is_none(), "the global account saw nothing");
        assert_eq!(
            srv.subscribe(Some("C"), "x", None).err(),
            Some(crate::PubSubError::UnknownAccount("C".into()))
        );
        srv.shutdown().await;
    }

    #[tokio::test]
    async fn a_full_internal_subscriber_drops_and_counts() {
        let srv = server(&[]).await;
        let mut sub = srv
            .subscribe_with_capacity(None, "burst", None, 4)
            .expect("subscribe");
        for _ in 0..10 {
            srv.publish(None, "burst", None, None, b"")
                .expect("publish");
        }
        assert_eq!(sub.dropped(), 6);
        let mut n = 0;
        while sub.try_next().is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
        srv.shutdown().await;
    }

    /// A queued internal subscriber (a JetStream consumer's inbox of acks) keeps every
    /// message past its mark, and the router hands its queue to the publisher to wait for,
    /// where a channel subscriber would drop (see the test above).
    #[tokio::test]
    async fn a_queued_internal_subscriber_keeps_everything_and_stalls_the_publisher() {
        use crate::jetstream::stream::{StreamIngest, INGEST_HIGH_MSGS};
        let srv = server(&[]).await;
        let inner = srv.inner().clone();
        let queue = Arc::new(StreamIngest::default());
        let account = inner.accounts.global().clone();
        let sub = Subscription::new(
            Subscriber::Internal(InternalSub::queued(queue.clone())),
            account.clone(),
            b"acks.>",
            None,
            b"",
        );
        subscribe(&inner, &sub).expect("subscribe");
        let mut router = Router::new(inner.clone(), 1);
        let mut cache = MatchCache::new(account.clone());
        let n = INGEST_HIGH_MSGS + 1000;
        for i in 0..n {
            let subject = format!("acks.{i}");
            let result = cache.lookup(subject.as_bytes());
            assert!(router.route(
                &account,
                &result,
                Origin::Internal,
                subject.as_bytes(),
                None,
                None,
                b"+ACK",
            ));
        }
        assert!(router.has_stalled(), "over the mark, the publisher waits");
        let stalled = router.take_stalled_streams();
        assert_eq!(stalled.len(), 1);
        assert!(Arc::ptr_eq(&stalled[0], &queue));
        assert!(!queue.is_under_half());
        let mut got = Vec::new();
        queue.take(usize::MAX, &mut got);
        assert_eq!(got.len(), n, "nothing dropped");
        assert_eq!(
            &got[n - 1].subject[..],
            format!("acks.{}", n - 1).as_bytes()
        );
        assert!(queue.is_under_half(), "drained: the publisher goes on");
        // A closed queue (its consumer gone) takes nothing and holds nobody up.
        queue.close();
        let result = cache.lookup(b"acks.late");
        assert!(!router.route(
            &account,
            &result,
            Origin::Internal,
            b"acks.late",
            None,
            None,
            b"+ACK"
        ));
        assert!(queue.is_under_half());
        unsubscribe(&inner, &sub);
        srv.shutdown().await;
    }

    /// Regression: a lookup of another subject (the no-responders check looks up the reply
    /// subject) after a sublist change must not make the cached result for the last
    /// published subject look current.
    #[test]
    fn the_last_subject_result_follows_sublist_changes() {
        let acc = Account::new("T");
        let mut cache = MatchCache::new(acc.clone());
        let r = cache.take(b"a");
        assert!(r.psubs.is_empty());
        cache.restore(r);
        let (handler, _rx) = InternalSub::new(1);
        let sub = Subscription::new(Subscriber::Internal(handler), acc.clone(), b"a", None, b"");
        acc.sublist.insert(b"a", None, SubRef(sub)).expect("insert");
        // Another subject looked up in the new generation.
        let _ = cache.lookup(b"reply.inbox");
        let r = cache.take(b"a");
        assert_eq!(r.psubs.len(), 1, "the new subscription is seen");
    }
}
