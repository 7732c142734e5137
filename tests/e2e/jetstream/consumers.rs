//! Consumer management and selection (`consumers`): durable and ephemeral consumers, their
//! info, list, names and deletion, config errors, the fields of their API responses, the
//! deliver policies, filter subjects, replay original, and a durable consumer surviving
//! `kill -9`.

use std::time::Duration;

use async_nats::jetstream::consumer::{
    pull, push, AckPolicy, DeliverPolicy, PullConsumer, ReplayPolicy,
};
use async_nats::jetstream::stream::Config;
use futures::TryStreamExt;
use serde_json::{json, Value};

use super::{
    api, assert_api_error, assert_has_keys, assert_js_error, fetch, js, publish, stream_seqs,
    Feature,
};

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

#[tokio::test]
async fn durable_and_ephemeral_consumers_lifecycle() {
    js(Feature::Consumers, |server| async move {
        let (client, js) = server.connect().await;
        let mut handle = ok!(js.create_stream(stream("C", &["c.*"])));
        publish(&js, "c.a", "1").await;
        publish(&js, "c.b", "2").await;

        let mut consumer = ok!(handle.create_consumer(durable("D")));
        let info = ok!(consumer.info()).clone();
        assert_eq!((info.stream_name.as_str(), info.name.as_str()), ("C", "D"));
        assert_eq!(info.num_pending, 2);
        assert_eq!(
            (info.delivered.stream_sequence, info.ack_floor.stream_sequence),
            (0, 0)
        );
        // The defaults the server fills in.
        let config = &info.config;
        assert_eq!(config.deliver_policy, DeliverPolicy::All);
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.max_deliver, -1);
        assert_eq!(config.max_ack_pending, 1000);
        assert_eq!(config.max_waiting, 512);
        assert_eq!(config.replay_policy, ReplayPolicy::Instant);
        assert_eq!(config.inactive_threshold, Duration::ZERO, "durables do not expire");

        // Creating again is idempotent; a compatible change updates; others are refused.
        ok!(handle.create_consumer(durable("D")));
        let updated = ok!(handle.create_consumer(pull::Config {
            max_ack_pending: 5,
            ..durable("D")
        }));
        assert_eq!(updated.cached_info().config.max_ack_pending, 5);
        let err = handle
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::Last,
                ..durable("D")
            })
            .await
            .expect_err("deliver policy is fixed");
        assert_js_error(&err, 500, 10012, "deliver policy can not be updated");

        // An ephemeral consumer gets a generated name and an inactivity threshold.
        let ephemeral = ok!(handle.create_consumer(pull::Config::default()));
        let eph = ephemeral.cached_info();
        assert_eq!(eph.name.len(), 8, "generated name {:?}", eph.name);
        assert_eq!(eph.config.durable_name, None);
        assert_eq!(eph.config.inactive_threshold, Duration::from_secs(5));

        let mut names: Vec<String> = ok!(handle.consumer_names().try_collect());
        names.sort();
        let mut want = vec!["D".to_string(), eph.name.clone()];
        want.sort();
        assert_eq!(names, want);
        let listed: Vec<_> = ok!(handle.consumers().try_collect());
        assert_eq!(listed.len(), 2);
        assert_eq!(ok!(handle.info()).state.consumer_count, 2);

        // The legacy durable subject nats.py uses still creates consumers.
        let legacy = api(
            &client,
            "CONSUMER.DURABLE.CREATE.C.LEGACY",
            json!({"stream_name": "C", "config": {"durable_name": "LEGACY", "ack_policy": "explicit"}}),
        )
        .await;
        assert_eq!(legacy["type"], "io.nats.jetstream.api.v1.consumer_create_response");
        assert_eq!(legacy["name"], "LEGACY", "{legacy}");
        assert_eq!(legacy["config"]["durable_name"], "LEGACY");

        assert!(ok!(handle.delete_consumer("D")).success);
        let err = handle
            .get_consumer::<pull::Config>("D")
            .await
            .expect_err("deleted");
        assert!(err.to_string().contains("consumer not found"), "{err}");
        let response = api(&client, "CONSUMER.DELETE.C.D", Value::Null).await;
        assert_api_error(&response, 404, 10014, "consumer not found");
        let response = api(&client, "CONSUMER.INFO.C.D", Value::Null).await;
        assert_api_error(&response, 404, 10014, "consumer not found");

        let err = js
            .create_consumer_on_stream(durable("X"), "NOPE")
            .await
            .expect_err("no stream");
        assert_js_error(&err, 404, 10059, "stream not found");
    })
    .await;
}

#[tokio::test]
async fn consumer_config_errors() {
    js(Feature::Consumers, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(stream("C", &["c.*"])));
        let create = |subject: &'static str, config: Value| {
            let client = &client;
            async move {
                api(
                    client,
                    subject,
                    json!({"stream_name": "C", "config": config}),
                )
                .await
            }
        };
        let cases = [
            (
                "CONSUMER.CREATE.C.A",
                json!({"durable_name": "B", "ack_policy": "explicit"}),
                400,
                10017,
                "consumer name in subject does not match durable name in request",
            ),
            (
                "CONSUMER.CREATE.C",
                json!({"durable_name": "B", "ack_policy": "explicit"}),
                400,
                10020,
                "consumer expected to be ephemeral but a durable name was set in request",
            ),
            (
                "CONSUMER.CREATE.C.F",
                json!({"durable_name": "F", "ack_policy": "explicit", "filter_subject": "other.x"}),
                400,
                10093,
                "consumer filter subject is not a valid subset of the interest subjects",
            ),
            (
                "CONSUMER.CREATE.C.G.c.x",
                json!({"durable_name": "G", "ack_policy": "explicit", "filter_subject": "c.y"}),
                400,
                10131,
                "Consumer create request did not match filtered subject from create subject",
            ),
            (
                "CONSUMER.CREATE.C.H",
                json!({"durable_name": "H", "ack_policy": "explicit", "deliver_subject": "h",
                       "flow_control": true}),
                400,
                10108,
                "consumer with flow control also needs heartbeats",
            ),
            (
                "CONSUMER.CREATE.C.I",
                json!({"durable_name": "I", "ack_policy": "explicit",
                       "backoff": [1_000_000_000u64, 2_000_000_000u64], "max_deliver": 2}),
                400,
                10116,
                "max deliver is required to be > length of backoff values",
            ),
            (
                "CONSUMER.CREATE.C.J",
                json!({"durable_name": "J", "ack_policy": "explicit",
                       "deliver_policy": "by_start_sequence"}),
                400,
                10094,
                "consumer delivery policy is deliver by start sequence, but optional start sequence is not set",
            ),
            (
                "CONSUMER.CREATE.C.K",
                json!({"durable_name": "K", "ack_policy": "explicit", "opt_start_seq": 3}),
                400,
                10094,
                "consumer delivery policy is deliver all, but optional start sequence is also set",
            ),
        ];
        for (subject, config, code, err_code, description) in cases {
            let response = create(subject, config).await;
            assert_eq!(
                response["type"],
                "io.nats.jetstream.api.v1.consumer_create_response"
            );
            assert_api_error(&response, code, err_code, description);
        }
        let names = api(&client, "CONSUMER.NAMES.C", Value::Null).await;
        assert_eq!(names["total"], json!(0), "nothing was created: {names}");
    })
    .await;
}

#[tokio::test]
async fn deliver_policies_choose_the_start() {
    js(Feature::Consumers, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("D", &["d.*"])));
        // d.a at odd sequences, d.b at even ones.
        for i in 1..=6 {
            let subject = if i % 2 == 1 { "d.a" } else { "d.b" };
            publish(&js, subject, &i.to_string()).await;
        }
        let fifth_at = ok!(handle.get_raw_message(5)).time;
        let policies = [
            ("all", DeliverPolicy::All, String::new()),
            ("last", DeliverPolicy::Last, String::new()),
            ("new", DeliverPolicy::New, String::new()),
            (
                "by_start_sequence",
                DeliverPolicy::ByStartSequence { start_sequence: 4 },
                String::new(),
            ),
            (
                "by_start_time",
                DeliverPolicy::ByStartTime {
                    start_time: fifth_at,
                },
                String::new(),
            ),
            // 2.9.10 requires a filter subject with last_per_subject (2.10 does not).
            (
                "last_per_subject",
                DeliverPolicy::LastPerSubject,
                "d.*".to_string(),
            ),
        ];
        let mut consumers = Vec::new();
        for (name, deliver_policy, filter_subject) in policies {
            let consumer = ok!(handle.create_consumer(pull::Config {
                deliver_policy,
                filter_subject,
                ..durable(name)
            }));
            consumers.push((name, consumer));
        }
        // What each one has now, then after one more message (d.a, sequence 7).
        let before = [
            vec![1, 2, 3, 4, 5, 6],
            vec![6],
            vec![],
            vec![4, 5, 6],
            vec![5, 6],
            vec![5, 6],
        ];
        for ((name, consumer), want) in consumers.iter_mut().zip(before) {
            let pending = ok!(consumer.info()).num_pending;
            assert_eq!(pending, want.len() as u64, "{name} num_pending");
            let got = stream_seqs(&fetch(consumer, 10).await);
            assert_eq!(got, want, "{name}");
        }
        publish(&js, "d.a", "7").await;
        for (name, consumer) in &consumers {
            let got = stream_seqs(&fetch(consumer, 10).await);
            assert_eq!(got, [7], "{name} gets the new message");
        }
    })
    .await;
}

#[tokio::test]
async fn filter_subjects_select_messages() {
    js(Feature::Consumers, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("F", &["f.>"])));
        for subject in [
            "f.eu.new",
            "f.us.new",
            "f.eu.paid",
            "f.eu.new.x",
            "f.asia.new",
        ] {
            publish(&js, subject, subject).await;
        }
        for (filter, want) in [
            ("f.eu.*", vec![1, 3]),
            ("f.*.new", vec![1, 2, 5]),
            ("f.eu.>", vec![1, 3, 4]),
            ("f.us.new", vec![2]),
        ] {
            let mut consumer = ok!(handle.create_consumer(pull::Config {
                filter_subject: filter.to_string(),
                ..Default::default()
            }));
            assert_eq!(
                ok!(consumer.info()).num_pending,
                want.len() as u64,
                "{filter}"
            );
            assert_eq!(stream_seqs(&fetch(&consumer, 10).await), want, "{filter}");
        }

        // Several filters on one consumer are a 2.10 feature; 2.9.10 drops the field and
        // delivers everything, so the selection is only checked on a server claiming 2.10.
        let multi = ok!(handle.create_consumer(pull::Config {
            filter_subjects: vec!["f.us.*".into(), "f.asia.*".into()],
            ..Default::default()
        }));
        let got = stream_seqs(&fetch(&multi, 10).await);
        if client.is_server_compatible(2, 10, 0) {
            assert_eq!(got, [2, 5]);
        } else {
            assert_eq!(got, [1, 2, 3, 4, 5], "2.9.10 ignores filter_subjects");
        }
    })
    .await;
}

#[tokio::test]
async fn durable_consumer_survives_kill_and_restart() {
    js(Feature::Consumers, |server| async move {
        let (_, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("R", &["r"])));
        for i in 1..=4 {
            publish(&js, "r", &i.to_string()).await;
        }
        let consumer = ok!(handle.create_consumer(pull::Config {
            ack_wait: Duration::from_secs(30),
            ..durable("D")
        }));
        for message in fetch(&consumer, 2).await {
            ok!(message.double_ack());
        }
        drop((consumer, handle, js));

        let server = server.restart().await;
        let (_, js) = server.connect().await;
        let handle = super::eventually("the stream is recovered", super::WAIT, || {
            let js = &js;
            async move { js.get_stream("R").await.ok() }
        })
        .await;
        let mut consumer: PullConsumer = ok!(handle.get_consumer("D"));
        let info = ok!(consumer.info()).clone();
        assert_eq!(
            info.config.ack_wait,
            Duration::from_secs(30),
            "config recovered"
        );
        // At least once: acks may be lost in a crash, never the unacked messages.
        let after = stream_seqs(&fetch(&consumer, 10).await);
        assert!(
            after.ends_with(&[3, 4]) && after.len() <= 4,
            "after restart: {after:?}"
        );
        assert_eq!(after.first(), Some(&(5 - after.len() as u64)));
    })
    .await;
}

#[tokio::test]
async fn replay_original_keeps_the_publish_spacing() {
    js(Feature::Consumers, |server| async move {
        let (client, js) = server.connect().await;
        let handle = ok!(js.create_stream(stream("RP", &["rp"])));
        publish(&js, "rp", "first").await;
        // The gap to replay: time passing is the scenario here, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(500)).await;
        publish(&js, "rp", "second").await;
        let first_at = ok!(handle.get_raw_message(1)).time;
        let second_at = ok!(handle.get_raw_message(2)).time;
        let stored_gap = Duration::try_from(second_at - first_at).expect("ordered timestamps");

        let deliver = client.new_inbox();
        let mut sub = ok!(client.subscribe(deliver.clone()));
        ok!(handle.create_consumer(push::Config {
            deliver_subject: deliver,
            replay_policy: ReplayPolicy::Original,
            ack_policy: AckPolicy::None,
            ..Default::default()
        }));
        let first = super::next_msg(&mut sub).await;
        let arrived = std::time::Instant::now();
        let second = super::next_msg(&mut sub).await;
        let replay_gap = arrived.elapsed();
        assert_eq!(
            (&first.payload[..], &second.payload[..]),
            (&b"first"[..], &b"second"[..])
        );
        assert!(
            replay_gap >= stored_gap - Duration::from_millis(100),
            "replayed {replay_gap:?} apart, published {stored_gap:?} apart"
        );
    })
    .await;
}

#[tokio::test]
async fn consumer_responses_carry_every_field_of_the_reference() {
    js(Feature::Consumers, |server| async move {
        let (client, js) = server.connect().await;
        ok!(js.create_stream(stream("F", &["f"])));
        publish(&js, "f", "x").await;
        let created = api(
            &client,
            "CONSUMER.CREATE.F.D",
            json!({"stream_name": "F", "config": {"durable_name": "D", "ack_policy": "explicit"}}),
        )
        .await;
        let top = [
            "type",
            "stream_name",
            "name",
            "created",
            "config",
            "delivered",
            "ack_floor",
            "num_ack_pending",
            "num_redelivered",
            "num_waiting",
            "num_pending",
        ];
        let config = [
            "durable_name",
            "name",
            "deliver_policy",
            "ack_policy",
            "ack_wait",
            "max_deliver",
            "replay_policy",
            "max_waiting",
            "max_ack_pending",
            "num_replicas",
        ];
        assert_has_keys(&created, "", &top);
        assert_has_keys(&created, "/config", &config);
        for sequences in ["/delivered", "/ack_floor"] {
            assert_has_keys(&created, sequences, &["consumer_seq", "stream_seq"]);
        }
        let info = api(&client, "CONSUMER.INFO.F.D", Value::Null).await;
        assert_eq!(
            info["type"],
            "io.nats.jetstream.api.v1.consumer_info_response"
        );
        assert_has_keys(&info, "", &top);
        assert_has_keys(&info, "/config", &config);
        let names = api(&client, "CONSUMER.NAMES.F", Value::Null).await;
        assert_eq!(
            names["type"],
            "io.nats.jetstream.api.v1.consumer_names_response"
        );
        assert_eq!(
            (&names["total"], &names["limit"], &names["consumers"]),
            (&json!(1), &json!(1024), &json!(["D"]))
        );
        let list = api(&client, "CONSUMER.LIST.F", Value::Null).await;
        assert_eq!(
            list["type"],
            "io.nats.jetstream.api.v1.consumer_list_response"
        );
        assert_eq!((&list["total"], &list["limit"]), (&json!(1), &json!(256)));
        assert_has_keys(&list, "/consumers/0", &top[1..]);
    })
    .await;
}
