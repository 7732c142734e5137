use std::path::Path;

use super::*;

fn cfg(block_size: u64) -> FileStoreConfig {
    FileStoreConfig {
        block_size,
        sync: SyncPolicy::Interval(Duration::from_secs(1)),
    }
}

fn open(dir: &Path, block_size: u64) -> FileStore {
    FileStore::open(dir, cfg(block_size)).expect("open").0
}

/// Closes and opens again, checking that recovery saw no damage.
fn reopen(s: FileStore, block_size: u64) -> FileStore {
    let dir = s.dir.clone();
    drop(s);
    let (s, report) = FileStore::open(&dir, cfg(block_size)).expect("reopen");
    assert_eq!(
        (report.truncated_bytes, report.corrupt_records),
        (0, 0),
        "{report:?}"
    );
    s
}

/// Five messages on subjects a.1 a.2 b.1 a.1 a.1, payload "m<i>", time i.
fn filled(dir: &Path, block_size: u64) -> FileStore {
    let mut s = open(dir, block_size);
    for (i, subj) in ["a.1", "a.2", "b.1", "a.1", "a.1"].iter().enumerate() {
        let seq = s
            .append(subj, None, format!("m{i}").as_bytes(), i as i64)
            .expect("append");
        assert_eq!(seq, i as u64 + 1);
    }
    s
}

fn seqs(s: &FileStore) -> Vec<u64> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(m) = s.next_matching(at, None) {
        out.push(m.seq);
        at = m.seq + 1;
    }
    out
}

fn blk_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".blk"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_get_state_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = filled(dir.path(), DEFAULT_BLOCK_SIZE);
    s.append("c", Some(b"NATS/1.0\r\nX: 1\r\n\r\n"), b"with headers", 77)
        .expect("append");
    for round in 0..2 {
        let st = s.state();
        assert_eq!(
            (st.msgs, st.first_seq, st.last_seq, st.num_subjects),
            (6, 1, 6, 4),
            "round {round}"
        );
        assert_eq!((st.first_time_ns, st.last_time_ns), (0, 77));
        let m = s.get(6).expect("get");
        assert_eq!(m.subject, "c");
        assert_eq!(m.headers.as_deref(), Some(&b"NATS/1.0\r\nX: 1\r\n\r\n"[..]));
        assert_eq!(&m.payload[..], b"with headers");
        assert_eq!(m.time_ns, 77);
        assert_eq!(s.get(3).expect("get").subject, "b.1");
        assert_eq!(s.get(3).expect("get").headers, None);
        assert!(matches!(s.get(9), Err(StoreError::NotFound)));
        assert!(matches!(s.get(0), Err(StoreError::NotFound)));
        assert_eq!(s.subject_state("a.1").map(|x| x.msgs), Some(3));
        assert_eq!(s.num_pending(2, Some("a.*")), 3);
        assert_eq!(s.num_pending(2, None), 5);
        assert_eq!(s.num_pending(2, Some("a.1")), 2);
        assert_eq!(s.next_matching(2, Some("a.1")).map(|m| m.seq), Some(4));
        assert_eq!(s.next_matching(2, Some("b.*")).map(|m| m.seq), Some(3));
        assert_eq!(s.last_matching("a.>").map(|m| m.seq), Some(5));
        assert_eq!(s.last_matching("a.2").map(|m| m.seq), Some(2));
        assert_eq!(s.last_matching("zz").map(|m| m.seq), None);
        let ss = s.subjects_state("a.*");
        assert_eq!(ss.len(), 2);
        assert_eq!(
            ss["a.1"],
            SubjectState {
                msgs: 3,
                first_seq: 1,
                last_seq: 5
            }
        );
        s = reopen(s, DEFAULT_BLOCK_SIZE);
    }
    assert_eq!(s.append("d", None, b"", 8).expect("append"), 7);
}

#[test]
fn many_blocks_and_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 200);
    for i in 0..50u64 {
        s.append(&format!("s.{}", i % 3), None, &[i as u8; 20], i as i64)
            .expect("append");
    }
    assert!(blk_files(dir.path()).len() > 10);
    let s = reopen(s, 200);
    assert_eq!(seqs(&s), (1..=50).collect::<Vec<_>>());
    for i in 1..=50u64 {
        assert_eq!(&s.get(i).expect("get").payload[..], &[(i - 1) as u8; 20]);
    }
    assert_eq!(s.num_pending(20, Some("s.1")), 11);
}

#[test]
fn remove_survives_reopen_and_moves_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = filled(dir.path(), DEFAULT_BLOCK_SIZE);
    assert!(s.remove(1, false).expect("remove"));
    assert!(!s.remove(1, false).expect("remove again"));
    assert!(s.remove(3, false).expect("remove"));
    assert!(!s.remove(42, false).expect("remove missing"));
    for _ in 0..2 {
        let st = s.state();
        assert_eq!((st.msgs, st.first_seq, st.num_deleted), (3, 2, 1));
        assert_eq!(st.first_time_ns, 1);
        assert_eq!(s.subject_state("b.1"), None);
        assert_eq!(
            s.subject_state("a.1"),
            Some(SubjectState {
                msgs: 2,
                first_seq: 4,
                last_seq: 5
            })
        );
        s = reopen(s, DEFAULT_BLOCK_SIZE);
    }
    // Removing the newest messages keeps the last sequence across a restart.
    assert!(s.remove(5, false).expect("remove"));
    assert!(s.remove(4, false).expect("remove"));
    assert!(s.remove(2, false).expect("remove"));
    let mut s = reopen(s, DEFAULT_BLOCK_SIZE);
    let st = s.state();
    assert_eq!((st.msgs, st.first_seq, st.last_seq), (0, 6, 5));
    assert_eq!(s.append("x", None, b"", 9).expect("append"), 6);
}

#[test]
fn erase_overwrites_payload_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), DEFAULT_BLOCK_SIZE);
    s.append("a", Some(b"hdr-secret"), b"payload-secret", 1)
        .expect("append");
    s.append("a", None, b"keep-me", 2).expect("append");
    assert!(s.remove(1, true).expect("erase"));
    let disk = fs::read(dir.path().join("0.blk")).expect("read block");
    let has = |needle: &[u8]| disk.windows(needle.len()).any(|w| w == needle);
    assert!(!has(b"payload-secret") && !has(b"hdr-secret"));
    assert!(has(b"keep-me"));
    let s = reopen(s, DEFAULT_BLOCK_SIZE);
    assert_eq!(seqs(&s), vec![2]);
}

#[test]
fn purge_with_filter_keep_and_up_to_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = filled(&dir.path().join("keep"), 64);
    assert_eq!(s.purge(Some("a.1"), None, 1).expect("purge"), 2);
    let s = reopen(s, 64);
    assert_eq!(s.subject_state("a.1").map(|x| x.first_seq), Some(5));
    assert_eq!(seqs(&s), vec![2, 3, 5]);

    let mut s = filled(&dir.path().join("up_to"), 64);
    assert_eq!(s.purge(None, Some(4), 0).expect("purge"), 3);
    let s = reopen(s, 64);
    assert_eq!(s.state().first_seq, 4);
    assert_eq!(seqs(&s), vec![4, 5]);

    let mut s = filled(&dir.path().join("wild"), 64);
    assert_eq!(s.purge(Some("a.*"), Some(5), 1).expect("purge"), 2);
    let s = reopen(s, 64);
    assert_eq!(seqs(&s), vec![2, 3, 5]);
}

#[test]
fn purge_everything_deletes_blocks_and_keeps_sequence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = filled(dir.path(), 64);
    assert!(!blk_files(dir.path()).is_empty());
    assert_eq!(s.purge(None, None, 0).expect("purge"), 5);
    assert!(blk_files(dir.path()).is_empty());
    let mut s = reopen(s, 64);
    let st = s.state();
    assert_eq!(
        (st.msgs, st.first_seq, st.last_seq, st.last_time_ns),
        (0, 6, 5, 4)
    );
    assert_eq!(s.append("x", None, b"", 9).expect("append"), 6);
    // A purge that removes everything another way ends the same.
    assert_eq!(s.purge(Some(">"), Some(100), 0).expect("purge"), 1);
    let s = reopen(s, 64);
    assert_eq!((s.state().first_seq, s.state().msgs), (7, 0));
}

#[test]
fn reset_first_seq_survives_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = filled(dir.path(), 64);
    assert!(s.reset_first_seq(100).is_err());
    s.purge(None, None, 0).expect("purge");
    s.reset_first_seq(3).expect("reset lower");
    let mut s = reopen(s, 64);
    assert_eq!((s.state().first_seq, s.state().last_seq), (3, 2));
    assert_eq!(s.append("x", None, b"", 0).expect("append"), 3);
    s.purge(None, None, 0).expect("purge");
    s.reset_first_seq(100).expect("reset");
    let mut s = reopen(s, 64);
    assert_eq!(s.append("x", None, b"", 0).expect("append"), 100);
    let s = reopen(s, 64);
    assert_eq!(seqs(&s), vec![100]);
}

#[test]
fn compaction_rewrites_and_deletes_dead_blocks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1000);
    for i in 0..100u64 {
        s.append("s", None, &[i as u8; 50], 0).expect("append");
    }
    let before = blk_files(dir.path()).len();
    assert!(before > 5);
    let size0 = fs::metadata(dir.path().join("0.blk")).expect("meta").len();
    // Most of block 0 dies: it is rewritten smaller; all of block 1 dies: it goes.
    let block0: Vec<u64> = s.blocks[0]
        .slots
        .iter()
        .map(|x| s.blocks[0].seq(x))
        .collect();
    let block1: Vec<u64> = s.blocks[1]
        .slots
        .iter()
        .map(|x| s.blocks[1].seq(x))
        .collect();
    for &q in &block0[1..] {
        assert!(s.remove(q, false).expect("remove"));
    }
    for &q in &block1 {
        assert!(s.remove(q, false).expect("remove"));
    }
    let size1 = fs::metadata(dir.path().join("0.blk")).expect("meta").len();
    assert!(size1 < size0 / 2, "{size1} vs {size0}");
    assert!(!dir.path().join("1.blk").exists());
    assert_eq!(blk_files(dir.path()).len(), before - 1);
    let mut s = reopen(s, 1000);
    let mut want = vec![block0[0]];
    want.extend(block1.last().map_or(0, |l| l + 1)..=100);
    assert_eq!(seqs(&s), want);
    for q in want {
        assert_eq!(&s.get(q).expect("get").payload[..], &[(q - 1) as u8; 50]);
    }
    assert_eq!(s.append("s", None, b"", 0).expect("append"), 101);
}

#[test]
fn disk_full_rolls_back_and_store_stays_usable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = filled(dir.path(), DEFAULT_BLOCK_SIZE);
    let len = fs::metadata(dir.path().join("0.blk")).expect("meta").len();
    s.fail_next_write(10);
    assert!(matches!(
        s.append("x", None, b"lost", 9),
        Err(StoreError::Full(_))
    ));
    assert_eq!(
        fs::metadata(dir.path().join("0.blk")).expect("meta").len(),
        len
    );
    assert_eq!(s.state().last_seq, 5);
    assert_eq!(s.append("x", None, b"kept", 10).expect("append"), 6);
    let s = reopen(s, DEFAULT_BLOCK_SIZE);
    assert_eq!(&s.get(6).expect("get").payload[..], b"kept");
    assert_eq!(s.state().msgs, 6);
}

#[test]
fn full_error_mapping() {
    assert!(matches!(
        store_err(io::Error::from_raw_os_error(28)),
        StoreError::Full(_)
    ));
    assert!(matches!(
        store_err(io::Error::from_raw_os_error(122)),
        StoreError::Full(_)
    ));
    assert!(matches!(
        store_err(io::Error::from_raw_os_error(5)),
        StoreError::Io(_)
    ));
}

#[test]
fn damage_after_open_is_reported_not_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = filled(dir.path(), DEFAULT_BLOCK_SIZE);
    let (b, slot) = (&s.blocks[0], s.blocks[0].slots[1]);
    b.file
        .write_all_at(b"X", u64::from(slot.off + slot.len()) - 6)
        .expect("damage");
    assert!(matches!(s.get(2), Err(StoreError::Corrupt(_))));
    assert_eq!(s.next_matching(2, None).map(|m| m.seq), Some(3));
    let (s, report) = FileStore::open(dir.path(), cfg(DEFAULT_BLOCK_SIZE)).expect("reopen");
    assert_eq!(report.corrupt_records, 1);
    assert_eq!(seqs(&s), vec![1, 3, 4, 5]);
}

#[test]
fn sync_always_and_sync_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = FileStoreConfig {
        block_size: 100,
        sync: SyncPolicy::Always,
    };
    let (mut s, _) = FileStore::open(dir.path(), c).expect("open");
    for i in 0..5 {
        s.append("a", None, b"0123456789012345", i).expect("append");
    }
    assert!(s.remove(2, true).expect("remove"));
    s.sync().expect("sync");
    drop(s);
    let (s, _) = FileStore::open(dir.path(), c).expect("open");
    assert_eq!(seqs(&s), vec![1, 3, 4, 5]);
}

#[test]
fn oversized_input_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), DEFAULT_BLOCK_SIZE);
    let long = "x".repeat(70_000);
    assert!(matches!(
        s.append(&long, None, b"", 0),
        Err(StoreError::Io(_))
    ));
    assert_eq!(s.append("ok", None, b"", 0).expect("append"), 1);
}

#[test]
fn delete_removes_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stream");
    let mut s = filled(&path, 64);
    s.delete().expect("delete");
    assert!(!path.exists());
    assert!(matches!(s.get(1), Err(StoreError::Closed)));
    assert!(matches!(
        s.append("a", None, b"", 0),
        Err(StoreError::Closed)
    ));
}

#[test]
fn leftovers_are_cleaned_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = filled(dir.path(), DEFAULT_BLOCK_SIZE);
    drop(s);
    fs::write(dir.path().join("0.blk.tmp"), b"half a compaction").expect("write");
    fs::write(dir.path().join("meta.tmp"), b"half a meta").expect("write");
    let s = reopen(open(dir.path(), DEFAULT_BLOCK_SIZE), DEFAULT_BLOCK_SIZE);
    assert_eq!(seqs(&s), vec![1, 2, 3, 4, 5]);
    assert!(!dir.path().join("0.blk.tmp").exists());
    assert!(!dir.path().join("meta.tmp").exists());
}

/// A message as `picture` lists it: sequence, subject, headers, payload, time.
type Pictured = (u64, String, Option<Vec<u8>>, Vec<u8>, i64);

/// The full picture of a store, for comparing a recovery from summaries with one that
/// reads every block.
fn picture(s: &FileStore) -> (StreamState, Vec<Pictured>) {
    let mut msgs = Vec::new();
    let mut at = 0;
    while let Some(m) = s.next_matching(at, None) {
        at = m.seq + 1;
        msgs.push((
            m.seq,
            m.subject,
            m.headers.map(|h| h.to_vec()),
            m.payload.to_vec(),
            m.time_ns,
        ));
    }
    (s.state(), msgs)
}

fn sum_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sum"))
        .collect();
    v.sort();
    v
}

#[test]
fn sealed_blocks_recover_from_summaries_as_if_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 300);
    for i in 1..=60u64 {
        let headers = (i % 4 == 0).then(|| format!("NATS/1.0\r\nI: {i}\r\n\r\n").into_bytes());
        let subject = format!("s.{}", i % 5);
        s.append(&subject, headers.as_deref(), &[i as u8; 20], i as i64 * 10)
            .expect("append");
    }
    s.remove(7, false).expect("remove");
    s.remove(8, true).expect("erase");
    let blocks = blk_files(dir.path()).len();
    assert!(blocks > 4, "{blocks} blocks");
    // Every sealed block has a summary except the one a removal touched.
    assert_eq!(sum_files(dir.path()).len(), blocks - 2);
    let want = picture(&s);
    let subjects = s.subjects_state(">");
    drop(s);

    let (s, report) = FileStore::open(dir.path(), cfg(300)).expect("reopen");
    assert_eq!(report.blocks, blocks as u64);
    assert_eq!(report.summaries, blocks as u64 - 2, "{report:?}");
    assert_eq!(picture(&s), want);
    assert_eq!(s.subjects_state(">"), subjects);
    // The block that had to be read got its summary back; the active one has none.
    assert_eq!(sum_files(dir.path()).len(), blocks - 1);
    drop(s);
    let (mut s, report) = FileStore::open(dir.path(), cfg(300)).expect("reopen");
    assert_eq!(report.summaries, blocks as u64 - 1);
    assert_eq!(picture(&s), want);
    assert_eq!(s.next_with_headers(0).map(|m| m.seq), Some(4));
    assert_eq!(s.next_with_headers(9).map(|m| m.seq), Some(12));

    // Without any summary the same store comes back.
    for f in sum_files(dir.path()) {
        fs::remove_file(dir.path().join(f)).expect("rm");
    }
    let (s2, report) = FileStore::open(dir.path(), cfg(300)).expect("reopen");
    assert_eq!(report.summaries, 0);
    assert_eq!(picture(&s2), want);
    drop(s2);
    assert_eq!(s.append("s.0", None, b"x", 1000).expect("append"), 61);
}

#[test]
fn a_summary_that_does_not_fit_its_block_is_not_used() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 200);
    for i in 1..=20u64 {
        s.append("a", None, &[i as u8; 30], i as i64)
            .expect("append");
    }
    let want = picture(&s);
    drop(s);
    let sums = sum_files(dir.path());
    assert!(sums.len() >= 2);
    // One summary damaged, one describing a longer file, one orphaned (its block gone).
    let p0 = dir.path().join(&sums[0]);
    let mut d = fs::read(&p0).expect("read");
    d[20] ^= 1;
    fs::write(&p0, d).expect("write");
    let blk1 = dir.path().join(sums[1].replace(".sum", ".blk"));
    let f = OpenOptions::new().append(true).open(&blk1).expect("open");
    f.set_len(f.metadata().expect("meta").len() + 3)
        .expect("grow");
    fs::write(dir.path().join("999.sum"), b"stale").expect("orphan");

    let (s, report) = FileStore::open(dir.path(), cfg(200)).expect("reopen");
    assert!(!dir.path().join("999.sum").exists());
    assert_eq!(report.corrupt_records, 1, "{report:?}");
    assert_eq!(report.summaries, sums.len() as u64 - 2);
    assert_eq!(picture(&s).1, want.1);
}

#[test]
fn compaction_and_deleted_blocks_keep_summaries_true() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = open(dir.path(), 1000);
    for i in 0..100u64 {
        s.append("s", None, &[i as u8; 50], 0).expect("append");
    }
    let block0: Vec<u64> = s.blocks[0]
        .slots
        .iter()
        .map(|x| s.blocks[0].seq(x))
        .collect();
    let block1: Vec<u64> = s.blocks[1]
        .slots
        .iter()
        .map(|x| s.blocks[1].seq(x))
        .collect();
    for &q in block0[1..].iter().chain(&block1) {
        assert!(s.remove(q, false).expect("remove"));
    }
    // Block 0 was compacted (removals after that dropped its new summary again); block 1
    // went with its summary.
    assert!(!dir.path().join("1.sum").exists());
    let want = picture(&s);
    let sums = sum_files(dir.path()).len() as u64;
    drop(s);
    let (s, report) = FileStore::open(dir.path(), cfg(1000)).expect("reopen");
    assert_eq!(report.summaries, sums, "{report:?}");
    assert_eq!(picture(&s), want);
    // The compacted block, read once, has its summary again.
    assert!(dir.path().join("0.sum").exists());
    drop(s);
    let (s, report) = FileStore::open(dir.path(), cfg(1000)).expect("reopen");
    assert_eq!(report.summaries, report.blocks - 1, "{report:?}");
    assert_eq!(picture(&s), want);
    let mut s = s;
    s.purge(None, None, 0).expect("purge");
    assert!(sum_files(dir.path()).is_empty());
}

/// Found by the store_recovery fuzz target: when the last block holds no record that
/// recovery can take (here: a copy of the first block, all out of order), it stays (writing
/// goes on there) without a record, and its base must not send `get` of an earlier
/// block's message to it.
#[test]
fn a_last_block_without_a_usable_record_keeps_lookups_right() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Two 37-byte records to a block.
    let mut s = open(dir.path(), 80);
    let mut last = 0;
    for _ in 0..8 {
        last = s.append("k", None, b"0123", 7).expect("append");
    }
    assert_eq!(s.blocks.len(), 4);
    let (first, final_) = (s.blocks[0].index, s.blocks[3].index);
    drop(s);
    let path = |i: u64| dir.path().join(format!("{i}{BLOCK_EXT}"));
    fs::copy(path(first), path(final_)).expect("copy a block over the last");
    let (mut s, report) = FileStore::open(dir.path(), cfg(80)).expect("reopen");
    assert_eq!(report.corrupt_records, 2, "{report:?}");
    assert!(s
        .blocks
        .last()
        .is_some_and(|b| b.slots.is_empty() && b.size > 0));
    assert_eq!(seqs(&s), (1..=last - 2).collect::<Vec<_>>());
    for seq in 1..=last - 2 {
        assert_eq!(s.get(seq).expect("get").seq, seq);
    }
    let seq = s
        .append("k", None, b"after", 99)
        .expect("append after damage");
    assert_eq!(&s.get(seq).expect("get new").payload[..], b"after");
}

/// A reader going through a block in order is served from the chunk read ahead; removals,
/// an erasure and a compaction inside that chunk are seen by the next reads.
#[test]
fn read_ahead_serves_in_order_readers_and_follows_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // About 110 records of 37-38 bytes to a block.
    let mut s = open(dir.path(), 4096);
    for i in 1..=300u64 {
        s.append("r", None, format!("m{i}").as_bytes(), i as i64)
            .expect("append");
    }
    assert!(s.blocks.len() >= 3);
    let in_block_0 = s.blocks[0].slots.len() as u64;
    let read = |s: &FileStore, to: u64| -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(m) = s.next_matching(at, None).filter(|m| m.seq <= to) {
            out.push((m.seq, String::from_utf8_lossy(&m.payload).into_owned()));
            at = m.seq + 1;
        }
        out
    };
    let expect = |to: u64, gone: &dyn Fn(u64) -> bool| -> Vec<(u64, String)> {
        (1..=to)
            .filter(|q| !gone(*q))
            .map(|q| (q, format!("m{q}")))
            .collect()
    };
    // Read block 0 in order: what is read ahead is block 0's.
    assert_eq!(read(&s, in_block_0), expect(in_block_0, &|_| false));
    assert!(s
        .read_ahead
        .lock()
        .expect("lock")
        .chunk
        .as_ref()
        .is_some_and(|c| c.0 == s.blocks[0].index));
    s.remove(5, false).expect("remove");
    s.remove(6, true).expect("erase");
    assert!(matches!(s.get(6), Err(StoreError::NotFound)));
    assert_eq!(
        read(&s, in_block_0),
        expect(in_block_0, &|q| q == 5 || q == 6)
    );
    // Most of block 0 removed: it is compacted, its records move to other offsets.
    let gone = |q: u64| q <= in_block_0 - 10;
    for q in (1..=in_block_0 - 10).filter(|q| *q != 5 && *q != 6) {
        s.remove(q, false).expect("remove");
    }
    assert!(
        s.blocks[0].slots.len() < in_block_0 as usize,
        "block 0 was compacted"
    );
    assert_eq!(read(&s, 300), expect(300, &gone));
    let s = reopen(s, 4096);
    assert_eq!(read(&s, 300), expect(300, &gone));
}
