//! End-to-end tests: real server processes spoken to over real sockets.
//!
//! Every test runs against nats-server (the reference) and midge, or only against
//! nats-server with `MIDGE_TESTS_REFERENCE_ONLY=1`; see the `midge_tests` support library.

mod cluster;
mod differential;
mod raw_protocol;
