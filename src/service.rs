//! The seam between the event loop and the application.
//!
//! The loop ([`crate::net::server`]) knows sockets, tokens and connections; the
//! application ([`crate::chat`]) knows users and what they say. They meet
//! here: the loop calls a [`Service`] with protocol-level events, and the
//! service answers through an [`Outbound`], which turns a message into a
//! shared frame once and hands that frame to as many peers as it likes.
//! Neither side sees the other's types.

use std::net::SocketAddr;
use std::time::Instant;

use crate::protocol::connection::Message;
use crate::protocol::frame::CloseCode;
use crate::protocol::handshake::{HttpRequest, HttpResponse, Refusal};
use crate::protocol::outbox::SharedFrame;

/// A peer's identity for the life of its connection. Identifiers are
/// reused after a peer is gone, never while it is known to the service.
pub type PeerId = usize;

/// What the service learns about a newly opened connection.
#[derive(Debug)]
pub struct Opened<'a> {
    pub remote: SocketAddr,
    /// The request target, e.g. `/` or `/rust?since=12`.
    pub target: &'a str,
    /// The subprotocol selected at the handshake.
    pub protocol: Option<&'a str>,
}

/// The kind of message a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

/// How a service sends.
pub trait Outbound {
    /// Encodes a message made of `parts` (concatenated) as one frame.
    /// Text parts must together be valid UTF-8.
    fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> SharedFrame;

    /// Queues `frame` for `to`. Peers that are gone, closing or over their
    /// queue limit are handled by the loop; the service need not care.
    fn deliver(&mut self, to: PeerId, frame: &SharedFrame);
}

/// The application run by the loop.
pub trait Service {
    /// Decides whether a valid upgrade request is accepted (e.g. whether
    /// its target names something that exists). No side effects: the
    /// connection is not open yet.
    fn admit(&mut self, opened: &Opened<'_>) -> Result<(), Refusal>;

    /// A WebSocket connection opened (its `101` is queued: anything
    /// delivered now follows it).
    fn on_open(&mut self, id: PeerId, opened: Opened<'_>, out: &mut impl Outbound);

    /// A complete message arrived from `id`.
    fn on_message(&mut self, id: PeerId, message: Message<'_>, out: &mut impl Outbound);

    /// An open connection ended (called once per `on_open`).
    fn on_close(&mut self, id: PeerId, code: CloseCode, out: &mut impl Outbound);

    /// Flood control started dropping `id`'s messages: tell the sender.
    fn on_throttled(&mut self, id: PeerId, out: &mut impl Outbound);

    /// A plain HTTP request arrived on the WebSocket port (other than the
    /// loop's own `/healthz` and `/metrics`).
    fn on_http(&mut self, request: &HttpRequest) -> HttpResponse;

    /// Appends the application's own gauges to a `/metrics` scrape.
    fn render_metrics(&self, out: &mut String);

    /// Called about once a second, for the application's own timers.
    fn on_tick(&mut self, now: Instant);
}
