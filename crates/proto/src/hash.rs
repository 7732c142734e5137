//! Hash maps for keys that someone else chooses: subjects, sids, queue names, server IDs
//! from the network, user and account names from a config file.
//!
//! An unseeded hasher (such as FxHash) lets a client pick keys that all land in one bucket,
//! which turns every lookup into a scan of that bucket: a few thousand crafted
//! subscriptions would slow every publish. [`KeyedState`] seeds foldhash, one of the fastest
//! hashers for short keys, from the operating system's randomness (through std's
//! `RandomState`, which reads it once per thread), with a different per-map seed for every
//! map, so colliding keys cannot be computed ahead of time or carried from one map to
//! another. Maps keyed by numbers the server generates itself (connection IDs) need none of
//! this and can keep an unseeded hasher.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use foldhash::fast::{FoldHasher, SeedableRandomState};
use foldhash::SharedSeed;

/// A map whose keys come from outside the server.
pub type KeyedMap<K, V> = HashMap<K, V, KeyedState>;

/// A set whose members come from outside the server.
pub type KeyedSet<K> = HashSet<K, KeyedState>;

/// An empty [`KeyedMap`] with its own random seed.
pub fn keyed_map<K, V>() -> KeyedMap<K, V> {
    HashMap::with_hasher(KeyedState::default())
}

/// An empty [`KeyedSet`] with its own random seed.
pub fn keyed_set<K>() -> KeyedSet<K> {
    HashSet::with_hasher(KeyedState::default())
}

/// A foldhash builder with a random seed (see the module documentation).
#[derive(Clone, Debug)]
pub struct KeyedState(SeedableRandomState);

impl Default for KeyedState {
    fn default() -> Self {
        static SHARED: OnceLock<SharedSeed> = OnceLock::new();
        let shared = SHARED.get_or_init(|| SharedSeed::from_u64(os_random()));
        KeyedState(SeedableRandomState::with_seed(os_random(), shared))
    }
}

impl BuildHasher for KeyedState {
    type Hasher = FoldHasher<'static>;

    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// 64 random bits: std seeds each thread's SipHash keys from the OS and changes them for
/// every new `RandomState`, so the hash of nothing is a fresh random value each call.
fn os_random() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn every_map_has_its_own_seed() {
        let (a, b) = (KeyedState::default(), KeyedState::default());
        let key: &[u8] = b"foo.bar";
        // Two equal 64-bit hashes from independent seeds: about one chance in 2^64.
        assert_ne!(a.hash_one(key), b.hash_one(key));
        assert_eq!(a.hash_one(key), a.clone().hash_one(key), "a seed is stable");
    }

    #[test]
    fn maps_and_sets_work_as_usual() {
        let mut map: KeyedMap<Box<[u8]>, u32> = keyed_map();
        map.insert(b"sid"[..].into(), 1);
        assert_eq!(map.get(&b"sid"[..]), Some(&1));
        let mut set: KeyedSet<String> = keyed_set();
        assert!(set.insert("user".into()));
        assert!(!set.insert("user".into()));
        let default: KeyedMap<u8, u8> = KeyedMap::default();
        assert!(default.is_empty());
    }
}
