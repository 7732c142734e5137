//! Client authentication and per-user publish/subscribe permissions.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use midge_proto::hash::{keyed_map, keyed_set, KeyedMap, KeyedSet};
use midge_proto::subject;

use crate::info::ConnectOptions;
use tracing::{debug, warn};

use crate::options::{
    Authorization, OperatorMode, Permissions, ResponsePermission, SubjectPermission,
};

/// Who a client turned out to be: its permissions (None = everything allowed) and the
/// account it is bound to (None = the global account).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authenticated {
    pub permissions: Option<Permissions>,
    pub account: Option<String>,
    /// JWT users: how long the login stays valid (the JWT's expiry, the end of its time
    /// window); then the client is closed with 'User Authentication Expired'.
    pub valid_for: Option<Duration>,
    /// JWT users: their own subscription limit (`subs`), `None`: unlimited.
    pub max_subs: Option<usize>,
    /// JWT users: their own payload limit (`payload`), `None`: unlimited.
    pub max_payload: Option<usize>,
    /// JWT users: the user's public key (what monitoring shows as the user).
    pub name: Option<String>,
    /// JWT users whose account JWT allows no connections (`conn: 0`).
    pub no_connections: bool,
}

impl Authenticated {
    pub(crate) fn of(user: &crate::options::User) -> Self {
        Authenticated {
            permissions: user.permissions.clone(),
            account: user.account.clone(),
            ..Authenticated::default()
        }
    }

    fn of_nkey(user: &crate::options::NkeyUser) -> Self {
        Authenticated {
            permissions: user.permissions.clone(),
            account: user.account.clone(),
            ..Authenticated::default()
        }
    }
}

/// Whether `sig` (from CONNECT) is a valid signature of `nonce` by the public nkey `public`.
///
/// As nats-server, the signature may be base64url without padding or standard base64 with
/// padding; trailing bits are not checked (Go's decoders are not strict either).
pub fn nonce_signed_by(public: &str, nonce: &[u8], sig: &str) -> bool {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use base64::{alphabet, Engine as _};
    const RAW_URL: GeneralPurpose = GeneralPurpose::new(
        &alphabet::URL_SAFE,
        general_purpose::NO_PAD
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    const STD: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        general_purpose::PAD
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    let Ok(sig) = RAW_URL.decode(sig).or_else(|_| STD.decode(sig)) else {
        return false;
    };
    let Ok(key) = nkeys::KeyPair::from_public_key(public) else {
        return false;
    };
    key.verify(nonce, &sig).is_ok()
}

/// A fresh nonce for INFO: 11 random bytes in base64url (15 characters), as nats-server.
pub fn new_nonce() -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let raw: [u8; 11] = rand::random();
    URL_SAFE_NO_PAD.encode(raw)
}

/// Checks the credentials in `CONNECT` against the configured authorization. A client that
/// gives no credentials at all is `no_auth_user` when one is configured (as nats-server).
/// `nonce` is the one this client's INFO carried (nkey users sign it).
/// `Err(())` means the client must be rejected with 'Authorization Violation'.
///
/// A bcrypt hash is verified on the blocking pool, never on an async worker: one
/// verification costs tens of milliseconds of CPU, and a few dozen clients sending wrong
/// passwords would otherwise stall every connection on the runtime.
#[allow(clippy::result_unit_err)]
pub async fn authenticate(
    verifier: &Verifier,
    auth: &Authorization,
    no_auth_user: Option<&str>,
    origin: Origin<'_>,
    c: &ConnectOptions,
) -> Result<Authenticated, ()> {
    if let Some(op) = &auth.operator {
        return jwt_login(op, origin, c, crate::jwt::unix_now());
    }
    match candidate(auth, no_auth_user, origin.nonce, c) {
        Candidate::Decided(result) => result,
        Candidate::Password {
            configured,
            given,
            who,
        } => {
            if verifier.password_ok(configured, given).await {
                Ok(who)
            } else {
                Err(())
            }
        }
    }
}

/// What the server knows of a client besides its CONNECT.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The nonce its INFO carried (nkey and JWT users sign it).
    pub nonce: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// Its connection type as JWTs name them (`STANDARD`, `WEBSOCKET`).
    pub kind: &'static str,
}

impl Origin<'_> {
    /// A plain TCP client that was sent no nonce.
    pub const PLAIN: Origin<'static> = Origin {
        nonce: None,
        ip: None,
        kind: "STANDARD",
    };
}

/// Operator mode: the user JWT of CONNECT, checked as nats-server does. Each refusal is
/// logged at debug level with its reason; the client only hears 'Authorization Violation'.
fn jwt_login(
    op: &OperatorMode,
    origin: Origin<'_>,
    c: &ConnectOptions,
    now: i64,
) -> Result<Authenticated, ()> {
    let (nonce, peer) = (origin.nonce, origin.ip);
    let refuse = |why: &str| {
        debug!("JWT login refused: {why}");
    };
    let Some(token) = c.jwt.as_deref() else {
        refuse("authentication requires a user JWT");
        return Err(());
    };
    let user =
        crate::jwt::decode_user(token).map_err(|e| refuse(&format!("user JWT not valid: {e}")))?;
    if user.time_invalid(now) {
        refuse("user JWT expired or not yet valid");
        return Err(());
    }
    let account_key = if user.nats.issuer_account.is_empty() {
        &user.iss
    } else {
        &user.nats.issuer_account
    };
    let Some(account) = op.accounts.get(account_key) else {
        refuse(&format!("account {account_key} is not known"));
        return Err(());
    };
    if !op.trusts(&account.iss) {
        refuse("account JWT not signed by a trusted operator");
        return Err(());
    }
    // The user is signed by the account itself or one of its signing keys; a scoped
    // signing key's template replaces the user's permissions and limits (and the user
    // JWT may set none of its own).
    let mut effective = &user.nats;
    if user.iss != account.sub {
        match account
            .nats
            .signing_keys
            .iter()
            .find(|k| k.key() == user.iss)
        {
            None => {
                refuse("user JWT issuer is not known");
                return Err(());
            }
            Some(crate::jwt::SigningKey::Scoped(scope)) => {
                let own = &user.nats;
                if own.limits != crate::jwt::UserLimits::default()
                    || own.bearer_token
                    || !own.allowed_connection_types.is_empty()
                {
                    refuse("scoped users require no permissions or limits set");
                    return Err(());
                }
                effective = &scope.template;
            }
            Some(crate::jwt::SigningKey::Plain(_)) => {}
        }
    }
    let limits = &effective.limits;
    if !crate::jwt::connection_type_allowed(&effective.allowed_connection_types, origin.kind) {
        refuse("connection type not allowed");
        return Err(());
    }
    if account.time_invalid(now) {
        refuse("account JWT has expired");
        return Err(());
    }
    if let Some(issue) = account.validation_issues().first() {
        refuse(&format!("account JWT not valid: {issue}"));
        return Err(());
    }
    if effective.bearer_token && account.nats.limits.disallow_bearer {
        refuse("account does not allow bearer tokens");
        return Err(());
    }
    if !effective.bearer_token {
        let signed = match (nonce, c.sig.as_deref()) {
            (Some(nonce), Some(sig)) => nonce_signed_by(&user.sub, nonce.as_bytes(), sig),
            _ => false,
        };
        if !signed {
            refuse("signature missing or not verified");
            return Err(());
        }
    }
    if crate::jwt::is_revoked(&account.nats.revocations, &user.sub, user.iat) {
        refuse("user authentication revoked");
        return Err(());
    }
    if !peer.is_some_and(|ip| crate::jwt::source_allowed(&limits.src, ip)) {
        warn!(
            "Bad src Ip {}",
            peer.map(|p| p.to_string()).unwrap_or_default()
        );
        return Err(());
    }
    let Some(window) = crate::jwt::within_times(&limits.times, &limits.times_location, now) else {
        warn!("Outside connect times");
        return Err(());
    };
    let expiry =
        (user.exp > 0).then(|| Duration::from_secs(u64::try_from(user.exp - now).unwrap_or(0)));
    let valid_for = match (expiry, window) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // -1 is unlimited, anything else a limit (0 included), as nats-server: the lower of the
    // user's and the account's applies.
    let limit = |n: i64| usize::try_from(n).ok();
    let lower = |a: i64, b: i64| match (a < 0, b < 0) {
        (true, _) => b,
        (_, true) => a,
        _ => a.min(b),
    };
    let acc_limits = &account.nats.limits;
    Ok(Authenticated {
        permissions: limits
            .permissions
            .to_permissions()
            .or_else(|| account.nats.default_permissions.to_permissions()),
        account: Some(account.sub.clone()),
        valid_for,
        max_subs: limit(lower(limits.subs, acc_limits.subs)),
        max_payload: limit(lower(limits.payload, acc_limits.payload)),
        name: Some(user.sub.clone()),
        no_connections: acc_limits.conn == 0,
    })
}

/// Whether the user JWT of `c` is revoked by its account as `auth` has it now (a reload
/// closes such clients with 'User Authentication Revoked').
pub fn jwt_revoked(auth: &Authorization, c: &ConnectOptions) -> bool {
    let (Some(op), Some(token)) = (&auth.operator, c.jwt.as_deref()) else {
        return false;
    };
    let Ok(user) = crate::jwt::decode_user(token) else {
        return false;
    };
    let account = if user.nats.issuer_account.is_empty() {
        &user.iss
    } else {
        &user.nats.issuer_account
    };
    op.accounts
        .get(account)
        .is_some_and(|a| crate::jwt::is_revoked(&a.nats.revocations, &user.sub, user.iat))
}

/// What deciding a CONNECT takes: nothing more, or one password comparison.
enum Candidate<'a> {
    Decided(Result<Authenticated, ()>),
    Password {
        configured: &'a str,
        given: &'a str,
        who: Authenticated,
    },
}

/// The order of nats-server: an nkey user when the client names an nkey, else the users
/// list (with `no_auth_user`), else the token or the single user.
fn candidate<'a>(
    auth: &'a Authorization,
    no_auth_user: Option<&str>,
    nonce: Option<&str>,
    c: &'a ConnectOptions,
) -> Candidate<'a> {
    if !auth.required() {
        return Candidate::Decided(Ok(Authenticated::default()));
    }
    if let (false, Some(key)) = (auth.nkeys.is_empty(), c.nkey.as_deref()) {
        let Some(user) = auth.nkeys.iter().find(|u| u.nkey == key) else {
            return Candidate::Decided(Err(()));
        };
        let signed = match (nonce, c.sig.as_deref()) {
            (Some(nonce), Some(sig)) => nonce_signed_by(key, nonce.as_bytes(), sig),
            _ => false,
        };
        return Candidate::Decided(if signed {
            Ok(Authenticated::of_nkey(user))
        } else {
            Err(())
        });
    }
    let anonymous = c.user.is_none() && c.pass.is_none() && c.auth_token.is_none();
    if let (true, Some(name)) = (anonymous, no_auth_user) {
        return Candidate::Decided(
            auth.users
                .iter()
                .find(|u| u.user == name)
                .map(Authenticated::of)
                .ok_or(()),
        );
    }
    if let Some(token) = &auth.token {
        return match &c.auth_token {
            Some(given) => Candidate::Password {
                configured: token,
                given,
                who: Authenticated::default(),
            },
            None => Candidate::Decided(Err(())),
        };
    }
    if let Some(user) = &auth.user {
        let pass = auth.password.as_deref().unwrap_or("");
        return match (&c.user, &c.pass) {
            (Some(u), Some(p)) if u == user => Candidate::Password {
                configured: pass,
                given: p,
                who: Authenticated::default(),
            },
            (Some(u), None) if u == user && pass.is_empty() => {
                Candidate::Decided(Ok(Authenticated::default()))
            }
            _ => Candidate::Decided(Err(())),
        };
    }
    let Some(name) = &c.user else {
        return Candidate::Decided(Err(()));
    };
    let Some(user) = auth.users.iter().find(|u| &u.user == name) else {
        return Candidate::Decided(Err(()));
    };
    Candidate::Password {
        configured: &user.password,
        given: c.pass.as_deref().unwrap_or(""),
        who: Authenticated::of(user),
    }
}

/// Verifies passwords against bcrypt hashes off the async runtime, a bounded number at a
/// time, and remembers the ones that matched.
///
/// The bound keeps a storm of bad logins from occupying every core (and the blocking pool):
/// the storm queues behind itself while other connections keep being served. The cache
/// holds a SHA-256 digest of (hash, password), never the password, so that a config reload
/// re-checking every connected client, or clients reconnecting with the same credentials,
/// do not pay for bcrypt again. Failures are not cached: an attacker cannot fill it.
#[derive(Debug)]
pub struct Verifier {
    permits: tokio::sync::Semaphore,
    verified: Mutex<KeyedSet<[u8; 32]>>,
}

/// Successful verifications remembered; the set is emptied when full.
const VERIFIED_MAX: usize = 4096;

impl Default for Verifier {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Verifier::with_permits((cores / 2).max(1))
    }
}

impl Verifier {
    pub fn with_permits(permits: usize) -> Self {
        Verifier {
            permits: tokio::sync::Semaphore::new(permits),
            verified: Mutex::new(keyed_set()),
        }
    }

    /// Compares a configured password (plain text or bcrypt hash) with the one a client gave.
    pub async fn password_ok(&self, configured: &str, given: &str) -> bool {
        if !is_bcrypt(configured) {
            return constant_time_eq(configured.as_bytes(), given.as_bytes());
        }
        let key = digest(configured, given);
        if self.verified.lock().contains(&key) {
            return true;
        }
        // The semaphore is never closed; without a permit, refusing is the safe answer.
        let Ok(_permit) = self.permits.acquire().await else {
            return false;
        };
        let (hash, pass) = (configured.to_owned(), given.to_owned());
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(pass, &hash).unwrap_or(false))
            .await
            .unwrap_or(false);
        if ok {
            let mut verified = self.verified.lock();
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(key);
        }
        ok
    }
}

fn digest(hash: &str, password: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((hash.len() as u64).to_be_bytes());
    h.update(hash.as_bytes());
    h.update(password.as_bytes());
    h.finalize().into()
}

fn is_bcrypt(s: &str) -> bool {
    s.starts_with("$2a$") || s.starts_with("$2b$") || s.starts_with("$2x$") || s.starts_with("$2y$")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Permissions of one connection as its own reader task checks them, with a cache.
#[derive(Debug)]
pub struct ClientPermissions {
    publish: Option<SubjectPermission>,
    subscribe: Option<SubjectPermission>,
    pub_cache: KeyedMap<Box<[u8]>, bool>,
    /// The part that publishers consult while delivering to this client.
    pub delivery: Arc<DeliveryPermissions>,
}

/// What other connections check when they deliver to a client with permissions:
/// subjects denied to its wildcard subscriptions, and reply subjects it may answer.
///
/// A config reload can change both in place (the client keeps its connection). The flags
/// let deliveries skip the locks when a rule is absent; a client without any permissions has
/// no `DeliveryPermissions` at all, so deliveries to it check nothing.
#[derive(Debug)]
pub struct DeliveryPermissions {
    has_deny: AtomicBool,
    sub_deny: RwLock<Vec<String>>,
    has_responses: AtomicBool,
    replies: Mutex<ReplyState>,
}

#[derive(Debug, Default)]
struct ReplyState {
    responses: Option<ResponsePermission>,
    /// Reply subjects the client may still answer: how many answers it sent, and since when.
    map: Replies,
}

type Replies = KeyedMap<Box<[u8]>, (usize, Instant)>;

const PUB_CACHE_MAX: usize = 512;
const REPLIES_MAX: usize = 64 * 1024;

impl ClientPermissions {
    /// The checks for permissions `p`. `delivery`, when given, is the part other connections
    /// already hold: it is updated and kept, which is how a reload changes a connected
    /// client's rules.
    pub fn with_delivery(p: Permissions, delivery: Option<Arc<DeliveryPermissions>>) -> Self {
        let mut publish = p.publish;
        // As in nats-server: allowing responses without publish rules means the client may
        // publish nothing but responses.
        if p.allow_responses.is_some() && publish.is_none() {
            publish = Some(SubjectPermission {
                allow: Vec::new(),
                deny: vec![">".to_string()],
            });
        }
        let sub_deny = p
            .subscribe
            .as_ref()
            .map(|s| s.deny.clone())
            .unwrap_or_default();
        let delivery = match delivery {
            Some(d) => {
                d.update(sub_deny, p.allow_responses);
                d
            }
            None => Arc::new(DeliveryPermissions::new(sub_deny, p.allow_responses)),
        };
        ClientPermissions {
            publish,
            subscribe: p.subscribe,
            pub_cache: keyed_map(),
            delivery,
        }
    }

    pub fn can_publish(&mut self, subj: &[u8]) -> bool {
        self.publish_allowed(subj) || self.delivery.use_reply(subj)
    }

    /// Whether the publish permissions allow `subj` for every message, leaving out reply
    /// subjects allowed by `allow_responses` (those are allowed a limited number of times
    /// each, so they are checked message by message).
    pub fn publish_allowed(&mut self, subj: &[u8]) -> bool {
        match self.pub_cache.get(subj) {
            Some(a) => *a,
            None => {
                let a = check(self.publish.as_ref(), subj);
                if self.pub_cache.len() >= PUB_CACHE_MAX {
                    self.pub_cache.clear();
                }
                self.pub_cache.insert(subj.into(), a);
                a
            }
        }
    }

    pub fn can_subscribe(&self, subj: &[u8]) -> bool {
        check(self.subscribe.as_ref(), subj)
    }
}

impl DeliveryPermissions {
    fn new(sub_deny: Vec<String>, responses: Option<ResponsePermission>) -> Self {
        DeliveryPermissions {
            has_deny: AtomicBool::new(!sub_deny.is_empty()),
            sub_deny: RwLock::new(sub_deny),
            has_responses: AtomicBool::new(responses.is_some()),
            replies: Mutex::new(ReplyState {
                responses,
                map: keyed_map(),
            }),
        }
    }

    /// Replaces the rules (a reload). Replies already recorded stay answerable while
    /// responses are still allowed.
    pub fn update(&self, sub_deny: Vec<String>, responses: Option<ResponsePermission>) {
        self.has_deny.store(!sub_deny.is_empty(), Ordering::Release);
        *self.sub_deny.write() = sub_deny;
        let mut replies = self.replies.lock();
        if responses.is_none() {
            replies.map = keyed_map();
        }
        self.has_responses
            .store(responses.is_some(), Ordering::Release);
        replies.responses = responses;
    }

    /// Whether this client needs any check at delivery time.
    pub fn is_active(&self) -> bool {
        self.has_deny.load(Ordering::Acquire) || self.has_responses.load(Ordering::Acquire)
    }

    /// True when a message on `subj` must not reach a wildcard subscription of this client
    /// because the subject is explicitly denied to it.
    pub fn denies(&self, subj: &[u8]) -> bool {
        if !self.has_deny.load(Ordering::Relaxed) {
            return false;
        }
        self.sub_deny
            .read()
            .iter()
            .any(|d| subject::matches(d.as_bytes(), subj))
    }

    /// Records that a request with reply subject `reply` was delivered to this client.
    pub fn record_reply(&self, reply: &[u8]) {
        if !self.has_responses.load(Ordering::Relaxed) {
            return;
        }
        let mut replies = self.replies.lock();
        if replies.responses.is_none() {
            return;
        }
        if replies.map.len() >= REPLIES_MAX {
            replies.prune();
        }
        replies
            .map
            .entry(reply.into())
            .or_insert((0, Instant::now()));
    }

    fn use_reply(&self, subj: &[u8]) -> bool {
        if !self.has_responses.load(Ordering::Relaxed) {
            return false;
        }
        let mut replies = self.replies.lock();
        let Some(rp) = replies.responses.clone() else {
            return false;
        };
        let Some((count, at)) = replies.map.get_mut(subj) else {
            return false;
        };
        if rp.expires > Duration::ZERO && at.elapsed() > rp.expires {
            replies.map.remove(subj);
            return false;
        }
        *count += 1;
        if rp.max_msgs > 0 && *count >= rp.max_msgs {
            replies.map.remove(subj);
        }
        true
    }
}

impl ReplyState {
    fn prune(&mut self) {
        if let Some(rp) = &self.responses {
            let ttl = rp.expires;
            if ttl > Duration::ZERO {
                self.map.retain(|_, (_, at)| at.elapsed() <= ttl);
            }
        }
        if self.map.len() >= REPLIES_MAX {
            self.map.clear();
        }
    }
}

fn check(p: Option<&SubjectPermission>, subj: &[u8]) -> bool {
    let Some(p) = p else { return true };
    let allowed =
        p.allow.is_empty() || p.allow.iter().any(|a| subject::matches(a.as_bytes(), subj));
    allowed && !p.deny.iter().any(|d| subject::matches(d.as_bytes(), subj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn nonce_signatures_are_checked_in_both_base64_flavours() {
        let user = nkeys::KeyPair::new_user();
        let nonce = new_nonce();
        assert_eq!(nonce.len(), 15);
        let sig = user.sign(nonce.as_bytes()).expect("sign");
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&sig);
        let std = base64::engine::general_purpose::STANDARD.encode(&sig);
        let public = user.public_key();
        assert!(nonce_signed_by(&public, nonce.as_bytes(), &url));
        assert!(nonce_signed_by(&public, nonce.as_bytes(), &std));
        assert!(!nonce_signed_by(&public, b"another nonce", &url));
        let other = nkeys::KeyPair::new_user().public_key();
        assert!(!nonce_signed_by(&other, nonce.as_bytes(), &url));
        assert!(!nonce_signed_by(&public, nonce.as_bytes(), "not base64!"));
        assert!(!nonce_signed_by("UNOTAKEY", nonce.as_bytes(), &url));
    }

    #[tokio::test]
    async fn nkey_users_need_the_signed_nonce() {
        let kp = nkeys::KeyPair::new_user();
        let auth = Authorization {
            nkeys: vec![crate::options::NkeyUser {
                nkey: kp.public_key(),
                permissions: None,
                account: Some("A".into()),
            }],
            ..Authorization::default()
        };
        let v = Verifier::with_permits(1);
        let nonce = new_nonce();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(kp.sign(nonce.as_bytes()).expect("sign"));
        let mut c = ConnectOptions {
            nkey: Some(kp.public_key()),
            sig: Some(sig),
            ..ConnectOptions::default()
        };
        let with = |nonce| Origin {
            nonce,
            ..Origin::PLAIN
        };
        let who = authenticate(&v, &auth, None, with(Some(&nonce)), &c).await;
        assert_eq!(who.map(|w| w.account), Ok(Some("A".into())));
        // No nonce sent (none was required when the client connected), or another nonce.
        assert!(authenticate(&v, &auth, None, Origin::PLAIN, &c)
            .await
            .is_err());
        assert!(
            authenticate(&v, &auth, None, with(Some("xxxxxxxxxxxxxxx")), &c)
                .await
                .is_err()
        );
        c.sig = None;
        assert!(authenticate(&v, &auth, None, with(Some(&nonce)), &c)
            .await
            .is_err());
        c.nkey = None;
        assert!(authenticate(&v, &auth, None, with(Some(&nonce)), &c)
            .await
            .is_err());
    }

    #[tokio::test]
    async fn bcrypt_checks_run_off_the_runtime_and_successes_are_remembered() {
        let v = Verifier::with_permits(1);
        let hash = bcrypt::hash("right", 4).expect("hash");
        assert!(!v.password_ok(&hash, "wrong").await);
        assert!(v.verified.lock().is_empty(), "failures are not cached");
        assert!(v.password_ok(&hash, "right").await);
        assert!(v.verified.lock().contains(&digest(&hash, "right")));
        // A changed hash for the same password is verified again, not taken from the cache.
        let other = bcrypt::hash("right", 4).expect("hash");
        assert!(!v.verified.lock().contains(&digest(&other, "right")));
        assert!(v.password_ok("plain", "plain").await);
        assert!(!v.password_ok("plain", "plai").await);
    }
}
