//! Acknowledgements (`acks`): explicit, all and none policies, ack wait and redelivery, NAK
//! with and without delay, in-progress, TERM, max deliver, backoff, max ack pending, and the
//! advisories the server publishes for terminated and undeliverable messages.
//!
//! Time rules are checked with short durations: "not before" as a lower bound (with a small
//! margin for clock granularity), "eventually" within the test deadline. Absence ("not
//! redelivered") is shown by a pull request that waits longer than the rule and gets nothing.

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::Config;
use async_nats::jetstream::{AckKind, Message};
use serde_json::Value;

use super::{batch, fetch, js, next_msg, publish, stream_seqs, Feature, WAIT};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn durable(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_string()),
        ..Default::default()
    }
}

fn delivered(message: &Message) -> i64 {
    message.info().expect("JetStream message").delivered
}

/// Waits for the next delivery with long pull requests. (Short ones that expire just as a
/// redelivery falls due race in nats-server 2.9.10: the message then comes later, with its
/// delivery count reset to 1.)
async fn next_delivery(consumer: &PullConsumer) -> Message {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some(message) = batch(consumer, 1, Duration::from_secs(4)).await.pop() {
            return message;
        }
    }
    panic!("no delivery within {WAIT:?}")
}

#[tokio::test]
async fn explicit_acks_and_redelivery_after_ack_wait() {
    js(Feature::Acks, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("A", &["a"])));
        publish(&js, "a", "1").await;
        publish(&js, "a", "2").await;
        let ack_wait = Duration::from_secs(1);
        let mut consumer = ok!(handle.create_consumer(pull::Config {
            ack_wait,
            ..durable("C")
        }));
        let delivered_at = Instant::now();
        let first = fetch(&consumer, 2).await;
        assert_eq!(stream_seqs(&first), [1, 2]);
        assert_eq!(delivered(&first[0]), 1);
        ok!(first[0].double_ack());
        let info = ok!(consumer.info()).clone();
        assert_eq!(info.ack_floor.stream_sequence, 1);
        assert_eq!(info.num_ack_pending, 1);
        assert!(
            fetch(&consumer, 2).await.is_empty(),
            "2 is pending, 1 is acked"
        );

        let again = next_delivery(&consumer).await;
        let waited = delivered_at.elapsed();
        assert_eq!(stream_seqs(std::slice::from_ref(&again)), [2]);
        assert_eq!(delivered(&again), 2);
        assert!(
            waited >= ack_wait - Duration::from_millis(100),
            "redelivered after {waited:?}, ack wait is {ack_wait:?}"
        );
        let info = ok!(consumer.info()).clone();
        assert_eq!(info.num_redelivered, 1);
        ok!(again.double_ack());
        let info = ok!(consumer.info()).clone();
        assert_eq!(
            (info.ack_floor.stream_sequence, info.num_ack_pending),
            (2, 0)
        );
        assert_eq!(info.delivered.consumer_sequence, 3, "three deliveries");
    })
    .await;
}

#[tokio::test]
async fn ack_all_and_ack_none() {
    js(Feature::Acks, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("A", &["a"])));
        for i in 1..=5 {
            publish(&js, "a", &i.to_string()).await;
        }
        let mut all = ok!(handle.create_consumer(pull::Config {
            ack_policy: AckPolicy::All,
            ..durable("ALL")
        }));
        let messages = fetch(&all, 5).await;
        assert_eq!(messages.len(), 5);
        ok!(messages[2].double_ack());
        let info = ok!(all.info()).clone();
        assert_eq!(
            (info.ack_floor.stream_sequence, info.num_ack_pending),
            (3, 2),
            "acking 3 acks 1 and 2 too"
        );

        let mut none = ok!(handle.create_consumer(pull::Config {
            ack_policy: AckPolicy::None,
            ..durable("NONE")
        }));
        let messages = fetch(&none, 3).await;
        // The reply subject still carries the metadata (ordered consumers rely on it).
        assert_eq!(stream_seqs(&messages), [1, 2, 3]);
        let info = ok!(none.info()).clone();
        assert_eq!(
            (info.ack_floor.stream_sequence, info.num_ack_pending),
            (3, 0)
        );
        assert_eq!(stream_seqs(&fetch(&none, 5).await), [4, 5]);
    })
    .await;
}

#[tokio::test]
async fn nak_redelivers_at_once_or_after_its_delay() {
    js(Feature::Acks, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("N", &["n"])));
        publish(&js, "n", "1").await;
        let consumer = ok!(handle.create_consumer(durable("C")));
        let message = fetch(&consumer, 1).await.pop().expect("message 1");
        ok!(message.double_ack_with(AckKind::Nak(None)));
        let again = fetch(&consumer, 1)
            .await
            .pop()
            .expect("redelivered at once");
        assert_eq!(delivered(&again), 2);

        let delay = Duration::from_secs(1);
        let naked_at = Instant::now();
        ok!(again.double_ack_with(AckKind::Nak(Some(delay))));
        assert!(
            fetch(&consumer, 1).await.is_empty(),
            "held back by the delay"
        );
        let third = next_delivery(&consumer).await;
        let waited = naked_at.elapsed();
        assert_eq!(delivered(&third), 3);
        assert!(
            waited >= delay - Duration::from_millis(100),
            "redelivered after {waited:?}, delay {delay:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn in_progress_extends_the_ack_wait() {
    js(Feature::Acks, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("W", &["w"])));
        publish(&js, "w", "slow work").await;
        let ack_wait = Duration::from_secs(1);
        let mut consumer = ok!(handle.create_consumer(pull::Config {
            ack_wait,
            ..durable("C")
        }));
        let started = Instant::now();
        let message = fetch(&consumer, 1).await.pop().expect("message");
        // Working for twice the ack wait, reporting progress every 400 ms.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(400)).await;
            ok!(message.double_ack_with(AckKind::Progress));
        }
        assert!(started.elapsed() >= 2 * ack_wait);
        assert!(
            fetch(&consumer, 1).await.is_empty(),
            "no redelivery while in progress"
        );
        ok!(message.double_ack());
        let info = ok!(consumer.info()).clone();
        assert_eq!(
            (
                info.num_redelivered,
                info.num_ack_pending,
                info.ack_floor.stream_sequence
            ),
            (0, 0, 1)
        );
    })
    .await;
}

#[tokio::test]
async fn term_stops_redelivery_and_is_advised() {
    js(Feature::Acks, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("T", &["t"])));
        publish(&js, "t", "poison").await;
        let consumer = ok!(handle.create_consumer(pull::Config {
            ack_wait: Duration::from_millis(300),
            ..durable("C")
        }));
        let mut advisories =
            ok!(client.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.T.C"));
        midge_tests::round_trip(&client).await;
        let message = fetch(&consumer, 1).await.pop().expect("message");
        ok!(message.double_ack_with(AckKind::Term));

        let advisory: Value = serde_json::from_slice(&next_msg(&mut advisories).await.payload)
            .expect("advisory JSON");
        assert_eq!(advisory["type"], "io.nats.jetstream.advisory.v1.terminated");
        for (field, want) in [
            ("stream", Value::from("T")),
            ("consumer", Value::from("C")),
            ("stream_seq", Value::from(1)),
            ("consumer_seq", Value::from(1)),
            ("deliveries", Value::from(1)),
        ] {
            assert_eq!(advisory[field], want, "{field} in {advisory}");
        }
        // Waiting well past the ack wait brings nothing.
        assert!(batch(&consumer, 1, Duration::from_millis(1200))
            .await
            .is_empty());
    })
    .await;
}

#[tokio::test]
async fn max_deliver_caps_redeliveries_and_is_advised() {
    js(Feature::Acks, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("M", &["m"])));
        publish(&js, "m", "never acked").await;
        let consumer = ok!(handle.create_consumer(pull::Config {
            ack_wait: Duration::from_millis(300),
            max_deliver: 2,
            ..durable("C")
        }));
        let mut advisories =
            ok!(client.subscribe("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.M.C"));
        midge_tests::round_trip(&client).await;
        let first = fetch(&consumer, 1).await.pop().expect("first delivery");
        assert_eq!(delivered(&first), 1);
        let second = next_delivery(&consumer).await;
        assert_eq!(delivered(&second), 2);
        // Waiting past the ack wait brings no third delivery; nats-server notices the
        // exhausted message (and advises) when a request looks for the next one.
        assert!(
            batch(&consumer, 1, Duration::from_millis(1200))
                .await
                .is_empty(),
            "no third delivery"
        );
        let advisory: Value = serde_json::from_slice(&next_msg(&mut advisories).await.payload)
            .expect("advisory JSON");
        assert_eq!(
            advisory["type"],
            "io.nats.jetstream.advisory.v1.max_deliver"
        );
        for (field, want) in [
            ("stream", Value::from("M")),
            ("consumer", Value::from("C")),
            ("stream_seq", Value::from(1)),
            ("deliveries", Value::from(2)),
        ] {
            assert_eq!(advisory[field], want, "{field} in {advisory}");
        }
    })
    .await;
}

#[tokio::test]
async fn backoff_spaces_redeliveries() {
    js(Feature::Acks, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("B", &["b"])));
        publish(&js, "b", "retry me").await;
        let backoff = [Duration::from_millis(300), Duration::from_millis(900)];
        let consumer = ok!(handle.create_consumer(pull::Config {
            backoff: backoff.to_vec(),
            max_deliver: 3,
            ..durable("C")
        }));
        let info = consumer.cached_info();
        assert_eq!(info.config.backoff, backoff, "{:?}", info.config);
        assert_eq!(
            info.config.ack_wait, backoff[0],
            "the first backoff is the ack wait"
        );

        let mut at = Vec::new();
        let first = fetch(&consumer, 1).await.pop().expect("first delivery");
        at.push((Instant::now(), delivered(&first)));
        for _ in 0..2 {
            let message = next_delivery(&consumer).await;
            at.push((Instant::now(), delivered(&message)));
        }
        let counts: Vec<i64> = at.iter().map(|(_, n)| *n).collect();
        assert_eq!(counts, [1, 2, 3]);
        let gaps = [at[1].0 - at[0].0, at[2].0 - at[1].0];
        let margin = Duration::from_millis(100);
        assert!(
            gaps[0] >= backoff[0] - margin && gaps[1] >= backoff[1] - margin,
            "gaps {gaps:?} against backoff {backoff:?}"
        );
        assert!(
            batch(&consumer, 1, Duration::from_millis(1500))
                .await
                .is_empty(),
            "max_deliver 3 reached"
        );
    })
    .await;
}

#[tokio::test]
async fn max_ack_pending_holds_deliveries_back() {
    js(Feature::Acks, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("P", &["p"])));
        for i in 1..=5 {
            publish(&js, "p", &i.to_string()).await;
        }
        let mut consumer = ok!(handle.create_consumer(pull::Config {
            max_ack_pending: 2,
            ..durable("C")
        }));
        let held = batch(&consumer, 5, Duration::from_millis(500)).await;
        assert_eq!(stream_seqs(&held), [1, 2], "two unacked at most");
        ok!(held[0].double_ack());
        let next = batch(&consumer, 5, Duration::from_millis(500)).await;
        assert_eq!(stream_seqs(&next), [3], "one slot freed");
        let info = ok!(consumer.info()).clone();
        assert_eq!((info.num_ack_pending, info.num_pending), (2, 2));
    })
    .await;
}
