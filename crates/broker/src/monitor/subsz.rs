//! `/subsz`: the subscription table's counters, and with `subs=1` the subscriptions
//! themselves (`offset`, `limit`, and `test=<subject>` to list only those it would reach).

use std::time::SystemTime;

use midge_proto::subject;
use serde::Serialize;

use super::connz::{sub_details, SubDetail};
use super::query::{Query, QueryError};
use super::rfc3339;
use crate::server::ServerInner;

const DEFAULT_LIMIT: i64 = 1024;

#[derive(Debug, Serialize)]
pub(crate) struct Subsz {
    server_id: String,
    now: String,
    num_subscriptions: u32,
    num_cache: u32,
    num_inserts: u64,
    num_removes: u64,
    num_matches: u64,
    cache_hit_rate: f64,
    max_fanout: u32,
    avg_fanout: f64,
    total: usize,
    offset: i64,
    limit: i64,
    #[serde(rename = "subscriptions_list", skip_serializing_if = "Option::is_none")]
    subs: Option<Vec<SubDetail>>,
}

pub(crate) fn subsz(srv: &ServerInner, q: &Query) -> Result<Subsz, QueryError> {
    let list = q.bool("subs")?;
    let offset = q.int("offset")?.max(0);
    let mut limit = q.int("limit")?;
    if limit <= 0 {
        limit = DEFAULT_LIMIT;
    }
    let test = q.get("test");
    if let Some(t) = test {
        if !subject::is_valid_literal_subject(t.as_bytes()) {
            return Err(QueryError::TestSubject(t.to_string()));
        }
    }
    // `acc=`: the counters and subscriptions of one account (nothing for an unknown one).
    let acc = q.get("acc");
    let st = match acc {
        None => srv.accounts.sublist_stats(),
        Some(name) => srv
            .accounts
            .get(name)
            .map(|a| a.sublist.stats())
            .unwrap_or_default(),
    };
    let mut total = 0;
    let mut subs = None;
    if list {
        let mut clients: Vec<_> = srv.clients.lock().values().cloned().collect();
        clients.retain(|c| acc.is_none_or(|a| a == &**c.account.lock()));
        clients.sort_by_key(|c| c.cid);
        let mut all: Vec<SubDetail> = clients
            .iter()
            .flat_map(|c| {
                let account = c.account.lock().to_string();
                let mut details = sub_details(c);
                for d in &mut details {
                    d.account.clone_from(&account);
                }
                details
            })
            .filter(|d| test.is_none_or(|t| subject::matches(d.subject.as_bytes(), t.as_bytes())))
            .collect();
        total = all.len();
        let from = (offset as usize).min(total);
        let to = from.saturating_add(limit as usize).min(total);
        subs = Some(all.drain(from..to).collect());
    }
    Ok(Subsz {
        server_id: srv.id.clone(),
        now: rfc3339(SystemTime::now()),
        num_subscriptions: st.num_subscriptions,
        num_cache: st.num_cache,
        num_inserts: st.num_inserts,
        num_removes: st.num_removes,
        num_matches: st.num_matches,
        cache_hit_rate: st.cache_hit_rate,
        max_fanout: st.max_fanout,
        avg_fanout: st.avg_fanout,
        total,
        offset,
        limit,
        subs,
    })
}
