//! Block summaries (`<index>.sum`), without I/O: what recovery would learn by reading a
//! sealed block, written once when the block is sealed, so that a restart reads a few
//! bytes per message instead of every message.
//!
//! Layout, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | magic `MSB1` |
//! | 4 | 8 | length of the block file it describes |
//! | 12 | 8 | base: the sequence of the block's first record |
//! | 20 | 8 | bytes of removed or unreadable records in the block |
//! | 28 | 8 | sequence of the block's last record (live or removed) |
//! | 36 | 8 | time of that record |
//! | 44 | 8 | time of the first live record (0 without one) |
//! | 52 | 4 | subjects in the table below |
//! | 56 | 4 | live records (slots) |
//! | 60 | | subject table: per subject a u16 length and the bytes |
//! | | 16 each | slots: delta from base, offset, length with flags, subject table index |
//! | len - 4 | 4 | CRC32C of every byte before it |
//!
//! A summary is believed only if it verifies, describes a file of exactly the block's
//! length and holds together (sorted, in bounds); anything else and the block is read as
//! if there were no summary. Every change to a sealed block's bytes deletes its summary
//! first (see the file store), so a summary that is believed describes the block's
//! records. What a summary cannot vouch for is bit rot inside the block after it was
//! written: that is found when the message is read (every read verifies the record's CRC).

use super::record::OVERHEAD;

const MAGIC: &[u8; 4] = b"MSB1";
const FIXED: usize = 60;
const SLOT: usize = 16;

/// The fixed fields of a summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Head {
    pub file_len: u64,
    pub base: u64,
    pub dead: u64,
    pub last_seq: u64,
    pub last_time_ns: i64,
    pub first_time_ns: i64,
}

/// One live record as a summary lists it: `subject` indexes the summary's subject table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub delta: u32,
    pub off: u32,
    /// Record length and flags, as the memory index keeps them.
    pub len_raw: u32,
    pub subject: u32,
}

/// Encodes a summary. `subjects` is the table that entries index.
pub fn encode(head: &Head, subjects: &[&str], entries: &[Entry]) -> Vec<u8> {
    let names: usize = subjects.iter().map(|s| 2 + s.len()).sum();
    let mut b = Vec::with_capacity(FIXED + names + entries.len() * SLOT + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&head.file_len.to_le_bytes());
    b.extend_from_slice(&head.base.to_le_bytes());
    b.extend_from_slice(&head.dead.to_le_bytes());
    b.extend_from_slice(&head.last_seq.to_le_bytes());
    b.extend_from_slice(&head.last_time_ns.to_le_bytes());
    b.extend_from_slice(&head.first_time_ns.to_le_bytes());
    b.extend_from_slice(&(subjects.len() as u32).to_le_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for s in subjects {
        // Subjects of stored records fit in u16 (the record format's limit).
        b.extend_from_slice(&(s.len() as u16).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    for e in entries {
        b.extend_from_slice(&e.delta.to_le_bytes());
        b.extend_from_slice(&e.off.to_le_bytes());
        b.extend_from_slice(&e.len_raw.to_le_bytes());
        b.extend_from_slice(&e.subject.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// A summary that verified and holds together, borrowed from the bytes it was read from.
#[derive(Debug)]
pub struct Summary<'a> {
    pub head: Head,
    pub subjects: Vec<&'a str>,
    slots: &'a [u8],
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl<'a> Summary<'a> {
    /// Decodes and checks a summary: `None` unless the CRC verifies, every entry lies
    /// inside a file of `head.file_len` bytes, entries are in sequence and offset order
    /// without overlapping, and every sequence is within `base..=last_seq`. `len_of`
    /// takes the length out of an entry's `len_raw`. Never panics.
    pub fn decode(b: &'a [u8], len_of: impl Fn(u32) -> u32) -> Option<Summary<'a>> {
        if b.len() < FIXED + 4 || &b[..4] != MAGIC {
            return None;
        }
        let body = b.len() - 4;
        if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
            return None;
        }
        let head = Head {
            file_len: u64_at(b, 4),
            base: u64_at(b, 12),
            dead: u64_at(b, 20),
            last_seq: u64_at(b, 28),
            last_time_ns: u64_at(b, 36) as i64,
            first_time_ns: u64_at(b, 44) as i64,
        };
        let nsubj = u32_at(b, 52) as usize;
        let nslots = u32_at(b, 56) as usize;
        if head.last_seq < head.base || head.dead > head.file_len {
            return None;
        }
        let mut at = FIXED;
        let mut subjects = Vec::with_capacity(nsubj.min(body / 2));
        for _ in 0..nsubj {
            let n = usize::from(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]));
            let name = b.get(at + 2..at + 2 + n)?;
            subjects.push(std::str::from_utf8(name).ok()?);
            at += 2 + n;
        }
        if body.checked_sub(at)? != nslots.checked_mul(SLOT)? {
            return None;
        }
        let s = Summary {
            head,
            subjects,
            slots: &b[at..body],
        };
        let mut prev: Option<(u32, u64)> = None;
        for e in s.entries() {
            let len = u64::from(len_of(e.len_raw));
            let end = u64::from(e.off) + len;
            let in_order =
                prev.is_none_or(|(d, prev_end)| e.delta > d && u64::from(e.off) >= prev_end);
            if !in_order
                || len < OVERHEAD as u64
                || end > head.file_len
                || e.subject as usize >= s.subjects.len()
                || head.base.checked_add(u64::from(e.delta))? > head.last_seq
            {
                return None;
            }
            prev = Some((e.delta, end));
        }
        Some(s)
    }

    pub fn len(&self) -> usize {
        self.slots.len() / SLOT
    }

    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.slots.chunks_exact(SLOT).map(|c| Entry {
            delta: u32_at(c, 0),
            off: u32_at(c, 4),
            len_raw: u32_at(c, 8),
            subject: u32_at(c, 12),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Head, Vec<&'static str>, Vec<Entry>) {
        let head = Head {
            file_len: 200,
            base: 10,
            dead: 40,
            last_seq: 14,
            last_time_ns: 7,
            first_time_ns: -2,
        };
        let entries = vec![
            Entry {
                delta: 0,
                off: 0,
                len_raw: 40,
                subject: 1,
            },
            Entry {
                delta: 3,
                off: 80,
                len_raw: 60,
                subject: 0,
            },
        ];
        (head, vec!["a.b", "c"], entries)
    }

    #[test]
    fn round_trip_and_every_bit_flip_refused() {
        let (head, subjects, entries) = sample();
        let b = encode(&head, &subjects, &entries);
        let s = Summary::decode(&b, |l| l).expect("decode");
        assert_eq!(s.head, head);
        assert_eq!(s.subjects, subjects);
        assert_eq!(s.len(), 2);
        assert_eq!(s.entries().collect::<Vec<_>>(), entries);
        for bit in 0..b.len() * 8 {
            let mut d = b.clone();
            d[bit / 8] ^= 1 << (bit % 8);
            assert!(
                Summary::decode(&d, |l| l).is_none(),
                "flip of bit {bit} accepted"
            );
        }
        for n in 0..b.len() {
            assert!(
                Summary::decode(&b[..n], |l| l).is_none(),
                "cut at {n} accepted"
            );
        }
    }

    #[test]
    fn entries_that_do_not_hold_together_are_refused() {
        let (head, subjects, entries) = sample();
        let bad = |f: &dyn Fn(&mut Head, &mut Vec<Entry>)| {
            let (mut h, mut e) = (head, entries.clone());
            f(&mut h, &mut e);
            Summary::decode(&encode(&h, &subjects, &e), |l| l).is_none()
        };
        assert!(bad(&|h, _| h.file_len = 139), "entry past the file end");
        assert!(bad(&|_, e| e[1].delta = 0), "sequence not increasing");
        assert!(bad(&|_, e| e[1].off = 39), "records overlap");
        assert!(bad(&|_, e| e[0].subject = 2), "subject out of the table");
        assert!(bad(&|h, _| h.last_seq = 12), "sequence past the last");
        assert!(bad(&|_, e| e[0].len_raw = 3), "shorter than a record");
        assert!(bad(&|h, _| h.last_seq = 9), "last below base");
    }
}
