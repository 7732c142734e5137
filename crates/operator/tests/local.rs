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
    // Polled: when two servers dial each other at the same moment, each may keep the
    // connection the other drops (nats-server has the same race), and the pair reconnects.
    let monitor = clusters.servers[0].monitor_url().expect("monitoring is on");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let routez: serde_json::Value =
            serde_json::from_str(&http_get(&monitor, "/routez").await).expect("/routez is JSON");
        if routez["num_routes"] == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/routez never showed 2 routes: {routez}"
        );
        tokio::time::sleep(POLL).await;
    }

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

/// `GET path` as JSON.
async fn http_json(base: &str, path: &str) -> serde_json::Value {
    let body = http_get(base, path).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path} is not JSON ({e}): {body}"))
}

/// The number of leaf node connections `/leafz` reports.
async fn leaf_count(server: &LocalServer) -> u64 {
    let monitor = server.monitor_url().expect("monitoring is on");
    http_json(&monitor, "/leafz").await["leafnodes"]
        .as_u64()
        .unwrap_or(0)
}

/// Publishes `payload` on `subject` from `publisher` until `messages` yields it, failing
/// at the deadline. Interest crosses a leaf connection (and the hub's routes) after the
/// subscription, with no event to wait on; a message published before it arrives is
/// dropped, so the publish is repeated until one gets through.
async fn deliver(
    publisher: &async_nats::Client,
    messages: &mut async_nats::Subscriber,
    subject: &str,
    payload: &str,
) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        publisher
            .publish(subject.to_string(), payload.to_string().into())
            .await
            .expect("published");
        publisher.flush().await.expect("publish flushed");
        match tokio::time::timeout(Duration::from_millis(250), messages.next()).await {
            Ok(Some(message)) => {
                assert_eq!(&message.payload[..], payload.as_bytes());
                return;
            }
            Ok(None) => panic!("subscription to {subject} closed"),
            Err(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "timed out: {payload} on {subject}"
            ),
        }
    }
}

/// The cloud + Pi-edge sample under `midge-operator local`: the `cloud` pool is a mesh of
/// its own, the leaf pool `edge` is routed only within itself, each edge server holds one
/// leaf connection to a cloud server (through the rendered remotes, pointed at the cloud
/// servers' loopback leaf ports, logged in with the generated leaf credentials), and a
/// client of an edge server and a client of a cloud server exchange messages both ways;
/// a leaf server with a wrong password, or none, is refused by the cloud servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_sample_forms_a_hub_and_leaf_topology() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/samples/natscluster-edge.yaml"
    ))
    .expect("sample manifest");
    let clusters = start(&yaml).await.expect("local cluster starts");
    let names: Vec<&str> = clusters.servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "fleet-cloud-0",
            "fleet-cloud-1",
            "fleet-cloud-2",
            "fleet-edge-0",
            "fleet-edge-1"
        ]
    );
    let (cloud, edge) = clusters.servers.split_at(3);

    // Routes never cross roles: each pool is a mesh of its own.
    for (pool, servers) in [("cloud", cloud), ("edge", edge)] {
        for server in servers {
            let mut others: Vec<String> = servers
                .iter()
                .filter(|s| s.name != server.name)
                .map(|s| s.name.clone())
                .collect();
            others.sort();
            eventually(
                &format!("{} routes to its {pool} peers", server.name),
                || remote_names(server) == others,
            )
            .await;
        }
    }
    // Every edge server has its uplink; the cloud servers hold the two between them.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut tick = tokio::time::interval(POLL);
    loop {
        let mut edge_links = Vec::new();
        for server in edge {
            edge_links.push(leaf_count(server).await);
        }
        let mut hub_links = 0;
        for server in cloud {
            hub_links += leaf_count(server).await;
        }
        if edge_links == [1, 1] && hub_links == 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: uplinks edge {edge_links:?}, hub side {hub_links}"
        );
        tick.tick().await;
    }
    // The edge servers' config is their own: the sample's smaller limits.
    for server in edge {
        let varz = http_json(&server.monitor_url().expect("monitoring"), "/varz").await;
        assert_eq!(varz["max_connections"], 1024, "{}", server.name);
    }
    let varz = http_json(&cloud[0].monitor_url().expect("monitoring"), "/varz").await;
    assert_eq!(varz["max_connections"], 65536);

    let edge_client = async_nats::connect(edge[0].client_url())
        .await
        .expect("edge client connects");
    let cloud_client = async_nats::connect(cloud[2].client_url())
        .await
        .expect("cloud client connects");

    let mut up = cloud_client.subscribe("telemetry.up").await.expect("sub");
    cloud_client.flush().await.expect("subscription sent");
    deliver(&edge_client, &mut up, "telemetry.up", "from the edge").await;

    let mut down = edge_client.subscribe("commands.down").await.expect("sub");
    edge_client.flush().await.expect("subscription sent");
    deliver(&cloud_client, &mut down, "commands.down", "from the cloud").await;

    drop((up, down, edge_client, cloud_client));

    // The uplinks above logged in with the credentials generated for the cluster (what
    // the Secret fleet-leaf-credentials would hold). A leaf server with them is taken by
    // the hub, one with a wrong password is refused.
    let creds = clusters
        .leaf_credentials
        .get("iot/fleet")
        .expect("leaf credentials were generated")
        .clone();
    assert_eq!(creds.user, "leaf");
    let hub = cloud[0]
        .leafnodes_url
        .clone()
        .expect("the cloud servers listen for leaf nodes");
    let with_password = |password: &str| {
        hub.replace(
            "nats-leaf://",
            &format!("nats-leaf://{}:{password}@", creds.user),
        )
    };
    let good = stray_leaf(&with_password(&creds.password)).await;
    let bad = stray_leaf(&with_password("not-the-password")).await;
    let unauthenticated = stray_leaf(&hub).await;
    eventually_async("the leaf with the credentials attaches", || async {
        leaf_count(&good).await == 1
    })
    .await;
    // Both others have dialled (and been refused) by now: their first dial went out
    // with the good one's, and each retries every second. Three more retries, then none
    // may have an uplink, and the hub holds the two edge servers' and the good one's.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(leaf_count(&bad).await, 0, "a wrong password is refused");
    assert_eq!(leaf_count(&unauthenticated).await, 0, "no user is refused");
    let mut hub_links = 0;
    for server in cloud {
        hub_links += leaf_count(server).await;
    }
    assert_eq!(hub_links, 3);
    for stray in [good, bad, unauthenticated] {
        tokio::time::timeout(TIMEOUT, stray.server.shutdown())
            .await
            .expect("a stray leaf shuts down");
    }
    tokio::time::timeout(TIMEOUT, clusters.shutdown())
        .await
        .expect("every server shuts down");
}

/// A server outside the manifest whose one remote is `url` (a core server's leaf node
/// port), with monitoring on, as a [`LocalServer`] for [`leaf_count`].
async fn stray_leaf(url: &str) -> LocalServer {
    let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
    let options = midge::Options {
        host: loopback,
        port: 0,
        http_host: Some(loopback),
        http_port: Some(0),
        leafnodes: midge::options::LeafOptions {
            remotes: vec![midge::options::RemoteLeaf {
                urls: vec![url.to_string()],
                ..Default::default()
            }],
            ..Default::default()
        },
        ..midge::Options::default()
    };
    LocalServer {
        cluster: "stray".into(),
        pool: "stray".into(),
        name: "stray".into(),
        server: midge::Server::start(options)
            .await
            .expect("a stray leaf starts"),
        leafnodes_url: None,
        store_dir: None,
    }
}

/// [`eventually`] for a check that has to await (an HTTP request).
async fn eventually_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(POLL).await;
    }
}
