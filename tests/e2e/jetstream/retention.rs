//! Retention policies (`retention`): a work queue keeps a message until one consumer acks
//! it (and a scaled-down worker loses nothing), an interest stream until every consumer has.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use async_nats::jetstream::stream::{Config, RetentionPolicy};
use async_nats::jetstream::Context;
use serde_json::json;

use super::{
    api, assert_api_error, assert_js_error, batch, eventually, fetch, js, publish, stream_seqs,
    text, Feature, WAIT,
};

fn stream(name: &str, subjects: &[&str], retention: RetentionPolicy) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        retention,
        ..Default::default()
    }
}

fn durable(name: &str) -> pull::Config {
    pull::Config {
        durable_name: Some(name.to_string()),
        ..Default::default()
    }
}

async fn messages_in(js: &Context, name: &str) -> u64 {
    ok!(js.get_stream(name)).cached_info().state.messages
}

/// Waits until the stream holds `want` messages (acks are processed asynchronously).
async fn until_messages(js: &Context, name: &str, want: u64) {
    eventually(
        &format!("{name} holds {want} messages"),
        WAIT,
        || async move { (messages_in(js, name).await == want).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn work_queue_removes_acked_messages_and_polices_consumers() {
    js(Feature::Retention, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("WQ", &["wq.*"], RetentionPolicy::WorkQueue)));
        for i in 1..=5 {
            publish(&js, "wq.a", &i.to_string()).await;
        }
        let consumer = ok!(handle.create_consumer(durable("W")));
        let taken = fetch(&consumer, 3).await;
        for message in &taken {
            ok!(message.double_ack());
        }
        until_messages(&js, "WQ", 2).await;
        let state = ok!(js.get_stream("WQ")).cached_info().state.clone();
        assert_eq!((state.first_sequence, state.last_sequence), (4, 5));

        // One consumer per message: a second unfiltered one is refused, as is an overlap.
        let err = handle
            .create_consumer(durable("OTHER"))
            .await
            .expect_err("second unfiltered consumer");
        assert_js_error(
            &err,
            400,
            10099,
            "multiple non-filtered consumers not allowed on workqueue stream",
        );
        let create = |name: &'static str, config: serde_json::Value| {
            let client = &client;
            async move {
                api(
                    client,
                    &format!("CONSUMER.CREATE.WQ.{name}"),
                    json!({"stream_name": "WQ", "config": config}),
                )
                .await
            }
        };
        ok!(handle.delete_consumer("W"));
        let response = create(
            "LAST",
            json!({"durable_name": "LAST", "ack_policy": "explicit", "filter_subject": "wq.c",
                   "deliver_policy": "last"}),
        )
        .await;
        assert_api_error(
            &response,
            400,
            10101,
            "consumer must be deliver all on workqueue stream",
        );
        ok!(handle.create_consumer(pull::Config {
            filter_subject: "wq.a".into(),
            ..durable("FA")
        }));
        let response = create(
            "FSTAR",
            json!({"durable_name": "FSTAR", "ack_policy": "explicit", "filter_subject": "wq.*"}),
        )
        .await;
        assert_api_error(
            &response,
            400,
            10100,
            "filtered consumer not unique on workqueue stream",
        );
        ok!(handle.create_consumer(pull::Config {
            filter_subject: "wq.b".into(),
            ..durable("FB")
        }));

        let err = js
            .update_stream(stream("WQ", &["wq.*"], RetentionPolicy::Limits))
            .await
            .expect_err("retention is fixed");
        assert_js_error(
            &err,
            500,
            10052,
            // nats-server 2.10 (which midge follows) names the work-queue rule.
            if server.kind() == midge_tests::ServerKind::Midge {
                "stream configuration update can not change retention policy to/from workqueue"
            } else {
                "stream configuration update can not change retention policy"
            },
        );
    })
    .await;
}

/// Takes what a worker gets from one pull request, acking each message; records each job
/// with how many times it was delivered. The request outlasts the ack wait, so it is still
/// waiting when abandoned jobs come back (see `acks::next_delivery` for why that matters).
async fn work(consumer: &PullConsumer, done: &mut Vec<(String, i64)>) {
    for message in batch(consumer, 5, Duration::from_secs(3)).await {
        let delivered = message.info().expect("JetStream message").delivered;
        done.push((text(&message.payload), delivered));
        ok!(message.double_ack());
    }
}

#[tokio::test]
async fn scaled_down_worker_loses_nothing() {
    js(Feature::Retention, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("JOBS", &["jobs"], RetentionPolicy::WorkQueue)));
        for i in 1..=20 {
            publish(&js, "jobs", &format!("job-{i}")).await;
        }
        ok!(handle.create_consumer(pull::Config {
            ack_wait: Duration::from_secs(1),
            ..durable("WORKERS")
        }));

        // Worker A takes five jobs and is scaled down before acking any of them.
        let (_, a_js) = server.connect().await;
        let a = ok!(ok!(a_js.get_stream("JOBS")).get_consumer::<pull::Config>("WORKERS"));
        let abandoned = fetch(&a, 5).await;
        assert_eq!(stream_seqs(&abandoned), [1, 2, 3, 4, 5]);
        drop(abandoned);
        drop(a);
        drop(a_js);

        // Worker B does everything, A's jobs included once their ack wait has passed.
        let (_, b_js) = server.connect().await;
        let b = ok!(ok!(b_js.get_stream("JOBS")).get_consumer::<pull::Config>("WORKERS"));
        let mut done = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        while done.len() < 20 && tokio::time::Instant::now() < deadline {
            work(&b, &mut done).await;
        }
        let unique: BTreeSet<&String> = done.iter().map(|(job, _)| job).collect();
        assert_eq!(done.len(), 20, "each job once: {done:?}");
        assert_eq!(unique.len(), 20);
        let mut redelivered: Vec<&str> = done
            .iter()
            .filter(|(_, delivered)| *delivered == 2)
            .map(|(job, _)| job.as_str())
            .collect();
        redelivered.sort_unstable();
        assert_eq!(
            redelivered,
            ["job-1", "job-2", "job-3", "job-4", "job-5"],
            "A's jobs came back"
        );
        until_messages(&js, "JOBS", 0).await;
        let info = ok!(b.clone().info()).clone();
        assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
        // nats-server counts redelivered messages still pending only.
        assert_eq!(info.num_redelivered, 0);
    })
    .await;
}

#[tokio::test]
async fn interest_stream_keeps_messages_until_every_consumer_acks() {
    js(Feature::Retention, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("INT", &["int"], RetentionPolicy::Interest)));
        // Nobody is interested yet: acknowledged, then not kept.
        assert_eq!(publish(&js, "int", "unheard").await.sequence, 1);
        assert_eq!(messages_in(&js, "INT").await, 0);

        let a = ok!(handle.create_consumer(durable("A")));
        let b = ok!(handle.create_consumer(durable("B")));
        for i in 2..=4 {
            publish(&js, "int", &i.to_string()).await;
        }
        assert_eq!(messages_in(&js, "INT").await, 3);
        for message in fetch(&a, 3).await {
            ok!(message.double_ack());
        }
        assert_eq!(messages_in(&js, "INT").await, 3, "B has not acked yet");
        let for_b = fetch(&b, 3).await;
        assert_eq!(stream_seqs(&for_b), [2, 3, 4]);
        for message in &for_b[..2] {
            ok!(message.double_ack());
        }
        until_messages(&js, "INT", 1).await;
        let state = ok!(js.get_stream("INT")).cached_info().state.clone();
        assert_eq!(state.first_sequence, 4);
        // B going away removes its interest, and with it the last message.
        ok!(handle.delete_consumer("B"));
        until_messages(&js, "INT", 0).await;
    })
    .await;
}
