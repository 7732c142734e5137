//! HTTP monitoring: every endpoint over real sockets against an in-process midge, and a
//! differential check of the JSON shapes against Debian's nats-server.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NATS_SERVER: &str = "/usr/sbin/nats-server";
const TIMEOUT: Duration = Duration::from_secs(10);

async fn start_midge() -> midge::Server {
    midge::Server::builder()
        .host([127, 0, 0, 1])
        .port(0)
        .http_port(0)
        .start()
        .await
        .expect("midge starts")
}

fn monitor(server: &midge::Server) -> SocketAddr {
    server.monitor_addr().expect("monitoring is on")
}

#[derive(Debug)]
struct HttpReply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl HttpReply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// A minimal HTTP/1.1 client: one request per connection, body read to EOF
/// (`Connection: close`), chunked bodies decoded (nats-server sends large ones chunked).
async fn http(addr: SocketAddr, method: &str, target: &str) -> HttpReply {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.expect("connect to monitor");
        let req =
            format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("send request");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.expect("read reply");
        raw
    };
    let raw = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .expect("monitor answers in time");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header block ends");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.lines();
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").map(String::as_str) == Some("chunked") {
        body = dechunk(&body);
    }
    HttpReply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

async fn get(addr: SocketAddr, target: &str) -> HttpReply {
    http(addr, "GET", target).await
}

async fn get_json(addr: SocketAddr, target: &str) -> Value {
    let r = get(addr, target).await;
    assert_eq!(r.status, 200, "{target}: {}", r.text());
    r.json()
}

/// A raw protocol client: reads INFO, sends `ops` followed by PING, and waits for the
/// PONG, so everything sent before it has been processed by the server.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    async fn connect(addr: SocketAddr, connect_json: &str) -> RawClient {
        let mut c = RawClient {
            stream: TcpStream::connect(addr).await.expect("connect"),
        };
        c.read_until(b"\r\n").await;
        c.send(&format!("CONNECT {connect_json}\r\n")).await;
        c
    }

    async fn send(&mut self, ops: &str) {
        self.stream
            .write_all(ops.as_bytes())
            .await
            .expect("send ops");
    }

    /// Sends `ops` and waits until the server has handled them.
    async fn sync(&mut self, ops: &str) -> String {
        self.send(&format!("{ops}PING\r\n")).await;
        self.read_until(b"PONG\r\n").await
    }

    async fn read_until(&mut self, end: &[u8]) -> String {
        let mut got = Vec::new();
        let read = async {
            let mut buf = [0u8; 4096];
            while !got.ends_with(end) {
                let n = self.stream.read(&mut buf).await.expect("read");
                assert!(n > 0, "server closed: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(TIMEOUT, read)
            .await
            .expect("server answers in time");
        String::from_utf8_lossy(&got).into_owned()
    }
}

const CONNECT: &str =
    r#"{"verbose":false,"pedantic":false,"name":"tester","lang":"rust","version":"9.9.9"}"#;
/// One connection, two subscriptions (one in a queue group), one message to each.
const SITUATION: &str = "SUB foo 1\r\nSUB bar q 2\r\nPUB foo 5\r\nhello\r\nPUB bar 2\r\nhi\r\n";

/// Polls until `check` holds: connection ends are processed asynchronously.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_endpoint_answers_with_headers() {
    let server = start_midge().await;
    let m = monitor(&server);
    for path in ["/varz", "/connz", "/subsz", "/routez", "/leafz", "/healthz"] {
        let r = get(m, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
        assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{path}");
        r.json();
    }
    let index = get(m, "/").await;
    assert_eq!(index.status, 200);
    assert!(index
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/html"));
    for link in ["varz", "connz", "subsz", "routez", "healthz", "metrics"] {
        assert!(index.text().contains(link), "index links {link}");
    }
    assert_eq!(
        get(m, "/healthz").await.json(),
        serde_json::json!({"status": "ok"})
    );
    let routez = get_json(m, "/routez").await;
    assert_eq!(routez["num_routes"], 0);
    assert_eq!(routez["routes"], serde_json::json!([]));
    let leafz = get_json(m, "/leafz").await;
    assert_eq!(leafz["leafnodes"], 0);
    assert_eq!(get(m, "/nothing").await.status, 404);

    let head = http(m, "HEAD", "/varz").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD has no body");
    let post = http(m, "POST", "/varz").await;
    assert_eq!(post.status, 405);
    assert!(post.header("allow").unwrap_or("").contains("GET"));
    let jsonp = get(m, "/varz?callback=show").await;
    assert!(jsonp.text().starts_with("show({"));
    server.shutdown().await;
}

#[tokio::test]
async fn varz_counts_what_happened() {
    let server = start_midge().await;
    let m = monitor(&server);
    // The server's own (system account) subscriptions count too, as in nats-server.
    let base = get_json(m, "/varz").await["subscriptions"]
        .as_u64()
        .expect("subscriptions");
    let mut c = RawClient::connect(server.client_addr(), CONNECT).await;
    let got = c.sync(SITUATION).await;
    assert!(got.contains("MSG foo 1 5\r\nhello\r\n"), "{got}");
    let v = get_json(m, "/varz").await;
    assert_eq!(v["server_id"], server.id());
    assert_eq!(v["port"], server.client_addr().port());
    assert_eq!(v["http_port"], m.port());
    assert_eq!(v["connections"], 1);
    assert_eq!(v["total_connections"], 1);
    assert_eq!(v["subscriptions"], base + 2);
    assert_eq!(
        (v["in_msgs"].as_u64(), v["out_msgs"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(
        (v["in_bytes"].as_u64(), v["out_bytes"].as_u64()),
        (Some(7), Some(7))
    );
    assert_eq!(v["slow_consumers"], 0);
    assert_eq!(v["ping_interval"], 120_000_000_000u64, "nanoseconds");
    assert_eq!(v["write_deadline"], 10_000_000_000u64, "nanoseconds");
    assert_eq!(v["max_payload"], 1_048_576);
    assert!(v["mem"].as_u64().unwrap_or(0) > 0, "RSS is read");
    assert!(v["uptime"].as_str().unwrap_or("").ends_with('s'));
    assert!(v["start"].as_str().unwrap_or("").ends_with('Z'));
    assert_eq!(
        v["config_load_time"], v["start"],
        "loaded at start, no reload yet"
    );
    assert!(v["config_digest"].is_string());
    server.shutdown().await;
}

#[tokio::test]
async fn connz_shows_connections_and_subscriptions() {
    let server = start_midge().await;
    let m = monitor(&server);
    let mut c = RawClient::connect(server.client_addr(), CONNECT).await;
    c.sync(SITUATION).await;

    let v = get_json(m, "/connz").await;
    assert_eq!(
        (v["num_connections"].as_u64(), v["total"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        (v["offset"].as_u64(), v["limit"].as_u64()),
        (Some(0), Some(1024))
    );
    let conn = &v["connections"][0];
    assert_eq!(conn["kind"], "Client");
    assert_eq!(conn["type"], "nats");
    assert_eq!(conn["ip"], "127.0.0.1");
    assert_eq!(
        (&conn["name"], &conn["lang"], &conn["version"]),
        (&"tester".into(), &"rust".into(), &"9.9.9".into())
    );
    assert_eq!(conn["subscriptions"], 2);
    assert_eq!(
        (conn["in_msgs"].as_u64(), conn["out_msgs"].as_u64()),
        (Some(2), Some(2))
    );
    assert_ne!(conn["rtt"], "0s", "estimated at CONNECT");
    assert!(conn.get("subscriptions_list").is_none(), "only with subs=1");
    assert!(conn.get("stop").is_none() && conn.get("reason").is_none());

    let v = get_json(m, "/connz?subs=1").await;
    let mut list: Vec<&str> = v["connections"][0]["subscriptions_list"]
        .as_array()
        .expect("subscriptions_list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    list.sort_unstable();
    assert_eq!(list, ["bar", "foo"]);

    let v = get_json(m, "/connz?subs=detail").await;
    let detail = &v["connections"][0]["subscriptions_list_detail"];
    assert_eq!(detail[0]["subject"], "foo");
    assert_eq!(detail[0]["sid"], "1");
    assert_eq!(detail[0]["msgs"], 1);
    assert_eq!(detail[1]["qgroup"], "q");
    assert_eq!(detail[1]["msgs"], 1);

    let cid = conn["cid"].as_u64().expect("cid");
    let v = get_json(m, &format!("/connz?cid={cid}")).await;
    assert_eq!(v["connections"][0]["cid"], cid);
    assert_eq!(v["limit"], 1);
    let v = get_json(m, &format!("/connz?cid={}", cid + 100)).await;
    assert_eq!(v["connections"], serde_json::json!([]));
    server.shutdown().await;
}

#[tokio::test]
async fn connz_sorts_and_pages() {
    let server = start_midge().await;
    let m = monitor(&server);
    let mut clients = Vec::new();
    // Client i publishes i messages and holds i subscriptions.
    for i in 1..=3u32 {
        let mut c = RawClient::connect(server.client_addr(), CONNECT).await;
        let mut ops = String::new();
        for n in 0..i {
            ops.push_str(&format!("SUB s.{n} {n}\r\nPUB nobody 1\r\nx\r\n"));
        }
        c.sync(&ops).await;
        clients.push(c);
    }
    let cids = |v: &Value| -> Vec<u64> {
        v["connections"]
            .as_array()
            .expect("connections")
            .iter()
            .filter_map(|c| c["cid"].as_u64())
            .collect()
    };
    let by_cid = cids(&get_json(m, "/connz").await);
    assert_eq!(by_cid.len(), 3);
    assert!(by_cid.windows(2).all(|w| w[0] < w[1]), "cid ascending");
    let mut descending = by_cid.clone();
    descending.reverse();
    for sort in ["msgs_from", "bytes_from", "subs"] {
        let v = get_json(m, &format!("/connz?sort={sort}")).await;
        assert_eq!(cids(&v), descending, "sort={sort} puts the largest first");
    }
    let v = get_json(m, "/connz?sort=msgs_from&offset=1&limit=1").await;
    assert_eq!(cids(&v), vec![descending[1]]);
    assert_eq!(
        (v["num_connections"].as_u64(), v["total"].as_u64()),
        (Some(1), Some(3))
    );
    assert_eq!(
        (v["offset"].as_u64(), v["limit"].as_u64()),
        (Some(1), Some(1))
    );
    let v = get_json(m, "/connz?offset=10").await;
    assert_eq!(
        (v["num_connections"].as_u64(), v["total"].as_u64()),
        (Some(0), Some(3))
    );
    for sort in [
        "start", "pending", "msgs_to", "bytes_to", "last", "idle", "uptime", "rtt",
    ] {
        let v = get_json(m, &format!("/connz?sort={sort}")).await;
        assert_eq!(cids(&v).len(), 3, "sort={sort}");
    }
    drop(clients);
    server.shutdown().await;
}

/// An RFC 3339 UTC time with its fraction padded to nanoseconds, so that string order is
/// time order (Go trims trailing zeros: `…:05.5Z` is later than `…:05.45Z`).
fn sortable_time(v: &Value) -> String {
    let t = v.as_str().expect("a time string");
    let t = t.strip_suffix('Z').expect("UTC");
    let (secs, frac) = t.split_once('.').unwrap_or((t, ""));
    format!("{secs}.{frac:0<9}")
}

/// As nats-server: messages and interest changes are activity, PINGs are not, and a
/// receiver is active when something is delivered to it.
#[tokio::test]
async fn last_activity_follows_messages_not_pings() {
    let server = start_midge().await;
    let m = monitor(&server);
    let mut receiver = RawClient::connect(server.client_addr(), CONNECT).await;
    receiver.sync("SUB news 1\r\n").await;
    let mut sender = RawClient::connect(server.client_addr(), CONNECT).await;
    sender.sync("").await;
    let last = |v: &Value, i: usize| sortable_time(&v["connections"][i]["last_activity"]);
    let before = get_json(m, "/connz").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    sender.sync("").await;
    receiver.sync("").await;
    let after_pings = get_json(m, "/connz").await;
    assert_eq!(
        last(&after_pings, 0),
        last(&before, 0),
        "PING is not activity"
    );
    assert_eq!(
        last(&after_pings, 1),
        last(&before, 1),
        "PING is not activity"
    );
    sender.sync("PUB news 2\r\nhi\r\n").await;
    receiver.read_until(b"hi\r\n").await;
    let after_msg = get_json(m, "/connz").await;
    assert!(
        last(&after_msg, 1) > last(&before, 1),
        "publishing is activity"
    );
    assert!(
        last(&after_msg, 0) > last(&before, 0),
        "a delivery is activity"
    );
    let v = get_json(m, "/connz?sort=last").await;
    assert_eq!(v["connections"].as_array().map(Vec::len), Some(2));
    server.shutdown().await;
}

#[tokio::test]
async fn connz_remembers_closed_connections_and_why() {
    let server = start_midge().await;
    let m = monitor(&server);
    let mut quitter = RawClient::connect(server.client_addr(), CONNECT).await;
    quitter.sync("SUB gone 7\r\n").await;
    drop(quitter);
    let mut bad = RawClient::connect(server.client_addr(), CONNECT).await;
    bad.sync("").await;
    bad.send("BOGUS\r\n").await;
    let mut stays = RawClient::connect(server.client_addr(), CONNECT).await;
    stays.sync("").await;

    eventually("two closed connections", || async {
        get_json(m, "/connz?state=closed").await["total"] == 2
    })
    .await;
    let v = get_json(m, "/connz?state=closed&subs=1").await;
    let closed = v["connections"].as_array().expect("connections");
    let reasons: BTreeSet<&str> = closed.iter().filter_map(|c| c["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["Client Closed", "Protocol Violation"])
    );
    for c in closed {
        assert!(c["stop"].as_str().unwrap_or("").ends_with('Z'), "{c}");
        assert_eq!(c["name"], "tester");
    }
    let quit = closed
        .iter()
        .find(|c| c["reason"] == "Client Closed")
        .expect("the quitter");
    assert_eq!(quit["subscriptions_list"], serde_json::json!(["gone"]));
    let quit_cid = quit["cid"].as_u64().expect("cid");

    let v = get_json(m, &format!("/connz?state=closed&cid={quit_cid}")).await;
    assert_eq!(v["connections"][0]["reason"], "Client Closed");
    let v = get_json(m, "/connz?state=all").await;
    assert_eq!(v["total"], 3);
    let v = get_json(m, "/connz").await;
    assert_eq!(v["total"], 1, "open only by default");
    let v = get_json(m, "/connz?state=closed&sort=stop").await;
    assert_eq!(v["connections"].as_array().map(Vec::len), Some(2));
    let v = get_json(m, "/connz?state=closed&sort=reason").await;
    assert_eq!(
        v["connections"][0]["reason"], "Client Closed",
        "reason ascending"
    );
    drop(stays);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_query_parameters_get_400() {
    let server = start_midge().await;
    let m = monitor(&server);
    for (target, text) in [
        ("/connz?sort=bogus", "invalid sorting option"),
        ("/connz?limit=ten", "'limit'"),
        ("/connz?offset=-", "'offset'"),
        ("/connz?cid=abc", "'cid'"),
        ("/connz?auth=perhaps", "'auth'"),
        ("/connz?state=sleeping", "state"),
        ("/connz?sort=stop", "closed"),
        ("/subsz?subs=lots", "'subs'"),
        ("/subsz?subs=1&test=a.%3E", "test subject"),
        ("/varz?callback=%3Cb%3E", "callback"),
    ] {
        let r = get(m, target).await;
        assert_eq!(r.status, 400, "{target}");
        assert!(r.text().contains(text), "{target}: {}", r.text());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn subsz_counts_and_lists() {
    let server = start_midge().await;
    let m = monitor(&server);
    let before = get_json(m, "/subsz").await;
    let base = |key: &str| before[key].as_u64().expect("counter");
    let mut c = RawClient::connect(server.client_addr(), CONNECT).await;
    c.sync("SUB foo.* 1\r\nSUB bar q 2\r\nUNSUB 9\r\nPUB foo.x 1\r\na\r\n")
        .await;
    let v = get_json(m, "/subsz").await;
    assert_eq!(v["num_subscriptions"], base("num_subscriptions") + 2);
    assert_eq!(v["num_inserts"], base("num_inserts") + 2);
    assert!(v["num_matches"].as_u64().unwrap_or(0) >= 1);
    assert!(v["cache_hit_rate"].is_number() && v["avg_fanout"].is_number());
    assert!(v.get("subscriptions_list").is_none(), "only with subs=1");

    let v = get_json(m, "/subsz?subs=1").await;
    assert_eq!(v["total"], 2);
    let list = v["subscriptions_list"].as_array().expect("list");
    assert_eq!(list[0]["account"], "$G");
    assert_eq!(list[0]["subject"], "foo.*");
    assert_eq!(list[0]["msgs"], 1);
    assert_eq!(list[1]["qgroup"], "q");
    let v = get_json(m, "/subsz?subs=1&test=foo.bar").await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["subscriptions_list"][0]["subject"], "foo.*");
    let v = get_json(m, "/subsz?subs=1&offset=1&limit=5").await;
    assert_eq!(v["subscriptions_list"].as_array().map(Vec::len), Some(1));
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let server = start_midge().await;
    let m = monitor(&server);
    let mut c = RawClient::connect(server.client_addr(), CONNECT).await;
    c.sync(SITUATION).await;
    let r = get(m, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    let mut values = BTreeMap::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_string());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let name = series.split('{').next().unwrap_or(series);
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        assert!(typed.contains(name), "{name} has a TYPE line before it");
        if let Some(labels) = series.strip_prefix(name) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
        let v: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("number in {line:?}"));
        values.insert(name.to_string(), v);
    }
    assert_eq!(values.get("gnatsd_varz_connections"), Some(&1.0));
    assert_eq!(values.get("gnatsd_varz_total_connections"), Some(&1.0));
    // Two of the client's, plus the server's own system account services.
    let base = server.num_subscriptions() as f64 - 2.0;
    assert!(base >= 0.0);
    assert_eq!(values.get("gnatsd_varz_subscriptions"), Some(&(base + 2.0)));
    assert_eq!(values.get("gnatsd_varz_in_msgs"), Some(&2.0));
    assert_eq!(values.get("gnatsd_varz_out_msgs"), Some(&2.0));
    assert_eq!(values.get("gnatsd_varz_in_bytes"), Some(&7.0));
    assert_eq!(values.get("gnatsd_varz_out_bytes"), Some(&7.0));
    assert_eq!(values.get("gnatsd_varz_slow_consumers"), Some(&0.0));
    assert_eq!(values.get("gnatsd_varz_routes"), Some(&0.0));
    assert!(values.get("gnatsd_varz_mem").is_some_and(|m| *m > 0.0));
    assert!(values.contains_key("midge_uptime_seconds"));
    assert_eq!(values.get("midge_build_info"), Some(&1.0));
    assert!(text.contains(&format!("server_id=\"{}\"", server.id())));
    assert!(text.contains("midge_build_info{server_id="));
    assert!(text.contains(",version=\""));
    server.shutdown().await;
}

/// The samples of one metric, keyed by their label sets.
fn samples(text: &str, metric: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(metric))
        .filter_map(|rest| rest.strip_prefix('{'))
        .filter_map(|rest| rest.rsplit_once("} "))
        .map(|(labels, v)| (labels.to_string(), v.parse().expect("number")))
        .collect()
}

/// Queue-group series for autoscaling workers: members, deliveries per member and in all,
/// and the bytes waiting for a member that does not read.
#[tokio::test]
async fn metrics_show_queue_groups_for_autoscaling() {
    use futures::StreamExt;
    let server = start_midge().await;
    let m = monitor(&server);
    let url = server.client_url();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let c = async_nats::connect(&url).await.expect("worker connects");
        let sub = c
            .queue_subscribe("jobs.resize", "workers".into())
            .await
            .expect("queue subscribe");
        c.flush().await.expect("flush");
        workers.push((c, sub));
    }
    let publisher = async_nats::connect(&url).await.expect("publisher connects");
    for i in 0..20 {
        publisher
            .publish("jobs.resize", format!("job {i}").into())
            .await
            .expect("publish");
    }
    publisher.flush().await.expect("flush");
    // Until all 20 arrived (queue delivery: each to exactly one worker), counted per worker.
    let mut got = vec![0.0; workers.len()];
    let mut inbox = futures::stream::select_all(
        workers
            .iter_mut()
            .enumerate()
            .map(|(i, (_, sub))| sub.map(move |_| i)),
    );
    let mut total = 0;
    while total < 20 {
        let i = tokio::time::timeout(TIMEOUT, inbox.next())
            .await
            .expect("jobs arrive in time")
            .expect("subscriptions stay open");
        got[i] += 1.0;
        total += 1;
    }
    drop(inbox);
    assert_eq!(total, 20, "every job delivered once");
    let text = get(m, "/metrics").await.text();
    let key = format!(
        "server_id=\"{}\",account=\"$G\",subject=\"jobs.resize\",queue=\"workers\"",
        server.id()
    );
    assert_eq!(
        samples(&text, "midge_queue_group_members").get(&key),
        Some(&2.0),
        "{text}"
    );
    assert_eq!(
        samples(&text, "midge_queue_group_delivered_msgs").get(&key),
        Some(&20.0)
    );
    let mut per_member: Vec<f64> = samples(&text, "midge_queue_member_delivered_msgs_total")
        .into_iter()
        .filter(|(labels, _)| labels.starts_with(&key))
        .map(|(_, v)| v)
        .collect();
    per_member.sort_by(f64::total_cmp);
    got.sort_by(f64::total_cmp);
    assert_eq!(per_member, got, "each member's counter is what it received");
    assert!(text.contains("# TYPE midge_queue_member_delivered_msgs_total counter"));

    // A member that stops reading: its backlog shows as pending bytes.
    let mut stuck = TcpStream::connect(server.client_addr())
        .await
        .expect("connect");
    stuck
        .write_all(b"CONNECT {\"verbose\":false}\r\nSUB jobs.render render 1\r\nPING\r\n")
        .await
        .expect("subscribe");
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("PONG") {
        let n = tokio::time::timeout(TIMEOUT, stuck.read(&mut buf))
            .await
            .expect("PONG in time")
            .expect("read");
        assert!(n > 0, "server closed the connection");
        seen.extend_from_slice(&buf[..n]);
    }
    let big = vec![b'x'; 512 * 1024];
    let render_key = format!(
        "server_id=\"{}\",account=\"$G\",subject=\"jobs.render\",queue=\"render\"",
        server.id()
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let pending = loop {
        publisher
            .publish("jobs.render", big.clone().into())
            .await
            .expect("publish");
        publisher.flush().await.expect("flush");
        let text = get(m, "/metrics").await.text();
        let p = samples(&text, "midge_queue_group_pending_bytes")
            .get(&render_key)
            .copied()
            .unwrap_or(0.0);
        if p > 0.0 || tokio::time::Instant::now() > deadline {
            break p;
        }
    };
    assert!(pending > 0.0, "a member that does not read has a backlog");
    drop(stuck);
    server.shutdown().await;
}

// ---- differential: the same situation on nats-server and on midge ----

/// A nats-server process, killed on drop.
struct NatsServer {
    child: Child,
    client: SocketAddr,
    monitor: SocketAddr,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts nats-server on random ports and reads both from its log, as tools do.
fn start_nats_server() -> Option<NatsServer> {
    if !std::path::Path::new(NATS_SERVER).exists() {
        return None;
    }
    let mut child = Command::new(NATS_SERVER)
        .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nats-server runs");
    let stderr = child.stderr.take().expect("stderr piped");
    let mut server = NatsServer {
        child,
        client: SocketAddr::from(([0, 0, 0, 0], 0)),
        monitor: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let addr_after = |line: &str, marker: &str| -> Option<SocketAddr> {
        line.split_once(marker)?.1.trim().parse().ok()
    };
    for line in BufReader::new(stderr).lines() {
        let line = line.expect("log line");
        if let Some(a) = addr_after(&line, "Starting http monitor on ") {
            server.monitor = a;
        }
        if let Some(a) = addr_after(&line, "Listening for client connections on ") {
            server.client = a;
        }
        if line.contains("Server is ready") {
            break;
        }
    }
    assert_ne!(server.monitor.port(), 0, "monitor line logged");
    assert_ne!(server.client.port(), 0, "client line logged");
    Some(server)
}

/// JSON kind of a value; Go writes integral floats as integers, so numbers are one kind.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Objects whose keys are data, not schema (they differ between any two servers).
const MAP_VALUED: [&str; 1] = ["http_req_stats"];

/// Every key path with its kind; array elements are merged under `[]`.
fn shape(v: &Value, path: &str, out: &mut BTreeMap<String, &'static str>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{path}.{k}");
                out.insert(p.clone(), kind(child));
                if !MAP_VALUED.contains(&k.as_str()) {
                    shape(child, &p, out);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                shape(item, &format!("{path}[]"), out);
            }
        }
        _ => {}
    }
}

/// Keys nats-server 2.9.10 shows that midge leaves out on purpose.
const ONLY_NATS_SERVER: [(&str, &str); 0] = [];

/// Keys midge shows that nats-server 2.9.10 does not.
const ONLY_MIDGE: [(&str, &str); 1] = [(
    "/varz.config_digest",
    "added in nats-server 2.10; reload tooling reads it",
)];

#[tokio::test]
async fn json_shapes_match_nats_server() {
    let Some(nats) = start_nats_server() else {
        eprintln!("skipped: {NATS_SERVER} is not installed (scripts/deps.sh installs it)");
        return;
    };
    let midge = start_midge().await;
    let targets = [
        "/varz",
        "/connz?subs=detail",
        "/subsz?subs=1",
        "/accountz",
        "/accountz?acc=%24G",
        "/leafz",
    ];
    let mut shapes = Vec::new();
    for (client, monitor) in [
        (nats.client, nats.monitor),
        (midge.client_addr(), monitor(&midge)),
    ] {
        let mut c = RawClient::connect(client, CONNECT).await;
        c.sync(SITUATION).await;
        let mut s = BTreeMap::new();
        for target in targets {
            let v = get_json(monitor, target).await;
            let name = target.split('?').next().unwrap_or(target);
            shape(&v, name, &mut s);
        }
        shapes.push(s);
    }
    let (theirs, ours) = (&shapes[0], &shapes[1]);
    // Guard against comparing nothing: the situation's nested keys are there.
    for path in [
        "/connz.connections[].subscriptions_list_detail[].qgroup",
        "/subsz.subscriptions_list[].msgs",
        "/varz.cluster",
    ] {
        assert!(theirs.contains_key(path), "nats-server shows {path}");
    }
    let allowed_missing: BTreeSet<&str> = ONLY_NATS_SERVER.iter().map(|(k, _)| *k).collect();
    let allowed_extra: BTreeSet<&str> = ONLY_MIDGE.iter().map(|(k, _)| *k).collect();
    let mut problems = Vec::new();
    for (path, k) in theirs {
        match ours.get(path) {
            None if allowed_missing.contains(path.as_str()) => {}
            None => problems.push(format!("missing {path} ({k})")),
            Some(ok) if ok == k => {}
            Some(other) => problems.push(format!("{path}: nats-server {k}, midge {other}")),
        }
    }
    for path in ours.keys() {
        if !theirs.contains_key(path) && !allowed_extra.contains(path.as_str()) {
            problems.push(format!("extra {path}"));
        }
    }
    assert!(
        problems.is_empty(),
        "shape differences:\n{}",
        problems.join("\n")
    );
    // The allow-lists must not hide keys that now match.
    for (path, why) in ONLY_NATS_SERVER {
        assert!(
            !ours.contains_key(path),
            "{path} is now served ({why}): drop it from the list"
        );
    }
    for (path, why) in ONLY_MIDGE {
        assert!(
            !theirs.contains_key(path),
            "{path} is in nats-server too ({why})"
        );
    }
    midge.shutdown().await;
}

/// `<target>/debug/midge`, beside the `deps/` directory holding this test executable
/// (`CARGO_BIN_EXE_midge` exists only for the `midge` package's own tests).
fn midge_binary() -> Option<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("MIDGE_BIN") {
        return Some(bin.into());
    }
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("midge");
    bin.is_file().then_some(bin)
}

/// Tools find the monitor from this log line: the binary must print it, `-m -1` included.
#[tokio::test]
async fn binary_logs_the_monitor_line() {
    let Some(bin) = midge_binary() else {
        eprintln!("skipped: the midge binary is not built (cargo build -p midge)");
        return;
    };
    let mut child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("midge runs");
    let stderr = child.stderr.take().expect("stderr piped");
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let ready = line.contains("Server is ready");
            lines.push(line);
            if ready {
                break;
            }
        }
        lines
    });
    let lines = tokio::time::timeout(TIMEOUT, lines).await;
    let lines = match lines {
        Ok(Ok(lines)) => lines,
        _ => {
            let _ = child.kill();
            panic!("midge did not get ready");
        }
    };
    let monitor: Option<SocketAddr> = lines.iter().find_map(|l| {
        l.split_once("Starting http monitor on ")
            .and_then(|(_, a)| a.trim().parse().ok())
    });
    let health = match monitor {
        Some(addr) => Some(get(addr, "/healthz").await),
        None => None,
    };
    let _ = child.kill();
    let _ = child.wait();
    let health = health.unwrap_or_else(|| panic!("no monitor line in {lines:#?}"));
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn accounts_in_accountz_connz_and_subsz() {
    let mut opts = midge::Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        http_port: Some(0),
        accounts: vec![midge::AccountOptions {
            name: "A".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    opts.auth.users = vec![
        midge::User {
            user: "a".into(),
            password: "a".into(),
            permissions: None,
            account: Some("A".into()),
        },
        midge::User {
            user: "g".into(),
            password: "g".into(),
            permissions: None,
            account: None,
        },
    ];
    let server = midge::Server::builder()
        .options(opts)
        .start()
        .await
        .expect("midge starts");
    let m = monitor(&server);
    let mut a = RawClient::connect(
        server.client_addr(),
        r#"{"user":"a","pass":"a","name":"in-a"}"#,
    )
    .await;
    a.sync("SUB a.x 1\r\n").await;
    let mut g = RawClient::connect(
        server.client_addr(),
        r#"{"user":"g","pass":"g","name":"in-g"}"#,
    )
    .await;
    g.sync("SUB g.x 1\r\nSUB g.y 2\r\n").await;

    let z = get_json(m, "/accountz").await;
    assert_eq!(z["server_id"], server.id());
    assert_eq!(z["system_account"], "$SYS");
    let names: BTreeSet<&str> = z["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(names, BTreeSet::from(["$G", "$SYS", "A"]));
    let d = get_json(m, "/accountz?acc=A").await;
    let detail = &d["account_detail"];
    assert_eq!(detail["account_name"], "A");
    assert_eq!(detail["client_connections"], 1);
    // The client's one, and the three imports from the system account every account has
    // (nats-server 2.9.10 counts them the same way).
    assert_eq!(detail["subscriptions"], 4);
    assert!(detail.get("is_system").is_none(), "{d}");
    let sys = get_json(m, "/accountz?acc=%24SYS").await;
    assert_eq!(sys["account_detail"]["is_system"], true);
    let missing = get(m, "/accountz?acc=nope").await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.text(), "Account nope does not exist");

    // The account is shown with auth details, never for the global account.
    let c = get_json(m, "/connz?auth=1").await;
    let conns = c["connections"].as_array().expect("connections");
    let by_name = |n: &str| conns.iter().find(|c| c["name"] == n).cloned();
    assert_eq!(by_name("in-a").expect("in-a")["account"], "A");
    assert!(by_name("in-g").expect("in-g").get("account").is_none());
    let only_a = get_json(m, "/connz?acc=A").await;
    assert_eq!(only_a["num_connections"], 1);
    assert_eq!(only_a["connections"][0]["name"], "in-a");
    assert_eq!(get_json(m, "/connz?acc=nope").await["num_connections"], 0);

    let s = get_json(m, "/subsz?subs=1&acc=A").await;
    // The count has the system imports too; the list shows clients' subscriptions.
    assert_eq!(s["num_subscriptions"], 4);
    assert_eq!(s["total"], 1);
    assert_eq!(s["subscriptions_list"][0]["account"], "A");
    assert_eq!(s["subscriptions_list"][0]["subject"], "a.x");
    let s = get_json(m, "/subsz?subs=1&acc=%24G").await;
    assert_eq!(s["total"], 2);
    server.shutdown().await;
}
