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

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use crate::hash::{keyed_map, KeyedMap};

/// Cache size used by [`Sublist::new`], as in nats-server.
const DEFAULT_CACHE_SIZE: usize = 1024;
/// Past this many removals in one batch the match cache is cleared rather than scanned.
const BATCH_CACHE_SCAN: usize = 16;

/// Longer subjects are matched but never cached. Real subjects are far shorter; without the
/// bound a client allowed long control lines could fill the cache with megabytes of keys
/// and make every insert and remove, which scan the cache, walk all of them.
pub const MAX_CACHED_SUBJECT: usize = 512;

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
    cache: KeyedMap<Box<[u8]>, Arc<MatchResult<T>>>,
    count: usize,
}

struct Level<T> {
    literals: KeyedMap<Box<[u8]>, Node<T>>,
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
            literals: keyed_map(),
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
                cache: keyed_map(),
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

    /// Removes many subscriptions under one write lock, bumping the generation once;
    /// returns how many were there. For a connection that closes with many subscriptions:
    /// removing them one by one takes and releases the write lock as many times, and
    /// publishers on other connections, which need the read lock after every change,
    /// starve meanwhile. A large batch clears the whole match cache instead of scanning it
    /// once per subscription.
    pub fn remove_batch<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>, &'a T)>,
    ) -> usize
    where
        T: 'a,
    {
        let mut guard = self.inner.write();
        let inner = &mut *guard;
        let mut removed = 0;
        let mut touched: Vec<Vec<Token<'a>>> = Vec::new();
        for (subject, queue, sub) in items {
            let Ok(tokens) = parse_pattern(subject) else {
                continue;
            };
            if validate_queue(queue).is_err() || !inner.root.remove(&tokens, queue, sub) {
                continue;
            }
            removed += 1;
            if touched.len() <= BATCH_CACHE_SCAN {
                touched.push(tokens);
            }
        }
        if removed == 0 {
            return 0;
        }
        inner.count -= removed;
        self.removes.fetch_add(removed as u64, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
        if touched.len() > BATCH_CACHE_SCAN {
            inner.cache.clear();
        } else {
            for tokens in &touched {
                inner
                    .cache
                    .retain(|subject, _| !pattern_matches(tokens, subject));
            }
        }
        removed
    }

    /// Every subscription stored, in no particular order (a snapshot: for sending a new
    /// peer the whole interest).
    pub fn all(&self) -> Vec<T>
    where
        T: Clone,
    {
        let inner = self.inner.read();
        let mut out = Vec::with_capacity(inner.count);
        let mut stack: Vec<&Level<T>> = vec![&inner.root];
        while let Some(level) = stack.pop() {
            let nodes = level
                .literals
                .values()
                .chain(level.pwc.as_deref())
                .chain(level.fwc.as_deref());
            for node in nodes {
                out.extend(node.psubs.iter().cloned());
                for group in &node.qsubs {
                    out.extend(group.subs.iter().cloned());
                }
                if let Some(next) = node.next.as_deref() {
                    stack.push(next);
                }
            }
        }
        out
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
        if self.cache_size == 0 || subject.len() > MAX_CACHED_SUBJECT {
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
        // The two counters are read at different moments while matches go on, so misses
        // may have run ahead of the `matches` just read; clamping keeps hits non-negative.
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
    fn child(&mut self, token: Token<'_>) -> Option<&mut Node<T>> {
        match token {
            Token::Literal(t) => {
                // Looking up first spares an owned key allocation on the common path where
                // the token is already there.
                if !self.literals.contains_key(t) {
                    self.literals.insert(t.into(), Node::default());
                }
                self.literals.get_mut(t)
            }
            Token::Pwc => Some(self.pwc.get_or_insert_with(Box::default)),
            Token::Fwc => Some(self.fwc.get_or_insert_with(Box::default)),
        }
    }

    /// The node for `tokens`, created with the path to it if missing; `None` for no tokens.
    fn node_for_insert(&mut self, tokens: &[Token<'_>]) -> Option<&mut Node<T>> {
        let (last, path) = tokens.split_last()?;
        let mut level = self;
        for token in path {
            level = level.child(*token)?.next.get_or_insert_with(Box::default);
        }
        level.child(*last)
    }

    fn get_mut(&mut self, token: Token<'_>) -> Option<&mut Node<T>> {
        match token {
            Token::Literal(t) => self.literals.get_mut(t),
            Token::Pwc => self.pwc.as_deref_mut(),
            Token::Fwc => self.fwc.as_deref_mut(),
        }
    }

    fn child_count(&self) -> usize {
        self.literals.len() + usize::from(self.pwc.is_some()) + usize::from(self.fwc.is_some())
    }

    /// Removes `sub` at `tokens` below this level, then prunes the nodes that held only the
    /// path to it. Both steps walk down in a loop, never recursing, because a subject may
    /// have as many tokens as a control line has room for.
    fn remove(&mut self, tokens: &[Token<'_>], queue: Option<&[u8]>, sub: &T) -> bool {
        let Some((last, path)) = tokens.split_last() else {
            return false;
        };
        // The shallowest depth from which every node on the path holds nothing but the path
        // itself: once the last node is empty, that whole chain goes at once.
        let mut cut = 0;
        let mut level = &mut *self;
        for (depth, token) in path.iter().enumerate() {
            let Some(node) = level.get_mut(*token) else {
                return false;
            };
            let has_subs = node.has_subs();
            let Some(next) = node.next.as_deref_mut() else {
                return false;
            };
            if has_subs || next.child_count() > 1 {
                cut = depth + 1;
            }
            level = next;
        }
        let Some(node) = level.get_mut(*last) else {
            return false;
        };
        if !node.remove(queue, sub) {
            return false;
        }
        if node.is_empty() {
            self.unlink(&tokens[..=cut]);
        }
        true
    }

    /// Drops the node `tokens` leads to, with everything below it, and the level that held
    /// it if nothing else is left there.
    fn unlink(&mut self, tokens: &[Token<'_>]) {
        let Some((last, path)) = tokens.split_last() else {
            return;
        };
        let Some((parent_token, path)) = path.split_last() else {
            self.remove_child(*last);
            return;
        };
        let mut level = self;
        for t in path {
            match level.get_mut(*t).and_then(|node| node.next.as_deref_mut()) {
                Some(next) => level = next,
                None => return,
            }
        }
        let Some(parent) = level.get_mut(*parent_token) else {
            return;
        };
        if let Some(next) = parent.next.as_deref_mut() {
            next.remove_child(*last);
            if next.child_count() == 0 {
                parent.next = None;
            }
        }
    }

    fn remove_child(&mut self, token: Token<'_>) {
        match token {
            Token::Literal(t) => {
                self.literals.remove(t);
            }
            Token::Pwc => self.pwc = None,
            Token::Fwc => self.fwc = None,
        }
    }

    /// Adds to `out` every subscription below this level matching the literal `subject`.
    ///
    /// The literal path is followed in a loop; each `*` node that continues is a branch
    /// kept on a stack, so the call depth does not grow with the subject's length.
    fn collect<'s>(&'s self, subject: &'s [u8], out: &mut MatchResult<T>) {
        let mut branches: Vec<(&Level<T>, &[u8])> = Vec::new();
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
                    (Some(tail), Some(next)) => branches.push((next, tail)),
                    (Some(_), None) => {}
                }
            }
            let literal = match level.literals.get(token) {
                Some(node) => match (tail, &node.next) {
                    (None, _) => {
                        out.add_node(node);
                        None
                    }
                    (Some(tail), Some(next)) => Some((&**next, tail)),
                    (Some(_), None) => None,
                },
                None => None,
            };
            match literal.or_else(|| branches.pop()) {
                Some((next, tail)) => {
                    level = next;
                    rest = tail;
                }
                None => return,
            }
        }
    }

    /// Like [`Level::collect`] but stops at the first subscription. Pruning guarantees a
    /// node without subscriptions has a non-empty level below it, so reaching the node for
    /// the last token with subscriptions is interest.
    fn has_interest<'s>(&'s self, subject: &'s [u8]) -> bool {
        let mut branches: Vec<(&Level<T>, &[u8])> = Vec::new();
        let mut level = self;
        let mut rest = subject;
        loop {
            let (token, tail) = split_token(rest);
            if level.fwc.is_some() {
                return true;
            }
            if let Some(pwc) = &level.pwc {
                match (tail, &pwc.next) {
                    (None, _) if pwc.has_subs() => return true,
                    (Some(tail), Some(next)) => branches.push((next, tail)),
                    _ => {}
                }
            }
            let literal = match level.literals.get(token) {
                Some(node) => match (tail, &node.next) {
                    (None, _) if node.has_subs() => return true,
                    (Some(tail), Some(next)) => Some((&**next, tail)),
                    _ => None,
                },
                None => None,
            };
            match literal.or_else(|| branches.pop()) {
                Some((next, tail)) => {
                    level = next;
                    rest = tail;
                }
                None => return false,
            }
        }
    }

    #[cfg(test)]
    fn node_count(&self) -> usize {
        let mut count = 0;
        let mut pending = vec![self];
        while let Some(level) = pending.pop() {
            let wildcards = level.pwc.iter().chain(level.fwc.iter()).map(|n| &**n);
            for node in level.literals.values().chain(wildcards) {
                count += 1;
                pending.extend(node.next.as_deref());
            }
        }
        count
    }
}

impl<T> Level<T> {
    /// Moves the levels below this one's nodes into `into`, leaving the nodes childless.
    // The levels are boxed in the trie already; keeping the boxes saves a move per level.
    #[allow(clippy::vec_box)]
    fn take_levels(&mut self, into: &mut Vec<Box<Level<T>>>) {
        let wildcards = self
            .pwc
            .iter_mut()
            .chain(self.fwc.iter_mut())
            .map(|n| &mut **n);
        for node in self.literals.values_mut().chain(wildcards) {
            into.extend(node.next.take());
        }
    }
}

impl<T> Drop for Level<T> {
    /// The derived drop would recurse once per level, and a subscription can be as many
    /// levels deep as its subject has tokens: the levels below are taken out and dropped one
    /// at a time instead.
    fn drop(&mut self) {
        let mut below = Vec::new();
        self.take_levels(&mut below);
        while let Some(mut level) = below.pop() {
            level.take_levels(&mut below);
        }
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
        // Not memmem: building its searcher costs more than scanning a short subject.
        && !subject.windows(2).any(|pair| pair == b"..")
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
            // `*` and `>` inside a longer token are ordinary characters, as in nats-server.
            _ if token.is_empty() || token.iter().any(u8::is_ascii_whitespace) => {
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

#[cfg(test)]
// A failed unwrap is a failed test, which is what these are for.
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Plain subs and queue groups in a canonical order, for comparison.
    type Canonical = (Vec<u32>, BTreeMap<Vec<u8>, Vec<u32>>);

    fn canonical(result: &MatchResult<u32>) -> Canonical {
        let mut psubs = result.psubs.clone();
        psubs.sort_unstable();
        let mut qsubs = BTreeMap::new();
        for group in &result.qsubs {
            let mut subs = group.subs.clone();
            subs.sort_unstable();
            assert!(
                qsubs.insert(group.name.to_vec(), subs).is_none(),
                "queue group {:?} listed twice",
                group.name
            );
        }
        (psubs, qsubs)
    }

    fn plain(s: &Sublist<u32>, subject: &str) -> Vec<u32> {
        let result = s.matches(subject.as_bytes());
        assert!(result.qsubs.is_empty());
        canonical(&result).0
    }

    fn sublist(subs: &[(&str, u32)]) -> Sublist<u32> {
        let s = Sublist::new();
        for &(subject, id) in subs {
            s.insert(subject.as_bytes(), None, id).unwrap();
        }
        s
    }

    #[test]
    fn remove_batch_removes_what_is_there_and_keeps_the_cache_exact() {
        let s = sublist(&[("a.1", 1), ("a.2", 2), ("a.*", 3), ("b", 4)]);
        // Fill the cache, then remove in small and large batches.
        assert_eq!(plain(&s, "a.1"), [1, 3]);
        assert_eq!(plain(&s, "b"), [4]);
        let gen = s.generation();
        let removed = s.remove_batch([
            (&b"a.1"[..], None, &1),
            (&b"a.1"[..], None, &1), // already gone
            (&b"nope"[..], None, &9),
        ]);
        assert_eq!(removed, 1);
        assert_ne!(s.generation(), gen);
        assert_eq!(plain(&s, "a.1"), [3], "the cached result was dropped");
        assert_eq!(plain(&s, "b"), [4]);
        let many: Vec<(String, u32)> = (0..100).map(|i| (format!("c.{i}"), 100 + i)).collect();
        for (subject, id) in &many {
            s.insert(subject.as_bytes(), None, *id).unwrap();
        }
        assert_eq!(plain(&s, "c.5"), [105]);
        let removed = s.remove_batch(many.iter().map(|(subj, id)| (subj.as_bytes(), None, id)));
        assert_eq!(removed, 100);
        assert!(
            plain(&s, "c.5").is_empty(),
            "cleared cache, no stale result"
        );
        assert_eq!(plain(&s, "a.2"), [2, 3]);
        assert_eq!(s.count(), 3);
        assert_eq!(s.generation(), s.generation());
        assert_eq!(s.remove_batch(std::iter::empty()), 0);
        let mut all = s.all();
        all.sort_unstable();
        assert_eq!(all, [2, 3, 4]);
    }

    #[test]
    fn literal_subjects_match_exactly() {
        let s = sublist(&[("foo", 1), ("foo.bar", 2), ("foo.bar", 3), ("foo.baz", 4)]);
        assert_eq!(plain(&s, "foo"), [1]);
        assert_eq!(plain(&s, "foo.bar"), [2, 3]);
        assert_eq!(plain(&s, "foo.baz"), [4]);
        assert!(plain(&s, "foo.bar.baz").is_empty());
        assert!(plain(&s, "bar").is_empty());
        assert!(plain(&s, "Foo").is_empty(), "subjects are case-sensitive");
    }

    #[test]
    fn pwc_matches_exactly_one_token() {
        let s = sublist(&[("foo.*", 1), ("*.bar", 2), ("*", 3)]);
        assert_eq!(plain(&s, "foo.bar"), [1, 2]);
        assert_eq!(plain(&s, "foo.baz"), [1]);
        assert_eq!(plain(&s, "foo"), [3]);
        assert!(plain(&s, "foo.bar.baz").is_empty());
    }

    #[test]
    fn fwc_matches_one_or_more_tokens() {
        let s = sublist(&[("foo.>", 1), (">", 2)]);
        assert_eq!(plain(&s, "foo.bar"), [1, 2]);
        assert_eq!(plain(&s, "foo.bar.baz.qux"), [1, 2]);
        // `>` never matches an empty remainder.
        assert_eq!(plain(&s, "foo"), [2]);
        assert_eq!(plain(&s, "bar"), [2]);
    }

    #[test]
    fn mixed_wildcards() {
        let s = sublist(&[
            ("*.bar.>", 1),
            ("foo.*.baz", 2),
            ("*.*.*", 3),
            ("foo.bar.baz", 4),
            ("foo.*.>", 5),
            ("*.>", 6),
        ]);
        assert_eq!(plain(&s, "foo.bar.baz"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(plain(&s, "x.bar.y"), [1, 3, 6]);
        assert_eq!(plain(&s, "foo.bar"), [6]);
        assert_eq!(plain(&s, "foo.x.baz.q"), [5, 6]);
    }

    #[test]
    fn queue_subscriptions_are_grouped_by_name() {
        let s = Sublist::new();
        s.insert(b"foo.bar", None, 1).unwrap();
        s.insert(b"foo.bar", Some(b"workers"), 2).unwrap();
        s.insert(b"foo.bar", Some(b"workers"), 3).unwrap();
        s.insert(b"foo.*", Some(b"workers"), 4).unwrap();
        s.insert(b"foo.>", Some(b"auditors"), 5).unwrap();
        s.insert(b"foo.>", None, 6).unwrap();

        let (psubs, qsubs) = canonical(&s.matches(b"foo.bar"));
        assert_eq!(psubs, [1, 6]);
        let expected = BTreeMap::from([
            (b"workers".to_vec(), vec![2, 3, 4]),
            (b"auditors".to_vec(), vec![5]),
        ]);
        assert_eq!(qsubs, expected);

        let (psubs, qsubs) = canonical(&s.matches(b"foo.bar.baz"));
        assert_eq!(psubs, [6]);
        assert_eq!(qsubs, BTreeMap::from([(b"auditors".to_vec(), vec![5])]));
    }

    #[test]
    fn remove_prunes_every_node() {
        let s = Sublist::new();
        let subs = [
            ("foo.bar.baz", None, 1),
            ("foo.bar", None, 2),
            ("foo.*.baz", Some("q"), 3),
            ("foo.>", None, 4),
            ("*.>", Some("q"), 5),
            ("foo.bar.baz", Some("r"), 6),
        ];
        for (subject, queue, id) in subs {
            s.insert(subject.as_bytes(), queue.map(str::as_bytes), id)
                .unwrap();
        }
        assert_eq!(s.count(), 6);
        assert!(s.node_count() > 0);
        s.matches(b"foo.bar.baz");

        for (subject, queue, id) in subs {
            s.remove(subject.as_bytes(), queue.map(str::as_bytes), &id)
                .unwrap();
        }
        assert_eq!(s.count(), 0);
        assert_eq!(s.node_count(), 0);
        assert!(s.matches(b"foo.bar.baz").is_empty());
        assert_eq!(s.stats().num_removes, 6);
    }

    #[test]
    fn removing_what_is_not_there_is_not_found() {
        let s = sublist(&[("foo.bar", 1)]);
        s.insert(b"foo.bar", Some(b"q"), 2).unwrap();
        let not_found = Err(SublistError::NotFound);
        assert_eq!(s.remove(b"foo.bar", None, &9), not_found);
        assert_eq!(s.remove(b"foo.baz", None, &1), not_found);
        assert_eq!(s.remove(b"foo.bar.baz", None, &1), not_found);
        assert_eq!(s.remove(b"foo", None, &1), not_found);
        assert_eq!(s.remove(b"foo.*", None, &1), not_found);
        assert_eq!(s.remove(b"foo.bar", Some(b"q"), &1), not_found);
        assert_eq!(s.remove(b"foo.bar", Some(b"r"), &2), not_found);
        assert_eq!(s.remove(b"foo.bar", None, &2), not_found);
        assert_eq!(s.count(), 2);
        s.remove(b"foo.bar", None, &1).unwrap();
        assert_eq!(s.remove(b"foo.bar", None, &1), not_found);
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn insert_after_a_cached_match_is_visible() {
        let s = sublist(&[("foo.bar", 1)]);
        assert_eq!(plain(&s, "foo.bar"), [1]);
        assert_eq!(s.stats().num_cache, 1);
        s.insert(b"foo.*", None, 2).unwrap();
        s.insert(b"foo.bar", Some(b"q"), 3).unwrap();
        let (psubs, qsubs) = canonical(&s.matches(b"foo.bar"));
        assert_eq!(psubs, [1, 2]);
        assert_eq!(qsubs, BTreeMap::from([(b"q".to_vec(), vec![3])]));
        // The entry was updated in place, not dropped.
        assert_eq!(s.stats().cache_hit_rate, 0.5);
    }

    #[test]
    fn remove_after_a_cached_match_is_visible() {
        let s = sublist(&[("foo.bar", 1), ("foo.>", 2)]);
        assert_eq!(plain(&s, "foo.bar"), [1, 2]);
        s.remove(b"foo.>", None, &2).unwrap();
        assert_eq!(plain(&s, "foo.bar"), [1]);
        s.remove(b"foo.bar", None, &1).unwrap();
        assert!(plain(&s, "foo.bar").is_empty());
    }

    #[test]
    fn changes_leave_unrelated_cache_entries_alone() {
        let s = sublist(&[("foo.bar", 1), ("baz.qux", 2), ("baz.*", 3)]);
        s.matches(b"foo.bar");
        s.matches(b"baz.qux");
        s.insert(b"foo.*", None, 4).unwrap();
        s.remove(b"foo.*", None, &4).unwrap();
        assert_eq!(s.stats().num_cache, 1, "only foo.bar was dropped");
        assert_eq!(plain(&s, "baz.qux"), [2, 3]);
        let stats = s.stats();
        assert_eq!(stats.num_matches, 3);
        assert_eq!(stats.cache_hit_rate, 1.0 / 3.0, "baz.qux was still cached");
    }

    #[test]
    fn generation_changes_on_every_change() {
        let s = Sublist::new();
        let g0 = s.generation();
        s.insert(b"foo", None, 1).unwrap();
        let g1 = s.generation();
        assert_ne!(g0, g1);
        s.matches(b"foo");
        assert_eq!(s.generation(), g1, "matching changes nothing");
        assert_eq!(s.remove(b"bar", None, &1), Err(SublistError::NotFound));
        assert_eq!(
            s.insert(b"foo.", None, 1),
            Err(SublistError::InvalidSubject)
        );
        assert_eq!(s.generation(), g1, "failed calls change nothing");
        s.remove(b"foo", None, &1).unwrap();
        assert_ne!(s.generation(), g1);
    }

    #[test]
    fn duplicate_inserts_are_stored_once() {
        let s = Sublist::new();
        s.insert(b"foo", None, 1).unwrap();
        let generation = s.generation();
        s.insert(b"foo", None, 1).unwrap();
        assert_eq!(s.generation(), generation);
        s.insert(b"foo", Some(b"q"), 1).unwrap();
        s.insert(b"foo", Some(b"q"), 1).unwrap();
        assert_eq!(s.count(), 2);
        assert_eq!(s.stats().num_inserts, 2);
        let (psubs, qsubs) = canonical(&s.matches(b"foo"));
        assert_eq!(psubs, [1]);
        assert_eq!(qsubs, BTreeMap::from([(b"q".to_vec(), vec![1])]));
        s.remove(b"foo", None, &1).unwrap();
        s.remove(b"foo", Some(b"q"), &1).unwrap();
        assert_eq!(s.count(), 0);
        assert_eq!(s.node_count(), 0);
    }

    #[test]
    fn invalid_subjects_are_rejected() {
        let s = Sublist::new();
        let invalid: [&[u8]; 11] = [
            b"",
            b".",
            b"foo.",
            b".foo",
            b"foo..bar",
            b"foo bar",
            b"foo.\tbar",
            b"foo\r\n",
            b"foo.>.bar",
            b">.foo",
            b">.>",
        ];
        for subject in invalid {
            let err = Err(SublistError::InvalidSubject);
            assert_eq!(s.insert(subject, None, 1), err, "{subject:?}");
            assert_eq!(s.remove(subject, None, &1), err, "{subject:?}");
        }
        for queue in [&b""[..], b"a b", b"q\n"] {
            let err = Err(SublistError::InvalidSubject);
            assert_eq!(s.insert(b"foo", Some(queue), 1), err, "{queue:?}");
        }
        assert_eq!(s.count(), 0);
        assert_eq!(s.node_count(), 0);
        assert_eq!(s.stats().num_inserts, 0);
        // `*` and `>` inside a longer token are ordinary characters.
        for valid in [
            "foo*",
            "foo.*bar",
            "foo.>bar",
            "**",
            "foo.>>",
            "foo",
            "*",
            ">",
            "foo.*.bar.>",
            "a-b_c:d",
            "$SYS.>",
            "_INBOX.x.*",
        ] {
            s.insert(valid.as_bytes(), Some(b"q.1"), 1).unwrap();
        }
    }

    #[test]
    fn malformed_publish_subjects_match_nothing_and_are_not_cached() {
        let s = sublist(&[(">", 1), ("*", 2)]);
        for subject in ["", ".", "foo.", ".foo", "a..b"] {
            assert!(s.matches(subject.as_bytes()).is_empty(), "{subject:?}");
            assert!(!s.has_interest(subject.as_bytes()), "{subject:?}");
        }
        assert_eq!(s.stats().num_cache, 0);
    }

    #[test]
    fn cache_stays_within_its_bound() {
        let s = Sublist::with_cache_size(8);
        s.insert(b">", None, 1).unwrap();
        for i in 0..100 {
            assert_eq!(plain(&s, &format!("subject.{i}")), [1]);
            assert!(s.stats().num_cache <= 8);
        }

        let uncached = Sublist::with_cache_size(0);
        uncached.insert(b"foo", None, 1).unwrap();
        assert_eq!(plain(&uncached, "foo"), [1]);
        assert_eq!(plain(&uncached, "foo"), [1]);
        let stats = uncached.stats();
        assert_eq!((stats.num_cache, stats.num_matches), (0, 2));
        assert_eq!(stats.cache_hit_rate, 0.0);
    }

    #[test]
    fn stats_follow_subsz() {
        let s = Sublist::new();
        assert_eq!(s.stats(), SublistStats::default());
        s.insert(b"foo.bar", None, 1).unwrap();
        s.insert(b"foo.*", None, 2).unwrap();
        s.insert(b"foo.*", Some(b"q"), 3).unwrap();
        s.insert(b"foo.>", Some(b"q"), 4).unwrap();
        s.insert(b"foo.>", Some(b"r"), 5).unwrap();
        s.matches(b"foo.bar"); // 2 psubs + 2 groups
        s.matches(b"foo.bar"); // hit
        s.matches(b"foo.baz.x"); // only foo.>: 2 groups
        s.matches(b"nothing"); // 0
        let stats = s.stats();
        assert_eq!(stats.num_subscriptions, 5);
        assert_eq!(stats.num_inserts, 5);
        assert_eq!(stats.num_matches, 4);
        assert_eq!(stats.num_cache, 3);
        assert_eq!(stats.cache_hit_rate, 0.25);
        assert_eq!(stats.max_fanout, 4);
        assert_eq!(stats.avg_fanout, 2.0);
    }

    #[test]
    fn has_interest_agrees_with_matches() {
        let s = sublist(&[("foo.*.baz", 1), ("bar.>", 2)]);
        s.insert(b"q.only", Some(b"g"), 3).unwrap();
        for (subject, interest) in [
            ("foo.x.baz", true),
            ("foo.x", false),
            ("foo.x.baz.y", false),
            ("bar", false),
            ("bar.x.y", true),
            ("q.only", true),
            ("q", false),
        ] {
            assert_eq!(s.has_interest(subject.as_bytes()), interest, "{subject}");
            s.matches(subject.as_bytes());
            assert_eq!(
                s.has_interest(subject.as_bytes()),
                interest,
                "{subject} cached"
            );
        }
    }

    /// Far deeper than a recursive walk survives on a 2 MiB test thread stack: insert, match,
    /// remove and drop must all loop.
    const DEEP: usize = 100_000;

    fn deep(token: &str, depth: usize) -> String {
        vec![token; depth].join(".")
    }

    #[test]
    fn deep_subjects_are_inserted_matched_and_removed() {
        let s = Sublist::new();
        let literal = deep("a", DEEP);
        let stars = deep("*", DEEP);
        let tail = format!("{}.>", deep("a", DEEP / 2));
        let mixed = format!("{}.*", deep("a", DEEP - 1));
        s.insert(literal.as_bytes(), None, 1).unwrap();
        s.insert(stars.as_bytes(), None, 2).unwrap();
        s.insert(tail.as_bytes(), None, 3).unwrap();
        s.insert(mixed.as_bytes(), Some(b"q"), 4).unwrap();
        s.insert(b"a.a", None, 5).unwrap();
        assert_eq!(s.node_count(), 2 * DEEP + 2);

        let (psubs, qsubs) = canonical(&s.matches(literal.as_bytes()));
        assert_eq!(psubs, [1, 2, 3]);
        assert_eq!(qsubs, BTreeMap::from([(b"q".to_vec(), vec![4])]));
        assert_eq!(plain(&s, &deep("b", DEEP)), [2]);
        assert!(plain(&s, &deep("b", DEEP + 1)).is_empty());
        assert!(s.has_interest(literal.as_bytes()));
        assert!(s.has_interest(deep("b", DEEP).as_bytes()));
        assert!(!s.has_interest(deep("b", DEEP - 1).as_bytes()));

        // The deep literal chain shares its nodes with `tail`, `mixed` and `a.a`: removing
        // it prunes only the nodes below the last one still in use.
        s.remove(literal.as_bytes(), None, &1).unwrap();
        assert_eq!(s.node_count(), 2 * DEEP + 1);
        s.remove(mixed.as_bytes(), Some(b"q"), &4).unwrap();
        assert_eq!(s.node_count(), DEEP + DEEP / 2 + 1);
        assert_eq!(plain(&s, &literal), [2, 3]);
        assert_eq!(
            s.remove(literal.as_bytes(), None, &1),
            Err(SublistError::NotFound)
        );
        s.remove(stars.as_bytes(), None, &2).unwrap();
        assert_eq!(s.node_count(), DEEP / 2 + 1);
        s.remove(tail.as_bytes(), None, &3).unwrap();
        assert_eq!(s.node_count(), 2, "a.a is still there");
        assert_eq!(plain(&s, "a.a"), [5]);
        s.remove(b"a.a", None, &5).unwrap();
        assert_eq!((s.count(), s.node_count()), (0, 0));
    }

    #[test]
    fn long_subjects_are_matched_but_not_cached() {
        let s = sublist(&[(">", 1)]);
        let long = "a".repeat(MAX_CACHED_SUBJECT + 1);
        assert_eq!(plain(&s, &long), [1]);
        assert_eq!(s.stats().num_cache, 0);
        let short = "a".repeat(MAX_CACHED_SUBJECT);
        assert_eq!(plain(&s, &short), [1]);
        assert_eq!(s.stats().num_cache, 1);
    }

    #[test]
    fn a_deep_trie_is_dropped_without_recursion() {
        let s = Sublist::new();
        s.insert(deep("a", DEEP).as_bytes(), None, 1).unwrap();
        s.insert(deep("*", DEEP).as_bytes(), Some(b"q"), 2).unwrap();
        // Not removed: the trie goes down with the sublist.
        drop(s);
    }

    #[test]
    fn is_send_and_sync() {
        fn check<S: Send + Sync>() {}
        check::<Sublist<Arc<String>>>();
        check::<Arc<MatchResult<Arc<String>>>>();
    }

    /// Prints ns per operation; run with
    /// `cargo test --release -p midge-proto --lib sublist::tests::bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing loop, meaningful only in release"]
    fn bench_sublist() {
        use std::hint::black_box;
        use std::time::Instant;

        fn ns_per(iterations: u32, start: Instant) -> f64 {
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        }
        // 10,000 literal subscriptions, a `*` one per service and one `>`: a publish on
        // `svc.A.B.req` reaches three subscriptions.
        fn populate(s: &Sublist<u32>) {
            let mut id = 0;
            for a in 0..100 {
                for b in 0..100 {
                    s.insert(format!("svc.{a}.{b}.req").as_bytes(), None, id)
                        .unwrap();
                    id += 1;
                }
                s.insert(format!("svc.{a}.*.req").as_bytes(), None, id)
                    .unwrap();
                id += 1;
            }
            s.insert(b"svc.>", None, id).unwrap();
        }
        let subjects: Vec<Vec<u8>> = (0..4096)
            .map(|i| format!("svc.{}.{}.req", i % 100, (i / 100) % 100).into_bytes())
            .collect();

        let cached = Sublist::new();
        let start = Instant::now();
        populate(&cached);
        let inserts = cached.count();
        println!(
            "insert: {:.0} ns/sub ({inserts} subs)",
            start.elapsed().as_nanos() as f64 / inserts as f64
        );

        const N: u32 = 2_000_000;
        let hot = b"svc.42.17.req";
        assert_eq!(cached.matches(hot).psubs.len(), 3);
        let start = Instant::now();
        for _ in 0..N {
            black_box(cached.matches(black_box(hot)));
        }
        println!("match, cache hit: {:.1} ns", ns_per(N, start));

        let start = Instant::now();
        for _ in 0..N {
            black_box(cached.has_interest(black_box(hot)));
        }
        println!("has_interest, cache hit: {:.1} ns", ns_per(N, start));

        // 4096 subjects cycled through a 1024-entry cache: every lookup misses, then
        // inserts and now and then evicts.
        let start = Instant::now();
        for i in 0..N {
            black_box(cached.matches(black_box(&subjects[i as usize % subjects.len()])));
        }
        println!("match, cache miss + fill: {:.1} ns", ns_per(N, start));

        let uncached = Sublist::with_cache_size(0);
        populate(&uncached);
        let start = Instant::now();
        for i in 0..N {
            black_box(uncached.matches(black_box(&subjects[i as usize % subjects.len()])));
        }
        println!("match, no cache: {:.1} ns", ns_per(N, start));
        let start = Instant::now();
        for i in 0..N {
            black_box(uncached.has_interest(black_box(&subjects[i as usize % subjects.len()])));
        }
        println!("has_interest, no cache: {:.1} ns", ns_per(N, start));
    }

    /// The oracle: a list of patterns matched token by token.
    fn naive_matches(pattern: &str, subject: &str) -> bool {
        let pattern: Vec<&str> = pattern.split('.').collect();
        let subject: Vec<&str> = subject.split('.').collect();
        for (i, p) in pattern.iter().enumerate() {
            if *p == ">" {
                return subject.len() > i;
            }
            match subject.get(i) {
                Some(s) if *p == "*" || p == s => {}
                _ => return false,
            }
        }
        pattern.len() == subject.len()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(String, Option<String>, u32),
        /// Removes the model entry at this index modulo its length, or a random one.
        RemoveExisting(usize),
        RemoveRandom(String, Option<String>, u32),
        Match(String),
    }

    fn pattern() -> impl Strategy<Value = String> {
        let token = prop_oneof![Just("a"), Just("b"), Just("c"), Just("*")];
        let with_tokens =
            (prop::collection::vec(token, 1..4), any::<bool>()).prop_map(|(tokens, fwc)| {
                let mut p = tokens.join(".");
                if fwc {
                    p.push_str(".>");
                }
                p
            });
        prop_oneof![9 => with_tokens, 1 => Just(">".to_string())]
    }

    fn subject() -> impl Strategy<Value = String> {
        let token = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")];
        prop::collection::vec(token, 1..5).prop_map(|tokens| tokens.join("."))
    }

    fn queue() -> impl Strategy<Value = Option<String>> {
        prop_oneof![Just(None), Just(Some("q1".into())), Just(Some("q2".into()))]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (pattern(), queue(), 0..4u32)
                .prop_map(|(p, q, id)| Op::Insert(p, q, id)),
            1 => any::<usize>().prop_map(Op::RemoveExisting),
            1 => (pattern(), queue(), 0..4u32).prop_map(|(p, q, id)| Op::RemoveRandom(p, q, id)),
            4 => subject().prop_map(Op::Match),
        ]
    }

    fn expected(model: &[(String, Option<String>, u32)], subject: &str) -> Canonical {
        let mut result = MatchResult::default();
        for (pattern, queue, id) in model {
            if naive_matches(pattern, subject) {
                result.add(queue.as_deref().map(str::as_bytes), &[*id]);
            }
        }
        canonical(&result)
    }

    proptest! {
        #[test]
        fn matches_agree_with_a_naive_matcher(
            cache_size in prop_oneof![Just(0usize), Just(3), Just(1024)],
            ops in prop::collection::vec(op(), 1..80),
        ) {
            let s = Sublist::with_cache_size(cache_size);
            let mut model: Vec<(String, Option<String>, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(p, q, id) => {
                        s.insert(p.as_bytes(), q.as_deref().map(str::as_bytes), id).unwrap();
                        let entry = (p, q, id);
                        if !model.contains(&entry) {
                            model.push(entry);
                        }
                    }
                    Op::RemoveExisting(i) => {
                        if !model.is_empty() {
                            let (p, q, id) = model.swap_remove(i % model.len());
                            s.remove(p.as_bytes(), q.as_deref().map(str::as_bytes), &id).unwrap();
                        }
                    }
                    Op::RemoveRandom(p, q, id) => {
                        let entry = (p, q, id);
                        let found = s.remove(
                            entry.0.as_bytes(), entry.1.as_deref().map(str::as_bytes), &entry.2,
                        );
                        match model.iter().position(|e| *e == entry) {
                            Some(at) => {
                                prop_assert_eq!(found, Ok(()));
                                model.swap_remove(at);
                            }
                            None => prop_assert_eq!(found, Err(SublistError::NotFound)),
                        }
                    }
                    Op::Match(subject) => {
                        let want = expected(&model, &subject);
                        prop_assert_eq!(canonical(&s.matches(subject.as_bytes())), want.clone());
                        let interest = !want.0.is_empty() || !want.1.is_empty();
                        prop_assert_eq!(s.has_interest(subject.as_bytes()), interest);
                    }
                }
                prop_assert_eq!(s.count(), model.len());
                prop_assert!(s.stats().num_cache as usize <= cache_size);
            }
            // Every cached entry, not just the ones matched last, must still be exact.
            for subject in ["a", "a.b", "a.b.c", "b.a.c.d", "c.c", "d.d.d.d"] {
                prop_assert_eq!(canonical(&s.matches(subject.as_bytes())), expected(&model, subject));
            }
            while let Some((p, q, id)) = model.pop() {
                s.remove(p.as_bytes(), q.as_deref().map(str::as_bytes), &id).unwrap();
            }
            prop_assert_eq!(s.count(), 0);
            prop_assert_eq!(s.node_count(), 0);
        }
    }
}
