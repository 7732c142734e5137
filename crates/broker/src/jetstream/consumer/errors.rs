//! The consumer errors of the JetStream API, with nats-server's HTTP-like `code`, its
//! `err_code` and its description (server/errors.json): clients match on `err_code`, people
//! read the description.

pub(crate) use crate::jetstream::api::ApiError;

macro_rules! api_errors {
    ($($name:ident => $code:literal, $err_code:literal, $desc:literal;)*) => {
        $(
            pub(crate) fn $name() -> ApiError {
                ApiError::new($code, $err_code, $desc)
            }
        )*
    };
}

api_errors! {
    invalid_json => 400, 10025, "invalid JSON";
    not_empty_request => 400, 10038, "expected an empty request payload";
    stream_not_found => 404, 10059, "stream not found";
    stream_mismatch => 400, 10056, "stream name in subject does not match request";
    replicas_not_supported => 500, 10074, "replicas > 1 not supported in non-clustered mode";
    replicas_negative => 400, 10133, "replicas count cannot be negative";
    consumer_not_found => 404, 10014, "consumer not found";
    consumer_name_exists => 400, 10013, "consumer name already in use";
    consumer_already_exists => 400, 10148, "consumer already exists";
    consumer_does_not_exist => 400, 10149, "consumer does not exist";
    durable_name_not_in_subject => 400, 10016, "consumer expected to be durable but no durable name set in subject";
    durable_name_not_match_subject => 400, 10017, "consumer name in subject does not match durable name in request";
    durable_name_not_set => 400, 10018, "consumer expected to be durable but a durable name was not set";
    ephemeral_with_durable_name => 400, 10020, "consumer expected to be ephemeral but a durable name was set in request";
    max_consumers_limit => 400, 10026, "maximum consumers limit reached";
    deliver_to_wildcards => 400, 10079, "consumer deliver subject has wildcards";
    push_max_waiting => 400, 10080, "consumer in push mode can not set max waiting";
    deliver_cycle => 400, 10081, "consumer deliver subject forms a cycle";
    max_pending_ack_policy_required => 400, 10082, "consumer requires ack policy for max ack pending";
    small_heartbeat => 400, 10083, "consumer idle heartbeat needs to be >= 100ms";
    pull_requires_ack => 400, 10084, "consumer in pull mode requires ack policy";
    pull_with_rate_limit => 400, 10086, "consumer in pull mode can not have rate limit set";
    max_waiting_negative => 400, 10087, "consumer max waiting needs to be positive";
    hb_requires_push => 400, 10088, "consumer idle heartbeat requires a push based consumer";
    fc_requires_push => 400, 10089, "consumer flow control requires a push based consumer";
    direct_requires_push => 400, 10090, "consumer direct requires a push based consumer";
    direct_requires_ephemeral => 400, 10091, "consumer direct requires an ephemeral consumer";
    wq_requires_explicit_ack => 400, 10098, "workqueue stream requires explicit ack";
    wq_multiple_unfiltered => 400, 10099, "multiple non-filtered consumers not allowed on workqueue stream";
    wq_consumer_not_unique => 400, 10100, "filtered consumer not unique on workqueue stream";
    wq_consumer_not_deliver_all => 400, 10101, "consumer must be deliver all on workqueue stream";
    filter_not_subset => 400, 10093, "consumer filter subject is not a valid subset of the interest subjects";
    bad_durable_name => 400, 10103, "durable name can not contain '.', '*', '>'";
    flow_control_needs_heartbeats => 400, 10108, "consumer with flow control also needs heartbeats";
    invalid_deliver_subject => 400, 10112, "invalid push consumer deliver subject";
    max_request_batch_negative => 400, 10114, "consumer max request batch needs to be > 0";
    max_request_expires_too_small => 400, 10115, "consumer max request expires needs to be >= 1ms";
    max_deliver_backoff => 400, 10116, "max deliver is required to be > length of backoff values";
    replicas_exceeds_stream => 400, 10126, "consumer config replica count exceeds parent stream";
    name_contains_path_separators => 400, 10127, "Consumer name can not contain path separators";
    create_filter_subject_mismatch => 400, 10131, "Consumer create request did not match filtered subject from create subject";
    durable_and_name_mismatch => 400, 10132, "Consumer Durable and Name have to be equal if both are provided";
    duplicate_filter_subjects => 400, 10136, "consumer cannot have both FilterSubject and FilterSubjects specified";
    multiple_filters_not_allowed => 400, 10137, "consumer with multiple subject filters cannot use subject based API";
    overlapping_filter_subjects => 400, 10138, "consumer subject filters cannot overlap";
    empty_filter => 400, 10139, "consumer filter in FilterSubjects cannot be empty";
}

/// `JSConsumerNameTooLongErrF`.
pub(crate) fn name_too_long(max: usize) -> ApiError {
    ApiError::new(
        400,
        10102,
        format!("consumer name is too long, maximum allowed is {max}"),
    )
}

/// `JSConsumerDescriptionTooLongErrF`.
pub(crate) fn description_too_long(max: usize) -> ApiError {
    ApiError::new(
        400,
        10107,
        format!("consumer description is too long, maximum allowed is {max}"),
    )
}

/// `JSConsumerInvalidPolicyErrF`: a deliver policy and its start options disagree.
pub(crate) fn invalid_policy(text: String) -> ApiError {
    ApiError::new(400, 10094, text)
}

/// `JSConsumerInvalidSamplingErrF`.
pub(crate) fn invalid_sampling(err: &str) -> ApiError {
    ApiError::new(
        400,
        10095,
        format!("failed to parse consumer sampling configuration: {err}"),
    )
}

/// `JSStreamInvalidConfigF` for a bad filter subject (nats-server passes `ErrBadSubject`).
pub(crate) fn bad_filter_subject() -> ApiError {
    ApiError::new(500, 10052, "invalid subject")
}

/// `JSConsumerMetadataLengthErrF`.
pub(crate) fn metadata_length(limit: &str) -> ApiError {
    ApiError::new(
        400,
        10135,
        format!("consumer metadata exceeds maximum size of {limit}"),
    )
}

/// `JSConsumerCreateErrF`: an update that changes what cannot change, and other failures
/// nats-server reports with the error's own text.
pub(crate) fn create_failed(text: impl Into<String>) -> ApiError {
    ApiError::new(500, 10012, text)
}

/// `JSConsumerStoreFailedErrF`.
pub(crate) fn store_failed(err: &str) -> ApiError {
    ApiError::new(
        500,
        10104,
        format!("error creating store for consumer: {err}"),
    )
}
