//! Midge: a NATS-compatible message broker you can run as `midge` or embed in a program.
//!
//! A pub-sub daemon packed inside your application:
//!
//! ```no_run
//! # async fn demo() -> Result<(), midge::Error> {
//! // Port 0 picks a free port; ask the server which one it got.
//! let server = midge::Server::builder().host([127, 0, 0, 1]).port(0).start().await?;
//! let url = server.client_url();
//! // ... connect any NATS client (async-nats, nats.go, nats.py) to `url` ...
//! # let _ = url;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: [`options`] holds every setting; [`conf`] and [`flags`] read them from
//! nats-server style config files and command lines; [`Server`] owns the listener and the
//! subscription table; each connection is served by one task (see `client.rs`); the wire
//! protocol itself lives in the IO-free `midge-proto` crate. Operations: [`Server::reload`]
//! (live config reload, also driven by the `config_watch` file watcher) and
//! [`Server::lame_duck_mode`].

mod auth;
mod certmap;
mod client;
mod cluster;
pub mod conf;
mod core;
mod error;
pub mod flags;
mod info;
mod inproc;
mod jetstream;
pub mod jwt;
mod lameduck;
mod leaf;
pub mod logging;
mod monitor;
pub mod options;
mod readbuf;
mod reload;
mod route;
mod server;
mod spin;
mod sys;
pub mod tls;
mod ws;

pub use crate::core::InternalMsg;
pub use client::CloseReason;
pub use cluster::RouteStats;
pub use error::Error;
pub use info::NATS_COMPAT_VERSION;
pub use inproc::{LocalSubscription, PubSubError, LOCAL_SUBSCRIPTION_CAPACITY};
pub use options::{
    AccountJetStreamLimits, AccountOptions, JetStreamOptions, JetStreamSync, NkeyUser, Options,
    TlsOptions, User,
};
pub use reload::{
    non_reloadable_changes, startup_options, ReloadError, ReloadReport, StartupChange,
};
pub use server::{ClusterStats, ConnectionStats, Server, ServerBuilder, ServerStats};
