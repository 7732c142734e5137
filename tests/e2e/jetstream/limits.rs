//! Stream limits (`limits`): max msgs, bytes, age, msg size and msgs per subject with discard
//! old and new (and new per subject), sealed streams, deny delete and deny purge, and how
//! stored bytes are counted.

use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::{json, Value};

use super::{api, assert_api_error, assert_js_error, eventually, js, publish, send, Feature, WAIT};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn payload(len: usize) -> PublishMessage {
    PublishMessage::build().payload(Bytes::from(vec![b'x'; len]))
}

#[tokio::test]
async fn max_msgs_and_max_bytes_discard_the_oldest() {
    js(Feature::Limits, |server| async move {
        let (_, js) = server.connect().await;
        let mut by_count = ok!(js.create_stream(Config {
            max_messages: 3,
            ..stream("COUNT", &["count"])
        }));
        for i in 1..=5 {
            assert_eq!(publish(&js, "count", &i.to_string()).await.sequence, i);
        }
        let state = ok!(by_count.info()).state.clone();
        assert_eq!(
            (state.messages, state.first_sequence, state.last_sequence),
            (3, 3, 5)
        );

        // Each record is 30 bytes + subject + payload in the file store: 3 x 53 fit in 200.
        let mut by_bytes = ok!(js.create_stream(Config {
            max_bytes: 200,
            ..stream("BYTES", &["b.x"])
        }));
        for _ in 0..5 {
            ok!(send(&js, "b.x", payload(20)));
        }
        let state = ok!(by_bytes.info()).state.clone();
        assert_eq!(
            (
                state.messages,
                state.bytes,
                state.first_sequence,
                state.last_sequence
            ),
            (3, 159, 3, 5)
        );
    })
    .await;
}

#[tokio::test]
async fn discard_new_rejects_with_the_limit_named() {
    js(Feature::Limits, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(Config {
            max_messages: 2,
            discard: DiscardPolicy::New,
            ..stream("COUNT", &["count"])
        }));
        publish(&js, "count", "1").await;
        publish(&js, "count", "2").await;
        let err = send(&js, "count", payload(1)).await.expect_err("full");
        assert_js_error(&err, 503, 10077, "maximum messages exceeded");

        ok!(js.create_stream(Config {
            max_bytes: 100,
            discard: DiscardPolicy::New,
            ..stream("BYTES", &["bytes"])
        }));
        ok!(send(&js, "bytes", payload(40)));
        let err = send(&js, "bytes", payload(40)).await.expect_err("full");
        assert_js_error(&err, 503, 10077, "maximum bytes exceeded");

        ok!(js.create_stream(Config {
            max_messages_per_subject: 1,
            discard: DiscardPolicy::New,
            discard_new_per_subject: true,
            ..stream("PER", &["per.*"])
        }));
        publish(&js, "per.a", "1").await;
        let err = send(&js, "per.a", payload(1))
            .await
            .expect_err("per.a full");
        assert_js_error(&err, 503, 10077, "maximum messages per subject exceeded");
        assert_eq!(
            publish(&js, "per.b", "1").await.sequence,
            2,
            "per.b has room"
        );

        let response = api(
            &client,
            "STREAM.CREATE.BAD",
            json!({"name": "BAD", "subjects": ["bad"], "max_msgs_per_subject": 1,
                   "discard_new_per_subject": true}),
        )
        .await;
        assert_api_error(
            &response,
            500,
            10052,
            "discard new per subject requires discard new policy to be set",
        );
    })
    .await;
}

#[tokio::test]
async fn max_msgs_per_subject_keeps_the_newest_of_each_subject() {
    js(Feature::Limits, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(Config {
            max_messages_per_subject: 2,
            ..stream("PER", &["per.*"])
        }));
        for (subject, body) in [
            ("per.a", "a1"),
            ("per.a", "a2"),
            ("per.b", "b1"),
            ("per.a", "a3"),
        ] {
            publish(&js, subject, body).await;
        }
        let info = ok!(handle.info_with_subjects(">"));
        assert_eq!(info.info.state.messages, 3);
        let mut counts: Vec<(String, usize)> = ok!(info.try_collect());
        counts.sort();
        assert_eq!(counts, [("per.a".to_string(), 2), ("per.b".to_string(), 1)]);
        let oldest_a = ok!(handle.get_first_raw_message_by_subject("per.a", 1));
        assert_eq!((oldest_a.sequence, &oldest_a.payload[..]), (2, &b"a2"[..]));
    })
    .await;
}

#[tokio::test]
async fn max_age_expires_messages() {
    js(Feature::Limits, |server| async move {
        let (_, js) = server.connect().await;
        let age = Duration::from_secs(1);
        let created = ok!(js.create_stream(Config {
            max_age: age,
            ..stream("AGED", &["aged"])
        }));
        assert_eq!(
            created.cached_info().config.duplicate_window,
            age,
            "the duplicate window shrinks to max_age"
        );
        let published_at = Instant::now();
        for i in 1..=3 {
            publish(&js, "aged", &i.to_string()).await;
        }
        let state = eventually("the messages expire", WAIT, || {
            let js = &js;
            async move {
                let info = js.get_stream("AGED").await.ok()?.cached_info().clone();
                (info.state.messages == 0).then_some(info.state)
            }
        })
        .await;
        let lived = published_at.elapsed();
        assert!(
            lived >= age - Duration::from_millis(100),
            "expired after {lived:?}, before max_age {age:?}"
        );
        assert_eq!(
            (state.first_sequence, state.last_sequence, state.bytes),
            (4, 3, 0),
            "an emptied stream points past its last sequence"
        );
        assert_eq!(publish(&js, "aged", "later").await.sequence, 4);

        let response = api(
            &js.client(),
            "STREAM.CREATE.BAD",
            json!({"name": "BAD", "subjects": ["bad"], "max_age": 1_000_000_000u64,
                   "duplicate_window": 5_000_000_000u64}),
        )
        .await;
        assert_api_error(
            &response,
            500,
            10052,
            "duplicates window can not be larger then max age",
        );
    })
    .await;
}

#[tokio::test]
async fn max_msg_size_counts_headers_and_payload() {
    js(Feature::Limits, |server| async move {
        let (_, js) = server.connect().await;
        ok!(js.create_stream(Config {
            max_message_size: 10,
            ..stream("SMALL", &["small"])
        }));
        assert_eq!(ok!(send(&js, "small", payload(10))).sequence, 1);
        let err = send(&js, "small", payload(11)).await.expect_err("too big");
        assert_js_error(&err, 400, 10054, "message size exceeds maximum allowed");
        let err = send(&js, "small", payload(5).message_id("abcdef"))
            .await
            .expect_err("headers count too");
        assert_js_error(&err, 400, 10054, "message size exceeds maximum allowed");
    })
    .await;
}

#[tokio::test]
async fn sealed_stream_refuses_writes_deletes_and_purges() {
    js(Feature::Limits, |server| async move {
        let (client, js) = server.connect().await;
        let err = js
            .create_stream(Config {
                sealed: true,
                ..stream("SEALED", &["sealed"])
            })
            .await
            .expect_err("cannot create sealed");
        assert_js_error(
            &err,
            500,
            10052,
            "stream configuration for create can not be sealed",
        );
        ok!(js.create_stream(stream("SEALED", &["sealed"])));
        publish(&js, "sealed", "kept").await;
        let info = ok!(js.update_stream(Config {
            sealed: true,
            ..stream("SEALED", &["sealed"])
        }));
        // Sealing turns on the guards too.
        assert!(info.config.sealed && info.config.deny_delete && info.config.deny_purge);
        assert_eq!(info.config.discard, DiscardPolicy::New);

        let err = send(&js, "sealed", payload(1)).await.expect_err("sealed");
        assert_js_error(&err, 400, 10109, "invalid operation on sealed stream");
        let response = api(&client, "STREAM.MSG.DELETE.SEALED", json!({"seq": 1})).await;
        assert_api_error(&response, 400, 10109, "invalid operation on sealed stream");
        let response = api(&client, "STREAM.PURGE.SEALED", Value::Null).await;
        assert_api_error(&response, 400, 10109, "invalid operation on sealed stream");
        let err = js
            .update_stream(stream("SEALED", &["sealed"]))
            .await
            .expect_err("cannot unseal");
        assert_js_error(
            &err,
            500,
            10052,
            "stream configuration update can not unseal a sealed stream",
        );
        let handle = ok!(js.get_stream("SEALED"));
        assert_eq!(&ok!(handle.get_raw_message(1)).payload[..], b"kept");
    })
    .await;
}

#[tokio::test]
async fn deny_delete_and_deny_purge() {
    js(Feature::Limits, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(Config {
            deny_delete: true,
            deny_purge: true,
            ..stream("GUARDED", &["guarded"])
        }));
        publish(&js, "guarded", "1").await;
        let err = handle.delete_message(1).await.expect_err("deny_delete");
        assert_js_error(&err, 500, 10057, "message delete not permitted");
        let err = handle.purge().await.expect_err("deny_purge");
        assert_js_error(&err, 500, 10110, "stream purge not permitted");
        let response = api(&client, "STREAM.PURGE.GUARDED", Value::Null).await;
        assert_eq!(response["purged"], json!(0), "{response}");
        assert_eq!(
            ok!(js.get_stream("GUARDED")).cached_info().state.messages,
            1
        );
    })
    .await;
}

#[tokio::test]
async fn stored_bytes_follow_the_record_sizes() {
    js(Feature::Limits, |server| async move {
        let (_, js) = server.connect().await;
        let mut headers = HeaderMap::new();
        headers.insert("K", "v");
        // What async-nats writes for these headers.
        let header_block = "NATS/1.0\r\nK: v\r\n\r\n".len() as u64;
        // Both servers count nats-server's record sizes, per store kind.
        for (name, storage, plain, with_headers) in [
            // file: 22 + subject + payload + 8, and 4 more + headers when there are headers
            ("FILE", StorageType::File, 30, 34 + header_block),
            // memory: subject + headers + payload + 16
            ("MEMORY", StorageType::Memory, 16, 16 + header_block),
        ] {
            let subject = name.to_lowercase();
            let mut handle = ok!(js.create_stream(Config {
                storage,
                ..stream(name, &[subject.as_str()])
            }));
            ok!(send(&js, &subject, payload(100)));
            ok!(send(&js, &subject, payload(100).headers(headers.clone())));
            let subject_len = subject.len() as u64;
            let want = (plain + subject_len + 100) + (with_headers + subject_len + 100);
            assert_eq!(ok!(handle.info()).state.bytes, want, "{name}");
        }
    })
    .await;
}
