//! End-to-end tests: real servers spoken to over real sockets by real clients.
//!
//! - `raw_protocol` and `differential` run `midge` and nats-server (the reference) as
//!   processes and compare bytes; `MIDGE_TESTS_REFERENCE_ONLY=1` runs only nats-server.
//! - `tls` runs midge in-process with client TLS (rcgen certificates, async-nats and raw rustls).
//! - `client` and `embedded` use the official `async-nats` client against midge started
//!   in-process through its library API.
//! - `monitor` checks the HTTP monitoring endpoints, and their JSON shapes against
//!   nats-server's.
//! - `cluster` runs clusters of midge and nats-server processes (mesh, gossip, queues,
//!   request/reply, kill and restart, mixed clusters).
//! - `limits` covers starvation and leaks: listen backlog, silent sockets, bcrypt storms,
//!   the monitoring port under idle connections, slow consumer counting.
//! - `system` covers the system account: events, `$SYS.REQ.SERVER` services, mixed clusters.
//! - `cert_auth` runs midge and nats-server with `verify_and_map` and `pinned_certs`.
//! - `route_tls` runs clusters of midge and nats-server whose routes use TLS.
//! - `leaf` runs hub + leaf pairs of midge and nats-server in every combination.
//! - `rotation` runs a midge process with `config_watch` on the directory layout the kubelet
//!   gives ConfigMap and Secret volumes, and rotates a certificate and a token in the Secret.
//! - `websocket` runs the `websocket {}` listener of midge and nats-server: async-nats over
//!   `ws://` and `wss://`, a raw RFC 6455 client for origins, compression and close frames.
//! - `nkeys` logs nkey users in (signed nonce) on midge and nats-server from the same config.
//! - `jetstream_streams` runs JetStream streams on midge and nats-server with async-nats's
//!   JetStream API, and compares the API's errors request by request.
//! - `jetstream_consumers` runs JetStream consumers (pull, push, ordered, acks, redelivery,
//!   work queues, API errors, durable state across a restart) through async-nats on midge
//!   and nats-server `-js`.
//! - `jwt` runs operator mode (operator, account and user JWTs built here with nkeys, `.creds`
//!   files) on midge and nats-server from the same artifacts.
//! - `jetstream` drives JetStream, key-value and the object store through async-nats against
//!   nats-server `-js`, and against midge per feature as `MIDGE_JS` enables it (see its docs).

mod accounts;
mod cert_auth;
mod client;
mod cluster;
mod differential;
mod embedded;
mod jetstream;
mod jetstream_consumers;
mod jetstream_streams;
mod jwt;
mod leaf;
mod limits;
mod monitor;
mod nkeys;
mod ops;
mod raw_protocol;
mod rotation;
mod route_tls;
mod system;
mod tls;
mod websocket;
