//! Client authentication and per-user publish/subscribe permissions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use midge_proto::subject;
use rustc_hash::FxHashMap;

use crate::info::ConnectOptions;
use crate::options::{Authorization, Permissions, ResponsePermission, SubjectPermission};

/// Checks the credentials in `CONNECT` against the configured authorization.
/// Returns the permissions of the authenticated user (None = everything allowed),
/// or `Err(())` when the client must be rejected with 'Authorization Violation'.
#[allow(clippy::result_unit_err)]
pub fn authenticate(auth: &Authorization, c: &ConnectOptions) -> Result<Option<Permissions>, ()> {
    if !auth.required() {
        return Ok(None);
    }
    if let Some(token) = &auth.token {
        return match &c.auth_token {
            Some(given) if password_ok(token, given) => Ok(None),
            _ => Err(()),
        };
    }
    if let Some(user) = &auth.user {
        let pass = auth.password.as_deref().unwrap_or("");
        return match (&c.user, &c.pass) {
            (Some(u), Some(p)) if u == user && password_ok(pass, p) => Ok(None),
            (Some(u), None) if u == user && pass.is_empty() => Ok(None),
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
    Ok(user.permissions.clone())
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
#[derive(Debug)]
pub struct DeliveryPermissions {
    sub_deny: Vec<String>,
    responses: Option<ResponsePermission>,
    replies: Mutex<Replies>,
}

/// Reply subjects a client may still answer: how many answers it sent, and since when.
type Replies = FxHashMap<Box<[u8]>, (usize, Instant)>;

const PUB_CACHE_MAX: usize = 512;
const REPLIES_MAX: usize = 64 * 1024;

impl ClientPermissions {
    pub fn new(p: Permissions) -> Self {
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
        ClientPermissions {
            publish,
            subscribe: p.subscribe,
            pub_cache: FxHashMap::default(),
            delivery: Arc::new(DeliveryPermissions {
                sub_deny,
                responses: p.allow_responses,
                replies: Mutex::new(FxHashMap::default()),
            }),
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
    /// Whether this client needs any check at delivery time.
    pub fn is_active(&self) -> bool {
        !self.sub_deny.is_empty() || self.responses.is_some()
    }

    /// True when a message on `subj` must not reach a wildcard subscription of this client
    /// because the subject is explicitly denied to it.
    pub fn denies(&self, subj: &[u8]) -> bool {
        self.sub_deny
            .iter()
            .any(|d| subject::matches(d.as_bytes(), subj))
    }

    /// Records that a request with reply subject `reply` was delivered to this client.
    pub fn record_reply(&self, reply: &[u8]) {
        if self.responses.is_none() {
            return;
        }
        let mut replies = self.replies.lock();
        if replies.len() >= REPLIES_MAX {
            self.prune(&mut replies);
        }
        replies.entry(reply.into()).or_insert((0, Instant::now()));
    }

    fn use_reply(&self, subj: &[u8]) -> bool {
        let Some(rp) = &self.responses else {
            return false;
        };
        let mut replies = self.replies.lock();
        let Some((count, at)) = replies.get_mut(subj) else {
            return false;
        };
        if rp.expires > Duration::ZERO && at.elapsed() > rp.expires {
            replies.remove(subj);
            return false;
        }
        *count += 1;
        if rp.max_msgs > 0 && *count >= rp.max_msgs {
            replies.remove(subj);
        }
        true
    }

    fn prune(&self, replies: &mut Replies) {
        if let Some(rp) = &self.responses {
            let ttl = rp.expires;
            if ttl > Duration::ZERO {
                replies.retain(|_, (_, at)| at.elapsed() <= ttl);
            }
        }
        if replies.len() >= REPLIES_MAX {
            replies.clear();
        }
    }
}

fn check(p: Option<&SubjectPermission>, subj: &[u8]) -> bool {
    let Some(p) = p else { return true };
    let allowed =
        p.allow.is_empty() || p.allow.iter().any(|a| subject::matches(a.as_bytes(), subj));
    allowed && !p.deny.iter().any(|d| subject::matches(d.as_bytes(), subj))
}
