//! Crash test with real processes: a child (this test binary, re-run with an environment
//! variable) appends and prints each acknowledged sequence; the parent kills it with
//! SIGKILL at a random point, reopens the store and checks that every acknowledged message
//! is there exactly once, in order, with its payload, and every acknowledged removal stays
//! removed. The child removes two messages in three (some erased) so that kills also land
//! in removals, compactions and block deletions. Rounds alternate `Always` and `Interval`
//! (which also promises to survive a killed process).

use std::collections::HashSet;
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
        if let Some(doomed) = removed_after(seq) {
            assert!(s.remove(doomed, seq % 2 == 0).expect("child remove"));
            println!("rm {doomed}");
        }
    }
}

/// The message the child removes after appending `seq`: two in three.
fn removed_after(seq: u64) -> Option<u64> {
    (seq > 3 && seq % 3 != 0).then(|| seq - 3)
}

/// What the parent saw.
#[derive(Default)]
struct Seen {
    acked: u64,
    removed: HashSet<u64>,
    /// Removals started (their trigger was acknowledged) but not acknowledged.
    maybe: HashSet<u64>,
}

impl Seen {
    fn line(&mut self, line: &str) {
        if let Some((_, n)) = line.split_once("ack ") {
            let n: u64 = n.parse().expect("ack line");
            assert_eq!(n, self.acked + 1, "acks out of order");
            self.acked = n;
            self.maybe.extend(removed_after(n));
        } else if let Some((_, n)) = line.split_once("rm ") {
            let n: u64 = n.parse().expect("rm line");
            assert!(self.maybe.remove(&n), "unexpected removal of {n}");
            self.removed.insert(n);
        }
    }
}

/// Checks the store against what was acknowledged; returns its last sequence.
fn verify(dir: &Path, seen: &Seen) -> u64 {
    let acked = seen.acked;
    let (s, report) = FileStore::open(dir, cfg(true)).expect("parent open");
    let st = s.state();
    assert_eq!(report.corrupt_records, 0, "{report:?}");
    // At most the one append in flight when the kill came is there unacknowledged.
    assert!(
        st.last_seq == acked || st.last_seq == acked + 1,
        "acked {acked}, store ends at {} ({report:?})",
        st.last_seq
    );
    let mut at = 0;
    let mut present = Vec::new();
    while let Some(m) = s.next_matching(at, None) {
        assert_eq!(&m.payload[..], &payload(m.seq)[..], "payload of {}", m.seq);
        assert_eq!(m.subject, format!("crash.{}", m.seq % 5));
        assert!(!seen.removed.contains(&m.seq), "removed {} is back", m.seq);
        at = m.seq + 1;
        present.push(m.seq);
    }
    assert_eq!(present.len() as u64, st.msgs);
    let present: HashSet<u64> = present.into_iter().collect();
    for q in 1..=acked {
        if !seen.removed.contains(&q) && !seen.maybe.contains(&q) {
            assert!(present.contains(&q), "acknowledged {q} is missing");
        }
    }
    st.last_seq
}

#[test]
fn kill9_rounds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    let mut last = 0;
    let mut seen = Seen::default();
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
        // An append in flight at the last kill may have landed unacknowledged.
        seen.acked = ready;
        while seen.acked < ready + target {
            seen.line(&next_line());
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap child");
        // What was printed before the kill landed counts too.
        for line in rx.iter() {
            seen.line(&line);
        }
        reader.join().expect("reader thread");
        last = verify(dir.path(), &seen);
        eprintln!(
            "round {round}: {} acknowledged, {} removals, store ends at {last}",
            seen.acked,
            seen.removed.len()
        );
    }
    assert!(last > 0);
}
