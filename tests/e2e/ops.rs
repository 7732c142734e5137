//! Operations: lame duck mode, config reload (signal and file watch), log reopening, pid file.
//!
//! Where nats-server has the same feature the scenario runs against both servers; the file
//! watcher, JSON logs and the library calls are midge's own. Signals are sent the way an
//! operator does, with the server's own `--signal <cmd>=<pid>`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use midge_tests::{both, FrameRead, RawClient, ServerKind, TestServer};

/// Deadline for a reload or a log line to show up.
const SLOW: Duration = Duration::from_secs(10);

/// `<server binary> --signal <cmd>=<pid>`.
fn signal(server: &TestServer, command: &str) {
    let status = std::process::Command::new(server.kind().binary())
        .arg("--signal")
        .arg(format!("{command}={}", server.pid()))
        .status()
        .unwrap_or_else(|e| panic!("run {} --signal: {e}", server.kind()));
    assert!(
        status.success(),
        "{} --signal {command}: {status}",
        server.kind()
    );
}

/// Waits until the server has logged `needle` at least `count` times.
async fn wait_for_log(server: &TestServer, needle: &str, count: usize) {
    let until = Instant::now() + SLOW;
    while server.log_text().matches(needle).count() < count {
        assert!(
            Instant::now() < until,
            "[{}] {needle:?} not logged {count} time(s) within {SLOW:?}:\n{}",
            server.kind(),
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `path` exists and holds `needle`.
async fn wait_for_file_line(path: &Path, needle: &str) -> String {
    let until = Instant::now() + SLOW;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < until,
            "{} has no {needle:?} within {SLOW:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client past the handshake, logged in as `user` (or anonymous), protocol 1.
async fn login(addr: std::net::SocketAddr, user: Option<(&str, &str)>) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    let connect = match user {
        Some((u, p)) => {
            format!(r#"{{"verbose":false,"protocol":1,"user":"{u}","pass":"{p}"}}"#)
        }
        None => r#"{"verbose":false,"protocol":1}"#.to_string(),
    };
    c.handshake(&connect).await;
    c
}

/// Sends `ops` then PING; returns the frames before the PONG, leaving out async INFOs.
async fn exchange(client: &mut RawClient, ops: &[u8]) -> Vec<String> {
    client.send(ops).await;
    client.send(b"PING\r\n").await;
    let mut frames = Vec::new();
    loop {
        match client.read_frame(midge_tests::DEADLINE).await {
            FrameRead::Frame(f) if f == b"PONG\r\n" => return frames,
            FrameRead::Frame(f) if f.starts_with(b"INFO ") || f == b"PING\r\n" => {}
            FrameRead::Frame(f) => frames.push(String::from_utf8_lossy(&f).into_owned()),
            other => panic!("waiting for PONG: {other:?} after {frames:?}"),
        }
    }
}

/// Asserts that the next frame other than an async INFO or a server PING is `error`
/// (`None`: no frame at all), then a close.
async fn expect_error_and_close(client: &mut RawClient, error: Option<&str>) {
    loop {
        match client.read_frame(midge_tests::DEADLINE).await {
            FrameRead::Frame(f) if f.starts_with(b"INFO ") || f == b"PING\r\n" => {}
            FrameRead::Frame(f) => {
                assert_eq!(Some(String::from_utf8_lossy(&f).as_ref()), error);
                break;
            }
            FrameRead::Closed if error.is_none() => return,
            other => panic!("waiting for {error:?}: {other:?}"),
        }
    }
    client.expect_closed().await;
}

/// Waits (up to `deadline`) until the server closes `client`, ignoring its PINGs.
async fn expect_closed_within(client: &mut RawClient, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match client.read_frame(left).await {
            FrameRead::Closed => return,
            FrameRead::Frame(f) if f == b"PING\r\n" => {}
            other => panic!("waiting for the close: {other:?}"),
        }
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`; the whole response as text.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        s.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(midge_tests::DEADLINE, exchange)
        .await
        .expect("HTTP GET timed out")
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// A config file the test owns (given with a second `-c`, which wins over the harness's).
struct ConfigFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> ConfigFile {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("server.conf");
        std::fs::write(&path, text).expect("write config");
        ConfigFile { _dir: dir, path }
    }

    fn dir(&self) -> &Path {
        self._dir.path()
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).expect("rewrite config");
    }

    async fn start(&self, kind: ServerKind, args: &[&str]) -> TestServer {
        let path = self.path.to_str().expect("utf-8 path");
        let mut builder = TestServer::builder(kind).arg("-c").arg(path);
        for a in args {
            builder = builder.arg(a);
        }
        builder.start().await
    }
}

// ---------------------------------------------------------------------------------------
// Lame duck mode

#[tokio::test]
async fn lame_duck_tells_clients_refuses_new_ones_and_closes_all() {
    both(|kind| async move {
        // nats-server's minimum duration; with three clients the closes are 1 s apart at
        // most, so the whole run takes about grace + 2 s.
        let conf = ConfigFile::new("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"1s\"\n");
        let server = conf.start(kind, &[]).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(login(server.addr(), None).await);
        }
        // A protocol 0 client takes no INFO updates: it is only closed.
        let mut old = RawClient::connect(server.addr()).await;
        old.handshake(r#"{"verbose":false,"protocol":0}"#).await;

        let start = Instant::now();
        signal(&server, "ldm");
        for c in &mut clients {
            let info = c.read_info().await;
            assert_eq!(info["ldm"], true, "[{kind}] {info}");
        }
        wait_for_log(
            &server,
            "Entering lame duck mode, stop accepting new clients",
            1,
        )
        .await;
        // The listener is closed: new clients are refused.
        let refused = tokio::time::timeout(
            midge_tests::DEADLINE,
            tokio::net::TcpStream::connect(server.addr()),
        )
        .await
        .expect("connect attempt timed out");
        assert!(
            refused.is_err(),
            "[{kind}] a new client was accepted in lame duck mode"
        );

        for c in clients.iter_mut().chain(std::iter::once(&mut old)) {
            expect_closed_within(c, Duration::from_secs(10)).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(1),
            "[{kind}] closed before the grace period: {took:?}"
        );
        assert!(took < Duration::from_secs(30), "[{kind}] took {took:?}");
        wait_for_log(&server, "Closing existing clients", 1).await;
        wait_for_log(&server, "Server Exiting", 1).await;
    })
    .await;
}

/// Kubernetes runs the preStop hook (`--signal ldm`), which returns at once, and then sends
/// TERM: lame duck mode must go on to its end, not be cut short (as in nats-server).
#[tokio::test]
async fn term_during_lame_duck_lets_it_finish() {
    both(|kind| async move {
        let conf = ConfigFile::new("lame_duck_duration: \"30s\"\nlame_duck_grace_period: \"2s\"\n");
        let server = conf.start(kind, &[]).await;
        let mut client = login(server.addr(), None).await;
        let start = Instant::now();
        signal(&server, "ldm");
        assert_eq!(client.read_info().await["ldm"], true, "[{kind}]");
        signal(&server, "term");
        // Cut short, the client would be closed at once; finishing, after the grace period.
        expect_closed_within(&mut client, Duration::from_secs(10)).await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(2),
            "[{kind}] TERM cut lame duck mode short: closed after {took:?}"
        );
        wait_for_log(&server, "Server Exiting", 1).await;
    })
    .await;
}

#[tokio::test]
async fn lame_duck_from_the_library_spreads_closes_over_the_duration() {
    let opts = midge::Options {
        host: [127, 0, 0, 1].into(),
        port: 0,
        // The library takes any duration (the config file keeps nats-server's 30 s minimum).
        lame_duck_duration: Duration::from_millis(1200),
        lame_duck_grace_period: Duration::from_millis(200),
        ..midge::Options::default()
    };
    let server = midge::Server::builder()
        .options(opts)
        .http_port(0)
        .start()
        .await
        .expect("start");
    let monitor = server.monitor_addr().expect("monitor address");
    assert!(http_get(monitor, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(login(server.client_addr(), None).await);
    }
    assert!(!server.is_lame_duck());
    let start = Instant::now();
    let watch = async {
        for c in &mut clients {
            assert_eq!(c.read_info().await["ldm"], true);
        }
        assert!(server.is_lame_duck());
        assert!(tokio::net::TcpStream::connect(server.client_addr())
            .await
            .is_err());
        // As nats-server 2.9.10: not ready for connections, so not healthy.
        let health = http_get(monitor, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 503"), "{health}");
        // Each client watched on its own, so each close is timed when it happens.
        futures::future::join_all(clients.iter_mut().map(|c| async move {
            expect_closed_within(c, Duration::from_secs(5)).await;
            start.elapsed()
        }))
        .await
    };
    let ((), closed_at) = tokio::join!(server.lame_duck_mode(), watch);
    let first = closed_at.iter().min().copied().unwrap_or_default();
    let last = closed_at.iter().max().copied().unwrap_or_default();
    assert!(
        first >= Duration::from_millis(200),
        "closed within the grace period: {closed_at:?}"
    );
    // 1 s after the grace period over 5 clients: 200 ms apart, at least 100 ms each.
    assert!(
        last - first >= Duration::from_millis(350),
        "not spread: {closed_at:?}"
    );
    assert!(
        last <= Duration::from_millis(2500),
        "took too long: {closed_at:?}"
    );
    assert_eq!(server.num_connections(), 0);
}

// ---------------------------------------------------------------------------------------
// Reload

const USERS_V1: &str = r#"
authorization {
  users: [
    {user: a, password: pa, permissions: {publish: {allow: ["foo.>", "bar"]}}}
  ]
}
"#;

const USERS_V2: &str = r#"
authorization {
  users: [
    {user: a, password: pa, permissions: {publish: {allow: ["foo.>"]}}}
    {user: b, password: pb}
  ]
}
"#;

#[tokio::test]
async fn reload_adds_a_user_and_changes_permissions_without_dropping_connections() {
    both(|kind| async move {
        let conf = ConfigFile::new(USERS_V1);
        let server = conf.start(kind, &[]).await;
        let mut a = login(server.addr(), Some(("a", "pa"))).await;
        assert_eq!(
            exchange(&mut a, b"SUB foo.> 1\r\nSUB bar 2\r\nPUB bar 1\r\nx\r\n").await,
            ["MSG bar 2 1\r\nx\r\n"]
        );

        conf.write(USERS_V2);
        signal(&server, "reload");
        wait_for_log(&server, "Reloaded server configuration", 1).await;

        // Same connection: publishing to bar is now denied, foo.> still works.
        assert_eq!(
            exchange(&mut a, b"PUB bar 1\r\nx\r\nPUB foo.x 1\r\ny\r\n").await,
            [
                "-ERR 'Permissions Violation for Publish to \"bar\"'\r\n",
                "MSG foo.x 1 1\r\ny\r\n"
            ]
        );
        // The new user logs in.
        let mut b = login(server.addr(), Some(("b", "pb"))).await;
        assert_eq!(
            exchange(&mut b, b"PUB foo.z 1\r\nz\r\n").await,
            Vec::<String>::new()
        );
        assert_eq!(exchange(&mut a, b"").await, ["MSG foo.z 1 1\r\nz\r\n"]);

        // Removing a connected user closes it with Authorization Violation; others stay.
        conf.write(USERS_V1);
        signal(&server, "reload");
        wait_for_log(&server, "Reloaded server configuration", 2).await;
        // nats-server 2.9.10 closes a removed user without a word (it counts as moved to
        // another account); midge says why, as newer nats-server versions do for users
        // whose credentials no longer pass.
        let why = match kind {
            ServerKind::Midge => Some("-ERR 'Authorization Violation'\r\n"),
            ServerKind::NatsServer => None,
        };
        expect_error_and_close(&mut b, why).await;
        assert_eq!(
            exchange(&mut a, b"PUB bar 1\r\nx\r\n").await,
            ["MSG bar 2 1\r\nx\r\n"]
        );
    })
    .await;
}

#[tokio::test]
async fn reload_removes_subscriptions_a_new_deny_list_forbids() {
    both(|kind| async move {
        let conf = ConfigFile::new("authorization { users: [{user: a, password: pa}] }\n");
        let server = conf.start(kind, &[]).await;
        let mut a = login(server.addr(), Some(("a", "pa"))).await;
        assert!(exchange(&mut a, b"SUB secret.x 1\r\nSUB open 2\r\n")
            .await
            .is_empty());

        conf.write(
            "authorization { users: [{user: a, password: pa, \
             permissions: {subscribe: {deny: [\"secret.>\"]}}}] }\n",
        );
        signal(&server, "reload");
        wait_for_log(&server, "Reloaded server configuration", 1).await;
        assert_eq!(
            exchange(&mut a, b"PUB secret.x 1\r\nx\r\nPUB open 1\r\ny\r\n").await,
            [
                "-ERR 'Permissions Violation for Subscription to \"secret.x\" (sid \"1\")'\r\n",
                "MSG open 2 1\r\ny\r\n"
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn reload_lowering_max_connections_closes_the_excess() {
    both(|kind| async move {
        let conf = ConfigFile::new("max_connections: 3\n");
        let server = conf.start(kind, &[]).await;
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(login(server.addr(), None).await);
        }
        conf.write("max_connections: 1\n");
        signal(&server, "reload");
        wait_for_log(&server, "Reloaded server configuration", 1).await;
        // Exactly one client stays; which ones go is the server's choice.
        let mut open = 0;
        for c in &mut clients {
            c.send_until_closed(b"PING\r\n").await;
            loop {
                match c.read_frame(midge_tests::DEADLINE).await {
                    FrameRead::Frame(f) if f == b"PONG\r\n" => {
                        open += 1;
                        break;
                    }
                    FrameRead::Frame(f) if f == b"-ERR 'maximum connections exceeded'\r\n" => {
                        expect_closed_within(c, midge_tests::DEADLINE).await;
                        break;
                    }
                    FrameRead::Frame(f) if f == b"PING\r\n" || f.starts_with(b"INFO ") => {}
                    other => panic!("[{kind}] {other:?}"),
                }
            }
        }
        assert_eq!(open, 1, "[{kind}]");
    })
    .await;
}

#[tokio::test]
async fn bad_reloads_keep_the_running_configuration() {
    both(|kind| async move {
        let conf = ConfigFile::new(USERS_V1);
        let server = conf.start(kind, &[]).await;
        let mut a = login(server.addr(), Some(("a", "pa"))).await;

        // A syntax error.
        conf.write(&format!("{USERS_V2}\nmax_payload: [1,\n"));
        signal(&server, "reload");
        wait_for_log(&server, "Failed to reload server configuration", 1).await;
        // A non-reloadable option (the port is given on the harness's command line, which
        // wins over the file, so change the server name).
        conf.write(&format!("{USERS_V2}\nserver_name: renamed\n"));
        signal(&server, "reload");
        wait_for_log(&server, "Failed to reload server configuration", 2).await;
        assert!(
            server.log_text().contains("server_name") || server.log_text().contains("ServerName"),
            "[{kind}] the failed reload does not name the option:\n{}",
            server.log_text()
        );

        // The old configuration still serves: a may publish to bar, b does not exist.
        assert_eq!(
            exchange(&mut a, b"SUB bar 1\r\nPUB bar 1\r\nx\r\n").await,
            ["MSG bar 1 1\r\nx\r\n"]
        );
        let mut b = RawClient::connect(server.addr()).await;
        b.read_info().await;
        b.send(b"CONNECT {\"verbose\":false,\"user\":\"b\",\"pass\":\"pb\"}\r\nPING\r\n")
            .await;
        b.expect(b"-ERR 'Authorization Violation'\r\n").await;
        b.expect_closed().await;

        // And a good edit afterwards still applies.
        conf.write(USERS_V2);
        signal(&server, "reload");
        wait_for_log(&server, "Reloaded server configuration", 1).await;
        login(server.addr(), Some(("b", "pb"))).await;
    })
    .await;
}

#[tokio::test]
async fn library_reload_reports_changes_and_refuses_a_port_change() {
    // Monitoring comes from the file too: a reload rebuilds the options from the file (and
    // the command line), not from what the program set in code.
    let conf = ConfigFile::new("listen: 127.0.0.1:0\nhttp_port: -1\nmax_payload: 1000\n");
    let loaded = midge::Options::from_file(&conf.path).expect("load config");
    let server = midge::Server::builder()
        .options(loaded.options)
        .start()
        .await
        .expect("start");
    let monitor = server.monitor_addr().expect("monitor address");
    let digest = server.config_digest();
    let loaded_at = server.config_loaded_at();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let mut c = login(server.client_addr(), None).await;

    conf.write("listen: 127.0.0.1:0\nhttp_port: -1\nmax_payload: 10\n");
    let report = server.reload().await.expect("reload");
    assert_eq!(report.changed, ["max_payload"]);
    assert_ne!(report.digest, digest);
    assert_eq!(server.config_digest(), report.digest);
    assert!(server.config_loaded_at() >= loaded_at);
    assert_eq!(server.options().max_payload, 10);
    // /varz shows the configuration in force.
    let varz = http_get(monitor, "/varz").await;
    let body = varz.split("\r\n\r\n").nth(1).unwrap_or_default();
    let varz: serde_json::Value = serde_json::from_str(body).expect("varz JSON");
    assert_eq!(varz["config_digest"], report.digest.as_str());
    assert_eq!(varz["max_payload"], 10);
    assert_ne!(varz["config_load_time"], varz["start"]);
    // The open connection enforces the new limit.
    c.send(b"PUB foo 11\r\n01234567890\r\n").await;
    c.expect(b"-ERR 'Maximum Payload Violation'\r\n").await;

    conf.write("listen: 127.0.0.1:4333\nhttp_port: -1\nmax_payload: 10\n");
    let e = server.reload().await.expect_err("port change must fail");
    assert!(
        matches!(&e, midge::ReloadError::NotReloadable { option, .. } if option == "port"),
        "{e}"
    );
    conf.write("listen: 127.0.0.1:0\nhttp_port: -1\nmax_payload: [\n");
    assert!(matches!(
        server.reload().await,
        Err(midge::ReloadError::Invalid(_))
    ));
    assert_eq!(server.config_digest(), report.digest);
    assert_eq!(server.options().max_payload, 10);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Config file watch

#[cfg(unix)]
#[tokio::test]
async fn config_watch_follows_a_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    // The layout kubelet gives a ConfigMap volume.
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let v1 = root.join("..2026_01_01");
    std::fs::create_dir(&v1).expect("mkdir");
    std::fs::write(v1.join("midge.conf"), USERS_V1).expect("write v1");
    symlink("..2026_01_01", root.join("..data")).expect("..data");
    symlink("..data/midge.conf", root.join("midge.conf")).expect("midge.conf");
    let conf = root.join("midge.conf");

    let server = TestServer::builder(ServerKind::Midge)
        .arg("-c")
        .arg(conf.to_str().expect("utf-8"))
        .arg("--config_watch")
        .start()
        .await;
    let mut a = login(server.addr(), Some(("a", "pa"))).await;

    // The update: a new directory, a new symlink renamed over `..data` (atomic).
    let v2 = root.join("..2026_01_02");
    std::fs::create_dir(&v2).expect("mkdir");
    std::fs::write(v2.join("midge.conf"), USERS_V2).expect("write v2");
    symlink("..2026_01_02", root.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap");

    wait_for_log(&server, "Reloaded server configuration", 1).await;
    login(server.addr(), Some(("b", "pb"))).await;
    assert_eq!(
        exchange(&mut a, b"PUB bar 1\r\nx\r\n").await,
        ["-ERR 'Permissions Violation for Publish to \"bar\"'\r\n"]
    );
    // Nothing changes, nothing reloads: wait two polls' worth on a condition that must
    // stay false.
    assert!(tokio::time::timeout(
        Duration::from_millis(2500),
        wait_for_log(&server, "Reloaded server configuration", 2)
    )
    .await
    .is_err());
}

// ---------------------------------------------------------------------------------------
// Logging and pid file

#[tokio::test]
async fn log_file_from_reload_is_reopened_on_usr1_and_json_applies_live() {
    let conf = ConfigFile::new("");
    let server = conf.start(ServerKind::Midge, &[]).await;
    let log = conf.dir().join("midge.log");
    let log_conf = format!("logfile: \"{}\"\n", log.display());

    // Reload moves logging to the file.
    conf.write(&log_conf);
    signal(&server, "reload");
    wait_for_file_line(&log, "Reloaded server configuration").await;

    // Rotation: rename, then USR1 (via --signal reopen) makes a new file.
    let rotated = conf.dir().join("midge.log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    signal(&server, "reopen");
    wait_for_file_line(&log, "File log re-opened").await;
    let old = std::fs::read_to_string(&rotated).expect("rotated log");
    assert!(!old.contains("File log re-opened"), "{old}");

    // JSON lines and debug level, live.
    conf.write(&format!("{log_conf}log_json: true\ndebug: true\n"));
    signal(&server, "reload");
    let text = wait_for_file_line(&log, "\"msg\":\"Reloaded server configuration").await;
    let line = text
        .lines()
        .find(|l| l.contains("\"msg\":\"Reloaded server configuration"))
        .unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(line).expect("a JSON log line");
    assert_eq!(json["level"], "info");
    assert_eq!(json["pid"], server.pid());
}

#[tokio::test]
async fn pid_file_is_written_at_start_and_removed_at_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("midge.pid");
    let server = TestServer::builder(ServerKind::Midge)
        .arg("-P")
        .arg(pid_file.to_str().expect("utf-8"))
        .start()
        .await;
    let text = std::fs::read_to_string(&pid_file).expect("pid file");
    assert_eq!(text.trim(), server.pid().to_string());
    // `--signal quit=<pid file>` finds the server through the file.
    let status = std::process::Command::new(ServerKind::Midge.binary())
        .arg("--signal")
        .arg(format!("quit={}", pid_file.display()))
        .status()
        .expect("run midge --signal");
    assert!(status.success());
    wait_for_log(&server, "Server Exiting", 1).await;
    let until = Instant::now() + SLOW;
    while pid_file.exists() {
        assert!(Instant::now() < until, "pid file still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `midge -c <file> -t` on hostile configs: an include cycle (nats-server recurses until its
/// stack overflows) and a duration of centuries are refused with the file, line and key.
#[test]
fn config_check_refuses_include_cycles_and_overlong_durations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write config");
        path
    };
    let check = |path: &Path| {
        let out = std::process::Command::new(ServerKind::Midge.binary())
            .arg("-c")
            .arg(path)
            .arg("-t")
            .output()
            .expect("run midge -t");
        assert!(
            !out.status.success(),
            "midge -t accepted {}",
            path.display()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let a = write("a.conf", "port: 4999\ninclude b.conf\n");
    let b = write("b.conf", "debug: true\ninclude a.conf\n");
    let (a_real, b_real) = (
        a.canonicalize().expect("canonical a"),
        b.canonicalize().expect("canonical b"),
    );
    let stderr = check(&a);
    let want = format!(
        "{}:2:1: include 'a.conf' makes a cycle: {} includes {} includes {}",
        b.display(),
        a_real.display(),
        b_real.display(),
        a_real.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in {stderr:?}");

    let long = write("long.conf", "port: 4999\nwrite_deadline: \"87600h\"\n");
    let stderr = check(&long);
    let want = format!(
        "{}:2:17: write_deadline: 87600h is longer than the maximum of 1 year (8760h)",
        long.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in {stderr:?}");
}
