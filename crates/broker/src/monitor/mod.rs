//! HTTP monitoring, compatible with nats-server's, so the tools operators already run
//! against nats-server (the Prometheus exporter, nats-top, dashboards, Kubernetes probes)
//! work against midge unchanged.
//!
//! Endpoints: `/` (index), `/healthz`, `/varz`, `/connz`, `/subsz`, `/routez`, `/leafz`,
//! `/accountz`
//! (JSON, field names, JSON types and units as nats-server's) and `/metrics` (Prometheus
//! text, see [`metrics`]). Every handler is a pure function from the server state and the
//! query to a [`Reply`], so they are tested without sockets; this file only adds HTTP.
//!
//! The HTTP/1.1 layer is hyper: request parsing, keep-alive, pipelining, `HEAD` and header
//! timeouts are exactly where a hand-written server gets things subtly wrong, and a monitor
//! port is often exposed further than the client port (ingress, scrapers), so it should
//! face arbitrary input with a parser that has been fuzzed and used in production.
//!
//! With `https_port` instead of `http_port` the same service runs over tokio-rustls, with the
//! `tls {}` certificate as it is when each connection is accepted (so a reload's new
//! certificate serves new connections) and, as nats-server, no client certificate asked.

mod connz;
mod jsz;
mod metrics;
mod query;
mod subsz;
mod varz;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info};

pub(crate) use connz::{sub_details, ClosedConn, ClosedRing, ConnMeta};
pub(crate) use query::Query;
pub(crate) use varz::resident_memory;

use crate::error::Error;
use crate::server::ServerInner;
use query::QueryError;

/// Monitoring connections open at once; past this a new one is closed at accept. Every
/// connection is its own task and idle ones are closed by [`HEADER_READ_TIMEOUT`], so the
/// cap only bounds memory: it must stay far above what idle or slow sockets can hold open
/// in that time, or probes would be refused.
const MAX_HTTP_CONNS: usize = 1024;
/// A monitoring connection is closed after this long, so an idle keep-alive client cannot
/// hold one of the slots forever (scrapers simply reconnect).
const MAX_HTTP_CONN_LIFE: Duration = Duration::from_secs(60);
/// How long a connection may take to send a request's headers; hyper starts counting when
/// it starts reading, which for a new or idle keep-alive connection is at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The running monitor; dropping it stops the listener and every monitoring connection.
#[derive(Debug)]
pub(crate) struct Monitor {
    addr: SocketAddr,
    https: bool,
    task: JoinHandle<()>,
}

impl Monitor {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// True when served over HTTPS (`https_port`).
    pub fn is_https(&self) -> bool {
        self.https
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the handlers read besides the server itself.
#[derive(Debug)]
pub(crate) struct MonitorState {
    srv: Arc<ServerInner>,
    http_addr: SocketAddr,
    /// Served over HTTPS: `/varz` reports the port as `https_port`.
    https: bool,
    /// Requests per endpoint, reported as `/varz` `http_req_stats`.
    req_stats: Mutex<BTreeMap<&'static str, u64>>,
    /// The previous CPU sample, so `/varz` `cpu` is the usage since the last request.
    cpu_sample: Mutex<Option<varz::CpuSample>>,
}

/// Binds the monitoring port when `http_port` or `https_port` is set and starts serving it.
pub(crate) async fn start(srv: &Arc<ServerInner>) -> Result<Option<Monitor>, Error> {
    let opts = srv.opts();
    let (port, https) = match (opts.http_port, opts.https_port) {
        (Some(http), Some(https)) => {
            return Err(Error::Config(format!(
                "http_port ({http}) and https_port ({https}) cannot both be set: choose one"
            )))
        }
        (Some(port), None) => (port, false),
        (None, Some(port)) => (port, true),
        (None, None) => return Ok(None),
    };
    if https && srv.tls.read().is_none() {
        return Err(Error::Config(
            "https_port requires TLS: a tls {} block with cert_file and key_file".into(),
        ));
    }
    let bind = SocketAddr::new(opts.http_host.unwrap_or(opts.host), port);
    let listener =
        crate::server::listen(bind).map_err(|source| Error::Bind { addr: bind, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr: bind, source })?;
    // nats-server's exact lines: tools and test harnesses parse the port out of them.
    if https {
        info!("Starting https monitor on {}", addr);
    } else {
        info!("Starting http monitor on {}", addr);
    }
    let state = Arc::new(MonitorState {
        srv: srv.clone(),
        http_addr: addr,
        https,
        req_stats: Mutex::new(BTreeMap::new()),
        cpu_sample: Mutex::new(None),
    });
    let task = tokio::spawn(accept_loop(state, listener));
    Ok(Some(Monitor { addr, https, task }))
}

async fn accept_loop(state: Arc<MonitorState>, listener: TcpListener) {
    // Owning the connections here means aborting this task ends them all.
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_HTTP_CONNS));
    let mut backoff = Duration::from_millis(10);
    loop {
        while conns.try_join_next().is_some() {}
        // Never wait for a slot before accepting: a health probe must not queue in the
        // kernel behind idle sockets.
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(e) => {
                error!("Error accepting monitoring connection: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            debug!("monitoring connection refused: {MAX_HTTP_CONNS} already open");
            continue;
        };
        // Read at accept time, so a reload's new certificate serves new connections.
        let tls = if state.https {
            match &*state.srv.tls.read() {
                Some(t) => Some((TlsAcceptor::from(t.monitor_config.clone()), t.timeout)),
                // TLS cannot be removed while https_port is set (reload refuses it), but a
                // connection without it must never be served in plain text.
                None => continue,
            }
        } else {
            None
        };
        let state = state.clone();
        conns.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve(state, stream).await,
                Some((acceptor, handshake)) => {
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve(state, stream).await,
                        Ok(Err(e)) => debug!("monitoring TLS handshake failed: {e}"),
                        Err(_) => debug!("monitoring TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection, plain or TLS, until the client leaves or its time is up.
async fn serve<S>(state: Arc<MonitorState>, stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
        let reply = handle(&state, req.method(), req.uri().path(), req.uri().query());
        async move { Ok::<_, Infallible>(reply.into_response()) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), svc);
    // Reaching the life limit is the normal end of an idle keep-alive client.
    if let Ok(Err(e)) = tokio::time::timeout(MAX_HTTP_CONN_LIFE, conn).await {
        debug!("monitoring connection error: {e}");
    }
}

/// One HTTP answer, before it becomes a hyper response.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Sent with 405 so clients learn what is allowed.
    pub allow: bool,
}

impl Reply {
    fn json<T: Serialize>(status: u16, value: &T, callback: Option<&str>) -> Reply {
        match serde_json::to_vec_pretty(value) {
            Ok(json) => match callback {
                // JSONP, as nats-server offers it, for dashboards that cannot use CORS.
                Some(cb) => {
                    let mut body = Vec::with_capacity(json.len() + cb.len() + 2);
                    body.extend_from_slice(cb.as_bytes());
                    body.push(b'(');
                    body.extend_from_slice(&json);
                    body.push(b')');
                    Reply::new(status, "application/javascript", body)
                }
                None => Reply::new(status, "application/json", json),
            },
            Err(e) => Reply::text(500, format!("cannot encode JSON: {e}")),
        }
    }

    fn text(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", body.into())
    }

    fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            allow: false,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        // hyper leaves the body out of HEAD answers but keeps its Content-Length.
        let mut resp = Response::new(Full::new(Bytes::from(self.body)));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        // Browser dashboards fetch these from other origins.
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        if self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

const ENDPOINTS: [&str; 10] = [
    "/varz",
    "/jsz",
    "/connz",
    "/routez",
    "/leafz",
    "/subsz",
    "/accountz",
    "/healthz",
    "/metrics",
    "/",
];

/// Routes one request. Only the method, the path and the query matter.
pub(crate) fn handle(
    state: &MonitorState,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Reply {
    if method != Method::GET && method != Method::HEAD {
        let mut r = Reply::text(405, "method not allowed: use GET or HEAD\n");
        r.allow = true;
        return r;
    }
    let Some(endpoint) = ENDPOINTS.iter().copied().find(|e| *e == path) else {
        return Reply::text(404, "404 page not found\n");
    };
    *state.req_stats.lock().entry(endpoint).or_insert(0) += 1;
    let query = match Query::parse(query.unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return Reply::text(400, e.to_string()),
    };
    let callback = query.get("callback");
    if let Some(cb) = callback {
        if !is_js_identifier(cb) {
            return Reply::text(400, format!("invalid callback name: {cb}"));
        }
    }
    let result: Result<Reply, QueryError> = match endpoint {
        "/" => Ok(index()),
        "/healthz" => Ok(healthz(&state.srv, &query, callback)),
        "/varz" => Ok(Reply::json(200, &varz::varz(state), callback)),
        "/connz" => connz::connz(&state.srv, &query).map(|c| Reply::json(200, &c, callback)),
        "/subsz" => subsz::subsz(&state.srv, &query).map(|s| Reply::json(200, &s, callback)),
        "/routez" => Ok(Reply::json(200, &routez(&state.srv), callback)),
        "/leafz" => Ok(Reply::json(200, &leafz(&state.srv, &query), callback)),
        "/accountz" => accountz(&state.srv, &query).map(|a| Reply::json(200, &a, callback)),
        "/jsz" => jsz::jsz(&state.srv, &query).map(|j| Reply::json(200, &j, callback)),
        "/metrics" => Ok(Reply::new(
            200,
            metrics::CONTENT_TYPE,
            metrics::render(state).into_bytes(),
        )),
        _ => Ok(Reply::text(404, "404 page not found\n")),
    };
    result.unwrap_or_else(|e| Reply::text(400, e.to_string()))
}

/// The JSON of a monitoring endpoint (`VARZ`, `CONNZ`, ... as the system account's
/// `$SYS.REQ.SERVER` requests name them), or the error text a bad option gives.
pub(crate) fn endpoint_json(
    state: &MonitorState,
    endpoint: &str,
    query: &Query,
) -> Result<serde_json::Value, String> {
    fn value<T: Serialize>(v: &T) -> Result<serde_json::Value, String> {
        serde_json::to_value(v).map_err(|e| e.to_string())
    }
    let srv = &state.srv;
    match endpoint {
        "VARZ" => value(&varz::varz(state)),
        "CONNZ" => value(&connz::connz(srv, query).map_err(|e| e.to_string())?),
        "SUBSZ" => value(&subsz::subsz(srv, query).map_err(|e| e.to_string())?),
        "ROUTEZ" => value(&routez(srv)),
        "LEAFZ" => value(&leafz(srv, query)),
        "ACCOUNTZ" => value(&accountz(srv, query).map_err(|e| e.to_string())?),
        "JSZ" => value(&jsz::jsz(srv, query).map_err(|e| e.to_string())?),
        "HEALTHZ" => Ok(serde_json::json!({ "status": "ok" })),
        other => Err(format!("unknown endpoint {other}")),
    }
}

/// `$SYS.REQ.ACCOUNT.<account>.<endpoint>`: one account's part of an endpoint, as
/// nats-server answers it (`CONNZ`, `LEAFZ` filtered to the account, `SUBSZ` with its
/// subscriptions, `JSZ` its JetStream detail, `INFO` its `/accountz` detail).
pub(crate) fn account_endpoint_json(
    state: &MonitorState,
    endpoint: &str,
    account: &str,
    mut query: Query,
) -> Result<serde_json::Value, String> {
    fn value<T: Serialize>(v: &T) -> Result<serde_json::Value, String> {
        serde_json::to_value(v).map_err(|e| e.to_string())
    }
    let srv = &state.srv;
    query.set("acc", account);
    match endpoint {
        "CONNZ" => value(&connz::connz(srv, &query).map_err(|e| e.to_string())?),
        "SUBSZ" => {
            if query.get("subs") != Some("detail") {
                query.set("subs", "true");
            }
            value(&subsz::subsz(srv, &query).map_err(|e| e.to_string())?)
        }
        "LEAFZ" => value(&leafz(srv, &query)),
        "JSZ" => value(&jsz::jsz_account(srv, &query)?),
        "INFO" => match accountz(srv, &query) {
            Ok(z) => value(&z.account_detail),
            Err(e) => Err(e.to_string()),
        },
        other => Err(format!("unknown endpoint {other}")),
    }
}

/// Messages and bytes (`sent`, `received`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct DataStats {
    pub msgs: u64,
    pub bytes: u64,
}

/// One account's numbers on this server (nats-server's `AccountStat`). `sent` is what the
/// server delivered to the account's clients, `received` what they published; both count
/// the clients that are gone too.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AccountStat {
    pub acc: String,
    pub conns: u64,
    pub leafnodes: u64,
    pub total_conns: u64,
    pub sent: DataStats,
    pub received: DataStats,
    pub slow_consumers: u64,
}

/// `$SYS.REQ.ACCOUNT.PING.STATZ` and `.<account>.STATZ` (nats-server's `AccountStatz`).
#[derive(Debug, Serialize)]
pub(crate) struct AccountStatz {
    pub server_id: String,
    pub now: String,
    pub account_statz: Vec<AccountStat>,
}

/// The numbers of `acc` on this server: its clients' live counters plus those of its
/// clients that closed.
pub(crate) fn account_stat(srv: &ServerInner, acc: &crate::core::Account) -> AccountStat {
    let closed = &acc.closed;
    let mut sent = DataStats {
        msgs: closed.out_msgs.load(Ordering::Relaxed),
        bytes: closed.out_bytes.load(Ordering::Relaxed),
    };
    let mut received = DataStats {
        msgs: closed.in_msgs.load(Ordering::Relaxed),
        bytes: closed.in_bytes.load(Ordering::Relaxed),
    };
    let clients: Vec<_> = srv.clients.lock().values().cloned().collect();
    for c in clients {
        if *c.account.lock() != acc.name {
            continue;
        }
        let (out_msgs, out_bytes, _) = c.out_stats();
        sent.msgs += out_msgs;
        sent.bytes += out_bytes;
        received.msgs += c.in_msgs.load(Ordering::Relaxed);
        received.bytes += c.in_bytes.load(Ordering::Relaxed);
    }
    let conns = u64::from(acc.num_clients.load(Ordering::Relaxed));
    let leafnodes = crate::leaf::stats(srv, false)
        .iter()
        .filter(|l| l.account.as_str() == &*acc.name)
        .count() as u64;
    AccountStat {
        acc: acc.name.to_string(),
        conns,
        leafnodes,
        total_conns: conns + leafnodes,
        sent,
        received,
        slow_consumers: closed.slow_consumers.load(Ordering::Relaxed),
    }
}

/// The accounts named (every account when none is) that have connections here, or all of
/// them with `include_unused`.
pub(crate) fn account_statz(
    srv: &ServerInner,
    accounts: &[String],
    include_unused: bool,
) -> AccountStatz {
    let chosen: Vec<_> = if accounts.is_empty() {
        srv.accounts.all()
    } else {
        accounts
            .iter()
            .filter_map(|name| srv.accounts.get(name))
            .collect()
    };
    let account_statz = chosen
        .iter()
        .map(|a| account_stat(srv, a))
        .filter(|s| include_unused || s.total_conns > 0)
        .collect();
    AccountStatz {
        server_id: srv.id.clone(),
        now: rfc3339(SystemTime::now()),
        account_statz,
    }
}

impl MonitorState {
    /// State for answering monitoring requests without an HTTP listener (the system
    /// account's services); `http` is the monitor's address and whether it is HTTPS, when
    /// one runs, so `/varz` shows it.
    pub(crate) fn detached(
        srv: Arc<ServerInner>,
        http: Option<(SocketAddr, bool)>,
    ) -> MonitorState {
        let (http_addr, https) = http.unwrap_or((SocketAddr::from(([0, 0, 0, 0], 0)), false));
        MonitorState {
            srv,
            http_addr,
            https,
            req_stats: Mutex::new(BTreeMap::new()),
            cpu_sample: Mutex::new(None),
        }
    }
}

#[derive(Debug, Serialize)]
struct Accountz {
    server_id: String,
    now: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_account: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accounts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    account_detail: Option<AccountInfo>,
}

/// `/accountz?acc=NAME`: what nats-server reports of an account that has no JWT.
#[derive(Debug, Serialize)]
struct AccountInfo {
    account_name: String,
    update_time: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_system: bool,
    expired: bool,
    complete: bool,
    jetstream_enabled: bool,
    leafnode_connections: usize,
    client_connections: u32,
    subscriptions: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    exports: Vec<ExtExport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    imports: Vec<ExtImport>,
    sublist_stats: AccountSublistStats,
}

/// An export in `/accountz` (nats-server's `ExtExport`).
#[derive(Debug, Serialize)]
struct ExtExport {
    subject: String,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_type: Option<&'static str>,
    approved_accounts: Vec<String>,
}

/// An import in `/accountz` (nats-server's `ExtImport`): for a service, `subject` is the
/// importer's and `to` the exporter's; for a stream, `subject` is the exporter's and
/// `local_subject` the importer's.
#[derive(Debug, Serialize)]
struct ExtImport {
    subject: String,
    account: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    local_subject: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
    invalid: bool,
    share: bool,
    tracking: bool,
}

/// The exports and imports of `acc` as `/accountz` lists them.
fn exports_and_imports(
    srv: &ServerInner,
    acc: &crate::core::Account,
) -> (Vec<ExtExport>, Vec<ExtImport>) {
    use crate::options::{ExportKind, ResponseType};
    let opts = srv.opts();
    let configured = opts.accounts.iter().find(|a| *a.name == *acc.name);
    let exports = configured
        .map(|a| {
            a.exports
                .iter()
                .map(|e| ExtExport {
                    subject: e.subject.clone(),
                    kind: match e.kind {
                        ExportKind::Stream => "stream",
                        ExportKind::Service => "service",
                    },
                    response_type: (e.kind == ExportKind::Service).then_some(
                        match e.response_type {
                            ResponseType::Singleton => "Singleton",
                            ResponseType::Stream => "Stream",
                            ResponseType::Chunked => "Chunked",
                        },
                    ),
                    approved_accounts: e.accounts.clone().unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut imports: Vec<ExtImport> = configured
        .map(|a| {
            a.imports
                .iter()
                .map(|i| {
                    let local = i.local_subject();
                    let service = i.kind == ExportKind::Service;
                    ExtImport {
                        subject: if service {
                            local.clone()
                        } else {
                            i.subject.clone()
                        },
                        account: i.account.clone(),
                        to: (service && local != i.subject).then(|| i.subject.clone()),
                        local_subject: (!service && local != i.subject).then_some(local),
                        kind: if service { "service" } else { "stream" },
                        invalid: srv.accounts.get(&i.account).is_none(),
                        share: false,
                        tracking: false,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(system) = srv.accounts.system() {
        for (subject, to) in acc.imports.system_imports() {
            imports.push(ExtImport {
                subject,
                account: system.name.to_string(),
                to: Some(to),
                local_subject: None,
                kind: "service",
                invalid: false,
                share: false,
                tracking: false,
            });
        }
    }
    (exports, imports)
}

#[derive(Debug, Serialize)]
struct AccountSublistStats {
    num_subscriptions: u32,
    num_cache: u32,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    cache_hit_rate: f64,
    max_fanout: u32,
    avg_fanout: f64,
}

/// `/accountz`: the accounts' names, or with `acc=` one account's details.
fn accountz(srv: &ServerInner, q: &Query) -> Result<Accountz, QueryError> {
    let system = srv.accounts.system().map(|a| a.name.to_string());
    let mut z = Accountz {
        server_id: srv.id.clone(),
        now: rfc3339(SystemTime::now()),
        system_account: system.clone(),
        accounts: None,
        account_detail: None,
    };
    match q.get("acc") {
        None => {
            z.accounts = Some(
                srv.accounts
                    .all()
                    .iter()
                    .map(|a| a.name.to_string())
                    .collect(),
            );
        }
        Some(name) => {
            let acc = srv
                .accounts
                .get(name)
                .ok_or_else(|| QueryError::Account(name.to_string()))?;
            let st = acc.sublist.stats();
            let (exports, imports) = exports_and_imports(srv, &acc);
            z.account_detail = Some(AccountInfo {
                account_name: acc.name.to_string(),
                update_time: rfc3339(srv.start),
                is_system: system.as_deref() == Some(name),
                expired: false,
                complete: true,
                jetstream_enabled: srv
                    .jetstream
                    .as_ref()
                    .is_some_and(|js| js.account(name).is_some()),
                leafnode_connections: crate::leaf::stats(srv, false)
                    .iter()
                    .filter(|l| l.account == name)
                    .count(),
                client_connections: acc.num_clients.load(Ordering::Relaxed),
                subscriptions: st.num_subscriptions,
                exports,
                imports,
                sublist_stats: AccountSublistStats {
                    num_subscriptions: st.num_subscriptions,
                    num_cache: st.num_cache,
                    num_inserts: st.num_inserts,
                    num_removes: st.num_removes,
                    num_matches: st.num_matches,
                    cache_hit_rate: st.cache_hit_rate,
                    max_fanout: st.max_fanout,
                    avg_fanout: st.avg_fanout,
                },
            });
        }
    }
    Ok(z)
}

/// JSONP callbacks are echoed into a script: allow only names, never markup.
fn is_js_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'.'))
}

fn index() -> Reply {
    let mut html =
        String::from("<html lang=\"en\">\n<head><title>midge monitoring</title></head>\n<body>\n");
    html.push_str(concat!("<h1>midge ", env!("CARGO_PKG_VERSION"), "</h1>\n"));
    for (path, what) in [
        ("varz", "General"),
        ("connz", "Connections"),
        ("routez", "Routes"),
        ("leafz", "Leaf Nodes"),
        ("subsz", "Subscriptions"),
        ("accountz", "Accounts"),
        ("jsz", "JetStream"),
        ("healthz", "Health"),
        ("metrics", "Prometheus metrics"),
    ] {
        html.push_str(&format!("<a href=./{path}>{what}</a><br/>\n"));
    }
    html.push_str("</body>\n</html>\n");
    Reply::new(200, "text/html; charset=utf-8", html.into_bytes())
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// How long `/healthz?routes=1` waits for a first route before answering as `/healthz`:
/// a server restarted while all its peers are gone must not stay unready forever.
const JOIN_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether the server has joined its mesh: a route connected once, or nothing to join (no
/// cluster, no configured route, or every configured route names this server), or
/// [`JOIN_GRACE`] passed since the start.
fn joined_mesh(srv: &ServerInner) -> bool {
    let Some(cluster) = &srv.cluster else {
        return true;
    };
    if cluster.ever_routed.load(Ordering::Acquire) {
        return true;
    }
    let configured = srv.opts().cluster.routes.len();
    configured == 0
        || cluster.self_urls.load(Ordering::Relaxed) >= configured
        || srv.start.elapsed().unwrap_or_default() >= JOIN_GRACE
}

/// Kubernetes probes only look at the status code; bodies are nats-server's. midge's
/// `routes=1` (the operator's readiness and startup probes) also answers 503 until the
/// server has joined its mesh once ([`joined_mesh`]), so a rolling restart waits for each
/// restarted server to route again before it stops the next one.
fn healthz(srv: &ServerInner, query: &Query, callback: Option<&str>) -> Reply {
    if srv.shutting_down.load(Ordering::Acquire) {
        let h = Health {
            status: "unavailable",
            error: Some("server is shutting down"),
        };
        return Reply::json(503, &h, callback);
    }
    if srv.ops.is_lame_duck() {
        // As nats-server: lame duck mode closed the client listener, so the server is not
        // ready for connections, and a readiness probe takes it out of rotation.
        let h = Health {
            status: "error",
            error: Some("failed to be ready for connections: server is in lame duck mode"),
        };
        tracing::warn!("Healthcheck failed: server is in lame duck mode");
        return Reply::json(503, &h, callback);
    }
    if query.get("routes").is_some_and(|v| v == "1" || v == "true") && !joined_mesh(srv) {
        let h = Health {
            status: "unavailable",
            error: Some("no route connected yet"),
        };
        return Reply::json(503, &h, callback);
    }
    let js_check = ["js-enabled-only", "js-enabled", "js-server-only"]
        .iter()
        .any(|k| query.get(k).is_some_and(|v| v == "1" || v == "true"));
    if js_check && srv.jetstream.is_none() {
        let h = Health {
            status: "unavailable",
            error: Some("JetStream not enabled"),
        };
        return Reply::json(503, &h, callback);
    }
    let ok = Health {
        status: "ok",
        error: None,
    };
    // nats-server answers health on one line; probes and scripts grep for it as is.
    match (serde_json::to_vec(&ok), callback) {
        (Ok(body), None) => Reply::new(200, "application/json", body),
        _ => Reply::json(200, &ok, callback),
    }
}

#[derive(Debug, Serialize)]
struct Routez {
    server_id: String,
    now: String,
    num_routes: usize,
    routes: Vec<RouteInfo>,
}

/// One route, with nats-server's `/routez` field names (`remote_name` as in 2.10+).
#[derive(Debug, Serialize)]
struct RouteInfo {
    rid: u64,
    remote_id: String,
    remote_name: String,
    did_solicit: bool,
    is_configured: bool,
    ip: String,
    port: u16,
    start: String,
    last_activity: String,
    uptime: String,
    idle: String,
    /// Go duration text, absent until a route PING was answered (nats-server omits it too).
    #[serde(skip_serializing_if = "String::is_empty")]
    rtt: String,
    pending_size: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    subscriptions: usize,
}

fn routez(srv: &ServerInner) -> Routez {
    let now = SystemTime::now();
    let routes: Vec<RouteInfo> = srv
        .cluster
        .as_ref()
        .map(|c| crate::cluster::route_stats(c))
        .unwrap_or_default()
        .into_iter()
        .map(|r| RouteInfo {
            rid: r.rid,
            remote_id: r.remote_id,
            remote_name: r.remote_name,
            did_solicit: r.did_solicit,
            is_configured: r.is_configured,
            ip: r.ip,
            port: r.port,
            start: rfc3339(r.start),
            last_activity: rfc3339(r.last_activity),
            uptime: uptime(now.duration_since(r.start).unwrap_or_default()),
            idle: uptime(now.duration_since(r.last_activity).unwrap_or_default()),
            rtt: if r.rtt.is_zero() {
                String::new()
            } else {
                go_duration(r.rtt)
            },
            pending_size: r.pending_size,
            in_msgs: r.in_msgs,
            out_msgs: r.out_msgs,
            in_bytes: r.in_bytes,
            out_bytes: r.out_bytes,
            subscriptions: r.subscriptions.len(),
        })
        .collect();
    Routez {
        server_id: srv.id.clone(),
        now: rfc3339(now),
        num_routes: routes.len(),
        routes,
    }
}

#[derive(Debug, Serialize)]
struct Leafz {
    server_id: String,
    now: String,
    leafnodes: usize,
    /// `null` when there are none, as nats-server writes an empty list.
    leafs: Option<Vec<crate::leaf::LeafStats>>,
}

fn leafz(srv: &ServerInner, q: &Query) -> Leafz {
    let subs = q.bool("subs").unwrap_or(false);
    let acc = q.get("acc");
    let leafs: Vec<_> = crate::leaf::stats(srv, subs)
        .into_iter()
        .filter(|l| acc.is_none_or(|a| a == l.account))
        .collect();
    Leafz {
        server_id: srv.id.clone(),
        now: rfc3339(SystemTime::now()),
        leafnodes: leafs.len(),
        leafs: (!leafs.is_empty()).then_some(leafs),
    }
}

/// Go's `time.Time` JSON form (RFC 3339 with nanoseconds, trailing zeros trimmed, UTC),
/// which is what tools parse.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = crate::logging::civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    let mut out = format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    );
    let nanos = d.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// nats-server's uptime form: whole seconds as `1y2d3h4m5s`, leading zero units left out.
pub(crate) fn uptime(d: Duration) -> String {
    let secs = d.as_secs();
    let (mins, hours, days) = (secs / 60, secs / 3600, secs / 86_400);
    let years = days / 365;
    if years > 0 {
        format!(
            "{years}y{}d{}h{}m{}s",
            days % 365,
            hours % 24,
            mins % 60,
            secs % 60
        )
    } else if days > 0 {
        format!("{days}d{}h{}m{}s", hours % 24, mins % 60, secs % 60)
    } else if hours > 0 {
        format!("{hours}h{}m{}s", mins % 60, secs % 60)
    } else if mins > 0 {
        format!("{mins}m{}s", secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// Go's `time.Duration.String()`, the form of `/connz` `rtt` (e.g. `363µs`, `1.5ms`).
pub(crate) fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    fn frac(value: u128, unit: u128, digits: usize) -> String {
        let whole = value / unit;
        let rest = value % unit;
        if rest == 0 {
            return whole.to_string();
        }
        let f = format!("{rest:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos, 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos, 1_000_000, 6));
    }
    let secs = nanos / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = frac(nanos % 60_000_000_000, 1_000_000_000, 9);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// Nanoseconds since the Unix epoch, for timestamps kept in atomics.
pub(crate) fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(crate) fn from_unix_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

#[cfg(test)]
mod tests;
