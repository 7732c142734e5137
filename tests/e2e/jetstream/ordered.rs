//! Ordered consumers (`ordered`) as async-nats builds them: ephemeral, ack none, one
//! delivery, recreated from the last stream sequence when the server's consumer goes away.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, push, AckPolicy};
use async_nats::jetstream::stream::Config;
use futures::TryStreamExt;

use super::{eventually, js, publish, text, Feature, WAIT};

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn ordered_pull_consumer_recreates_after_its_consumer_is_deleted() {
    js(Feature::Ordered, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("O", &["o.*"])));
        for i in 1..=5 {
            publish(&js, "o.x", &i.to_string()).await;
        }
        let consumer = ok!(handle.create_consumer(pull::OrderedConfig {
            filter_subject: "o.x".into(),
            ..Default::default()
        }));
        let config = &consumer.cached_info().config;
        assert_eq!(config.ack_policy, AckPolicy::None);
        assert_eq!(config.max_deliver, 1);
        assert_eq!(config.durable_name, None);
        let mut messages = ok!(consumer.messages());
        for i in 1..=5u64 {
            let message = next!(messages);
            assert_eq!(text(&message.payload), i.to_string());
        }

        // Remove the consumer under the client's feet; it must carry on from sequence 6.
        let names: Vec<String> = ok!(handle.consumer_names().try_collect());
        assert_eq!(names.len(), 1, "{names:?}");
        ok!(handle.delete_consumer(&names[0]));
        for i in 6..=10 {
            publish(&js, "o.x", &i.to_string()).await;
        }
        for i in 6..=10u64 {
            let message = next!(messages);
            let info = message.info().expect("JetStream message");
            assert_eq!(
                (text(&message.payload), info.stream_sequence),
                (i.to_string(), i)
            );
        }
        let replacement: Vec<String> = ok!(handle.consumer_names().try_collect());
        assert_eq!(replacement.len(), 1);
        assert_ne!(replacement, names, "a new consumer took over");
    })
    .await;
}

#[tokio::test]
async fn ordered_push_consumer_delivers_everything_in_order() {
    js(Feature::Ordered, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("O", &["o.*"])));
        for i in 1..=50 {
            let subject = if i % 2 == 0 { "o.even" } else { "o.odd" };
            publish(&js, subject, &i.to_string()).await;
        }
        let consumer = ok!(handle.create_consumer(push::OrderedConfig {
            deliver_subject: client.new_inbox(),
            filter_subject: "o.odd".into(),
            ..Default::default()
        }));
        // What async-nats asks for, as the server recorded it.
        let config = &consumer.cached_info().config;
        assert_eq!(config.ack_policy, AckPolicy::None);
        assert_eq!(config.max_deliver, 1);
        assert!(config.flow_control && config.memory_storage);
        assert!(config.idle_heartbeat > Duration::ZERO);
        assert_eq!(config.inactive_threshold, Duration::from_secs(30));

        let mut messages = ok!(consumer.messages());
        for i in (1..=49).step_by(2) {
            let message = next!(messages);
            assert_eq!(text(&message.payload), i.to_string());
        }
        publish(&js, "o.odd", "51").await;
        let message = next!(messages);
        assert_eq!(text(&message.payload), "51");
        let info = eventually("the consumer saw 51", WAIT, || {
            let handle = &handle;
            async move {
                let names: Vec<String> = handle.consumer_names().try_collect().await.ok()?;
                let info = handle.consumer_info(names.first()?).await.ok()?;
                (info.delivered.stream_sequence == 51).then_some(info)
            }
        })
        .await;
        assert_eq!(info.delivered.consumer_sequence, 26);
    })
    .await;
}
