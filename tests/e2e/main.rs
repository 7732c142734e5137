//! e2e

mod client;
mod embedded;
