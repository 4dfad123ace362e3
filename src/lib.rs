//! wschat: a realtime WebSocket chat server.
//!
//! Every message a user sends reaches every other connected user; the
//! whole server is one thread running one `mio` poll loop. The protocol
//! (RFC 6455) is written by hand in a sans-IO core that never touches a
//! socket, so it is tested with byte slices.
//!
//! | module | responsibility |
//! |---|---|
//! | [`frame`] | RFC 6455 §5 framing: header decode/encode, masking, close codes |
//! | [`handshake`] | RFC 6455 §4 opening handshake: parse, check, `101` or 4xx |
//! | [`connection`] | one peer's state machine: bytes in, events out |
//! | [`outbox`] | a peer's queue of shared frames, written with `writev` |
//! | [`flood`] | per-connection flood control: a token bucket on messages |
//! | [`metrics`] | counters for `/metrics`, Prometheus text format |
//! | [`service`] | the seam between the loop and the application |
//! | [`chat`] | the chat policy: rooms, names, announcements, who gets what |
//! | [`command`] | what a user typed or sent as JSON: a message or a command |
//! | [`history`] | a room's recent messages, bounded in count and bytes |
//! | [`render`] | chat events as plain-text lines or JSON objects |
//! | [`target`] | the request target: room name and `since` |
//! | [`server`] | the `mio` loop: sockets, tokens, timers, signals |
//! | [`config`] | the command line and every limit's default |

pub mod chat;
pub mod cluster;
pub mod config;
pub mod net;
pub mod protocol;
pub mod service;
