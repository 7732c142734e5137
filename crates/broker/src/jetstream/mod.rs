//! JetStream: streams of stored messages, served through nats-server's `$JS.API` so that
//! the official clients work unchanged.
//!
//! - [`JetStream`] is the server's JetStream state (built from `jetstream {}` at start-up;
//!   `None` when JetStream is off): its resolved settings, server-wide usage, and one
//!   [`JsAccount`] per account with JetStream (limits, usage, streams).
//! - Streams (`stream.rs`) are internal subscribers of their account
//!   (`Subscriber::Stream`): the router queues a published message for the stream's task,
//!   which stores it and sends the PubAck.
//! - The API (`service.rs`) is one internal subscriber per account on `$JS.API.>`
//!   (`Subscriber::JsApi`) feeding one task per server; requests never run on a client's
//!   task. `api.rs` has the JSON.
//! - Consumers (`consumer.rs`) are built on streams by the consumer work.
//!
//! On disk: `<store_dir>/jetstream/<account>/streams/<stream>/meta.json` holds a file
//! stream's configuration (written to a temporary file, fsynced, renamed), next to its
//! store's files; the streams found there are recovered at start-up.

pub(crate) mod api;
pub(crate) mod consumer;
pub(crate) mod headers;
#[cfg(test)]
mod server_tests;
pub(crate) mod service;
pub(crate) mod source;
pub(crate) mod stream;
pub(crate) mod transform;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use self::api::{ApiError, Retention, Storage, StreamConfig};
use self::stream::{Limits, Republish, Stream, StreamIngest, StreamInner};
use crate::core::router::{self, Origin, Router};
use crate::core::{Account, Subscriber, Subscription};
use crate::options::{self, AccountJetStreamLimits, JetStreamSync, Options};
use crate::server::ServerInner;

/// nats-server's default memory limit when the machine's memory cannot be read.
const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;
/// nats-server's default file limit when the disk's free space cannot be read (1 TiB).
const DEFAULT_MAX_STORE: u64 = 1 << 40;

/// Why JetStream could not start.
#[derive(Debug, thiserror::Error)]
pub enum JetStreamError {
    #[error("JetStream store directory {dir}: {source}")]
    StoreDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The server's JetStream.
#[derive(Debug)]
pub(crate) struct JetStream {
    /// `<store_dir>/jetstream`.
    pub store_dir: PathBuf,
    pub max_memory: u64,
    pub max_store: u64,
    pub domain: Option<String>,
    pub sync: JetStreamSync,
    pub mem_used: AtomicU64,
    pub store_used: AtomicU64,
    pub api_total: AtomicU64,
    pub api_errors: AtomicU64,
    accounts: RwLock<BTreeMap<String, Arc<JsAccount>>>,
    /// The API task's queue (set at start), for accounts enabled later by a reload.
    api_tx: Mutex<Option<tokio::sync::mpsc::Sender<service::ApiRequest>>>,
    /// `$JS.API.>` of the accounts without JetStream: answered "not enabled for account",
    /// as nats-server does.
    disabled_api_subs: Mutex<BTreeMap<String, Vec<Arc<Subscription>>>>,
}

/// JetStream in one account.
#[derive(Debug)]
pub(crate) struct JsAccount {
    pub account: Arc<Account>,
    pub limits: RwLock<AccountJetStreamLimits>,
    pub streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    pub mem_used: AtomicU64,
    pub store_used: AtomicU64,
    pub api_total: AtomicU64,
    pub api_errors: AtomicU64,
    /// Its `$JS.API.>` subscriptions.
    api_subs: Mutex<Vec<Arc<Subscription>>>,
    /// Stream creations are one at a time per account (limits, overlap checks).
    pub create_lock: Mutex<()>,
}

impl JetStream {
    /// The JetStream of `opts`, `None` when it is off. Creates the store directory.
    pub fn new(opts: &Options) -> Result<Option<Arc<JetStream>>, JetStreamError> {
        let Some(js) = opts.jetstream_enabled() else {
            return Ok(None);
        };
        let base = match &js.store_dir {
            Some(dir) => dir.clone(),
            None => {
                warn!("Temporary storage directory used, data could be lost on system reboot");
                std::env::temp_dir().join("nats")
            }
        };
        let store_dir = base.join("jetstream");
        std::fs::create_dir_all(&store_dir).map_err(|source| JetStreamError::StoreDir {
            dir: store_dir.clone(),
            source,
        })?;
        let max_memory = js
            .max_memory
            .unwrap_or_else(|| system_memory().map_or(DEFAULT_MAX_MEMORY, |m| m / 4 * 3));
        let max_store = js
            .max_file
            .unwrap_or_else(|| disk_available(&store_dir).unwrap_or(DEFAULT_MAX_STORE));
        Ok(Some(Arc::new(JetStream {
            store_dir,
            max_memory,
            max_store,
            domain: js.domain.clone(),
            sync: js.sync,
            mem_used: AtomicU64::new(0),
            store_used: AtomicU64::new(0),
            api_total: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            accounts: RwLock::new(BTreeMap::new()),
            api_tx: Mutex::new(None),
            disabled_api_subs: Mutex::new(BTreeMap::new()),
        })))
    }

    pub fn account(&self, name: &str) -> Option<Arc<JsAccount>> {
        self.accounts.read().get(name).cloned()
    }

    pub fn accounts(&self) -> Vec<Arc<JsAccount>> {
        self.accounts.read().values().cloned().collect()
    }

    /// Bytes reserved by streams with `max_bytes` of `storage`, server-wide.
    pub fn reserved(&self, storage: Storage) -> u64 {
        self.accounts().iter().map(|a| a.reserved(storage)).sum()
    }

    fn stream_dir(&self, account: &str, stream: &str) -> PathBuf {
        self.store_dir.join(account).join("streams").join(stream)
    }
}

impl JsAccount {
    pub fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.read().get(name).cloned()
    }

    pub fn used(&self, storage: Storage) -> u64 {
        match storage {
            Storage::Memory => self.mem_used.load(Ordering::Relaxed),
            Storage::File => self.store_used.load(Ordering::Relaxed),
        }
    }

    /// Bytes reserved by the account's streams with `max_bytes` of `storage`.
    pub fn reserved(&self, storage: Storage) -> u64 {
        self.streams
            .read()
            .values()
            .map(|s| s.config())
            .filter(|c| c.storage == storage && c.max_bytes > 0)
            .map(|c| c.max_bytes.unsigned_abs())
            .sum()
    }
}

/// What a stream checks its messages against: its account's limits and the server's.
#[derive(Debug)]
pub(crate) struct StreamLimits {
    js: Arc<JetStream>,
    jsa: Arc<JsAccount>,
}

impl Limits for StreamLimits {
    fn check_store(&self, storage: Storage, bytes: u64) -> Option<ApiError> {
        let (server_used, server_max) = match storage {
            Storage::Memory => (&self.js.mem_used, self.js.max_memory),
            Storage::File => (&self.js.store_used, self.js.max_store),
        };
        if server_used.load(Ordering::Relaxed) + bytes > server_max {
            return Some(ApiError::insufficient_resources());
        }
        let limits = *self.jsa.limits.read();
        let max = match storage {
            Storage::Memory => limits.max_memory,
            Storage::File => limits.max_store,
        };
        if max >= 0 && self.jsa.used(storage) + bytes > max.unsigned_abs() {
            return Some(ApiError::account_resources_exceeded());
        }
        None
    }

    fn usage_changed(&self, storage: Storage, old: u64, new: u64) {
        if old == new {
            return;
        }
        let pairs = match storage {
            Storage::Memory => [&self.js.mem_used, &self.jsa.mem_used],
            Storage::File => [&self.js.store_used, &self.jsa.store_used],
        };
        for counter in pairs {
            if new > old {
                counter.fetch_add(new - old, Ordering::Relaxed);
            } else {
                // Saturating: a counter never wraps below zero.
                let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(old - new))
                });
            }
        }
    }

    fn domain(&self) -> Option<String> {
        self.js.domain.clone()
    }
}

/// The limits object a stream of `jsa` uses.
pub(crate) fn stream_limits(js: &Arc<JetStream>, jsa: &Arc<JsAccount>) -> Arc<StreamLimits> {
    Arc::new(StreamLimits {
        js: js.clone(),
        jsa: jsa.clone(),
    })
}

/// Starts JetStream: its accounts, the streams found on disk, the API service, the sync
/// timer. Nothing when JetStream is off.
pub(crate) fn start(srv: &Arc<ServerInner>) {
    let Some(js) = srv.jetstream.clone() else {
        return;
    };
    let opts = srv.opts();
    info!("Starting JetStream");
    info!("  Store Directory: \"{}\"", js.store_dir.display());
    info!("  Max Memory:      {}", friendly_bytes(js.max_memory));
    info!("  Max Storage:     {}", friendly_bytes(js.max_store));
    if let Some(d) = &js.domain {
        info!("  Domain:          {d}");
    }
    let (tx, rx) = tokio::sync::mpsc::channel(service::REQUEST_QUEUE);
    *js.api_tx.lock() = Some(tx);
    for name in opts.jetstream_accounts() {
        enable_account(srv, &js, &opts, &name);
    }
    let system = srv.accounts.system().map(|a| a.name.clone());
    for account in srv.accounts.all() {
        if js.account(&account.name).is_none() && Some(&account.name) != system.as_ref() {
            let subs = subscribe_api(srv, &js, &account);
            js.disabled_api_subs
                .lock()
                .insert(account.name.to_string(), subs);
        }
    }
    service::spawn(srv, js.clone(), rx);
    spawn_sync_timer(srv, &js);
    info!("JetStream started");
}

/// JetStream in account `name`: its state, its streams on disk, its API subscriptions.
fn enable_account(srv: &Arc<ServerInner>, js: &Arc<JetStream>, opts: &Options, name: &str) {
    let Some(account) = srv.accounts.get(name) else {
        return;
    };
    let limits = opts.jetstream_account_limits(name).unwrap_or_default();
    let jsa = Arc::new(JsAccount {
        account: account.clone(),
        limits: RwLock::new(limits),
        streams: RwLock::new(BTreeMap::new()),
        mem_used: AtomicU64::new(0),
        store_used: AtomicU64::new(0),
        api_total: AtomicU64::new(0),
        api_errors: AtomicU64::new(0),
        api_subs: Mutex::new(Vec::new()),
        create_lock: Mutex::new(()),
    });
    js.accounts.write().insert(name.to_string(), jsa.clone());
    recover_streams(srv, js, &jsa);
    let subs = match js.disabled_api_subs.lock().remove(name) {
        Some(subs) => subs,
        None => subscribe_api(srv, js, &account),
    };
    *jsa.api_subs.lock() = subs;
}

/// The `$JS.API.>` (and domain) subscriptions of an account.
fn subscribe_api(
    srv: &Arc<ServerInner>,
    js: &JetStream,
    account: &Arc<Account>,
) -> Vec<Arc<Subscription>> {
    let Some(tx) = js.api_tx.lock().clone() else {
        return Vec::new();
    };
    let inbox = Arc::new(service::ApiInbox::new(account.clone(), tx));
    let mut subjects = vec!["$JS.API.>".to_string()];
    if let Some(d) = &js.domain {
        subjects.push(format!("$JS.{d}.API.>"));
    }
    let mut subs = Vec::new();
    for subject in subjects {
        let sub = Subscription::new(
            Subscriber::JsApi(inbox.clone()),
            account.clone(),
            subject.as_bytes(),
            None,
            b"",
        );
        if router::subscribe(srv, &sub).is_ok() {
            subs.push(sub);
        }
    }
    subs
}

/// A reload changed the accounts: new limits are in force at once, accounts that gained
/// JetStream get it. An account that lost it keeps its streams until a restart (they are
/// not deleted by a config change), with a warning.
pub(crate) fn accounts_changed(srv: &Arc<ServerInner>, opts: &Options) {
    let Some(js) = srv.jetstream.clone() else {
        return;
    };
    for name in opts.jetstream_accounts() {
        match js.account(&name) {
            Some(jsa) => {
                *jsa.limits.write() = opts.jetstream_account_limits(&name).unwrap_or_default();
            }
            None => {
                info!("JetStream enabled for account {name}");
                enable_account(srv, &js, opts, &name);
            }
        }
    }
    for jsa in js.accounts() {
        if opts.jetstream_account_limits(&jsa.account.name).is_none() {
            warn!(
                "JetStream stays on for account {} until a restart (a reload does not remove streams)",
                jsa.account.name
            );
        }
    }
}

/// File streams are fsynced on this interval unless `sync: always`.
fn spawn_sync_timer(srv: &Arc<ServerInner>, js: &Arc<JetStream>) {
    let JetStreamSync::Interval(every) = js.sync else {
        return;
    };
    let weak = Arc::downgrade(js);
    let mut shutdown = srv.shutdown_signal();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => break,
            }
            let Some(js) = weak.upgrade() else { break };
            sync_all(&js);
        }
        if let Some(js) = weak.upgrade() {
            sync_all(&js);
        }
    });
}

/// fsyncs every file stream (the sync timer, and server shutdown).
pub(crate) fn sync_all(js: &JetStream) {
    for a in js.accounts() {
        for s in a.streams.read().values() {
            let mut inner = s.inner.lock();
            if inner.config.storage == Storage::File {
                if let Err(e) = inner.store.sync() {
                    warn!(stream = %s.name, "JetStream sync failed: {e}");
                }
            }
        }
    }
}

/// `meta.json` of a file stream.
#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    /// Unix nanoseconds.
    created: i64,
    config: StreamConfig,
}

/// Writes `meta.json` by write-temp, fsync, rename, fsync of the directory: a crash
/// leaves the old or the new file, never a torn one.
fn write_meta(dir: &Path, meta: &Meta) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_vec_pretty(meta).map_err(std::io::Error::other)?;
    let tmp = dir.join("meta.json.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join("meta.json"))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The streams of `jsa` found on disk, opened and started.
fn recover_streams(srv: &Arc<ServerInner>, js: &Arc<JetStream>, jsa: &Arc<JsAccount>) {
    let dir = js.store_dir.join(&*jsa.account.name).join("streams");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = match std::fs::read(path.join("meta.json")) {
            Ok(bytes) => bytes,
            Err(_) => continue,
        };
        let meta: Meta = match serde_json::from_slice(&meta) {
            Ok(m) => m,
            Err(e) => {
                warn!(
                    "JetStream: {}: unreadable meta.json, stream left out: {e}",
                    path.display()
                );
                continue;
            }
        };
        let name = meta.config.name.clone();
        match open_stream(srv, js, jsa, meta.config, meta.created, false) {
            Ok(s) => {
                let st = s.inner.lock().store.state();
                info!(
                    "  Restored {} messages for stream '{} > {}'",
                    st.msgs, jsa.account.name, name
                );
                consumer::recover(srv, js, jsa, &s);
            }
            Err(e) => warn!(
                "JetStream: stream '{} > {name}' not restored: {e}",
                jsa.account.name
            ),
        }
    }
}

/// Creates (or, `recovering`, reopens) a stream with a checked configuration: its store,
/// its subscriptions, its task.
pub(crate) fn open_stream(
    srv: &Arc<ServerInner>,
    js: &Arc<JetStream>,
    jsa: &Arc<JsAccount>,
    config: StreamConfig,
    created_ns: i64,
    persist: bool,
) -> Result<Arc<Stream>, ApiError> {
    let name = config.name.clone();
    let dir = (config.storage == Storage::File).then(|| js.stream_dir(&jsa.account.name, &name));
    let store: Box<dyn midge_store::Store> = match &dir {
        None => Box::new(midge_store::MemStore::new()),
        Some(dir) => Box::new(open_file_store(js, &jsa.account.name, &name, dir)?),
    };
    let mut inner = StreamInner::new(config.clone(), store)?;
    if !persist {
        inner.rebuild_dedupe(api::now_nanos());
    }
    if let (Some(dir), true) = (&dir, persist) {
        write_meta(
            dir,
            &Meta {
                created: created_ns,
                config: config.clone(),
            },
        )
        .map_err(|e| ApiError::create_failed(format!("error creating store for stream: {e}")))?;
    }
    let last = inner.store.state().last_seq;
    let bytes = inner.store.state().bytes;
    let stream = Arc::new(Stream {
        name: name.clone(),
        account: jsa.account.clone(),
        created_ns,
        inner: Mutex::new(inner),
        ingest: Arc::new(StreamIngest::default()),
        subs: Mutex::new(Vec::new()),
        last_seq: watch::channel(last).0,
        consumers: Mutex::new(BTreeMap::new()),
        dir,
        config_changed: Notify::new(),
        sources: Mutex::new(Vec::new()),
        on_disk: config.storage == Storage::File,
        sync_each_batch: config.storage == Storage::File && js.sync == JetStreamSync::Always,
    });
    let limits = stream_limits(js, jsa);
    limits.usage_changed(config.storage, 0, bytes);
    subscribe_stream(srv, &stream, &config.subjects);
    jsa.streams.write().insert(name, stream.clone());
    tokio::spawn(stream.clone().run(Arc::downgrade(srv), limits.clone()));
    source::spawn(srv, jsa, &stream, source::specs(&config)?, limits);
    Ok(stream)
}

/// The file store of a stream, in `<stream dir>/msgs` (next to `meta.json`), recovered.
/// The store is opened with an interval policy either way: with `sync_interval: always`
/// the stream fsyncs once per batch before its PubAcks (a group commit), otherwise the
/// server's sync timer does.
fn open_file_store(
    js: &JetStream,
    account: &str,
    stream: &str,
    dir: &Path,
) -> Result<midge_store::FileStore, ApiError> {
    let every = match js.sync {
        JetStreamSync::Interval(d) => d,
        JetStreamSync::Always => options::DEFAULT_JS_SYNC_INTERVAL,
    };
    let cfg = midge_store::FileStoreConfig {
        sync: midge_store::SyncPolicy::Interval(every),
        ..midge_store::FileStoreConfig::default()
    };
    let (store, report) = midge_store::FileStore::open(&dir.join("msgs"), cfg)
        .map_err(|e| ApiError::create_failed(format!("error creating store for stream: {e}")))?;
    if report.truncated_bytes > 0 || report.corrupt_records > 0 || report.meta_damaged {
        warn!(
            "JetStream stream '{account} > {stream}': recovery cut {} torn bytes, skipped {} damaged records ({} bytes){}",
            report.truncated_bytes,
            report.corrupt_records,
            report.corrupt_bytes,
            if report.meta_damaged { ", store meta damaged" } else { "" }
        );
    }
    Ok(store)
}

/// Subscribes a stream to `subjects` (replacing what it had).
fn subscribe_stream(srv: &Arc<ServerInner>, stream: &Arc<Stream>, subjects: &[String]) {
    let old: Vec<_> = std::mem::take(&mut *stream.subs.lock());
    for sub in &old {
        router::unsubscribe(srv, sub);
    }
    let mut subs = Vec::new();
    for subject in subjects {
        let sub = Subscription::new(
            Subscriber::Stream(stream.ingest.clone()),
            stream.account.clone(),
            subject.as_bytes(),
            None,
            b"",
        );
        match router::subscribe(srv, &sub) {
            Ok(()) => subs.push(sub),
            Err(e) => warn!(stream = %stream.name, "cannot subscribe to {subject}: {e}"),
        }
    }
    *stream.subs.lock() = subs;
}

/// Saves a changed configuration and puts it in force (subjects, limits, timers).
pub(crate) fn apply_update(
    srv: &Arc<ServerInner>,
    js: &Arc<JetStream>,
    jsa: &Arc<JsAccount>,
    stream: &Arc<Stream>,
    config: StreamConfig,
) -> Result<(), ApiError> {
    if let Some(dir) = &stream.dir {
        write_meta(
            dir,
            &Meta {
                created: stream.created_ns,
                config: config.clone(),
            },
        )
        .map_err(ApiError::update_failed)?;
    }
    let limits = stream_limits(js, jsa);
    let sources_before = stream.config().sources;
    let subjects_changed = {
        let mut inner = stream.inner.lock();
        let changed = inner.config.subjects != config.subjects;
        inner.set_config(config.clone())?;
        inner.enforce_limits(&*limits, None);
        changed
    };
    if subjects_changed {
        subscribe_stream(srv, stream, &config.subjects);
    }
    if config.sources != sources_before {
        source::spawn(srv, jsa, stream, source::specs(&config)?, limits);
    }
    stream.config_changed.notify_one();
    Ok(())
}

/// Deletes a stream: its subscriptions, task, consumers, messages and files.
pub(crate) fn delete_stream(
    srv: &Arc<ServerInner>,
    js: &Arc<JetStream>,
    jsa: &Arc<JsAccount>,
    stream: &Arc<Stream>,
) -> Result<(), ApiError> {
    jsa.streams.write().remove(&stream.name);
    stream.close();
    for sub in std::mem::take(&mut *stream.subs.lock()) {
        router::unsubscribe(srv, &sub);
    }
    for (_, c) in std::mem::take(&mut *stream.consumers.lock()) {
        c.stop();
    }
    let limits = stream_limits(js, jsa);
    {
        let mut inner = stream.inner.lock();
        let st = inner.store.state();
        limits.usage_changed(inner.config.storage, st.bytes, 0);
        inner
            .store
            .delete()
            .map_err(ApiError::stream_delete_failed)?;
    }
    if let Some(dir) = &stream.dir {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(ApiError::stream_delete_failed(e));
            }
        }
    }
    Ok(())
}

/// Publishes PubAcks and republished messages in `account`, as the server.
pub(crate) fn send_replies(
    srv: &Arc<ServerInner>,
    account: &Arc<Account>,
    acks: &mut Vec<(Bytes, Vec<u8>)>,
    republished: &mut Vec<Republish>,
) {
    if acks.is_empty() && republished.is_empty() {
        return;
    }
    let mut router = Router::new(srv.clone(), rand::random());
    for (reply, body) in acks.drain(..) {
        publish_with(&mut router, account, &reply, None, None, &body);
    }
    for r in republished.drain(..) {
        publish_with(
            &mut router,
            account,
            r.subject.as_bytes(),
            None,
            Some(&r.headers),
            &r.payload,
        );
    }
    router.flush(true);
}

/// What happened to a stream, for `$JS.EVENT.ADVISORY.STREAM.<CREATED|UPDATED|DELETED>`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StreamAction {
    Create,
    Update,
    Delete,
}

/// Publishes a stream advisory in the stream's account, as nats-server's
/// `JSStreamActionAdvisory`; nothing is built when nobody listens.
pub(crate) fn stream_advisory(
    srv: &Arc<ServerInner>,
    js: &JetStream,
    account: &Arc<Account>,
    stream: &str,
    action: StreamAction,
) {
    let (what, action) = match action {
        StreamAction::Create => ("CREATED", "create"),
        StreamAction::Update => ("UPDATED", "modify"),
        StreamAction::Delete => ("DELETED", "delete"),
    };
    let subject = format!("$JS.EVENT.ADVISORY.STREAM.{what}.{stream}");
    let interest = account.sublist.matches(subject.as_bytes());
    if interest.psubs.is_empty() && interest.qsubs.is_empty() {
        return;
    }
    #[derive(Serialize)]
    struct Advisory<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: String,
        timestamp: String,
        stream: &'a str,
        action: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<&'a str>,
    }
    let body = Advisory {
        kind: "io.nats.jetstream.advisory.v1.stream_action",
        id: crate::sys::random_id(22),
        timestamp: api::rfc3339_nanos(api::now_nanos()),
        stream,
        action,
        domain: js.domain.as_deref(),
    };
    let Ok(json) = serde_json::to_vec(&body) else {
        return;
    };
    let mut router = Router::new(srv.clone(), rand::random());
    publish_with(&mut router, account, subject.as_bytes(), None, None, &json);
    router.flush(true);
}

/// One message into `account` through `router` (flush it afterwards), as the server
/// publishes it (PubAcks, advisories; consumers deliver with an ack `reply`).
pub(crate) fn publish_with(
    router: &mut Router,
    account: &Arc<Account>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: Option<&[u8]>,
    payload: &[u8],
) -> bool {
    let result = account.sublist.matches(subject);
    if result.psubs.is_empty() && result.qsubs.is_empty() {
        return false;
    }
    router.route(
        account,
        &result,
        Origin::Internal,
        subject,
        reply,
        headers,
        payload,
    )
}

/// Whether two subjects (wildcards allowed) can match a common subject.
pub(crate) fn subjects_collide(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(p), Some(q)) if p == "*" || q == "*" || p == q => {}
            _ => return false,
        }
    }
}

/// nats-server's `checkStreamCfg`: defaults filled in, every rule checked.
/// `limits`: the account's JetStream limits (for `max_bytes` rules).
pub(crate) fn check_config(
    mut cfg: StreamConfig,
    limits: Option<&AccountJetStreamLimits>,
) -> Result<StreamConfig, ApiError> {
    use self::api::{
        is_valid_name, DEFAULT_DUPLICATE_WINDOW, MAX_DESCRIPTION_LEN, MAX_METADATA_LEN,
        MAX_NAME_LEN,
    };
    if !is_valid_name(&cfg.name) {
        return Err(ApiError::invalid_config(
            "stream name is required and can not contain '.', '*', '>'",
        ));
    }
    if cfg.name.contains(['/', '\\']) {
        return Err(ApiError::name_contains_path_separators());
    }
    if cfg.name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid_config(format!(
            "stream name is too long, maximum allowed is {MAX_NAME_LEN}"
        )));
    }
    if cfg.description.len() > MAX_DESCRIPTION_LEN {
        return Err(ApiError::invalid_config(format!(
            "stream description is too long, maximum allowed is {MAX_DESCRIPTION_LEN}"
        )));
    }
    let metadata_len: usize = cfg
        .metadata
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if metadata_len > MAX_METADATA_LEN {
        return Err(ApiError::invalid_config(format!(
            "stream metadata exceeds maximum size of {MAX_METADATA_LEN} bytes"
        )));
    }
    if cfg.num_replicas == 0 {
        cfg.num_replicas = 1;
    }
    if cfg.num_replicas > 5 {
        return Err(ApiError::invalid_config("maximum replicas is 5"));
    }
    if cfg.num_replicas < 0 {
        return Err(ApiError::replicas_negative());
    }
    for v in [
        &mut cfg.max_msgs,
        &mut cfg.max_msgs_per_subject,
        &mut cfg.max_bytes,
        &mut cfg.max_msg_size,
        &mut cfg.max_consumers,
    ] {
        if *v == 0 {
            *v = -1;
        }
    }
    let window_ns = i64::try_from(DEFAULT_DUPLICATE_WINDOW.as_nanos()).unwrap_or(i64::MAX);
    if cfg.duplicate_window == 0 && cfg.mirror.is_none() {
        cfg.duplicate_window = if cfg.max_age != 0 && cfg.max_age < window_ns {
            cfg.max_age
        } else {
            window_ns
        };
    }
    const MIN_NS: i64 = 100_000_000;
    if cfg.max_age > 0 && cfg.max_age < MIN_NS {
        return Err(ApiError::invalid_config("max age needs to be >= 100ms"));
    }
    if cfg.duplicate_window < 0 {
        return Err(ApiError::invalid_config(
            "duplicates window can not be negative",
        ));
    }
    if cfg.max_age != 0 && cfg.duplicate_window > cfg.max_age {
        return Err(ApiError::invalid_config(
            "duplicates window can not be larger then max age",
        ));
    }
    if cfg.duplicate_window > 0 && cfg.duplicate_window < MIN_NS {
        return Err(ApiError::invalid_config(
            "duplicates window needs to be >= 100ms",
        ));
    }
    if cfg.deny_purge && cfg.allow_rollup_hdrs {
        return Err(ApiError::invalid_config(
            "roll-ups require the purge permission",
        ));
    }
    if cfg.discard_new_per_subject {
        if cfg.discard != api::Discard::New {
            return Err(ApiError::invalid_config(
                "discard new per subject requires discard new policy to be set",
            ));
        }
        if cfg.max_msgs_per_subject <= 0 {
            return Err(ApiError::invalid_config(
                "discard new per subject requires max msgs per subject > 0",
            ));
        }
    }
    let sourced = cfg.mirror.is_some() || cfg.sources.as_ref().is_some_and(|s| !s.is_empty());
    source::specs(&cfg)?;
    if cfg.subjects.is_empty() && !sourced {
        cfg.subjects.push(cfg.name.clone());
    }
    let mut seen = std::collections::HashSet::new();
    for subj in &cfg.subjects {
        if !midge_proto::subject::is_valid_subject(subj.as_bytes()) {
            return Err(ApiError::invalid_config("invalid subject"));
        }
        if !seen.insert(subj.as_str()) {
            return Err(ApiError::invalid_config("duplicate subjects detected"));
        }
        if subj == ">" {
            if !cfg.no_ack {
                return Err(ApiError::invalid_config(
                    "capturing all subjects requires no-ack to be true",
                ));
            }
            if cfg.num_replicas != 1 {
                return Err(ApiError::invalid_config(
                    "capturing all subjects requires replicas of 1",
                ));
            }
        }
        if !cfg.no_ack {
            for namespace in ["$JS.>", "$JSC.>", "$NRG.>"] {
                if subjects_collide(subj, namespace)
                    && !midge_proto::subject::subset_match(subj.as_bytes(), b"$JS.EVENT.>")
                {
                    return Err(ApiError::invalid_config(
                        "subjects that overlap with jetstream api require no-ack to be true",
                    ));
                }
            }
            if subjects_collide(subj, "$SYS.>")
                && !midge_proto::subject::subset_match(subj.as_bytes(), b"$SYS.ACCOUNT.>")
            {
                return Err(ApiError::invalid_config(
                    "subjects that overlap with system api require no-ack to be true",
                ));
            }
        }
    }
    if let Some(l) = limits {
        let per_stream = match cfg.storage {
            Storage::Memory => l.memory_max_stream_bytes,
            Storage::File => l.store_max_stream_bytes,
        };
        if l.max_bytes_required && cfg.max_bytes <= 0 {
            return Err(ApiError::max_bytes_required());
        }
        if per_stream > 0 && cfg.max_bytes > per_stream {
            return Err(ApiError::max_stream_bytes_exceeded());
        }
    }
    for (i, a) in cfg.subjects.iter().enumerate() {
        for b in &cfg.subjects[i + 1..] {
            if subjects_collide(a, b) {
                return Err(ApiError::invalid_config(format!(
                    "subject {a:?} overlaps with {b:?}"
                )));
            }
        }
    }
    if let Some(r) = &mut cfg.republish {
        if r.src.is_empty() {
            r.src = ">".into();
        }
        if cfg.subjects.iter().any(|s| subjects_collide(&r.dest, s)) {
            return Err(ApiError::invalid_config(
                "stream configuration for republish destination forms a cycle",
            ));
        }
        if transform::Transform::new(&r.src, &r.dest).is_err() {
            return Err(ApiError::invalid_config(format!(
                "stream configuration for republish with transform from '{}' to '{}' not valid",
                r.src, r.dest
            )));
        }
    }
    if let Some(t) = &cfg.subject_transform {
        if let Err(e) = transform::Transform::new(&t.src, &t.dest) {
            return Err(ApiError::invalid_config(format!(
                "stream configuration for subject transform not valid: {e}"
            )));
        }
    }
    if cfg.retention == Retention::WorkQueue && cfg.max_consumers == 0 {
        cfg.max_consumers = -1;
    }
    Ok(cfg)
}

/// nats-server's `configUpdateCheck`: what an update may not change.
pub(crate) fn check_update(
    old: &StreamConfig,
    new: StreamConfig,
    limits: Option<&AccountJetStreamLimits>,
) -> Result<StreamConfig, ApiError> {
    let mut cfg = check_config(new, limits)?;
    if cfg.name != old.name {
        return Err(ApiError::invalid_config(
            "stream configuration name must match original",
        ));
    }
    if cfg.max_consumers != old.max_consumers {
        return Err(ApiError::invalid_config(
            "stream configuration update can not change MaxConsumers",
        ));
    }
    if cfg.storage != old.storage {
        return Err(ApiError::invalid_config(
            "stream configuration update can not change storage type",
        ));
    }
    if cfg.retention != old.retention
        && (old.retention == Retention::WorkQueue || cfg.retention == Retention::WorkQueue)
    {
        return Err(ApiError::invalid_config(
            "stream configuration update can not change retention policy to/from workqueue",
        ));
    }
    if !cfg.sealed && old.sealed {
        return Err(ApiError::invalid_config(
            "stream configuration update can not unseal a sealed stream",
        ));
    }
    if !cfg.deny_delete && old.deny_delete {
        return Err(ApiError::invalid_config(
            "stream configuration update can not cancel deny message deletes",
        ));
    }
    if !cfg.deny_purge && old.deny_purge {
        return Err(ApiError::invalid_config(
            "stream configuration update can not cancel deny purge",
        ));
    }
    if cfg.mirror != old.mirror {
        return Err(ApiError::mirror_not_updatable());
    }
    if cfg.sealed {
        cfg.max_age = 0;
        cfg.discard = api::Discard::New;
        cfg.deny_delete = true;
        cfg.deny_purge = true;
        cfg.allow_rollup_hdrs = false;
    }
    Ok(cfg)
}

/// Total memory of the machine (`/proc/meminfo`), if it can be read.
fn system_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Free space of the file system holding `dir`, as nats-server counts it (75% of what is
/// available to unprivileged users).
fn disk_available(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    let available = st.f_bavail.checked_mul(st.f_frsize)?;
    Some(available / 4 * 3)
}

/// `1.5 GB` style sizes for the start-up banner.
fn friendly_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_collide_like_nats_server() {
        assert!(subjects_collide("a.>", "a.b"));
        assert!(subjects_collide("a.*", "*.b"));
        assert!(subjects_collide(">", "x.y.z"));
        assert!(!subjects_collide("a.*", "a.b.c"));
        assert!(!subjects_collide("a.b", "a.c"));
        assert!(!subjects_collide("a", "a.b"));
    }

    fn cfg(f: impl FnOnce(&mut StreamConfig)) -> Result<StreamConfig, ApiError> {
        let mut c = StreamConfig {
            name: "S".into(),
            ..StreamConfig::default()
        };
        f(&mut c);
        check_config(c, None)
    }

    #[test]
    fn config_defaults() {
        let c = cfg(|_| {}).expect("valid");
        assert_eq!(c.subjects, ["S"]);
        assert_eq!((c.max_msgs, c.max_bytes, c.max_msg_size), (-1, -1, -1));
        assert_eq!(c.num_replicas, 1);
        assert_eq!(c.duplicate_window, 120_000_000_000);
        let c = cfg(|c| c.max_age = 1_000_000_000).expect("valid");
        assert_eq!(c.duplicate_window, 1_000_000_000);
    }

    #[test]
    fn config_rules() {
        let err = |f: fn(&mut StreamConfig)| cfg(f).expect_err("refused").description;
        assert_eq!(
            err(|c| c.name = "a.b".into()),
            "stream name is required and can not contain '.', '*', '>'"
        );
        assert_eq!(err(|c| c.max_age = 1), "max age needs to be >= 100ms");
        assert_eq!(
            err(|c| {
                c.deny_purge = true;
                c.allow_rollup_hdrs = true;
            }),
            "roll-ups require the purge permission"
        );
        assert_eq!(
            err(|c| c.discard_new_per_subject = true),
            "discard new per subject requires discard new policy to be set"
        );
        assert_eq!(
            err(|c| c.subjects = vec!["a.>".into(), "a.b".into()]),
            "subject \"a.>\" overlaps with \"a.b\""
        );
        assert_eq!(
            err(|c| c.subjects = vec!["$JS.API.>".into()]),
            "subjects that overlap with jetstream api require no-ack to be true"
        );
        assert!(cfg(|c| c.subjects = vec!["$JS.EVENT.ADVISORY.>".into()]).is_ok());
        assert_eq!(
            cfg(|c| c.num_replicas = -1).expect_err("negative").err_code,
            10133
        );
        let limits = AccountJetStreamLimits {
            max_bytes_required: true,
            ..AccountJetStreamLimits::default()
        };
        let c = StreamConfig {
            name: "S".into(),
            ..StreamConfig::default()
        };
        assert_eq!(
            check_config(c, Some(&limits))
                .expect_err("max_bytes")
                .err_code,
            10113
        );
    }

    #[test]
    fn update_rules() {
        let old = cfg(|c| c.deny_delete = true).expect("valid");
        let new = StreamConfig {
            storage: Storage::Memory,
            ..old.clone()
        };
        assert_eq!(
            check_update(&old, new, None)
                .expect_err("storage")
                .description,
            "stream configuration update can not change storage type"
        );
        let new = StreamConfig {
            deny_delete: false,
            ..old.clone()
        };
        assert!(check_update(&old, new, None).is_err());
        let new = StreamConfig {
            sealed: true,
            max_age: 300_000_000_000,
            ..old.clone()
        };
        let sealed = check_update(&old, new, None).expect("sealing");
        assert!(sealed.deny_purge && sealed.max_age == 0);
    }
}
