//! The WebSocket protocol, sans-IO: no sockets, no `mio`, no chat.
//!
//! Everything here takes bytes and returns bytes or events, so every rule
//! is tested with byte slices (see each module's tests). [`client`] is
//! the other end, for the load tool, the tests and the fuzz targets.

pub mod client;
pub mod connection;
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod outbox;
