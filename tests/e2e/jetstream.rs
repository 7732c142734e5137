//! JetStream through the official Rust client: async-nats's JetStream, key-value and
//! object-store APIs against nats-server 2.9.10 `-js` (the reference) and, feature by feature
//! as it lands, against midge. tests/python/test_jetstream.py does the same with nats.py.
//!
//! # Which servers run: the `MIDGE_JS` gate
//!
//! Every test names one feature tag and runs against nats-server always, and against midge
//! only when `MIDGE_JS` enables that tag ([`kinds_for`] is the one place that decides):
//!
//! | `MIDGE_JS`             | midge runs                                            |
//! |------------------------|-------------------------------------------------------|
//! | unset                  | the features in [`MIDGE_DEFAULT`] (what midge passes)  |
//! | empty or `0`           | nothing: nats-server only                             |
//! | `1` or `all`           | every feature                                         |
//! | `streams,publish,kv`   | those features                                        |
//! | `all,-objects`         | every feature but `objects`                           |
//!
//! Tags ([`Feature`]) and where their tests are:
//!
//! | tag         | file            | covers                                                  |
//! |-------------|-----------------|---------------------------------------------------------|
//! | `account`   | `streams.rs`    | `$JS.API.INFO`, `jetstream {}` with per-account limits  |
//! | `streams`   | `streams.rs`    | stream CRUD, list, names, overlaps, fields, `kill -9`   |
//! | `publish`   | `publish.rs`    | PubAck, `Nats-Msg-Id` window, `Nats-Expected-*`         |
//! | `limits`    | `limits.rs`     | max_*, discard, sealed, deny delete/purge, byte counts  |
//! | `messages`  | `messages.rs`   | get, direct get, delete, purge, subject counts          |
//! | `consumers` | `consumers.rs`  | CRUD, errors, deliver policies, filters, replay, restart |
//! | `pull`      | `pull.rs`       | batch, max_bytes, expires, no_wait, heartbeats on the wire |
//! | `push`      | `push.rs`       | flow control and its stall, idle heartbeats, groups     |
//! | `acks`      | `acks.rs`       | policies, ack wait, NAK, WPI, TERM, max deliver, backoff |
//! | `ordered`   | `ordered.rs`    | async-nats ordered pull and push consumers              |
//! | `retention` | `retention.rs`  | work queue (scaled-down worker loses nothing), interest |
//! | `kv`        | `kv.rs`         | buckets, revisions, markers, history, keys, watch, TTL  |
//! | `objects`   | `objects.rs`    | chunked objects, digest, list, delete, links, metadata  |
//!
//! An unknown tag fails every test, so a typo never passes silently.
//! `MIDGE_TESTS_REFERENCE_ONLY=1` wins over `MIDGE_JS`. For example
//! `MIDGE_JS=kv cargo test -p midge-tests --test e2e jetstream::kv`. The suite takes about
//! 11 s against nats-server on two cores with the default two test threads
//! (`-- --test-threads 8` brings it to about 4 s: most of it is waiting on timers).
//!
//! Every server is started with `-js -sd <fresh temp dir>` (or a `jetstream {}` block,
//! see [`JsServer`]). The same assertions run against both kinds, so expected values written
//! here (API error codes and descriptions, PubAck fields, status headers, byte counts) are
//! nats-server 2.9.10's observed behaviour, and midge is held to them. Where 2.9.10 lacks
//! a 2.10 feature the test says so and checks only what 2.9.10 can show.
//!
//! Every wait has a deadline ([`WAIT`], through `within!`/`ok!`); nothing sleeps to
//! synchronise. Timing rules (ack wait, backoff, max age) are checked with short durations,
//! as "not before" lower bounds with a margin and "eventually" upper bounds generous enough
//! for a loaded two-core machine.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, message::PublishMessage, publish::PublishAck, Context};
use async_nats::Client;
use bytes::Bytes;
use futures::StreamExt;
use midge_tests::{reference_only, run_on, ServerKind, TestServer};
use serde_json::Value;

/// The deadline for any single wait.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Awaits a future for at most [`WAIT`]; a timeout panics naming the expression and line,
/// so a server that never answers is a clean failure, not a hang.
macro_rules! within {
    ($fut:expr) => {
        match tokio::time::timeout($crate::jetstream::WAIT, $fut).await {
            Ok(value) => value,
            Err(_) => panic!(
                "{}:{}: no answer within {:?}: {}",
                file!(),
                line!(),
                $crate::jetstream::WAIT,
                stringify!($fut)
            ),
        }
    };
}

/// [`within!`] for a future yielding a `Result`, panicking on `Err` with the expression.
macro_rules! ok {
    ($fut:expr) => {
        within!($fut).unwrap_or_else(|err| {
            panic!(
                "{}:{}: {} failed: {err:?}",
                file!(),
                line!(),
                stringify!($fut)
            )
        })
    };
}

/// The next item of a stream of `Result`s, within [`WAIT`]; panics (naming the line) if
/// the stream ends, yields an error or stays silent.
macro_rules! next {
    ($stream:expr) => {
        within!(futures::StreamExt::next(&mut $stream))
            .unwrap_or_else(|| panic!("{}:{}: stream ended early", file!(), line!()))
            .unwrap_or_else(|err| panic!("{}:{}: stream error: {err:?}", file!(), line!()))
    };
}

mod acks;
mod consumers;
mod crash;
mod kv;
mod limits;
mod messages;
mod objects;
mod ordered;
mod publish;
mod pull;
mod push;
mod retention;
mod streams;

/// A JetStream feature as midge lands it; each test belongs to exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feature {
    Account,
    Streams,
    Publish,
    Limits,
    Messages,
    Consumers,
    Pull,
    Push,
    Acks,
    Ordered,
    Retention,
    Kv,
    Objects,
}

impl Feature {
    const ALL: [Feature; 13] = [
        Feature::Account,
        Feature::Streams,
        Feature::Publish,
        Feature::Limits,
        Feature::Messages,
        Feature::Consumers,
        Feature::Pull,
        Feature::Push,
        Feature::Acks,
        Feature::Ordered,
        Feature::Retention,
        Feature::Kv,
        Feature::Objects,
    ];

    /// The name used in `MIDGE_JS`.
    fn tag(self) -> &'static str {
        match self {
            Feature::Account => "account",
            Feature::Streams => "streams",
            Feature::Publish => "publish",
            Feature::Limits => "limits",
            Feature::Messages => "messages",
            Feature::Consumers => "consumers",
            Feature::Pull => "pull",
            Feature::Push => "push",
            Feature::Acks => "acks",
            Feature::Ordered => "ordered",
            Feature::Retention => "retention",
            Feature::Kv => "kv",
            Feature::Objects => "objects",
        }
    }
}

/// The features a `MIDGE_JS` value enables on midge (see the module docs for the syntax).
fn midge_features(value: &str) -> Result<Vec<Feature>, String> {
    let mut enabled = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (remove, name) = match item.strip_prefix('-') {
            Some(name) => (true, name),
            None => (false, item),
        };
        let named: Vec<Feature> = match name {
            "0" | "false" => Vec::new(),
            "1" | "all" | "true" => Feature::ALL.to_vec(),
            _ => vec![Feature::ALL
                .into_iter()
                .find(|f| f.tag() == name)
                .ok_or_else(|| {
                    let tags: Vec<&str> = Feature::ALL.iter().map(|f| f.tag()).collect();
                    format!(
                        "MIDGE_JS: unknown feature {name:?}; known: all, {}",
                        tags.join(", ")
                    )
                })?],
        };
        if remove {
            enabled.retain(|f| !named.contains(f));
        } else {
            for f in named {
                if !enabled.contains(&f) {
                    enabled.push(f);
                }
            }
        }
    }
    Ok(enabled)
}

/// The servers a test of `feature` runs against: nats-server, plus midge when `MIDGE_JS`
/// enables the feature (and `MIDGE_TESTS_REFERENCE_ONLY` is not set).
/// The features midge runs when `MIDGE_JS` is not set: those its JetStream passes today.
/// CI runs with this; extend it as features land.
pub(crate) const MIDGE_DEFAULT: &str = "all";

pub(crate) fn kinds_for(feature: Feature) -> Vec<ServerKind> {
    let value = std::env::var("MIDGE_JS").unwrap_or_else(|_| MIDGE_DEFAULT.to_owned());
    let enabled = midge_features(&value).unwrap_or_else(|err| panic!("{err}"));
    if enabled.contains(&feature) && !reference_only() {
        vec![ServerKind::NatsServer, ServerKind::Midge]
    } else {
        vec![ServerKind::NatsServer]
    }
}

/// Runs `scenario` on a fresh JetStream server of every kind [`kinds_for`] `feature`
/// chooses, concurrently; a failure names the kind.
pub(crate) async fn js<F, Fut>(feature: Feature, scenario: F)
where
    F: Fn(JsServer) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let scenario = &scenario;
    run_on(kinds_for(feature), |kind| async move {
        scenario(JsServer::start(kind).await).await;
    })
    .await;
}

/// How a [`JsServer`] is told to enable JetStream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enable {
    /// `-js -sd <dir>` on the command line.
    Flags,
    /// `jetstream { store_dir: "<dir>" }` in the config file.
    ConfigBlock,
}

/// A server with JetStream enabled and its own store directory, which outlives restarts of
/// the process (see [`JsServer::restart`]) and is removed when this is dropped.
#[derive(Debug)]
pub(crate) struct JsServer {
    // Declared first: the process is killed before its store directory is removed.
    server: TestServer,
    store: tempfile::TempDir,
    enable: Enable,
    config: String,
}

impl JsServer {
    /// `kind` with `-js -sd <fresh dir>`.
    pub(crate) async fn start(kind: ServerKind) -> JsServer {
        Self::start_with(kind, Enable::Flags, "").await
    }

    /// `kind` with JetStream enabled as `enable` says on a fresh store directory, and
    /// `config` (nats-server syntax, without a `jetstream {}` block) as the rest of its
    /// config file.
    pub(crate) async fn start_with(kind: ServerKind, enable: Enable, config: &str) -> JsServer {
        let store = tempfile::tempdir().expect("create store dir");
        let server = Self::spawn(kind, store.path(), enable, config).await;
        JsServer {
            server,
            store,
            enable,
            config: config.to_owned(),
        }
    }

    async fn spawn(kind: ServerKind, store: &Path, enable: Enable, config: &str) -> TestServer {
        let dir = store.to_str().expect("store dir is UTF-8");
        match enable {
            Enable::Flags => {
                TestServer::builder(kind)
                    .config(config)
                    .arg("-js")
                    .arg("-sd")
                    .arg(dir)
                    .start()
                    .await
            }
            Enable::ConfigBlock => {
                let text = format!("jetstream {{\n  store_dir: {dir:?}\n}}\n{config}");
                TestServer::start(kind, &text).await
            }
        }
    }

    /// Kills the process (SIGKILL, no shutdown) and starts the same kind again on the same
    /// store directory and configuration.
    pub(crate) async fn restart(self) -> JsServer {
        let JsServer {
            server,
            store,
            enable,
            config,
        } = self;
        let kind = server.kind();
        drop(server);
        let server = Self::spawn(kind, store.path(), enable, &config).await;
        JsServer {
            server,
            store,
            enable,
            config,
        }
    }

    pub(crate) fn kind(&self) -> ServerKind {
        self.server.kind()
    }

    pub(crate) fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// A client logged in as `user` (password = user name) and a JetStream context on it.
    pub(crate) async fn connect_as(&self, user: &str) -> (Client, Context) {
        let client = ok!(async_nats::ConnectOptions::with_user_and_password(
            user.into(),
            user.into()
        )
        .connect(self.server.url()));
        let context = jetstream::new(client.clone());
        (client, context)
    }

    /// A client and a JetStream context on it.
    pub(crate) async fn connect(&self) -> (Client, Context) {
        let client = self.client().await;
        let context = jetstream::new(client.clone());
        (client, context)
    }

    pub(crate) async fn client(&self) -> Client {
        ok!(async_nats::connect(self.server.url()))
    }
}

/// A `$JS.API.<tail>` request with `body` as JSON (no payload for `Value::Null`); the
/// parsed response. For what the client APIs hide: exact error objects and field sets.
pub(crate) async fn api(client: &Client, tail: &str, body: Value) -> Value {
    let payload = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(serde_json::to_vec(&body).expect("serialize request"))
    };
    let reply = ok!(client.request(format!("$JS.API.{tail}"), payload));
    serde_json::from_slice(&reply.payload).unwrap_or_else(|err| {
        panic!(
            "$JS.API.{tail}: response is not JSON ({err}): {:?}",
            reply.payload
        )
    })
}

/// Asserts that an API response is exactly this error.
pub(crate) fn assert_api_error(response: &Value, code: u64, err_code: u64, description: &str) {
    assert_eq!(
        response.get("error"),
        Some(&serde_json::json!({"code": code, "err_code": err_code, "description": description})),
        "expected API error {code}/{err_code} {description:?} in {response}"
    );
}

/// Asserts that the object at `path` in `value` has at least `keys`: every field nats-server
/// 2.9.10 sends there (clients parse them; a server claiming 2.10 may send more).
pub(crate) fn assert_has_keys(value: &Value, path: &str, keys: &[&str]) {
    let object = value
        .pointer(path)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no object at {path:?} in {value}"));
    let missing: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !object.contains_key(*k))
        .collect();
    assert!(missing.is_empty(), "{path:?} lacks {missing:?}: {value}");
}

/// Asserts that an async-nats error carries the server's API error: the client shows it as
/// `<description> (code <code>, error code <err_code>)`.
pub(crate) fn assert_js_error(
    err: &impl std::fmt::Display,
    code: u64,
    err_code: u64,
    description: &str,
) {
    let text = err.to_string();
    let want = format!("{description} (code {code}, error code {err_code})");
    assert!(text.contains(&want), "expected {want:?} in error {text:?}");
}

/// Publishes and awaits the PubAck, panicking on any error.
pub(crate) async fn publish(js: &Context, subject: &str, payload: &str) -> PublishAck {
    let ack = ok!(js.publish(subject.to_string(), Bytes::from(payload.to_string())));
    ok!(ack)
}

/// Publishes a built message and returns what the PubAck future resolves to.
pub(crate) async fn send(
    js: &Context,
    subject: &str,
    message: PublishMessage,
) -> Result<PublishAck, jetstream::context::PublishError> {
    let ack = ok!(js.send_publish(subject.to_string(), message));
    within!(ack)
}

/// The next message of a core subscription, within [`WAIT`].
pub(crate) async fn next_msg(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    within!(sub.next()).expect("subscription open")
}

/// What a pull consumer has for a `no_wait` fetch of up to `max` messages: everything
/// deliverable now, and nothing when nothing is.
pub(crate) async fn fetch(consumer: &PullConsumer, max: usize) -> Vec<jetstream::Message> {
    let batch = ok!(consumer.fetch().max_messages(max).messages());
    let taken: Vec<_> = within!(batch.take(max).collect::<Vec<_>>());
    taken
        .into_iter()
        .map(|m| m.unwrap_or_else(|err| panic!("fetch: {err:?}")))
        .collect()
}

/// What a pull consumer delivers to one request for up to `max` messages that waits up to
/// `expires`: ends when `max` arrived or the request expired.
pub(crate) async fn batch(
    consumer: &PullConsumer,
    max: usize,
    expires: Duration,
) -> Vec<jetstream::Message> {
    let batch = ok!(consumer
        .batch()
        .max_messages(max)
        .expires(expires)
        .messages());
    let taken: Vec<_> = within!(batch.take(max).collect::<Vec<_>>());
    taken
        .into_iter()
        .map(|m| m.unwrap_or_else(|err| panic!("batch: {err:?}")))
        .collect()
}

/// The stream sequences of delivered messages.
pub(crate) fn stream_seqs(messages: &[jetstream::Message]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m.info().expect("JetStream reply subject").stream_sequence)
        .collect()
}

/// The payload as text.
pub(crate) fn text(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// Polls `check` (bounded, every 50 ms) until it returns `Some`, for at most `deadline`.
pub(crate) async fn eventually<T, Fut>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    let step = Duration::from_millis(50);
    let rounds = deadline.as_millis() / step.as_millis() + 1;
    for _ in 0..rounds {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() >= deadline {
            break;
        }
        tokio::time::sleep(step).await;
    }
    panic!("{what}: not within {deadline:?}")
}

#[test]
fn midge_js_values() {
    assert_eq!(midge_features(""), Ok(vec![]));
    assert_eq!(midge_features("0"), Ok(vec![]));
    assert_eq!(midge_features("1"), Ok(Feature::ALL.to_vec()));
    assert_eq!(
        midge_features("streams, kv"),
        Ok(vec![Feature::Streams, Feature::Kv])
    );
    let all_but_objects = midge_features("all,-objects").expect("valid");
    assert_eq!(all_but_objects.len(), Feature::ALL.len() - 1);
    assert!(!all_but_objects.contains(&Feature::Objects));
    assert!(midge_features("stream").is_err(), "typos are errors");
}
