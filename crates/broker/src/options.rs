//! Server settings: one plain struct with nats-server's defaults, filled from a config file
//! ([`crate::conf`]), command-line flags ([`crate::flags`]) or a Rust program (the builder).

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Default client port, as nats-server.
pub const DEFAULT_PORT: u16 = 4222;
/// Default monitoring port when monitoring is enabled with `-m` and no port.
pub const DEFAULT_HTTP_PORT: u16 = 8222;

/// Everything that configures a server.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Server name; defaults to the generated server id.
    pub server_name: Option<String>,
    /// Client listen address.
    pub host: IpAddr,
    /// Client port; `0` picks a free port (`-1` on the command line means the same).
    pub port: u16,
    /// `host:port` advertised to clients instead of the listen address.
    pub client_advertise: Option<String>,
    /// Monitoring port (`None`: monitoring off).
    pub http_port: Option<u16>,
    /// Monitoring listen address, for HTTP or HTTPS (defaults to `host`).
    pub http_host: Option<IpAddr>,
    /// HTTPS monitoring port (`None`: off), with the `tls {}` certificate; `0` picks a free
    /// port. Cannot be set together with `http_port`, as in nats-server.
    pub https_port: Option<u16>,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_pending: usize,
    /// `0` refuses every client, as nats-server does for `max_connections: 0`.
    pub max_connections: usize,
    /// `0` = unlimited.
    pub max_subscriptions: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub write_deadline: Duration,
    pub lame_duck_duration: Duration,
    pub lame_duck_grace_period: Duration,
    pub auth: Authorization,
    /// Client TLS (`tls {}`, `--tls*`); `None`: plain connections.
    pub tls: Option<TlsOptions>,
    /// With `tls`, also accept clients that do not start a TLS handshake after INFO
    /// (`allow_non_tls`, top level as in nats-server; also accepted inside `tls {}`).
    /// INFO then says `tls_available` instead of `tls_required`.
    pub allow_non_tls: bool,
    /// Clients that send no credentials are logged in as this user of `auth.users`.
    pub no_auth_user: Option<String>,
    /// Accounts (`accounts {}`): isolated subject spaces. Their users are in `auth.users`
    /// with [`User::account`] set. Empty: every client is in the global account `$G`.
    pub accounts: Vec<AccountOptions>,
    /// The account that receives the server's events and answers its `$SYS.REQ.>`
    /// requests (`system_account`); `None`: `$SYS`, which exists in every server.
    pub system_account: Option<String>,
    /// `no_system_account`: no events, no `$SYS.REQ` services.
    pub no_system_account: bool,
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    pub log_file: Option<PathBuf>,
    /// Log lines as JSON objects instead of nats-server's text lines (midge only:
    /// `log_json` / `--log_json`).
    pub log_json: bool,
    pub pid_file: Option<PathBuf>,
    /// The config file these options came from, if any (for reload).
    pub config_file: Option<PathBuf>,
    /// Routes to other servers (the `cluster {}` block); off unless a port is set.
    pub cluster: ClusterOptions,
    /// Leaf node connections (the `leafnodes {}` block): a port to accept leaf servers on
    /// (the hub role) and remotes to dial (the leaf role).
    pub leafnodes: LeafOptions,
    /// The WebSocket client listener (the `websocket {}` block); off unless a port is set.
    pub websocket: WebsocketOptions,
    /// Reload by itself when the config file changes, including a Kubernetes ConfigMap
    /// volume's `..data` symlink swap (midge only: `config_watch` / `--config_watch`).
    pub config_watch: bool,
    /// How long a client that trades one message at a time keeps polling its socket before
    /// its thread parks (midge only: `spin_wait`, default 100us, `0` off; see `spin.rs`).
    pub spin_wait: Duration,
    /// JetStream (`jetstream {}`, `-js`, `-sd`): `None` when nothing configures it; a
    /// config that only names a store directory (top-level `store_dir`, `-sd`) keeps it here
    /// with `enabled: false`, so that a later `-js` uses it (as nats-server). Not reloadable.
    pub jetstream: Option<JetStreamOptions>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            server_name: None,
            host: IpAddr::from([0, 0, 0, 0]),
            port: DEFAULT_PORT,
            client_advertise: None,
            http_port: None,
            http_host: None,
            https_port: None,
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: 64 * 1024 * 1024,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            spin_wait: crate::spin::DEFAULT_SPIN_WAIT,
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            auth: Authorization::default(),
            tls: None,
            allow_non_tls: false,
            no_auth_user: None,
            accounts: Vec::new(),
            system_account: None,
            no_system_account: false,
            debug: false,
            trace: false,
            logtime: true,
            log_file: None,
            log_json: false,
            pid_file: None,
            config_file: None,
            config_watch: false,
            cluster: ClusterOptions::default(),
            leafnodes: LeafOptions::default(),
            websocket: WebsocketOptions::default(),
            jetstream: None,
        }
    }
}

/// nats-server's default `sync_interval`: how often file streams are fsynced when not
/// `sync: always`. Midge keeps it (see [`JetStreamSync`]).
pub const DEFAULT_JS_SYNC_INTERVAL: Duration = Duration::from_secs(120);

/// How file-backed streams make stored messages durable (`jetstream { sync_interval }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JetStreamSync {
    /// `sync_interval: always`: fsync before the PubAck; an acknowledged message survives
    /// power loss.
    Always,
    /// fsync every interval. Every append reaches the OS at once, so a `kill -9` of the
    /// process loses nothing acknowledged; a power loss or kernel crash can lose what was
    /// acknowledged within the last interval. The default is nats-server's 2 minutes, so
    /// that a config written for nats-server keeps the durability it was written for.
    Interval(Duration),
}

/// The `jetstream {}` block (nats-server's `JetStreamConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct JetStreamOptions {
    /// `enabled` (`jetstream: enabled`, `-js`). False when only a store directory was
    /// given (top-level `store_dir`, `-sd`) or `jetstream { enabled: false }`.
    pub enabled: bool,
    /// `store_dir`: file streams live in `<store_dir>/jetstream/<account>/streams/<name>/`.
    /// `None`: `<temp dir>/nats/jetstream`, as nats-server (with its warning: a reboot may
    /// lose it).
    pub store_dir: Option<PathBuf>,
    /// `max_memory_store`: bytes all memory streams may hold. `None`: 75% of the machine's
    /// memory (256 MiB when it cannot be read), as nats-server.
    pub max_memory: Option<u64>,
    /// `max_file_store`: bytes all file streams may hold. `None`: the free space of the
    /// store directory's file system (1 TiB when it cannot be read), as nats-server.
    pub max_file: Option<u64>,
    /// `domain`: the JetStream domain (`$JS.<domain>.API.>` reaches this server too).
    pub domain: Option<String>,
    pub sync: JetStreamSync,
}

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            enabled: true,
            store_dir: None,
            max_memory: None,
            max_file: None,
            domain: None,
            sync: JetStreamSync::Interval(DEFAULT_JS_SYNC_INTERVAL),
        }
    }
}

/// JetStream limits of one account (`accounts { A: { jetstream: {...} } }`, or an account
/// JWT's `limits`). `-1` is unlimited, as in nats-server's JSON (`$JS.API.INFO` shows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountJetStreamLimits {
    /// Bytes the account's memory streams may hold.
    pub max_memory: i64,
    /// Bytes the account's file streams may hold.
    pub max_store: i64,
    pub max_streams: i64,
    pub max_consumers: i64,
    /// Largest `max_ack_pending` a consumer of the account may have.
    pub max_ack_pending: i64,
    /// Largest `max_bytes` of one memory stream.
    pub memory_max_stream_bytes: i64,
    /// Largest `max_bytes` of one file stream.
    pub store_max_stream_bytes: i64,
    /// Streams must be created with a `max_bytes`.
    pub max_bytes_required: bool,
}

impl Default for AccountJetStreamLimits {
    /// `jetstream: enabled`: everything unlimited.
    fn default() -> Self {
        AccountJetStreamLimits {
            max_memory: -1,
            max_store: -1,
            max_streams: -1,
            max_consumers: -1,
            max_ack_pending: -1,
            memory_max_stream_bytes: -1,
            store_max_stream_bytes: -1,
            max_bytes_required: false,
        }
    }
}

/// The `websocket {}` block: a second client listener speaking NATS inside WebSocket
/// frames (RFC 6455), for browsers and clients behind HTTP proxies. Its clients share the
/// accounts, permissions and subjects of TCP clients.
#[derive(Debug, Clone, PartialEq)]
pub struct WebsocketOptions {
    pub host: IpAddr,
    /// `None`: no WebSocket listener. `Some(0)` picks a free port.
    pub port: Option<u16>,
    /// `host:port` WebSocket clients are told to use instead of the listen address.
    pub advertise: Option<String>,
    /// TLS for the listener (`wss://`); required unless `no_tls`, as in nats-server.
    pub tls: Option<TlsOptions>,
    /// Serve plain `ws://` (for development, or behind a TLS-terminating proxy).
    pub no_tls: bool,
    /// Refuse upgrades whose `Origin` is not this server's own scheme, host and port.
    pub same_origin: bool,
    /// When not empty, only these origins (`scheme://host[:port]`) may upgrade.
    pub allowed_origins: Vec<String>,
    /// Offer permessage-deflate (no context takeover) to clients that ask for it.
    pub compression: bool,
    /// How long a new connection has for its TLS handshake and HTTP upgrade request.
    pub handshake_timeout: Duration,
    /// WebSocket clients that send no credentials are this user of `authorization.users`.
    pub no_auth_user: Option<String>,
    /// Name of the cookie carrying a user JWT (kept for JWT authentication).
    pub jwt_cookie: Option<String>,
    /// `authorization { user, password, token, timeout }` for WebSocket clients only.
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub auth_timeout: Option<Duration>,
}

impl Default for WebsocketOptions {
    fn default() -> Self {
        WebsocketOptions {
            host: IpAddr::from([0, 0, 0, 0]),
            port: None,
            advertise: None,
            tls: None,
            no_tls: false,
            same_origin: false,
            allowed_origins: Vec::new(),
            compression: false,
            handshake_timeout: WebsocketOptions::DEFAULT_HANDSHAKE_TIMEOUT,
            no_auth_user: None,
            jwt_cookie: None,
            user: None,
            password: None,
            token: None,
            auth_timeout: None,
        }
    }
}

impl WebsocketOptions {
    /// nats-server has no upgrade deadline unless one is set; midge bounds it so a socket
    /// that never sends its request cannot stay open.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

    /// True when the server listens for WebSocket clients.
    pub fn enabled(&self) -> bool {
        self.port.is_some()
    }

    /// True when the block's own `authorization` or `no_auth_user` replaces the server's
    /// for WebSocket clients (nats-server's "auth override").
    pub fn auth_override(&self) -> bool {
        self.user.is_some() || self.token.is_some() || self.no_auth_user.is_some()
    }
}

/// Default route port, as nats-server (used when a route URL has no port).
pub const DEFAULT_ROUTE_PORT: u16 = 6222;

/// The `cluster {}` block. As in nats-server, clustering is on only when a port is set
/// (`port: None`); `Some(0)` picks a free port.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterOptions {
    /// Cluster name; every member must use the same. `None`: generated, and (as nats-server's
    /// "dynamic" name) replaced by the name of the first peer that has one configured.
    pub name: Option<String>,
    pub host: IpAddr,
    pub port: Option<u16>,
    /// Route URLs to solicit, as written (`nats://[user:pass@]host:port`); host names are
    /// resolved on every connection attempt.
    pub routes: Vec<String>,
    /// Credentials peers must send in their route CONNECT.
    pub user: Option<String>,
    pub password: Option<String>,
    /// How long an accepted route has to send CONNECT when credentials are required.
    pub auth_timeout: Duration,
    /// `host:port` other servers should use to reach this one (gossiped to them).
    pub advertise: Option<String>,
    /// Do not tell clients about the other servers' client URLs.
    pub no_advertise: bool,
    /// Connection attempts for routes learned by gossip (configured routes retry forever).
    pub connect_retries: u32,
    /// TLS for routes (`cluster { tls {} }`), both ways: as nats-server, each side presents
    /// its certificate and verifies the other's against `ca_file` (required), whatever
    /// `verify` says.
    pub tls: Option<TlsOptions>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: None,
            host: IpAddr::from([0, 0, 0, 0]),
            port: None,
            routes: Vec::new(),
            user: None,
            password: None,
            auth_timeout: Duration::from_secs(2),
            advertise: None,
            no_advertise: false,
            connect_retries: 0,
            tls: None,
        }
    }
}

impl ClusterOptions {
    /// True when this server listens for routes (and solicits its configured ones).
    pub fn enabled(&self) -> bool {
        self.port.is_some()
    }
}

/// `leafnodes {}`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafOptions {
    pub host: IpAddr,
    /// Accept leaf node connections on this port (`None`: do not listen).
    pub port: Option<u16>,
    /// `host:port` leaf servers should use to reach this one (sent as `leafnode_urls`).
    pub advertise: Option<String>,
    pub no_advertise: bool,
    /// A single user leaf servers must log in as (bound to `$G`, or to `account`).
    pub user: Option<String>,
    pub password: Option<String>,
    pub account: Option<String>,
    /// Users leaf servers may log in as, each bound to an account.
    pub users: Vec<User>,
    pub auth_timeout: Duration,
    /// Hubs to dial.
    pub remotes: Vec<RemoteLeaf>,
    /// TLS for accepted leaf connections (`leafnodes { tls {} }`): every leaf must use it.
    pub tls: Option<TlsOptions>,
    /// Delay before dialling a remote again after its connection ended or failed.
    pub reconnect: Duration,
}

impl Default for LeafOptions {
    fn default() -> Self {
        LeafOptions {
            host: IpAddr::from([0, 0, 0, 0]),
            port: None,
            advertise: None,
            no_advertise: false,
            user: None,
            password: None,
            account: None,
            users: Vec::new(),
            auth_timeout: Duration::from_secs(2),
            remotes: Vec::new(),
            tls: None,
            reconnect: Duration::from_secs(1),
        }
    }
}

/// Default port of a leaf node listener (nats-server's).
pub const DEFAULT_LEAF_PORT: u16 = 7422;

/// One entry of `leafnodes { remotes: [...] }`: a hub to dial, with the local account its
/// connection is bound to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteLeaf {
    /// `nats-leaf://[user:pass@]host[:port]` (or `nats://`); tried in turn.
    pub urls: Vec<String>,
    /// The local account (`None`: `$G`).
    pub account: Option<String>,
    /// Subjects (wildcards allowed) this server does not take from the hub: no interest
    /// in them is sent, messages on them are dropped.
    pub deny_imports: Vec<String>,
    /// Subjects this server does not send to the hub.
    pub deny_exports: Vec<String>,
    /// TLS to the hub (`tls {}` in the remote, or a `tls://` URL).
    pub tls: Option<RemoteTls>,
}

/// TLS of a connection this server dials: the CA the server's certificate must chain to,
/// and optionally a client certificate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RemoteTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub timeout: Duration,
}

impl RemoteLeaf {
    /// The parsed URLs (checked at load).
    pub fn parsed_urls(&self) -> Vec<RouteUrl> {
        self.urls
            .iter()
            .filter_map(|u| RouteUrl::parse_leaf(u).ok())
            .collect()
    }
}

/// A route URL: `nats://[user[:pass]@]host[:port]` (also `nats-route://`, or no scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteUrl {
    pub user: Option<String>,
    pub password: Option<String>,
    /// A DNS name or an IP address (without brackets).
    pub host: String,
    pub port: u16,
}

impl RouteUrl {
    /// A leaf node remote URL: `nats-leaf://`, `nats://` or no scheme; port 7422 if none.
    pub fn parse_leaf(text: &str) -> Result<RouteUrl, String> {
        let (scheme, rest) = text.split_once("://").unwrap_or(("nats", text));
        match scheme.to_ascii_lowercase().as_str() {
            "nats-leaf" | "nats" | "leaf" | "tls" => {}
            "ws" | "wss" => {
                return Err(format!(
                    "invalid leaf node URL \"{text}\": {scheme}:// is not supported by midge yet"
                ))
            }
            _ => {
                return Err(format!(
                    "invalid leaf node URL \"{text}\": the scheme must be nats-leaf://"
                ))
            }
        }
        let has_port = {
            let host = rest
                .rsplit_once('@')
                .map_or(rest, |(_, h)| h)
                .trim_end_matches('/');
            if let Some(v6) = host.strip_prefix('[') {
                v6.split_once(']')
                    .is_some_and(|(_, after)| after.starts_with(':'))
            } else {
                host.contains(':')
            }
        };
        let mut url = RouteUrl::parse(&format!("nats://{rest}"))
            .map_err(|e| e.replace("route URL", "leaf node URL"))?;
        if !has_port {
            url.port = DEFAULT_LEAF_PORT;
        }
        Ok(url)
    }

    pub fn parse(text: &str) -> Result<RouteUrl, String> {
        let bad = |why: &str| format!("invalid route URL \"{text}\": {why}");
        let rest = match text.split_once("://") {
            Some((scheme, rest)) => {
                let scheme = scheme.to_ascii_lowercase();
                if !matches!(scheme.as_str(), "nats" | "nats-route" | "route" | "tcp") {
                    return Err(bad("the scheme must be nats://"));
                }
                rest
            }
            None => text,
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(bad("garbage after ]")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() || host.contains(['/', ' ', '?', '#']) {
            return Err(bad("missing or malformed host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            None => DEFAULT_ROUTE_PORT,
        };
        Ok(RouteUrl {
            user,
            password,
            host: host.to_string(),
            port,
        })
    }

    /// `host:port` with brackets around IPv6 addresses, for dialing and comparisons.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl Options {
    /// Whether HTTP(S) monitoring is served (`http_port` or `https_port`).
    pub fn monitoring(&self) -> bool {
        self.http_port.is_some() || self.https_port.is_some()
    }

    /// How long a client has to send CONNECT. As nats-server: with TLS and no timeout of its
    /// own, the TLS timeout plus one second, so a slow handshake does not eat the auth time.
    /// (An explicit timeout equal to the 2s default cannot be told apart from none.)
    pub fn auth_timeout(&self) -> Duration {
        match &self.tls {
            Some(tls) if self.auth.timeout == Authorization::default().timeout => {
                tls.timeout + Duration::from_secs(1)
            }
            _ => self.auth.timeout,
        }
    }
}

/// Client TLS settings: the `tls {}` block of a config file or the `--tls*` flags.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsOptions {
    /// PEM certificate chain presented to clients, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to (required with `verify`).
    pub ca_file: Option<PathBuf>,
    /// Require and verify a client certificate.
    pub verify: bool,
    /// How long a client has for the TLS handshake (nats-server's default: 2s).
    pub timeout: Duration,
    /// Clients start TLS right away and INFO comes encrypted (`handshake_first`, for clients
    /// with a TLS-first option); plain clients are not served.
    pub handshake_first: bool,
    /// The client's user is the one its certificate names (`verify_and_map`; implies
    /// `verify`): SAN e-mail, SAN DNS name, SAN URI, then the subject DN, matched against
    /// the `users` list by name.
    pub verify_and_map: bool,
    /// Peers whose leaf certificate's public key is not listed are refused
    /// (`pinned_certs`: lower-case hex SHA-256 of the SubjectPublicKeyInfo DER). `None`: no
    /// pinning.
    pub pinned_certs: Option<std::collections::BTreeSet<String>>,
}

impl TlsOptions {
    /// Default TLS timeout, as nats-server.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// TLS with this certificate and key, no client verification.
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>) -> Self {
        TlsOptions {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            ca_file: None,
            verify: false,
            timeout: Self::DEFAULT_TIMEOUT,
            handshake_first: false,
            verify_and_map: false,
            pinned_certs: None,
        }
    }
}

/// Client authentication: at most one of token, single user, or a users list.
#[derive(Debug, Clone, PartialEq)]
pub struct Authorization {
    pub token: Option<String>,
    pub user: Option<String>,
    /// Plain text, or a bcrypt hash (`$2a$`, `$2b$`, `$2y$`...).
    pub password: Option<String>,
    pub users: Vec<User>,
    /// Users identified by a public nkey (`users = [{nkey: "U..."}]`).
    pub nkeys: Vec<NkeyUser>,
    /// Operator mode: users present JWTs of accounts a trusted operator signed.
    pub operator: Option<Arc<OperatorMode>>,
    /// How long a client has to send CONNECT when auth is required.
    pub timeout: Duration,
}

impl Default for Authorization {
    fn default() -> Self {
        Authorization {
            token: None,
            user: None,
            password: None,
            users: Vec::new(),
            nkeys: Vec::new(),
            operator: None,
            timeout: Duration::from_secs(2),
        }
    }
}

impl Authorization {
    /// True when clients must authenticate.
    pub fn required(&self) -> bool {
        self.token.is_some()
            || self.user.is_some()
            || !self.users.is_empty()
            || !self.nkeys.is_empty()
            || self.operator.is_some()
    }

    /// True when INFO carries a nonce for clients to sign (nkey users or operator mode).
    pub fn nonce_required(&self) -> bool {
        !self.nkeys.is_empty() || self.operator.is_some()
    }
}

/// Operator mode (`operator`, `resolver`, `resolver_preload`): the server trusts operators,
/// accounts are account JWTs those operators signed, and users log in with user JWTs
/// (`.creds` files) that an account signed. The accounts also appear in
/// [`Options::accounts`] (named by public key) with their exports, imports and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorMode {
    /// The trusted operators.
    pub operators: Vec<crate::jwt::OperatorClaims>,
    pub resolver: Resolver,
    /// Account public key -> its verified claims.
    pub accounts: std::collections::BTreeMap<String, crate::jwt::AccountClaims>,
}

impl OperatorMode {
    /// The directory of a directory resolver.
    pub fn resolver_dir(&self) -> Option<&std::path::Path> {
        match &self.resolver {
            Resolver::Full { dir, .. } => Some(dir),
            Resolver::Memory => None,
        }
    }

    /// Whether `key` is a trusted operator or one of its signing keys.
    pub fn trusts(&self, key: &str) -> bool {
        self.operators
            .iter()
            .any(|o| o.sub == key || o.nats.signing_keys.iter().any(|k| k == key))
    }
}

impl OperatorMode {
    /// The broker's accounts for the account JWTs (plus an empty system account when no
    /// JWT is known for it), with warnings for what was left out: imports of unknown
    /// accounts, imports their exporter does not allow, activation tokens.
    pub fn account_options(&self, system: Option<&str>) -> (Vec<AccountOptions>, Vec<String>) {
        let mut warnings = Vec::new();
        for (key, claims) in &self.accounts {
            for issue in claims.validation_issues() {
                warnings.push(format!("account {key}: {issue}; its users are refused"));
            }
        }
        let mut accounts: Vec<AccountOptions> = self
            .accounts
            .iter()
            .map(|(key, claims)| account_from_jwt(key, claims, &mut warnings))
            .collect();
        let all = accounts.clone();
        for acc in &mut accounts {
            acc.imports
                .retain(|import| match check_import(&all, &acc.name, import) {
                    Ok(()) => true,
                    Err(message) => {
                        warnings.push(format!("account {}: import left out: {message}", acc.name));
                        false
                    }
                });
        }
        if let Some(sys) = system {
            if !accounts.iter().any(|a| a.name == sys) {
                accounts.push(AccountOptions {
                    name: sys.to_string(),
                    ..AccountOptions::default()
                });
            }
        }
        (accounts, warnings)
    }
}

/// The broker's account for a verified account JWT: exports, imports and limits. A limit
/// of -1 (unlimited) is the broker's 0.
fn account_from_jwt(
    key: &str,
    claims: &crate::jwt::AccountClaims,
    warnings: &mut Vec<String>,
) -> AccountOptions {
    let limit = |n: i64| usize::try_from(n).unwrap_or(0);
    let l = &claims.nats.limits;
    let mut acc = AccountOptions {
        name: key.to_string(),
        limits: AccountLimits {
            max_connections: limit(l.conn),
            max_subscriptions: limit(l.subs),
            max_payload: limit(l.payload),
        },
        jetstream: l.jetstream_limits(),
        ..AccountOptions::default()
    };
    let kind = |t: &str| {
        if t.eq_ignore_ascii_case("service") {
            ExportKind::Service
        } else {
            ExportKind::Stream
        }
    };
    for e in &claims.nats.exports {
        acc.exports.push(Export {
            kind: kind(&e.kind),
            subject: e.subject.clone(),
            // Activation tokens are not supported: a token-only export is private to nobody.
            accounts: e.token_req.then(Vec::new),
            response_type: match e.response_type.to_ascii_lowercase().as_str() {
                "stream" => ResponseType::Stream,
                "chunked" => ResponseType::Chunked,
                _ => ResponseType::Singleton,
            },
            response_threshold: if e.response_threshold == 0 {
                DEFAULT_RESPONSE_THRESHOLD
            } else {
                Duration::from_nanos(e.response_threshold)
            },
        });
    }
    for i in &claims.nats.imports {
        if !i.token.is_empty() {
            warnings.push(format!(
                "account {key}: import of {} with an activation token left out (not supported)",
                i.subject
            ));
            continue;
        }
        let local = (!i.local_subject.is_empty()).then(|| i.local_subject.clone());
        let import = match kind(&i.kind) {
            ExportKind::Stream => Import {
                kind: ExportKind::Stream,
                account: i.account.clone(),
                subject: i.subject.clone(),
                prefix: (local.is_none() && !i.to.is_empty()).then(|| i.to.clone()),
                to: local,
            },
            ExportKind::Service => Import {
                kind: ExportKind::Service,
                account: i.account.clone(),
                subject: i.subject.clone(),
                to: local.or_else(|| (!i.to.is_empty()).then(|| i.to.clone())),
                prefix: None,
            },
        };
        acc.imports.push(import);
    }
    acc
}

/// Where account JWTs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// `resolver: MEMORY`: the `resolver_preload` accounts, fixed until a reload.
    Memory,
    /// `resolver: {type: full, dir: ...}`: account JWTs stored as `<key>.jwt` files in
    /// `dir`, updated by claim pushes on `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE`.
    Full {
        dir: PathBuf,
        delete: ResolverDelete,
    },
}

/// What `$SYS.REQ.CLAIMS.DELETE` may do to a directory resolver's JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolverDelete {
    /// `allow_delete: false` (the default): refused.
    #[default]
    No,
    /// `allow_delete: true`: `<key>.jwt` becomes `<key>.jwt.deleted`.
    Rename,
    /// `allow_delete: true, hard_delete: true`: the file is removed.
    Hard,
}

/// A user of `users = [...]` identified by a public user nkey (`U...`) instead of a name and
/// password: the client proves it holds the seed by signing the nonce of its INFO.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NkeyUser {
    pub nkey: String,
    pub permissions: Option<Permissions>,
    /// The account the user belongs to; `None`: `$G`.
    pub account: Option<String>,
}

/// Whether `key` is a well-formed public user nkey (`U` + base32 of the key and a CRC).
pub fn is_public_user_nkey(key: &str) -> bool {
    nkeys::KeyPair::from_public_key(key)
        .is_ok_and(|kp| kp.key_pair_type() == nkeys::KeyPairType::User)
}

/// One entry of `authorization { users: [...] }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    pub user: String,
    /// Plain text or a bcrypt hash.
    pub password: String,
    pub permissions: Option<Permissions>,
    /// The account the user belongs to (`accounts { A: { users: [...] } }`); `None`: `$G`.
    pub account: Option<String>,
}

/// One account of `accounts {}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AccountOptions {
    pub name: String,
    /// What other accounts may import from this one (`exports: [...]`).
    pub exports: Vec<Export>,
    /// What this account takes from others (`imports: [...]`).
    pub imports: Vec<Import>,
    /// `limits {}` (or the same keys directly in the account).
    pub limits: AccountLimits,
    /// `jetstream: enabled` or `jetstream {max_mem, max_file, max_streams, max_consumers}`;
    /// `None`: JetStream is off for the account (unless no account is configured at all:
    /// then the global account has it, see [`Options::jetstream_accounts`]).
    pub jetstream: Option<AccountJetStreamLimits>,
}

/// Per-account limits; 0 means no limit of the account's own (the server-wide one holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountLimits {
    /// Client connections of the account on this server.
    pub max_connections: usize,
    /// Subscriptions per client connection of the account.
    pub max_subscriptions: usize,
    /// Largest message a client of the account may publish.
    pub max_payload: usize,
}

/// Stream or service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    Stream,
    Service,
}

/// How many responses a service request may get back across accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseType {
    /// One response, then the reply mapping is gone.
    #[default]
    Singleton,
    /// Any number of responses until the threshold passes.
    Stream,
    /// As `Stream` (a response split in chunks).
    Chunked,
}

/// Default time a stream or chunked service response mapping lives (nats-server's).
pub const DEFAULT_RESPONSE_THRESHOLD: Duration = Duration::from_secs(120);

/// One entry of an account's `exports`.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub kind: ExportKind,
    /// The subject (wildcards allowed) others may import.
    pub subject: String,
    /// `accounts: [...]`: only these may import it (a private export); `None`: anyone.
    pub accounts: Option<Vec<String>>,
    /// Services only.
    pub response_type: ResponseType,
    /// Services only: how long stream/chunked response mappings live.
    pub response_threshold: Duration,
}

/// One entry of an account's `imports`.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub kind: ExportKind,
    /// The exporting account.
    pub account: String,
    /// The subject in the exporting account.
    pub subject: String,
    /// The subject in the importing account (`to`); `None`: the same as `subject`
    /// (with `prefix` prepended for a stream import).
    pub to: Option<String>,
    /// Stream imports: prepended (with a dot) to the subject.
    pub prefix: Option<String>,
}

impl Import {
    /// The subject this import has in the importing account.
    pub fn local_subject(&self) -> String {
        match (&self.prefix, &self.to) {
            (Some(p), _) => {
                let p = p.strip_suffix('.').unwrap_or(p);
                format!("{p}.{}", self.subject)
            }
            (None, Some(to)) => to.clone(),
            (None, None) => self.subject.clone(),
        }
    }
}

/// Publish and subscribe permissions of a user.
///
/// As in nats-server, `allow_responses` with no publish allow list means the user may publish
/// only replies to requests it received (the server must not read a missing allow list as
/// "allow all" in that case).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Permissions {
    pub publish: Option<SubjectPermission>,
    pub subscribe: Option<SubjectPermission>,
    /// Allows publishing to reply subjects of requests this user received.
    pub allow_responses: Option<ResponsePermission>,
}

/// Allow and deny lists of subjects (wildcards allowed). An empty allow list allows all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubjectPermission {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// `allow_responses`: how many replies per request and for how long. `true` in a config means
/// the default: 1 reply within 2 minutes. `max_msgs == 0` means unlimited replies, a zero
/// `expires` means no time limit (nats-server writes both as negative numbers).
#[derive(Debug, Clone, PartialEq)]
pub struct ResponsePermission {
    pub max_msgs: usize,
    pub expires: Duration,
}

impl Default for ResponsePermission {
    fn default() -> Self {
        ResponsePermission {
            max_msgs: 1,
            expires: Duration::from_secs(120),
        }
    }
}

/// Options that are fine one by one but not together (nats-server's `validateOptions`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "lame_duck_grace_period ({grace:?}) must be shorter than lame_duck_duration ({duration:?})"
    )]
    LameDuckGrace { grace: Duration, duration: Duration },
    #[error("max_payload ({max_payload}) cannot be higher than max_pending ({max_pending})")]
    PayloadOverPending {
        max_payload: usize,
        max_pending: usize,
    },
    #[error("server_name cannot contain spaces")]
    ServerNameSpaces,
    #[error("authorization: {0}")]
    Auth(String),
    #[error("no_auth_user \"{0}\" is not one of the authorization users")]
    UnknownNoAuthUser(String),
    #[error("invalid permissions for user \"{user}\": {message}")]
    Permissions { user: String, message: String },
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("leafnodes: {0}")]
    Leaf(String),
    #[error("user \"{user}\" is in account \"{account}\", which is not defined")]
    UnknownAccount { user: String, account: String },
    #[error("account \"{account}\": {message}")]
    Import { account: String, message: String },
    #[error("system_account \"{0}\" is not one of the accounts")]
    UnknownSystemAccount(String),
    #[error("invalid account name \"{0}\": it must be a non-empty subject token")]
    AccountName(String),
    #[error("https_port requires TLS: a tls {{}} block with cert_file and key_file")]
    HttpsWithoutTls,
    #[error("http_port ({http}) and https_port ({https}) cannot both be set: choose one")]
    HttpAndHttps { http: u16, https: u16 },
    #[error("websocket: {0}")]
    Websocket(String),
}

impl Options {
    /// The JetStream settings when JetStream is on.
    pub fn jetstream_enabled(&self) -> Option<&JetStreamOptions> {
        self.jetstream.as_ref().filter(|js| js.enabled)
    }

    /// The JetStream limits of account `name`, `None` when JetStream is off for it. As
    /// nats-server: with JetStream on and no account configured (the global account only),
    /// the global account has JetStream without limits; otherwise the accounts that say so.
    /// The system account never has it.
    pub fn jetstream_account_limits(&self, name: &str) -> Option<AccountJetStreamLimits> {
        self.jetstream_enabled()?;
        if self.system_account_name() == Some(name) {
            return None;
        }
        let configured = self
            .accounts
            .iter()
            .filter(|a| Some(a.name.as_str()) != self.system_account_name())
            .count();
        if configured == 0 && name == crate::core::GLOBAL_ACCOUNT {
            return Some(AccountJetStreamLimits::default());
        }
        self.accounts
            .iter()
            .find(|a| a.name == name)
            .and_then(|a| a.jetstream)
    }

    /// Names of the accounts with JetStream on.
    pub fn jetstream_accounts(&self) -> Vec<String> {
        let mut names: Vec<String> = std::iter::once(crate::core::GLOBAL_ACCOUNT)
            .chain(self.account_names())
            .filter(|n| self.jetstream_account_limits(n).is_some())
            .map(str::to_string)
            .collect();
        names.dedup();
        names
    }

    /// Names of the configured accounts (the global account is always there too).
    pub fn account_names(&self) -> impl Iterator<Item = &str> {
        self.accounts.iter().map(|a| a.name.as_str())
    }

    /// The system account's name; `None` with `no_system_account`.
    pub fn system_account_name(&self) -> Option<&str> {
        if self.no_system_account {
            return None;
        }
        Some(
            self.system_account
                .as_deref()
                .unwrap_or(crate::core::DEFAULT_SYSTEM_ACCOUNT),
        )
    }

    /// Checks the rules that span several options; run it after the config file and the
    /// command-line flags have both been applied.
    pub fn validate(&self) -> Result<(), OptionsError> {
        if !self.lame_duck_duration.is_zero()
            && self.lame_duck_grace_period >= self.lame_duck_duration
        {
            return Err(OptionsError::LameDuckGrace {
                grace: self.lame_duck_grace_period,
                duration: self.lame_duck_duration,
            });
        }
        if self.max_payload > self.max_pending {
            return Err(OptionsError::PayloadOverPending {
                max_payload: self.max_payload,
                max_pending: self.max_pending,
            });
        }
        if self.server_name.as_deref().is_some_and(|n| n.contains(' ')) {
            return Err(OptionsError::ServerNameSpaces);
        }
        self.auth.check_combination().map_err(OptionsError::Auth)?;
        if let (Some(http), Some(https)) = (self.http_port, self.https_port) {
            return Err(OptionsError::HttpAndHttps { http, https });
        }
        if self.https_port.is_some() && self.tls.is_none() {
            return Err(OptionsError::HttpsWithoutTls);
        }
        for user in &self.auth.users {
            let Some(perms) = &user.permissions else {
                continue;
            };
            let lists = [
                (&perms.publish, false, "publish"),
                (&perms.subscribe, true, "subscribe"),
            ];
            for (perm, allow_queue, what) in lists {
                let subjects = perm.iter().flat_map(|p| p.allow.iter().chain(&p.deny));
                for subject in subjects {
                    check_permission_subject(subject, allow_queue).map_err(|message| {
                        OptionsError::Permissions {
                            user: user.user.clone(),
                            message: format!("{what}: {message}"),
                        }
                    })?;
                }
            }
        }
        for user in &self.auth.nkeys {
            let Some(perms) = &user.permissions else {
                continue;
            };
            let lists = [
                (&perms.publish, false, "publish"),
                (&perms.subscribe, true, "subscribe"),
            ];
            for (perm, allow_queue, what) in lists {
                let subjects = perm.iter().flat_map(|p| p.allow.iter().chain(&p.deny));
                for subject in subjects {
                    check_permission_subject(subject, allow_queue).map_err(|message| {
                        OptionsError::Permissions {
                            user: user.nkey.clone(),
                            message: format!("{what}: {message}"),
                        }
                    })?;
                }
            }
        }
        for acc in &self.accounts {
            let bad = acc.name.is_empty()
                || acc
                    .name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || matches!(b, b'.' | b'*' | b'>'));
            if bad {
                return Err(OptionsError::AccountName(acc.name.clone()));
            }
        }
        let user_accounts = self
            .auth
            .users
            .iter()
            .map(|u| (&u.user, &u.account))
            .chain(self.auth.nkeys.iter().map(|u| (&u.nkey, &u.account)));
        for (user, account) in user_accounts {
            if let Some(account) = account {
                let known = account == crate::core::GLOBAL_ACCOUNT
                    || self.accounts.iter().any(|a| &a.name == account);
                if !known {
                    return Err(OptionsError::UnknownAccount {
                        user: user.clone(),
                        account: account.clone(),
                    });
                }
            }
        }
        for acc in &self.accounts {
            for import in &acc.imports {
                check_import(&self.accounts, &acc.name, import).map_err(|message| {
                    OptionsError::Import {
                        account: acc.name.clone(),
                        message,
                    }
                })?;
            }
        }
        if let Some(name) = &self.system_account {
            let known = name == crate::core::DEFAULT_SYSTEM_ACCOUNT
                || self.accounts.iter().any(|a| &a.name == name);
            if !known {
                return Err(OptionsError::UnknownSystemAccount(name.clone()));
            }
        }
        if let Some(name) = &self.no_auth_user {
            if !self.auth.users.iter().any(|u| &u.user == name) {
                return Err(OptionsError::UnknownNoAuthUser(name.clone()));
            }
        }
        for route in &self.cluster.routes {
            RouteUrl::parse(route).map_err(OptionsError::Cluster)?;
        }
        let leaf_accounts = self
            .leafnodes
            .remotes
            .iter()
            .filter_map(|r| r.account.as_ref())
            .chain(self.leafnodes.account.iter())
            .chain(
                self.leafnodes
                    .users
                    .iter()
                    .filter_map(|u| u.account.as_ref()),
            );
        for account in leaf_accounts {
            let known = account == crate::core::GLOBAL_ACCOUNT
                || self.accounts.iter().any(|a| &a.name == account);
            if !known {
                return Err(OptionsError::Leaf(format!(
                    "account \"{account}\" is not defined"
                )));
            }
        }
        for remote in &self.leafnodes.remotes {
            if remote.urls.is_empty() {
                return Err(OptionsError::Leaf("a remote needs a url".into()));
            }
            for subject in remote.deny_imports.iter().chain(&remote.deny_exports) {
                if !midge_proto::subject::is_valid_subject(subject.as_bytes()) {
                    return Err(OptionsError::Leaf(format!(
                        "invalid deny subject \"{subject}\""
                    )));
                }
            }
            for url in &remote.urls {
                RouteUrl::parse_leaf(url).map_err(OptionsError::Leaf)?;
            }
        }
        if self
            .cluster
            .name
            .as_deref()
            .is_some_and(|n| n.contains(' '))
        {
            return Err(OptionsError::Cluster("name cannot contain spaces".into()));
        }
        self.validate_websocket().map_err(OptionsError::Websocket)?;
        Ok(())
    }

    /// nats-server's `validateWebsocketOptions`.
    fn validate_websocket(&self) -> Result<(), String> {
        let ws = &self.websocket;
        if !ws.enabled() {
            return Ok(());
        }
        if ws.tls.is_none() && !ws.no_tls {
            return Err(
                "websocket requires TLS configuration (a tls {} block, or no_tls: true)".into(),
            );
        }
        for origin in &ws.allowed_origins {
            crate::ws::Origin::parse(origin)
                .map_err(|e| format!("allowed origin \"{origin}\": {e}"))?;
        }
        if let Some(name) = &ws.no_auth_user {
            if !self.auth.users.iter().any(|u| &u.user == name) {
                return Err(format!(
                    "no_auth_user \"{name}\" is not one of the authorization users"
                ));
            }
        }
        if !self.auth.users.is_empty() {
            if ws.user.is_some() {
                return Err(
                    "websocket authentication username not compatible with presence of users"
                        .into(),
                );
            }
            if ws.token.is_some() {
                return Err(
                    "websocket authentication token not compatible with presence of users".into(),
                );
            }
        }
        if ws.user.is_some() && ws.token.is_some() {
            return Err("authorization: cannot have a user/password and a token".into());
        }
        Ok(())
    }
}

impl Authorization {
    /// nats-server accepts one way to authenticate: a token, a single user, or a users list.
    pub fn check_combination(&self) -> Result<(), String> {
        let single = self.user.is_some() || self.password.is_some();
        if single && self.token.is_some() {
            return Err("cannot have a user/password and a token".into());
        }
        let list = !self.users.is_empty() || !self.nkeys.is_empty();
        if list && single {
            return Err("cannot have a single user/password and a users array".into());
        }
        if list && self.token.is_some() {
            return Err("cannot have a token and a users array".into());
        }
        for (i, user) in self.users.iter().enumerate() {
            if self.users[..i].iter().any(|u| u.user == user.user) {
                return Err(format!("duplicate user \"{}\"", user.user));
            }
        }
        for (i, user) in self.nkeys.iter().enumerate() {
            if !is_public_user_nkey(&user.nkey) {
                return Err(format!("\"{}\" is not a valid public user nkey", user.nkey));
            }
            if self.nkeys[..i].iter().any(|u| u.nkey == user.nkey) {
                return Err(format!("duplicate nkey user \"{}\"", user.nkey));
            }
        }
        Ok(())
    }
}

/// A listen address. Only `localhost` is accepted as a name: midge binds to addresses, and a
/// name that resolves differently later would be a surprise.
pub fn parse_host(text: &str) -> Result<IpAddr, String> {
    if text.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    text.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("\"{text}\" is not an IP address"))
}

/// A subject in a permission list: no empty tokens, a `>` token only last; subscribe lists may add a
/// queue group after a space ("foo.* workers").
pub fn check_permission_subject(text: &str, allow_queue: bool) -> Result<(), String> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let valid_subject = |s: &str| {
        let tokens: Vec<&str> = s.split('.').collect();
        tokens
            .iter()
            .enumerate()
            .all(|(i, t)| !t.is_empty() && (*t != ">" || i == tokens.len() - 1))
    };
    match parts.as_slice() {
        [subject] if valid_subject(subject) && !text.contains(char::is_whitespace) => Ok(()),
        [subject, queue] if allow_queue => {
            if !valid_subject(subject) {
                Err(format!("subject \"{subject}\" is not a valid subject"))
            } else if !valid_subject(queue) {
                Err(format!("queue \"{queue}\" is not a valid queue"))
            } else {
                Ok(())
            }
        }
        _ => Err(format!("subject \"{text}\" is not a valid subject")),
    }
}

/// Checks one import against the exports of the account it names, with nats-server's
/// messages (`Error adding stream import "x": stream import not authorized`).
pub fn check_import(
    accounts: &[AccountOptions],
    importer: &str,
    import: &Import,
) -> Result<(), String> {
    let what = match import.kind {
        ExportKind::Stream => "stream",
        ExportKind::Service => "service",
    };
    let subject = import.subject.as_str();
    if !midge_proto::subject::is_valid_subject(subject.as_bytes()) {
        return Err(format!("invalid {what} import subject {subject:?}"));
    }
    let Some(exporter) = accounts.iter().find(|a| a.name == import.account) else {
        return Err(format!(
            "{:?} account not defined for {what} import",
            import.account
        ));
    };
    if let Some(p) = &import.prefix {
        if import.kind == ExportKind::Service {
            return Err("a service import cannot have a 'prefix'".into());
        }
        if import.to.is_some() {
            return Err("Stream import can not have a 'prefix' and a 'to' property".into());
        }
        let p = p.strip_suffix('.').unwrap_or(p);
        if p.is_empty() || !midge_proto::subject::is_valid_literal_subject(p.as_bytes()) {
            return Err(format!(
                "Error adding stream import {subject:?}: stream import prefix can not contain wildcard tokens"
            ));
        }
    }
    if let Some(to) = &import.to {
        let literal = midge_proto::subject::is_literal(subject.as_bytes());
        if !midge_proto::subject::is_valid_subject(to.as_bytes()) {
            return Err(format!("invalid {what} import 'to' subject {to:?}"));
        }
        if to != subject && !(literal && midge_proto::subject::is_literal(to.as_bytes())) {
            return Err(format!(
                "{what} import of {subject:?} to {to:?}: mapping a wildcard subject to another is not supported by midge yet"
            ));
        }
    }
    let authorized = exporter.exports.iter().any(|e| {
        e.kind == import.kind
            && midge_proto::subject::subset_match(subject.as_bytes(), e.subject.as_bytes())
            && e.accounts
                .as_ref()
                .is_none_or(|list| list.iter().any(|a| a == importer))
    });
    if !authorized {
        return Err(format!(
            "Error adding {what} import {subject:?}: {what} import not authorized"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod route_url_tests {
    use super::RouteUrl;

    #[test]
    fn forms() {
        let u = RouteUrl::parse("nats://ru:rp@demo-0.demo-headless.ns.svc:6222").expect("url");
        assert_eq!(
            (u.user.as_deref(), u.password.as_deref()),
            (Some("ru"), Some("rp"))
        );
        assert_eq!(u.host_port(), "demo-0.demo-headless.ns.svc:6222");
        assert_eq!(
            RouteUrl::parse("nats-route://10.0.0.1:7/")
                .expect("url")
                .host_port(),
            "10.0.0.1:7"
        );
        assert_eq!(RouteUrl::parse("host").expect("url").port, 6222);
        let v6 = RouteUrl::parse("nats://[::1]:6222").expect("url");
        assert_eq!(
            (v6.host.as_str(), v6.host_port().as_str()),
            ("::1", "[::1]:6222")
        );
        for bad in ["http://x:1", "nats://:1", "nats://x:port", "nats://[::1"] {
            assert!(RouteUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
