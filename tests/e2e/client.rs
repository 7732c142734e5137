//! The real `async-nats` client against an in-process midge: proves that an unmodified
//! official client cannot tell midge from nats-server for everything core NATS offers.
//!
//! Covered: publish/subscribe, `*` and `>` wildcards (and subjects that must not match),
//! queue groups (each message to exactly one member, plus every plain subscriber),
//! request/reply (single and many concurrent), headers with repeated values, no-responders,
//! token / user+password / bcrypt authentication, per-user publish and subscribe
//! permissions, `allow_responses`, max_payload learned from INFO, `unsubscribe_after`,
//! `no_echo`, drain and flush, server shutdown seen as a disconnect, and a slow consumer
//! cut off while a healthy subscriber on the same subject keeps receiving everything.
//!
//! Every wait has a deadline. Nothing sleeps to synchronise: "not delivered" is proven by
//! ordering (a later marker message arrives first) or by round trips through the server (see
//! `round_trip`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectErrorKind, ConnectOptions, Event, HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use midge::options::{Permissions, ResponsePermission, SubjectPermission, User};
use midge::{Options, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Deadline for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

/// Options for a server on 127.0.0.1 with a free port.
fn local_options() -> Options {
    Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        ..Options::default()
    }
}

async fn start(opts: Options) -> Server {
    opts.validate().expect("test options are valid");
    Server::start(opts).await.expect("midge starts")
}

async fn start_default() -> Server {
    start(local_options()).await
}

async fn connect(server: &Server) -> Client {
    timeout(WAIT, async_nats::connect(server.client_url()))
        .await
        .expect("connect in time")
        .expect("connect")
}

async fn connect_with(
    server: &Server,
    opts: ConnectOptions,
) -> Result<Client, async_nats::ConnectError> {
    timeout(WAIT, opts.connect(server.client_url()))
        .await
        .expect("connect attempt finishes in time")
}

/// Connect options whose events (errors, disconnects) are sent to the returned channel.
fn with_events(opts: ConnectOptions) -> (ConnectOptions, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = opts.event_callback(move |event| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(event);
        }
    });
    (opts, rx)
}

/// Waits for the first event that `want` accepts, skipping others; panics at the deadline.
async fn wait_event(
    events: &mut mpsc::UnboundedReceiver<Event>,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {what} event within {WAIT:?}"))
            .unwrap_or_else(|| panic!("event channel closed before {what}"));
        if want(&event) {
            return event;
        }
    }
}

/// A server error event whose text contains `needle` (compared lower-case).
fn server_error_containing(needle: &str) -> impl Fn(&Event) -> bool + '_ {
    move |event| match event {
        Event::ServerError(async_nats::ServerError::Other(text)) => {
            text.to_lowercase().contains(&needle.to_lowercase())
        }
        _ => false,
    }
}

async fn next(sub: &mut Subscriber) -> Message {
    timeout(WAIT, sub.next())
        .await
        .expect("message within the deadline")
        .expect("subscription still open")
}

/// A full round trip through the server: a request nobody listens to, answered by the
/// server itself with a no-responders status. The server handles a connection's ops in
/// order, so when the answer is here every op this client sent before has been processed
/// (and the deliveries it caused are queued), and every message queued for this client
/// before has been received. (`Client::flush` only writes the client's buffer to the socket;
/// it is not a round trip.)
async fn round_trip(client: &Client) {
    round_trip_on(client, "midge.test.round_trip").await;
}

async fn round_trip_on(client: &Client, subject: &str) {
    let reply = timeout(WAIT, client.request(subject.to_string(), Bytes::new()))
        .await
        .expect("round trip in time");
    match reply {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => panic!("round trip on {subject}: expected no responders, got {other:?}"),
    }
}

/// Asserts that nothing is buffered for `sub` right now. Call it after the flushes that
/// order any delivery before this point.
fn assert_nothing_buffered(sub: &mut Subscriber, what: &str) {
    if let Some(Some(msg)) = sub.next().now_or_never() {
        panic!(
            "{what}: unexpected message on {} ({:?})",
            msg.subject, msg.payload
        );
    }
}

#[tokio::test]
async fn pub_sub_round_trip() {
    let server = start_default().await;
    let sub_client = connect(&server).await;
    let pub_client = connect(&server).await;
    let mut sub = sub_client.subscribe("greet.joe").await.expect("subscribe");
    round_trip(&sub_client).await;
    for i in 0..10 {
        pub_client
            .publish("greet.joe", format!("hello {i}").into())
            .await
            .expect("publish");
    }
    for i in 0..10 {
        let msg = next(&mut sub).await;
        assert_eq!(msg.subject.as_str(), "greet.joe");
        assert_eq!(
            msg.payload,
            Bytes::from(format!("hello {i}")),
            "in publish order"
        );
        assert!(msg.reply.is_none());
    }
    // Empty payloads are messages too.
    pub_client
        .publish("greet.joe", Bytes::new())
        .await
        .expect("publish empty");
    assert!(next(&mut sub).await.payload.is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn wildcards_match_and_do_not_match() {
    let server = start_default().await;
    let sub_client = connect(&server).await;
    let pub_client = connect(&server).await;
    let mut star = sub_client
        .subscribe("a.*.c")
        .await
        .expect("subscribe a.*.c");
    let mut tail = sub_client.subscribe("a.>").await.expect("subscribe a.>");
    round_trip(&sub_client).await;
    // Published in this order; each subscription must see exactly its matches, in order.
    let subjects = [
        "a.b.c", "a.b", "a.b.c.d", "a", "b.b.c", "a.x.c", "A.b.c", "a.b.cc", "ab.c",
    ];
    for s in subjects {
        pub_client.publish(s, s.into()).await.expect("publish");
    }
    // Markers prove that everything published before them has been routed.
    pub_client
        .publish("a.end.c", "end".into())
        .await
        .expect("publish marker");
    let got_star: Vec<String> = collect_until_marker(&mut star).await;
    let got_tail: Vec<String> = collect_until_marker(&mut tail).await;
    assert_eq!(
        got_star,
        ["a.b.c", "a.x.c"],
        "a.*.c: exactly one middle token"
    );
    assert_eq!(
        got_tail,
        ["a.b.c", "a.b", "a.b.c.d", "a.x.c", "a.b.cc"],
        "a.>: one or more tokens after a"
    );
    server.shutdown().await;
}

/// Subjects received until the `a.end.c` marker (which is not included).
async fn collect_until_marker(sub: &mut Subscriber) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let msg = next(sub).await;
        if msg.subject.as_str() == "a.end.c" {
            return got;
        }
        got.push(msg.subject.to_string());
    }
    panic!("marker never arrived; got {got:?}");
}

#[tokio::test]
async fn queue_group_delivers_each_message_once_and_plain_subscriber_gets_all() {
    const N: usize = 300;
    let server = start_default().await;
    let members_client = connect(&server).await;
    let plain_client = connect(&server).await;
    let pub_client = connect(&server).await;
    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(
            members_client
                .queue_subscribe("work", "workers".into())
                .await
                .expect("queue subscribe"),
        );
    }
    let mut plain = plain_client.subscribe("work").await.expect("subscribe");
    round_trip(&members_client).await;
    round_trip(&plain_client).await;

    for i in 0..N {
        pub_client
            .publish("work", i.to_string().into())
            .await
            .expect("publish");
    }
    round_trip(&pub_client).await;

    // The plain subscriber gets every message, in order.
    for i in 0..N {
        assert_eq!(next(&mut plain).await.payload, Bytes::from(i.to_string()));
    }

    // The members get N in total, all distinct.
    let mut per_member = [0usize; 3];
    let mut seen = HashSet::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < N {
        assert!(
            Instant::now() < deadline,
            "queue members got only {} of {N}",
            seen.len()
        );
        let (msg, idx) = {
            let futs = members.iter_mut().map(|s| s.next().boxed());
            let (msg, idx, _) = timeout(WAIT, futures::future::select_all(futs))
                .await
                .expect("queue message in time");
            (msg.expect("member subscription open"), idx)
        };
        per_member[idx] += 1;
        let payload = String::from_utf8(msg.payload.to_vec()).expect("utf8");
        assert!(
            seen.insert(payload.clone()),
            "message {payload} delivered twice to the group"
        );
    }
    // The server queued everything for members_client before answering this PING.
    round_trip(&members_client).await;
    for (i, m) in members.iter_mut().enumerate() {
        assert_nothing_buffered(m, &format!("member {i} after all {N} were delivered"));
    }
    assert_eq!(per_member.iter().sum::<usize>(), N);
    assert!(
        per_member.iter().all(|&n| n > 0),
        "every member gets a share: {per_member:?}"
    );
    server.shutdown().await;
}

/// A responder answering `svc.echo` with `re:<payload>` until its subscription ends.
async fn spawn_echo_responder(server: &Server) -> (Client, tokio::task::JoinHandle<()>) {
    let responder = connect(server).await;
    let mut sub = responder
        .subscribe("svc.echo")
        .await
        .expect("responder subscribe");
    round_trip(&responder).await;
    let r = responder.clone();
    let task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let mut body = b"re:".to_vec();
                body.extend_from_slice(&msg.payload);
                if r.publish(reply, body.into()).await.is_err() {
                    break;
                }
            }
        }
    });
    (responder, task)
}

#[tokio::test]
async fn request_reply_single_and_many_concurrent() {
    let server = start_default().await;
    let (_responder, task) = spawn_echo_responder(&server).await;
    let client = connect(&server).await;

    let reply = timeout(WAIT, client.request("svc.echo", "one".into()))
        .await
        .expect("reply in time")
        .expect("request");
    assert_eq!(reply.payload, Bytes::from_static(b"re:one"));

    let requests = (0..200).map(|i| {
        let client = client.clone();
        async move {
            let reply = client
                .request("svc.echo", format!("{i}").into())
                .await
                .expect("concurrent request");
            assert_eq!(
                reply.payload,
                Bytes::from(format!("re:{i}")),
                "reply {i} matches its request"
            );
        }
    });
    timeout(WAIT, futures::future::join_all(requests))
        .await
        .expect("200 concurrent requests in time");
    task.abort();
    server.shutdown().await;
}

#[tokio::test]
async fn headers_round_trip_with_multiple_values() {
    let server = start_default().await;
    let client = connect(&server).await;
    let mut sub = client.subscribe("hdr").await.expect("subscribe");
    round_trip(&client).await;

    let mut headers = HeaderMap::new();
    headers.insert("X-Trace", "abc-123");
    headers.append("X-Multi", "one");
    headers.append("X-Multi", "two");
    headers.append("X-Multi", "three");
    client
        .publish_with_headers("hdr", headers, "body".into())
        .await
        .expect("publish with headers");
    let msg = next(&mut sub).await;
    assert_eq!(msg.payload, Bytes::from_static(b"body"));
    let got = msg.headers.expect("headers arrive");
    assert_eq!(got.get("X-Trace").map(|v| v.as_str()), Some("abc-123"));
    let multi: Vec<&str> = got.get_all("X-Multi").map(|v| v.as_str()).collect();
    assert_eq!(
        multi,
        ["one", "two", "three"],
        "repeated values keep their order"
    );

    // Headers with an empty body, and headers through request/reply.
    let mut headers = HeaderMap::new();
    headers.insert("Only", "headers");
    client
        .publish_with_headers("hdr", headers, Bytes::new())
        .await
        .expect("publish");
    let msg = next(&mut sub).await;
    assert!(msg.payload.is_empty());
    assert_eq!(
        msg.headers
            .expect("headers")
            .get("Only")
            .map(|v| v.as_str()),
        Some("headers")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn request_without_responders_fails_fast_with_no_responders() {
    let server = start_default().await;
    let client = connect(&server).await;
    let started = Instant::now();
    let err = timeout(WAIT, client.request("nobody.home", "hi".into()))
        .await
        .expect("request settles in time")
        .expect_err("no one listens");
    assert_eq!(
        err.kind(),
        async_nats::RequestErrorKind::NoResponders,
        "got {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no-responders must come from the server at once, not a timeout ({:?})",
        started.elapsed()
    );
    server.shutdown().await;
}

/// A connection works end to end: a message to itself comes back.
async fn assert_usable(client: &Client) {
    let mut sub = client.subscribe("usable.check").await.expect("subscribe");
    client
        .publish("usable.check", "ok".into())
        .await
        .expect("publish");
    assert_eq!(next(&mut sub).await.payload, Bytes::from_static(b"ok"));
}

fn assert_auth_rejected(result: Result<Client, async_nats::ConnectError>, what: &str) {
    match result {
        Ok(_) => panic!("{what}: connection accepted"),
        Err(e) => assert_eq!(
            e.kind(),
            ConnectErrorKind::AuthorizationViolation,
            "{what}: got {e}"
        ),
    }
}

#[tokio::test]
async fn token_auth_accepts_right_token_and_rejects_wrong_one() {
    let server = start(Options {
        auth: midge::options::Authorization {
            token: Some("s3cr3t".into()),
            ..Default::default()
        },
        ..local_options()
    })
    .await;
    let ok = connect_with(&server, ConnectOptions::with_token("s3cr3t".into()))
        .await
        .expect("right token");
    assert_usable(&ok).await;
    assert_auth_rejected(
        connect_with(&server, ConnectOptions::with_token("wrong".into())).await,
        "wrong token",
    );
    assert_auth_rejected(
        connect_with(&server, ConnectOptions::new()).await,
        "no token",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn user_password_auth_accepts_and_rejects() {
    let server = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .user("derek", "pa55")
        .start()
        .await
        .expect("start");
    let ok = connect_with(
        &server,
        ConnectOptions::with_user_and_password("derek".into(), "pa55".into()),
    )
    .await
    .expect("right password");
    assert_usable(&ok).await;
    assert_auth_rejected(
        connect_with(
            &server,
            ConnectOptions::with_user_and_password("derek".into(), "nope".into()),
        )
        .await,
        "wrong password",
    );
    assert_auth_rejected(
        connect_with(
            &server,
            ConnectOptions::with_user_and_password("bob".into(), "pa55".into()),
        )
        .await,
        "unknown user",
    );
    assert_auth_rejected(
        connect_with(&server, ConnectOptions::new()).await,
        "no credentials",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bcrypt_hashed_passwords() {
    // Cost 4 (the minimum) keeps the test fast; the server must honour any cost.
    let hash = bcrypt::hash("correct horse", 4).expect("bcrypt hash");
    let server = start(Options {
        auth: midge::options::Authorization {
            users: vec![User {
                user: "alice".into(),
                password: hash.clone(),
                permissions: None,
                account: None,
            }],
            ..Default::default()
        },
        ..local_options()
    })
    .await;
    let ok = connect_with(
        &server,
        ConnectOptions::with_user_and_password("alice".into(), "correct horse".into()),
    )
    .await
    .expect("right password against its bcrypt hash");
    assert_usable(&ok).await;
    assert_auth_rejected(
        connect_with(
            &server,
            ConnectOptions::with_user_and_password("alice".into(), "wrong horse".into()),
        )
        .await,
        "wrong password",
    );
    assert_auth_rejected(
        connect_with(
            &server,
            ConnectOptions::with_user_and_password("alice".into(), hash),
        )
        .await,
        "the hash itself is not the password",
    );
    server.shutdown().await;

    // The single-user form takes a hash too.
    let hash = bcrypt::hash("pw", 4).expect("bcrypt hash");
    let server = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .user("single", hash)
        .start()
        .await
        .expect("start");
    let ok = connect_with(
        &server,
        ConnectOptions::with_user_and_password("single".into(), "pw".into()),
    )
    .await
    .expect("single user with bcrypt password");
    assert_usable(&ok).await;
    server.shutdown().await;
}

/// Users: `admin` may do anything; `alice` may publish only to `allowed.>` and may not
/// subscribe to `secret.>`; `svc` may only publish replies (allow_responses, default 1 reply).
async fn start_with_permissions() -> Server {
    let alice = Permissions {
        publish: Some(SubjectPermission {
            allow: vec!["allowed.>".into(), "_INBOX.>".into()],
            deny: vec![],
        }),
        subscribe: Some(SubjectPermission {
            allow: vec![],
            deny: vec!["secret.>".into()],
        }),
        allow_responses: None,
    };
    let svc = Permissions {
        publish: None,
        subscribe: None,
        allow_responses: Some(ResponsePermission::default()),
    };
    let user = |name: &str, permissions| User {
        user: name.into(),
        password: "pw".into(),
        permissions,
        account: None,
    };
    start(Options {
        auth: midge::options::Authorization {
            users: vec![
                user("admin", None),
                user("alice", Some(alice)),
                user("svc", Some(svc)),
            ],
            ..Default::default()
        },
        ..local_options()
    })
    .await
}

fn login(name: &str) -> ConnectOptions {
    ConnectOptions::with_user_and_password(name.into(), "pw".into())
}

#[tokio::test]
async fn publish_permission_violation_is_reported_and_not_delivered() {
    let server = start_with_permissions().await;
    let admin = connect_with(&server, login("admin")).await.expect("admin");
    let (opts, mut events) = with_events(login("alice"));
    let alice = connect_with(&server, opts).await.expect("alice");
    let mut watch = admin
        .subscribe(">")
        .await
        .expect("admin watches everything");
    // Admin's own message coming back proves the watch is registered.
    admin
        .publish("sync.admin", Bytes::new())
        .await
        .expect("publish");
    assert_eq!(next(&mut watch).await.subject.as_str(), "sync.admin");

    alice
        .publish("forbidden.x", "no".into())
        .await
        .expect("client-side publish succeeds");
    alice
        .publish("allowed.y", "yes".into())
        .await
        .expect("publish");
    let first = next(&mut watch).await;
    assert_eq!(
        first.subject.as_str(),
        "allowed.y",
        "the denied message must not be delivered"
    );
    wait_event(
        &mut events,
        "publish permissions violation",
        server_error_containing("Permissions Violation for Publish to \"forbidden.x\""),
    )
    .await;
    // The connection stays open and usable for allowed subjects.
    alice
        .publish("allowed.z", "still".into())
        .await
        .expect("publish");
    assert_eq!(next(&mut watch).await.subject.as_str(), "allowed.z");
    server.shutdown().await;
}

#[tokio::test]
async fn subscribe_permission_violation_is_reported_and_not_delivered() {
    let server = start_with_permissions().await;
    let admin = connect_with(&server, login("admin")).await.expect("admin");
    let (opts, mut events) = with_events(login("alice"));
    let alice = connect_with(&server, opts).await.expect("alice");
    let mut secret = alice
        .subscribe("secret.plans")
        .await
        .expect("client-side subscribe succeeds");
    let mut public = alice.subscribe("public.news").await.expect("subscribe");
    round_trip_on(&alice, "allowed.round_trip").await;
    wait_event(
        &mut events,
        "subscribe permissions violation",
        server_error_containing("Permissions Violation for Subscription to \"secret.plans\""),
    )
    .await;

    admin
        .publish("secret.plans", "hidden".into())
        .await
        .expect("publish");
    admin
        .publish("public.news", "visible".into())
        .await
        .expect("publish");
    // Both would be written to alice in this order, so once the second is here the first
    // would already be buffered.
    assert_eq!(
        next(&mut public).await.payload,
        Bytes::from_static(b"visible")
    );
    assert_nothing_buffered(&mut secret, "denied subscription");
    server.shutdown().await;
}

#[tokio::test]
async fn allow_responses_permits_one_reply_and_nothing_else() {
    let server = start_with_permissions().await;
    let admin = connect_with(&server, login("admin")).await.expect("admin");
    let (opts, mut events) = with_events(login("svc"));
    let svc = connect_with(&server, opts).await.expect("svc");
    let mut requests = svc.subscribe("svc.q").await.expect("svc subscribes");
    // svc may publish nothing but replies, so its round trip is a denied publish: the
    // server answers it only after having processed the SUB before it.
    svc.publish("svc.sync", Bytes::new())
        .await
        .expect("publish");
    wait_event(
        &mut events,
        "violation for svc.sync",
        server_error_containing("Permissions Violation for Publish to \"svc.sync\""),
    )
    .await;
    let mut watch = admin.subscribe("elsewhere").await.expect("watch");
    let inbox = admin.new_inbox();
    let mut replies = admin.subscribe(inbox.clone()).await.expect("inbox");
    round_trip(&admin).await;

    admin
        .publish_with_reply("svc.q", inbox, "question".into())
        .await
        .expect("request");
    let req = next(&mut requests).await;
    let reply_to = req.reply.expect("request has a reply subject");
    svc.publish(reply_to.clone(), "answer".into())
        .await
        .expect("first reply");
    svc.publish(reply_to, "second answer".into())
        .await
        .expect("client-side publish");
    svc.publish("elsewhere", "not a reply".into())
        .await
        .expect("client-side publish");
    assert_eq!(
        next(&mut replies).await.payload,
        Bytes::from_static(b"answer"),
        "the reply goes through"
    );

    wait_event(
        &mut events,
        "publish violation for a non-reply subject",
        server_error_containing("Permissions Violation for Publish to \"elsewhere\""),
    )
    .await;
    // The server handled svc's publishes in order, so the second reply has been handled
    // too; admin's round trip then drains anything queued for admin.
    round_trip(&admin).await;
    assert_nothing_buffered(&mut replies, "a second reply (max 1 per request)");
    assert_nothing_buffered(&mut watch, "a publish outside the reply subjects");
    server.shutdown().await;
}

#[tokio::test]
async fn max_payload_is_learned_from_info_and_enforced_by_the_client() {
    let server = start_default().await;
    let client = connect(&server).await;
    assert_eq!(
        client.server_info().max_payload,
        1024 * 1024,
        "nats-server's default"
    );
    let err = client
        .publish("big", vec![0u8; 1024 * 1024 + 1].into())
        .await
        .expect_err("one byte over the default");
    assert_eq!(
        err.kind(),
        async_nats::client::PublishErrorKind::MaxPayloadExceeded
    );
    server.shutdown().await;

    let server = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .max_payload(1024)
        .start()
        .await
        .expect("start");
    let client = connect(&server).await;
    assert_eq!(client.server_info().max_payload, 1024);
    assert_eq!(client.max_payload(), 1024);
    let mut sub = client.subscribe("big").await.expect("subscribe");
    client
        .publish("big", vec![7u8; 1024].into())
        .await
        .expect("exactly max_payload is fine");
    assert_eq!(next(&mut sub).await.payload.len(), 1024);
    let err = client
        .publish("big", vec![7u8; 1025].into())
        .await
        .expect_err("one byte over");
    assert_eq!(
        err.kind(),
        async_nats::client::PublishErrorKind::MaxPayloadExceeded
    );
    // The connection is unharmed.
    assert_usable(&client).await;
    server.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_after_n_messages() {
    let server = start_default().await;
    let sub_client = connect(&server).await;
    let pub_client = connect(&server).await;
    // Round trips subscribe each client's request inbox; count from there.
    round_trip(&sub_client).await;
    round_trip(&pub_client).await;
    let base = server.num_subscriptions();
    let mut limited = sub_client.subscribe("count").await.expect("subscribe");
    let mut unlimited = sub_client.subscribe("count").await.expect("subscribe");
    limited
        .unsubscribe_after(3)
        .await
        .expect("unsubscribe_after");
    round_trip(&sub_client).await;
    assert_eq!(server.num_subscriptions(), base + 2);

    for i in 0..5 {
        pub_client
            .publish("count", i.to_string().into())
            .await
            .expect("publish");
    }
    round_trip(&pub_client).await;
    for i in 0..3 {
        assert_eq!(next(&mut limited).await.payload, Bytes::from(i.to_string()));
    }
    let end = timeout(WAIT, limited.next())
        .await
        .expect("limited subscription ends in time");
    assert!(end.is_none(), "no 4th message: {end:?}");
    for i in 0..5 {
        assert_eq!(
            next(&mut unlimited).await.payload,
            Bytes::from(i.to_string())
        );
    }
    assert_eq!(
        server.num_subscriptions(),
        base + 1,
        "the server removed the limited subscription"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn no_echo_suppresses_own_messages_only() {
    let server = start_default().await;
    let quiet = timeout(
        WAIT,
        ConnectOptions::new().no_echo().connect(server.client_url()),
    )
    .await
    .expect("connect in time")
    .expect("connect no_echo");
    let other = connect(&server).await;
    let mut quiet_sub = quiet.subscribe("echo").await.expect("subscribe");
    let mut other_sub = other.subscribe("echo").await.expect("subscribe");
    round_trip(&quiet).await;
    round_trip(&other).await;

    quiet
        .publish("echo", "from quiet".into())
        .await
        .expect("publish");
    assert_eq!(
        next(&mut other_sub).await.payload,
        Bytes::from_static(b"from quiet")
    );
    round_trip(&quiet).await;
    assert_nothing_buffered(&mut quiet_sub, "no_echo client's own message");

    other
        .publish("echo", "from other".into())
        .await
        .expect("publish");
    assert_eq!(
        next(&mut quiet_sub).await.payload,
        Bytes::from_static(b"from other"),
        "others' messages still arrive"
    );
    assert_eq!(
        next(&mut other_sub).await.payload,
        Bytes::from_static(b"from other"),
        "echo is on by default"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn flush_and_drain() {
    const N: u64 = 500;
    let server = start_default().await;
    let sub_client = connect(&server).await;
    let pub_client = connect(&server).await;
    let mut sub = sub_client.subscribe("drain.me").await.expect("subscribe");
    round_trip(&sub_client).await;

    for i in 0..N {
        pub_client
            .publish("drain.me", i.to_string().into())
            .await
            .expect("publish");
    }
    // flush() writes everything out; the round trip after it proves the server has
    // processed every publish.
    timeout(WAIT, pub_client.flush())
        .await
        .expect("flush in time")
        .expect("flush");
    round_trip(&pub_client).await;
    assert!(
        server.stats().in_msgs > N,
        "in_msgs {} after the round trip",
        server.stats().in_msgs
    );

    // Draining the connection delivers everything already sent, then ends the subscription.
    timeout(WAIT, sub_client.drain())
        .await
        .expect("drain in time")
        .expect("drain");
    let mut got = 0u64;
    for _ in 0..=N {
        match timeout(WAIT, sub.next())
            .await
            .expect("drained subscription progresses")
        {
            Some(msg) => {
                assert_eq!(msg.payload, Bytes::from(got.to_string()));
                got += 1;
            }
            None => break,
        }
    }
    assert_eq!(got, N, "every message published before drain arrives");

    // Subscriber::drain on a live connection behaves the same.
    let client = connect(&server).await;
    let mut sub = client.subscribe("drain.sub").await.expect("subscribe");
    for i in 0..10 {
        client
            .publish("drain.sub", i.to_string().into())
            .await
            .expect("publish");
    }
    round_trip(&client).await;
    sub.drain().await.expect("subscriber drain");
    let mut got = 0;
    for _ in 0..=10 {
        match timeout(WAIT, sub.next()).await.expect("progress") {
            Some(_) => got += 1,
            None => break,
        }
    }
    assert_eq!(got, 10);
    assert_usable(&client).await;
    server.shutdown().await;
}

#[tokio::test]
async fn server_shutdown_is_seen_as_a_disconnect() {
    let server = start_default().await;
    let (opts, mut events) = with_events(ConnectOptions::new().max_reconnects(1));
    let client = connect_with(&server, opts).await.expect("connect");
    assert_usable(&client).await;
    timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown in time");
    wait_event(&mut events, "disconnect", |e| {
        matches!(e, Event::Disconnected)
    })
    .await;
    assert_ne!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
}

/// Reads from a raw socket until `needle` has been seen; bounded by the deadline and size.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    while !buf.windows(needle.len()).any(|w| w == needle) {
        if buf.len() > 1 << 20 {
            return Err(std::io::Error::other("no match in the first MiB"));
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read deadline"))??;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf)
}

/// Reads until the peer closes; returns how many bytes came. Bounded by deadline and size.
async fn read_to_eof(mut stream: TcpStream) -> std::io::Result<usize> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if total > 256 << 20 {
            return Err(std::io::Error::other("no EOF within 256 MiB"));
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "no EOF before the deadline")
            })?;
        match n {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            // A reset is a close too (the server may drop unread data).
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// A raw protocol subscriber with a tiny receive buffer; after the PONG it never reads.
async fn stalled_subscriber(server: &Server, subject: &str) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(server.client_addr()).await?;
    read_until(&mut stream, b"\r\n").await?; // INFO
    stream
        .write_all(
            format!("CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPING\r\n").as_bytes(),
        )
        .await?;
    read_until(&mut stream, b"PONG\r\n").await?;
    Ok(stream)
}

#[tokio::test]
async fn slow_consumer_is_cut_off_while_healthy_subscriber_gets_everything() {
    const PAYLOAD: usize = 16 * 1024;
    const MAX_MSGS: usize = 2000; // 32 MiB: far beyond socket buffers plus max_pending
    let server = start(Options {
        max_pending: 256 * 1024,
        max_payload: 64 * 1024,
        ..local_options()
    })
    .await;
    let stalled = stalled_subscriber(&server, "firehose")
        .await
        .expect("raw subscriber");
    let healthy_client = connect(&server).await;
    let mut healthy = healthy_client
        .subscribe("firehose")
        .await
        .expect("subscribe");
    round_trip(&healthy_client).await;
    let publisher = connect(&server).await;

    let payload = Bytes::from(vec![b'x'; PAYLOAD]);
    let mut sent = 0usize;
    let mut received = 0usize;
    while server.stats().slow_consumers == 0 {
        assert!(
            sent < MAX_MSGS,
            "no slow consumer after {sent} messages of {PAYLOAD} bytes"
        );
        for _ in 0..50 {
            publisher
                .publish("firehose", payload.clone())
                .await
                .expect("publish");
            sent += 1;
        }
        round_trip(&publisher).await;
        // Keep the healthy subscriber drained so that only the stalled one falls behind.
        while received < sent {
            let msg = next(&mut healthy).await;
            assert_eq!(msg.payload.len(), PAYLOAD);
            received += 1;
        }
    }
    assert_eq!(
        server.stats().slow_consumers,
        1,
        "only the stalled subscriber is cut off"
    );
    // Publishing goes on and the healthy subscriber keeps getting everything.
    for _ in 0..100 {
        publisher
            .publish("firehose", payload.clone())
            .await
            .expect("publish");
        sent += 1;
    }
    round_trip(&publisher).await;
    while received < sent {
        next(&mut healthy).await;
        received += 1;
    }
    round_trip(&healthy_client).await;
    assert_nothing_buffered(&mut healthy, "more messages than were published");
    assert_eq!(server.stats().slow_consumers, 1);
    // The stalled socket was closed by the server: past what the kernel buffered, EOF.
    let buffered = read_to_eof(stalled)
        .await
        .expect("stalled subscriber sees EOF");
    assert!(
        buffered < sent * (PAYLOAD + 64),
        "it did not get everything ({buffered} bytes)"
    );
    server.shutdown().await;
}
