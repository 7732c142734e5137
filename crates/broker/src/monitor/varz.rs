//! `/varz`: configuration and counters, with nats-server's field names, order and units
//! (durations in nanoseconds, `auth_timeout`/`tls_timeout` in seconds as floats, times in
//! RFC 3339). Sections midge has no feature for (gateway, mqtt) are the empty objects nats-server shows when they are not configured, as is `jetstream` without JetStream.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use super::{rfc3339, uptime, MonitorState};
use crate::info::NATS_COMPAT_VERSION;

#[derive(Debug, Serialize)]
pub(crate) struct Varz {
    server_id: String,
    server_name: String,
    version: &'static str,
    proto: u8,
    go: &'static str,
    host: String,
    port: u16,
    #[serde(skip_serializing_if = "is_false")]
    auth_required: bool,
    max_connections: usize,
    #[serde(skip_serializing_if = "is_zero")]
    max_subscriptions: usize,
    ping_interval: u64,
    ping_max: u32,
    http_host: String,
    http_port: u16,
    http_base_path: &'static str,
    https_port: u16,
    auth_timeout: f64,
    max_control_line: usize,
    max_payload: usize,
    max_pending: usize,
    cluster: ClusterVarz,
    gateway: Empty,
    leaf: LeafVarz,
    mqtt: Empty,
    websocket: WebsocketVarz,
    jetstream: super::jsz::JsVarz,
    tls_timeout: f64,
    write_deadline: u64,
    start: String,
    now: String,
    uptime: String,
    mem: u64,
    cores: usize,
    gomaxprocs: usize,
    cpu: f64,
    connections: usize,
    total_connections: u64,
    routes: usize,
    remotes: usize,
    leafnodes: usize,
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    slow_consumers: u64,
    subscriptions: u32,
    http_req_stats: BTreeMap<&'static str, u64>,
    config_load_time: String,
    config_digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_account: Option<String>,
}

/// An unconfigured section: `{}`.
#[derive(Debug, Serialize)]
struct Empty {}

/// nats-server's `LeafNodeOptsVarz`: empty (`{}`) without leaf nodes.
#[derive(Debug, Serialize)]
struct LeafVarz {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remotes: Vec<LeafRemoteVarz>,
}

#[derive(Debug, Serialize)]
struct LeafRemoteVarz {
    local_account: String,
    urls: Vec<String>,
}

/// nats-server's `WebsocketOptsVarz`: empty (`{}`) without a WebSocket listener.
#[derive(Debug, Serialize, Default)]
struct WebsocketVarz {
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    no_auth_user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jwt_cookie: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handshake_timeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_timeout: Option<f64>,
    #[serde(skip_serializing_if = "is_false")]
    no_tls: bool,
    #[serde(skip_serializing_if = "is_false")]
    same_origin: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_origins: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    compression: bool,
}

/// nats-server's `ClusterOptsVarz`: empty (`{}`) without clustering.
#[derive(Debug, Serialize, Default)]
struct ClusterVarz {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_timeout: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_timeout: Option<f64>,
    #[serde(skip_serializing_if = "is_false")]
    tls_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    tls_verify: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub(crate) fn varz(state: &MonitorState) -> Varz {
    let srv = &state.srv;
    let opts = srv.opts();
    let (config_digest, config_load_time) = srv.ops.config_version();
    let stats = &srv.stats;
    let now = SystemTime::now();
    let port = (*srv.client_addr.lock()).map_or(opts.port, |a| a.port());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Varz {
        server_id: srv.id.clone(),
        server_name: srv.name.clone(),
        version: NATS_COMPAT_VERSION,
        proto: 1,
        go: concat!("midge/", env!("CARGO_PKG_VERSION")),
        host: opts.host.to_string(),
        port,
        auth_required: opts.auth.required(),
        max_connections: opts.max_connections,
        max_subscriptions: opts.max_subscriptions,
        ping_interval: nanos(opts.ping_interval),
        ping_max: opts.ping_max,
        http_host: state.http_addr.ip().to_string(),
        http_port: if state.https {
            0
        } else {
            state.http_addr.port()
        },
        http_base_path: "",
        https_port: if state.https {
            state.http_addr.port()
        } else {
            0
        },
        auth_timeout: opts.auth.timeout.as_secs_f64(),
        max_control_line: opts.max_control_line,
        max_payload: opts.max_payload,
        max_pending: opts.max_pending,
        cluster: match &srv.cluster {
            Some(c) => ClusterVarz {
                name: Some(c.name()),
                addr: Some(opts.cluster.host.to_string()),
                cluster_port: Some(c.listen_addr.port()),
                auth_timeout: Some(opts.cluster.auth_timeout.as_secs_f64()),
                urls: opts.cluster.routes.clone(),
                tls_timeout: opts.cluster.tls.as_ref().map(|t| t.timeout.as_secs_f64()),
                tls_required: opts.cluster.tls.is_some(),
                tls_verify: opts.cluster.tls.is_some(),
            },
            None => ClusterVarz::default(),
        },
        gateway: Empty {},
        leaf: {
            let l = &opts.leafnodes;
            let addr = *srv.leafs.listen_addr.lock();
            LeafVarz {
                host: addr.map(|a| a.ip().to_string()),
                port: addr.map(|a| a.port()),
                auth_timeout: addr.map(|_| l.auth_timeout.as_secs_f64()),
                remotes: l
                    .remotes
                    .iter()
                    .map(|r| LeafRemoteVarz {
                        local_account: r
                            .account
                            .clone()
                            .unwrap_or_else(|| crate::core::GLOBAL_ACCOUNT.to_string()),
                        // Credentials stay out of monitoring.
                        urls: r
                            .parsed_urls()
                            .iter()
                            .map(|u| format!("nats-leaf://{}", u.host_port()))
                            .collect(),
                    })
                    .collect(),
            }
        },
        mqtt: Empty {},
        websocket: match *srv.ws_addr.lock() {
            Some(addr) => {
                let w = &opts.websocket;
                WebsocketVarz {
                    host: Some(w.host.to_string()),
                    port: Some(addr.port()),
                    advertise: w.advertise.clone(),
                    no_auth_user: w.no_auth_user.clone(),
                    jwt_cookie: w.jwt_cookie.clone(),
                    handshake_timeout: Some(nanos(w.handshake_timeout)),
                    auth_timeout: w.auth_timeout.map(|t| t.as_secs_f64()),
                    no_tls: w.no_tls,
                    same_origin: w.same_origin,
                    allowed_origins: w.allowed_origins.clone(),
                    compression: w.compression,
                }
            }
            None => WebsocketVarz::default(),
        },
        jetstream: super::jsz::varz(srv),
        // No TLS yet; nats-server reports its default handshake timeout all the same.
        tls_timeout: 2.0,
        write_deadline: nanos(opts.write_deadline),
        start: rfc3339(srv.start),
        now: rfc3339(now),
        uptime: uptime(now.duration_since(srv.start).unwrap_or_default()),
        mem: resident_memory(),
        cores,
        // The runtime's worker threads default to the core count, like GOMAXPROCS.
        gomaxprocs: cores,
        cpu: cpu_percent(state),
        connections: srv.num_connections(),
        total_connections: stats.total_connections.load(Ordering::Relaxed),
        routes: srv
            .cluster
            .as_ref()
            .map_or(0, |c| c.num_routes.load(Ordering::Relaxed)),
        remotes: srv
            .cluster
            .as_ref()
            .map_or(0, |c| c.num_routes.load(Ordering::Relaxed)),
        leafnodes: srv.leafs.count(),
        in_msgs: stats.in_msgs.load(Ordering::Relaxed),
        out_msgs: stats.out_msgs.load(Ordering::Relaxed),
        in_bytes: stats.in_bytes.load(Ordering::Relaxed),
        out_bytes: stats.out_bytes.load(Ordering::Relaxed),
        slow_consumers: stats.slow_consumers.load(Ordering::Relaxed),
        subscriptions: u32::try_from(srv.accounts.num_subscriptions()).unwrap_or(u32::MAX),
        http_req_stats: state.req_stats.lock().clone(),
        config_load_time: rfc3339(config_load_time),
        config_digest,
        system_account: srv.accounts.system().map(|a| a.name.to_string()),
    }
}

fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Resident set size in bytes (`VmRSS` of /proc/self/status); 0 where there is no procfs.
pub(crate) fn resident_memory() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU time used by this process, from /proc/self/stat, in clock ticks.
fn cpu_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')' come state (field 3) ... utime is field 14 and stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    ticks: u64,
}

/// Linux's USER_HZ: fixed at 100 on every architecture the kernel exposes to userspace.
const TICKS_PER_SEC: f64 = 100.0;

/// Percent of one core used since the previous `/varz` (since start on the first one), as
/// nats-server's `cpu` (which can exceed 100 on several cores).
fn cpu_percent(state: &MonitorState) -> f64 {
    let Some(ticks) = cpu_ticks() else {
        return 0.0;
    };
    let now = Instant::now();
    let prev = state
        .cpu_sample
        .lock()
        .replace(CpuSample { at: now, ticks });
    let (elapsed, used) = match prev {
        Some(p) => (
            now.duration_since(p.at).as_secs_f64(),
            ticks.saturating_sub(p.ticks),
        ),
        None => (
            SystemTime::now()
                .duration_since(state.srv.start)
                .unwrap_or_default()
                .as_secs_f64(),
            ticks,
        ),
    };
    if elapsed <= 0.0 {
        return 0.0;
    }
    let pct = used as f64 / TICKS_PER_SEC / elapsed * 100.0;
    // Two decimals, as nats-server rounds it.
    (pct * 100.0).round() / 100.0
}
