//! JetStream consumers (`$JS.API.CONSUMER.>` and what it creates).
//!
//! - `engine.rs`: a consumer as a pure state machine over its stream's store (positions,
//!   pending acks with deadlines, redelivery, pull request queue, flow control,
//!   heartbeats), unit-tested without IO; `config.rs` its configuration with nats-server's
//!   defaults and checks; `ack.rs` the ack subjects and bodies; `pull.rs` pull requests
//!   and their status replies; `info.rs` the JSON out; `errors.rs` the API errors.
//! - `runtime.rs`: a running consumer, one task each, that feeds the engine its acks,
//!   pull requests, the stream's new messages and the time, and publishes what comes out
//!   in batches through the router; interest and work-queue retention.
//! - `handlers.rs`: the API requests; `persist.rs`: durable consumers of file streams on
//!   disk (config and state, replaced atomically), recovered at start-up.

pub(crate) mod ack;
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod errors;
pub(crate) mod handlers;
pub(crate) mod info;
pub(crate) mod persist;
pub(crate) mod pull;
pub(crate) mod runtime;
pub(crate) mod time;

pub(crate) use handlers::{api, recover};
pub(crate) use runtime::{stream_purged, Consumer};

/// The consumers of `stream` for `/jsz?consumers=true`: their `ConsumerInfo`, with the
/// config only when asked (`config=true`), as nats-server.
pub(crate) fn jsz_detail(
    stream: &crate::jetstream::stream::Stream,
    config: bool,
) -> Vec<serde_json::Value> {
    let consumers: Vec<_> = stream.consumers.lock().values().cloned().collect();
    consumers
        .iter()
        .filter(|c| !c.is_closed())
        .filter_map(|c| {
            let mut v = serde_json::to_value(c.info(stream)).ok()?;
            if !config {
                if let Some(m) = v.as_object_mut() {
                    m.remove("config");
                }
            }
            Some(v)
        })
        .collect()
}

/// Writes the state of every durable consumer (server shutdown: the consumers' own tasks
/// may not get to run again before the process ends).
pub(crate) fn save_all(js: &crate::jetstream::JetStream) {
    for a in js.accounts() {
        let streams: Vec<_> = a.streams.read().values().cloned().collect();
        for s in streams {
            let consumers: Vec<_> = s.consumers.lock().values().cloned().collect();
            for c in consumers {
                c.save_now();
            }
        }
    }
}
