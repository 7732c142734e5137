//! The `$JS.API` service: one internal subscriber per JetStream account on `$JS.API.>`
//! (and `$JS.<domain>.API.>`), all feeding one task per server that answers in the
//! requester's account. A request never runs on a client's task; when the task falls
//! behind by [`REQUEST_QUEUE`] requests, further ones are dropped and counted (the
//! requester times out, as with nats-server's request queue limit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;

use super::api::{self, types, ApiError, StreamConfig, StreamInfo};
use super::stream::{api_msg, Stream};
use super::{headers, JetStream, JsAccount, StreamAction};
use crate::client::ClientShared;
use crate::core::router::Router;
use crate::core::{Account, InternalMsg};
use crate::server::ServerInner;

/// Requests waiting for the service task.
pub(crate) const REQUEST_QUEUE: usize = 10_000;

/// Requests answered before their replies are flushed.
const BATCH: usize = 128;

/// A request as the router hands it over: the account it was published in, the message,
/// and the client that sent it when it came from one (for the API audit advisory).
#[derive(Debug)]
pub(crate) struct ApiRequest {
    pub account: Arc<Account>,
    pub msg: InternalMsg,
    pub client: Option<Arc<ClientShared>>,
}

/// The subscriber behind an account's `$JS.API.>`.
#[derive(Debug)]
pub(crate) struct ApiInbox {
    account: Arc<Account>,
    tx: mpsc::Sender<ApiRequest>,
    pub dropped: AtomicU64,
}

impl ApiInbox {
    pub fn new(account: Arc<Account>, tx: mpsc::Sender<ApiRequest>) -> ApiInbox {
        ApiInbox {
            account,
            tx,
            dropped: AtomicU64::new(0),
        }
    }

    /// Hands a request to the service task; false when its queue is full.
    pub fn deliver(
        &self,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: Option<&[u8]>,
        payload: &[u8],
        client: Option<&Arc<ClientShared>>,
    ) -> bool {
        let req = ApiRequest {
            account: self.account.clone(),
            msg: InternalMsg {
                subject: Bytes::copy_from_slice(subject),
                reply: reply.map(Bytes::copy_from_slice),
                headers: headers.map(Bytes::copy_from_slice),
                payload: Bytes::copy_from_slice(payload),
            },
            client: client.cloned(),
        };
        match self.tx.try_send(req) {
            Ok(()) => true,
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// One request, as the handlers (and `consumer::api`) see it.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub srv: &'a Arc<ServerInner>,
    pub js: &'a Arc<JetStream>,
    pub jsa: &'a Arc<JsAccount>,
    /// The subject after `$JS.API.` (or `$JS.<domain>.API.`).
    pub tail: &'a str,
    #[allow(dead_code)] // For the consumer work (pull requests deliver to it).
    pub reply: &'a str,
    #[allow(dead_code)] // For the consumer work.
    pub headers: Option<&'a [u8]>,
    pub payload: &'a [u8],
}

/// What the service answers.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A JSON response; `error` counts it in the API's error statistics.
    Json { body: Vec<u8>, error: bool },
    /// A message with headers (direct get).
    Msg { headers: Vec<u8>, payload: Bytes },
    /// No answer (the requester times out, as with nats-server).
    None,
}

impl Reply {
    pub fn ok<T: Serialize>(kind: &str, body: &T) -> Reply {
        Reply::Json {
            body: api::response(kind, body),
            error: false,
        }
    }

    pub fn error(kind: &str, e: ApiError) -> Reply {
        Reply::Json {
            body: api::error_response(kind, &e),
            error: true,
        }
    }
}

/// Starts the service task.
pub(crate) fn spawn(
    srv: &Arc<ServerInner>,
    js: Arc<JetStream>,
    mut rx: mpsc::Receiver<ApiRequest>,
) {
    let weak = Arc::downgrade(srv);
    let mut shutdown = srv.shutdown_signal();
    tokio::spawn(async move {
        loop {
            let req = tokio::select! {
                r = rx.recv() => r,
                _ = shutdown.changed() => break,
            };
            let Some(req) = req else { break };
            let Some(srv) = weak.upgrade() else { break };
            // The requests already queued are answered as one batch: their replies go
            // out with one flush (one write per requester) instead of one each.
            let mut router = Router::new(srv.clone(), rand::random());
            handle(&srv, &js, req, &mut router);
            for _ in 1..BATCH {
                match rx.try_recv() {
                    Ok(req) => handle(&srv, &js, req, &mut router),
                    Err(_) => break,
                }
            }
            router.flush(true);
        }
    });
}

fn handle(srv: &Arc<ServerInner>, js: &Arc<JetStream>, req: ApiRequest, router: &mut Router) {
    let Some(reply) = req
        .msg
        .reply
        .as_ref()
        .and_then(|r| std::str::from_utf8(r).ok())
    else {
        return;
    };
    let Ok(subject) = std::str::from_utf8(&req.msg.subject) else {
        return;
    };
    let tail = match subject.strip_prefix("$JS.API.") {
        Some(t) => t,
        None => {
            let domain_prefix = js.domain.as_ref().map(|d| format!("$JS.{d}.API."));
            match domain_prefix
                .as_deref()
                .and_then(|p| subject.strip_prefix(p))
            {
                Some(t) => t,
                None => return,
            }
        }
    };
    let Some(jsa) = js.account(&req.account.name) else {
        if let Some(kind) = response_type(tail) {
            let body = api::error_response(kind, &ApiError::not_enabled_for_account());
            respond(router, &req.account, reply, None, &body);
            audit(srv, js, &req, subject, &body, router);
        }
        return;
    };
    let request = Request {
        srv,
        js,
        jsa: &jsa,
        tail,
        reply,
        headers: req.msg.headers.as_deref(),
        payload: &req.msg.payload,
    };
    let answer = dispatch(&request);
    match answer {
        Reply::Json { body, error } => {
            js.api_total.fetch_add(1, Ordering::Relaxed);
            jsa.api_total.fetch_add(1, Ordering::Relaxed);
            if error {
                js.api_errors.fetch_add(1, Ordering::Relaxed);
                jsa.api_errors.fetch_add(1, Ordering::Relaxed);
            }
            respond(router, &req.account, reply, None, &body);
            audit(srv, js, &req, subject, &body, router);
        }
        Reply::Msg { headers, payload } => {
            respond(router, &req.account, reply, Some(&headers), &payload);
        }
        Reply::None => {}
    }
}

/// Where nats-server publishes an audit of every JSON answer of the API.
const AUDIT_SUBJECT: &str = "$JS.EVENT.ADVISORY.API";

/// `$JS.EVENT.ADVISORY.API` in the requester's account (nats-server's `JSAPIAudit`): who
/// asked what and what the answer was; nothing is built when nobody listens.
fn audit(
    srv: &Arc<ServerInner>,
    js: &JetStream,
    req: &ApiRequest,
    subject: &str,
    response: &[u8],
    router: &mut Router,
) {
    let interest = req.account.sublist.matches(AUDIT_SUBJECT.as_bytes());
    if interest.psubs.is_empty() && interest.qsubs.is_empty() {
        return;
    }
    #[derive(Serialize)]
    struct Audit<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        id: String,
        timestamp: String,
        server: &'a str,
        client: Option<crate::sys::ClientInfo>,
        subject: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        request: &'a str,
        response: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        domain: Option<&'a str>,
    }
    let body = Audit {
        kind: "io.nats.jetstream.advisory.v1.api_audit",
        id: crate::sys::random_id(22),
        timestamp: api::rfc3339_nanos(api::now_nanos()),
        server: &srv.name,
        client: req
            .client
            .as_ref()
            .map(|c| crate::sys::client_info(srv, c, None)),
        subject,
        request: &String::from_utf8_lossy(&req.msg.payload),
        response: &String::from_utf8_lossy(response),
        domain: js.domain.as_deref(),
    };
    if let Ok(json) = serde_json::to_vec(&body) {
        respond(router, &req.account, AUDIT_SUBJECT, None, &json);
    }
}

/// The response type of a request, `None` for what gets no JSON answer.
fn response_type(tail: &str) -> Option<&'static str> {
    let t = tail;
    Some(match () {
        _ if t == "INFO" => types::ACCOUNT_INFO,
        _ if t == "STREAM.NAMES" => types::STREAM_NAMES,
        _ if t == "STREAM.LIST" => types::STREAM_LIST,
        _ if t.starts_with("STREAM.CREATE.") => types::STREAM_CREATE,
        _ if t.starts_with("STREAM.UPDATE.") => types::STREAM_UPDATE,
        _ if t.starts_with("STREAM.INFO.") => types::STREAM_INFO,
        _ if t.starts_with("STREAM.DELETE.") => types::STREAM_DELETE,
        _ if t.starts_with("STREAM.PURGE.") => types::STREAM_PURGE,
        _ if t.starts_with("STREAM.MSG.GET.") => types::MSG_GET,
        _ if t.starts_with("STREAM.MSG.DELETE.") => types::MSG_DELETE,
        _ if t.starts_with("CONSUMER.CREATE.") || t.starts_with("CONSUMER.DURABLE.") => {
            types::CONSUMER_CREATE
        }
        _ if t.starts_with("CONSUMER.INFO.") => types::CONSUMER_INFO,
        _ if t.starts_with("CONSUMER.NAMES.") => types::CONSUMER_NAMES,
        _ if t.starts_with("CONSUMER.LIST.") => types::CONSUMER_LIST,
        _ if t.starts_with("CONSUMER.DELETE.") => types::CONSUMER_DELETE,
        _ => return None,
    })
}

/// Routes a reply; the caller flushes `router`.
fn respond(
    router: &mut Router,
    account: &Arc<Account>,
    subject: &str,
    headers: Option<&[u8]>,
    payload: &[u8],
) {
    super::publish_with(router, account, subject.as_bytes(), None, headers, payload);
}

fn dispatch(req: &Request<'_>) -> Reply {
    let tail = req.tail;
    if tail == "INFO" {
        return account_info(req);
    }
    if let Some(op) = tail.strip_prefix("CONSUMER.") {
        return super::consumer::api(req, op);
    }
    if let Some(rest) = tail.strip_prefix("DIRECT.GET.") {
        return direct_get(req, rest);
    }
    let Some(rest) = tail.strip_prefix("STREAM.") else {
        return Reply::None;
    };
    match rest {
        "NAMES" => return stream_names(req),
        "LIST" => return stream_list(req),
        _ => {}
    }
    let (op, name) = if let Some(n) = rest.strip_prefix("MSG.GET.") {
        ("MSG.GET", n)
    } else if let Some(n) = rest.strip_prefix("MSG.DELETE.") {
        ("MSG.DELETE", n)
    } else {
        match rest.split_once('.') {
            Some(pair) => pair,
            None => return Reply::None,
        }
    };
    if name.contains('.') {
        return Reply::None;
    }
    match op {
        "CREATE" => stream_create(req, name),
        "UPDATE" => stream_update(req, name),
        "INFO" => stream_info_request(req, name),
        "DELETE" => stream_delete(req, name),
        "PURGE" => stream_purge(req, name),
        "MSG.GET" => msg_get(req, name),
        "MSG.DELETE" => msg_delete(req, name),
        _ => Reply::None,
    }
}

/// The body as `T`, with an empty body as `T::default()`.
/// (Clients send `null` for "no options" too.)
fn body<T: serde::de::DeserializeOwned + Default>(payload: &[u8]) -> Result<T, ApiError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(payload)
        .map(Option::unwrap_or_default)
        .map_err(|_| ApiError::invalid_json())
}

fn account_info(req: &Request<'_>) -> Reply {
    let jsa = req.jsa;
    let (streams, consumers) = {
        let s = jsa.streams.read();
        (
            s.len(),
            s.values().map(|x| x.consumers.lock().len()).sum::<usize>(),
        )
    };
    let info = api::AccountInfo {
        memory: jsa.mem_used.load(Ordering::Relaxed),
        storage: jsa.store_used.load(Ordering::Relaxed),
        reserved_memory: jsa.reserved(api::Storage::Memory),
        reserved_storage: jsa.reserved(api::Storage::File),
        streams: streams as u64,
        consumers: consumers as u64,
        limits: (*jsa.limits.read()).into(),
        domain: req.js.domain.clone(),
        api: api::ApiStats {
            total: jsa.api_total.load(Ordering::Relaxed),
            errors: jsa.api_errors.load(Ordering::Relaxed),
        },
    };
    Reply::ok(types::ACCOUNT_INFO, &info)
}

/// The info of a stream (`opts`: the `STREAM.INFO` request's details).
pub(crate) fn stream_info(
    js: &JetStream,
    stream: &Stream,
    opts: Option<&api::StreamInfoRequest>,
) -> Result<StreamInfo, ApiError> {
    let (mirror, sources) = match js.account(&stream.account.name) {
        Some(jsa) => super::source::info(&jsa, stream),
        None => (None, Vec::new()),
    };
    let inner = stream.inner.lock();
    let st = inner.store.state();
    let subjects = match opts.map(|o| o.subjects_filter.as_str()) {
        Some(f) if !f.is_empty() => {
            let map = inner.store.subjects_state(f);
            if map.len() > api::MAX_SUBJECT_DETAILS {
                return Err(ApiError::info_max_subjects());
            }
            Some(map.into_iter().map(|(k, v)| (k, v.msgs)).collect())
        }
        _ => None,
    };
    let deleted = opts
        .filter(|o| o.deleted_details)
        .map(|_| inner.deleted())
        .filter(|d| !d.is_empty());
    let (first_seq, first_ts) = if st.msgs == 0 {
        (st.first_seq, 0)
    } else {
        (st.first_seq, st.first_time_ns)
    };
    Ok(StreamInfo {
        config: inner.config.clone(),
        created: api::rfc3339_nanos(stream.created_ns),
        state: api::StreamStateInfo {
            messages: st.msgs,
            bytes: st.bytes,
            // An empty, never written stream starts at 0 in nats-server's answers.
            first_seq: if st.last_seq == 0 { 0 } else { first_seq },
            first_ts: api::rfc3339_nanos(first_ts),
            last_seq: st.last_seq,
            last_ts: api::rfc3339_nanos(st.last_time_ns),
            num_subjects: st.num_subjects,
            subjects,
            num_deleted: st.num_deleted,
            deleted,
            consumer_count: stream.consumers.lock().len() as u64,
        },
        domain: js.domain.clone(),
        cluster: None,
        mirror,
        sources,
        ts: api::rfc3339_nanos(api::now_nanos()),
    })
}

fn advise(req: &Request<'_>, stream: &str, action: StreamAction) {
    super::stream_advisory(req.srv, req.js, &req.jsa.account, stream, action);
}

#[derive(Serialize)]
struct CreateBody {
    #[serde(flatten)]
    info: StreamInfo,
    did_create: bool,
}

fn stream_create(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::STREAM_CREATE;
    if name.contains(['/', '\\']) {
        return Reply::error(kind, ApiError::name_contains_path_separators());
    }
    let cfg: StreamConfig = match serde_json::from_slice(req.payload) {
        Ok(c) => c,
        Err(_) => return Reply::error(kind, ApiError::invalid_json()),
    };
    if cfg.name != name {
        return Reply::error(kind, ApiError::stream_name_mismatch());
    }
    if cfg.sealed {
        return Reply::error(
            kind,
            ApiError::invalid_config("stream configuration for create can not be sealed"),
        );
    }
    if cfg.mirror_direct && cfg.mirror.is_none() {
        return Reply::error(
            kind,
            ApiError::invalid_config("stream has no mirror but does have mirror direct"),
        );
    }
    let jsa = req.jsa;
    let limits = *jsa.limits.read();
    let mut cfg = match super::check_config(cfg, Some(&limits)) {
        Ok(c) => c,
        Err(e) => return Reply::error(kind, e),
    };
    if cfg.num_replicas > 1 {
        return Reply::error(kind, ApiError::replicas_not_supported());
    }
    // A mirror serves direct gets when its origin does (nats-server's inheritance).
    let origin = cfg
        .mirror
        .as_ref()
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str());
    if let Some(origin) = origin.and_then(|n| jsa.stream(n)) {
        cfg.mirror_direct = origin.config().allow_direct;
    }
    let _one_at_a_time = jsa.create_lock.lock();
    if let Some(existing) = jsa.stream(name) {
        if existing.config() != cfg {
            return Reply::error(kind, ApiError::stream_name_exists());
        }
        return match stream_info(req.js, &existing, None) {
            // nats-server says did_create for an existing identical stream too.
            Ok(info) => Reply::ok(
                kind,
                &CreateBody {
                    info,
                    did_create: true,
                },
            ),
            Err(e) => Reply::error(kind, e),
        };
    }
    if let Some(e) = create_checks(req.js, jsa, &cfg, None) {
        return Reply::error(kind, e);
    }
    let stream = match super::open_stream(req.srv, req.js, jsa, cfg, api::now_nanos(), true) {
        Ok(s) => s,
        Err(e) => return Reply::error(kind, e),
    };
    advise(req, name, StreamAction::Create);
    match stream_info(req.js, &stream, None) {
        Ok(info) => Reply::ok(
            kind,
            &CreateBody {
                info,
                did_create: true,
            },
        ),
        Err(e) => Reply::error(kind, e),
    }
}

/// Limits and overlaps a new (or changed, `replacing`) stream must respect.
fn create_checks(
    js: &JetStream,
    jsa: &JsAccount,
    cfg: &StreamConfig,
    replacing: Option<&StreamConfig>,
) -> Option<ApiError> {
    let limits = *jsa.limits.read();
    {
        let streams = jsa.streams.read();
        if replacing.is_none()
            && limits.max_streams > 0
            && streams.len() as i64 >= limits.max_streams
        {
            return Some(ApiError::max_streams_reached());
        }
        for (other_name, other) in streams.iter() {
            if *other_name == cfg.name {
                continue;
            }
            let other_subjects = other.config().subjects;
            let overlap = cfg
                .subjects
                .iter()
                .any(|a| other_subjects.iter().any(|b| super::subjects_collide(a, b)));
            if overlap {
                return Some(ApiError::subjects_overlap());
            }
        }
    }
    if forms_cycle(jsa, cfg) {
        return Some(ApiError::invalid_config("detected cycle"));
    }
    if cfg.max_bytes > 0 {
        let old = replacing
            .filter(|o| o.storage == cfg.storage && o.max_bytes > 0)
            .map_or(0, |o| o.max_bytes.unsigned_abs());
        let add = cfg.max_bytes.unsigned_abs().saturating_sub(old);
        let (account_max, server_max, exceeded) = match cfg.storage {
            api::Storage::Memory => (
                limits.max_memory,
                js.max_memory,
                ApiError::memory_resources_exceeded(),
            ),
            api::Storage::File => (
                limits.max_store,
                js.max_store,
                ApiError::storage_resources_exceeded(),
            ),
        };
        if account_max >= 0 && jsa.reserved(cfg.storage) + add > account_max.unsigned_abs() {
            return Some(exceeded);
        }
        if js.reserved(cfg.storage) + add > server_max {
            return Some(exceeded);
        }
    }
    None
}

/// The streams a configuration copies from (mirror and sources).
fn origins(cfg: &StreamConfig) -> Vec<String> {
    cfg.mirror
        .iter()
        .chain(cfg.sources.iter().flatten())
        .filter_map(|v| v.get("name").and_then(|n| n.as_str()).map(str::to_string))
        .collect()
}

/// Whether following sources and mirrors from `cfg` leads back to it.
fn forms_cycle(jsa: &JsAccount, cfg: &StreamConfig) -> bool {
    let mut seen = std::collections::HashSet::new();
    let mut todo = origins(cfg);
    while let Some(name) = todo.pop() {
        if name == cfg.name {
            return true;
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(s) = jsa.stream(&name) {
            todo.extend(origins(&s.config()));
        }
    }
    false
}

fn stream_update(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::STREAM_UPDATE;
    let cfg: StreamConfig = match serde_json::from_slice(req.payload) {
        Ok(c) => c,
        Err(_) => return Reply::error(kind, ApiError::invalid_json()),
    };
    if cfg.name != name {
        return Reply::error(kind, ApiError::stream_name_mismatch());
    }
    let jsa = req.jsa;
    let Some(stream) = jsa.stream(name) else {
        return Reply::error(kind, ApiError::stream_not_found());
    };
    let old = stream.config();
    let limits = *jsa.limits.read();
    let cfg = match super::check_update(&old, cfg, Some(&limits)) {
        Ok(c) => c,
        Err(e) => return Reply::error(kind, e),
    };
    if cfg.num_replicas != old.num_replicas {
        return Reply::error(kind, ApiError::replicas_not_updatable());
    }
    let _one_at_a_time = jsa.create_lock.lock();
    if let Some(e) = create_checks(req.js, jsa, &cfg, Some(&old)) {
        return Reply::error(kind, e);
    }
    if let Err(e) = super::apply_update(req.srv, req.js, jsa, &stream, cfg) {
        return Reply::error(kind, e);
    }
    advise(req, name, StreamAction::Update);
    match stream_info(req.js, &stream, None) {
        Ok(info) => Reply::ok(kind, &info),
        Err(e) => Reply::error(kind, e),
    }
}

#[derive(Serialize)]
struct Paged<T: Serialize> {
    total: usize,
    offset: usize,
    limit: usize,
    #[serde(flatten)]
    body: T,
}

fn stream_info_request(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::STREAM_INFO;
    let opts: api::StreamInfoRequest = match body(req.payload) {
        Ok(o) => o,
        Err(e) => return Reply::error(kind, e),
    };
    let Some(stream) = req.jsa.stream(name) else {
        return Reply::error(kind, ApiError::stream_not_found());
    };
    match stream_info(req.js, &stream, Some(&opts)) {
        Ok(mut info) => {
            // Subject details are paged like nats-server's (offset, at most 100,000).
            let (total, limit) = match info.state.subjects.take() {
                Some(map) => {
                    let total = map.len();
                    let page: std::collections::BTreeMap<String, u64> = map
                        .into_iter()
                        .skip(opts.offset)
                        .take(api::MAX_SUBJECT_DETAILS)
                        .collect();
                    info.state.subjects = Some(page);
                    (total, api::MAX_SUBJECT_DETAILS)
                }
                None => (0, 0),
            };
            Reply::ok(
                kind,
                &Paged {
                    total,
                    offset: if total > 0 { opts.offset } else { 0 },
                    limit,
                    body: info,
                },
            )
        }
        Err(e) => Reply::error(kind, e),
    }
}

/// The account's streams, sorted, those with a subject that collides with `filter`.
fn filtered_streams(jsa: &JsAccount, filter: &str) -> Vec<Arc<Stream>> {
    jsa.streams
        .read()
        .values()
        .filter(|s| {
            filter.is_empty()
                || s.config()
                    .subjects
                    .iter()
                    .any(|subj| super::subjects_collide(subj, filter))
        })
        .cloned()
        .collect()
}

fn stream_names(req: &Request<'_>) -> Reply {
    let kind = types::STREAM_NAMES;
    let opts: api::StreamListRequest = match body(req.payload) {
        Ok(o) => o,
        Err(e) => return Reply::error(kind, e),
    };
    #[derive(Serialize)]
    struct Names {
        streams: Vec<String>,
    }
    let all = filtered_streams(req.jsa, &opts.subject);
    let streams: Vec<String> = all
        .iter()
        .skip(opts.offset)
        .take(api::NAMES_LIMIT)
        .map(|s| s.name.clone())
        .collect();
    Reply::ok(
        kind,
        &Paged {
            total: all.len(),
            offset: opts.offset,
            limit: api::NAMES_LIMIT,
            body: Names { streams },
        },
    )
}

fn stream_list(req: &Request<'_>) -> Reply {
    let kind = types::STREAM_LIST;
    let opts: api::StreamListRequest = match body(req.payload) {
        Ok(o) => o,
        Err(e) => return Reply::error(kind, e),
    };
    #[derive(Serialize)]
    struct List {
        streams: Vec<StreamInfo>,
    }
    let all = filtered_streams(req.jsa, &opts.subject);
    let streams: Vec<StreamInfo> = all
        .iter()
        .skip(opts.offset)
        .take(api::LIST_LIMIT)
        .filter_map(|s| stream_info(req.js, s, None).ok())
        .collect();
    Reply::ok(
        kind,
        &Paged {
            total: all.len(),
            offset: opts.offset,
            limit: api::LIST_LIMIT,
            body: List { streams },
        },
    )
}

#[derive(Serialize)]
struct Success {
    success: bool,
}

fn stream_delete(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::STREAM_DELETE;
    let Some(stream) = req.jsa.stream(name) else {
        return Reply::error(kind, ApiError::stream_not_found());
    };
    match super::delete_stream(req.srv, req.js, req.jsa, &stream) {
        Ok(()) => {
            advise(req, name, StreamAction::Delete);
            Reply::ok(kind, &Success { success: true })
        }
        Err(e) => Reply::error(kind, e),
    }
}

fn stream_purge(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::STREAM_PURGE;
    let opts: api::PurgeRequest = match body(req.payload) {
        Ok(o) => o,
        Err(e) => return Reply::error(kind, e),
    };
    let Some(stream) = req.jsa.stream(name) else {
        return Reply::error(kind, ApiError::stream_not_found());
    };
    if opts.seq > 0 && opts.keep > 0 {
        return Reply::error(kind, ApiError::bad_request());
    }
    if !opts.filter.is_empty() && !midge_proto::subject::is_valid_subject(opts.filter.as_bytes()) {
        return Reply::error(kind, ApiError::bad_request());
    }
    let limits = super::stream_limits(req.js, req.jsa);
    let result = {
        let mut inner = stream.inner.lock();
        if inner.config.sealed {
            Err(ApiError::sealed())
        } else if inner.config.deny_purge {
            Err(ApiError::purge_failed("stream purge not permitted"))
        } else {
            let filter = (!opts.filter.is_empty()).then_some(opts.filter.as_str());
            let seq = (opts.seq > 0).then_some(opts.seq);
            inner.purge(&*limits, filter, seq, opts.keep)
        }
    };
    #[derive(Serialize)]
    struct Purged {
        success: bool,
        purged: u64,
    }
    match result {
        Ok(n) => {
            stream.notify_stored();
            super::consumer::stream_purged(&stream);
            Reply::ok(
                kind,
                &Purged {
                    success: true,
                    purged: n,
                },
            )
        }
        Err(e) => Reply::error(kind, e),
    }
}

/// The message a get request asks for.
fn find_msg(stream: &Stream, r: &api::MsgGetRequest) -> Option<midge_store::StoredMsg> {
    let inner = stream.inner.lock();
    if !r.next_by_subj.is_empty() {
        inner
            .store
            .next_matching(r.seq.max(1), Some(&r.next_by_subj))
    } else if r.seq > 0 {
        inner.store.get(r.seq).ok()
    } else {
        inner.store.last_matching(&r.last_by_subj)
    }
}

fn msg_get(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::MSG_GET;
    if req.payload.iter().all(u8::is_ascii_whitespace) {
        return Reply::error(kind, ApiError::bad_request());
    }
    let r: api::MsgGetRequest = match serde_json::from_slice(req.payload) {
        Ok(r) => r,
        Err(_) => return Reply::error(kind, ApiError::invalid_json()),
    };
    let Some(stream) = req.jsa.stream(name) else {
        return Reply::error(kind, ApiError::stream_not_found());
    };
    let asks = [
        r.seq > 0 && r.next_by_subj.is_empty(),
        !r.last_by_subj.is_empty(),
        !r.next_by_subj.is_empty(),
    ];
    if asks.iter().filter(|a| **a).count() != 1 {
        return Reply::error(kind, ApiError::bad_request());
    }
    #[derive(Serialize)]
    struct Msg {
        message: api::ApiStoredMsg,
    }
    match find_msg(&stream, &r) {
        Some(m) => Reply::ok(
            kind,
            &Msg {
                message: api_msg(&m),
            },
        ),
        None => Reply::error(kind, ApiError::no_message_found()),
    }
}

fn msg_delete(req: &Request<'_>, name: &str) -> Reply {
    let kind = types::MSG_DELETE;
    let r: api::MsgDeleteRequest = match serde_json::from_slice(req.payload) {
        Ok(r) => r,
        Err(_) => return Reply::error(kind, ApiError::invalid_json()),
    };
    let Some(stream) = req.jsa.stream(name) else {
        return Reply::error(kind, ApiError::stream_not_found());
    };
    let limits = super::stream_limits(req.js, req.jsa);
    let result = {
        let mut inner = stream.inner.lock();
        if inner.config.sealed {
            Err(ApiError::sealed())
        } else if inner.config.deny_delete {
            Err(ApiError::msg_delete_failed("message delete not permitted"))
        } else {
            let st = inner.store.state();
            let storage = inner.config.storage;
            match inner.remove_changing_usage(&*limits, r.seq, !r.no_erase) {
                Ok(true) => Ok(()),
                // What nats-server's stores say: the file store tells a sequence past the
                // end, and one below the first, from a gap; the memory store says "not
                // found" for all.
                Ok(false) | Err(midge_store::StoreError::NotFound) => Err(match storage {
                    api::Storage::File if r.seq > st.last_seq => {
                        ApiError::msg_delete_failed("stream store EOF")
                    }
                    api::Storage::File if r.seq < st.first_seq => {
                        ApiError::msg_delete_failed("no message found")
                    }
                    _ => ApiError::sequence_not_found(r.seq),
                }),
                Err(e) => Err(ApiError::msg_delete_failed(e)),
            }
        }
    };
    match result {
        Ok(()) => Reply::ok(kind, &Success { success: true }),
        Err(e) => Reply::error(kind, e),
    }
}

/// `DIRECT.GET.<stream>` (JSON body) and `DIRECT.GET.<stream>.<subject>` (last message of
/// the subject): the message itself with `Nats-Stream`, `Nats-Subject`, `Nats-Sequence`
/// and `Nats-Time-Stamp` headers, or a status (404 not found, 408 bad request). Streams
/// without `allow_direct` do not answer, as in nats-server.
fn direct_get(req: &Request<'_>, rest: &str) -> Reply {
    let (name, subject) = match rest.split_once('.') {
        Some((n, s)) => (n, Some(s)),
        None => (rest, None),
    };
    let Some(stream) = req.jsa.stream(name) else {
        return Reply::None;
    };
    {
        let inner = stream.inner.lock();
        if !inner.config.allow_direct && !inner.config.mirror_direct {
            return Reply::None;
        }
    }
    let status = |code, text| Reply::Msg {
        headers: headers::status(code, text),
        payload: Bytes::new(),
    };
    let empty = req.payload.iter().all(u8::is_ascii_whitespace);
    let r = match subject {
        Some(s) => {
            if !empty {
                return status(408, "Bad Request");
            }
            api::MsgGetRequest {
                last_by_subj: s.to_string(),
                ..api::MsgGetRequest::default()
            }
        }
        None => {
            if empty {
                return status(408, "Empty Request");
            }
            let r: api::MsgGetRequest = match serde_json::from_slice(req.payload) {
                Ok(r) => r,
                Err(_) => return status(408, "Malformed Request"),
            };
            if r.seq == 0 && r.last_by_subj.is_empty() && r.next_by_subj.is_empty() {
                return status(408, "Empty Request");
            }
            if (r.seq > 0 && !r.last_by_subj.is_empty())
                || (!r.last_by_subj.is_empty() && !r.next_by_subj.is_empty())
            {
                return status(408, "Bad Request");
            }
            r
        }
    };
    let Some(m) = find_msg(&stream, &r) else {
        return status(404, "Message Not Found");
    };
    let mut h = headers::append(
        m.headers.as_deref().filter(|h| !h.is_empty()),
        headers::STREAM,
        &stream.name,
    );
    h = headers::append(Some(&h), headers::SUBJECT, &m.subject);
    h = headers::append(Some(&h), headers::SEQUENCE, &m.seq.to_string());
    h = headers::append(
        Some(&h),
        headers::TIME_STAMP,
        &api::rfc3339_nanos(m.time_ns),
    );
    Reply::Msg {
        headers: h,
        payload: m.payload,
    }
}
