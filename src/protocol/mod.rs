//! The WebSocket protocol, sans-IO: no sockets, no `mio`, no chat.
//!
//! Everything here takes bytes and returns bytes or events, so every rule
//! is tested with byte slices (see each module's tests).

pub mod connection;
pub mod frame;
pub mod handshake;
pub mod outbox;
