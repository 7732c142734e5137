//! JetStream streams with async-nats's JetStream API, on nats-server (the reference) and
//! midge from the same config: create, publish with PubAcks, de-duplication, stream info,
//! message get and direct get, purge, delete; and the API's errors (codes and
//! descriptions) compared between the two servers request by request.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use midge_tests::{both, ServerKind, TestServer};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

/// A server with JetStream storing under a directory of its own (kept with the server).
async fn js_server(kind: ServerKind) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("store dir");
    let config = format!("jetstream {{ store_dir: \"{}\" }}\n", dir.path().display());
    (TestServer::start(kind, &config).await, dir)
}

async fn connect(server: &TestServer) -> async_nats::Client {
    async_nats::connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("{} connect: {e}", server.kind()))
}

/// A raw request, its answer as JSON.
async fn request(c: &async_nats::Client, subject: &str, body: &str) -> Value {
    let reply = tokio::time::timeout(
        WAIT,
        c.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no answer in time"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{subject}: not JSON: {e}"))
}

/// A publish with headers and a reply: the PubAck as JSON.
async fn publish(c: &async_nats::Client, subject: &str, headers: &[(&str, &str)]) -> Value {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    let reply = tokio::time::timeout(
        WAIT,
        c.request_with_headers(subject.to_string(), h, "data".into()),
    )
    .await
    .unwrap_or_else(|_| panic!("{subject}: no PubAck in time"))
    .unwrap_or_else(|e| panic!("{subject}: {e}"));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|e| panic!("{subject}: not JSON: {e}"))
}

#[tokio::test]
async fn create_publish_info_get_purge_delete() {
    both(lifecycle).await;
}

async fn lifecycle(kind: ServerKind) {
    let (server, _dir) = js_server(kind).await;
    let client = connect(&server).await;
    let js = jetstream::new(client.clone());
    // async-nats 0.51 cannot read nats-server 2.9's account info (it wants 2.10's fields):
    // the raw answer then.
    let account = request(&client, "$JS.API.INFO", "").await;
    assert_eq!(account["streams"], 0, "{kind}: {account}");

    let mut orders = js
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{kind}: create: {e}"));
    for (i, subject) in ["orders.eu", "orders.us", "orders.eu"].iter().enumerate() {
        let ack = js
            .publish(subject.to_string(), format!("o{i}").into())
            .await
            .expect("publish")
            .await
            .unwrap_or_else(|e| panic!("{kind}: ack: {e}"));
        assert_eq!(
            (ack.stream.as_str(), ack.sequence),
            ("ORDERS", i as u64 + 1)
        );
        assert!(!ack.duplicate);
    }
    // The same message id within the window: the first sequence again, flagged.
    for expect_dup in [false, true] {
        let ack = js
            .send_publish(
                "orders.eu",
                jetstream::message::PublishMessage::build()
                    .payload("once".into())
                    .message_id("id-1"),
            )
            .await
            .expect("publish")
            .await
            .expect("ack");
        assert_eq!((ack.sequence, ack.duplicate), (4, expect_dup), "{kind}");
    }

    let info = orders.info().await.expect("info").clone();
    assert_eq!(info.state.messages, 4, "{kind}");
    assert_eq!(
        (info.state.first_sequence, info.state.last_sequence),
        (1, 4)
    );
    assert_eq!(info.state.subjects_count, 2, "{kind}");
    assert_eq!(info.config.max_messages, -1);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));

    let msg = orders.get_raw_message(2).await.expect("get 2");
    assert_eq!(
        (msg.subject.as_str(), &msg.payload[..]),
        ("orders.us", &b"o1"[..])
    );
    let last = orders
        .get_last_raw_message_by_subject("orders.eu")
        .await
        .expect("last by subject");
    assert_eq!(last.sequence, 4);
    assert_eq!(
        last.headers.get("Nats-Msg-Id").map(|v| v.as_str()),
        Some("id-1"),
        "{kind}"
    );
    let direct = orders.direct_get(1).await.expect("direct get");
    assert_eq!((direct.subject.as_str(), direct.sequence), ("orders.eu", 1));
    let direct = orders
        .direct_get_last_for_subject("orders.us")
        .await
        .expect("direct last");
    assert_eq!(direct.sequence, 2, "{kind}");
    assert!(orders.direct_get(99).await.is_err(), "{kind}: 404");
    assert!(
        orders.get_raw_message(99).await.is_err(),
        "{kind}: not found"
    );

    let with_subjects = orders
        .info_with_subjects("orders.*")
        .await
        .expect("info with subjects");
    drop(with_subjects);
    let raw = request(
        &client,
        "$JS.API.STREAM.INFO.ORDERS",
        r#"{"subjects_filter":">"}"#,
    )
    .await;
    assert_eq!(raw["state"]["subjects"]["orders.eu"], 3, "{kind}: {raw}");
    assert_eq!(raw["state"]["subjects"]["orders.us"], 1, "{kind}: {raw}");

    assert!(orders.delete_message(1).await.expect("delete"));
    let raw = request(
        &client,
        "$JS.API.STREAM.INFO.ORDERS",
        r#"{"deleted_details":true}"#,
    )
    .await;
    assert_eq!(raw["state"]["first_seq"], 2, "{kind}: {raw}");
    let purged = orders
        .purge()
        .filter("orders.eu")
        .keep(1)
        .await
        .expect("purge");
    assert_eq!(purged.purged, 1, "{kind}");
    let info = orders.info().await.expect("info").clone();
    assert_eq!(info.state.messages, 2, "{kind}");
    let purged = orders.purge().await.expect("purge all");
    assert_eq!(purged.purged, 2);
    let info = orders.info().await.expect("info").clone();
    assert_eq!(
        (
            info.state.messages,
            info.state.first_sequence,
            info.state.last_sequence
        ),
        (0, 5, 4),
        "{kind}"
    );
    // Numbering goes on after a purge.
    let ack = js
        .publish("orders.eu", "after".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!(ack.sequence, 5);

    let names: Vec<String> = {
        use futures::TryStreamExt;
        js.stream_names().try_collect().await.expect("names")
    };
    assert_eq!(names, ["ORDERS"]);
    assert!(js.delete_stream("ORDERS").await.expect("delete").success);
    assert!(js.get_stream("ORDERS").await.is_err(), "{kind}: gone");
    let account = request(&client, "$JS.API.INFO", "").await;
    assert_eq!(account["streams"], 0, "{kind}: {account}");
    if kind == ServerKind::Midge {
        let account = js.query_account().await.expect("account info");
        assert_eq!(account.streams, 0);
    }
}

/// Every request, on both servers: the `error` objects (or their absence) must be equal.
#[tokio::test]
async fn api_errors_match_nats_server() {
    let (reference, _d1) = js_server(ServerKind::NatsServer).await;
    let (midge, _d2) = js_server(ServerKind::Midge).await;
    let r = connect(&reference).await;
    let m = connect(&midge).await;
    let steps: &[(&str, &str)] = &[
        (
            "$JS.API.STREAM.CREATE.S",
            r#"{"name":"S","subjects":["s.>"]}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.S",
            r#"{"name":"S","subjects":["t.>"]}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.T",
            r#"{"name":"T","subjects":["s.a"]}"#,
        ),
        ("$JS.API.STREAM.CREATE.X", r#"{"name":"Y"}"#),
        (
            "$JS.API.STREAM.CREATE.R",
            r#"{"name":"R","num_replicas":3}"#,
        ),
        ("$JS.API.STREAM.CREATE.B", "{bad json"),
        ("$JS.API.STREAM.CREATE.A", r#"{"name":"A","max_age":1000}"#),
        (
            "$JS.API.STREAM.CREATE.D",
            r#"{"name":"D","discard":"new","discard_new_per_subject":true}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.P",
            r#"{"name":"P","deny_purge":true,"allow_rollup_hdrs":true}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.L",
            r#"{"name":"L","subjects":["l.*"],"max_msgs":1,"discard":"new","deny_delete":true,"deny_purge":true}"#,
        ),
        ("$JS.API.STREAM.INFO.NOPE", ""),
        ("$JS.API.STREAM.DELETE.NOPE", ""),
        ("$JS.API.STREAM.MSG.GET.S", r#"{"seq":99}"#),
        ("$JS.API.STREAM.MSG.DELETE.S", r#"{"seq":99}"#),
        ("$JS.API.STREAM.PURGE.S", r#"{"seq":2,"keep":1}"#),
        ("$JS.API.STREAM.PURGE.L", ""),
        (
            "$JS.API.STREAM.UPDATE.S",
            r#"{"name":"S","subjects":["s.>"],"storage":"memory"}"#,
        ),
        ("$JS.API.STREAM.UPDATE.NOPE", r#"{"name":"NOPE"}"#),
    ];
    for (subject, body) in steps {
        let a = request(&r, subject, body).await;
        let b = request(&m, subject, body).await;
        assert_eq!(
            a["error"], b["error"],
            "{subject} {body}:\nnats-server {a}\nmidge       {b}"
        );
        assert_eq!(a["type"], b["type"], "{subject}");
    }
    // nats-server 2.10 reworded this one ("... require no-ack to be true"); the code is
    // the same.
    let subject = "$JS.API.STREAM.CREATE.J";
    let body = r#"{"name":"J","subjects":["$JS.API.>"]}"#;
    let (a, b) = (
        request(&r, subject, body).await,
        request(&m, subject, body).await,
    );
    assert_eq!(a["error"]["err_code"], b["error"]["err_code"], "{a} {b}");
    // PubAck errors.
    let puback_steps: &[(&str, &[(&str, &str)])] = &[
        ("s.a", &[]),
        ("s.a", &[("Nats-Msg-Id", "1")]),
        ("s.a", &[("Nats-Msg-Id", "1")]),
        ("s.b", &[("Nats-Expected-Last-Sequence", "1")]),
        ("s.b", &[("Nats-Expected-Stream", "Q")]),
        ("s.b", &[("Nats-Expected-Last-Subject-Sequence", "9")]),
        ("s.b", &[("Nats-Expected-Last-Msg-Id", "zz")]),
        ("s.b", &[("Nats-Rollup", "sub")]),
        ("l.a", &[]),
        ("l.b", &[]),
    ];
    for (subject, headers) in puback_steps {
        let a = publish(&r, subject, headers).await;
        let b = publish(&m, subject, headers).await;
        assert_eq!(
            a["error"], b["error"],
            "{subject} {headers:?}:\nnats-server {a}\nmidge       {b}"
        );
        assert_eq!(a["seq"], b["seq"], "{subject} {headers:?}: {a} {b}");
        assert_eq!(a["duplicate"], b["duplicate"], "{subject} {headers:?}");
    }
    let a = request(&r, "$JS.API.STREAM.MSG.DELETE.L", r#"{"seq":1}"#).await;
    let b = request(&m, "$JS.API.STREAM.MSG.DELETE.L", r#"{"seq":1}"#).await;
    assert_eq!(a["error"]["err_code"], b["error"]["err_code"], "{a} {b}");
}

#[tokio::test]
async fn limits_discard_and_per_subject_history() {
    both(limits).await;
}

async fn limits(kind: ServerKind) {
    let (server, _dir) = js_server(kind).await;
    let client = connect(&server).await;
    let js = jetstream::new(client.clone());
    let mut kv_like = js
        .create_stream(stream::Config {
            name: "KV_x".into(),
            subjects: vec!["$KV.x.>".into()],
            max_messages_per_subject: 2,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create");
    for i in 0..5 {
        js.publish("$KV.x.k", i.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    js.publish("$KV.x.other", "o".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let info = kv_like.info().await.expect("info").clone();
    assert_eq!(
        (
            info.state.messages,
            info.state.first_sequence,
            info.state.last_sequence
        ),
        (3, 4, 6),
        "{kind}"
    );
    let last = kv_like
        .direct_get_last_for_subject("$KV.x.k")
        .await
        .expect("direct last");
    assert_eq!(&last.payload[..], b"4", "{kind}");

    js.create_stream(stream::Config {
        name: "CAP".into(),
        subjects: vec!["cap".into()],
        max_messages: 2,
        discard: stream::DiscardPolicy::New,
        max_message_size: 10,
        ..Default::default()
    })
    .await
    .expect("create");
    for _ in 0..2 {
        publish(&client, "cap", &[]).await;
    }
    let full = publish(&client, "cap", &[]).await;
    assert_eq!(full["error"]["err_code"], 10077, "{kind}: {full}");
    assert_eq!(full["error"]["description"], "maximum messages exceeded");
    let reply = client
        .request("cap", "far too large a payload".into())
        .await
        .expect("request");
    let big: Value = serde_json::from_slice(&reply.payload).expect("json");
    assert_eq!(big["error"]["err_code"], 10054, "{kind}: {big}");
}

/// A file stream survives a restart: its configuration, its messages, and its
/// de-duplication window.
#[tokio::test]
async fn file_streams_survive_a_restart() {
    both(restart).await;
}

async fn restart(kind: ServerKind) {
    let dir = tempfile::tempdir().expect("store dir");
    let config = format!("jetstream {{ store_dir: \"{}\" }}\n", dir.path().display());
    {
        let server = TestServer::start(kind, &config).await;
        let js = jetstream::new(connect(&server).await);
        js.create_stream(stream::Config {
            name: "KEEP".into(),
            subjects: vec!["keep.*".into()],
            max_messages: 10,
            ..Default::default()
        })
        .await
        .expect("create");
        for i in 0..3 {
            let ack = js
                .send_publish(
                    "keep.a",
                    jetstream::message::PublishMessage::build()
                        .payload(format!("m{i}").into())
                        .message_id(format!("id-{i}")),
                )
                .await
                .expect("publish")
                .await
                .expect("ack");
            assert_eq!(ack.sequence, i + 1);
        }
    }
    let server = TestServer::start(kind, &config).await;
    let js = jetstream::new(connect(&server).await);
    let mut s = js
        .get_stream("KEEP")
        .await
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
    let info = s.info().await.expect("info");
    assert_eq!(info.config.subjects, ["keep.*"]);
    assert_eq!(info.config.max_messages, 10);
    assert_eq!(info.state.messages, 3, "{kind}");
    let m = s.get_raw_message(2).await.expect("get");
    assert_eq!(&m.payload[..], b"m1", "{kind}");
    let dup = js
        .send_publish(
            "keep.a",
            jetstream::message::PublishMessage::build()
                .payload("again".into())
                .message_id("id-2"),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!((dup.sequence, dup.duplicate), (3, true), "{kind}");
    let ack = js
        .publish("keep.a", "x".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    assert_eq!((ack.stream.as_str(), ack.sequence), ("KEEP", 4));
}

/// `/jsz` and `/varz` (through `$SYS.REQ.SERVER.PING.<Z>`), stream advisories, and
/// JetStream per account: an account without it gets no API.
#[tokio::test]
async fn monitoring_advisories_and_accounts() {
    both(monitoring).await;
}

async fn monitoring(kind: ServerKind) {
    let dir = tempfile::tempdir().expect("store dir");
    let config = format!(
        "server_name: js-mon\njetstream {{ store_dir: \"{}\" }}\nsystem_account: SYS\naccounts {{\n  \
         SYS: {{ users: [{{user: sys, password: sys}}] }}\n  \
         A: {{ users: [{{user: a, password: a}}], jetstream: enabled }}\n  \
         B: {{ users: [{{user: b, password: b}}] }}\n}}\n",
        dir.path().display()
    );
    let server = TestServer::start(kind, &config).await;
    let login = |user: &'static str| {
        let url = server.url();
        async move {
            async_nats::ConnectOptions::with_user_and_password(user.into(), user.into())
                .connect(url)
                .await
                .expect("login")
        }
    };
    let a = login("a").await;
    let mut advisories = a
        .subscribe("$JS.EVENT.ADVISORY.STREAM.>")
        .await
        .expect("subscribe");
    let mut audits = a
        .subscribe("$JS.EVENT.ADVISORY.API")
        .await
        .expect("subscribe");
    midge_tests::round_trip(&a).await;
    let js = jetstream::new(a.clone());
    js.create_stream(stream::Config {
        name: "S".into(),
        subjects: vec!["s.*".into()],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create");
    let advisory = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut advisories))
        .await
        .expect("advisory in time")
        .expect("advisory");
    assert_eq!(
        advisory.subject.as_str(),
        "$JS.EVENT.ADVISORY.STREAM.CREATED.S"
    );
    let body: Value = serde_json::from_slice(&advisory.payload).expect("json");
    assert_eq!(
        body["type"], "io.nats.jetstream.advisory.v1.stream_action",
        "{kind}"
    );
    assert_eq!(
        (body["stream"].as_str(), body["action"].as_str()),
        (Some("S"), Some("create"))
    );
    // Every JSON answer of the API is audited in the requester's account.
    let audit = loop {
        let m = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut audits))
            .await
            .expect("audit in time")
            .expect("audit");
        let body: Value = serde_json::from_slice(&m.payload).expect("json");
        if body["subject"] == "$JS.API.STREAM.CREATE.S" {
            break body;
        }
    };
    assert_eq!(
        audit["type"], "io.nats.jetstream.advisory.v1.api_audit",
        "{kind}: {audit}"
    );
    assert_eq!(audit["server"], "js-mon", "{kind}: {audit}");
    assert_eq!(audit["client"]["acc"], "A", "{kind}: {audit}");
    assert_eq!(audit["client"]["server"], "js-mon", "{kind}: {audit}");
    let asked: Value =
        serde_json::from_str(audit["request"].as_str().expect("request")).expect("json");
    assert_eq!(asked["name"], "S", "{kind}: {audit}");
    let response: Value =
        serde_json::from_str(audit["response"].as_str().expect("response")).expect("json");
    assert_eq!(
        response["type"], "io.nats.jetstream.api.v1.stream_create_response",
        "{kind}: {audit}"
    );
    for _ in 0..2 {
        js.publish("s.x", "m".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }

    let sys = login("sys").await;
    let jsz = request(
        &sys,
        "$SYS.REQ.SERVER.PING.JSZ",
        r#"{"accounts":true,"streams":true,"config":true}"#,
    )
    .await;
    let data = &jsz["data"];
    assert!(
        data["config"]["max_memory"].as_u64().is_some(),
        "{kind}: {jsz}"
    );
    assert!(data["config"]["store_dir"].is_string(), "{kind}: {jsz}");
    assert_eq!(
        (data["streams"].as_u64(), data["messages"].as_u64()),
        (Some(1), Some(2)),
        "{kind}: {jsz}"
    );
    assert!(
        data["api"]["total"].as_u64().is_some_and(|n| n >= 1),
        "{kind}: {jsz}"
    );
    let detail = &data["account_details"][0];
    assert_eq!(detail["name"], "A", "{kind}: {jsz}");
    let stream = &detail["stream_detail"][0];
    assert_eq!(stream["name"], "S", "{kind}: {jsz}");
    assert_eq!(stream["state"]["messages"], 2, "{kind}: {jsz}");
    assert_eq!(stream["config"]["name"], "S", "{kind}: {jsz}");
    let varz = request(&sys, "$SYS.REQ.SERVER.PING.VARZ", "").await;
    let section = &varz["data"]["jetstream"];
    assert!(
        section["config"]["max_storage"].as_u64().is_some(),
        "{kind}: {section}"
    );
    assert!(
        section["stats"]["memory"].as_u64().is_some_and(|m| m > 0),
        "{kind}: {section}"
    );
    assert_eq!(varz["server"]["jetstream"], true, "{kind}");

    // B has no JetStream: its requests are answered "not enabled for account".
    let b = login("b").await;
    let info = request(&b, "$JS.API.INFO", "").await;
    assert_eq!(info["error"]["err_code"], 10039, "{kind}: {info}");
    assert_eq!(
        info["type"],
        "io.nats.jetstream.api.v1.account_info_response"
    );
    let create = request(&b, "$JS.API.STREAM.CREATE.X", r#"{"name":"X"}"#).await;
    assert_eq!(create["error"]["err_code"], 10039, "{kind}: {create}");
}

/// Account limits: streams, memory bytes and per-stream bytes, as nats-server answers them.
#[tokio::test]
async fn account_limits_match_nats_server() {
    let config = |dir: &std::path::Path| {
        format!(
            "jetstream {{ store_dir: \"{}\" }}\naccounts {{\n  \
             A: {{ users: [{{user: a, password: a}}], jetstream {{ max_streams: 2, max_mem: 4096, \
             max_file: 8192, max_consumers: 5 }} }}\n}}\n",
            dir.display()
        )
    };
    let (d1, d2) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let reference = TestServer::start(ServerKind::NatsServer, &config(d1.path())).await;
    let midge = TestServer::start(ServerKind::Midge, &config(d2.path())).await;
    let login = |s: &TestServer| {
        async_nats::ConnectOptions::with_user_and_password("a".into(), "a".into()).connect(s.url())
    };
    let r = login(&reference).await.expect("login");
    let m = login(&midge).await.expect("login");
    let info_r = request(&r, "$JS.API.INFO", "").await;
    let info_m = request(&m, "$JS.API.INFO", "").await;
    assert_eq!(info_r["limits"], info_m["limits"], "{info_r}\n{info_m}");
    let steps: &[(&str, &str)] = &[
        (
            "$JS.API.STREAM.CREATE.BIG",
            r#"{"name":"BIG","storage":"memory","max_bytes":10000}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.M",
            r#"{"name":"M","storage":"memory","max_bytes":2048}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.M2",
            r#"{"name":"M2","storage":"memory","max_bytes":4096}"#,
        ),
        (
            "$JS.API.STREAM.CREATE.F",
            r#"{"name":"F","max_bytes":1024}"#,
        ),
        ("$JS.API.STREAM.CREATE.G", r#"{"name":"G"}"#),
    ];
    for (subject, body) in steps {
        let a = request(&r, subject, body).await;
        let b = request(&m, subject, body).await;
        assert_eq!(
            a["error"], b["error"],
            "{subject} {body}:\nnats-server {a}\nmidge       {b}"
        );
    }
}

/// A publisher far faster than the stream: nothing is lost, the publisher is slowed down
/// (midge only: the queue in front of a stream is midge's).
#[tokio::test]
async fn a_fast_publisher_loses_nothing() {
    let (server, _dir) = js_server(ServerKind::Midge).await;
    let client = connect(&server).await;
    let js = jetstream::new(client.clone());
    let mut s = js
        .create_stream(stream::Config {
            name: "FLOOD".into(),
            subjects: vec!["flood".into()],
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create");
    const N: u64 = 200_000;
    for i in 0..N {
        client
            .publish("flood", i.to_string().into())
            .await
            .expect("publish");
    }
    client.flush().await.expect("flush");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let info = s.info().await.expect("info").clone();
        if info.state.messages == N {
            assert_eq!(info.state.last_sequence, N);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} stored",
            info.state.messages
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stream sourcing another (filtered) and a mirror, on both servers: same messages,
/// same `Nats-Stream-Source` header, same sequences in the mirror.
#[tokio::test]
async fn sources_and_mirrors() {
    both(sourcing).await;
}

async fn sourcing(kind: ServerKind) {
    let (server, _dir) = js_server(kind).await;
    let client = connect(&server).await;
    for (name, body) in [
        ("O", r#"{"name":"O","subjects":["o.*"]}"#),
        (
            "AGG",
            r#"{"name":"AGG","sources":[{"name":"O","filter_subject":"o.keep"}]}"#,
        ),
        ("M", r#"{"name":"M","mirror":{"name":"O"}}"#),
    ] {
        let created = request(&client, &format!("$JS.API.STREAM.CREATE.{name}"), body).await;
        assert!(created["error"].is_null(), "{kind} {name}: {created}");
    }
    for subject in ["o.keep", "o.drop", "o.keep"] {
        publish(&client, subject, &[]).await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let agg = request(&client, "$JS.API.STREAM.INFO.AGG", "").await;
        let m = request(&client, "$JS.API.STREAM.INFO.M", "").await;
        if agg["state"]["messages"] == 2 && m["state"]["messages"] == 3 {
            assert_eq!(m["state"]["last_seq"], 3, "{kind}: {m}");
            assert_eq!(agg["sources"][0]["name"], "O", "{kind}: {agg}");
            assert_eq!(m["mirror"]["name"], "O", "{kind}: {m}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{kind}: {agg}\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let js = jetstream::new(client.clone());
    let agg = js.get_stream("AGG").await.expect("AGG");
    let second = agg.get_raw_message(2).await.expect("get");
    assert_eq!(second.subject.as_str(), "o.keep");
    let source = second
        .headers
        .get("Nats-Stream-Source")
        .map(|v| v.as_str().to_string())
        .unwrap_or_default();
    assert!(source.starts_with("O 3"), "{kind}: {source:?}");
}
