//! Resource limits and starvation: the listen backlog, sockets that never send CONNECT,
//! bcrypt storms, the monitoring port under idle connections, slow consumer counting.
//!
//! Where a test measures time, the bound is generous (tens of times what a healthy server
//! needs): these are regression tests for starvation and leaks, not benchmarks.

use std::net::SocketAddr;
use std::time::Duration;

use midge::Options;

/// The accept queue length midge asks for (as nats-server), before the kernel's cap.
const BACKLOG: u32 = 4096;

/// The accept queue length of the socket listening on `addr`, as `ss` reports it
/// (`Send-Q` of a listening socket is its backlog).
fn listen_backlog(addr: SocketAddr) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{}", addr.port())])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("LISTEN"))
        .unwrap_or_else(|| panic!("no listener on {addr} in ss output: {text:?}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

/// Client, route and monitoring listeners all get nats-server's backlog of 4096 (std and
/// tokio use 128, which turned 5,000 simultaneous connects into 33 s of SYN retries).
#[tokio::test]
async fn every_listener_has_a_4096_backlog() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(BACKLOG);
    let want = BACKLOG.min(somaxconn);
    assert!(
        want > 128,
        "net.core.somaxconn is {somaxconn}: this host cannot tell 4096 from 128"
    );
    let mut opts = Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        http_port: Some(0),
        ..Options::default()
    };
    opts.cluster.host = [127, 0, 0, 1].into();
    opts.cluster.port = Some(0);
    let server = midge::Server::start(opts).await.expect("midge starts");
    let listeners = [
        ("client", server.client_addr()),
        ("route", server.cluster_addr().expect("cluster port")),
        ("monitor", server.monitor_addr().expect("monitor port")),
    ];
    for (what, addr) in listeners {
        assert_eq!(listen_backlog(addr), want, "{what} listener on {addr}");
    }
    server.shutdown().await;
}

/// A socket that connects and never sends CONNECT must not hold its slot forever when no
/// authorization is configured (no auth timer then). nats-server's ping timer runs from the
/// accept: the silent client gets PINGs and is closed as stale after `ping_max` of them
/// are unanswered; midge does the same.
#[tokio::test]
async fn a_silent_socket_without_auth_is_closed_by_the_ping_timer() {
    midge_tests::both(|kind| async move {
        let server =
            midge_tests::TestServer::start(kind, "ping_interval: \"1s\"\nping_max: 1\n").await;
        let mut c = midge_tests::connect(&server, midge_tests::Feed::Whole)
            .await
            .with_deadline(Duration::from_secs(10));
        c.read_info().await;
        c.expect_line_matching("a PING", |l| l == "PING").await;
        c.expect_line_matching("the stale -ERR", |l| l == "-ERR 'Stale Connection'")
            .await;
        c.expect_closed_within(Duration::from_secs(10)).await;
    })
    .await;
}
