//! Accounts: isolated subject spaces, users bound to them, `no_auth_user`, and accounts
//! carried over routes. Every scenario runs the same config on nats-server (the reference)
//! and on midge with the official async-nats client, and clusters mix the two.
//!
//! "Not delivered" is shown without waiting for silence: after the message that must not
//! arrive, a sentinel published later on the same path must arrive first.

use std::time::Duration;

use futures::StreamExt;
use midge_tests::{both, ServerKind, TestServer};

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

use midge_tests::round_trip as sync;

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
    let servers = midge_tests::start_mesh(&kinds, ACCOUNTS, "acc").await;
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

/// Exports and imports: account P (the provider) exports a stream and two services; C (the
/// consumer) imports the stream under a prefix and the services under local names.
const IMPORTS: &str = r#"accounts {
  P: {
    users: [{user: p, password: p}]
    exports: [
      {stream: "feed.>"}
      {service: "svc.echo"}
      {service: "svc.multi", response_type: stream}
      {stream: "secret.>", accounts: [P]}
    ]
  }
  C: {
    users: [{user: c, password: c}, {user: c2, password: c2}]
    imports: [
      {stream: {account: P, subject: "feed.>"}, prefix: "p"}
      {service: {account: P, subject: "svc.echo"}, to: "echo"}
      {service: {account: P, subject: "svc.multi"}}
    ]
  }
}
"#;

#[tokio::test]
async fn stream_import_with_prefix_delivers_under_the_importers_subject() {
    both(stream_import).await;
}

async fn stream_import(kind: ServerKind) {
    let server = TestServer::start(kind, IMPORTS).await;
    let p = login(&server, "p", "p").await;
    let c = login(&server, "c", "c").await;
    let c2 = login(&server, "c2", "c2").await;
    let mut exact = c.subscribe("p.feed.x").await.expect("sub");
    let mut wide = c.subscribe("p.>").await.expect("sub");
    let mut q1 = c
        .queue_subscribe("p.feed.*", "workers".into())
        .await
        .expect("qsub");
    let mut q2 = c2
        .queue_subscribe("p.feed.*", "workers".into())
        .await
        .expect("qsub");
    // The exporter's own subject means nothing in C.
    let mut unmapped = c2.subscribe("feed.x").await.expect("sub");
    sync(&c).await;
    sync(&c2).await;
    for i in 0..20 {
        p.publish("feed.x", format!("m{i}").into())
            .await
            .expect("pub");
    }
    sync(&p).await;
    for i in 0..20 {
        let want = format!("m{i}");
        let m = tokio::time::timeout(WAIT, exact.next())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(
            (m.subject.as_str(), &m.payload[..]),
            ("p.feed.x", want.as_bytes()),
            "[{kind}]"
        );
        let m = tokio::time::timeout(WAIT, wide.next())
            .await
            .expect("in time")
            .expect("open");
        assert_eq!(m.subject.as_str(), "p.feed.x", "[{kind}]");
    }
    // Each message once to the queue group, across its two members.
    let mut got = 0;
    for sub in [&mut q1, &mut q2] {
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            assert_eq!(m.subject.as_str(), "p.feed.x");
            got += 1;
        }
    }
    assert_eq!(got, 20, "[{kind}] queue group got each message once");
    // Nothing came in on the exporter's subject: C's own sentinel is the first thing there.
    publish(&c2, "feed.x", "sentinel").await;
    assert_eq!(
        next_payload(&mut unmapped, "unmapped").await,
        "sentinel",
        "[{kind}]"
    );
}

#[tokio::test]
async fn service_import_answers_requests_across_accounts() {
    both(service_import).await;
}

async fn service_import(kind: ServerKind) {
    let server = TestServer::start(kind, IMPORTS).await;
    let p = login(&server, "p", "p").await;
    let c = login(&server, "c", "c").await;
    let mut echo = p.subscribe("svc.echo").await.expect("sub");
    let mut multi = p.subscribe("svc.multi").await.expect("sub");
    sync(&p).await;
    let responder = {
        let p = p.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(req) = echo.next() => {
                        let subject = req.subject.to_string();
                        if let Some(reply) = req.reply {
                            let mut body = format!("{subject}:").into_bytes();
                            body.extend_from_slice(&req.payload);
                            let _ = p.publish(reply, body.into()).await;
                        }
                    }
                    Some(req) = multi.next() => {
                        if let Some(reply) = req.reply {
                            for i in 0..3 {
                                let _ = p.publish(reply.clone(), format!("part{i}").into()).await;
                            }
                        }
                    }
                    else => break,
                }
            }
        })
    };
    // Singleton: one answer, under the exporter's subject.
    for i in 0..5 {
        let answer = tokio::time::timeout(WAIT, c.request("echo", format!("hi{i}").into()))
            .await
            .expect("answer in time")
            .unwrap_or_else(|e| panic!("[{kind}] request through the import: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&answer.payload),
            format!("svc.echo:hi{i}"),
            "[{kind}]"
        );
    }
    // Stream responses: every part reaches the requester's inbox.
    let inbox = c.new_inbox();
    let mut parts = c.subscribe(inbox.clone()).await.expect("sub");
    sync(&c).await;
    c.publish_with_reply("svc.multi", inbox, "go".into())
        .await
        .expect("publish");
    for i in 0..3 {
        assert_eq!(
            next_payload(&mut parts, "stream response").await,
            format!("part{i}"),
            "[{kind}]"
        );
    }
    // The exporter's subject is not C's: nobody answers it there.
    let err = c
        .request("svc.echo", "x".into())
        .await
        .expect_err("no responder for the unmapped subject");
    assert_eq!(
        err.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "[{kind}]"
    );
    responder.abort();
}

/// An import of a private export by an account it does not list: both servers refuse the
/// configuration with the same words.
#[tokio::test]
async fn private_export_is_refused_to_an_unlisted_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("server.conf");
    let config = IMPORTS.replace(
        "{service: {account: P, subject: \"svc.multi\"}}",
        "{service: {account: P, subject: \"svc.multi\"}}\n      {stream: {account: P, subject: \"secret.x\"}}",
    );
    std::fs::write(&path, config).expect("write");
    for kind in midge_tests::kinds() {
        let out = std::process::Command::new(kind.binary())
            .arg("-c")
            .arg(&path)
            .arg("-t")
            .output()
            .expect("run -t");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "[{kind}] accepted: {text}");
        assert!(
            text.contains("Error adding stream import \"secret.x\": stream import not authorized"),
            "[{kind}] {text}"
        );
    }
}

#[tokio::test]
async fn account_limits_cap_connections_subscriptions_and_payload() {
    both(account_limits).await;
}

async fn account_limits(kind: ServerKind) {
    let config = "accounts {\n  L: { users: [{user: l, password: l}], limits: {max_connections: 2, max_subscriptions: 2, max_payload: 100} }\n}\n";
    let server = TestServer::start(kind, config).await;
    let connect = r#"{"user":"l","pass":"l","verbose":false}"#;
    let mut first = midge_tests::connect(&server, midge_tests::Feed::Whole).await;
    first.handshake(connect).await;
    // Subscriptions: the third is refused, the connection stays.
    first.send(b"SUB a 1\r\nSUB b 2\r\nSUB c 3\r\n").await;
    first
        .expect(b"-ERR 'maximum subscriptions exceeded'\r\n")
        .await;
    first.ping_pong().await;
    let mut second = midge_tests::connect(&server, midge_tests::Feed::Whole).await;
    second.handshake(connect).await;
    // A third connection of the account is refused.
    let mut third = midge_tests::connect(&server, midge_tests::Feed::Whole).await;
    third.read_info().await;
    third
        .send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
        .await;
    third
        .expect(b"-ERR 'maximum account active connections exceeded'\r\n")
        .await;
    third.expect_closed().await;
    // Payload: over the account's 100 bytes closes the publisher.
    let big = "x".repeat(101);
    second
        .send(format!("PUB a 101\r\n{big}\r\n").as_bytes())
        .await;
    second.expect(b"-ERR 'Maximum Payload Violation'\r\n").await;
    second.expect_closed().await;
    // The closed ones no longer count: a new connection of the account is let in.
    let mut again = midge_tests::connect(&server, midge_tests::Feed::Whole).await;
    again.handshake(connect).await;
    let _ = kind;
}

/// Imports across a mixed cluster: a stream published on one server reaches importers on
/// the others, and requests through a service import are answered by a responder on
/// another server, whichever kind each server is.
#[tokio::test]
async fn imports_work_across_a_mixed_cluster() {
    if midge_tests::reference_only() {
        return;
    }
    let servers = midge_tests::start_mesh(
        &[ServerKind::Midge, ServerKind::Midge, ServerKind::NatsServer],
        IMPORTS,
        "imp",
    )
    .await;
    for (from, to) in [(0, 2), (2, 0), (0, 1)] {
        let label = format!("{} -> {}", servers[from].kind(), servers[to].kind());
        let p = login(&servers[from], "p", "p").await;
        let c = login(&servers[to], "c", "c").await;
        let subject = format!("feed.{from}{to}");
        let mut sub = c.subscribe(format!("p.{subject}")).await.expect("sub");
        sync(&c).await;
        // Interest crosses the routes in a moment: publish until it arrives.
        let deadline = tokio::time::Instant::now() + WAIT;
        let first = loop {
            publish(&p, &subject, "probe").await;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                break m;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{label}: stream never crossed"
            );
        };
        assert_eq!(first.subject.as_str(), format!("p.{subject}"), "{label}");

        // The responder on `from`, the requester on `to`.
        let mut echo = p.subscribe("svc.echo").await.expect("sub");
        sync(&p).await;
        let responder = {
            let p = p.clone();
            tokio::spawn(async move {
                while let Some(req) = echo.next().await {
                    if let Some(reply) = req.reply {
                        let _ = p.publish(reply, req.payload).await;
                        let _ = p.flush().await;
                    }
                }
            })
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout(Duration::from_secs(1), c.request("echo", "ping".into()))
                .await
            {
                Ok(Ok(answer)) => {
                    assert_eq!(&answer.payload[..], b"ping", "{label}");
                    break;
                }
                other => assert!(
                    tokio::time::Instant::now() < deadline,
                    "{label}: no answer through the service import: {other:?}"
                ),
            }
        }
        responder.abort();
    }
}

/// Exports and imports added by a config reload apply to running clients, subscriptions
/// made before the reload included.
#[tokio::test]
async fn imports_added_by_a_reload_apply_to_existing_subscriptions() {
    both(|kind| async move {
        let before = IMPORTS.replace(
            "      {stream: {account: P, subject: \"feed.>\"}, prefix: \"p\"}\n",
            "",
        );
        assert_ne!(before, IMPORTS);
        let server = TestServer::start(kind, &before).await;
        let p = login(&server, "p", "p").await;
        let c = login(&server, "c", "c").await;
        let mut sub = c.subscribe("p.feed.x").await.expect("sub");
        sync(&c).await;
        std::fs::write(server.config_path(), IMPORTS).expect("rewrite config");
        let status = std::process::Command::new(kind.binary())
            .arg("--signal")
            .arg(format!("reload={}", server.pid()))
            .status()
            .expect("signal");
        assert!(status.success());
        // The reload is applied asynchronously: publish until the import delivers.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            publish(&p, "feed.x", "after").await;
            if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.next()).await
            {
                assert_eq!(m.subject.as_str(), "p.feed.x", "[{kind}]");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "[{kind}] the reloaded import never delivered"
            );
        }
    })
    .await;
}

/// Waits on `events` (a subscription to `$SYS.ACCOUNT.L.SERVER.CONNS` on `asker`'s server)
/// for server `id` to report `conns` connections of L, then makes sure `asker`'s server
/// has handled that event too: its services answer in order, so an answer to a request
/// sent after the event means the event was taken in.
async fn await_remote_count(
    asker: &async_nats::Client,
    events: &mut async_nats::Subscriber,
    id: &str,
    conns: u64,
) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let msg = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("no event with {conns} connections from {id}"))
            .expect("subscription open");
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(&msg.payload) else {
            continue; // a probe
        };
        if event["server"]["id"] == id && event["conns"] == conns {
            break;
        }
    }
    let own = asker.server_info().server_id;
    tokio::time::timeout(
        WAIT,
        asker.request(format!("$SYS.REQ.SERVER.{own}.STATSZ"), "".into()),
    )
    .await
    .expect("statsz in time")
    .expect("statsz");
}

/// An account's `max_connections` counts its connections on every server of the cluster,
/// as nats-server counts them: each server tells the others (`SERVER.CONNS` events) and a
/// midge server refuses a connection the cluster has no room for, then lets one in again
/// once a remote client left. Run with a midge peer and with a nats-server peer.
#[tokio::test]
async fn account_max_connections_count_the_whole_cluster() {
    if midge_tests::reference_only() {
        return;
    }
    let config = "accounts {\n  L: { users: [{user: l, password: l}], limits: {max_connections: 2} }\n  SYS: { users: [{user: sys, password: sys}] }\n}\nsystem_account: SYS\n";
    for peer in [ServerKind::Midge, ServerKind::NatsServer] {
        let servers = midge_tests::start_mesh(&[ServerKind::Midge, peer], config, "limits").await;
        let (here, there) = (&servers[0], &servers[1]);
        let sys = login(here, "sys", "sys").await;
        let mut events = sys
            .subscribe("$SYS.ACCOUNT.L.SERVER.CONNS")
            .await
            .expect("sub");
        sync(&sys).await;
        let connect = r#"{"user":"l","pass":"l","verbose":false}"#;
        let mut first = midge_tests::connect(here, midge_tests::Feed::Whole).await;
        first.handshake(connect).await;
        // The peer's client: once `here` knows of it, the account is full. First the
        // events subscription must be known over there: probes until one comes back.
        let probe = login(there, "sys", "sys").await;
        let there_id = probe.server_info().server_id;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "interest never reached the peer"
            );
            probe
                .publish("$SYS.ACCOUNT.L.SERVER.CONNS", "probe".into())
                .await
                .expect("probe");
            probe.flush().await.expect("flush");
            let round = tokio::time::Instant::now() + Duration::from_millis(200);
            if let Ok(Some(m)) = tokio::time::timeout_at(round, events.next()).await {
                if &m.payload[..] == b"probe" {
                    break;
                }
            }
        }
        let mut second = midge_tests::connect(there, midge_tests::Feed::Whole).await;
        second.handshake(connect).await;
        await_remote_count(&sys, &mut events, &there_id, 1).await;
        let mut third = midge_tests::connect(here, midge_tests::Feed::Whole).await;
        third.read_info().await;
        third
            .send(format!("CONNECT {connect}\r\nPING\r\n").as_bytes())
            .await;
        third
            .expect(b"-ERR 'maximum account active connections exceeded'\r\n")
            .await;
        third.expect_closed().await;
        // The remote client leaves: there is room again.
        drop(second);
        await_remote_count(&sys, &mut events, &there_id, 0).await;
        let mut fourth = midge_tests::connect(here, midge_tests::Feed::Whole).await;
        fourth.handshake(connect).await;
        fourth.ping_pong().await;
        first.ping_pong().await;
        drop(servers);
    }
}
