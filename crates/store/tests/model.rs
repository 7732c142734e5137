//! Model test: random operations on a `MemStore` and a `FileStore` (small blocks, so many
//! block files, compactions and deletions happen; closed and reopened at random) must
//! give the same answers.

use std::path::Path;
use std::time::Duration;

use midge_store::{
    file_record_size, memory_record_size, FileStore, FileStoreConfig, MemStore, Store, StoreError,
    StreamState, SyncPolicy,
};
use proptest::prelude::*;

const SUBJECTS: &[&str] = &["a.1", "a.2", "b.1", "b.c.d", "x"];
const FILTERS: &[&str] = &["", ">", "a.*", "a.1", "b.>", "x", "nope", "*.1", "*.*.d"];

#[derive(Debug, Clone)]
enum Op {
    Append {
        subject: usize,
        headers: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Remove {
        seq: u64,
        erase: bool,
    },
    Purge {
        filter: Option<usize>,
        up_to: Option<u64>,
        keep: u64,
    },
    Reset {
        seq: u64,
    },
    Reopen,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (
            0..SUBJECTS.len(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            proptest::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(subject, headers, payload)| Op::Append {
                subject,
                headers,
                payload
            }),
        3 => (0..60u64, any::<bool>()).prop_map(|(seq, erase)| Op::Remove { seq, erase }),
        1 => (
            proptest::option::of(0..FILTERS.len()),
            proptest::option::of(0..60u64),
            prop_oneof![3 => Just(0u64), 1 => 1..4u64]
        )
            .prop_map(|(filter, up_to, keep)| Op::Purge {
                filter,
                up_to,
                keep
            }),
        1 => (0..80u64).prop_map(|seq| Op::Reset { seq }),
        2 => Just(Op::Reopen),
        1 => Just(Op::Sync),
    ]
}

fn open(dir: &Path, cfg: FileStoreConfig) -> FileStore {
    let (s, report) = FileStore::open(dir, cfg).expect("open");
    assert_eq!(
        (report.truncated_bytes, report.corrupt_records),
        (0, 0),
        "clean reopen found damage: {report:?}"
    );
    s
}

fn same_result<T: PartialEq + std::fmt::Debug>(
    what: &str,
    m: Result<T, StoreError>,
    f: Result<T, StoreError>,
) -> Result<(), TestCaseError> {
    match (m, f) {
        (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", what),
        (Err(StoreError::NotFound), Err(StoreError::NotFound)) => {}
        (Err(_), Err(_)) if what.starts_with("reset") => {}
        (m, f) => prop_assert!(false, "{}: memory {:?}, file {:?}", what, m, f),
    }
    Ok(())
}

/// Everything a reader can observe must be equal.
fn compare(mem: &MemStore, file: &FileStore) -> Result<(), TestCaseError> {
    let st = mem.state();
    let fst = file.state();
    // Each store counts bytes as nats-server's store of its kind does.
    let (mut mem_bytes, mut file_bytes) = (0, 0);
    let mut at = 0;
    while let Some(m) = mem.next_matching(at, None) {
        at = m.seq + 1;
        let h = m.headers.as_ref().map_or(0, |h| h.len());
        mem_bytes += memory_record_size(m.subject.len(), h, m.payload.len());
        file_bytes += file_record_size(m.subject.len(), h, m.payload.len());
    }
    prop_assert_eq!(st.bytes, mem_bytes);
    prop_assert_eq!(fst.bytes, file_bytes);
    prop_assert_eq!(
        &StreamState {
            bytes: 0,
            ..st.clone()
        },
        &StreamState { bytes: 0, ..fst }
    );
    for seq in 0..=st.last_seq + 1 {
        same_result(&format!("get {seq}"), mem.get(seq), file.get(seq))?;
    }
    let probes = [
        0,
        st.first_seq,
        (st.first_seq + st.last_seq) / 2,
        st.last_seq,
        st.last_seq + 1,
    ];
    for f in FILTERS {
        prop_assert_eq!(
            mem.subjects_state(f),
            file.subjects_state(f),
            "filter {}",
            f
        );
        prop_assert_eq!(mem.last_matching(f), file.last_matching(f), "last {}", f);
        for filter in [Some(*f), None] {
            for &p in &probes {
                prop_assert_eq!(
                    mem.next_matching(p, filter),
                    file.next_matching(p, filter),
                    "next {} {:?}",
                    p,
                    filter
                );
                prop_assert_eq!(
                    mem.num_pending(p, filter),
                    file.num_pending(p, filter),
                    "pending {} {:?}",
                    p,
                    filter
                );
            }
        }
    }
    for s in SUBJECTS {
        prop_assert_eq!(mem.subject_state(s), file.subject_state(s), "subject {}", s);
    }
    Ok(())
}

fn run(ops: Vec<Op>, block_size: u64, always: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = FileStoreConfig {
        block_size,
        sync: if always {
            SyncPolicy::Always
        } else {
            SyncPolicy::Interval(Duration::from_secs(1))
        },
    };
    let mut mem = MemStore::new();
    let mut file = open(dir.path(), cfg);
    for (i, op) in ops.into_iter().enumerate() {
        let what = format!("op {i}: {op:?}");
        match op {
            Op::Append {
                subject,
                headers,
                payload,
            } => {
                let subject = SUBJECTS[subject];
                let h = headers.as_deref();
                same_result(
                    &what,
                    mem.append(subject, h, &payload, i as i64),
                    file.append(subject, h, &payload, i as i64),
                )?;
            }
            Op::Remove { seq, erase } => {
                same_result(&what, mem.remove(seq, erase), file.remove(seq, erase))?;
            }
            Op::Purge {
                filter,
                up_to,
                keep,
            } => {
                let filter = filter.map(|f| FILTERS[f]);
                same_result(
                    &what,
                    mem.purge(filter, up_to, keep),
                    file.purge(filter, up_to, keep),
                )?;
            }
            Op::Reset { seq } => {
                same_result(
                    &format!("reset {what}"),
                    mem.reset_first_seq(seq),
                    file.reset_first_seq(seq),
                )?;
            }
            Op::Reopen => {
                drop(file);
                file = open(dir.path(), cfg);
            }
            Op::Sync => file.sync().expect("sync"),
        }
        compare(&mem, &file).map_err(|e| TestCaseError::fail(format!("after {what}: {e}")))?;
    }
    drop(file);
    compare(&mem, &open(dir.path(), cfg))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn file_store_behaves_like_memory_store(
        ops in proptest::collection::vec(op(), 1..60),
        block_size in prop_oneof![Just(1u64), Just(64), Just(150), Just(400), Just(4096)],
        always in proptest::bool::weighted(0.1),
    ) {
        run(ops, block_size, always)?;
    }
}
