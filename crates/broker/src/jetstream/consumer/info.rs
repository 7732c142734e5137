//! `ConsumerInfo` and the consumer API responses, field for field as nats-server writes
//! them (async-nats, nats.py and nats.go fail on a missing field).

use serde::Serialize;

use super::config::ConsumerConfig;
use super::engine::Snapshot;
use super::time::format_rfc3339;

pub(crate) use crate::jetstream::api::types::{
    CONSUMER_CREATE as CREATE_RESPONSE, CONSUMER_DELETE as DELETE_RESPONSE,
    CONSUMER_INFO as INFO_RESPONSE, CONSUMER_LIST as LIST_RESPONSE,
    CONSUMER_NAMES as NAMES_RESPONSE,
};

/// nats-server's `JSApiNamesLimit` and `JSApiListLimit`: page sizes.
pub(crate) const NAMES_LIMIT: usize = 1024;
pub(crate) const LIST_LIMIT: usize = 256;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct SequenceInfo {
    pub consumer_seq: u64,
    pub stream_seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConsumerInfo {
    pub stream_name: String,
    pub name: String,
    pub created: String,
    pub config: ConsumerConfig,
    pub delivered: SequenceInfo,
    pub ack_floor: SequenceInfo,
    pub num_ack_pending: usize,
    pub num_redelivered: usize,
    pub num_waiting: usize,
    pub num_pending: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub push_bound: bool,
    pub ts: String,
}

impl ConsumerInfo {
    pub fn new(
        stream: &str,
        name: &str,
        created_ns: i64,
        config: &ConsumerConfig,
        s: &Snapshot,
        push_bound: bool,
        now: i64,
    ) -> ConsumerInfo {
        let last = |ns: i64| (ns > 0).then(|| format_rfc3339(ns));
        ConsumerInfo {
            stream_name: stream.to_string(),
            name: name.to_string(),
            created: format_rfc3339(created_ns),
            config: config.clone(),
            delivered: SequenceInfo {
                consumer_seq: s.delivered_consumer,
                stream_seq: s.delivered_stream,
                last_active: last(s.last_delivered_ns),
            },
            ack_floor: SequenceInfo {
                consumer_seq: s.ack_floor_consumer,
                stream_seq: s.ack_floor_stream,
                last_active: last(s.last_ack_ns),
            },
            num_ack_pending: s.num_ack_pending,
            num_redelivered: s.num_redelivered,
            num_waiting: s.num_waiting,
            num_pending: s.num_pending,
            push_bound,
            ts: format_rfc3339(now),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct NamesResponse {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub consumers: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ListResponse {
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub consumers: Vec<ConsumerInfo>,
}

/// A JSON body or, should encoding fail, an empty one (never happens for these types).
pub(crate) fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// The advisories and metric a consumer publishes, in nats-server's shapes.
pub(crate) mod advisory {
    use serde::Serialize;

    pub const ACTION: &str = "io.nats.jetstream.advisory.v1.consumer_action";
    pub const MAX_DELIVER: &str = "io.nats.jetstream.advisory.v1.max_deliver";
    pub const NAK: &str = "io.nats.jetstream.advisory.v1.nak";
    pub const TERMINATED: &str = "io.nats.jetstream.advisory.v1.terminated";
    pub const ACK_METRIC: &str = "io.nats.jetstream.metric.v1.consumer_ack";

    pub const CREATED_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.CREATED";
    pub const DELETED_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.DELETED";
    pub const MAX_DELIVER_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";
    pub const NAK_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED";
    pub const TERMINATED_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED";
    pub const ACK_METRIC_PREFIX: &str = "$JS.EVENT.METRIC.CONSUMER.ACK";

    #[derive(Debug, Serialize)]
    pub struct Action<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub id: String,
        pub timestamp: String,
        pub stream: &'a str,
        pub consumer: &'a str,
        pub action: &'static str,
        #[serde(skip_serializing_if = "str::is_empty")]
        pub domain: &'a str,
    }

    #[derive(Debug, Serialize)]
    pub struct MaxDeliveries<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub id: String,
        pub timestamp: String,
        pub stream: &'a str,
        pub consumer: &'a str,
        pub stream_seq: u64,
        pub deliveries: u64,
        #[serde(skip_serializing_if = "str::is_empty")]
        pub domain: &'a str,
    }

    #[derive(Debug, Serialize)]
    pub struct Delivery<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub id: String,
        pub timestamp: String,
        pub stream: &'a str,
        pub consumer: &'a str,
        pub consumer_seq: u64,
        pub stream_seq: u64,
        pub deliveries: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub reason: Option<&'a str>,
        #[serde(skip_serializing_if = "str::is_empty")]
        pub domain: &'a str,
    }

    #[derive(Debug, Serialize)]
    pub struct AckMetric<'a> {
        #[serde(rename = "type")]
        pub kind: &'static str,
        pub id: String,
        pub timestamp: String,
        pub stream: &'a str,
        pub consumer: &'a str,
        pub consumer_seq: u64,
        pub stream_seq: u64,
        pub ack_time: i64,
        pub deliveries: u64,
        #[serde(skip_serializing_if = "str::is_empty")]
        pub domain: &'a str,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_shape() {
        let mut cfg: ConsumerConfig =
            serde_json::from_str(r#"{"durable_name":"D","ack_policy":"explicit"}"#).expect("ok");
        cfg.set_defaults(&super::super::config::StreamFacts::default());
        let snap = Snapshot {
            delivered_consumer: 3,
            delivered_stream: 3,
            last_delivered_ns: 1_000_000_000,
            num_ack_pending: 3,
            num_waiting: 1,
            ..Snapshot::default()
        };
        let info = ConsumerInfo::new("S", "D", 0, &cfg, &snap, false, 2_000_000_000);
        let json =
            String::from_utf8(crate::jetstream::api::response(INFO_RESPONSE, &info)).expect("utf8");
        assert_eq!(
            json,
            r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"S","name":"D","created":"1970-01-01T00:00:00Z","config":{"durable_name":"D","deliver_policy":"all","ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","max_waiting":512,"max_ack_pending":1000,"num_replicas":0},"delivered":{"consumer_seq":3,"stream_seq":3,"last_active":"1970-01-01T00:00:01Z"},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":3,"num_redelivered":0,"num_waiting":1,"num_pending":0,"ts":"1970-01-01T00:00:02Z"}"#
        );
    }
}
