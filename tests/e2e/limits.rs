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

/// Wrong bcrypt passwords must not starve other connections. Before the fix every
/// verification (tens of ms of CPU at cost 10) ran on an async worker: 50 clients sending
/// wrong passwords in a loop pushed a bystander's median round trip past a second.
///
/// A starvation regression test, not a timed benchmark: the bound (50 ms for a median
/// round trip on loopback that takes well under 1 ms on an idle server) is generous; a
/// starved runtime misses it by orders of magnitude. The storm users' auth timeout is long
/// so that every storm login gets its verdict however long it queued for a bcrypt permit.
#[tokio::test]
async fn a_bcrypt_storm_does_not_starve_other_clients() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures::StreamExt;

    const STORM_CLIENTS: usize = 50;
    const STORM_FOR: Duration = Duration::from_secs(3);
    const MEDIAN_BOUND: Duration = Duration::from_millis(50);

    let hash = bcrypt::hash("right", 10).expect("bcrypt hash");
    let config = format!(
        "authorization {{\n  timeout: 120\n  users: [\n    {{user: storm, password: \"{hash}\"}}\n    {{user: canary, password: canary}}\n  ]\n}}\n"
    );
    let server = midge_tests::TestServer::start(midge_tests::ServerKind::Midge, &config).await;
    let canary = || {
        async_nats::ConnectOptions::with_user_and_password("canary".into(), "canary".into())
            .connect(server.url())
    };
    let responder = canary().await.expect("responder connects");
    let requester = canary().await.expect("requester connects");
    let mut service = responder.subscribe("rtt").await.expect("subscribe");
    midge_tests::round_trip(&responder).await;
    let answering = tokio::spawn(async move {
        while let Some(m) = service.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });

    let started = Arc::new(AtomicUsize::new(0));
    let addr = server.addr();
    let storm_end = tokio::time::Instant::now() + STORM_FOR;
    let storm: Vec<_> = (0..STORM_CLIENTS)
        .map(|i| {
            let started = started.clone();
            tokio::spawn(async move {
                let mut verdicts = Vec::new();
                loop {
                    let mut c = midge_tests::RawClient::connect(addr)
                        .await
                        .labelled(format!("storm {i}"))
                        .with_deadline(Duration::from_secs(120));
                    c.read_info().await;
                    c.send(b"CONNECT {\"user\":\"storm\",\"pass\":\"wrong\",\"verbose\":false}\r\nPING\r\n")
                        .await;
                    if verdicts.is_empty() {
                        started.fetch_add(1, Ordering::AcqRel);
                    }
                    let line = c.read_line().await;
                    verdicts.push(String::from_utf8_lossy(&line).trim_end().to_owned());
                    if tokio::time::Instant::now() >= storm_end {
                        return verdicts;
                    }
                }
            })
        })
        .collect();

    // Measure only once every storm client has its first wrong password in flight.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while started.load(Ordering::Acquire) < STORM_CLIENTS {
        assert!(
            tokio::time::Instant::now() < until,
            "storm clients did not start"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut rtts = Vec::new();
    while tokio::time::Instant::now() < storm_end || rtts.len() < 5 {
        let sent = std::time::Instant::now();
        tokio::time::timeout(
            Duration::from_secs(30),
            requester.request("rtt", "ping".into()),
        )
        .await
        .expect("a round trip within 30 s")
        .expect("reply");
        rtts.push(sent.elapsed());
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];

    let mut attempts = 0;
    for task in storm {
        let verdicts = task.await.expect("storm task");
        for v in &verdicts {
            assert_eq!(
                v, "-ERR 'Authorization Violation'",
                "a storm login's verdict"
            );
        }
        attempts += verdicts.len();
    }
    answering.abort();
    eprintln!(
        "bcrypt storm: {attempts} wrong logins; canary: {} round trips, median {median:?}, max {:?}",
        rtts.len(),
        rtts[rtts.len() - 1]
    );
    assert!(
        median < MEDIAN_BOUND,
        "canary median round trip {median:?} during the storm (bound {MEDIAN_BOUND:?}); all: {rtts:?}"
    );
}

/// Sends `GET /healthz` on a fresh connection and returns the status line, or panics if no
/// answer arrives within `within`.
async fn healthz_status(addr: SocketAddr, within: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await.expect("read");
        reply
    };
    let reply = tokio::time::timeout(within, exchange)
        .await
        .unwrap_or_else(|_| panic!("/healthz did not answer within {within:?}"));
    let text = String::from_utf8_lossy(&reply);
    text.lines().next().unwrap_or_default().to_owned()
}

/// A kubelet probe (1 s timeout) must be answered while idle and slow-header connections
/// are open: before the fix, 128 of them took every monitoring slot and probes queued in
/// the kernel until the header timeout freed one (0 of 5 answered within 3 s).
#[tokio::test]
async fn healthz_answers_while_idle_and_slow_connections_are_open() {
    use tokio::io::AsyncWriteExt;
    const IDLE: usize = 300;
    const SLOW: usize = 50;
    let server = midge::Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .http_port(0)
        .start()
        .await
        .expect("midge starts");
    let addr = server.monitor_addr().expect("monitor port");
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(
            tokio::net::TcpStream::connect(addr)
                .await
                .expect("idle connect"),
        );
    }
    let mut slow = Vec::with_capacity(SLOW);
    for _ in 0..SLOW {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("slow connect");
        slow.push(tokio::spawn(async move {
            // One byte of a header that never ends, every 100 ms (the slowloris pattern).
            let _ = s.write_all(b"GET /varz HTTP/1.1\r\nHost: slow\r\n").await;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                if s.write_all(b"X").await.is_err() {
                    return;
                }
            }
        }));
    }
    for i in 0..5 {
        let status = healthz_status(addr, Duration::from_secs(1)).await;
        assert_eq!(status, "HTTP/1.1 200 OK", "probe {i}");
    }
    for task in slow {
        task.abort();
    }
    drop(idle);
    server.shutdown().await;
}

/// A bare HTTP/1.0 GET of a monitoring endpoint's JSON.
async fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect monitor");
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("send request");
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.expect("read reply");
        body
    };
    let body = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("monitor answers");
    let text = String::from_utf8_lossy(&body);
    let (_, json) = text.split_once("\r\n\r\n").expect("headers end");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{path}: {e}: {json}"))
}

/// Publishes one 256 KiB message on `flood` and waits for the PONG that follows it.
/// False once the connection is gone.
async fn publish_one(publisher: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const PAYLOAD: usize = 256 * 1024;
    let mut frame = format!("PUB flood {PAYLOAD}\r\n").into_bytes();
    frame.resize(frame.len() + PAYLOAD, b'x');
    frame.extend_from_slice(b"\r\nPING\r\n");
    if publisher.write_all(&frame).await.is_err() {
        return false;
    }
    let mut pongs = Vec::new();
    while !pongs.ends_with(b"PONG\r\n") {
        let mut buf = [0u8; 64];
        match publisher.read(&mut buf).await {
            Ok(n) if n > 0 => pongs.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

/// One slow consumer is one in `/varz` `slow_consumers`. Before the fix a receiver closed
/// for its pending bytes was counted again when its writer, still stuck on the full
/// socket, ran into the write deadline (and once more by every publisher that saw it over
/// the limit before the close). The test first fills the subscriber's socket, so that its
/// writer sits on it when the limit is crossed.
#[tokio::test]
async fn a_slow_consumer_is_counted_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A process, so that the writer runs on its own worker while publishers append: the
    // double count needed a writer stuck on the full socket when the limit was crossed.
    let http_port = midge_tests::free_port();
    let server = midge_tests::TestServer::start(
        midge_tests::ServerKind::Midge,
        &format!("http_port: {http_port}\nmax_pending: 8388608\nwrite_deadline: \"1s\"\n"),
    )
    .await;
    let monitor = SocketAddr::from(([127, 0, 0, 1], http_port));

    // A subscriber with a small receive buffer that stops reading after its PONG.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    let mut sub = socket.connect(server.addr()).await.expect("connect");
    sub.write_all(b"CONNECT {\"verbose\":false}\r\nSUB flood 1\r\nPING\r\n")
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    while !seen.ends_with(b"PONG\r\n") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), sub.read(&mut buf))
            .await
            .expect("PONG in time")
            .expect("read");
        assert!(n > 0, "subscriber closed before PONG");
        seen.extend_from_slice(&buf[..n]);
    }

    let mut publisher = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connect publisher");
    publisher
        .write_all(b"CONNECT {\"verbose\":false}\r\n")
        .await
        .expect("publisher CONNECT");
    // Phase 1, one message at a time until the server holds bytes for the subscriber: its
    // socket is full and its writer has been woken for them (the /connz round trip gives
    // it time to take them and sit on the socket).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(publish_one(&mut publisher).await, "publisher closed");
        let connz = get_json(monitor, "/connz").await;
        let pending = connz["connections"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["subscriptions"] == 1))
            .map(|c| c["pending_bytes"].as_u64().unwrap_or(0));
        match pending {
            Some(0) => {}
            Some(_) => break,
            None => panic!("the subscriber is gone before its socket filled: {connz}"),
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the subscriber's socket never filled"
        );
    }
    // Phase 2: on to the pending limit.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = tokio::spawn({
        let stop = stop.clone();
        async move { while !stop.load(Ordering::Acquire) && publish_one(&mut publisher).await {} }
    });

    // The subscriber's task ends once its writer gave up too (the write deadline).
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    let varz = loop {
        let varz = get_json(monitor, "/varz").await;
        if varz["slow_consumers"].as_u64() > Some(0) && varz["connections"] == 1 {
            break varz;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the slow subscriber was not closed: {varz}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.store(true, Ordering::Release);
    let _ = flooding.await;
    assert_eq!(varz["slow_consumers"], 1, "{varz}");
    let closed = get_json(monitor, "/connz?state=closed").await;
    let slow: Vec<_> = closed["connections"]
        .as_array()
        .expect("closed connections")
        .iter()
        .filter(|c| {
            c["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("Slow Consumer"))
        })
        .collect();
    assert_eq!(slow.len(), 1, "{closed}");
    drop(sub);
}

/// A subscriber that reads as fast as it can is not cut off by a publisher's unpaced
/// burst far larger than `max_pending`: the publisher is slowed down instead (nats-server's
/// fast producer stall). Before the fix midge closed it as a slow consumer within the first
/// few megabytes. Both servers, with a 2 MB `max_pending` and a 32 MB burst.
#[tokio::test]
async fn a_reading_subscriber_survives_a_burst_larger_than_max_pending() {
    midge_tests::both(|kind| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const PAYLOAD: usize = 1024;
        const MSGS: usize = 32 * 1024;
        let server = midge_tests::TestServer::start(kind, "max_pending: 2097152\n").await;
        let mut sub = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect subscriber");
        sub.write_all(b"CONNECT {\"verbose\":false}\r\nSUB burst 1\r\nPING\r\n")
            .await
            .expect("subscribe");
        // The subscription is in place once its PONG is back.
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        while !seen.windows(6).any(|w| w == b"PONG\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), sub.read(&mut buf))
                .await
                .expect("PONG in time")
                .expect("read");
            assert!(n > 0, "[{kind}] closed before PONG");
            seen.extend_from_slice(&buf[..n]);
        }
        let frame_len = format!("MSG burst 1 {PAYLOAD}\r\n").len() + PAYLOAD + 2;
        let want = MSGS * frame_len;
        let reader = tokio::spawn(async move {
            let mut got = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while got < want {
                match tokio::time::timeout_at(deadline, sub.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => got += n,
                    other => return Err(format!("after {got} of {want} bytes: {other:?}")),
                }
            }
            Ok(got)
        });
        let mut one = format!("PUB burst {PAYLOAD}\r\n").into_bytes();
        one.resize(one.len() + PAYLOAD, b'x');
        one.extend_from_slice(b"\r\n");
        let mut burst = b"CONNECT {\"verbose\":false}\r\n".to_vec();
        burst.reserve(one.len() * MSGS + 8);
        for _ in 0..MSGS {
            burst.extend_from_slice(&one);
        }
        let mut publisher = tokio::net::TcpStream::connect(server.addr())
            .await
            .expect("connect publisher");
        publisher.write_all(&burst).await.expect("burst written");
        let got = reader
            .await
            .expect("reader task")
            .unwrap_or_else(|e| panic!("[{kind}] the subscriber was cut off: {e}"));
        assert_eq!(got, want, "[{kind}]");
    })
    .await;
}
