//! JetStream (placeholder until the core lands on wt-js).

pub(crate) mod consumer;
