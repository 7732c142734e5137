//! Accounts: isolated subject spaces, users bound to them, `no_auth_user`, and accounts
//! carried over routes. Every scenario runs the same config on nats-server (the reference)
//! and on midge with the official async-nats client, and clusters mix the two.
//!
//! "Not delivered" is shown without waiting for silence: after the message that must not
//! arrive, a sentinel published later on the same path must arrive first.

use std::time::Duration;

use futures::StreamExt;
use midge_tests::{both, free_port, ServerKind, TestServer};

const WAIT: Duration = Duration::from_secs(10);

const ACCOUNTS: &str = "accounts {\n  A: { users: [{user: a, password: a}, {user: guest, password: g}] }\n  B: { users: [{user: b, password: b}, {user: b2, password: b2}] }\n}\nno_auth_user: guest\n";

async fn login(server: &TestServer, user: &str, pass: &str) -> async_nats::Client {
    async_nats::ConnectOptions::with_user_and_password(user.into(), pass.into())
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} login {user}: {e}", server.kind()))
}

async fn anonymous(server: &TestServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} anonymous: {e}", server.kind()))
}

/// Returns once the server has processed everything `c` sent before: async-nats's
/// `flush` only writes, so a round trip through the client's own subscription proves it.
async fn sync(c: &async_nats::Client) {
    let inbox = c.new_inbox();
    let mut sub = c.subscribe(inbox.clone()).await.expect("subscribe");
    c.publish(inbox, "sync".into()).await.expect("publish");
    tokio::time::timeout(WAIT, sub.next())
        .await
        .expect("round trip in time")
        .expect("subscription open");
}

async fn next_payload(sub: &mut async_nats::Subscriber, what: &str) -> String {
    let msg = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing arrived"))
        .unwrap_or_else(|| panic!("{what}: subscription closed"));
    String::from_utf8_lossy(&msg.payload).into_owned()
}

async fn publish(c: &async_nats::Client, subject: &str, payload: &'static str) {
    c.publish(subject.to_string(), payload.into())
        .await
        .expect("publish");
    sync(c).await;
}

#[tokio::test]
async fn accounts_isolate_clients_and_no_auth_user_joins_its_account() {
    both(isolation).await;
}

async fn isolation(kind: ServerKind) {
    {
        let server = TestServer::start(kind, ACCOUNTS).await;
        let a = login(&server, "a", "a").await;
        let b = login(&server, "b", "b").await;
        let b2 = login(&server, "b2", "b2").await;
        let guest = anonymous(&server).await;

        let mut a_sub = a.subscribe("x").await.expect("subscribe");
        let mut guest_sub = guest.subscribe("x").await.expect("subscribe");
        let mut b2_sub = b2.subscribe("x").await.expect("subscribe");
        for c in [&a, &guest, &b2] {
            sync(c).await;
        }
        // B's message reaches B only.
        publish(&b, "x", "from-b").await;
        assert_eq!(next_payload(&mut b2_sub, "b2 first").await, "from-b");
        // A's message reaches A's user and the anonymous client (no_auth_user is in A),
        // and it is the first thing they get: B's message never reached them.
        publish(&a, "x", "from-a").await;
        assert_eq!(next_payload(&mut a_sub, "a").await, "from-a", "[{kind}]");
        assert_eq!(next_payload(&mut guest_sub, "guest").await, "from-a");
        publish(&b, "x", "sentinel").await;
        assert_eq!(
            next_payload(&mut b2_sub, "b2").await,
            "sentinel",
            "A's message stayed in A"
        );

        // Request/reply inside an account; across accounts nobody answers.
        let mut service = b2.subscribe("svc").await.expect("subscribe");
        sync(&b2).await;
        let responder = {
            let b2 = b2.clone();
            tokio::spawn(async move {
                while let Some(req) = service.next().await {
                    if let Some(reply) = req.reply {
                        let _ = b2.publish(reply, "pong".into()).await;
                        let _ = b2.flush().await;
                    }
                }
            })
        };
        let answer = tokio::time::timeout(WAIT, b.request("svc", "ping".into()))
            .await
            .expect("answer in time")
            .expect("answered");
        assert_eq!(&answer.payload[..], b"pong");
        let err = a
            .request("svc", "ping".into())
            .await
            .expect_err("no responder in A");
        assert_eq!(
            err.kind(),
            async_nats::RequestErrorKind::NoResponders,
            "[{kind}]"
        );
        responder.abort();

        // A wrong password is refused as without accounts.
        let refused = async_nats::ConnectOptions::with_user_and_password("a".into(), "x".into())
            .connect(server.url());
        let refused = tokio::time::timeout(Duration::from_secs(5), refused).await;
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "[{kind}] wrong password accepted"
        );
    }
}

/// A three-server cluster (2 midge, 1 nats-server, or the reverse) with the same accounts
/// everywhere: the accounts stay isolated across the routes, and each server delivers a
/// message published elsewhere in the publisher's account only.
async fn cluster_with_accounts(kinds: [ServerKind; 3]) {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r)| format!("\"nats://127.0.0.1:{r}\""))
        .collect();
    let mut servers = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let config = format!(
            "{ACCOUNTS}server_name: s{i}\ncluster {{\n  name: acc\n  listen: 127.0.0.1:{}\n  routes: [{}]\n}}\n",
            ports[i].1,
            routes.join(", ")
        );
        servers.push(
            TestServer::builder(*kind)
                .config(&config)
                .arg("-p")
                .arg(&ports[i].0.to_string())
                .start()
                .await,
        );
    }
    for (from, to) in [(0, 2), (2, 0), (1, 2), (2, 1), (0, 1)] {
        let label = format!("{} -> {}", servers[from].kind(), servers[to].kind());
        let a_pub = login(&servers[from], "a", "a").await;
        let b_pub = login(&servers[from], "b", "b").await;
        let a_sub_client = anonymous(&servers[to]).await; // no_auth_user: account A
        let b_sub_client = login(&servers[to], "b2", "b2").await;
        let subject = format!("mesh.{from}.{to}");
        let mut a_sub = a_sub_client.subscribe(subject.clone()).await.expect("sub");
        let mut b_sub = b_sub_client.subscribe(subject.clone()).await.expect("sub");
        a_sub_client.flush().await.expect("flush");
        b_sub_client.flush().await.expect("flush");
        // Interest takes a moment to cross: publish in B until B's subscriber hears it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            publish(&b_pub, &subject, "probe-b").await;
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), b_sub.next()).await
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{label}: B never crossed"
            );
        }
        loop {
            publish(&a_pub, &subject, "probe-a").await;
            if let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(100), a_sub.next()).await
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{label}: A never crossed"
            );
        }
        // Drain the probes, then the real check: each account gets its own message first.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), a_sub.next()).await
        {
        }
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), b_sub.next()).await
        {
        }
        publish(&b_pub, &subject, "only-b").await;
        publish(&a_pub, &subject, "only-a").await;
        assert_eq!(next_payload(&mut a_sub, &label).await, "only-a", "{label}");
        assert_eq!(next_payload(&mut b_sub, &label).await, "only-b", "{label}");
    }
    // Queue group in account B across the cluster: each message once, none to A.
    let mut members = Vec::new();
    for s in &servers {
        let c = login(s, "b2", "b2").await;
        let sub = c.queue_subscribe("jobs", "w".into()).await.expect("qsub");
        sync(&c).await;
        members.push((c, sub));
    }
    let a_watch = anonymous(&servers[0]).await;
    let mut a_jobs = a_watch.subscribe("jobs").await.expect("sub");
    sync(&a_watch).await;
    let publisher = login(&servers[2], "b", "b").await;
    // Wait until every server's members are known everywhere: a request round trip per
    // member is not observable, so publish until each member has received something.
    let mut got = vec![0usize; members.len()];
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.contains(&0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "queue members never all served: {got:?}"
        );
        for _ in 0..30 {
            publish(&publisher, "jobs", "job").await;
            sent += 1;
        }
        for (i, (_, sub)) in members.iter_mut().enumerate() {
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(50), sub.next()).await
            {
                got[i] += 1;
            }
        }
    }
    assert_eq!(
        got.iter().sum::<usize>(),
        sent,
        "each job exactly once: {got:?}"
    );
    publish(&a_watch, "jobs", "a-sentinel").await;
    assert_eq!(
        next_payload(&mut a_jobs, "A watcher").await,
        "a-sentinel",
        "no B job reached A"
    );
}

#[tokio::test]
async fn mixed_cluster_two_midge_one_nats_server_keeps_accounts_apart() {
    if midge_tests::reference_only() {
        return;
    }
    cluster_with_accounts([ServerKind::Midge, ServerKind::Midge, ServerKind::NatsServer]).await;
}

#[tokio::test]
async fn mixed_cluster_one_midge_two_nats_server_keeps_accounts_apart() {
    if midge_tests::reference_only() {
        return;
    }
    cluster_with_accounts([
        ServerKind::NatsServer,
        ServerKind::Midge,
        ServerKind::NatsServer,
    ])
    .await;
}
