//! Reading and removing stored messages (`messages`): message get, direct get, delete, purge
//! with filter, keep and sequence, and per-subject counts in stream info.

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Config;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use async_nats::{HeaderMap, RequestErrorKind, StatusCode};
use bytes::Bytes;
use futures::TryStreamExt;
use serde_json::{json, Value};

use super::{api, assert_api_error, js, publish, send, Feature};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Publishes `m.a` 1, `m.b` 2 (with header `X-H: one`), `m.a` 3.
async fn three_messages(js: &async_nats::jetstream::Context) {
    publish(js, "m.a", "first").await;
    let mut headers = HeaderMap::new();
    headers.insert("X-H", "one");
    let with_headers = PublishMessage::build()
        .payload(Bytes::from_static(b"second"))
        .headers(headers);
    ok!(send(js, "m.b", with_headers));
    publish(js, "m.a", "third").await;
}

#[tokio::test]
async fn get_by_sequence_and_by_subject() {
    js(Feature::Messages, |server| async move {
        let (client, js) = server.connect().await;
        let before = time_now();
        let handle = ok!(js.create_stream(stream("M", &["m.*"])));
        three_messages(&js).await;

        let second = ok!(handle.get_raw_message(2));
        assert_eq!(second.subject.as_str(), "m.b");
        assert_eq!(second.sequence, 2);
        assert_eq!(&second.payload[..], b"second");
        assert_eq!(second.headers.get("X-H").map(|v| v.as_str()), Some("one"));
        assert!(
            second.time >= before,
            "stored at {} >= {before}",
            second.time
        );

        let last_a = ok!(handle.get_last_raw_message_by_subject("m.a"));
        assert_eq!((last_a.sequence, &last_a.payload[..]), (3, &b"third"[..]));
        let next_a = ok!(handle.get_first_raw_message_by_subject("m.a", 2));
        assert_eq!(next_a.sequence, 3, "first m.a at or after 2");

        let err = handle.get_raw_message(99).await.expect_err("no message 99");
        assert_eq!(err.kind(), LastRawMessageErrorKind::NoMessageFound);
        let err = handle
            .get_last_raw_message_by_subject("m.none")
            .await
            .expect_err("no message on m.none");
        assert_eq!(err.kind(), LastRawMessageErrorKind::NoMessageFound);
        for request in [json!({"seq": 99}), json!({"last_by_subj": "m.none"})] {
            let response = api(&client, "STREAM.MSG.GET.M", request).await;
            assert_api_error(&response, 404, 10037, "no message found");
        }

        // The raw response: base64 data and headers, the time, and nothing else.
        let response = api(&client, "STREAM.MSG.GET.M", json!({"seq": 2})).await;
        assert_eq!(
            response["type"],
            "io.nats.jetstream.api.v1.stream_msg_get_response"
        );
        let message = response["message"].as_object().expect("message object");
        let mut keys: Vec<&str> = message.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["data", "hdrs", "seq", "subject", "time"]);
        assert_eq!(message["data"], "c2Vjb25k", "base64 of `second`");
        assert_eq!(message["hdrs"], "TkFUUy8xLjANClgtSDogb25lDQoNCg==");
        let no_headers = api(&client, "STREAM.MSG.GET.M", json!({"seq": 1})).await;
        assert!(
            no_headers["message"].get("hdrs").is_none(),
            "no hdrs key without headers: {no_headers}"
        );
    })
    .await;
}

fn time_now() -> async_nats::datetime::DateTime {
    async_nats::datetime::DateTime::now_utc()
}

#[tokio::test]
async fn direct_get_answers_with_stream_headers() {
    js(Feature::Messages, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(Config {
            allow_direct: true,
            ..stream("M", &["m.*"])
        }));
        three_messages(&js).await;

        let second = ok!(handle.direct_get(2));
        assert_eq!(
            (
                second.subject.as_str(),
                second.sequence,
                &second.payload[..]
            ),
            ("m.b", 2, &b"second"[..])
        );
        assert_eq!(second.headers.get("X-H").map(|v| v.as_str()), Some("one"));
        let last_a = ok!(handle.direct_get_last_for_subject("m.a"));
        assert_eq!(last_a.sequence, 3);
        let next_a = ok!(handle.direct_get_next_for_subject("m.a", Some(2)));
        assert_eq!(next_a.sequence, 3);

        // On the wire: the message itself with its origin in headers.
        let reply = ok!(client.request("$JS.API.DIRECT.GET.M", r#"{"seq":2}"#.into()));
        assert_eq!(&reply.payload[..], b"second");
        let headers = reply.headers.expect("direct get headers");
        for (name, want) in [
            ("Nats-Stream", "M"),
            ("Nats-Sequence", "2"),
            ("Nats-Subject", "m.b"),
            ("X-H", "one"),
        ] {
            assert_eq!(headers.get(name).map(|v| v.as_str()), Some(want), "{name}");
        }
        assert!(headers.get("Nats-Time-Stamp").is_some());
        let by_subject = ok!(client.request("$JS.API.DIRECT.GET.M.m.a", Bytes::new()));
        assert_eq!(&by_subject.payload[..], b"third");

        let missing = ok!(client.request("$JS.API.DIRECT.GET.M", r#"{"seq":99}"#.into()));
        assert_eq!(missing.status, Some(StatusCode::NOT_FOUND));
        assert_eq!(missing.description.as_deref(), Some("Message Not Found"));
        assert!(missing.payload.is_empty());

        // Without allow_direct nobody answers: nats-server 2.9.10 stays silent (its `$JS.API.>`
        // handler drops the request), a no-responders status would do as well.
        ok!(js.create_stream(stream("PLAIN", &["plain"])));
        publish(&js, "plain", "x").await;
        let request = async_nats::Request::new()
            .payload(r#"{"seq":1}"#.into())
            .timeout(Some(std::time::Duration::from_millis(500)));
        let err = within!(client.send_request("$JS.API.DIRECT.GET.PLAIN", request))
            .expect_err("no direct get");
        assert!(
            matches!(
                err.kind(),
                RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
            ),
            "{err:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn delete_message_leaves_a_gap() {
    js(Feature::Messages, |server| async move {
        let (client, js) = server.connect().await;
        let mut handle = ok!(js.create_stream(stream("M", &["m.*"])));
        three_messages(&js).await;
        assert!(ok!(handle.delete_message(2)));
        let state = ok!(handle.info()).state.clone();
        assert_eq!(
            (state.messages, state.first_sequence, state.last_sequence),
            (2, 1, 3)
        );
        assert_eq!(state.deleted_count, Some(1));
        let err = handle.get_raw_message(2).await.expect_err("deleted");
        assert_eq!(err.kind(), LastRawMessageErrorKind::NoMessageFound);
        // Deleting what is not there: the three file-store errors nats-server passes on (a gap
        // inside the stream, below its first sequence, past its last).
        let response = api(&client, "STREAM.MSG.DELETE.M", json!({"seq": 2})).await;
        assert_api_error(&response, 400, 10043, "sequence 2 not found");
        let response = api(&client, "STREAM.MSG.DELETE.M", json!({"seq": 1})).await;
        assert_eq!(
            response,
            json!({"type": "io.nats.jetstream.api.v1.stream_msg_delete_response", "success": true})
        );
        let response = api(&client, "STREAM.MSG.DELETE.M", json!({"seq": 1})).await;
        assert_api_error(&response, 500, 10057, "no message found");
        let response = api(&client, "STREAM.MSG.DELETE.M", json!({"seq": 9})).await;
        assert_api_error(&response, 500, 10057, "stream store EOF");
        let state = ok!(handle.info()).state.clone();
        assert_eq!((state.messages, state.first_sequence), (1, 3));
    })
    .await;
}

#[tokio::test]
async fn purge_by_subject_keep_and_sequence() {
    js(Feature::Messages, |server| async move {
        let (client, js) = server.connect().await;
        let mut handle = ok!(js.create_stream(stream("P", &["p.*"])));
        // p.a at 1..=4, p.b at 5..=8, p.c at 9..=10.
        for (subject, n) in [("p.a", 4), ("p.b", 4), ("p.c", 2)] {
            for i in 0..n {
                publish(&js, subject, &i.to_string()).await;
            }
        }
        let purged = ok!(handle.purge().filter("p.a").keep(1));
        assert!(purged.success);
        assert_eq!(purged.purged, 3, "p.a keeps its newest");
        assert_eq!(ok!(handle.get_last_raw_message_by_subject("p.a")).sequence, 4);

        let purged = ok!(handle.purge().filter("p.b").sequence(7));
        assert_eq!(purged.purged, 2, "p.b below sequence 7");
        assert_eq!(ok!(handle.get_first_raw_message_by_subject("p.b", 1)).sequence, 7);

        let purged = ok!(handle.purge().keep(2));
        assert_eq!(purged.purged, 3, "keeps the newest two of the stream");
        let state = ok!(handle.info()).state.clone();
        assert_eq!(
            (state.messages, state.first_sequence, state.last_sequence),
            (2, 9, 10)
        );

        let response = api(&client, "STREAM.PURGE.P", Value::Null).await;
        assert_eq!(
            response,
            json!({"type": "io.nats.jetstream.api.v1.stream_purge_response", "success": true, "purged": 2})
        );
        let state = ok!(handle.info()).state.clone();
        assert_eq!(
            (state.messages, state.first_sequence, state.last_sequence),
            (0, 11, 10),
            "a purged stream continues after its last sequence"
        );
        assert_eq!(publish(&js, "p.a", "after").await.sequence, 11);

        let response = api(&client, "STREAM.PURGE.P", json!({"keep": 1, "seq": 5})).await;
        assert_api_error(&response, 400, 10003, "bad request");
    })
    .await;
}

#[tokio::test]
async fn stream_info_counts_messages_per_subject() {
    js(Feature::Messages, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("S", &["s.>"])));
        for subject in ["s.a", "s.a", "s.b", "s.c.d", "s.a"] {
            publish(&js, subject, "x").await;
        }
        let counts = |filter: &'static str| {
            let handle = &handle;
            async move {
                let mut counts: Vec<(String, usize)> =
                    ok!(ok!(handle.info_with_subjects(filter)).try_collect());
                counts.sort();
                counts
            }
        };
        let own = |list: &[(&str, usize)]| -> Vec<(String, usize)> {
            list.iter().map(|(s, n)| (s.to_string(), *n)).collect()
        };
        assert_eq!(
            counts(">").await,
            own(&[("s.a", 3), ("s.b", 1), ("s.c.d", 1)])
        );
        assert_eq!(counts("s.*").await, own(&[("s.a", 3), ("s.b", 1)]));
        assert_eq!(counts("s.b").await, own(&[("s.b", 1)]));

        let info = api(&client, "STREAM.INFO.S", json!({"subjects_filter": "s.a"})).await;
        assert_eq!(info["state"]["subjects"], json!({"s.a": 3}), "{info}");
        assert_eq!(info["state"]["num_subjects"], json!(3));
        let plain = api(&client, "STREAM.INFO.S", Value::Null).await;
        assert!(
            plain["state"].get("subjects").is_none(),
            "subjects only on request: {plain}"
        );
        assert_eq!(plain["state"]["num_subjects"], json!(3));
    })
    .await;
}
