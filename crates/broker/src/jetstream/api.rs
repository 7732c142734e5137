//! The JSON of the `$JS.API` service: requests, responses and errors, with nats-server
//! 2.10's field names, defaults and omissions (the clients parse these: async-nats, nats.py
//! and nats.go fail on a missing field, so the shapes follow nats-server's output byte for
//! byte where a client reads them).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// An error of the API, as nats-server sends it: the HTTP-like `code`, the JetStream
/// `err_code` the clients match on, and the description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{description} ({err_code})")]
pub struct ApiError {
    pub code: u16,
    pub err_code: u16,
    pub description: String,
}

impl ApiError {
    pub fn new(code: u16, err_code: u16, description: impl Into<String>) -> ApiError {
        ApiError {
            code,
            err_code,
            description: description.into(),
        }
    }

    // The codes and descriptions of nats-server's errors.json.
    pub fn not_enabled_for_account() -> ApiError {
        ApiError::new(503, 10039, "JetStream not enabled for account")
    }
    pub fn bad_request() -> ApiError {
        ApiError::new(400, 10003, "bad request")
    }
    pub fn invalid_json() -> ApiError {
        ApiError::new(400, 10025, "invalid JSON")
    }
    pub fn stream_not_found() -> ApiError {
        ApiError::new(404, 10059, "stream not found")
    }
    pub fn stream_name_mismatch() -> ApiError {
        ApiError::new(400, 10056, "stream name in subject does not match request")
    }
    pub fn stream_name_exists() -> ApiError {
        ApiError::new(
            400,
            10058,
            "stream name already in use with a different configuration",
        )
    }
    pub fn subjects_overlap() -> ApiError {
        ApiError::new(400, 10065, "subjects overlap with an existing stream")
    }
    pub fn invalid_config(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10052, why.to_string())
    }
    pub fn replicas_not_supported() -> ApiError {
        ApiError::new(
            500,
            10074,
            "replicas > 1 not supported in non-clustered mode",
        )
    }
    pub fn replicas_negative() -> ApiError {
        ApiError::new(400, 10133, "replicas count cannot be negative")
    }
    pub fn no_message_found() -> ApiError {
        ApiError::new(404, 10037, "no message found")
    }
    pub fn sequence_not_found(seq: u64) -> ApiError {
        ApiError::new(400, 10043, format!("sequence {seq} not found"))
    }
    pub fn msg_delete_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10057, why.to_string())
    }
    pub fn stream_not_match() -> ApiError {
        ApiError::new(400, 10060, "expected stream does not match")
    }
    pub fn wrong_last_sequence(seq: u64) -> ApiError {
        ApiError::new(400, 10071, format!("wrong last sequence: {seq}"))
    }
    pub fn wrong_last_msg_id(id: &str) -> ApiError {
        ApiError::new(400, 10070, format!("wrong last msg ID: {id}"))
    }
    pub fn rollup_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10111, why.to_string())
    }
    pub fn message_too_big() -> ApiError {
        ApiError::new(400, 10054, "message size exceeds maximum allowed")
    }
    pub fn header_too_big() -> ApiError {
        ApiError::new(400, 10097, "header size exceeds maximum allowed of 64k")
    }
    pub fn sealed() -> ApiError {
        ApiError::new(400, 10109, "invalid operation on sealed stream")
    }
    pub fn store_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(503, 10077, why.to_string())
    }
    pub fn insufficient_resources() -> ApiError {
        ApiError::new(503, 10023, "insufficient resources")
    }
    pub fn account_resources_exceeded() -> ApiError {
        ApiError::new(400, 10002, "resource limits exceeded for account")
    }
    pub fn memory_resources_exceeded() -> ApiError {
        ApiError::new(500, 10028, "insufficient memory resources available")
    }
    pub fn storage_resources_exceeded() -> ApiError {
        ApiError::new(500, 10047, "insufficient storage resources available")
    }
    pub fn max_streams_reached() -> ApiError {
        ApiError::new(400, 10027, "maximum number of streams reached")
    }
    pub fn max_bytes_required() -> ApiError {
        ApiError::new(
            400,
            10113,
            "account requires a stream config to have max bytes set",
        )
    }
    pub fn max_stream_bytes_exceeded() -> ApiError {
        ApiError::new(
            400,
            10122,
            "stream max bytes exceeds account limit max stream bytes",
        )
    }
    pub fn update_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10069, why.to_string())
    }
    pub fn purge_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10110, why.to_string())
    }
    pub fn stream_delete_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10050, why.to_string())
    }
    pub fn create_failed(why: impl std::fmt::Display) -> ApiError {
        ApiError::new(500, 10049, why.to_string())
    }
    pub fn mirror_not_updatable() -> ApiError {
        ApiError::new(400, 10055, "stream mirror configuration can not be updated")
    }
    pub fn replicas_not_updatable() -> ApiError {
        ApiError::new(400, 10061, "Replicas configuration can not be updated")
    }
    pub fn name_contains_path_separators() -> ApiError {
        ApiError::new(400, 10128, "Stream name can not contain path separators")
    }
    pub fn info_max_subjects() -> ApiError {
        ApiError::new(500, 10117, "subject details would exceed maximum allowed")
    }
}

/// Response types (`type` of every response).
pub mod types {
    pub const ACCOUNT_INFO: &str = "io.nats.jetstream.api.v1.account_info_response";
    pub const STREAM_CREATE: &str = "io.nats.jetstream.api.v1.stream_create_response";
    pub const STREAM_UPDATE: &str = "io.nats.jetstream.api.v1.stream_update_response";
    pub const STREAM_INFO: &str = "io.nats.jetstream.api.v1.stream_info_response";
    pub const STREAM_NAMES: &str = "io.nats.jetstream.api.v1.stream_names_response";
    pub const STREAM_LIST: &str = "io.nats.jetstream.api.v1.stream_list_response";
    pub const STREAM_DELETE: &str = "io.nats.jetstream.api.v1.stream_delete_response";
    pub const STREAM_PURGE: &str = "io.nats.jetstream.api.v1.stream_purge_response";
    pub const MSG_GET: &str = "io.nats.jetstream.api.v1.stream_msg_get_response";
    pub const MSG_DELETE: &str = "io.nats.jetstream.api.v1.stream_msg_delete_response";
    pub const CONSUMER_CREATE: &str = "io.nats.jetstream.api.v1.consumer_create_response";
    pub const CONSUMER_INFO: &str = "io.nats.jetstream.api.v1.consumer_info_response";
    pub const CONSUMER_NAMES: &str = "io.nats.jetstream.api.v1.consumer_names_response";
    pub const CONSUMER_LIST: &str = "io.nats.jetstream.api.v1.consumer_list_response";
    pub const CONSUMER_DELETE: &str = "io.nats.jetstream.api.v1.consumer_delete_response";
}

/// Largest stream (and consumer) name, as nats-server.
pub const MAX_NAME_LEN: usize = 255;
/// Largest description.
pub const MAX_DESCRIPTION_LEN: usize = 4 * 1024;
/// Largest metadata (keys and values together).
pub const MAX_METADATA_LEN: usize = 128 * 1024;
/// The default duplicate window (nats-server's `StreamDefaultDuplicatesWindow`).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Most stream names in one `STREAM.NAMES` page, and stream infos in one `STREAM.LIST` page.
pub const NAMES_LIMIT: usize = 1024;
pub const LIST_LIMIT: usize = 256;
/// Most subjects a stream info lists (`subjects_filter`).
pub const MAX_SUBJECT_DETAILS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    #[default]
    Limits,
    Interest,
    #[serde(rename = "workqueue")]
    WorkQueue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    #[default]
    Old,
    New,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    #[default]
    File,
    Memory,
}

/// `compression`: accepted as nats-server 2.10 takes it; midge stores uncompressed either
/// way (the setting is kept and shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Compression {
    #[default]
    #[serde(rename = "none", alias = "")]
    None,
    #[serde(rename = "s2")]
    S2,
}

/// `subject_transform` (`src` -> `dest`), also the items of a source's `subject_transforms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTransformConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub src: String,
    #[serde(default, deserialize_with = "nullable")]
    pub dest: String,
}

/// `republish`: stored messages are also published to `dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RePublish {
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub src: String,
    #[serde(default, deserialize_with = "nullable")]
    pub dest: String,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "nullable"
    )]
    pub headers_only: bool,
}

/// `consumer_limits`: defaults for the stream's consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConsumerLimits {
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub inactive_threshold: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub max_ack_pending: i64,
}

/// A stream's configuration (nats-server's `StreamConfig`). Numbers are as on the wire:
/// `-1` unlimited, durations in nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamConfig {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub description: String,
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable"
    )]
    pub subjects: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub retention: Retention,
    #[serde(default, deserialize_with = "nullable")]
    pub max_consumers: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub max_msgs: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub max_bytes: i64,
    /// Nanoseconds; 0: no limit.
    #[serde(default, deserialize_with = "nullable")]
    pub max_age: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub max_msgs_per_subject: i64,
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub max_msg_size: i64,
    #[serde(default, deserialize_with = "nullable")]
    pub discard: Discard,
    #[serde(default, deserialize_with = "nullable")]
    pub storage: Storage,
    #[serde(default, deserialize_with = "nullable")]
    pub num_replicas: i64,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "nullable"
    )]
    pub no_ack: bool,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        deserialize_with = "nullable"
    )]
    pub template_owner: String,
    /// Nanoseconds.
    #[serde(
        default,
        skip_serializing_if = "is_zero_i64",
        deserialize_with = "nullable"
    )]
    pub duplicate_window: i64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub placement: Option<serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub mirror: Option<serde_json::Value>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub sources: Option<Vec<serde_json::Value>>,
    #[serde(default, deserialize_with = "nullable")]
    pub compression: Compression,
    #[serde(
        default,
        skip_serializing_if = "is_zero_u64",
        deserialize_with = "nullable"
    )]
    pub first_seq: u64,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub subject_transform: Option<SubjectTransformConfig>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub republish: Option<RePublish>,
    #[serde(default, deserialize_with = "nullable")]
    pub allow_direct: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub mirror_direct: bool,
    #[serde(
        default,
        skip_serializing_if = "is_false",
        deserialize_with = "nullable"
    )]
    pub discard_new_per_subject: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub sealed: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub deny_delete: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub deny_purge: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub allow_rollup_hdrs: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub consumer_limits: ConsumerLimits,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "nullable"
    )]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            name: String::new(),
            description: String::new(),
            subjects: Vec::new(),
            retention: Retention::Limits,
            max_consumers: 0,
            max_msgs: 0,
            max_bytes: 0,
            max_age: 0,
            max_msgs_per_subject: 0,
            max_msg_size: 0,
            discard: Discard::Old,
            storage: Storage::File,
            num_replicas: 0,
            no_ack: false,
            template_owner: String::new(),
            duplicate_window: 0,
            placement: None,
            mirror: None,
            sources: None,
            compression: Compression::None,
            first_seq: 0,
            subject_transform: None,
            republish: None,
            allow_direct: false,
            mirror_direct: false,
            discard_new_per_subject: false,
            sealed: false,
            deny_delete: false,
            deny_purge: false,
            allow_rollup_hdrs: false,
            consumer_limits: ConsumerLimits::default(),
            metadata: None,
        }
    }
}

impl StreamConfig {
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age > 0).then(|| Duration::from_nanos(self.max_age.unsigned_abs()))
    }

    pub fn duplicate_window(&self) -> Duration {
        Duration::from_nanos(self.duplicate_window.max(0).unsigned_abs())
    }
}

/// A field that may also be sent as `null` (clients serialize unset options so): its
/// default then, as Go's decoder leaves it.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// `state` of a stream info.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamStateInfo {
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub first_ts: String,
    pub last_seq: u64,
    pub last_ts: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub num_subjects: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub num_deleted: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Vec<u64>>,
    pub consumer_count: u64,
}

/// A stream info (create, update, info and list answer with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub created: String,
    pub state: StreamStateInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<SourceInfo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceInfo>,
    pub ts: String,
}

/// `mirror` / `sources` of a stream info (nats-server's `StreamSourceInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub name: String,
    pub lag: u64,
    /// Nanoseconds since it last heard from its origin.
    pub active: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_subject: Option<String>,
}

/// `cluster` of a stream info: this server alone leads every stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub leader: String,
}

/// `STREAM.INFO` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamInfoRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub offset: usize,
    #[serde(default, deserialize_with = "nullable")]
    pub deleted_details: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub subjects_filter: String,
}

/// `STREAM.NAMES` / `STREAM.LIST` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamListRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub offset: usize,
    #[serde(default, deserialize_with = "nullable")]
    pub subject: String,
}

/// `STREAM.PURGE` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PurgeRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub filter: String,
    #[serde(default, deserialize_with = "nullable")]
    pub seq: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub keep: u64,
}

/// `STREAM.MSG.GET` and `DIRECT.GET` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MsgGetRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub seq: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub last_by_subj: String,
    #[serde(default, deserialize_with = "nullable")]
    pub next_by_subj: String,
}

/// `STREAM.MSG.DELETE` request body.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MsgDeleteRequest {
    #[serde(default, deserialize_with = "nullable")]
    pub seq: u64,
    #[serde(default, deserialize_with = "nullable")]
    pub no_erase: bool,
}

/// `message` of a `STREAM.MSG.GET` answer (headers and data base64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiStoredMsg {
    pub subject: String,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hdrs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    pub time: String,
}

/// Account limits as `$JS.API.INFO` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountLimitsInfo {
    pub max_memory: i64,
    pub max_storage: i64,
    pub max_streams: i64,
    pub max_consumers: i64,
    pub max_ack_pending: i64,
    pub memory_max_stream_bytes: i64,
    pub storage_max_stream_bytes: i64,
    pub max_bytes_required: bool,
}

impl From<crate::options::AccountJetStreamLimits> for AccountLimitsInfo {
    fn from(l: crate::options::AccountJetStreamLimits) -> Self {
        AccountLimitsInfo {
            max_memory: l.max_memory,
            max_storage: l.max_store,
            max_streams: l.max_streams,
            max_consumers: l.max_consumers,
            max_ack_pending: l.max_ack_pending,
            memory_max_stream_bytes: l.memory_max_stream_bytes,
            storage_max_stream_bytes: l.store_max_stream_bytes,
            max_bytes_required: l.max_bytes_required,
        }
    }
}

/// `api` of `$JS.API.INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApiStats {
    pub total: u64,
    pub errors: u64,
}

/// `$JS.API.INFO` answer body (nats-server's `JetStreamAccountStats`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub memory: u64,
    pub storage: u64,
    pub reserved_memory: u64,
    pub reserved_storage: u64,
    pub streams: u64,
    pub consumers: u64,
    pub limits: AccountLimitsInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    pub api: ApiStats,
}

/// A PubAck: `{"stream":"S","seq":N}` plus `domain` and `duplicate` when they apply, or
/// an error (then `seq` is 0, as nats-server sends it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PubAck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    pub stream: String,
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

/// Serializes a response: `{"type": kind, "error"?: ..., ...body}`.
pub fn response<T: Serialize>(kind: &str, body: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Envelope<'a, T> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(flatten)]
        body: &'a T,
    }
    serde_json::to_vec(&Envelope { kind, body }).unwrap_or_default()
}

/// Serializes an error response: `{"type": kind, "error": {...}}`, plus the fields of the
/// response type that nats-server never leaves out (`purged: 0`, the paging numbers), which
/// some clients read even from an error.
pub fn error_response(kind: &str, error: &ApiError) -> Vec<u8> {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        error: &'a ApiError,
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        purged: Option<u64>,
    }
    let paged = matches!(
        kind,
        types::STREAM_INFO | types::STREAM_NAMES | types::STREAM_LIST
    );
    let zero = |on: bool| on.then_some(0);
    response(
        kind,
        &ErrorBody {
            error,
            total: zero(paged),
            offset: zero(paged),
            limit: zero(paged),
            purged: zero(kind == types::STREAM_PURGE),
        },
    )
}

/// RFC 3339 with nanoseconds of a Unix time in nanoseconds; 0 is Go's zero time
/// (`0001-01-01T00:00:00Z`), which is what nats-server shows for "never".
pub fn rfc3339_nanos(ns: i64) -> String {
    if ns <= 0 {
        return "0001-01-01T00:00:00Z".to_string();
    }
    crate::monitor::rfc3339(UNIX_EPOCH + Duration::from_nanos(ns.unsigned_abs()))
}

/// Now, in nanoseconds since the Unix epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether a stream (or consumer) name is usable: not empty, no whitespace, no `.`, `*`,
/// `>` (nats-server's `isValidName`).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .bytes()
            .any(|b| b.is_ascii_whitespace() || matches!(b, b'.' | b'*' | b'>'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_config_defaults_and_names_match_nats_server() {
        let cfg: StreamConfig = serde_json::from_str(
            r#"{"name":"S","subjects":["a.>"],"retention":"workqueue","storage":"memory",
                "discard":"new","compression":"s2","metadata":{"k":"v"},"future_field":1}"#,
        )
        .expect("parse");
        assert_eq!(cfg.retention, Retention::WorkQueue);
        assert_eq!(cfg.storage, Storage::Memory);
        assert_eq!(cfg.discard, Discard::New);
        assert_eq!(cfg.compression, Compression::S2);
        let v: serde_json::Value = serde_json::to_value(&cfg).expect("json");
        for key in [
            "name",
            "subjects",
            "retention",
            "max_consumers",
            "max_msgs",
            "max_bytes",
            "max_age",
            "max_msgs_per_subject",
            "discard",
            "storage",
            "num_replicas",
            "compression",
            "allow_direct",
            "mirror_direct",
            "sealed",
            "deny_delete",
            "deny_purge",
            "allow_rollup_hdrs",
            "consumer_limits",
        ] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        for key in ["description", "no_ack", "duplicate_window", "first_seq"] {
            assert!(v.get(key).is_none(), "{key} present in {v}");
        }
        assert!(serde_json::from_str::<StreamConfig>(r#"{"retention":"forever"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<StreamConfig>(r#"{"compression":""}"#)
                .expect("empty compression")
                .compression,
            Compression::None
        );
    }

    #[test]
    fn responses_carry_their_type_and_errors() {
        let body = error_response(types::STREAM_INFO, &ApiError::stream_not_found());
        assert_eq!(
            String::from_utf8(body).expect("utf8"),
            r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","error":{"code":404,"err_code":10059,"description":"stream not found"},"total":0,"offset":0,"limit":0}"#
        );
        let ack = PubAck {
            error: None,
            stream: "S".into(),
            seq: 3,
            domain: None,
            duplicate: true,
        };
        assert_eq!(
            serde_json::to_string(&ack).expect("json"),
            r#"{"stream":"S","seq":3,"duplicate":true}"#
        );
    }

    #[test]
    fn times_and_names() {
        assert_eq!(rfc3339_nanos(0), "0001-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(1_500_000_000), "1970-01-01T00:00:01.5Z");
        assert!(is_valid_name("ORDERS_1-x"));
        for bad in ["", "a.b", "a*", "a>", "a b"] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
