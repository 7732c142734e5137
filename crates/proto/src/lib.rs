//! The NATS client protocol, free of IO.
//!
//! Everything here works on byte slices so it can be tested byte by byte and fuzzed:
//! - [`parser`]: turns bytes a client (or a server) sent into operations whose arguments
//!   are slices of the input buffer; nothing is copied and a payload is skipped by length.
//! - [`encode`]: appends server operations (`INFO`, `MSG`, `HMSG`, `-ERR`, ...) to an
//!   output buffer without allocating.
//! - [`subject`]: subject and wildcard rules.
//! - [`sublist`]: the subscription trie with a bounded match cache.
//! - [`hash`]: randomly seeded maps for keys that clients and config files choose.

pub mod encode;
pub mod hash;
pub mod parser;
pub mod subject;
pub mod sublist;

pub use parser::{
    parse_client_op, parse_route_op, parse_server_op, ClientOp, Limits, ParseError, Parsed,
    RouteOp, ServerOp,
};
