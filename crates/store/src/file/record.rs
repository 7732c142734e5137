//! The file store's on-disk formats, without I/O: message records and the meta file.
//!
//! A block file is a sequence of records, little-endian:
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 4 | record length, this header and the trailing CRC included |
//! | 4 | 1 | state: [`LIVE`] or [`DELETED`] |
//! | 5 | 1 | kind: [`MAGIC`], plus [`HAS_HEADERS`] when the message has a header block |
//! | 6 | 2 | subject length |
//! | 8 | 8 | sequence |
//! | 16 | 8 | time, nanoseconds since the Unix epoch |
//! | 24 | 4 | header block length |
//! | 28 | | subject, header block, payload |
//! | len - 4 | 4 | CRC32C of every byte before it except the state byte |
//!
//! The state byte is outside the CRC so that removing a message is one single-byte write in
//! place (which cannot tear), and the two states differ in every bit so that a flipped bit
//! is never read as the other state. An erase rewrites the record with zeroed header block
//! and payload and a new CRC xor [`ERASED`]: such a record reads as removed whatever its
//! state byte says, so no damage to that byte brings back zeroes as a message. (A removed
//! record that was not erased still holds the message as written; a state byte damaged
//! into exactly [`LIVE`] brings that message back.)

/// Bytes before the subject.
pub const HEADER: usize = 28;
/// Fixed bytes per record: header and CRC.
pub const OVERHEAD: usize = HEADER + 4;
/// The largest record written; larger messages are refused.
pub const MAX_RECORD: usize = 256 << 20;

pub const LIVE: u8 = 0xA5;
pub const DELETED: u8 = 0x5A;
/// Offset of the state byte in a record.
pub const STATE_AT: u64 = 4;
const MAGIC: u8 = 0xE0;
/// Xored into an erased record's CRC.
const ERASED: u32 = 0x4552_4153;
const HAS_HEADERS: u8 = 0x01;

/// A record that verified, borrowed from the buffer it was read into.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub len: usize,
    pub state: u8,
    pub seq: u64,
    pub time_ns: i64,
    pub subject: &'a str,
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

impl Record<'_> {
    /// Where the header block starts, from the start of the record.
    pub fn headers_at(&self) -> usize {
        HEADER + self.subject.len()
    }
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooLarge {
    Subject,
    Record,
}

/// Encodes a live record into `buf` (cleared first) and returns its length.
pub fn encode(
    buf: &mut Vec<u8>,
    seq: u64,
    time_ns: i64,
    subject: &str,
    headers: Option<&[u8]>,
    payload: &[u8],
) -> Result<usize, TooLarge> {
    let subject_len = u16::try_from(subject.len()).map_err(|_| TooLarge::Subject)?;
    let hdrs = headers.unwrap_or_default();
    let len = OVERHEAD + subject.len() + hdrs.len() + payload.len();
    if len > MAX_RECORD {
        return Err(TooLarge::Record);
    }
    // Both fit in u32: MAX_RECORD does.
    let len32 = len as u32;
    let hdrs_len = hdrs.len() as u32;
    buf.clear();
    buf.reserve(len);
    buf.extend_from_slice(&len32.to_le_bytes());
    buf.push(LIVE);
    buf.push(MAGIC | if headers.is_some() { HAS_HEADERS } else { 0 });
    buf.extend_from_slice(&subject_len.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&time_ns.to_le_bytes());
    buf.extend_from_slice(&hdrs_len.to_le_bytes());
    buf.extend_from_slice(subject.as_bytes());
    buf.extend_from_slice(hdrs);
    buf.extend_from_slice(payload);
    let crc = checksum(buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// The CRC of a record whose bytes before the CRC are `body`.
fn checksum(body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&body[..4]), &body[5..])
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// The record at the start of `buf`, if a whole one is there and verifies. Never panics.
pub fn parse(buf: &[u8]) -> Option<Record<'_>> {
    if buf.len() < OVERHEAD || buf[5] & !HAS_HEADERS != MAGIC {
        return None;
    }
    let len = u32_at(buf, 0) as usize;
    let subject_len = usize::from(u16_at(buf, 6));
    let hdrs_len = u32_at(buf, 24) as usize;
    if len > buf.len() || len > MAX_RECORD || OVERHEAD + subject_len + hdrs_len > len {
        return None;
    }
    let has_headers = buf[5] & HAS_HEADERS != 0;
    if !has_headers && hdrs_len != 0 {
        return None;
    }
    let crc = u32_at(buf, len - 4);
    let sum = checksum(&buf[..len - 4]);
    let state = if sum == crc {
        buf[4]
    } else if sum ^ ERASED == crc {
        DELETED
    } else {
        return None;
    };
    let subject = std::str::from_utf8(&buf[HEADER..HEADER + subject_len]).ok()?;
    let hdrs_at = HEADER + subject_len;
    Some(Record {
        len,
        state,
        seq: u64_at(buf, 8),
        time_ns: u64_at(buf, 16) as i64,
        subject,
        headers: has_headers.then(|| &buf[hdrs_at..hdrs_at + hdrs_len]),
        payload: &buf[hdrs_at + hdrs_len..len - 4],
    })
}

/// Cheap checks that a record may start at `buf[0]`, before paying for a CRC: used to
/// look for the next good record after damage.
pub fn plausible(buf: &[u8]) -> bool {
    buf.len() >= OVERHEAD
        && buf[5] & !HAS_HEADERS == MAGIC
        && (buf[4] == LIVE || buf[4] == DELETED)
        && (OVERHEAD..=buf.len().min(MAX_RECORD)).contains(&(u32_at(buf, 0) as usize))
}

/// Turns a verified record (`rec`, exactly one record) into an erased one: state
/// [`DELETED`], header block and payload zeroed, CRC recomputed.
pub fn erase(rec: &mut [u8], headers_at: usize) {
    let len = rec.len();
    rec[4] = DELETED;
    rec[headers_at..len - 4].fill(0);
    let crc = checksum(&rec[..len - 4]) ^ ERASED;
    rec[len - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// The meta file: what must outlive the block files (a purge of everything, a reset of the
/// first sequence).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meta {
    /// The last sequence ever assigned when this was written; records at or below it in
    /// block files at or above `block_floor` are not believed.
    pub last_seq: u64,
    pub last_time_ns: i64,
    /// Block files with a lower index are left-overs of a purge and are deleted.
    pub block_floor: u64,
}

const META_MAGIC: &[u8; 4] = b"MSM1";
pub const META_LEN: usize = 32;

impl Meta {
    pub fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[..4].copy_from_slice(META_MAGIC);
        b[4..12].copy_from_slice(&self.last_seq.to_le_bytes());
        b[12..20].copy_from_slice(&self.last_time_ns.to_le_bytes());
        b[20..28].copy_from_slice(&self.block_floor.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Meta> {
        if b.len() != META_LEN || &b[..4] != META_MAGIC || crc32c::crc32c(&b[..28]) != u32_at(b, 28)
        {
            return None;
        }
        Some(Meta {
            last_seq: u64_at(b, 4),
            last_time_ns: u64_at(b, 12) as i64,
            block_floor: u64_at(b, 20),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_bit_flip_detected() {
        let mut buf = Vec::new();
        let len = encode(&mut buf, 7, -3, "a.b", Some(b"NATS/1.0\r\n\r\n"), b"hi").expect("encode");
        assert_eq!(len, buf.len());
        let r = parse(&buf).expect("parse");
        assert_eq!(
            (r.len, r.state, r.seq, r.time_ns, r.subject),
            (len, LIVE, 7, -3, "a.b")
        );
        assert_eq!(r.headers, Some(&b"NATS/1.0\r\n\r\n"[..]));
        assert_eq!(r.payload, b"hi");
        for bit in 0..buf.len() * 8 {
            if bit / 8 == STATE_AT as usize {
                continue;
            }
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(parse(&b).is_none(), "flip of bit {bit} not detected");
        }
        assert!(parse(&buf[..len - 1]).is_none());
    }

    #[test]
    fn no_headers_and_empty_headers_differ() {
        let mut buf = Vec::new();
        encode(&mut buf, 1, 0, "s", None, b"").expect("encode");
        assert_eq!(parse(&buf).expect("parse").headers, None);
        encode(&mut buf, 1, 0, "s", Some(b""), b"").expect("encode");
        assert_eq!(parse(&buf).expect("parse").headers, Some(&b""[..]));
    }

    #[test]
    fn erase_zeroes_and_still_verifies() {
        let mut buf = Vec::new();
        encode(&mut buf, 9, 1, "s", Some(b"h"), b"secret").expect("encode");
        let at = parse(&buf).expect("parse").headers_at();
        erase(&mut buf, at);
        let r = parse(&buf).expect("parse erased");
        assert_eq!((r.state, r.seq), (DELETED, 9));
        assert_eq!(r.payload, &[0u8; 6]);
        assert!(!buf.windows(6).any(|w| w == b"secret"));
        // Whatever damage does to the state byte, zeroes never read as a live message.
        for state in 0..=255u8 {
            buf[STATE_AT as usize] = state;
            assert_eq!(
                parse(&buf).map(|r| r.state),
                Some(DELETED),
                "state byte {state:#x}"
            );
        }
    }

    #[test]
    fn meta_round_trip() {
        let m = Meta {
            last_seq: 5,
            last_time_ns: 6,
            block_floor: 7,
        };
        let mut b = m.encode();
        assert_eq!(Meta::decode(&b), Some(m));
        b[9] ^= 4;
        assert_eq!(Meta::decode(&b), None);
    }
}
