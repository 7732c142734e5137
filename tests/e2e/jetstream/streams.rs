//! Account info (`account`) and stream management (`streams`): create, update, info, list,
//! names, delete, subject overlap errors, the fields of the API responses, and a file stream
//! surviving `kill -9`.

use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use futures::TryStreamExt;
use serde_json::{json, Value};

use super::{
    api, assert_api_error, assert_has_keys, assert_js_error, eventually, js, publish, Enable,
    Feature, JsServer, WAIT,
};
use midge_tests::run_on;

fn stream(name: &str, subjects: &[&str]) -> Config {
    Config {
        name: name.to_string(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

#[tokio::test]
async fn account_info_counts_streams_consumers_storage_and_api_errors() {
    js(Feature::Account, |server| async move {
        let (client, js) = server.connect().await;
        let fresh = api(&client, "INFO", Value::Null).await;
        assert_eq!(
            fresh["type"],
            "io.nats.jetstream.api.v1.account_info_response"
        );
        for (field, want) in [
            ("streams", 0),
            ("consumers", 0),
            ("memory", 0),
            ("storage", 0),
        ] {
            assert_eq!(fresh[field], json!(want), "{field} in {fresh}");
        }
        for limit in ["max_memory", "max_storage", "max_streams", "max_consumers"] {
            assert_eq!(
                fresh["limits"][limit],
                json!(-1),
                "{limit} unlimited in {fresh}"
            );
        }

        ok!(js.create_stream(stream("FILE", &["file.>"])));
        ok!(js.create_stream(Config {
            storage: StorageType::Memory,
            ..stream("MEM", &["mem.>"])
        }));
        publish(&js, "file.a", "on disk").await;
        publish(&js, "mem.a", "in memory").await;
        ok!(js.create_consumer_on_stream(
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("C".into()),
                ..Default::default()
            },
            "FILE"
        ));

        let file_bytes = ok!(js.get_stream("FILE")).cached_info().state.bytes;
        let mem_bytes = ok!(js.get_stream("MEM")).cached_info().state.bytes;
        assert!(file_bytes > 0 && mem_bytes > 0);
        let account = api(&client, "INFO", Value::Null).await;
        assert_eq!(
            (
                &account["streams"],
                &account["consumers"],
                &account["storage"],
                &account["memory"]
            ),
            (&json!(2), &json!(1), &json!(file_bytes), &json!(mem_bytes)),
            "{account}"
        );

        // Every API request counts; one that fails counts as an error too. The INFO request
        // being answered is counted after its own reply.
        let before = api(&client, "INFO", Value::Null).await["api"].clone();
        let missing = js.get_stream("MISSING").await.expect_err("no such stream");
        assert_js_error(&missing, 404, 10059, "stream not found");
        let after = api(&client, "INFO", Value::Null).await["api"].clone();
        let count = |v: &Value, f: &str| v[f].as_u64().unwrap_or_else(|| panic!("api.{f} in {v}"));
        assert_eq!(
            count(&after, "errors"),
            count(&before, "errors") + 1,
            "{before} -> {after}"
        );
        assert_eq!(
            count(&after, "total"),
            count(&before, "total") + 2,
            "{before} -> {after}"
        );

        // async-nats's typed account info needs the 2.10 fields `reserved_memory` and
        // `reserved_storage`, which 2.9.10 does not send; a server claiming 2.10 must.
        if client.is_server_compatible(2, 10, 0) {
            let typed = ok!(js.query_account());
            assert_eq!((typed.streams, typed.consumers), (2, 1));
        } else {
            js.query_account()
                .await
                .expect_err("async-nats cannot parse 2.9.10 account info");
        }
    })
    .await;
}

const ACCOUNTS: &str = r#"
accounts {
  WITH: { jetstream: enabled, users: [{user: alice, password: alice}] }
  WITHOUT: { users: [{user: bob, password: bob}] }
  CAPPED: {
    jetstream: { max_mem: 1048576, max_file: 10485760, max_streams: 2, max_consumers: 2 }
    users: [{user: carol, password: carol}]
  }
}
"#;

#[tokio::test]
async fn jetstream_block_with_per_account_enablement_and_limits() {
    run_on(super::kinds_for(Feature::Account), |kind| async move {
        let server = JsServer::start_with(kind, Enable::ConfigBlock, ACCOUNTS).await;

        let (_, with) = server.connect_as("alice").await;
        ok!(with.create_stream(stream("S", &["s.>"])));
        assert_eq!(publish(&with, "s.1", "x").await.sequence, 1);
        let has_files = std::fs::read_dir(server.store_dir())
            .map(|mut dir| dir.next().is_some())
            .unwrap_or(false);
        assert!(has_files, "the file stream is kept under store_dir");

        let (client, without) = server.connect_as("bob").await;
        let response = api(&client, "INFO", Value::Null).await;
        assert_api_error(&response, 503, 10039, "JetStream not enabled for account");
        let err = without
            .create_stream(stream("S", &["s.>"]))
            .await
            .expect_err("JetStream is off for WITHOUT");
        assert_js_error(&err, 503, 10039, "JetStream not enabled for account");

        let (client, capped) = server.connect_as("carol").await;
        let limits = api(&client, "INFO", Value::Null).await["limits"].clone();
        assert_eq!(
            (
                &limits["max_memory"],
                &limits["max_storage"],
                &limits["max_streams"],
                &limits["max_consumers"]
            ),
            (&json!(1_048_576), &json!(10_485_760), &json!(2), &json!(2))
        );
        let err = capped
            .create_stream(Config {
                storage: StorageType::Memory,
                max_bytes: 2 * 1_048_576,
                ..stream("BIG", &["big"])
            })
            .await
            .expect_err("more memory than the account has");
        assert_js_error(&err, 500, 10028, "insufficient memory resources available");
        let one = ok!(capped.create_stream(stream("ONE", &["one"])));
        ok!(capped.create_stream(stream("TWO", &["two"])));
        let err = capped
            .create_stream(stream("THREE", &["three"]))
            .await
            .expect_err("third stream");
        assert_js_error(&err, 400, 10027, "maximum number of streams reached");
        for name in ["C1", "C2"] {
            ok!(one.create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(name.into()),
                ..Default::default()
            }));
        }
        let response = api(
            &client,
            "CONSUMER.CREATE.ONE.C3",
            json!({"stream_name": "ONE", "config": {"durable_name": "C3", "ack_policy": "explicit"}}),
        )
        .await;
        assert_api_error(&response, 400, 10026, "maximum consumers limit reached");
    })
    .await;
}

#[tokio::test]
async fn create_info_update_delete() {
    js(Feature::Streams, |server| async move {
        let (client, js) = server.connect().await;
        let created = ok!(js.create_stream(stream("ORDERS", &["orders.*", "events.>"])));
        let config = &created.cached_info().config;
        assert_eq!(config.subjects, ["orders.*", "events.>"]);
        // The defaults the server fills in.
        assert_eq!(config.retention, RetentionPolicy::Limits);
        assert_eq!(config.storage, StorageType::File);
        assert_eq!(config.discard, DiscardPolicy::Old);
        assert_eq!(
            (
                config.max_messages,
                config.max_bytes,
                config.max_messages_per_subject
            ),
            (-1, -1, -1)
        );
        assert_eq!((config.max_consumers, config.max_message_size), (-1, -1));
        assert_eq!(config.max_age, std::time::Duration::ZERO);
        assert_eq!(config.duplicate_window, std::time::Duration::from_secs(120));
        assert_eq!(config.num_replicas, 1);
        assert_eq!(created.cached_info().state.messages, 0);

        // Wildcards capture: one token for `*`, any tail for `>`.
        for (subject, seq) in [("orders.new", 1), ("events.a.b.c", 2)] {
            let ack = publish(&js, subject, "x").await;
            assert_eq!((ack.stream.as_str(), ack.sequence), ("ORDERS", seq));
        }
        let err = within!(async { js.publish("orders.a.b", "x".into()).await?.await })
            .expect_err("orders.a.b is outside orders.*");
        assert_eq!(
            err.kind(),
            async_nats::jetstream::context::PublishErrorKind::StreamNotFound
        );

        // Creating again with the same config is not an error; with another it is.
        ok!(js.create_stream(stream("ORDERS", &["orders.*", "events.>"])));
        let err = js
            .create_stream(stream("ORDERS", &["orders.*"]))
            .await
            .expect_err("different config");
        assert_js_error(
            &err,
            400,
            10058,
            "stream name already in use with a different configuration",
        );

        let updated = ok!(js.update_stream(Config {
            max_messages: 100,
            ..stream("ORDERS", &["orders.*", "events.>", "audit"])
        }));
        assert_eq!(updated.config.subjects, ["orders.*", "events.>", "audit"]);
        assert_eq!(updated.config.max_messages, 100);
        assert_eq!(updated.state.messages, 2, "an update keeps the messages");
        assert_eq!(publish(&js, "audit", "x").await.sequence, 3);

        let err = js
            .update_stream(Config {
                storage: StorageType::Memory,
                ..stream("ORDERS", &["orders.*"])
            })
            .await
            .expect_err("storage cannot change");
        assert_js_error(
            &err,
            500,
            10052,
            "stream configuration update can not change storage type",
        );
        let err = js
            .update_stream(stream("NOPE", &["nope"]))
            .await
            .expect_err("no such stream");
        assert_eq!(err.kind(), CreateStreamErrorKind::NotFound);
        let response = api(
            &client,
            "STREAM.UPDATE.NOPE",
            json!({"name": "NOPE", "subjects": ["nope"]}),
        )
        .await;
        assert_api_error(&response, 404, 10059, "stream not found");

        let mut handle = ok!(js.get_stream("ORDERS"));
        let info = ok!(handle.info());
        assert_eq!((info.state.messages, info.state.last_sequence), (3, 3));

        assert!(ok!(js.delete_stream("ORDERS")).success);
        let err = js.get_stream("ORDERS").await.expect_err("deleted");
        assert_js_error(&err, 404, 10059, "stream not found");
        let err = js
            .delete_stream("ORDERS")
            .await
            .err()
            .expect("deleted twice");
        assert_js_error(&err, 404, 10059, "stream not found");

        // The raw responses: the type field clients dispatch on, and the error object.
        let response = api(&client, "STREAM.INFO.ORDERS", Value::Null).await;
        assert_eq!(
            response["type"],
            "io.nats.jetstream.api.v1.stream_info_response"
        );
        assert_api_error(&response, 404, 10059, "stream not found");
        let response = api(
            &client,
            "STREAM.CREATE.A",
            json!({"name": "B", "subjects": ["b"]}),
        )
        .await;
        assert_eq!(
            response["type"],
            "io.nats.jetstream.api.v1.stream_create_response"
        );
        assert_api_error(
            &response,
            400,
            10056,
            "stream name in subject does not match request",
        );
    })
    .await;
}

#[tokio::test]
async fn overlapping_subjects_are_rejected() {
    js(Feature::Streams, |server| async move {
        let (_, js) = server.connect().await;
        ok!(js.create_stream(stream("A", &["a.>"])));
        for subjects in [&["a.b"][..], &["a.*.c"], &[">"], &["x", "a.b.c"]] {
            let err = js
                .create_stream(stream("B", subjects))
                .await
                .expect_err("overlaps A");
            assert_js_error(&err, 400, 10065, "subjects overlap with an existing stream");
        }
        ok!(js.create_stream(stream("B", &["b.*"])));
        let err = js
            .update_stream(stream("B", &["b.*", "a.x"]))
            .await
            .expect_err("update into A's subjects");
        assert_js_error(&err, 400, 10065, "subjects overlap with an existing stream");
        // Within one stream's own list.
        let err = js
            .create_stream(stream("C", &["c.a", "c.>"]))
            .await
            .expect_err("own subjects overlap");
        assert_js_error(&err, 500, 10052, "subject \"c.a\" overlaps with \"c.>\"");
        // Deleting a stream frees its subjects.
        ok!(js.delete_stream("A"));
        ok!(js.create_stream(stream("A2", &["a.b"])));
    })
    .await;
}

#[tokio::test]
async fn list_names_and_lookup_by_subject() {
    js(Feature::Streams, |server| async move {
        let (client, js) = server.connect().await;
        for (name, subjects) in [
            ("ALPHA", &["alpha.*"][..]),
            ("BETA", &["beta.>"]),
            ("GAMMA", &["gamma", "shared.g"]),
        ] {
            ok!(js.create_stream(stream(name, subjects)));
        }
        let mut names: Vec<String> = ok!(js.stream_names().try_collect());
        names.sort();
        assert_eq!(names, ["ALPHA", "BETA", "GAMMA"]);
        let infos: Vec<_> = ok!(js.streams().try_collect());
        let mut listed: Vec<String> = infos.iter().map(|i| i.config.name.clone()).collect();
        listed.sort();
        assert_eq!(listed, names);

        assert_eq!(ok!(js.stream_by_subject("alpha.1")), "ALPHA");
        assert_eq!(ok!(js.stream_by_subject("shared.g")), "GAMMA");
        let err = js
            .stream_by_subject("nobody.here")
            .await
            .expect_err("no stream captures it");
        assert_eq!(
            err.kind(),
            async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound
        );

        // The raw pages: totals, offsets and the page size nats-server 2.9.10 uses.
        let names = api(&client, "STREAM.NAMES", Value::Null).await;
        assert_eq!(
            names["type"],
            "io.nats.jetstream.api.v1.stream_names_response"
        );
        assert_eq!(
            (&names["total"], &names["offset"], &names["limit"]),
            (&json!(3), &json!(0), &json!(1024))
        );
        let list = api(&client, "STREAM.LIST", Value::Null).await;
        assert_eq!(
            list["type"],
            "io.nats.jetstream.api.v1.stream_list_response"
        );
        assert_eq!((&list["total"], &list["limit"]), (&json!(3), &json!(256)));
        // Names filtered by a subject, literal or wildcard.
        for (subject, want) in [("beta.x.y", json!(["BETA"])), ("alpha.*", json!(["ALPHA"]))] {
            let filtered = api(&client, "STREAM.NAMES", json!({ "subject": subject })).await;
            assert_eq!(filtered["streams"], want, "names for {subject}");
        }
    })
    .await;
}

#[tokio::test]
async fn file_stream_survives_kill_and_restart() {
    js(Feature::Streams, |server| async move {
        let (_, js) = server.connect().await;
        ok!(js.create_stream(Config {
            max_messages_per_subject: 5,
            ..stream("DURABLE", &["d.>"])
        }));
        for i in 1..=3 {
            publish(&js, &format!("d.{i}"), &format!("message {i}")).await;
        }
        drop(js);

        let server = server.restart().await;
        let (_, js) = server.connect().await;
        let mut handle = eventually("the stream is recovered", WAIT, || {
            let js = &js;
            async move { js.get_stream("DURABLE").await.ok() }
        })
        .await;
        let info = ok!(handle.info());
        assert_eq!(info.config.max_messages_per_subject, 5, "config recovered");
        assert_eq!(
            (
                info.state.messages,
                info.state.first_sequence,
                info.state.last_sequence
            ),
            (3, 1, 3)
        );
        let second = ok!(handle.get_raw_message(2));
        assert_eq!(
            (second.subject.as_str(), &second.payload[..]),
            ("d.2", &b"message 2"[..])
        );
        assert_eq!(publish(&js, "d.4", "after restart").await.sequence, 4);
    })
    .await;
}

#[tokio::test]
async fn responses_carry_every_field_of_the_reference() {
    js(Feature::Streams, |server| async move {
        let (client, js) = server.connect().await;
        let created = api(
            &client,
            "STREAM.CREATE.F",
            json!({"name": "F", "subjects": ["f.*"]}),
        )
        .await;
        let config = [
            "name",
            "subjects",
            "retention",
            "max_consumers",
            "max_msgs",
            "max_bytes",
            "max_age",
            "max_msgs_per_subject",
            "max_msg_size",
            "discard",
            "storage",
            "num_replicas",
            "duplicate_window",
            "allow_direct",
            "mirror_direct",
            "sealed",
            "deny_delete",
            "deny_purge",
            "allow_rollup_hdrs",
        ];
        let empty_state = [
            "messages",
            "bytes",
            "first_seq",
            "first_ts",
            "last_seq",
            "last_ts",
            "consumer_count",
        ];
        assert_has_keys(
            &created,
            "",
            &["type", "config", "created", "state", "did_create"],
        );
        assert_has_keys(&created, "/config", &config);
        assert_has_keys(&created, "/state", &empty_state);
        assert_eq!(created["did_create"], json!(true));
        // An empty stream's first and last times are Go's zero time.
        assert_eq!(created["state"]["first_ts"], "0001-01-01T00:00:00Z");

        publish(&js, "f.a", "x").await;
        publish(&js, "f.b", "y").await;
        publish(&js, "f.a", "z").await;
        ok!(ok!(js.get_stream("F")).delete_message(2));
        let info = api(&client, "STREAM.INFO.F", Value::Null).await;
        // total/offset/limit page the per-subject counts (async-nats reads `total`).
        assert_has_keys(
            &info,
            "",
            &[
                "type", "config", "created", "state", "total", "offset", "limit",
            ],
        );
        assert_has_keys(&info, "/config", &config);
        assert_has_keys(&info, "/state", &empty_state);
        assert_has_keys(&info, "/state", &["num_subjects", "num_deleted"]);
        assert_eq!(
            (
                &info["state"]["num_subjects"],
                &info["state"]["num_deleted"]
            ),
            (&json!(1), &json!(1))
        );

        let account = api(&client, "INFO", Value::Null).await;
        assert_has_keys(
            &account,
            "",
            &[
                "type",
                "memory",
                "storage",
                "streams",
                "consumers",
                "limits",
                "api",
            ],
        );
        assert_has_keys(
            &account,
            "/limits",
            &[
                "max_memory",
                "max_storage",
                "max_streams",
                "max_consumers",
                "max_ack_pending",
                "memory_max_stream_bytes",
                "storage_max_stream_bytes",
                "max_bytes_required",
            ],
        );
        assert_has_keys(&account, "/api", &["total", "errors"]);
    })
    .await;
}
