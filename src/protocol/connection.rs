//! One peer's WebSocket protocol state machine, sans-IO: bytes in, events
//! out, replies queued in the connection's own [`Outbox`].
//!
//! ```text
//!   Handshake ──valid──> Upgrading ──accept: 101──> Open ──we send Close──> CloseSent ──their Close──> Done
//!       │                    │                        │                          │
//!       └─4xx / HTTP─────────┴─refuse─────────────────┴─their Close (echoed), or a protocol error─┴──> Done
//! ```
//!
//! The caller reads from its socket into a buffer of its own, wraps the
//! bytes in an [`Input`] and calls [`Connection::next_event`] until it
//! returns `None`. A message that arrives whole in one read is unmasked in
//! place and lent out from that buffer; only a message split across reads
//! or fragments is copied, into the connection's reassembly buffer. The
//! only state an idle connection keeps is a handful of words: no buffers.
//!
//! Every rule that makes a peer's bytes unacceptable ends the connection
//! with the close code RFC 6455 §7.4.1 names for it; a frame never panics.
//!
//! Once the connection is done (a refusal or an HTTP answer queued, the
//! close handshake over, the connection failed), nothing the peer sends
//! can matter, and [`Connection::wants_input`] says so: a peer that keeps
//! writing to a connection that has answered it must not keep the caller
//! reading and discarding at full speed.

// Lengths here come from peers: none may be cut short by an `as` cast.
#![deny(clippy::cast_possible_truncation)]

use std::borrow::Cow;

use crate::protocol::deflate::Inflater;
use crate::protocol::extensions::Negotiated;
use crate::protocol::frame::{self, CloseCode, FrameHeader, OpCode, MAX_HEADER_LEN, RSV1};
use crate::protocol::handshake::{
    self, HeadScanner, HttpRequest, HttpResponse, Method, Policy, Refusal, Request, Scan, Upgrade,
};
use crate::protocol::outbox::{Outbox, SharedFrame};

/// What every connection is held to. One value is shared by all of them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub handshake: Policy,
    /// The largest message (the sum of its fragments) accepted, in bytes.
    pub max_message_size: usize,
    /// The most fragments one message may have (floods of tiny fragments
    /// cost per-frame work without adding bytes).
    pub max_fragments: usize,
    /// Queued outgoing bytes (each frame charged 16 more for its handle)
    /// past which [`Connection::send`] refuses frames: the memory bound of
    /// a peer that does not read.
    pub max_outbox_bytes: usize,
    /// Messages shorter than this (in bytes, uncompressed) are sent
    /// uncompressed even to a peer that negotiated `permessage-deflate`
    /// (RFC 7692 §6: RSV1 is set per message).
    pub compression_min_size: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            handshake: Policy {
                allowed_origins: Vec::new(),
                protocols: Vec::new(),
                max_head_bytes: 8 * 1024,
                max_headers: 64,
                compression: false,
                max_body_bytes: 0,
            },
            max_message_size: 1 << 20,
            max_fragments: 1024,
            max_outbox_bytes: 1 << 20,
            compression_min_size: 256,
        }
    }
}

/// Where the connection is in its life. Each step only goes rightwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Handshake,
    /// A valid upgrade request awaits [`Connection::accept`] or a refusal.
    Upgrading,
    /// A plain HTTP request awaits [`Connection::respond`] (which a
    /// service may give later); nothing more is read from the peer
    /// (RFC 9112 §9.6: no further requests on a connection to be closed).
    Answering,
    Open,
    /// We sent a Close and wait for the peer's (§7.1.2).
    CloseSent,
    /// Nothing more is read or queued; what is queued is flushed, then the
    /// socket is closed.
    Done,
}

/// A complete message from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'b> {
    Text(Cow<'b, str>),
    Binary(Cow<'b, [u8]>),
}

/// How the open connection ended, reported once.
#[derive(Debug, PartialEq, Eq)]
pub struct Closure {
    /// The code received (1005 for an empty Close, 1006 for a lost
    /// connection) or the one we sent.
    pub code: CloseCode,
    /// True when the peer ended it; false when we failed or closed it.
    pub by_peer: bool,
    pub detail: Cow<'static, str>,
}

/// What the caller learns from the bytes it fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'b> {
    /// A valid upgrade request: the caller answers it with
    /// [`Connection::accept`] or [`Connection::respond`] before feeding
    /// more bytes.
    Upgrade(Upgrade),
    /// A plain HTTP request: answer it with [`Connection::respond`], a
    /// `HEAD` exactly as a `GET` (the connection leaves the body out;
    /// [`Connection::request_method`] tells which it was).
    Http(HttpRequest),
    /// The request was refused; the response is queued.
    Refused(&'static str),
    Message(Message<'b>),
    /// The connection left the open state; no more messages will come.
    Closed(Closure),
}

/// Why a frame could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The connection is not open (any more): the frame is dropped.
    NotOpen,
    /// The peer is not reading: its queue is over the limit.
    Overflow,
}

/// A cursor over bytes just read. Messages that arrive whole are lent out
/// of it for `'b`, unmasked in place.
pub struct Input<'b> {
    rest: &'b mut [u8],
}

impl<'b> Input<'b> {
    pub fn new(bytes: &'b mut [u8]) -> Input<'b> {
        Input { rest: bytes }
    }

    pub fn len(&self) -> usize {
        self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The bytes not consumed yet (for a caller that stops feeding and
    /// keeps them for later).
    pub fn remaining(&self) -> &[u8] {
        self.rest
    }

    fn peek(&self) -> &[u8] {
        self.rest
    }

    /// Splits off the first `n` bytes (`n <= len`).
    fn take(&mut self, n: usize) -> &'b mut [u8] {
        let rest = std::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(n);
        self.rest = tail;
        head
    }
}

/// A frame whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct InFrame {
    opcode: OpCode,
    fin: bool,
    /// RSV1 on the first frame of a message: "Per-Message Compressed"
    /// (RFC 7692 §6).
    compressed: bool,
    mask: [u8; 4],
    len: usize,
    read: usize,
}

/// A message being put together from fragments or from several reads.
#[derive(Debug)]
struct Assembly {
    binary: bool,
    data: Vec<u8>,
    /// Bytes of `data` (or of the inflated output) known to be valid
    /// UTF-8 (text only).
    checked: usize,
    fragments: usize,
    /// A compressed message is inflated as it arrives instead of gathered
    /// in `data`; the inflater lives only as long as the message.
    inflater: Option<Box<Inflater>>,
    /// Compressed bytes received so far (the size limit applies to them
    /// as they arrive, and to the inflated output in the inflater).
    wire: usize,
}

impl Assembly {
    /// Room for what the first frame announced, up to a cap: the rest
    /// grows with what actually arrives.
    fn start(first: &InFrame, settings: &Settings) -> Box<Assembly> {
        let (data, inflater) = match first.compressed {
            true => (
                Vec::new(),
                Some(Box::new(Inflater::new(settings.max_message_size))),
            ),
            false => (Vec::with_capacity(first.len.min(64 * 1024)), None),
        };
        Box::new(Assembly {
            binary: first.opcode == OpCode::Binary,
            data,
            checked: 0,
            fragments: 1,
            inflater,
            wire: 0,
        })
    }

    /// Bytes received so far, as they came on the wire.
    fn received(&self) -> usize {
        match self.inflater {
            Some(_) => self.wire,
            None => self.data.len(),
        }
    }

    /// The message's bytes so far (inflated if it is compressed).
    fn content(&self) -> &[u8] {
        match &self.inflater {
            Some(inflater) => inflater.output(),
            None => &self.data,
        }
    }
}

/// A header whose bytes are split across reads.
#[derive(Clone, Copy, Debug, Default)]
struct HeaderStash {
    bytes: [u8; MAX_HEADER_LEN],
    /// At most `MAX_HEADER_LEN` (14); a `u8` keeps idle connections small.
    len: u8,
}

impl HeaderStash {
    /// Records that the first `len` bytes hold a partial header.
    fn set_len(&mut self, len: usize) {
        // `len` indexes `bytes` (the caller just copied into `bytes[..len]`),
        // so it is at most 14 and the conversion never fails.
        self.len = u8::try_from(len).expect("a stashed header is at most 14 bytes");
    }
}

/// A control frame's payload split across reads: at most 125 bytes
/// (RFC 6455 §5.5: "All control frames MUST have a payload length of 125
/// bytes or less"), which the frame header was checked for.
#[derive(Clone, Copy, Debug)]
struct ControlStash {
    bytes: [u8; frame::MAX_CONTROL_PAYLOAD],
    len: u8,
}

impl Default for ControlStash {
    fn default() -> ControlStash {
        ControlStash {
            bytes: [0; frame::MAX_CONTROL_PAYLOAD],
            len: 0,
        }
    }
}

impl ControlStash {
    /// Adds bytes of the payload; what would pass 125 bytes (which a
    /// checked header never announces) is not kept.
    fn append(&mut self, chunk: &[u8]) {
        let start = usize::from(self.len);
        let room = self.bytes.len() - start;
        let n = chunk.len().min(room);
        self.bytes[start..start + n].copy_from_slice(&chunk[..n]);
        // start + n <= 125, so it fits a u8.
        self.len = u8::try_from(start + n).unwrap_or(u8::MAX);
    }

    fn payload(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The length a frame header declared, as a `usize`, if it is at most
/// `room` bytes. A length a `usize` cannot hold (over 4 GiB on a 32-bit
/// host) is over any limit: it is refused, never truncated.
fn declared_len_within(declared: u64, room: usize) -> Option<usize> {
    usize::try_from(declared).ok().filter(|&len| len <= room)
}

/// The outcome of one step of frame reading.
enum Step<'b> {
    Event(Event<'b>),
    /// Go on reading.
    Continue,
    /// The input is used up.
    NeedMore,
}

/// The request head, collected only when it spans reads.
#[derive(Debug, Default)]
struct HeadState {
    head: Vec<u8>,
    scanner: HeadScanner,
    /// A `POST` whose head was read, its body still coming (at most
    /// `Policy::max_body_bytes`; the handshake timeout still runs).
    awaiting_body: Option<HttpRequest>,
}

/// One peer's protocol state. See the module docs.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    /// The method of the request head, once it parsed (and was GET or HEAD).
    method: Option<Method>,
    head: Option<Box<HeadState>>,
    stash: HeaderStash,
    frame: Option<InFrame>,
    /// Boxed: most connections never need one, and an idle connection's
    /// state should stay a few words.
    message: Option<Box<Assembly>>,
    /// A control frame's payload split across reads, boxed for the same
    /// reason as `message`.
    control: Option<Box<ControlStash>>,
    outbox: Outbox,
    /// The `permessage-deflate` terms, once agreed at the handshake.
    deflate: Option<Negotiated>,
    /// The message last handed out came compressed (RSV1 on its first
    /// frame), for the caller's counters.
    last_compressed: bool,
}

impl Default for Connection {
    fn default() -> Connection {
        Connection::new()
    }
}

impl Connection {
    /// A connection waiting for its upgrade request.
    pub fn new() -> Connection {
        Connection {
            phase: Phase::Handshake,
            method: None,
            head: None,
            stash: HeaderStash::default(),
            frame: None,
            message: None,
            control: None,
            outbox: Outbox::default(),
            deflate: None,
            last_compressed: false,
        }
    }

    /// A connection whose handshake happened elsewhere and agreed
    /// `permessage-deflate` (tests, benches, fuzzing).
    pub fn open_with_deflate(deflate: Negotiated) -> Connection {
        Connection {
            deflate: Some(deflate),
            ..Connection::open()
        }
    }

    /// The `permessage-deflate` terms agreed, if any: whether this peer
    /// may be sent compressed messages, and with which window.
    pub fn deflate(&self) -> Option<Negotiated> {
        self.deflate
    }

    /// Whether the last [`Event::Message`] came compressed (RSV1, RFC
    /// 7692 §6: "Per-Message Compressed"), i.e. the peer compresses what
    /// it sends.
    pub fn last_message_was_compressed(&self) -> bool {
        self.last_compressed
    }

    /// A connection whose handshake happened elsewhere (tests, benches).
    pub fn open() -> Connection {
        Connection {
            phase: Phase::Open,
            ..Connection::new()
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.outbox
    }

    /// Done and flushed: the socket can be closed.
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done && self.outbox.is_empty()
    }

    /// Whether bytes from the peer can still change anything. False once
    /// the connection is done: its last words (a refusal, an HTTP answer,
    /// the reply to a Close, the Close of a failure) are queued, and
    /// [`Connection::next_event`] would only discard what comes next
    /// (RFC 6455 §7.1.1; RFC 9112 §9.6: a server that sends "close" "MUST
    /// NOT process any further requests received on that connection").
    /// Never true again once false.
    ///
    /// From then on the caller has no reason to read but one: closing a
    /// socket with unread bytes makes the kernel send a reset, which "might
    /// erase the client's unacknowledged input buffers" (RFC 9112 §9.6),
    /// our answer with them. §9.6 has the server half-close, then read
    /// "until the server is reasonably certain that its own TCP stack has
    /// received the client's acknowledgement" of its last response. So the
    /// caller should read and discard (without calling `next_event`) only
    /// for a bounded linger, a time and a byte budget counted from the
    /// moment this turned false, then stop reading (drop read interest)
    /// and close once the outbox is flushed or its close timeout passes.
    /// A peer that keeps writing then fills its own send buffer and
    /// waits, at no cost to us.
    pub fn wants_input(&self) -> bool {
        !matches!(self.phase, Phase::Answering | Phase::Done)
    }

    /// The method of the request, once its head parsed and it was one we
    /// answer (`GET` or `HEAD`): for logs. The answer to a `HEAD` is
    /// written without its body.
    pub fn request_method(&self) -> Option<Method> {
        self.method
    }

    /// Consumes bytes from `input` until something happens worth telling
    /// the caller, or the bytes run out (`None`).
    pub fn next_event<'b>(
        &mut self,
        input: &mut Input<'b>,
        settings: &Settings,
    ) -> Option<Event<'b>> {
        loop {
            if input.is_empty() {
                return None;
            }
            let step = match self.phase {
                Phase::Handshake => self.read_head(input, settings),
                // Bytes after the head wait for the verdict.
                Phase::Upgrading => return None,
                Phase::Open | Phase::CloseSent => self.read_frame(input, settings),
                Phase::Answering | Phase::Done => {
                    // §7.1.1: after the close, nothing the peer sends
                    // matters; RFC 9112 §9.6: nor after the request of a
                    // connection that is to close.
                    input.take(input.len());
                    Step::NeedMore
                }
            };
            match step {
                Step::Event(event) => return Some(event),
                Step::Continue => {}
                Step::NeedMore => return None,
            }
        }
    }

    /// Accepts an [`Event::Upgrade`]: queues the `101`; the connection is open.
    pub fn accept(&mut self, upgrade: &Upgrade) {
        if self.phase == Phase::Upgrading {
            self.outbox.push(handshake::accept_response(upgrade).into());
            self.deflate = upgrade.deflate;
            self.phase = Phase::Open;
        }
    }

    /// Queues the answer to an [`Event::Http`] request, or the refusal of an
    /// [`Event::Upgrade`]. The answer to a `HEAD` is written without its
    /// body (RFC 9110 §9.3.2), so the caller answers it as a `GET`.
    pub fn respond(&mut self, response: &HttpResponse) {
        self.push_response(response);
        self.phase = Phase::Done;
    }

    /// Refuses the connection before or during its handshake with an HTTP
    /// response (timeouts, capacity).
    pub fn refuse(&mut self, refusal: &Refusal) {
        if matches!(
            self.phase,
            Phase::Handshake | Phase::Upgrading | Phase::Answering
        ) {
            self.push_response(&refusal.response);
        }
        self.phase = Phase::Done;
    }

    fn push_response(&mut self, response: &HttpResponse) {
        let method = self.method.unwrap_or(Method::Get);
        self.outbox.push(response.to_bytes_for(method).into());
    }

    /// Queues a frame for the peer. Over the outbox limit the frame is
    /// still refused, and the caller decides the peer's fate.
    pub fn send(&mut self, frame: &SharedFrame, settings: &Settings) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        if self.outbox.footprint() > settings.max_outbox_bytes {
            return Err(SendError::Overflow);
        }
        self.outbox.push(frame.clone());
        Ok(())
    }

    /// Whether a frame or a fragmented message has started and not yet
    /// ended: the peer owes us the rest of it.
    pub fn is_mid_message(&self) -> bool {
        self.stash.len > 0 || self.frame.is_some() || self.message.is_some()
    }

    /// Queues a Ping (heartbeats).
    pub fn ping(&mut self, payload: &[u8]) {
        if self.phase == Phase::Open {
            self.outbox
                .push(frame::encode_frame(OpCode::Ping, payload).into());
        }
    }

    /// Starts the close handshake (§7.1.2). Returns the closure to report
    /// if the connection was open.
    pub fn close(&mut self, code: CloseCode, reason: &'static str) -> Option<Closure> {
        match self.phase {
            Phase::Open => {
                self.outbox
                    .push(frame::encode_close(Some(code), reason).into());
                // Frames the peer already started keep being read by the
                // rules (a fragmented message may still be finishing), so
                // partial state stays; only what they carry is discarded.
                self.phase = Phase::CloseSent;
                Some(Closure {
                    code,
                    by_peer: false,
                    detail: Cow::Borrowed(reason),
                })
            }
            Phase::Handshake | Phase::Upgrading | Phase::Answering => {
                self.phase = Phase::Done;
                None
            }
            Phase::CloseSent | Phase::Done => None,
        }
    }

    /// The transport is gone (EOF, reset, timeout): nothing more can be
    /// sent. Returns the closure to report if the connection was open
    /// (§7.1.5: "_The WebSocket Connection Close Code_ is considered to
    /// be 1006").
    pub fn abort(&mut self, detail: &'static str) -> Option<Closure> {
        let was_open = self.phase == Phase::Open;
        if self.phase != Phase::Done {
            // Only a finished connection's last words (a Close reply) are
            // still worth one attempt to send.
            self.outbox.clear();
        }
        self.phase = Phase::Done;
        self.drop_partial_input();
        was_open.then_some(Closure {
            code: CloseCode::ABNORMAL,
            by_peer: true,
            detail: Cow::Borrowed(detail),
        })
    }

    fn drop_partial_input(&mut self) {
        self.head = None;
        self.message = None;
        self.control = None;
    }

    // ----- the opening handshake -----

    fn read_head<'b>(&mut self, input: &mut Input<'b>, settings: &Settings) -> Step<'b> {
        let max = settings.handshake.max_head_bytes;
        let state = self.head.get_or_insert_with(Box::default);
        if let Some(request) = &mut state.awaiting_body {
            let wanted = request.body_len - request.body.len();
            request
                .body
                .extend_from_slice(input.take(wanted.min(input.len())));
            if request.body.len() < request.body_len {
                return Step::NeedMore;
            }
            let request = state.awaiting_body.take();
            self.head = None;
            self.phase = Phase::Answering;
            return request.map_or(Step::NeedMore, |r| Step::Event(Event::Http(r)));
        }
        let end = match state.scanner.scan_request(input.peek()) {
            Scan::End(end) => end,
            Scan::More => {
                if state.head.len() + input.len() > max {
                    return self.refuse_head(&Refusal::head_too_large());
                }
                state.head.extend_from_slice(input.take(input.len()));
                return Step::NeedMore;
            }
            // Bytes that cannot be a request are refused at once, not
            // after the handshake timeout. The verdict falls on the same
            // byte however the input was split; a head past the limit
            // before that byte is too large, as it would be fed bytewise.
            Scan::Refuse(at, why) => {
                let refusal = if state.head.len() + at > max {
                    Refusal::head_too_large()
                } else {
                    why.refusal()
                };
                return self.refuse_head(&refusal);
            }
        };
        if state.head.len() + end > max {
            return self.refuse_head(&Refusal::head_too_large());
        }
        let bytes = input.take(end);
        let parsed = if state.head.is_empty() {
            handshake::parse_head(bytes, &settings.handshake)
        } else {
            state.head.extend_from_slice(bytes);
            handshake::parse_head(&state.head, &settings.handshake)
        };
        self.head = None;
        self.method = parsed.method;
        match parsed.outcome {
            Ok(Request::Upgrade(upgrade)) => {
                self.phase = Phase::Upgrading;
                Step::Event(Event::Upgrade(upgrade))
            }
            Ok(Request::Http(mut request)) if request.body_len > 0 => {
                // Bytes after the head are the body: read them next.
                request.body.reserve_exact(request.body_len);
                let mut state = Box::<HeadState>::default();
                state.awaiting_body = Some(request);
                self.head = Some(state);
                self.read_head(input, settings)
            }
            Ok(Request::Http(request)) => {
                self.phase = Phase::Answering;
                Step::Event(Event::Http(request))
            }
            Err(refusal) => self.refuse_head(&refusal),
        }
    }

    fn refuse_head<'b>(&mut self, refusal: &Refusal) -> Step<'b> {
        self.refuse(refusal);
        self.head = None;
        Step::Event(Event::Refused(refusal.reason))
    }

    // ----- frames -----

    fn read_frame<'b>(&mut self, input: &mut Input<'b>, settings: &Settings) -> Step<'b> {
        let mut progress = match self.frame {
            Some(progress) => progress,
            None => match self.read_header(input, self.allowed_rsv()) {
                Ok(None) => return Step::NeedMore,
                Ok(Some(header)) => match self.begin_frame(header, settings) {
                    Ok(progress) => progress,
                    Err(step) => return step,
                },
                Err(e) => return self.fail(e.close_code(), error_detail(e)),
            },
        };
        let remaining = progress.len - progress.read;
        if progress.read == 0 && remaining <= input.len() {
            // The whole payload is here: unmask it in place.
            let payload = input.take(remaining);
            frame::apply_mask(payload, progress.mask, 0);
            self.frame = None;
            return self.whole_frame(progress, payload, settings);
        }
        let chunk = input.take(remaining.min(input.len()));
        frame::apply_mask(chunk, progress.mask, progress.read);
        progress.read += chunk.len();
        if progress.opcode.is_control() {
            self.control.get_or_insert_with(Box::default).append(chunk);
        } else if let Err(step) = self.gather(&progress, settings).append(chunk, false) {
            return step;
        }
        if progress.read < progress.len {
            self.frame = Some(progress);
            return Step::NeedMore;
        }
        self.frame = None;
        if progress.opcode.is_control() {
            let stash = self.control.take().unwrap_or_default();
            return self.control_frame(progress.opcode, stash.payload(), settings);
        }
        self.end_data_frame(progress.fin)
    }

    /// The RSV bits the agreed extensions give a meaning to.
    fn allowed_rsv(&self) -> u8 {
        match self.deflate {
            Some(_) => RSV1,
            None => 0,
        }
    }

    /// Decodes the next header, stashing a partial one across reads.
    fn read_header(
        &mut self,
        input: &mut Input<'_>,
        allowed_rsv: u8,
    ) -> Result<Option<FrameHeader>, frame::FrameError> {
        let had = usize::from(self.stash.len);
        if had == 0 {
            if let Some((header, len)) = frame::decode_header_with(input.peek(), allowed_rsv)? {
                input.take(len);
                return Ok(Some(header));
            }
            let n = input.len();
            self.stash.bytes[..n].copy_from_slice(input.take(n));
            self.stash.set_len(n);
            return Ok(None);
        }
        let add = (MAX_HEADER_LEN - had).min(input.len());
        self.stash.bytes[had..had + add].copy_from_slice(&input.peek()[..add]);
        match frame::decode_header_with(&self.stash.bytes[..had + add], allowed_rsv)? {
            Some((header, len)) => {
                input.take(len - had);
                self.stash.len = 0;
                Ok(Some(header))
            }
            None => {
                input.take(add);
                self.stash.set_len(had + add);
                Ok(None)
            }
        }
    }

    /// Checks a header against the message in progress and the limits.
    fn begin_frame<'b>(
        &mut self,
        header: FrameHeader,
        settings: &Settings,
    ) -> Result<InFrame, Step<'b>> {
        let in_progress = self.message.as_ref().map(|m| (m.received(), m.fragments));
        let compressed = header.rsv & RSV1 != 0;
        if compressed && header.opcode.is_control() {
            // RFC 7692 §6.1: "An endpoint MUST NOT set the "Per-Message
            // Compressed" bit of control frames".
            return Err(self.fail(CloseCode::PROTOCOL_ERROR, "RSV1 on a control frame"));
        }
        if compressed && header.opcode == OpCode::Continuation {
            // §6.1: "and non-first fragments of a data message. An endpoint
            // receiving such a frame MUST _Fail the WebSocket Connection_."
            return Err(self.fail(CloseCode::PROTOCOL_ERROR, "RSV1 on a continuation frame"));
        }
        match (header.opcode, in_progress) {
            (OpCode::Continuation, None) => {
                return Err(self.fail(
                    CloseCode::PROTOCOL_ERROR,
                    "continuation frame without a message",
                ));
            }
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(self.fail(
                    CloseCode::PROTOCOL_ERROR,
                    "new message before the last one ended",
                ));
            }
            _ => {}
        }
        let so_far = if header.opcode.is_control() {
            0
        } else {
            in_progress.map_or(0, |(len, _)| len)
        };
        // Compared before anything is allocated for the payload.
        let room = settings.max_message_size - so_far.min(settings.max_message_size);
        let Some(len) = declared_len_within(header.payload_len, room) else {
            return Err(self.fail(CloseCode::MESSAGE_TOO_BIG, "message over the size limit"));
        };
        if let Some((_, fragments)) = in_progress {
            if !header.opcode.is_control() && fragments >= settings.max_fragments {
                return Err(self.fail(CloseCode::POLICY_VIOLATION, "too many fragments"));
            }
        }
        let progress = InFrame {
            opcode: header.opcode,
            fin: header.fin,
            compressed,
            mask: header.mask.unwrap_or_default(),
            len,
            read: 0,
        };
        if header.opcode.is_control() {
            self.control = None;
        } else if let Some(message) = &mut self.message {
            message.fragments += 1;
        } else if !header.fin {
            // A fragmented message starts: it needs somewhere to gather. A
            // single frame gets one only if it spans reads (`gather`).
            self.message = Some(Assembly::start(&progress, settings));
        }
        self.frame = Some(progress);
        Ok(progress)
    }

    /// A frame whose whole payload arrived in one read.
    fn whole_frame<'b>(
        &mut self,
        progress: InFrame,
        payload: &'b mut [u8],
        settings: &Settings,
    ) -> Step<'b> {
        if progress.opcode.is_control() {
            return self.control_frame(progress.opcode, payload, settings);
        }
        if progress.fin && self.message.is_none() && !progress.compressed {
            // The common case: one frame, one message, no copy.
            self.last_compressed = false;
            return self.deliver(match progress.opcode {
                OpCode::Binary => Ok(Message::Binary(Cow::Borrowed(payload))),
                _ => match simdutf8::compat::from_utf8(payload) {
                    Ok(text) => Ok(Message::Text(Cow::Borrowed(text))),
                    Err(_) => Err(()),
                },
            });
        }
        if let Err(step) = self.gather(&progress, settings).append(payload, false) {
            return step;
        }
        self.end_data_frame(progress.fin)
    }

    /// A single frame whose payload spans reads is gathered like a
    /// fragmented message; one that arrives whole never needs this.
    /// A compressed message is always inflated through an [`Assembly`].
    fn gather(&mut self, progress: &InFrame, settings: &Settings) -> &mut Self {
        if self.message.is_none() && !progress.opcode.is_control() {
            self.message = Some(Assembly::start(progress, settings));
        }
        self
    }

    /// Adds payload bytes to the message being assembled, checking UTF-8
    /// as they come so a bad text fails fast (§8.1: "When an endpoint is to
    /// interpret a byte stream as UTF-8 but finds that the byte stream is
    /// not, in fact, a valid UTF-8 stream, that endpoint MUST _Fail the
    /// WebSocket Connection_").
    fn append<'b>(&mut self, bytes: &[u8], fin: bool) -> Result<(), Step<'b>> {
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        match &mut message.inflater {
            Some(inflater) => {
                message.wire += bytes.len();
                if let Err(e) = inflater.push(bytes) {
                    return Err(self.fail(e.close_code(), inflate_detail(e)));
                }
            }
            None => message.data.extend_from_slice(bytes),
        }
        self.check_utf8(fin)
    }

    /// Validates the text received (or inflated) since the last check; a
    /// sequence cut at the end waits for the next bytes unless `fin`.
    fn check_utf8<'b>(&mut self, fin: bool) -> Result<(), Step<'b>> {
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        if message.binary {
            return Ok(());
        }
        let content = message.content();
        // simdutf8 is std's validator, vectorised: equal on short ASCII,
        // 4-14x faster from a hundred bytes of multi-byte text (benches).
        match simdutf8::compat::from_utf8(&content[message.checked..]) {
            Ok(_) => message.checked = content.len(),
            Err(e) if e.error_len().is_none() && !fin => message.checked += e.valid_up_to(),
            Err(_) => {
                return Err(self.fail(
                    CloseCode::INVALID_PAYLOAD,
                    "invalid UTF-8 in a text message",
                ))
            }
        }
        Ok(())
    }

    /// Ends a compressed message: §7.2.2's tail goes in, and what it
    /// inflates to is checked like the rest.
    fn finish_inflate<'b>(&mut self) -> Result<(), Step<'b>> {
        let Some(message) = &mut self.message else {
            return Ok(());
        };
        let Some(inflater) = &mut message.inflater else {
            return Ok(());
        };
        match inflater.finish() {
            Ok(data) => {
                message.data = data;
                message.inflater = None;
            }
            Err(e) => return Err(self.fail(e.close_code(), inflate_detail(e))),
        }
        self.check_utf8(true)
    }

    fn end_data_frame<'b>(&mut self, fin: bool) -> Step<'b> {
        if !fin {
            return Step::Continue;
        }
        self.last_compressed = self.message.as_ref().is_some_and(|m| m.inflater.is_some());
        if let Err(step) = self.finish_inflate() {
            return step;
        }
        let Some(message) = self.message.take() else {
            // An empty single-frame message.
            return self.deliver(Ok(Message::Text(Cow::Borrowed(""))));
        };
        if message.binary {
            return self.deliver(Ok(Message::Binary(Cow::Owned(message.data))));
        }
        if message.checked != message.data.len() {
            return self.fail(
                CloseCode::INVALID_PAYLOAD,
                "text message ends inside a UTF-8 sequence",
            );
        }
        // SAFETY: `append` validated every byte of `data` as UTF-8 as it
        // arrived (`checked` covers all of it, tested just above), and
        // nothing else writes to `data`.
        let text = unsafe { String::from_utf8_unchecked(message.data) };
        self.deliver(Ok(Message::Text(Cow::Owned(text))))
    }

    /// Hands a complete message to the caller, unless we are closing.
    fn deliver<'b>(&mut self, message: Result<Message<'b>, ()>) -> Step<'b> {
        match message {
            Err(()) => self.fail(
                CloseCode::INVALID_PAYLOAD,
                "invalid UTF-8 in a text message",
            ),
            // §5.5.1: after sending a Close, data from the peer is discarded.
            Ok(_) if self.phase != Phase::Open => Step::Continue,
            Ok(message) => Step::Event(Event::Message(message)),
        }
    }

    fn control_frame<'b>(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        settings: &Settings,
    ) -> Step<'b> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a
                // Pong frame in response ... with identical Application data",
                // but §5.5.3: "an endpoint MAY elect to send a Pong frame for
                // only the most recently processed Ping frame". A peer that
                // pings without reading gets no more pongs once its queue is
                // over the limit, so pings cannot grow our memory.
                if self.phase == Phase::Open && self.outbox.footprint() <= settings.max_outbox_bytes
                {
                    self.outbox
                        .push(frame::encode_frame(OpCode::Pong, payload).into());
                }
                Step::Continue
            }
            OpCode::Close => self.close_frame(payload),
            _ => Step::Continue,
        }
    }

    /// §5.5.1 and §7.4: check the peer's Close, then answer or finish.
    fn close_frame<'b>(&mut self, payload: &[u8]) -> Step<'b> {
        let code = match payload {
            [] => None,
            [_] => return self.fail(CloseCode::PROTOCOL_ERROR, "close payload of one byte"),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_valid_on_wire() {
                    return self.fail(CloseCode::PROTOCOL_ERROR, "invalid close code");
                }
                if std::str::from_utf8(reason).is_err() {
                    return self.fail(CloseCode::INVALID_PAYLOAD, "close reason is not UTF-8");
                }
                Some(code)
            }
        };
        let was_open = self.phase == Phase::Open;
        if was_open {
            // §5.5.1: "the endpoint typically echos the status code it received";
            // to an empty Close we answer 1000, never 1005 (§7.4.1).
            let reply = code.unwrap_or(CloseCode::NORMAL);
            self.outbox
                .push(frame::encode_close(Some(reply), "").into());
        }
        self.phase = Phase::Done;
        self.drop_partial_input();
        if !was_open {
            return Step::NeedMore;
        }
        Step::Event(Event::Closed(Closure {
            code: code.unwrap_or(CloseCode::NO_STATUS),
            by_peer: true,
            detail: Cow::Borrowed("peer closed"),
        }))
    }

    /// §7.1.7 _Fail the WebSocket Connection_: send a Close with `code`,
    /// then close the transport without waiting.
    fn fail<'b>(&mut self, code: CloseCode, detail: &'static str) -> Step<'b> {
        let was_open = self.phase == Phase::Open;
        if was_open {
            self.outbox
                .push(frame::encode_close(Some(code), detail).into());
        }
        self.phase = Phase::Done;
        self.frame = None;
        self.stash = HeaderStash::default();
        self.drop_partial_input();
        if !was_open {
            return Step::NeedMore;
        }
        Step::Event(Event::Closed(Closure {
            code,
            by_peer: false,
            detail: Cow::Borrowed(detail),
        }))
    }
}

fn inflate_detail(e: crate::protocol::deflate::InflateError) -> &'static str {
    match e {
        crate::protocol::deflate::InflateError::Invalid => "invalid compressed data",
        crate::protocol::deflate::InflateError::TooBig => {
            "message over the size limit once inflated"
        }
    }
}

fn error_detail(e: frame::FrameError) -> &'static str {
    match e {
        frame::FrameError::ReservedBits => "RSV bits set without an extension",
        frame::FrameError::ReservedOpCode(_) => "reserved opcode",
        frame::FrameError::FragmentedControl => "fragmented control frame",
        frame::FrameError::ControlTooLong => "control frame over 125 bytes",
        frame::FrameError::Unmasked => "unmasked client frame",
        frame::FrameError::LengthOverflow => "64-bit length with the top bit set",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::protocol::client::encode_frame_into(
            &mut out,
            first_byte,
            payload,
            [0x37, 0xfa, 0x21, 0x3d],
        );
        out
    }

    fn text(s: &str) -> Vec<u8> {
        client_frame(0x81, s.as_bytes())
    }

    fn close(code: u16, reason: &[u8]) -> Vec<u8> {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        client_frame(0x88, &payload)
    }

    /// What the tests compare: events with their data owned.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Opened(Option<String>),
        Http(String),
        Refused(&'static str),
        Text(String),
        Binary(Vec<u8>),
        Closed(u16, bool),
    }

    fn feed(conn: &mut Connection, bytes: &[u8], settings: &Settings) -> Vec<Seen> {
        let mut copy = bytes.to_vec();
        let mut input = Input::new(&mut copy);
        let mut seen = Vec::new();
        while let Some(event) = conn.next_event(&mut input, settings) {
            seen.push(match event {
                Event::Upgrade(u) => {
                    conn.accept(&u);
                    Seen::Opened(u.protocol)
                }
                Event::Http(r) if r.body.is_empty() => Seen::Http(r.target),
                Event::Http(r) => Seen::Http(format!(
                    "{} <{}>",
                    r.target,
                    String::from_utf8_lossy(&r.body)
                )),
                Event::Refused(why) => Seen::Refused(why),
                Event::Message(Message::Text(t)) => Seen::Text(t.into_owned()),
                Event::Message(Message::Binary(b)) => Seen::Binary(b.into_owned()),
                Event::Closed(c) => Seen::Closed(c.code.0, c.by_peer),
            });
        }
        assert!(input.is_empty(), "every byte is consumed");
        seen
    }

    /// Feeds `bytes` split at every position, and byte by byte, checking
    /// the events are the same as when fed whole.
    fn feed_split_everywhere(bytes: &[u8], fresh: impl Fn() -> Connection) -> Vec<Seen> {
        let settings = Settings::default();
        let whole = feed(&mut fresh(), bytes, &settings);
        for cut in 0..=bytes.len() {
            let mut conn = fresh();
            let mut seen = feed(&mut conn, &bytes[..cut], &settings);
            seen.extend(feed(&mut conn, &bytes[cut..], &settings));
            assert_eq!(seen, whole, "split at {cut}");
        }
        let mut conn = fresh();
        let bytewise: Vec<Seen> = bytes
            .iter()
            .flat_map(|b| feed(&mut conn, &[*b], &settings))
            .collect();
        assert_eq!(bytewise, whole, "byte by byte");
        whole
    }

    /// Like [`feed_split_everywhere`], with `settings`, also checking that
    /// the connection queues the same bytes and ends in the same phase
    /// and the same `wants_input` however the input is split. Returns the
    /// events and what was queued.
    fn split_everywhere_with(
        bytes: &[u8],
        fresh: impl Fn() -> Connection,
        settings: &Settings,
    ) -> (Vec<Seen>, Vec<u8>) {
        let run = |chunks: &[&[u8]]| {
            let mut conn = fresh();
            let seen: Vec<Seen> = chunks
                .iter()
                .flat_map(|c| feed(&mut conn, c, settings))
                .collect();
            (seen, sent(&mut conn), conn.phase(), conn.wants_input())
        };
        let whole = run(&[bytes]);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(run(&[a, b]), whole, "split at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&bytewise), whole, "byte by byte");
        (whole.0, whole.1)
    }

    /// The frames a connection queued, as bytes.
    fn sent(conn: &mut Connection) -> Vec<u8> {
        let mut out = Vec::new();
        conn.outbox_mut().write_to(&mut out).unwrap();
        out
    }

    /// Feeds one frame to an open connection and returns what it said
    /// back and the events.
    fn exchange(bytes: &[u8]) -> (Vec<Seen>, Vec<u8>, Phase) {
        let mut conn = Connection::open();
        let seen = feed(&mut conn, bytes, &Settings::default());
        (seen, sent(&mut conn), conn.phase())
    }

    fn close_reply(code: u16) -> Vec<u8> {
        let mut reply = vec![0x88, 0x02];
        reply.extend_from_slice(&code.to_be_bytes());
        reply
    }

    /// The code of the Close frame a connection sent (the last frame).
    fn sent_close_code(out: &[u8]) -> u16 {
        let at = out.iter().rposition(|&b| b == 0x88).expect("a close frame");
        u16::from_be_bytes([out[at + 2], out[at + 3]])
    }

    const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    // ----- permessage-deflate (RFC 7692) -----

    /// RFC 7692 §7.2.3.1: "Hello" compressed, as a client sends it.
    const HELLO_DEFLATED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn deflating() -> Connection {
        Connection::open_with_deflate(Negotiated {
            server_max_window_bits: None,
            client_max_window_bits: None,
        })
    }

    fn deflate_exchange(bytes: &[u8], settings: &Settings) -> (Vec<Seen>, u16) {
        let mut conn = deflating();
        let seen = feed(&mut conn, bytes, settings);
        let out = sent(&mut conn);
        let code = match out.is_empty() {
            true => 0,
            false => sent_close_code(&out),
        };
        (seen, code)
    }

    #[test]
    fn a_compressed_message_is_inflated_at_every_split() {
        let frame = client_frame(0xC1, &HELLO_DEFLATED);
        let seen = feed_split_everywhere(&frame, deflating);
        assert_eq!(seen, [Seen::Text("Hello".into())]);
        // §7.2.3.1's fragmented form: "0x41 0x03 0xf2 0x48 0xcd" then
        // "0x80 0x04 0xc9 0xc9 0x07 0x00" (RSV1 on the first frame only).
        let mut frames = client_frame(0x41, &HELLO_DEFLATED[..3]);
        frames.extend(client_frame(0x89, b"ping between"));
        frames.extend(client_frame(0x80, &HELLO_DEFLATED[3..]));
        frames.extend(text("plain after"));
        let seen = feed_split_everywhere(&frames, deflating);
        assert_eq!(
            seen,
            [Seen::Text("Hello".into()), Seen::Text("plain after".into())]
        );
    }

    #[test]
    fn each_message_tells_whether_it_came_compressed() {
        let settings = Settings::default();
        let mut conn = deflating();
        let mut frames = client_frame(0xC1, &HELLO_DEFLATED);
        frames.extend(text("plain"));
        // Fragmented and compressed, then fragmented and plain.
        frames.extend(client_frame(0x41, &HELLO_DEFLATED[..3]));
        frames.extend(client_frame(0x80, &HELLO_DEFLATED[3..]));
        frames.extend(client_frame(0x01, b"pl"));
        frames.extend(client_frame(0x80, b"ain"));
        let mut copy = frames;
        let mut input = Input::new(&mut copy);
        let mut seen = Vec::new();
        while let Some(event) = conn.next_event(&mut input, &settings) {
            let Event::Message(Message::Text(text)) = event else {
                panic!("expected a text message");
            };
            seen.push((text.into_owned(), conn.last_message_was_compressed()));
        }
        let expected = [
            ("Hello", true),
            ("plain", false),
            ("Hello", true),
            ("plain", false),
        ];
        let expected: Vec<(String, bool)> = expected.iter().map(|&(t, c)| (t.into(), c)).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn rsv1_rules_fail_with_1002() {
        let settings = Settings::default();
        // Not negotiated: RSV1 is a reserved bit.
        let (seen, out, _) = exchange(&client_frame(0xC1, &HELLO_DEFLATED));
        assert_eq!(seen, [Seen::Closed(1002, false)]);
        assert_eq!(sent_close_code(&out), 1002);
        // On a continuation frame.
        let mut frames = client_frame(0x41, &HELLO_DEFLATED[..3]);
        frames.extend(client_frame(0xC0, &HELLO_DEFLATED[3..]));
        assert_eq!(
            deflate_exchange(&frames, &settings),
            (vec![Seen::Closed(1002, false)], 1002)
        );
        // On control frames.
        for first in [0xC9u8, 0xCA, 0xC8] {
            let frame = client_frame(first, b"");
            assert_eq!(
                deflate_exchange(&frame, &settings),
                (vec![Seen::Closed(1002, false)], 1002),
                "{first:#x}"
            );
        }
        // RSV2 and RSV3 stay reserved.
        assert_eq!(
            deflate_exchange(&client_frame(0xE1, &HELLO_DEFLATED), &settings),
            (vec![Seen::Closed(1002, false)], 1002)
        );
    }

    #[test]
    fn bad_compressed_data_fails_with_1007() {
        let settings = Settings::default();
        // BTYPE 11 is reserved (RFC 1951 §3.2.3).
        let frame = client_frame(0xC1, &[0xff, 0xff, 0xff]);
        assert_eq!(
            deflate_exchange(&frame, &settings),
            (vec![Seen::Closed(1007, false)], 1007)
        );
        // Cut inside a block: not a shorter message.
        let frame = client_frame(0xC1, &HELLO_DEFLATED[..4]);
        assert_eq!(
            deflate_exchange(&frame, &settings),
            (vec![Seen::Closed(1007, false)], 1007)
        );
        // Valid deflate of invalid UTF-8 in a text message.
        let bad = crate::protocol::deflate::compress(&[b'a', 0xff, b'b']);
        let frame = client_frame(0xC1, &bad);
        assert_eq!(
            deflate_exchange(&frame, &settings),
            (vec![Seen::Closed(1007, false)], 1007)
        );
        // The same bytes as binary are fine.
        let frame = client_frame(0xC2, &bad);
        assert_eq!(
            deflate_exchange(&frame, &settings),
            (vec![Seen::Binary(vec![b'a', 0xff, b'b'])], 0)
        );
    }

    #[test]
    fn a_decompression_bomb_fails_with_1009_within_the_limit() {
        let settings = Settings {
            max_message_size: 64 * 1024,
            ..Settings::default()
        };
        // 16 MiB of zeros deflate to about 16 KiB.
        let bomb = crate::protocol::deflate::compress(&vec![0u8; 16 << 20]);
        assert!(bomb.len() < 64 * 1024);
        let mut conn = deflating();
        let frames = client_frame(0xC2, &bomb);
        // Fed in reads of 1 KiB, so the inflater is seen mid-message.
        let mut seen = Vec::new();
        for chunk in frames.chunks(1024) {
            seen.extend(feed(&mut conn, chunk, &settings));
            if let Some(message) = &conn.message {
                let reserved = message.inflater.as_ref().map_or(0, |i| i.reserved());
                assert!(reserved <= settings.max_message_size, "{reserved}");
            }
        }
        assert_eq!(seen, [Seen::Closed(1009, false)]);
        assert_eq!(sent_close_code(&sent(&mut conn)), 1009);
        // An exact fit passes.
        let fits = crate::protocol::deflate::compress(&vec![b'a'; 64 * 1024]);
        let (seen, _) = deflate_exchange(&client_frame(0xC1, &fits), &settings);
        assert_eq!(seen, [Seen::Text("a".repeat(64 * 1024))]);
    }

    #[test]
    fn rfc_masked_hello_is_lent_without_copy() {
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let mut bytes = frame;
        let mut conn = Connection::open();
        let mut input = Input::new(&mut bytes);
        match conn.next_event(&mut input, &Settings::default()) {
            Some(Event::Message(Message::Text(Cow::Borrowed("Hello")))) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handshake_then_frames_in_the_same_bytes_at_every_split() {
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend(text("Hello"));
        bytes.extend(client_frame(0x82, &[1, 2, 3]));
        let seen = feed_split_everywhere(&bytes, Connection::new);
        assert_eq!(
            seen,
            [
                Seen::Opened(None),
                Seen::Text("Hello".into()),
                Seen::Binary(vec![1, 2, 3])
            ]
        );
    }

    #[test]
    fn handshake_reply_is_the_101() {
        let mut conn = Connection::new();
        feed(&mut conn, UPGRADE.as_bytes(), &Settings::default());
        let reply = String::from_utf8(sent(&mut conn)).unwrap();
        assert!(reply.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(reply.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert_eq!(conn.phase(), Phase::Open);
    }

    #[test]
    fn plain_http_and_refusals_end_the_connection() {
        let mut conn = Connection::new();
        let seen = feed(
            &mut conn,
            b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n",
            &Settings::default(),
        );
        assert_eq!(seen, [Seen::Http("/x".into())]);
        conn.respond(&HttpResponse::text(426, "use a WebSocket"));
        assert!(String::from_utf8(sent(&mut conn))
            .unwrap()
            .starts_with("HTTP/1.1 426"));
        assert!(conn.is_finished());

        let mut conn = Connection::new();
        let seen = feed(
            &mut conn,
            b"POST / HTTP/1.1\r\nHost: h\r\n\r\ntrailing",
            &Settings::default(),
        );
        assert_eq!(seen, [Seen::Refused("method not allowed")]);
        assert!(String::from_utf8(sent(&mut conn))
            .unwrap()
            .starts_with("HTTP/1.1 405"));
        assert!(conn.is_finished());
    }

    #[test]
    fn oversized_head_gets_431_however_it_trickles_in() {
        let settings = Settings::default();
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(9000));
        let mut conn = Connection::new();
        let mut seen = Vec::new();
        for chunk in big.as_bytes().chunks(7) {
            seen.extend(feed(&mut conn, chunk, &settings));
        }
        assert_eq!(seen, [Seen::Refused("request head too large")]);
        assert!(String::from_utf8(sent(&mut conn))
            .unwrap()
            .starts_with("HTTP/1.1 431"));
    }

    // ----- issue 10, items 8 and 9: HTTP strictness -----

    fn refused_with(bytes: &[u8], settings: &Settings) -> (&'static str, String) {
        let (seen, out) = split_everywhere_with(bytes, Connection::new, settings);
        let [Seen::Refused(why)] = seen[..] else {
            panic!("expected one refusal, got {seen:?}");
        };
        (why, String::from_utf8(out).unwrap())
    }

    fn refused(bytes: &[u8]) -> (&'static str, String) {
        refused_with(bytes, &Settings::default())
    }

    #[test]
    fn bytes_that_are_not_http_are_refused_at_once_at_every_split() {
        let mut tls = vec![
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ];
        tls.extend([0x5a; 64]);
        for bytes in [
            &tls[..],
            b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n",
            b"\x00\x00\x00\x08\x04\xd2\x16\x2f", // PostgreSQL SSLRequest
            b"GET / HTTP/1.1\x00",
        ] {
            let (why, out) = refused(bytes);
            assert_eq!(why, "not an HTTP request");
            assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
            assert!(out.ends_with("\r\n\r\nnot an HTTP request\n"), "{out}");
        }
        // Nothing partial is refused: a head still arriving waits.
        let mut conn = Connection::new();
        assert!(feed(&mut conn, b"GET /chat HTT", &Settings::default()).is_empty());
        assert_eq!(conn.phase(), Phase::Handshake);
        assert!(conn.wants_input());
    }

    #[test]
    fn a_method_longer_than_any_gets_501() {
        let bytes = format!(
            "{} / HTTP/1.1\r\n",
            "X".repeat(handshake::MAX_METHOD_LEN + 1)
        );
        let (why, out) = refused(bytes.as_bytes());
        assert_eq!(why, "request method too long");
        assert!(out.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{out}");
    }

    #[test]
    fn the_head_limit_comes_first_as_when_fed_bytewise() {
        let settings = Settings {
            handshake: Policy {
                max_head_bytes: 4,
                ..Settings::default().handshake
            },
            ..Settings::default()
        };
        // The bad byte within the limit: it is what is wrong.
        assert_eq!(refused_with(b"GET\x00", &settings).0, "not an HTTP request");
        assert_eq!(
            refused_with(b"GETX\x00", &settings).0,
            "not an HTTP request"
        );
        // Past the limit, the head was too large before it came.
        assert_eq!(
            refused_with(b"GETXX\x00", &settings).0,
            "request head too large"
        );
    }

    #[test]
    fn an_upgrade_declaring_a_body_is_refused_and_the_body_never_read_as_frames() {
        let smuggled = text("smuggled");
        for header in [
            format!("Content-Length: {}", smuggled.len()),
            "Content-Length: 0".into(),
            "Transfer-Encoding: chunked".into(),
        ] {
            let mut bytes = UPGRADE
                .replace("\r\n\r\n", &format!("\r\n{header}\r\n\r\n"))
                .into_bytes();
            bytes.extend(&smuggled);
            let (why, out) = refused(&bytes);
            assert!(why.starts_with("GET or HEAD with "), "{header}: {why}");
            assert!(
                out.starts_with("HTTP/1.1 400 Bad Request\r\n"),
                "{header}: {out}"
            );
        }
    }

    #[test]
    fn a_post_body_is_read_whole_however_it_is_split() {
        let mut settings = Settings::default();
        settings.handshake.max_body_bytes = 64;
        let bytes = b"POST /api/rooms/r/messages HTTP/1.1\r\nHost: h\r\n\
                      Content-Length: 5\r\n\r\nhello";
        let (seen, _) = split_everywhere_with(bytes, Connection::new, &settings);
        assert_eq!(seen, [Seen::Http("/api/rooms/r/messages <hello>".into())]);
        // What follows the body is not read as another request.
        let mut conn = Connection::new();
        let mut with_more = bytes.to_vec();
        with_more.extend_from_slice(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        let seen = feed(&mut conn, &with_more, &settings);
        assert_eq!(seen, [Seen::Http("/api/rooms/r/messages <hello>".into())]);
        assert_eq!(conn.request_method(), Some(Method::Post));
        // Without a body limit a POST is refused, as before.
        let mut conn = Connection::new();
        let seen = feed(&mut conn, bytes, &Settings::default());
        assert_eq!(seen, [Seen::Refused("method not allowed")]);
    }

    #[test]
    fn head_is_answered_like_get_without_the_body() {
        let bytes = b"HEAD /healthz HTTP/1.1\r\nHost: h\r\n\r\n";
        let (seen, _) = split_everywhere_with(bytes, Connection::new, &Settings::default());
        assert_eq!(seen, [Seen::Http("/healthz".into())]);
        let mut conn = Connection::new();
        feed(&mut conn, bytes, &Settings::default());
        assert_eq!(conn.request_method(), Some(Method::Head));
        conn.respond(&HttpResponse::text(200, "ok"));
        assert_eq!(
            String::from_utf8(sent(&mut conn)).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\n\
             Connection: close\r\n\r\n"
        );
        assert!(conn.is_finished());
        // A GET keeps its body.
        let mut conn = Connection::new();
        feed(
            &mut conn,
            b"GET /healthz HTTP/1.1\r\nHost: h\r\n\r\n",
            &Settings::default(),
        );
        assert_eq!(conn.request_method(), Some(Method::Get));
        conn.respond(&HttpResponse::text(200, "ok"));
        assert!(String::from_utf8(sent(&mut conn))
            .unwrap()
            .ends_with("\r\n\r\nok\n"));
    }

    #[test]
    fn a_refused_head_has_no_body_either() {
        let bytes = b"HEAD / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
        let (why, out) = refused(bytes);
        assert_eq!(why, "GET or HEAD with Content-Length");
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        assert!(
            out.ends_with("Content-Length: 32\r\nConnection: close\r\n\r\n"),
            "{out}"
        );
        // Nor does the answer to a HEAD that the caller turns down.
        let mut conn = Connection::new();
        feed(
            &mut conn,
            b"HEAD /no/such HTTP/1.1\r\nHost: h\r\n\r\n",
            &Settings::default(),
        );
        conn.respond(&HttpResponse::text(404, "no such room"));
        assert!(String::from_utf8(sent(&mut conn))
            .unwrap()
            .ends_with("\r\n\r\n"));
    }

    #[test]
    fn head_with_upgrade_headers_is_plain_http() {
        let bytes = UPGRADE.replacen("GET", "HEAD", 1);
        let (seen, out) =
            split_everywhere_with(bytes.as_bytes(), Connection::new, &Settings::default());
        assert_eq!(seen, [Seen::Http("/".into())]);
        assert!(out.is_empty(), "no 101: the caller answers");
    }

    #[test]
    fn absolute_form_upgrade_opens_with_the_origin_form_target() {
        let absolute = UPGRADE.replacen("GET / ", "GET ws://localhost:8080/rust?since=4 ", 1);
        let mut bytes = absolute.into_bytes();
        bytes.extend(text("hi"));
        let (seen, out) = split_everywhere_with(&bytes, Connection::new, &Settings::default());
        assert_eq!(seen, [Seen::Opened(None), Seen::Text("hi".into())]);
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 101 "));
        let mut conn = Connection::new();
        match conn.next_event(&mut Input::new(&mut bytes), &Settings::default()) {
            Some(Event::Upgrade(u)) => assert_eq!(u.target, "/rust?since=4"),
            other => panic!("{other:?}"),
        }
    }

    /// Every way into `Done` turns `wants_input` off; nothing before.
    #[test]
    fn input_is_wanted_until_the_connection_is_done() {
        let settings = Settings::default();
        let mut conn = Connection::new();
        assert!(conn.wants_input(), "handshake");
        let mut head = UPGRADE.as_bytes().to_vec();
        let Some(Event::Upgrade(upgrade)) = conn.next_event(&mut Input::new(&mut head), &settings)
        else {
            panic!("an upgrade");
        };
        assert!(conn.wants_input(), "upgrading: the first frames wait");
        conn.accept(&upgrade);
        assert!(conn.wants_input(), "open");
        conn.close(CloseCode::GOING_AWAY, "bye");
        assert!(conn.wants_input(), "close sent: their Close is wanted");
        feed(&mut conn, &close(1001, b""), &settings);
        assert!(!conn.wants_input(), "close handshake over");

        let done = |conn: Connection, how: &str| {
            assert_eq!(conn.phase(), Phase::Done, "{how}");
            assert!(!conn.wants_input(), "{how}");
        };
        let mut conn = Connection::new();
        feed(&mut conn, b"\x16\x03\x01", &settings);
        done(conn, "refused: not HTTP");
        let mut conn = Connection::new();
        feed(&mut conn, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &settings);
        // Awaiting its answer (which a service may give later): nothing
        // more is read, nothing is finished.
        assert_eq!(conn.phase(), Phase::Answering);
        assert!(!conn.wants_input() && !conn.is_finished());
        conn.respond(&HttpResponse::text(200, "ok"));
        done(conn, "plain HTTP, answered");
        let mut conn = Connection::new();
        conn.refuse(&Refusal::timed_out());
        done(conn, "refused by the caller");
        let mut conn = Connection::new();
        feed(&mut conn, UPGRADE.as_bytes(), &settings);
        conn.respond(&HttpResponse::text(404, "no"));
        done(conn, "upgrade turned down");
        let mut conn = Connection::open();
        feed(&mut conn, &close(1000, b""), &settings);
        done(conn, "peer closed");
        let mut conn = Connection::open();
        feed(&mut conn, &client_frame(0xC1, b"x"), &settings);
        done(conn, "failed");
        let mut conn = Connection::open();
        conn.abort("reset");
        done(conn, "aborted");

        // And it stays off: what comes next is consumed, unread.
        let mut conn = Connection::new();
        feed(&mut conn, b"\x16\x03\x01", &settings);
        sent(&mut conn);
        assert!(feed(&mut conn, UPGRADE.as_bytes(), &settings).is_empty());
        assert!(!conn.wants_input());
        assert!(sent(&mut conn).is_empty());
    }

    #[test]
    fn fragmented_text_with_interleaved_ping_at_every_split() {
        // §5.4: "Control frames MAY be injected in the middle of a fragmented message."
        let mut bytes = client_frame(0x01, "Hé".as_bytes()); // text, FIN clear
        bytes.extend(client_frame(0x89, b"are you there")); // ping
        bytes.extend(client_frame(0x00, &[0xC3])); // half of "é"
        bytes.extend(client_frame(0x80, &[0xA9, b'!'])); // the rest, FIN
        let seen = feed_split_everywhere(&bytes, Connection::open);
        assert_eq!(seen, [Seen::Text("Héé!".into())]);
    }

    #[test]
    fn ping_is_answered_with_identical_pong() {
        let (seen, out, phase) = exchange(&client_frame(0x89, b"Hello"));
        assert!(seen.is_empty());
        assert_eq!(out, [0x8a, 0x05, b'H', b'e', b'l', b'l', b'o']);
        assert_eq!(phase, Phase::Open);
        let (_, out, _) = exchange(&client_frame(0x8A, b"unsolicited pong"));
        assert!(out.is_empty(), "a pong needs no answer");
    }

    #[test]
    fn large_messages_use_extended_lengths() {
        let payload = vec![b'x'; 70_000];
        let settings = Settings {
            max_message_size: 100_000,
            ..Settings::default()
        };
        let mut conn = Connection::open();
        let frame = client_frame(0x81, &payload);
        assert_eq!(frame[1], 0xFF, "64-bit length form");
        let mut seen = Vec::new();
        for chunk in frame.chunks(4096) {
            seen.extend(feed(&mut conn, chunk, &settings));
        }
        assert_eq!(seen, [Seen::Text("x".repeat(70_000))]);
        let (seen, _, _) = exchange(&client_frame(0x82, &[7; 300]));
        assert_eq!(seen, [Seen::Binary(vec![7; 300])]);
    }

    #[test]
    fn empty_messages() {
        let (seen, _, _) = exchange(&client_frame(0x81, b""));
        assert_eq!(seen, [Seen::Text(String::new())]);
        let (seen, _, _) = exchange(&client_frame(0x82, b""));
        assert_eq!(seen, [Seen::Binary(vec![])]);
        let mut bytes = client_frame(0x02, b"");
        bytes.extend(client_frame(0x80, b""));
        let (seen, _, _) = exchange(&bytes);
        assert_eq!(seen, [Seen::Binary(vec![])]);
    }

    #[test]
    fn close_handshake_echoes_the_code() {
        let (seen, out, phase) = exchange(&close(1000, b"bye"));
        assert_eq!(seen, [Seen::Closed(1000, true)]);
        assert_eq!(out, close_reply(1000));
        assert_eq!(phase, Phase::Done);
        let (seen, out, _) = exchange(&close(4001, b""));
        assert_eq!(seen, [Seen::Closed(4001, true)]);
        assert_eq!(out, close_reply(4001));
    }

    #[test]
    fn empty_close_is_reported_as_1005_and_answered_with_1000() {
        let (seen, out, _) = exchange(&client_frame(0x88, b""));
        assert_eq!(seen, [Seen::Closed(1005, true)]);
        assert_eq!(out, close_reply(1000), "1005 is never sent on the wire");
    }

    #[test]
    fn close_code_rules() {
        for code in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000,
        ] {
            let (seen, out, phase) = exchange(&close(code, b""));
            assert_eq!(seen, [Seen::Closed(1002, false)], "code {code}");
            assert_eq!(sent_close_code(&out), 1002);
            assert_eq!(phase, Phase::Done);
        }
        let (seen, _, _) = exchange(&client_frame(0x88, &[0x03]));
        assert_eq!(seen, [Seen::Closed(1002, false)], "one-byte close payload");
        let (seen, out, _) = exchange(&close(1000, &[0xCE, 0xBA, 0xE1, 0xBD]));
        assert_eq!(seen, [Seen::Closed(1007, false)], "close reason not UTF-8");
        assert_eq!(sent_close_code(&out), 1007);
    }

    #[test]
    fn frame_rules_fail_with_the_rfc_codes() {
        let cases: Vec<(&str, Vec<u8>, u16)> = vec![
            ("unmasked", vec![0x81, 0x02, b'h', b'i'], 1002),
            ("RSV1 without extension", client_frame(0xC1, b"x"), 1002),
            ("RSV3", client_frame(0x91, b"x"), 1002),
            ("reserved opcode 3", client_frame(0x83, b""), 1002),
            ("reserved control opcode 0xB", client_frame(0x8B, b""), 1002),
            ("fragmented ping", client_frame(0x09, b""), 1002),
            ("ping over 125 bytes", client_frame(0x89, &[0; 126]), 1002),
            ("continuation first", client_frame(0x80, b"x"), 1002),
            (
                "new message mid-fragments",
                [client_frame(0x01, b"a"), text("b")].concat(),
                1002,
            ),
            (
                "invalid UTF-8",
                client_frame(0x81, &[0xCE, 0xBA, 0xFF]),
                1007,
            ),
            ("UTF-8 cut at the end", client_frame(0x81, &[0xCE]), 1007),
            (
                "surrogate half",
                client_frame(0x81, &[0xED, 0xA0, 0x80]),
                1007,
            ),
            ("too big", client_frame(0x82, &vec![0; (1 << 20) + 1]), 1009),
            (
                "64-bit length top bit",
                vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
                1002,
            ),
        ];
        for (name, bytes, code) in cases {
            let (seen, out, phase) = exchange(&bytes);
            assert_eq!(seen, [Seen::Closed(code, false)], "{name}");
            assert_eq!(sent_close_code(&out), code, "{name}");
            assert_eq!(phase, Phase::Done, "{name}");
        }
    }

    #[test]
    fn invalid_utf8_fails_fast_before_the_message_ends() {
        // The first fragment is already invalid: no need to wait for FIN.
        let mut conn = Connection::open();
        let seen = feed(
            &mut conn,
            &client_frame(0x01, &[b'a', 0xFF]),
            &Settings::default(),
        );
        assert_eq!(seen, [Seen::Closed(1007, false)]);
        // Inside one frame arriving in pieces, too.
        let frame = client_frame(0x81, &[b'a', b'b', 0xC0, 0x80, b'c', b'd', b'e', b'f']);
        let mut conn = Connection::open();
        let seen = feed(&mut conn, &frame[..9], &Settings::default());
        assert_eq!(seen, [Seen::Closed(1007, false)]);
    }

    #[test]
    fn size_is_checked_against_the_declared_length_before_buffering() {
        let settings = Settings {
            max_message_size: 10,
            ..Settings::default()
        };
        // Only the header of a 2^40-byte frame: refused at once.
        let header = [0x82, 0xFF, 0, 0, 0x01, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        let mut conn = Connection::open();
        assert_eq!(
            feed(&mut conn, &header, &settings),
            [Seen::Closed(1009, false)]
        );
        // Fragments adding up past the limit.
        let mut bytes = client_frame(0x01, b"123456");
        bytes.extend(client_frame(0x80, b"7890x"));
        let mut conn = Connection::open();
        assert_eq!(
            feed(&mut conn, &bytes, &settings),
            [Seen::Closed(1009, false)]
        );
    }

    #[test]
    fn declared_lengths_convert_without_truncation() {
        assert_eq!(declared_len_within(0, 0), Some(0));
        assert_eq!(declared_len_within(1 << 20, 1 << 20), Some(1 << 20));
        assert_eq!(declared_len_within((1 << 20) + 1, 1 << 20), None);
        // 2^32 + 5 would be 5 after `as usize` on a 32-bit host: refused on
        // every host, never taken for 5 bytes.
        assert_eq!(declared_len_within((1 << 32) + 5, 1 << 20), None);
        assert_eq!(declared_len_within(u64::MAX / 2 + 1, 1 << 20), None);
        assert_eq!(declared_len_within(u64::MAX, usize::MAX - 1), None);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(
                declared_len_within(u64::MAX / 2, usize::MAX),
                Some(usize::MAX / 2)
            );
            assert_eq!(
                declared_len_within(u64::MAX / 2 + 1, usize::MAX),
                Some(1 << 63)
            );
            assert_eq!(declared_len_within(u64::MAX, usize::MAX), Some(usize::MAX));
        }
        #[cfg(target_pointer_width = "32")]
        {
            assert_eq!(
                declared_len_within(u64::from(u32::MAX), usize::MAX),
                Some(usize::MAX)
            );
            assert_eq!(declared_len_within(1 << 32, usize::MAX), None);
            assert_eq!(declared_len_within(u64::MAX / 2 + 1, usize::MAX), None);
        }
    }

    /// The largest length RFC 6455 allows (2^63 - 1), with no size limit to
    /// speak of: a 64-bit host waits for the payload, a 32-bit one, which
    /// cannot hold the length, refuses it with 1009. Neither truncates it.
    #[test]
    fn the_largest_legal_length_is_never_truncated() {
        let settings = Settings {
            max_message_size: usize::MAX,
            ..Settings::default()
        };
        let header = [
            0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4,
        ];
        let mut conn = Connection::open();
        let seen = feed(&mut conn, &header, &settings);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(seen, []);
            assert_eq!(conn.phase(), Phase::Open);
            assert_eq!(conn.frame.map(|f| f.len), Some(usize::MAX / 2));
        }
        #[cfg(not(target_pointer_width = "64"))]
        assert_eq!(seen, [Seen::Closed(1009, false)]);
        // 2^32 + 5 declared, 5 bytes sent: under a 32-bit `as usize` those
        // 5 bytes would have been taken for the whole frame.
        let mut bytes = vec![0x82, 0xFF, 0, 0, 0, 0x01, 0, 0, 0, 0x05, 1, 2, 3, 4];
        bytes.extend_from_slice(b"12345");
        let mut conn = Connection::open();
        let seen = feed(&mut conn, &bytes, &settings);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(seen, []);
            assert_eq!(
                conn.frame.map(|f| (f.len, f.read)),
                Some(((1 << 32) + 5, 5))
            );
        }
        #[cfg(not(target_pointer_width = "64"))]
        assert_eq!(seen, [Seen::Closed(1009, false)]);
    }

    #[test]
    fn fragment_count_is_capped() {
        let settings = Settings {
            max_fragments: 3,
            ..Settings::default()
        };
        let mut bytes = client_frame(0x01, b"a");
        for _ in 0..3 {
            bytes.extend(client_frame(0x00, b""));
        }
        let mut conn = Connection::open();
        assert_eq!(
            feed(&mut conn, &bytes, &settings),
            [Seen::Closed(1008, false)]
        );
    }

    #[test]
    fn close_mid_message_drops_the_fragments() {
        let mut bytes = client_frame(0x01, b"part");
        bytes.extend(close(1000, b""));
        bytes.extend(client_frame(0x80, b"after"));
        let (seen, out, phase) = exchange(&bytes);
        assert_eq!(seen, [Seen::Closed(1000, true)]);
        assert_eq!(out, close_reply(1000));
        assert_eq!(phase, Phase::Done);
    }

    #[test]
    fn messages_before_a_bad_frame_are_delivered_first() {
        let mut bytes = text("ok");
        bytes.extend(client_frame(0xC1, b"bad"));
        let (seen, _, _) = exchange(&bytes);
        assert_eq!(seen, [Seen::Text("ok".into()), Seen::Closed(1002, false)]);
    }

    #[test]
    fn server_initiated_close_waits_for_the_peer() {
        let settings = Settings::default();
        let mut conn = Connection::open();
        let closure = conn.close(CloseCode::GOING_AWAY, "bye").expect("was open");
        assert_eq!(
            (closure.code, closure.by_peer),
            (CloseCode::GOING_AWAY, false)
        );
        assert_eq!(conn.phase(), Phase::CloseSent);
        assert_eq!(sent_close_code(&sent(&mut conn)), 1001);
        // Data after our Close is discarded, pings unanswered.
        assert!(feed(&mut conn, &text("late"), &settings).is_empty());
        assert!(feed(&mut conn, &client_frame(0x89, b""), &settings).is_empty());
        assert!(sent(&mut conn).is_empty());
        // Their Close completes the handshake without another report.
        assert!(feed(&mut conn, &close(1001, b""), &settings).is_empty());
        assert!(conn.is_finished());
        assert!(sent(&mut conn).is_empty(), "no second Close");
    }

    /// Found by the `connection_close` fuzz target: closing dropped the
    /// message being reassembled, so its next fragment was taken for a
    /// continuation without a start and failed the connection.
    #[test]
    fn a_message_mid_fragments_may_finish_after_our_close() {
        let settings = Settings::default();
        let mut conn = Connection::open();
        assert!(feed(&mut conn, &client_frame(0x01, b"Hel"), &settings).is_empty());
        conn.close(CloseCode::GOING_AWAY, "bye");
        assert!(feed(&mut conn, &client_frame(0x80, b"lo"), &settings).is_empty());
        assert_eq!(conn.phase(), Phase::CloseSent, "no failure");
        assert!(feed(&mut conn, &close(1001, b""), &settings).is_empty());
        assert_eq!(conn.phase(), Phase::Done);
    }

    /// Found by the `connection` fuzz target: every Ping queued a Pong, so
    /// a peer pinging without reading grew our memory without bound.
    #[test]
    fn pongs_stop_when_the_peer_does_not_read() {
        let settings = Settings {
            max_outbox_bytes: 1024,
            ..Settings::default()
        };
        let mut conn = Connection::open();
        let ping = client_frame(0x89, &[b'p'; 125]);
        for _ in 0..1000 {
            feed(&mut conn, &ping, &settings);
        }
        assert!(conn.outbox().footprint() <= 1024 + 127 + 16);
        assert_eq!(conn.phase(), Phase::Open);
        // Once it reads, pings are answered again.
        sent(&mut conn);
        feed(&mut conn, &ping, &settings);
        assert_eq!(sent(&mut conn).len(), 127);
    }

    #[test]
    fn sends_respect_phase_and_outbox_limit() {
        let settings = Settings {
            // Each 8-byte frame is charged 8 + 16 (its handle): 24, then 48.
            max_outbox_bytes: 40,
            ..Settings::default()
        };
        let frame = SharedFrame::from(vec![0u8; 8]);
        let mut conn = Connection::new();
        assert_eq!(conn.send(&frame, &settings), Err(SendError::NotOpen));
        let mut conn = Connection::open();
        assert_eq!(conn.send(&frame, &settings), Ok(()));
        assert_eq!(
            conn.send(&frame, &settings),
            Ok(()),
            "one frame may overshoot"
        );
        assert_eq!(conn.send(&frame, &settings), Err(SendError::Overflow));
        assert_eq!(conn.outbox().queued_bytes(), 16);
    }

    #[test]
    fn abort_reports_1006_once() {
        let mut conn = Connection::open();
        let closure = conn.abort("reset").expect("was open");
        assert_eq!((closure.code, closure.by_peer), (CloseCode::ABNORMAL, true));
        assert_eq!(conn.abort("again"), None);
        assert_eq!(Connection::new().abort("early"), None);
    }
}
