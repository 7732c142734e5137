//! Publishing into streams (`publish`): PubAck fields, `Nats-Msg-Id` de-duplication within
//! the duplicate window, and the `Nats-Expected-*` headers with their exact errors.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Config;
use async_nats::HeaderMap;
use bytes::Bytes;
use serde_json::{json, Value};

use super::{assert_js_error, eventually, js, publish, send, Feature, WAIT};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn message(payload: &'static str) -> PublishMessage {
    PublishMessage::build().payload(Bytes::from_static(payload.as_bytes()))
}

/// The PubAck as the server wrote it, for a core request with `headers`.
async fn raw_ack(client: &async_nats::Client, subject: &str, headers: HeaderMap) -> Value {
    let reply = ok!(client.request_with_headers(subject.to_string(), headers, "raw".into()));
    serde_json::from_slice(&reply.payload).expect("PubAck is JSON")
}

#[tokio::test]
async fn puback_names_stream_and_sequence() {
    js(Feature::Publish, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(stream("S", &["p.>"])));
        for seq in 1..=3 {
            let ack = publish(&js, "p.a", "x").await;
            assert_eq!(ack.stream, "S");
            assert_eq!(ack.sequence, seq);
            assert!(!ack.duplicate);
            assert_eq!(ack.domain, "", "no domain configured");
        }
        // Exactly these fields: no `duplicate` unless true, no `domain` unless configured.
        let raw = raw_ack(&client, "p.b", HeaderMap::new()).await;
        assert_eq!(raw, json!({"stream": "S", "seq": 4}));

        // A core publish without a reply subject is stored too.
        ok!(client.publish("p.c", "fire and forget".into()));
        let info = eventually("the core publish is stored", WAIT, || {
            let js = &js;
            async move {
                let info = js.get_stream("S").await.ok()?.cached_info().clone();
                (info.state.messages == 5).then_some(info)
            }
        })
        .await;
        assert_eq!(info.state.last_sequence, 5);

        // No stream captures the subject: no responders, not a timeout.
        let started = Instant::now();
        let err = within!(async { js.publish("elsewhere", "x".into()).await?.await })
            .expect_err("no stream");
        assert_eq!(err.kind(), PublishErrorKind::StreamNotFound);
        assert!(started.elapsed() < Duration::from_secs(2));
    })
    .await;
}

#[tokio::test]
async fn msg_id_is_deduplicated_within_the_window_only() {
    js(Feature::Publish, |server| async move {
        let (client, js) = server.connect().await;
        let window = Duration::from_secs(1);
        ok!(js.create_stream(Config {
            duplicate_window: window,
            ..stream("D", &["d.>"])
        }));
        let first_at = Instant::now();
        let first = ok!(send(&js, "d.a", message("one").message_id("id-1")));
        assert_eq!((first.sequence, first.duplicate), (1, false));
        let again = ok!(send(&js, "d.a", message("one again").message_id("id-1")));
        assert_eq!(
            (again.sequence, again.duplicate),
            (1, true),
            "the duplicate acks the original sequence"
        );
        let other = ok!(send(&js, "d.b", message("two").message_id("id-2")));
        assert_eq!((other.sequence, other.duplicate), (2, false));
        // The id is per stream, not per subject.
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "id-2");
        let raw = raw_ack(&client, "d.c", headers).await;
        assert_eq!(raw, json!({"stream": "D", "seq": 2, "duplicate": true}));

        let mut handle = ok!(js.get_stream("D"));
        assert_eq!(ok!(handle.info()).state.messages, 2);
        let stored = ok!(handle.get_raw_message(1));
        assert_eq!(&stored.payload[..], b"one", "the first copy is kept");

        // Once the window has passed, the same id is new again.
        let fresh = eventually("id-1 expires from the duplicate window", WAIT, || {
            let js = &js;
            async move {
                let ack = send(js, "d.a", message("one later").message_id("id-1"))
                    .await
                    .ok()?;
                (!ack.duplicate).then_some(ack)
            }
        })
        .await;
        let waited = first_at.elapsed();
        assert_eq!(fresh.sequence, 3);
        assert!(
            waited >= window - Duration::from_millis(100),
            "id-1 was forgotten after {waited:?}, inside the {window:?} window"
        );
        assert_eq!(ok!(handle.info()).state.messages, 3);
    })
    .await;
}

#[tokio::test]
async fn expected_headers_guard_publishes() {
    js(Feature::Publish, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(stream("E", &["e.>"])));
        let ack = ok!(send(&js, "e.a", message("1").message_id("m-1")));
        assert_eq!(ack.sequence, 1);
        ok!(send(
            &js,
            "e.b",
            message("2").expected_last_message_id("m-1")
        ));
        ok!(send(&js, "e.b", message("3").expected_last_sequence(2)));
        ok!(send(
            &js,
            "e.a",
            message("4").expected_last_subject_sequence(1)
        ));
        ok!(send(&js, "e.c", message("5").expected_stream("E")));
        // A subject with no message yet has last subject sequence 0 (KV `create` relies on it).
        ok!(send(
            &js,
            "e.new",
            message("6").expected_last_subject_sequence(0)
        ));

        let err = send(&js, "e.a", message("x").expected_last_sequence(1))
            .await
            .expect_err("last sequence is 6");
        assert_eq!(err.kind(), PublishErrorKind::WrongLastSequence);
        assert_js_error(&err, 400, 10071, "wrong last sequence: 6");

        // The subject's own last sequence is reported, in the same error.
        let err = send(&js, "e.a", message("x").expected_last_subject_sequence(1))
            .await
            .expect_err("e.a's last is 4");
        assert_eq!(err.kind(), PublishErrorKind::WrongLastSequence);
        assert_js_error(&err, 400, 10071, "wrong last sequence: 4");
        let err = send(&js, "e.a", message("x").expected_last_subject_sequence(0))
            .await
            .expect_err("e.a exists");
        assert_js_error(&err, 400, 10071, "wrong last sequence: 4");

        // The last msg id is that of the last stored message: none since message 2.
        let err = send(&js, "e.a", message("x").expected_last_message_id("m-1"))
            .await
            .expect_err("the last message had no id");
        assert_eq!(err.kind(), PublishErrorKind::WrongLastMessageId);
        assert_js_error(&err, 400, 10070, "wrong last msg ID: ");
        ok!(send(&js, "e.d", message("7").message_id("m-7")));
        let err = send(&js, "e.a", message("x").expected_last_message_id("other"))
            .await
            .expect_err("last id is m-7");
        assert_js_error(&err, 400, 10070, "wrong last msg ID: m-7");

        let err = send(&js, "e.a", message("x").expected_stream("OTHER"))
            .await
            .expect_err("stream is E");
        assert_js_error(&err, 400, 10060, "expected stream does not match");

        // The raw error PubAck: the error object plus the stream and a zero sequence.
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Sequence", "2");
        let raw = raw_ack(&client, "e.a", headers).await;
        assert_eq!(
            raw,
            json!({
                "error": {"code": 400, "err_code": 10071, "description": "wrong last sequence: 7"},
                "stream": "E",
                "seq": 0
            })
        );

        // Rejected publishes store nothing.
        let mut handle = ok!(js.get_stream("E"));
        let state = ok!(handle.info()).state.clone();
        assert_eq!((state.messages, state.last_sequence), (7, 7));
    })
    .await;
}
