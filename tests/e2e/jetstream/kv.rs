//! Key-value buckets (`kv`) through async-nats's KV API: the bucket's stream, history and
//! TTL, put/get/update with revision rules, delete and purge markers, keys, history, and
//! watchers.
//!
//! async-nats 0.51 creates a bucket only after reading account info with the 2.10 fields
//! `reserved_memory`/`reserved_storage`, which nats-server 2.9.10 does not send; on a server
//! that does not claim 2.10 the bucket's stream is made here exactly as the client would
//! make it ([`create_bucket`]). Everything after creation is the client's own code path.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation, Store, UpdateErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy};
use async_nats::jetstream::Context;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{assert_js_error, eventually, js, Feature, WAIT};

/// A bucket as `Context::create_key_value` makes it.
async fn create_bucket(js: &Context, config: kv::Config) -> Store {
    if js.client().is_server_compatible(2, 10, 0) {
        return ok!(js.create_key_value(config));
    }
    assert!(
        within!(js.create_key_value(config.clone())).is_err(),
        "async-nats cannot read 2.9.10 account info"
    );
    ok!(js.create_stream(Config {
        name: format!("KV_{}", config.bucket),
        description: Some(config.description),
        subjects: vec![format!("$KV.{}.>", config.bucket)],
        max_messages_per_subject: config.history.max(1),
        max_bytes: config.max_bytes,
        max_age: config.max_age,
        max_message_size: config.max_value_size,
        storage: config.storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: DiscardPolicy::New,
        ..Default::default()
    }));
    ok!(js.get_key_value(config.bucket))
}

fn bucket(name: &str, history: i64) -> kv::Config {
    kv::Config {
        bucket: name.to_string(),
        history,
        ..Default::default()
    }
}

fn value(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

#[tokio::test]
async fn bucket_stream_history_and_ttl() {
    js(Feature::Kv, |server| async move {
        let (_, js) = server.connect().await;
        let ttl = Duration::from_secs(1);
        let store = create_bucket(
            &js,
            kv::Config {
                description: "settings".into(),
                max_age: ttl,
                ..bucket("CFG", 3)
            },
        )
        .await;
        let info = ok!(js.get_stream("KV_CFG")).cached_info().clone();
        let config = &info.config;
        assert_eq!(config.subjects, ["$KV.CFG.>"]);
        assert_eq!(config.max_messages_per_subject, 3);
        assert!(config.allow_rollup && config.deny_delete && config.allow_direct);
        assert!(!config.deny_purge);
        assert_eq!(config.discard, DiscardPolicy::New);
        assert_eq!((config.max_age, config.duplicate_window), (ttl, ttl));
        let status = ok!(store.status());
        assert_eq!(
            (status.history(), status.max_age(), status.values()),
            (3, ttl, 0)
        );
        assert_eq!(status.bucket(), "CFG");

        let put_at = Instant::now();
        assert_eq!(ok!(store.put("colour", value("blue"))), 1);
        assert_eq!(ok!(store.get("colour")), Some(value("blue")));
        eventually("the value expires", WAIT, || {
            let store = &store;
            async move { store.get("colour").await.ok()?.is_none().then_some(()) }
        })
        .await;
        let lived = put_at.elapsed();
        assert!(
            lived >= ttl - Duration::from_millis(100),
            "expired after {lived:?}, TTL {ttl:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn put_get_update_follow_the_revision_rules() {
    js(Feature::Kv, |server| async move {
        let (_, js) = server.connect().await;
        let store = create_bucket(&js, bucket("REV", 5)).await;
        assert_eq!(ok!(store.put("a", value("1"))), 1);
        assert_eq!(ok!(store.put("b", value("x"))), 2);
        let entry = ok!(store.entry("a")).expect("a exists");
        assert_eq!(
            (
                entry.key.as_str(),
                entry.revision,
                entry.operation,
                &entry.value[..]
            ),
            ("a", 1, Operation::Put, &b"1"[..])
        );
        assert_eq!(entry.bucket, "REV");
        assert_eq!(ok!(store.get("missing")), None);

        // update: only against the key's current revision.
        assert_eq!(ok!(store.update("a", value("2"), 1)), 3);
        let err = store
            .update("a", value("stale"), 1)
            .await
            .expect_err("revision 1 is stale");
        assert_eq!(err.kind(), UpdateErrorKind::WrongLastRevision);
        assert_js_error(&err, 400, 10071, "wrong last sequence: 3");
        assert_eq!(ok!(store.get("a")), Some(value("2")));
        let old = ok!(store.entry_for_revision("a", 1)).expect("revision 1 kept");
        assert_eq!(&old.value[..], b"1");

        // create: only when the key has no value (never written, deleted or purged).
        let err = store
            .create("a", value("again"))
            .await
            .expect_err("a exists");
        assert_eq!(err.kind(), kv::CreateErrorKind::AlreadyExists);
        assert_eq!(ok!(store.create("c", value("new"))), 4);
        ok!(store.delete("c"));
        assert_eq!(ok!(store.create("c", value("reborn"))), 6);
        assert_eq!(
            ok!(store.update("d", value("first"), 0)),
            7,
            "revision 0: new key"
        );
        let err = store
            .update("d", value("x"), 0)
            .await
            .expect_err("d exists");
        assert_js_error(&err, 400, 10071, "wrong last sequence: 7");
    })
    .await;
}

#[tokio::test]
async fn delete_and_purge_leave_markers() {
    js(Feature::Kv, |server| async move {
        let (_, js) = server.connect().await;
        let store = create_bucket(&js, bucket("MARK", 10)).await;
        for v in ["1", "2", "3"] {
            ok!(store.put("k", value(v)));
        }
        ok!(store.put("other", value("o")));
        ok!(store.delete("k"));
        assert_eq!(ok!(store.get("k")), None);
        let entry = ok!(store.entry("k")).expect("the delete marker");
        assert_eq!((entry.operation, entry.revision), (Operation::Delete, 5));
        let marker =
            ok!(ok!(js.get_stream("KV_MARK")).get_last_raw_message_by_subject("$KV.MARK.k"));
        assert_eq!(
            marker.headers.get("KV-Operation").map(|v| v.as_str()),
            Some("DEL")
        );
        let history: Vec<_> = ok!(ok!(store.history("k")).try_collect());
        let ops: Vec<Operation> = history.iter().map(|e| e.operation).collect();
        assert_eq!(
            ops,
            [
                Operation::Put,
                Operation::Put,
                Operation::Put,
                Operation::Delete
            ]
        );

        // A purge rolls the key up to the purge marker alone.
        ok!(store.purge("k"));
        let history: Vec<_> = ok!(ok!(store.history("k")).try_collect());
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].operation, Operation::Purge);
        let marker =
            ok!(ok!(js.get_stream("KV_MARK")).get_last_raw_message_by_subject("$KV.MARK.k"));
        assert_eq!(
            marker.headers.get("KV-Operation").map(|v| v.as_str()),
            Some("PURGE")
        );
        assert_eq!(
            marker.headers.get("Nats-Rollup").map(|v| v.as_str()),
            Some("sub")
        );
        let state = ok!(js.get_stream("KV_MARK")).cached_info().state.clone();
        assert_eq!(state.messages, 2, "the purge marker and `other`");

        let keys: Vec<String> = ok!(ok!(store.keys()).try_collect());
        assert_eq!(keys, ["other"], "deleted and purged keys are not listed");
    })
    .await;
}

#[tokio::test]
async fn history_keeps_the_configured_revisions_and_keys_lists_live_keys() {
    js(Feature::Kv, |server| async move {
        let (_, js) = server.connect().await;
        let store = create_bucket(&js, bucket("HIST", 3)).await;
        for i in 1..=5 {
            ok!(store.put("k", Bytes::from(i.to_string())));
        }
        for key in ["a.b", "a.c", "z"] {
            ok!(store.put(key, value("v")));
        }
        let history: Vec<_> = ok!(ok!(store.history("k")).try_collect());
        let values: Vec<String> = history
            .iter()
            .map(|e| String::from_utf8_lossy(&e.value).into_owned())
            .collect();
        assert_eq!(values, ["3", "4", "5"]);
        let revisions: Vec<u64> = history.iter().map(|e| e.revision).collect();
        assert_eq!(revisions, [3, 4, 5]);
        let mut keys: Vec<String> = ok!(ok!(store.keys()).try_collect());
        keys.sort();
        assert_eq!(keys, ["a.b", "a.c", "k", "z"]);
        // Store::status reports what the handle cached; a fresh handle sees the values.
        let status = ok!(ok!(js.get_key_value("HIST")).status());
        assert_eq!(
            status.values(),
            6,
            "3 revisions of k and one of each other key"
        );
    })
    .await;
}

#[tokio::test]
async fn watchers_see_current_values_and_updates() {
    js(Feature::Kv, |server| async move {
        let (client, js) = server.connect().await;
        let store = create_bucket(&js, bucket("W", 5)).await;
        ok!(store.put("a.1", value("old")));
        ok!(store.put("a.1", value("current")));
        ok!(store.put("b.1", value("b")));

        // With history: the current value of each matching key, then updates.
        let mut with_history = ok!(store.watch_with_history("a.*"));
        let first = next!(with_history);
        assert_eq!(
            (first.key.as_str(), &first.value[..], first.revision),
            ("a.1", &b"current"[..], 2)
        );
        // Without: only what happens from now on, for some keys or all of them.
        let mut updates = ok!(store.watch("a.*"));
        let mut all = ok!(store.watch_all());
        let mut from_revision = ok!(store.watch_all_from_revision(3));
        let replayed = next!(from_revision);
        assert_eq!((replayed.key.as_str(), replayed.revision), ("b.1", 3));

        ok!(store.put("a.2", value("new")));
        ok!(store.put("b.2", value("unwatched")));
        ok!(store.delete("a.1"));
        for watch in [&mut with_history, &mut updates] {
            let put = next!(*watch);
            assert_eq!(
                (put.key.as_str(), put.operation, put.revision),
                ("a.2", Operation::Put, 4)
            );
            let deleted = next!(*watch);
            assert_eq!(
                (deleted.key.as_str(), deleted.operation, deleted.revision),
                ("a.1", Operation::Delete, 6)
            );
        }
        for watch in [&mut all, &mut from_revision] {
            let seen: Vec<(String, Operation)> =
                within!(watch.by_ref().take(3).try_collect::<Vec<_>>())
                    .expect("watching all keys")
                    .into_iter()
                    .map(|e| (e.key, e.operation))
                    .collect();
            assert_eq!(
                seen,
                [
                    ("a.2".to_string(), Operation::Put),
                    ("b.2".to_string(), Operation::Put),
                    ("a.1".to_string(), Operation::Delete)
                ]
            );
        }

        // Watching several keys at once needs 2.10 `filter_subjects`.
        if client.is_server_compatible(2, 10, 0) {
            let mut many = ok!(store.watch_many_with_history(["a.2", "b.1"]));
            let mut keys = vec![next!(many).key, next!(many).key];
            keys.sort();
            assert_eq!(keys, ["a.2", "b.1"]);
        }
    })
    .await;
}
