//! Starting a real broker process (midge or the nats-server reference) for one test.
//!
//! Every server gets its own config file in a temporary directory and a random port
//! (`-p -1`); the bound port and readiness are read from the log lines both servers print:
//! `Listening for client connections on HOST:PORT` and `Server is ready`. That is how the
//! official client test harnesses find a server too, so midge must keep those lines.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

/// How long a server may take to print `Server is ready`.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(10);

/// Which broker implementation a test talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerKind {
    /// The broker under test.
    Midge,
    /// The reference implementation (Debian's nats-server 2.9.10 on the dev machines).
    NatsServer,
}

impl fmt::Display for ServerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServerKind::Midge => "midge",
            ServerKind::NatsServer => "nats-server",
        })
    }
}

impl ServerKind {
    /// The executable to run: `MIDGE_BIN` / `NATS_SERVER_BIN` override the defaults.
    pub fn binary(self) -> PathBuf {
        match self {
            ServerKind::Midge => std::env::var_os("MIDGE_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(default_midge_bin),
            ServerKind::NatsServer => std::env::var_os("NATS_SERVER_BIN")
                .map(PathBuf::from)
                .or_else(|| find_on_path("nats-server"))
                .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server")),
        }
    }
}

/// `<target>/debug/midge`, next to the `deps/` directory this test executable lives in.
/// `CARGO_BIN_EXE_midge` only exists for tests of the `midge` package itself.
fn default_midge_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join(format!("midge{}", std::env::consts::EXE_SUFFIX))
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Builder for a [`TestServer`] when a test needs more than a config file.
#[derive(Debug)]
pub struct ServerBuilder {
    kind: ServerKind,
    config: String,
    args: Vec<String>,
}

impl ServerBuilder {
    /// The config file's text (nats-server syntax); empty means defaults.
    pub fn config(mut self, text: &str) -> Self {
        self.config = text.to_owned();
        self
    }

    /// An extra command line flag, passed after `-c <file> -a 127.0.0.1 -p -1`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Spawns the server and waits (up to [`STARTUP_DEADLINE`]) until it is ready.
    ///
    /// Panics with the server's log if it exits or does not become ready in time.
    pub async fn start(self) -> TestServer {
        let dir = tempfile::tempdir().expect("create tempdir for server config");
        let config_path = dir.path().join("server.conf");
        std::fs::write(&config_path, &self.config).expect("write server config");

        let binary = self.kind.binary();
        let mut child = Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .args(["-a", "127.0.0.1", "-p", "-1"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run {} at {} ({err}); set {} or, while midge is not built, \
                     MIDGE_TESTS_REFERENCE_ONLY=1",
                    self.kind,
                    binary.display(),
                    match self.kind {
                        ServerKind::Midge => "MIDGE_BIN (or `cargo build -p midge`)",
                        ServerKind::NatsServer => "NATS_SERVER_BIN",
                    }
                )
            });

        let log = Arc::new(Mutex::new(Vec::new()));
        let (events, mut ready) = mpsc::unbounded_channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        // Keeps draining stderr for the server's whole life so it never blocks on a full pipe.
        std::thread::spawn({
            let log = Arc::clone(&log);
            move || watch_log(stderr, &log, &events)
        });

        let mut cluster_port = None;
        let port = tokio::time::timeout(STARTUP_DEADLINE, async {
            let mut port = None;
            while let Some(event) = ready.recv().await {
                match event {
                    LogEvent::Listening(p) => port = Some(p),
                    LogEvent::ListeningRoutes(p) => cluster_port = Some(p),
                    LogEvent::Ready => return port,
                }
            }
            None
        })
        .await;

        let mut server = TestServer {
            kind: self.kind,
            child,
            port: 0,
            cluster_port,
            log,
            _dir: dir,
        };
        match port {
            Ok(Some(port)) => server.port = port,
            Ok(None) => panic!(
                "{} exited or never logged its client port:\n{}",
                self.kind,
                server.log_text()
            ),
            Err(_) => panic!(
                "{} not ready within {STARTUP_DEADLINE:?}:\n{}",
                self.kind,
                server.log_text()
            ),
        }
        server
    }
}

enum LogEvent {
    Listening(u16),
    ListeningRoutes(u16),
    Ready,
}

fn watch_log(
    stderr: impl std::io::Read,
    log: &Mutex<Vec<String>>,
    events: &mpsc::UnboundedSender<LogEvent>,
) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(port) = listening_port(&line) {
            let _ = events.send(LogEvent::Listening(port));
        }
        if let Some(port) = port_after(&line, "Listening for route connections on ") {
            let _ = events.send(LogEvent::ListeningRoutes(port));
        }
        if line.contains("Server is ready") {
            let _ = events.send(LogEvent::Ready);
        }
        log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }
}

fn listening_port(line: &str) -> Option<u16> {
    port_after(line, "Listening for client connections on ")
}

fn port_after(line: &str, marker: &str) -> Option<u16> {
    let (_, addr) = line.split_once(marker)?;
    addr.trim().rsplit_once(':')?.1.parse().ok()
}

/// A port that was free a moment ago, for servers that must come back on the same port.
///
/// Picked below Linux's ephemeral range (32768-60999), where the kernel never chooses the
/// local port of an outgoing connection, and never twice by one test process: a port taken
/// from the ephemeral range could be given to some test's client socket before the server
/// binds it ("Address already in use").
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    let mut handed = handed.lock().unwrap_or_else(|e| e.into_inner());
    // Start where this process's id points, so parallel test processes rarely meet.
    let span = 32768 - 20000;
    let mut candidate = 20000 + (std::process::id() as usize * 7919) % span;
    for _ in 0..span {
        candidate = 20000 + (candidate - 20000 + 1) % span;
        let port = u16::try_from(candidate).unwrap_or(20000);
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free port between 20000 and 32767")
}

/// A running broker process, killed when dropped.
#[derive(Debug)]
pub struct TestServer {
    kind: ServerKind,
    child: Child,
    port: u16,
    cluster_port: Option<u16>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A builder, for extra flags.
    pub fn builder(kind: ServerKind) -> ServerBuilder {
        ServerBuilder {
            kind,
            config: String::new(),
            args: Vec::new(),
        }
    }

    /// Starts `kind` with `config_text` as its config file, on a random port.
    pub async fn start(kind: ServerKind, config_text: &str) -> TestServer {
        Self::builder(kind).config(config_text).start().await
    }

    pub fn kind(&self) -> ServerKind {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The route port, when the server logged `Listening for route connections on`.
    pub fn cluster_port(&self) -> Option<u16> {
        self.cluster_port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The config file the server was started with (rewrite it, then signal a reload).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("server.conf")
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} log ----\n{}", self.kind, self.log_text());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::listening_port;

    #[test]
    fn port_is_read_from_the_listening_line() {
        let line = "[1] 2026/01/01 00:00:00.000000 [INF] Listening for client connections on 127.0.0.1:4222";
        assert_eq!(listening_port(line), Some(4222));
        assert_eq!(listening_port("[INF] Server is ready"), None);
    }
}
