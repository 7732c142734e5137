//! Server settings: one plain struct with nats-server's defaults, filled from a config file
//! ([`crate::conf`]), command-line flags ([`crate::flags`]) or a Rust program (the builder).

use std::net::IpAddr;
use std::path::PathBuf;
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
    /// Monitoring listen address (defaults to `host`).
    pub http_host: Option<IpAddr>,
    pub max_payload: usize,
    pub max_control_line: usize,
    pub max_pending: usize,
    pub max_connections: usize,
    /// `0` = unlimited.
    pub max_subscriptions: usize,
    pub ping_interval: Duration,
    pub ping_max: u32,
    pub write_deadline: Duration,
    pub lame_duck_duration: Duration,
    pub lame_duck_grace_period: Duration,
    pub auth: Authorization,
    pub debug: bool,
    pub trace: bool,
    pub logtime: bool,
    pub log_file: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    /// The config file these options came from, if any (for reload).
    pub config_file: Option<PathBuf>,
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
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: 64 * 1024 * 1024,
            max_connections: 64 * 1024,
            max_subscriptions: 0,
            ping_interval: Duration::from_secs(120),
            ping_max: 2,
            write_deadline: Duration::from_secs(10),
            lame_duck_duration: Duration::from_secs(120),
            lame_duck_grace_period: Duration::from_secs(10),
            auth: Authorization::default(),
            debug: false,
            trace: false,
            logtime: true,
            log_file: None,
            pid_file: None,
            config_file: None,
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
            timeout: Duration::from_secs(2),
        }
    }
}

impl Authorization {
    /// True when clients must authenticate.
    pub fn required(&self) -> bool {
        self.token.is_some() || self.user.is_some() || !self.users.is_empty()
    }
}

/// One entry of `authorization { users: [...] }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct User {
    pub user: String,
    /// Plain text or a bcrypt hash.
    pub password: String,
    pub permissions: Option<Permissions>,
}

/// Publish and subscribe permissions of a user.
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

/// `allow_responses`: how many replies per request and for how long (nats-server: 1, 2m... `true` = 1 and unlimited ttl).
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
