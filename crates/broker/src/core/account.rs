//! Accounts: each is an isolated subject space with its own subscription table.
//!
//! Every subscriber of an account, whatever its kind (a client, a route's remote interest,
//! an internal handler), sits in the account's one [`Sublist`], so a publish is one lookup
//! and the router sees every interested party at once. Configs without `accounts {}` have
//! only the global account `$G`, as in nats-server.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use midge_proto::hash::{keyed_map, KeyedMap};
use midge_proto::sublist::Sublist;
use parking_lot::RwLock;

use super::sub::SubRef;
use crate::options::{AccountLimits, Options};

/// The account of clients in a config without accounts (nats-server's global account).
pub(crate) const GLOBAL_ACCOUNT: &str = "$G";
/// The system account when the configuration names none (nats-server's default).
pub(crate) const DEFAULT_SYSTEM_ACCOUNT: &str = "$SYS";

/// One account: its name and its subscription table.
pub(crate) struct Account {
    pub name: Arc<str>,
    pub sublist: Sublist<SubRef>,
    /// Client connections bound to the account now (`/accountz`, limits).
    pub num_clients: AtomicU32,
    /// `limits {}` of the account (a reload replaces them).
    pub limits: RwLock<AccountLimits>,
    /// Stream and service imports, and the response subjects of its service exports.
    pub imports: super::imports::AccountImports,
    /// Traffic of the account's clients that have gone, and its slow consumers (the
    /// account's statz adds the live clients' counters: nothing is counted per message).
    pub closed: ClosedTraffic,
    /// Client connections of the account on the other servers of the cluster, by server
    /// id, as their `SERVER.CONNS` events tell; `max_connections` counts them too.
    remote: parking_lot::Mutex<KeyedMap<Box<str>, u32>>,
    remote_total: AtomicU32,
}

/// Counters of an account's clients that are gone (`$SYS.REQ.ACCOUNT.<name>.STATZ`).
#[derive(Debug, Default)]
pub(crate) struct ClosedTraffic {
    pub in_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_msgs: AtomicU64,
    pub out_bytes: AtomicU64,
    pub slow_consumers: AtomicU64,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.name)
            .field("subscriptions", &self.sublist.count())
            .finish()
    }
}

impl Account {
    pub fn new(name: &str) -> Arc<Account> {
        Arc::new(Account {
            name: name.into(),
            sublist: Sublist::new(),
            num_clients: AtomicU32::new(0),
            limits: RwLock::new(AccountLimits::default()),
            imports: super::imports::AccountImports::default(),
            closed: ClosedTraffic::default(),
            remote: parking_lot::Mutex::new(keyed_map()),
            remote_total: AtomicU32::new(0),
        })
    }

    pub fn client_joined(&self) {
        self.num_clients.fetch_add(1, Ordering::Relaxed);
    }

    pub fn client_left(&self) {
        self.num_clients.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections of the account on the other servers of the cluster.
    pub fn remote_clients(&self) -> u32 {
        self.remote_total.load(Ordering::Relaxed)
    }

    /// Server `server` says it has `conns` connections of the account.
    pub fn set_remote_clients(&self, server: &str, conns: u32) {
        let mut remote = self.remote.lock();
        if conns == 0 {
            remote.remove(server);
        } else {
            remote.insert(server.into(), conns);
        }
        self.remote_total.store(
            remote.values().fold(0u32, |a, n| a.saturating_add(*n)),
            Ordering::Relaxed,
        );
    }

    /// Server `server` is gone: its connections no longer count.
    pub fn forget_remote_server(&self, server: &str) {
        let mut remote = self.remote.lock();
        if remote.remove(server).is_some() {
            self.remote_total.store(
                remote.values().fold(0u32, |a, n| a.saturating_add(*n)),
                Ordering::Relaxed,
            );
        }
    }

    /// Whether `max_connections` (0: none) is exceeded, counting the cluster's.
    pub fn over_max_connections(&self) -> bool {
        let max = self.limits.read().max_connections;
        max > 0
            && (self.num_clients.load(Ordering::Relaxed) as usize) + self.remote_clients() as usize
                > max
    }

    /// A client of the account closed: its traffic stays in the account's totals.
    pub fn add_closed_traffic(&self, in_msgs: u64, in_bytes: u64, out_msgs: u64, out_bytes: u64) {
        let c = &self.closed;
        c.in_msgs.fetch_add(in_msgs, Ordering::Relaxed);
        c.in_bytes.fetch_add(in_bytes, Ordering::Relaxed);
        c.out_msgs.fetch_add(out_msgs, Ordering::Relaxed);
        c.out_bytes.fetch_add(out_bytes, Ordering::Relaxed);
    }
}

/// Every account of the server, by name. The global account always exists.
#[derive(Debug)]
pub(crate) struct Accounts {
    by_name: RwLock<KeyedMap<Arc<str>, Arc<Account>>>,
    global: Arc<Account>,
    /// The system account (events, `$SYS.REQ` services); fixed at start, as in nats-server.
    system: Option<Arc<Account>>,
}

impl Accounts {
    /// The accounts a configuration names, plus `$G`.
    pub fn new(opts: &Options) -> Accounts {
        let global = Account::new(GLOBAL_ACCOUNT);
        let mut accounts = Accounts {
            by_name: RwLock::new(keyed_map()),
            global: global.clone(),
            system: None,
        };
        accounts.by_name.write().insert(global.name.clone(), global);
        accounts.sync(opts);
        if let Some(name) = opts.system_account_name() {
            let system = accounts.get(name).unwrap_or_else(|| {
                let acc = Account::new(name);
                accounts
                    .by_name
                    .write()
                    .insert(acc.name.clone(), acc.clone());
                acc
            });
            accounts.system = Some(system);
        }
        accounts
    }

    /// Adds the accounts a (reloaded) configuration names that do not exist yet. Accounts
    /// the configuration no longer names stay until their last subscriber goes: clients in
    /// them are closed by the reload (their user is gone), and routes may still carry their
    /// interest.
    pub fn sync(&self, opts: &Options) {
        let mut map = self.by_name.write();
        for name in opts.account_names() {
            if !map.contains_key(name) {
                let acc = Account::new(name);
                map.insert(acc.name.clone(), acc);
            }
        }
    }

    pub fn global(&self) -> &Arc<Account> {
        &self.global
    }

    /// The system account; `None` with `no_system_account`.
    pub fn system(&self) -> Option<&Arc<Account>> {
        self.system.as_ref()
    }

    /// Every account, sorted by name (`/accountz`).
    pub fn all(&self) -> Vec<Arc<Account>> {
        let mut all: Vec<Arc<Account>> = self.by_name.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.by_name.read().get(name).cloned()
    }

    /// Looks an account up by the bytes a route sent.
    pub fn get_bytes(&self, name: &[u8]) -> Option<Arc<Account>> {
        if name == GLOBAL_ACCOUNT.as_bytes() {
            return Some(self.global.clone());
        }
        std::str::from_utf8(name).ok().and_then(|n| self.get(n))
    }

    /// The account a user of the configuration belongs to (`$G` when it names none).
    pub fn for_user(&self, account: Option<&str>) -> Arc<Account> {
        account
            .and_then(|n| self.get(n))
            .unwrap_or_else(|| self.global.clone())
    }

    /// Subscriptions of every kind in every account (`/varz` `subscriptions`).
    pub fn num_subscriptions(&self) -> usize {
        self.by_name
            .read()
            .values()
            .map(|a| a.sublist.count())
            .sum()
    }

    /// `/subsz` counters summed over the accounts (rates and means weighted).
    pub fn sublist_stats(&self) -> midge_proto::sublist::SublistStats {
        let mut total = midge_proto::sublist::SublistStats::default();
        let (mut hits, mut fanout_sum) = (0.0, 0.0);
        for acc in self.by_name.read().values() {
            let s = acc.sublist.stats();
            total.num_subscriptions += s.num_subscriptions;
            total.num_cache += s.num_cache;
            total.num_inserts += s.num_inserts;
            total.num_removes += s.num_removes;
            total.num_matches += s.num_matches;
            total.max_fanout = total.max_fanout.max(s.max_fanout);
            hits += s.cache_hit_rate * s.num_matches as f64;
            fanout_sum += s.avg_fanout * f64::from(s.num_cache);
        }
        if total.num_matches > 0 {
            total.cache_hit_rate = hits / total.num_matches as f64;
        }
        if total.num_cache > 0 {
            total.avg_fanout = fanout_sum / f64::from(total.num_cache);
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remote counts replace each other per server, go with their server, saturate rather
    /// than wrap (a peer's event could claim anything), and `max_connections` adds them
    /// to the local clients.
    #[test]
    fn remote_connections_count_toward_the_limit() {
        let acc = Account::new("L");
        acc.limits.write().max_connections = 3;
        acc.client_joined();
        acc.set_remote_clients("S1", 1);
        acc.set_remote_clients("S2", 1);
        assert_eq!(acc.remote_clients(), 2);
        assert!(!acc.over_max_connections(), "1 + 2 = 3 is the limit");
        acc.set_remote_clients("S1", 2);
        assert_eq!(
            acc.remote_clients(),
            3,
            "a server's new count replaces its old one"
        );
        assert!(acc.over_max_connections());
        acc.forget_remote_server("S1");
        assert_eq!(acc.remote_clients(), 1);
        acc.set_remote_clients("S2", 0);
        assert_eq!(acc.remote_clients(), 0);
        acc.set_remote_clients("S1", u32::MAX);
        acc.set_remote_clients("S2", u32::MAX);
        assert_eq!(acc.remote_clients(), u32::MAX);
        assert!(acc.over_max_connections());
        acc.limits.write().max_connections = 0;
        assert!(!acc.over_max_connections(), "no limit, never over");
    }
}
