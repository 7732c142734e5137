//! Push consumers (`push`): async-nats's push consumer with flow control and idle
//! heartbeats, and on the wire: the heartbeat headers, a flow-control stall until the client
//! answers, and a deliver group sharing the messages.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{push, AckPolicy};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::Config;
use async_nats::{Message, StatusCode, Subscriber};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::{api, js, next_msg, publish, send, Feature, WAIT};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn header<'a>(message: &'a Message, name: &str) -> Option<&'a str> {
    message.headers.as_ref()?.get(name).map(|v| v.as_str())
}

fn is_heartbeat(message: &Message) -> bool {
    message.status == Some(StatusCode::IDLE_HEARTBEAT)
        && message.description.as_deref() == Some("Idle Heartbeat")
}

fn is_flow_control(message: &Message) -> bool {
    message.status == Some(StatusCode::IDLE_HEARTBEAT)
        && message.description.as_deref() == Some("FlowControl Request")
}

/// The stream sequence in a delivered message's ack subject.
fn stream_seq(message: &Message) -> u64 {
    let reply = message.reply.as_ref().expect("ack subject").to_string();
    reply
        .split('.')
        .nth(5)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no stream sequence in {reply}"))
}

/// Publishes `count` messages of 64 KiB to `subject`.
async fn big_messages(js: &async_nats::jetstream::Context, subject: &str, count: usize) {
    for i in 0..count {
        let body = Bytes::from(vec![b'a' + (i % 26) as u8; 64 * 1024]);
        ok!(send(js, subject, PublishMessage::build().payload(body)));
    }
}

#[tokio::test]
async fn push_consumer_with_flow_control_and_heartbeats() {
    js(Feature::Push, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("PUSH", &["push"])));
        big_messages(&js, "push", 64).await;
        let consumer = ok!(handle.create_consumer(push::Config {
            durable_name: Some("C".into()),
            deliver_subject: client.new_inbox(),
            flow_control: true,
            idle_heartbeat: Duration::from_millis(250),
            ..Default::default()
        }));
        let config = &consumer.cached_info().config;
        assert!(config.flow_control);
        assert_eq!(config.idle_heartbeat, Duration::from_millis(250));

        // 4 MiB: more than the first flow-control window, so the client has to answer.
        let mut messages = ok!(consumer.messages());
        for seq in 1..=64u64 {
            let message = next!(messages);
            let info = message.info().expect("JetStream message");
            assert_eq!(info.stream_sequence, seq);
            assert_eq!(message.payload.len(), 64 * 1024);
            assert_eq!(message.payload[0], b'a' + ((seq - 1) % 26) as u8);
            ok!(message.ack());
        }
        publish(&js, "push", "after").await;
        let late = next!(messages);
        assert_eq!(&late.payload[..], b"after");
    })
    .await;
}

#[tokio::test]
async fn idle_heartbeats_report_the_last_sequences() {
    js(Feature::Push, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(stream("HB", &["hb"])));
        let inbox = client.new_inbox();
        let mut sub = ok!(client.subscribe(inbox.clone()));
        let response = api(
            &client,
            "CONSUMER.CREATE.HB.C",
            json!({"stream_name": "HB", "config": {"durable_name": "C", "deliver_subject": inbox,
                   "ack_policy": "none", "idle_heartbeat": 200_000_000}}),
        )
        .await;
        assert!(response.get("error").is_none(), "{response}");

        let heartbeat = next_msg(&mut sub).await;
        assert!(is_heartbeat(&heartbeat), "{heartbeat:?}");
        assert!(heartbeat.reply.is_none() && heartbeat.payload.is_empty());
        assert_eq!(header(&heartbeat, "Nats-Last-Consumer"), Some("0"));
        assert_eq!(header(&heartbeat, "Nats-Last-Stream"), Some("0"));

        publish(&js, "hb", "1").await;
        publish(&js, "hb", "2").await;
        let mut data = 0;
        let after = loop {
            let message = next_msg(&mut sub).await;
            if message.status.is_none() {
                data += 1;
                continue;
            }
            if data == 2 && is_heartbeat(&message) {
                break message;
            }
            assert!(data <= 2, "unexpected {message:?}");
        };
        assert_eq!(header(&after, "Nats-Last-Consumer"), Some("2"));
        assert_eq!(header(&after, "Nats-Last-Stream"), Some("2"));
    })
    .await;
}

#[tokio::test]
async fn flow_control_stalls_delivery_until_answered() {
    js(Feature::Push, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(stream("FC", &["fc"])));
        big_messages(&js, "fc", 64).await;
        let inbox = client.new_inbox();
        let mut sub: Subscriber = ok!(client.subscribe(inbox.clone()));
        let response = api(
            &client,
            "CONSUMER.CREATE.FC.C",
            json!({"stream_name": "FC", "config": {"durable_name": "C", "deliver_subject": inbox,
                   "ack_policy": "none", "flow_control": true, "idle_heartbeat": 250_000_000}}),
        )
        .await;
        assert!(response.get("error").is_none(), "{response}");

        // Read without answering: a flow-control request comes, delivery stops, and the
        // heartbeats say which request the consumer is stalled on.
        let mut seqs = Vec::new();
        let mut request: Option<String> = None;
        let stalled_on = 'stall: {
            for _ in 0..200 {
                let message = next_msg(&mut sub).await;
                if message.status.is_none() {
                    seqs.push(stream_seq(&message));
                } else if is_flow_control(&message) {
                    let reply = message.reply.as_ref().expect("flow control reply subject");
                    assert!(reply.starts_with("$JS.FC.FC.C."), "{reply}");
                    request.get_or_insert_with(|| reply.to_string());
                } else if let Some(stalled) = header(&message, "Nats-Consumer-Stalled") {
                    assert!(is_heartbeat(&message));
                    break 'stall stalled.to_string();
                }
            }
            panic!("no stall after {} messages", seqs.len());
        };
        let request = request.expect("a flow-control request before the stall");
        assert_eq!(stalled_on, request);
        let before = seqs.len();
        assert!(
            (1..64).contains(&before),
            "stalled after {before} of 64 messages"
        );

        // Answering releases the rest (answering any later requests too).
        ok!(client.publish(request, Bytes::new()));
        for _ in 0..500 {
            if seqs.len() == 64 {
                break;
            }
            let message = next_msg(&mut sub).await;
            if message.status.is_none() {
                seqs.push(stream_seq(&message));
            } else if let (true, Some(reply)) = (is_flow_control(&message), message.reply) {
                ok!(client.publish(reply, Bytes::new()));
            }
        }
        assert_eq!(seqs, (1..=64).collect::<Vec<u64>>());
    })
    .await;
}

#[tokio::test]
async fn deliver_group_shares_messages_between_members() {
    js(Feature::Push, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("Q", &["q"])));
        let deliver = client.new_inbox();
        let mut first = ok!(client.queue_subscribe(deliver.clone(), "workers".into()));
        let mut second = ok!(client.queue_subscribe(deliver.clone(), "workers".into()));
        midge_tests::round_trip(&client).await;
        ok!(handle.create_consumer(push::Config {
            durable_name: Some("C".into()),
            deliver_subject: deliver,
            deliver_group: Some("workers".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        }));
        for i in 1..=20 {
            publish(&js, "q", &i.to_string()).await;
        }
        let mut seen = BTreeSet::new();
        let mut per_member = [0usize; 2];
        let deadline = tokio::time::Instant::now() + WAIT;
        while seen.len() < 20 {
            let (index, message) = tokio::select! {
                m = first.next() => (0, m),
                m = second.next() => (1, m),
                _ = tokio::time::sleep_until(deadline) => panic!("only {} of 20", seen.len()),
            };
            let message = message.expect("subscription open");
            assert!(seen.insert(stream_seq(&message)), "delivered twice");
            per_member[index] += 1;
            ok!(client.publish(message.reply.expect("ack subject"), "+ACK".into()));
        }
        assert_eq!(seen, (1..=20).collect::<BTreeSet<u64>>());
        assert!(per_member.iter().all(|&n| n > 0), "shared: {per_member:?}");
    })
    .await;
}
