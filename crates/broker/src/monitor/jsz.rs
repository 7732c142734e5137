//! `/jsz` and the `jetstream` section of `/varz`, in nats-server's shapes (`JSInfo`,
//! `AccountDetail`, `StreamDetail`, `JetStreamVarz`): options `accounts`, `streams`,
//! `consumers`, `config`, `acc`, `offset`, `limit`.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use serde::Serialize;

use super::query::{Query, QueryError};
use super::rfc3339;
use crate::jetstream::api::{self, StreamConfig, StreamStateInfo};
use crate::jetstream::{JetStream, JsAccount};
use crate::options::JetStreamSync;
use crate::server::ServerInner;

/// nats-server's `JetStreamConfig` as monitoring shows it.
#[derive(Debug, Serialize)]
pub(crate) struct JsConfig {
    max_memory: u64,
    max_storage: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    store_dir: String,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    sync_interval: u64,
    #[serde(skip_serializing_if = "is_false")]
    sync_always: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    domain: Option<String>,
    compress_ok: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// nats-server's `JetStreamStats`.
#[derive(Debug, Serialize, Default)]
pub(crate) struct JsStats {
    memory: u64,
    storage: u64,
    reserved_memory: u64,
    reserved_storage: u64,
    accounts: usize,
    ha_assets: usize,
    api: api::ApiStats,
}

/// The `jetstream` section of `/varz`: empty without JetStream.
#[derive(Debug, Serialize, Default)]
pub(crate) struct JsVarz {
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<JsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<JsStats>,
}

pub(crate) fn config(js: &JetStream) -> JsConfig {
    let (sync_interval, sync_always) = match js.sync {
        JetStreamSync::Always => (0, true),
        JetStreamSync::Interval(d) => (u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), false),
    };
    JsConfig {
        max_memory: js.max_memory,
        max_storage: js.max_store,
        store_dir: js.store_dir.display().to_string(),
        sync_interval,
        sync_always,
        domain: js.domain.clone(),
        compress_ok: true,
    }
}

pub(crate) fn stats(js: &JetStream) -> JsStats {
    JsStats {
        memory: js.mem_used.load(Ordering::Relaxed),
        storage: js.store_used.load(Ordering::Relaxed),
        reserved_memory: js.reserved(api::Storage::Memory),
        reserved_storage: js.reserved(api::Storage::File),
        accounts: js.accounts().len(),
        ha_assets: 0,
        api: api::ApiStats {
            total: js.api_total.load(Ordering::Relaxed),
            errors: js.api_errors.load(Ordering::Relaxed),
        },
    }
}

pub(crate) fn varz(srv: &ServerInner) -> JsVarz {
    match &srv.jetstream {
        Some(js) => JsVarz {
            config: Some(config(js)),
            stats: Some(stats(js)),
        },
        None => JsVarz::default(),
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Jsz {
    #[serde(flatten)]
    stats: JsStats,
    server_id: String,
    now: String,
    #[serde(skip_serializing_if = "is_false")]
    disabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<JsConfig>,
    streams: usize,
    consumers: usize,
    messages: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    account_details: Vec<AccountDetail>,
    total: usize,
}

#[derive(Debug, Serialize)]
pub(crate) struct AccountDetail {
    name: String,
    id: String,
    #[serde(flatten)]
    stats: JsStats,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Serialize)]
struct StreamDetail {
    name: String,
    created: String,
    cluster: Leader,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<StreamConfig>,
    state: StreamStateInfo,
    /// `ConsumerInfo` of each consumer (`consumers=true`; their config with `config=true`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    consumer_detail: Vec<serde_json::Value>,
}

/// `cluster` of a stream detail: this server leads every stream it has.
#[derive(Debug, Serialize)]
struct Leader {
    leader: String,
}

fn flag(q: &Query, name: &'static str) -> Result<bool, QueryError> {
    match q.get(name) {
        None => Ok(false),
        Some("1" | "true" | "t" | "T" | "TRUE" | "True") => Ok(true),
        Some("0" | "false" | "f" | "F" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(QueryError::Bool {
            param: name,
            value: v.to_string(),
        }),
    }
}

fn int(q: &Query, name: &'static str) -> Result<usize, QueryError> {
    match q.get(name) {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| QueryError::Int {
            param: name,
            value: v.to_string(),
        }),
    }
}

pub(crate) fn jsz(srv: &ServerInner, q: &Query) -> Result<Jsz, QueryError> {
    let consumers_opt = flag(q, "consumers")?;
    let streams_opt = flag(q, "streams")? || consumers_opt;
    let config_opt = flag(q, "config")?;
    let account = q.get("acc").map(str::to_string);
    let accounts_opt = flag(q, "accounts")? || (streams_opt && account.is_none());
    let offset = int(q, "offset")?;
    let limit = match int(q, "limit")? {
        0 => 1024,
        n => n,
    };
    let now = rfc3339(SystemTime::now());
    let Some(js) = &srv.jetstream else {
        return Ok(Jsz {
            stats: JsStats::default(),
            server_id: srv.id.clone(),
            now,
            disabled: true,
            config: None,
            streams: 0,
            consumers: 0,
            messages: 0,
            bytes: 0,
            account_details: Vec::new(),
            total: 0,
        });
    };
    let all = js.accounts();
    let (mut streams, mut consumers, mut messages, mut bytes) = (0, 0, 0, 0);
    for a in &all {
        for s in a.streams.read().values() {
            streams += 1;
            consumers += s.consumers.lock().len();
            let st = s.inner.lock().store.state();
            messages += st.msgs;
            bytes += st.bytes;
        }
    }
    let chosen: Vec<&std::sync::Arc<JsAccount>> = match &account {
        Some(name) => all.iter().filter(|a| &*a.account.name == name).collect(),
        None if accounts_opt => all.iter().skip(offset).take(limit).collect(),
        None => Vec::new(),
    };
    let account_details = chosen
        .into_iter()
        .map(|a| account_detail(srv, js, a, streams_opt, consumers_opt, config_opt))
        .collect();
    Ok(Jsz {
        stats: stats(js),
        server_id: srv.id.clone(),
        now,
        disabled: false,
        config: Some(config(js)),
        streams,
        consumers,
        messages,
        bytes,
        account_details,
        total: all.len(),
    })
}

/// `$SYS.REQ.ACCOUNT.<acc>.JSZ`: the account's detail (`acc` in `q`), as nats-server's
/// `JszAccount`; its errors read as nats-server's.
pub(crate) fn jsz_account(srv: &ServerInner, q: &Query) -> Result<AccountDetail, String> {
    let Some(js) = &srv.jetstream else {
        return Err("jetstream not enabled".to_string());
    };
    let name = q.get("acc").unwrap_or_default();
    if srv.accounts.get(name).is_none() {
        return Err(format!("account {name:?} not found"));
    }
    let Some(a) = js.account(name) else {
        return Err(format!("account {name:?} not jetstream enabled"));
    };
    let consumers = flag(q, "consumers").map_err(|e| e.to_string())?;
    let streams = flag(q, "streams").map_err(|e| e.to_string())? || consumers;
    let config = flag(q, "config").map_err(|e| e.to_string())?;
    Ok(account_detail(srv, js, &a, streams, consumers, config))
}

fn account_detail(
    srv: &ServerInner,
    js: &JetStream,
    a: &JsAccount,
    streams: bool,
    consumers: bool,
    config: bool,
) -> AccountDetail {
    let stream_detail = if streams {
        a.streams
            .read()
            .values()
            .filter_map(|s| {
                let info = crate::jetstream::service::stream_info(js, s, None).ok()?;
                Some(StreamDetail {
                    name: s.name.clone(),
                    created: info.created,
                    cluster: Leader {
                        leader: srv.name.clone(),
                    },
                    config: config.then_some(info.config),
                    state: info.state,
                    consumer_detail: if consumers {
                        crate::jetstream::consumer::jsz_detail(s, config)
                    } else {
                        Vec::new()
                    },
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    AccountDetail {
        name: a.account.name.to_string(),
        id: a.account.name.to_string(),
        stats: JsStats {
            memory: a.mem_used.load(Ordering::Relaxed),
            storage: a.store_used.load(Ordering::Relaxed),
            reserved_memory: a.reserved(api::Storage::Memory),
            reserved_storage: a.reserved(api::Storage::File),
            accounts: 0,
            ha_assets: 0,
            api: api::ApiStats {
                total: a.api_total.load(Ordering::Relaxed),
                errors: a.api_errors.load(Ordering::Relaxed),
            },
        },
        stream_detail,
    }
}
