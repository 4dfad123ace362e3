//! The seam between the event loop and the application.
//!
//! The loop ([`crate::net`]) knows sockets, tokens and connections; an
//! application (the chat, or echo mode) knows users and what they say.
//! They meet here, and only through the types of this module: the loop
//! calls a [`Service`] with [`Message`]s, [`Goodbye`]s and [`HttpGet`]s
//! made from its protocol events, and the service answers through a
//! [`Context`], which turns a message into an [`Outgoing`] once and hands
//! that handle to as many peers as it likes.
//!
//! [`Outgoing`] is opaque to the service: it holds one shared plain frame
//! and, made lazily by the loop for the first recipient that negotiated
//! `permessage-deflate`, one shared compressed frame; the loop picks per
//! recipient, while the service still encodes once.
//!
//! A service may also want connections of its own carried (the cluster's
//! two Redis links): it lends them to the loop as [`Upstream`]s
//! ([`Service::upstream`]), and hears what they said in
//! [`Service::on_upstream`], so the loop still knows no Redis.

use std::cell::{OnceCell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Instant;

use crate::protocol::outbox::SharedFrame;

/// A peer's identity for the life of its connection. Identifiers are
/// reused after a peer is gone, never while it is known to the service.
pub type PeerId = usize;

/// The loop's clock, read once per pass of the loop and shared by every
/// call made in that pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Monotonic time, for durations and deadlines.
    pub now: Instant,
    /// Wall-clock time in milliseconds since the Unix epoch, for
    /// timestamps users see.
    pub unix_ms: u64,
}

impl Clock {
    /// Reads both clocks.
    pub fn read() -> Clock {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock {
            now: Instant::now(),
            unix_ms,
        }
    }
}

/// What an upgrade request asks of the service.
#[derive(Clone, Copy, Debug)]
pub struct Upgrade<'a> {
    pub remote: SocketAddr,
    /// The request target, e.g. `/` or `/rust?since=12`.
    pub target: &'a str,
    /// The subprotocol selected at the handshake (one of
    /// [`Service::protocols`] that the client offered).
    pub protocol: Option<&'a str>,
    /// The request's cookies (the `Cookie` header's value), if any.
    pub cookie: Option<&'a str>,
}

/// Why the service turns an upgrade down: an HTTP status and a reason
/// that goes into the response body and the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

/// A plain HTTP request the loop does not answer itself: a `GET` or
/// `HEAD` (answered alike), or a `POST` with its whole body (only when the
/// handshake policy takes bodies: the API).
#[derive(Clone, Copy, Debug)]
pub struct HttpGet<'a> {
    /// `GET`, `HEAD` or `POST`.
    pub method: &'a str,
    /// The request target in origin form, e.g. `/rust`.
    pub target: &'a str,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<&'a str>,
    /// The `Content-Type` header's value (a `POST`'s), if any.
    pub content_type: Option<&'a str>,
    /// A `POST`'s body (empty otherwise).
    pub body: &'a [u8],
}

impl<'a> HttpGet<'a> {
    /// A `GET` of `target`, without headers.
    pub fn get(target: &'a str) -> HttpGet<'a> {
        HttpGet {
            method: "GET",
            target,
            authorization: None,
            content_type: None,
            body: &[],
        }
    }
}

/// The service's answer to an [`HttpGet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines, without line endings.
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// A `text/plain` reply.
    pub fn text(status: u16, text: &str) -> HttpReply {
        HttpReply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: text.as_bytes().to_vec(),
        }
    }
}

/// A plain HTTP request the service answers later, through
/// [`Context::answer_http`] (see [`Service::on_http_deferred`]): the
/// connection and the generation of the connection that held its key, so
/// that an answer for a connection gone meanwhile never reaches another
/// one given the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpTicket {
    key: PeerId,
    generation: u32,
}

impl HttpTicket {
    /// For the loop (and contexts made by tests).
    pub fn new(key: PeerId, generation: u32) -> HttpTicket {
        HttpTicket { key, generation }
    }

    pub fn key(&self) -> PeerId {
        self.key
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }
}

/// A complete message from a peer, lent for the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
}

impl Message<'_> {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How an open connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Goodbye {
    /// The WebSocket close code (1006 for a lost connection).
    pub code: u16,
    /// The peer ended it (rather than the server).
    pub by_peer: bool,
}

/// The kind of message a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

/// A message encoded for the wire, ready to be delivered to any number of
/// peers. Cloning is a reference-count increment; the bytes are the
/// loop's business.
///
/// It holds the plain frame and, made the first time a recipient that
/// negotiated `permessage-deflate` needs it, the compressed frame: each
/// format is encoded at most once per message, however many recipients
/// (and history replays) it has.
#[derive(Clone)]
pub struct Outgoing(Rc<Formats>);

struct Formats {
    plain: SharedFrame,
    /// `None` inside: compressing was not worth it (too short, or no
    /// smaller), and the plain frame goes to everyone.
    deflated: OnceCell<Option<SharedFrame>>,
    /// Compressed with a smaller window, for the rare peer that asked for
    /// one (`server_max_window_bits`) and a message longer than it: by
    /// window bits, each made once.
    narrow: RefCell<Vec<(u8, SharedFrame)>>,
}

impl Outgoing {
    /// Wraps an encoded frame (done by the loop's [`Context::encode`]).
    pub fn from_plain(plain: SharedFrame) -> Outgoing {
        Outgoing(Rc::new(Formats {
            plain,
            deflated: OnceCell::new(),
            narrow: RefCell::new(Vec::new()),
        }))
    }

    /// The uncompressed frame, for the loop to queue.
    pub fn plain(&self) -> &SharedFrame {
        &self.0.plain
    }

    /// The compressed frame, made by `make` from the plain one the first
    /// time it is asked for and shared from then on; `None` if `make`
    /// found compressing not worth it.
    pub fn deflated(
        &self,
        make: impl FnOnce(&SharedFrame) -> Option<SharedFrame>,
    ) -> Option<&SharedFrame> {
        self.0.deflated.get_or_init(|| make(&self.0.plain)).as_ref()
    }

    /// The frame compressed with a window of `bits`, made by `make` the
    /// first time it is asked for and shared from then on.
    pub fn deflated_narrow(
        &self,
        bits: u8,
        make: impl FnOnce(&SharedFrame) -> Option<SharedFrame>,
    ) -> Option<SharedFrame> {
        if let Some((_, frame)) = self.0.narrow.borrow().iter().find(|(b, _)| *b == bits) {
            return Some(frame.clone());
        }
        let frame = make(&self.0.plain)?;
        self.0.narrow.borrow_mut().push((bits, frame.clone()));
        Some(frame)
    }

    /// Bytes on the wire for a recipient of the plain frame.
    pub fn wire_len(&self) -> usize {
        self.0.plain.len()
    }
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outgoing")
            .field("plain", &self.0.plain.len())
            .field(
                "deflated",
                &self
                    .0
                    .deflated
                    .get()
                    .map(|d| d.as_ref().map(SharedFrame::len)),
            )
            .finish()
    }
}

impl PartialEq for Outgoing {
    /// The same message: the same plain bytes.
    fn eq(&self, other: &Outgoing) -> bool {
        self.0.plain == other.0.plain
    }
}

impl Eq for Outgoing {}

/// One number the service reports on `/metrics` (a Prometheus gauge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub value: usize,
}

/// What a service may do while it handles an event.
pub trait Context {
    /// The loop's clock for this pass.
    fn clock(&self) -> Clock;

    /// Encodes a message made of `parts` (concatenated) once, for any
    /// number of recipients. Text parts must together be valid UTF-8.
    fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> Outgoing;

    /// Queues `message` for `to`. Peers that are gone, closing or over
    /// their queue limit are the loop's business; the service need not
    /// care.
    fn deliver(&mut self, to: PeerId, message: &Outgoing);

    /// Closes `to`'s connection with `code` (an RFC 6455 §7.4 code the
    /// service may send: 1000, 1008, or its own 4000-4999) and `reason`,
    /// after what is queued for it. The loop does it once the current
    /// call returns; [`Service::on_close`] follows as for any close.
    fn close(&mut self, to: PeerId, code: u16, reason: &'static str);

    /// Answers the HTTP request `ticket` stands for (one
    /// [`Service::on_http_deferred`] left unanswered). Ignored when that
    /// connection is gone or already answered (e.g. by the loop's
    /// handshake timeout, `408`).
    fn answer_http(&mut self, ticket: HttpTicket, reply: HttpReply);
}

/// A byte stream to a server the service talks to (Redis, for the
/// cluster), carried by the loop. The loop owns the socket, a token in
/// its one poll; the upstream decides what the bytes mean and when a
/// socket is wanted, with time as an input (`poll_timeout` /
/// `handle_timeout`, as quinn-proto does), so the loop needs to know
/// nothing of what is on the other end.
pub trait Upstream {
    /// Where to connect.
    fn addr(&self) -> SocketAddr;

    /// Which connection the upstream wants now: `Some(n)` while it wants
    /// its `n`th socket (connecting, logging in or ready), `None` while it
    /// wants none (backing off). A new `n` means: close any older socket
    /// and open a new one.
    fn wanted_socket(&self) -> Option<u64>;

    /// The socket it asked for is connected.
    fn on_connected(&mut self, now: Instant);

    /// Bytes arrived.
    fn on_input(&mut self, now: Instant, bytes: &[u8]);

    /// The other end closed the connection.
    fn on_eof(&mut self, now: Instant);

    /// Connecting, reading or writing failed.
    fn on_error(&mut self, now: Instant, kind: std::io::ErrorKind);

    /// The bytes to write now (empty when none).
    fn output(&self) -> &[u8];

    /// `n` bytes of [`Upstream::output`] were written.
    fn advance_output(&mut self, n: usize);

    /// When [`Upstream::handle_timeout`] must next be called.
    fn poll_timeout(&self) -> Option<Instant>;

    /// Acts on whatever deadline has passed at `now`.
    fn handle_timeout(&mut self, now: Instant);
}

/// An application run by the loop.
pub trait Service {
    /// What [`Service::admit`] learned from an upgrade request, handed to
    /// [`Service::on_open`] so the request is parsed once.
    type Admitted;

    /// The subprotocols this service speaks; the handshake selects the
    /// first one the client offers.
    fn protocols(&self) -> Vec<String>;

    /// Decides whether a valid upgrade request is accepted (e.g. whether
    /// its target names something that exists). No side effects: the
    /// connection is not open yet.
    fn admit(&mut self, upgrade: &Upgrade<'_>) -> Result<Self::Admitted, Refusal>;

    /// A WebSocket connection opened (its `101` is queued: anything
    /// delivered now follows it).
    fn on_open(
        &mut self,
        id: PeerId,
        upgrade: &Upgrade<'_>,
        admitted: Self::Admitted,
        cx: &mut impl Context,
    );

    /// A complete message arrived from `id`.
    fn on_message(&mut self, id: PeerId, message: Message<'_>, cx: &mut impl Context);

    /// An open connection ended (called once per `on_open`).
    fn on_close(&mut self, id: PeerId, goodbye: Goodbye, cx: &mut impl Context);

    /// Flood control started dropping `id`'s messages: tell the sender.
    fn on_throttled(&mut self, id: PeerId, cx: &mut impl Context);

    /// A plain HTTP request arrived on the WebSocket port (other than the
    /// loop's own `/healthz` and `/metrics`).
    fn on_http(&mut self, request: &HttpGet<'_>, cx: &mut impl Context) -> HttpReply;

    /// What the loop calls for a plain HTTP request: like
    /// [`Service::on_http`], but the service may answer later (`None`),
    /// through [`Context::answer_http`] with `ticket`, e.g. once a server
    /// it asked replied. It must then answer within its own bounded time:
    /// the loop answers `408` once the handshake timeout (counted from
    /// the connection's accept) passes, and holds the connection till
    /// then. By default, [`Service::on_http`]'s answer at once.
    fn on_http_deferred(
        &mut self,
        _ticket: HttpTicket,
        request: &HttpGet<'_>,
        cx: &mut impl Context,
    ) -> Option<HttpReply> {
        Some(self.on_http(request, cx))
    }

    /// The service's own gauges, for `/metrics`.
    fn gauges(&self) -> Vec<Gauge>;

    /// Called about once a second, for the service's own timers (what it
    /// sends then is delivered like any other message).
    fn on_tick(&mut self, cx: &mut impl Context);

    /// The service's `i`th upstream connection, if it has one (the loop
    /// asks for 0, 1, ... until `None`; at most [`MAX_UPSTREAMS`]). None by
    /// default: a single chat node talks to nobody.
    fn upstream(&mut self, _i: usize) -> Option<&mut dyn Upstream> {
        None
    }

    /// Called after each pass in which upstreams were fed bytes or
    /// timeouts: the service acts on what they said (and may deliver).
    fn on_upstream(&mut self, _cx: &mut impl Context) {}

    /// Called whenever the loop has gathered work and is about to write:
    /// after each batch of readiness events (before the peers are
    /// written), after input read during a long write, and at the end of
    /// every pass; the upstreams are written right after. What the service
    /// gathered since goes out now, e.g. the chat's messages to Redis, one
    /// call per room rather than one per message. Nothing by default.
    fn on_batch_end(&mut self, _cx: &mut impl Context) {}

    /// Why the service is degraded (for `/healthz`), if it is.
    fn degraded(&self) -> Option<String> {
        None
    }
}

/// Most upstream connections one service may have.
pub const MAX_UPSTREAMS: usize = 8;
