//! One peer's WebSocket protocol state machine, sans-IO: bytes in, events
//! out, replies queued in the connection's own [`Outbox`].
//!
//! ```text
//!   Handshake ──101──> Open ──we send Close──> CloseSent ──their Close──> Done
//!       │                │                          │
//!       └─4xx / HTTP─────┴──their Close (echoed), or a protocol error────┴──> Done
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

use std::borrow::Cow;

use crate::frame::{self, CloseCode, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::handshake::{
    self, HeadScanner, HttpRequest, HttpResponse, Policy, Refusal, Request, Upgrade,
};
use crate::outbox::{Outbox, SharedFrame};

/// What every connection is held to. One value is shared by all of them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub handshake: Policy,
    /// The largest message (the sum of its fragments) accepted, in bytes.
    pub max_message_size: usize,
    /// The most fragments one message may have (floods of tiny fragments
    /// cost per-frame work without adding bytes).
    pub max_fragments: usize,
    /// Queued outgoing bytes past which a peer counts as a slow consumer.
    pub max_outbox_bytes: usize,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            handshake: Policy {
                allowed_origins: Vec::new(),
                protocols: Vec::new(),
                max_head_bytes: 8 * 1024,
                max_headers: 64,
            },
            max_message_size: 1 << 20,
            max_fragments: 1024,
            max_outbox_bytes: 1 << 20,
        }
    }
}

/// Where the connection is in its life. Each step only goes rightwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Handshake,
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
    /// The upgrade was accepted; the `101` is queued.
    Opened(Upgrade),
    /// A plain HTTP request: answer it with [`Connection::respond`].
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
    mask: [u8; 4],
    len: usize,
    read: usize,
}

/// A message being put together from fragments or from several reads.
#[derive(Debug)]
struct Assembly {
    binary: bool,
    data: Vec<u8>,
    /// Bytes of `data` known to be valid UTF-8 (text only).
    checked: usize,
    fragments: usize,
}

/// A header whose bytes are split across reads.
#[derive(Clone, Copy, Debug, Default)]
struct HeaderStash {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
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
}

/// One peer's protocol state. See the module docs.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    head: Option<Box<HeadState>>,
    stash: HeaderStash,
    frame: Option<InFrame>,
    message: Option<Assembly>,
    /// A control frame's payload split across reads (at most 125 bytes).
    control: Vec<u8>,
    outbox: Outbox,
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
            head: None,
            stash: HeaderStash::default(),
            frame: None,
            message: None,
            control: Vec::new(),
            outbox: Outbox::default(),
        }
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
                Phase::Open | Phase::CloseSent => self.read_frame(input, settings),
                Phase::Done => {
                    // §7.1.1: after the close, nothing the peer sends matters.
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

    /// Queues the answer to an [`Event::Http`] request.
    pub fn respond(&mut self, response: &HttpResponse) {
        self.outbox.push(response.to_bytes().into());
        self.phase = Phase::Done;
    }

    /// Refuses the connection before or during its handshake with an HTTP
    /// response (timeouts, capacity).
    pub fn refuse(&mut self, refusal: &Refusal) {
        if self.phase == Phase::Handshake {
            self.outbox.push(refusal.response.to_bytes().into());
        }
        self.phase = Phase::Done;
    }

    /// Queues a frame for the peer. Over the outbox limit the frame is
    /// still refused, and the caller decides the peer's fate.
    pub fn send(&mut self, frame: &SharedFrame, settings: &Settings) -> Result<(), SendError> {
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        if self.outbox.queued_bytes() > settings.max_outbox_bytes {
            return Err(SendError::Overflow);
        }
        self.outbox.push(frame.clone());
        Ok(())
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
                self.phase = Phase::CloseSent;
                self.drop_partial_input();
                Some(Closure {
                    code,
                    by_peer: false,
                    detail: Cow::Borrowed(reason),
                })
            }
            Phase::Handshake => {
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
        self.phase = Phase::Done;
        self.outbox.clear();
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
        self.control = Vec::new();
    }

    // ----- the opening handshake -----

    fn read_head<'b>(&mut self, input: &mut Input<'b>, settings: &Settings) -> Step<'b> {
        let max = settings.handshake.max_head_bytes;
        let state = self.head.get_or_insert_with(Box::default);
        let Some(end) = state.scanner.scan(input.peek()) else {
            if state.head.len() + input.len() > max {
                return self.refuse_head(&Refusal::head_too_large());
            }
            state.head.extend_from_slice(input.take(input.len()));
            return Step::NeedMore;
        };
        if state.head.len() + end > max {
            return self.refuse_head(&Refusal::head_too_large());
        }
        let bytes = input.take(end);
        let parsed = if state.head.is_empty() {
            handshake::parse_request(bytes, &settings.handshake)
        } else {
            state.head.extend_from_slice(bytes);
            handshake::parse_request(&state.head, &settings.handshake)
        };
        self.head = None;
        match parsed {
            Ok(Request::Upgrade(upgrade)) => {
                self.outbox
                    .push(handshake::accept_response(&upgrade).into());
                self.phase = Phase::Open;
                Step::Event(Event::Opened(upgrade))
            }
            Ok(Request::Http(request)) => {
                self.phase = Phase::Done;
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
            None => match self.read_header(input) {
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
            return self.whole_frame(progress, payload);
        }
        let chunk = input.take(remaining.min(input.len()));
        frame::apply_mask(chunk, progress.mask, progress.read);
        progress.read += chunk.len();
        if progress.opcode.is_control() {
            self.control.extend_from_slice(chunk);
        } else if let Err(step) = self.append(chunk, false) {
            return step;
        }
        if progress.read < progress.len {
            self.frame = Some(progress);
            return Step::NeedMore;
        }
        self.frame = None;
        if progress.opcode.is_control() {
            let payload = std::mem::take(&mut self.control);
            return self.control_frame(progress.opcode, &payload);
        }
        self.end_data_frame(progress.fin)
    }

    /// Decodes the next header, stashing a partial one across reads.
    fn read_header(
        &mut self,
        input: &mut Input<'_>,
    ) -> Result<Option<FrameHeader>, frame::FrameError> {
        let had = usize::from(self.stash.len);
        if had == 0 {
            if let Some((header, len)) = frame::decode_header(input.peek())? {
                input.take(len);
                return Ok(Some(header));
            }
            let n = input.len();
            self.stash.bytes[..n].copy_from_slice(input.take(n));
            self.stash.len = n as u8;
            return Ok(None);
        }
        let add = (MAX_HEADER_LEN - had).min(input.len());
        self.stash.bytes[had..had + add].copy_from_slice(&input.peek()[..add]);
        match frame::decode_header(&self.stash.bytes[..had + add])? {
            Some((header, len)) => {
                input.take(len - had);
                self.stash.len = 0;
                Ok(Some(header))
            }
            None => {
                input.take(add);
                self.stash.len = (had + add) as u8;
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
        let in_progress = self.message.as_ref().map(|m| (m.data.len(), m.fragments));
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
        if header.payload_len
            > (settings.max_message_size - so_far.min(settings.max_message_size)) as u64
        {
            return Err(self.fail(CloseCode::MESSAGE_TOO_BIG, "message over the size limit"));
        }
        if let Some((_, fragments)) = in_progress {
            if !header.opcode.is_control() && fragments >= settings.max_fragments {
                return Err(self.fail(CloseCode::POLICY_VIOLATION, "too many fragments"));
            }
        }
        let progress = InFrame {
            opcode: header.opcode,
            fin: header.fin,
            mask: header.mask.unwrap_or_default(),
            len: header.payload_len as usize,
            read: 0,
        };
        match header.opcode {
            OpCode::Text | OpCode::Binary => {
                if !header.fin || progress.len > 0 {
                    // Room for what has been announced, up to a cap: the rest
                    // grows with what actually arrives.
                    self.message = Some(Assembly {
                        binary: header.opcode == OpCode::Binary,
                        data: Vec::with_capacity(progress.len.min(64 * 1024)),
                        checked: 0,
                        fragments: 0,
                    });
                }
            }
            OpCode::Continuation => {}
            _ => self.control.clear(),
        }
        if let Some(message) = &mut self.message {
            if !header.opcode.is_control() {
                message.fragments += 1;
            }
        }
        self.frame = Some(progress);
        Ok(progress)
    }

    /// A frame whose whole payload arrived in one read.
    fn whole_frame<'b>(&mut self, progress: InFrame, payload: &'b mut [u8]) -> Step<'b> {
        if progress.opcode.is_control() {
            return self.control_frame(progress.opcode, payload);
        }
        let lone = progress.fin
            && self
                .message
                .as_ref()
                .is_none_or(|m| m.fragments == 1 && m.data.is_empty());
        if lone && progress.opcode != OpCode::Continuation {
            // The common case: one frame, one message, no copy.
            self.message = None;
            return self.deliver(match progress.opcode {
                OpCode::Binary => Ok(Message::Binary(Cow::Borrowed(payload))),
                _ => match std::str::from_utf8(payload) {
                    Ok(text) => Ok(Message::Text(Cow::Borrowed(text))),
                    Err(_) => Err(()),
                },
            });
        }
        if let Err(step) = self.append(payload, false) {
            return step;
        }
        self.end_data_frame(progress.fin)
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
        message.data.extend_from_slice(bytes);
        if message.binary {
            return Ok(());
        }
        match std::str::from_utf8(&message.data[message.checked..]) {
            Ok(_) => message.checked = message.data.len(),
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

    fn end_data_frame<'b>(&mut self, fin: bool) -> Step<'b> {
        if !fin {
            return Step::Continue;
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
        self.deliver(
            String::from_utf8(message.data)
                .map(|t| Message::Text(Cow::Owned(t)))
                .map_err(|_| ()),
        )
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

    fn control_frame<'b>(&mut self, opcode: OpCode, payload: &[u8]) -> Step<'b> {
        match opcode {
            OpCode::Ping => {
                // §5.5.2: "Upon receipt of a Ping frame, an endpoint MUST send a
                // Pong frame in response ... with identical Application data".
                if self.phase == Phase::Open {
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
