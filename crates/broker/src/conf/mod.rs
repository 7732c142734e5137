//! nats-server config file format. TODO
