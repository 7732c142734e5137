//! Crash test with real processes: a child (this test binary, re-run with an environment
//! variable) appends and prints each acknowledged sequence; the parent kills it with
//! SIGKILL at a random point, reopens the store and checks that every acknowledged message
//! is there exactly once, in order, with its payload. Rounds alternate `Always` and
//! `Interval` (which also promises to survive a killed process).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use midge_store::{FileStore, FileStoreConfig, Store, SyncPolicy};
use rand::Rng;

const DIR_VAR: &str = "MIDGE_STORE_CRASH_DIR";
const SYNC_VAR: &str = "MIDGE_STORE_CRASH_SYNC";
const ROUNDS: usize = 10;
const ROUND_DEADLINE: Duration = Duration::from_secs(20);

fn cfg(always: bool) -> FileStoreConfig {
    FileStoreConfig {
        // Small blocks: kills also land in block roll-overs.
        block_size: 2048,
        sync: if always {
            SyncPolicy::Always
        } else {
            SyncPolicy::Interval(Duration::from_secs(60))
        },
    }
}

fn payload(seq: u64) -> Vec<u8> {
    format!("<{seq}>")
        .repeat((seq % 40) as usize + 1)
        .into_bytes()
}

/// The child: only does something when started by `kill9_rounds`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let always = std::env::var(SYNC_VAR).is_ok_and(|v| v == "always");
    let (mut s, _) = FileStore::open(Path::new(&dir), cfg(always)).expect("child open");
    println!("ready {}", s.state().last_seq);
    // Bounded, should the parent never kill it.
    let until = Instant::now() + ROUND_DEADLINE;
    while Instant::now() < until {
        let seq = s.state().last_seq + 1;
        let got = s
            .append(
                &format!("crash.{}", seq % 5),
                None,
                &payload(seq),
                seq as i64,
            )
            .expect("child append");
        assert_eq!(got, seq);
        println!("ack {seq}");
    }
}

/// Checks the store against what was acknowledged; returns its last sequence.
fn verify(dir: &Path, acked: u64) -> u64 {
    let (s, report) = FileStore::open(dir, cfg(true)).expect("parent open");
    let st = s.state();
    assert_eq!(report.corrupt_records, 0, "{report:?}");
    // At most the one append in flight when the kill came is there unacknowledged.
    assert!(
        st.last_seq == acked || st.last_seq == acked + 1,
        "acked {acked}, store ends at {} ({report:?})",
        st.last_seq
    );
    assert_eq!(st.msgs, st.last_seq, "a gap or a duplicate: {st:?}");
    let mut at = 0;
    let mut expect = 1;
    while let Some(m) = s.next_matching(at, None) {
        assert_eq!(m.seq, expect, "out of order or repeated");
        assert_eq!(&m.payload[..], &payload(m.seq)[..], "payload of {}", m.seq);
        assert_eq!(m.subject, format!("crash.{}", m.seq % 5));
        at = m.seq + 1;
        expect += 1;
    }
    assert_eq!(expect - 1, st.last_seq);
    st.last_seq
}

#[test]
fn kill9_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    let mut last = 0;
    for round in 0..ROUNDS {
        let always = round % 2 == 0;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(SYNC_VAR, if always { "always" } else { "interval" })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let out = child.stdout.take().expect("child stdout");
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + ROUND_DEADLINE;
        let next_line = || {
            let left = deadline.saturating_duration_since(Instant::now());
            rx.recv_timeout(left).expect("child went quiet")
        };
        let ready = loop {
            // libtest's "test crash_child ... " has no line end of its own.
            if let Some((_, n)) = next_line().split_once("ready ") {
                break n.parse::<u64>().expect("ready line");
            }
        };
        assert_eq!(
            ready, last,
            "round {round}: child recovered a different store"
        );
        // Kill after a random number of acks: 0 kills it during or right after recovery.
        let target = if always {
            rng.random_range(0..=60)
        } else {
            rng.random_range(0..=3000)
        };
        let mut acked = ready;
        while acked < ready + target {
            let line = next_line();
            if let Some(n) = line.strip_prefix("ack ") {
                let n: u64 = n.parse().expect("ack line");
                assert_eq!(n, acked + 1);
                acked = n;
            }
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
        // Acks printed before the kill landed count too.
        for line in rx.iter() {
            if let Some(n) = line.strip_prefix("ack ") {
                acked = n.parse().expect("ack line");
            }
        }
        reader.join().expect("reader thread");
        last = verify(dir.path(), acked);
        eprintln!("round {round}: {acked} acknowledged, store ends at {last}");
    }
    assert!(last > 0);
}
