//! `/metrics`: Prometheus text exposition format 0.0.4, so a scrape needs no sidecar.
//!
//! Names: the server counters use the prometheus-nats-exporter's names
//! (`gnatsd_varz_*`, `gnatsd_subsz_*`, `gnatsd_connz_*`, `gnatsd_routez_*`, labelled
//! `server_id`), so the Grafana dashboards and alert rules written for nats-server work
//! on midge unchanged. Cumulative values are typed `counter` and current ones `gauge`
//! (the exporter types them all as gauges; PromQL treats both alike for `rate()` on
//! monotonic series, and the honest type lets Prometheus detect resets). What the exporter
//! has no name for lives in the `midge_*` family: `midge_build_info`,
//! `midge_uptime_seconds`, the leaf node traffic totals `midge_leafz_*`, and the queue
//! groups of this server's clients, `midge_queue_*`, for autoscaling workers (see
//! [`queue_groups`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::varz::resident_memory;
use super::MonitorState;
use crate::info::NATS_COMPAT_VERSION;

pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        // Writing into a String cannot fail.
        let _ = write!(
            self.text,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{}}} {value}\n",
            self.labels
        );
    }
}

/// Label values escape `\`, `"` and newlines, per the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) fn render(state: &MonitorState) -> String {
    let srv = &state.srv;
    let st = &srv.stats;
    let routes = srv.cluster.as_ref().map_or(0, |c| {
        c.num_routes.load(std::sync::atomic::Ordering::Relaxed)
    });
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let mut o = Out {
        text: String::with_capacity(4096),
        labels: format!("server_id=\"{}\"", escape(&srv.id)),
    };
    o.metric(
        "gnatsd_varz_connections",
        "gauge",
        "Open client connections.",
        srv.num_connections(),
    );
    o.metric(
        "gnatsd_varz_total_connections",
        "counter",
        "Client connections accepted since start.",
        load(&st.total_connections),
    );
    o.metric(
        "gnatsd_varz_subscriptions",
        "gauge",
        "Subscriptions across all clients.",
        srv.accounts.num_subscriptions(),
    );
    o.metric(
        "gnatsd_varz_in_msgs",
        "counter",
        "Messages received from clients.",
        load(&st.in_msgs),
    );
    o.metric(
        "gnatsd_varz_out_msgs",
        "counter",
        "Messages delivered to clients.",
        load(&st.out_msgs),
    );
    o.metric(
        "gnatsd_varz_in_bytes",
        "counter",
        "Payload bytes received from clients.",
        load(&st.in_bytes),
    );
    o.metric(
        "gnatsd_varz_out_bytes",
        "counter",
        "Payload bytes delivered to clients.",
        load(&st.out_bytes),
    );
    o.metric(
        "gnatsd_varz_slow_consumers",
        "counter",
        "Clients closed as slow consumers since start.",
        load(&st.slow_consumers),
    );
    o.metric(
        "gnatsd_varz_routes",
        "gauge",
        "Connected cluster routes.",
        routes,
    );
    o.metric(
        "gnatsd_varz_leafnodes",
        "gauge",
        "Connected leaf node connections.",
        srv.leafs.count(),
    );
    o.metric(
        "gnatsd_varz_mem",
        "gauge",
        "Resident memory in bytes.",
        resident_memory(),
    );
    o.metric(
        "gnatsd_varz_max_connections",
        "gauge",
        "Configured connection limit.",
        srv.opts().max_connections,
    );
    o.metric(
        "gnatsd_varz_max_payload",
        "gauge",
        "Configured payload limit in bytes.",
        srv.opts().max_payload,
    );
    let sl = srv.accounts.sublist_stats();
    o.metric(
        "gnatsd_subsz_num_cache",
        "gauge",
        "Entries in the subscription match cache.",
        sl.num_cache,
    );
    o.metric(
        "gnatsd_subsz_num_inserts",
        "counter",
        "Subscriptions inserted since start.",
        sl.num_inserts,
    );
    o.metric(
        "gnatsd_subsz_num_removes",
        "counter",
        "Subscriptions removed since start.",
        sl.num_removes,
    );
    o.metric(
        "gnatsd_subsz_num_matches",
        "counter",
        "Subscription table lookups since start.",
        sl.num_matches,
    );
    o.metric(
        "gnatsd_subsz_cache_hit_rate",
        "gauge",
        "Share of lookups answered from the cache.",
        sl.cache_hit_rate,
    );
    o.metric(
        "gnatsd_routez_num_routes",
        "gauge",
        "Connected cluster routes.",
        routes,
    );
    let leafs = crate::leaf::stats(srv, false);
    for (name, help, value) in [
        (
            "midge_leafz_in_msgs",
            "Messages received over the open leaf node connections.",
            leafs.iter().map(|l| l.in_msgs).sum::<u64>(),
        ),
        (
            "midge_leafz_out_msgs",
            "Messages sent over the open leaf node connections.",
            leafs.iter().map(|l| l.out_msgs).sum::<u64>(),
        ),
        (
            "midge_leafz_in_bytes",
            "Payload bytes received over the open leaf node connections.",
            leafs.iter().map(|l| l.in_bytes).sum::<u64>(),
        ),
        (
            "midge_leafz_out_bytes",
            "Payload bytes sent over the open leaf node connections.",
            leafs.iter().map(|l| l.out_bytes).sum::<u64>(),
        ),
    ] {
        // Gauges: a connection that closes takes its counts with it.
        o.metric(name, "gauge", help, value);
    }
    queue_groups(&mut o, srv);
    let uptime = SystemTime::now()
        .duration_since(srv.start)
        .unwrap_or_default()
        .as_secs_f64();
    o.metric(
        "midge_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        uptime,
    );
    jetstream(srv, &mut o);
    o.labels = format!(
        "server_id=\"{}\",version=\"{}\",nats_version=\"{}\"",
        escape(&srv.id),
        env!("CARGO_PKG_VERSION"),
        NATS_COMPAT_VERSION
    );
    o.metric(
        "midge_build_info",
        "gauge",
        "Always 1; the labels tell the midge version and the nats-server version it implements.",
        1,
    );
    o.text
}

/// JetStream, with the prometheus-nats-exporter's `-jsz` names: server totals
/// (`jetstream_server_*`) and one series per stream (`jetstream_stream_*`, labelled
/// `account` and `stream_name`).
fn jetstream(srv: &crate::server::ServerInner, o: &mut Out) {
    let Some(js) = &srv.jetstream else {
        o.metric(
            "jetstream_server_jetstream_disabled",
            "gauge",
            "1 when JetStream is off.",
            1,
        );
        return;
    };
    o.metric(
        "jetstream_server_jetstream_disabled",
        "gauge",
        "1 when JetStream is off.",
        0,
    );
    o.metric(
        "jetstream_server_max_memory",
        "gauge",
        "Bytes memory streams may hold.",
        js.max_memory,
    );
    o.metric(
        "jetstream_server_max_storage",
        "gauge",
        "Bytes file streams may hold.",
        js.max_store,
    );
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    o.metric(
        "jetstream_server_memory_used",
        "gauge",
        "Bytes memory streams hold.",
        load(&js.mem_used),
    );
    o.metric(
        "jetstream_server_storage_used",
        "gauge",
        "Bytes file streams hold.",
        load(&js.store_used),
    );
    o.metric(
        "jetstream_server_api_requests",
        "counter",
        "JetStream API requests answered.",
        load(&js.api_total),
    );
    o.metric(
        "jetstream_server_api_errors",
        "counter",
        "JetStream API requests answered with an error.",
        load(&js.api_errors),
    );
    let mut rows = Vec::new();
    let (mut streams, mut consumers, mut messages, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for a in js.accounts() {
        for s in a.streams.read().values() {
            let st = s.inner.lock().store.state();
            let n_consumers = s.consumers.lock().len() as u64;
            streams += 1;
            consumers += n_consumers;
            messages += st.msgs;
            bytes += st.bytes;
            rows.push((a.account.name.to_string(), s.name.clone(), st, n_consumers));
        }
    }
    o.metric(
        "jetstream_server_total_streams",
        "gauge",
        "Streams in every account.",
        streams,
    );
    o.metric(
        "jetstream_server_total_consumers",
        "gauge",
        "Consumers in every account.",
        consumers,
    );
    o.metric(
        "jetstream_server_total_messages",
        "gauge",
        "Messages stored in every stream.",
        messages,
    );
    o.metric(
        "jetstream_server_total_message_bytes",
        "gauge",
        "Bytes stored in every stream.",
        bytes,
    );
    type Value = fn(&midge_store::StreamState, u64) -> u64;
    let series: [(&str, &str, Value); 5] = [
        (
            "jetstream_stream_total_messages",
            "Messages in the stream.",
            |s, _| s.msgs,
        ),
        (
            "jetstream_stream_total_bytes",
            "Bytes in the stream.",
            |s, _| s.bytes,
        ),
        (
            "jetstream_stream_first_seq",
            "First sequence in the stream.",
            |s, _| s.first_seq,
        ),
        (
            "jetstream_stream_last_seq",
            "Last sequence in the stream.",
            |s, _| s.last_seq,
        ),
        (
            "jetstream_stream_consumer_count",
            "Consumers of the stream.",
            |_, c| c,
        ),
    ];
    for (name, help, value) in series {
        if rows.is_empty() {
            break;
        }
        let _ = write!(o.text, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (account, stream, st, n_consumers) in &rows {
            let _ = writeln!(
                o.text,
                "{name}{{{},account=\"{}\",stream_name=\"{}\"}} {}",
                o.labels,
                escape(account),
                escape(stream),
                value(st, *n_consumers)
            );
        }
    }
}

/// One queue group of this server's clients: (account, subject, queue name).
#[derive(Default)]
struct Group {
    /// (client id, subscription id, messages delivered to the member, bytes waiting in
    /// its connection).
    members: Vec<(u64, String, u64, usize)>,
}

/// Queue groups, as a worker fleet's autoscaler wants them: per group the members on this
/// server, the messages delivered to those members and the bytes waiting to be written to
/// them (a backlog the workers do not drain fast enough); per member the messages it was
/// given (a counter for `rate()`). Labelled `account`, `subject`, `queue` (and
/// `client_id`, `sid`); one series per local member, so a server with very many queue
/// subscribers exposes as many series. Members on other servers of a cluster are counted
/// by those servers: sum over the cluster's scrapes.
fn queue_groups(o: &mut Out, srv: &crate::server::ServerInner) {
    let clients: Vec<_> = srv.clients.lock().values().cloned().collect();
    let mut groups: BTreeMap<(String, String, String), Group> = BTreeMap::new();
    for c in &clients {
        let mut queued = Vec::new();
        for sub in c.subs.lock().values() {
            if let Some(q) = &sub.queue {
                queued.push((
                    String::from_utf8_lossy(&sub.subject).into_owned(),
                    String::from_utf8_lossy(q).into_owned(),
                    String::from_utf8_lossy(&sub.sid).into_owned(),
                    sub.delivered.load(Ordering::Relaxed),
                ));
            }
        }
        if queued.is_empty() {
            continue;
        }
        let account = c.account.lock().to_string();
        let pending = c.out_stats().2;
        for (subject, queue, sid, delivered) in queued {
            groups
                .entry((account.clone(), subject, queue))
                .or_default()
                .members
                .push((c.cid, sid, delivered, pending));
        }
    }
    let server = &o.labels;
    let label = |(account, subject, queue): &(String, String, String)| {
        format!(
            "{server},account=\"{}\",subject=\"{}\",queue=\"{}\"",
            escape(account),
            escape(subject),
            escape(queue)
        )
    };
    let mut text = String::new();
    type Value = fn(&Group) -> u64;
    let group_metrics: [(&str, &str, Value); 3] = [
        (
            "midge_queue_group_members",
            "Members of the queue group connected to this server.",
            |g| g.members.len() as u64,
        ),
        (
            "midge_queue_group_delivered_msgs",
            "Messages delivered to the group's current members on this server (drops when a member leaves: use the per-member counter for rates).",
            |g| g.members.iter().map(|m| m.2).sum(),
        ),
        (
            "midge_queue_group_pending_bytes",
            "Bytes queued on this server for the group's members and not yet written to them.",
            |g| g.members.iter().map(|m| m.3 as u64).sum(),
        ),
    ];
    for (name, help, value) in group_metrics {
        let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} gauge\n");
        for (key, g) in &groups {
            let _ = writeln!(text, "{name}{{{}}} {}", label(key), value(g));
        }
    }
    let name = "midge_queue_member_delivered_msgs_total";
    let _ = write!(
        text,
        "# HELP {name} Messages delivered to one member of a queue group.\n# TYPE {name} counter\n"
    );
    for (key, g) in &groups {
        let labels = label(key);
        for (cid, sid, delivered, _) in &g.members {
            let _ = writeln!(
                text,
                "{name}{{{labels},client_id=\"{cid}\",sid=\"{}\"}} {delivered}",
                escape(sid)
            );
        }
    }
    o.text.push_str(&text);
}
