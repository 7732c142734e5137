//! The JSON bodies of `INFO` (server to client) and `CONNECT` (client to server).

use serde::{Deserialize, Serialize};

/// The protocol version clients see. Clients parse `version` as X.Y.Z to decide which
/// features a server has, so midge advertises the nats-server release whose core
/// protocol it implements rather than its own crate version.
pub const NATS_COMPAT_VERSION: &str = "2.10.0";

/// `INFO` sent to a client on accept. Field order and omission rules follow nats-server so
/// that byte-level comparisons and picky clients see the same document.
#[derive(Debug, Clone, Serialize)]
pub struct ServerInfo {
    pub server_id: String,
    pub server_name: String,
    pub version: &'static str,
    pub proto: u8,
    pub go: &'static str,
    pub host: String,
    pub port: u16,
    pub headers: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub auth_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_required: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_verify: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub tls_available: bool,
    pub max_payload: usize,
    #[serde(skip_serializing_if = "is_zero")]
    pub client_id: u64,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub client_ip: String,
    /// The challenge an nkey or JWT user signs in CONNECT (`sig`); only in the first INFO.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connect_urls: Vec<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub ldm: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ServerInfo {
    /// Appends `INFO {json} \r\n` to `out`. nats-server puts a space before the CRLF;
    /// clients do not care, but transcripts compared with it then match.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"INFO ");
        // Serializing plain strings and numbers into a Vec cannot fail.
        if serde_json::to_writer(&mut *out, self).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(b" \r\n");
    }
}

/// The options a client sends in `CONNECT`. Omitted booleans take nats-server's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ConnectOptions {
    pub verbose: bool,
    pub pedantic: bool,
    pub tls_required: bool,
    pub auth_token: Option<String>,
    pub user: Option<String>,
    pub pass: Option<String>,
    /// Public nkey of an nkey user.
    pub nkey: Option<String>,
    /// Signature of the INFO nonce by the user's key (base64url, or standard base64).
    pub sig: Option<String>,
    /// User JWT (operator mode).
    pub jwt: Option<String>,
    pub name: Option<String>,
    pub lang: Option<String>,
    pub version: Option<String>,
    pub protocol: i64,
    pub echo: bool,
    pub headers: bool,
    pub no_responders: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            verbose: true,
            pedantic: true,
            tls_required: false,
            auth_token: None,
            user: None,
            pass: None,
            nkey: None,
            sig: None,
            jwt: None,
            name: None,
            lang: None,
            version: None,
            protocol: 0,
            echo: true,
            headers: false,
            no_responders: false,
        }
    }
}
