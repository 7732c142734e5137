//! Rendering [`Options`] as a config file (the Kubernetes operator writes ConfigMaps with it).
//! Every option is written out, so the file does not depend on midge's defaults staying the same.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use super::format_duration;
use crate::options::{NkeyUser, Options, Permissions, ResponsePermission, SubjectPermission, User};

impl Options {
    /// A config file that [`Options::from_conf`] reads back as these options (except
    /// `config_file`, which says where options came from rather than what they are, and an
    /// `http_host` without `http_port` or `https_port`, which a config file cannot express).
    pub fn to_conf_string(&self) -> String {
        let mut out = String::new();
        let mut line = |key: &str, value: String| {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{key}: {value}");
        };
        line("listen", quote(&host_port(self.host, self.port)));
        if let Some(name) = &self.server_name {
            line("server_name", quote(name));
        }
        if let Some(advertise) = &self.client_advertise {
            line("client_advertise", quote(advertise));
        }
        if let Some(port) = self.http_port {
            line(
                "http",
                quote(&host_port(self.http_host.unwrap_or(self.host), port)),
            );
        }
        if let Some(port) = self.https_port {
            line(
                "https",
                quote(&host_port(self.http_host.unwrap_or(self.host), port)),
            );
        }
        line("max_payload", self.max_payload.to_string());
        line("max_control_line", self.max_control_line.to_string());
        line("max_pending", self.max_pending.to_string());
        line("max_connections", self.max_connections.to_string());
        line("max_subscriptions", self.max_subscriptions.to_string());
        line("ping_interval", duration(self.ping_interval));
        line("ping_max", self.ping_max.to_string());
        line("write_deadline", duration(self.write_deadline));
        line("spin_wait", duration(self.spin_wait));
        line("lame_duck_duration", duration(self.lame_duck_duration));
        line(
            "lame_duck_grace_period",
            duration(self.lame_duck_grace_period),
        );
        line("debug", self.debug.to_string());
        line("trace", self.trace.to_string());
        line("logtime", self.logtime.to_string());
        if let Some(path) = &self.log_file {
            line("logfile", quote(&path.to_string_lossy()));
        }
        if self.log_json {
            line("log_json", "true".to_string());
        }
        if self.config_watch {
            line("config_watch", "true".to_string());
        }
        if let Some(path) = &self.pid_file {
            line("pid_file", quote(&path.to_string_lossy()));
        }
        if let Some(user) = &self.no_auth_user {
            line("no_auth_user", quote(user));
        }
        if let Some(name) = &self.system_account {
            line("system_account", quote(name));
        }
        if self.no_system_account {
            line("no_system_account", "true".to_string());
        }
        if self.allow_non_tls {
            line("allow_non_tls", "true".to_string());
        }
        render_auth(self, &mut out);
        render_cluster(self, &mut out);
        render_leafnodes(self, &mut out);
        render_websocket(self, &mut out);
        render_jetstream(self, &mut out);
        if let Some(tls) = &self.tls {
            render_tls(tls, "", &mut out);
        }
        out
    }
}

/// The `cluster {}` block, written only when clustering is on or something in it is set, so
/// a plain server's file stays free of it.
fn render_leafnodes(options: &Options, out: &mut String) {
    let l = &options.leafnodes;
    if *l == crate::options::LeafOptions::default() {
        return;
    }
    out.push_str("leafnodes {\n");
    let _ = writeln!(out, "  host: {}", quote(&l.host.to_string()));
    if let Some(port) = l.port {
        let _ = writeln!(out, "  port: {port}");
    }
    if let Some(a) = &l.advertise {
        let _ = writeln!(out, "  advertise: {}", quote(a));
    }
    if l.no_advertise {
        out.push_str("  no_advertise: true\n");
    }
    let _ = writeln!(out, "  reconnect: {}", duration(l.reconnect));
    if let Some(tls) = &l.tls {
        let _ = writeln!(
            out,
            "  tls {{ cert_file: {}, key_file: {}, verify: {}, timeout: {}{} }}",
            quote(&tls.cert_file.to_string_lossy()),
            quote(&tls.key_file.to_string_lossy()),
            tls.verify,
            duration(tls.timeout),
            tls.ca_file
                .as_ref()
                .map(|c| format!(", ca_file: {}", quote(&c.to_string_lossy())))
                .unwrap_or_default()
        );
    }
    out.push_str("  authorization {\n");
    if let Some(u) = &l.user {
        let _ = writeln!(out, "    user: {}", quote(u));
    }
    if let Some(p) = &l.password {
        let _ = writeln!(out, "    password: {}", quote(p));
    }
    if let Some(a) = &l.account {
        let _ = writeln!(out, "    account: {}", quote(a));
    }
    let _ = writeln!(out, "    timeout: {}", duration(l.auth_timeout));
    if !l.users.is_empty() {
        out.push_str("    users: [\n");
        for u in &l.users {
            let _ = write!(
                out,
                "      {{user: {}, password: {}",
                quote(&u.user),
                quote(&u.password)
            );
            if let Some(a) = &u.account {
                let _ = write!(out, ", account: {}", quote(a));
            }
            out.push_str("}\n");
        }
        out.push_str("    ]\n");
    }
    out.push_str("  }\n");
    if !l.remotes.is_empty() {
        out.push_str("  remotes: [\n");
        for r in &l.remotes {
            let urls: Vec<String> = r.urls.iter().map(|u| quote(u)).collect();
            let _ = write!(out, "    {{urls: [{}]", urls.join(", "));
            if let Some(a) = &r.account {
                let _ = write!(out, ", account: {}", quote(a));
            }
            if let Some(tls) = &r.tls {
                let mut parts = vec![format!("timeout: {}", duration(tls.timeout))];
                for (k, v) in [
                    ("ca_file", &tls.ca_file),
                    ("cert_file", &tls.cert_file),
                    ("key_file", &tls.key_file),
                ] {
                    if let Some(p) = v {
                        parts.push(format!("{k}: {}", quote(&p.to_string_lossy())));
                    }
                }
                let _ = write!(out, ", tls: {{{}}}", parts.join(", "));
            }
            for (key, list) in [
                ("deny_imports", &r.deny_imports),
                ("deny_exports", &r.deny_exports),
            ] {
                if !list.is_empty() {
                    let items: Vec<String> = list.iter().map(|x| quote(x)).collect();
                    let _ = write!(out, ", {key}: [{}]", items.join(", "));
                }
            }
            out.push_str("}\n");
        }
        out.push_str("  ]\n");
    }
    out.push_str("}\n");
}

fn render_cluster(options: &Options, out: &mut String) {
    let c = &options.cluster;
    if *c == crate::options::ClusterOptions::default() {
        return;
    }
    out.push_str("cluster {\n");
    if let Some(name) = &c.name {
        let _ = writeln!(out, "  name: {}", quote(name));
    }
    let _ = writeln!(out, "  host: {}", quote(&c.host.to_string()));
    if let Some(port) = c.port {
        let _ = writeln!(out, "  port: {port}");
    }
    if !c.routes.is_empty() {
        let _ = writeln!(out, "  routes: {}", list(&c.routes));
    }
    out.push_str("  authorization {\n");
    if let Some(user) = &c.user {
        let _ = writeln!(out, "    user: {}", quote(user));
    }
    if let Some(password) = &c.password {
        let _ = writeln!(out, "    password: {}", quote(password));
    }
    let _ = writeln!(out, "    timeout: {}", duration(c.auth_timeout));
    out.push_str("  }\n");
    if let Some(advertise) = &c.advertise {
        let _ = writeln!(out, "  advertise: {}", quote(advertise));
    }
    let _ = writeln!(out, "  no_advertise: {}", c.no_advertise);
    let _ = writeln!(out, "  connect_retries: {}", c.connect_retries);
    if let Some(tls) = &c.tls {
        render_tls(tls, "  ", out);
    }
    out.push_str("}\n");
}

/// A `tls {}` block at `indent`.
fn render_tls(tls: &crate::options::TlsOptions, indent: &str, out: &mut String) {
    let _ = writeln!(out, "{indent}tls {{");
    let path = |p: &std::path::Path| quote(&p.to_string_lossy());
    let _ = writeln!(out, "{indent}  cert_file: {}", path(&tls.cert_file));
    let _ = writeln!(out, "{indent}  key_file: {}", path(&tls.key_file));
    if let Some(ca) = &tls.ca_file {
        let _ = writeln!(out, "{indent}  ca_file: {}", path(ca));
    }
    let _ = writeln!(out, "{indent}  verify: {}", tls.verify);
    let _ = writeln!(out, "{indent}  timeout: {}", duration(tls.timeout));
    if tls.handshake_first {
        let _ = writeln!(out, "{indent}  handshake_first: true");
    }
    if tls.verify_and_map {
        let _ = writeln!(out, "{indent}  verify_and_map: true");
    }
    if let Some(pins) = &tls.pinned_certs {
        let pins: Vec<String> = pins.iter().cloned().collect();
        let _ = writeln!(out, "{indent}  pinned_certs: {}", list(&pins));
    }
    let _ = writeln!(out, "{indent}}}");
}

fn render_auth(options: &Options, out: &mut String) {
    let auth = &options.auth;
    out.push_str("authorization {\n");
    let mut field = |key: &str, value: Option<&String>| {
        if let Some(v) = value {
            let _ = writeln!(out, "  {key}: {}", quote(v));
        }
    };
    field("user", auth.user.as_ref());
    field("password", auth.password.as_ref());
    field("token", auth.token.as_ref());
    let _ = writeln!(out, "  timeout: {}", duration(auth.timeout));
    let global: Vec<&User> = auth.users.iter().filter(|u| u.account.is_none()).collect();
    let global_nkeys: Vec<&NkeyUser> = auth.nkeys.iter().filter(|u| u.account.is_none()).collect();
    if !global.is_empty() || !global_nkeys.is_empty() {
        out.push_str("  users: [\n");
        render_users(&global, "    ", out);
        render_nkey_users(&global_nkeys, "    ", out);
        out.push_str("  ]\n");
    }
    out.push_str("}\n");
    if options.accounts.is_empty() {
        return;
    }
    out.push_str("accounts {\n");
    for acc in &options.accounts {
        let users: Vec<&User> = auth
            .users
            .iter()
            .filter(|u| u.account.as_deref() == Some(acc.name.as_str()))
            .collect();
        let nkeys: Vec<&NkeyUser> = auth
            .nkeys
            .iter()
            .filter(|u| u.account.as_deref() == Some(acc.name.as_str()))
            .collect();
        // A plain name as a bare key; anything else quoted.
        let simple = acc
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        let key = if simple {
            acc.name.clone()
        } else {
            quote(&acc.name)
        };
        let _ = writeln!(out, "  {key}: {{");
        if !users.is_empty() || !nkeys.is_empty() {
            out.push_str("    users: [\n");
            render_users(&users, "      ", out);
            render_nkey_users(&nkeys, "      ", out);
            out.push_str("    ]\n");
        }
        render_account_extras(acc, out);
        out.push_str("  }\n");
    }
    out.push_str("}\n");
}

/// An account's exports, imports and limits.
fn render_account_extras(acc: &crate::options::AccountOptions, out: &mut String) {
    use crate::options::{ExportKind, ResponseType};
    let kind = |k: ExportKind| match k {
        ExportKind::Stream => "stream",
        ExportKind::Service => "service",
    };
    if !acc.exports.is_empty() {
        out.push_str("    exports: [\n");
        for e in &acc.exports {
            let _ = write!(out, "      {{{}: {}", kind(e.kind), quote(&e.subject));
            if let Some(list) = &e.accounts {
                let names: Vec<String> = list.iter().map(|a| quote(a)).collect();
                let _ = write!(out, ", accounts: [{}]", names.join(", "));
            }
            if e.kind == ExportKind::Service {
                let rt = match e.response_type {
                    ResponseType::Singleton => "singleton",
                    ResponseType::Stream => "stream",
                    ResponseType::Chunked => "chunked",
                };
                let _ = write!(
                    out,
                    ", response_type: {rt}, response_threshold: {}",
                    duration(e.response_threshold)
                );
            }
            out.push_str("}\n");
        }
        out.push_str("    ]\n");
    }
    if !acc.imports.is_empty() {
        out.push_str("    imports: [\n");
        for i in &acc.imports {
            let _ = write!(
                out,
                "      {{{}: {{account: {}, subject: {}}}",
                kind(i.kind),
                quote(&i.account),
                quote(&i.subject)
            );
            if let Some(to) = &i.to {
                let _ = write!(out, ", to: {}", quote(to));
            }
            if let Some(p) = &i.prefix {
                let _ = write!(out, ", prefix: {}", quote(p));
            }
            out.push_str("}\n");
        }
        out.push_str("    ]\n");
    }
    let l = &acc.limits;
    if *l != crate::options::AccountLimits::default() {
        let _ = writeln!(
            out,
            "    limits: {{max_connections: {}, max_subscriptions: {}, max_payload: {}}}",
            l.max_connections, l.max_subscriptions, l.max_payload
        );
    }
    if let Some(js) = &acc.jetstream {
        let _ = writeln!(
            out,
            "    jetstream: {{max_mem: {}, max_file: {}, max_streams: {}, max_consumers: {}, \
             max_ack_pending: {}, memory_max_stream_bytes: {}, store_max_stream_bytes: {}, \
             max_bytes_required: {}}}",
            js.max_memory,
            js.max_store,
            js.max_streams,
            js.max_consumers,
            js.max_ack_pending,
            js.memory_max_stream_bytes,
            js.store_max_stream_bytes,
            js.max_bytes_required
        );
    }
}

/// The `jetstream {}` block, when anything configures JetStream.
fn render_jetstream(options: &Options, out: &mut String) {
    use crate::options::JetStreamSync;
    let Some(js) = &options.jetstream else {
        return;
    };
    out.push_str("jetstream {\n");
    let _ = writeln!(out, "  enabled: {}", js.enabled);
    if let Some(dir) = &js.store_dir {
        let _ = writeln!(out, "  store_dir: {}", quote(&dir.to_string_lossy()));
    }
    if let Some(n) = js.max_memory {
        let _ = writeln!(out, "  max_memory_store: {n}");
    }
    if let Some(n) = js.max_file {
        let _ = writeln!(out, "  max_file_store: {n}");
    }
    if let Some(domain) = &js.domain {
        let _ = writeln!(out, "  domain: {}", quote(domain));
    }
    let sync = match js.sync {
        JetStreamSync::Always => quote("always"),
        JetStreamSync::Interval(d) => duration(d),
    };
    let _ = writeln!(out, "  sync_interval: {sync}");
    out.push_str("}\n");
}

fn render_users(users: &[&User], indent: &str, out: &mut String) {
    for user in users {
        let _ = write!(
            out,
            "{indent}{{user: {}, password: {}",
            quote(&user.user),
            quote(&user.password)
        );
        if let Some(perms) = &user.permissions {
            out.push_str(", permissions: ");
            render_permissions(perms, out);
        }
        out.push_str("}\n");
    }
}

fn render_nkey_users(users: &[&NkeyUser], indent: &str, out: &mut String) {
    for user in users {
        let _ = write!(out, "{indent}{{nkey: {}", quote(&user.nkey));
        if let Some(perms) = &user.permissions {
            out.push_str(", permissions: ");
            render_permissions(perms, out);
        }
        out.push_str("}\n");
    }
}

fn render_permissions(perms: &Permissions, out: &mut String) {
    let mut parts = Vec::new();
    if let Some(p) = &perms.publish {
        parts.push(format!("publish: {}", subject_permission(p)));
    }
    if let Some(p) = &perms.subscribe {
        parts.push(format!("subscribe: {}", subject_permission(p)));
    }
    if let Some(r) = &perms.allow_responses {
        parts.push(format!("allow_responses: {}", responses(r)));
    }
    let _ = write!(out, "{{{}}}", parts.join(", "));
}

fn subject_permission(p: &SubjectPermission) -> String {
    // An empty map would read back as "no restriction" (None); an empty allow list says the same
    // thing as an explicit `{allow: []}`.
    format!("{{allow: {}, deny: {}}}", list(&p.allow), list(&p.deny))
}

fn responses(r: &ResponsePermission) -> String {
    // Zero means "unlimited" in Options; in the file that is a negative value.
    let max = if r.max_msgs == 0 {
        "-1".to_string()
    } else {
        r.max_msgs.to_string()
    };
    let expires = if r.expires.is_zero() {
        quote("-1s")
    } else {
        duration(r.expires)
    };
    format!("{{max: {max}, expires: {expires}}}")
}

fn render_websocket(options: &Options, out: &mut String) {
    let w = &options.websocket;
    if *w == crate::options::WebsocketOptions::default() {
        return;
    }
    out.push_str("websocket {\n");
    let _ = writeln!(out, "  host: {}", quote(&w.host.to_string()));
    if let Some(port) = w.port {
        let _ = writeln!(out, "  port: {port}");
    }
    if let Some(a) = &w.advertise {
        let _ = writeln!(out, "  advertise: {}", quote(a));
    }
    let _ = writeln!(out, "  no_tls: {}", w.no_tls);
    if let Some(tls) = &w.tls {
        let _ = writeln!(
            out,
            "  tls {{ cert_file: {}, key_file: {}, verify: {}, timeout: {}{} }}",
            quote(&tls.cert_file.to_string_lossy()),
            quote(&tls.key_file.to_string_lossy()),
            tls.verify,
            duration(tls.timeout),
            tls.ca_file
                .as_ref()
                .map(|ca| format!(", ca_file: {}", quote(&ca.to_string_lossy())))
                .unwrap_or_default(),
        );
    }
    let _ = writeln!(out, "  same_origin: {}", w.same_origin);
    if !w.allowed_origins.is_empty() {
        let _ = writeln!(out, "  allowed_origins: {}", list(&w.allowed_origins));
    }
    let _ = writeln!(out, "  compression: {}", w.compression);
    let _ = writeln!(
        out,
        "  handshake_timeout: {}",
        duration(w.handshake_timeout)
    );
    if let Some(u) = &w.no_auth_user {
        let _ = writeln!(out, "  no_auth_user: {}", quote(u));
    }
    if let Some(c) = &w.jwt_cookie {
        let _ = writeln!(out, "  jwt_cookie: {}", quote(c));
    }
    let auth = [
        ("user", &w.user),
        ("password", &w.password),
        ("token", &w.token),
    ];
    if auth.iter().any(|(_, v)| v.is_some()) || w.auth_timeout.is_some() {
        out.push_str("  authorization {\n");
        for (k, v) in auth {
            if let Some(v) = v {
                let _ = writeln!(out, "    {k}: {}", quote(v));
            }
        }
        if let Some(t) = w.auth_timeout {
            let _ = writeln!(out, "    timeout: {}", t.as_secs_f64());
        }
        out.push_str("  }\n");
    }
    out.push_str("}\n");
}

fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", quoted.join(", "))
}

fn host_port(host: IpAddr, port: u16) -> String {
    match host {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

fn duration(d: Duration) -> String {
    quote(&format_duration(d))
}

/// A double-quoted string: never read as a number, boolean or `$variable`.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
