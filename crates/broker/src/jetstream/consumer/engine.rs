//! The consumer as a state machine over a stream's [`Store`]: where delivery stands, what
//! is waiting for an ack and until when, what goes out next. No IO, no clock, no locks: the
//! caller passes the store (under the stream's lock), the time (Unix nanoseconds) and an
//! interest check, and takes what it produced from [`Engine::out`] (messages and status
//! replies to publish) and [`Engine::events`] (acks for the stream's retention, advisories).
//!
//! The bookkeeping is nats-server's (`consumer.go`), so that what clients observe (consumer
//! info, ack reply subjects, redelivery counts, floors) is the same:
//! - `sseq` is the next stream sequence to look at, `dseq` the next consumer sequence;
//! - the ack floor (`adflr`/`asflr`) is the highest delivery below which everything was
//!   acknowledged;
//! - `pending` holds deliveries waiting for an ack (explicit and all ack policies), keyed by
//!   stream sequence, each with the consumer sequence of its first delivery and its
//!   deadline; deadlines are also kept ordered, so expiry is `O(log n)` per message;
//! - `rdc` counts redeliveries, `rdq` queues messages to redeliver (expired or nak'd).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use midge_store::{filter_matches, Store, StoredMsg};
use serde::{Deserialize, Serialize};

use super::ack::{self, AckKind, AckTarget};
use super::config::{AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy};
use super::pull::{self, NextRequest, Status, WaitQueue, Waiting};

/// nats-server's `JsFlowControlMaxPending`: the most a flow-controlled push consumer has
/// outstanding; it starts at 1/16 of it and doubles with each answered flow control.
const FLOW_CONTROL_MAX_PENDING: i64 = 32 * 1024 * 1024;
/// How often `num_pending` may be recounted after the stream lost messages.
const RECOUNT_INTERVAL_NS: i64 = 100_000_000;
/// Replay original: gaps shorter than this are not waited for (nats-server's 1 ms).
const REPLAY_MIN_DELAY_NS: i64 = 1_000_000;

/// A delivery waiting for its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Consumer sequence of the first delivery (kept across redeliveries).
    dseq: u64,
    /// When it was (re)delivered, Unix ns.
    ts: i64,
    /// When it expires, Unix ns; 0 while it sits in the redelivery queue.
    deadline: i64,
}

/// Deliver-last-per-subject start: the last message of each subject first, then on from
/// `resume + 1`.
#[derive(Debug, Clone)]
struct SkipList {
    resume: u64,
    seqs: VecDeque<u64>,
}

#[derive(Debug, Clone)]
struct FlowControl {
    limit: i64,
    max: i64,
    bytes: i64,
    /// The reply subject of the flow-control request in flight.
    id: Option<String>,
    /// Bytes that request covers.
    size: i64,
}

/// Replay policy `original`: messages go out with the gaps they were stored with, until
/// the consumer has caught up with what the stream held when it started.
#[derive(Debug, Clone)]
struct Replay {
    until_seq: u64,
    last_msg_ts: i64,
    last_sent: i64,
}

#[derive(Debug, Clone)]
struct RateLimit {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    at: i64,
}

/// Something for the transport to publish.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outbound {
    /// A stream message, to the deliver subject or a pull request's reply subject.
    Msg {
        /// Where it goes: the deliver subject or a pull request's reply subject.
        to: Arc<str>,
        /// The subject it was stored under: what the receiver sees (nats-server's
        /// "deliver as"), while the delivery matches on `to`.
        subject: String,
        reply: String,
        headers: Option<Bytes>,
        payload: Bytes,
        stream_seq: u64,
        /// Set for pull deliveries: the request it was charged to (credited back if it
        /// cannot be delivered) and the bytes charged.
        charged: Option<i64>,
    },
    /// A status message (heartbeat, flow control, pull status) with an empty body.
    Status(Status),
    /// The (empty) answer to an ack that asked for one.
    AckReply(String),
}

/// What happened that someone else cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The consumer no longer needs these stream sequences (inclusive; for interest and
    /// work-queue retention).
    Acked {
        from: u64,
        to: u64,
    },
    MaxDeliveries {
        stream_seq: u64,
        deliveries: u64,
    },
    Nak {
        stream_seq: u64,
        consumer_seq: u64,
        deliveries: u64,
    },
    Terminated {
        stream_seq: u64,
        consumer_seq: u64,
        deliveries: u64,
        reason: Option<String>,
    },
    /// An ack picked by `sample_freq`: `$JS.EVENT.METRIC.CONSUMER.ACK...`.
    AckSample {
        stream_seq: u64,
        consumer_seq: u64,
        deliveries: u64,
        ack_time_ns: i64,
    },
}

/// Why delivery stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Nothing more can go out now; wait for news.
    Idle,
    /// The budget ran out with more to send.
    More,
    /// Held back (replay timing, rate limit) until this time.
    WaitUntil(i64),
}

/// The durable part of a consumer's state (what `consumers/<name>/state.json` holds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedState {
    /// Last delivered consumer and stream sequences.
    pub delivered: (u64, u64),
    /// Ack floor: consumer and stream sequences.
    pub ack_floor: (u64, u64),
    /// Stream sequence, consumer sequence of first delivery, delivery time (Unix ns).
    pub pending: Vec<(u64, u64, i64)>,
    /// Stream sequence, redeliveries.
    pub redelivered: Vec<(u64, u64)>,
}

/// Sequence numbers of `ConsumerInfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub delivered_consumer: u64,
    pub delivered_stream: u64,
    pub last_delivered_ns: i64,
    pub ack_floor_consumer: u64,
    pub ack_floor_stream: u64,
    pub last_ack_ns: i64,
    pub num_ack_pending: usize,
    pub num_redelivered: usize,
    pub num_waiting: usize,
    pub num_pending: u64,
}

/// A pull request, after its checks: queued, or answered at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PullOutcome {
    Queued,
    Rejected,
}

#[derive(Debug)]
enum Candidate {
    Redelivery(StoredMsg, u64),
    Skip(StoredMsg),
    Stream(StoredMsg),
}

impl Candidate {
    fn msg(&self) -> &StoredMsg {
        match self {
            Candidate::Redelivery(m, _) | Candidate::Skip(m) | Candidate::Stream(m) => m,
        }
    }

    fn deliveries(&self) -> u64 {
        match self {
            Candidate::Redelivery(_, dc) => *dc,
            _ => 1,
        }
    }

    fn into_msg(self) -> StoredMsg {
        match self {
            Candidate::Redelivery(m, _) | Candidate::Skip(m) | Candidate::Stream(m) => m,
        }
    }
}

/// A consumer's state machine.
#[derive(Debug)]
pub(crate) struct Engine {
    pub stream: Arc<str>,
    pub name: Arc<str>,
    pub cfg: ConsumerConfig,
    filters: Vec<String>,
    deliver_subject: Arc<str>,
    sseq: u64,
    dseq: u64,
    adflr: u64,
    asflr: u64,
    pending: BTreeMap<u64, Pending>,
    deadlines: BTreeSet<(i64, u64)>,
    rdc: HashMap<u64, u64>,
    rdq: VecDeque<u64>,
    rdq_set: HashSet<u64>,
    lss: Option<SkipList>,
    /// Messages not yet delivered, kept up to date as the stream grows (`npf`: the last
    /// stream sequence already counted).
    npc: u64,
    npf: u64,
    /// The stream's message count at the last count: fewer than expected means messages
    /// went (limits, deletes), some maybe not yet delivered, so counting starts over.
    counted_msgs: u64,
    /// Recounting costs up to the backlog: at most once per [`RECOUNT_INTERVAL_NS`] (work
    /// queues remove every acked message).
    next_recount: i64,
    recount_due: bool,
    last_delivered_ns: i64,
    last_ack_ns: i64,
    waiting: Option<WaitQueue>,
    /// Push: someone listens on the deliver subject.
    active: bool,
    flow: Option<FlowControl>,
    /// Push with idle heartbeats: when the next one is due.
    next_heartbeat: i64,
    replay: Option<Replay>,
    rate: Option<RateLimit>,
    sample_percent: u32,
    /// The durable state changed since it was last taken.
    dirty: bool,
    pub out: Vec<Outbound>,
    pub events: Vec<Event>,
}

impl Engine {
    /// A new consumer positioned by its deliver policy over what `store` holds now.
    /// `max_msgs_per_subject` is the stream's (1 makes last-per-subject a plain start).
    pub fn new(
        stream: &str,
        name: &str,
        cfg: ConsumerConfig,
        store: &dyn Store,
        max_msgs_per_subject: i64,
        now: i64,
    ) -> Engine {
        let mut e = Engine::blank(stream, name, cfg, now);
        e.select_start(store, max_msgs_per_subject);
        e.recount_pending(store);
        e.start_replay(store);
        e
    }

    /// A consumer brought back from its saved state.
    pub fn restore(
        stream: &str,
        name: &str,
        cfg: ConsumerConfig,
        saved: &SavedState,
        store: &dyn Store,
        now: i64,
    ) -> Engine {
        let mut e = Engine::blank(stream, name, cfg, now);
        e.dseq = saved.delivered.0 + 1;
        e.sseq = saved.delivered.1 + 1;
        e.adflr = saved.ack_floor.0;
        e.asflr = saved.ack_floor.1;
        let first = store.state().first_seq;
        for &(seq, dseq, ts) in &saved.pending {
            // What the stream no longer has cannot be redelivered.
            if seq < first || seq <= e.asflr {
                continue;
            }
            e.pending.insert(
                seq,
                Pending {
                    dseq,
                    ts,
                    deadline: 0,
                },
            );
        }
        for &(seq, n) in &saved.redelivered {
            if e.pending.contains_key(&seq) && n > 0 {
                e.rdc.insert(seq, n);
            }
        }
        // Restored deliveries get a fresh deadline from their delivery time.
        let seqs: Vec<(u64, i64)> = e.pending.iter().map(|(s, p)| (*s, p.ts)).collect();
        for (seq, ts) in seqs {
            let dc = e.deliveries(seq);
            let deadline = ts.saturating_add(e.cfg.ack_wait_for(dc)).max(now);
            e.set_deadline(seq, deadline);
        }
        if e.sseq < first {
            e.sseq = first;
        }
        e.recount_pending(store);
        e.start_replay(store);
        e
    }

    fn blank(stream: &str, name: &str, cfg: ConsumerConfig, now: i64) -> Engine {
        let filters = cfg.filters();
        let waiting = cfg.is_pull().then(|| WaitQueue::new(cfg.max_waiting, now));
        let flow = cfg.flow_control.then_some(FlowControl {
            limit: FLOW_CONTROL_MAX_PENDING,
            max: FLOW_CONTROL_MAX_PENDING / 16,
            bytes: 0,
            id: None,
            size: 0,
        });
        let rate = (cfg.rate_limit > 0).then(|| {
            let bytes_per_sec = (cfg.rate_limit / 8).max(1) as f64;
            RateLimit {
                bytes_per_sec,
                burst: 1024.0 * 1024.0,
                tokens: 1024.0 * 1024.0,
                at: now,
            }
        });
        let next_heartbeat = if cfg.heartbeat > 0 && cfg.is_push() {
            now.saturating_add(cfg.heartbeat)
        } else {
            0
        };
        Engine {
            stream: stream.into(),
            name: name.into(),
            deliver_subject: cfg.deliver_subject.as_str().into(),
            sample_percent: cfg.sample_percent(),
            cfg,
            filters,
            sseq: 1,
            dseq: 1,
            adflr: 0,
            asflr: 0,
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            rdc: HashMap::new(),
            rdq: VecDeque::new(),
            rdq_set: HashSet::new(),
            lss: None,
            npc: 0,
            npf: 0,
            counted_msgs: 0,
            next_recount: 0,
            recount_due: false,
            last_delivered_ns: 0,
            last_ack_ns: 0,
            waiting,
            active: false,
            flow,
            next_heartbeat,
            replay: None,
            rate,
            dirty: false,
            out: Vec::new(),
            events: Vec::new(),
        }
    }

    /// nats-server's `selectStartingSeqNo`.
    fn select_start(&mut self, store: &dyn Store, max_msgs_per_subject: i64) {
        let state = store.state();
        let mut sseq = if self.cfg.opt_start_seq > 0 {
            self.cfg.opt_start_seq
        } else {
            match self.cfg.deliver_policy {
                DeliverPolicy::All | DeliverPolicy::ByStartSequence => state.first_seq,
                DeliverPolicy::Last => {
                    if self.filters.is_empty() {
                        state.last_seq
                    } else {
                        self.filters
                            .iter()
                            .filter_map(|f| store.last_matching(f).map(|m| m.seq))
                            .max()
                            .unwrap_or(state.last_seq + 1)
                    }
                }
                DeliverPolicy::LastPerSubject => {
                    if max_msgs_per_subject == 1 {
                        state.first_seq
                    } else {
                        let mut seqs: Vec<u64> = Vec::new();
                        let filters = if self.filters.is_empty() {
                            vec![">".to_string()]
                        } else {
                            self.filters.clone()
                        };
                        for f in &filters {
                            seqs.extend(store.subjects_state(f).values().map(|s| s.last_seq));
                        }
                        seqs.sort_unstable();
                        seqs.dedup();
                        let first = seqs.first().copied().unwrap_or(state.last_seq);
                        self.lss = Some(SkipList {
                            resume: state.last_seq,
                            seqs: seqs.into(),
                        });
                        first
                    }
                }
                DeliverPolicy::ByStartTime => match &self.cfg.opt_start_time {
                    Some(t) => seq_from_time(store, t.ns),
                    None => state.first_seq,
                },
                DeliverPolicy::New => state.last_seq + 1,
            }
        };
        if state.msgs == 0 && state.last_seq == 0 {
            sseq = 1;
        } else if sseq < state.first_seq {
            sseq = state.first_seq;
        } else if sseq > state.last_seq {
            sseq = state.last_seq + 1;
        }
        self.sseq = sseq.max(1);
        self.dseq = 1;
        // nats-server starts its consumer store with only the delivered sequence set, so a
        // new consumer reports an ack floor of 0 until its first ack (or expiry) moves it.
        self.adflr = 0;
        self.asflr = 0;
    }

    fn start_replay(&mut self, store: &dyn Store) {
        if self.cfg.replay_policy == ReplayPolicy::Original {
            let last = store.state().last_seq;
            if self.sseq <= last {
                self.replay = Some(Replay {
                    until_seq: last,
                    last_msg_ts: 0,
                    last_sent: 0,
                });
            }
        }
    }

    /// Whether `subject` is one this consumer delivers.
    pub fn matches(&self, subject: &str) -> bool {
        self.filters.is_empty()
            || self
                .filters
                .iter()
                .any(|f| filter_matches(Some(f), subject))
    }

    /// Counts again what is left to deliver (nats-server's `streamNumPending`).
    pub fn recount_pending(&mut self, store: &dyn Store) {
        let state = store.state();
        let from = match &self.lss {
            Some(lss) => lss.resume + 1,
            None => self.sseq,
        };
        let mut n: u64 = if self.filters.is_empty() {
            store.num_pending(from, None)
        } else {
            self.filters
                .iter()
                .map(|f| store.num_pending(from, Some(f)))
                .sum()
        };
        if let Some(lss) = &self.lss {
            n += lss.seqs.len() as u64;
        }
        self.npc = n;
        self.npf = state.last_seq;
        self.counted_msgs = state.msgs;
    }

    /// Counts what the stream appended since the last count (the stream only says that it
    /// grew, so the new range is counted once, not each message).
    pub fn catch_up_pending(&mut self, store: &dyn Store, now: i64) {
        let state = store.state();
        let last = state.last_seq;
        if state.msgs < self.counted_msgs + last.saturating_sub(self.npf) {
            self.recount_due = true;
        }
        if self.recount_due && now >= self.next_recount {
            self.recount_pending(store);
            self.recount_due = false;
            self.next_recount = now.saturating_add(RECOUNT_INTERVAL_NS);
            return;
        }
        self.counted_msgs = state.msgs;
        if last <= self.npf {
            return;
        }
        let from = self.npf + 1;
        let upto_end = |f: Option<&str>| store.num_pending(from, f);
        let n: u64 = if self.filters.is_empty() {
            upto_end(None)
        } else {
            self.filters.iter().map(|f| upto_end(Some(f))).sum()
        };
        self.npc += n;
        self.npf = last;
    }

    /// Push: whether someone listens on the deliver subject.
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// When the last pull request arrived or an ack was processed (pull inactivity).
    pub fn pull_last_active(&self) -> Option<i64> {
        self.waiting.as_ref().map(|w| w.last_active)
    }

    pub fn num_waiting(&self) -> usize {
        self.waiting.as_ref().map_or(0, WaitQueue::len)
    }

    /// Marks activity (an ack) that keeps a pull consumer from being reaped.
    pub fn touch(&mut self, now: i64) {
        if let Some(w) = &mut self.waiting {
            w.last_active = now;
        }
    }

    fn deliveries(&self, seq: u64) -> u64 {
        1 + self.rdc.get(&seq).copied().unwrap_or(0)
    }

    fn set_deadline(&mut self, seq: u64, deadline: i64) {
        if let Some(p) = self.pending.get_mut(&seq) {
            if p.deadline != 0 {
                self.deadlines.remove(&(p.deadline, seq));
            }
            p.deadline = deadline;
            if deadline != 0 {
                self.deadlines.insert((deadline, seq));
            }
        }
    }

    fn queue_redelivery(&mut self, seq: u64) {
        self.set_deadline(seq, 0);
        if self.rdq_set.insert(seq) {
            self.rdq.push_back(seq);
        }
    }

    fn unqueue_redelivery(&mut self, seq: u64) {
        if self.rdq_set.remove(&seq) {
            self.rdq.retain(|s| *s != seq);
        }
    }

    /// Forgets a pending delivery (acked, terminated, gone); returns its record.
    fn forget(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        if p.deadline != 0 {
            self.deadlines.remove(&(p.deadline, seq));
        }
        self.rdc.remove(&seq);
        self.unqueue_redelivery(seq);
        self.dirty = true;
        Some(p)
    }

    /// Moves the ack floor after `seq` (first delivered as `dseq`) was acknowledged
    /// (nats-server's rule for explicit acks).
    fn advance_floor(&mut self, seq: u64, dseq: u64) {
        if self.pending.is_empty() {
            self.adflr = self.dseq - 1;
            self.asflr = self.sseq - 1;
        } else if dseq == self.adflr + 1 {
            self.adflr = dseq;
            self.asflr = seq;
            if let Some((&next, p)) = self.pending.range(seq + 1..).next() {
                self.adflr = p.dseq - 1;
                self.asflr = next - 1;
            }
        }
    }

    /// The next message to deliver, without committing to it.
    fn peek(&mut self, store: &dyn Store) -> Result<Option<Candidate>, ()> {
        while let Some(&seq) = self.rdq.front() {
            if !self.pending.contains_key(&seq) {
                self.rdq.pop_front();
                self.rdq_set.remove(&seq);
                continue;
            }
            let dc = self.deliveries(seq) + 1;
            if self.cfg.max_deliver > 0 && dc > self.cfg.max_deliver as u64 {
                self.rdq.pop_front();
                self.rdq_set.remove(&seq);
                self.forget(seq);
                self.events.push(Event::MaxDeliveries {
                    stream_seq: seq,
                    deliveries: dc - 1,
                });
                continue;
            }
            match store.get(seq) {
                Ok(m) => return Ok(Some(Candidate::Redelivery(m, dc))),
                Err(_) => {
                    self.rdq.pop_front();
                    self.rdq_set.remove(&seq);
                    self.drop_missing(seq);
                }
            }
        }
        if self.cfg.max_ack_pending > 0 && self.pending.len() as i64 >= self.cfg.max_ack_pending {
            return Err(());
        }
        if let Some(lss) = &mut self.lss {
            while let Some(&seq) = lss.seqs.front() {
                match store.get(seq) {
                    Ok(m) => return Ok(Some(Candidate::Skip(m))),
                    Err(_) => {
                        lss.seqs.pop_front();
                        self.npc = self.npc.saturating_sub(1);
                    }
                }
            }
            self.sseq = lss.resume + 1;
            self.lss = None;
        }
        let found = if self.filters.len() <= 1 {
            store.next_matching(self.sseq, self.filters.first().map(String::as_str))
        } else {
            self.filters
                .iter()
                .filter_map(|f| store.next_matching(self.sseq, Some(f)))
                .min_by_key(|m| m.seq)
        };
        match found {
            Some(m) => Ok(Some(Candidate::Stream(m))),
            None => {
                // Nothing up to the stream's end matches: no need to look there again, and
                // nothing is left to deliver (nats-server's `checkNumPendingOnEOF`).
                let last = store.state().last_seq;
                if self.sseq <= last {
                    self.sseq = last + 1;
                }
                if self.npf >= last {
                    self.npc = 0;
                }
                Ok(None)
            }
        }
    }

    /// A pending message the stream no longer has (removed by limits or by hand).
    fn drop_missing(&mut self, seq: u64) {
        if let Some(p) = self.forget(seq) {
            self.advance_floor(seq, p.dseq);
        }
    }

    fn commit(&mut self, c: &Candidate) {
        match c {
            Candidate::Redelivery(m, _) => {
                if self.rdq.front() == Some(&m.seq) {
                    self.rdq.pop_front();
                }
                self.rdq_set.remove(&m.seq);
            }
            Candidate::Skip(m) => {
                if let Some(lss) = &mut self.lss {
                    lss.seqs.pop_front();
                    if lss.seqs.is_empty() {
                        self.sseq = lss.resume + 1;
                        self.lss = None;
                    } else {
                        self.sseq = self.sseq.max(m.seq + 1);
                    }
                }
            }
            Candidate::Stream(m) => self.sseq = m.seq + 1,
        }
    }

    fn record(&mut self, seq: u64, dc: u64, now: i64) -> u64 {
        let dseq = self.dseq;
        self.dseq += 1;
        match self.cfg.ack_policy {
            AckPolicy::Explicit | AckPolicy::All => {
                let deadline = now.saturating_add(self.cfg.ack_wait_for(dc));
                match self.pending.get_mut(&seq) {
                    Some(p) => p.ts = now,
                    None => {
                        self.pending.insert(
                            seq,
                            Pending {
                                dseq,
                                ts: now,
                                deadline: 0,
                            },
                        );
                    }
                }
                self.set_deadline(seq, deadline);
            }
            AckPolicy::None => {
                self.adflr = dseq;
                self.asflr = seq;
                self.events.push(Event::Acked { from: seq, to: seq });
            }
        }
        if dc > 1 {
            self.rdc.insert(seq, dc - 1);
        } else {
            self.npc = self.npc.saturating_sub(1);
        }
        self.last_delivered_ns = now;
        self.dirty = true;
        dseq
    }

    /// Delivers up to `budget` messages. `has_interest` tells whether anyone listens on a
    /// pull request's reply subject.
    pub fn deliver(
        &mut self,
        store: &dyn Store,
        now: i64,
        budget: usize,
        has_interest: &dyn Fn(&str) -> bool,
    ) -> Progress {
        let mut statuses = Vec::new();
        let progress = self.deliver_inner(store, now, budget, has_interest, &mut statuses);
        self.out.extend(statuses.into_iter().map(Outbound::Status));
        progress
    }

    fn deliver_inner(
        &mut self,
        store: &dyn Store,
        now: i64,
        budget: usize,
        has_interest: &dyn Fn(&str) -> bool,
        statuses: &mut Vec<Status>,
    ) -> Progress {
        for _ in 0..budget {
            match &self.waiting {
                Some(w) if w.is_empty() => return Progress::Idle,
                Some(_) => {}
                None => {
                    if !self.active || self.flow.as_ref().is_some_and(|f| f.bytes > f.max) {
                        return Progress::Idle;
                    }
                }
            }
            let candidate = match self.peek(store) {
                Ok(Some(c)) => c,
                Ok(None) => {
                    if let Some(w) = &mut self.waiting {
                        w.end_no_wait(statuses);
                    }
                    self.end_replay();
                    return Progress::Idle;
                }
                Err(()) => return Progress::Idle,
            };
            // Not committed yet: a candidate held back is simply found again next time.
            if let Some(wait) = self.hold_back(&candidate, now) {
                return Progress::WaitUntil(wait);
            }
            let dc = candidate.deliveries();
            let (seq, ts) = (candidate.msg().seq, candidate.msg().time_ns);
            let pending_after = if dc == 1 {
                self.npc.saturating_sub(1)
            } else {
                self.npc
            };
            let mut reply = String::new();
            ack::write_ack_reply(
                &mut reply,
                &self.stream,
                &self.name,
                &ack::Delivery {
                    delivered: dc,
                    stream_seq: seq,
                    consumer_seq: self.dseq,
                    timestamp_ns: ts,
                    pending: pending_after,
                },
            );
            let (headers, payload) = if self.cfg.headers_only {
                let m = candidate.msg();
                (Some(headers_only(m)), Bytes::new())
            } else {
                let m = candidate.msg();
                (m.headers.clone(), m.payload.clone())
            };
            let size = (candidate.msg().subject.len()
                + reply.len()
                + headers.as_ref().map_or(0, Bytes::len)
                + payload.len()) as i64;
            let (subject, charged, remaining) = match &mut self.waiting {
                Some(w) => match w.take(size, now, has_interest, statuses) {
                    Some((to, n, b)) => (to, Some(size), Some((n, b))),
                    None => return Progress::Idle,
                },
                None => (self.deliver_subject.clone(), None, None),
            };
            self.commit(&candidate);
            self.record(seq, dc, now);
            if let Some(r) = &mut self.replay {
                r.last_msg_ts = ts;
                r.last_sent = now;
            }
            if let Some(rl) = &mut self.rate {
                rl.tokens -= size as f64;
            }
            let to = subject.clone();
            self.out.push(Outbound::Msg {
                to: subject,
                subject: candidate.into_msg().subject,
                reply,
                headers,
                payload,
                stream_seq: seq,
                charged,
            });
            if let Some((n, b)) = remaining {
                if n <= 0 && b > 0 {
                    statuses.push(Status {
                        subject: to.to_string(),
                        reply: None,
                        header: pull::pending_status(409, "Batch Completed", n, b),
                    });
                }
            }
            self.after_push_delivery(size, now);
        }
        Progress::More
    }

    fn end_replay(&mut self) {
        if let Some(r) = &self.replay {
            if self.sseq > r.until_seq {
                self.replay = None;
            }
        }
    }

    /// Replay timing and rate limit: when the candidate may go out, if not now.
    fn hold_back(&mut self, c: &Candidate, now: i64) -> Option<i64> {
        if let Some(r) = &mut self.replay {
            if self.sseq > r.until_seq && !matches!(c, Candidate::Redelivery(..)) {
                self.replay = None;
            } else if r.last_msg_ts > 0 {
                let gap = c.msg().time_ns - r.last_msg_ts;
                if gap > REPLAY_MIN_DELAY_NS && now < r.last_sent.saturating_add(gap) {
                    return Some(r.last_sent.saturating_add(gap));
                }
            }
        }
        if let Some(rl) = &mut self.rate {
            let elapsed = (now - rl.at).max(0) as f64 / 1e9;
            rl.tokens = (rl.tokens + elapsed * rl.bytes_per_sec).min(rl.burst);
            rl.at = now;
            let size = (c.msg().subject.len()
                + c.msg().headers.as_ref().map_or(0, Bytes::len)
                + c.msg().payload.len()) as f64;
            if rl.tokens < size.min(rl.burst) {
                let need = size.min(rl.burst) - rl.tokens;
                return Some(now + (need / rl.bytes_per_sec * 1e9) as i64 + 1);
            }
        }
        None
    }

    /// Flow control and heartbeat bookkeeping after a push delivery.
    fn after_push_delivery(&mut self, size: i64, now: i64) {
        if self.cfg.is_pull() {
            return;
        }
        if self.cfg.heartbeat > 0 {
            self.next_heartbeat = now.saturating_add(self.cfg.heartbeat);
        }
        let Some(fc) = &mut self.flow else {
            return;
        };
        fc.bytes += size;
        if fc.id.is_none() && fc.bytes > fc.max / 2 {
            let id = format!(
                "$JS.FC.{}.{}.{}",
                self.stream,
                self.name,
                crate::sys::random_id(4)
            );
            fc.size = fc.bytes;
            fc.id = Some(id.clone());
            self.out.push(Outbound::Status(Status {
                subject: self.deliver_subject.to_string(),
                reply: Some(id),
                header: b"NATS/1.0 100 FlowControl Request\r\n\r\n".to_vec(),
            }));
        } else if fc.id.is_some() && fc.bytes - fc.size >= fc.max {
            fc.size += size;
        }
    }

    /// A delivery the transport could not hand to anyone (the requester or the push
    /// subscriber went away): it goes back for redelivery without counting as one.
    pub fn undeliverable(&mut self, stream_seq: u64, reply_to: Option<(&str, i64)>) {
        match self.rdc.get_mut(&stream_seq) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.rdc.remove(&stream_seq);
            }
            None => {}
        }
        if self.pending.contains_key(&stream_seq) {
            self.queue_redelivery(stream_seq);
        }
        match reply_to {
            Some((reply, size)) => {
                if let Some(w) = &mut self.waiting {
                    w.credit(reply, size);
                }
            }
            None => self.active = false,
        }
    }

    /// The reply subject of a flow-control response: opens the window again.
    pub fn flow_control_reply(&mut self, subject: &str) {
        let Some(fc) = &mut self.flow else {
            return;
        };
        if fc.id.as_deref() != Some(subject) {
            return;
        }
        if fc.max < fc.limit {
            fc.max = (fc.max * 2).min(fc.limit);
        }
        fc.bytes = (fc.bytes - fc.size).max(0);
        fc.id = None;
        fc.size = 0;
    }

    /// The idle heartbeat header: last delivered sequences, and the flow-control request
    /// in flight when stalled on one.
    pub fn heartbeat_header(&self) -> Vec<u8> {
        let mut h = format!(
            "NATS/1.0 100 Idle Heartbeat\r\nNats-Last-Consumer: {}\r\nNats-Last-Stream: {}\r\n",
            self.dseq - 1,
            self.sseq - 1
        );
        if let Some(id) = self.flow.as_ref().and_then(|f| f.id.as_ref()) {
            h.push_str("Nats-Consumer-Stalled: ");
            h.push_str(id);
            h.push_str("\r\n");
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    /// Timers: ack deadlines, pull request expiry and heartbeats, push heartbeats. `first_seq`
    /// is the stream's first sequence (deliveries below it are gone). Returns when to run
    /// again (Unix ns; 0 = nothing scheduled).
    pub fn tick(&mut self, now: i64, first_seq: u64, has_interest: &dyn Fn(&str) -> bool) -> i64 {
        self.expire_pending(now, first_seq);
        let mut next = self.deadlines.first().map_or(0, |(d, _)| *d);
        let mut earliest = |t: i64| {
            if t > 0 && (next == 0 || t < next) {
                next = t;
            }
        };
        let hb = self.heartbeat_header();
        if let Some(w) = &mut self.waiting {
            let mut statuses = Vec::new();
            let build = |_: &str| hb.clone();
            let (_, t) = w.sweep(now, false, has_interest, &build, &mut statuses);
            earliest(t);
            self.out.extend(statuses.into_iter().map(Outbound::Status));
        } else if self.cfg.heartbeat > 0 {
            if now >= self.next_heartbeat {
                if self.active {
                    self.out.push(Outbound::Status(Status {
                        subject: self.deliver_subject.to_string(),
                        reply: None,
                        header: hb,
                    }));
                }
                self.next_heartbeat = now.saturating_add(self.cfg.heartbeat);
            }
            earliest(self.next_heartbeat);
        }
        next
    }

    /// Ack deadlines that passed: redeliver, or give up after `max_deliver` deliveries
    /// (nats-server's `checkPending`).
    fn expire_pending(&mut self, now: i64, first_seq: u64) {
        let had_pending = !self.pending.is_empty();
        let gone: Vec<u64> = self.pending.range(..first_seq).map(|(s, _)| *s).collect();
        for seq in gone {
            if let Some(p) = self.forget(seq) {
                self.asflr = self.asflr.max(seq);
                self.adflr = self.adflr.max(p.dseq);
            }
        }
        let mut expired = Vec::new();
        while let Some(&(deadline, seq)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(p) = self.pending.get_mut(&seq) {
                p.deadline = 0;
                expired.push(seq);
            }
        }
        // Redelivered in stream order, as nats-server does.
        expired.sort_unstable();
        for seq in expired {
            let dc = self.deliveries(seq);
            if self.cfg.max_deliver > 0 && dc >= self.cfg.max_deliver as u64 {
                self.pending.remove(&seq);
                self.rdc.remove(&seq);
                self.unqueue_redelivery(seq);
                self.dirty = true;
                self.events.push(Event::MaxDeliveries {
                    stream_seq: seq,
                    deliveries: dc,
                });
            } else {
                self.queue_redelivery(seq);
            }
        }
        if had_pending && self.pending.is_empty() {
            self.adflr = self.dseq - 1;
            self.asflr = self.sseq - 1;
        }
    }

    /// An ack on `subject` (a `$JS.ACK...` reply) with `body`; `reply` is where the acker
    /// wants the ack acknowledged.
    pub fn ack(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        body: &[u8],
        store: &dyn Store,
        now: i64,
        has_interest: &dyn Fn(&str) -> bool,
    ) {
        let Some(target) = ack::parse_ack_subject(subject) else {
            return;
        };
        self.touch(now);
        let kind = ack::parse_ack(body);
        let mut answer = true;
        match kind {
            AckKind::Ack => self.ack_msg(target, now, true),
            AckKind::Next(req) => {
                answer = false;
                self.ack_msg(target, now, true);
                if let Some(r) = reply {
                    self.pull_request(r, &req, store, now, has_interest);
                }
            }
            AckKind::Nak { delay } => self.nak(target, delay, now),
            AckKind::Progress => {
                if self.pending.contains_key(&target.stream_seq) {
                    let dc = self.deliveries(target.stream_seq);
                    let deadline = now.saturating_add(self.cfg.ack_wait_for(dc));
                    if !self.rdq_set.contains(&target.stream_seq) {
                        self.set_deadline(target.stream_seq, deadline);
                    }
                    if let Some(p) = self.pending.get_mut(&target.stream_seq) {
                        p.ts = now;
                    }
                    self.dirty = true;
                }
            }
            AckKind::Term { reason } => {
                self.ack_msg(target, now, false);
                self.events.push(Event::Terminated {
                    stream_seq: target.stream_seq,
                    consumer_seq: target.consumer_seq,
                    deliveries: target.delivered,
                    reason,
                });
            }
            AckKind::Unknown => answer = false,
        }
        if answer {
            if let Some(r) = reply.filter(|r| !r.is_empty()) {
                self.out.push(Outbound::AckReply(r.to_string()));
            }
        }
    }

    fn ack_msg(&mut self, t: AckTarget, now: i64, sample: bool) {
        let seq = t.stream_seq;
        match self.cfg.ack_policy {
            AckPolicy::Explicit => {
                let Some(p) = self.forget(seq) else {
                    return;
                };
                if sample && self.should_sample() {
                    self.events.push(Event::AckSample {
                        stream_seq: seq,
                        consumer_seq: t.consumer_seq,
                        deliveries: t.delivered,
                        ack_time_ns: now - p.ts,
                    });
                }
                self.advance_floor(seq, p.dseq);
                self.last_ack_ns = now;
                self.events.push(Event::Acked { from: seq, to: seq });
            }
            AckPolicy::All => {
                if t.consumer_seq <= self.adflr || seq <= self.asflr {
                    return;
                }
                let from = self.asflr + 1;
                let acked: Vec<u64> = self.pending.range(..=seq).map(|(s, _)| *s).collect();
                for s in acked {
                    self.forget(s);
                }
                self.adflr = t.consumer_seq;
                self.asflr = seq;
                self.last_ack_ns = now;
                self.dirty = true;
                self.events.push(Event::Acked { from, to: seq });
            }
            AckPolicy::None => {}
        }
    }

    fn should_sample(&self) -> bool {
        match self.sample_percent {
            0 => false,
            p if p >= 100 => true,
            p => rand::random_range(0..100) <= p,
        }
    }

    fn nak(&mut self, t: AckTarget, delay: Option<i64>, now: i64) {
        let seq = t.stream_seq;
        if t.consumer_seq <= self.adflr || t.consumer_seq >= self.dseq {
            return;
        }
        if !self.pending.contains_key(&seq) {
            return;
        }
        self.events.push(Event::Nak {
            stream_seq: seq,
            consumer_seq: t.consumer_seq,
            deliveries: t.delivered,
        });
        match delay {
            Some(d) => {
                self.unqueue_redelivery(seq);
                self.set_deadline(seq, now.saturating_add(d.max(0)));
                self.dirty = true;
            }
            None => self.queue_redelivery(seq),
        }
    }

    /// A pull request (`$JS.API.CONSUMER.MSG.NEXT...` or after `+NXT`) with reply `reply`.
    pub fn pull_request(
        &mut self,
        reply: &str,
        body: &[u8],
        store: &dyn Store,
        now: i64,
        has_interest: &dyn Fn(&str) -> bool,
    ) -> PullOutcome {
        let status = |header: Vec<u8>| {
            Outbound::Status(Status {
                subject: reply.to_string(),
                reply: None,
                header,
            })
        };
        if self.waiting.is_none() {
            self.out
                .push(status(pull::plain_status(409, "Consumer is push based")));
            return PullOutcome::Rejected;
        }
        let req: NextRequest = match pull::parse_next_request(body) {
            Ok(r) => r,
            Err(e) => {
                self.out.push(status(pull::plain_status(
                    400,
                    &format!("Bad Request - {e}"),
                )));
                return PullOutcome::Rejected;
            }
        };
        let cfg = &self.cfg;
        if cfg.max_request_batch > 0 && req.batch > cfg.max_request_batch {
            let text = format!("Exceeded MaxRequestBatch of {}", cfg.max_request_batch);
            self.out.push(status(pull::plain_status(409, &text)));
            return PullOutcome::Rejected;
        }
        if req.expires > 0 && cfg.max_request_expires > 0 && req.expires > cfg.max_request_expires {
            let text = format!(
                "Exceeded MaxRequestExpires of {}",
                super::config::go_duration_string(cfg.max_request_expires)
            );
            self.out.push(status(pull::plain_status(409, &text)));
            return PullOutcome::Rejected;
        }
        if req.max_bytes > 0
            && cfg.max_request_max_bytes > 0
            && req.max_bytes > cfg.max_request_max_bytes
        {
            let text = format!(
                "Exceeded MaxRequestMaxBytes of {}",
                cfg.max_request_max_bytes
            );
            self.out.push(status(pull::plain_status(409, &text)));
            return PullOutcome::Rejected;
        }
        self.catch_up_pending(store, now);
        let hb = self.heartbeat_header();
        let Some(w) = &mut self.waiting else {
            return PullOutcome::Rejected;
        };
        if w.is_full() {
            let mut statuses = Vec::new();
            let build = |_: &str| hb.clone();
            w.sweep(now, false, has_interest, &build, &mut statuses);
            self.out.extend(statuses.into_iter().map(Outbound::Status));
        }
        let Some(w) = &mut self.waiting else {
            return PullOutcome::Rejected;
        };
        if req.no_wait {
            let available = self.npc + self.rdq.len() as u64;
            if available == 0 && req.expires == 0 {
                w.last_active = now;
                self.out
                    .push(status(pull::plain_status(404, "No Messages")));
                return PullOutcome::Rejected;
            }
            if available > 0 {
                // What is there is already promised to the requests before this one.
                let mut statuses = Vec::new();
                let build = |_: &str| hb.clone();
                let (wanted, _) = w.sweep(now, false, has_interest, &build, &mut statuses);
                self.out.extend(statuses.into_iter().map(Outbound::Status));
                if available < u64::try_from(wanted).unwrap_or(0) {
                    if let Some(w) = &mut self.waiting {
                        w.last_active = now;
                    }
                    self.out
                        .push(status(pull::plain_status(408, "Requests Pending")));
                    return PullOutcome::Rejected;
                }
            }
        }
        let Some(w) = &mut self.waiting else {
            return PullOutcome::Rejected;
        };
        let mut req = req;
        if req.batch <= 0 {
            req.batch = 1;
        }
        if !w.add(Waiting::new(reply.into(), &req, now)) {
            self.out
                .push(status(pull::plain_status(409, "Exceeded MaxWaiting")));
            return PullOutcome::Rejected;
        }
        PullOutcome::Queued
    }

    /// The stream was purged: `first_seq` is its new first sequence (nats-server's
    /// `purge`).
    pub fn purged(&mut self, first_seq: u64, store: &dyn Store) {
        if self.sseq < first_seq {
            self.sseq = first_seq;
        }
        if self.asflr < first_seq {
            self.asflr = first_seq - 1;
            let gone: Vec<u64> = self.pending.range(..first_seq).map(|(s, _)| *s).collect();
            for seq in gone {
                if let Some(p) = self.forget(seq) {
                    if p.dseq > self.adflr {
                        self.adflr = p.dseq;
                        if self.adflr >= self.dseq {
                            self.dseq = self.adflr + 1;
                        }
                    }
                }
            }
        }
        // A filtered purge can take pending messages above the floor too.
        let gone: Vec<u64> = self
            .pending
            .keys()
            .copied()
            .filter(|s| store.get(*s).is_err())
            .collect();
        for seq in gone {
            self.forget(seq);
        }
        if self.pending.is_empty() {
            self.adflr = self.dseq - 1;
            self.asflr = self.sseq - 1;
        }
        if let Some(lss) = &mut self.lss {
            lss.seqs.retain(|s| *s >= first_seq);
        }
        self.dirty = true;
        self.recount_pending(store);
    }

    /// Whether the stream still has to keep `seq` (subject `subject`) for this consumer
    /// (interest retention; nats-server's `needAck`).
    pub fn needs_ack(&self, seq: u64, subject: &str) -> bool {
        if !self.matches(subject) {
            return false;
        }
        match self.cfg.ack_policy {
            AckPolicy::None | AckPolicy::All => seq > self.asflr,
            AckPolicy::Explicit => {
                seq > self.asflr && (seq >= self.sseq || self.pending.contains_key(&seq))
            }
        }
    }

    /// The numbers of `ConsumerInfo` (num_pending exact, recounted from the store).
    pub fn snapshot(
        &mut self,
        store: &dyn Store,
        now: i64,
        has_interest: &dyn Fn(&str) -> bool,
    ) -> Snapshot {
        self.recount_pending(store);
        if let Some(w) = &mut self.waiting {
            let mut statuses = Vec::new();
            let hb = |_: &str| Vec::new();
            w.sweep(now, false, has_interest, &hb, &mut statuses);
            self.out.extend(statuses.into_iter().map(Outbound::Status));
        }
        Snapshot {
            delivered_consumer: self.dseq - 1,
            delivered_stream: self.sseq - 1,
            last_delivered_ns: self.last_delivered_ns,
            ack_floor_consumer: self.adflr,
            ack_floor_stream: self.asflr,
            last_ack_ns: self.last_ack_ns,
            num_ack_pending: self.pending.len(),
            num_redelivered: self.rdc.len(),
            num_waiting: self.num_waiting(),
            num_pending: self.npc,
        }
    }

    /// Whether the state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    pub fn saved_state(&self) -> SavedState {
        SavedState {
            delivered: (self.dseq - 1, self.sseq - 1),
            ack_floor: (self.adflr, self.asflr),
            pending: self
                .pending
                .iter()
                .map(|(s, p)| (*s, p.dseq, p.ts))
                .collect(),
            redelivered: self.rdc.iter().map(|(s, n)| (*s, *n)).collect(),
        }
    }

    /// A config update that passed `check_update`.
    pub fn update_config(&mut self, cfg: ConsumerConfig, store: &dyn Store) {
        if let Some(w) = &mut self.waiting {
            w.set_max(cfg.max_waiting);
        }
        let filters_changed = cfg.filters() != self.filters;
        let deliver_changed = cfg.deliver_subject != self.cfg.deliver_subject;
        self.sample_percent = cfg.sample_percent();
        self.filters = cfg.filters();
        self.deliver_subject = cfg.deliver_subject.as_str().into();
        self.cfg = cfg;
        if deliver_changed {
            let seqs: Vec<u64> = self.pending.keys().copied().collect();
            for seq in seqs {
                self.queue_redelivery(seq);
            }
            self.active = false;
        }
        if filters_changed {
            self.recount_pending(store);
        }
    }

    /// Releases every waiting pull request with `409 Consumer Deleted`.
    pub fn release_waiting(&mut self) {
        if let Some(w) = &mut self.waiting {
            let released: Vec<Waiting> = w.drain().collect();
            for r in released {
                self.out.push(Outbound::Status(Status {
                    subject: r.reply.to_string(),
                    reply: None,
                    header: pull::plain_status(409, "Consumer Deleted"),
                }));
            }
        }
    }
}

/// The header block of a `headers_only` delivery: the original headers plus
/// `Nats-Msg-Size`.
fn headers_only(m: &StoredMsg) -> Bytes {
    let mut h: Vec<u8> = match &m.headers {
        Some(h) if h.len() >= 4 && h.ends_with(b"\r\n\r\n") => h[..h.len() - 2].to_vec(),
        _ => b"NATS/1.0\r\n".to_vec(),
    };
    h.extend_from_slice(b"Nats-Msg-Size: ");
    h.extend_from_slice(itoa::Buffer::new().format(m.payload.len()).as_bytes());
    h.extend_from_slice(b"\r\n\r\n");
    Bytes::from(h)
}

/// The first sequence stored at or after `ns` (timestamps grow with sequences).
fn seq_from_time(store: &dyn Store, ns: i64) -> u64 {
    let state = store.state();
    if state.msgs == 0 {
        return state.last_seq + 1;
    }
    let (mut lo, mut hi) = (state.first_seq, state.last_seq + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match store.next_matching(mid, None) {
            Some(m) if m.time_ns >= ns => hi = mid,
            Some(m) => lo = m.seq + 1,
            None => hi = mid,
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use midge_store::MemStore;

    use super::*;
    use crate::jetstream::consumer::config::StreamFacts;

    const SEC: i64 = 1_000_000_000;

    fn store_with(subjects: &[&str]) -> MemStore {
        let mut s = MemStore::new();
        for (i, subj) in subjects.iter().enumerate() {
            s.append(
                subj,
                None,
                format!("m{}", i + 1).as_bytes(),
                (i as i64 + 1) * SEC,
            )
            .expect("append");
        }
        s
    }

    fn config(json: &str) -> ConsumerConfig {
        let mut c: ConsumerConfig = serde_json::from_str(json).expect("config");
        let facts = StreamFacts {
            subjects: ["a", "b", "c", "x"].map(String::from).to_vec(),
            ..StreamFacts::default()
        };
        c.set_defaults(&facts);
        c.check(&facts).expect("valid");
        c.set_ephemeral_threshold();
        c
    }

    fn yes(_: &str) -> bool {
        true
    }

    /// (subject delivered to, stream seq, ack reply) of the messages out.
    fn msgs(e: &mut Engine) -> Vec<(String, u64, String)> {
        let out = std::mem::take(&mut e.out);
        out.into_iter()
            .filter_map(|o| match o {
                Outbound::Msg {
                    to,
                    reply,
                    stream_seq,
                    ..
                } => Some((to.to_string(), stream_seq, reply)),
                _ => None,
            })
            .collect()
    }

    fn statuses(e: &mut Engine) -> Vec<(String, String)> {
        let out = std::mem::take(&mut e.out);
        out.into_iter()
            .filter_map(|o| match o {
                Outbound::Status(s) => Some((
                    s.subject,
                    String::from_utf8_lossy(&s.header)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                )),
                _ => None,
            })
            .collect()
    }

    fn pull(e: &mut Engine, store: &dyn Store, reply: &str, body: &str, now: i64) {
        e.pull_request(reply, body.as_bytes(), store, now, &yes);
    }

    fn ack(e: &mut Engine, store: &dyn Store, reply: &str, body: &str, now: i64) {
        e.ack(reply, None, body.as_bytes(), store, now, &yes);
    }

    #[test]
    fn pull_explicit_acks_move_the_floor() {
        let store = store_with(&["a", "a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit"}"#),
            &store,
            -1,
            0,
        );
        assert_eq!(e.npc, 3);
        pull(&mut e, &store, "inbox.1", r#"{"batch":2}"#, 10);
        assert_eq!(e.deliver(&store, 10, 100, &yes), Progress::Idle);
        let got = msgs(&mut e);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "inbox.1");
        assert_eq!(got[0].2, format!("$JS.ACK.S.D.1.1.1.{}.2", SEC));
        assert_eq!(got[1].2, format!("$JS.ACK.S.D.1.2.2.{}.1", 2 * SEC));
        ack(&mut e, &store, &got[1].2, "+ACK", 20);
        let s = e.snapshot(&store, 20, &yes);
        assert_eq!((s.ack_floor_consumer, s.ack_floor_stream), (0, 0));
        assert_eq!(s.num_ack_pending, 1);
        ack(&mut e, &store, &got[0].2, "", 30);
        let s = e.snapshot(&store, 30, &yes);
        assert_eq!((s.ack_floor_consumer, s.ack_floor_stream), (2, 2));
        assert_eq!((s.delivered_consumer, s.delivered_stream), (2, 2));
        assert_eq!(s.num_pending, 1);
        assert_eq!(
            e.events,
            vec![
                Event::Acked { from: 2, to: 2 },
                Event::Acked { from: 1, to: 1 }
            ]
        );
    }

    #[test]
    fn redelivery_after_ack_wait_then_max_deliver() {
        let store = store_with(&["a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(
                r#"{"durable_name":"D","ack_policy":"explicit","ack_wait":1000000000,"max_deliver":2}"#,
            ),
            &store,
            -1,
            0,
        );
        pull(
            &mut e,
            &store,
            "i",
            r#"{"batch":10,"expires":100000000000}"#,
            0,
        );
        e.deliver(&store, 0, 100, &yes);
        assert_eq!(msgs(&mut e).len(), 1);
        assert_eq!(e.tick(SEC - 1, 1, &yes), SEC);
        assert_eq!(e.deliver(&store, SEC - 1, 100, &yes), Progress::Idle);
        assert!(msgs(&mut e).is_empty());
        e.tick(SEC, 1, &yes);
        e.deliver(&store, SEC, 100, &yes);
        let again = msgs(&mut e);
        assert_eq!(again.len(), 1);
        assert!(
            again[0].2.starts_with("$JS.ACK.S.D.2.1.2."),
            "{}",
            again[0].2
        );
        assert_eq!(e.snapshot(&store, SEC, &yes).num_redelivered, 1);
        e.tick(2 * SEC, 1, &yes);
        e.deliver(&store, 2 * SEC, 100, &yes);
        assert!(msgs(&mut e).is_empty());
        assert_eq!(
            e.events,
            vec![Event::MaxDeliveries {
                stream_seq: 1,
                deliveries: 2
            }]
        );
        let s = e.snapshot(&store, 2 * SEC, &yes);
        assert_eq!((s.num_ack_pending, s.num_redelivered), (0, 0));
    }

    #[test]
    fn nak_term_progress() {
        let store = store_with(&["a", "a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit","ack_wait":10000000000}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i", r#"{"batch":3}"#, 0);
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        ack(&mut e, &store, &got[0].2, "-NAK", 1);
        pull(&mut e, &store, "i", r#"{"batch":1}"#, 1);
        e.deliver(&store, 1, 100, &yes);
        let again = msgs(&mut e);
        assert_eq!(again[0].1, 1);
        assert!(again[0].2.starts_with("$JS.ACK.S.D.2.1.4."));
        // A delayed nak waits for its delay, not for ack_wait.
        ack(
            &mut e,
            &store,
            &got[1].2,
            r#"-NAK {"delay": 2000000000}"#,
            2,
        );
        pull(
            &mut e,
            &store,
            "i",
            r#"{"batch":1,"expires":60000000000}"#,
            2,
        );
        e.tick(SEC, 1, &yes);
        e.deliver(&store, SEC, 100, &yes);
        assert!(msgs(&mut e).is_empty());
        e.tick(2 * SEC + 2, 1, &yes);
        e.deliver(&store, 2 * SEC + 2, 100, &yes);
        assert_eq!(msgs(&mut e)[0].1, 2);
        // +WPI moves the deadline.
        ack(&mut e, &store, &got[2].2, "+WPI", 9 * SEC);
        e.tick(10 * SEC, 1, &yes);
        assert!(!e.rdq_set.contains(&3));
        e.tick(19 * SEC, 1, &yes);
        assert!(e.rdq_set.contains(&3));
        ack(&mut e, &store, &got[2].2, "+TERM no thanks", 19 * SEC);
        assert!(!e.pending.contains_key(&3));
        assert!(e.events.iter().any(|ev| matches!(ev, Event::Terminated { stream_seq: 3, reason: Some(r), .. } if r == "no thanks")));
        assert!(e
            .events
            .iter()
            .any(|ev| matches!(ev, Event::Nak { stream_seq: 1, .. })));
    }

    #[test]
    fn ack_all_and_ack_none() {
        let store = store_with(&["a", "a", "a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"all"}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i", "4", 0);
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        ack(&mut e, &store, &got[2].2, "+ACK", 1);
        let s = e.snapshot(&store, 1, &yes);
        assert_eq!(
            (s.ack_floor_consumer, s.ack_floor_stream, s.num_ack_pending),
            (3, 3, 1)
        );
        assert_eq!(e.events, vec![Event::Acked { from: 1, to: 3 }]);

        let mut n = Engine::new(
            "S",
            "N",
            config(r#"{"durable_name":"N","ack_policy":"none"}"#),
            &store,
            -1,
            0,
        );
        pull(&mut n, &store, "i", "2", 0);
        n.deliver(&store, 0, 100, &yes);
        let s = n.snapshot(&store, 1, &yes);
        assert_eq!(
            (s.ack_floor_consumer, s.ack_floor_stream, s.num_ack_pending),
            (2, 2, 0)
        );
    }

    #[test]
    fn max_ack_pending_stalls() {
        let store = store_with(&["a", "a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit","max_ack_pending":2}"#),
            &store,
            -1,
            0,
        );
        pull(
            &mut e,
            &store,
            "i",
            r#"{"batch":3,"expires":60000000000}"#,
            0,
        );
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        assert_eq!(got.len(), 2);
        ack(&mut e, &store, &got[0].2, "+ACK", 1);
        e.deliver(&store, 1, 100, &yes);
        assert_eq!(msgs(&mut e)[0].1, 3);
    }

    #[test]
    fn deliver_policies() {
        let store = store_with(&["a", "b", "a", "c", "b"]);
        let start = |json: &str| {
            let mut e = Engine::new("S", "X", config(json), &store, -1, 0);
            pull(&mut e, &store, "i", "10", 0);
            e.deliver(&store, 0, 100, &yes);
            msgs(&mut e).into_iter().map(|m| m.1).collect::<Vec<_>>()
        };
        assert_eq!(start(r#"{"ack_policy":"none"}"#), [1, 2, 3, 4, 5]);
        assert_eq!(start(r#"{"deliver_policy":"last"}"#), [5]);
        assert_eq!(
            start(r#"{"deliver_policy":"last","filter_subject":"a"}"#),
            [3]
        );
        assert_eq!(start(r#"{"deliver_policy":"new"}"#), Vec::<u64>::new());
        assert_eq!(
            start(r#"{"deliver_policy":"by_start_sequence","opt_start_seq":4}"#),
            [4, 5]
        );
        assert_eq!(
            start(r#"{"deliver_policy":"by_start_time","opt_start_time":"1970-01-01T00:00:03Z"}"#),
            [3, 4, 5]
        );
        assert_eq!(
            start(r#"{"deliver_policy":"last_per_subject","filter_subject":">"}"#),
            [3, 4, 5]
        );
        assert_eq!(start(r#"{"filter_subjects":["b","c"]}"#), [2, 4, 5]);
        assert_eq!(start(r#"{"filter_subject":"b"}"#), [2, 5]);
    }

    #[test]
    fn num_pending_follows_the_stream() {
        let mut store = store_with(&["a", "b"]);
        let mut e = Engine::new("S", "X", config(r#"{"filter_subject":"a"}"#), &store, -1, 0);
        assert_eq!(e.npc, 1);
        store.append("a", None, b"x", 10).expect("append");
        store.append("b", None, b"x", 11).expect("append");
        e.catch_up_pending(&store, 0);
        assert_eq!(e.npc, 2);
        pull(&mut e, &store, "i", "1", 0);
        e.deliver(&store, 0, 100, &yes);
        assert!(msgs(&mut e)[0].2.ends_with(".1"));
    }

    #[test]
    fn num_pending_recounts_after_removals() {
        let mut store = store_with(&["a", "a", "a", "a"]);
        let mut e = Engine::new("S", "X", config(r#"{"ack_policy":"none"}"#), &store, -1, 0);
        assert_eq!(e.npc, 4);
        store.remove(2, false).expect("remove");
        store.append("a", None, b"x", 10).expect("append");
        e.catch_up_pending(&store, 0);
        assert_eq!(e.npc, 4);
        pull(&mut e, &store, "i", "10", 0);
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        assert_eq!(got.len(), 4);
        assert!(got[3].2.ends_with(".0"), "{}", got[3].2);
    }

    #[test]
    fn ack_next_acks_and_pulls() {
        let store = store_with(&["a", "a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit"}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i", "1", 0);
        e.deliver(&store, 0, 100, &yes);
        let first = msgs(&mut e);
        e.ack(
            &first[0].2,
            Some("next"),
            br#"+NXT {"batch":2}"#,
            &store,
            1,
            &yes,
        );
        assert!(e.out.is_empty(), "+NXT is not acknowledged");
        e.deliver(&store, 1, 100, &yes);
        let got = msgs(&mut e);
        assert_eq!(
            got.iter().map(|m| (m.0.as_str(), m.1)).collect::<Vec<_>>(),
            [("next", 2), ("next", 3)]
        );
        assert_eq!(e.snapshot(&store, 1, &yes).ack_floor_stream, 1);
    }

    #[test]
    fn last_per_subject_then_new_messages() {
        let mut store = store_with(&["a", "b", "a"]);
        let mut e = Engine::new(
            "S",
            "W",
            config(
                r#"{"deliver_policy":"last_per_subject","filter_subject":">","ack_policy":"none"}"#,
            ),
            &store,
            -1,
            0,
        );
        assert_eq!(e.npc, 2);
        pull(
            &mut e,
            &store,
            "i",
            r#"{"batch":10,"expires":10000000000}"#,
            0,
        );
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        assert_eq!(got.iter().map(|m| m.1).collect::<Vec<_>>(), [2, 3]);
        assert!(got[1].2.ends_with(".0"), "caught up: {}", got[1].2);
        store.append("b", None, b"x", 10).expect("append");
        e.catch_up_pending(&store, 0);
        e.deliver(&store, 0, 100, &yes);
        assert_eq!(msgs(&mut e).iter().map(|m| m.1).collect::<Vec<_>>(), [4]);
    }

    #[test]
    fn pull_statuses() {
        let store = store_with(&["a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit","max_waiting":1,"max_batch":5}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i1", r#"{"batch":3,"no_wait":true}"#, 0);
        e.deliver(&store, 0, 100, &yes);
        let out = std::mem::take(&mut e.out);
        assert_eq!(out.len(), 2);
        assert!(
            matches!(&out[1], Outbound::Status(s) if s.header.starts_with(b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 2\r\n"))
        );
        pull(&mut e, &store, "i2", r#"{"batch":3,"no_wait":true}"#, 0);
        assert_eq!(
            statuses(&mut e),
            [("i2".to_string(), "NATS/1.0 404 No Messages".to_string())]
        );
        pull(&mut e, &store, "i3", r#"{"batch":6}"#, 0);
        assert_eq!(
            statuses(&mut e)[0].1,
            "NATS/1.0 409 Exceeded MaxRequestBatch of 5"
        );
        pull(&mut e, &store, "i4", r#"{"batch":1,"expires":1000}"#, 0);
        pull(&mut e, &store, "i5", r#"{"batch":1}"#, 0);
        assert_eq!(statuses(&mut e)[0].1, "NATS/1.0 409 Exceeded MaxWaiting");
        e.tick(1000, 1, &yes);
        assert_eq!(statuses(&mut e)[0].1, "NATS/1.0 408 Request Timeout");
        pull(
            &mut e,
            &store,
            "i6",
            r#"{"batch":1,"expires":1000,"idle_heartbeat":10000}"#,
            0,
        );
        assert_eq!(
            statuses(&mut e)[0].1,
            "NATS/1.0 400 Bad Request - heartbeat value too large"
        );
        e.release_waiting();
        pull(&mut e, &store, "i7", "1", 0);
        e.release_waiting();
        assert_eq!(statuses(&mut e)[0].1, "NATS/1.0 409 Consumer Deleted");
    }

    #[test]
    fn pull_max_bytes() {
        let store = store_with(&["a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit"}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i", r#"{"batch":5,"max_bytes":10}"#, 0);
        e.deliver(&store, 0, 100, &yes);
        let st = statuses(&mut e);
        assert_eq!(st[0].1, "NATS/1.0 409 Message Size Exceeds MaxBytes");
        pull(&mut e, &store, "i", r#"{"batch":1,"max_bytes":1000}"#, 0);
        e.deliver(&store, 0, 100, &yes);
        let out = std::mem::take(&mut e.out);
        assert!(
            matches!(&out[1], Outbound::Status(s) if s.header.starts_with(b"NATS/1.0 409 Batch Completed"))
        );
    }

    #[test]
    fn push_flow_control_and_heartbeats() {
        let mut store = MemStore::new();
        let big = vec![b'x'; 600 * 1024];
        for i in 0..8 {
            store.append("a", None, &big, i).expect("append");
        }
        let mut e = Engine::new(
            "S",
            "P",
            config(
                r#"{"deliver_subject":"dd","ack_policy":"none","flow_control":true,"idle_heartbeat":1000000000}"#,
            ),
            &store,
            -1,
            0,
        );
        assert_eq!(e.deliver(&store, 0, 100, &yes), Progress::Idle);
        assert!(e.out.is_empty(), "inactive push consumers send nothing");
        e.set_active(true);
        e.deliver(&store, 0, 100, &yes);
        let out = std::mem::take(&mut e.out);
        let delivered = out
            .iter()
            .filter(|o| matches!(o, Outbound::Msg { .. }))
            .count();
        // 2 MiB window: stops once over it, with a flow-control request past half of it.
        assert_eq!(delivered, 4);
        let fc = out
            .iter()
            .find_map(|o| match o {
                Outbound::Status(s) if s.reply.is_some() => Some(s.clone()),
                _ => None,
            })
            .expect("flow control request");
        assert_eq!(fc.header, b"NATS/1.0 100 FlowControl Request\r\n\r\n");
        let fc_reply = fc.reply.expect("reply");
        assert!(fc_reply.starts_with("$JS.FC.S.P."));
        e.tick(2 * SEC, 1, &yes);
        let hb = statuses(&mut e);
        assert_eq!(hb[0].1, "NATS/1.0 100 Idle Heartbeat");
        assert!(String::from_utf8_lossy(&e.heartbeat_header())
            .contains(&format!("Nats-Consumer-Stalled: {fc_reply}")));
        e.flow_control_reply(&fc_reply);
        e.deliver(&store, 2 * SEC, 100, &yes);
        assert!(msgs(&mut e).len() >= 3);
        let hb = String::from_utf8(e.heartbeat_header()).expect("utf8");
        assert!(hb.contains("Nats-Last-Consumer: "), "{hb}");
    }

    #[test]
    fn saved_state_restores() {
        let store = store_with(&["a", "a", "a", "a"]);
        let cfg = config(r#"{"durable_name":"D","ack_policy":"explicit","ack_wait":5000000000}"#);
        let mut e = Engine::new("S", "D", cfg.clone(), &store, -1, 0);
        pull(&mut e, &store, "i", "3", 0);
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        ack(&mut e, &store, &got[0].2, "+ACK", 1);
        ack(&mut e, &store, &got[1].2, "-NAK", 1);
        pull(&mut e, &store, "i", "1", 1);
        e.deliver(&store, 1, 100, &yes);
        assert!(e.take_dirty());
        assert!(!e.take_dirty());
        let saved = e.saved_state();
        let mut r = Engine::restore("S", "D", cfg, &saved, &store, 10);
        let s = r.snapshot(&store, 10, &yes);
        assert_eq!((s.delivered_consumer, s.delivered_stream), (4, 3));
        assert_eq!((s.ack_floor_consumer, s.ack_floor_stream), (1, 1));
        assert_eq!(
            (s.num_ack_pending, s.num_redelivered, s.num_pending),
            (2, 1, 1)
        );
        pull(&mut r, &store, "i", "1", 10);
        r.deliver(&store, 10, 100, &yes);
        assert_eq!(msgs(&mut r)[0].1, 4);
        // Pending messages come back after their ack wait.
        r.tick(6 * SEC, 1, &yes);
        pull(&mut r, &store, "i", "5", 6 * SEC);
        r.deliver(&store, 6 * SEC, 100, &yes);
        let again: Vec<u64> = msgs(&mut r).into_iter().map(|m| m.1).collect();
        assert_eq!(again, [2, 3, 4]);
    }

    #[test]
    fn backoff_spaces_redeliveries() {
        let store = store_with(&["a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(
                r#"{"durable_name":"D","ack_policy":"explicit","backoff":[1000000000,3000000000]}"#,
            ),
            &store,
            -1,
            0,
        );
        pull(
            &mut e,
            &store,
            "i",
            r#"{"batch":10,"expires":100000000000}"#,
            0,
        );
        e.deliver(&store, 0, 100, &yes);
        assert_eq!(msgs(&mut e).len(), 1);
        e.tick(SEC, 1, &yes);
        e.deliver(&store, SEC, 100, &yes);
        assert_eq!(msgs(&mut e).len(), 1);
        e.tick(3 * SEC, 1, &yes);
        e.deliver(&store, 3 * SEC, 100, &yes);
        assert!(msgs(&mut e).is_empty());
        e.tick(4 * SEC, 1, &yes);
        e.deliver(&store, 4 * SEC, 100, &yes);
        assert_eq!(msgs(&mut e).len(), 1);
    }

    #[test]
    fn purge_drops_pending() {
        let mut store = store_with(&["a", "a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit"}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i", "2", 0);
        e.deliver(&store, 0, 100, &yes);
        store.purge(None, None, 0).expect("purge");
        e.purged(store.state().first_seq, &store);
        let s = e.snapshot(&store, 1, &yes);
        assert_eq!((s.num_ack_pending, s.num_pending), (0, 0));
        assert_eq!((s.ack_floor_consumer, s.ack_floor_stream), (2, 3));
    }

    #[test]
    fn needs_ack_for_interest() {
        let store = store_with(&["a", "b", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit","filter_subject":"a"}"#),
            &store,
            -1,
            0,
        );
        assert!(e.needs_ack(1, "a"));
        assert!(!e.needs_ack(2, "b"));
        pull(&mut e, &store, "i", "1", 0);
        e.deliver(&store, 0, 100, &yes);
        let got = msgs(&mut e);
        assert!(e.needs_ack(1, "a"));
        ack(&mut e, &store, &got[0].2, "+ACK", 1);
        assert!(!e.needs_ack(1, "a"));
        assert!(e.needs_ack(3, "a"));
    }

    #[test]
    fn headers_only_and_replies() {
        let mut store = MemStore::new();
        store
            .append("a", Some(b"NATS/1.0\r\nX: 1\r\n\r\n"), b"hello", 1)
            .expect("append");
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"durable_name":"D","ack_policy":"explicit","headers_only":true}"#),
            &store,
            -1,
            0,
        );
        pull(&mut e, &store, "i", "1", 0);
        e.deliver(&store, 0, 100, &yes);
        let out = std::mem::take(&mut e.out);
        let Outbound::Msg {
            headers,
            payload,
            reply,
            ..
        } = &out[0]
        else {
            panic!("not a message");
        };
        assert_eq!(
            headers.as_deref(),
            Some(&b"NATS/1.0\r\nX: 1\r\nNats-Msg-Size: 5\r\n\r\n"[..])
        );
        assert!(payload.is_empty());
        e.ack(reply, Some("acked"), b"+ACK", &store, 1, &yes);
        assert_eq!(e.out, vec![Outbound::AckReply("acked".into())]);
    }

    #[test]
    fn replay_original_spaces_messages() {
        let store = store_with(&["a", "a"]);
        let mut e = Engine::new(
            "S",
            "D",
            config(r#"{"deliver_subject":"d","replay_policy":"original"}"#),
            &store,
            -1,
            0,
        );
        e.set_active(true);
        assert_eq!(
            e.deliver(&store, 100, 10, &yes),
            Progress::WaitUntil(100 + SEC)
        );
        assert_eq!(msgs(&mut e).len(), 1);
        e.deliver(&store, 100 + SEC, 10, &yes);
        assert_eq!(msgs(&mut e).len(), 1);
    }
}
