//! Message storage for midge's JetStream: what a stream keeps, independent of the broker.
//!
//! A [`Store`] holds one stream's messages by sequence number. It knows subjects (for
//! per-subject state, filtered reads and purges) but not stream policy: retention,
//! limits, discard and de-duplication are the stream's (in the broker), which calls the
//! primitives here. Two implementations: [`MemStore`] (memory) and the crash-safe
//! [`FileStore`] (block files in a directory per stream).
//!
//! Sequences start at 1 and only grow: a removed message leaves a gap ("deleted"), and a
//! purge of everything moves `first_seq` past `last_seq` without reusing numbers.

mod file;
mod mem;

use std::collections::BTreeMap;

use bytes::Bytes;

pub use file::{FileStore, FileStoreConfig, RecoveryReport, DEFAULT_BLOCK_SIZE};
pub use mem::MemStore;

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMsg {
    pub seq: u64,
    pub subject: String,
    /// The NATS header block (`NATS/1.0\r\n...\r\n\r\n`) as published, if any.
    pub headers: Option<Bytes>,
    pub payload: Bytes,
    /// When the stream stored it: nanoseconds since the Unix epoch.
    pub time_ns: i64,
}

impl StoredMsg {
    /// Bytes this message counts for in a memory store's `bytes` limits and state.
    pub fn stored_size(&self) -> u64 {
        memory_record_size(
            self.subject.len(),
            self.headers.as_ref().map_or(0, |h| h.len()),
            self.payload.len(),
        )
    }
}

/// The bytes a message counts for in a file store's state and limits, as nats-server's
/// file store counts its records: 30 bytes (length, sequence, time, subject length and an
/// 8-byte hash) plus subject and payload, and 4 bytes more plus the header block when the
/// message has headers. What midge's own records take on disk differs (see the file
/// store's format); clients see the same numbers on both servers.
pub fn file_record_size(subject: usize, headers: usize, payload: usize) -> u64 {
    if headers == 0 {
        (30 + subject + payload) as u64
    } else {
        (34 + subject + headers + payload) as u64
    }
}

/// The bytes a message counts for in a memory store, as nats-server counts them:
/// subject, headers and payload plus 16.
pub fn memory_record_size(subject: usize, headers: usize, payload: usize) -> u64 {
    (16 + subject + headers + payload) as u64
}

/// A stream's state, as `StreamInfo.state` reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub msgs: u64,
    pub bytes: u64,
    /// The first sequence still stored, or `last_seq + 1` when empty.
    pub first_seq: u64,
    pub first_time_ns: i64,
    pub last_seq: u64,
    pub last_time_ns: i64,
    /// Sequences between first and last that were removed.
    pub num_deleted: u64,
    /// Distinct subjects stored.
    pub num_subjects: u64,
}

/// Per-subject state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectState {
    pub msgs: u64,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// How a file store makes appends durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// fsync before `append` returns: an acknowledged message survives `kill -9` and power
    /// loss.
    Always,
    /// Writes reach the OS at once (they survive `kill -9` of the process); the broker calls
    /// [`Store::sync`] on this interval for power-loss durability.
    Interval(std::time::Duration),
}

/// Storage failures. Every variant leaves the store as it was before the failing call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message not found")]
    NotFound,
    #[error("store is closed")]
    Closed,
    /// Out of disk (ENOSPC, EDQUOT) or over a configured byte budget: the stream answers
    /// the publisher with "insufficient resources".
    #[error("insufficient storage: {0}")]
    Full(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Unreadable data found while reading a stored message (recovery drops such data;
    /// this is for damage found later).
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stream's messages. Methods take `&mut self` for changes; the broker serialises
/// access (a stream holds its store behind a lock).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Stores a message as sequence `last_seq + 1` and returns that sequence.
    /// On error nothing was stored (a torn write is rolled back).
    fn append(
        &mut self,
        subject: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
        time_ns: i64,
    ) -> Result<u64>;

    /// The message at `seq` (`NotFound` if never stored or removed).
    fn get(&self, seq: u64) -> Result<StoredMsg>;

    /// The first stored message with sequence `>= seq` whose subject matches `filter`
    /// (a subject with wildcards; `None` or `">"` matches all).
    fn next_matching(&self, seq: u64, filter: Option<&str>) -> Option<StoredMsg>;

    /// The first stored message with sequence `>= seq` that has a header block (where
    /// deduplication finds message ids after a restart). Stores that know which messages
    /// have headers without reading them override this.
    fn next_with_headers(&self, mut seq: u64) -> Option<StoredMsg> {
        loop {
            let m = self.next_matching(seq, None)?;
            if m.headers.is_some() {
                return Some(m);
            }
            seq = m.seq + 1;
        }
    }

    /// The last stored message whose subject matches `filter`.
    fn last_matching(&self, filter: &str) -> Option<StoredMsg>;

    /// Removes one message; false if it was not there. `erase` overwrites its bytes
    /// (secure delete) where the store keeps them.
    fn remove(&mut self, seq: u64, erase: bool) -> Result<bool>;

    /// Removes messages whose subject matches `filter` (all when `None`) and, if `up_to`
    /// is set, whose sequence is below `up_to`; of the matching ones, the newest `keep` stay
    /// (keep = 0: none). Returns how many were removed. Purging everything leaves
    /// `first_seq = last_seq + 1`.
    fn purge(&mut self, filter: Option<&str>, up_to: Option<u64>, keep: u64) -> Result<u64>;

    /// Overall state.
    fn state(&self) -> StreamState;

    /// Per-subject state of the subjects that match `filter`.
    fn subjects_state(&self, filter: &str) -> BTreeMap<String, SubjectState>;

    /// State of one literal subject (`None` if none stored).
    fn subject_state(&self, subject: &str) -> Option<SubjectState>;

    /// How many stored messages with sequence `>= seq` match `filter`.
    fn num_pending(&self, seq: u64, filter: Option<&str>) -> u64;

    /// Sets where an empty store starts numbering (`first_seq`): used for a stream created
    /// with `first_seq` and after a purge with `seq`. Fails if messages are stored.
    fn reset_first_seq(&mut self, seq: u64) -> Result<()>;

    /// Makes everything appended so far durable (fsync). No-op for memory.
    fn sync(&mut self) -> Result<()>;

    /// Removes every message and the store's files; the store is closed afterwards.
    fn delete(&mut self) -> Result<()>;
}

/// Whether `subject` matches `filter` (`None` and `">"` match everything).
pub fn filter_matches(filter: Option<&str>, subject: &str) -> bool {
    match filter {
        None | Some("") | Some(">") => true,
        Some(f) => midge_proto::subject::matches(f.as_bytes(), subject.as_bytes()),
    }
}
