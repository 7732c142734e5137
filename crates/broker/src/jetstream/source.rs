//! Stream sources and mirrors within one server: a task per source reads the origin
//! stream's store from where it left off and feeds the stream.
//!
//! - A **source** copies the origin's messages (those matching `filter_subject`, or the
//!   `subject_transforms` sources, with their destinations applied) into the stream's
//!   ingest queue like publishes (so the stream's rules, limits and back-pressure apply),
//!   each with a `Nats-Stream-Source: <origin> <seq> <filter> <dest>` header as
//!   nats-server writes it. After a restart, the position is found again from the last such
//!   header in the stream.
//! - A **mirror** keeps the origin's sequence numbers, times, subjects and headers: it
//!   writes into its own store directly (a mirror takes no publishes), numbering an empty
//!   store from the origin's first sequence and leaving gaps where the origin has them.
//!
//! An origin that does not exist yet (or was deleted) is waited for. Origins in other
//! accounts or domains (`external`) are refused at creation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use std::sync::atomic::AtomicBool;

use serde::Deserialize;

use super::api::{self, ApiError, StreamConfig, SubjectTransformConfig};
use super::stream::{Limits, Stream};
use super::transform::Transform;
use super::{headers, JsAccount};
use crate::server::ServerInner;

/// How often a source whose origin is missing looks again.
const ORIGIN_RETRY: Duration = Duration::from_secs(1);
/// Messages read from the origin under one lock.
const BATCH: usize = 256;

/// One entry of `sources`, or the `mirror`.
#[derive(Debug, Clone, Deserialize)]
struct SourceConfig {
    name: String,
    #[serde(default)]
    opt_start_seq: u64,
    #[serde(default)]
    opt_start_time: Option<String>,
    #[serde(default)]
    filter_subject: String,
    #[serde(default)]
    subject_transforms: Vec<SubjectTransformConfig>,
    #[serde(default)]
    external: Option<serde_json::Value>,
}

/// A source or mirror, checked and ready to run.
#[derive(Debug, Clone)]
pub(crate) struct SourceSpec {
    pub name: String,
    start_seq: u64,
    start_time_ns: i64,
    /// (filter, transform to apply to what it matches); empty: everything, unchanged.
    filters: Vec<(String, Option<Transform>)>,
    /// `<filter> <dest>` of the header (nats-server's index name without the stream).
    header_tail: String,
    mirror: bool,
    /// Origin sequence of the last message copied (stream info's `lag`).
    pub copied: Arc<AtomicU64>,
    /// Set when an update replaced the stream's sources: the task ends.
    pub stop: Arc<AtomicBool>,
}

impl SourceSpec {
    /// Whether the origin's `subject` is copied, and under which subject.
    fn map(&self, subject: &str) -> Option<String> {
        if self.filters.is_empty() {
            return Some(subject.to_string());
        }
        self.filters.iter().find_map(|(filter, t)| {
            if !midge_store::filter_matches(Some(filter), subject) {
                return None;
            }
            Some(match t {
                Some(t) => t.apply(subject).unwrap_or_else(|| subject.to_string()),
                None => subject.to_string(),
            })
        })
    }

    /// One filter for the store's reads (the origin's `next_matching`); `None`: all.
    fn read_filter(&self) -> Option<&str> {
        match self.filters.as_slice() {
            [(f, _)] => Some(f.as_str()),
            _ => None,
        }
    }
}

fn parse(v: &serde_json::Value, mirror: bool) -> Result<SourceSpec, ApiError> {
    let c: SourceConfig =
        serde_json::from_value(v.clone()).map_err(|_| ApiError::invalid_json())?;
    if c.external.is_some() {
        return Err(ApiError::invalid_config(
            "sources and mirrors in other accounts or domains (external) are not supported by midge yet",
        ));
    }
    if !api::is_valid_name(&c.name) {
        return Err(if mirror {
            ApiError::new(400, 10142, "mirrored stream name is invalid")
        } else {
            ApiError::new(400, 10141, "sourced stream name is invalid")
        });
    }
    if !c.filter_subject.is_empty() && !c.subject_transforms.is_empty() {
        return Err(if mirror {
            ApiError::new(
                400,
                10150,
                "mirror with multiple subject transforms cannot also have a single subject filter",
            )
        } else {
            ApiError::new(
                400,
                10144,
                "source with multiple subject transforms cannot also have a single subject filter",
            )
        });
    }
    let mut filters = Vec::new();
    let (mut srcs, mut dests) = (Vec::new(), Vec::new());
    if !c.filter_subject.is_empty() {
        if !midge_proto::subject::is_valid_subject(c.filter_subject.as_bytes()) {
            return Err(ApiError::new(
                400,
                10145,
                "source subject filter is invalid",
            ));
        }
        filters.push((c.filter_subject.clone(), None));
        srcs.push(c.filter_subject.clone());
        dests.push(">".to_string());
    }
    for t in &c.subject_transforms {
        let src = if t.src.is_empty() {
            ">"
        } else {
            t.src.as_str()
        };
        if !midge_proto::subject::is_valid_subject(src.as_bytes()) {
            return Err(ApiError::new(
                400,
                10145,
                "source subject filter is invalid",
            ));
        }
        let transform = if t.dest.is_empty() {
            None
        } else {
            Some(Transform::new(src, &t.dest).map_err(|_| {
                ApiError::new(400, 10146, "source transform destination is invalid")
            })?)
        };
        if filters.iter().any(|(f, _)| super::subjects_collide(f, src)) {
            return Err(ApiError::new(400, 10147, "source filters can not overlap"));
        }
        filters.push((src.to_string(), transform));
        srcs.push(src.to_string());
        dests.push(if t.dest.is_empty() {
            ">".into()
        } else {
            t.dest.clone()
        });
    }
    let start_time_ns = match c.opt_start_time.as_deref() {
        Some(t) if !t.is_empty() => parse_rfc3339(t).ok_or_else(ApiError::invalid_json)?,
        _ => 0,
    };
    if mirror && c.opt_start_seq > 0 && start_time_ns > 0 {
        return Err(ApiError::new(
            400,
            10032,
            "stream mirrors can not have both start seq and start time configured",
        ));
    }
    let header_tail = if srcs.is_empty() {
        "> >".to_string()
    } else {
        format!("{} {}", srcs.join("\u{c}"), dests.join("\u{c}"))
    };
    Ok(SourceSpec {
        name: c.name,
        start_seq: c.opt_start_seq,
        start_time_ns,
        filters,
        header_tail,
        mirror,
        copied: Arc::new(AtomicU64::new(0)),
        stop: Arc::new(AtomicBool::new(false)),
    })
}

/// The sources and mirror of a configuration, checked (nats-server's rules for them).
pub(crate) fn specs(cfg: &StreamConfig) -> Result<Vec<SourceSpec>, ApiError> {
    let mut out = Vec::new();
    if let Some(m) = &cfg.mirror {
        if !cfg.subjects.is_empty() {
            return Err(ApiError::new(
                400,
                10034,
                "stream mirrors can not contain subjects",
            ));
        }
        if cfg.sources.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::new(
                400,
                10031,
                "stream mirrors can not also contain other sources",
            ));
        }
        if cfg.first_seq > 0 {
            return Err(ApiError::new(
                400,
                10143,
                "stream mirrors can not have first sequence configured",
            ));
        }
        out.push(parse(m, true)?);
    }
    let mut seen = std::collections::HashSet::new();
    for s in cfg.sources.iter().flatten() {
        let spec = parse(s, false)?;
        if !seen.insert(format!("{} {}", spec.name, spec.header_tail)) {
            return Err(ApiError::new(
                400,
                10140,
                "duplicate source configuration detected",
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

/// `2024-01-02T03:04:05.123Z` or with an offset: Unix nanoseconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let (date, rest) = s.split_once(['T', 't'])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, offset_secs) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let at = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(at);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (h, mi) = off[1..].split_once(':')?;
        (
            t,
            sign * (h.parse::<i64>().ok()? * 3600 + mi.parse::<i64>().ok()? * 60),
        )
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi, sec): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32)
    };
    // Days since the epoch of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Starts the source and mirror tasks of a stream (`specs` replace those it had).
pub(crate) fn spawn(
    srv: &Arc<ServerInner>,
    jsa: &Arc<JsAccount>,
    stream: &Arc<Stream>,
    specs: Vec<SourceSpec>,
    limits: Arc<dyn Limits + Send + Sync>,
) {
    let old = std::mem::replace(&mut *stream.sources.lock(), specs.clone());
    for s in old {
        s.stop.store(true, Ordering::Release);
    }
    for spec in specs {
        tokio::spawn(run(
            Arc::downgrade(srv),
            Arc::downgrade(jsa),
            stream.clone(),
            spec,
            limits.clone(),
        ));
    }
}

/// Where to start reading the origin: after what the stream already copied from it (its
/// last `Nats-Stream-Source` header, or its last sequence for a mirror), else the
/// configured start.
fn starting_seq(stream: &Stream, spec: &SourceSpec, origin: &Stream) -> u64 {
    let inner = stream.inner.lock();
    let st = inner.store.state();
    if spec.mirror {
        if st.last_seq > 0 {
            return st.last_seq + 1;
        }
    } else if st.msgs > 0 {
        let mut best = 0;
        let mut at = st.first_seq;
        while let Some(m) = inner.store.next_matching(at, None) {
            at = m.seq + 1;
            let Some(h) = m.headers.as_deref() else {
                continue;
            };
            let Some(v) = headers::get(h, headers::STREAM_SOURCE) else {
                continue;
            };
            let mut fields = v.split(' ');
            if fields.next() == Some(spec.name.as_str()) {
                if let Some(seq) = fields.next().and_then(|s| s.parse::<u64>().ok()) {
                    best = best.max(seq);
                }
            }
        }
        if best > 0 {
            return best + 1;
        }
    }
    drop(inner);
    if spec.start_seq > 0 {
        return spec.start_seq;
    }
    if spec.start_time_ns > 0 {
        let o = origin.inner.lock();
        let mut at = o.store.state().first_seq;
        while let Some(m) = o.store.next_matching(at, None) {
            if m.time_ns >= spec.start_time_ns {
                return m.seq;
            }
            at = m.seq + 1;
        }
        return o.store.state().last_seq + 1;
    }
    1
}

async fn run(
    srv: Weak<ServerInner>,
    jsa: Weak<JsAccount>,
    stream: Arc<Stream>,
    spec: SourceSpec,
    limits: Arc<dyn Limits + Send + Sync>,
) {
    let mut shutdown = match srv.upgrade() {
        Some(s) => s.shutdown_signal(),
        None => return,
    };
    let mut next: Option<u64> = None;
    let stopped = |spec: &SourceSpec| stream.is_closed() || spec.stop.load(Ordering::Acquire);
    while !stopped(&spec) {
        let origin = jsa.upgrade().and_then(|a| a.stream(&spec.name));
        let Some(origin) = origin.filter(|o| !o.is_closed()) else {
            tokio::select! {
                _ = tokio::time::sleep(ORIGIN_RETRY) => continue,
                _ = shutdown.changed() => return,
            }
        };
        let mut changes = origin.last_seq.subscribe();
        let mut at = *next.get_or_insert_with(|| starting_seq(&stream, &spec, &origin));
        loop {
            if stopped(&spec) || origin.is_closed() {
                break;
            }
            let batch: Vec<midge_store::StoredMsg> = {
                let o = origin.inner.lock();
                let first = o.store.state().first_seq;
                at = at.max(first);
                let mut out = Vec::new();
                let mut seq = at;
                while out.len() < BATCH {
                    let Some(m) = o.store.next_matching(seq, spec.read_filter()) else {
                        break;
                    };
                    seq = m.seq + 1;
                    out.push(m);
                }
                out
            };
            if batch.is_empty() {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { break },
                    _ = tokio::time::sleep(ORIGIN_RETRY) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            for m in batch {
                at = m.seq + 1;
                if spec.mirror {
                    mirror_one(&stream, &m, &*limits);
                } else {
                    let Some(subject) = spec.map(&m.subject) else {
                        continue;
                    };
                    let value = format!("{} {} {}", spec.name, m.seq, spec.header_tail);
                    let h = headers::append(m.headers.as_deref(), headers::STREAM_SOURCE, &value);
                    if stream
                        .ingest
                        .push(subject.as_bytes(), None, Some(&h), &m.payload)
                    {
                        wait_for_room(&stream).await;
                    }
                }
                spec.copied.store(m.seq, Ordering::Relaxed);
            }
            if spec.mirror {
                stream.notify_stored();
            }
            next = Some(at);
        }
    }
}

/// Waits until the stream's queue has room again (the source's back-pressure).
async fn wait_for_room(stream: &Stream) {
    loop {
        let drained = stream.ingest.drained.notified();
        if stream.ingest.is_under_half() {
            return;
        }
        drained.await;
    }
}

/// Stores one origin message in a mirror at the origin's sequence.
fn mirror_one(stream: &Stream, m: &midge_store::StoredMsg, limits: &dyn Limits) {
    let mut inner = stream.inner.lock();
    let st = inner.store.state();
    if m.seq <= st.last_seq {
        return;
    }
    if st.msgs == 0 && m.seq > st.last_seq + 1 {
        let _ = inner.store.reset_first_seq(m.seq);
    }
    // Gaps in the origin stay gaps: numbers are used and removed.
    while inner.store.state().last_seq + 1 < m.seq {
        match inner.store.append(&m.subject, None, b"", m.time_ns) {
            Ok(seq) => {
                let _ = inner.store.remove(seq, false);
            }
            Err(_) => return,
        }
    }
    let before = inner.store.state().bytes;
    let headers = m.headers.as_deref().filter(|h| !h.is_empty());
    if let Err(e) = inner
        .store
        .append(&m.subject, headers, &m.payload, m.time_ns)
    {
        tracing::warn!(stream = %stream.name, "mirror store failed: {e}");
        return;
    }
    let storage = inner.config.storage;
    limits.usage_changed(storage, before, inner.store.state().bytes);
    inner.enforce_limits(limits, Some(&m.subject));
}

/// `mirror` / `sources` of a stream info: how far behind its origin each is.
pub(crate) fn info(
    jsa: &JsAccount,
    stream: &Stream,
) -> (Option<api::SourceInfo>, Vec<api::SourceInfo>) {
    let specs = stream.sources.lock().clone();
    let mut mirror = None;
    let mut sources = Vec::new();
    for s in specs {
        let origin_last = jsa.stream(&s.name).map_or(0, |o| *o.last_seq.borrow());
        let info = api::SourceInfo {
            name: s.name.clone(),
            lag: origin_last.saturating_sub(s.copied.load(Ordering::Relaxed)),
            active: 0,
            filter_subject: s
                .filters
                .first()
                .filter(|(_, t)| t.is_none())
                .map(|(f, _)| f.clone()),
        };
        if s.mirror {
            mirror = Some(info);
        } else {
            sources.push(info);
        }
    }
    (mirror, sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:01.5Z"), Some(1_500_000_000));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(
            parse_rfc3339("2024-03-01T00:00:00Z"),
            Some(1_709_251_200_000_000_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn source_rules() {
        let cfg =
            |v: serde_json::Value| -> StreamConfig { serde_json::from_value(v).expect("config") };
        let e = specs(&cfg(
            serde_json::json!({"name":"M","mirror":{"name":"O"},"subjects":["x"]}),
        ))
        .expect_err("mirror with subjects");
        assert_eq!(e.err_code, 10034);
        let e = specs(&cfg(
            serde_json::json!({"name":"S","sources":[{"name":"O"},{"name":"O"}]}),
        ))
        .expect_err("duplicate");
        assert_eq!(e.err_code, 10140);
        let ok = specs(&cfg(serde_json::json!({"name":"S","sources":[
            {"name":"O","subject_transforms":[{"src":"a.*","dest":"b.$1"}]},
            {"name":"P","filter_subject":"p.>"}]})))
        .expect("valid");
        assert_eq!(ok[0].map("a.x").as_deref(), Some("b.x"));
        assert_eq!(ok[0].map("c"), None);
        assert_eq!(ok[1].header_tail, "p.> >");
    }
}
