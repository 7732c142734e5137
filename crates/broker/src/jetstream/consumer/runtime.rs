//! A running consumer: its [`Engine`] behind a lock, its subscriptions (acks, flow control),
//! and the one task that drives it.
//!
//! The task wakes for news (acks and pull requests on its inbox, new messages from the
//! stream's `last_seq` watch, its timers), takes the engine's lock and then the stream's,
//! lets the engine handle everything that arrived and deliver up to a budget, drops both
//! locks, and only then publishes what came out through the router, in one batch with one
//! wake-up of each receiver. Acks that free messages of interest and work-queue streams,
//! advisories and the durable state file are handled after that, with no lock held.
//!
//! Lock order: a consumer's engine, then its stream's `inner`; the stream's consumer list
//! is only ever copied out, never held while taking an engine.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::config::{ConsumerConfig, Retention};
use super::engine::{Engine, Event, Outbound, Progress};
use super::info::{self, advisory, ConsumerInfo};
use super::persist;
use super::time::{format_rfc3339, now_ns};
use crate::core::router::{self, MatchCache, Origin, Router};
use crate::core::{Account, InternalMsg, InternalSub, SubRef, Subscriber, Subscription};
use crate::jetstream::stream::{Limits, Stream, StreamIngest};
use crate::server::ServerInner;
use midge_proto::sublist::{MatchResult, QueueGroup};

/// Messages one round of the task delivers before it lets others run.
const BUDGET: usize = 512;
/// Inbox messages (acks, pull requests) one round takes.
const INBOX_BATCH: usize = 1024;
/// Closes a consumer's inbox queue when its task ends, however it ends: publishers
/// waiting for the queue to drain go on, and nothing more is queued.
struct CloseInbox(Arc<StreamIngest>);

impl Drop for CloseInbox {
    fn drop(&mut self) {
        self.0.close();
    }
}
/// How often a push consumer without a listener looks for one.
const INTEREST_POLL_INACTIVE: Duration = Duration::from_millis(100);
/// How often a push consumer with a listener checks it is still there.
const INTEREST_POLL_ACTIVE: Duration = Duration::from_secs(1);
/// How often a changed durable state is written.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Why a consumer stops.
const RUNNING: u8 = 0;
/// Deleted (API, inactivity): waiting pulls get `409 Consumer Deleted`, files go.
const DELETED: u8 = 1;
/// Its stream is going away (the stream removes the files).
const STREAM_GONE: u8 = 2;

/// A consumer of a stream: what the stream lists.
#[derive(Debug)]
pub(crate) struct Consumer {
    pub name: String,
    pub stream_name: String,
    pub created_ns: i64,
    /// Subjects it delivers (empty: all), readable without the engine's lock (the stream
    /// asks while it stores).
    filters: RwLock<Vec<String>>,
    pub(super) engine: Mutex<Engine>,
    inbox: Arc<InternalSub>,
    subs: Mutex<Vec<Arc<Subscription>>>,
    /// Something changed outside the task (stop, config update): look again.
    wake: Notify,
    state: AtomicU8,
    /// Where the durable state goes (`<stream dir>/consumers/<name>`), for durables of
    /// file streams that did not ask for memory storage.
    pub dir: Option<PathBuf>,
    /// Push consumers: whether someone listens on the deliver subject (`push_bound`).
    bound: AtomicBool,
    /// Numbers the saved states in the order they were taken (under the engine's lock).
    state_gen: AtomicU64,
    /// The number of the state on disk; held while writing, so two writers (the task's
    /// periodic save, the shutdown save) neither interleave nor put an older state back.
    written: Mutex<u64>,
}

impl Consumer {
    /// Whether it delivers `subject` (interest retention keeps only what someone wants).
    pub fn wants(&self, subject: &str) -> bool {
        let f = self.filters.read();
        f.is_empty()
            || f.iter()
                .any(|f| midge_store::filter_matches(Some(f), subject))
    }

    /// The filter subjects (work-queue uniqueness checks).
    pub fn filter_subjects(&self) -> Vec<String> {
        self.filters.read().clone()
    }

    /// The stream is going away: stop without saving (its directory goes with it).
    pub fn stop(&self) {
        let _ =
            self.state
                .compare_exchange(RUNNING, STREAM_GONE, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    /// Deleted: the task releases waiting pull requests, removes the files and ends.
    pub fn delete(&self) {
        let _ = self
            .state
            .compare_exchange(RUNNING, DELETED, Ordering::AcqRel, Ordering::Acquire);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) != RUNNING
    }

    pub fn config(&self) -> ConsumerConfig {
        self.engine.lock().cfg.clone()
    }

    /// Writes the durable state now, on this thread (shutdown).
    pub fn save_now(&self) {
        if self.is_closed() {
            return;
        }
        let taken = {
            let e = self.engine.lock();
            self.take_state(&e)
        };
        self.write_state(taken);
    }

    /// The state to save with its number; call with the engine locked.
    fn take_state(&self, e: &Engine) -> (u64, super::engine::SavedState) {
        (
            self.state_gen.fetch_add(1, Ordering::Relaxed) + 1,
            e.saved_state(),
        )
    }

    /// Writes a state taken by [`Consumer::take_state`] unless a later one is on disk.
    fn write_state(&self, (gen, state): (u64, super::engine::SavedState)) {
        let Some(dir) = &self.dir else {
            return;
        };
        let mut written = self.written.lock();
        if *written >= gen {
            return;
        }
        match persist::write_state(dir, &state) {
            Ok(()) => *written = gen,
            Err(e) => warn!(consumer = %self.name, "JetStream: cannot save consumer state: {e}"),
        }
    }

    pub fn is_push_bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    /// Hands a message to the task as if it arrived on its inbox (pull requests that came
    /// through the API service).
    pub fn inject(&self, subject: &str, reply: Option<&str>, payload: &[u8]) -> bool {
        self.inbox
            .deliver(subject.as_bytes(), reply.map(str::as_bytes), None, payload)
    }

    /// Puts a checked config update in force.
    pub fn update(&self, cfg: ConsumerConfig, stream: &Stream) {
        *self.filters.write() = cfg.filters();
        {
            let mut e = self.engine.lock();
            let inner = stream.inner.lock();
            e.update_config(cfg.clone(), &*inner.store);
        }
        if let Some(dir) = &self.dir {
            let meta = persist::Meta {
                created: self.created_ns,
                config: cfg,
            };
            if let Err(e) = persist::write_meta(dir, &meta) {
                warn!(consumer = %self.name, "JetStream: cannot save consumer config: {e}");
            }
        }
        self.wake.notify_one();
    }

    /// `ConsumerInfo` now.
    pub fn info(&self, stream: &Stream) -> ConsumerInfo {
        let account = stream.account.clone();
        let interest = |s: &str| has_interest(&account, s);
        let now = now_ns();
        let mut e = self.engine.lock();
        let snap = {
            let inner = stream.inner.lock();
            e.snapshot(&*inner.store, now, &interest)
        };
        ConsumerInfo::new(
            &self.stream_name,
            &self.name,
            self.created_ns,
            &e.cfg,
            &snap,
            e.cfg.is_push() && self.is_push_bound(),
            now,
        )
    }
}

/// Whether anyone in `account` would receive `subject`.
pub(crate) fn has_interest(account: &Account, subject: &str) -> bool {
    let r = account.sublist.matches(subject.as_bytes());
    !r.psubs.is_empty() || !r.qsubs.is_empty()
}

/// Everything a new consumer's task needs.
pub(crate) struct Start {
    pub srv: Arc<ServerInner>,
    pub stream: Arc<Stream>,
    pub limits: Arc<dyn Limits + Send + Sync>,
    pub retention: Retention,
    pub domain: String,
}

/// Builds a consumer around `engine`, subscribes it and starts its task. The caller puts
/// it in the stream's list.
pub(crate) fn start(
    start: Start,
    engine: Engine,
    created_ns: i64,
    dir: Option<PathBuf>,
) -> Arc<Consumer> {
    // Acks and pull requests wait in a queue that never drops: over its mark, the
    // connection sending them waits until the task has caught up (as a stream's publishers
    // do), so an ack is never lost to a burst.
    let rx = Arc::new(StreamIngest::default());
    let inbox = InternalSub::queued(rx.clone());
    let cfg = engine.cfg.clone();
    let consumer = Arc::new(Consumer {
        name: engine.name.to_string(),
        stream_name: engine.stream.to_string(),
        created_ns,
        filters: RwLock::new(cfg.filters()),
        engine: Mutex::new(engine),
        inbox: inbox.clone(),
        subs: Mutex::new(Vec::new()),
        wake: Notify::new(),
        state: AtomicU8::new(RUNNING),
        dir,
        bound: AtomicBool::new(false),
        state_gen: AtomicU64::new(0),
        written: Mutex::new(0),
    });
    let account = start.stream.account.clone();
    let mut subjects = Vec::new();
    if cfg.ack_policy != super::config::AckPolicy::None {
        subjects.push(super::ack::ack_subscription(
            &consumer.stream_name,
            &consumer.name,
        ));
    }
    if cfg.flow_control {
        subjects.push(format!(
            "$JS.FC.{}.{}.*",
            consumer.stream_name, consumer.name
        ));
    }
    let mut subs = Vec::new();
    for subject in subjects {
        let sub = Subscription::new(
            Subscriber::Internal(inbox.clone()),
            account.clone(),
            subject.as_bytes(),
            None,
            b"",
        );
        match router::subscribe(&start.srv, &sub) {
            Ok(()) => subs.push(sub),
            Err(e) => warn!(consumer = %consumer.name, "cannot subscribe to {subject}: {e}"),
        }
    }
    *consumer.subs.lock() = subs;
    let task = Task {
        consumer: consumer.clone(),
        srv: Arc::downgrade(&start.srv),
        stream: start.stream,
        limits: start.limits,
        retention: start.retention,
        domain: start.domain,
        account,
    };
    tokio::spawn(task.run(rx));
    consumer
}

struct Task {
    consumer: Arc<Consumer>,
    srv: Weak<ServerInner>,
    stream: Arc<Stream>,
    limits: Arc<dyn Limits + Send + Sync>,
    retention: Retention,
    domain: String,
    account: Arc<Account>,
}

/// What one round produced, handled with no lock held.
struct Round {
    out: Vec<Outbound>,
    events: Vec<Event>,
    next_tick: i64,
    progress: Progress,
    saved: Option<(u64, super::engine::SavedState)>,
    idle_since: Option<i64>,
}

impl Task {
    async fn run(self, rx: Arc<StreamIngest>) {
        let _close = CloseInbox(rx.clone());
        let Some(srv) = self.srv.upgrade() else {
            return;
        };
        let mut shutdown = srv.shutdown_signal();
        let mut router = Router::new(srv.clone(), rand::random());
        let mut cache = MatchCache::new(self.account.clone());
        drop(srv);
        let mut last_seq = self.stream.last_seq.subscribe();
        let mut inbox: Vec<InternalMsg> = Vec::with_capacity(INBOX_BATCH);
        let mut next_tick = Instant::now();
        let mut busy = true;
        let mut inactive_since: Option<i64> = None;
        let mut next_save = Instant::now() + SAVE_INTERVAL;
        let mut pending_save: Option<(u64, super::engine::SavedState)> = None;
        let mut saving: Option<tokio::task::JoinHandle<()>> = None;
        let is_push = self.consumer.config().is_push();
        let threshold = self.consumer.config().inactive_threshold;
        let mut next_interest = Instant::now();
        loop {
            if !busy {
                let mut wake_at = next_tick;
                if is_push {
                    wake_at = wake_at.min(next_interest);
                }
                if pending_save.is_some() {
                    wake_at = wake_at.min(next_save);
                }
                tokio::select! {
                    _ = shutdown.changed() => {
                        self.finish(saving).await;
                        return;
                    }
                    _ = self.consumer.wake.notified() => {}
                    () = rx.wake.notified() => {}
                    r = last_seq.changed() => {
                        if r.is_err() {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(wake_at) => {}
                }
            }
            rx.take(INBOX_BATCH.saturating_sub(inbox.len()), &mut inbox);
            match self.consumer.state.load(Ordering::Acquire) {
                RUNNING => {}
                DELETED => {
                    self.deleted(&mut router, &mut cache, saving).await;
                    return;
                }
                _ => {
                    // The stream is going: waiting pulls hear it, its directory goes with it.
                    let out = {
                        let mut e = self.consumer.engine.lock();
                        e.release_waiting();
                        std::mem::take(&mut e.out)
                    };
                    self.publish(&mut router, &mut cache, out);
                    self.unsubscribe();
                    return;
                }
            }
            let now = now_ns();
            let check_interest = is_push && Instant::now() >= next_interest;
            if check_interest {
                next_interest = Instant::now()
                    + if self.consumer.is_push_bound() {
                        INTEREST_POLL_ACTIVE
                    } else {
                        INTEREST_POLL_INACTIVE
                    };
            }
            let round = self.round(&mut inbox, now, check_interest, inactive_since);
            inactive_since = round.idle_since;
            if !round.out.is_empty() {
                let failed = self.publish(&mut router, &mut cache, round.out);
                if !failed.is_empty() {
                    let mut e = self.consumer.engine.lock();
                    for (seq, charged) in failed {
                        e.undeliverable(seq, charged.as_ref().map(|(r, s)| (r.as_str(), *s)));
                    }
                    if e.cfg.is_push() {
                        self.consumer.bound.store(false, Ordering::Relaxed);
                    }
                }
            }
            if !round.events.is_empty() {
                self.handle_events(&mut router, round.events);
            }
            if let Some(s) = round.saved {
                pending_save = Some(s);
            }
            if pending_save.is_some() && Instant::now() >= next_save {
                if saving.as_ref().is_none_or(|h| h.is_finished()) {
                    if let Some(taken) = pending_save.take() {
                        let consumer = self.consumer.clone();
                        saving = Some(tokio::task::spawn_blocking(move || {
                            consumer.write_state(taken);
                        }));
                    }
                }
                next_save = Instant::now() + SAVE_INTERVAL;
            }
            if self.reap(now, threshold, inactive_since) {
                self.consumer.delete();
                continue;
            }
            // A pull consumer's inactivity is only seen by looking: look when it would be due.
            let reap_at = if threshold > 0 {
                self.consumer
                    .engine
                    .lock()
                    .pull_last_active()
                    .map(|last| last.saturating_add(threshold).saturating_add(1_000_000))
            } else {
                None
            };
            busy = matches!(round.progress, Progress::More) || !inbox.is_empty();
            next_tick = match round.progress {
                Progress::WaitUntil(t) if round.next_tick == 0 || t < round.next_tick => {
                    instant_at(t, now)
                }
                _ if round.next_tick > 0 => instant_at(round.next_tick, now),
                _ => Instant::now() + Duration::from_secs(3600),
            };
            if let Some(t) = reap_at {
                next_tick = next_tick.min(instant_at(t, now));
            }
            if self.consumer.dir.is_none() {
                pending_save = None;
            }
            if busy {
                tokio::task::yield_now().await;
            }
        }
        self.unsubscribe();
    }

    /// One round under the locks.
    fn round(
        &self,
        inbox: &mut Vec<InternalMsg>,
        now: i64,
        check_interest: bool,
        inactive_since: Option<i64>,
    ) -> Round {
        let account = &self.account;
        let interest = |s: &str| has_interest(account, s);
        let mut e = self.consumer.engine.lock();
        let inner = self.stream.inner.lock();
        let store = &*inner.store;
        for m in inbox.drain(..) {
            let Ok(subject) = std::str::from_utf8(&m.subject) else {
                continue;
            };
            let reply = m.reply.as_deref().and_then(|r| std::str::from_utf8(r).ok());
            if subject.starts_with(super::ack::ACK_PREFIX) {
                e.ack(subject, reply, &m.payload, store, now, &interest);
            } else if subject.starts_with("$JS.FC.") {
                e.flow_control_reply(subject);
            } else if let Some(r) = reply {
                e.pull_request(r, &m.payload, store, now, &interest);
            }
        }
        let mut idle_since = inactive_since;
        if e.cfg.is_push() {
            if check_interest {
                let active = interest(&e.cfg.deliver_subject);
                e.set_active(active);
                self.consumer.bound.store(active, Ordering::Relaxed);
            }
            if e.is_active() {
                idle_since = None;
            } else if idle_since.is_none() {
                idle_since = Some(now);
            }
        }
        e.catch_up_pending(store, now);
        let first_seq = store.state().first_seq;
        let mut next_tick = e.tick(now, first_seq, &interest);
        let progress = e.deliver(store, now, BUDGET, &interest);
        if matches!(progress, Progress::Idle) {
            // Timers the deliveries moved (pull heartbeats, push idle heartbeats).
            next_tick = e.tick(now, first_seq, &interest);
        }
        drop(inner);
        let saved = if self.consumer.dir.is_some() && e.take_dirty() {
            Some(self.consumer.take_state(&e))
        } else {
            None
        };
        Round {
            out: std::mem::take(&mut e.out),
            events: std::mem::take(&mut e.events),
            next_tick,
            progress,
            saved,
            idle_since,
        }
    }

    /// Publishes a round's output in the stream's account. Returns the deliveries nobody
    /// took (stream sequence, and the pull request they were charged to).
    #[allow(clippy::type_complexity)]
    fn publish(
        &self,
        router: &mut Router,
        cache: &mut MatchCache,
        out: Vec<Outbound>,
    ) -> Vec<(u64, Option<(String, i64)>)> {
        let account = &self.account;
        let mut failed = Vec::new();
        let direct = out.len() <= 16;
        for o in out {
            match o {
                Outbound::Msg {
                    to,
                    subject,
                    reply,
                    headers,
                    payload,
                    stream_seq,
                    charged,
                } => {
                    // Matched on where it goes (the same subject message after message:
                    // the cache's last-subject check), delivered under its own subject.
                    let matched = cache.take(to.as_bytes());
                    let result = local_only(matched.clone());
                    cache.restore(matched);
                    let ok = router.route(
                        account,
                        &result,
                        Origin::Internal,
                        subject.as_bytes(),
                        Some(reply.as_bytes()),
                        headers.as_deref(),
                        &payload,
                    );
                    if !ok {
                        failed.push((stream_seq, charged.map(|c| (to.to_string(), c))));
                    }
                }
                Outbound::Status(s) => {
                    let result = account.sublist.matches(s.subject.as_bytes());
                    router.route(
                        account,
                        &result,
                        Origin::Internal,
                        s.subject.as_bytes(),
                        s.reply.as_deref().map(str::as_bytes),
                        Some(&s.header),
                        b"",
                    );
                }
                Outbound::AckReply(subject) => {
                    let result = account.sublist.matches(subject.as_bytes());
                    router.route(
                        account,
                        &result,
                        Origin::Internal,
                        subject.as_bytes(),
                        None,
                        None,
                        b"",
                    );
                }
            }
        }
        router.flush(direct);
        failed
    }

    fn handle_events(&self, router: &mut Router, events: Vec<Event>) {
        let mut acked: Vec<u64> = Vec::new();
        for ev in events {
            match ev {
                Event::Acked { from, to } => {
                    if self.retention != Retention::Limits {
                        acked.extend(from..=to);
                    }
                }
                Event::MaxDeliveries {
                    stream_seq,
                    deliveries,
                } => {
                    let subject = format!(
                        "{}.{}.{}",
                        advisory::MAX_DELIVER_PREFIX,
                        self.consumer.stream_name,
                        self.consumer.name
                    );
                    self.advise(router, &subject, || advisory::MaxDeliveries {
                        kind: advisory::MAX_DELIVER,
                        id: crate::sys::random_id(22),
                        timestamp: format_rfc3339(now_ns()),
                        stream: &self.consumer.stream_name,
                        consumer: &self.consumer.name,
                        stream_seq,
                        deliveries,
                        domain: &self.domain,
                    });
                }
                Event::Nak {
                    stream_seq,
                    consumer_seq,
                    deliveries,
                } => {
                    let subject = format!(
                        "{}.{}.{}",
                        advisory::NAK_PREFIX,
                        self.consumer.stream_name,
                        self.consumer.name
                    );
                    self.advise(router, &subject, || advisory::Delivery {
                        kind: advisory::NAK,
                        id: crate::sys::random_id(22),
                        timestamp: format_rfc3339(now_ns()),
                        stream: &self.consumer.stream_name,
                        consumer: &self.consumer.name,
                        consumer_seq,
                        stream_seq,
                        deliveries,
                        reason: None,
                        domain: &self.domain,
                    });
                }
                Event::Terminated {
                    stream_seq,
                    consumer_seq,
                    deliveries,
                    reason,
                } => {
                    if self.retention != Retention::Limits {
                        acked.push(stream_seq);
                    }
                    let subject = format!(
                        "{}.{}.{}",
                        advisory::TERMINATED_PREFIX,
                        self.consumer.stream_name,
                        self.consumer.name
                    );
                    self.advise(router, &subject, || advisory::Delivery {
                        kind: advisory::TERMINATED,
                        id: crate::sys::random_id(22),
                        timestamp: format_rfc3339(now_ns()),
                        stream: &self.consumer.stream_name,
                        consumer: &self.consumer.name,
                        consumer_seq,
                        stream_seq,
                        deliveries,
                        reason: reason.as_deref(),
                        domain: &self.domain,
                    });
                }
                Event::AckSample {
                    stream_seq,
                    consumer_seq,
                    deliveries,
                    ack_time_ns,
                } => {
                    let subject = format!(
                        "{}.{}.{}",
                        advisory::ACK_METRIC_PREFIX,
                        self.consumer.stream_name,
                        self.consumer.name
                    );
                    self.advise(router, &subject, || advisory::AckMetric {
                        kind: advisory::ACK_METRIC,
                        id: crate::sys::random_id(22),
                        timestamp: format_rfc3339(now_ns()),
                        stream: &self.consumer.stream_name,
                        consumer: &self.consumer.name,
                        consumer_seq,
                        stream_seq,
                        ack_time: ack_time_ns,
                        deliveries,
                        domain: &self.domain,
                    });
                }
            }
        }
        if !acked.is_empty() {
            retire(
                &self.stream,
                &*self.limits,
                self.retention,
                Some(&self.consumer),
                &acked,
            );
        }
        router.flush(true);
    }

    /// Publishes an advisory when someone listens (the JSON is only built then).
    fn advise<T: Serialize>(&self, router: &mut Router, subject: &str, build: impl FnOnce() -> T) {
        if !has_interest(&self.account, subject) {
            return;
        }
        let body = info::to_json(&build());
        let result = self.account.sublist.matches(subject.as_bytes());
        router.route(
            &self.account,
            &result,
            Origin::Internal,
            subject.as_bytes(),
            None,
            None,
            &body,
        );
    }

    /// Whether the consumer has been inactive past its threshold (ephemerals always have
    /// one; durables only when configured).
    fn reap(&self, now: i64, threshold: i64, inactive_since: Option<i64>) -> bool {
        if threshold <= 0 {
            return false;
        }
        let e = self.consumer.engine.lock();
        match e.pull_last_active() {
            Some(last) => e.num_waiting() == 0 && now - last > threshold,
            None => inactive_since.is_some_and(|t| now - t > threshold),
        }
    }

    async fn deleted(
        &self,
        router: &mut Router,
        cache: &mut MatchCache,
        saving: Option<tokio::task::JoinHandle<()>>,
    ) {
        let out = {
            let mut e = self.consumer.engine.lock();
            e.release_waiting();
            std::mem::take(&mut e.out)
        };
        self.publish(router, cache, out);
        self.unsubscribe();
        remove_from_stream(&self.stream, &self.consumer);
        if let Some(h) = saving {
            let _ = h.await;
        }
        if let Some(dir) = self.consumer.dir.clone() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = persist::remove(&dir) {
                    warn!("JetStream: cannot remove {}: {e}", dir.display());
                }
            })
            .await;
        }
        if self.retention == Retention::Interest {
            cleanup_interest(&self.stream, &*self.limits);
        }
        let subject = format!(
            "{}.{}.{}",
            advisory::DELETED_PREFIX,
            self.consumer.stream_name,
            self.consumer.name
        );
        self.advise(router, &subject, || advisory::Action {
            kind: advisory::ACTION,
            id: crate::sys::random_id(22),
            timestamp: format_rfc3339(now_ns()),
            stream: &self.consumer.stream_name,
            consumer: &self.consumer.name,
            action: "delete",
            domain: &self.domain,
        });
        router.flush(true);
        debug!(consumer = %self.consumer.name, stream = %self.consumer.stream_name, "consumer deleted");
    }

    /// The server is shutting down: the last state goes to disk.
    async fn finish(&self, saving: Option<tokio::task::JoinHandle<()>>) {
        if let Some(h) = saving {
            let _ = h.await;
        }
        if self.consumer.dir.is_some() {
            let consumer = self.consumer.clone();
            let _ = tokio::task::spawn_blocking(move || consumer.save_now()).await;
        }
        self.unsubscribe();
    }

    fn unsubscribe(&self) {
        let subs = std::mem::take(&mut *self.consumer.subs.lock());
        if let Some(srv) = self.srv.upgrade() {
            for sub in &subs {
                router::unsubscribe(&srv, sub);
            }
        }
    }
}

/// The local receivers of a match. A delivery goes out under the message's stored subject,
/// so a route or leaf connection would match it against the wrong subject on the other side
/// (JetStream is per server): remote interest is left out.
fn local_only(result: Arc<MatchResult<SubRef>>) -> Arc<MatchResult<SubRef>> {
    let remote = |s: &SubRef| matches!(s.0.owner, Subscriber::Route(_) | Subscriber::Leaf(_));
    if !result.psubs.iter().any(remote) && !result.qsubs.iter().any(|g| g.subs.iter().any(remote)) {
        return result;
    }
    Arc::new(MatchResult {
        psubs: result
            .psubs
            .iter()
            .filter(|s| !remote(s))
            .cloned()
            .collect(),
        qsubs: result
            .qsubs
            .iter()
            .map(|g| QueueGroup {
                name: g.name.clone(),
                subs: g.subs.iter().filter(|s| !remote(s)).cloned().collect(),
            })
            .filter(|g| !g.subs.is_empty())
            .collect(),
    })
}

fn instant_at(t: i64, now: i64) -> Instant {
    Instant::now() + Duration::from_nanos(u64::try_from(t.saturating_sub(now)).unwrap_or(0))
}

/// Takes `consumer` out of its stream's list (if it is still the one listed).
pub(crate) fn remove_from_stream(stream: &Stream, consumer: &Arc<Consumer>) {
    let mut list = stream.consumers.lock();
    if list
        .get(&consumer.name)
        .is_some_and(|c| Arc::ptr_eq(c, consumer))
    {
        list.remove(&consumer.name);
    }
}

/// Interest and work-queue retention: of `seqs`, which `acker` no longer needs, removes
/// those no other consumer of the stream needs either.
pub(crate) fn retire(
    stream: &Stream,
    limits: &dyn Limits,
    retention: Retention,
    acker: Option<&Arc<Consumer>>,
    seqs: &[u64],
) {
    if retention == Retention::Limits || seqs.is_empty() {
        return;
    }
    let others: Vec<Arc<Consumer>> = stream
        .consumers
        .lock()
        .values()
        .filter(|c| acker.is_none_or(|a| !Arc::ptr_eq(a, c)))
        .cloned()
        .collect();
    let doomed: Vec<u64> = if retention == Retention::WorkQueue || others.is_empty() {
        seqs.to_vec()
    } else {
        let subjects: Vec<(u64, String)> = {
            let inner = stream.inner.lock();
            seqs.iter()
                .filter_map(|s| inner.store.get(*s).ok().map(|m| (*s, m.subject)))
                .collect()
        };
        subjects
            .into_iter()
            .filter(|(seq, subject)| {
                !others
                    .iter()
                    .any(|c| c.engine.lock().needs_ack(*seq, subject))
            })
            .map(|(seq, _)| seq)
            .collect()
    };
    for seq in doomed {
        stream.acked(limits, seq);
    }
}

/// Most messages looked at when a consumer of an interest stream goes (nats-server defers
/// past this; here the rest waits for the next acks).
const CLEANUP_MAX: u64 = 100_000;

/// After a consumer of an interest stream went: removes what no remaining consumer needs.
pub(crate) fn cleanup_interest(stream: &Stream, limits: &dyn Limits) {
    let (first, last) = {
        let st = stream.inner.lock().store.state();
        (st.first_seq, st.last_seq)
    };
    if last < first {
        return;
    }
    let others: Vec<Arc<Consumer>> = stream.consumers.lock().values().cloned().collect();
    let upto = last.min(first.saturating_add(CLEANUP_MAX));
    let candidates: Vec<(u64, String)> = {
        let inner = stream.inner.lock();
        let mut out = Vec::new();
        let mut seq = first;
        while seq <= upto {
            match inner.store.next_matching(seq, None) {
                Some(m) if m.seq <= upto => {
                    seq = m.seq + 1;
                    out.push((m.seq, m.subject));
                }
                _ => break,
            }
        }
        out
    };
    for (seq, subject) in candidates {
        if !others
            .iter()
            .any(|c| c.engine.lock().needs_ack(seq, &subject))
        {
            stream.acked(limits, seq);
        }
    }
}

/// The stream was purged: its consumers move past what went.
pub(crate) fn stream_purged(stream: &Stream) {
    let first_seq = stream.inner.lock().store.state().first_seq;
    let consumers: Vec<Arc<Consumer>> = stream.consumers.lock().values().cloned().collect();
    for c in consumers {
        {
            let mut e = c.engine.lock();
            let inner = stream.inner.lock();
            e.purged(first_seq, &*inner.store);
        }
        c.wake.notify_one();
    }
}
