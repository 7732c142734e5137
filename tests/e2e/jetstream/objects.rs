//! The object store (`objects`) through async-nats: chunked objects with their SHA-256
//! digest, info, list, delete, links and metadata updates, on the stream the client makes.

use std::collections::HashMap;

use async_nats::jetstream::object_store::{self, ObjectMetadata, ObjectStore, UpdateMetadata};
use async_nats::jetstream::stream::DiscardPolicy;
use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncReadExt;

use super::{js, Feature};

const CHUNK: usize = 128 * 1024;

/// Deterministic bytes that do not repeat within a chunk.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// The digest field async-nats writes and checks: `SHA-256=<URL-safe base64>`.
fn digest_of(data: &[u8]) -> String {
    let sum = ring::digest::digest(&ring::digest::SHA256, data);
    format!(
        "SHA-256={}",
        base64::engine::general_purpose::URL_SAFE.encode(sum.as_ref())
    )
}

async fn read_all(store: &ObjectStore, name: &str) -> Vec<u8> {
    let mut object = ok!(store.get(name));
    let mut data = Vec::new();
    ok!(object.read_to_end(&mut data));
    data
}

async fn put(
    store: &ObjectStore,
    meta: impl Into<ObjectMetadata>,
    data: &[u8],
) -> object_store::ObjectInfo {
    let mut reader = data;
    ok!(store.put(meta.into(), &mut reader))
}

#[tokio::test]
async fn multi_chunk_object_round_trips_with_its_digest() {
    js(Feature::Objects, |server| async move {
        let (_, js) = server.connect().await;
        let store = ok!(js.create_object_store(object_store::Config {
            bucket: "FILES".into(),
            ..Default::default()
        }));
        let stream = ok!(js.get_stream("OBJ_FILES")).cached_info().clone();
        assert_eq!(stream.config.subjects, ["$O.FILES.C.>", "$O.FILES.M.>"]);
        assert!(stream.config.allow_rollup && stream.config.allow_direct);
        assert_eq!(stream.config.discard, DiscardPolicy::New);

        let data = pseudo_random(2 * CHUNK + 44 * 1024);
        let info = put(
            &store,
            ObjectMetadata {
                name: "blob.bin".into(),
                description: Some("three chunks".into()),
                ..Default::default()
            },
            &data,
        )
        .await;
        assert_eq!((info.size, info.chunks), (data.len(), 3));
        assert_eq!(info.digest.as_deref(), Some(digest_of(&data).as_str()));
        assert_eq!(info.bucket, "FILES");
        assert!(!info.deleted);

        // Reading it back checks the digest as the last chunk arrives.
        let back = read_all(&store, "blob.bin").await;
        assert!(back == data, "content differs ({} bytes back)", back.len());
        let fetched = ok!(store.info("blob.bin"));
        assert_eq!(fetched.description.as_deref(), Some("three chunks"));
        assert_eq!(fetched.nuid, info.nuid);

        // Three chunk messages and one metadata message.
        let state = ok!(js.get_stream("OBJ_FILES")).cached_info().state.clone();
        assert_eq!(state.messages, 4);

        // Replacing the object replaces its chunks.
        let smaller = pseudo_random(1000);
        let replaced = put(&store, "blob.bin", &smaller).await;
        assert_eq!((replaced.size, replaced.chunks), (1000, 1));
        assert_eq!(read_all(&store, "blob.bin").await, smaller);
        let state = ok!(js.get_stream("OBJ_FILES")).cached_info().state.clone();
        assert_eq!(state.messages, 2, "the old chunks were purged");
    })
    .await;
}

#[tokio::test]
async fn list_delete_links_and_metadata() {
    js(Feature::Objects, |server| async move {
        let (_, js) = server.connect().await;
        let store = ok!(js.create_object_store(object_store::Config {
            bucket: "DOCS".into(),
            ..Default::default()
        }));
        put(
            &store,
            ObjectMetadata {
                name: "a.txt".into(),
                metadata: HashMap::from([("owner".to_string(), "ops".to_string())]),
                ..Default::default()
            },
            b"alpha",
        )
        .await;
        let b = put(&store, "b.txt", b"bravo").await;
        put(&store, "empty", b"").await;

        let mut names: Vec<String> = ok!(ok!(store.list()).map_ok(|i| i.name).try_collect());
        names.sort();
        assert_eq!(names, ["a.txt", "b.txt", "empty"]);
        assert_eq!(ok!(store.info("empty")).size, 0);
        assert_eq!(read_all(&store, "empty").await, b"");

        // Metadata: rename and describe (async-nats 0.51 keeps the annotations from put).
        let updated = ok!(store.update_metadata(
            "a.txt",
            UpdateMetadata {
                name: "renamed.txt".into(),
                description: Some("first letter".into()),
                ..Default::default()
            }
        ));
        assert_eq!(updated.name, "renamed.txt");
        let info = ok!(store.info("renamed.txt"));
        assert_eq!(info.description.as_deref(), Some("first letter"));
        assert_eq!(info.metadata.get("owner").map(String::as_str), Some("ops"));
        assert_eq!(read_all(&store, "renamed.txt").await, b"alpha");
        store.info("a.txt").await.expect_err("the old name is gone");

        // A link reads as its target.
        let link = ok!(store.add_link("latest", &b));
        let target = link
            .options
            .as_ref()
            .and_then(|o| o.link.as_ref())
            .expect("link options");
        assert_eq!(
            (target.bucket.as_str(), target.name.as_deref()),
            ("DOCS", Some("b.txt"))
        );
        assert_eq!(read_all(&store, "latest").await, b"bravo");

        // Delete: gone from get and list, chunks purged, a deleted marker kept.
        ok!(store.delete("b.txt"));
        store.get("b.txt").await.expect_err("deleted");
        let mut names: Vec<String> = ok!(ok!(store.list()).map_ok(|i| i.name).try_collect());
        names.sort();
        assert_eq!(names, ["empty", "latest", "renamed.txt"]);
        let chunk_subject = format!("$O.DOCS.C.{}", b.nuid);
        let handle = ok!(js.get_stream("OBJ_DOCS"));
        let counts: Vec<(String, usize)> =
            ok!(ok!(handle.info_with_subjects(chunk_subject.as_str())).try_collect());
        assert!(counts.is_empty(), "chunks of b.txt left: {counts:?}");

        // The store's own watch sees changes.
        let mut watch = ok!(store.watch());
        put(&store, "c.txt", b"charlie").await;
        let seen = within!(watch.next())
            .expect("watch open")
            .expect("watch entry");
        assert_eq!(seen.name, "c.txt");
    })
    .await;
}
