//! JetStream consumers through async-nats against midge and nats-server 2.9.10 `-js`: pull
//! (`fetch`, `batch`, `messages()`), push, ordered, the ack kinds, redelivery after the ack
//! wait, max deliver with its advisory, NAK with a delay, work-queue retention, the API's
//! JSON and errors compared between the two servers, and a durable consumer that resumes
//! after a restart. Every wait has a deadline; timing rules are checked as "not before"
//! bounds with margin and generous "eventually" bounds.

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{self, pull, push, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, stream, AckKind, Context};
use futures::StreamExt;
use midge_tests::{both, ServerKind, TestServer};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

async fn js_server(kind: ServerKind, dir: &Path) -> TestServer {
    TestServer::builder(kind)
        .arg("-js")
        .arg("-sd")
        .arg(dir.to_str().expect("utf-8 temp dir"))
        .start()
        .await
}

async fn connect(server: &TestServer) -> (async_nats::Client, Context) {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    (client, js)
}

async fn stream_with(js: &Context, name: &str, subjects: &[&str], n: usize) -> stream::Stream {
    let s = js
        .create_stream(stream::Config {
            name: name.to_string(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .await
        .expect("create stream");
    for i in 0..n {
        let subject = subjects[i % subjects.len()]
            .replace('>', "x")
            .replace('*', "y");
        js.publish(subject, format!("m{i}").into())
            .await
            .expect("publish")
            .await
            .expect("puback");
    }
    s
}

/// A raw `$JS.API` request: the JSON answer.
async fn api(client: &async_nats::Client, subject: &str, body: &str) -> Value {
    let msg = tokio::time::timeout(
        WAIT,
        client.request(subject.to_string(), body.to_string().into()),
    )
    .await
    .expect("answer in time")
    .expect("request");
    serde_json::from_slice(&msg.payload).expect("json")
}

/// Masks what differs between runs and servers: times, generated names.
fn normalise(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if matches!(k.as_str(), "created" | "ts" | "last_active" | "timestamp") {
                        *x = Value::String("<time>".into());
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// Removes `key` from `v` and every object in it.
fn strip(v: &mut Value, key: &str) {
    match v {
        Value::Object(m) => {
            m.remove(key);
            m.values_mut().for_each(|x| strip(x, key));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip(x, key)),
        _ => {}
    }
}

async fn next_msg(
    msgs: &mut (impl futures::Stream<Item = Result<jetstream::Message, impl std::fmt::Debug>> + Unpin),
) -> jetstream::Message {
    tokio::time::timeout(WAIT, msgs.next())
        .await
        .expect("message in time")
        .expect("stream open")
        .expect("message")
}

#[tokio::test]
async fn jetstream_consumers_pull_fetch_batch_messages() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (_client, js) = connect(&server).await;
        let s = stream_with(&js, "S", &["s.>"], 10).await;
        let mut c: consumer::PullConsumer = s
            .create_consumer(pull::Config {
                durable_name: Some("D".into()),
                ..Default::default()
            })
            .await
            .expect("create consumer");
        let mut got = c.fetch().max_messages(4).messages().await.expect("fetch");
        for i in 0..4 {
            let m = next_msg(&mut got).await;
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes(), "{kind}");
            let info = m.info().expect("ack info");
            assert_eq!(info.stream_sequence, i as u64 + 1);
            assert_eq!(info.pending, 9 - i as u64);
            m.ack().await.expect("ack");
        }
        assert!(tokio::time::timeout(WAIT, got.next())
            .await
            .expect("ends")
            .is_none());
        let mut batch = c
            .batch()
            .max_messages(3)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .expect("batch");
        for i in 4..7 {
            let m = next_msg(&mut batch).await;
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
            m.double_ack().await.expect("double ack");
        }
        let mut all = c.messages().await.expect("messages");
        for i in 7..10 {
            let m = next_msg(&mut all).await;
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes());
            m.ack().await.expect("ack");
        }
        drop(all);
        // Acks are asynchronous: wait until the server has them all.
        let deadline = Instant::now() + WAIT;
        loop {
            let info = c.info().await.expect("info").clone();
            if info.ack_floor.stream_sequence == 10 {
                assert_eq!(info.num_pending, 0);
                assert_eq!(info.num_ack_pending, 0);
                assert_eq!(info.delivered.consumer_sequence, 10);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind}: acks never reached the floor: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Nothing left: fetch ends at once with nothing.
        let t = Instant::now();
        let mut none = c.fetch().max_messages(5).messages().await.expect("fetch");
        assert!(tokio::time::timeout(WAIT, none.next())
            .await
            .expect("ends")
            .is_none());
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{kind}: empty fetch took {:?}",
            t.elapsed()
        );
    })
    .await;
}

#[tokio::test]
async fn jetstream_consumers_redelivery_and_max_deliver() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        let s = stream_with(&js, "R", &["r"], 1).await;
        let mut advisories = client
            .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.R.D")
            .await
            .expect("subscribe");
        let c: consumer::PullConsumer = s
            .create_consumer(pull::Config {
                durable_name: Some("D".into()),
                ack_wait: Duration::from_millis(500),
                max_deliver: 2,
                ..Default::default()
            })
            .await
            .expect("create");
        let mut msgs = c.messages().await.expect("messages");
        let first = next_msg(&mut msgs).await;
        let t = Instant::now();
        assert_eq!(first.info().expect("info").delivered, 1);
        let second = next_msg(&mut msgs).await;
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "{kind}: redelivered after {:?}",
            t.elapsed()
        );
        let info = second.info().expect("info");
        assert_eq!(
            (info.delivered, info.stream_sequence, info.consumer_sequence),
            (2, 1, 2)
        );
        let adv = tokio::time::timeout(WAIT, advisories.next())
            .await
            .expect("advisory in time")
            .expect("subscription");
        let adv: Value = serde_json::from_slice(&adv.payload).expect("json");
        assert_eq!(adv["type"], "io.nats.jetstream.advisory.v1.max_deliver");
        assert_eq!(adv["stream_seq"], 1);
        assert_eq!(adv["deliveries"], 2);
        assert_eq!(adv["consumer"], "D");
        // No third delivery.
        assert!(
            tokio::time::timeout(Duration::from_millis(1200), msgs.next())
                .await
                .is_err(),
            "{kind}: delivered past max_deliver"
        );
    })
    .await;
}

#[tokio::test]
async fn jetstream_consumers_nak_term_progress() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        let s = stream_with(&js, "N", &["n"], 3).await;
        let mut terminated = client
            .subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.N.D")
            .await
            .expect("subscribe");
        let c: consumer::PullConsumer = s
            .create_consumer(pull::Config {
                durable_name: Some("D".into()),
                ack_wait: Duration::from_secs(2),
                ..Default::default()
            })
            .await
            .expect("create");
        let mut msgs = c.messages().await.expect("messages");
        let m1 = next_msg(&mut msgs).await;
        let m2 = next_msg(&mut msgs).await;
        let m3 = next_msg(&mut msgs).await;
        // A plain NAK comes back at once, a delayed one not before its delay.
        m1.ack_with(AckKind::Nak(None)).await.expect("nak");
        let again = next_msg(&mut msgs).await;
        assert_eq!(again.info().expect("info").stream_sequence, 1, "{kind}");
        assert_eq!(again.info().expect("info").delivered, 2);
        let t = Instant::now();
        again
            .ack_with(AckKind::Nak(Some(Duration::from_millis(700))))
            .await
            .expect("nak with delay");
        m2.double_ack_with(AckKind::Term).await.expect("term");
        let adv = tokio::time::timeout(WAIT, terminated.next())
            .await
            .expect("advisory in time")
            .expect("subscription");
        let adv: Value = serde_json::from_slice(&adv.payload).expect("json");
        assert_eq!(adv["stream_seq"], 2);
        // In progress, twice, keeps the third from coming back within its 2 s ack wait.
        m3.ack_with(AckKind::Progress).await.expect("wpi");
        let delayed = next_msg(&mut msgs).await;
        assert_eq!(delayed.info().expect("info").stream_sequence, 1, "{kind}");
        assert!(
            t.elapsed() >= Duration::from_millis(600),
            "{kind}: nak delay {:?}",
            t.elapsed()
        );
        delayed.double_ack().await.expect("ack");
        m3.ack_with(AckKind::Progress).await.expect("wpi");
        m3.double_ack().await.expect("ack");
        let mut c = c;
        let info = c.info().await.expect("info");
        assert_eq!(info.num_ack_pending, 0, "{kind}");
        assert_eq!(info.ack_floor.stream_sequence, 3);
    })
    .await;
}

#[tokio::test]
async fn jetstream_consumers_push_and_ordered() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        let s = stream_with(&js, "P", &["p.a", "p.b"], 200).await;
        let c: consumer::PushConsumer = s
            .create_consumer(push::Config {
                durable_name: Some("PD".into()),
                deliver_subject: client.new_inbox(),
                filter_subject: "p.b".into(),
                ack_policy: AckPolicy::Explicit,
                idle_heartbeat: Duration::from_millis(500),
                flow_control: true,
                ..Default::default()
            })
            .await
            .expect("create push");
        let mut msgs = c.messages().await.expect("messages");
        for i in 0..100 {
            let m = next_msg(&mut msgs).await;
            assert_eq!(m.subject.as_str(), "p.b", "{kind}");
            assert_eq!(&m.payload[..], format!("m{}", 2 * i + 1).as_bytes());
            m.ack().await.expect("ack");
        }
        let ordered = s
            .create_consumer(push::OrderedConfig {
                deliver_subject: client.new_inbox(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 11 },
                ..Default::default()
            })
            .await
            .expect("ordered");
        let mut msgs = ordered.messages().await.expect("messages");
        for i in 10..200 {
            let m = tokio::time::timeout(WAIT, msgs.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("message");
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes(), "{kind}");
        }
        // New messages keep coming to the ordered consumer.
        js.publish("p.a", "late".into())
            .await
            .expect("pub")
            .await
            .expect("ack");
        let m = tokio::time::timeout(WAIT, msgs.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("message");
        assert_eq!(&m.payload[..], b"late");
    })
    .await;
}

#[tokio::test]
async fn jetstream_consumers_work_queue() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        let mut s = js
            .create_stream(stream::Config {
                name: "WQ".into(),
                subjects: vec!["wq.>".into()],
                retention: stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .expect("stream");
        for i in 0..5 {
            js.publish(format!("wq.{i}"), "job".into())
                .await
                .expect("pub")
                .await
                .expect("ack");
        }
        let c: consumer::PullConsumer = s
            .create_consumer(pull::Config {
                durable_name: Some("W".into()),
                ..Default::default()
            })
            .await
            .expect("create");
        // A second unfiltered consumer is refused, with nats-server's error.
        let err = api(
            &client,
            "$JS.API.CONSUMER.DURABLE.CREATE.WQ.W2",
            r#"{"stream_name":"WQ","config":{"durable_name":"W2","ack_policy":"explicit"}}"#,
        )
        .await;
        assert_eq!(err["error"]["err_code"], 10099, "{kind}: {err}");
        let mut msgs = c.fetch().max_messages(5).messages().await.expect("fetch");
        for _ in 0..5 {
            next_msg(&mut msgs).await.double_ack().await.expect("ack");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let info = s.info().await.expect("info");
            if info.state.messages == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind}: acked jobs stay: {:?}",
                info.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// The API's answers, compared between the two servers with times masked.
#[tokio::test]
async fn jetstream_consumers_api_differential() {
    let requests: &[(&str, &str)] = &[
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.A.D",
            r#"{"stream_name":"A","config":{"durable_name":"D","ack_policy":"explicit","filter_subject":"a.1"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.P",
            r#"{"stream_name":"A","config":{"name":"P","deliver_subject":"dd","ack_policy":"explicit","idle_heartbeat":1000000000,"flow_control":true}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.L",
            r#"{"stream_name":"A","config":{"name":"L","deliver_policy":"last","ack_policy":"all","max_ack_pending":5,"max_waiting":3}}"#,
        ),
        ("$JS.API.CONSUMER.INFO.A.D", ""),
        ("$JS.API.CONSUMER.INFO.A.D", "{}"),
        ("$JS.API.CONSUMER.INFO.A.D", r#"{"x":1}"#),
        ("$JS.API.CONSUMER.INFO.A.nope", ""),
        ("$JS.API.CONSUMER.INFO.nope.D", ""),
        ("$JS.API.CONSUMER.NAMES.A", ""),
        ("$JS.API.CONSUMER.NAMES.A", r#"{"offset":1}"#),
        ("$JS.API.CONSUMER.NAMES.A", "junk"),
        ("$JS.API.CONSUMER.LIST.A", ""),
        (
            "$JS.API.CONSUMER.CREATE.A",
            r#"{"stream_name":"B","config":{}}"#,
        ),
        ("$JS.API.CONSUMER.CREATE.A", r#"junk"#),
        (
            "$JS.API.CONSUMER.CREATE.A",
            r#"{"stream_name":"A","config":{"deliver_policy":"bogus"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A",
            r#"{"stream_name":"A","config":{"durable_name":"X"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.nope",
            r#"{"stream_name":"nope","config":{}}"#,
        ),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.A.X",
            r#"{"stream_name":"A","config":{}}"#,
        ),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.A.X",
            r#"{"stream_name":"A","config":{"durable_name":"Y"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"durable_name":"Y"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X.a.2",
            r#"{"stream_name":"A","config":{"filter_subject":"a.3"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_policy":"by_start_sequence"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_policy":"last_per_subject"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_policy":"new","opt_start_seq":3}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_subject":"a.9"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_subject":"x.*"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_subject":"x","max_waiting":3}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_subject":"x","idle_heartbeat":1000}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"deliver_subject":"x","flow_control":true}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"idle_heartbeat":1000000000}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"flow_control":true}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"max_waiting":-1}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"ack_policy":"explicit","backoff":[1000000000],"max_deliver":1}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"rate_limit_bps":1000}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"num_replicas":3}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"sample_freq":"x"}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"max_batch":-1}}"#,
        ),
        (
            "$JS.API.CONSUMER.CREATE.A.X",
            r#"{"stream_name":"A","config":{"max_expires":10}}"#,
        ),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.A.D",
            r#"{"stream_name":"A","config":{"durable_name":"D","ack_policy":"none"}}"#,
        ),
        (
            "$JS.API.CONSUMER.DURABLE.CREATE.A.D",
            r#"{"stream_name":"A","config":{"durable_name":"D","ack_policy":"explicit","filter_subject":"a.1","description":"now described"}}"#,
        ),
        ("$JS.API.CONSUMER.DELETE.A.D", r#"{"x":1}"#),
        ("$JS.API.CONSUMER.DELETE.A.D", ""),
        ("$JS.API.CONSUMER.DELETE.A.D", ""),
        ("$JS.API.CONSUMER.NAMES.A", ""),
    ];
    let mut answers: Vec<Vec<Value>> = Vec::new();
    for kind in midge_tests::kinds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        stream_with(&js, "A", &["a.1", "a.2", "a.3"], 6).await;
        let mut got = Vec::new();
        for (subject, body) in requests {
            let mut answer = normalise(api(&client, subject, body).await);
            // `ts` is new in 2.10: nats-server 2.9.10 does not send it.
            strip(&mut answer, "ts");
            got.push(answer);
        }
        answers.push(got);
    }
    if answers.len() == 2 {
        for (i, (reference, midge)) in answers[0].iter().zip(&answers[1]).enumerate() {
            assert_eq!(
                reference, midge,
                "request {i} {} {}: nats-server vs midge",
                requests[i].0, requests[i].1
            );
        }
    }
}

#[tokio::test]
async fn jetstream_consumers_pull_statuses() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        let s = stream_with(&js, "Q", &["q"], 1).await;
        s.create_consumer(pull::Config {
            durable_name: Some("D".into()),
            max_batch: 5,
            ..Default::default()
        })
        .await
        .expect("create");
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(format!("{inbox}.*")).await.expect("sub");
        let next = "$JS.API.CONSUMER.MSG.NEXT.Q.D";
        let status = |n: usize, body: &'static str| {
            let client = client.clone();
            let reply = format!("{inbox}.{n}");
            async move {
                client
                    .publish_with_reply(next, reply, body.into())
                    .await
                    .expect("publish");
            }
        };
        status(1, r#"{"batch":3,"no_wait":true}"#).await;
        let mut seen = Vec::new();
        for _ in 0..2 {
            let m = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("in time")
                .expect("open");
            seen.push((
                m.subject.to_string(),
                m.status.map(|s| s.as_u16()),
                m.description.clone(),
                m.headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages").map(|v| v.to_string())),
            ));
        }
        assert_eq!(seen[0].1, None, "{kind}: {seen:?}");
        assert_eq!(seen[1].1, Some(408), "{kind}: {seen:?}");
        assert_eq!(seen[1].2.as_deref(), Some("Request Timeout"));
        assert_eq!(seen[1].3.as_deref(), Some("2"));
        for (n, body, code, text) in [
            (2, r#"{"batch":1,"no_wait":true}"#, 404, "No Messages"),
            (3, r#"{"batch":9}"#, 409, "Exceeded MaxRequestBatch of 5"),
            (
                4,
                r#"{"batch":1,"expires":300000000}"#,
                408,
                "Request Timeout",
            ),
        ] {
            status(n, body).await;
            let m = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("in time")
                .expect("open");
            assert_eq!(m.subject.as_str(), format!("{inbox}.{n}"), "{kind}");
            assert_eq!(m.status.map(|s| s.as_u16()), Some(code), "{kind} {body}");
            assert_eq!(m.description.as_deref(), Some(text), "{kind} {body}");
        }
    })
    .await;
}

#[tokio::test]
async fn jetstream_consumers_durable_resumes_after_restart() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let server = js_server(kind, dir.path()).await;
            let (_client, js) = connect(&server).await;
            let s = stream_with(&js, "F", &["f"], 6).await;
            let c: consumer::PullConsumer = s
                .create_consumer(pull::Config {
                    durable_name: Some("D".into()),
                    ack_wait: Duration::from_secs(60),
                    ..Default::default()
                })
                .await
                .expect("create");
            let mut got = c.fetch().max_messages(3).messages().await.expect("fetch");
            for _ in 0..2 {
                next_msg(&mut got).await.double_ack().await.expect("ack");
            }
            let _unacked = next_msg(&mut got).await;
            // Let the state reach the disk before the server goes (it is written at most
            // a second after a change, and at shutdown).
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
        let server = js_server(kind, dir.path()).await;
        let (_client, js) = connect(&server).await;
        let s = js.get_stream("F").await.expect("stream recovered");
        let mut c: consumer::PullConsumer = s.get_consumer("D").await.expect("consumer recovered");
        let info = c.info().await.expect("info").clone();
        assert_eq!(info.ack_floor.stream_sequence, 2, "{kind}: {info:?}");
        assert_eq!(info.delivered.stream_sequence, 3, "{kind}: {info:?}");
        assert_eq!(info.num_ack_pending, 1, "{kind}: {info:?}");
        let mut got = c.fetch().max_messages(3).messages().await.expect("fetch");
        for i in 3..6 {
            let m = next_msg(&mut got).await;
            assert_eq!(&m.payload[..], format!("m{i}").as_bytes(), "{kind}");
        }
    })
    .await;
}

/// Ephemerals go once nobody pulls from them (pull) or listens to them (push) for their
/// inactivity threshold; durables stay.
#[tokio::test]
async fn jetstream_consumers_ephemerals_go_when_inactive() {
    both(|kind| async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let server = js_server(kind, dir.path()).await;
        let (client, js) = connect(&server).await;
        let s = stream_with(&js, "E", &["e"], 3).await;
        s.create_consumer(pull::Config {
            name: Some("PULL".into()),
            inactive_threshold: Duration::from_millis(500),
            ..Default::default()
        })
        .await
        .expect("pull ephemeral");
        s.create_consumer(pull::Config {
            durable_name: Some("KEEP".into()),
            ..Default::default()
        })
        .await
        .expect("durable");
        let inbox = client.new_inbox();
        let sub = client.subscribe(inbox.clone()).await.expect("subscribe");
        s.create_consumer(push::Config {
            name: Some("PUSH".into()),
            deliver_subject: inbox,
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_millis(500),
            ..Default::default()
        })
        .await
        .expect("push ephemeral");
        let names = |body: Value| -> Vec<String> {
            body["consumers"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        // The push consumer has a listener: only the pull one goes.
        let deadline = Instant::now() + WAIT;
        loop {
            let now = names(api(&client, "$JS.API.CONSUMER.NAMES.E", "").await);
            if now == ["KEEP", "PUSH"] {
                break;
            }
            assert!(Instant::now() < deadline, "{kind}: consumers {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(sub);
        let deadline = Instant::now() + WAIT;
        loop {
            let now = names(api(&client, "$JS.API.CONSUMER.NAMES.E", "").await);
            if now == ["KEEP"] {
                break;
            }
            assert!(Instant::now() < deadline, "{kind}: consumers {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
