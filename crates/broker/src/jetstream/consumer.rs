//! JetStream consumers: the engine (pure state machine over a stream's store) and, around
//! it, the task that delivers, the API requests and the durable state on disk.

#![allow(dead_code)]

pub(crate) mod ack;
pub(crate) mod config;
pub(crate) mod engine;
pub(crate) mod errors;
pub(crate) mod info;
pub(crate) mod persist;
pub(crate) mod pull;
pub(crate) mod time;
