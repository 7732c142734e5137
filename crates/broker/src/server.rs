//! The server: shared state, the accept loop, start-up and graceful shutdown.
//!
//! A [`Server`] is started from [`Options`] (or the [`ServerBuilder`]), binds its listener,
//! and runs on the caller's tokio runtime until [`Server::shutdown`] is called or the
//! handle is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Notify};
use tracing::{debug, error, info, warn};

use crate::client::{self, ClientShared};
use crate::core::Accounts;
use crate::error::Error;
use crate::info::{ServerInfo, NATS_COMPAT_VERSION};
use crate::monitor::{self, ClosedRing, Monitor};
use crate::options::{Options, TlsOptions};
use crate::tls::{TlsError, TlsSettings};

/// A running server. Dropping it stops the accept loop and closes every connection
/// without waiting; call [`Server::shutdown`] to flush pending data first.
#[derive(Debug)]
pub struct Server {
    pub(crate) inner: Arc<ServerInner>,
    client_addr: SocketAddr,
    /// Kept until the handle goes, so `/healthz` reports the shutdown while it runs.
    monitor: Option<Monitor>,
}

/// Cluster part of [`ServerStats`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterStats {
    pub name: String,
    /// Where the server listens for routes.
    pub addr: Option<SocketAddr>,
    /// Registered routes.
    pub routes: usize,
}

/// State shared by the accept loop and every connection.
#[derive(Debug)]
pub(crate) struct ServerInner {
    /// The options in force. A reload replaces them; connections hold a receiver and pick
    /// the new ones up between reads (see `reload.rs`). Read with [`ServerInner::opts`].
    pub opts_tx: watch::Sender<Arc<Options>>,
    /// Reload, lame duck mode and the config file watcher (see `reload.rs`, `lameduck.rs`).
    pub ops: crate::reload::OpsState,
    pub id: String,
    pub name: String,
    /// Every account and its subscriptions (see `core`).
    pub accounts: Accounts,
    pub clients: Mutex<FxHashMap<u64, Arc<ClientShared>>>,
    pub next_cid: AtomicU64,
    pub stats: Stats,
    pub start: SystemTime,
    pub client_addr: Mutex<Option<SocketAddr>>,
    /// Where the WebSocket listener is bound (`websocket {}`), if any.
    pub ws_addr: Mutex<Option<SocketAddr>>,
    pub shutting_down: AtomicBool,
    /// Routes and remote interest; `None` without a `cluster` port.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Set once "Server Exiting.." was logged (lame duck mode and `shutdown` may both wait).
    exited: AtomicBool,
    /// Recently closed connections, for `/connz?state=closed`.
    pub closed: ClosedRing,
    /// Client TLS for new connections; a reload swaps it (existing sessions keep theirs).
    pub tls: RwLock<Option<TlsSettings>>,
    /// Password checks for clients and routes (bcrypt off the async workers).
    pub verifier: crate::auth::Verifier,
    /// System account events and services (see `sys.rs`).
    pub sys: crate::sys::SysState,
    /// Leaf node connections (see `leaf.rs`).
    pub leafs: crate::leaf::Leafs,
    /// JetStream, when it is on (see `jetstream/`).
    pub jetstream: Option<Arc<crate::jetstream::JetStream>>,
    shutdown_tx: watch::Sender<bool>,
    /// Connections still running; shutdown waits for this to reach zero.
    pub active: AtomicUsize,
    pub all_closed: Notify,
    /// Connections polling their sockets before parking (see `spin.rs`).
    pub spinners: crate::spin::Spinners,
}

/// Server-wide counters, as reported by `/varz`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub total_connections: AtomicU64,
}

impl ServerInner {
    /// A connection was cut off as a slow consumer: counted for the server and for the
    /// connection's account (once per connection; the caller closed it first).
    pub fn count_slow_consumer(&self, c: &crate::client::ClientShared) {
        self.stats
            .slow_consumers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = c.account.lock().clone();
        if let Some(acc) = self.accounts.get(&name) {
            acc.closed
                .slow_consumers
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The options in force now (a reload may replace them).
    pub fn opts(&self) -> Arc<Options> {
        self.opts_tx.borrow().clone()
    }

    /// The INFO a new client receives, before its own id and address are filled in.
    pub fn info_template(&self) -> ServerInfo {
        let opts = self.opts();
        let (host, port) = match &opts.client_advertise {
            Some(adv) => split_host_port(adv, opts.port),
            None => {
                let addr =
                    (*self.client_addr.lock()).unwrap_or(SocketAddr::new(opts.host, opts.port));
                (addr.ip().to_string(), addr.port())
            }
        };
        // As nats-server: with allow_non_tls, TLS is offered (`tls_available`) but not
        // required, so clients that were not told to use TLS stay in plain text.
        let (tls_required, tls_available, tls_verify) = match &*self.tls.read() {
            Some(tls) => (!tls.allow_non_tls, tls.allow_non_tls, tls.verify),
            None => (false, false, false),
        };
        ServerInfo {
            server_id: self.id.clone(),
            server_name: self.name.clone(),
            version: NATS_COMPAT_VERSION,
            proto: 1,
            go: concat!("midge/", env!("CARGO_PKG_VERSION")),
            host,
            port,
            headers: true,
            auth_required: opts.auth.required(),
            tls_required,
            tls_verify,
            tls_available,
            max_payload: opts.max_payload,
            client_id: 0,
            client_ip: String::new(),
            nonce: None,
            cluster: self.cluster.as_ref().map(|c| c.name()),
            connect_urls: match &self.cluster {
                Some(c) if !opts.cluster.no_advertise => c.connect_urls(),
                _ => Vec::new(),
            },
            ldm: false,
        }
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    pub fn connection_closed(&self, cid: u64) {
        self.clients.lock().remove(&cid);
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    pub fn num_connections(&self) -> usize {
        self.clients.lock().len()
    }
}

/// Accept queue length of every listener (clients, routes, monitoring), as nats-server.
/// The kernel caps it at `net.core.somaxconn`.
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener the way `TcpListener::bind` does (`SO_REUSEADDR` on Unix, so a
/// restarted server can rebind while old connections linger in TIME_WAIT), but with
/// [`LISTEN_BACKLOG`] instead of std's 128: a burst of connects (a fleet reconnecting after
/// a restart) otherwise overflows the queue and clients wait for SYN retransmits.
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

pub(crate) fn split_host_port(s: &str, default_port: u16) -> (String, u16) {
    match s.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') => match p.parse() {
            Ok(port) => (h.trim_matches(|c| c == '[' || c == ']').to_string(), port),
            Err(_) => (s.to_string(), default_port),
        },
        _ => (s.to_string(), default_port),
    }
}

/// Generates a server id shaped like nats-server's (an nkey public key: 56 characters
/// of base32 starting with `N`), so tools that validate or abbreviate ids keep working.
fn new_server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::with_capacity(56);
    id.push('N');
    for _ in 0..55 {
        id.push(ALPHABET[rand::random_range(0..ALPHABET.len())] as char);
    }
    id
}

/// Builds a [`Server`] in code: start from defaults (or from [`Options`]), change what you
/// need, then [`start`](ServerBuilder::start) it.
///
/// ```no_run
/// # async fn demo() -> Result<(), midge::Error> {
/// let server = midge::Server::builder().host([127, 0, 0, 1]).port(0).start().await?;
/// println!("clients connect to nats://{}", server.client_addr());
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ServerBuilder {
    opts: Options,
    flags: Option<crate::flags::Flags>,
}

impl ServerBuilder {
    /// Starts from the given options instead of the defaults.
    pub fn options(mut self, opts: Options) -> Self {
        self.opts = opts;
        self
    }
    /// Address to listen on for clients.
    pub fn host(mut self, host: impl Into<std::net::IpAddr>) -> Self {
        self.opts.host = host.into();
        self
    }
    /// Client port; `0` picks a free one (see [`Server::client_addr`]).
    pub fn port(mut self, port: u16) -> Self {
        self.opts.port = port;
        self
    }
    /// Serves HTTP monitoring (`/varz`, `/connz`, `/healthz`, `/metrics`, ...) on this
    /// port; `0` picks a free one (see [`Server::monitor_addr`]).
    pub fn http_port(mut self, port: u16) -> Self {
        self.opts.http_port = Some(port);
        self
    }
    /// Serves monitoring over HTTPS on this port instead, with the certificate of
    /// [`ServerBuilder::tls`] (required); `0` picks a free one.
    pub fn https_port(mut self, port: u16) -> Self {
        self.opts.https_port = Some(port);
        self
    }
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.opts.server_name = Some(name.into());
        self
    }
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.opts.max_payload = bytes;
        self
    }
    pub fn max_connections(mut self, n: usize) -> Self {
        self.opts.max_connections = n;
        self
    }
    /// Requires clients to present this token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.opts.auth.token = Some(token.into());
        self
    }
    /// Requires clients to log in as this user.
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.opts.auth.user = Some(user.into());
        self.opts.auth.password = Some(password.into());
        self
    }
    /// The command line the options were built with: a reload re-reads the config file and
    /// applies these flags on top again, so flags keep overriding the file (as nats-server).
    pub fn command_line(mut self, flags: crate::flags::Flags) -> Self {
        self.flags = Some(flags);
        self
    }

    /// Turns JetStream on, with file streams stored under `store_dir` (in
    /// `<store_dir>/jetstream/<account>/streams/<stream>/`) and nats-server's defaults for
    /// the rest; set [`Options::jetstream`] for limits, domain and sync policy.
    pub fn jetstream(mut self, store_dir: impl Into<std::path::PathBuf>) -> Self {
        let js = self
            .opts
            .jetstream
            .get_or_insert_with(crate::options::JetStreamOptions::default);
        js.enabled = true;
        js.store_dir = Some(store_dir.into());
        self
    }

    /// Serves clients over TLS only.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.opts.tls = Some(tls);
        self
    }
    /// Binds the listener and starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<Server, Error> {
        Server::start_with(self.opts, self.flags).await
    }
}

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Binds the client listener and starts accepting connections.
    pub async fn start(opts: Options) -> Result<Server, Error> {
        Server::start_with(opts, None).await
    }

    async fn start_with(
        opts: Options,
        flags: Option<crate::flags::Flags>,
    ) -> Result<Server, Error> {
        let opts = Arc::new(opts);
        // Certificates first: a bad file should fail start-up before the port is taken.
        let tls = opts
            .tls
            .as_ref()
            .map(|t| TlsSettings::load(t, opts.allow_non_tls))
            .transpose()?;
        let route_tls = opts
            .cluster
            .tls
            .as_ref()
            .map(crate::tls::RouteTls::load)
            .transpose()?;
        let id = new_server_id();
        let name = opts.server_name.clone().unwrap_or_else(|| id.clone());
        let bind = SocketAddr::new(opts.host, opts.port);
        let listener = listen(bind).map_err(|source| Error::Bind { addr: bind, source })?;
        let client_addr = listener
            .local_addr()
            .map_err(|source| Error::Bind { addr: bind, source })?;
        let route_listener = match opts.cluster.port {
            Some(port) => {
                let bind = SocketAddr::new(opts.cluster.host, port);
                let l = listen(bind).map_err(|source| Error::Bind { addr: bind, source })?;
                let addr = l
                    .local_addr()
                    .map_err(|source| Error::Bind { addr: bind, source })?;
                Some((l, addr))
            }
            None => None,
        };
        let ws_listener = crate::ws::bind(&opts)?;
        if !opts.cluster.enabled() && !opts.cluster.routes.is_empty() {
            warn!(
                "Cluster routes are ignored: no cluster port (cluster {{ listen }} or --cluster)"
            );
        }
        let cluster = route_listener.as_ref().map(|(_, addr)| {
            Arc::new(crate::cluster::Cluster::new(
                &opts,
                *addr,
                client_addr,
                route_tls,
            ))
        });
        let (shutdown_tx, _) = watch::channel(false);
        // One instant for both: `config_load_time` after `start` is how tools see a reload.
        let start = SystemTime::now();
        let ops = crate::reload::OpsState::new(&opts, flags, start);
        let accounts = Accounts::new(&opts);
        let jetstream = crate::jetstream::JetStream::new(&opts)?;
        let (opts_tx, _) = watch::channel(opts);
        let inner = Arc::new(ServerInner {
            opts_tx,
            ops,
            id,
            name,
            accounts,
            clients: Mutex::new(FxHashMap::default()),
            next_cid: AtomicU64::new(1),
            stats: Stats::default(),
            start,
            client_addr: Mutex::new(Some(client_addr)),
            ws_addr: Mutex::new(ws_listener.as_ref().map(|l| l.addr)),
            shutting_down: AtomicBool::new(false),
            cluster,
            exited: AtomicBool::new(false),
            closed: ClosedRing::default(),
            tls: RwLock::new(tls),
            verifier: crate::auth::Verifier::default(),
            sys: crate::sys::SysState::default(),
            leafs: crate::leaf::Leafs::default(),
            jetstream,
            shutdown_tx,
            active: AtomicUsize::new(0),
            all_closed: Notify::new(),
            spinners: crate::spin::Spinners::default(),
        });
        info!("Starting midge (a nats-server compatible broker)");
        info!(
            "  Version:  {} (midge {})",
            NATS_COMPAT_VERSION,
            env!("CARGO_PKG_VERSION")
        );
        info!("  Name:     {}", inner.name);
        info!("  ID:       {}", inner.id);
        if let Some(file) = &inner.opts().config_file {
            info!("Using configuration file: {}", file.display());
        }
        // nats-server starts the monitor before the client listener; keep the log order.
        let monitor = monitor::start(&inner).await?;
        info!("Listening for client connections on {}", client_addr);
        if inner.tls.read().is_some() {
            info!("TLS required for client connections");
        }
        // Bound before anything is spawned, so a taken port fails start-up cleanly.
        crate::leaf::start(&inner).await?;
        crate::core::imports::apply(&inner, &inner.opts());
        crate::sys::start(&inner, monitor.as_ref().map(|m| (m.addr(), m.is_https())));
        crate::jetstream::start(&inner);
        let accept = tokio::spawn(accept_loop(inner.clone(), listener));
        if let Some(l) = ws_listener {
            crate::ws::start(&inner, l);
        }
        inner.ops.set_accept_task(accept);
        crate::reload::spawn_config_watch(&inner);
        if let (Some((l, addr)), Some(cluster)) = (route_listener, &inner.cluster) {
            info!("Cluster name is {}", cluster.name());
            if cluster.dynamic.load(Ordering::Relaxed) {
                warn!("Cluster name was dynamically generated, consider setting one");
            }
            info!("Listening for route connections on {}", addr);
            tokio::spawn(crate::route::accept_loop(inner.clone(), l));
            crate::route::solicit_configured(&inner);
        }
        info!("Server is ready");
        Ok(Server {
            inner,
            client_addr,
            monitor,
        })
    }

    /// The address clients connect to (with the real port when port 0 was asked for).
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// `nats://host:port` for this server, using 127.0.0.1 when listening on all addresses.
    pub fn client_url(&self) -> String {
        let mut addr = self.client_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("nats://{addr}")
    }

    /// The address WebSocket clients connect to, with `websocket { port }` (the real port
    /// when a random one was asked for).
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        *self.inner.ws_addr.lock()
    }

    /// The address routes connect to, when clustering is on (the real port when a random
    /// one was asked for).
    pub fn cluster_addr(&self) -> Option<SocketAddr> {
        self.inner.cluster.as_ref().map(|c| c.listen_addr)
    }

    /// Registered routes, ordered by route id (what `/routez` reports).
    pub fn routes(&self) -> Vec<crate::cluster::RouteStats> {
        self.inner
            .cluster
            .as_ref()
            .map(|c| crate::cluster::route_stats(c))
            .unwrap_or_default()
    }

    /// The monitoring address (with the real port when port 0 was asked for), if
    /// `http_port` or `https_port` is set; [`Server::monitor_is_https`] tells which.
    pub fn monitor_addr(&self) -> Option<SocketAddr> {
        self.monitor.as_ref().map(Monitor::addr)
    }

    /// True when monitoring is served over HTTPS (`https_port`, with the `tls {}`
    /// certificate); false when it is plain HTTP or off.
    pub fn monitor_is_https(&self) -> bool {
        self.monitor.as_ref().is_some_and(Monitor::is_https)
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<ServerInner> {
        &self.inner
    }

    /// Re-reads the TLS certificate, key and CA and uses them for new client connections;
    /// established sessions keep the certificate they were set up with. On error nothing
    /// changes. This is what certificate rotation by a config reload calls.
    pub fn reload_tls(&self, opts: &TlsOptions) -> Result<(), TlsError> {
        let allow_non_tls = self.inner.opts().allow_non_tls;
        let settings = TlsSettings::load(opts, allow_non_tls)?;
        *self.inner.tls.write() = Some(settings);
        info!("Reloaded TLS certificate {}", opts.cert_file.display());
        Ok(())
    }

    /// The generated server id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The server's name (its id unless configured).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Open client connections.
    pub fn num_connections(&self) -> usize {
        self.inner.num_connections()
    }

    /// Subscriptions of every kind in every account: clients', routes' and the server's own
    /// (system account services), as `/varz` counts them.
    pub fn num_subscriptions(&self) -> usize {
        self.inner.accounts.num_subscriptions()
    }

    /// Stops accepting, flushes what each client still has pending, closes every
    /// connection and waits (bounded by the write deadline) until they are gone.
    pub async fn shutdown(self) {
        self.inner.shutdown_and_wait().await;
    }

    fn begin_shutdown(&self) {
        self.inner.begin_shutdown();
    }
}

impl ServerInner {
    /// [`Server::shutdown`], also used at the end of lame duck mode.
    pub(crate) async fn shutdown_and_wait(self: &Arc<Self>) {
        if !self.shutting_down.load(Ordering::Acquire) {
            // Queued before the clients close, so listeners get it with their last data.
            crate::sys::server_event(self, "SHUTDOWN");
        }
        self.begin_shutdown();
        let deadline = self.opts().write_deadline + Duration::from_secs(1);
        let inner = self.clone();
        let wait = async move {
            loop {
                let notified = inner.all_closed.notified();
                if inner.active.load(Ordering::Acquire) == 0 {
                    break;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            warn!("Shutdown: connections still open after {:?}", deadline);
        }
        if let Some(js) = &self.jetstream {
            crate::jetstream::consumer::save_all(js);
            // What the sync interval would have made durable later, durable now.
            crate::jetstream::sync_all(js);
        }
        if !self.exited.swap(true, Ordering::AcqRel) {
            info!("Server Exiting..");
        }
    }

    pub(crate) fn begin_shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::AcqRel) {
            return;
        }
        info!("Initiating Shutdown...");
        let _ = self.shutdown_tx.send(true);
        let clients: Vec<_> = self.clients.lock().values().cloned().collect();
        for c in clients {
            c.close(client::CloseReason::ServerShutdown);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.begin_shutdown();
    }
}

async fn accept_loop(inner: Arc<ServerInner>, listener: TcpListener) {
    let mut shutdown = inner.shutdown_signal();
    // Lame duck mode stops accepting; the listener closes when this loop returns.
    let mut lame_duck = inner.ops.lame_duck_signal();
    let mut backoff = Duration::from_millis(10);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => break,
            _ = lame_duck.changed() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                spawn_client(&inner, stream, peer);
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                error!("Error accepting client connection: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
    debug!("client accept loop stopped");
}

fn spawn_client(inner: &Arc<ServerInner>, stream: TcpStream, peer: SocketAddr) {
    if inner.shutting_down.load(Ordering::Acquire) {
        return;
    }
    let _ = stream.set_nodelay(true);
    let cid = inner.next_cid.fetch_add(1, Ordering::Relaxed);
    inner
        .stats
        .total_connections
        .fetch_add(1, Ordering::Relaxed);
    inner.active.fetch_add(1, Ordering::AcqRel);
    client::spawn(inner.clone(), stream, peer, cid);
}

/// A snapshot of the server's counters (what `/varz` reports).
#[derive(Debug, Clone, PartialEq)]
pub struct ServerStats {
    pub start: SystemTime,
    pub connections: usize,
    pub total_connections: u64,
    pub subscriptions: usize,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub slow_consumers: u64,
    /// Cluster name, route address and route count (`None` without clustering).
    pub cluster: Option<ClusterStats>,
}

/// A snapshot of one client connection (what `/connz` reports).
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionStats {
    pub cid: u64,
    pub addr: SocketAddr,
    pub start: SystemTime,
    pub subscriptions: usize,
    pub in_msgs: u64,
    pub in_bytes: u64,
    pub out_msgs: u64,
    pub out_bytes: u64,
    pub pending_bytes: usize,
}

impl Server {
    /// Server-wide counters.
    pub fn stats(&self) -> ServerStats {
        let s = &self.inner.stats;
        ServerStats {
            start: self.inner.start,
            connections: self.inner.num_connections(),
            total_connections: s.total_connections.load(Ordering::Relaxed),
            subscriptions: self.inner.accounts.num_subscriptions(),
            in_msgs: s.in_msgs.load(Ordering::Relaxed),
            in_bytes: s.in_bytes.load(Ordering::Relaxed),
            out_msgs: s.out_msgs.load(Ordering::Relaxed),
            out_bytes: s.out_bytes.load(Ordering::Relaxed),
            slow_consumers: s.slow_consumers.load(Ordering::Relaxed),
            cluster: self.inner.cluster.as_ref().map(|c| ClusterStats {
                name: c.name(),
                addr: Some(c.listen_addr),
                routes: c.num_routes.load(Ordering::Relaxed),
            }),
        }
    }

    /// Open connections, ordered by connection id.
    pub fn connections(&self) -> Vec<ConnectionStats> {
        let clients: Vec<_> = self.inner.clients.lock().values().cloned().collect();
        let mut v: Vec<_> = clients
            .iter()
            .map(|c| {
                let (out_msgs, out_bytes, pending_bytes) = c.out_stats();
                ConnectionStats {
                    cid: c.cid,
                    addr: c.peer,
                    start: c.start,
                    subscriptions: c.subs.lock().len(),
                    in_msgs: c.in_msgs.load(Ordering::Relaxed),
                    in_bytes: c.in_bytes.load(Ordering::Relaxed),
                    out_msgs,
                    out_bytes,
                    pending_bytes,
                }
            })
            .collect();
        v.sort_by_key(|c| c.cid);
        v
    }
}
