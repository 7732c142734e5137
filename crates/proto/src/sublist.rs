//! The subscription trie: which subscriptions a published subject reaches.
//!
//! Subscriptions are stored by subject token: each level of the trie maps a literal token
//! to a node and has its own `*` and `>` nodes, so a match walks one level per token and
//! only branches where a wildcard subscription actually exists. A node keeps plain
//! subscriptions apart from queue subscriptions, the latter grouped by queue name, because
//! a message goes to every plain subscriber but to one member of each group.
//!
//! Publishers tend to reuse a small set of subjects, so results are kept in a bounded
//! cache keyed by the published subject. A change to the trie touches only the cached
//! subjects the changed subscription matches: an insert adds the subscription to those
//! results, a remove drops them, and every other entry stays warm.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

/// Cache size used by [`Sublist::new`], as in nats-server.
const DEFAULT_CACHE_SIZE: usize = 1024;

/// Why a subscription could not be inserted or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SublistError {
    /// Empty subject or token, whitespace, a wildcard inside a token, `>` not last, or an
    /// empty or whitespace-bearing queue name.
    #[error("invalid subject")]
    InvalidSubject,
    /// No such subscription on that subject and queue.
    #[error("subscription not found")]
    NotFound,
}

/// The subscriptions a published subject reaches.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchResult<T> {
    /// Plain subscribers: each one gets the message.
    pub psubs: Vec<T>,
    /// Queue groups, one entry per queue name: one member of each gets the message.
    pub qsubs: Vec<QueueGroup<T>>,
}

/// The members of one queue group that match a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueGroup<T> {
    pub name: Box<[u8]>,
    pub subs: Vec<T>,
}

/// Counters with the meaning of nats-server's `/subsz`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SublistStats {
    pub num_subscriptions: u32,
    pub num_cache: u32,
    pub num_inserts: u64,
    pub num_removes: u64,
    pub num_matches: u64,
    /// Cache hits divided by `num_matches`.
    pub cache_hit_rate: f64,
    /// Largest `psubs + queue groups` among the cached results.
    pub max_fanout: u32,
    /// Mean `psubs + queue groups` over the cached results.
    pub avg_fanout: f64,
}

/// A subscription trie with a bounded match cache, shared by all connections.
///
/// Duplicate inserts of an equal `T` on the same subject and queue are ignored: the
/// subscription is stored once, so a message is never delivered twice to it, and a single
/// `remove` takes it out.
pub struct Sublist<T> {
    inner: RwLock<Inner<T>>,
    cache_size: usize,
    // Bumped under the write lock, so a reader holding the read lock sees a stable value.
    generation: AtomicU64,
    matches: AtomicU64,
    // Misses rather than hits are counted so that a cache hit costs one atomic add.
    cache_misses: AtomicU64,
    inserts: AtomicU64,
    removes: AtomicU64,
}

struct Inner<T> {
    root: Level<T>,
    cache: HashMap<Box<[u8]>, Arc<MatchResult<T>>>,
    count: usize,
}

struct Level<T> {
    literals: HashMap<Box<[u8]>, Node<T>>,
    pwc: Option<Box<Node<T>>>,
    fwc: Option<Box<Node<T>>>,
}

struct Node<T> {
    next: Option<Box<Level<T>>>,
    psubs: Vec<T>,
    qsubs: Vec<QueueGroup<T>>,
}

#[derive(Clone, Copy)]
enum Token<'a> {
    Literal(&'a [u8]),
    Pwc,
    Fwc,
}

impl<T> Default for MatchResult<T> {
    fn default() -> Self {
        Self {
            psubs: Vec::new(),
            qsubs: Vec::new(),
        }
    }
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Self {
            literals: HashMap::new(),
            pwc: None,
            fwc: None,
        }
    }
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            next: None,
            psubs: Vec::new(),
            qsubs: Vec::new(),
        }
    }
}

impl<T: Clone + PartialEq> Default for Sublist<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Sublist<T> {
    // The trie can hold millions of subscriptions: print only its size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.inner.read();
        f.debug_struct("Sublist")
            .field("count", &inner.count)
            .field("cached", &inner.cache.len())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T: Clone + PartialEq> Sublist<T> {
    pub fn new() -> Self {
        Self::with_cache_size(DEFAULT_CACHE_SIZE)
    }

    /// A sublist caching at most `n` match results; 0 disables the cache.
    pub fn with_cache_size(n: usize) -> Self {
        Self {
            inner: RwLock::new(Inner {
                root: Level::default(),
                cache: HashMap::new(),
                count: 0,
            }),
            cache_size: n,
            generation: AtomicU64::new(0),
            matches: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            removes: AtomicU64::new(0),
        }
    }

    pub fn insert(&self, subject: &[u8], queue: Option<&[u8]>, sub: T) -> Result<(), SublistError> {
        let tokens = parse_pattern(subject)?;
        validate_queue(queue)?;

        let mut guard = self.inner.write();
        let inner = &mut *guard;
        let node = inner
            .root
            .node_for_insert(&tokens)
            .ok_or(SublistError::InvalidSubject)?;
        if !node.add(queue, sub.clone()) {
            return Ok(());
        }
        inner.count += 1;
        self.inserts.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);

        // Cached results that this subscription matches gain it; the rest are still exact.
        for (subject, result) in inner.cache.iter_mut() {
            if pattern_matches(&tokens, subject) {
                let mut updated = MatchResult::clone(result);
                updated.add(queue, std::slice::from_ref(&sub));
                *result = Arc::new(updated);
            }
        }
        Ok(())
    }

    /// Removes one subscription; [`SublistError::NotFound`] if it is not stored there.
    pub fn remove(
        &self,
        subject: &[u8],
        queue: Option<&[u8]>,
        sub: &T,
    ) -> Result<(), SublistError> {
        let tokens = parse_pattern(subject)?;
        validate_queue(queue)?;

        let mut guard = self.inner.write();
        let inner = &mut *guard;
        if !inner.root.remove(&tokens, queue, sub) {
            return Err(SublistError::NotFound);
        }
        inner.count -= 1;
        self.removes.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);

        // Dropping is cheaper than rebuilding a result without the subscription, and the
        // next publish on that subject refills it.
        inner
            .cache
            .retain(|subject, _| !pattern_matches(&tokens, subject));
        Ok(())
    }

    /// The subscriptions a literal publish subject reaches. A subject with an empty token
    /// reaches nobody.
    pub fn matches(&self, subject: &[u8]) -> Arc<MatchResult<T>> {
        self.matches.fetch_add(1, Ordering::Relaxed);
        let inner = self.inner.read();
        if let Some(result) = inner.cache.get(subject) {
            return Arc::clone(result);
        }
        self.cache_misses.fetch_add(1, Ordering::Relaxed);
        if !is_literal_subject_shape(subject) {
            return Arc::new(MatchResult::default());
        }
        let mut result = MatchResult::default();
        inner.root.collect(subject, &mut result);
        let result = Arc::new(result);
        if self.cache_size == 0 {
            return result;
        }

        // The match ran under the read lock so concurrent publishers are not serialised;
        // it may only be cached if no insert or remove happened before the write lock.
        let seen = self.generation.load(Ordering::Acquire);
        drop(inner);
        let mut inner = self.inner.write();
        if self.generation.load(Ordering::Acquire) == seen {
            inner.cache.insert(subject.into(), Arc::clone(&result));
            if inner.cache.len() > self.cache_size {
                // Evicting a quarter at once keeps the sweep, a full scan, off most misses.
                // Hash order is unrelated to how hot a subject is, so this is a random pick.
                let keep = self.cache_size - self.cache_size / 4;
                let mut excess = inner.cache.len() - keep;
                inner.cache.retain(|_, _| {
                    if excess == 0 {
                        return true;
                    }
                    excess -= 1;
                    false
                });
            }
        }
        result
    }

    /// Changes whenever a subscription is inserted or removed (an ignored duplicate insert
    /// changes nothing), so a cached [`MatchResult`] is current while this is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Number of subscriptions stored.
    pub fn count(&self) -> usize {
        self.inner.read().count
    }

    pub fn stats(&self) -> SublistStats {
        let inner = self.inner.read();
        let num_matches = self.matches.load(Ordering::Relaxed);
        // Read after `matches`: a concurrent miss may count its miss first, never the
        // reverse, so hits cannot go negative.
        let misses = self.cache_misses.load(Ordering::Relaxed).min(num_matches);
        let cache_hit_rate = if num_matches > 0 {
            (num_matches - misses) as f64 / num_matches as f64
        } else {
            0.0
        };
        let (mut total, mut max) = (0usize, 0usize);
        for result in inner.cache.values() {
            let fanout = result.psubs.len() + result.qsubs.len();
            total += fanout;
            max = max.max(fanout);
        }
        let avg_fanout = if total > 0 {
            total as f64 / inner.cache.len() as f64
        } else {
            0.0
        };
        SublistStats {
            num_subscriptions: saturate_u32(inner.count),
            num_cache: saturate_u32(inner.cache.len()),
            num_inserts: self.inserts.load(Ordering::Relaxed),
            num_removes: self.removes.load(Ordering::Relaxed),
            num_matches,
            cache_hit_rate,
            max_fanout: saturate_u32(max),
            avg_fanout,
        }
    }

    /// Whether a publish on `subject` would reach anyone, without building the result.
    pub fn has_interest(&self, subject: &[u8]) -> bool {
        let inner = self.inner.read();
        if let Some(result) = inner.cache.get(subject) {
            return !result.is_empty();
        }
        is_literal_subject_shape(subject) && inner.root.has_interest(subject)
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.inner.read().root.node_count()
    }
}

impl<T: Clone + PartialEq> MatchResult<T> {
    fn is_empty(&self) -> bool {
        self.psubs.is_empty() && self.qsubs.is_empty()
    }

    fn add(&mut self, queue: Option<&[u8]>, subs: &[T]) {
        match queue {
            None => self.psubs.extend_from_slice(subs),
            // Groups of the same name from different nodes (`foo.*` and `foo.bar`) are one
            // group: the message still goes to only one of their members.
            Some(name) => match self.qsubs.iter_mut().find(|g| &*g.name == name) {
                Some(group) => group.subs.extend_from_slice(subs),
                None => self.qsubs.push(QueueGroup {
                    name: name.into(),
                    subs: subs.to_vec(),
                }),
            },
        }
    }

    fn add_node(&mut self, node: &Node<T>) {
        self.psubs.extend_from_slice(&node.psubs);
        for group in &node.qsubs {
            self.add(Some(&group.name), &group.subs);
        }
    }
}

impl<T: Clone + PartialEq> Level<T> {
    fn is_empty(&self) -> bool {
        self.literals.is_empty() && self.pwc.is_none() && self.fwc.is_none()
    }

    fn child(&mut self, token: Token<'_>) -> &mut Node<T> {
        match token {
            Token::Literal(t) => self.literals.entry(t.into()).or_default(),
            Token::Pwc => self.pwc.get_or_insert_with(Box::default),
            Token::Fwc => self.fwc.get_or_insert_with(Box::default),
        }
    }

    /// The node for `tokens`, created with the path to it if missing; `None` for no tokens.
    fn node_for_insert(&mut self, tokens: &[Token<'_>]) -> Option<&mut Node<T>> {
        let (last, path) = tokens.split_last()?;
        let mut level = self;
        for token in path {
            level = level.child(*token).next.get_or_insert_with(Box::default);
        }
        Some(level.child(*last))
    }

    /// Removes `sub` below this level and prunes the nodes left empty on the way back up.
    fn remove(&mut self, tokens: &[Token<'_>], queue: Option<&[u8]>, sub: &T) -> bool {
        let Some((token, tail)) = tokens.split_first() else {
            return false;
        };
        let node = match *token {
            Token::Literal(t) => self.literals.get_mut(t),
            Token::Pwc => self.pwc.as_deref_mut(),
            Token::Fwc => self.fwc.as_deref_mut(),
        };
        let Some(node) = node else {
            return false;
        };
        let found = if tail.is_empty() {
            node.remove(queue, sub)
        } else {
            match node.next.as_deref_mut() {
                Some(next) => {
                    let found = next.remove(tail, queue, sub);
                    if next.is_empty() {
                        node.next = None;
                    }
                    found
                }
                None => false,
            }
        };
        if found && node.is_empty() {
            match *token {
                Token::Literal(t) => {
                    self.literals.remove(t);
                }
                Token::Pwc => self.pwc = None,
                Token::Fwc => self.fwc = None,
            }
        }
        found
    }

    /// Adds to `out` every subscription below this level matching the literal `subject`.
    fn collect(&self, subject: &[u8], out: &mut MatchResult<T>) {
        let mut level = self;
        let mut rest = subject;
        loop {
            let (token, tail) = split_token(rest);
            // `>` needs at least one token, and there is one here.
            if let Some(fwc) = &level.fwc {
                out.add_node(fwc);
            }
            if let Some(pwc) = &level.pwc {
                match (tail, &pwc.next) {
                    (None, _) => out.add_node(pwc),
                    (Some(tail), Some(next)) => next.collect(tail, out),
                    (Some(_), None) => {}
                }
            }
            let Some(node) = level.literals.get(token) else {
                return;
            };
            match (tail, &node.next) {
                (None, _) => {
                    out.add_node(node);
                    return;
                }
                (Some(tail), Some(next)) => {
                    level = next;
                    rest = tail;
                }
                (Some(_), None) => return,
            }
        }
    }

    /// Like [`Level::collect`] but stops at the first subscription. Pruning guarantees a
    /// node without subscriptions has a non-empty level below it, so reaching the node for
    /// the last token with subscriptions is interest.
    fn has_interest(&self, subject: &[u8]) -> bool {
        let mut level = self;
        let mut rest = subject;
        loop {
            let (token, tail) = split_token(rest);
            if level.fwc.is_some() {
                return true;
            }
            if let Some(pwc) = &level.pwc {
                let found = match (tail, &pwc.next) {
                    (None, _) => pwc.has_subs(),
                    (Some(tail), Some(next)) => next.has_interest(tail),
                    (Some(_), None) => false,
                };
                if found {
                    return true;
                }
            }
            let Some(node) = level.literals.get(token) else {
                return false;
            };
            match (tail, &node.next) {
                (None, _) => return node.has_subs(),
                (Some(tail), Some(next)) => {
                    level = next;
                    rest = tail;
                }
                (Some(_), None) => return false,
            }
        }
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        let below = |node: &Node<T>| 1 + node.next.as_ref().map_or(0, |l| l.node_count());
        self.literals.values().map(below).sum::<usize>()
            + self.pwc.as_deref().map_or(0, below)
            + self.fwc.as_deref().map_or(0, below)
    }
}

impl<T: PartialEq> Node<T> {
    fn has_subs(&self) -> bool {
        !self.psubs.is_empty() || !self.qsubs.is_empty()
    }

    fn is_empty(&self) -> bool {
        !self.has_subs() && self.next.is_none()
    }

    /// False if an equal subscription is already there.
    fn add(&mut self, queue: Option<&[u8]>, sub: T) -> bool {
        let subs = match queue {
            None => &mut self.psubs,
            Some(name) => {
                let at = match self.qsubs.iter().position(|g| &*g.name == name) {
                    Some(at) => at,
                    None => {
                        self.qsubs.push(QueueGroup {
                            name: name.into(),
                            subs: Vec::new(),
                        });
                        self.qsubs.len() - 1
                    }
                };
                &mut self.qsubs[at].subs
            }
        };
        if subs.contains(&sub) {
            return false;
        }
        subs.push(sub);
        true
    }

    fn remove(&mut self, queue: Option<&[u8]>, sub: &T) -> bool {
        match queue {
            None => swap_remove_item(&mut self.psubs, sub),
            Some(name) => {
                let Some(at) = self.qsubs.iter().position(|g| &*g.name == name) else {
                    return false;
                };
                let found = swap_remove_item(&mut self.qsubs[at].subs, sub);
                if self.qsubs[at].subs.is_empty() {
                    self.qsubs.swap_remove(at);
                }
                found
            }
        }
    }
}

/// Delivery order among subscribers is unspecified, so removal need not keep it.
fn swap_remove_item<T: PartialEq>(subs: &mut Vec<T>, sub: &T) -> bool {
    match subs.iter().position(|s| s == sub) {
        Some(at) => {
            subs.swap_remove(at);
            true
        }
        None => false,
    }
}

/// The first token of `subject` and what follows the dot after it, if anything.
fn split_token(subject: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b'.', subject) {
        Some(dot) => (&subject[..dot], Some(&subject[dot + 1..])),
        None => (subject, None),
    }
}

/// Publish subjects are not validated (a pedantic server only warns), but one with an
/// empty token cannot match any valid subscription, and must not take a cache slot.
fn is_literal_subject_shape(subject: &[u8]) -> bool {
    !subject.is_empty()
        && subject.first() != Some(&b'.')
        && subject.last() != Some(&b'.')
        && memchr::memmem::find(subject, b"..").is_none()
}

fn parse_pattern(subject: &[u8]) -> Result<Vec<Token<'_>>, SublistError> {
    if subject.is_empty() {
        return Err(SublistError::InvalidSubject);
    }
    let mut tokens = Vec::with_capacity(subject.len() / 4 + 1);
    for token in subject.split(|&b| b == b'.') {
        if matches!(tokens.last(), Some(Token::Fwc)) {
            return Err(SublistError::InvalidSubject);
        }
        let parsed = match token {
            b"*" => Token::Pwc,
            b">" => Token::Fwc,
            _ if token.is_empty()
                || token
                    .iter()
                    .any(|&b| b == b'*' || b == b'>' || b.is_ascii_whitespace()) =>
            {
                return Err(SublistError::InvalidSubject)
            }
            _ => Token::Literal(token),
        };
        tokens.push(parsed);
    }
    Ok(tokens)
}

fn validate_queue(queue: Option<&[u8]>) -> Result<(), SublistError> {
    match queue {
        Some(name) if name.is_empty() || name.iter().any(u8::is_ascii_whitespace) => {
            Err(SublistError::InvalidSubject)
        }
        _ => Ok(()),
    }
}

/// Whether the literal `subject` matches the parsed subscription `pattern`.
fn pattern_matches(pattern: &[Token<'_>], subject: &[u8]) -> bool {
    let mut rest = Some(subject);
    for token in pattern {
        let Some(remaining) = rest else {
            return false;
        };
        let (literal, tail) = split_token(remaining);
        match *token {
            Token::Fwc => return true,
            Token::Pwc => {}
            Token::Literal(t) if t == literal => {}
            Token::Literal(_) => return false,
        }
        rest = tail;
    }
    rest.is_none()
}

fn saturate_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
