//! wschat: a realtime WebSocket chat server.
//!
//! Every message a user sends reaches every other connected user; the
//! whole server is one thread running one `mio` poll loop. The protocol
//! (RFC 6455) is written by hand in a sans-IO core that never touches a
//! socket, so it is tested with byte slices.
//!
//! One layer per module, top to bottom as bytes flow in:
//!
//! | module | responsibility |
//! |---|---|
//! | [`net`] | the only code with sockets: the `mio` loop, accepting, peers and their batched writes, timers, flood control, metrics |
//! | [`protocol`] | RFC 6455 sans-IO: frames, the handshake, one connection's state machine, the outbox, the client side |
//! | [`service`] | the seam between the loop and an application: its own types, `Context`, `Outgoing` |
//! | [`chat`] | the chat policy (rooms, names, history, commands, formats) and echo mode |
//! | [`config`] | the command line: every limit's default, turned into each layer's settings |
//! | [`code_pages`] | the binary's code mapped once at start, so the loop never stalls on its first run of a path |

pub mod chat;
pub mod cluster;
pub mod code_pages;
pub mod config;
pub mod net;
pub mod protocol;
pub mod service;
