//! Damaged store directories: a torn tail must lose exactly the incomplete records, and no
//! damage may make `open` panic or make the store return a message that was not written.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use midge_store::{FileStore, FileStoreConfig, Store, StoredMsg, SyncPolicy};
use proptest::prelude::*;

fn cfg(block_size: u64) -> FileStoreConfig {
    FileStoreConfig {
        block_size,
        sync: SyncPolicy::Interval(Duration::from_secs(1)),
    }
}

/// Block files by index.
fn blocks(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| {
            let e = e.ok()?;
            let i = e.file_name().to_str()?.strip_suffix(".blk")?.parse().ok()?;
            Some((i, e.path()))
        })
        .collect();
    v.sort();
    v
}

/// Block summary files.
fn summaries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sum"))
        .collect();
    v.sort();
    v
}

/// The message written as `seq` (deterministic, so a test knows what to expect).
fn msg(seq: u64) -> (String, Option<Vec<u8>>, Vec<u8>) {
    let subject = format!("s.{}", seq % 4);
    let headers = (seq % 3 == 0).then(|| format!("NATS/1.0\r\nN: {seq}\r\n\r\n").into_bytes());
    let payload = format!("payload {seq} ")
        .repeat((seq % 7) as usize + 1)
        .into_bytes();
    (subject, headers, payload)
}

fn check(m: &StoredMsg) {
    let (subject, headers, payload) = msg(m.seq);
    assert_eq!(m.subject, subject, "seq {}", m.seq);
    assert_eq!(m.headers.as_deref(), headers.as_deref(), "seq {}", m.seq);
    assert_eq!(&m.payload[..], &payload[..], "seq {}", m.seq);
    assert_eq!(m.time_ns, m.seq as i64);
}

fn append(s: &mut FileStore, seq: u64) {
    let (subject, headers, payload) = msg(seq);
    assert_eq!(
        s.append(&subject, headers.as_deref(), &payload, seq as i64)
            .expect("append"),
        seq
    );
}

/// Every stored message, by walking `next_matching`.
fn all(s: &FileStore) -> Vec<StoredMsg> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(m) = s.next_matching(at, None) {
        at = m.seq + 1;
        out.push(m);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Cutting bytes off the last block loses the records that are no longer whole and
    /// nothing else; appends go on from the last whole one.
    #[test]
    fn torn_tail(n in 1..60u64, block_size in prop_oneof![Just(200u64), Just(700), Just(1 << 20)], cut in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = FileStore::open(dir.path(), cfg(block_size)).expect("open").0;
        // Where each message ends: (block index, end offset).
        let mut ends = Vec::new();
        for seq in 1..=n {
            append(&mut s, seq);
            let (i, path) = blocks(dir.path()).pop().expect("a block");
            ends.push((i, fs::metadata(&path).expect("meta").len()));
        }
        drop(s);
        let (last, path) = blocks(dir.path()).pop().expect("a block");
        let len = fs::metadata(&path).expect("meta").len();
        let keep = cut.index(len as usize) as u64;
        fs::OpenOptions::new().write(true).open(&path).expect("open block").set_len(keep).expect("cut");

        let (mut s, report) = FileStore::open(dir.path(), cfg(block_size)).expect("reopen");
        let want: Vec<u64> = (1..=n)
            .filter(|&q| {
                let (i, end) = ends[q as usize - 1];
                i != last || end <= keep
            })
            .collect();
        let got = all(&s);
        prop_assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), want.clone());
        got.iter().for_each(check);
        let whole_end = ends.iter().filter(|(i, e)| *i == last && *e <= keep).map(|e| e.1).max().unwrap_or(0);
        prop_assert_eq!(report.truncated_bytes, keep - whole_end);
        prop_assert_eq!(report.corrupt_records, 0);
        let next = want.last().map_or(1, |l| l + 1);
        append(&mut s, next);
        drop(s);
        let s = FileStore::open(dir.path(), cfg(block_size)).expect("reopen").0;
        prop_assert_eq!(all(&s).last().map(|m| m.seq), Some(next));
    }

    /// Flipped bits, cut, deleted or grown files: `open` does not panic, and whatever the
    /// store returns is exactly what was written with that sequence.
    #[test]
    fn damage_never_returns_bad_data(
        n in 1..80u64,
        removes in proptest::collection::vec((1..80u64, any::<bool>()), 0..10),
        damage in proptest::collection::vec(
            (0..4u8, any::<prop::sample::Index>(), any::<prop::sample::Index>(), 0..8u8),
            1..6,
        ),
        block_size in prop_oneof![Just(300u64), Just(2000), Just(1 << 20)],
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut s = FileStore::open(dir.path(), cfg(block_size)).expect("open").0;
        for seq in 1..=n {
            append(&mut s, seq);
        }
        for (seq, erase) in removes {
            s.remove(seq, erase).expect("remove");
        }
        if n > 40 {
            s.purge(Some("s.1"), Some(20), 0).expect("purge");
        }
        drop(s);
        let mut files: Vec<PathBuf> = blocks(dir.path()).into_iter().map(|b| b.1).collect();
        files.extend(summaries(dir.path()));
        files.push(dir.path().join("meta"));
        for (kind, which, at, bit) in damage {
            let path = which.get(&files);
            let Ok(mut data) = fs::read(path) else { continue };
            match kind {
                0 | 1 if !data.is_empty() => {
                    let i = at.index(data.len());
                    data[i] ^= 1 << bit;
                }
                2 => data.truncate(at.index(data.len() + 1)),
                3 => data.extend_from_slice(&[bit; 37][..at.index(37)]),
                _ => {}
            }
            fs::write(path, &data).expect("write damage");
        }

        let Ok((mut s, report)) = FileStore::open(dir.path(), cfg(block_size)) else {
            return Ok(());
        };
        let st = s.state();
        let got = all(&s);
        got.iter().for_each(check);
        for seq in 0..=st.last_seq + 1 {
            if let Ok(m) = s.get(seq) {
                check(&m);
            }
        }
        // A block recovered from its summary is not read at open: damage to its records
        // is found when they are read, so the counts may include messages that then fail
        // to read (and are never returned).
        let exact = report.summaries == 0;
        if exact {
            prop_assert_eq!(got.len() as u64, st.msgs);
        } else {
            prop_assert!(got.len() as u64 <= st.msgs);
        }
        for (subject, ss) in s.subjects_state(">") {
            let of_subject: Vec<u64> = got.iter().filter(|m| m.subject == subject).map(|m| m.seq).collect();
            if exact {
                prop_assert_eq!(ss.msgs, of_subject.len() as u64);
                prop_assert_eq!(Some(ss.first_seq), of_subject.first().copied());
                prop_assert_eq!(Some(ss.last_seq), of_subject.last().copied());
            } else {
                prop_assert!(ss.msgs >= of_subject.len() as u64);
                prop_assert!(of_subject.first().is_none_or(|&f| ss.first_seq <= f));
                prop_assert!(of_subject.last().is_none_or(|&l| ss.last_seq >= l));
            }
        }
        // Still usable.
        let seq = s.append("after", None, b"damage", 0).expect("append after damage");
        prop_assert_eq!(&s.get(seq).expect("get").payload[..], b"damage");
    }
}
