//! The only code with sockets: the `mio` loop and what it needs.
//!
//! | module | responsibility |
//! |---|---|
//! | [`server`] | the loop: one pass per batch of readiness events |
//! | [`accept`] | listeners, accepting, refusing at the door (limits, `EMFILE`) |
//! | [`addresses`] | connections held per client address |
//! | [`remote`] | a peer's address in 18 bytes |
//! | [`peers`] | each peer's stream, connection and clocks; batched writes; the service's context |
//! | [`stream`] | one peer's socket: read, vectored write, shutdown, interest |
//! | [`tls`] | the TLS listener's certificate and key: loading, checking, reloading on SIGHUP |
//! | [`timers`] | every deadline as a pure function over ticks |
//! | [`flood`] | per-connection flood control: a token bucket on messages |
//! | [`metrics`] | the loop's counters, Prometheus text format |
//! | [`upstream`] | the service's upstream sockets (Redis) as tokens in the same poll |
//! | [`ops`] | `/healthz` and `/metrics` |

pub mod accept;
pub mod addresses;
pub mod flood;
pub mod metrics;
pub mod ops;
pub mod peers;
pub mod remote;
pub mod server;
pub mod stream;
pub mod timers;
pub mod tls;
pub mod upstream;
