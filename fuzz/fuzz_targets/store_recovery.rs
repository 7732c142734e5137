//! Opens file-store directories made from the input: `FileStore::open` must never panic,
//! and whatever the store then returns must hold together.
//!
//! The first byte picks how the input becomes a directory:
//! - even: raw. The rest is cut into one to three block files (and, with bit 1 set, a meta
//!   file from its first 32 bytes; with bit 4 set, the first part is a block summary). Every message the store returns must read back the same
//!   by `get`, and the counts in `state` and `subjects_state` must match what it returns.
//! - odd: damage. A known store is written, then each 4 bytes of the rest damage it (file,
//!   offset, xor mask; a zero mask truncates the file there). Every message the store
//!   returns must be byte-identical to the one written with that sequence.
//!
//! In both cases an append must work afterwards.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use midge_store::{FileStore, FileStoreConfig, Store, StoredMsg, SyncPolicy};

fn cfg() -> FileStoreConfig {
    FileStoreConfig {
        block_size: 256,
        sync: SyncPolicy::Interval(Duration::from_secs(60)),
    }
}

/// The message the damage mode writes as `seq`.
fn known(seq: u64) -> (String, Option<Vec<u8>>, Vec<u8>) {
    let headers = (seq % 3 == 0).then(|| b"NATS/1.0\r\nK: v\r\n\r\n".to_vec());
    (
        format!("k.{}", seq % 4),
        headers,
        vec![seq as u8; (seq % 11) as usize * 5],
    )
}

fn all(s: &FileStore) -> Vec<StoredMsg> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(m) = s.next_matching(at, None) {
        at = m.seq + 1;
        out.push(m);
    }
    out
}

/// Checks that hold for any store, and that it still takes an append. With blocks
/// recovered from summaries (`exact` false) damage inside those blocks is found only when a
/// message is read, so counts may include messages that are then never returned.
fn consistent(mut s: FileStore, exact: bool) -> Vec<StoredMsg> {
    let msgs = all(&s);
    let st = s.state();
    if exact {
        assert_eq!(msgs.len() as u64, st.msgs);
    } else {
        assert!(msgs.len() as u64 <= st.msgs);
    }
    let mut per: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for m in &msgs {
        assert_eq!(s.get(m.seq).ok().as_ref(), Some(m));
        assert!(m.seq >= st.first_seq && m.seq <= st.last_seq);
        let e = per.entry(&m.subject).or_insert((0, m.seq, m.seq));
        e.0 += 1;
        e.2 = m.seq;
    }
    let ss = s.subjects_state(">");
    if exact {
        assert_eq!(ss.len(), per.len());
    }
    for (subject, (n, first, last)) in per {
        let x = ss[subject];
        if exact {
            assert_eq!((x.msgs, x.first_seq, x.last_seq), (n, first, last));
        } else {
            assert!(x.msgs >= n && x.first_seq <= first && x.last_seq >= last);
        }
    }
    if st.last_seq < u64::MAX >> 2 {
        let seq = s.append("after", None, b"x", 0).expect("append after open");
        assert_eq!(&s.get(seq).expect("get new").payload[..], b"x");
    }
    msgs
}

fn blocks(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let i = e.file_name().to_str()?.strip_suffix(".blk")?.parse().ok()?;
                Some((i, e.path()))
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|b| b.1).collect()
}

fn raw(dir: &Path, mode: u8, mut rest: &[u8]) {
    if mode & 2 != 0 && rest.len() >= 32 {
        std::fs::write(dir.join("meta"), &rest[..32]).expect("write meta");
        rest = &rest[32..];
    }
    let n = usize::from(mode >> 2) % 3 + 1;
    let chunk = rest.len().div_ceil(n).max(1);
    for (i, part) in rest.chunks(chunk).enumerate() {
        // With bit 4 of the mode, the first part is block 0's summary instead.
        let name = if i == 0 && mode & 16 != 0 {
            "0.sum".to_string()
        } else {
            format!("{i}.blk")
        };
        std::fs::write(dir.join(name), part).expect("write block");
    }
    if let Ok((s, report)) = FileStore::open(dir, cfg()) {
        consistent(s, report.summaries == 0);
    }
}

fn damage(dir: &Path, rest: &[u8]) {
    let (mut s, _) = FileStore::open(dir, cfg()).expect("open fresh");
    for seq in 1..=40 {
        let (subject, headers, payload) = known(seq);
        s.append(&subject, headers.as_deref(), &payload, seq as i64)
            .expect("append");
    }
    for seq in [3, 4, 17, 30] {
        s.remove(seq, seq % 2 == 0).expect("remove");
    }
    drop(s);
    let mut files = blocks(dir);
    files.extend(
        std::fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sum")),
    );
    files.sort();
    files.push(dir.join("meta"));
    for d in rest.chunks_exact(4) {
        let path = &files[usize::from(d[0]) % files.len()];
        let Ok(mut data) = std::fs::read(path) else {
            continue;
        };
        let at = usize::from(u16::from_le_bytes([d[1], d[2]]));
        if d[3] == 0 {
            data.truncate(at);
        } else if !data.is_empty() {
            let i = at % data.len();
            data[i] ^= d[3];
        }
        std::fs::write(path, &data).expect("write damage");
    }
    if let Ok((s, report)) = FileStore::open(dir, cfg()) {
        for m in consistent(s, report.summaries == 0) {
            let (subject, headers, payload) = known(m.seq);
            assert_eq!(m.subject, subject);
            assert_eq!(m.headers.as_deref(), headers.as_deref());
            assert_eq!(&m.payload[..], &payload[..]);
            assert_eq!(m.time_ns, m.seq as i64);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    if mode & 1 == 0 {
        raw(dir.path(), mode, rest);
    } else {
        damage(dir.path(), rest);
    }
});
