//! Pull consumers (`pull`): `$JS.API.CONSUMER.MSG.NEXT` requests with batch, max_bytes,
//! expires, no_wait and heartbeats, checked on the wire (status codes, descriptions and
//! headers, ack reply subjects), and async-nats's fetch, batch and messages APIs over them.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Config;
use async_nats::{Client, Message, StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::{eventually, fetch, js, next_msg, publish, send, stream_seqs, text, Feature, WAIT};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// Sends a pull request for consumer `P/C` with `request` as its body, replies to `inbox`.
async fn pull_request(client: &Client, inbox: &str, request: Value) {
    let body = Bytes::from(serde_json::to_vec(&request).expect("JSON"));
    ok!(client.publish_with_reply("$JS.API.CONSUMER.MSG.NEXT.P.C", inbox.to_string(), body));
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn assert_status(message: &Message, status: StatusCode, description: &str) {
    assert_eq!(
        (message.status, message.description.as_deref()),
        (Some(status), Some(description)),
        "status message on {}: {:?}",
        message.subject,
        message.headers
    );
    assert!(message.payload.is_empty());
}

/// Messages (not status messages) until the first status message, which is returned too.
async fn until_status(sub: &mut Subscriber, max: usize) -> (Vec<Message>, Message) {
    let mut messages = Vec::new();
    for _ in 0..=max {
        let message = next_msg(sub).await;
        if message.status.is_some() {
            return (messages, message);
        }
        messages.push(message);
    }
    panic!("more than {max} messages before a status")
}

#[tokio::test]
async fn pull_requests_on_the_wire() {
    js(Feature::Pull, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("P", &["p.*"])));
        for i in 1..=5 {
            publish(&js, &format!("p.{i}"), &format!("m{i}")).await;
        }
        ok!(handle.create_consumer(pull::Config {
            durable_name: Some("C".into()),
            ..Default::default()
        }));
        let inbox = client.new_inbox();
        let mut sub = ok!(client.subscribe(inbox.clone()));

        // A batch of 2: two messages whose reply subjects carry the delivery metadata
        // clients parse: $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.
        // <timestamp ns>.<pending>.
        pull_request(&client, &inbox, json!({"batch": 2})).await;
        for seq in 1..=2u64 {
            let message = next_msg(&mut sub).await;
            assert_eq!(message.subject.as_str(), format!("p.{seq}"));
            assert_eq!(text(&message.payload), format!("m{seq}"));
            let reply = message.reply.as_ref().expect("ack subject").to_string();
            let tokens: Vec<&str> = reply.split('.').collect();
            assert_eq!(tokens.len(), 9, "{reply}");
            let pending = (5 - seq).to_string();
            let seq = seq.to_string();
            assert_eq!(
                [
                    tokens[0], tokens[1], tokens[2], tokens[3], tokens[4], tokens[5], tokens[6],
                    tokens[8]
                ],
                [
                    "$JS",
                    "ACK",
                    "P",
                    "C",
                    "1",
                    seq.as_str(),
                    seq.as_str(),
                    pending.as_str()
                ],
                "{reply}"
            );
            let published: i64 = tokens[7].parse().expect("timestamp in ns");
            assert!(published > 1_600_000_000_000_000_000, "{reply}");
        }

        // no_wait with fewer messages than asked: what there is, then 408 with what is left
        // of the request.
        pull_request(&client, &inbox, json!({"batch": 10, "no_wait": true})).await;
        let (messages, status) = until_status(&mut sub, 10).await;
        let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["p.3", "p.4", "p.5"]);
        assert_status(&status, StatusCode::TIMEOUT, "Request Timeout");
        assert_eq!(header(&status, "Nats-Pending-Messages"), Some("7"));
        assert_eq!(header(&status, "Nats-Pending-Bytes"), Some("0"));

        // no_wait with nothing: 404 at once.
        pull_request(&client, &inbox, json!({"batch": 1, "no_wait": true})).await;
        let (messages, status) = until_status(&mut sub, 0).await;
        assert!(messages.is_empty());
        assert_status(&status, StatusCode::NOT_FOUND, "No Messages");

        // expires with nothing: 408 once the request expires, not before.
        let asked = Instant::now();
        pull_request(&client, &inbox, json!({"batch": 1, "expires": 300_000_000})).await;
        let (messages, status) = until_status(&mut sub, 0).await;
        assert!(messages.is_empty());
        assert_status(&status, StatusCode::TIMEOUT, "Request Timeout");
        assert_eq!(header(&status, "Nats-Pending-Messages"), Some("1"));
        let waited = asked.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "expired after {waited:?}"
        );

        // Heartbeats while a request waits, then its expiry.
        pull_request(
            &client,
            &inbox,
            json!({"batch": 1, "expires": 1_200_000_000, "idle_heartbeat": 250_000_000}),
        )
        .await;
        let mut heartbeats = 0;
        let expired = loop {
            let message = next_msg(&mut sub).await;
            match message.status {
                Some(StatusCode::IDLE_HEARTBEAT) => {
                    assert_status(&message, StatusCode::IDLE_HEARTBEAT, "Idle Heartbeat");
                    heartbeats += 1;
                    assert!(heartbeats <= 10, "too many heartbeats");
                }
                _ => break message,
            }
        };
        assert_status(&expired, StatusCode::TIMEOUT, "Request Timeout");
        assert!(
            heartbeats >= 2,
            "{heartbeats} heartbeats in 1.2 s at 250 ms"
        );

        // A waiting request is served by a message published later.
        pull_request(
            &client,
            &inbox,
            json!({"batch": 1, "expires": 5_000_000_000u64}),
        )
        .await;
        publish(&js, "p.6", "m6").await;
        let message = next_msg(&mut sub).await;
        assert_eq!((message.status, message.subject.as_str()), (None, "p.6"));

        // max_bytes smaller than the next message: 409, and the message stays for later.
        ok!(send(
            &js,
            "p.7",
            PublishMessage::build().payload(Bytes::from(vec![b'x'; 100]))
        ));
        pull_request(&client, &inbox, json!({"batch": 5, "max_bytes": 50})).await;
        let (messages, status) = until_status(&mut sub, 5).await;
        assert!(messages.is_empty());
        assert_status(
            &status,
            StatusCode::REQUEST_TERMINATED,
            "Message Size Exceeds MaxBytes",
        );
        pull_request(
            &client,
            &inbox,
            json!({"batch": 5, "max_bytes": 10_000, "no_wait": true}),
        )
        .await;
        let (messages, status) = until_status(&mut sub, 5).await;
        let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
        assert_eq!(subjects, ["p.7"]);
        assert_status(&status, StatusCode::TIMEOUT, "Request Timeout");

        // Deleting the consumer ends the requests waiting on it (ordered consumers recreate
        // theirs when they see this).
        pull_request(
            &client,
            &inbox,
            json!({"batch": 1, "expires": 5_000_000_000u64}),
        )
        .await;
        eventually("the request is waiting", WAIT, || {
            let handle = &handle;
            async move {
                let info = handle.consumer_info("C").await.ok()?;
                (info.num_waiting == 1).then_some(())
            }
        })
        .await;
        ok!(handle.delete_consumer("C"));
        let (messages, status) = until_status(&mut sub, 0).await;
        assert!(messages.is_empty());
        assert_status(&status, StatusCode::REQUEST_TERMINATED, "Consumer Deleted");
    })
    .await;
}

#[tokio::test]
async fn max_bytes_limits_a_batch() {
    js(Feature::Pull, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("P", &["p.*"])));
        for _ in 0..10 {
            ok!(send(
                &js,
                "p.x",
                PublishMessage::build().payload(Bytes::from(vec![b'x'; 100]))
            ));
        }
        ok!(handle.create_consumer(pull::Config {
            durable_name: Some("C".into()),
            ..Default::default()
        }));
        let inbox = client.new_inbox();
        let mut sub = ok!(client.subscribe(inbox.clone()));
        pull_request(&client, &inbox, json!({"batch": 10, "max_bytes": 450})).await;
        let (messages, status) = until_status(&mut sub, 10).await;
        assert!(
            (1..10).contains(&messages.len()),
            "a 450-byte budget takes some of ten 100-byte messages, got {}",
            messages.len()
        );
        assert_status(
            &status,
            StatusCode::REQUEST_TERMINATED,
            "Message Size Exceeds MaxBytes",
        );
    })
    .await;
}

#[tokio::test]
async fn fetch_batch_and_messages_apis() {
    js(Feature::Pull, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("P", &["p.*"])));
        for i in 1..=5 {
            publish(&js, "p.x", &i.to_string()).await;
        }
        let consumer = ok!(handle.create_consumer(pull::Config {
            durable_name: Some("C".into()),
            ..Default::default()
        }));

        // fetch: up to max, what is there now.
        let first = fetch(&consumer, 3).await;
        assert_eq!(stream_seqs(&first), [1, 2, 3]);
        for message in &first {
            ok!(message.ack());
        }

        // batch: waits up to expires for the rest, ends when it expires.
        let started = Instant::now();
        let batch = ok!(consumer
            .batch()
            .max_messages(10)
            .expires(Duration::from_millis(500))
            .messages());
        let rest: Vec<_> = within!(batch.collect::<Vec<_>>());
        let rest: Vec<_> = rest
            .into_iter()
            .map(|m| m.expect("batch message"))
            .collect();
        assert_eq!(stream_seqs(&rest), [4, 5]);
        assert!(started.elapsed() >= Duration::from_millis(400));
        for message in &rest {
            ok!(message.ack());
        }

        // messages: a continuous stream, fed by messages published after it started.
        let mut messages = ok!(consumer
            .stream()
            .max_messages_per_batch(2)
            .heartbeat(Duration::from_millis(500))
            .expires(Duration::from_secs(2))
            .messages());
        for i in 6..=10 {
            publish(&js, "p.x", &i.to_string()).await;
        }
        for seq in 6..=10u64 {
            let message = next!(messages);
            assert_eq!(message.info().expect("info").stream_sequence, seq);
            assert_eq!(text(&message.payload), seq.to_string());
            ok!(message.ack());
        }
        let mut info_handle = consumer.clone();
        let info = ok!(info_handle.info());
        assert_eq!(info.num_pending, 0);
        assert_eq!(info.delivered.stream_sequence, 10);
    })
    .await;
}
