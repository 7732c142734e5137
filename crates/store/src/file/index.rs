//! The file store's memory index: where each stored message lies on disk, and per-subject
//! state. No I/O here (a block owns its file handle, the store does the reading).

use std::fs::File;

use midge_proto::hash::{keyed_map, KeyedMap};

/// One message in a block: 16 bytes per stored message.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Sequence minus the block's base.
    pub delta: u32,
    /// Where its record starts in the block file.
    pub off: u32,
    /// Record length, plus [`HAS_HEADERS`] when the message has a non-empty header block; 0 once
    /// removed (the slot stays until the block is rewritten, so that positions stay sorted
    /// and searchable).
    pub len_raw: u32,
    /// Subject id in [`Subjects`].
    pub subj: u32,
}

/// Set in [`Slot::len_raw`] for a message with a non-empty header block (records are far shorter
/// than 2 GiB, so the length never reaches this bit).
pub const HAS_HEADERS: u32 = 1 << 31;

impl Slot {
    pub fn live(&self) -> bool {
        self.len_raw != 0
    }

    /// The record's length in the block file.
    pub fn len(&self) -> u32 {
        self.len_raw & !HAS_HEADERS
    }

    pub fn has_headers(&self) -> bool {
        self.len_raw & HAS_HEADERS != 0
    }
}

/// The length part of a slot's `len_raw`.
pub fn len_of(len_raw: u32) -> u32 {
    len_raw & !HAS_HEADERS
}

/// A block file and the messages in it, sorted by sequence.
#[derive(Debug)]
pub struct Block {
    /// The number in its file name (`<index>.blk`); grows with sequences.
    pub index: u64,
    /// The sequence of the first record written to it.
    pub base: u64,
    pub slots: Vec<Slot>,
    /// Live (not removed) messages.
    pub live: u64,
    /// Bytes in the file: where the next record goes.
    pub size: u64,
    /// Bytes of removed or unreadable records still in the file.
    pub dead: u64,
    /// Written since the last fsync.
    pub dirty: bool,
    /// Sequence and time of the last record in the file, live or removed.
    pub last: (u64, i64),
    /// A summary file describes this block (and must go before its bytes change).
    pub summarized: bool,
    pub file: File,
}

impl Block {
    pub fn new(index: u64, base: u64, file: File) -> Block {
        Block {
            index,
            base,
            slots: Vec::new(),
            live: 0,
            size: 0,
            dead: 0,
            dirty: false,
            last: (0, 0),
            summarized: false,
            file,
        }
    }

    pub fn seq(&self, slot: &Slot) -> u64 {
        self.base + u64::from(slot.delta)
    }

    /// The position of `seq`'s slot, live or not.
    pub fn find(&self, seq: u64) -> Option<usize> {
        let delta = u32::try_from(seq.checked_sub(self.base)?).ok()?;
        // Blocks that were never rewritten hold one slot per sequence from the base.
        let guess = delta as usize;
        if self.slots.get(guess).is_some_and(|s| s.delta == delta) {
            return Some(guess);
        }
        self.slots.binary_search_by_key(&delta, |s| s.delta).ok()
    }

    /// The position of the first slot with a sequence `>= seq`.
    pub fn lower_bound(&self, seq: u64) -> usize {
        match seq.checked_sub(self.base).map(u32::try_from) {
            None => 0,
            Some(Err(_)) => self.slots.len(),
            Some(Ok(d)) => self.slots.partition_point(|s| s.delta < d),
        }
    }

    /// The position of the first slot with a sequence `> seq`.
    pub fn upper_bound(&self, seq: u64) -> usize {
        match seq.checked_sub(self.base).map(u32::try_from) {
            None => 0,
            Some(Err(_)) => self.slots.len(),
            Some(Ok(d)) => self.slots.partition_point(|s| s.delta <= d),
        }
    }
}

/// Per-subject state of the stored messages.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: Box<str>,
    pub msgs: u64,
    pub first: u64,
    pub last: u64,
}

/// Subjects by id, so that a slot names its subject in 4 bytes. Ids of subjects that no
/// longer have messages are reused.
#[derive(Debug)]
pub struct Subjects {
    ids: KeyedMap<Box<str>, u32>,
    entries: Vec<Entry>,
    free: Vec<u32>,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects {
            ids: keyed_map(),
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl Subjects {
    /// Counts a message stored as `seq`, newer than every other message of its subject.
    pub fn add(&mut self, subject: &str, seq: u64) -> u32 {
        if let Some(&id) = self.ids.get(subject) {
            let e = &mut self.entries[id as usize];
            e.msgs += 1;
            e.last = seq;
            return id;
        }
        let entry = Entry {
            name: subject.into(),
            msgs: 1,
            first: seq,
            last: seq,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        };
        self.ids.insert(subject.into(), id);
        id
    }

    /// Counts `msgs` messages of `subject` from `first` to `last`, all newer than every
    /// other message of the subject (a block read from its summary).
    pub fn add_run(&mut self, subject: &str, msgs: u64, first: u64, last: u64) -> u32 {
        let id = self.add(subject, first);
        let e = &mut self.entries[id as usize];
        e.msgs += msgs - 1;
        e.last = last;
        id
    }

    pub fn id(&self, subject: &str) -> Option<u32> {
        self.ids.get(subject).copied()
    }

    pub fn get(&self, id: u32) -> &Entry {
        &self.entries[id as usize]
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Entry {
        &mut self.entries[id as usize]
    }

    /// Forgets a subject whose last message went.
    pub fn release(&mut self, id: u32) {
        let e = &mut self.entries[id as usize];
        self.ids.remove(&e.name);
        e.name = "".into();
        e.msgs = 0;
        self.free.push(id);
    }

    /// Subjects with messages.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// One past the highest id in use (for tables indexed by id).
    pub fn id_bound(&self) -> usize {
        self.entries.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.msgs > 0)
    }

    pub fn clear(&mut self) {
        self.ids.clear();
        self.entries.clear();
        self.free.clear();
    }
}
