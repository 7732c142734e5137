//! The crash-safe file store: one directory per stream.
//!
//! - `<index>.blk`: message blocks of about `block_size` bytes, records appended in
//!   sequence order (format in [`record`]). Only the last block (the active one) is
//!   appended to; a new one is started when a record would not fit.
//! - `meta`: written (temp file, fsync, rename, fsync directory) only by a purge of
//!   everything and by `reset_first_seq`, which delete every block: it keeps the last
//!   sequence and the lowest block index still valid, so neither is lost with the blocks
//!   and neither operation can half-happen.
//!
//! A removal writes the record's state byte in place (one byte: it cannot tear) and, for
//! `erase`, zeroes the header block and payload. A block that is mostly dead is rewritten
//! without its dead records; one with nothing live is deleted. The active block is never
//! rewritten or deleted this way, so its records, removed or not, always tell the last
//! sequence after a restart; before a dead block is deleted the active block is fsynced
//! so that a power loss cannot leave the store with a lower last sequence than it had.
//!
//! - `<index>.sum`: a block's summary (format in [`summary`]), written without fsync when the
//!   block is sealed (a new active block starts), after a compaction, and by recovery for
//!   a sealed block it had to read. It is deleted before any byte of its block changes (a
//!   removal mark, an erase, a compaction), so a summary that verifies describes its block.
//!
//! Recovery ([`FileStore::open`]) rebuilds the memory index (where each message is,
//! per-subject counts, first and last) from each block's summary where one verifies and
//! matches the block file's length, and otherwise by reading the block and verifying every
//! record's CRC. A damaged record is skipped up to the next record that verifies; damage
//! with nothing valid after it (a torn write at the tail) is cut off. A record is only
//! believed if its sequence is above every one before it. A block recovered from its
//! summary is not read, so damage to its bytes after the summary was written is found when
//! a message is read (every read verifies the record): such a message is counted until
//! then, and reads of it fail with [`StoreError::Corrupt`] or skip it.
//!
//! Durability: with [`SyncPolicy::Always`] an append returns after `fdatasync` (and, when it
//! started a block file, an fsync of the directory). With [`SyncPolicy::Interval`] each
//! append is one `pwrite` straight to the block file (no buffering in the process), so a
//! killed process loses nothing that was acknowledged; [`Store::sync`] makes it survive a
//! power loss. Dropping the store does not sync.

mod index;
mod record;
mod summary;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, warn};

use crate::{
    file_record_size, filter_matches, Result, Store, StoreError, StoredMsg, StreamState,
    SubjectState, SyncPolicy,
};
use index::{len_of, Block, Slot, Subjects, HAS_HEADERS};
use record::{Meta, DELETED, LIVE};

/// The default size of a block file.
pub const DEFAULT_BLOCK_SIZE: u64 = 8 << 20;
/// Block sizes are capped so that offsets in a block fit in 32 bits.
const MAX_BLOCK_SIZE: u64 = 1 << 30;
/// Sequences above this are refused: no stream gets there, and it keeps `seq + 1` safe.
const MAX_SEQ: u64 = u64::MAX >> 1;
const META: &str = "meta";
const BLOCK_EXT: &str = ".blk";
const SUMMARY_EXT: &str = ".sum";

/// How a [`FileStore`] lays out and syncs its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStoreConfig {
    /// A block file is closed and a new one started when a record would take it past this
    /// (a bigger record gets a block of its own). Capped at 1 GiB.
    pub block_size: u64,
    pub sync: SyncPolicy,
}

impl Default for FileStoreConfig {
    fn default() -> Self {
        FileStoreConfig {
            block_size: DEFAULT_BLOCK_SIZE,
            sync: SyncPolicy::Interval(Duration::from_secs(2)),
        }
    }
}

/// What [`FileStore::open`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Block files recovered.
    pub blocks: u64,
    /// Of those, blocks recovered from their summary, without reading the block.
    pub summaries: u64,
    /// Messages recovered.
    pub msgs: u64,
    /// Records found marked removed (kept until their block is rewritten).
    pub removed_records: u64,
    /// Bytes cut off the end of the last block: a torn write.
    pub truncated_bytes: u64,
    /// Damaged stretches skipped or cut off elsewhere, and records that verified but were
    /// out of sequence order.
    pub corrupt_records: u64,
    pub corrupt_bytes: u64,
    /// The meta file was there but did not verify (it was ignored).
    pub meta_damaged: bool,
    pub elapsed: Duration,
}

/// Bytes read ahead of a reader that reads a block front to back.
const READ_AHEAD: usize = 64 * 1024;

/// The last read of a block: where it ended and, after a sequential read, the chunk read
/// ahead. Dropped by everything that changes bytes already in a block file (removal marks,
/// erasure, compaction, deleted blocks, a cut failed write); what it serves is checked like
/// any read besides (CRC, sequence, state).
#[derive(Debug, Default)]
struct ReadAhead {
    /// Block index and offset where the previous read ended.
    last_end: Option<(u64, u64)>,
    /// Block index, file offset of `data`'s first byte, the bytes.
    chunk: Option<(u64, u64, Bytes)>,
}

/// A [`Store`] in block files under one directory (see the module documentation).
pub struct FileStore {
    dir: PathBuf,
    cfg: FileStoreConfig,
    /// Sorted by index, and so by sequence.
    blocks: Vec<Block>,
    next_index: u64,
    subjects: Subjects,
    msgs: u64,
    bytes: u64,
    first_seq: u64,
    first_time_ns: i64,
    last_seq: u64,
    last_time_ns: i64,
    /// A block file was created since the directory was last fsynced.
    dir_dirty: bool,
    /// Scratch for encoding a record.
    buf: Vec<u8>,
    closed: bool,
    /// What a sequential reader (a consumer) read ahead; see [`FileStore::read_record`].
    read_ahead: Mutex<ReadAhead>,
    /// Test hook: the next record write stops after this many bytes and fails with ENOSPC.
    #[cfg(test)]
    fail_write: Option<usize>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("dir", &self.dir)
            .field("cfg", &self.cfg)
            .field("blocks", &self.blocks.len())
            .field("msgs", &self.msgs)
            .field("first_seq", &self.first_seq)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

/// What recovery carries from one block to the next.
struct Scan {
    prev_seq: u64,
    last_time_ns: i64,
    first: Option<(u64, i64)>,
    buf: Vec<u8>,
}

/// Out of space (ENOSPC, EDQUOT) is `Full`, the rest stays an I/O error.
fn store_err(e: io::Error) -> StoreError {
    const EDQUOT: i32 = if cfg!(target_os = "linux") { 122 } else { 69 };
    if e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(EDQUOT) {
        StoreError::Full(e.to_string())
    } else {
        StoreError::Io(e)
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`HAS_HEADERS`] for a message with a non-empty header block (what nats-server counts
/// as having headers).
fn header_flag(headers: Option<&[u8]>) -> u32 {
    if headers.is_some_and(|h| !h.is_empty()) {
        HAS_HEADERS
    } else {
        0
    }
}

/// The size a record counts for in state and limits ([`file_record_size`]), from its
/// index entry's length and flags.
fn counted(len_raw: u32) -> u64 {
    let body = (len_of(len_raw) as usize).saturating_sub(record::OVERHEAD);
    if len_raw & HAS_HEADERS != 0 {
        // Subject, headers and payload together: the header block's size is not apart.
        file_record_size(0, 1, body) - 1
    } else {
        file_record_size(0, 0, body)
    }
}

/// The next offset at or after `from` where a record verifies.
fn resync(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(record::OVERHEAD - 1))
        .find(|&p| record::plausible(&data[p..]) && record::parse(&data[p..]).is_some())
}

/// Which subjects a filter selects, decided once per subject id.
struct Matcher<'a> {
    filter: Option<&'a str>,
    /// The subject id of a literal filter; `None` when it names no stored subject.
    literal: Option<Option<u32>>,
    /// Per subject id: 0 not decided, 1 matches, 2 does not.
    memo: Vec<u8>,
}

impl<'a> Matcher<'a> {
    fn new(filter: Option<&'a str>, subjects: &Subjects) -> Matcher<'a> {
        let filter = filter.filter(|f| !f.is_empty() && *f != ">");
        let literal = filter
            .filter(|f| midge_proto::subject::is_literal(f.as_bytes()))
            .map(|f| subjects.id(f));
        Matcher {
            filter,
            literal,
            memo: Vec::new(),
        }
    }

    fn all(&self) -> bool {
        self.filter.is_none()
    }

    /// A literal filter naming no stored subject matches nothing.
    fn nothing(&self) -> bool {
        self.literal == Some(None)
    }

    fn matches(&mut self, subjects: &Subjects, id: u32) -> bool {
        if self.filter.is_none() {
            return true;
        }
        if let Some(lit) = self.literal {
            return lit == Some(id);
        }
        let i = id as usize;
        if self.memo.len() <= i {
            self.memo.resize(subjects.id_bound().max(i + 1), 0);
        }
        if self.memo[i] == 0 {
            let m = filter_matches(self.filter, &subjects.get(id).name);
            self.memo[i] = if m { 1 } else { 2 };
        }
        self.memo[i] == 1
    }
}

impl FileStore {
    /// Opens (creating it if missing) the store in `dir` and recovers its messages.
    pub fn open(dir: &Path, cfg: FileStoreConfig) -> Result<(FileStore, RecoveryReport)> {
        let started = Instant::now();
        let cfg = FileStoreConfig {
            block_size: cfg.block_size.clamp(1, MAX_BLOCK_SIZE),
            ..cfg
        };
        fs::create_dir_all(dir)?;
        let mut report = RecoveryReport::default();
        let meta = match fs::read(dir.join(META)) {
            Ok(b) => Meta::decode(&b)
                .filter(|m| m.last_seq <= MAX_SEQ)
                .or_else(|| {
                    warn!(dir = %dir.display(), "file store: meta file does not verify, ignored");
                    report.meta_damaged = true;
                    None
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        }
        .unwrap_or_default();

        let mut indices = Vec::new();
        let mut summaries = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let index_of = |ext: &str| name.strip_suffix(ext).and_then(|n| n.parse::<u64>().ok());
            if name.ends_with(".tmp") {
                // An interrupted compaction or meta write: the original is intact.
                remove_quietly(&entry.path());
            } else if let Some(i) = index_of(BLOCK_EXT) {
                indices.push(i);
            } else if let Some(i) = index_of(SUMMARY_EXT) {
                summaries.push(i);
            }
        }
        indices.sort_unstable();
        for i in summaries {
            if indices.binary_search(&i).is_err() || i < meta.block_floor {
                // Its block went (a deletion interrupted between the two files).
                remove_quietly(&dir.join(format!("{i}{SUMMARY_EXT}")));
            }
        }

        let mut store = FileStore {
            dir: dir.to_path_buf(),
            cfg,
            blocks: Vec::new(),
            next_index: indices.last().map_or(0, |i| i + 1).max(meta.block_floor),
            subjects: Subjects::default(),
            msgs: 0,
            bytes: 0,
            first_seq: 1,
            first_time_ns: 0,
            last_seq: 0,
            last_time_ns: 0,
            dir_dirty: false,
            buf: Vec::new(),
            closed: false,
            read_ahead: Mutex::new(ReadAhead::default()),
            #[cfg(test)]
            fail_write: None,
        };
        let mut scan = Scan {
            prev_seq: meta.last_seq,
            last_time_ns: meta.last_time_ns,
            first: None,
            buf: Vec::new(),
        };
        for (n, &index) in indices.iter().enumerate() {
            if index < meta.block_floor {
                // Left over from a purge or reset that the meta file records.
                remove_quietly(&store.block_path(index));
                continue;
            }
            report.blocks += 1;
            let block = store.load_block(index, n + 1 == indices.len(), &mut scan, &mut report)?;
            store.blocks.push(block);
        }
        store.drop_dead_blocks()?;
        // Sealed blocks that had to be read get a summary, so the next start does not.
        for pos in 0..store.blocks.len().saturating_sub(1) {
            if !store.blocks[pos].summarized {
                store.write_summary(pos);
            }
        }
        store.last_seq = scan.prev_seq;
        store.last_time_ns = scan.last_time_ns;
        // A block left without a single record (all of it damaged) can only be the last
        // one (see `drop_dead_blocks`): it goes on where the sequence is, so that blocks
        // stay ordered by base for `locate`.
        let next = store.last_seq.saturating_add(1);
        for b in store.blocks.iter_mut().filter(|b| b.slots.is_empty()) {
            b.base = next;
        }
        (store.first_seq, store.first_time_ns) = scan.first.unwrap_or((store.last_seq + 1, 0));
        report.msgs = store.msgs;
        report.elapsed = started.elapsed();
        if report.truncated_bytes > 0 || report.corrupt_records > 0 || report.meta_damaged {
            warn!(dir = %dir.display(), ?report, "file store recovered with damage");
        } else {
            debug!(dir = %dir.display(), ?report, "file store recovered");
        }
        Ok((store, report))
    }

    fn block_path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index}{BLOCK_EXT}"))
    }

    fn summary_path(&self, index: u64) -> PathBuf {
        self.dir.join(format!("{index}{SUMMARY_EXT}"))
    }

    /// Deletes a block's files (the summary after the block: a summary left alone by a
    /// crash in between is deleted by the next open).
    fn remove_block_files(&self, index: u64) -> io::Result<()> {
        self.drop_read_ahead();
        fs::remove_file(self.block_path(index))?;
        remove_quietly(&self.summary_path(index));
        Ok(())
    }

    /// Recovers one block into the index: from its summary if one holds, else by reading it.
    fn load_block(
        &mut self,
        index: u64,
        is_last: bool,
        scan: &mut Scan,
        report: &mut RecoveryReport,
    ) -> Result<Block> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.block_path(index))?;
        let file_len = file.metadata()?.len();
        match fs::read(self.summary_path(index)) {
            Ok(data) => match self.load_summary(index, &data, file, file_len, scan) {
                Ok(block) => {
                    report.summaries += 1;
                    Ok(block)
                }
                Err(file) => {
                    debug!(
                        block = index,
                        "file store: block summary not used, reading the block"
                    );
                    remove_quietly(&self.summary_path(index));
                    self.scan_block(index, file, file_len, is_last, scan, report)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.scan_block(index, file, file_len, is_last, scan, report)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A block recovered from its summary `data`, or the file back if the summary does not
    /// verify, describes a file of another length, or does not continue the sequence.
    /// Nothing in the store changes unless it succeeds.
    fn load_summary(
        &mut self,
        index: u64,
        data: &[u8],
        file: File,
        file_len: u64,
        scan: &mut Scan,
    ) -> std::result::Result<Block, File> {
        let Some(sum) = summary::Summary::decode(data, len_of) else {
            return Err(file);
        };
        let h = sum.head;
        if h.file_len != file_len
            || file_len > u64::from(u32::MAX)
            || h.base <= scan.prev_seq
            || h.last_seq > MAX_SEQ
            || h.last_seq - h.base > u64::from(u32::MAX)
        {
            return Err(file);
        }
        // Per table subject: messages, first and last sequence. A name twice in the table
        // would count one subject out of order: not a summary this store wrote.
        let mut runs = vec![(0u64, 0u64, 0u64); sum.subjects.len()];
        for e in sum.entries() {
            let seq = h.base + u64::from(e.delta);
            let r = &mut runs[e.subject as usize];
            if r.0 == 0 {
                r.1 = seq;
            }
            r.0 += 1;
            r.2 = seq;
        }
        let mut seen = std::collections::HashSet::with_capacity(sum.subjects.len());
        if !sum.subjects.iter().all(|s| seen.insert(*s)) {
            return Err(file);
        }
        let ids: Vec<u32> = sum
            .subjects
            .iter()
            .zip(&runs)
            .map(|(name, &(n, first, last))| {
                if n == 0 {
                    u32::MAX
                } else {
                    self.subjects.add_run(name, n, first, last)
                }
            })
            .collect();
        let mut block = Block::new(index, h.base, file);
        block.slots.reserve_exact(sum.len());
        for e in sum.entries() {
            block.slots.push(Slot {
                delta: e.delta,
                off: e.off,
                len_raw: e.len_raw,
                subj: ids[e.subject as usize],
            });
            self.bytes += counted(e.len_raw);
        }
        let live = block.slots.len() as u64;
        block.live = live;
        self.msgs += live;
        block.size = file_len;
        block.dead = h.dead;
        block.last = (h.last_seq, h.last_time_ns);
        block.summarized = true;
        if let Some(first) = block.slots.first() {
            scan.first
                .get_or_insert((h.base + u64::from(first.delta), h.first_time_ns));
        }
        scan.prev_seq = h.last_seq;
        scan.last_time_ns = h.last_time_ns;
        Ok(block)
    }

    /// Writes the summary of the sealed block at `pos`. Failures are logged: without a
    /// summary the block is read at the next start.
    fn write_summary(&mut self, pos: usize) {
        let b = &self.blocks[pos];
        if b.size == 0 {
            return;
        }
        let mut local: HashMap<u32, u32> = HashMap::new();
        let mut names: Vec<&str> = Vec::new();
        let mut entries = Vec::with_capacity(b.live as usize);
        let mut first_time_ns = 0;
        for s in b.slots.iter().filter(|s| s.live()) {
            if entries.is_empty() {
                first_time_ns = self.read_time(b, *s);
            }
            let subject = *local.entry(s.subj).or_insert_with(|| {
                names.push(&self.subjects.get(s.subj).name);
                (names.len() - 1) as u32
            });
            entries.push(summary::Entry {
                delta: s.delta,
                off: s.off,
                len_raw: s.len_raw,
                subject,
            });
        }
        let head = summary::Head {
            file_len: b.size,
            base: b.base,
            dead: b.dead,
            last_seq: b.last.0,
            last_time_ns: b.last.1,
            first_time_ns,
        };
        let bytes = summary::encode(&head, &names, &entries);
        let path = self.summary_path(b.index);
        let index = b.index;
        match fs::write(&path, bytes) {
            Ok(()) => {
                self.blocks[pos].summarized = true;
                self.dir_dirty = true;
            }
            Err(e) => {
                warn!(block = index, error = %e, "file store: cannot write a block summary");
                remove_quietly(&path);
            }
        }
    }

    /// Deletes the summary of the block at `bi` before its bytes change.
    fn unsummarize(&mut self, bi: usize) -> Result<()> {
        let b = &mut self.blocks[bi];
        if !b.summarized {
            return Ok(());
        }
        match fs::remove_file(self.dir.join(format!("{}{SUMMARY_EXT}", b.index))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_err(e)),
        }
        b.summarized = false;
        self.dir_dirty = true;
        Ok(())
    }

    /// Reads one block file into the index, cutting off what cannot be read at its end.
    fn scan_block(
        &mut self,
        index: u64,
        file: File,
        file_len: u64,
        is_last: bool,
        scan: &mut Scan,
        report: &mut RecoveryReport,
    ) -> Result<Block> {
        // Offsets in the index are 32 bits; a longer file was not written by this store.
        let readable = file_len.min(u64::from(u32::MAX));
        scan.buf.clear();
        scan.buf.reserve(readable as usize);
        (&file).take(readable).read_to_end(&mut scan.buf)?;
        let mut block = Block::new(index, 0, file);
        let data = &scan.buf[..];
        let mut have_base = false;
        let mut off = 0;
        while off < data.len() {
            let Some(rec) = record::parse(&data[off..]) else {
                let Some(next) = resync(data, off + 1) else {
                    break;
                };
                warn!(
                    block = index,
                    offset = off,
                    bytes = next - off,
                    "file store: skipping damaged records"
                );
                report.corrupt_records += 1;
                report.corrupt_bytes += (next - off) as u64;
                block.dead += (next - off) as u64;
                off = next;
                continue;
            };
            let len = rec.len as u64;
            let in_order = rec.seq > scan.prev_seq
                && rec.seq <= MAX_SEQ
                && (!have_base || rec.seq - block.base <= u64::from(u32::MAX));
            if !in_order || (rec.state != LIVE && rec.state != DELETED) {
                warn!(
                    block = index,
                    offset = off,
                    seq = rec.seq,
                    "file store: dropping a record out of order or in an unknown state"
                );
                report.corrupt_records += 1;
                report.corrupt_bytes += len;
                block.dead += len;
                off += rec.len;
                continue;
            }
            if !have_base {
                block.base = rec.seq;
                have_base = true;
            }
            scan.prev_seq = rec.seq;
            scan.last_time_ns = rec.time_ns;
            if rec.state == LIVE {
                let subj = self.subjects.add(rec.subject, rec.seq);
                let flags = header_flag(rec.headers);
                block.slots.push(Slot {
                    delta: (rec.seq - block.base) as u32,
                    off: off as u32,
                    len_raw: rec.len as u32 | flags,
                    subj,
                });
                block.live += 1;
                self.msgs += 1;
                self.bytes += counted(rec.len as u32 | flags);
                scan.first.get_or_insert((rec.seq, rec.time_ns));
            } else {
                report.removed_records += 1;
                block.dead += len;
            }
            off += rec.len;
        }
        let off = off as u64;
        if off < file_len {
            let cut = file_len - off;
            if is_last {
                report.truncated_bytes += cut;
            } else {
                report.corrupt_records += 1;
                report.corrupt_bytes += cut;
            }
            warn!(
                block = index,
                offset = off,
                bytes = cut,
                "file store: cutting off a damaged block end"
            );
            block.file.set_len(off)?;
        }
        block.size = off;
        if have_base {
            block.last = (scan.prev_seq, scan.last_time_ns);
        }
        Ok(block)
    }

    /// After recovery: deletes block files with nothing live, except the last one with
    /// records (it holds the last sequence).
    fn drop_dead_blocks(&mut self) -> Result<()> {
        let keep = self.blocks.iter().rposition(|b| b.size > 0);
        let doomed = |pos: usize, b: &Block| b.live == 0 && Some(pos) != keep;
        if !self.blocks.iter().enumerate().any(|(p, b)| doomed(p, b)) {
            return Ok(());
        }
        if let Some(k) = keep {
            self.blocks[k].file.sync_data()?;
        }
        let mut pos = 0;
        let mut gone = Vec::new();
        self.blocks.retain(|b| {
            let d = doomed(pos, b);
            pos += 1;
            if d {
                gone.push(b.index);
            }
            !d
        });
        for index in gone {
            remove_quietly(&self.block_path(index));
            remove_quietly(&self.summary_path(index));
        }
        Ok(())
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn always(&self) -> bool {
        self.cfg.sync == SyncPolicy::Always
    }

    /// Block and slot positions of a live message.
    fn locate(&self, seq: u64) -> Option<(usize, usize)> {
        if seq < self.first_seq || seq > self.last_seq {
            return None;
        }
        let bi = self
            .blocks
            .partition_point(|b| b.base <= seq)
            .checked_sub(1)?;
        let si = self.blocks[bi].find(seq)?;
        self.blocks[bi].slots[si].live().then_some((bi, si))
    }

    /// Live messages with a sequence `>= seq`, oldest first.
    fn live_from(&self, seq: u64) -> impl Iterator<Item = (&Block, Slot)> + '_ {
        let start = self
            .blocks
            .partition_point(|b| b.base <= seq)
            .saturating_sub(1);
        self.blocks[start..].iter().flat_map(move |b| {
            b.slots[b.lower_bound(seq)..]
                .iter()
                .filter(|s| s.live())
                .map(move |s| (b, *s))
        })
    }

    /// Live messages with a sequence `<= seq`, newest first.
    fn live_to_rev(&self, seq: u64) -> impl Iterator<Item = (&Block, Slot)> + '_ {
        let end = self.blocks.partition_point(|b| b.base <= seq);
        self.blocks[..end].iter().rev().flat_map(move |b| {
            b.slots[..b.upper_bound(seq)]
                .iter()
                .rev()
                .filter(|s| s.live())
                .map(move |s| (b, *s))
        })
    }

    /// Reads and verifies one message.
    /// The record bytes of slot `s`. A read that starts where the previous one ended, or
    /// a little after (messages removed in between), reads [`READ_AHEAD`] bytes at once and
    /// serves the next records from them: a consumer going through a stream costs one
    /// `pread` per chunk instead of one per message. Other reads (direct gets of random
    /// keys) read just the record.
    fn read_record(&self, b: &Block, s: Slot) -> Result<Bytes> {
        let len = s.len() as usize;
        let off = u64::from(s.off);
        let end = off + len as u64;
        let mut ra = self.read_ahead.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((index, at, data)) = &ra.chunk {
            if *index == b.index && off >= *at && end <= at + data.len() as u64 {
                let from = (off - at) as usize;
                let bytes = data.slice(from..from + len);
                ra.last_end = Some((b.index, end));
                return Ok(bytes);
            }
        }
        let sequential = matches!(ra.last_end,
            Some((index, e)) if index == b.index && off >= e && off - e < READ_AHEAD as u64);
        ra.last_end = Some((b.index, end));
        if !sequential || len >= READ_AHEAD {
            let mut buf = vec![0u8; len];
            b.file.read_exact_at(&mut buf, off)?;
            return Ok(Bytes::from(buf));
        }
        let mut buf = vec![0u8; READ_AHEAD];
        let mut got = 0;
        while got < buf.len() {
            match b.file.read_at(&mut buf[got..], off + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if got < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "record past the end of its block",
            )
            .into());
        }
        buf.truncate(got);
        let data = Bytes::from(buf);
        let bytes = data.slice(..len);
        ra.chunk = Some((b.index, off, data));
        Ok(bytes)
    }

    /// Forgets what was read ahead: bytes in a block file are about to change.
    fn drop_read_ahead(&self) {
        *self.read_ahead.lock().unwrap_or_else(|p| p.into_inner()) = ReadAhead::default();
    }

    fn read_msg(&self, b: &Block, s: Slot) -> Result<StoredMsg> {
        let seq = b.seq(&s);
        let buf = self.read_record(b, s)?;
        let rec = record::parse(&buf)
            .filter(|r| r.len == buf.len() && r.state == LIVE && r.seq == seq)
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "message {seq} in block {} at offset {} does not verify",
                    b.index, s.off
                ))
            })?;
        let subject = rec.subject.to_owned();
        let time_ns = rec.time_ns;
        let hdrs_at = rec.headers_at();
        let headers = rec.headers.map(|h| hdrs_at..hdrs_at + h.len());
        let payload_at = hdrs_at + headers.as_ref().map_or(0, |h| h.len());
        let payload = payload_at..payload_at + rec.payload.len();
        Ok(StoredMsg {
            seq,
            subject,
            headers: headers.map(|h| buf.slice(h)),
            payload: buf.slice(payload),
            time_ns,
        })
    }

    /// The first of `candidates` that reads back; damaged ones are logged and skipped.
    fn first_readable<'a>(
        &'a self,
        candidates: impl Iterator<Item = (&'a Block, Slot)>,
    ) -> Option<StoredMsg> {
        for (b, s) in candidates {
            match self.read_msg(b, s) {
                Ok(m) => return Some(m),
                Err(e) => {
                    warn!(seq = b.seq(&s), error = %e, "file store: skipping unreadable message")
                }
            }
        }
        None
    }

    /// The time of a message from its record header (for `first_time_ns`).
    fn read_time(&self, b: &Block, s: Slot) -> i64 {
        let mut h = [0u8; 8];
        match b.file.read_exact_at(&mut h, u64::from(s.off) + 16) {
            Ok(()) => i64::from_le_bytes(h),
            Err(e) => {
                warn!(seq = b.seq(&s), error = %e, "file store: cannot read a message time");
                0
            }
        }
    }

    /// Starts a new active block whose first record will be `seq`.
    fn new_block(&mut self, seq: u64) -> Result<()> {
        let index = self.next_index;
        let path = self.block_path(index);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(store_err)?;
        if self.always() {
            if let Err(e) = sync_dir(&self.dir) {
                remove_quietly(&path);
                return Err(store_err(e));
            }
        } else {
            self.dir_dirty = true;
        }
        self.next_index += 1;
        self.blocks.push(Block::new(index, seq, file));
        Ok(())
    }

    /// Takes a removed message out of the index (its disk record is already marked).
    fn forget(&mut self, bi: usize, si: usize) {
        let b = &mut self.blocks[bi];
        let s = b.slots[si];
        let seq = b.seq(&s);
        b.slots[si].len_raw = 0;
        b.live -= 1;
        b.dead += u64::from(s.len());
        self.msgs -= 1;
        self.bytes -= counted(s.len_raw);
        let e = self.subjects.get_mut(s.subj);
        e.msgs -= 1;
        let (first, last, left) = (e.first, e.last, e.msgs);
        if left == 0 {
            self.subjects.release(s.subj);
        } else if left == 1 {
            // The one left is the other end (a KV key with history 1 never scans).
            let e = self.subjects.get_mut(s.subj);
            if seq == first {
                e.first = last;
            } else {
                e.last = first;
            }
        } else if seq == first {
            let next = self
                .live_from(seq + 1)
                .map(|(b, t)| (b.seq(&t), t.subj))
                .take_while(|&(q, _)| q <= last)
                .find(|&(_, j)| j == s.subj)
                .map_or(last, |(q, _)| q);
            self.subjects.get_mut(s.subj).first = next;
        } else if seq == last {
            let prev = self
                .live_to_rev(seq - 1)
                .map(|(b, t)| (b.seq(&t), t.subj))
                .take_while(|&(q, _)| q >= first)
                .find(|&(_, j)| j == s.subj)
                .map_or(first, |(q, _)| q);
            self.subjects.get_mut(s.subj).last = prev;
        }
    }

    /// Moves `first_seq` past removed messages.
    fn refresh_first(&mut self) {
        if self.msgs == 0 {
            self.first_seq = self.last_seq + 1;
            self.first_time_ns = 0;
            return;
        }
        if self.locate(self.first_seq).is_some() {
            return;
        }
        let next = self
            .live_from(self.first_seq)
            .next()
            .map(|(b, s)| (b.seq(&s), self.read_time(b, s)));
        if let Some((seq, time)) = next {
            self.first_seq = seq;
            self.first_time_ns = time;
        }
    }

    /// Marks a message removed in its block file.
    fn mark_removed(&self, b: &Block, s: Slot, erase: bool) -> io::Result<()> {
        self.drop_read_ahead();
        let at = u64::from(s.off);
        if !erase {
            return b.file.write_all_at(&[DELETED], at + record::STATE_AT);
        }
        let mut rec = vec![0u8; s.len() as usize];
        b.file.read_exact_at(&mut rec, at)?;
        match record::parse(&rec).map(|r| r.headers_at()) {
            Some(hdrs_at) => record::erase(&mut rec, hdrs_at),
            // Unreadable already: overwrite all but the length, which no longer verifies.
            None => rec.fill(0),
        }
        b.file.write_all_at(&rec[4..], at + 4)
    }

    /// Deletes or rewrites the blocks (by index) that removals left mostly dead. Failures
    /// are logged: the removals themselves are done.
    fn settle(&mut self, indices: &[u64]) {
        let mut active_synced = false;
        for &index in indices {
            let Some(pos) = self.blocks.iter().position(|b| b.index == index) else {
                continue;
            };
            if pos + 1 == self.blocks.len() {
                continue;
            }
            let b = &self.blocks[pos];
            if b.live == 0 {
                if !active_synced {
                    if let Some(Err(e)) = self.blocks.last().map(|a| a.file.sync_data()) {
                        warn!(error = %e, "file store: cannot sync the active block, keeping dead blocks");
                        return;
                    }
                    active_synced = true;
                }
                let b = self.blocks.remove(pos);
                if let Err(e) = self.remove_block_files(b.index) {
                    warn!(block = b.index, error = %e, "file store: cannot delete a dead block");
                }
            } else if b.dead >= self.cfg.block_size / 2 && b.dead * 2 > b.size {
                if let Err(e) = self.compact(pos) {
                    warn!(block = index, error = %e, "file store: compaction failed, block left as it was");
                }
            }
        }
    }

    /// Rewrites a block without its dead records: temp file, fsync, rename, fsync dir.
    fn compact(&mut self, pos: usize) -> Result<()> {
        self.drop_read_ahead();
        let b = &self.blocks[pos];
        let mut data = vec![0u8; b.size as usize];
        b.file.read_exact_at(&mut data, 0)?;
        let mut out = Vec::with_capacity(data.len() - b.dead.min(data.len() as u64) as usize);
        let mut slots = Vec::with_capacity(b.live as usize);
        for s in b.slots.iter().filter(|s| s.live()) {
            let rec = data
                .get(s.off as usize..(s.off as usize + s.len() as usize))
                .ok_or_else(|| StoreError::Corrupt(format!("block {} is short", b.index)))?;
            slots.push(Slot {
                off: out.len() as u32,
                ..*s
            });
            out.extend_from_slice(rec);
        }
        let (index, from) = (b.index, b.size);
        let path = self.block_path(index);
        let tmp = self.dir.join(format!("{index}.blk.tmp"));
        self.unsummarize(pos)?;
        let written = (|| {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all_at(&out, 0)?;
            f.sync_data()?;
            fs::rename(&tmp, &path)?;
            Ok::<_, io::Error>(f)
        })();
        let file = match written {
            Ok(f) => f,
            Err(e) => {
                remove_quietly(&tmp);
                return Err(store_err(e));
            }
        };
        if let Err(e) = sync_dir(&self.dir) {
            warn!(error = %e, "file store: cannot sync the directory after a compaction");
        }
        debug!(
            block = index,
            from,
            to = out.len(),
            "file store: block compacted"
        );
        let b = &mut self.blocks[pos];
        b.file = file;
        b.size = out.len() as u64;
        b.dead = 0;
        b.slots = slots;
        b.dirty = false;
        self.write_summary(pos);
        Ok(())
    }

    /// Writes the meta file atomically: temp file, fsync, rename, fsync dir.
    fn write_meta(&self, meta: Meta) -> Result<()> {
        let tmp = self.dir.join("meta.tmp");
        let res = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all_at(&meta.encode(), 0)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(META))?;
            sync_dir(&self.dir)
        })();
        res.map_err(|e| {
            remove_quietly(&tmp);
            store_err(e)
        })
    }

    /// Drops every block, the meta file recording `last_seq` (so no sequence is reused).
    fn clear(&mut self, last_seq: u64) -> Result<()> {
        self.drop_read_ahead();
        self.write_meta(Meta {
            last_seq,
            last_time_ns: self.last_time_ns,
            block_floor: self.next_index,
        })?;
        for b in std::mem::take(&mut self.blocks) {
            remove_quietly(&self.block_path(b.index));
            remove_quietly(&self.summary_path(b.index));
        }
        self.subjects.clear();
        self.msgs = 0;
        self.bytes = 0;
        self.last_seq = last_seq;
        self.first_seq = last_seq + 1;
        self.first_time_ns = 0;
        Ok(())
    }

    /// Removes the given live messages (sorted); a block losing everything that is not the
    /// active one is deleted without marking each record.
    fn remove_many(&mut self, seqs: &[u64]) -> Result<()> {
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for &seq in seqs {
            let Some((bi, si)) = self.locate(seq) else {
                continue;
            };
            match groups.last_mut() {
                Some((b, sis)) if *b == bi => sis.push(si),
                _ => groups.push((bi, vec![si])),
            }
        }
        let last = self.blocks.len().saturating_sub(1);
        let mut touched = Vec::with_capacity(groups.len());
        let mut failed = None;
        for (bi, sis) in groups {
            touched.push(self.blocks[bi].index);
            let whole = bi != last && sis.len() as u64 == self.blocks[bi].live;
            if !whole {
                if let Err(e) = self.unsummarize(bi) {
                    failed = Some(e);
                    break;
                }
                let b = &self.blocks[bi];
                let written = sis
                    .iter()
                    .try_for_each(|&si| self.mark_removed(b, b.slots[si], false))
                    .and_then(|()| {
                        if self.always() {
                            b.file.sync_data()
                        } else {
                            Ok(())
                        }
                    });
                if let Err(e) = written {
                    failed = Some(store_err(e));
                    break;
                }
                self.blocks[bi].dirty |= !self.always();
            }
            for si in sis {
                self.forget(bi, si);
            }
        }
        self.refresh_first();
        self.settle(&touched);
        failed.map_or(Ok(()), Err)
    }

    #[cfg(test)]
    fn fail_next_write(&mut self, after: usize) {
        self.fail_write = Some(after);
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(path = %path.display(), error = %e, "file store: cannot delete a file");
        }
    }
}

/// Writes a whole record at `off`; `fail_after` simulates a full disk in tests.
fn write_record(file: &File, rec: &[u8], off: u64, fail_after: Option<usize>) -> io::Result<()> {
    match fail_after {
        Some(n) => {
            file.write_all_at(&rec[..n.min(rec.len())], off)?;
            Err(io::Error::from(io::ErrorKind::StorageFull))
        }
        None => file.write_all_at(rec, off),
    }
}

impl Store for FileStore {
    fn append(
        &mut self,
        subject: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
        time_ns: i64,
    ) -> Result<u64> {
        self.check_open()?;
        let seq = self.last_seq + 1;
        if seq > MAX_SEQ {
            return Err(StoreError::Full("sequence numbers exhausted".into()));
        }
        let len = record::encode(&mut self.buf, seq, time_ns, subject, headers, payload).map_err(
            |e| {
                StoreError::Io(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("message too large to store ({e:?})"),
                ))
            },
        )?;
        let roll = self.blocks.last().is_none_or(|b| {
            b.size > 0
                && (b.size + len as u64 > self.cfg.block_size || seq - b.base > u64::from(u32::MAX))
        });
        if roll {
            self.new_block(seq)?;
            if self.blocks.len() > 1 {
                self.write_summary(self.blocks.len() - 2);
            }
        }
        let always = self.always();
        #[cfg(test)]
        let fail_after = self.fail_write.take();
        #[cfg(not(test))]
        let fail_after = None;
        let Some(b) = self.blocks.last_mut() else {
            return Err(StoreError::Closed);
        };
        let off = b.size;
        let written = write_record(&b.file, &self.buf, off, fail_after).and_then(|()| {
            if always {
                b.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            // Never leave a part of a record behind; should this fail too, the next append
            // overwrites it, and recovery cuts it off.
            *self.read_ahead.lock().unwrap_or_else(|p| p.into_inner()) = ReadAhead::default();
            if let Err(t) = b.file.set_len(off) {
                warn!(block = b.index, error = %t, "file store: cannot cut a failed write off");
            }
            return Err(store_err(e));
        }
        b.size += len as u64;
        b.dirty |= !always;
        b.last = (seq, time_ns);
        let subj = self.subjects.add(subject, seq);
        let flags = header_flag(headers);
        b.slots.push(Slot {
            delta: (seq - b.base) as u32,
            off: off as u32,
            len_raw: len as u32 | flags,
            subj,
        });
        b.live += 1;
        self.msgs += 1;
        self.bytes += counted(len as u32 | flags);
        if self.msgs == 1 {
            self.first_seq = seq;
            self.first_time_ns = time_ns;
        }
        self.last_seq = seq;
        self.last_time_ns = time_ns;
        Ok(seq)
    }

    fn get(&self, seq: u64) -> Result<StoredMsg> {
        self.check_open()?;
        let (bi, si) = self.locate(seq).ok_or(StoreError::NotFound)?;
        let b = &self.blocks[bi];
        self.read_msg(b, b.slots[si])
    }

    fn next_matching(&self, seq: u64, filter: Option<&str>) -> Option<StoredMsg> {
        let mut m = Matcher::new(filter, &self.subjects);
        if m.nothing() {
            return None;
        }
        if let Some(Some(id)) = m.literal {
            let e = self.subjects.get(id);
            let last = e.last;
            let from = seq.max(e.first);
            return self.first_readable(
                self.live_from(from)
                    .take_while(|(b, s)| b.seq(s) <= last)
                    .filter(|(_, s)| s.subj == id),
            );
        }
        let subjects = &self.subjects;
        self.first_readable(
            self.live_from(seq)
                .filter(|(_, s)| m.matches(subjects, s.subj)),
        )
    }

    fn next_with_headers(&self, seq: u64) -> Option<StoredMsg> {
        self.first_readable(self.live_from(seq).filter(|(_, s)| s.has_headers()))
    }

    fn last_matching(&self, filter: &str) -> Option<StoredMsg> {
        let mut m = Matcher::new(Some(filter), &self.subjects);
        if m.nothing() {
            return None;
        }
        let subjects = &self.subjects;
        let to = match m.literal {
            Some(Some(id)) => subjects.get(id).last,
            _ => self.last_seq,
        };
        self.first_readable(
            self.live_to_rev(to)
                .filter(|(_, s)| m.matches(subjects, s.subj)),
        )
    }

    fn remove(&mut self, seq: u64, erase: bool) -> Result<bool> {
        self.check_open()?;
        let Some((bi, si)) = self.locate(seq) else {
            return Ok(false);
        };
        self.unsummarize(bi)?;
        let b = &self.blocks[bi];
        self.mark_removed(b, b.slots[si], erase)
            .map_err(store_err)?;
        // A failed fsync leaves the removal done but perhaps not durable: it is reported.
        let synced = if self.always() {
            b.file.sync_data().map_err(store_err)
        } else {
            self.blocks[bi].dirty = true;
            Ok(())
        };
        let index = self.blocks[bi].index;
        self.forget(bi, si);
        self.refresh_first();
        self.settle(&[index]);
        synced.map(|()| true)
    }

    fn purge(&mut self, filter: Option<&str>, up_to: Option<u64>, keep: u64) -> Result<u64> {
        self.check_open()?;
        let everything = filter.is_none_or(|f| f.is_empty() || f == ">");
        if everything && up_to.is_none() && keep == 0 {
            let n = self.msgs;
            self.clear(self.last_seq)?;
            return Ok(n);
        }
        // Of each matching subject, the oldest messages below `up_to`, up to all but the
        // newest `keep` of the subject (the memory store's rule).
        let limit = up_to.unwrap_or(u64::MAX);
        let mut m = Matcher::new(filter, &self.subjects);
        if m.nothing() {
            return Ok(0);
        }
        let mut eligible: HashMap<u32, Vec<u64>> = HashMap::new();
        for (b, s) in self.live_from(0) {
            let seq = b.seq(&s);
            if seq >= limit {
                break;
            }
            if m.matches(&self.subjects, s.subj) {
                eligible.entry(s.subj).or_default().push(seq);
            }
        }
        let mut doomed = Vec::new();
        for (id, seqs) in eligible {
            let n = if keep > 0 {
                let total = self.subjects.get(id).msgs;
                total.saturating_sub(keep).min(seqs.len() as u64) as usize
            } else {
                seqs.len()
            };
            doomed.extend_from_slice(&seqs[..n]);
        }
        let n = doomed.len() as u64;
        if n == self.msgs && n > 0 {
            self.clear(self.last_seq)?;
        } else if n > 0 {
            doomed.sort_unstable();
            self.remove_many(&doomed)?;
        }
        Ok(n)
    }

    fn state(&self) -> StreamState {
        let span = if self.msgs == 0 {
            0
        } else {
            self.last_seq - self.first_seq + 1
        };
        StreamState {
            msgs: self.msgs,
            bytes: self.bytes,
            first_seq: self.first_seq,
            first_time_ns: self.first_time_ns,
            last_seq: self.last_seq,
            last_time_ns: self.last_time_ns,
            num_deleted: span - self.msgs,
            num_subjects: self.subjects.len() as u64,
        }
    }

    fn subjects_state(&self, filter: &str) -> std::collections::BTreeMap<String, SubjectState> {
        self.subjects
            .iter()
            .filter(|e| filter_matches(Some(filter), &e.name))
            .map(|e| {
                (
                    e.name.to_string(),
                    SubjectState {
                        msgs: e.msgs,
                        first_seq: e.first,
                        last_seq: e.last,
                    },
                )
            })
            .collect()
    }

    fn subject_state(&self, subject: &str) -> Option<SubjectState> {
        let e = self.subjects.get(self.subjects.id(subject)?);
        Some(SubjectState {
            msgs: e.msgs,
            first_seq: e.first,
            last_seq: e.last,
        })
    }

    fn num_pending(&self, seq: u64, filter: Option<&str>) -> u64 {
        let mut m = Matcher::new(filter, &self.subjects);
        if m.nothing() || seq > self.last_seq {
            return 0;
        }
        if m.all() {
            if seq <= self.first_seq {
                return self.msgs;
            }
            let start = self
                .blocks
                .partition_point(|b| b.base <= seq)
                .saturating_sub(1);
            let Some(b) = self.blocks.get(start) else {
                return 0;
            };
            let head = b.slots[b.lower_bound(seq)..]
                .iter()
                .filter(|s| s.live())
                .count() as u64;
            return head + self.blocks[start + 1..].iter().map(|b| b.live).sum::<u64>();
        }
        if let Some(Some(id)) = m.literal {
            let e = self.subjects.get(id);
            if seq <= e.first {
                return e.msgs;
            }
            let last = e.last;
            return self
                .live_from(seq)
                .take_while(|(b, s)| b.seq(s) <= last)
                .filter(|(_, s)| s.subj == id)
                .count() as u64;
        }
        let subjects = &self.subjects;
        if seq <= self.first_seq {
            return subjects
                .iter()
                .filter(|e| filter_matches(filter, &e.name))
                .map(|e| e.msgs)
                .sum();
        }
        self.live_from(seq)
            .filter(|(_, s)| m.matches(subjects, s.subj))
            .count() as u64
    }

    fn reset_first_seq(&mut self, seq: u64) -> Result<()> {
        self.check_open()?;
        if self.msgs > 0 {
            return Err(StoreError::Corrupt(
                "cannot renumber a store that holds messages".into(),
            ));
        }
        let first = seq.max(1);
        if first > MAX_SEQ {
            return Err(StoreError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "first sequence out of range",
            )));
        }
        self.clear(first - 1)
    }

    fn sync(&mut self) -> Result<()> {
        self.check_open()?;
        for b in self.blocks.iter_mut().filter(|b| b.dirty) {
            b.file.sync_data()?;
            b.dirty = false;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    fn delete(&mut self) -> Result<()> {
        self.drop_read_ahead();
        self.closed = true;
        self.blocks.clear();
        self.subjects.clear();
        self.msgs = 0;
        self.bytes = 0;
        match fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
