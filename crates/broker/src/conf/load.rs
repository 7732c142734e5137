//! Interpreting a parsed config [`Map`] as [`Options`], key by key, as nats-server's
//! `processConfigFileLine` does: keys are case-insensitive, all errors are collected, and keys of
//! features midge lacks are rejected (or, when they change nothing by themselves, accepted with
//! a warning) instead of being silently ignored.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::value::{Entry, Map, Value, ValueKind};
use super::{parse_duration, ConfError, Pos};
use crate::options::{
    AccountJetStreamLimits, AccountLimits, AccountOptions, Authorization, ClusterOptions, Export,
    ExportKind, Import, JetStreamOptions, JetStreamSync, LeafOptions, NkeyUser, Options,
    Permissions, RemoteLeaf, RemoteTls, ResponsePermission, ResponseType, RouteUrl,
    SubjectPermission, TlsOptions, User, DEFAULT_RESPONSE_THRESHOLD,
};
use crate::tls::TlsErrorSource;

/// Options read from a config file, with what was accepted but ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedConfig {
    pub options: Options,
    pub warnings: Vec<ConfWarning>,
}

/// A key that was accepted but deserves the user's attention.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfWarning {
    pub pos: Pos,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.pos, self.key, self.message)
    }
}

/// Top-level keys of nats-server features midge does not implement: asking for them fails.
const UNSUPPORTED: &[&str] = &[
    "gateway",
    "mqtt",
    "roots",
    "root",
    "root_operators",
    "root_operator",
    "account_resolver",
    "accounts_resolver",
    "resolver_tls",
    "resolver_pinned_accounts",
    "trusted",
    "trusted_keys",
    "mappings",
    "maps",
    "syslog",
    "remote_syslog",
    "prof_port",
    "proxies",
    "proxy_protocol",
    "ocsp",
    "logfile_size_limit",
    "log_size_limit",
    "logfile_max_num",
    "log_max_num",
    "write_timeout",
    "max_sub_tokens",
    "max_subscription_tokens",
    "default_sentinel",
    "http_base_path",
    "no_header_support",
    "ports_file_dir",
];

/// Top-level keys that only tune a feature midge lacks (or a nats-server internal): they change
/// nothing by themselves, so a file written for nats-server still loads.
const IGNORED: &[&str] = &[
    "server_tags",
    "server_metadata",
    "default_js_domain",
    "max_traced_msg_len",
    "logtime_utc",
    "disable_sublist_cache",
    "no_sublist_cache",
    "connect_error_reports",
    "reconnect_error_reports",
    "max_closed_clients",
    "prof_block_rate",
    "ocsp_cache",
    "no_fast_producer_stall",
    "feature_flags",
];

/// Top-level keys of operator mode, read after everything else.
const OPERATOR_KEYS: &[&str] = &[
    "operator",
    "operators",
    "resolver",
    "account_resolver",
    "accounts_resolver",
    "resolver_preload",
];

/// `resolver: {type: full, dir: "..."}`; the other settings of nats-server's directory
/// resolver are accepted with a warning.
fn parse_full_resolver(
    entry: &Entry,
    m: &Map,
    ctx: &mut Ctx,
) -> Result<crate::options::Resolver, ConfError> {
    let mut kind = None;
    let mut dir = None;
    let (mut allow_delete, mut hard_delete) = (false, false);
    for f in m.entries() {
        let k = format!("{}.{}", entry.key, f.key);
        match f.key.to_ascii_lowercase().as_str() {
            "type" => kind = Some(f.value.as_str(&k)?.to_ascii_lowercase()),
            "dir" => dir = Some(PathBuf::from(f.value.as_str(&k)?)),
            "allow_delete" => allow_delete = f.value.as_bool(&k)?,
            "hard_delete" => hard_delete = f.value.as_bool(&k)?,
            "interval" | "limit" | "timeout" | "ttl" => {
                ctx.warn(&f.key_pos, &k, "accepted and ignored");
            }
            _ if f.used_as_variable => {}
            _ => return Err(unsupported(f)),
        }
    }
    match kind.as_deref() {
        Some("full") => {}
        Some(other) => {
            return Err(entry.value.invalid(
                &entry.key,
                format!("resolver type {other:?} is not supported (full is)"),
            ))
        }
        None => {
            return Err(entry
                .value
                .invalid(&entry.key, "resolver needs a type (full)"))
        }
    }
    let Some(dir) = dir else {
        return Err(entry
            .value
            .invalid(&entry.key, "a full resolver needs a dir"));
    };
    let delete = match (allow_delete, hard_delete) {
        (false, _) => crate::options::ResolverDelete::No,
        (true, false) => crate::options::ResolverDelete::Rename,
        (true, true) => crate::options::ResolverDelete::Hard,
    };
    Ok(crate::options::Resolver::Full { dir, delete })
}

/// The account JWTs stored in a directory resolver's `dir` (created when missing), each in
/// `<account key>.jwt`; files of another name are ignored.
fn read_jwt_dir(dir: &Path) -> Result<Vec<(String, crate::jwt::AccountClaims)>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("resolver dir {}: {e}", dir.display()))?;
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("resolver dir {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(key) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jwt"))
            .filter(|k| crate::jwt::is_account_key(k))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let claims = crate::jwt::decode_account(&text)
            .map_err(|e| format!("{}: account JWT: {e}", path.display()))?;
        if claims.sub != key {
            return Err(format!(
                "{}: the JWT is for account {}",
                path.display(),
                claims.sub
            ));
        }
        out.push((key.to_string(), claims));
    }
    Ok(out)
}

/// An operator JWT given inline, or the path of a file holding it (bare, or between
/// `-----BEGIN ...-----` lines as `nsc` writes them).
fn read_jwt(text: &str) -> Result<String, String> {
    let looks_inline = text.starts_with("eyJ") && text.split('.').count() == 3;
    if looks_inline && !Path::new(text).exists() {
        return Ok(text.trim().to_string());
    }
    let content =
        std::fs::read_to_string(text).map_err(|e| format!("cannot read JWT file {text}: {e}"))?;
    let mut inside = false;
    let mut decorated = None;
    for line in content.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN") {
            inside = true;
        } else if line.starts_with("------END") || line.starts_with("-----END") {
            break;
        } else if inside && !line.is_empty() {
            decorated = Some(line.to_string());
        }
    }
    Ok(decorated.unwrap_or_else(|| content.trim().to_string()))
}

/// nats-server's minimum, so that clients have time to move away.
const MIN_LAME_DUCK_DURATION: Duration = Duration::from_secs(30);
/// No option has a use for a longer duration, and a timer of centuries overflows the clock
/// arithmetic it is added to.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Default)]
struct Ctx {
    errors: Vec<ConfError>,
    warnings: Vec<ConfWarning>,
    /// Leave the certificate and key files a config names unread (see
    /// [`Options::apply_conf_without_files`]).
    skip_files: bool,
}

impl Ctx {
    fn warn(&mut self, pos: &Pos, key: &str, message: impl Into<String>) {
        self.warnings.push(ConfWarning {
            pos: pos.clone(),
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn check(&mut self, result: Result<(), ConfError>) {
        if let Err(e) = result {
            self.errors.push(e);
        }
    }
}

impl Options {
    /// Reads a config file (see [`crate::conf`]) on top of the defaults; records `config_file`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<LoadedConfig, ConfError> {
        let path = path.as_ref();
        let map = super::parse_file(path)?;
        let mut options = Options {
            config_file: Some(path.to_path_buf()),
            ..Options::default()
        };
        let warnings = options.apply_conf(&map)?;
        let file = path.display().to_string();
        options
            .validate()
            .map_err(|source| ConfError::Options { file, source })?;
        Ok(LoadedConfig { options, warnings })
    }

    /// Interprets a parsed config on top of the defaults, and checks the result.
    pub fn from_conf(map: &Map) -> Result<LoadedConfig, ConfError> {
        let mut options = Options::default();
        let warnings = options.apply_conf(map)?;
        let file = map
            .entries()
            .first()
            .map_or_else(String::new, |e| e.key_pos.file.to_string());
        options
            .validate()
            .map_err(|source| ConfError::Options { file, source })?;
        Ok(LoadedConfig { options, warnings })
    }

    /// Sets the options a parsed config names, leaving the others as they are. Does not run
    /// [`Options::validate`]: the caller may still apply command-line flags.
    pub fn apply_conf(&mut self, map: &Map) -> Result<Vec<ConfWarning>, ConfError> {
        self.apply_conf_with(map, Ctx::default())
    }

    /// As [`Options::apply_conf`], except that the TLS certificate, key and CA files the
    /// config names are not opened: every other key is read and checked exactly as
    /// `midge -c` does. For a config checked away from the machine that will hold those
    /// files, e.g. by the Kubernetes operator before the pods' Secret volumes exist.
    pub fn apply_conf_without_files(&mut self, map: &Map) -> Result<Vec<ConfWarning>, ConfError> {
        self.apply_conf_with(
            map,
            Ctx {
                skip_files: true,
                ..Ctx::default()
            },
        )
    }

    /// As [`Options::from_conf`] (the options a config gives, checked together), with the
    /// files left unread as by [`Options::apply_conf_without_files`]. `config_file` is
    /// recorded as the path the server will read the config from.
    pub fn from_conf_without_files(
        map: &Map,
        config_file: &Path,
    ) -> Result<LoadedConfig, ConfError> {
        let mut options = Options {
            config_file: Some(config_file.to_path_buf()),
            ..Options::default()
        };
        let warnings = options.apply_conf_without_files(map)?;
        options.validate().map_err(|source| ConfError::Options {
            file: config_file.display().to_string(),
            source,
        })?;
        Ok(LoadedConfig { options, warnings })
    }

    fn apply_conf_with(&mut self, map: &Map, mut ctx: Ctx) -> Result<Vec<ConfWarning>, ConfError> {
        if map.is_empty() {
            // Not an error (nats-server only warns), but usually a wrong file.
            ctx.warnings.push(ConfWarning {
                pos: Pos {
                    file: "config".into(),
                    line: 1,
                    col: 1,
                },
                key: String::new(),
                message: "config has no values".into(),
            });
        }
        // Accounts last: their users join the `authorization` users wherever the blocks are.
        // Operator mode after them: it adds the accounts of its JWTs.
        let is_accounts = |e: &&Entry| e.key.eq_ignore_ascii_case("accounts");
        let is_operator = |e: &&Entry| OPERATOR_KEYS.contains(&e.key.to_ascii_lowercase().as_str());
        for entry in map
            .entries()
            .iter()
            .filter(|e| !is_accounts(e) && !is_operator(e))
        {
            let result = self.apply_top_level(entry, &mut ctx);
            ctx.check(result);
        }
        for entry in map.entries().iter().filter(is_accounts) {
            let result = self.apply_accounts(entry);
            ctx.check(result);
        }
        let operator: Vec<&Entry> = map.entries().iter().filter(is_operator).collect();
        if !operator.is_empty() {
            let result = self.apply_operator(&operator, &mut ctx);
            ctx.check(result);
        }
        match ConfError::collect(ctx.errors) {
            Some(e) => Err(e),
            None => Ok(ctx.warnings),
        }
    }

    /// `operator`, `resolver`, `resolver_preload`: operator mode. The preloaded account JWTs
    /// are verified here (signed by a trusted operator, for the key they are listed under)
    /// and become accounts named by their public keys.
    fn apply_operator(&mut self, entries: &[&Entry], ctx: &mut Ctx) -> Result<(), ConfError> {
        use crate::options::{OperatorMode, Resolver};
        let mut operators = Vec::new();
        let mut resolver = None;
        let mut preload: Vec<(&Entry, &Entry)> = Vec::new();
        let mut first: Option<&Entry> = None;
        for entry in entries {
            let key = entry.key.as_str();
            let v = &entry.value;
            match key.to_ascii_lowercase().as_str() {
                "operator" | "operators" => {
                    first.get_or_insert(entry);
                    let items: Vec<&Value> = match &v.kind {
                        ValueKind::Array(items) => items.iter().collect(),
                        _ => vec![v],
                    };
                    for item in items {
                        let text = item.as_str(key)?;
                        let token = read_jwt(text).map_err(|m| item.invalid(key, m))?;
                        let claims = crate::jwt::decode_operator(&token)
                            .map_err(|e| item.invalid(key, format!("operator JWT: {e}")))?;
                        operators.push(claims);
                    }
                }
                "resolver" | "account_resolver" | "accounts_resolver" => match &v.kind {
                    ValueKind::String(s) if s.eq_ignore_ascii_case("memory") => {
                        resolver = Some(Resolver::Memory)
                    }
                    ValueKind::Map(m) => resolver = Some(parse_full_resolver(entry, m, ctx)?),
                    _ => return Err(unsupported(entry)),
                },
                "resolver_preload" => {
                    for e in v.as_map(key)?.entries() {
                        if !e.used_as_variable {
                            preload.push((entry, e));
                        }
                    }
                }
                _ => return Err(unsupported(entry)),
            }
        }
        let Some(first) = first else {
            let e = entries[0];
            return Err(e.value.invalid(&e.key, "needs an operator (operator mode)"));
        };
        let at = |message: String| first.value.invalid(&first.key, message);
        let Some(resolver) = resolver else {
            return Err(at(
                "operator mode needs a resolver (resolver: MEMORY)".into()
            ));
        };
        let auth = &self.auth;
        if auth.token.is_some()
            || auth.user.is_some()
            || !auth.users.is_empty()
            || !auth.nkeys.is_empty()
        {
            return Err(at(
                "operator mode takes its users from JWTs: authorization users, nkeys and tokens cannot be used with it".into(),
            ));
        }
        if !self.accounts.is_empty() {
            return Err(at(
                "operator mode takes its accounts from JWTs: accounts {} cannot be used with it"
                    .into(),
            ));
        }
        if self.no_auth_user.is_some() {
            return Err(at("no_auth_user cannot be used in operator mode".into()));
        }
        let mut mode = OperatorMode {
            operators,
            resolver,
            accounts: std::collections::BTreeMap::new(),
        };
        if let Resolver::Full { dir, .. } = &mode.resolver {
            for (key, claims) in read_jwt_dir(dir).map_err(at)? {
                if mode.trusts(&claims.iss) {
                    mode.accounts.insert(key, claims);
                } else {
                    ctx.warn(
                        &first.key_pos,
                        "resolver",
                        format!(
                            "{}: {key}.jwt is not signed by a trusted operator, left out",
                            dir.display()
                        ),
                    );
                }
            }
        }
        for (entry, e) in preload {
            let k = format!("{}.{}", entry.key, e.key);
            let token = e.value.as_str(&k)?;
            let claims = crate::jwt::decode_account(token)
                .map_err(|err| e.value.invalid(&k, format!("account JWT: {err}")))?;
            if claims.sub != e.key {
                return Err(e
                    .value
                    .invalid(&k, format!("the JWT is for account {}", claims.sub)));
            }
            if !mode.trusts(&claims.iss) {
                return Err(e
                    .value
                    .invalid(&k, "the account JWT is not signed by a trusted operator"));
            }
            mode.accounts.insert(e.key.clone(), claims);
        }
        if self.system_account.is_none() {
            let from_jwt = mode
                .operators
                .iter()
                .map(|o| &o.nats.system_account)
                .find(|s| !s.is_empty());
            self.system_account = from_jwt.cloned();
        }
        let (accounts, warnings) = mode.account_options(self.system_account.as_deref());
        for w in warnings {
            ctx.warn(&first.key_pos, "resolver_preload", w);
        }
        self.accounts = accounts;
        self.auth.operator = Some(Arc::new(mode));
        Ok(())
    }

    /// `accounts { NAME: { users: [...] } }`: the accounts, and their users added to the
    /// authorization users with their account set.
    fn apply_accounts(&mut self, entry: &Entry) -> Result<(), ConfError> {
        let key = entry.key.as_str();
        self.accounts.clear();
        self.auth.users.retain(|u| u.account.is_none());
        self.auth.nkeys.retain(|u| u.account.is_none());
        let mut import_pos: Vec<(String, Value, String)> = Vec::new();
        for acc in entry.value.as_map(key)?.entries() {
            let k = format!("{key}.{}", acc.key);
            if acc.used_as_variable {
                continue;
            }
            let mut account = AccountOptions {
                name: acc.key.clone(),
                ..AccountOptions::default()
            };
            // `NAME: {}` and `NAME: { users: [...], exports: [...], imports: [...] }`.
            for field in acc.value.as_map(&k)?.entries() {
                let fk = format!("{k}.{}", field.key);
                match field.key.to_ascii_lowercase().as_str() {
                    "users" => {
                        let (users, nkeys) = parse_users(&field.value, &fk)?;
                        for mut user in users {
                            if self.auth.users.iter().any(|u| u.user == user.user) {
                                return Err(field
                                    .value
                                    .invalid(&fk, format!("duplicate user \"{}\"", user.user)));
                            }
                            user.account = Some(acc.key.clone());
                            self.auth.users.push(user);
                        }
                        for mut user in nkeys {
                            if self.auth.nkeys.iter().any(|u| u.nkey == user.nkey) {
                                return Err(field.value.invalid(
                                    &fk,
                                    format!("duplicate nkey user \"{}\"", user.nkey),
                                ));
                            }
                            user.account = Some(acc.key.clone());
                            self.auth.nkeys.push(user);
                        }
                    }
                    "exports" => account.exports = parse_exports(&field.value, &fk)?,
                    "imports" => {
                        for (i, item) in field.value.as_array(&fk)?.iter().enumerate() {
                            let ik = format!("{fk}[{i}]");
                            account.imports.push(parse_import(item, &ik)?);
                            import_pos.push((account.name.clone(), item.clone(), ik));
                        }
                    }
                    "limits" => {
                        for limit in field.value.as_map(&fk)?.entries() {
                            let lk = format!("{fk}.{}", limit.key);
                            if !limit.used_as_variable {
                                parse_account_limit(&mut account.limits, limit, &lk)?;
                            }
                        }
                    }
                    "max_connections" | "max_conn" | "max_subscriptions" | "max_subs"
                    | "max_payload" | "max_pay" | "max_leafnodes" | "max_leafs" => {
                        parse_account_limit(&mut account.limits, field, &fk)?;
                    }
                    "jetstream" => account.jetstream = parse_account_jetstream(field, &fk)?,
                    "mappings" | "maps" | "nkey" | "default_permissions" => {
                        return Err(unsupported(field))
                    }
                    _ if field.used_as_variable => {}
                    _ => {
                        return Err(ConfError::UnknownKey {
                            pos: field.key_pos.clone(),
                            key: fk,
                        })
                    }
                }
            }
            self.accounts.push(account);
        }
        // Imports are checked once every account and its exports are known.
        for (name, item, ik) in &import_pos {
            let Some(acc) = self.accounts.iter().find(|a| &a.name == name) else {
                continue;
            };
            let import = parse_import(item, ik)?;
            crate::options::check_import(&self.accounts, &acc.name, &import)
                .map_err(|message| item.invalid(ik, message))?;
        }
        Ok(())
    }

    fn apply_top_level(&mut self, entry: &Entry, ctx: &mut Ctx) -> Result<(), ConfError> {
        let key = entry.key.as_str();
        let v = &entry.value;
        match key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = parse_host_port(v, key)?;
                if let Some(host) = host {
                    self.host = host;
                }
                self.port = port;
            }
            "port" => self.port = parse_port(v, key)?,
            "host" | "net" => self.host = parse_ip(v.as_str(key)?, v, key)?,
            "client_advertise" => self.client_advertise = Some(v.as_str(key)?.to_string()),
            "server_name" => {
                let name = v.as_str(key)?;
                if name.contains(' ') {
                    return Err(v.invalid(key, "server name cannot contain spaces"));
                }
                self.server_name = Some(name.to_string());
            }
            "http" => {
                let (host, port) = parse_host_port(v, key)?;
                self.http_host = host;
                self.http_port = Some(port);
            }
            "http_port" | "monitor_port" => {
                // nats-server: 0 leaves monitoring off, -1 picks a free port.
                self.http_port = match v.as_i64(key)? {
                    0 => None,
                    _ => Some(parse_port(v, key)?),
                };
            }
            "https" => {
                let (host, port) = parse_host_port(v, key)?;
                self.http_host = host;
                self.https_port = Some(port);
            }
            "https_port" => {
                // As http_port: 0 leaves HTTPS monitoring off, -1 picks a free port.
                self.https_port = match v.as_i64(key)? {
                    0 => None,
                    _ => Some(parse_port(v, key)?),
                };
            }
            "max_payload" => self.max_payload = parse_limit(v, key, i32::MAX as usize)?,
            "max_control_line" => {
                self.max_control_line = parse_limit(v, key, i32::MAX as usize)?;
            }
            "max_pending" => self.max_pending = parse_limit(v, key, usize::MAX)?,
            "max_connections" | "max_conn" => {
                // nats-server refuses all clients when this is 0 or negative.
                self.max_connections = v.as_i64(key)?.max(0).try_into().unwrap_or(usize::MAX);
            }
            "max_subscriptions" | "max_subs" => self.max_subscriptions = v.as_unsigned(key)?,
            "ping_interval" => {
                self.ping_interval = parse_seconds_or_duration(v, key, ctx)?;
                if self.ping_interval.is_zero() {
                    self.ping_interval = Options::default().ping_interval;
                }
            }
            "ping_max" => {
                self.ping_max = v.as_unsigned(key)?;
                if self.ping_max == 0 {
                    self.ping_max = Options::default().ping_max;
                }
            }
            "write_deadline" => self.write_deadline = parse_seconds_or_duration(v, key, ctx)?,
            "lame_duck_duration" => {
                let d = parse_duration_value(v, key)?;
                if d < MIN_LAME_DUCK_DURATION {
                    return Err(v.invalid(
                        key,
                        format!(
                            "{} is too short, the minimum is 30s",
                            super::format_duration(d)
                        ),
                    ));
                }
                self.lame_duck_duration = d;
            }
            "lame_duck_grace_period" => self.lame_duck_grace_period = parse_duration_value(v, key)?,
            "debug" => self.debug = v.as_bool(key)?,
            "trace" => self.trace = v.as_bool(key)?,
            "trace_verbose" | "trace_headers" => {
                self.trace = v.as_bool(key)?;
                ctx.warn(&v.pos, key, "midge treats this as 'trace'");
            }
            "logtime" => self.logtime = v.as_bool(key)?,
            "logfile" | "log_file" => self.log_file = Some(PathBuf::from(v.as_str(key)?)),
            "log_json" => self.log_json = v.as_bool(key)?,
            "config_watch" => self.config_watch = v.as_bool(key)?,
            "spin_wait" => {
                let d = parse_duration_value(v, key)?;
                if d > crate::spin::MAX_SPIN_WAIT {
                    return Err(v.invalid(
                        key,
                        format!(
                            "{} is too long, the maximum is {}",
                            super::format_duration(d),
                            super::format_duration(crate::spin::MAX_SPIN_WAIT)
                        ),
                    ));
                }
                self.spin_wait = d;
            }
            "pidfile" | "pid_file" => self.pid_file = Some(PathBuf::from(v.as_str(key)?)),
            "authorization" => self.auth = parse_authorization(v, key, ctx)?,
            "tls" => {
                let (tls, allow_non_tls) = parse_tls(v, key, TlsBlock::Client, ctx)?;
                self.tls = Some(tls);
                if let Some(allow) = allow_non_tls {
                    self.allow_non_tls = allow;
                }
            }
            "allow_non_tls" => self.allow_non_tls = v.as_bool(key)?,
            "no_auth_user" => self.no_auth_user = Some(v.as_str(key)?.to_string()),
            "system_account" | "system" => {
                self.system_account = Some(v.as_str(key)?.to_string());
            }
            "no_system_account" | "no_system" | "no_sys_acc" => {
                self.no_system_account = v.as_bool(key)?;
            }
            "cluster" => self.cluster = parse_cluster(v, key, ctx)?,
            "leafnodes" | "leaf" => self.leafnodes = parse_leafnodes(v, key, ctx)?,
            "websocket" | "ws" => self.websocket = parse_websocket(v, key, ctx)?,
            "jetstream" => self.jetstream = parse_jetstream(v, key, self.jetstream.take(), ctx)?,
            lower if UNSUPPORTED.contains(&lower) => {
                if v.kind != ValueKind::Bool(false) {
                    return Err(unsupported(entry));
                }
            }
            "store_dir" | "storedir" => {
                let dir = v.as_str(key)?;
                let js = self.jetstream.get_or_insert_with(|| JetStreamOptions {
                    enabled: false,
                    ..JetStreamOptions::default()
                });
                if js.store_dir.is_some() {
                    return Err(v.invalid(key, "duplicate 'store_dir' configuration"));
                }
                js.store_dir = Some(PathBuf::from(dir));
            }
            lower if IGNORED.contains(&lower) => {
                ctx.warn(
                    &v.pos,
                    key,
                    "ignored: it only tunes a nats-server feature midge does not have",
                );
            }
            _ if entry.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: entry.key_pos.clone(),
                    key: entry.key.clone(),
                })
            }
        }
        Ok(())
    }
}

fn unsupported(entry: &Entry) -> ConfError {
    ConfError::Unsupported {
        pos: entry.key_pos.clone(),
        key: entry.key.clone(),
        value: Box::new(entry.value.clone()),
    }
}

/// `jetstream: enabled | disabled | true | false` or `jetstream { ... }` (nats-server's
/// `parseJetStream`), on top of what a top-level `store_dir` already set.
fn parse_jetstream(
    v: &Value,
    key: &str,
    existing: Option<JetStreamOptions>,
    ctx: &mut Ctx,
) -> Result<Option<JetStreamOptions>, ConfError> {
    let switch = |on: bool, existing: Option<JetStreamOptions>| match existing {
        Some(js) => Some(JetStreamOptions { enabled: on, ..js }),
        None => on.then(JetStreamOptions::default),
    };
    let map = match &v.kind {
        ValueKind::Bool(on) => return Ok(switch(*on, existing)),
        ValueKind::String(s) => {
            return match s.to_ascii_lowercase().as_str() {
                "enabled" | "enable" | "true" => Ok(switch(true, existing)),
                "disabled" | "disable" | "false" => Ok(switch(false, existing)),
                _ => Err(v.invalid(key, format!("expected 'enabled' or 'disabled', got '{s}'"))),
            }
        }
        ValueKind::Map(m) => m,
        other => {
            return Err(v.invalid(
                key,
                format!(
                    "expected a map, a boolean or enabled/disabled, got {}",
                    other.type_name()
                ),
            ))
        }
    };
    let top_level_dir = existing.and_then(|js| js.store_dir);
    let mut js = JetStreamOptions {
        store_dir: top_level_dir.clone(),
        ..JetStreamOptions::default()
    };
    for e in map.entries() {
        let k = format!("{key}.{}", e.key);
        let ev = &e.value;
        match e.key.to_ascii_lowercase().as_str() {
            "store" | "store_dir" | "storedir" => {
                if top_level_dir.is_some() {
                    return Err(ev.invalid(&k, "duplicate 'store_dir' configuration"));
                }
                js.store_dir = Some(PathBuf::from(ev.as_str(&k)?));
            }
            "sync" | "sync_interval" => {
                js.sync = match &ev.kind {
                    ValueKind::String(s) if s.eq_ignore_ascii_case("always") => {
                        JetStreamSync::Always
                    }
                    _ => {
                        let d = parse_duration_value(ev, &k)?;
                        if d.is_zero() {
                            return Err(ev.invalid(&k, "must be a positive duration or 'always'"));
                        }
                        JetStreamSync::Interval(d)
                    }
                }
            }
            "max_memory_store" | "max_mem_store" | "max_mem" => {
                js.max_memory = parse_storage_size(ev, &k)?;
            }
            "max_file_store" | "max_file" => js.max_file = parse_storage_size(ev, &k)?,
            "domain" => {
                let domain = ev.as_str(&k)?;
                let valid = !domain.is_empty()
                    && domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !valid {
                    return Err(ev.invalid(
                        &k,
                        format!("invalid domain '{domain}': letters, digits, '-' and '_' only"),
                    ));
                }
                js.domain = Some(domain.to_string());
            }
            "enable" | "enabled" => js.enabled = ev.as_bool(&k)?,
            // Storing in plain text what was asked to be encrypted would be worse than
            // refusing to start.
            "key"
            | "ek"
            | "encryption_key"
            | "prev_key"
            | "prev_ek"
            | "prev_encryption_key"
            | "cipher" => return Err(unsupported(e)),
            "extension_hint"
            | "limits"
            | "unique_tag"
            | "max_outstanding_catchup"
            | "request_queue_limit"
            | "max_buffered_msgs"
            | "max_buffered_size"
            | "strict"
            | "tpm" => ctx.warn(
                &e.key_pos,
                &k,
                "ignored: it tunes clustered JetStream or a nats-server internal",
            ),
            _ if e.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: e.key_pos.clone(),
                    key: k,
                })
            }
        }
    }
    Ok(Some(js))
}

/// A byte size as nats-server's `getStorageSize` reads it: an integer (the config lexer
/// already applied a `1G`/`512MB` suffix), or a string such as `"1G"` or `"512M"` (powers of
/// 1024; a trailing `B`/`iB` is accepted too). Negative: the default (`None`).
fn parse_storage_size(v: &Value, key: &str) -> Result<Option<u64>, ConfError> {
    let n = match &v.kind {
        ValueKind::Integer(n) => *n,
        ValueKind::String(s) => parse_size_string(s).map_err(|m| v.invalid(key, m))?,
        other => {
            return Err(v.invalid(
                key,
                format!(
                    "expected a size such as 1G or \"512M\", got {}",
                    other.type_name()
                ),
            ))
        }
    };
    Ok(u64::try_from(n).ok())
}

/// `"1G"`, `"512MB"`, `"10KiB"`, `"1000"`: powers of 1024 for every suffix.
pub(crate) fn parse_size_string(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Ok(0);
    }
    let digits = s
        .bytes()
        .enumerate()
        .take_while(|&(i, b)| b.is_ascii_digit() || (i == 0 && b == b'-'))
        .count();
    let (num, suffix) = s.split_at(digits);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid size \"{text}\""))?;
    let lower = suffix.trim().to_ascii_lowercase();
    let unit = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => {
            return Err(format!(
                "invalid size \"{text}\": the suffix must be K, M, G or T"
            ))
        }
    };
    n.checked_mul(1i64 << shift)
        .ok_or_else(|| format!("size \"{text}\" is too big"))
}

/// `jetstream: enabled | disabled` or `jetstream { max_mem, max_file, max_streams,
/// max_consumers, ... }` in an account (nats-server's `parseJetStreamForAccount`).
fn parse_account_jetstream(
    entry: &Entry,
    key: &str,
) -> Result<Option<AccountJetStreamLimits>, ConfError> {
    let v = &entry.value;
    let map = match &v.kind {
        ValueKind::Bool(on) => return Ok(on.then(AccountJetStreamLimits::default)),
        ValueKind::String(s) => {
            return match s.to_ascii_lowercase().as_str() {
                "enabled" | "enable" | "true" => Ok(Some(AccountJetStreamLimits::default())),
                "disabled" | "disable" | "false" => Ok(None),
                _ => Err(v.invalid(key, format!("expected 'enabled' or 'disabled', got '{s}'"))),
            }
        }
        ValueKind::Map(m) => m,
        other => {
            return Err(v.invalid(
                key,
                format!(
                    "expected a map, a boolean or enabled/disabled, got {}",
                    other.type_name()
                ),
            ))
        }
    };
    let mut limits = AccountJetStreamLimits::default();
    for e in map.entries() {
        let k = format!("{key}.{}", e.key);
        let ev = &e.value;
        let size = || -> Result<i64, ConfError> {
            match &ev.kind {
                ValueKind::String(s) => parse_size_string(s).map_err(|m| ev.invalid(&k, m)),
                _ => ev.as_i64(&k),
            }
        };
        match e.key.to_ascii_lowercase().as_str() {
            "max_memory" | "max_mem" | "mem" | "memory" => limits.max_memory = size()?,
            "max_store" | "max_file" | "max_disk" | "store" | "disk" => limits.max_store = size()?,
            "max_streams" | "streams" => limits.max_streams = ev.as_i64(&k)?,
            "max_consumers" | "consumers" => limits.max_consumers = ev.as_i64(&k)?,
            "max_ack_pending" => limits.max_ack_pending = ev.as_i64(&k)?,
            "mem_max_stream_bytes" | "memory_max_stream_bytes" => {
                limits.memory_max_stream_bytes = size()?
            }
            "disk_max_stream_bytes" | "store_max_stream_bytes" => {
                limits.store_max_stream_bytes = size()?
            }
            "max_bytes_required" | "max_stream_bytes" | "max_bytes" => {
                limits.max_bytes_required = ev.as_bool(&k)?
            }
            _ if e.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: e.key_pos.clone(),
                    key: k,
                })
            }
        }
    }
    Ok(Some(limits))
}

/// A port number; `-1` (nats-server's "random port") becomes 0.
fn parse_port(v: &Value, key: &str) -> Result<u16, ConfError> {
    port_from_i64(v.as_i64(key)?).ok_or_else(|| v.invalid(key, "port must be -1 or 0..65535"))
}

fn port_from_i64(n: i64) -> Option<u16> {
    if n == -1 {
        Some(0)
    } else {
        u16::try_from(n).ok()
    }
}

fn parse_ip(text: &str, v: &Value, key: &str) -> Result<IpAddr, ConfError> {
    crate::options::parse_host(text).map_err(|message| v.invalid(key, message))
}

/// `port` or `"host:port"` (`listen`, `http`). An empty host keeps the current one.
fn parse_host_port(v: &Value, key: &str) -> Result<(Option<IpAddr>, u16), ConfError> {
    match &v.kind {
        ValueKind::Integer(_) => Ok((None, parse_port(v, key)?)),
        ValueKind::String(s) => {
            let (host, port) = s
                .rsplit_once(':')
                .ok_or_else(|| v.invalid(key, format!("expected \"host:port\", got \"{s}\"")))?;
            let port = port
                .parse::<i64>()
                .ok()
                .and_then(port_from_i64)
                .ok_or_else(|| v.invalid(key, format!("invalid port \"{port}\"")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let host = if host.is_empty() {
                None
            } else {
                Some(parse_ip(host, v, key)?)
            };
            Ok((host, port))
        }
        other => Err(v.invalid(
            key,
            format!(
                "expected a port or \"host:port\", got {}",
                other.type_name()
            ),
        )),
    }
}

/// A size limit; 0 means "the default", as in nats-server.
fn parse_limit(v: &Value, key: &str, max: usize) -> Result<usize, ConfError> {
    let n: usize = v.as_unsigned(key)?;
    if n > max {
        return Err(v.invalid(key, format!("value {n} is too big (maximum {max})")));
    }
    Ok(if n == 0 {
        default_limit(key).unwrap_or(0)
    } else {
        n
    })
}

fn default_limit(key: &str) -> Option<usize> {
    let d = Options::default();
    match key.to_ascii_lowercase().as_str() {
        "max_payload" => Some(d.max_payload),
        "max_control_line" => Some(d.max_control_line),
        "max_pending" => Some(d.max_pending),
        _ => None,
    }
}

/// One account limit (`max_connections`, `max_subscriptions`, `max_payload`; `max_leafnodes`
/// is accepted for files written for nats-server: midge has no leaf nodes yet). Negative
/// means unlimited, as in nats-server.
fn parse_account_limit(
    limits: &mut AccountLimits,
    entry: &Entry,
    key: &str,
) -> Result<(), ConfError> {
    let v = &entry.value;
    let n = v.as_i64(key)?;
    let n = usize::try_from(n).unwrap_or(0);
    match entry.key.to_ascii_lowercase().as_str() {
        "max_connections" | "max_conn" => limits.max_connections = n,
        "max_subscriptions" | "max_subs" => limits.max_subscriptions = n,
        "max_payload" | "max_pay" => limits.max_payload = n.min(i32::MAX as usize),
        "max_leafnodes" | "max_leafs" => {}
        _ => {
            return Err(ConfError::UnknownKey {
                pos: entry.key_pos.clone(),
                key: key.to_string(),
            })
        }
    }
    Ok(())
}

/// `exports: [{stream: "a.>"}, {service: "svc", accounts: [B], response_type: stream}]`.
fn parse_exports(v: &Value, key: &str) -> Result<Vec<Export>, ConfError> {
    let mut exports = Vec::new();
    for (i, item) in v.as_array(key)?.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let map = item.as_map(&k)?;
        let mut kind = None;
        let mut subject = String::new();
        let mut accounts = None;
        let mut response_type = None;
        let mut threshold = None;
        for e in map.entries() {
            let ek = format!("{k}.{}", e.key);
            match e.key.to_ascii_lowercase().as_str() {
                "stream" | "service" => {
                    let this = if e.key.eq_ignore_ascii_case("stream") {
                        ExportKind::Stream
                    } else {
                        ExportKind::Service
                    };
                    if kind.is_some_and(|k| k != this) {
                        return Err(e
                            .value
                            .invalid(&ek, "an export is a stream or a service, not both"));
                    }
                    kind = Some(this);
                    subject = e.value.as_str(&ek)?.to_string();
                    if !midge_proto::subject::is_valid_subject(subject.as_bytes()) {
                        return Err(e.value.invalid(&ek, format!("invalid subject {subject:?}")));
                    }
                }
                "accounts" => {
                    let mut list = Vec::new();
                    for (j, a) in e.value.as_array(&ek)?.iter().enumerate() {
                        list.push(a.as_str(&format!("{ek}[{j}]"))?.to_string());
                    }
                    accounts = Some(list);
                }
                "response" | "response_type" => {
                    response_type =
                        Some(match e.value.as_str(&ek)?.to_ascii_lowercase().as_str() {
                            "single" | "singleton" => ResponseType::Singleton,
                            "stream" => ResponseType::Stream,
                            "chunk" | "chunked" => ResponseType::Chunked,
                            other => {
                                return Err(e
                                    .value
                                    .invalid(&ek, format!("Unknown response type: {other:?}")))
                            }
                        });
                }
                "threshold" | "response_threshold" | "response_max_time" | "response_time" => {
                    threshold = Some(parse_duration_value(&e.value, &ek)?);
                }
                "latency" | "account_token_position" | "advertise" | "allow_trace" => {
                    return Err(unsupported(e))
                }
                _ if e.used_as_variable => {}
                _ => {
                    return Err(ConfError::UnknownKey {
                        pos: e.key_pos.clone(),
                        key: ek,
                    })
                }
            }
        }
        let Some(kind) = kind else {
            return Err(item.invalid(&k, "an export needs a 'stream' or a 'service' subject"));
        };
        if kind == ExportKind::Stream && (response_type.is_some() || threshold.is_some()) {
            return Err(item.invalid(&k, "Detected response directive on non-service"));
        }
        exports.push(Export {
            kind,
            subject,
            accounts,
            response_type: response_type.unwrap_or_default(),
            response_threshold: threshold.unwrap_or(DEFAULT_RESPONSE_THRESHOLD),
        });
    }
    Ok(exports)
}

/// `{stream: {account: B, subject: "a.>"}, prefix: "from_b"}` or
/// `{service: {account: B, subject: "svc"}, to: "b_svc"}`.
fn parse_import(item: &Value, k: &str) -> Result<Import, ConfError> {
    let map = item.as_map(k)?;
    let mut import: Option<Import> = None;
    let mut to = None;
    let mut prefix = None;
    for e in map.entries() {
        let ek = format!("{k}.{}", e.key);
        match e.key.to_ascii_lowercase().as_str() {
            "stream" | "service" => {
                let kind = if e.key.eq_ignore_ascii_case("stream") {
                    ExportKind::Stream
                } else {
                    ExportKind::Service
                };
                if import.is_some() {
                    return Err(e
                        .value
                        .invalid(&ek, "an import is a stream or a service, not both"));
                }
                let m = e.value.as_map(&ek)?;
                let field = |name: &str| -> Result<String, ConfError> {
                    match m
                        .entries()
                        .iter()
                        .find(|f| f.key.eq_ignore_ascii_case(name))
                    {
                        Some(f) => Ok(f.value.as_str(&format!("{ek}.{name}"))?.to_string()),
                        None => Err(e.value.invalid(&ek, "Expect an account name and a subject")),
                    }
                };
                import = Some(Import {
                    kind,
                    account: field("account")?,
                    subject: field("subject")?,
                    to: None,
                    prefix: None,
                });
            }
            "to" => to = Some(e.value.as_str(&ek)?.to_string()),
            "prefix" => prefix = Some(e.value.as_str(&ek)?.to_string()),
            "share" => {
                e.value.as_bool(&ek)?;
            }
            _ if e.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: e.key_pos.clone(),
                    key: ek,
                })
            }
        }
    }
    let Some(mut import) = import else {
        return Err(item.invalid(k, "an import needs a 'stream' or a 'service' entry"));
    };
    import.to = to;
    import.prefix = prefix;
    Ok(import)
}

fn parse_duration_value(v: &Value, key: &str) -> Result<Duration, ConfError> {
    let text = match &v.kind {
        ValueKind::String(s) => s,
        other => {
            return Err(v.invalid(
                key,
                format!(
                    "expected a duration string such as \"10s\", got {}",
                    other.type_name()
                ),
            ))
        }
    };
    let d = parse_duration(text).map_err(|message| v.invalid(key, message))?;
    at_most_a_year(d, v, key)
}

fn at_most_a_year(d: Duration, v: &Value, key: &str) -> Result<Duration, ConfError> {
    if d > MAX_DURATION {
        return Err(v.invalid(
            key,
            format!(
                "{} is longer than the maximum of 1 year ({})",
                super::format_duration(d),
                super::format_duration(MAX_DURATION)
            ),
        ));
    }
    Ok(d)
}

/// A duration string, or (older nats-server style, with a warning) an integer of seconds.
fn parse_seconds_or_duration(v: &Value, key: &str, ctx: &mut Ctx) -> Result<Duration, ConfError> {
    if let ValueKind::Integer(_) = v.kind {
        let secs: u64 = v.as_unsigned(key)?;
        ctx.warn(
            &v.pos,
            key,
            format!("a number of seconds is deprecated, write \"{secs}s\""),
        );
        return at_most_a_year(Duration::from_secs(secs), v, key);
    }
    parse_duration_value(v, key)
}

fn parse_authorization(v: &Value, key: &str, ctx: &mut Ctx) -> Result<Authorization, ConfError> {
    let map = v.as_map(key)?;
    let mut auth = Authorization::default();
    let mut default_permissions = None;
    let mut errors = Vec::new();
    for entry in map.entries() {
        let k = format!("{key}.{}", entry.key);
        let v = &entry.value;
        let result = (|| {
            match entry.key.to_ascii_lowercase().as_str() {
                "user" | "username" => auth.user = Some(v.as_str(&k)?.to_string()),
                "pass" | "password" => auth.password = Some(v.as_str(&k)?.to_string()),
                "token" => auth.token = Some(v.as_str(&k)?.to_string()),
                "timeout" => {
                    auth.timeout = parse_auth_timeout(v, &k)?;
                    if auth.timeout > Duration::from_secs(60) {
                        ctx.warn(
                            &v.pos,
                            &k,
                            "over 60 seconds is unusually long (an unquoted duration such as 1m means 1000000)",
                        );
                    }
                }
                "users" => (auth.users, auth.nkeys) = parse_users(v, &k)?,
                "default_permission" | "default_permissions" | "permissions" => {
                    default_permissions = Some(parse_permissions(v, &k)?);
                }
                "auth_callout" | "auth_hook" | "proxy_required" => return Err(unsupported(entry)),
                _ if entry.used_as_variable => {}
                _ => {
                    return Err(ConfError::UnknownKey {
                        pos: entry.key_pos.clone(),
                        key: k.clone(),
                    })
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errors.push(e);
        }
    }
    if let Some(e) = ConfError::collect(errors) {
        return Err(e);
    }
    if let Some(defaults) = default_permissions {
        for user in auth.users.iter_mut().filter(|u| u.permissions.is_none()) {
            user.permissions = Some(defaults.clone());
        }
        for user in auth.nkeys.iter_mut().filter(|u| u.permissions.is_none()) {
            user.permissions = Some(defaults.clone());
        }
    }
    // The same rules as Options::validate, but here they can point at the block.
    if let Err(message) = auth.check_combination() {
        return Err(v.invalid(key, message));
    }
    Ok(auth)
}

/// The `cluster {}` block, with nats-server's rules: no tokens or users lists in its
/// authorization, and `tls` is refused because midge has no TLS yet.
/// `leafnodes { listen, advertise, no_advertise, authorization {...}, remotes: [...] }`.
fn parse_leafnodes(v: &Value, key: &str, ctx: &mut Ctx) -> Result<LeafOptions, ConfError> {
    let map = v.as_map(key)?;
    let mut leaf = LeafOptions::default();
    for entry in map.entries() {
        let k = format!("{key}.{}", entry.key);
        let v = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "listen" => {
                let (host, port) = parse_host_port(v, &k)?;
                if let Some(host) = host {
                    leaf.host = host;
                }
                leaf.port = Some(port);
            }
            "port" => leaf.port = Some(parse_port(v, &k)?),
            "host" | "net" => leaf.host = parse_ip(v.as_str(&k)?, v, &k)?,
            "advertise" => leaf.advertise = Some(v.as_str(&k)?.to_string()),
            "no_advertise" => leaf.no_advertise = v.as_bool(&k)?,
            "reconnect" | "reconnect_delay" => {
                leaf.reconnect = parse_seconds_or_duration(v, &k, ctx)?;
            }
            "tls" => {
                let (tls, _) = parse_tls(v, &k, TlsBlock::Leaf, ctx)?;
                if tls.handshake_first {
                    return Err(v.invalid(
                        &k,
                        "handshake_first is supported for client connections only",
                    ));
                }
                leaf.tls = Some(tls);
            }
            "authorization" => {
                for e in v.as_map(&k)?.entries() {
                    let ek = format!("{k}.{}", e.key);
                    match e.key.to_ascii_lowercase().as_str() {
                        "user" | "username" => leaf.user = Some(e.value.as_str(&ek)?.to_string()),
                        "password" | "pass" => {
                            leaf.password = Some(e.value.as_str(&ek)?.to_string());
                        }
                        "account" => leaf.account = Some(e.value.as_str(&ek)?.to_string()),
                        "timeout" => {
                            leaf.auth_timeout = parse_seconds_or_duration(&e.value, &ek, ctx)?
                        }
                        "users" => {
                            for (i, item) in e.value.as_array(&ek)?.iter().enumerate() {
                                let uk = format!("{ek}[{i}]");
                                let mut user = User::default();
                                for f in item.as_map(&uk)?.entries() {
                                    let fk = format!("{uk}.{}", f.key);
                                    match f.key.to_ascii_lowercase().as_str() {
                                        "user" | "username" => {
                                            user.user = f.value.as_str(&fk)?.to_string()
                                        }
                                        "password" | "pass" => {
                                            user.password = f.value.as_str(&fk)?.to_string()
                                        }
                                        "account" => {
                                            user.account = Some(f.value.as_str(&fk)?.to_string())
                                        }
                                        _ if f.used_as_variable => {}
                                        _ => return Err(unsupported(f)),
                                    }
                                }
                                if user.user.is_empty() {
                                    return Err(
                                        item.invalid(&uk, "a leaf node user needs a 'user'")
                                    );
                                }
                                leaf.users.push(user);
                            }
                        }
                        _ if e.used_as_variable => {}
                        _ => return Err(unsupported(e)),
                    }
                }
                if leaf.user.is_some() && !leaf.users.is_empty() {
                    return Err(v.invalid(&k, "cannot have a single user and a users list"));
                }
            }
            "remotes" => {
                for (i, item) in v.as_array(&k)?.iter().enumerate() {
                    let rk = format!("{k}[{i}]");
                    let mut remote = RemoteLeaf::default();
                    for e in item.as_map(&rk)?.entries() {
                        let ek = format!("{rk}.{}", e.key);
                        match e.key.to_ascii_lowercase().as_str() {
                            "url" | "urls" => {
                                let urls: Vec<&Value> = match &e.value.kind {
                                    ValueKind::String(_) => vec![&e.value],
                                    _ => e.value.as_array(&ek)?.iter().collect(),
                                };
                                for u in urls {
                                    let text = u.as_str(&ek)?;
                                    RouteUrl::parse_leaf(text).map_err(|m| u.invalid(&ek, m))?;
                                    remote.urls.push(text.to_string());
                                }
                            }
                            "account" | "local" => {
                                remote.account = Some(e.value.as_str(&ek)?.to_string());
                            }
                            "tls" => remote.tls = Some(parse_remote_tls(&e.value, &ek, ctx)?),
                            "deny_imports" | "deny_import" | "deny_exports" | "deny_export" => {
                                let subjects: Vec<&Value> = match &e.value.kind {
                                    ValueKind::String(_) => vec![&e.value],
                                    _ => e.value.as_array(&ek)?.iter().collect(),
                                };
                                let mut list = Vec::new();
                                for subj in subjects {
                                    let text = subj.as_str(&ek)?;
                                    if !midge_proto::subject::is_valid_subject(text.as_bytes()) {
                                        return Err(subj
                                            .invalid(&ek, format!("invalid subject \"{text}\"")));
                                    }
                                    list.push(text.to_string());
                                }
                                if e.key.to_ascii_lowercase().starts_with("deny_import") {
                                    remote.deny_imports.extend(list);
                                } else {
                                    remote.deny_exports.extend(list);
                                }
                            }
                            _ if e.used_as_variable => {}
                            _ => return Err(unsupported(e)),
                        }
                    }
                    if remote.urls.is_empty() {
                        return Err(item.invalid(&rk, "a remote needs a 'url' or 'urls'"));
                    }
                    let tls_url = remote
                        .urls
                        .iter()
                        .any(|u| u.to_ascii_lowercase().starts_with("tls://"));
                    let has_ca = remote.tls.as_ref().is_some_and(|t| t.ca_file.is_some());
                    if (tls_url || remote.tls.is_some()) && !has_ca {
                        return Err(item.invalid(
                            &rk,
                            "TLS to the hub needs tls { ca_file } (the CA the hub's certificate chains to)",
                        ));
                    }
                    leaf.remotes.push(remote);
                }
            }
            _ if entry.used_as_variable => {}
            _ => return Err(unsupported(entry)),
        }
    }
    Ok(leaf)
}

/// `websocket { listen, port, host, advertise, tls {}, no_tls, same_origin, allowed_origins,
/// compression, handshake_timeout, authorization {}, no_auth_user, jwt_cookie }`.
fn parse_websocket(
    v: &Value,
    key: &str,
    ctx: &mut Ctx,
) -> Result<crate::options::WebsocketOptions, ConfError> {
    let map = v.as_map(key)?;
    let mut ws = crate::options::WebsocketOptions::default();
    let mut errors = Vec::new();
    for entry in map.entries() {
        let k = format!("{key}.{}", entry.key);
        let v = &entry.value;
        let result = (|| {
            match entry.key.to_ascii_lowercase().as_str() {
                "listen" => {
                    let (host, port) = parse_host_port(v, &k)?;
                    if let Some(host) = host {
                        ws.host = host;
                    }
                    ws.port = Some(port);
                }
                "port" => ws.port = Some(parse_port(v, &k)?),
                "host" | "net" => ws.host = parse_ip(v.as_str(&k)?, v, &k)?,
                "advertise" => ws.advertise = Some(v.as_str(&k)?.to_string()),
                "no_tls" => ws.no_tls = v.as_bool(&k)?,
                "tls" => {
                    let tls = parse_tls(v, &k, TlsBlock::Websocket, ctx)?.0;
                    if tls.handshake_first {
                        return Err(v.invalid(
                            &k,
                            "handshake_first is supported for client connections only",
                        ));
                    }
                    ws.tls = Some(tls);
                }
                "same_origin" => ws.same_origin = v.as_bool(&k)?,
                "allowed_origins" | "allowed_origin" | "allow_origins" | "allow_origin"
                | "origins" | "origin" => {
                    let items: Vec<&Value> = match &v.kind {
                        ValueKind::String(_) => vec![v],
                        _ => v.as_array(&k)?.iter().collect(),
                    };
                    for item in items {
                        let text = item.as_str(&k)?;
                        crate::ws::Origin::parse(text).map_err(|m| {
                            item.invalid(&k, format!("unable to parse allowed origin: {m}"))
                        })?;
                        ws.allowed_origins.push(text.to_string());
                    }
                }
                "compression" | "compress" => ws.compression = v.as_bool(&k)?,
                "handshake_timeout" => {
                    ws.handshake_timeout = parse_seconds_or_duration(v, &k, ctx)?;
                    if ws.handshake_timeout.is_zero() {
                        ws.handshake_timeout =
                            crate::options::WebsocketOptions::DEFAULT_HANDSHAKE_TIMEOUT;
                    }
                }
                "authorization" | "authentication" => {
                    let auth = parse_authorization(v, &k, ctx)?;
                    if !auth.users.is_empty() {
                        return Err(v.invalid(
                            &k,
                            "websocket authorization takes a user/password or a token, not users",
                        ));
                    }
                    ws.user = auth.user;
                    ws.password = auth.password;
                    ws.token = auth.token;
                    if auth.timeout != crate::options::Authorization::default().timeout {
                        ws.auth_timeout = Some(auth.timeout);
                    }
                }
                "no_auth_user" => ws.no_auth_user = Some(v.as_str(&k)?.to_string()),
                "jwt_cookie" => {
                    ws.jwt_cookie = Some(v.as_str(&k)?.to_string());
                    ctx.warn(
                        &v.pos,
                        &k,
                        "kept, but unused until midge supports JWT authentication",
                    );
                }
                "user_cookie" | "pass_cookie" | "token_cookie" | "headers" | "ping_interval" => {
                    return Err(unsupported(entry))
                }
                _ if entry.used_as_variable => {}
                _ => {
                    return Err(ConfError::UnknownKey {
                        pos: entry.key_pos.clone(),
                        key: k.clone(),
                    })
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errors.push(e);
        }
    }
    if let Some(e) = ConfError::collect(errors) {
        return Err(e);
    }
    if ws.port.is_some() && ws.tls.is_none() && !ws.no_tls {
        return Err(v.invalid(
            key,
            "websocket requires TLS configuration (a tls {} block, or no_tls: true)",
        ));
    }
    Ok(ws)
}

fn parse_cluster(v: &Value, key: &str, ctx: &mut Ctx) -> Result<ClusterOptions, ConfError> {
    let map = v.as_map(key)?;
    let mut cluster = ClusterOptions::default();
    let mut errors = Vec::new();
    for entry in map.entries() {
        let k = format!("{key}.{}", entry.key);
        let v = &entry.value;
        let result = (|| {
            match entry.key.to_ascii_lowercase().as_str() {
                "name" => {
                    let name = v.as_str(&k)?;
                    if name.contains(' ') {
                        return Err(v.invalid(&k, "cluster name cannot contain spaces"));
                    }
                    cluster.name = Some(name.to_string());
                }
                "listen" => {
                    let (host, port) = parse_host_port(v, &k)?;
                    if let Some(host) = host {
                        cluster.host = host;
                    }
                    cluster.port = Some(port);
                }
                "port" => cluster.port = Some(parse_port(v, &k)?),
                "host" | "net" => cluster.host = parse_ip(v.as_str(&k)?, v, &k)?,
                "authorization" => {
                    let auth = parse_authorization(v, &k, ctx)?;
                    if !auth.users.is_empty() {
                        return Err(
                            v.invalid(&k, "Cluster authorization does not allow multiple users")
                        );
                    }
                    if auth.token.is_some() {
                        return Err(v.invalid(&k, "Cluster authorization does not support tokens"));
                    }
                    cluster.user = auth.user;
                    cluster.password = auth.password;
                    cluster.auth_timeout = auth.timeout;
                }
                "routes" => {
                    let urls: Vec<&Value> = match &v.kind {
                        ValueKind::String(_) => vec![v],
                        _ => v.as_array(&k)?.iter().collect(),
                    };
                    for url in urls {
                        let text = url.as_str(&k)?;
                        RouteUrl::parse(text).map_err(|message| url.invalid(&k, message))?;
                        cluster.routes.push(text.to_string());
                    }
                }
                "cluster_advertise" | "advertise" => {
                    cluster.advertise = Some(v.as_str(&k)?.to_string());
                }
                "no_advertise" => cluster.no_advertise = v.as_bool(&k)?,
                "connect_retries" => cluster.connect_retries = v.as_unsigned(&k)?,
                "pool_size" | "compression" | "accounts" => {
                    ctx.warn(
                        &v.pos,
                        &k,
                        "ignored: midge uses one route per server pair (nats-server 2.9 style)",
                    );
                }
                "tls" => cluster.tls = Some(parse_tls(v, &k, TlsBlock::Cluster, ctx)?.0),
                "permissions" => return Err(unsupported(entry)),
                _ if entry.used_as_variable => {}
                _ => {
                    return Err(ConfError::UnknownKey {
                        pos: entry.key_pos.clone(),
                        key: k.clone(),
                    })
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            errors.push(e);
        }
    }
    match ConfError::collect(errors) {
        Some(e) => Err(e),
        None => Ok(cluster),
    }
}

/// Which `tls {}` block is being read: they share the syntax, not every option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsBlock {
    Client,
    Cluster,
    Leaf,
    Websocket,
}

/// `tls { cert_file, key_file, ca_file, verify, timeout, ... }`, and `allow_non_tls` if the
/// block sets it (nats-server only knows it at the top level). The files are loaded here, as
/// nats-server does, so a bad path or a key that does not match its certificate is reported
/// at the line that names it (and `-t` catches it).
fn parse_tls(
    v: &Value,
    key: &str,
    block: TlsBlock,
    ctx: &mut Ctx,
) -> Result<(TlsOptions, Option<bool>), ConfError> {
    let map = v.as_map(key)?;
    let (mut cert, mut key_file, mut ca) = (None, None, None);
    let mut verify: Option<(bool, &Value)> = None;
    let mut timeout = TlsOptions::DEFAULT_TIMEOUT;
    let mut allow_non_tls = None;
    let mut handshake_first = false;
    let mut verify_and_map = false;
    let mut pinned_certs = None;
    for entry in map.entries() {
        let k = format!("{key}.{}", entry.key);
        let ev = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "cert_file" => cert = Some((PathBuf::from(ev.as_str(&k)?), ev)),
            "key_file" => key_file = Some((PathBuf::from(ev.as_str(&k)?), ev)),
            "ca_file" => ca = Some((PathBuf::from(ev.as_str(&k)?), ev)),
            "verify" => verify = Some((ev.as_bool(&k)?, ev)),
            "timeout" => timeout = parse_auth_timeout(ev, &k)?,
            "allow_non_tls" => allow_non_tls = Some(ev.as_bool(&k)?),
            "verify_and_map" => {
                if ev.as_bool(&k)? {
                    if block != TlsBlock::Client {
                        return Err(ev.invalid(
                            &k,
                            "midge maps certificates to users in the top-level tls block only",
                        ));
                    }
                    // As nats-server: mapping implies verifying.
                    verify_and_map = true;
                    verify = Some((true, ev));
                }
            }
            "pinned_certs" => {
                if block == TlsBlock::Websocket {
                    return Err(unsupported(entry));
                }
                pinned_certs = parse_pinned_certs(ev, &k)?;
            }
            "insecure" if block == TlsBlock::Cluster => {
                if ev.as_bool(&k)? {
                    return Err(ev.invalid(
                        &k,
                        "midge always verifies route certificates against ca_file",
                    ));
                }
            }
            "insecure" => {
                ev.as_bool(&k)?;
                ctx.warn(
                    &ev.pos,
                    &k,
                    "ignored: it only applies to connections a server makes (routes, leaf nodes)",
                );
            }
            // Accepted so nats-server files load; rustls' defaults are already the modern,
            // safe set (TLS 1.2 ECDHE with AEAD ciphers, and TLS 1.3), and Go's suite and curve
            // names do not map one to one.
            "cipher_suites" | "curve_preferences" => {
                ev.as_array(&k)?;
                ctx.warn(
                    &ev.pos,
                    &k,
                    "ignored: midge uses rustls' safe defaults (TLS 1.2 ECDHE+AEAD and TLS 1.3)",
                );
            }
            "min_version" => {
                if ev.as_str(&k)? != "1.2" {
                    return Err(ev.invalid(
                        &k,
                        "midge supports only \"1.2\" (TLS 1.2 and 1.3 are both allowed)",
                    ));
                }
            }
            "handshake_first" | "first" | "immediate" => match &ev.kind {
                ValueKind::Bool(b) => handshake_first = *b,
                // nats-server also takes a delay after which a silent client gets INFO in
                // plain text (TLS-first and plain clients on one port).
                _ => {
                    return Err(ev.invalid(
                        &k,
                        "midge takes true or false (a fallback delay is not supported yet)",
                    ))
                }
            },
            "cert_store"
            | "cert_match_by"
            | "cert_match"
            | "ca_certs_match"
            | "cert_match_skip_invalid"
            | "ocsp_peer"
            | "certs"
            | "certificates"
            | "connection_rate_limit"
            | "verify_cert_and_check_known_urls"
            | "allow_insecure_cipher_suites" => return Err(unsupported(entry)),
            _ if entry.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: entry.key_pos.clone(),
                    key: k,
                })
            }
        }
    }
    let (Some((cert_file, cert_v)), Some((key_path, key_v))) = (cert, key_file) else {
        return Err(v.invalid(key, "cert_file and key_file are both required"));
    };
    let opts = TlsOptions {
        cert_file,
        key_file: key_path,
        ca_file: ca.as_ref().map(|(p, _)| p.clone()),
        verify: verify.is_some_and(|(b, _)| b),
        timeout,
        handshake_first,
        verify_and_map,
        pinned_certs,
    };
    if block == TlsBlock::Cluster && (opts.handshake_first || allow_non_tls.is_some()) {
        return Err(v.invalid(
            key,
            "routes start TLS right away and never fall back to plain text: handshake_first and allow_non_tls do not apply",
        ));
    }
    if block == TlsBlock::Cluster && opts.ca_file.is_none() {
        return Err(v.invalid(key, crate::tls::TlsError::RouteWithoutCa.to_string()));
    }
    if ctx.skip_files {
        return Ok((opts, allow_non_tls));
    }
    let loaded = match block {
        TlsBlock::Cluster => crate::tls::RouteTls::load(&opts).map(|_| ()),
        _ => crate::tls::load(&opts).map(|_| ()),
    };
    if let Err(e) = loaded {
        let (at, name) = match e.source_option() {
            TlsErrorSource::CertFile => (cert_v, "cert_file"),
            TlsErrorSource::KeyFile => (key_v, "key_file"),
            TlsErrorSource::CaFile => ca.map_or((v, ""), |(_, ev)| (ev, "ca_file")),
            TlsErrorSource::Verify => verify.map_or((v, ""), |(_, ev)| (ev, "verify")),
            TlsErrorSource::Other => (v, ""),
        };
        let k = if name.is_empty() {
            key.to_string()
        } else {
            format!("{key}.{name}")
        };
        return Err(at.invalid(&k, e.to_string()));
    }
    Ok((opts, allow_non_tls))
}

/// `pinned_certs: [ "<hex sha256 of the SubjectPublicKeyInfo DER>", ... ]`, as nats-server:
/// 64 hex digits each, compared in lower case; an empty list pins nothing.
fn parse_pinned_certs(
    v: &Value,
    key: &str,
) -> Result<Option<std::collections::BTreeSet<String>>, ConfError> {
    let mut set = std::collections::BTreeSet::new();
    for item in v.as_array(key)? {
        let text = item.as_str(key)?;
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(item.invalid(
                key,
                format!("{text:?} is not a hex SHA-256 of a SubjectPublicKeyInfo (64 hex digits)"),
            ));
        }
        set.insert(text.to_ascii_lowercase());
    }
    Ok((!set.is_empty()).then_some(set))
}

/// A remote's `tls { ca_file, cert_file, key_file, timeout }`, files checked now.
fn parse_remote_tls(v: &Value, key: &str, ctx: &Ctx) -> Result<RemoteTls, ConfError> {
    let mut tls = RemoteTls {
        timeout: TlsOptions::DEFAULT_TIMEOUT,
        ..RemoteTls::default()
    };
    for e in v.as_map(key)?.entries() {
        let k = format!("{key}.{}", e.key);
        match e.key.to_ascii_lowercase().as_str() {
            "ca_file" => tls.ca_file = Some(PathBuf::from(e.value.as_str(&k)?)),
            "cert_file" => tls.cert_file = Some(PathBuf::from(e.value.as_str(&k)?)),
            "key_file" => tls.key_file = Some(PathBuf::from(e.value.as_str(&k)?)),
            "timeout" => tls.timeout = parse_auth_timeout(&e.value, &k)?,
            _ if e.used_as_variable => {}
            _ => return Err(unsupported(e)),
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err(v.invalid(key, "cert_file and key_file go together"));
    }
    if let Some(ca) = tls.ca_file.as_ref().filter(|_| !ctx.skip_files) {
        let cert = tls.cert_file.as_deref().zip(tls.key_file.as_deref());
        crate::tls::client_config(ca, cert).map_err(|e| v.invalid(key, e.to_string()))?;
    }
    Ok(tls)
}

/// Seconds as an integer or float, or a duration string.
fn parse_auth_timeout(v: &Value, key: &str) -> Result<Duration, ConfError> {
    let secs = match &v.kind {
        ValueKind::Integer(n) => *n as f64,
        ValueKind::Float(f) => *f,
        ValueKind::String(_) => return parse_duration_value(v, key),
        other => {
            return Err(v.invalid(
                key,
                format!(
                    "expected seconds or a duration string, got {}",
                    other.type_name()
                ),
            ))
        }
    };
    let d = Duration::try_from_secs_f64(secs)
        .map_err(|_| v.invalid(key, format!("invalid timeout {secs} seconds")))?;
    at_most_a_year(d, v, key)
}

/// A `users` list: entries with `user` (and `password`), and entries with an `nkey`.
fn parse_users(v: &Value, key: &str) -> Result<(Vec<User>, Vec<NkeyUser>), ConfError> {
    let mut users: Vec<User> = Vec::new();
    let mut nkeys: Vec<NkeyUser> = Vec::new();
    for (i, item) in v.as_array(key)?.iter().enumerate() {
        let k = format!("{key}[{i}]");
        let map = item.as_map(&k)?;
        let mut user = User::default();
        let mut has_user = false;
        let mut has_password = false;
        let mut nkey: Option<String> = None;
        for entry in map.entries() {
            let ek = format!("{k}.{}", entry.key);
            let ev = &entry.value;
            match entry.key.to_ascii_lowercase().as_str() {
                "user" | "username" => {
                    user.user = ev.as_str(&ek)?.to_string();
                    has_user = true;
                }
                "pass" | "password" => {
                    user.password = ev.as_str(&ek)?.to_string();
                    has_password = true;
                }
                "nkey" => {
                    let key = ev.as_str(&ek)?;
                    if !crate::options::is_public_user_nkey(key) {
                        return Err(ev.invalid(&ek, "not a valid public nkey for a user"));
                    }
                    nkey = Some(key.to_string());
                }
                "permission" | "permissions" | "authorization" => {
                    user.permissions = Some(parse_permissions(ev, &ek)?);
                }
                "allowed_connection_types" | "connection_types" | "clients" | "proxy_required" => {
                    return Err(unsupported(entry))
                }
                _ if entry.used_as_variable => {}
                _ => {
                    return Err(ConfError::UnknownKey {
                        pos: entry.key_pos.clone(),
                        key: ek,
                    })
                }
            }
        }
        if let Some(nkey) = nkey {
            if has_user || has_password {
                return Err(item.invalid(&k, "nkey users do not take usernames or passwords"));
            }
            if nkeys.iter().any(|u| u.nkey == nkey) {
                return Err(item.invalid(&k, format!("duplicate nkey user \"{nkey}\"")));
            }
            nkeys.push(NkeyUser {
                nkey,
                permissions: user.permissions,
                account: None,
            });
            continue;
        }
        if !has_user {
            return Err(item.invalid(&k, "a user entry needs 'user' or 'nkey'"));
        }
        if users.iter().any(|u| u.user == user.user) {
            return Err(item.invalid(&k, format!("duplicate user \"{}\"", user.user)));
        }
        users.push(user);
    }
    Ok((users, nkeys))
}

fn parse_permissions(v: &Value, key: &str) -> Result<Permissions, ConfError> {
    let mut perms = Permissions::default();
    for entry in v.as_map(key)?.entries() {
        let k = format!("{key}.{}", entry.key);
        let ev = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "pub" | "publish" | "import" => {
                perms.publish = parse_subject_permission(ev, &k, false)?
            }
            "sub" | "subscribe" | "export" => {
                perms.subscribe = parse_subject_permission(ev, &k, true)?;
            }
            "allow_responses" | "publish_allow_responses" => {
                perms.allow_responses = parse_allow_responses(ev, &k)?;
            }
            _ if entry.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: entry.key_pos.clone(),
                    key: k,
                })
            }
        }
    }
    Ok(perms)
}

/// A subject, a list of subjects (both meaning "allow"), or `{allow, deny}`. An empty map is no
/// restriction, as in nats-server.
fn parse_subject_permission(
    v: &Value,
    key: &str,
    allow_queue: bool,
) -> Result<Option<SubjectPermission>, ConfError> {
    if let ValueKind::Map(map) = &v.kind {
        if map.is_empty() {
            return Ok(None);
        }
        let mut perm = SubjectPermission::default();
        for entry in map.entries() {
            let k = format!("{key}.{}", entry.key);
            match entry.key.to_ascii_lowercase().as_str() {
                "allow" => perm.allow = parse_subjects(&entry.value, &k, allow_queue)?,
                "deny" => perm.deny = parse_subjects(&entry.value, &k, allow_queue)?,
                _ if entry.used_as_variable => {}
                _ => {
                    return Err(ConfError::UnknownKey {
                        pos: entry.key_pos.clone(),
                        key: k,
                    })
                }
            }
        }
        return Ok(Some(perm));
    }
    Ok(Some(SubjectPermission {
        allow: parse_subjects(v, key, allow_queue)?,
        deny: Vec::new(),
    }))
}

fn parse_subjects(v: &Value, key: &str, allow_queue: bool) -> Result<Vec<String>, ConfError> {
    let subjects: Vec<(&Value, &str)> = match &v.kind {
        ValueKind::String(s) => vec![(v, s.as_str())],
        ValueKind::Array(items) => items
            .iter()
            .map(|item| item.as_str(key).map(|s| (item, s)))
            .collect::<Result<_, _>>()?,
        other => {
            return Err(v.invalid(
                key,
                format!(
                    "expected a subject or an array of subjects, got {}",
                    other.type_name()
                ),
            ))
        }
    };
    subjects
        .into_iter()
        .map(|(item, s)| {
            crate::options::check_permission_subject(s, allow_queue)
                .map(|()| s.to_string())
                .map_err(|message| item.invalid(key, message))
        })
        .collect()
}

fn parse_allow_responses(v: &Value, key: &str) -> Result<Option<ResponsePermission>, ConfError> {
    let map = match &v.kind {
        ValueKind::Bool(true) => return Ok(Some(ResponsePermission::default())),
        ValueKind::Bool(false) => return Ok(None),
        ValueKind::Map(map) => map,
        other => {
            return Err(v.invalid(
                key,
                format!("expected a boolean or a map, got {}", other.type_name()),
            ))
        }
    };
    let mut rp = ResponsePermission::default();
    for entry in map.entries() {
        let k = format!("{key}.{}", entry.key);
        let ev = &entry.value;
        match entry.key.to_ascii_lowercase().as_str() {
            "max" | "max_msgs" | "max_messages" | "max_responses" => {
                // 0 keeps the default; a negative count means unlimited (stored as 0).
                match ev.as_i64(&k)? {
                    0 => {}
                    n if n < 0 => rp.max_msgs = 0,
                    n => rp.max_msgs = usize::try_from(n).unwrap_or(usize::MAX),
                }
            }
            "expires" | "expiration" | "ttl" => {
                let text = ev.as_str(&k)?;
                // A negative duration means no expiry (stored as zero), zero keeps the default.
                if let Some(positive) = text.strip_prefix('-') {
                    parse_duration(positive).map_err(|m| ev.invalid(&k, m))?;
                    rp.expires = Duration::ZERO;
                } else {
                    let d = parse_duration(text).map_err(|m| ev.invalid(&k, m))?;
                    let d = at_most_a_year(d, ev, &k)?;
                    if !d.is_zero() {
                        rp.expires = d;
                    }
                }
            }
            _ if entry.used_as_variable => {}
            _ => {
                return Err(ConfError::UnknownKey {
                    pos: entry.key_pos.clone(),
                    key: k,
                })
            }
        }
    }
    Ok(Some(rp))
}
