//! Exports and imports between accounts, as nats-server has them.
//!
//! - **Stream imports** work by shadow subscriptions: when a subscriber of an importing
//!   account subscribes inside an imported subject range (or around it), the same
//!   subscriber gets a second subscription in the exporting account's sublist, on the
//!   exporter's subject, with the mapping back (`prefix`, or a literal `to`). A message
//!   published in the exporter reaches it like any of the exporter's own subscribers,
//!   locally or over a route (the shadow is announced in the exporter's account), queue
//!   groups included; the router rewrites the subject as it delivers.
//! - **Service imports** are a [`Subscriber::Service`] in the importing account on the
//!   local subject. A request published there (not one that came over a route: the
//!   server that received it from its client ran the import) is published again in the
//!   exporting account, on the exported subject, with its reply subject replaced by one
//!   under the exporter's response prefix `_R_.<random>.`; a [`Subscriber::Responses`] on
//!   `_R_.<random>.>` (announced to routes, so remote responders' replies come back here)
//!   maps each reply to the requester's own reply subject in the importing account: once
//!   for a `singleton` export, until the response threshold passes for `stream` and
//!   `chunked` ones.
//!
//! Imports are checked against exports when the configuration is loaded
//! (`options::check_import`); [`apply`] builds them at start and again on each reload.
//!
//! [`Subscriber::Service`]: super::Subscriber::Service
//! [`Subscriber::Responses`]: super::Subscriber::Responses

use std::borrow::Cow;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use midge_proto::subject;
use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use super::router;
use super::{Account, Subscriber, Subscription};
use crate::options::{AccountOptions, ExportKind, Import, Options, ResponseType};
use crate::server::ServerInner;

/// How a subject of the exporting account becomes one of the importing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SubjectMap {
    /// The same subject.
    Same,
    /// `prefix.` + the subject.
    Prefix(Box<[u8]>),
    /// Always this (literal) subject.
    Literal(Box<[u8]>),
}

impl SubjectMap {
    pub fn apply<'a>(&self, subj: &'a [u8]) -> Cow<'a, [u8]> {
        match self {
            SubjectMap::Same => Cow::Borrowed(subj),
            SubjectMap::Prefix(p) => {
                let mut v = Vec::with_capacity(p.len() + subj.len());
                v.extend_from_slice(p);
                v.extend_from_slice(subj);
                Cow::Owned(v)
            }
            SubjectMap::Literal(to) => Cow::Owned(to.to_vec()),
        }
    }
}

/// What a shadow subscription stands for.
#[derive(Debug)]
pub(crate) struct Shadow {
    /// The subscription in the importing account (its counters and auto-unsubscribe).
    pub parent: Weak<Subscription>,
    pub map: Arc<SubjectMap>,
}

/// One stream import, resolved.
#[derive(Debug)]
pub(crate) struct StreamImport {
    exporter: Arc<Account>,
    /// The subject in the exporting account.
    from: Box<[u8]>,
    /// The subject in the importing account.
    local: Box<[u8]>,
    map: Arc<SubjectMap>,
}

/// A service import, as the subscriber in the importing account.
#[derive(Debug)]
pub(crate) struct ServiceImport {
    pub importer: Weak<Account>,
    pub exporter: Arc<Account>,
    /// The subject in the exporting account; `None`: the request's own subject.
    pub subject: Option<Box<[u8]>>,
    pub response_type: ResponseType,
    pub threshold: Duration,
    pub responses: Arc<Responses>,
}

/// A reply on its way back to an importing account.
#[derive(Debug)]
struct Pending {
    importer: Weak<Account>,
    reply: Box<[u8]>,
    singleton: bool,
    expires: Instant,
}

/// Bound on reply mappings waiting at once per exporting account; past it, requests go on
/// without a reply subject (their requesters time out) rather than growing memory.
const MAX_PENDING_RESPONSES: usize = 1_000_000;

/// The response subjects of an exporting account.
#[derive(Debug)]
pub(crate) struct Responses {
    /// `_R_.<random>.`
    prefix: Box<[u8]>,
    pending: Mutex<FxHashMap<Box<[u8]>, Pending>>,
    inserts: std::sync::atomic::AtomicU64,
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

impl Responses {
    fn new() -> Responses {
        Responses {
            prefix: format!("_R_.{}.", random_token(6)).into_bytes().into(),
            pending: Mutex::new(FxHashMap::default()),
            inserts: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The wildcard the exporter's response subscription listens on.
    fn wildcard(&self) -> Vec<u8> {
        let mut w = self.prefix.to_vec();
        w.push(b'>');
        w
    }

    /// A reply subject in the exporting account standing for `reply` in `importer`.
    pub fn register(
        &self,
        importer: Weak<Account>,
        reply: &[u8],
        response_type: ResponseType,
        threshold: Duration,
    ) -> Option<Vec<u8>> {
        let token = random_token(10);
        let now = Instant::now();
        let mut pending = self.pending.lock();
        // Stale mappings (requests nobody answered) are swept now and then.
        let n = self
            .inserts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % 1024 == 1023 {
            pending.retain(|_, p| p.expires > now);
        }
        if pending.len() >= MAX_PENDING_RESPONSES {
            return None;
        }
        pending.insert(
            token.as_bytes().into(),
            Pending {
                importer,
                reply: reply.into(),
                singleton: response_type == ResponseType::Singleton,
                expires: now + threshold,
            },
        );
        let mut subject = self.prefix.to_vec();
        subject.extend_from_slice(token.as_bytes());
        Some(subject)
    }

    /// Where a reply published on `subj` goes: the importing account and its reply subject.
    pub fn resolve(&self, subj: &[u8]) -> Option<(Arc<Account>, Box<[u8]>)> {
        let token = subj.strip_prefix(&*self.prefix)?;
        let mut pending = self.pending.lock();
        let p = pending.get(token)?;
        if p.expires <= Instant::now() {
            pending.remove(token);
            return None;
        }
        let importer = p.importer.upgrade()?;
        let reply = p.reply.clone();
        if p.singleton {
            pending.remove(token);
        }
        Some((importer, reply))
    }
}

/// An account's import state.
#[derive(Debug, Default)]
pub(crate) struct AccountImports {
    /// The account's configuration as last applied, to skip unchanged accounts on reload.
    applied: Mutex<Option<(Vec<Import>, Vec<crate::options::Export>)>>,
    streams: RwLock<Arc<[StreamImport]>>,
    /// The service import subscriptions in this (importing) account.
    services: Mutex<Vec<Arc<Subscription>>>,
    /// Shadows of this account's subscriptions, by the parent's address.
    shadows: Mutex<FxHashMap<usize, Vec<Arc<Subscription>>>>,
    /// Response subjects, once this account exports a service someone imports.
    responses: OnceLock<Arc<Responses>>,
    /// The imports from the system account every account has (see [`SYSTEM_IMPORTS`]).
    system: Mutex<Vec<Arc<Subscription>>>,
}

impl AccountImports {
    pub fn has_streams(&self) -> bool {
        !self.streams.read().is_empty()
    }

    /// The imports from the system account this account got (its local subject, the
    /// system account's subject), for `/accountz`.
    pub fn system_imports(&self) -> Vec<(String, String)> {
        self.system
            .lock()
            .iter()
            .filter_map(|sub| match &sub.owner {
                Subscriber::Service(si) => Some((
                    String::from_utf8_lossy(&sub.subject).into_owned(),
                    String::from_utf8_lossy(si.subject.as_deref().unwrap_or(&sub.subject))
                        .into_owned(),
                )),
                _ => None,
            })
            .collect()
    }
}

/// Builds (or rebuilds, on reload) every account's imports and limits from `opts`.
pub(crate) fn apply(srv: &ServerInner, opts: &Options) {
    for acc_opts in &opts.accounts {
        let Some(acc) = srv.accounts.get(&acc_opts.name) else {
            continue;
        };
        *acc.limits.write() = acc_opts.limits;
        let config = (acc_opts.imports.clone(), acc_opts.exports.clone());
        {
            let mut applied = acc.imports.applied.lock();
            if applied.as_ref() == Some(&config) {
                continue;
            }
            *applied = Some(config);
        }
        rebuild(srv, &acc, acc_opts, &opts.accounts);
    }
    add_system_imports(srv, opts);
}

/// What every account but the system account imports from it, as nats-server sets up:
/// (subject in the account, endpoint of `$SYS.REQ.ACCOUNT.<account>.<endpoint>`). The
/// account's own name goes into the exported subject, so an account sees only itself.
const SYSTEM_IMPORTS: [(&str, &str); 3] = [
    ("$SYS.REQ.SERVER.PING.CONNZ", "CONNZ"),
    ("$SYS.REQ.ACCOUNT.PING.CONNZ", "CONNZ"),
    ("$SYS.REQ.ACCOUNT.PING.STATZ", "STATZ"),
];

/// Gives each account without them the [`SYSTEM_IMPORTS`] (once: they never change), as
/// `stream` responses since every server of a cluster answers. An import the account's
/// configuration makes on the same subject wins, as in nats-server.
fn add_system_imports(srv: &ServerInner, opts: &Options) {
    let Some(system) = srv.accounts.system().cloned() else {
        return;
    };
    for acc in srv.accounts.all() {
        if Arc::ptr_eq(&acc, &system) {
            continue;
        }
        let mut made = acc.imports.system.lock();
        if !made.is_empty() {
            continue;
        }
        let configured: Vec<String> = opts
            .accounts
            .iter()
            .filter(|a| *a.name == *acc.name)
            .flat_map(|a| a.imports.iter())
            .filter(|i| i.kind == ExportKind::Service)
            .map(Import::local_subject)
            .collect();
        for (local, endpoint) in SYSTEM_IMPORTS {
            if configured.iter().any(|c| c == local) {
                continue;
            }
            let si = ServiceImport {
                importer: Arc::downgrade(&acc),
                exporter: system.clone(),
                subject: Some(
                    format!("$SYS.REQ.ACCOUNT.{}.{endpoint}", acc.name)
                        .into_bytes()
                        .into(),
                ),
                response_type: ResponseType::Stream,
                threshold: crate::options::DEFAULT_RESPONSE_THRESHOLD,
                responses: responses_of(srv, &system),
            };
            let sub = Subscription::new(
                Subscriber::Service(Arc::new(si)),
                acc.clone(),
                local.as_bytes(),
                None,
                b"",
            );
            if router::subscribe(srv, &sub).is_ok() {
                made.push(sub);
            }
        }
    }
}

fn rebuild(
    srv: &ServerInner,
    acc: &Arc<Account>,
    acc_opts: &AccountOptions,
    all: &[AccountOptions],
) {
    // Service imports: new subscriptions replace the old ones.
    let old: Vec<_> = acc.imports.services.lock().drain(..).collect();
    for sub in old {
        router::unsubscribe(srv, &sub);
    }
    let mut streams = Vec::new();
    for import in &acc_opts.imports {
        let Some(exporter) = srv.accounts.get(&import.account) else {
            continue;
        };
        match import.kind {
            ExportKind::Stream => {
                let map = match (&import.prefix, &import.to) {
                    (Some(p), _) => {
                        let p = p.strip_suffix('.').unwrap_or(p);
                        SubjectMap::Prefix(format!("{p}.").into_bytes().into())
                    }
                    (None, Some(to)) if to != &import.subject => {
                        SubjectMap::Literal(to.as_bytes().into())
                    }
                    _ => SubjectMap::Same,
                };
                streams.push(StreamImport {
                    exporter,
                    from: import.subject.as_bytes().into(),
                    local: import.local_subject().into_bytes().into(),
                    map: Arc::new(map),
                });
            }
            ExportKind::Service => {
                let export = all.iter().find(|a| a.name == import.account).and_then(|a| {
                    a.exports.iter().find(|e| {
                        e.kind == ExportKind::Service
                            && subject::subset_match(
                                import.subject.as_bytes(),
                                e.subject.as_bytes(),
                            )
                    })
                });
                let (response_type, threshold) = export
                    .map(|e| (e.response_type, e.response_threshold))
                    .unwrap_or((
                        ResponseType::Singleton,
                        crate::options::DEFAULT_RESPONSE_THRESHOLD,
                    ));
                let responses = responses_of(srv, &exporter);
                let local = import.local_subject();
                let si = ServiceImport {
                    importer: Arc::downgrade(acc),
                    exporter,
                    subject: (local != import.subject).then(|| import.subject.as_bytes().into()),
                    response_type,
                    threshold,
                    responses,
                };
                let sub = Subscription::new(
                    Subscriber::Service(Arc::new(si)),
                    acc.clone(),
                    local.as_bytes(),
                    None,
                    b"",
                );
                if router::subscribe(srv, &sub).is_ok() {
                    acc.imports.services.lock().push(sub);
                }
            }
        }
    }
    *acc.imports.streams.write() = streams.into();
    // Subscriptions made before (a reload) get the shadows the new imports call for.
    let clients: Vec<_> = srv.clients.lock().values().cloned().collect();
    for c in clients {
        if *c.account.lock() != acc.name {
            continue;
        }
        let subs: Vec<_> = c.subs.lock().values().cloned().collect();
        for sub in subs {
            remove_shadows(srv, &sub);
            add_shadows(srv, &sub);
        }
    }
}

/// The response subjects of an exporting account, created (and subscribed) on first use.
fn responses_of(srv: &ServerInner, exporter: &Arc<Account>) -> Arc<Responses> {
    exporter
        .imports
        .responses
        .get_or_init(|| {
            let r = Arc::new(Responses::new());
            let sub = Subscription::new(
                Subscriber::Responses(r.clone()),
                exporter.clone(),
                &r.wildcard(),
                None,
                b"",
            );
            let _ = router::subscribe(srv, &sub);
            r
        })
        .clone()
}

/// Gives `sub` (of an importing account) its shadows in the exporting accounts.
pub(crate) fn add_shadows(srv: &ServerInner, sub: &Arc<Subscription>) {
    if sub.shadow.is_some()
        || !matches!(
            sub.owner,
            Subscriber::Client(_) | Subscriber::Internal(_) | Subscriber::Stream(_)
        )
        || !sub.account.imports.has_streams()
    {
        return;
    }
    let streams = sub.account.imports.streams.read().clone();
    let mut shadows = Vec::new();
    for im in streams.iter() {
        let on: Cow<'_, [u8]> = if subject::subset_match(&im.local, &sub.subject) {
            // The subscription covers the whole import.
            Cow::Borrowed(&im.from)
        } else if subject::subset_match(&sub.subject, &im.local) {
            // The subscription is a part of the import: the same part of the export.
            match &*im.map {
                SubjectMap::Same => Cow::Borrowed(&sub.subject),
                SubjectMap::Literal(_) => Cow::Borrowed(&im.from),
                SubjectMap::Prefix(p) => match sub.subject.strip_prefix(&**p) {
                    Some(rest) => Cow::Borrowed(rest),
                    None => continue,
                },
            }
        } else {
            continue;
        };
        let shadow = Subscription::new_shadow(
            sub,
            im.exporter.clone(),
            &on,
            Shadow {
                parent: Arc::downgrade(sub),
                map: im.map.clone(),
            },
        );
        if router::subscribe(srv, &shadow).is_ok() {
            shadows.push(shadow);
        }
    }
    if !shadows.is_empty() {
        sub.account
            .imports
            .shadows
            .lock()
            .insert(Arc::as_ptr(sub) as usize, shadows);
    }
}

/// Takes `sub`'s shadows out of the exporting accounts.
pub(crate) fn remove_shadows(srv: &ServerInner, sub: &Arc<Subscription>) {
    if sub.shadow.is_some() {
        return;
    }
    let shadows = {
        let mut map = sub.account.imports.shadows.lock();
        if map.is_empty() {
            return;
        }
        map.remove(&(Arc::as_ptr(sub) as usize))
    };
    for s in shadows.into_iter().flatten() {
        router::remove_from_account(srv, &s);
    }
}
