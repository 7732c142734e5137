//! A stream: its configuration, its store, and the rules a published message goes through
//! before it is stored (nats-server's `processJetStreamMsg`): sealed, expected stream,
//! de-duplication by `Nats-Msg-Id`, the `Nats-Expected-*` checks, roll-ups, sizes, account
//! and server limits, discard policies, then the limits (`max_msgs`, `max_bytes`,
//! `max_msgs_per_subject`, `max_age`) applied after the store.
//!
//! Published messages reach a stream through its [`StreamIngest`]: the router appends them
//! to a queue that never drops; when the queue is over its mark, the publishing connection
//! waits after its read until the stream's task drained it (back-pressure instead of
//! loss). One task per stream stores what the queue holds, sends the PubAcks, and expires
//! old messages (`max_age`).
//!
//! For the consumer side: [`Stream::inner`] holds the store (lock it, read it),
//! [`Stream::last_seq`] is a watch of the last stored sequence to wait on for new messages,
//! [`Stream::consumers`] lists the consumers (stream info's `consumer_count`, deleted with
//! the stream), and [`Stream::acked`] is the removal hook of interest and work-queue
//! retention.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use midge_store::{Store, StoreError, StoredMsg};
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tracing::{debug, warn};

use super::api::{self, ApiError, Discard, Retention, Storage, StreamConfig};
use super::headers;
use super::transform::Transform;
use crate::core::{Account, InternalMsg, Subscription};
use crate::server::ServerInner;

/// Bytes queued for a stream past which its publishers wait (and half of which they wait
/// for). Bounds the memory a fast publisher can pile up in front of a slow store.
pub(crate) const INGEST_HIGH_BYTES: usize = 8 * 1024 * 1024;
/// Messages queued past which publishers wait, for streams of many small messages.
pub(crate) const INGEST_HIGH_MSGS: usize = 64 * 1024;
/// Messages a stream's task stores before it sends their PubAcks and looks at the queue
/// again.
const BATCH: usize = 1024;

/// A file stream's batch of at most this many bytes, when no fsync follows it, is written
/// on the stream's task: appending it to the page cache costs less than the two thread
/// hops to the blocking pool and back, which are most of a synchronous publish's latency.
const INLINE_BYTES: usize = 256 * 1024;

fn batch_bytes(batch: &[InternalMsg]) -> usize {
    batch
        .iter()
        .map(|m| m.subject.len() + m.headers.as_ref().map_or(0, Bytes::len) + m.payload.len())
        .sum()
}

/// The queue between publishers (the router, on their tasks) and the stream's task.
#[derive(Debug, Default)]
pub(crate) struct StreamIngest {
    queue: Mutex<VecDeque<InternalMsg>>,
    bytes: AtomicUsize,
    len: AtomicUsize,
    /// The stream's task: something was queued.
    pub wake: Notify,
    /// Waiting publishers: the queue went under half its mark.
    pub drained: Notify,
    closed: AtomicBool,
}

impl StreamIngest {
    /// Queues a message; true when the queue is now over its mark (the publisher should
    /// wait after its read, see [`StreamIngest::is_over_half`]).
    pub fn push(
        &self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
    ) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        let size = subject.len() + headers.map_or(0, <[u8]>::len) + payload.len();
        let msg = InternalMsg {
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            headers: headers.map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(payload),
        };
        self.queue.lock().push_back(msg);
        let bytes = self.bytes.fetch_add(size, Ordering::AcqRel) + size;
        let len = self.len.fetch_add(1, Ordering::AcqRel) + 1;
        self.wake.notify_one();
        bytes > INGEST_HIGH_BYTES || len > INGEST_HIGH_MSGS
    }

    /// Whether a waiting publisher may go on: the queue is under half its mark, or closed.
    pub fn is_under_half(&self) -> bool {
        self.closed.load(Ordering::Acquire)
            || (self.bytes.load(Ordering::Acquire) <= INGEST_HIGH_BYTES / 2
                && self.len.load(Ordering::Acquire) <= INGEST_HIGH_MSGS / 2)
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Up to `max` queued messages, oldest first.
    pub fn take(&self, max: usize, into: &mut Vec<InternalMsg>) {
        let mut q = self.queue.lock();
        let n = q.len().min(max);
        let mut bytes = 0;
        for m in q.drain(..n) {
            bytes += m.subject.len() + m.headers.as_ref().map_or(0, Bytes::len) + m.payload.len();
            into.push(m);
        }
        drop(q);
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.len.fetch_sub(n, Ordering::AcqRel);
        if self.is_under_half() {
            self.drained.notify_waiters();
        }
    }

    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.queue.lock().clear();
        self.wake.notify_one();
        self.drained.notify_waiters();
    }
}

/// What a stream's limits and its account's are measured against when a message arrives.
pub(crate) trait Limits {
    /// An error when storing `bytes` more in a stream of `storage` would go over the
    /// account's or the server's limits.
    fn check_store(&self, storage: Storage, bytes: u64) -> Option<ApiError>;
    /// The stored bytes of a stream of `storage` changed from `old` to `new`.
    fn usage_changed(&self, storage: Storage, old: u64, new: u64);
    /// The JetStream domain PubAcks name.
    fn domain(&self) -> Option<String> {
        None
    }
}

/// The de-duplication window: message ids seen within `duplicate_window`, with the
/// sequence they were stored as.
#[derive(Debug, Default)]
struct Dedupe {
    ids: HashMap<String, u64>,
    order: VecDeque<(i64, String)>,
}

impl Dedupe {
    fn expire(&mut self, now_ns: i64, window: Duration) {
        let cutoff = now_ns.saturating_sub(i64::try_from(window.as_nanos()).unwrap_or(i64::MAX));
        while let Some((ts, _)) = self.order.front() {
            if *ts > cutoff {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }

    fn insert(&mut self, id: String, seq: u64, now_ns: i64) {
        if self.ids.insert(id.clone(), seq).is_none() {
            self.order.push_back((now_ns, id));
        }
    }
}

/// What the stream's lock guards.
#[derive(Debug)]
pub(crate) struct StreamInner {
    pub config: StreamConfig,
    pub store: Box<dyn Store>,
    dedupe: Dedupe,
    /// `Nats-Msg-Id` of the last stored message (`Nats-Expected-Last-Msg-Id`).
    last_msg_id: String,
    subject_transform: Option<Transform>,
    republish: Option<(Transform, bool)>,
}

/// The outcome of storing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub seq: u64,
    pub duplicate: bool,
}

/// A message to publish once stored (`republish`).
#[derive(Debug)]
pub(crate) struct Republish {
    pub subject: String,
    pub headers: Vec<u8>,
    pub payload: Bytes,
}

impl StreamInner {
    /// A stream's state around a store; `config` must have passed `check_config`.
    pub fn new(config: StreamConfig, store: Box<dyn Store>) -> Result<StreamInner, ApiError> {
        let mut inner = StreamInner {
            config: StreamConfig::default(),
            store,
            dedupe: Dedupe::default(),
            last_msg_id: String::new(),
            subject_transform: None,
            republish: None,
        };
        inner.set_config(config)?;
        if inner.config.first_seq > 1 && inner.store.state().last_seq == 0 {
            inner
                .store
                .reset_first_seq(inner.config.first_seq)
                .map_err(ApiError::create_failed)?;
        }
        Ok(inner)
    }

    /// Puts a (checked) configuration in force.
    pub fn set_config(&mut self, config: StreamConfig) -> Result<(), ApiError> {
        self.subject_transform = match &config.subject_transform {
            Some(t) => Some(Transform::new(&t.src, &t.dest).map_err(ApiError::invalid_config)?),
            None => None,
        };
        self.republish = match &config.republish {
            Some(r) => Some((
                Transform::new(&r.src, &r.dest).map_err(ApiError::invalid_config)?,
                r.headers_only,
            )),
            None => None,
        };
        self.config = config;
        Ok(())
    }

    /// Stores one published message, or says why not (the PubAck error). `interest`:
    /// whether a consumer wants `subject` (interest retention stores nothing nobody wants).
    #[allow(clippy::too_many_arguments)]
    pub fn process(
        &mut self,
        subject: &str,
        hdrs: Option<&[u8]>,
        payload: &[u8],
        now_ns: i64,
        limits: &dyn Limits,
        interest: &dyn Fn(&str) -> bool,
        republish: &mut Option<Republish>,
    ) -> Result<Stored, ApiError> {
        let cfg = &self.config;
        if cfg.sealed {
            return Err(ApiError::sealed());
        }
        let transformed;
        let subject = match self
            .subject_transform
            .as_ref()
            .and_then(|t| t.apply(subject))
        {
            Some(s) => {
                transformed = s;
                transformed.as_str()
            }
            None => subject,
        };
        let hdrs = hdrs.filter(|h| !h.is_empty());
        let mut msg_id = "";
        let mut rollup = None;
        if let Some(h) = hdrs {
            if let Some(name) = headers::get(h, headers::EXPECTED_STREAM) {
                if !name.is_empty() && name != cfg.name {
                    return Err(ApiError::stream_not_match());
                }
            }
            msg_id = headers::get(h, headers::MSG_ID).unwrap_or("");
            if !msg_id.is_empty() {
                self.dedupe.expire(now_ns, cfg.duplicate_window());
                if let Some(&seq) = self.dedupe.ids.get(msg_id) {
                    return Ok(Stored {
                        seq,
                        duplicate: true,
                    });
                }
            }
            if let Some(v) = headers::get(h, headers::EXPECTED_LAST_SUBJECT_SEQ) {
                let expected: u64 = v.parse().map_err(|_| ApiError::bad_request())?;
                let last = self.store.subject_state(subject).map_or(0, |s| s.last_seq);
                if last != expected {
                    return Err(ApiError::wrong_last_sequence(last));
                }
            }
            if let Some(v) = headers::get(h, headers::EXPECTED_LAST_SEQ) {
                let expected: u64 = v.parse().map_err(|_| ApiError::bad_request())?;
                let last = self.store.state().last_seq;
                if last != expected {
                    return Err(ApiError::wrong_last_sequence(last));
                }
            }
            if let Some(v) = headers::get(h, headers::EXPECTED_LAST_MSG_ID) {
                if !v.is_empty() && v != self.last_msg_id {
                    return Err(ApiError::wrong_last_msg_id(&self.last_msg_id));
                }
            }
            if let Some(v) = headers::get(h, headers::ROLLUP) {
                if !cfg.allow_rollup_hdrs || cfg.deny_purge {
                    return Err(ApiError::rollup_failed("rollup not permitted"));
                }
                rollup = match v {
                    "sub" => Some(false),
                    "all" => Some(true),
                    other => {
                        return Err(ApiError::rollup_failed(format!(
                            "rollup value invalid: {other:?}"
                        )))
                    }
                };
            }
        }
        let hdr_len = hdrs.map_or(0, <[u8]>::len);
        if cfg.max_msg_size >= 0 && (hdr_len + payload.len()) as i64 > cfg.max_msg_size {
            return Err(ApiError::message_too_big());
        }
        if hdr_len > usize::from(u16::MAX) {
            return Err(ApiError::header_too_big());
        }
        let size = match cfg.storage {
            Storage::File => midge_store::file_record_size(subject.len(), hdr_len, payload.len()),
            Storage::Memory => {
                midge_store::memory_record_size(subject.len(), hdr_len, payload.len())
            }
        };
        if cfg.retention == Retention::Interest && !interest(subject) {
            // Nobody wants it: the sequence is used, nothing is kept.
            let seq = self.append(subject, hdrs, payload, now_ns, limits)?;
            let _ = self.store.remove(seq, false);
            self.remember(msg_id, seq, now_ns);
            return Ok(Stored {
                seq,
                duplicate: false,
            });
        }
        if let Some(e) = limits.check_store(cfg.storage, size) {
            return Err(e);
        }
        if cfg.discard == Discard::New {
            let state = self.store.state();
            if cfg.max_msgs > 0 && state.msgs >= cfg.max_msgs.unsigned_abs() {
                return Err(ApiError::store_failed("maximum messages exceeded"));
            }
            if cfg.max_bytes > 0 && state.bytes + size > cfg.max_bytes.unsigned_abs() {
                return Err(ApiError::store_failed("maximum bytes exceeded"));
            }
            if cfg.discard_new_per_subject && cfg.max_msgs_per_subject > 0 {
                let n = self.store.subject_state(subject).map_or(0, |s| s.msgs);
                if n >= cfg.max_msgs_per_subject.unsigned_abs() {
                    return Err(ApiError::store_failed(
                        "maximum messages per subject exceeded",
                    ));
                }
            }
        }
        let seq = self.append(subject, hdrs, payload, now_ns, limits)?;
        self.remember(msg_id, seq, now_ns);
        if let Some(all) = rollup {
            let filter = if all { None } else { Some(subject) };
            if let Err(e) = self.purge_changing_usage(limits, filter, Some(seq), 0) {
                warn!(stream = %self.config.name, "roll-up purge failed: {e}");
            }
        }
        self.enforce_limits(limits, Some(subject));
        if let Some((t, headers_only)) = &self.republish {
            if let Some(dest) = t.apply(subject) {
                let mut h = headers::append(hdrs, headers::STREAM, &self.config.name);
                h = headers::append(Some(&h), headers::SUBJECT, subject);
                h = headers::append(Some(&h), headers::SEQUENCE, &seq.to_string());
                h = headers::append(Some(&h), headers::LAST_SEQUENCE, &(seq - 1).to_string());
                let payload = if *headers_only {
                    h = headers::append(Some(&h), headers::MSG_SIZE, &payload.len().to_string());
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(payload)
                };
                *republish = Some(Republish {
                    subject: dest,
                    headers: h,
                    payload,
                });
            }
        }
        Ok(Stored {
            seq,
            duplicate: false,
        })
    }

    /// After a restart: the message ids stored within the duplicate window, and the last
    /// message's id, found again in the stored headers (as nats-server rebuilds them). The
    /// window's first message is found by bisection on the store times, so only the window
    /// is read.
    pub fn rebuild_dedupe(&mut self, now_ns: i64) {
        let st = self.store.state();
        if st.msgs == 0 {
            return;
        }
        let window = i64::try_from(self.config.duplicate_window().as_nanos()).unwrap_or(i64::MAX);
        let cutoff = now_ns.saturating_sub(window);
        let (mut lo, mut hi) = (st.first_seq, st.last_seq + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.store.next_matching(mid, None) {
                Some(m) if m.time_ns < cutoff => lo = m.seq + 1,
                Some(_) => hi = mid,
                None => hi = mid,
            }
        }
        // Only messages with headers can carry an id; the store knows which they are
        // without reading the others.
        let mut at = lo;
        self.last_msg_id.clear();
        while let Some(m) = self.store.next_with_headers(at) {
            at = m.seq + 1;
            let id = m
                .headers
                .as_deref()
                .and_then(|h| headers::get(h, headers::MSG_ID))
                .unwrap_or("");
            if m.seq == st.last_seq {
                self.last_msg_id.push_str(id);
            }
            if !id.is_empty() {
                self.dedupe.insert(id.to_string(), m.seq, m.time_ns);
            }
        }
    }

    fn remember(&mut self, msg_id: &str, seq: u64, now_ns: i64) {
        self.last_msg_id.clear();
        self.last_msg_id.push_str(msg_id);
        if !msg_id.is_empty() && !self.config.duplicate_window().is_zero() {
            self.dedupe.insert(msg_id.to_string(), seq, now_ns);
        }
    }

    fn append(
        &mut self,
        subject: &str,
        hdrs: Option<&[u8]>,
        payload: &[u8],
        now_ns: i64,
        limits: &dyn Limits,
    ) -> Result<u64, ApiError> {
        let before = self.store.state().bytes;
        match self.store.append(subject, hdrs, payload, now_ns) {
            Ok(seq) => {
                limits.usage_changed(self.config.storage, before, self.store.state().bytes);
                Ok(seq)
            }
            Err(StoreError::Full(why)) => {
                warn!(stream = %self.config.name, "JetStream store full: {why}");
                Err(ApiError::insufficient_resources())
            }
            Err(e) => Err(ApiError::store_failed(e)),
        }
    }

    /// `store.purge` with the usage accounted.
    pub fn purge_changing_usage(
        &mut self,
        limits: &dyn Limits,
        filter: Option<&str>,
        up_to: Option<u64>,
        keep: u64,
    ) -> Result<u64, ApiError> {
        let before = self.store.state().bytes;
        let n = self
            .store
            .purge(filter, up_to, keep)
            .map_err(ApiError::purge_failed)?;
        limits.usage_changed(self.config.storage, before, self.store.state().bytes);
        Ok(n)
    }

    /// `store.remove` with the usage accounted.
    pub fn remove_changing_usage(
        &mut self,
        limits: &dyn Limits,
        seq: u64,
        erase: bool,
    ) -> Result<bool, StoreError> {
        let before = self.store.state().bytes;
        let removed = self.store.remove(seq, erase)?;
        limits.usage_changed(self.config.storage, before, self.store.state().bytes);
        Ok(removed)
    }

    /// Drops what the limits no longer allow, oldest first: per subject (`subject`, or all
    /// subjects after a config change), then messages, then bytes.
    pub fn enforce_limits(&mut self, limits: &dyn Limits, subject: Option<&str>) {
        let cfg = &self.config;
        let before = self.store.state().bytes;
        let per_subject = cfg.max_msgs_per_subject;
        if per_subject > 0 {
            let subjects: Vec<String> = match subject {
                Some(s) => vec![s.to_string()],
                None => self.store.subjects_state(">").into_keys().collect(),
            };
            for s in subjects {
                while let Some(st) = self.store.subject_state(&s) {
                    if st.msgs <= per_subject.unsigned_abs() {
                        break;
                    }
                    if !matches!(self.store.remove(st.first_seq, false), Ok(true)) {
                        break;
                    }
                }
            }
        }
        let (max_msgs, max_bytes) = (cfg.max_msgs, cfg.max_bytes);
        loop {
            let st = self.store.state();
            let over = (max_msgs > 0 && st.msgs > max_msgs.unsigned_abs())
                || (max_bytes > 0 && st.bytes > max_bytes.unsigned_abs());
            if !over || st.msgs == 0 {
                break;
            }
            match self.store.next_matching(st.first_seq, None) {
                Some(m) => {
                    if !matches!(self.store.remove(m.seq, false), Ok(true)) {
                        break;
                    }
                }
                None => break,
            }
        }
        limits.usage_changed(self.config.storage, before, self.store.state().bytes);
    }

    /// Removes messages older than `max_age`; returns when the next one expires.
    pub fn expire(&mut self, limits: &dyn Limits, now_ns: i64) -> Option<Duration> {
        let max_age = self.config.max_age()?;
        let age_ns = i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX);
        let before = self.store.state().bytes;
        let mut next = None;
        loop {
            let st = self.store.state();
            if st.msgs == 0 {
                break;
            }
            let Some(m) = self.store.next_matching(st.first_seq, None) else {
                break;
            };
            if now_ns.saturating_sub(m.time_ns) < age_ns {
                let left = age_ns - now_ns.saturating_sub(m.time_ns);
                next = Some(Duration::from_nanos(left.unsigned_abs()));
                break;
            }
            if !matches!(self.store.remove(m.seq, false), Ok(true)) {
                break;
            }
        }
        limits.usage_changed(self.config.storage, before, self.store.state().bytes);
        next
    }

    /// Sequences between the first and the last stored one that are gone
    /// (`deleted_details`).
    pub fn deleted(&self) -> Vec<u64> {
        let st = self.store.state();
        let mut out = Vec::new();
        if st.msgs == 0 {
            return out;
        }
        let mut expect = st.first_seq;
        while let Some(m) = self.store.next_matching(expect, None) {
            out.extend(expect..m.seq);
            expect = m.seq + 1;
            if m.seq >= st.last_seq {
                break;
            }
        }
        out
    }

    /// Purge as the API asks: `filter`, `seq` (below it), `keep` (the newest `keep`
    /// matching messages stay, counted over the whole filter as nats-server does).
    pub fn purge(
        &mut self,
        limits: &dyn Limits,
        filter: Option<&str>,
        seq: Option<u64>,
        keep: u64,
    ) -> Result<u64, ApiError> {
        let everything = filter.is_none_or(|f| f.is_empty() || f == ">");
        if keep == 0 {
            let n = self.purge_changing_usage(limits, filter, seq, 0)?;
            if everything && seq.is_none() {
                // A full purge keeps numbering: nothing to renumber.
                self.dedupe = Dedupe::default();
            }
            return Ok(n);
        }
        let st = self.store.state();
        let matching = self.store.num_pending(st.first_seq, filter);
        if matching <= keep {
            return Ok(0);
        }
        // The first kept message: skip `matching - keep` matching ones.
        let mut to_skip = matching - keep;
        let mut at = st.first_seq;
        let mut first_kept = None;
        while let Some(m) = self.store.next_matching(at, filter) {
            if to_skip == 0 {
                first_kept = Some(m.seq);
                break;
            }
            to_skip -= 1;
            at = m.seq + 1;
        }
        let Some(cut) = first_kept else {
            return Ok(0);
        };
        self.purge_changing_usage(limits, filter, Some(cut), 0)
    }
}

/// A stream of an account.
#[derive(Debug)]
pub(crate) struct Stream {
    pub name: String,
    pub account: Arc<Account>,
    /// When it was created (Unix nanoseconds).
    pub created_ns: i64,
    pub inner: Mutex<StreamInner>,
    pub ingest: Arc<StreamIngest>,
    /// The subscriptions on its subjects.
    pub subs: Mutex<Vec<Arc<Subscription>>>,
    /// The last stored sequence: consumers wait on it for new messages.
    pub last_seq: watch::Sender<u64>,
    /// The stream's consumers (filled by the consumer side).
    pub consumers: Mutex<std::collections::BTreeMap<String, Arc<super::consumer::Consumer>>>,
    /// `<store_dir>/jetstream/<account>/streams/<name>` for file streams.
    pub dir: Option<PathBuf>,
    /// Wakes the stream's task when `max_age` changed (the expiry timer).
    pub config_changed: Notify,
    /// Its mirror or sources (see `source.rs`).
    pub sources: Mutex<Vec<super::source::SourceSpec>>,
    /// A file stream: its batches are stored on the blocking pool.
    pub on_disk: bool,
    /// `sync_interval: always`: each batch is fsynced once before its PubAcks go out (a
    /// group commit: every acknowledged message is on disk, at one fsync per batch).
    pub sync_each_batch: bool,
}

impl Stream {
    pub fn config(&self) -> StreamConfig {
        self.inner.lock().config.clone()
    }

    /// The removal hook of interest and work-queue retention: the consumer side calls it
    /// once every consumer that had to acknowledge `seq` did; the message goes. Nothing
    /// happens on a limits stream (its messages stay until its limits remove them).
    #[allow(dead_code)] // Called by the consumer work (acks of interest/work-queue streams).
    pub fn acked(&self, limits: &dyn Limits, seq: u64) {
        let mut inner = self.inner.lock();
        if inner.config.retention == Retention::Limits {
            return;
        }
        let _ = inner.remove_changing_usage(limits, seq, false);
    }

    /// Whether some consumer wants `subject` (interest retention).
    pub fn has_interest(&self, subject: &str) -> bool {
        self.consumers.lock().values().any(|c| c.wants(subject))
    }

    /// Publishes the new last sequence to consumers waiting for messages.
    pub fn notify_stored(&self) {
        let last = self.inner.lock().store.state().last_seq;
        self.last_seq.send_if_modified(|v| {
            let changed = *v != last;
            *v = last;
            changed
        });
    }

    /// Stops taking messages (stream deleted or server shutting down).
    pub fn close(&self) {
        self.ingest.close();
    }

    pub fn is_closed(&self) -> bool {
        self.ingest.is_closed()
    }

    /// Runs the stream: stores what its ingest queue receives, answers with PubAcks,
    /// expires by age. Returns when the stream closes or the server shuts down.
    pub async fn run(
        self: Arc<Stream>,
        srv: Weak<ServerInner>,
        limits: Arc<dyn Limits + Send + Sync>,
    ) {
        let mut shutdown = match srv.upgrade() {
            Some(s) => s.shutdown_signal(),
            None => return,
        };
        let mut batch = Vec::with_capacity(BATCH);
        let mut acks: Vec<(Bytes, Vec<u8>)> = Vec::new();
        let mut republished: Vec<Republish> = Vec::new();
        let mut expiry = self.expire_now(&*limits);
        loop {
            let sleep = async {
                match expiry {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.ingest.wake.notified() => {}
                _ = self.config_changed.notified() => {}
                _ = sleep => {}
                _ = shutdown.changed() => break,
            }
            if self.is_closed() {
                break;
            }
            loop {
                batch.clear();
                self.ingest.take(BATCH, &mut batch);
                if batch.is_empty() {
                    break;
                }
                if self.on_disk && (self.sync_each_batch || batch_bytes(&batch) > INLINE_BYTES) {
                    // fsyncs, and large writes, off the async workers.
                    let me = self.clone();
                    let lim = limits.clone();
                    let work = std::mem::take(&mut batch);
                    let done = tokio::task::spawn_blocking(move || {
                        let mut acks = Vec::new();
                        let mut republished = Vec::new();
                        me.store_batch(&work, &*lim, &mut acks, &mut republished);
                        (work, acks, republished)
                    })
                    .await;
                    match done {
                        Ok((work, a, r)) => {
                            batch = work;
                            acks = a;
                            republished = r;
                        }
                        Err(e) => {
                            warn!(stream = %self.name, "JetStream store task failed: {e}");
                            return;
                        }
                    }
                } else {
                    self.store_batch(&batch, &*limits, &mut acks, &mut republished);
                }
                let Some(srv) = srv.upgrade() else { return };
                super::send_replies(&srv, &self.account, &mut acks, &mut republished);
                self.notify_stored();
            }
            expiry = self.expire_now(&*limits);
        }
        debug!(stream = %self.name, account = %self.account.name, "stream task ended");
    }

    fn expire_now(&self, limits: &dyn Limits) -> Option<Duration> {
        let mut inner = self.inner.lock();
        // Never sleep less than a millisecond: timers are not that precise anyway.
        inner
            .expire(limits, api::now_nanos())
            .map(|d| d.max(Duration::from_millis(1)))
    }

    fn store_batch(
        &self,
        batch: &[InternalMsg],
        limits: &dyn Limits,
        acks: &mut Vec<(Bytes, Vec<u8>)>,
        republished: &mut Vec<Republish>,
    ) {
        let domain = limits.domain();
        let mut inner = self.inner.lock();
        for m in batch {
            let Ok(subject) = std::str::from_utf8(&m.subject) else {
                continue;
            };
            let mut republish = None;
            let result = inner.process(
                subject,
                m.headers.as_deref(),
                &m.payload,
                api::now_nanos(),
                limits,
                &|s| self.has_interest(s),
                &mut republish,
            );
            if let Some(r) = republish {
                republished.push(r);
            }
            let (Some(reply), false) = (&m.reply, inner.config.no_ack) else {
                continue;
            };
            let ack = match result {
                Ok(stored) => api::PubAck {
                    error: None,
                    stream: self.name.clone(),
                    seq: stored.seq,
                    domain: domain.clone(),
                    duplicate: stored.duplicate,
                },
                Err(error) => api::PubAck {
                    error: Some(error),
                    stream: self.name.clone(),
                    seq: 0,
                    domain: None,
                    duplicate: false,
                },
            };
            acks.push((reply.clone(), serde_json::to_vec(&ack).unwrap_or_default()));
        }
        if self.sync_each_batch {
            if let Err(e) = inner.store.sync() {
                // Stored but not known durable: the publishers hear it and may retry
                // (a Nats-Msg-Id makes the retry a duplicate, not a second copy).
                warn!(stream = %self.name, "JetStream fsync failed: {e}");
                let error = ApiError::store_failed(format!("sync failed: {e}"));
                for (_, body) in acks.iter_mut() {
                    let ack = api::PubAck {
                        error: Some(error.clone()),
                        stream: self.name.clone(),
                        seq: 0,
                        domain: None,
                        duplicate: false,
                    };
                    *body = serde_json::to_vec(&ack).unwrap_or_default();
                }
            }
        }
    }
}

/// The message at `seq`, as the API shows it.
pub(crate) fn api_msg(m: &StoredMsg) -> api::ApiStoredMsg {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    api::ApiStoredMsg {
        subject: m.subject.clone(),
        seq: m.seq,
        hdrs: m
            .headers
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| b64.encode(h)),
        data: (!m.payload.is_empty()).then(|| b64.encode(&m.payload)),
        time: api::rfc3339_nanos(m.time_ns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use midge_store::MemStore;

    struct NoLimits;
    impl Limits for NoLimits {
        fn check_store(&self, _: Storage, _: u64) -> Option<ApiError> {
            None
        }
        fn usage_changed(&self, _: Storage, _: u64, _: u64) {}
    }

    fn stream(cfg: StreamConfig) -> StreamInner {
        let cfg = super::super::check_config(cfg, None).expect("valid config");
        StreamInner::new(cfg, Box::new(MemStore::new())).expect("stream")
    }

    fn config(f: impl FnOnce(&mut StreamConfig)) -> StreamConfig {
        let mut c = StreamConfig {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            storage: Storage::Memory,
            ..StreamConfig::default()
        };
        f(&mut c);
        c
    }

    fn put(s: &mut StreamInner, subject: &str, hdrs: Option<&str>) -> Result<Stored, ApiError> {
        let mut r = None;
        s.process(
            subject,
            hdrs.map(str::as_bytes),
            b"data",
            api::now_nanos(),
            &NoLimits,
            &|_| true,
            &mut r,
        )
    }

    fn hdr(pairs: &[(&str, &str)]) -> String {
        let mut h = String::from("NATS/1.0\r\n");
        for (k, v) in pairs {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        h
    }

    #[test]
    fn msg_id_deduplicates_within_the_window() {
        let mut s = stream(config(|_| {}));
        let h = hdr(&[(headers::MSG_ID, "a")]);
        assert_eq!(put(&mut s, "s.1", Some(&h)).expect("first").seq, 1);
        let again = put(&mut s, "s.1", Some(&h)).expect("dup");
        assert_eq!(
            again,
            Stored {
                seq: 1,
                duplicate: true
            }
        );
        assert_eq!(s.store.state().msgs, 1);
        // Outside the window, the id is new again.
        s.dedupe.expire(
            api::now_nanos() + 10 * 60 * 1_000_000_000,
            s.config.duplicate_window(),
        );
        assert_eq!(put(&mut s, "s.1", Some(&h)).expect("new").seq, 2);
    }

    #[test]
    fn dedupe_is_rebuilt_from_stored_headers() {
        let mut s = stream(config(|_| {}));
        let now = api::now_nanos();
        let mut r = None;
        let old = hdr(&[(headers::MSG_ID, "old")]);
        let new = hdr(&[(headers::MSG_ID, "new")]);
        s.process(
            "s.a",
            Some(old.as_bytes()),
            b"x",
            now - 600_000_000_000,
            &NoLimits,
            &|_| true,
            &mut r,
        )
        .expect("old");
        s.process(
            "s.a",
            Some(new.as_bytes()),
            b"x",
            now,
            &NoLimits,
            &|_| true,
            &mut r,
        )
        .expect("new");
        s.dedupe = Dedupe::default();
        s.last_msg_id.clear();
        s.rebuild_dedupe(now);
        assert_eq!(s.dedupe.ids.len(), 1, "only the window is read");
        assert_eq!(
            put(&mut s, "s.a", Some(&new)).expect("dup"),
            Stored {
                seq: 2,
                duplicate: true
            }
        );
        assert_eq!(s.last_msg_id, "new");
    }

    #[test]
    fn expected_headers() {
        let mut s = stream(config(|_| {}));
        put(&mut s, "s.a", None).expect("1");
        put(&mut s, "s.b", Some(&hdr(&[(headers::MSG_ID, "m2")]))).expect("2");
        let e = put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_STREAM, "T")])),
        )
        .expect_err("refused");
        assert_eq!(e.err_code, 10060);
        let e = put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_LAST_SEQ, "1")])),
        )
        .expect_err("refused");
        assert_eq!(
            (e.err_code, e.description.as_str()),
            (10071, "wrong last sequence: 2")
        );
        put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_LAST_SEQ, "2")])),
        )
        .expect("3");
        let e = put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_LAST_SUBJECT_SEQ, "1")])),
        )
        .expect_err("refused");
        assert_eq!(e.description, "wrong last sequence: 3");
        put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_LAST_SUBJECT_SEQ, "3")])),
        )
        .expect("4");
        put(
            &mut s,
            "s.new",
            Some(&hdr(&[(headers::EXPECTED_LAST_SUBJECT_SEQ, "0")])),
        )
        .expect("5");
        put(&mut s, "s.x", Some(&hdr(&[(headers::MSG_ID, "m6")]))).expect("6");
        let e = put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_LAST_MSG_ID, "m2")])),
        )
        .expect_err("refused");
        assert_eq!(
            (e.err_code, e.description.as_str()),
            (10070, "wrong last msg ID: m6")
        );
        put(
            &mut s,
            "s.a",
            Some(&hdr(&[(headers::EXPECTED_LAST_MSG_ID, "m6")])),
        )
        .expect("7");
    }

    #[test]
    fn limits_discard_old() {
        let mut s = stream(config(|c| {
            c.max_msgs = 3;
            c.max_msgs_per_subject = 2;
        }));
        for _ in 0..3 {
            put(&mut s, "s.a", None).expect("put");
        }
        let st = s.store.state();
        assert_eq!((st.msgs, st.first_seq), (2, 2));
        put(&mut s, "s.b", None).expect("put");
        put(&mut s, "s.c", None).expect("put");
        let st = s.store.state();
        assert_eq!((st.msgs, st.first_seq, st.last_seq), (3, 3, 5));
        let mut s = stream(config(|c| c.max_bytes = 3 * 30));
        for _ in 0..5 {
            put(&mut s, "s.a", None).expect("put");
        }
        assert!(s.store.state().bytes <= 90);
    }

    #[test]
    fn limits_discard_new() {
        let mut s = stream(config(|c| {
            c.max_msgs = 2;
            c.discard = Discard::New;
        }));
        put(&mut s, "s.a", None).expect("1");
        put(&mut s, "s.a", None).expect("2");
        let e = put(&mut s, "s.a", None).expect_err("refused");
        assert_eq!(
            (e.err_code, e.description.as_str()),
            (10077, "maximum messages exceeded")
        );
        let mut s = stream(config(|c| {
            c.max_msgs_per_subject = 1;
            c.discard = Discard::New;
            c.discard_new_per_subject = true;
        }));
        put(&mut s, "s.a", None).expect("1");
        put(&mut s, "s.b", None).expect("2");
        let e = put(&mut s, "s.a", None).expect_err("refused");
        assert_eq!(e.description, "maximum messages per subject exceeded");
    }

    #[test]
    fn rollups_sealed_and_sizes() {
        let mut s = stream(config(|_| {}));
        let e = put(&mut s, "s.a", Some(&hdr(&[(headers::ROLLUP, "sub")]))).expect_err("refused");
        assert_eq!(
            (e.err_code, e.description.as_str()),
            (10111, "rollup not permitted")
        );
        let mut s = stream(config(|c| c.allow_rollup_hdrs = true));
        put(&mut s, "s.a", None).expect("1");
        put(&mut s, "s.a", None).expect("2");
        put(&mut s, "s.b", None).expect("3");
        put(&mut s, "s.a", Some(&hdr(&[(headers::ROLLUP, "sub")]))).expect("4");
        assert_eq!(s.store.state().msgs, 2);
        put(&mut s, "s.c", Some(&hdr(&[(headers::ROLLUP, "all")]))).expect("5");
        let st = s.store.state();
        assert_eq!((st.msgs, st.first_seq), (1, 5));
        let mut s = stream(config(|c| c.max_msg_size = 3));
        assert_eq!(
            put(&mut s, "s.a", None).expect_err("refused").err_code,
            10054
        );
        let mut s = stream(config(|c| c.sealed = true));
        assert_eq!(
            put(&mut s, "s.a", None).expect_err("refused").err_code,
            10109
        );
    }

    #[test]
    fn purge_filters_sequences_and_keep() {
        let mut s = stream(config(|_| {}));
        for subj in ["s.a", "s.b", "s.a", "s.b", "s.a"] {
            put(&mut s, subj, None).expect("put");
        }
        assert_eq!(s.purge(&NoLimits, Some("s.a"), None, 1).expect("purge"), 2);
        assert_eq!(s.store.subject_state("s.a").map(|x| x.msgs), Some(1));
        assert_eq!(s.purge(&NoLimits, None, Some(4), 0).expect("purge"), 1);
        assert_eq!(s.store.state().first_seq, 4);
        assert_eq!(s.purge(&NoLimits, None, None, 1).expect("purge"), 1);
        assert_eq!(s.store.state().msgs, 1);
        assert_eq!(s.deleted(), Vec::<u64>::new());
        let mut s = stream(config(|_| {}));
        for _ in 0..5 {
            put(&mut s, "s.a", None).expect("put");
        }
        s.store.remove(2, false).expect("remove");
        s.store.remove(4, false).expect("remove");
        assert_eq!(s.deleted(), vec![2, 4]);
    }

    #[test]
    fn max_age_expires_the_oldest() {
        let mut s = stream(config(|c| c.max_age = 1_000_000_000));
        let now = api::now_nanos();
        let mut r = None;
        s.process(
            "s.a",
            None,
            b"x",
            now - 2_000_000_000,
            &NoLimits,
            &|_| true,
            &mut r,
        )
        .expect("old");
        s.process("s.a", None, b"x", now, &NoLimits, &|_| true, &mut r)
            .expect("new");
        let next = s.expire(&NoLimits, now).expect("one left");
        assert!(next <= Duration::from_secs(1));
        assert_eq!(s.store.state().msgs, 1);
    }

    #[test]
    fn subject_transform_and_republish() {
        let mut s = stream(config(|c| {
            c.subject_transform = Some(api::SubjectTransformConfig {
                src: "s.*".into(),
                dest: "s.moved.$1".into(),
            });
            c.republish = Some(api::RePublish {
                src: ">".into(),
                dest: "repub.>".into(),
                headers_only: false,
            });
        }));
        let mut r = None;
        let stored = s
            .process(
                "s.x",
                None,
                b"p",
                api::now_nanos(),
                &NoLimits,
                &|_| true,
                &mut r,
            )
            .expect("stored");
        assert_eq!(s.store.get(stored.seq).expect("get").subject, "s.moved.x");
        let r = r.expect("republished");
        assert_eq!(r.subject, "repub.s.moved.x");
        assert_eq!(headers::get(&r.headers, headers::SEQUENCE), Some("1"));
    }

    /// A store that is out of space.
    #[derive(Debug)]
    struct FullStore(MemStore);

    impl Store for FullStore {
        fn append(
            &mut self,
            _: &str,
            _: Option<&[u8]>,
            _: &[u8],
            _: i64,
        ) -> midge_store::Result<u64> {
            Err(StoreError::Full("no space left on device".into()))
        }
        fn get(&self, seq: u64) -> midge_store::Result<StoredMsg> {
            self.0.get(seq)
        }
        fn next_matching(&self, seq: u64, filter: Option<&str>) -> Option<StoredMsg> {
            self.0.next_matching(seq, filter)
        }
        fn last_matching(&self, filter: &str) -> Option<StoredMsg> {
            self.0.last_matching(filter)
        }
        fn remove(&mut self, seq: u64, erase: bool) -> midge_store::Result<bool> {
            self.0.remove(seq, erase)
        }
        fn purge(
            &mut self,
            f: Option<&str>,
            up_to: Option<u64>,
            keep: u64,
        ) -> midge_store::Result<u64> {
            self.0.purge(f, up_to, keep)
        }
        fn state(&self) -> midge_store::StreamState {
            self.0.state()
        }
        fn subjects_state(
            &self,
            f: &str,
        ) -> std::collections::BTreeMap<String, midge_store::SubjectState> {
            self.0.subjects_state(f)
        }
        fn subject_state(&self, s: &str) -> Option<midge_store::SubjectState> {
            self.0.subject_state(s)
        }
        fn num_pending(&self, seq: u64, f: Option<&str>) -> u64 {
            self.0.num_pending(seq, f)
        }
        fn reset_first_seq(&mut self, seq: u64) -> midge_store::Result<()> {
            self.0.reset_first_seq(seq)
        }
        fn sync(&mut self) -> midge_store::Result<()> {
            Ok(())
        }
        fn delete(&mut self) -> midge_store::Result<()> {
            self.0.delete()
        }
    }

    #[test]
    fn a_full_disk_is_insufficient_resources_to_the_publisher() {
        let cfg = super::super::check_config(config(|_| {}), None).expect("valid");
        let mut s = StreamInner::new(cfg, Box::new(FullStore(MemStore::new()))).expect("stream");
        let e = put(&mut s, "s.a", None).expect_err("full");
        assert_eq!(
            (e.code, e.err_code, e.description.as_str()),
            (503, 10023, "insufficient resources")
        );
        assert_eq!(s.store.state().msgs, 0);
    }

    #[test]
    fn first_seq_numbers_a_new_stream() {
        let mut s = stream(config(|c| c.first_seq = 100));
        assert_eq!(put(&mut s, "s.a", None).expect("stored").seq, 100);
    }

    #[test]
    fn interest_retention_without_interest_keeps_nothing() {
        let mut s = stream(config(|c| c.retention = Retention::Interest));
        let mut r = None;
        let stored = s
            .process(
                "s.a",
                None,
                b"x",
                api::now_nanos(),
                &NoLimits,
                &|_| false,
                &mut r,
            )
            .expect("acked");
        assert_eq!(stored.seq, 1);
        let st = s.store.state();
        assert_eq!((st.msgs, st.last_seq), (0, 1));
    }
}
