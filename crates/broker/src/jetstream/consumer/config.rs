//! `ConsumerConfig` as the JetStream API carries it, nats-server's defaults and its checks.
//!
//! Decoding follows Go's `encoding/json` where clients can tell: unknown fields are
//! ignored, `null` is the zero value, an unknown enum string or a wrongly typed field makes
//! the whole request "invalid JSON". Encoding writes the fields in nats-server's order and
//! leaves out the same empty ones (`omitempty`), so a config read back looks the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::errors::{self, ApiError};
use super::time::parse_rfc3339;

/// nats-server's `JsAckWaitDefault`: 30 s.
pub(crate) const DEFAULT_ACK_WAIT_NS: i64 = 30_000_000_000;
/// nats-server's `JsDeleteWaitTimeDefault`: an ephemeral without interest goes after 5 s.
pub(crate) const DEFAULT_INACTIVE_THRESHOLD_NS: i64 = 5_000_000_000;
/// nats-server's `JsDefaultMaxAckPending`.
pub(crate) const DEFAULT_MAX_ACK_PENDING: i64 = 1000;
/// nats-server's `JSWaitQueueDefaultMax`: pull requests a consumer keeps waiting.
pub(crate) const DEFAULT_MAX_WAITING: i64 = 512;
/// `JSMaxDescriptionLen`.
pub(crate) const MAX_DESCRIPTION_LEN: usize = 4 * 1024;
/// `JSMaxMetadataLen`.
pub(crate) const MAX_METADATA_LEN: usize = 128 * 1024;
/// `JSMaxNameLen`.
pub(crate) const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum DeliverPolicy {
    #[default]
    #[serde(rename = "all", alias = "undefined")]
    All,
    #[serde(rename = "last")]
    Last,
    #[serde(rename = "new")]
    New,
    #[serde(rename = "by_start_sequence")]
    ByStartSequence,
    #[serde(rename = "by_start_time")]
    ByStartTime,
    #[serde(rename = "last_per_subject")]
    LastPerSubject,
}

/// The zero value is `none`, as in nats-server (clients always send one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum AckPolicy {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "all")]
    All,
    #[serde(rename = "explicit")]
    Explicit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) enum ReplayPolicy {
    #[default]
    #[serde(rename = "instant")]
    Instant,
    #[serde(rename = "original")]
    Original,
}

/// `null` decodes as the type's zero value, as Go does.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StartTime>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => match parse_rfc3339(&text) {
            Some(ns) => Ok(Some(StartTime { ns, text })),
            None => Err(serde::de::Error::custom("bad time")),
        },
    }
}

/// `opt_start_time`: the instant, and the text it came as (echoed back unchanged, as Go
/// keeps the zone it parsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartTime {
    pub ns: i64,
    pub text: String,
}

impl Serialize for StartTime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}
fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// A consumer's configuration (`ConsumerConfig` in nats-server 2.10).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct ConsumerConfig {
    #[serde(
        rename = "durable_name",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub durable: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub name: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub description: String,
    #[serde(deserialize_with = "nullable")]
    pub deliver_policy: DeliverPolicy,
    #[serde(skip_serializing_if = "is_zero_u64", deserialize_with = "nullable")]
    pub opt_start_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "opt_time")]
    pub opt_start_time: Option<StartTime>,
    #[serde(deserialize_with = "nullable")]
    pub ack_policy: AckPolicy,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "nullable")]
    pub ack_wait: i64,
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "nullable")]
    pub max_deliver: i64,
    /// Nanoseconds per redelivery.
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    pub backoff: Vec<i64>,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub filter_subject: String,
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    pub filter_subjects: Vec<String>,
    #[serde(deserialize_with = "nullable")]
    pub replay_policy: ReplayPolicy,
    #[serde(
        rename = "rate_limit_bps",
        skip_serializing_if = "is_zero_u64",
        deserialize_with = "nullable"
    )]
    pub rate_limit: u64,
    #[serde(
        rename = "sample_freq",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub sample_frequency: String,
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "nullable")]
    pub max_waiting: i64,
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "nullable")]
    pub max_ack_pending: i64,
    /// Nanoseconds.
    #[serde(
        rename = "idle_heartbeat",
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub heartbeat: i64,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub flow_control: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub headers_only: bool,
    #[serde(
        rename = "max_batch",
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub max_request_batch: i64,
    /// Nanoseconds.
    #[serde(
        rename = "max_expires",
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub max_request_expires: i64,
    #[serde(
        rename = "max_bytes",
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub max_request_max_bytes: i64,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub deliver_subject: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub deliver_group: String,
    /// Nanoseconds.
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "nullable")]
    pub inactive_threshold: i64,
    #[serde(rename = "num_replicas", deserialize_with = "nullable")]
    pub replicas: i64,
    #[serde(
        rename = "mem_storage",
        skip_serializing_if = "is_false",
        deserialize_with = "nullable"
    )]
    pub memory_storage: bool,
    #[serde(skip_serializing_if = "is_false", deserialize_with = "nullable")]
    pub direct: bool,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "nullable"
    )]
    pub metadata: BTreeMap<String, String>,
}

/// `action` of a create request (2.10): create only, update only, or either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub(crate) enum ConsumerAction {
    #[default]
    #[serde(rename = "")]
    CreateOrUpdate,
    #[serde(rename = "update")]
    Update,
    #[serde(rename = "create")]
    Create,
}

/// The body of `$JS.API.CONSUMER.CREATE...`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CreateConsumerRequest {
    #[serde(rename = "stream_name", deserialize_with = "nullable")]
    pub stream: String,
    #[serde(deserialize_with = "nullable")]
    pub config: ConsumerConfig,
    #[serde(deserialize_with = "nullable")]
    pub action: ConsumerAction,
}

/// What a consumer's checks need to know of its stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamFacts {
    /// The stream's subjects (for the deliver-subject cycle check).
    pub subjects: Vec<String>,
    /// The stream has sources or a mirror: its subjects do not bound what it holds.
    pub external: bool,
    pub retention: Retention,
    pub replicas: i64,
    /// `consumer_limits.max_ack_pending` and `.inactive_threshold` of the stream (2.10).
    pub limit_max_ack_pending: i64,
    pub limit_inactive_threshold: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Retention {
    #[default]
    Limits,
    Interest,
    WorkQueue,
}

impl ConsumerConfig {
    pub fn is_durable(&self) -> bool {
        !self.durable.is_empty()
    }

    pub fn is_push(&self) -> bool {
        !self.deliver_subject.is_empty()
    }

    pub fn is_pull(&self) -> bool {
        self.deliver_subject.is_empty()
    }

    /// `filter_subject` and `filter_subjects` as one list (empty: everything).
    pub fn filters(&self) -> Vec<String> {
        let mut out = self.filter_subjects.clone();
        if !self.filter_subject.is_empty() {
            out.push(self.filter_subject.clone());
        }
        out
    }

    /// The sampling percentage of `sample_freq` (`"50"` or `"50%"`); 0 when unset.
    pub fn sample_percent(&self) -> u32 {
        self.sample_frequency
            .trim_end_matches('%')
            .parse::<u32>()
            .unwrap_or(0)
    }

    /// Fills the defaults nats-server fills before checking (`setConsumerConfigDefaults`).
    pub fn set_defaults(&mut self, stream: &StreamFacts) {
        if self.deliver_subject.is_empty() && self.max_waiting == 0 {
            self.max_waiting = DEFAULT_MAX_WAITING;
        }
        if self.ack_wait == 0 && self.ack_policy != AckPolicy::None {
            self.ack_wait = DEFAULT_ACK_WAIT_NS;
        }
        if self.max_deliver == 0 {
            self.max_deliver = -1;
        }
        if let Some(first) = self.backoff.first() {
            self.ack_wait = *first;
        }
        if self.max_ack_pending == 0 {
            self.max_ack_pending = stream.limit_max_ack_pending;
        }
        if self.inactive_threshold == 0 {
            self.inactive_threshold = stream.limit_inactive_threshold;
        }
        if self.ack_policy != AckPolicy::None && self.max_ack_pending == 0 {
            self.max_ack_pending = DEFAULT_MAX_ACK_PENDING;
        }
    }

    /// Ephemerals always have an inactivity threshold: the default is written into the
    /// config after the checks (nats-server's `updateInactiveThreshold`), so a repeated
    /// create of an ephemeral compares the request without it.
    pub fn set_ephemeral_threshold(&mut self) {
        if !self.is_durable() && self.inactive_threshold <= 0 {
            self.inactive_threshold = DEFAULT_INACTIVE_THRESHOLD_NS;
        }
    }

    /// nats-server's `checkConsumerCfg`, in its order (the first failure is the answer).
    pub fn check(&self, stream: &StreamFacts) -> Result<(), ApiError> {
        if self.replicas > 0 && self.replicas > stream.replicas.max(1) {
            return Err(errors::replicas_exceeds_stream());
        }
        if self.replicas < 0 {
            return Err(errors::replicas_negative());
        }
        if !self.backoff.is_empty()
            && self.max_deliver != -1
            && self.max_deliver <= self.backoff.len() as i64
        {
            return Err(errors::max_deliver_backoff());
        }
        if self.description.len() > MAX_DESCRIPTION_LEN {
            return Err(errors::description_too_long(MAX_DESCRIPTION_LEN));
        }
        if self.is_push() {
            let ds = self.deliver_subject.as_bytes();
            if !midge_proto::subject::is_literal(ds) {
                return Err(errors::deliver_to_wildcards());
            }
            if !midge_proto::subject::is_valid_subject(ds) {
                return Err(errors::invalid_deliver_subject());
            }
            if stream
                .subjects
                .iter()
                .any(|s| midge_proto::subject::subset_match(ds, s.as_bytes()))
            {
                return Err(errors::deliver_cycle());
            }
            if self.max_waiting != 0 {
                return Err(errors::push_max_waiting());
            }
            if self.max_ack_pending > 0 && self.ack_policy == AckPolicy::None {
                return Err(errors::max_pending_ack_policy_required());
            }
            if self.heartbeat > 0 && self.heartbeat < 100_000_000 {
                return Err(errors::small_heartbeat());
            }
        } else {
            if self.ack_policy == AckPolicy::None && stream.retention == Retention::WorkQueue {
                return Err(errors::pull_requires_ack());
            }
            if self.rate_limit > 0 {
                return Err(errors::pull_with_rate_limit());
            }
            if self.max_waiting < 0 {
                return Err(errors::max_waiting_negative());
            }
            if self.heartbeat > 0 {
                return Err(errors::hb_requires_push());
            }
            if self.flow_control {
                return Err(errors::fc_requires_push());
            }
            if self.max_request_batch < 0 {
                return Err(errors::max_request_batch_negative());
            }
            if self.max_request_expires != 0 && self.max_request_expires < 1_000_000 {
                return Err(errors::max_request_expires_too_small());
            }
        }
        if stream.limit_max_ack_pending > 0 && self.max_ack_pending > stream.limit_max_ack_pending {
            return Err(ApiError::new(
                400,
                10121,
                format!(
                    "consumer max ack pending exceeds system limit of {}",
                    stream.limit_max_ack_pending
                ),
            ));
        }
        if stream.limit_inactive_threshold > 0
            && self.inactive_threshold > stream.limit_inactive_threshold
        {
            return Err(ApiError::new(
                400,
                10153,
                format!(
                    "consumer inactive threshold exceeds system limit of {}",
                    go_duration_string(stream.limit_inactive_threshold)
                ),
            ));
        }
        if self.direct {
            if self.is_pull() {
                return Err(errors::direct_requires_push());
            }
            if self.is_durable() {
                return Err(errors::direct_requires_ephemeral());
            }
        }
        // nats-server 2.9 refuses filters outside the stream's subjects (2.10 dropped the
        // check; clients tested against either see an error that explains an empty
        // consumer).
        if !stream.external
            && self
                .filters()
                .iter()
                .any(|f| !valid_filtered_subject(f, &stream.subjects))
        {
            return Err(errors::filter_not_subset());
        }
        if !self.filter_subject.is_empty() && !self.filter_subjects.is_empty() {
            return Err(errors::duplicate_filter_subjects());
        }
        if !self.filter_subject.is_empty()
            && !midge_proto::subject::is_valid_subject(self.filter_subject.as_bytes())
        {
            return Err(errors::bad_filter_subject());
        }
        if self.filter_subjects.iter().any(String::is_empty) {
            return Err(errors::empty_filter());
        }
        let filters = self.filters();
        for (i, f) in filters.iter().enumerate() {
            if !midge_proto::subject::is_valid_subject(f.as_bytes()) {
                return Err(errors::bad_filter_subject());
            }
            if filters
                .iter()
                .enumerate()
                .any(|(j, g)| i != j && subjects_collide(f, g))
            {
                return Err(errors::overlapping_filter_subjects());
            }
        }
        self.check_start()?;
        if !self.sample_frequency.is_empty() {
            let s = self.sample_frequency.trim_end_matches('%');
            match s.parse::<i64>() {
                Ok(n) if n >= 0 => {}
                Ok(_) => return Err(errors::invalid_sampling("<nil>")),
                Err(_) => {
                    return Err(errors::invalid_sampling(&format!(
                        "strconv.Atoi: parsing {s:?}: invalid syntax"
                    )))
                }
            }
        }
        if self.flow_control && self.heartbeat == 0 {
            return Err(errors::flow_control_needs_heartbeats());
        }
        if !self.durable.is_empty() && !self.name.is_empty() && self.name != self.durable {
            return Err(errors::durable_and_name_mismatch());
        }
        let meta: usize = self.metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
        if meta > MAX_METADATA_LEN {
            return Err(errors::metadata_length(&format!(
                "{}KB",
                MAX_METADATA_LEN / 1024
            )));
        }
        Ok(())
    }

    fn check_start(&self) -> Result<(), ApiError> {
        let bad_start = |dp: &str, start: &str| {
            Err(errors::invalid_policy(format!(
                "consumer delivery policy is deliver {dp}, but optional start {start} is also set"
            )))
        };
        let not_set = |dp: &str, what: &str| {
            Err(errors::invalid_policy(format!(
                "consumer delivery policy is deliver {dp}, but optional {what} is not set"
            )))
        };
        let seq = self.opt_start_seq > 0;
        let time = self.opt_start_time.is_some();
        match self.deliver_policy {
            DeliverPolicy::All | DeliverPolicy::Last | DeliverPolicy::New => {
                let dp = match self.deliver_policy {
                    DeliverPolicy::All => "all",
                    DeliverPolicy::Last => "last",
                    _ => "new",
                };
                if seq {
                    return bad_start(dp, "sequence");
                }
                if time {
                    return bad_start(dp, "time");
                }
            }
            DeliverPolicy::LastPerSubject => {
                if seq {
                    return bad_start("last per subject", "sequence");
                }
                if time {
                    return bad_start("last per subject", "time");
                }
                if self.filter_subject.is_empty() && self.filter_subjects.is_empty() {
                    return not_set("last per subject", "filter subject");
                }
            }
            DeliverPolicy::ByStartSequence => {
                if !seq {
                    return not_set("by start sequence", "start sequence");
                }
                if time {
                    return bad_start("by start sequence", "time");
                }
            }
            DeliverPolicy::ByStartTime => {
                if !time {
                    return not_set("by start time", "start time");
                }
                if self.opt_start_seq != 0 {
                    return bad_start("by start time", "start sequence");
                }
            }
        }
        Ok(())
    }

    /// Whether `new` may replace this config of a running consumer (`checkNewConsumerConfig`);
    /// the error text is nats-server's.
    pub fn check_update(&self, new: &ConsumerConfig) -> Result<(), ApiError> {
        if self == new {
            return Ok(());
        }
        let fail = |text: &str| Err(errors::create_failed(text));
        if self.deliver_policy != new.deliver_policy {
            return fail("deliver policy can not be updated");
        }
        if self.opt_start_seq != new.opt_start_seq {
            return fail("start sequence can not be updated");
        }
        if self.opt_start_time.as_ref().map(|t| t.ns) != new.opt_start_time.as_ref().map(|t| t.ns) {
            return fail("start time can not be updated");
        }
        if self.ack_policy != new.ack_policy {
            return fail("ack policy can not be updated");
        }
        if self.replay_policy != new.replay_policy {
            return fail("replay policy can not be updated");
        }
        if self.heartbeat != new.heartbeat {
            return fail("heart beats can not be updated");
        }
        if self.flow_control != new.flow_control {
            return fail("flow control can not be updated");
        }
        if self.max_waiting != new.max_waiting {
            return fail("max waiting can not be updated");
        }
        if self.deliver_subject != new.deliver_subject {
            if self.deliver_subject.is_empty() {
                return fail("can not update pull consumer to push based");
            }
            if new.deliver_subject.is_empty() {
                return fail("can not update push consumer to pull based");
            }
        }
        if !new.backoff.is_empty()
            && new.max_deliver != -1
            && new.max_deliver <= new.backoff.len() as i64
        {
            return Err(errors::max_deliver_backoff());
        }
        Ok(())
    }

    /// The wait before redelivering after delivery number `deliveries` (1 = the first):
    /// the backoff entry for it (the last one past the end), else `ack_wait`.
    pub fn ack_wait_for(&self, deliveries: u64) -> i64 {
        if self.backoff.is_empty() {
            return self.ack_wait.max(1);
        }
        let i = usize::try_from(deliveries.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(self.backoff.len() - 1);
        self.backoff[i].max(1)
    }
}

/// Go's `time.Duration.String()` for whole values (`5s`, `1m30s`, `250ms`).
pub(crate) fn go_duration_string(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns % 1_000_000_000 != 0 && ns.abs() < 1_000_000_000 {
        return if ns % 1_000_000 == 0 {
            format!("{}ms", ns / 1_000_000)
        } else if ns % 1000 == 0 {
            format!("{}µs", ns / 1000)
        } else {
            format!("{ns}ns")
        };
    }
    let mut out = String::new();
    let mut secs = ns as f64 / 1e9;
    if secs >= 3600.0 {
        let h = (secs / 3600.0).floor();
        out.push_str(&format!("{h}h"));
        secs -= h * 3600.0;
    }
    if secs >= 60.0 || !out.is_empty() {
        let m = (secs / 60.0).floor();
        out.push_str(&format!("{m}m"));
        secs -= m * 60.0;
    }
    let secs = (secs * 1e9).round() / 1e9;
    out.push_str(&format!("{secs}s"));
    out
}

/// Whether a filter selects something of a stream with `subjects`: it is inside one of
/// them, or (with wildcards) covers one of them (nats-server 2.9's `validFilteredSubject`).
fn valid_filtered_subject(filter: &str, subjects: &[String]) -> bool {
    use midge_proto::subject::{is_literal, is_valid_subject, subset_match};
    if !is_valid_subject(filter.as_bytes()) {
        return false;
    }
    let wildcard = !is_literal(filter.as_bytes());
    subjects.iter().any(|s| {
        subset_match(filter.as_bytes(), s.as_bytes())
            || (wildcard && subset_match(s.as_bytes(), filter.as_bytes()))
    })
}

/// Whether some literal subject matches both `a` and `b` (nats-server's `SubjectsCollide`).
pub(crate) fn subjects_collide(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let ta: Vec<&str> = a.split('.').collect();
    let tb: Vec<&str> = b.split('.').collect();
    let fwc_a = ta.last() == Some(&">");
    let fwc_b = tb.last() == Some(&">");
    let (la, lb) = (ta.len(), tb.len());
    if la != lb && !((fwc_a && lb >= la) || (fwc_b && la >= lb)) {
        return false;
    }
    for (x, y) in ta.iter().zip(tb.iter()) {
        if *x == ">" || *y == ">" {
            return true;
        }
        if *x != "*" && *y != "*" && x != y {
            return false;
        }
    }
    true
}

/// Whether a consumer or durable name is acceptable (`isValidName`): non-empty, no
/// whitespace, and none of `.`, `*`, `>`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<ConsumerConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn decodes_like_go() {
        let c = decode(r#"{"durable_name":"d","ack_policy":"explicit","unknown":1,"description":null,"deliver_policy":"undefined"}"#)
            .expect("decodes");
        assert_eq!(c.durable, "d");
        assert_eq!(c.ack_policy, AckPolicy::Explicit);
        assert_eq!(c.deliver_policy, DeliverPolicy::All);
        assert!(decode(r#"{"deliver_policy":"bogus"}"#).is_err());
        assert!(decode(r#"{"max_deliver":"x"}"#).is_err());
        assert!(decode(r#"{"max_deliver":1.5}"#).is_err());
        assert!(decode(r#"{"opt_start_time":"yesterday"}"#).is_err());
        let empty = decode("{}").expect("decodes");
        assert_eq!(empty.ack_policy, AckPolicy::None);
    }

    #[test]
    fn encodes_like_go() {
        let mut c =
            decode(r#"{"durable_name":"D","name":"D","ack_policy":"explicit"}"#).expect("decodes");
        c.set_defaults(&StreamFacts::default());
        assert_eq!(
            serde_json::to_string(&c).expect("encodes"),
            r#"{"durable_name":"D","name":"D","deliver_policy":"all","ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","max_waiting":512,"max_ack_pending":1000,"num_replicas":0}"#
        );
        let mut e = decode(r#"{"name":"P","deliver_subject":"dd","ack_policy":"explicit","idle_heartbeat":1000000000,"flow_control":true}"#)
            .expect("decodes");
        e.set_defaults(&StreamFacts::default());
        e.set_ephemeral_threshold();
        assert_eq!(
            serde_json::to_string(&e).expect("encodes"),
            r#"{"name":"P","deliver_policy":"all","ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","max_ack_pending":1000,"idle_heartbeat":1000000000,"flow_control":true,"deliver_subject":"dd","inactive_threshold":5000000000,"num_replicas":0}"#
        );
        let t = decode(
            r#"{"deliver_policy":"by_start_time","opt_start_time":"2024-01-01T01:00:00+02:00"}"#,
        )
        .expect("decodes");
        assert!(serde_json::to_string(&t)
            .expect("encodes")
            .contains(r#""opt_start_time":"2024-01-01T01:00:00+02:00""#));
    }

    #[test]
    fn checks_in_nats_server_order() {
        let facts = StreamFacts {
            subjects: vec!["s.>".into()],
            ..StreamFacts::default()
        };
        let check = |json: &str| {
            let mut c = decode(json).expect("decodes");
            c.set_defaults(&facts);
            c.check(&facts).map_err(|e| e.err_code)
        };
        assert_eq!(check(r#"{"ack_policy":"explicit"}"#), Ok(()));
        assert_eq!(
            check(r#"{"deliver_policy":"by_start_sequence"}"#),
            Err(10094)
        );
        assert_eq!(
            check(r#"{"deliver_policy":"last_per_subject"}"#),
            Err(10094)
        );
        assert_eq!(check(r#"{"deliver_subject":"s.x"}"#), Err(10081));
        assert_eq!(check(r#"{"deliver_subject":"a.*"}"#), Err(10079));
        assert_eq!(check(r#"{"idle_heartbeat":1000000000}"#), Err(10088));
        assert_eq!(check(r#"{"flow_control":true}"#), Err(10089));
        assert_eq!(
            check(r#"{"deliver_subject":"x","flow_control":true}"#),
            Err(10108)
        );
        assert_eq!(
            check(r#"{"deliver_subject":"x","idle_heartbeat":50000000}"#),
            Err(10083)
        );
        assert_eq!(
            check(r#"{"ack_policy":"explicit","backoff":[1,2],"max_deliver":2}"#),
            Err(10116)
        );
        assert_eq!(
            check(r#"{"filter_subject":"s.a","filter_subjects":["s.b"]}"#),
            Err(10136)
        );
        assert_eq!(check(r#"{"filter_subjects":["s.>","s.b"]}"#), Err(10138));
        assert_eq!(check(r#"{"filter_subjects":[""]}"#), Err(10093));
        assert_eq!(check(r#"{"filter_subject":"s..b"}"#), Err(10093));
        assert_eq!(check(r#"{"filter_subject":"other"}"#), Err(10093));
        assert_eq!(check(r#"{"filter_subject":"s.*.c"}"#), Ok(()));
        assert_eq!(check(r#"{"filter_subject":">"}"#), Ok(()));
        assert_eq!(check(r#"{"durable_name":"a","name":"b"}"#), Err(10132));
        assert_eq!(check(r#"{"sample_freq":"x%"}"#), Err(10095));
        assert_eq!(check(r#"{"num_replicas":-1}"#), Err(10133));
        assert_eq!(check(r#"{"num_replicas":3}"#), Err(10126));
    }

    #[test]
    fn defaults_follow_nats_server() {
        let facts = StreamFacts::default();
        let mut c = decode(r#"{"ack_policy":"explicit","backoff":[1000,2000]}"#).expect("ok");
        c.set_defaults(&facts);
        c.set_ephemeral_threshold();
        assert_eq!(c.ack_wait, 1000);
        assert_eq!(c.max_deliver, -1);
        assert_eq!(c.inactive_threshold, DEFAULT_INACTIVE_THRESHOLD_NS);
        assert_eq!(c.ack_wait_for(1), 1000);
        assert_eq!(c.ack_wait_for(2), 2000);
        assert_eq!(c.ack_wait_for(9), 2000);
        let mut none = decode(r#"{"ack_policy":"none","durable_name":"x"}"#).expect("ok");
        none.set_defaults(&facts);
        assert_eq!(none.ack_wait, 0);
        assert_eq!(none.max_ack_pending, 0);
        assert_eq!(none.inactive_threshold, 0);
    }

    #[test]
    fn updates() {
        let a = decode(r#"{"durable_name":"d","ack_policy":"explicit"}"#).expect("ok");
        let mut b = a.clone();
        b.description = "new".into();
        assert!(a.check_update(&b).is_ok());
        b.ack_policy = AckPolicy::All;
        assert_eq!(
            a.check_update(&b).map_err(|e| e.description),
            Err("ack policy can not be updated".into())
        );
    }

    #[test]
    fn collisions() {
        assert!(subjects_collide("a.>", "a.b"));
        assert!(subjects_collide("a.*", "*.b"));
        assert!(subjects_collide(">", "x.y.z"));
        assert!(!subjects_collide("a.*", "a.b.c"));
        assert!(!subjects_collide("a.b", "a.c"));
        assert!(subjects_collide("a.*.c", "a.>"));
    }

    #[test]
    fn names() {
        assert!(is_valid_name("abc-_1"));
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration_string(5_000_000_000), "5s");
        assert_eq!(go_duration_string(90_000_000_000), "1m30s");
        assert_eq!(go_duration_string(250_000_000), "250ms");
        assert_eq!(go_duration_string(3_600_000_000_000), "1h0m0s");
    }
}
