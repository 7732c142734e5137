//! The memory store: messages in a sequence-ordered map plus a per-subject index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use crate::{filter_matches, Result, Store, StoreError, StoredMsg, StreamState, SubjectState};

/// Messages in memory. Lost when the process ends.
#[derive(Debug)]
pub struct MemStore {
    msgs: BTreeMap<u64, StoredMsg>,
    /// Sequences stored per subject.
    subjects: HashMap<String, BTreeSet<u64>>,
    bytes: u64,
    first_seq: u64,
    last_seq: u64,
    last_time_ns: i64,
    closed: bool,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            msgs: BTreeMap::new(),
            subjects: HashMap::new(),
            bytes: 0,
            first_seq: 1,
            last_seq: 0,
            last_time_ns: 0,
            closed: false,
        }
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }

    fn take(&mut self, seq: u64) -> Option<StoredMsg> {
        let msg = self.msgs.remove(&seq)?;
        self.bytes -= msg.stored_size();
        if let Some(set) = self.subjects.get_mut(&msg.subject) {
            set.remove(&seq);
            if set.is_empty() {
                self.subjects.remove(&msg.subject);
            }
        }
        self.first_seq = self
            .msgs
            .keys()
            .next()
            .copied()
            .unwrap_or(self.last_seq + 1);
        Some(msg)
    }
}

impl Store for MemStore {
    fn append(
        &mut self,
        subject: &str,
        headers: Option<&[u8]>,
        payload: &[u8],
        time_ns: i64,
    ) -> Result<u64> {
        self.check_open()?;
        let seq = self.last_seq + 1;
        let msg = StoredMsg {
            seq,
            subject: subject.to_string(),
            headers: headers.map(Bytes::copy_from_slice),
            payload: Bytes::copy_from_slice(payload),
            time_ns,
        };
        self.bytes += msg.stored_size();
        self.subjects
            .entry(msg.subject.clone())
            .or_default()
            .insert(seq);
        if self.msgs.is_empty() {
            self.first_seq = seq;
        }
        self.msgs.insert(seq, msg);
        self.last_seq = seq;
        self.last_time_ns = time_ns;
        Ok(seq)
    }

    fn get(&self, seq: u64) -> Result<StoredMsg> {
        self.check_open()?;
        self.msgs.get(&seq).cloned().ok_or(StoreError::NotFound)
    }

    fn next_matching(&self, seq: u64, filter: Option<&str>) -> Option<StoredMsg> {
        if let Some(f) = filter.filter(|f| !f.is_empty() && *f != ">") {
            if midge_proto::subject::is_literal(f.as_bytes()) {
                let set = self.subjects.get(f)?;
                let seq = *set.range(seq..).next()?;
                return self.msgs.get(&seq).cloned();
            }
        }
        self.msgs
            .range(seq..)
            .map(|(_, m)| m)
            .find(|m| filter_matches(filter, &m.subject))
            .cloned()
    }

    fn last_matching(&self, filter: &str) -> Option<StoredMsg> {
        // "" matches everything, as in the other methods (it has no wildcard token, but is
        // no subject either).
        if !filter.is_empty() && midge_proto::subject::is_literal(filter.as_bytes()) {
            let seq = *self.subjects.get(filter)?.iter().next_back()?;
            return self.msgs.get(&seq).cloned();
        }
        self.msgs
            .values()
            .rev()
            .find(|m| filter_matches(Some(filter), &m.subject))
            .cloned()
    }

    fn remove(&mut self, seq: u64, _erase: bool) -> Result<bool> {
        self.check_open()?;
        Ok(self.take(seq).is_some())
    }

    fn purge(&mut self, filter: Option<&str>, up_to: Option<u64>, keep: u64) -> Result<u64> {
        self.check_open()?;
        let everything = filter.is_none_or(|f| f.is_empty() || f == ">");
        if everything && up_to.is_none() && keep == 0 {
            let n = self.msgs.len() as u64;
            self.msgs.clear();
            self.subjects.clear();
            self.bytes = 0;
            self.first_seq = self.last_seq + 1;
            return Ok(n);
        }
        // Candidates per subject, oldest first; `keep` is per filter as a whole when the
        // filter is one literal subject, and per matching subject otherwise (nats-server
        // keeps the newest `keep` of each subject for wildcard filters).
        let mut doomed = Vec::new();
        for (subject, seqs) in &self.subjects {
            if !filter_matches(filter, subject) {
                continue;
            }
            let eligible: Vec<u64> = seqs
                .iter()
                .copied()
                .filter(|s| up_to.is_none_or(|u| *s < u))
                .collect();
            let keep_n = usize::try_from(keep).unwrap_or(usize::MAX);
            let drop_n = if keep > 0 {
                // Keep the newest `keep` of the subject (of all its messages, not only
                // the eligible ones).
                seqs.len().saturating_sub(keep_n).min(eligible.len())
            } else {
                eligible.len()
            };
            doomed.extend_from_slice(&eligible[..drop_n]);
        }
        let n = doomed.len() as u64;
        for seq in doomed {
            self.take(seq);
        }
        Ok(n)
    }

    fn state(&self) -> StreamState {
        let (first_seq, first_time_ns) = match self.msgs.values().next() {
            Some(m) => (m.seq, m.time_ns),
            None => (self.first_seq, 0),
        };
        let span = if self.msgs.is_empty() {
            0
        } else {
            self.last_seq - first_seq + 1
        };
        StreamState {
            msgs: self.msgs.len() as u64,
            bytes: self.bytes,
            first_seq,
            first_time_ns,
            last_seq: self.last_seq,
            last_time_ns: self.last_time_ns,
            num_deleted: span - self.msgs.len() as u64,
            num_subjects: self.subjects.len() as u64,
        }
    }

    fn subjects_state(&self, filter: &str) -> BTreeMap<String, SubjectState> {
        self.subjects
            .iter()
            .filter(|(s, _)| filter_matches(Some(filter), s))
            .filter_map(|(s, seqs)| {
                Some((
                    s.clone(),
                    SubjectState {
                        msgs: seqs.len() as u64,
                        first_seq: *seqs.iter().next()?,
                        last_seq: *seqs.iter().next_back()?,
                    },
                ))
            })
            .collect()
    }

    fn subject_state(&self, subject: &str) -> Option<SubjectState> {
        let seqs = self.subjects.get(subject)?;
        Some(SubjectState {
            msgs: seqs.len() as u64,
            first_seq: *seqs.iter().next()?,
            last_seq: *seqs.iter().next_back()?,
        })
    }

    fn num_pending(&self, seq: u64, filter: Option<&str>) -> u64 {
        match filter.filter(|f| !f.is_empty() && *f != ">") {
            None => self.msgs.range(seq..).count() as u64,
            Some(f) => self
                .subjects
                .iter()
                .filter(|(s, _)| filter_matches(Some(f), s))
                .map(|(_, seqs)| seqs.range(seq..).count() as u64)
                .sum(),
        }
    }

    fn reset_first_seq(&mut self, seq: u64) -> Result<()> {
        self.check_open()?;
        if !self.msgs.is_empty() {
            return Err(StoreError::Corrupt(
                "cannot renumber a store that holds messages".into(),
            ));
        }
        self.first_seq = seq.max(1);
        self.last_seq = self.first_seq - 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn delete(&mut self) -> Result<()> {
        self.msgs.clear();
        self.subjects.clear();
        self.bytes = 0;
        self.closed = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> MemStore {
        let mut s = MemStore::new();
        for (i, subj) in ["a.1", "a.2", "b.1", "a.1", "a.1"].iter().enumerate() {
            let seq = s
                .append(subj, None, format!("m{i}").as_bytes(), i as i64)
                .expect("append");
            assert_eq!(seq, i as u64 + 1);
        }
        s
    }

    #[test]
    fn append_get_state() {
        let s = filled();
        let st = s.state();
        assert_eq!(
            (st.msgs, st.first_seq, st.last_seq, st.num_subjects),
            (5, 1, 5, 3)
        );
        assert_eq!(s.get(3).expect("get").subject, "b.1");
        assert!(matches!(s.get(9), Err(StoreError::NotFound)));
        assert_eq!(s.subject_state("a.1").map(|x| x.msgs), Some(3));
        assert_eq!(s.num_pending(2, Some("a.*")), 3);
        assert_eq!(s.next_matching(2, Some("a.1")).map(|m| m.seq), Some(4));
        assert_eq!(s.last_matching("a.>").map(|m| m.seq), Some(5));
    }

    #[test]
    fn remove_leaves_gap_and_moves_first() {
        let mut s = filled();
        assert!(s.remove(1, false).expect("remove"));
        assert!(!s.remove(1, false).expect("remove again"));
        assert!(s.remove(3, false).expect("remove"));
        let st = s.state();
        assert_eq!((st.msgs, st.first_seq, st.num_deleted), (3, 2, 1));
        assert_eq!(s.subject_state("b.1"), None);
    }

    #[test]
    fn purge_with_filter_keep_and_up_to() {
        let mut s = filled();
        assert_eq!(s.purge(Some("a.1"), None, 1).expect("purge"), 2);
        assert_eq!(s.subject_state("a.1").map(|x| x.first_seq), Some(5));
        let mut s = filled();
        assert_eq!(s.purge(None, Some(4), 0).expect("purge"), 3);
        assert_eq!(s.state().first_seq, 4);
        let mut s = filled();
        assert_eq!(s.purge(None, None, 0).expect("purge"), 5);
        let st = s.state();
        assert_eq!((st.msgs, st.first_seq, st.last_seq), (0, 6, 5));
        assert_eq!(s.append("x", None, b"", 9).expect("append"), 6);
    }

    #[test]
    fn reset_first_seq_on_empty_store() {
        let mut s = MemStore::new();
        s.reset_first_seq(100).expect("reset");
        assert_eq!(s.append("x", None, b"", 0).expect("append"), 100);
        assert!(s.reset_first_seq(5).is_err());
    }
}
