//! Midge: a NATS-compatible message broker you can run as `midge` or embed in a program.

pub mod conf;
pub mod flags;
pub mod options;

pub use options::Options;
