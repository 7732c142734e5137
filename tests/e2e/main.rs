//! e2e
mod monitor;
