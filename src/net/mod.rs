//! The only code with sockets: the `mio` loop and what it needs.

pub mod flood;
pub mod metrics;
pub mod server;
