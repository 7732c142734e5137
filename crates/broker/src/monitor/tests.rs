//! Handler tests without HTTP: pure functions over a real (idle) server's state.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use hyper::Method;
use parking_lot::Mutex;

use super::*;
use crate::Server;

async fn state() -> (Server, MonitorState) {
    let server = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .start()
        .await
        .expect("server starts");
    let state = MonitorState {
        srv: server.inner().clone(),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 8222)),
        https: false,
        req_stats: Mutex::new(BTreeMap::new()),
        cpu_sample: Mutex::new(None),
    };
    (server, state)
}

fn get(state: &MonitorState, path: &str, query: &str) -> Reply {
    handle(state, &Method::GET, path, Some(query))
}

fn json(r: &Reply) -> serde_json::Value {
    serde_json::from_slice(&r.body).expect("JSON body")
}

#[test]
fn time_forms_are_go_s() {
    let t = UNIX_EPOCH + Duration::new(1_795_329_258, 700_787_982);
    assert_eq!(rfc3339(t), "2026-11-22T06:34:18.700787982Z");
    assert_eq!(
        rfc3339(UNIX_EPOCH + Duration::new(1_795_329_258, 500_000_000)),
        "2026-11-22T06:34:18.5Z"
    );
    assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    assert_eq!(uptime(Duration::from_secs(7)), "7s");
    assert_eq!(uptime(Duration::from_secs(3 * 3600 + 4 * 60 + 5)), "3h4m5s");
    assert_eq!(uptime(Duration::from_secs(86_400 + 1)), "1d0h0m1s");
    assert_eq!(uptime(Duration::from_secs(366 * 86_400)), "1y1d0h0m0s");
    assert_eq!(go_duration(Duration::ZERO), "0s");
    assert_eq!(go_duration(Duration::from_nanos(999)), "999ns");
    assert_eq!(go_duration(Duration::from_micros(363)), "363µs");
    assert_eq!(go_duration(Duration::from_nanos(363_500)), "363.5µs");
    assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
    assert_eq!(go_duration(Duration::from_millis(2500)), "2.5s");
    assert_eq!(go_duration(Duration::from_secs(3661)), "1h1m1s");
    assert_eq!(go_duration(Duration::from_secs(61)), "1m1s");
}

#[tokio::test]
async fn methods_paths_and_headers() {
    let (_server, st) = state().await;
    let r = handle(&st, &Method::POST, "/varz", None);
    assert_eq!((r.status, r.allow), (405, true));
    assert_eq!(get(&st, "/nope", "").status, 404);
    let r = get(&st, "/varz", "");
    assert_eq!((r.status, r.content_type), (200, "application/json"));
    assert!(r.body.starts_with(b"{\n  \"server_id\""), "pretty-printed");
    let r = get(&st, "/", "");
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("./connz"));
}

#[tokio::test]
async fn jsonp_callback() {
    let (_server, st) = state().await;
    let r = get(&st, "/routez", "callback=cb");
    assert_eq!(r.content_type, "application/javascript");
    assert!(r.body.starts_with(b"cb({") && r.body.ends_with(b"})"));
    assert_eq!(get(&st, "/routez", "callback=%3Cscript%3E").status, 400);
}

#[tokio::test]
async fn healthz_turns_503_on_shutdown() {
    let (_server, st) = state().await;
    let r = get(&st, "/healthz", "");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"{\"status\":\"ok\"}"[..])
    );
    st.srv.shutting_down.store(true, Ordering::Release);
    let r = get(&st, "/healthz", "");
    assert_eq!(r.status, 503);
    let v = json(&r);
    assert_eq!(v["status"], "unavailable");
    assert!(v["error"].is_string());
}

#[tokio::test]
async fn bad_parameters_are_400_with_a_message() {
    let (_server, st) = state().await;
    for (path, q, text) in [
        ("/connz", "sort=bogus", "invalid sorting option: bogus"),
        ("/connz", "limit=x", "Error decoding int for 'limit'"),
        ("/connz", "offset=1.5", "Error decoding int for 'offset'"),
        ("/connz", "cid=-1", "Error decoding uint64 for 'cid'"),
        ("/connz", "auth=maybe", "Error decoding boolean for 'auth'"),
        ("/connz", "subs=2", "Error decoding boolean for 'subs'"),
        ("/connz", "state=gone", "Error decoding state for gone"),
        ("/connz", "sort=stop", "sort by stop only valid on closed"),
        (
            "/connz",
            "sort=reason&state=all",
            "sort by reason only valid on closed",
        ),
        ("/connz", "limit=%zz", "Error decoding query string"),
        ("/subsz", "subs=x", "Error decoding boolean for 'subs'"),
        ("/subsz", "subs=1&test=foo.*", "invalid test subject"),
    ] {
        let r = get(&st, path, q);
        assert_eq!(r.status, 400, "{path}?{q}");
        let body = String::from_utf8_lossy(&r.body);
        assert!(body.contains(text), "{path}?{q}: {body}");
    }
    assert_eq!(get(&st, "/connz", "sort=stop&state=closed").status, 200);
    assert_eq!(get(&st, "/connz", "subs=detail&state=ANY").status, 200);
}

#[tokio::test]
async fn request_counts_show_in_varz() {
    let (_server, st) = state().await;
    get(&st, "/connz", "");
    get(&st, "/connz", "");
    let v = json(&get(&st, "/varz", ""));
    assert_eq!(v["http_req_stats"]["/connz"], 2);
    assert_eq!(v["http_req_stats"]["/varz"], 1);
}

#[test]
fn closed_ring_is_bounded() {
    let ring = ClosedRing::with_capacity(2);
    let (a, b, c) = (sample_closed(1), sample_closed(2), sample_closed(3));
    ring.push(a);
    ring.push(b);
    ring.push(c);
    let cids: Vec<u64> = ring.snapshot_cids();
    assert_eq!(cids, vec![2, 3]);
}

fn sample_closed(cid: u64) -> ClosedConn {
    ClosedConn::for_test(cid)
}

/// Connects, makes `n` subscriptions, closes, and returns how many of them the closed
/// connection's entry in the ring kept.
async fn subs_kept_after_close(server: &Server, n: usize) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = server.num_subscriptions();
    let mut s = tokio::net::TcpStream::connect(server.client_addr())
        .await
        .expect("connect");
    let mut ops = String::from("CONNECT {}\r\n");
    for i in 0..n {
        ops.push_str(&format!("SUB s.{i} {i}\r\n"));
    }
    ops.push_str("PING\r\n");
    s.write_all(ops.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.ends_with(b"PONG\r\n") {
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("PONG in time")
            .expect("read");
        assert!(read > 0, "closed before PONG");
        got.extend_from_slice(&buf[..read]);
    }
    assert_eq!(server.num_subscriptions(), base + n);
    drop(s);
    let ring = &server.inner().closed;
    loop {
        if let Some((_, subs)) = ring.snapshot_sub_counts().first() {
            return *subs;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed connection never reached the ring"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn closed_ring_keeps_subscriptions_only_with_monitoring() {
    let plain = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .start()
        .await
        .expect("server starts");
    assert_eq!(subs_kept_after_close(&plain, 200).await, 0);
    let monitored = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .http_port(0)
        .start()
        .await
        .expect("server starts");
    assert_eq!(subs_kept_after_close(&monitored, 200).await, 200);
}

/// A client closing with many subscriptions takes them out of the sublist in batches (one
/// write lock and one generation step each), not one by one: removing them singly starved
/// publishers on other connections (a 200k-subscription close stalled them ~0.7 s in a
/// release build). The generation counts the changes, so it shows the batching.
#[tokio::test]
async fn closing_client_removes_its_subscriptions_in_batches() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const N: u64 = 5000;
    let server = Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .start()
        .await
        .expect("server starts");
    let sublist = &server.inner().accounts.global().sublist;
    let base = server.num_subscriptions();
    let mut s = tokio::net::TcpStream::connect(server.client_addr())
        .await
        .expect("connect");
    let mut ops = String::from("CONNECT {}\r\n");
    for i in 0..N {
        ops.push_str(&format!("SUB s.{i} {i}\r\n"));
    }
    ops.push_str("PING\r\n");
    s.write_all(ops.as_bytes()).await.expect("send");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !got.ends_with(b"PONG\r\n") {
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("PONG in time")
            .expect("read");
        assert!(read > 0, "closed before PONG");
        got.extend_from_slice(&buf[..read]);
    }
    assert_eq!(server.num_subscriptions(), base + N as usize);
    let before = sublist.generation();
    drop(s);
    while server.num_subscriptions() > base {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriptions never left"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let steps = sublist.generation() - before;
    assert!(
        steps <= N / 1024 + 2,
        "{steps} sublist changes for {N} removals: not batched"
    );
}
