//! nats-server's command line, read with Go `flag` package rules so that scripts written for
//! nats-server work unchanged: one or two dashes, `-flag=value` or `-flag value`, booleans
//! without a value (`-T=false` to turn one off), parsing stops at `--` or the first argument
//! that is not a flag. Flags override the config file.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::conf::ConfError;
use crate::options::{parse_host, JetStreamOptions, Options, TlsOptions};

/// What the command line asks for.
// Built once per process, so the size of `Run` does not matter; boxing would only make
// matching on it clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Flags),
    Help,
    Version,
    /// `--signal cmd[=pid|pidfile]`: signal a running server and exit.
    Signal {
        command: SignalCommand,
        /// A pid, or a file holding one; `None` means "the only running midge".
        pid: Option<String>,
    },
}

/// The commands `--signal` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalCommand {
    /// Graceful shutdown (SIGINT).
    Stop,
    /// Immediate shutdown (SIGINT too, as nats-server).
    Quit,
    /// SIGTERM.
    Term,
    /// Reopen the log file (SIGUSR1).
    Reopen,
    /// Reload the config file (SIGHUP).
    Reload,
    /// Enter lame duck mode (SIGUSR2).
    Ldm,
}

/// The flags given; `None` means "not given, keep the config file's value".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Flags {
    pub host: Option<IpAddr>,
    /// `-p -1` is stored as 0 (a free port).
    pub port: Option<u16>,
    pub server_name: Option<String>,
    pub client_advertise: Option<String>,
    /// `Some(None)`: `-m 0`, monitoring off; `-m -1` is stored as `Some(Some(0))`.
    pub http_port: Option<Option<u16>>,
    pub config: Option<PathBuf>,
    /// `-t`: check the config file and exit.
    pub check_config: bool,
    pub pid_file: Option<PathBuf>,
    pub log_file: Option<PathBuf>,
    pub debug: Option<bool>,
    pub trace: Option<bool>,
    pub logtime: Option<bool>,
    /// `--log_json` (midge only): JSON log lines.
    pub log_json: Option<bool>,
    /// `--config_watch` (midge only): reload when the config file changes.
    pub config_watch: Option<bool>,
    pub user: Option<String>,
    pub pass: Option<String>,
    pub auth: Option<String>,
    // Some of the flags below (syslog, profiling, ...) are parsed so that scripts written for
    // nats-server keep working, but `apply` refuses the ones that ask for a missing feature.
    pub cluster: Option<String>,
    pub routes: Option<String>,
    pub cluster_name: Option<String>,
    pub cluster_advertise: Option<String>,
    pub no_advertise: Option<bool>,
    pub connect_retries: Option<i64>,
    pub tls: Option<bool>,
    pub tls_verify: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca_cert: Option<PathBuf>,
    pub jetstream: Option<bool>,
    pub store_dir: Option<PathBuf>,
    /// As `http_port`: `Some(None)` is `-ms 0` (off), `-ms -1` is `Some(Some(0))`.
    pub https_port: Option<Option<u16>>,
    pub syslog: Option<bool>,
    pub remote_syslog: Option<String>,
    pub profile_port: Option<i64>,
    pub log_size_limit: Option<i64>,
    pub ports_file_dir: Option<PathBuf>,
    pub max_traced_msg_len: Option<i64>,
    pub logtime_utc: Option<bool>,
}

/// A command line that cannot be used. Each variant names the flag as written.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: {flag}")]
    Unknown { flag: String },
    #[error("flag needs an argument: {flag}")]
    MissingValue { flag: String },
    #[error("invalid value \"{value}\" for flag {flag}: {reason}")]
    InvalidValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("bad flag syntax: {arg}")]
    BadSyntax { arg: String },
    #[error("unrecognized command: \"{arg}\"")]
    UnexpectedArgument { arg: String },
    #[error("{flag}: not supported by midge yet")]
    Unsupported { flag: String },
    #[error("{flag}: must be used together with {needs}")]
    Requires { flag: String, needs: String },
    #[error(transparent)]
    Config(#[from] ConfError),
    #[error("{0}")]
    Invalid(#[from] crate::options::OptionsError),
    /// Not a chained source: the message already says it all once.
    #[error("{flag}: {error}")]
    Tls {
        flag: String,
        error: crate::tls::TlsError,
    },
}

enum Kind {
    Bool,
    Value,
}

/// Flag names (aliases included) and whether they take a value.
const FLAGS: &[(&[&str], Kind)] = &[
    (&["h", "help", "help_tls"], Kind::Bool),
    (&["v", "version"], Kind::Bool),
    (&["p", "port"], Kind::Value),
    (&["n", "name", "server_name"], Kind::Value),
    (&["a", "addr", "net"], Kind::Value),
    (&["client_advertise"], Kind::Value),
    (&["D", "debug"], Kind::Bool),
    (&["V", "trace", "VV"], Kind::Bool),
    (&["DV", "DVV"], Kind::Bool),
    (&["T", "logtime"], Kind::Bool),
    (&["logtime_utc"], Kind::Bool),
    (&["log_json"], Kind::Bool),
    (&["config_watch"], Kind::Bool),
    (&["user"], Kind::Value),
    (&["pass"], Kind::Value),
    (&["auth"], Kind::Value),
    (&["m", "http_port"], Kind::Value),
    (&["ms", "https_port"], Kind::Value),
    (&["c", "config"], Kind::Value),
    (&["t"], Kind::Bool),
    (&["sl", "signal"], Kind::Value),
    (&["P", "pid"], Kind::Value),
    (&["ports_file_dir"], Kind::Value),
    (&["l", "log"], Kind::Value),
    (&["log_size_limit"], Kind::Value),
    (&["s", "syslog"], Kind::Bool),
    (&["r", "remote_syslog"], Kind::Value),
    (&["profile"], Kind::Value),
    (&["routes"], Kind::Value),
    (&["cluster", "cluster_listen"], Kind::Value),
    (&["cluster_advertise"], Kind::Value),
    (&["no_advertise"], Kind::Bool),
    (&["connect_retries"], Kind::Value),
    (&["cluster_name"], Kind::Value),
    (&["tls"], Kind::Bool),
    (&["tlsverify"], Kind::Bool),
    (&["tlscert"], Kind::Value),
    (&["tlskey"], Kind::Value),
    (&["tlscacert"], Kind::Value),
    (&["max_traced_msg_len"], Kind::Value),
    (&["js", "jetstream"], Kind::Bool),
    (&["sd", "store_dir"], Kind::Value),
];

fn lookup(name: &str) -> Option<(&'static str, &'static Kind)> {
    FLAGS
        .iter()
        .find(|(names, _)| names.contains(&name))
        .map(|(names, kind)| (names[0], kind))
}

/// Go's `strconv.ParseBool`.
fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Reads the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, FlagError> {
    let mut args = args.into_iter();
    let mut flags = Flags::default();
    let (mut help, mut version) = (false, false);
    let mut signal = None;
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--" {
            positional.extend(args.by_ref());
            break;
        }
        let Some(body) = arg
            .strip_prefix("--")
            .or_else(|| arg.strip_prefix('-'))
            .filter(|b| !b.is_empty())
        else {
            // Like Go, the first non-flag ends the flags.
            positional.push(arg);
            positional.extend(args.by_ref());
            break;
        };
        if body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::BadSyntax { arg });
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let shown = format!("-{name}");
        let (canonical, kind) = lookup(name).ok_or_else(|| FlagError::Unknown {
            flag: shown.clone(),
        })?;
        let invalid = |value: &str, reason: &str| FlagError::InvalidValue {
            flag: shown.clone(),
            value: value.to_string(),
            reason: reason.to_string(),
        };
        match kind {
            Kind::Bool => {
                let on = match &inline {
                    None => true,
                    Some(v) => parse_bool(v).ok_or_else(|| invalid(v, "expected a boolean"))?,
                };
                match canonical {
                    "h" => help = on,
                    "v" => version = on,
                    "D" => flags.debug = Some(on),
                    "V" => flags.trace = Some(on),
                    "DV" => {
                        flags.debug = Some(on);
                        flags.trace = Some(on);
                    }
                    "T" => flags.logtime = Some(on),
                    "logtime_utc" => flags.logtime_utc = Some(on),
                    "log_json" => flags.log_json = Some(on),
                    "config_watch" => flags.config_watch = Some(on),
                    "t" => flags.check_config = on,
                    "s" => flags.syslog = Some(on),
                    "no_advertise" => flags.no_advertise = Some(on),
                    "tls" => flags.tls = Some(on),
                    "tlsverify" => flags.tls_verify = Some(on),
                    "js" => flags.jetstream = Some(on),
                    _ => return Err(FlagError::Unknown { flag: shown }),
                }
            }
            Kind::Value => {
                let value = match inline {
                    Some(v) => v,
                    None => args.next().ok_or_else(|| FlagError::MissingValue {
                        flag: shown.clone(),
                    })?,
                };
                let int = |v: &str| -> Result<i64, FlagError> {
                    v.parse::<i64>()
                        .map_err(|_| invalid(v, "expected an integer"))
                };
                let port = |v: &str| -> Result<u16, FlagError> {
                    match int(v)? {
                        -1 => Ok(0),
                        n => u16::try_from(n).map_err(|_| invalid(v, "expected -1 or 0..65535")),
                    }
                };
                match canonical {
                    "p" => flags.port = Some(port(&value)?),
                    "n" => {
                        if value.contains(' ') {
                            return Err(invalid(&value, "server name cannot contain spaces"));
                        }
                        flags.server_name = Some(value);
                    }
                    "a" => flags.host = Some(parse_host(&value).map_err(|r| invalid(&value, &r))?),
                    "client_advertise" => flags.client_advertise = Some(value),
                    "user" => flags.user = Some(value),
                    "pass" => flags.pass = Some(value),
                    "auth" => flags.auth = Some(value),
                    "m" => {
                        flags.http_port = Some(match int(&value)? {
                            0 => None,
                            _ => Some(port(&value)?),
                        });
                    }
                    "ms" => {
                        flags.https_port = Some(match int(&value)? {
                            0 => None,
                            _ => Some(port(&value)?),
                        });
                    }
                    "c" => flags.config = Some(PathBuf::from(value)),
                    "sl" => signal = Some(parse_signal(&value).map_err(|r| invalid(&value, &r))?),
                    "P" => flags.pid_file = Some(PathBuf::from(value)),
                    "ports_file_dir" => flags.ports_file_dir = Some(PathBuf::from(value)),
                    "l" => flags.log_file = Some(PathBuf::from(value)),
                    "log_size_limit" => flags.log_size_limit = Some(int(&value)?),
                    "r" => flags.remote_syslog = Some(value),
                    "profile" => flags.profile_port = Some(int(&value)?),
                    "routes" => flags.routes = Some(value),
                    "cluster" => flags.cluster = Some(value),
                    "cluster_advertise" => flags.cluster_advertise = Some(value),
                    "connect_retries" => flags.connect_retries = Some(int(&value)?),
                    "cluster_name" => flags.cluster_name = Some(value),
                    "tlscert" => flags.tls_cert = Some(PathBuf::from(value)),
                    "tlskey" => flags.tls_key = Some(PathBuf::from(value)),
                    "tlscacert" => flags.tls_ca_cert = Some(PathBuf::from(value)),
                    "max_traced_msg_len" => flags.max_traced_msg_len = Some(int(&value)?),
                    "sd" => flags.store_dir = Some(PathBuf::from(value)),
                    _ => return Err(FlagError::Unknown { flag: shown }),
                }
            }
        }
    }
    // The same precedence as nats-server: version, help, bare commands, then signals.
    if version {
        return Ok(Command::Version);
    }
    if help {
        return Ok(Command::Help);
    }
    if let Some(first) = positional.first() {
        return match first.as_str() {
            "version" => Ok(Command::Version),
            "help" => Ok(Command::Help),
            _ => Err(FlagError::UnexpectedArgument { arg: first.clone() }),
        };
    }
    if let Some((command, pid)) = signal {
        return Ok(Command::Signal { command, pid });
    }
    Ok(Command::Run(flags))
}

/// `--cluster nats://[user:pass@]host:port`: the route listener, `-1` for a random port.
type ClusterListen = (std::net::IpAddr, u16, Option<String>, Option<String>);

fn cluster_listen(url: &str) -> Result<ClusterListen, FlagError> {
    let invalid = |reason: String| FlagError::InvalidValue {
        flag: "--cluster".into(),
        value: url.to_string(),
        reason,
    };
    // RouteUrl does not know nats-server's "-1 means random".
    let (text, random) = match url.strip_suffix(":-1") {
        Some(rest) => (format!("{rest}:0"), true),
        None => (url.to_string(), false),
    };
    let parsed = crate::options::RouteUrl::parse(&text).map_err(invalid)?;
    let host = crate::options::parse_host(&parsed.host).map_err(invalid)?;
    let port = if random { 0 } else { parsed.port };
    Ok((host, port, parsed.user, parsed.password))
}

impl Flags {
    /// The TLS settings the `--tls*` flags ask for, as nats-server reads them: `--tls=false`
    /// turns TLS off whatever the config file says; any other `--tls*` flag replaces the file's
    /// `tls {}` block (keeping its timeout) and then needs both `--tlscert` and `--tlskey`.
    /// `None`: no TLS flag, keep the file's. The files are loaded to report problems now.
    fn tls_override(&self, opts: &Options) -> Result<Option<Option<TlsOptions>>, FlagError> {
        if self.tls == Some(false) {
            return Ok(Some(None));
        }
        let any = self.tls.is_some()
            || self.tls_verify.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
            || self.tls_ca_cert.is_some();
        if !any {
            return Ok(None);
        }
        let (Some(cert_file), Some(key_file)) = (&self.tls_cert, &self.tls_key) else {
            return Err(FlagError::Requires {
                flag: "--tls".into(),
                needs: "--tlscert and --tlskey".into(),
            });
        };
        let tls = TlsOptions {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
            ca_file: self.tls_ca_cert.clone(),
            verify: self.tls_verify.unwrap_or(false),
            timeout: opts
                .tls
                .as_ref()
                .map_or(TlsOptions::DEFAULT_TIMEOUT, |t| t.timeout),
            handshake_first: opts.tls.as_ref().is_some_and(|t| t.handshake_first),
            verify_and_map: opts.tls.as_ref().is_some_and(|t| t.verify_and_map),
            pinned_certs: opts.tls.as_ref().and_then(|t| t.pinned_certs.clone()),
        };
        crate::tls::load(&tls).map_err(|error| {
            let flag = match error.source_option() {
                crate::tls::TlsErrorSource::CertFile => "--tlscert",
                crate::tls::TlsErrorSource::KeyFile => "--tlskey",
                crate::tls::TlsErrorSource::CaFile => "--tlscacert",
                crate::tls::TlsErrorSource::Verify => "--tlsverify",
                crate::tls::TlsErrorSource::Other => "--tls",
            };
            FlagError::Tls {
                flag: flag.into(),
                error,
            }
        })?;
        Ok(Some(Some(tls)))
    }
}

fn parse_signal(text: &str) -> Result<(SignalCommand, Option<String>), String> {
    let (name, pid) = match text.split_once('=') {
        Some((n, p)) if !p.contains('=') => (n, Some(p.to_string())),
        Some(_) => return Err("expected command[=pid|pidfile]".into()),
        None => (text, None),
    };
    let command = match name {
        "stop" => SignalCommand::Stop,
        "quit" => SignalCommand::Quit,
        "term" => SignalCommand::Term,
        "reopen" => SignalCommand::Reopen,
        "reload" => SignalCommand::Reload,
        "ldm" => SignalCommand::Ldm,
        _ => return Err("expected one of stop, quit, term, reopen, reload, ldm".into()),
    };
    Ok((command, pid))
}

impl Flags {
    /// Overrides `opts` with the flags given. Fails, before changing anything, when a flag asks
    /// for a feature midge lacks; returns warnings for flags accepted but ignored.
    pub fn apply(self, opts: &mut Options) -> Result<Vec<String>, FlagError> {
        let unsupported = |flag: &str| {
            Err(FlagError::Unsupported {
                flag: flag.to_string(),
            })
        };
        let given = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
        // Checked before anything changes, like the unsupported flags below.
        let cluster_listen = match self.cluster.as_deref().filter(|s| !s.is_empty()) {
            Some(url) => Some(cluster_listen(url)?),
            None => None,
        };
        let routes: Option<Vec<String>> = self.routes.as_deref().map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect()
        });
        for route in routes.iter().flatten() {
            crate::options::RouteUrl::parse(route).map_err(|reason| FlagError::InvalidValue {
                flag: "--routes".into(),
                value: route.clone(),
                reason,
            })?;
        }
        let connect_retries = match self.connect_retries {
            Some(n) => Some(u32::try_from(n).map_err(|_| FlagError::InvalidValue {
                flag: "--connect_retries".into(),
                value: n.to_string(),
                reason: "not a valid number of retries".into(),
            })?),
            None => None,
        };
        let tls = self.tls_override(opts)?;
        if self.syslog == Some(true) || given(&self.remote_syslog) {
            return unsupported("--syslog");
        }
        if self.profile_port.is_some_and(|p| p != 0) {
            return unsupported("--profile");
        }
        if self.log_size_limit.is_some_and(|n| n != 0) {
            return unsupported("--log_size_limit");
        }
        if self.ports_file_dir.is_some() {
            return unsupported("--ports_file_dir");
        }

        let mut warnings = Vec::new();
        let mut ignore = |flag: &str, why: &str| warnings.push(format!("{flag}: ignored: {why}"));
        if self.max_traced_msg_len.is_some() {
            ignore("--max_traced_msg_len", "not implemented");
        }
        if self.logtime_utc.is_some() {
            ignore("--logtime_utc", "not implemented");
        }

        if let Some(tls) = tls {
            opts.tls = tls;
        }
        if let Some(host) = self.host {
            opts.host = host;
        }
        if let Some(port) = self.port {
            opts.port = port;
        }
        if let Some(name) = self.server_name {
            opts.server_name = Some(name);
        }
        if let Some(advertise) = self.client_advertise {
            opts.client_advertise = Some(advertise);
        }
        if let Some(http_port) = self.http_port {
            opts.http_port = http_port;
        }
        if let Some(https_port) = self.https_port {
            opts.https_port = https_port;
        }
        if let Some(path) = self.pid_file {
            opts.pid_file = Some(path);
        }
        if let Some(path) = self.log_file {
            opts.log_file = Some(path);
        }
        if let Some(debug) = self.debug {
            opts.debug = debug;
        }
        if let Some(trace) = self.trace {
            opts.trace = trace;
        }
        if let Some(logtime) = self.logtime {
            opts.logtime = logtime;
        }
        if let Some(json) = self.log_json {
            opts.log_json = json;
        }
        if let Some(watch) = self.config_watch {
            opts.config_watch = watch;
        }
        if let Some(user) = self.user {
            opts.auth.user = Some(user);
        }
        if let Some(pass) = self.pass {
            opts.auth.password = Some(pass);
        }
        if let Some(token) = self.auth {
            opts.auth.token = Some(token);
        }
        if let Some(path) = self.config {
            opts.config_file = Some(path);
        }
        // As nats-server: -sd only says where; -js turns JetStream on (with the config
        // file's settings, if it has a jetstream block), -js=false off.
        if let Some(dir) = self.store_dir {
            let js = opts.jetstream.get_or_insert_with(|| JetStreamOptions {
                enabled: false,
                ..JetStreamOptions::default()
            });
            js.store_dir = Some(dir);
        }
        if let Some(on) = self.jetstream {
            match &mut opts.jetstream {
                Some(js) => js.enabled = on,
                None if on => opts.jetstream = Some(JetStreamOptions::default()),
                None => {}
            }
        }
        if let Some((host, port, user, password)) = cluster_listen {
            opts.cluster.host = host;
            opts.cluster.port = Some(port);
            if user.is_some() {
                opts.cluster.user = user;
                opts.cluster.password = password;
            }
        }
        if let Some(routes) = routes {
            opts.cluster.routes = routes;
        }
        if let Some(name) = self.cluster_name {
            opts.cluster.name = Some(name);
        }
        if let Some(advertise) = self.cluster_advertise {
            opts.cluster.advertise = Some(advertise);
        }
        if let Some(no_advertise) = self.no_advertise {
            opts.cluster.no_advertise = no_advertise;
        }
        if let Some(n) = connect_retries {
            opts.cluster.connect_retries = n;
        }
        Ok(warnings)
    }

    /// Everything `midge` needs at start-up: the config file (if `-c`), then the flags on top,
    /// then the cross-option checks. Warnings of both are returned.
    pub fn load_options(self) -> Result<(Options, Vec<String>), FlagError> {
        let (mut options, mut warnings) = match &self.config {
            Some(path) => {
                let mut options = Options {
                    config_file: Some(path.clone()),
                    ..Options::default()
                };
                let map = crate::conf::parse_file(path)?;
                let warnings = options.apply_conf(&map)?;
                (options, warnings.iter().map(ToString::to_string).collect())
            }
            None => (Options::default(), Vec::new()),
        };
        warnings.extend(self.apply(&mut options)?);
        options.validate()?;
        Ok((options, warnings))
    }
}

/// `midge -h`.
pub const HELP: &str = "\
Usage: midge [options]

Midge speaks the NATS client protocol and reads nats-server's flags and config files.

Server:
    -a, --addr, --net <host>         Address to listen on for clients (default 0.0.0.0)
    -p, --port <port>                Client port (default 4222; -1 picks a free port)
    -n, --name, --server_name <name> Server name (default: the server id)
        --client_advertise <host:port> Address given to clients instead of the listen one
    -m, --http_port <port>           Serve monitoring (/varz, /connz, ...) on this port
    -ms, --https_port <port>         Serve monitoring over HTTPS (needs --tls* or tls {})
    -c, --config <file>              Read options from this config file
    -t                               Check the config file and exit
        --config_watch               Reload by itself when the config file changes (checked
                                     every second; follows Kubernetes ConfigMap updates)
    -P, --pid <file>                 Write the process id to this file
        --signal <cmd>[=<pid|file>]  Send stop, quit, term, reopen, reload or ldm to a
                                     running server

Signals: HUP reloads the config file, USR1 reopens the log file, USR2 enters lame duck
mode (stop accepting, tell clients, close them over lame_duck_duration, exit), INT and
TERM shut down.

Logging:
    -l, --log <file>                 Log to this file instead of standard error
    -T, --logtime[=false]            Timestamp log lines (default true)
    -D, --debug                      Log debug messages
    -V, --trace                      Log every protocol message
    -DV                              Both of the above
        --log_json                   Log JSON objects, one a line, instead of text lines

Authorization:
        --user <user>                User clients must log in as
        --pass <password>            Their password
        --auth <token>               Token clients must present

Cluster:
        --cluster <url>              Listen for routes (nats://[user:pass@]host:port; port
                                     -1 picks a free one; user:pass are required of peers)
        --routes <url,...>           Routes to solicit (host names are resolved on every try)
        --cluster_name <name>        Cluster name (every member must use the same)
        --cluster_advertise <host:port> Route address given to the other servers
        --no_advertise               Do not tell clients about the other servers
        --connect_retries <n>        Attempts for routes learned by gossip

TLS (clients):
        --tls[=false]                Require TLS (needs --tlscert and --tlskey);
                                     --tls=false turns off the config file's tls {}
        --tlscert <file>             Server certificate chain (PEM)
        --tlskey <file>              Its private key (PEM)
        --tlscacert <file>           CA that client certificates must chain to (PEM)
        --tlsverify                  Require and verify client certificates

JetStream:
    -js, --jetstream                 Enable JetStream
    -sd, --store_dir <dir>           Where file streams are stored
                                     (<dir>/jetstream/<account>/streams/<stream>)

Other:
    -h, --help                       Show this help
    -v, --version                    Show the version

Flags take one or two dashes, and a value either as -flag=value or -flag value.
Flags override the config file.
";

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Flags {
        match parse(args.iter().map(|s| s.to_string())) {
            Ok(Command::Run(flags)) => flags,
            other => panic!("{other:?}"),
        }
    }

    fn fail(args: &[&str]) -> String {
        match parse(args.iter().map(|s| s.to_string())) {
            Ok(c) => panic!("parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn ports_and_value_forms() {
        assert_eq!(run(&["-p", "-1"]).port, Some(0));
        assert_eq!(run(&["--port=5000"]).port, Some(5000));
        assert_eq!(run(&["-port", "5001"]).port, Some(5001));
        assert_eq!(run(&["--p=5002"]).port, Some(5002));
        assert_eq!(run(&["-m", "8222"]).http_port, Some(Some(8222)));
        assert_eq!(run(&["--http_port=-1"]).http_port, Some(Some(0)));
        assert_eq!(run(&["-m", "0"]).http_port, Some(None));
        assert_eq!(run(&["-ms", "8443"]).https_port, Some(Some(8443)));
        assert_eq!(run(&["--https_port=-1"]).https_port, Some(Some(0)));
        assert_eq!(run(&["--https_port", "0"]).https_port, Some(None));
        let f = run(&["-a", "127.0.0.1", "-n", "s1", "--client_advertise", "h:1"]);
        assert_eq!(f.host, Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(f.server_name.as_deref(), Some("s1"));
        assert_eq!(f.client_advertise.as_deref(), Some("h:1"));
        let f = run(&[
            "-c", "x.conf", "-P", "p.pid", "-l", "l.log", "--user", "u", "--pass", "p", "--auth",
            "t",
        ]);
        assert_eq!(f.config, Some(PathBuf::from("x.conf")));
        assert_eq!(f.pid_file, Some(PathBuf::from("p.pid")));
        assert_eq!(f.log_file, Some(PathBuf::from("l.log")));
        assert_eq!(
            (f.user.as_deref(), f.pass.as_deref(), f.auth.as_deref()),
            (Some("u"), Some("p"), Some("t"))
        );
    }

    #[test]
    fn booleans() {
        let f = run(&["-DV"]);
        assert_eq!((f.debug, f.trace), (Some(true), Some(true)));
        let f = run(&["-D", "--trace"]);
        assert_eq!((f.debug, f.trace), (Some(true), Some(true)));
        assert_eq!(run(&["-T=false"]).logtime, Some(false));
        assert_eq!(run(&["-T"]).logtime, Some(true));
        assert_eq!(run(&["--DV=false"]).debug, Some(false));
        let f = run(&["--log_json", "--config_watch=false"]);
        assert_eq!((f.log_json, f.config_watch), (Some(true), Some(false)));
        let mut opts = Options::default();
        run(&["--log_json", "--config_watch"])
            .apply(&mut opts)
            .unwrap();
        assert!(opts.log_json && opts.config_watch);
        assert!(fail(&["-T=maybe"]).contains("invalid value \"maybe\" for flag -T"));
        // A bool flag does not take the next argument: it is a stray command.
        assert_eq!(fail(&["-D", "false"]), "unrecognized command: \"false\"");
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(fail(&["--bogus"]), "flag provided but not defined: -bogus");
        assert_eq!(fail(&["-p"]), "flag needs an argument: -p");
        assert_eq!(
            fail(&["-p", "x"]),
            "invalid value \"x\" for flag -p: expected an integer"
        );
        assert_eq!(
            fail(&["-p", "70000"]),
            "invalid value \"70000\" for flag -p: expected -1 or 0..65535"
        );
        assert_eq!(fail(&["---p"]), "bad flag syntax: ---p");
        assert!(fail(&["--signal", "explode"]).contains("for flag -signal"));
    }

    #[test]
    fn commands() {
        let cmd = |a: &[&str]| parse(a.iter().map(|s| s.to_string())).unwrap();
        assert_eq!(cmd(&["-h"]), Command::Help);
        assert_eq!(cmd(&["--help"]), Command::Help);
        assert_eq!(cmd(&["-v"]), Command::Version);
        assert_eq!(cmd(&["version"]), Command::Version);
        assert_eq!(cmd(&["-p", "1", "--", "help"]), Command::Help);
        assert_eq!(
            cmd(&["--signal", "reload=/run/midge.pid"]),
            Command::Signal {
                command: SignalCommand::Reload,
                pid: Some("/run/midge.pid".into())
            }
        );
        assert_eq!(
            cmd(&["-sl=ldm"]),
            Command::Signal {
                command: SignalCommand::Ldm,
                pid: None
            }
        );
        assert_eq!(cmd(&[]), Command::Run(Flags::default()));
        assert!(HELP.contains("--signal"));
    }

    #[test]
    fn apply_overrides_options() {
        let mut opts = Options::default();
        let warnings = run(&[
            "-p", "-1", "-a", "::1", "-DV", "-T=false", "-m", "8222", "--user", "u", "--pass", "p",
        ])
        .apply(&mut opts)
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(opts.port, 0);
        assert_eq!(opts.host, "::1".parse::<IpAddr>().unwrap());
        assert!(opts.debug && opts.trace && !opts.logtime);
        assert_eq!(opts.http_port, Some(8222));
        assert_eq!(opts.auth.user.as_deref(), Some("u"));
    }

    #[test]
    fn jetstream_flags() {
        for args in [&["-js"][..], &["--jetstream"]] {
            let mut opts = Options::default();
            assert!(run(args).apply(&mut opts).unwrap().is_empty());
            assert_eq!(opts.jetstream, Some(JetStreamOptions::default()));
        }
        let mut opts = Options::default();
        assert!(run(&["-js=false", "--tls=false", "--tlscert", "c.pem"])
            .apply(&mut opts)
            .is_ok());
        assert_eq!(opts.jetstream, None);
        // -sd alone only says where.
        assert!(run(&["--sd", "/data"]).apply(&mut opts).unwrap().is_empty());
        assert!(opts.jetstream_enabled().is_none());
        assert_eq!(
            opts.jetstream.as_ref().and_then(|j| j.store_dir.clone()),
            Some(PathBuf::from("/data"))
        );
        run(&["-js"]).apply(&mut opts).unwrap();
        let js = opts.jetstream_enabled().unwrap();
        assert_eq!(js.store_dir, Some(PathBuf::from("/data")));
    }

    /// Flags go on top of the file's block: -js turns on what the file configured and
    /// left off, -sd replaces its directory, -js=false turns it off.
    #[test]
    fn jetstream_flags_over_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("js.conf");
        std::fs::write(
            &path,
            "jetstream { enabled: false, store_dir: /file, max_mem: 1G }\n",
        )
        .unwrap();
        let flags = run(&["-c", path.to_str().unwrap(), "-js", "-sd", "/flag"]);
        let (opts, _) = flags.load_options().unwrap();
        let js = opts.jetstream_enabled().unwrap();
        assert_eq!(js.store_dir, Some(PathBuf::from("/flag")));
        assert_eq!(js.max_memory, Some(1_000_000_000));
        std::fs::write(&path, "jetstream: enabled\n").unwrap();
        let flags = run(&["-c", path.to_str().unwrap(), "-js=false"]);
        let (opts, _) = flags.load_options().unwrap();
        assert!(opts.jetstream_enabled().is_none());
    }

    #[test]
    fn cluster_flags() {
        let mut opts = Options::default();
        let warnings = run(&[
            "--cluster",
            "nats://ru:rp@127.0.0.1:-1",
            "--routes",
            "nats://a:6222, nats://b.demo-headless:6222",
            "--cluster_name",
            "demo",
            "--cluster_advertise",
            "10.0.0.1:6222",
            "--no_advertise",
            "--connect_retries",
            "3",
        ])
        .apply(&mut opts)
        .unwrap();
        assert!(warnings.is_empty());
        let c = &opts.cluster;
        assert_eq!((c.host, c.port), (IpAddr::from([127, 0, 0, 1]), Some(0)));
        assert_eq!(
            (c.user.as_deref(), c.password.as_deref()),
            (Some("ru"), Some("rp"))
        );
        assert_eq!(c.routes, ["nats://a:6222", "nats://b.demo-headless:6222"]);
        assert_eq!(c.name.as_deref(), Some("demo"));
        assert_eq!(c.advertise.as_deref(), Some("10.0.0.1:6222"));
        assert!(c.no_advertise);
        assert_eq!(c.connect_retries, 3);
        let mut opts = Options::default();
        run(&["--cluster", "nats://0.0.0.0:6222"])
            .apply(&mut opts)
            .unwrap();
        assert_eq!(opts.cluster.port, Some(6222));
        for bad in [
            &["--cluster", "http://x:1"][..],
            &["--routes", "nats://a:x"],
        ] {
            assert!(run(bad).apply(&mut Options::default()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_flags() {
        let pki = crate::tls::test_pki::generate();
        let (cert, key, ca) = (
            pki.cert.to_str().unwrap(),
            pki.key.to_str().unwrap(),
            pki.ca.to_str().unwrap(),
        );
        let mut opts = Options::default();
        run(&[
            "--tlscert",
            cert,
            "--tlskey",
            key,
            "--tlscacert",
            ca,
            "--tlsverify",
        ])
        .apply(&mut opts)
        .unwrap();
        let tls = opts.tls.clone().unwrap();
        assert_eq!(
            (tls.cert_file.as_path(), tls.key_file.as_path()),
            (pki.cert.as_path(), pki.key.as_path())
        );
        assert_eq!(tls.ca_file.as_deref(), Some(pki.ca.as_path()));
        assert!(tls.verify);
        // --tls=false turns TLS off again, whatever else is given.
        run(&["--tls=false", "--tlscert", cert])
            .apply(&mut opts)
            .unwrap();
        assert_eq!(opts.tls, None);
        // --tls alone needs the certificate and key.
        let e = run(&["--tls"]).apply(&mut opts).unwrap_err().to_string();
        assert!(e.contains("--tlscert and --tlskey"), "{e}");
        // Bad files fail before anything changes, naming the flag and the file.
        let e = run(&["--tls", "--tlscert", cert, "--tlskey", "/nonexistent/k.pem"])
            .apply(&mut opts)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tlskey: cannot read key file '/nonexistent/k.pem'"),
            "{e}"
        );
        assert_eq!(opts.tls, None);
        let e = run(&["--tlscert", cert, "--tlskey", key, "--tlsverify"])
            .apply(&mut opts)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--tlsverify: verify needs ca_file"), "{e}");
    }

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.conf");
        std::fs::write(
            &path,
            "port: 1111\nserver_name: file\ndebug: true\nmax_traced_msg_len: 1\n",
        )
        .unwrap();
        let flags = run(&["-c", path.to_str().unwrap(), "-p", "2222", "-D=false"]);
        let (opts, warnings) = flags.load_options().unwrap();
        assert_eq!(opts.port, 2222);
        assert_eq!(opts.server_name.as_deref(), Some("file"));
        assert!(!opts.debug);
        assert_eq!(opts.config_file, Some(path));
        assert_eq!(warnings.len(), 1);
        // Cross-option rules run after the flags: a token flag beside a users list.
        std::fs::write(
            dir.path().join("u.conf"),
            "authorization { users: [{user: a}] }\n",
        )
        .unwrap();
        let flags = run(&[
            "-c",
            dir.path().join("u.conf").to_str().unwrap(),
            "--auth",
            "t",
        ]);
        assert!(flags
            .load_options()
            .unwrap_err()
            .to_string()
            .contains("cannot have a token and a users array"));
    }
}
