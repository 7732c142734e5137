//! The broker's core: accounts (one subject space each), the subscriptions every kind of
//! subscriber holds in them, and the router that fans a published message out to them.
//!
//! Transports (client connections, routes, later leaf nodes and WebSocket) parse their
//! protocol, authenticate, and then call into this module; nothing here reads a socket.
//! Dependencies point one way: transports -> core -> proto. The only things core knows of a
//! transport are the two outbound handles a subscriber can be ([`ClientShared`] for a
//! client's socket and [`Route`] for a route's), which it appends encoded frames to.
//!
//! [`ClientShared`]: crate::client::ClientShared
//! [`Route`]: crate::cluster::Route

pub(crate) mod account;
pub(crate) mod imports;
pub(crate) mod router;
pub(crate) mod sub;

pub(crate) use account::{Account, Accounts, DEFAULT_SYSTEM_ACCOUNT, GLOBAL_ACCOUNT};
pub use sub::InternalMsg;
pub(crate) use sub::{InternalSub, SubRef, Subscriber, Subscription};
