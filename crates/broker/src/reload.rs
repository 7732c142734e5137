//! Live configuration: reload (SIGHUP, `--signal reload`, [`Server::reload`]), the config
//! file watcher (`config_watch`), and the digest and load time of the configuration in force.
//!
//! How options are swapped: the options in force are an `Arc<Options>` in a
//! `tokio::sync::watch` channel (`ServerInner::opts_tx`). A reload builds a complete new
//! `Options` (file, then the command-line flags again, then validation), checks that only
//! reloadable options differ, and sends the new `Arc`. Each connection's reader holds a
//! receiver and a copy of the `Arc`, checks the receiver (one atomic load) before each read,
//! and is woken by the reload when idle; it then switches its limits and re-checks its
//! authorization (see `Conn::apply_reload`). Nothing is read per message: a connection works
//! with its own copy until the next change.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::client::CloseReason;
use crate::flags::Flags;
use crate::info::ConnectOptions;
use crate::options::Options;
use crate::server::{Server, ServerInner};

/// Why a reload was refused. The running configuration is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("config reload needs a config file: start the server with -c <file>")]
    NoConfigFile,
    /// The file cannot be read or parsed, a value is invalid, or the options conflict.
    #[error("{0}")]
    Invalid(String),
    /// An option that only takes effect at start-up differs from the running one.
    #[error("config reload not supported for {option}: running {running}, new {new}")]
    NotReloadable {
        option: String,
        running: String,
        new: String,
    },
    /// The new logging options cannot be applied (e.g. the new log file cannot be opened).
    #[error(transparent)]
    Logging(#[from] crate::logging::LogError),
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// What a successful reload changed.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    /// Names of the options that changed (config file spelling: `authorization`,
    /// `max_payload`, ...); empty when the file changed nothing.
    pub changed: Vec<&'static str>,
    /// The digest of the configuration now in force (see [`Server::config_digest`]).
    pub digest: String,
    pub loaded_at: SystemTime,
    /// The options before and after, for whoever applies changes beyond the connections
    /// (cluster routes diff `previous` and `current`).
    pub previous: Arc<Options>,
    pub current: Arc<Options>,
}

type CopyOption = fn(&mut Options, &Options);

/// Options a reload may change, by config file name, with how to copy each one. Everything
/// else must be equal or the reload fails, so an option added to `Options` is safely
/// non-reloadable until it is listed here. Of the cluster options only `cluster.routes`
/// is: the listener, name, credentials and advertised address stay as they started
/// (changing them means every peer must change too), while a StatefulSet scaled up or down
/// only changes the routes list; [`apply`] has the route code dial the added URLs and close
/// the removed ones.
const RELOADABLE: &[(&str, CopyOption)] = &[
    ("authorization", |o, n| o.auth = n.auth.clone()),
    // New accounts are created before the options switch; clients whose user changed
    // account are closed (see `client::Conn::apply_reload`).
    ("accounts", |o, n| o.accounts = n.accounts.clone()),
    ("no_auth_user", |o, n| {
        o.no_auth_user = n.no_auth_user.clone()
    }),
    ("client_advertise", |o, n| {
        o.client_advertise = n.client_advertise.clone()
    }),
    ("max_payload", |o, n| o.max_payload = n.max_payload),
    ("max_control_line", |o, n| {
        o.max_control_line = n.max_control_line
    }),
    ("max_pending", |o, n| o.max_pending = n.max_pending),
    ("max_connections", |o, n| {
        o.max_connections = n.max_connections
    }),
    ("max_subscriptions", |o, n| {
        o.max_subscriptions = n.max_subscriptions
    }),
    ("ping_interval", |o, n| o.ping_interval = n.ping_interval),
    ("ping_max", |o, n| o.ping_max = n.ping_max),
    ("write_deadline", |o, n| o.write_deadline = n.write_deadline),
    ("spin_wait", |o, n| o.spin_wait = n.spin_wait),
    ("lame_duck_duration", |o, n| {
        o.lame_duck_duration = n.lame_duck_duration
    }),
    ("lame_duck_grace_period", |o, n| {
        o.lame_duck_grace_period = n.lame_duck_grace_period
    }),
    ("debug", |o, n| o.debug = n.debug),
    ("trace", |o, n| o.trace = n.trace),
    ("logtime", |o, n| o.logtime = n.logtime),
    ("logfile", |o, n| o.log_file = n.log_file.clone()),
    ("log_json", |o, n| o.log_json = n.log_json),
    ("config_watch", |o, n| o.config_watch = n.config_watch),
    // New connections use the new certificates; established sessions keep theirs.
    ("tls", |o, n| o.tls = n.tls.clone()),
    ("allow_non_tls", |o, n| o.allow_non_tls = n.allow_non_tls),
    ("cluster.routes", |o, n| {
        o.cluster.routes = n.cluster.routes.clone()
    }),
    // New routes use the new certificates (and pins); established routes keep their
    // sessions, except those whose certificate a changed pin list no longer allows.
    ("cluster.tls", |o, n| o.cluster.tls = n.cluster.tls.clone()),
    // Read again for every accepted leaf connection: new certificates serve new ones.
    ("leafnodes.tls", |o, n| {
        o.leafnodes.tls = n.leafnodes.tls.clone()
    }),
];

const LOGGING: &[&str] = &["debug", "trace", "logtime", "logfile", "log_json"];

type ShowOption = fn(&Options) -> String;

/// Options that cannot change while running, named in the error when they do.
const FIXED: &[(&str, ShowOption)] = &[
    ("server_name", |o| format!("{:?}", o.server_name)),
    ("host", |o| o.host.to_string()),
    ("port", |o| o.port.to_string()),
    ("http_port", |o| format!("{:?}", o.http_port)),
    ("http_host", |o| format!("{:?}", o.http_host)),
    ("https_port", |o| format!("{:?}", o.https_port)),
    ("pid_file", |o| format!("{:?}", o.pid_file)),
    ("system_account", |o| {
        format!("{:?}", o.system_account_name())
    }),
    // Everything in the `cluster {}` block but `routes` (reloadable, so equal in the probe
    // this is shown from).
    ("cluster", |o| format!("{:?}", o.cluster)),
    ("leafnodes", |o| format!("{:?}", o.leafnodes)),
    ("websocket", |o| format!("{:?}", o.websocket)),
    // Store directory, limits, domain and sync: streams are opened with them at start-up.
    ("jetstream", |o| format!("{:?}", o.jetstream)),
];

/// The configuration in force: its digest and when it was loaded.
#[derive(Debug, Clone)]
struct ConfigVersion {
    digest: String,
    loaded_at: SystemTime,
}

/// Reload and lame duck state of a server (a field of `ServerInner`).
#[derive(Debug)]
pub(crate) struct OpsState {
    /// The command line, applied again on top of the file at each reload.
    flags: Option<Flags>,
    version: Mutex<ConfigVersion>,
    /// One reload at a time.
    reload_lock: tokio::sync::Mutex<()>,
    lame_duck_tx: watch::Sender<bool>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl OpsState {
    pub(crate) fn new(opts: &Options, flags: Option<Flags>, loaded_at: SystemTime) -> Self {
        OpsState {
            flags,
            version: Mutex::new(ConfigVersion {
                digest: digest(opts),
                loaded_at,
            }),
            reload_lock: tokio::sync::Mutex::new(()),
            lame_duck_tx: watch::channel(false).0,
            accept_task: Mutex::new(None),
        }
    }

    /// The digest of the configuration in force and when it was loaded (`/varz`
    /// `config_digest`, `config_load_time`).
    pub(crate) fn config_version(&self) -> (String, SystemTime) {
        let v = self.version.lock();
        (v.digest.clone(), v.loaded_at)
    }

    pub(crate) fn set_accept_task(&self, task: JoinHandle<()>) {
        *self.accept_task.lock() = Some(task);
    }

    pub(crate) fn take_accept_task(&self) -> Option<JoinHandle<()>> {
        self.accept_task.lock().take()
    }

    pub(crate) fn lame_duck_signal(&self) -> watch::Receiver<bool> {
        self.lame_duck_tx.subscribe()
    }

    pub(crate) fn is_lame_duck(&self) -> bool {
        *self.lame_duck_tx.borrow()
    }

    /// Enters lame duck mode; false when already in it.
    pub(crate) fn enter_lame_duck(&self) -> bool {
        self.lame_duck_tx
            .send_if_modified(|ldm| !std::mem::replace(ldm, true))
    }
}

/// `sha256:<hex>` of the effective options written as a config file, so equal
/// configurations have equal digests whatever their formatting, includes or flags. Empty
/// when the options did not come from a file, as nats-server (nothing to reload).
fn digest(opts: &Options) -> String {
    if opts.config_file.is_none() {
        return String::new();
    }
    let hash = Sha256::digest(opts.to_conf_string().as_bytes());
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether a client's credentials give the same result under `new` as under `old`, so
/// the (possibly bcrypt-expensive) check need not run again.
pub(crate) fn same_credentials(old: &Options, new: &Options, copts: &ConnectOptions) -> bool {
    let (a, b) = (&old.auth, &new.auth);
    if a == b && old.no_auth_user == new.no_auth_user {
        return true;
    }
    if a.token != b.token || a.user != b.user || a.password != b.password {
        return false;
    }
    // Operator mode: any change of the accounts is checked again (revocations, expiry).
    if a.operator.is_some() || b.operator.is_some() {
        return false;
    }
    if a.users.is_empty() != b.users.is_empty() || old.no_auth_user != new.no_auth_user {
        return false;
    }
    if a.nkeys.is_empty() != b.nkeys.is_empty() {
        return false;
    }
    // An nkey user is found by its key when nkey users are configured (see auth::candidate).
    if let (false, Some(key)) = (b.nkeys.is_empty(), copts.nkey.as_deref()) {
        let entry = |auth: &crate::options::Authorization| {
            auth.nkeys.iter().find(|u| u.nkey == key).cloned()
        };
        return entry(a) == entry(b);
    }
    // An anonymous client is the no_auth_user (unchanged here, checked above).
    let anonymous = copts.user.is_none() && copts.pass.is_none() && copts.auth_token.is_none();
    let name = match (anonymous, new.no_auth_user.as_deref()) {
        (true, Some(n)) => Some(n),
        _ => copts.user.as_deref(),
    };
    let entry = |auth: &crate::options::Authorization| {
        name.and_then(|n| auth.users.iter().find(|u| u.user == n).cloned())
    };
    entry(a) == entry(b)
}

impl Server {
    /// Re-reads the config file, applies the command-line flags on top again, and switches
    /// to the result when only reloadable options changed: connections stay open and pick
    /// up the new limits and permissions; clients whose user was removed or whose password
    /// changed are closed with 'Authorization Violation'. On any error the running
    /// configuration stays in force.
    ///
    /// The new options come from the file and the command line
    /// ([`ServerBuilder::command_line`](crate::ServerBuilder::command_line)) only: an option a
    /// program set in code and the file does not name goes back to its default (and the
    /// reload fails if that option is not reloadable).
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        reload(&self.inner).await
    }

    /// `sha256:<hex>` of the configuration in force (what `/varz` shows as `config_digest`).
    pub fn config_digest(&self) -> String {
        self.inner.ops.version.lock().digest.clone()
    }

    /// When the configuration in force was loaded (start-up or the last reload).
    pub fn config_loaded_at(&self) -> SystemTime {
        self.inner.ops.version.lock().loaded_at
    }

    /// The options in force.
    pub fn options(&self) -> Arc<Options> {
        self.inner.opts()
    }
}

/// Reads the config file and the flags into complete, validated options.
fn load(path: &Path, flags: Option<&Flags>) -> Result<Options, ReloadError> {
    let invalid = |e: &dyn std::fmt::Display| ReloadError::Invalid(e.to_string());
    let map = crate::conf::parse_file(path).map_err(|e| invalid(&e))?;
    let mut opts = Options {
        config_file: Some(path.to_path_buf()),
        ..Options::default()
    };
    for w in opts.apply_conf(&map).map_err(|e| invalid(&e))? {
        warn!("{w}");
    }
    if let Some(flags) = flags {
        flags.clone().apply(&mut opts).map_err(|e| invalid(&e))?;
    }
    opts.validate().map_err(|e| invalid(&e))?;
    Ok(opts)
}

/// The options of `opts` that only take effect at start-up: `opts` with every option a
/// reload may change put back to its default, and without the config file's path. Two
/// configurations can replace each other by a reload exactly when their startup options
/// are equal; that is the test [`Server::reload`] applies. A supervisor deciding between a
/// reload and a restart (the Kubernetes operator hashes this into its pod template) uses
/// it so that the two decisions cannot disagree.
pub fn startup_options(opts: &Options) -> Options {
    let mut out = opts.clone();
    let defaults = Options::default();
    for (_, copy) in RELOADABLE {
        copy(&mut out, &defaults);
    }
    out.config_file = None;
    out
}

/// A start-up option that differs between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupChange {
    /// Config file name of the option (`port`, `cluster`, ...).
    pub option: String,
    pub running: String,
    pub new: String,
}

/// Every start-up option that differs from `old` in `new`, in config file order; empty
/// when a reload can switch from one to the other. An option missing from the table of
/// named ones is reported as one unnamed change rather than missed.
pub fn non_reloadable_changes(old: &Options, new: &Options) -> Vec<StartupChange> {
    // The trusted operators stay as they started (as nats-server), although they sit in the
    // reloadable authorization next to the accounts of `resolver_preload`.
    let operators = |o: &Options| o.auth.operator.as_ref().map(|m| m.operators.clone());
    if operators(old) != operators(new) {
        let show = |o: &Options| {
            format!(
                "{:?}",
                operators(o).map(|v| v.into_iter().map(|c| c.sub).collect::<Vec<_>>())
            )
        };
        return vec![StartupChange {
            option: "operator".into(),
            running: show(old),
            new: show(new),
        }];
    }
    let (old, new) = (startup_options(old), startup_options(new));
    if old == new {
        return Vec::new();
    }
    let mut changes: Vec<StartupChange> = FIXED
        .iter()
        .filter_map(|(option, show)| {
            let (running, new) = (show(&old), show(&new));
            (running != new).then(|| StartupChange {
                option: (*option).to_string(),
                running,
                new,
            })
        })
        .collect();
    if changes.is_empty() {
        changes.push(StartupChange {
            option: "an option that only takes effect at start-up".to_string(),
            running: "-".into(),
            new: "changed".into(),
        });
    }
    changes
}

/// Fails with the first non-reloadable option that differs.
fn check_reloadable(old: &Options, new: &Options) -> Result<Vec<&'static str>, ReloadError> {
    if let Some(first) = non_reloadable_changes(old, new).into_iter().next() {
        return Err(ReloadError::NotReloadable {
            option: first.option,
            running: first.running,
            new: first.new,
        });
    }
    let mut changed = Vec::new();
    for (name, copy) in RELOADABLE {
        let mut probe = old.clone();
        copy(&mut probe, new);
        if probe != *old {
            changed.push(*name);
        }
    }
    Ok(changed)
}

pub(crate) async fn reload(inner: &Arc<ServerInner>) -> Result<ReloadReport, ReloadError> {
    let result = try_reload(inner).await;
    if let Err(e) = &result {
        error!("Failed to reload server configuration, keeping the running one: {e}");
    }
    result
}

async fn try_reload(inner: &Arc<ServerInner>) -> Result<ReloadReport, ReloadError> {
    let _one_at_a_time = inner.ops.reload_lock.lock().await;
    if inner
        .shutting_down
        .load(std::sync::atomic::Ordering::Acquire)
    {
        return Err(ReloadError::ShuttingDown);
    }
    let old = inner.opts();
    let path = old.config_file.clone().ok_or(ReloadError::NoConfigFile)?;
    let flags = inner.ops.flags.clone();
    let new = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || load(&path, flags.as_ref()))
            .await
            .map_err(|e| ReloadError::Invalid(format!("reload task failed: {e}")))??
    };
    let changed = check_reloadable(&old, &new)?;
    let new = Arc::new(new);
    apply(inner, &old, &new, &changed)?;
    let version = ConfigVersion {
        digest: digest(&new),
        loaded_at: SystemTime::now(),
    };
    *inner.ops.version.lock() = version.clone();
    info!("Reloaded server configuration ({})", version.digest);
    Ok(ReloadReport {
        changed,
        digest: version.digest,
        loaded_at: version.loaded_at,
        previous: old,
        current: new,
    })
}

/// A pushed account JWT (directory resolver, `$SYS.REQ.ACCOUNT.<key>.CLAIMS.UPDATE`):
/// verified, stored as `<key>.jwt` in the resolver's directory, and put in force as a
/// reload of that account would (limits, imports and exports change; clients whose user
/// the new claims revoke or whose account expired are closed). `expected` is the key of
/// the subject it came on, if any. Returns the account key, or it and what went wrong.
pub(crate) async fn update_account_claims(
    inner: &Arc<ServerInner>,
    token: &str,
    expected: Option<&str>,
) -> Result<String, (String, String)> {
    use crate::options::Resolver;
    let _one_at_a_time = inner.ops.reload_lock.lock().await;
    let old = inner.opts();
    let Some(mode) = old.auth.operator.as_deref() else {
        return Err((String::new(), "not in operator mode".into()));
    };
    let Resolver::Full { dir, .. } = &mode.resolver else {
        return Err((String::new(), "the resolver does not take updates".into()));
    };
    let claims = crate::jwt::decode_account(token).map_err(|e| {
        (
            expected.unwrap_or_default().to_string(),
            format!("jwt update resulted in error - {e}"),
        )
    })?;
    let key = claims.sub.clone();
    let fail = |m: String| (key.clone(), m);
    if expected.is_some_and(|e| e != key) {
        return Err(fail("subject does not match the account of the JWT".into()));
    }
    if !mode.trusts(&claims.iss) {
        return Err(fail(
            "the account JWT is not signed by a trusted operator".into(),
        ));
    }
    if mode
        .accounts
        .get(&key)
        .is_some_and(|existing| existing.iat > claims.iat)
    {
        return Err(fail("jwt update rejected: the stored JWT is newer".into()));
    }
    let path = dir.join(format!("{key}.jwt"));
    let tmp = dir.join(format!(".{key}.jwt.tmp"));
    let written = std::fs::write(&tmp, token.trim()).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        return Err(fail(format!("cannot store {}: {e}", path.display())));
    }
    let mut mode = mode.clone();
    mode.accounts.insert(key.clone(), claims);
    put_accounts_in_force(inner, &old, mode).map_err(fail)?;
    info!("Updated account claims of {key}");
    Ok(key)
}

/// Options that differ from `old` only in the operator mode's accounts, put in force.
fn put_accounts_in_force(
    inner: &Arc<ServerInner>,
    old: &Arc<Options>,
    mode: crate::options::OperatorMode,
) -> Result<(), String> {
    let mut new = (**old).clone();
    let (accounts, warnings) = mode.account_options(new.system_account.as_deref());
    for w in warnings {
        warn!("{w}");
    }
    new.accounts = accounts;
    new.auth.operator = Some(Arc::new(mode));
    let new = Arc::new(new);
    apply(inner, old, &new, &[]).map_err(|e| e.to_string())
}

/// `$SYS.REQ.CLAIMS.DELETE`: removes the accounts a request lists from a directory
/// resolver with `allow_delete` (renamed to `<key>.jwt.deleted`, or removed with
/// `hard_delete`), as nats-server does: the request is generic claims an operator key signed
/// for itself, with `accounts: [<account key>, ...]`; the system account cannot go. The
/// accounts are gone at once: their clients are closed as with any account a reload removes.
/// Returns nats-server's message (`deleted <n> accounts`), or the description of what was
/// refused.
pub(crate) async fn delete_account_claims(
    inner: &Arc<ServerInner>,
    token: &str,
) -> Result<String, String> {
    use crate::options::{Resolver, ResolverDelete};
    let _one_at_a_time = inner.ops.reload_lock.lock().await;
    let old = inner.opts();
    let request = crate::jwt::decode_delete_request(token);
    let by = request.as_ref().map(|c| c.sub.clone()).unwrap_or_default();
    let refused = |why: String| format!("delete accounts request by {by} failed - {why}");
    let claims = request.map_err(|e| refused(e.to_string()))?;
    let Some(mode) = old.auth.operator.as_deref() else {
        return Err(refused("not in operator mode".into()));
    };
    let Resolver::Full { dir, delete } = &mode.resolver else {
        return Err(refused("the resolver does not take deletes".into()));
    };
    if *delete == ResolverDelete::No {
        return Err(refused("delete must be enabled in server config".into()));
    }
    if claims.sub != claims.iss {
        return Err(refused("not self signed".into()));
    }
    if !mode.trusts(&claims.iss) {
        return Err(refused("not trusted".into()));
    }
    let system = old.system_account.clone().unwrap_or_default();
    let mut keys = Vec::new();
    for entry in &claims.nats.accounts {
        match entry.as_str() {
            Some(key) if key == system => {
                return Err(refused("not allowed to delete system account".into()))
            }
            Some(key) if crate::jwt::is_account_key(key) => keys.push(key.to_string()),
            _ => return Err(refused("malformed request".into())),
        }
    }
    if keys.is_empty() {
        return Err(refused("malformed request".into()));
    }
    let mut mode = mode.clone();
    let mut errors = Vec::new();
    for key in &keys {
        let path = dir.join(format!("{key}.jwt"));
        let done = match delete {
            ResolverDelete::Hard => std::fs::remove_file(&path),
            _ => std::fs::rename(&path, dir.join(format!("{key}.jwt.deleted"))),
        };
        match done {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                continue;
            }
        }
        mode.accounts.remove(key);
    }
    let deleted = keys.len() - errors.len();
    put_accounts_in_force(inner, &old, mode).map_err(refused)?;
    info!("Deleted account claims of {}", keys.join(", "));
    if errors.is_empty() {
        Ok(format!("deleted {deleted} accounts"))
    } else {
        Err(format!(
            "deleted {deleted} accounts, failed for {} - {}",
            errors.len(),
            errors.join("\n")
        ))
    }
}

/// Puts checked options in force. The steps that can fail come first and change nothing
/// when they do: reading the TLS files, then logging.
fn apply(
    inner: &Arc<ServerInner>,
    old: &Options,
    new: &Arc<Options>,
    changed: &[&'static str],
) -> Result<(), ReloadError> {
    // Certificates are read again on every reload, changed paths or not: rotating a
    // certificate usually replaces the files in place (a Secret volume update).
    let tls = match &new.tls {
        Some(t) => Some(
            crate::tls::TlsSettings::load(t, new.allow_non_tls)
                .map_err(|e| ReloadError::Invalid(format!("tls: {e}")))?,
        ),
        None => None,
    };
    let route_tls = match &new.cluster.tls {
        Some(t) => Some(
            crate::tls::RouteTls::load(t)
                .map_err(|e| ReloadError::Invalid(format!("cluster.tls: {e}")))?,
        ),
        None => None,
    };
    if changed.iter().any(|c| LOGGING.contains(c)) {
        crate::logging::apply(new)?;
    }
    if tls.is_some() || old.tls.is_some() {
        *inner.tls.write() = tls;
    }
    if let Some(cluster) = &inner.cluster {
        let pinned = route_tls.as_ref().and_then(|t| t.pinned.clone());
        *cluster.tls.write() = route_tls;
        if changed.contains(&"cluster.tls") {
            let routes: Vec<_> = cluster.state.lock().routes.values().cloned().collect();
            close_unpinned(routes.iter().map(|r| &r.conn), pinned.as_deref());
        }
    }
    if changed.contains(&"tls") {
        let pinned = inner.tls.read().as_ref().and_then(|t| t.pinned.clone());
        let clients: Vec<_> = inner.clients.lock().values().cloned().collect();
        close_unpinned(clients.iter(), pinned.as_deref());
    }
    // Every connection switches before its next read; idle ones are woken to do it now
    // (to drop a removed user at once).
    inner.accounts.sync(new);
    crate::core::imports::apply(inner, new);
    crate::jetstream::accounts_changed(inner, new);
    inner.opts_tx.send_replace(new.clone());
    let clients: Vec<_> = inner.clients.lock().values().cloned().collect();
    for c in &clients {
        c.wake_for_reload();
    }
    if new.max_connections < old.max_connections {
        enforce_max_connections(inner, new.max_connections);
    }
    if changed.contains(&"cluster.routes") {
        // After the new options are in force: a loop dialling a removed URL checks them.
        crate::route::reload_routes(inner, old, new);
    }
    for name in changed {
        info!("Reloaded: {name}{}", shown_value(name, new));
    }
    Ok(())
}

/// As nats-server: a changed `pinned_certs` closes the TLS connections whose certificate
/// it no longer lists.
fn close_unpinned<'a>(
    conns: impl Iterator<Item = &'a Arc<crate::client::ClientShared>>,
    pinned: Option<&std::collections::BTreeSet<String>>,
) {
    if pinned.is_none() {
        return;
    }
    for conn in conns {
        if let Some(cert) = conn.peer_certificate() {
            if !crate::tls::pinned_ok(pinned, Some(&cert)) {
                info!(cid = conn.cid, peer = %conn.peer, "Closing a connection whose certificate is no longer pinned");
                conn.close(crate::client::CloseReason::TlsHandshakeError);
            }
        }
    }
}

fn shown_value(name: &str, o: &Options) -> String {
    let value = match name {
        "max_payload" => o.max_payload.to_string(),
        "max_control_line" => o.max_control_line.to_string(),
        "max_pending" => o.max_pending.to_string(),
        "max_connections" => o.max_connections.to_string(),
        "max_subscriptions" => o.max_subscriptions.to_string(),
        "ping_interval" => crate::conf::format_duration(o.ping_interval),
        "ping_max" => o.ping_max.to_string(),
        "write_deadline" => crate::conf::format_duration(o.write_deadline),
        "spin_wait" => crate::conf::format_duration(o.spin_wait),
        "lame_duck_duration" => crate::conf::format_duration(o.lame_duck_duration),
        "lame_duck_grace_period" => crate::conf::format_duration(o.lame_duck_grace_period),
        "debug" => o.debug.to_string(),
        "trace" => o.trace.to_string(),
        "logtime" => o.logtime.to_string(),
        "log_json" => o.log_json.to_string(),
        "config_watch" => o.config_watch.to_string(),
        // host:port only: a route URL may carry credentials.
        "cluster.routes" => format!(
            "{:?}",
            o.cluster
                .routes
                .iter()
                .map(|r| crate::options::RouteUrl::parse(r).map_or_else(|e| e, |u| u.host_port()))
                .collect::<Vec<_>>()
        ),
        "logfile" => o
            .log_file
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string()),
        _ => return String::new(),
    };
    format!(" = {value}")
}

/// A lowered `max_connections` closes the newest connections over the limit.
fn enforce_max_connections(inner: &ServerInner, max: usize) {
    let mut clients: Vec<_> = inner.clients.lock().values().cloned().collect();
    if clients.len() <= max {
        return;
    }
    clients.sort_by_key(|c| std::cmp::Reverse(c.cid));
    let excess = clients.len() - max;
    for c in clients.iter().take(excess) {
        c.enqueue(|buf| midge_proto::encode::err(buf, "maximum connections exceeded"));
        c.close(CloseReason::MaxConnectionsExceeded);
    }
    info!("Closed {excess} connections to fall within max_connections");
}

/// How often the config file watcher looks at the file.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Config files larger than this are not hashed (nor reloaded by the watcher).
const WATCH_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// What the watcher compares between two looks: the file the path resolves to (a
/// ConfigMap update repoints the `..data` symlink, so the path stays and the target
/// changes), its modification time and size, and the hash of its content.
#[derive(Debug, Clone, PartialEq)]
struct Fingerprint {
    resolved: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
    hash: [u8; 32],
}

/// Blocking file IO: run it off the async workers.
fn fingerprint(path: &Path, previous: Option<&Fingerprint>) -> std::io::Result<Fingerprint> {
    let resolved = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&resolved)?;
    let modified = meta.modified().ok();
    let len = meta.len();
    // Cheap checks first: the content is only read when something about the file moved.
    if let Some(p) = previous {
        if p.resolved == resolved && p.modified == modified && p.len == len {
            return Ok(p.clone());
        }
    }
    if len > WATCH_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {WATCH_MAX_BYTES} bytes"
        )));
    }
    let content = std::fs::read(&resolved)?;
    Ok(Fingerprint {
        resolved,
        modified,
        len,
        hash: Sha256::digest(&content).into(),
    })
}

/// The files a reload reads, so a change to any of them is a change of configuration: the
/// config file first, then the files it includes (a users file from a Secret, for
/// instance), then the certificate files of the TLS blocks a reload loads again (client
/// and leaf node TLS). Kubernetes updates a ConfigMap volume and a Secret volume
/// independently: watching the referenced files too means a certificate or users file
/// replaced after the config file changed is loaded as well, by a second reload.
/// `None` when the config file does not parse (its includes are unknown then).
fn watched_files(config: &Path, opts: &Options) -> Option<Vec<PathBuf>> {
    let (_, included) = crate::conf::parse_file_with_includes(config).ok()?;
    let mut files = vec![config.to_path_buf()];
    files.extend(included);
    for tls in [&opts.tls, &opts.leafnodes.tls, &opts.cluster.tls]
        .into_iter()
        .flatten()
    {
        files.push(tls.cert_file.clone());
        files.push(tls.key_file.clone());
        files.extend(tls.ca_file.clone());
    }
    // A leaf node's certificate and CA for its hub: read again when it next dials.
    for tls in opts.leafnodes.remotes.iter().filter_map(|r| r.tls.as_ref()) {
        files.extend(tls.cert_file.clone());
        files.extend(tls.key_file.clone());
        files.extend(tls.ca_file.clone());
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    Some(files)
}

/// One look at every watched file: the config file's fingerprint (it must be readable),
/// and each referenced file's, `None` when it cannot be read right now (the reload then
/// reports the file by name).
#[derive(Debug, Clone, PartialEq)]
struct Look {
    config: Fingerprint,
    referenced: Vec<(PathBuf, Option<Fingerprint>)>,
}

impl Look {
    fn take(files: &[PathBuf], previous: Option<&Look>) -> std::io::Result<Look> {
        let Some((config, referenced)) = files.split_first() else {
            return Err(std::io::Error::other("no config file to watch"));
        };
        let earlier = |path: &Path| {
            previous.and_then(|p| {
                p.referenced
                    .iter()
                    .find(|(f, _)| f == path)
                    .and_then(|(_, fp)| fp.as_ref())
            })
        };
        Ok(Look {
            config: fingerprint(config, previous.map(|p| &p.config))?,
            referenced: referenced
                .iter()
                .map(|f| (f.clone(), fingerprint(f, earlier(f)).ok()))
                .collect(),
        })
    }

    /// Same content everywhere (whatever the modification times say).
    fn same_content(&self, other: &Look) -> bool {
        self.hashes() == other.hashes()
    }

    fn hashes(&self) -> Vec<(&Path, Option<[u8; 32]>)> {
        // The config file by content only: the kubelet's swap moves its resolved path.
        std::iter::once((Path::new(""), Some(self.config.hash)))
            .chain(
                self.referenced
                    .iter()
                    .map(|(p, f)| (p.as_path(), f.as_ref().map(|f| f.hash))),
            )
            .collect()
    }

    /// The files whose content differs from `old` (all of them without `old`).
    fn changed_since(&self, old: Option<&Look>) -> Vec<String> {
        let old = old.map(Look::hashes).unwrap_or_default();
        let mut changed: Vec<String> = Vec::new();
        if old.first().map(|(_, h)| *h) != Some(Some(self.config.hash)) {
            changed.push("the config file".into());
        }
        for (path, hash) in self.hashes().into_iter().skip(1) {
            if !old.iter().any(|(p, h)| *p == path && *h == hash) {
                changed.push(path.display().to_string());
            }
        }
        changed
    }
}

/// Starts the config file watcher when the server has a config file. It polls once a
/// second (bounded work: a stat per watched file, and a read only when one moved) while
/// `config_watch` is on, and reloads once a change has stayed the same for one more look,
/// so that an editor's or kubelet's multi-step write is read complete. Watched are the
/// config file and the files it references ([`watched_files`]), so a rotated certificate
/// or users file is loaded without a change to the config file.
pub(crate) fn spawn_config_watch(inner: &Arc<ServerInner>) {
    let Some(path) = inner.opts().config_file.clone() else {
        return;
    };
    let weak = Arc::downgrade(inner);
    let mut shutdown = inner.shutdown_signal();
    // The first look happens now, before the server is announced ready: taken inside the
    // task it could land after an early change and make that change the baseline.
    let mut files = watched_files(&path, &inner.opts()).unwrap_or_else(|| vec![path.clone()]);
    let first = Look::take(&files, None).ok();
    tokio::spawn(async move {
        let look = |files: Vec<PathBuf>, previous: Option<Look>| async move {
            tokio::task::spawn_blocking(move || Look::take(&files, previous.as_ref()))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        };
        let mut applied = first;
        let mut pending: Option<Look> = None;
        let mut failing = false;
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.changed() => return,
            }
            let Some(inner) = weak.upgrade() else { return };
            if inner
                .shutting_down
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return;
            }
            if !inner.opts().config_watch {
                continue;
            }
            let seen = match look(files.clone(), pending.clone().or_else(|| applied.clone())).await
            {
                Ok(f) => {
                    failing = false;
                    f
                }
                Err(e) => {
                    // Mid-swap, or deleted: keep serving, say it once, look again.
                    if !failing {
                        warn!("Config watch: cannot read {}: {e}", path.display());
                        failing = true;
                    }
                    continue;
                }
            };
            if applied.as_ref().is_some_and(|a| a.same_content(&seen)) {
                // Touched, or changed back: nothing to load.
                applied = Some(seen);
                pending = None;
                continue;
            }
            if pending.as_ref() != Some(&seen) {
                pending = Some(seen);
                continue;
            }
            let changed = seen.changed_since(applied.as_ref());
            info!(
                "Config watch: {} changed ({}), reloading",
                path.display(),
                changed.join(", ")
            );
            // A failed reload is logged by `reload`; the files are not tried again until
            // one changes again.
            let _ = reload(&inner).await;
            applied = pending.take();
            // The reload may have changed what is referenced (a new include, another
            // certificate path): watch the files of the options now in force. A new file
            // differs from the baseline, so it costs one more (idempotent) reload rather
            // than risking a change made meanwhile going unnoticed.
            if let Some(now) = watched_files(&path, &inner.opts()) {
                files = now;
            }
        }
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::options::{Authorization, User};

    #[test]
    fn reloadable_changes_are_named() {
        let old = Options::default();
        let mut new = old.clone();
        new.max_payload = 1000;
        new.debug = true;
        new.auth.users.push(User {
            user: "a".into(),
            password: "p".into(),
            permissions: None,
            account: None,
        });
        let changed = check_reloadable(&old, &new).unwrap();
        assert_eq!(changed, ["authorization", "max_payload", "debug"]);
        assert!(check_reloadable(&old, &old).unwrap().is_empty());
    }

    #[test]
    fn leaf_tls_reloads_and_the_rest_of_leafnodes_does_not() {
        let old = Options::default();
        let mut new = old.clone();
        new.leafnodes.tls = Some(crate::options::TlsOptions::new("/c.pem", "/k.pem"));
        assert_eq!(check_reloadable(&old, &new).unwrap(), ["leafnodes.tls"]);
        new.leafnodes.port = Some(7422);
        let e = check_reloadable(&old, &new).unwrap_err().to_string();
        assert!(e.contains("leafnodes"), "{e}");
    }

    #[test]
    fn only_the_routes_of_the_cluster_block_reload() {
        let mut old = Options::default();
        old.cluster.port = Some(6222);
        let mut new = old.clone();
        new.cluster.routes = vec!["nats://b:6222".into()];
        assert_eq!(check_reloadable(&old, &new).unwrap(), ["cluster.routes"]);
        new.cluster.name = Some("other".into());
        let e = check_reloadable(&old, &new).unwrap_err().to_string();
        assert!(
            e.starts_with("config reload not supported for cluster"),
            "{e}"
        );
    }

    #[test]
    fn fixed_options_fail_by_name() {
        let old = Options::default();
        let mut new = old.clone();
        new.port = 4333;
        new.debug = true;
        let e = check_reloadable(&old, &new).unwrap_err().to_string();
        assert_eq!(
            e,
            "config reload not supported for port: running 4222, new 4333"
        );
        let mut new = old.clone();
        new.server_name = Some("x".into());
        assert!(check_reloadable(&old, &new)
            .unwrap_err()
            .to_string()
            .contains("server_name"));
    }

    /// The operator's restart decision rests on this: whatever `check_reloadable` refuses
    /// changes the startup options, whatever it accepts does not.
    #[test]
    fn startup_options_split_exactly_like_reload() {
        let old = Options::default();
        let mut flipped = old.clone();
        flipped.cluster.no_advertise = true;
        assert!(check_reloadable(&old, &flipped).is_err());
        assert_ne!(startup_options(&old), startup_options(&flipped));
        assert_eq!(
            non_reloadable_changes(&old, &flipped)
                .iter()
                .map(|c| c.option.as_str())
                .collect::<Vec<_>>(),
            ["cluster"]
        );

        let mut reloadable = old.clone();
        reloadable.max_payload = 10;
        reloadable.cluster.routes = vec!["nats://b:6222".into()];
        reloadable.config_watch = true;
        reloadable.config_file = Some("/etc/midge/midge.conf".into());
        assert!(check_reloadable(&old, &reloadable).is_ok());
        assert_eq!(startup_options(&old), startup_options(&reloadable));
        assert!(non_reloadable_changes(&old, &reloadable).is_empty());

        let mut both = reloadable.clone();
        both.port = 4333;
        both.http_port = Some(8333);
        let names: Vec<_> = non_reloadable_changes(&old, &both)
            .into_iter()
            .map(|c| c.option)
            .collect();
        assert_eq!(names, ["port", "http_port"]);

        // JetStream needs a restart: its streams were opened with the settings it has.
        let mut js = old.clone();
        js.jetstream = Some(crate::options::JetStreamOptions::default());
        assert_ne!(startup_options(&old), startup_options(&js));
        let names: Vec<_> = non_reloadable_changes(&old, &js)
            .into_iter()
            .map(|c| c.option)
            .collect();
        assert_eq!(names, ["jetstream"]);
    }

    /// The watcher watches what a reload reads: the config, its includes, and the
    /// certificate files of the TLS blocks a reload loads again.
    #[test]
    fn watched_files_are_the_config_its_includes_and_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("midge.conf");
        std::fs::write(&conf, "port: 1\ninclude users.conf\n").unwrap();
        std::fs::write(
            dir.path().join("users.conf"),
            "authorization { token: t }\n",
        )
        .unwrap();
        let mut opts = Options {
            tls: Some(crate::options::TlsOptions {
                ca_file: Some("/tls/ca.crt".into()),
                ..crate::options::TlsOptions::new("/tls/tls.crt", "/tls/tls.key")
            }),
            ..Options::default()
        };
        opts.leafnodes.tls = Some(crate::options::TlsOptions::new("/tls/tls.crt", "/leaf.key"));
        let files = watched_files(&conf, &opts).unwrap();
        let expected: Vec<PathBuf> = vec![
            conf.clone(),
            dir.path().join("users.conf"),
            "/tls/tls.crt".into(),
            "/tls/tls.key".into(),
            "/tls/ca.crt".into(),
            "/leaf.key".into(),
        ];
        assert_eq!(files, expected);

        // A change to a referenced file alone is a change, and is named.
        let first = Look::take(&files[..2], None).unwrap();
        std::fs::write(
            dir.path().join("users.conf"),
            "authorization { token: u }\n",
        )
        .unwrap();
        let second = Look::take(&files[..2], Some(&first)).unwrap();
        assert!(!second.same_content(&first));
        assert_eq!(
            second.changed_since(Some(&first)),
            [dir.path().join("users.conf").display().to_string()]
        );
        assert!(second.same_content(&Look::take(&files[..2], None).unwrap()));

        // A config that no longer parses keeps the watcher on its previous files.
        std::fs::write(&conf, "port: {\n").unwrap();
        assert_eq!(watched_files(&conf, &opts), None);
    }

    #[test]
    fn digest_is_stable_and_tracks_content() {
        assert_eq!(digest(&Options::default()), "");
        let a = Options {
            config_file: Some("x.conf".into()),
            ..Options::default()
        };
        assert_eq!(digest(&a), digest(&a.clone()));
        assert!(digest(&a).starts_with("sha256:"));
        assert_eq!(digest(&a).len(), 7 + 64);
        let b = Options {
            debug: true,
            ..a.clone()
        };
        assert_ne!(digest(&a), digest(&b));
    }

    #[test]
    fn credentials_recheck_only_when_the_user_changed() {
        let user = |name: &str, pass: &str| User {
            user: name.into(),
            password: pass.into(),
            permissions: None,
            account: None,
        };
        let with = |users: Vec<User>| Options {
            auth: Authorization {
                users,
                ..Authorization::default()
            },
            ..Options::default()
        };
        let copts = ConnectOptions {
            user: Some("a".into()),
            ..ConnectOptions::default()
        };
        let old = with(vec![user("a", "p")]);
        assert!(same_credentials(
            &old,
            &with(vec![user("a", "p"), user("b", "q")]),
            &copts
        ));
        assert!(!same_credentials(&old, &with(vec![user("a", "x")]), &copts));
        assert!(!same_credentials(&old, &with(vec![user("b", "q")]), &copts));
    }
}
