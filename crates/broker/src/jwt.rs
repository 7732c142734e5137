//! NATS JWTs (version 2): operator, account and user claims, as `nsc` and the NATS tools
//! write them. A JWT is three base64url parts, `header.claims.signature`; the signature is
//! ed25519 over `header.claims` by the key named in `iss`, checked with the `nkeys` crate.
//!
//! Only what the broker acts on is decoded; unknown fields are ignored, as by nats-server.
//! Missing numbers are 0, as Go decodes them (a limit of -1 means unlimited).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
use base64::{alphabet, Engine as _};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::options::{Permissions, ResponsePermission, SubjectPermission};

/// What is wrong with a JWT.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JwtError {
    #[error("not a JWT: expected 3 parts separated by dots")]
    Shape,
    #[error("JWT part is not base64url: {0}")]
    Base64(&'static str),
    #[error("JWT {0} is not valid JSON: {1}")]
    Json(&'static str, String),
    #[error("JWT algorithm {0:?} is not supported (expected ed25519-nkey)")]
    Algorithm(String),
    #[error("JWT version {0} is not supported (only version 2 JWTs)")]
    Version(i64),
    #[error("expected a {expected} JWT, got {got:?}")]
    Kind { expected: &'static str, got: String },
    #[error("JWT issuer {0:?} is not a valid {1} public key")]
    Issuer(String, &'static str),
    #[error("JWT subject {0:?} is not a valid {1} public key")]
    Subject(String, &'static str),
    #[error("JWT signature does not verify")]
    Signature,
}

/// base64url, with or without padding, trailing bits not checked (as Go's decoder).
const URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    general_purpose::NO_PAD
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

#[derive(Deserialize)]
struct Header {
    #[serde(default)]
    alg: String,
}

/// The registered claims every JWT has, with the NATS part `nats`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Claims<T> {
    #[serde(default)]
    pub iss: String,
    #[serde(default)]
    pub sub: String,
    #[serde(default)]
    pub name: String,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: i64,
    /// Expires at, Unix seconds; 0: never.
    #[serde(default)]
    pub exp: i64,
    /// Not valid before, Unix seconds; 0: always.
    #[serde(default)]
    pub nbf: i64,
    pub nats: T,
}

impl<T> Claims<T> {
    /// Expired or not yet valid at `now` (Unix seconds).
    pub fn time_invalid(&self, now: i64) -> bool {
        (self.exp > 0 && now > self.exp) || (self.nbf > 0 && self.nbf > now)
    }
}

#[derive(Deserialize)]
struct Kind {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    version: i64,
}

#[derive(Deserialize)]
struct KindOnly {
    nats: Option<Kind>,
    /// Version 1 JWTs had the type at the top level.
    #[serde(default, rename = "type")]
    v1_type: String,
}

fn decode<T: DeserializeOwned>(
    token: &str,
    expected: &'static str,
    issuer: nkeys::KeyPairType,
    subject: nkeys::KeyPairType,
) -> Result<Claims<T>, JwtError> {
    decode_checked(token, Some(expected), issuer, subject)
}

/// [`decode`]; `expected: None` takes any claim type and version (generic claims, which
/// nats-server decodes without looking at either).
fn decode_checked<T: DeserializeOwned>(
    token: &str,
    expected: Option<&'static str>,
    issuer: nkeys::KeyPairType,
    subject: nkeys::KeyPairType,
) -> Result<Claims<T>, JwtError> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Shape);
    };
    let header = URL.decode(h).map_err(|_| JwtError::Base64("header"))?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| JwtError::Json("header", e.to_string()))?;
    if !header.alg.eq_ignore_ascii_case("ed25519-nkey") {
        return Err(JwtError::Algorithm(header.alg));
    }
    let body = URL.decode(c).map_err(|_| JwtError::Base64("claims"))?;
    if let Some(expected) = expected {
        let kind: KindOnly =
            serde_json::from_slice(&body).map_err(|e| JwtError::Json("claims", e.to_string()))?;
        if !kind.v1_type.is_empty() {
            return Err(JwtError::Version(1));
        }
        let kind = kind.nats.unwrap_or(Kind {
            kind: String::new(),
            version: 0,
        });
        if kind.version != 2 {
            return Err(JwtError::Version(kind.version));
        }
        if kind.kind != expected {
            return Err(JwtError::Kind {
                expected,
                got: kind.kind,
            });
        }
    }
    let claims: Claims<T> =
        serde_json::from_slice(&body).map_err(|e| JwtError::Json("claims", e.to_string()))?;
    let sig = URL.decode(s).map_err(|_| JwtError::Base64("signature"))?;
    let issuer_name = key_name(&issuer);
    let subject_name = key_name(&subject);
    let key = public_key(&claims.iss, issuer)
        .ok_or_else(|| JwtError::Issuer(claims.iss.clone(), issuer_name))?;
    if public_key(&claims.sub, subject).is_none() {
        return Err(JwtError::Subject(claims.sub.clone(), subject_name));
    }
    let signed = &token[..h.len() + 1 + c.len()];
    key.verify(signed.as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    Ok(claims)
}

fn public_key(text: &str, kind: nkeys::KeyPairType) -> Option<nkeys::KeyPair> {
    nkeys::KeyPair::from_public_key(text)
        .ok()
        .filter(|k| k.key_pair_type() == kind)
}

/// Whether `text` is a public account key (`A...`).
pub fn is_account_key(text: &str) -> bool {
    public_key(text, nkeys::KeyPairType::Account).is_some()
}

fn key_name(kind: &nkeys::KeyPairType) -> &'static str {
    match kind {
        nkeys::KeyPairType::Operator => "operator",
        nkeys::KeyPairType::Account => "account",
        nkeys::KeyPairType::User => "user",
        _ => "nkey",
    }
}

/// The NATS part of a request to delete accounts from a directory resolver
/// (`$SYS.REQ.CLAIMS.DELETE`): generic claims an operator key signs for itself.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRequest {
    pub accounts: Vec<serde_json::Value>,
}

/// Decodes and verifies a delete request: signed by an operator key (its subject, which
/// must be the issuer; whether that key is trusted is for the caller to check).
pub fn decode_delete_request(token: &str) -> Result<Claims<DeleteRequest>, JwtError> {
    decode_checked(
        token,
        None,
        nkeys::KeyPairType::Operator,
        nkeys::KeyPairType::Operator,
    )
}

/// The NATS part of an operator JWT.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Operator {
    pub signing_keys: Vec<String>,
    pub system_account: String,
}

pub type OperatorClaims = Claims<Operator>;

/// Decodes and verifies an operator JWT (signed by the operator key or one of its keys).
pub fn decode_operator(token: &str) -> Result<OperatorClaims, JwtError> {
    decode(
        token,
        "operator",
        nkeys::KeyPairType::Operator,
        nkeys::KeyPairType::Operator,
    )
}

/// The NATS part of an account JWT.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Account {
    pub limits: AccountLimits,
    pub signing_keys: Vec<SigningKey>,
    /// User (or `*`) public key -> Unix seconds: user JWTs issued at or before are revoked.
    pub revocations: BTreeMap<String, i64>,
    pub exports: Vec<Export>,
    pub imports: Vec<Import>,
    pub default_permissions: JwtPermissions,
}

pub type AccountClaims = Claims<Account>;

/// Decodes and verifies an account JWT (its issuer must be an operator key; whether that
/// operator is trusted is for the caller to check).
pub fn decode_account(token: &str) -> Result<AccountClaims, JwtError> {
    decode(
        token,
        "account",
        nkeys::KeyPairType::Operator,
        nkeys::KeyPairType::Account,
    )
}

/// Account limits; -1: unlimited.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct AccountLimits {
    pub subs: i64,
    pub payload: i64,
    pub conn: i64,
    pub leaf: i64,
    pub imports: i64,
    pub exports: i64,
    /// Whether exports may contain wildcards.
    pub wildcards: bool,
    pub disallow_bearer: bool,
    /// JetStream limits; all zero (and no tiers): JetStream is off for the account.
    #[serde(flatten)]
    pub jetstream: JetStreamLimits,
    /// JetStream limits by tier (`R1`, `R3`): used when the flat ones are all zero.
    pub tiered_limits: BTreeMap<String, JetStreamLimits>,
}

/// The JetStream limits of an account JWT (`-1`: unlimited; 0 in `mem_storage` and
/// `disk_storage` both: no JetStream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct JetStreamLimits {
    pub mem_storage: i64,
    pub disk_storage: i64,
    pub streams: i64,
    pub consumer: i64,
    pub max_ack_pending: i64,
    pub mem_max_stream_bytes: i64,
    pub disk_max_stream_bytes: i64,
    pub max_bytes_required: bool,
}

impl AccountLimits {
    /// The broker's JetStream limits for the account, as nats-server reads the claims: the
    /// flat limits when a storage limit is set, else the `R1` tier (one server), else off.
    pub fn jetstream_limits(&self) -> Option<crate::options::AccountJetStreamLimits> {
        let l = if self.jetstream.mem_storage != 0 || self.jetstream.disk_storage != 0 {
            &self.jetstream
        } else {
            self.tiered_limits.get("R1")?
        };
        // 0 counts (streams, consumers, per-stream bytes) are unlimited, as in nats-server.
        let unlimited = |n: i64| if n == 0 { -1 } else { n };
        Some(crate::options::AccountJetStreamLimits {
            max_memory: l.mem_storage,
            max_store: l.disk_storage,
            max_streams: unlimited(l.streams),
            max_consumers: unlimited(l.consumer),
            max_ack_pending: unlimited(l.max_ack_pending),
            memory_max_stream_bytes: unlimited(l.mem_max_stream_bytes),
            store_max_stream_bytes: unlimited(l.disk_max_stream_bytes),
            max_bytes_required: l.max_bytes_required,
        })
    }
}

impl AccountClaims {
    /// What makes the account unusable, as nats-server's validation finds it: more imports
    /// or exports than its limits allow, wildcard exports without `wildcards`.
    pub fn validation_issues(&self) -> Vec<&'static str> {
        let n = &self.nats;
        let over = |limit: i64, count: usize| limit >= 0 && count as u64 > limit as u64;
        let mut issues = Vec::new();
        if over(n.limits.imports, n.imports.len()) {
            issues.push("the account contains more imports than allowed by the operator");
        }
        if over(n.limits.exports, n.exports.len()) {
            issues.push("the account contains more exports than allowed by the operator");
        }
        let wildcard = |s: &str| s.split('.').any(|t| t == "*" || t == ">");
        if !n.limits.wildcards && n.exports.iter().any(|e| wildcard(&e.subject)) {
            issues
                .push("the account contains wildcard exports that are not allowed by the operator");
        }
        issues
    }
}

/// An account signing key: a plain key, or a scoped one whose template replaces the
/// permissions and limits of the users it signs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SigningKey {
    Plain(String),
    Scoped(Box<Scope>),
}

impl SigningKey {
    pub fn key(&self) -> &str {
        match self {
            SigningKey::Plain(k) => k,
            SigningKey::Scoped(s) => &s.key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Scope {
    #[serde(default)]
    pub kind: String,
    pub key: String,
    /// What users signed with the key get, whatever their own JWT says.
    #[serde(default)]
    pub template: User,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Export {
    pub subject: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub token_req: bool,
    pub response_type: String,
    /// Nanoseconds.
    pub response_threshold: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct Import {
    pub subject: String,
    pub account: String,
    pub token: String,
    /// Streams: a prefix (older JWTs); services: the local subject (older JWTs).
    pub to: String,
    pub local_subject: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct JwtPermission {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct JwtResponses {
    pub max: i64,
    /// Nanoseconds.
    pub ttl: i64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct JwtPermissions {
    #[serde(rename = "pub")]
    pub publish: JwtPermission,
    #[serde(rename = "sub")]
    pub subscribe: JwtPermission,
    pub resp: Option<JwtResponses>,
}

impl JwtPermissions {
    /// The broker's permissions; `None` when the JWT sets none (as nats-server).
    pub fn to_permissions(&self) -> Option<Permissions> {
        let side = |p: &JwtPermission| {
            (!p.allow.is_empty() || !p.deny.is_empty()).then(|| SubjectPermission {
                allow: p.allow.clone(),
                deny: p.deny.clone(),
            })
        };
        let publish = side(&self.publish);
        let subscribe = side(&self.subscribe);
        let allow_responses = self.resp.as_ref().map(|r| ResponsePermission {
            // nats-server's defaults for unset values: one response, within 2 minutes.
            max_msgs: if r.max == 0 {
                1
            } else {
                usize::try_from(r.max).unwrap_or(0)
            },
            expires: if r.ttl == 0 {
                Duration::from_secs(120)
            } else {
                Duration::from_nanos(u64::try_from(r.ttl).unwrap_or(0))
            },
        });
        if publish.is_none() && subscribe.is_none() && allow_responses.is_none() {
            return None;
        }
        Some(Permissions {
            publish,
            subscribe,
            allow_responses,
        })
    }
}

/// Allowed source networks: a list, or (older JWTs) one comma-separated string.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CidrList(pub Vec<String>);

impl<'de> Deserialize<'de> for CidrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            List(Vec<String>),
            Text(String),
        }
        let items = match Form::deserialize(d)? {
            Form::List(v) => v,
            Form::Text(t) => t.split(',').map(str::to_string).collect(),
        };
        Ok(CidrList(
            items
                .into_iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct TimeRange {
    pub start: String,
    pub end: String,
}

/// Permissions and limits of a user (also a scoped signing key's template).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct UserLimits {
    #[serde(flatten)]
    pub permissions: JwtPermissions,
    pub src: CidrList,
    pub times: Vec<TimeRange>,
    pub times_location: String,
    pub subs: i64,
    pub data: i64,
    pub payload: i64,
}

/// The NATS part of a user JWT.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct User {
    #[serde(flatten)]
    pub limits: UserLimits,
    pub bearer_token: bool,
    pub issuer_account: String,
    /// `STANDARD`, `WEBSOCKET`, `LEAFNODE`, ...; empty: any.
    pub allowed_connection_types: Vec<String>,
}

/// The connection types nats-server knows in `allowed_connection_types`.
const CONNECTION_TYPES: [&str; 6] = [
    "STANDARD",
    "WEBSOCKET",
    "LEAFNODE",
    "LEAFNODE_WS",
    "MQTT",
    "MQTT_WS",
];

/// Whether a client connection of type `kind` (`STANDARD` for plain TCP clients) may log
/// in with `allowed`: unknown types are ignored, but a list of only unknown types allows
/// nothing (as nats-server).
pub fn connection_type_allowed(allowed: &[String], kind: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let known: Vec<String> = allowed
        .iter()
        .map(|t| t.to_ascii_uppercase())
        .filter(|t| CONNECTION_TYPES.contains(&t.as_str()))
        .collect();
    known.iter().any(|t| t == kind)
}

pub type UserClaims = Claims<User>;

/// Decodes and verifies a user JWT (its issuer must be an account key: the account itself
/// or one of its signing keys, which the caller checks).
pub fn decode_user(token: &str) -> Result<UserClaims, JwtError> {
    decode(
        token,
        "user",
        nkeys::KeyPairType::Account,
        nkeys::KeyPairType::User,
    )
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Whether `ip` is in one of the CIDR networks (`10.0.0.0/8`, `::1/128`); an empty list
/// allows every address, an unparsable entry allows none (as nats-server).
pub fn source_allowed(src: &CidrList, ip: IpAddr) -> bool {
    if src.0.is_empty() {
        return true;
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    for cidr in &src.0 {
        let Some((net, bits)) = cidr.split_once('/') else {
            return false;
        };
        let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
            return false;
        };
        let inside = match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
                let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            (IpAddr::V4(_), _) if bits > 32 => return false,
            (IpAddr::V6(_), _) if bits > 128 => return false,
            _ => false,
        };
        if inside {
            return true;
        }
    }
    false
}

/// Whether now (`now`, Unix seconds, UTC) falls in one of the daily windows, and for how
/// long still. No windows: always, with no end. Windows are read in UTC; a
/// `times_location` other than UTC cannot be honoured (no time zone data) and allows nothing.
pub fn within_times(times: &[TimeRange], location: &str, now: i64) -> Option<Option<Duration>> {
    if times.is_empty() {
        return Some(None);
    }
    if !(location.is_empty() || location.eq_ignore_ascii_case("UTC")) {
        return None;
    }
    let secs_of_day = |t: &str| -> Option<i64> {
        let mut it = t.split(':');
        let (h, m, s) = (it.next()?, it.next()?, it.next()?);
        if it.next().is_some() {
            return None;
        }
        let (h, m, s): (i64, i64, i64) = (h.parse().ok()?, m.parse().ok()?, s.parse().ok()?);
        (h < 24 && m < 60 && s < 60).then_some(h * 3600 + m * 60 + s)
    };
    let day = now.div_euclid(86_400) * 86_400;
    for range in times {
        let (Some(start), Some(end)) = (secs_of_day(&range.start), secs_of_day(&range.end)) else {
            return None;
        };
        // A window whose end is before its start runs into the next day.
        let candidates = if start > end {
            [
                (day - 86_400 + start, day + end),
                (day + start, day + 86_400 + end),
            ]
        } else {
            [(day + start, day + end), (day + start, day + end)]
        };
        for (from, to) in candidates {
            if from < now && now < to {
                return Some(Some(Duration::from_secs(
                    u64::try_from(to - now).unwrap_or(0),
                )));
            }
        }
    }
    None
}

/// Whether a user JWT of `user` issued at `issued_at` is revoked by `revocations`.
pub fn is_revoked(revocations: &BTreeMap<String, i64>, user: &str, issued_at: i64) -> bool {
    [user, "*"]
        .iter()
        .any(|k| revocations.get(*k).is_some_and(|t| *t >= issued_at))
}

/// Signs `claims` as a JWT (tests build operator/account/user chains with it).
#[cfg(test)]
pub(crate) fn encode(signer: &nkeys::KeyPair, claims: &serde_json::Value) -> String {
    let e = general_purpose::URL_SAFE_NO_PAD;
    let head = e.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = e.encode(claims.to_string());
    let signed = format!("{head}.{body}");
    let sig = signer.sign(signed.as_bytes()).expect("sign");
    format!("{signed}.{}", e.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_decodes_and_tampering_is_caught() {
        let op = nkeys::KeyPair::new_operator();
        let acc = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        let op_jwt = encode(
            &op,
            &serde_json::json!({"iss": op.public_key(), "sub": op.public_key(), "iat": 1,
                "nats": {"type": "operator", "version": 2}}),
        );
        assert_eq!(
            decode_operator(&op_jwt).expect("operator").sub,
            op.public_key()
        );
        let acc_jwt = encode(
            &op,
            &serde_json::json!({"iss": op.public_key(), "sub": acc.public_key(), "iat": 1,
                "nats": {"type": "account", "version": 2, "limits": {"subs": -1, "conn": 3},
                    "revocations": {"*": 5}}}),
        );
        let a = decode_account(&acc_jwt).expect("account");
        assert_eq!(a.nats.limits.conn, 3);
        assert!(is_revoked(&a.nats.revocations, "U", 5));
        assert!(!is_revoked(&a.nats.revocations, "U", 6));
        let user_jwt = encode(
            &acc,
            &serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(), "iat": 1,
                "nats": {"type": "user", "version": 2, "pub": {"allow": ["a.>"]},
                    "src": "127.0.0.1/32, 10.0.0.0/8", "subs": -1}}),
        );
        let u = decode_user(&user_jwt).expect("user");
        assert_eq!(u.nats.limits.src.0, ["127.0.0.1/32", "10.0.0.0/8"]);
        assert!(u.nats.limits.permissions.to_permissions().is_some());
        // The wrong kind, a foreign signature, a changed body.
        assert!(matches!(decode_user(&acc_jwt), Err(JwtError::Kind { .. })));
        let forged = encode(
            &nkeys::KeyPair::new_account(),
            &serde_json::json!({"iss": acc.public_key(), "sub": user.public_key(),
                "nats": {"type": "user", "version": 2}}),
        );
        assert_eq!(decode_user(&forged), Err(JwtError::Signature));
        assert_eq!(decode_user("a.b"), Err(JwtError::Shape));
    }

    /// nats-server's reading of the JetStream limits: flat ones when a storage limit is set,
    /// else the R1 tier; zero counts are unlimited; no storage limit at all is no JetStream.
    #[test]
    fn jetstream_limits_of_account_claims() {
        let limits = |json: serde_json::Value| -> AccountLimits {
            serde_json::from_value(json).expect("limits")
        };
        assert_eq!(
            limits(serde_json::json!({"subs": -1})).jetstream_limits(),
            None
        );
        let flat = limits(serde_json::json!({"mem_storage": -1, "disk_storage": 1024,
            "streams": 5, "consumer": 0}))
        .jetstream_limits()
        .expect("enabled");
        assert_eq!(
            (
                flat.max_memory,
                flat.max_store,
                flat.max_streams,
                flat.max_consumers
            ),
            (-1, 1024, 5, -1)
        );
        let tiered = limits(
            serde_json::json!({"tiered_limits": {"R1": {"mem_storage": 10,
            "disk_storage": 20, "streams": 2, "max_bytes_required": true}}}),
        )
        .jetstream_limits()
        .expect("enabled");
        assert_eq!((tiered.max_memory, tiered.max_store), (10, 20));
        assert!(tiered.max_bytes_required);
    }

    #[test]
    fn source_networks_and_time_windows() {
        let src = CidrList(vec!["10.1.0.0/16".into(), "::1/128".into()]);
        assert!(source_allowed(&src, "10.1.2.3".parse().expect("ip")));
        assert!(!source_allowed(&src, "10.2.0.1".parse().expect("ip")));
        assert!(source_allowed(&src, "::1".parse().expect("ip")));
        assert!(source_allowed(
            &CidrList::default(),
            "1.2.3.4".parse().expect("ip")
        ));
        assert!(!source_allowed(
            &CidrList(vec!["junk".into()]),
            "1.2.3.4".parse().expect("ip")
        ));
        let day = 1_700_000_000 / 86_400 * 86_400;
        let window = [TimeRange {
            start: "08:00:00".into(),
            end: "17:00:00".into(),
        }];
        assert_eq!(
            within_times(&window, "", day + 9 * 3600),
            Some(Some(Duration::from_secs(8 * 3600)))
        );
        assert_eq!(within_times(&window, "", day + 18 * 3600), None);
        let night = [TimeRange {
            start: "22:00:00".into(),
            end: "02:00:00".into(),
        }];
        assert!(within_times(&night, "UTC", day + 3600).is_some());
        assert!(within_times(&night, "UTC", day + 23 * 3600).is_some());
        assert!(within_times(&night, "UTC", day + 12 * 3600).is_none());
        assert!(within_times(&window, "Europe/Paris", day + 9 * 3600).is_none());
        let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(connection_type_allowed(&[], "STANDARD"));
        assert!(connection_type_allowed(
            &types(&["standard", "FUTURE"]),
            "STANDARD"
        ));
        assert!(!connection_type_allowed(&types(&["WEBSOCKET"]), "STANDARD"));
        assert!(!connection_type_allowed(&types(&["FUTURE"]), "STANDARD"));
        assert_eq!(within_times(&[], "", 0), Some(None));
    }
}
