//! `$JS.API.CONSUMER.>`: create (three subject forms), info, delete, names, list, and the
//! pull requests of `MSG.NEXT`, with nats-server's checks in its order (the first failing
//! check is the error a client sees).

use std::sync::Arc;

use serde::Deserialize;

use super::config::{
    is_valid_name, ConsumerAction, ConsumerConfig, CreateConsumerRequest, DeliverPolicy, Retention,
    StreamFacts, MAX_NAME_LEN,
};
use super::engine::Engine;
use super::errors::{self, ApiError};
use super::info::{self, advisory, ConsumerInfo, ListResponse, NamesResponse};
use super::persist;
use super::runtime::{self, Consumer, Start};
use super::time::{format_rfc3339, now_ns};
use crate::jetstream::api::{self as jsapi, Storage};
use crate::jetstream::service::{Reply, Request};
use crate::jetstream::stream::Stream;

/// Answers one `$JS.API.CONSUMER.<op>` request (`op` is the subject after `CONSUMER.`).
pub(crate) fn api(req: &Request<'_>, op: &str) -> Reply {
    let tokens: Vec<&str> = op.split('.').collect();
    match tokens.as_slice() {
        ["CREATE", stream] => create(req, stream, None, None, false),
        ["CREATE", stream, consumer, filter @ ..] => {
            let filter = (!filter.is_empty()).then(|| filter.join("."));
            create(req, stream, Some(consumer), filter, false)
        }
        ["DURABLE", "CREATE", stream, durable] => create(req, stream, Some(durable), None, true),
        ["DURABLE", "CREATE", ..] => {
            Reply::error(info::CREATE_RESPONSE, errors::durable_name_not_in_subject())
        }
        ["INFO", stream, consumer] => consumer_info(req, stream, consumer),
        ["DELETE", stream, consumer] => delete(req, stream, consumer),
        ["NAMES", stream] => names(req, stream),
        ["LIST", stream] => list(req, stream),
        ["MSG", "NEXT", stream, consumer] => next(req, stream, consumer),
        ["LEADER", "STEPDOWN", _, _] => Reply::error(
            "io.nats.jetstream.api.v1.consumer_leader_stepdown_response",
            ApiError::new(503, 10010, "JetStream clustering support required"),
        ),
        _ => Reply::None,
    }
}

/// What a consumer's checks need to know of its stream.
fn facts(stream: &Stream) -> (StreamFacts, crate::jetstream::api::StreamConfig) {
    let cfg = stream.config();
    let facts = StreamFacts {
        subjects: cfg.subjects.clone(),
        external: cfg.mirror.is_some() || cfg.sources.as_ref().is_some_and(|s| !s.is_empty()),
        retention: match cfg.retention {
            jsapi::Retention::Limits => Retention::Limits,
            jsapi::Retention::Interest => Retention::Interest,
            jsapi::Retention::WorkQueue => Retention::WorkQueue,
        },
        replicas: cfg.num_replicas,
        limit_max_ack_pending: cfg.consumer_limits.max_ack_pending,
        limit_inactive_threshold: cfg.consumer_limits.inactive_threshold,
    };
    (facts, cfg)
}

/// Whether a request body counts as empty (nothing, `{}`, or an empty JSON object).
fn is_empty_request(body: &[u8]) -> bool {
    let b = body.trim_ascii();
    if b.is_empty() || b == b"{}" {
        return true;
    }
    matches!(
        serde_json::from_slice::<serde_json::Value>(b),
        Ok(serde_json::Value::Object(m)) if m.is_empty()
    )
}

fn create_error(e: ApiError) -> Reply {
    Reply::error(info::CREATE_RESPONSE, e)
}

fn create(
    req: &Request<'_>,
    stream_name: &str,
    consumer_name: Option<&str>,
    filter: Option<String>,
    legacy_durable: bool,
) -> Reply {
    let mut request: CreateConsumerRequest = match serde_json::from_slice(req.payload) {
        Ok(r) => r,
        Err(_) => return create_error(errors::invalid_json()),
    };
    if stream_name != request.stream {
        return create_error(errors::stream_mismatch());
    }
    if let Some(name) = consumer_name {
        if name.contains(['\\', '/']) {
            return create_error(errors::name_contains_path_separators());
        }
    }
    let cfg = &mut request.config;
    if legacy_durable {
        if cfg.durable.is_empty() {
            return create_error(errors::durable_name_not_set());
        }
        if Some(cfg.durable.as_str()) != consumer_name {
            return create_error(errors::durable_name_not_match_subject());
        }
    } else if let Some(name) = consumer_name {
        if !cfg.durable.is_empty() && cfg.durable != name {
            return create_error(errors::durable_name_not_match_subject());
        }
        cfg.name = name.to_string();
    } else if !cfg.durable.is_empty() {
        return create_error(errors::ephemeral_with_durable_name());
    }
    if filter.is_some() && !cfg.filter_subjects.is_empty() {
        return create_error(errors::multiple_filters_not_allowed());
    }
    if let Some(f) = &filter {
        if &cfg.filter_subject != f {
            return create_error(errors::create_filter_subject_mismatch());
        }
    }
    if cfg.replicas > 1 {
        return create_error(errors::replicas_not_supported());
    }
    let Some(stream) = req.jsa.stream(stream_name) else {
        return create_error(errors::stream_not_found());
    };
    match add_consumer(req, &stream, request.config, request.action) {
        Ok(info) => Reply::ok(info::CREATE_RESPONSE, &info),
        Err(e) => create_error(e),
    }
}

/// nats-server's `addConsumerWithAction` for one server. Returns the consumer's info as
/// it stood when created (before its task delivered anything) or updated.
fn add_consumer(
    req: &Request<'_>,
    stream: &Arc<Stream>,
    mut cfg: ConsumerConfig,
    action: ConsumerAction,
) -> Result<ConsumerInfo, ApiError> {
    let (facts, scfg) = facts(stream);
    let account_limits = *req.jsa.limits.read();
    cfg.set_defaults(&facts);
    if cfg.ack_policy != super::config::AckPolicy::None
        && cfg.max_ack_pending == super::config::DEFAULT_MAX_ACK_PENDING
        && account_limits.max_ack_pending > 0
        && account_limits.max_ack_pending < cfg.max_ack_pending
    {
        cfg.max_ack_pending = account_limits.max_ack_pending;
    }
    cfg.check(&facts)?;
    if account_limits.max_ack_pending > 0 && cfg.max_ack_pending > account_limits.max_ack_pending {
        return Err(ApiError::new(
            400,
            10121,
            format!(
                "consumer max ack pending exceeds system limit of {}",
                account_limits.max_ack_pending
            ),
        ));
    }
    let wanted = if cfg.is_durable() {
        Some(cfg.durable.clone())
    } else if !cfg.name.is_empty() {
        Some(cfg.name.clone())
    } else {
        None
    };
    if let Some(name) = &wanted {
        let existing = stream.consumers.lock().get(name).cloned();
        if let Some(eo) = existing {
            let current = eo.config();
            if action == ConsumerAction::Create {
                // Compared as the request came, before the ephemeral default is added.
                let mut asked = cfg.clone();
                asked.set_ephemeral_threshold();
                if asked != current {
                    return Err(errors::consumer_already_exists());
                }
            }
            if facts.retention == Retention::WorkQueue
                && !partition_unique(stream, name, &cfg.filters())
            {
                return Err(errors::wq_consumer_not_unique());
            }
            let mut new = cfg;
            new.set_ephemeral_threshold();
            if eo.is_push_bound()
                && current.deliver_subject != new.deliver_subject
                && !current.deliver_subject.is_empty()
                && !new.deliver_subject.is_empty()
            {
                return Err(errors::consumer_name_exists());
            }
            current.check_update(&new)?;
            if current != new {
                eo.update(new, stream);
            }
            return Ok(eo.info(stream));
        }
    }
    if action == ConsumerAction::Update {
        return Err(errors::consumer_does_not_exist());
    }
    let mut max = scfg.max_consumers;
    if max <= 0 || (account_limits.max_consumers > 0 && account_limits.max_consumers < max) {
        max = account_limits.max_consumers;
    }
    if max > 0 && stream.consumers.lock().len() as i64 >= max {
        return Err(errors::max_consumers_limit());
    }
    if facts.retention == Retention::WorkQueue && !cfg.direct {
        if cfg.ack_policy != super::config::AckPolicy::Explicit {
            return Err(errors::wq_requires_explicit_ack());
        }
        if !stream.consumers.lock().is_empty() {
            let filters = cfg.filters();
            if filters.is_empty() {
                return Err(errors::wq_multiple_unfiltered());
            }
            if !partition_unique(stream, wanted.as_deref().unwrap_or(""), &filters) {
                return Err(errors::wq_consumer_not_unique());
            }
        }
        if cfg.deliver_policy != DeliverPolicy::All {
            return Err(errors::wq_consumer_not_deliver_all());
        }
    }
    let name = match &wanted {
        Some(n) => {
            if cfg.is_durable() && n.len() > MAX_NAME_LEN {
                return Err(errors::name_too_long(MAX_NAME_LEN));
            }
            n.clone()
        }
        None => loop {
            let n = crate::sys::random_id(8);
            if !stream.consumers.lock().contains_key(&n) {
                break n;
            }
        },
    };
    if !is_valid_name(&name) {
        return Err(errors::bad_durable_name());
    }
    cfg.set_ephemeral_threshold();
    let now = now_ns();
    let dir = match (&stream.dir, cfg.is_durable() && !cfg.memory_storage) {
        (Some(d), true) if scfg.storage == Storage::File => Some(persist::consumer_dir(d, &name)),
        _ => None,
    };
    if let Some(dir) = &dir {
        let meta = persist::Meta {
            created: now,
            config: cfg.clone(),
        };
        persist::write_meta(dir, &meta).map_err(|e| errors::store_failed(&e.to_string()))?;
    }
    let (engine, info) = {
        let inner = stream.inner.lock();
        let mut engine = Engine::new(
            &stream.name,
            &name,
            cfg,
            &*inner.store,
            scfg.max_msgs_per_subject,
            now,
        );
        let snap = engine.snapshot(&*inner.store, now, &|_| false);
        let info = ConsumerInfo::new(&stream.name, &name, now, &engine.cfg, &snap, false, now);
        (engine, info)
    };
    let consumer = launch(req, stream, engine, now, dir, facts.retention);
    {
        let mut list = stream.consumers.lock();
        if list.contains_key(&name) {
            // Created concurrently under the same name: keep the first.
            drop(list);
            consumer.stop();
            return Err(errors::consumer_name_exists());
        }
        list.insert(name.clone(), consumer.clone());
    }
    advise_action(req, &stream.name, &name, "create");
    Ok(info)
}

/// Starts the task of a consumer of `stream`.
fn launch(
    req: &Request<'_>,
    stream: &Arc<Stream>,
    engine: Engine,
    created_ns: i64,
    dir: Option<std::path::PathBuf>,
    retention: Retention,
) -> Arc<Consumer> {
    runtime::start(
        Start {
            srv: req.srv.clone(),
            stream: stream.clone(),
            limits: crate::jetstream::stream_limits(req.js, req.jsa),
            retention,
            domain: req.js.domain.clone().unwrap_or_default(),
        },
        engine,
        created_ns,
        dir,
    )
}

/// Work-queue streams: no two consumers may want the same subject.
fn partition_unique(stream: &Stream, name: &str, filters: &[String]) -> bool {
    let others: Vec<Arc<Consumer>> = stream
        .consumers
        .lock()
        .iter()
        .filter(|(n, _)| n.as_str() != name)
        .map(|(_, c)| c.clone())
        .collect();
    for c in others {
        let theirs = c.filter_subjects();
        if theirs.is_empty() {
            return false;
        }
        for a in filters {
            if theirs.iter().any(|b| super::config::subjects_collide(a, b)) {
                return false;
            }
        }
    }
    true
}

fn advise_action(req: &Request<'_>, stream: &str, consumer: &str, action: &'static str) {
    let prefix = if action == "create" {
        advisory::CREATED_PREFIX
    } else {
        advisory::DELETED_PREFIX
    };
    let subject = format!("{prefix}.{stream}.{consumer}");
    let account = &req.jsa.account;
    if !runtime::has_interest(account, &subject) {
        return;
    }
    let domain = req.js.domain.clone().unwrap_or_default();
    let body = info::to_json(&advisory::Action {
        kind: advisory::ACTION,
        id: crate::sys::random_id(22),
        timestamp: format_rfc3339(now_ns()),
        stream,
        consumer,
        action,
        domain: &domain,
    });
    let mut router = crate::core::router::Router::new(req.srv.clone(), rand::random());
    crate::jetstream::publish_with(&mut router, account, subject.as_bytes(), None, None, &body);
    router.flush(true);
}

fn lookup(
    req: &Request<'_>,
    stream: &str,
    consumer: &str,
) -> Result<(Arc<Stream>, Arc<Consumer>), ApiError> {
    let s = req
        .jsa
        .stream(stream)
        .ok_or_else(errors::stream_not_found)?;
    let c = s
        .consumers
        .lock()
        .get(consumer)
        .cloned()
        .filter(|c| !c.is_closed())
        .ok_or_else(errors::consumer_not_found)?;
    Ok((s, c))
}

fn consumer_info(req: &Request<'_>, stream: &str, consumer: &str) -> Reply {
    if !is_empty_request(req.payload) {
        return Reply::error(info::INFO_RESPONSE, errors::not_empty_request());
    }
    match lookup(req, stream, consumer) {
        Ok((s, c)) => Reply::ok(info::INFO_RESPONSE, &c.info(&s)),
        Err(e) => Reply::error(info::INFO_RESPONSE, e),
    }
}

fn delete(req: &Request<'_>, stream: &str, consumer: &str) -> Reply {
    if !is_empty_request(req.payload) {
        return Reply::error(info::DELETE_RESPONSE, errors::not_empty_request());
    }
    match lookup(req, stream, consumer) {
        Ok((s, c)) => {
            runtime::remove_from_stream(&s, &c);
            c.delete();
            Reply::ok(
                info::DELETE_RESPONSE,
                &serde_json::json!({ "success": true }),
            )
        }
        Err(e) => Reply::error(info::DELETE_RESPONSE, e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PagedRequest {
    offset: i64,
}

fn offset(body: &[u8]) -> Result<usize, ApiError> {
    if is_empty_request(body) {
        return Ok(0);
    }
    let r: PagedRequest = serde_json::from_slice(body).map_err(|_| errors::invalid_json())?;
    Ok(usize::try_from(r.offset).unwrap_or(0))
}

/// An error of names or list: nats-server sends the whole (empty) page along.
fn paged_error(kind: &str, error: ApiError) -> Reply {
    #[derive(serde::Serialize)]
    struct Body {
        error: ApiError,
        total: usize,
        offset: usize,
        limit: usize,
        consumers: [u8; 0],
    }
    Reply::Json {
        body: crate::jetstream::api::response(
            kind,
            &Body {
                error,
                total: 0,
                offset: 0,
                limit: 0,
                consumers: [],
            },
        ),
        error: true,
    }
}

fn sorted_consumers(stream: &Stream) -> Vec<Arc<Consumer>> {
    stream
        .consumers
        .lock()
        .values()
        .filter(|c| !c.is_closed())
        .cloned()
        .collect()
}

fn names(req: &Request<'_>, stream: &str) -> Reply {
    let offset = match offset(req.payload) {
        Ok(o) => o,
        Err(e) => return paged_error(info::NAMES_RESPONSE, e),
    };
    let Some(s) = req.jsa.stream(stream) else {
        return paged_error(info::NAMES_RESPONSE, errors::stream_not_found());
    };
    let all = sorted_consumers(&s);
    let total = all.len();
    let offset = offset.min(total);
    let consumers = all[offset..]
        .iter()
        .take(info::NAMES_LIMIT)
        .map(|c| c.name.clone())
        .collect();
    let body = NamesResponse {
        total,
        offset,
        limit: info::NAMES_LIMIT,
        consumers,
    };
    Reply::ok(info::NAMES_RESPONSE, &body)
}

fn list(req: &Request<'_>, stream: &str) -> Reply {
    let offset = match offset(req.payload) {
        Ok(o) => o,
        Err(e) => return paged_error(info::LIST_RESPONSE, e),
    };
    let Some(s) = req.jsa.stream(stream) else {
        return paged_error(info::LIST_RESPONSE, errors::stream_not_found());
    };
    let all = sorted_consumers(&s);
    let total = all.len();
    let offset = offset.min(total);
    let consumers: Vec<ConsumerInfo> = all[offset..]
        .iter()
        .take(info::LIST_LIMIT)
        .map(|c| c.info(&s))
        .collect();
    let body = ListResponse {
        total,
        offset,
        limit: info::LIST_LIMIT,
        consumers,
    };
    Reply::ok(info::LIST_RESPONSE, &body)
}

/// A pull request: handed to the consumer's task. Without such a consumer nobody would
/// have received it on nats-server, so the requester gets the no-responders status.
fn next(req: &Request<'_>, stream: &str, consumer: &str) -> Reply {
    let found = req
        .jsa
        .stream(stream)
        .and_then(|s| s.consumers.lock().get(consumer).cloned())
        .filter(|c| !c.is_closed());
    match found {
        Some(c) if !req.reply.is_empty() => {
            let subject = format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}");
            c.inject(&subject, Some(req.reply), req.payload);
            Reply::None
        }
        Some(_) => Reply::None,
        None if req.reply.is_empty() => Reply::None,
        None => Reply::Msg {
            headers: b"NATS/1.0 503\r\n\r\n".to_vec(),
            payload: bytes::Bytes::new(),
        },
    }
}

/// Brings back the durable consumers saved under a recovered file stream.
pub(crate) fn recover(
    srv: &Arc<crate::server::ServerInner>,
    js: &Arc<crate::jetstream::JetStream>,
    jsa: &Arc<crate::jetstream::JsAccount>,
    stream: &Arc<Stream>,
) {
    let Some(dir) = stream.dir.clone() else {
        return;
    };
    let (facts, scfg) = facts(stream);
    for r in persist::load_all(&dir) {
        let mut cfg = r.meta.config;
        cfg.set_defaults(&facts);
        if let Err(e) = cfg.check(&facts) {
            tracing::warn!(
                "JetStream: consumer '{} > {}' not restored: {}",
                stream.name,
                r.name,
                e.description
            );
            continue;
        }
        let now = now_ns();
        let engine = {
            let inner = stream.inner.lock();
            match &r.state {
                Some(state) => {
                    Engine::restore(&stream.name, &r.name, cfg, state, &*inner.store, now)
                }
                None => Engine::new(
                    &stream.name,
                    &r.name,
                    cfg,
                    &*inner.store,
                    scfg.max_msgs_per_subject,
                    now,
                ),
            }
        };
        let consumer = runtime::start(
            Start {
                srv: srv.clone(),
                stream: stream.clone(),
                limits: crate::jetstream::stream_limits(js, jsa),
                retention: facts.retention,
                domain: js.domain.clone().unwrap_or_default(),
            },
            engine,
            r.meta.created,
            Some(persist::consumer_dir(&dir, &r.name)),
        );
        stream.consumers.lock().insert(r.name.clone(), consumer);
        tracing::info!(
            "  Restored consumer '{} > {} > {}'",
            jsa.account.name,
            stream.name,
            r.name
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_requests() {
        for b in [&b""[..], b"{}", b" { } ", b"  "] {
            assert!(is_empty_request(b), "{:?}", b);
        }
        for b in [&b"{\"a\":1}"[..], b"[]", b"x"] {
            assert!(!is_empty_request(b), "{:?}", b);
        }
    }
}
