//! A real full disk: a 256 KiB tmpfs (needs root or CAP_SYS_ADMIN; skipped with a note
//! elsewhere). The append that does not fit fails with `Full`, leaves no part of a record
//! behind, and the store takes appends again once a purge frees space.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use midge_store::{FileStore, FileStoreConfig, Store, StoreError, SyncPolicy};

struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn enospc_is_full_and_rolled_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (not root?)");
        return;
    }
    let _umount = Mounted(mnt.clone());
    let cfg = FileStoreConfig {
        block_size: 32 * 1024,
        sync: SyncPolicy::Interval(Duration::from_secs(60)),
    };
    let store_dir = mnt.join("stream");
    let (mut s, _) = FileStore::open(&store_dir, cfg).expect("open");
    let payload = vec![7u8; 1000];
    let err = loop {
        match s.append("fill", None, &payload, 0) {
            Ok(seq) => assert!(seq < 10_000, "the tmpfs never filled up"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, StoreError::Full(_)), "{err:?}");
    let last = s.state().last_seq;
    assert!(last > 100);
    // Another try fails the same way and changes nothing.
    assert!(matches!(
        s.append("fill", None, &payload, 0),
        Err(StoreError::Full(_))
    ));
    assert_eq!(s.state().last_seq, last);

    drop(s);
    let (mut s, report) = FileStore::open(&store_dir, cfg).expect("reopen");
    assert_eq!(
        (report.truncated_bytes, report.corrupt_records),
        (0, 0),
        "{report:?}"
    );
    assert_eq!((s.state().msgs, s.state().last_seq), (last, last));

    s.purge(None, Some(last / 2), 0)
        .expect("purge frees blocks");
    assert_eq!(
        s.append("fill", None, &payload, 0)
            .expect("append after purge"),
        last + 1
    );
    assert_eq!(&s.get(last + 1).expect("get").payload[..], &payload[..]);
}
