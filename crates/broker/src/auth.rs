//! Client authentication and per-user publish/subscribe permissions.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use midge_proto::subject;
use rustc_hash::FxHashMap;

use crate::info::ConnectOptions;
use crate::options::{Authorization, Permissions, ResponsePermission, SubjectPermission};

/// Who a client turned out to be: its permissions (None = everything allowed) and the
/// account it is bound to (None = the global account).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Authenticated {
    pub permissions: Option<Permissions>,
    pub account: Option<String>,
}

/// Checks the credentials in `CONNECT` against the configured authorization. A client that
/// gives no credentials at all is `no_auth_user` when one is configured (as nats-server).
/// `Err(())` means the client must be rejected with 'Authorization Violation'.
#[allow(clippy::result_unit_err)]
pub fn authenticate(
    auth: &Authorization,
    no_auth_user: Option<&str>,
    c: &ConnectOptions,
) -> Result<Authenticated, ()> {
    if !auth.required() {
        return Ok(Authenticated::default());
    }
    let anonymous = c.user.is_none() && c.pass.is_none() && c.auth_token.is_none();
    if let (true, Some(name)) = (anonymous, no_auth_user) {
        return match auth.users.iter().find(|u| u.user == name) {
            Some(user) => Ok(user_identity(user)),
            None => Err(()),
        };
    }
    if let Some(token) = &auth.token {
        return match &c.auth_token {
            Some(given) if password_ok(token, given) => Ok(Authenticated::default()),
            _ => Err(()),
        };
    }
    if let Some(user) = &auth.user {
        let pass = auth.password.as_deref().unwrap_or("");
        return match (&c.user, &c.pass) {
            (Some(u), Some(p)) if u == user && password_ok(pass, p) => Ok(Authenticated::default()),
            (Some(u), None) if u == user && pass.is_empty() => Ok(Authenticated::default()),
            _ => Err(()),
        };
    }
    let Some(name) = &c.user else { return Err(()) };
    let Some(user) = auth.users.iter().find(|u| &u.user == name) else {
        return Err(());
    };
    let given = c.pass.as_deref().unwrap_or("");
    if !password_ok(&user.password, given) {
        return Err(());
    }
    Ok(user_identity(user))
}

fn user_identity(user: &crate::options::User) -> Authenticated {
    Authenticated {
        permissions: user.permissions.clone(),
        account: user.account.clone(),
    }
}

/// Compares a configured password (plain text or bcrypt hash) with the one a client gave.
fn password_ok(configured: &str, given: &str) -> bool {
    if is_bcrypt(configured) {
        bcrypt::verify(given, configured).unwrap_or(false)
    } else {
        constant_time_eq(configured.as_bytes(), given.as_bytes())
    }
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
    pub_cache: FxHashMap<Box<[u8]>, bool>,
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

type Replies = FxHashMap<Box<[u8]>, (usize, Instant)>;

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
            pub_cache: FxHashMap::default(),
            delivery,
        }
    }

    pub fn can_publish(&mut self, subj: &[u8]) -> bool {
        let allowed = match self.pub_cache.get(subj) {
            Some(a) => *a,
            None => {
                let a = check(self.publish.as_ref(), subj);
                if self.pub_cache.len() >= PUB_CACHE_MAX {
                    self.pub_cache.clear();
                }
                self.pub_cache.insert(subj.into(), a);
                a
            }
        };
        allowed || self.delivery.use_reply(subj)
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
                map: FxHashMap::default(),
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
            replies.map = FxHashMap::default();
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
