//! Clusters of real server processes on loopback: mesh formation (full list and seed only,
//! any start order, own address in the list), pub/sub, queue groups and request/reply across
//! servers, no-responders, failure and restart, and mixed midge + nats-server clusters.
//!
//! Conditions are waited for with deadlines, never with fixed sleeps: interest travels
//! between servers asynchronously, so a check publishes until the message arrives.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use midge_tests::{free_port, ServerKind, TestServer};

use ServerKind::{Midge, NatsServer};

/// How long a cluster may take to form or heal.
const MESH_DEADLINE: Duration = Duration::from_secs(20);
/// How long one message may take to arrive once interest is known.
const MSG_DEADLINE: Duration = Duration::from_secs(5);

/// Ports of one cluster member, chosen up front so routes lists can name every member and a
/// restarted server comes back where its peers expect it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    pub(crate) client: u16,
    pub(crate) route: u16,
}

pub(crate) fn members(n: usize) -> Vec<Member> {
    (0..n)
        .map(|_| Member {
            client: free_port(),
            route: free_port(),
        })
        .collect()
}

/// A member's config: cluster "t" on `me.route`, soliciting `routes` (route ports).
fn config(name: &str, me: Member, routes: &[u16]) -> String {
    let routes: Vec<String> = routes
        .iter()
        .map(|p| format!("\"nats://127.0.0.1:{p}\""))
        .collect();
    format!(
        "server_name: {name}\ncluster {{\n  name: t\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
        me.route,
        routes.join(", ")
    )
}

async fn start(kind: ServerKind, name: &str, me: Member, routes: &[u16]) -> TestServer {
    TestServer::builder(kind)
        .config(&config(name, me, routes))
        .arg("-p")
        .arg(&me.client.to_string())
        .start()
        .await
}

pub(crate) async fn client(server: &TestServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("connect to {} {}: {e}", server.kind(), server.url()))
}

/// Publishes on `from` until a subscriber on `to` gets the message: proves `to`'s interest
/// reached `from` over a direct route (servers forward one hop only).
pub(crate) async fn crosses(from: &async_nats::Client, to: &async_nats::Client, what: &str) {
    let subject = format!("probe.{}", rand_token());
    let mut sub = to.subscribe(subject.clone()).await.expect("subscribe");
    to.flush().await.expect("flush");
    let deadline = Instant::now() + MESH_DEADLINE;
    loop {
        from.publish(subject.clone(), "x".into())
            .await
            .expect("publish");
        from.flush().await.expect("flush");
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await {
            return;
        }
        assert!(Instant::now() < deadline, "no route for {what}");
    }
}

/// Every server reaches every other one directly.
pub(crate) async fn full_mesh(servers: &[&TestServer]) {
    let mut clients = Vec::new();
    for s in servers {
        clients.push(client(s).await);
    }
    for (i, a) in clients.iter().enumerate() {
        for (j, b) in clients.iter().enumerate() {
            if i != j {
                let what = format!(
                    "{} :{} -> {} :{}",
                    servers[i].kind(),
                    servers[i].port(),
                    servers[j].kind(),
                    servers[j].port()
                );
                crosses(a, b, &what).await;
            }
        }
    }
}

pub(crate) fn rand_token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn assert_quiet_log(server: &TestServer) {
    let log = server.log_text();
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[ERR]") || (l.contains("[WRN]") && !l.contains("connect to route")))
        .collect();
    assert!(noisy.is_empty(), "unexpected log lines: {noisy:#?}");
}

#[tokio::test]
async fn full_list_including_self_forms_a_mesh_in_any_start_order() {
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    // Started last-first: the first servers' routes point at servers that do not exist yet.
    let c = start(Midge, "c", m[2], &all).await;
    let a = start(Midge, "a", m[0], &all).await;
    let b = start(Midge, "b", m[1], &all).await;
    full_mesh(&[&a, &b, &c]).await;
    // Its own address in the list is dropped silently.
    for s in [&a, &b, &c] {
        assert_quiet_log(s);
    }
}

#[tokio::test]
async fn seed_only_config_joins_the_full_mesh_by_gossip() {
    let m = members(3);
    let seed = start(Midge, "seed", m[0], &[]).await;
    let b = start(Midge, "b", m[1], &[m[0].route]).await;
    let c = start(Midge, "c", m[2], &[m[0].route]).await;
    // b and c only know the seed: a direct b <-> c route exists only through gossip.
    full_mesh(&[&seed, &b, &c]).await;
}

/// A queue group with members on every server gets each message exactly once in total.
pub(crate) async fn queue_exactly_once(servers: &[&TestServer]) {
    let publisher = client(servers[0]).await;
    let mut members = Vec::new();
    let subject = format!("work.{}", rand_token());
    for (i, s) in servers.iter().enumerate() {
        // Two members on the second server: weights differ between servers.
        for _ in 0..if i == 1 { 2 } else { 1 } {
            let c = client(s).await;
            let q = c
                .queue_subscribe(subject.clone(), "workers".into())
                .await
                .expect("queue subscribe");
            c.flush().await.expect("flush");
            // Interest travels in order on each route: once this plain probe crosses from
            // the publisher's server, the queue interest sent before it has arrived too.
            crosses(&publisher, &c, "queue member").await;
            members.push((i, c, q));
        }
    }
    const N: usize = 300;
    for n in 0..N {
        publisher
            .publish(subject.clone(), n.to_string().into())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (server, _client, mut sub) in members {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let _ = tx.send((server, msg.payload));
            }
        });
    }
    let mut seen = HashSet::new();
    let mut per_server = vec![0usize; servers.len()];
    let deadline = tokio::time::Instant::now() + MSG_DEADLINE;
    while seen.len() < N {
        let (server, payload) = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {N} queue messages arrived", seen.len()))
            .expect("channel open");
        assert!(seen.insert(payload.clone()), "{payload:?} delivered twice");
        per_server[server] += 1;
    }
    // Nothing more may come: a duplicate would arrive right behind the rest.
    if let Ok(Some((_, extra))) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
    {
        panic!("extra delivery {extra:?}");
    }
    assert!(
        per_server.iter().all(|&n| n > 0),
        "every server's members get a share: {per_server:?}"
    );
}

async fn request_reply(from: &TestServer, to: &TestServer) {
    let responder = client(to).await;
    let subject = format!("svc.{}", rand_token());
    let mut requests = responder.subscribe(subject.clone()).await.expect("sub");
    responder.flush().await.expect("flush");
    let r = responder.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            if let Some(reply) = msg.reply {
                let _ = r.publish(reply, msg.payload).await;
                let _ = r.flush().await;
            }
        }
    });
    let requester = client(from).await;
    let deadline = Instant::now() + MESH_DEADLINE;
    loop {
        // Until the responder's interest has crossed, the requester is told "no responders".
        match tokio::time::timeout(
            MSG_DEADLINE,
            requester.request(subject.clone(), "ping".into()),
        )
        .await
        {
            Ok(Ok(reply)) => {
                assert_eq!(&reply.payload[..], b"ping");
                return;
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
            other => panic!("request {} -> {}: {other:?}", from.kind(), to.kind()),
        }
        assert!(Instant::now() < deadline, "responder never reachable");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn queue_groups_request_reply_and_no_responders_across_servers() {
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let a = start(Midge, "a", m[0], &all).await;
    let b = start(Midge, "b", m[1], &all).await;
    let c = start(Midge, "c", m[2], &all).await;
    full_mesh(&[&a, &b, &c]).await;
    queue_exactly_once(&[&a, &b, &c]).await;
    request_reply(&a, &c).await;
    request_reply(&c, &b).await;

    // Nobody anywhere: no responders, at once.
    let requester = client(&a).await;
    let err = requester
        .request(format!("nobody.{}", rand_token()), "x".into())
        .await
        .expect_err("no responders");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test]
async fn killed_server_restarts_and_the_mesh_heals_under_load() {
    kill_and_restart([Midge, Midge, Midge]).await;
}

#[tokio::test]
async fn killed_midge_in_a_nats_server_cluster_rejoins() {
    if midge_tests::reference_only() {
        return;
    }
    kill_and_restart([NatsServer, Midge, NatsServer]).await;
}

/// Kills the second server (SIGKILL) under a steady publish load and restarts it.
async fn kill_and_restart(kinds: [ServerKind; 3]) {
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let a = start(kinds[0], "a", m[0], &all).await;
    let b = start(kinds[1], "b", m[1], &all).await;
    let c = start(kinds[2], "c", m[2], &all).await;
    full_mesh(&[&a, &b, &c]).await;

    // Publisher on a; one subscriber on c (a survivor) and one that only knows b's URL
    // (it learns the others from INFO connect_urls).
    let subject = format!("load.{}", rand_token());
    let publisher = client(&a).await;
    let survivor = client(&c).await;
    let mut survivor_sub = survivor.subscribe(subject.clone()).await.expect("sub");
    let movable = async_nats::ConnectOptions::new()
        .connect(b.url())
        .await
        .expect("connect to b");
    let mut movable_sub = movable.subscribe(subject.clone()).await.expect("sub");
    movable.flush().await.expect("flush");
    crosses(&publisher, &survivor, "a -> c").await;
    crosses(&publisher, &movable, "a -> b").await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn({
        let (stop, sent, subject) = (stop.clone(), sent.clone(), subject.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                let _ = publisher
                    .publish(subject.clone(), n.to_string().into())
                    .await;
                let _ = publisher.flush().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let seq = |m: &async_nats::Message| -> u64 {
        std::str::from_utf8(&m.payload)
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("numbered payload")
    };
    next(&mut survivor_sub).await;
    next(&mut movable_sub).await;

    drop(b); // SIGKILL
    let killed_at = sent.load(Ordering::Relaxed);
    // The survivor keeps receiving without a gap longer than the deadline.
    loop {
        if seq(&next(&mut survivor_sub).await) > killed_at + 50 {
            break;
        }
    }
    // The client that was on b reconnects to a or c and gets new messages again.
    let deadline = Instant::now() + MESH_DEADLINE;
    loop {
        let msg = tokio::time::timeout(MESH_DEADLINE, movable_sub.next())
            .await
            .expect("moved client receives again")
            .expect("subscription open");
        if seq(&msg) > killed_at + 20 {
            break;
        }
        assert!(Instant::now() < deadline, "moved client did not recover");
    }

    // b comes back on its ports; every route is re-established.
    let b = start(kinds[1], "b", m[1], &all).await;
    full_mesh(&[&a, &b, &c]).await;
    stop.store(true, Ordering::Relaxed);
    let _ = load.await;
    // And the survivor never stopped: everything after the kill is in order, a few in flight at most.
    next(&mut survivor_sub).await;
}

async fn next(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(MSG_DEADLINE, sub.next())
        .await
        .expect("delivery continues")
        .expect("subscription open")
}

async fn interop(kinds: [ServerKind; 3]) {
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let a = start(kinds[0], "a", m[0], &all).await;
    let b = start(kinds[1], "b", m[1], &all).await;
    let c = start(kinds[2], "c", m[2], &all).await;
    full_mesh(&[&a, &b, &c]).await;
    // Queue members everywhere, published from each kind in turn.
    queue_exactly_once(&[&a, &b, &c]).await;
    queue_exactly_once(&[&c, &a, &b]).await;
    for (from, to) in [(&a, &c), (&c, &a), (&b, &c), (&c, &b)] {
        request_reply(from, to).await;
    }
    let requester = client(&c).await;
    let err = requester
        .request(format!("nobody.{}", rand_token()), "x".into())
        .await
        .expect_err("no responders");
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
}

#[tokio::test]
async fn mixed_cluster_two_midge_one_nats_server() {
    if midge_tests::reference_only() {
        return;
    }
    interop([Midge, Midge, NatsServer]).await;
}

#[tokio::test]
async fn mixed_cluster_one_midge_two_nats_server() {
    if midge_tests::reference_only() {
        return;
    }
    interop([NatsServer, Midge, NatsServer]).await;
}

#[tokio::test]
async fn nats_servers_join_a_midge_seed_by_gossip() {
    if midge_tests::reference_only() {
        return;
    }
    let m = members(3);
    let seed = start(Midge, "seed", m[0], &[]).await;
    let b = start(NatsServer, "b", m[1], &[m[0].route]).await;
    let c = start(NatsServer, "c", m[2], &[m[0].route]).await;
    // b <-> c exists only if midge forwarded each one's INFO to the other.
    full_mesh(&[&seed, &b, &c]).await;
}

#[tokio::test]
async fn midge_joins_a_nats_server_seed_by_gossip() {
    if midge_tests::reference_only() {
        return;
    }
    let m = members(3);
    let seed = start(NatsServer, "seed", m[0], &[]).await;
    let b = start(Midge, "b", m[1], &[m[0].route]).await;
    let c = start(NatsServer, "c", m[2], &[m[0].route]).await;
    full_mesh(&[&seed, &b, &c]).await;
}

/// Rewrites `server`'s config file, sends SIGHUP, and waits until the `nth` reload (from
/// the start) is logged as done.
pub(crate) async fn reload_config(server: &TestServer, text: &str, nth: usize) {
    std::fs::write(server.config_path(), text).expect("rewrite config");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + MESH_DEADLINE;
    while server
        .log_text()
        .matches("Reloaded server configuration")
        .count()
        < nth
    {
        assert!(
            Instant::now() < deadline,
            "reload {nth} not done:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reload_adding_a_route_grows_the_mesh_without_restarts() {
    let m = members(3);
    let a_conf = |routes: &[u16]| config("a", m[0], routes);
    let a = start(Midge, "a", m[0], &[m[1].route]).await;
    let b = start(Midge, "b", m[1], &[m[0].route]).await;
    let c = start(Midge, "c", m[2], &[]).await;
    full_mesh(&[&a, &b]).await;
    // A client connected before the reload stays connected through it.
    let on_a = client(&a).await;
    let on_c = client(&c).await;
    reload_config(&a, &a_conf(&[m[1].route, m[2].route]), 1).await;
    assert!(
        a.log_text().contains("Added route 127.0.0.1:"),
        "{}",
        a.log_text()
    );
    crosses(&on_a, &on_c, "a -> c after the reload").await;
    crosses(&on_c, &on_a, "c -> a after the reload").await;
    // b <-> c: neither lists the other; a gossips each to the other.
    full_mesh(&[&a, &b, &c]).await;
    for s in [&a, &b, &c] {
        assert_quiet_log(s);
    }
}

#[tokio::test]
async fn reload_removing_a_route_stops_soliciting_it() {
    let m = members(3);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let a = start(Midge, "a", m[0], &all).await;
    let b = start(Midge, "b", m[1], &all).await;
    let c = start(Midge, "c", m[2], &all).await;
    full_mesh(&[&a, &b, &c]).await;
    // Scale down: c leaves a's and b's lists, then stops. (c still lists a and b until it
    // stops, so it may dial them again in between: those routes are not configured on a
    // and b, so nobody retries them once c is gone.)
    let kept = [m[0].route, m[1].route];
    reload_config(&a, &config("a", m[0], &kept), 1).await;
    reload_config(&b, &config("b", m[1], &kept), 1).await;
    let c_route = format!("127.0.0.1:{}", m[2].route);
    drop(c);
    let (log_a, log_b) = (a.log_text().len(), b.log_text().len());

    // a and b keep delivering: a steady stream from a to b (and one probe back) arrives
    // in full while c's routes close. Its ~1 s also covers the first retry a configured
    // route would make (well under a second after a close), which would log a warning.
    let (ca, cb) = (client(&a).await, client(&b).await);
    crosses(&cb, &ca, "b -> a").await;
    let subject = format!("steady.{}", rand_token());
    let mut sub = cb.subscribe(subject.clone()).await.expect("sub");
    cb.flush().await.expect("flush");
    crosses(&ca, &cb, "a -> b").await;
    const N: u64 = 100;
    for n in 0..N {
        ca.publish(subject.clone(), n.to_string().into())
            .await
            .expect("publish");
        ca.flush().await.expect("flush");
        let msg = next(&mut sub).await;
        assert_eq!(&msg.payload[..], n.to_string().as_bytes());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (s, from) in [(&a, log_a), (&b, log_b)] {
        let log = s.log_text();
        let retries: Vec<&str> = log[from..]
            .lines()
            .filter(|l| l.contains(&c_route) && l.contains("connect to route"))
            .collect();
        assert!(
            retries.is_empty(),
            "removed route still dialled: {retries:#?}"
        );
        assert_quiet_log(s);
    }
}

/// Waits until the server's log has a line containing `needle`.
pub(crate) async fn wait_log(server: &TestServer, needle: &str) {
    let deadline = Instant::now() + MESH_DEADLINE;
    while !server.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{} never logged {needle:?}:\n{}",
            server.kind(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn host_names_are_resolved_and_missing_ones_do_not_block_the_mesh() {
    let m = members(3);
    // Kubernetes style: names, one of which does not resolve (a pod not created yet).
    let routes = |name: &str, me: Member| {
        format!(
            "server_name: {name}\ncluster {{\n  name: t\n  listen: 127.0.0.1:{}\n  routes: [{}, \"nats://no-such-pod.invalid:6222\"]\n}}\n",
            me.route,
            m.iter()
                .map(|o| format!("\"nats://localhost:{}\"", o.route))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut servers = Vec::new();
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        servers.push(
            TestServer::builder(Midge)
                .config(&routes(name, m[i]))
                .arg("-p")
                .arg(&m[i].client.to_string())
                .start()
                .await,
        );
    }
    full_mesh(&servers.iter().collect::<Vec<_>>()).await;
}

#[tokio::test]
async fn route_credentials_and_cluster_names_are_checked() {
    let m = members(4);
    let a = TestServer::builder(Midge)
        .config(&format!(
            "cluster {{ name: t, listen: 127.0.0.1:{}, authorization {{ user: ru, password: rp }} }}\n",
            m[0].route
        ))
        .start()
        .await;
    let with = |name: &str, me: Member, url: String| {
        format!("server_name: {name}\ncluster {{ name: {name}x, listen: 127.0.0.1:{}, routes: [\"{url}\"] }}\n", me.route)
            .replace(&format!("name: {name}x"), if name == "other" { "name: other" } else { "name: t" })
    };
    let good = TestServer::builder(Midge)
        .config(&with(
            "good",
            m[1],
            format!("nats://ru:rp@127.0.0.1:{}", m[0].route),
        ))
        .start()
        .await;
    full_mesh(&[&a, &good]).await;
    let _bad_pass = TestServer::builder(Midge)
        .config(&with(
            "bad",
            m[2],
            format!("nats://ru:wrong@127.0.0.1:{}", m[0].route),
        ))
        .start()
        .await;
    wait_log(&a, "Route authentication error").await;
    let _other = TestServer::builder(Midge)
        .config(&with(
            "other",
            m[3],
            format!("nats://ru:rp@127.0.0.1:{}", m[0].route),
        ))
        .start()
        .await;
    wait_log(
        &a,
        "Rejecting connection, cluster name \"other\" does not match \"t\"",
    )
    .await;
    assert_eq!(
        a.log_text().matches("registered").count(),
        1,
        "only the good peer is a route:\n{}",
        a.log_text()
    );
}

#[tokio::test]
async fn clients_get_members_connect_urls_and_async_info_on_change() {
    for kind in [Midge, NatsServer] {
        if kind == Midge && midge_tests::reference_only() {
            continue;
        }
        let m = members(2);
        let a = start(kind, "a", m[0], &[]).await;
        let mut raw = midge_tests::RawClient::connect(a.addr()).await;
        let info = raw.handshake(r#"{"verbose":false,"protocol":1}"#).await;
        let own = format!("127.0.0.1:{}", m[0].client);
        // A lone server lists nobody.
        assert_eq!(info.get("connect_urls"), None, "{kind}");
        let _b = start(kind, "b", m[1], &[m[0].route]).await;
        let want = format!("127.0.0.1:{}", m[1].client);
        loop {
            match raw.read_frame(MESH_DEADLINE).await {
                midge_tests::FrameRead::Frame(f) if f.starts_with(b"INFO ") => {
                    let json: serde_json::Value =
                        serde_json::from_slice(&f[5..]).expect("INFO json");
                    let urls = json["connect_urls"].as_array().cloned().unwrap_or_default();
                    if urls.iter().any(|u| u == &serde_json::json!(want)) {
                        assert!(urls.iter().any(|u| u == &serde_json::json!(own)));
                        break;
                    }
                }
                midge_tests::FrameRead::Frame(f) if f == b"PING\r\n" => {
                    raw.send(b"PONG\r\n").await;
                }
                other => panic!("{kind}: waiting for an async INFO: {other:?}"),
            }
        }
    }
}

/// Reads frames until an INFO whose `connect_urls` satisfies `want`, answering PINGs, and
/// returns that INFO.
async fn next_info_where(
    raw: &mut midge_tests::RawClient,
    what: &str,
    want: impl Fn(&[String]) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + MESH_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.read_frame(left).await {
            midge_tests::FrameRead::Frame(f) if f.starts_with(b"INFO ") => {
                let json: serde_json::Value = serde_json::from_slice(&f[5..]).expect("INFO json");
                let urls: Vec<String> = json["connect_urls"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|u| u.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if want(&urls) {
                    return json;
                }
            }
            midge_tests::FrameRead::Frame(f) if f == b"PING\r\n" => raw.send(b"PONG\r\n").await,
            midge_tests::FrameRead::Frame(_) => {}
            other => panic!("waiting for an INFO {what}: {other:?}"),
        }
    }
}

/// Every async INFO names the client it goes to (`client_id`, `client_ip`), and when the
/// last other member goes, the INFO lists this server's own URL, so clients drop the
/// servers that are gone from their pools (an INFO without `connect_urls` changes nothing).
#[tokio::test]
async fn async_info_names_the_client_and_lists_self_when_the_last_route_drops() {
    for kind in [NatsServer, Midge] {
        if kind == Midge && midge_tests::reference_only() {
            continue;
        }
        let m = members(2);
        let a = start(kind, "a", m[0], &[]).await;
        let mut raw = midge_tests::RawClient::connect(a.addr()).await;
        let first = raw.handshake(r#"{"verbose":false,"protocol":1}"#).await;
        let cid = first["client_id"].clone();
        assert!(cid.as_u64().is_some_and(|c| c > 0), "{kind}: {first}");
        let own = format!("127.0.0.1:{}", m[0].client);
        let other = format!("127.0.0.1:{}", m[1].client);
        let b = start(kind, "b", m[1], &[m[0].route]).await;
        let joined = next_info_where(&mut raw, "with b", |u| u.contains(&other)).await;
        assert_eq!(joined["client_id"], cid, "{kind}: {joined}");
        assert_eq!(joined["client_ip"], "127.0.0.1", "{kind}: {joined}");
        drop(b);
        let left = next_info_where(&mut raw, "without b", |u| !u.contains(&other)).await;
        assert_eq!(
            left["connect_urls"],
            serde_json::json!([own]),
            "{kind}: {left}"
        );
        assert_eq!(left["client_id"], cid, "{kind}: {left}");
        assert_eq!(left["client_ip"], "127.0.0.1", "{kind}: {left}");
    }
}

#[test]
fn embedded_servers_report_their_routes() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut opts = midge::Options {
            host: [127, 0, 0, 1].into(),
            port: 0,
            http_port: Some(0),
            server_name: Some("one".into()),
            ..Default::default()
        };
        opts.cluster.name = Some("emb".into());
        opts.cluster.host = [127, 0, 0, 1].into();
        opts.cluster.port = Some(0);
        let one = midge::Server::start(opts.clone()).await.expect("start one");
        let seed = one.cluster_addr().expect("cluster listener");
        opts.server_name = Some("two".into());
        opts.cluster.routes = vec![format!("nats://{seed}")];
        let two = midge::Server::start(opts).await.expect("start two");
        let deadline = Instant::now() + MESH_DEADLINE;
        while one.routes().is_empty() || two.routes().is_empty() {
            assert!(
                Instant::now() < deadline,
                "no route between embedded servers"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let r = &two.routes()[0];
        assert_eq!(
            (r.remote_id.as_str(), r.remote_name.as_str()),
            (one.id(), "one")
        );
        assert!(r.did_solicit && r.is_configured);
        assert_eq!(r.port, seed.port());
        let r = &one.routes()[0];
        assert!(!r.did_solicit && !r.is_configured);
        assert_eq!(r.remote_name, "two");
        let stats = one.stats().cluster.expect("cluster stats");
        assert_eq!((stats.name.as_str(), stats.routes), ("emb", 1));
        let monitor = one.monitor_addr().expect("monitoring on");
        let routez = http_json(monitor, "/routez").await;
        assert_eq!(routez["num_routes"], 1, "{routez}");
        assert_eq!(routez["routes"][0]["remote_name"], "two", "{routez}");
        assert_eq!(routez["routes"][0]["remote_id"], two.id(), "{routez}");
        // The PING sent at registration gives an RTT soon, not after a ping interval.
        let deadline = Instant::now() + MESH_DEADLINE;
        loop {
            let routez = http_json(monitor, "/routez").await;
            if routez["routes"][0]["rtt"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
            {
                break;
            }
            assert!(Instant::now() < deadline, "no route rtt: {routez}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!two.routes()[0].rtt.is_zero());
        let varz = http_json(monitor, "/varz").await;
        assert_eq!(varz["routes"], 1, "{varz}");
        assert_eq!(varz["cluster"]["name"], "emb", "{varz}");
        assert_eq!(varz["cluster"]["cluster_port"], seed.port(), "{varz}");
        two.shutdown().await;
        let deadline = Instant::now() + MESH_DEADLINE;
        while !one.routes().is_empty() {
            assert!(Instant::now() < deadline, "route outlived its peer");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        one.shutdown().await;
    });
}

#[tokio::test]
async fn headers_replies_and_large_payloads_cross_routes_both_ways() {
    let kinds = if midge_tests::reference_only() {
        [NatsServer, NatsServer]
    } else {
        [Midge, NatsServer]
    };
    let m = members(2);
    let all: Vec<u16> = m.iter().map(|m| m.route).collect();
    let a = start(kinds[0], "a", m[0], &all).await;
    let b = start(Midge, "b", m[1], &all).await;
    full_mesh(&[&a, &b]).await;
    let (ca, cb) = (client(&a).await, client(&b).await);
    for (from, to, what) in [(&ca, &cb, "a -> b"), (&cb, &ca, "b -> a")] {
        let subject = format!("big.{}", rand_token());
        let mut sub = to.subscribe(subject.clone()).await.expect("sub");
        to.flush().await.expect("flush");
        crosses(from, to, what).await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Trace", "t-1");
        let big = bytes::Bytes::from(vec![b'x'; 900 * 1024]);
        from.publish_with_reply_and_headers(subject.clone(), "re.ply", headers, big.clone())
            .await
            .expect("publish");
        from.flush().await.expect("flush");
        let msg = next(&mut sub).await;
        assert_eq!(msg.payload.len(), big.len(), "{what}");
        assert_eq!(
            msg.reply.as_ref().map(|r| r.as_str()),
            Some("re.ply"),
            "{what}"
        );
        let trace = msg.headers.as_ref().and_then(|h| h.get("X-Trace"));
        assert_eq!(trace.map(|v| v.as_str()), Some("t-1"), "{what}");
    }
}

/// A streaming publisher's messages cross a route in runs (midge routes consecutive plain
/// messages to one subject as a batch, on the publishing server and on the receiving
/// server's route reader). Every subscriber on either side gets every message exactly once
/// and in order, with the replies and headers mixed in, between midge servers and between
/// midge and nats-server in both directions.
#[tokio::test]
async fn bursts_cross_routes_in_order_to_every_subscriber() {
    if midge_tests::reference_only() {
        return;
    }
    for kinds in [[Midge, Midge], [Midge, NatsServer], [NatsServer, Midge]] {
        let m = members(2);
        let all: Vec<u16> = m.iter().map(|m| m.route).collect();
        let a = start(kinds[0], "a", m[0], &all).await;
        let b = start(kinds[1], "b", m[1], &all).await;
        full_mesh(&[&a, &b]).await;
        let what = format!("{} -> {}", a.kind(), b.kind());
        let (ca, cb, cb2) = (client(&a).await, client(&b).await, client(&b).await);
        let subject = format!("burst.{}", rand_token());
        let mut subs = [
            ca.subscribe(subject.clone()).await.expect("sub"),
            cb.subscribe(subject.clone()).await.expect("sub"),
            cb2.subscribe(subject.clone()).await.expect("sub"),
            cb2.subscribe("burst.*").await.expect("sub"),
        ];
        for c in [&ca, &cb, &cb2] {
            c.flush().await.expect("flush");
        }
        // b's interest has reached a once a probe on the subject gets through.
        crosses(&ca, &cb, &what).await;
        const N: usize = 3000;
        for i in 0..N {
            let payload = bytes::Bytes::from(i.to_string());
            if i % 500 == 250 {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("N", i.to_string().as_str());
                ca.publish_with_reply_and_headers(subject.clone(), "re.ply", headers, payload)
                    .await
            } else {
                ca.publish(subject.clone(), payload).await
            }
            .expect("publish");
        }
        ca.flush().await.expect("flush");
        for (k, sub) in subs.iter_mut().enumerate() {
            for i in 0..N {
                let msg = next(sub).await;
                assert_eq!(msg.subject.as_str(), subject.as_str(), "{what}: sub {k}");
                assert_eq!(msg.payload, i.to_string().as_bytes(), "{what}: sub {k}");
                if i % 500 == 250 {
                    assert_eq!(msg.reply.as_ref().map(|r| r.as_str()), Some("re.ply"));
                    let n = msg.headers.as_ref().and_then(|h| h.get("N"));
                    assert_eq!(
                        n.map(|v| v.as_str().to_string()),
                        Some(i.to_string()),
                        "{what}"
                    );
                } else {
                    assert!(msg.reply.is_none() && msg.headers.is_none(), "{what}");
                }
            }
        }
    }
}

/// Reads frames until an INFO whose `connect_urls` satisfies `want`, answering PINGs.
async fn await_info(
    raw: &mut midge_tests::RawClient,
    what: &str,
    want: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + MESH_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match raw.read_frame(left).await {
            midge_tests::FrameRead::Frame(f) if f.starts_with(b"INFO ") => {
                let json: serde_json::Value = serde_json::from_slice(&f[5..]).expect("INFO json");
                let urls: Vec<String> = json["connect_urls"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|u| u.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                if want(&urls) {
                    return;
                }
            }
            midge_tests::FrameRead::Frame(f) if f == b"PING\r\n" => raw.send(b"PONG\r\n").await,
            midge_tests::FrameRead::Frame(_) => {}
            other => panic!("waiting for an INFO {what}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_server_in_lame_duck_mode_leaves_the_others_connect_urls() {
    if midge_tests::reference_only() {
        return;
    }
    for kind in [Midge, NatsServer] {
        let m = members(2);
        let a = start(kind, "a", m[0], &[]).await;
        let b = start(Midge, "b", m[1], &[m[0].route]).await;
        // A client on b keeps b in lame duck mode for its grace period (a server without
        // clients shuts down at once).
        let b_client = client(&b).await;
        crosses(&client(&a).await, &b_client, "a -> b").await;
        let b_url = format!("127.0.0.1:{}", m[1].client);
        let mut raw = midge_tests::RawClient::connect(a.addr()).await;
        let info = raw.handshake(r#"{"verbose":false,"protocol":1}"#).await;
        assert!(
            info["connect_urls"]
                .as_array()
                .is_some_and(|u| u.iter().any(|u| u == &serde_json::json!(b_url))),
            "{kind}: {info}"
        );
        let status = std::process::Command::new("kill")
            .args(["-USR2", &b.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        // b keeps its routes for its grace period (10s): losing its URL this early is the
        // doing of the ldm INFO b sent to its routes.
        let started = Instant::now();
        await_info(&mut raw, "without b", |urls| !urls.contains(&b_url)).await;
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{kind}: too late for ldm"
        );
        // The log is read by another thread: wait for the line rather than race it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !b.log_text().contains("lame duck") {
            assert!(Instant::now() < deadline, "{}", b.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(b_client);
    }
}

/// A bare HTTP/1.0 GET of a monitoring endpoint's JSON (the server closes after the body).
pub(crate) async fn http_json(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect monitor");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut body = Vec::new();
    tokio::time::timeout(MSG_DEADLINE, s.read_to_end(&mut body))
        .await
        .expect("monitor answers")
        .expect("read reply");
    let text = String::from_utf8_lossy(&body);
    let (_, json) = text.split_once("\r\n\r\n").expect("headers end");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{path}: {e}: {json}"))
}

/// `/healthz?routes=1` (the operator's readiness probe): 503 while a server with peers has
/// not routed yet, 200 once a route connected (and for good after), 200 at once for a
/// server whose only configured route is itself; plain `/healthz` is 200 throughout.
#[test]
fn readiness_waits_for_the_first_route() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let peer_port = free_port();
        let mut opts = midge::Options {
            host: [127, 0, 0, 1].into(),
            port: 0,
            http_port: Some(0),
            server_name: Some("waiting".into()),
            ..Default::default()
        };
        opts.cluster.name = Some("ready".into());
        opts.cluster.host = [127, 0, 0, 1].into();
        opts.cluster.port = Some(0);
        opts.cluster.routes = vec![format!("nats://127.0.0.1:{peer_port}")];
        let waiting = midge::Server::start(opts.clone()).await.expect("start");
        let monitor = waiting.monitor_addr().expect("monitoring on");
        assert_eq!(http_json(monitor, "/healthz").await["status"], "ok");
        let gated = http_json(monitor, "/healthz?routes=1").await;
        assert_eq!(gated["status"], "unavailable", "{gated}");
        assert_eq!(gated["error"], "no route connected yet", "{gated}");

        // The peer comes up on the configured port: the first route makes it ready.
        let mut peer_opts = opts.clone();
        peer_opts.server_name = Some("peer".into());
        peer_opts.cluster.port = Some(peer_port);
        peer_opts.cluster.routes = Vec::new();
        let peer = midge::Server::start(peer_opts).await.expect("start peer");
        let deadline = Instant::now() + MESH_DEADLINE;
        while http_json(monitor, "/healthz?routes=1").await["status"] != "ok" {
            assert!(Instant::now() < deadline, "never ready after the route");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Joined once is enough: losing the peer later does not take it out of rotation.
        peer.shutdown().await;
        let deadline = Instant::now() + MESH_DEADLINE;
        while !waiting.routes().is_empty() {
            assert!(Instant::now() < deadline, "route outlived its peer");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            http_json(monitor, "/healthz?routes=1").await["status"],
            "ok"
        );
        waiting.shutdown().await;

        // A pool of one: its list names only itself.
        let own_port = free_port();
        let mut alone = opts;
        alone.cluster.port = Some(own_port);
        alone.cluster.routes = vec![format!("nats://127.0.0.1:{own_port}")];
        let alone = midge::Server::start(alone).await.expect("start alone");
        let monitor = alone.monitor_addr().expect("monitoring on");
        let deadline = Instant::now() + MESH_DEADLINE;
        while http_json(monitor, "/healthz?routes=1").await["status"] != "ok" {
            assert!(Instant::now() < deadline, "a server alone never ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        alone.shutdown().await;
    });
}
