//! Support for midge's end-to-end tests: real server processes, raw clients, transcripts.
//!
//! - [`server`]: start midge or the nats-server reference from a config text on a random
//!   port ([`TestServer`]), killed on drop.
//! - [`client`]: [`RawClient`], a TCP client asserting on exact bytes, with whole or
//!   byte-at-a-time feeding ([`Feed`]).
//! - [`transcript`]: record what a scripted session receives, masked of per-run values, so
//!   two servers can be compared.
//! - this file: which servers a test runs against ([`kinds`], [`both`], [`matrix`]).
//!
//! By default every test runs against both servers; midge is looked up at `MIDGE_BIN` or
//! `<target>/debug/midge` (build it with `cargo build -p midge`). Set
//! `MIDGE_TESTS_REFERENCE_ONLY=1` to run against nats-server only.

pub mod client;
pub mod server;
pub mod transcript;

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

pub use client::{escaped, Feed, FrameRead, RawClient, DEADLINE, QUIET};
pub use server::{free_port, ServerBuilder, ServerKind, TestServer};

/// Whether `MIDGE_TESTS_REFERENCE_ONLY` asks to skip midge.
pub fn reference_only() -> bool {
    std::env::var("MIDGE_TESTS_REFERENCE_ONLY")
        .map(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
        .unwrap_or(false)
}

/// The servers tests run against: nats-server, and midge unless [`reference_only`].
pub fn kinds() -> Vec<ServerKind> {
    if reference_only() {
        vec![ServerKind::NatsServer]
    } else {
        vec![ServerKind::NatsServer, ServerKind::Midge]
    }
}

/// Both ways of feeding input.
pub const FEEDS: [Feed; 2] = [Feed::Whole, Feed::Bytewise];

/// Runs `scenario` once per server kind (see [`kinds`]), concurrently; a failure names the kind.
pub async fn both<F, Fut>(scenario: F)
where
    F: Fn(ServerKind) -> Fut,
    Fut: Future<Output = ()>,
{
    run_on(kinds(), scenario).await;
}

/// Runs `scenario` once per kind in `kinds`, concurrently; a failure names the kind. For
/// suites that choose their own servers (the JetStream suite gates midge per feature).
pub async fn run_on<F, Fut>(kinds: Vec<ServerKind>, scenario: F)
where
    F: Fn(ServerKind) -> Fut,
    Fut: Future<Output = ()>,
{
    run_all(
        kinds
            .into_iter()
            .map(|kind| (kind.to_string(), scenario(kind))),
    )
    .await;
}

/// Runs `scenario` for every server kind and both [`FEEDS`], concurrently; a failure names
/// the kind and the feed.
pub async fn matrix<F, Fut>(scenario: F)
where
    F: Fn(ServerKind, Feed) -> Fut,
    Fut: Future<Output = ()>,
{
    let runs = kinds().into_iter().flat_map(|kind| {
        FEEDS
            .into_iter()
            .map(move |feed| (format!("{kind}, {feed}"), (kind, feed)))
    });
    run_all(runs.map(|(name, (kind, feed))| (name, scenario(kind, feed)))).await;
}

async fn run_all<Fut: Future<Output = ()>>(runs: impl Iterator<Item = (String, Fut)>) {
    let results = futures::future::join_all(
        runs.map(|(name, run)| AssertUnwindSafe(run).catch_unwind().map(|r| (name, r))),
    )
    .await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|(name, result)| {
            let payload = result.err()?;
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            Some(format!("[{name}] {message}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Connects a [`RawClient`] to `server`, labelled with the server kind and `feed`.
pub async fn connect(server: &TestServer, feed: Feed) -> RawClient {
    RawClient::connect(server.addr())
        .await
        .feeding(feed)
        .labelled(format!("{} {feed} :{}", server.kind(), server.port()))
}

/// Returns once the server has processed everything `c` sent before: async-nats's
/// `flush` only writes, so a round trip through the client's own subscription proves it.
pub async fn round_trip(c: &async_nats::Client) {
    use futures::StreamExt;
    let inbox = c.new_inbox();
    let mut sub = c.subscribe(inbox.clone()).await.expect("subscribe");
    c.publish(inbox, "sync".into()).await.expect("publish");
    tokio::time::timeout(std::time::Duration::from_secs(10), sub.next())
        .await
        .expect("round trip in time")
        .expect("subscription open");
}

/// A full mesh of `kinds.len()` servers (any mix of midge and nats-server) on loopback,
/// each started with `config` plus its `server_name` (`s0`, `s1`, ...) and a `cluster {}`
/// block named `cluster` listing every member's route port.
pub async fn start_mesh(kinds: &[ServerKind], config: &str, cluster: &str) -> Vec<TestServer> {
    let ports: Vec<(u16, u16)> = kinds.iter().map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r)| format!("\"nats://127.0.0.1:{r}\""))
        .collect();
    let mut servers = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let text = format!(
            "{config}server_name: s{i}\ncluster {{\n  name: {cluster}\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            ports[i].1,
            routes.join(", ")
        );
        servers.push(
            TestServer::builder(*kind)
                .config(&text)
                .arg("-p")
                .arg(&ports[i].0.to_string())
                .start()
                .await,
        );
    }
    servers
}
