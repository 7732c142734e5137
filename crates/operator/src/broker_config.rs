//! The rendered `midge.conf`, checked by the broker's own loader, and the restart hash
//! taken from the broker's own split between reloadable and start-up options.
//!
//! The operator links the broker library. Instead of repeating the broker's rules (the
//! minimum lame duck duration, a grace period shorter than the duration, features the
//! broker lacks such as route TLS...), it parses the config it rendered with the functions
//! `midge -c` runs ([`midge::conf::parse_str`], then [`Options::from_conf_without_files`]:
//! every key and cross-option check of [`Options::from_conf`]) and refuses the spec on any
//! error, so the two can never disagree. The only things not checked here are what the
//! pods read from Secrets: the certificate files and the users file, whose content the
//! operator does not hold.
//!
//! Per config text, not per cluster: pools with their own config (edge pools) are checked
//! and hashed one text at a time.

use std::path::{Path, PathBuf};

use midge::conf::ConfError;
use midge::options::OptionsError;
use midge::Options;
use sha2::{Digest, Sha256};

use crate::build::{
    AUTH_TOKEN_ENV, CONFIG_DIR, CONFIG_FILE, LEAF_PASSWORD_ENV, LEAF_URL_ENV, LEAF_USER_ENV,
    USERS_INCLUDE,
};
use crate::validate::FieldError;

/// What the broker made of a rendered config.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedConfig {
    /// The options a server of the cluster runs with (its `server_name` a placeholder).
    pub options: Options,
    /// SHA-256 (hex) of the start-up options: equal for two configs exactly when a running
    /// server can switch from one to the other by a reload.
    pub restart_hash: String,
}

/// The pods' environment variables the config refers to, with stand-in values: the pod
/// name is a DNS label like any pod's, the token comes from a Secret.
const POD_NAME_STANDIN: &str = "midge-pod-0";
const TOKEN_STANDIN: &str = "secret-from-the-pod-environment";
/// The leaf node credentials and the remote URL carrying them, from a Secret: any values
/// of the kind the Secret holds (the URL's host is the leaf node Service's on the pods).
const LEAF_STANDINS: [(&str, &str); 3] = [
    (LEAF_USER_ENV, "leaf"),
    (LEAF_PASSWORD_ENV, "secret-from-the-pod-environment"),
    (
        LEAF_URL_ENV,
        "nats-leaf://leaf:secret-from-the-pod-environment@leafnodes.invalid:7422",
    ),
];
/// Stands in for the users Secret, whose content is checked by the servers when they load it.
const USERS_STANDIN: &str = "authorization {\n  users: []\n}\n";

/// Parses and checks `conf` as a server in a pod would, and hashes its start-up options.
/// Each error names the spec field it comes from when one is known, and carries the
/// broker's message with the line of the rendered file.
pub fn check(conf: &str) -> Result<CheckedConfig, Vec<FieldError>> {
    let pod_path = Path::new(CONFIG_DIR).join(CONFIG_FILE);
    // The definitions go in front of the first line (a comment), so that line numbers in
    // errors are those of the file the pods read.
    let mut text = format!("POD_NAME: \"{POD_NAME_STANDIN}\"; ");
    if conf.contains(&format!("${AUTH_TOKEN_ENV}")) {
        text.push_str(&format!("{AUTH_TOKEN_ENV}: \"{TOKEN_STANDIN}\"; "));
    }
    for (name, value) in LEAF_STANDINS {
        if conf.contains(&format!("${name}")) {
            text.push_str(&format!("{name}: \"{value}\"; "));
        }
    }
    text.push_str(conf);

    // An include is read relative to the config's directory: only then is a directory
    // laid out as in the pod, with the Secret's file replaced by a stand-in.
    let scratch = if conf.contains(USERS_INCLUDE) {
        Some(users_scratch_dir().map_err(|e| {
            vec![FieldError {
                path: "spec.auth.users".into(),
                message: format!("cannot prepare the broker config check: {e}"),
            }]
        })?)
    } else {
        None
    };
    let origin: PathBuf = match &scratch {
        Some(dir) => dir
            .path()
            .join(pod_path.strip_prefix("/").unwrap_or(&pod_path)),
        None => pod_path.clone(),
    };
    let strip = |message: String| match &scratch {
        Some(dir) => message.replace(&dir.path().display().to_string(), ""),
        None => message,
    };

    let loaded = midge::conf::parse_str(&text, &origin.display().to_string())
        .and_then(|map| Options::from_conf_without_files(&map, &pod_path));
    match loaded {
        Ok(loaded) => {
            let startup = midge::startup_options(&loaded.options).to_conf_string();
            let restart_hash = Sha256::digest(startup.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Ok(CheckedConfig {
                options: loaded.options,
                restart_hash,
            })
        }
        Err(err) => Err(err
            .errors()
            .into_iter()
            .map(|e| FieldError {
                path: spec_field(conf, e).to_string(),
                message: strip(format!("the broker refuses the rendered config: {e}")),
            })
            .collect()),
    }
}

fn users_scratch_dir() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let config_dir = dir.path().join(CONFIG_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&config_dir)?;
    let users = config_dir.join(USERS_INCLUDE);
    if let Some(parent) = users.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(users, USERS_STANDIN)?;
    Ok(dir)
}

/// The spec field a config error comes from, or `spec` when no single field does.
fn spec_field(conf: &str, error: &ConfError) -> &'static str {
    let (pos, key) = match error {
        ConfError::Invalid { pos, key, .. } | ConfError::UnknownKey { pos, key } => (pos, key),
        ConfError::Unsupported { pos, key, .. } => (pos, key),
        ConfError::Options { source, .. } => {
            return match source {
                OptionsError::LameDuckGrace { .. } => "spec.broker.lameDuckGracePeriod",
                OptionsError::PayloadOverPending { .. } => "spec.broker.maxPayload",
                OptionsError::Auth(_) => "spec.auth",
                _ => "spec",
            }
        }
        _ => return "spec",
    };
    let path = match enclosing_block(conf, pos.line) {
        Some(block) if !key.contains('.') => format!("{block}.{key}"),
        _ => key.clone(),
    };
    let top = |name: &str| path == name || path.starts_with(&format!("{name}."));
    match path.as_str() {
        "lame_duck_duration" => "spec.broker.lameDuckDuration",
        "lame_duck_grace_period" => "spec.broker.lameDuckGracePeriod",
        "max_payload" => "spec.broker.maxPayload",
        "max_pending" => "spec.broker.maxPending",
        "max_connections" => "spec.broker.maxConnections",
        "max_subscriptions" => "spec.broker.maxSubscriptions",
        "ping_interval" => "spec.broker.pingInterval",
        "ping_max" => "spec.broker.pingMax",
        "write_deadline" => "spec.broker.writeDeadline",
        "port" => "spec.ports.client",
        "cluster.port" => "spec.ports.cluster",
        "http_port" => "spec.monitoring.port",
        _ if top("cluster.tls") => "spec.tls.routes",
        _ if top("tls") => "spec.tls.client",
        _ if top("authorization") => "spec.auth",
        _ => "spec",
    }
}

/// Name of the `name {` block that line `line` (1-based) of `conf` sits in, if any: the
/// nearest line above it that opens a block at a smaller indentation.
fn enclosing_block(conf: &str, line: u32) -> Option<&str> {
    let lines: Vec<&str> = conf.lines().collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let indent = |l: &str| l.len() - l.trim_start().len();
    let own = indent(lines.get(at)?);
    lines[..at]
        .iter()
        .rev()
        .find(|l| indent(l) < own && l.trim_end().ends_with('{'))
        .and_then(|l| l.trim().strip_suffix('{'))
        .map(str::trim)
}
