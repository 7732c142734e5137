//! `midge-operator local` with the sample manifest: the servers form a full mesh (seen by
//! each server and through `/routez`) and a message crosses it.

use std::time::Duration;

use futures::StreamExt as _;
use midge_operator::local::{start, LocalServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Generous: a debug build on a loaded two-core machine.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How often a condition that has no notification to wait on is checked again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds, failing the test at the deadline. Route handshakes and
/// interest propagation are asynchronous and the broker exposes no event for them.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut tick = tokio::time::interval(POLL);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tick.tick().await;
    }
}

/// `GET path` over a plain TCP connection; the body of the response.
async fn http_get(base: &str, path: &str) -> String {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("monitor port accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("request sent");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .expect("response has a body")
}

fn remote_names(server: &LocalServer) -> Vec<String> {
    let mut names: Vec<String> = server
        .server
        .routes()
        .into_iter()
        .map(|r| r.remote_name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_cluster_forms_a_mesh_and_carries_a_message() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/samples/natscluster.yaml"
    ))
    .expect("sample manifest");
    let clusters = start(&yaml).await.expect("local cluster starts");
    let names: Vec<&str> = clusters.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["demo-default-0", "demo-default-1", "demo-default-2"]
    );

    for server in &clusters.servers {
        let mut others: Vec<String> = names
            .iter()
            .filter(|n| **n != server.name)
            .map(|n| n.to_string())
            .collect();
        others.sort();
        eventually(&format!("{} routes to the other two", server.name), || {
            remote_names(server) == others
        })
        .await;
    }
    let monitor = clusters.servers[0].monitor_url().expect("monitoring is on");
    let routez: serde_json::Value =
        serde_json::from_str(&http_get(&monitor, "/routez").await).expect("/routez is JSON");
    assert_eq!(routez["num_routes"], 2, "{routez}");

    let (first, last) = (&clusters.servers[0], &clusters.servers[2]);
    let subscriber = async_nats::connect(last.client_url())
        .await
        .expect("subscriber connects");
    let mut messages = subscriber.subscribe("greeting").await.expect("subscribed");
    subscriber.flush().await.expect("subscription sent");
    // The publisher's server forwards only once it has learned the interest from the route.
    eventually("server 0 learns the subscription on server 2", || {
        first
            .server
            .routes()
            .iter()
            .any(|r| r.remote_name == last.name && r.subscriptions.iter().any(|s| s == "greeting"))
    })
    .await;
    let publisher = async_nats::connect(first.client_url())
        .await
        .expect("publisher connects");
    publisher
        .publish("greeting", "hello across the mesh".into())
        .await
        .expect("published");
    publisher.flush().await.expect("publish flushed");
    let message = tokio::time::timeout(TIMEOUT, messages.next())
        .await
        .expect("message arrives in time")
        .expect("subscription open");
    assert_eq!(&message.payload[..], b"hello across the mesh");

    drop(messages);
    drop(publisher);
    drop(subscriber);
    tokio::time::timeout(TIMEOUT, clusters.shutdown())
        .await
        .expect("every server shuts down");
}
