//! nats-server command-line flags. TODO
