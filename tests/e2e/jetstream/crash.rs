//! Crash safety of midge's file store, end to end: a publisher sends messages and records
//! every PubAck while the server is killed with `kill -9` at random points, over several
//! rounds on the same store directory. After each restart every acknowledged message is
//! in the stream exactly once, at the sequence its PubAck named, and the stream holds the
//! publisher's messages in publish order (a message stored but not yet acknowledged when
//! the server died may be there too; nothing else may).
//!
//! midge only: nats-server 2.9.10 flushes its file store lazily (its block buffers are
//! written out on a timer), so it does not promise this after `kill -9`, and a comparison
//! would test its settings rather than midge. Rounds alternate `sync_interval: always`
//! (fsync before the PubAck) and the default (each append written to the OS before the
//! PubAck: a killed process loses nothing; only power loss is bounded by the interval).
//! The kill points come from a seed printed at the start, so a failure can be replayed with
//! `MIDGE_CRASH_SEED=<seed>`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream::Config};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use midge_tests::{ServerKind, TestServer};

use super::{eventually, WAIT};

const ROUNDS: usize = 6;
/// PubAcks outstanding at once: kills land while this many publishes are in flight.
const WINDOW: usize = 32;
const SUBJECT: &str = "crash.events";

/// A small xorshift generator: reproducible kill points without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn seed() -> u64 {
    std::env::var("MIDGE_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        })
}

fn config(store: &std::path::Path, always: bool) -> String {
    let sync = if always {
        "\n  sync_interval: always"
    } else {
        ""
    };
    format!(
        "jetstream {{\n  store_dir: {:?}{sync}\n}}\n",
        store.display().to_string()
    )
}

fn lock(acked: &Mutex<Vec<(u64, u64)>>) -> std::sync::MutexGuard<'_, Vec<(u64, u64)>> {
    acked
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn payload(id: u64) -> Bytes {
    // Some bulk, so that blocks fill and roll over during the rounds.
    Bytes::from(format!("{id:012}:{}", "x".repeat((id % 200) as usize)))
}

fn id_of(payload: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(payload);
    text.split(':')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("payload {text:?} is not one the publisher sent"))
}

/// Publishes `first_id..` with a window of outstanding acks, recording `(seq, id)` for every
/// PubAck, until the connection fails or the task is aborted.
async fn publish_until_killed(url: String, first_id: u64, acked: Arc<Mutex<Vec<(u64, u64)>>>) {
    let Ok(client) = async_nats::ConnectOptions::new()
        .max_reconnects(Some(0))
        .connect(url)
        .await
    else {
        return;
    };
    let js = jetstream::new(client);
    let mut inflight = FuturesUnordered::new();
    let mut id = first_id;
    loop {
        while inflight.len() < WINDOW {
            let Ok(ack) = js.publish(SUBJECT, payload(id)).await else {
                return;
            };
            let this = id;
            inflight.push(async move { (this, ack.await) });
            id += 1;
        }
        match inflight.next().await {
            Some((this, Ok(ack))) => lock(&acked).push((ack.sequence, this)),
            Some((_, Err(_))) | None => return,
        }
    }
}

/// Reads the whole stream and checks it against everything acknowledged so far; returns
/// the highest id stored.
async fn verify(server: &TestServer, acked: &[(u64, u64)], round: usize) -> u64 {
    let client = ok!(async_nats::connect(server.url()));
    let js = jetstream::new(client);
    let stream = eventually("the stream is recovered", WAIT, || {
        let js = &js;
        async move { js.get_stream("CRASH").await.ok() }
    })
    .await;
    let mut stream = stream;
    let info = ok!(stream.info());
    let state = info.state.clone();
    let max_acked_seq = acked.iter().map(|(s, _)| *s).max().unwrap_or(0);
    assert!(
        state.last_sequence >= max_acked_seq,
        "round {round}: last sequence {} is below the highest acknowledged {max_acked_seq}",
        state.last_sequence
    );
    assert_eq!(
        state.messages, state.last_sequence,
        "round {round}: the stream has gaps (nothing was deleted): {state:?}"
    );
    let mut ids = Vec::with_capacity(state.messages as usize);
    for seq in 1..=state.last_sequence {
        let msg = ok!(stream.get_raw_message(seq));
        ids.push(id_of(&msg.payload));
    }
    for pair in ids.windows(2) {
        assert!(
            pair[0] < pair[1],
            "round {round}: ids out of order or repeated: {} then {}",
            pair[0],
            pair[1]
        );
    }
    for &(seq, id) in acked {
        let at = usize::try_from(seq - 1).expect("sequence fits");
        assert_eq!(
            ids.get(at).copied(),
            Some(id),
            "round {round}: acknowledged message {id} is not at its sequence {seq}"
        );
    }
    ids.last().copied().unwrap_or(0)
}

#[tokio::test]
async fn acked_messages_survive_kill_9_at_random_points() {
    let seed = seed();
    println!("MIDGE_CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let store = tempfile::tempdir().expect("store dir");
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut next_id = 1;
    let mut server = TestServer::start(ServerKind::Midge, &config(store.path(), true)).await;
    {
        let client = ok!(async_nats::connect(server.url()));
        let js = jetstream::new(client);
        ok!(js.create_stream(Config {
            name: "CRASH".into(),
            subjects: vec![SUBJECT.into()],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }));
    }
    for round in 0..ROUNDS {
        let before = lock(&acked).len() as u64;
        let target = before + rng.between(20, 400);
        let publisher = tokio::spawn(publish_until_killed(server.url(), next_id, acked.clone()));
        eventually(
            "the publisher gets its acks",
            Duration::from_secs(30),
            || {
                let acked = acked.clone();
                async move { (lock(&acked).len() as u64 >= target).then_some(()) }
            },
        )
        .await;
        // kill -9 while publishes are in flight, then stop the publisher: what it saw
        // acknowledged is the promise the store must keep.
        drop(server);
        publisher.abort();
        let _ = publisher.await;
        let always = round % 2 == 1;
        server = TestServer::start(ServerKind::Midge, &config(store.path(), always)).await;
        let snapshot = lock(&acked).clone();
        let highest = verify(&server, &snapshot, round).await;
        next_id = highest.max(snapshot.iter().map(|(_, id)| *id).max().unwrap_or(0)) + 1;
    }
    let total = lock(&acked).len();
    assert!(total >= ROUNDS * 20, "only {total} acknowledged messages");
}
