//! The client side of RFC 6455, sans-IO: what a client writes (the
//! upgrade request, masked frames) and how it reads what a server sends
//! (the `101`, unmasked frames).
//!
//! The server never needs any of this. It exists because the load tool
//! (`tools/wschat-load`), the integration tests (`tests/common`) and the
//! fuzz targets (`fuzz/src`) all speak to the server as a client; each
//! used to carry its own codec, and they differed in what they checked.
//! Like the rest of [`crate::protocol`], it takes bytes and returns bytes
//! or values: no sockets, no clock, no randomness (callers pass masking
//! keys and nonces in).
//!
//! Reading is incremental in the manner of httparse: a function given the
//! bytes so far answers [`Status::Partial`] when they are not yet enough,
//! which is not an error, and never panics whatever the bytes are.
//! [`decode_server_frame`] reads one frame; [`Decoder`] takes a byte
//! stream in pieces of any size, reassembles fragmented messages and hands
//! each message or control frame to a callback as a borrowed slice (a
//! frame that arrived whole in one piece is not copied).
//!
//! The mask rule is the server decoder's ([`super::frame::decode_header`])
//! reversed: §5.1, "A client MUST close a connection if it detects a
//! masked frame."

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::frame::{
    apply_mask, encode_header, CloseCode, OpCode, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER_LEN,
};
use super::handshake::accept_key;

/// The outcome of reading a prefix of a stream: done, or more bytes
/// needed (like `httparse::Status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    /// Not enough bytes yet; call again with more.
    Partial,
}

// ----- writing -----

/// Appends one whole masked frame, as a client sends it (§5.3: "A client
/// MUST mask all frames that it sends to the server"), with the minimal
/// length encoding. `first_byte` is FIN, RSV and opcode exactly as they
/// go on the wire, so tests can also send frames the server must refuse.
pub fn encode_frame_into(out: &mut Vec<u8>, first_byte: u8, payload: &[u8], mask: [u8; 4]) {
    let mut header = [0u8; MAX_SERVER_HEADER_LEN];
    let head = encode_header(true, OpCode::Binary, payload.len(), &mut header);
    out.reserve(head.len() + 4 + payload.len());
    out.push(first_byte);
    out.push(head[1] | 0x80);
    out.extend_from_slice(&head[2..]);
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// Appends an unfragmented message or control frame (FIN set, no RSV).
pub fn encode_message_into(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    encode_frame_into(out, 0x80 | opcode.bits(), payload, mask);
}

/// The `Sec-WebSocket-Key` for 16 nonce bytes (§4.1: "a randomly selected
/// 16-byte value that has been base64-encoded").
pub fn key_from_nonce(nonce: [u8; 16]) -> String {
    BASE64.encode(nonce)
}

/// Appends the upgrade request for `path` on `host` (the `Host` value,
/// e.g. `127.0.0.1:8080`) with `key`; `extra` is inserted before the
/// blank line as is (header lines, each ending in `\r\n`; usually empty).
pub fn write_upgrade_request(out: &mut Vec<u8>, host: &str, path: &str, key: &str, extra: &str) {
    for part in [
        "GET ",
        path,
        " HTTP/1.1\r\nHost: ",
        host,
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
        key,
        "\r\nSec-WebSocket-Version: 13\r\n",
        extra,
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

// ----- reading the handshake -----

/// A response head larger than this is refused.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why the server's answer to the upgrade request is not a `101` the
/// client can accept (§4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// No blank line within [`MAX_RESPONSE_HEAD`] bytes.
    TooLong,
    /// The status line is not `HTTP/1.x 101`.
    NotSwitching,
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    BadAccept,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::TooLong => "response head too long",
            HandshakeError::NotSwitching => "status is not 101",
            HandshakeError::BadAccept => "missing or wrong Sec-WebSocket-Accept",
        })
    }
}

/// Checks the response head at the start of `buf` against the `key` the
/// request was sent with. `Partial` until the blank line has arrived;
/// then the length of the head: the server's first frame starts there.
pub fn check_upgrade_response(buf: &[u8], key: &str) -> Result<Status<usize>, HandshakeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_HEAD {
            Err(HandshakeError::TooLong)
        } else {
            Ok(Status::Partial)
        };
    };
    if end > MAX_RESPONSE_HEAD {
        return Err(HandshakeError::TooLong);
    }
    let mut lines = buf[..end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().unwrap_or_default();
    let mut words = status.split(|&b| b == b' ').filter(|w| !w.is_empty());
    if !matches!(words.next(), Some(v) if v.starts_with(b"HTTP/1.")) || words.next() != Some(b"101")
    {
        return Err(HandshakeError::NotSwitching);
    }
    let expected = accept_key(key.as_bytes());
    let accepted = lines.any(|line| match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            line[..colon].eq_ignore_ascii_case(b"sec-websocket-accept")
                && line[colon + 1..].trim_ascii() == expected.as_bytes()
        }
        None => false,
    });
    if accepted {
        Ok(Status::Complete(end + 4))
    } else {
        Err(HandshakeError::BadAccept)
    }
}

// ----- reading frames -----

/// What a client refuses to accept from a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServerFrameError {
    /// RSV bits set where no extension allows them (§5.2): any RSV bit
    /// without permessage-deflate; with it, RSV2/RSV3, or RSV1 on a control
    /// frame or a continuation (RFC 7692 §6.1: "An endpoint MUST NOT set the
    /// "Per-Message Compressed" bit of control frames and non-first
    /// fragments of a data message").
    ReservedBits,
    /// Opcode 0x3–0x7 or 0xB–0xF.
    ReservedOpCode(u8),
    /// §5.1: "A client MUST close a connection if it detects a masked frame."
    Masked,
    /// §5.5: "Control frames themselves MUST NOT be fragmented."
    FragmentedControl,
    /// §5.5: control payloads are at most 125 bytes.
    ControlTooLong,
    /// §5.2: "the most significant bit MUST be 0" in a 64-bit length.
    LengthOverflow,
    /// A frame or reassembled message larger than the reader's limit.
    TooBig,
    /// A continuation frame with no message in progress (§5.4).
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open (§5.4).
    ExpectedContinuation,
}

impl ServerFrameError {
    /// The code a client closes with on this error (§7.4.1).
    pub fn close_code(self) -> CloseCode {
        match self {
            ServerFrameError::TooBig => CloseCode::MESSAGE_TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ServerFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerFrameError::ReservedBits => f.write_str("RSV bits set"),
            ServerFrameError::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            ServerFrameError::Masked => f.write_str("masked server frame"),
            ServerFrameError::FragmentedControl => f.write_str("fragmented control frame"),
            ServerFrameError::ControlTooLong => f.write_str("control frame over 125 bytes"),
            ServerFrameError::LengthOverflow => f.write_str("64-bit length with the top bit set"),
            ServerFrameError::TooBig => f.write_str("frame or message over the size limit"),
            ServerFrameError::UnexpectedContinuation => {
                f.write_str("continuation without a message")
            }
            ServerFrameError::ExpectedContinuation => {
                f.write_str("data frame inside a fragmented message")
            }
        }
    }
}

/// The header of a frame from a server (never masked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerHeader {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload_len: u64,
    /// 2, 4 or 10 bytes.
    pub header_len: usize,
    /// RSV1, the "Per-Message Compressed" bit (RFC 7692 §6); only ever set
    /// when the reader allowed it.
    pub rsv1: bool,
}

impl ServerHeader {
    /// Whether the length took the fewest bytes it could (§5.2: "the
    /// minimal number of bytes MUST be used to encode the length"). Not
    /// checked while decoding, as most clients do not; strict readers ask.
    pub fn is_minimal(&self) -> bool {
        let minimal = match self.payload_len {
            0..=125 => 2,
            126..=0xFFFF => 4,
            _ => 10,
        };
        self.header_len == minimal
    }
}

/// Header length announced by the second byte of a frame.
#[inline]
fn header_len(second_byte: u8) -> usize {
    match second_byte & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// Decodes a server frame header at the start of `buf`. Errors are found
/// as early as the bytes allow: a prefix of a bad header is `Partial` or
/// already the error it will have.
#[inline]
pub fn decode_server_header(buf: &[u8]) -> Result<Status<ServerHeader>, ServerFrameError> {
    decode_server_header_with(buf, false)
}

/// [`decode_server_header`] for a client that negotiated
/// permessage-deflate when `rsv1_allowed`: RSV1 is then read, not refused
/// (whether this frame may carry it is the reassembler's question).
#[inline]
pub fn decode_server_header_with(
    buf: &[u8],
    rsv1_allowed: bool,
) -> Result<Status<ServerHeader>, ServerFrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(Status::Partial);
    };
    let fin = b0 & 0x80 != 0;
    let allowed = if rsv1_allowed { 0x40 } else { 0 };
    if b0 & 0x70 & !allowed != 0 {
        return Err(ServerFrameError::ReservedBits);
    }
    let rsv1 = b0 & 0x40 != 0;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ServerFrameError::ReservedOpCode(b0 & 0x0F))?;
    if b1 & 0x80 != 0 {
        return Err(ServerFrameError::Masked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ServerFrameError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ServerFrameError::ControlTooLong);
        }
    }
    let header_len = header_len(b1);
    let payload_len = match (header_len, buf.get(2..header_len)) {
        (2, _) => u64::from(len7),
        (4, Some(&[a, b])) => u64::from(u16::from_be_bytes([a, b])),
        (10, Some(&[a, b, c, d, e, f, g, h])) => {
            let len = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
            if len >> 63 != 0 {
                return Err(ServerFrameError::LengthOverflow);
            }
            len
        }
        _ => return Ok(Status::Partial),
    };
    Ok(Status::Complete(ServerHeader {
        fin,
        opcode,
        payload_len,
        header_len,
        rsv1,
    }))
}

/// One whole frame from a server, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerFrame<'a> {
    pub header: ServerHeader,
    pub payload: &'a [u8],
}

/// Decodes the whole frame at the start of `buf`: the frame and the bytes
/// it takes, or `Partial` until all of it has arrived. A payload over
/// `max_payload` is `TooBig` as soon as the header says so.
#[inline]
pub fn decode_server_frame(
    buf: &[u8],
    max_payload: usize,
) -> Result<Status<(ServerFrame<'_>, usize)>, ServerFrameError> {
    decode_server_frame_with(buf, max_payload, false)
}

#[inline]
fn decode_server_frame_with(
    buf: &[u8],
    max_payload: usize,
    rsv1_allowed: bool,
) -> Result<Status<(ServerFrame<'_>, usize)>, ServerFrameError> {
    let Status::Complete(header) = decode_server_header_with(buf, rsv1_allowed)? else {
        return Ok(Status::Partial);
    };
    let len = checked_len(header, max_payload)?;
    let Some(payload) = buf[header.header_len..].get(..len) else {
        return Ok(Status::Partial);
    };
    Ok(Status::Complete((
        ServerFrame { header, payload },
        header.header_len + len,
    )))
}

#[inline]
fn checked_len(header: ServerHeader, max_payload: usize) -> Result<usize, ServerFrameError> {
    usize::try_from(header.payload_len)
        .ok()
        .filter(|&n| n <= max_payload)
        .ok_or(ServerFrameError::TooBig)
}

/// The status code of a Close body (§5.5.1): `None` when the body is
/// empty (no code, reported as 1005) or malformed (a single byte).
pub fn close_code(body: &[u8]) -> Option<CloseCode> {
    match *body {
        [hi, lo, ..] => Some(CloseCode(u16::from_be_bytes([hi, lo]))),
        _ => None,
    }
}

/// What the [`Decoder`] hands out: a whole message or a control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A whole text message. UTF-8 is not checked here: the load tool only
    /// looks for ASCII markers, tests check it themselves.
    Text(&'a [u8]),
    Binary(&'a [u8]),
    /// A whole text message sent compressed (RSV1 on its first frame):
    /// the payload as it came, still to be inflated (RFC 7692 §7.2.2).
    CompressedText(&'a [u8]),
    /// A whole binary message sent compressed.
    CompressedBinary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// The Close body: see [`close_code`].
    Close(&'a [u8]),
}

/// Buffers above this are released once empty.
const KEEP_CAPACITY: usize = 1 << 20;

/// The state of a fragmented message being put back together.
struct Reassembly {
    opcode: Option<OpCode>,
    /// The message in progress had RSV1 on its first frame.
    compressed: bool,
    data: Vec<u8>,
    max_message: usize,
    /// permessage-deflate was negotiated: RSV1 may start a data message.
    rsv1_allowed: bool,
}

/// The message for `opcode` (text or binary), compressed or not.
fn message(opcode: OpCode, compressed: bool, data: &[u8]) -> Received<'_> {
    match (opcode, compressed) {
        (OpCode::Text, false) => Received::Text(data),
        (OpCode::Text, true) => Received::CompressedText(data),
        (_, false) => Received::Binary(data),
        (_, true) => Received::CompressedBinary(data),
    }
}

impl Reassembly {
    fn frame(
        &mut self,
        frame: ServerFrame<'_>,
        on: &mut impl FnMut(Received<'_>),
    ) -> Result<(), ServerFrameError> {
        let ServerFrame { header, payload } = frame;
        // RFC 7692 §6.1: RSV1 only on the first frame of a data message.
        if header.rsv1 && !matches!(header.opcode, OpCode::Text | OpCode::Binary) {
            return Err(ServerFrameError::ReservedBits);
        }
        match (header.opcode, header.fin) {
            (OpCode::Ping, _) => on(Received::Ping(payload)),
            (OpCode::Pong, _) => on(Received::Pong(payload)),
            (OpCode::Close, _) => on(Received::Close(payload)),
            (OpCode::Text | OpCode::Binary, _) if self.opcode.is_some() => {
                return Err(ServerFrameError::ExpectedContinuation)
            }
            (opcode @ (OpCode::Text | OpCode::Binary), true) => {
                on(message(opcode, header.rsv1, payload))
            }
            (opcode @ (OpCode::Text | OpCode::Binary), false) => {
                self.opcode = Some(opcode);
                self.compressed = header.rsv1;
                self.data.clear();
                self.data.extend_from_slice(payload);
            }
            (OpCode::Continuation, fin) => {
                let opcode = self
                    .opcode
                    .ok_or(ServerFrameError::UnexpectedContinuation)?;
                if payload.len() > self.max_message.saturating_sub(self.data.len()) {
                    return Err(ServerFrameError::TooBig);
                }
                self.data.extend_from_slice(payload);
                if fin {
                    self.opcode = None;
                    on(message(opcode, self.compressed, &self.data));
                    self.data.clear();
                    if self.data.capacity() > KEEP_CAPACITY {
                        self.data = Vec::new();
                    }
                }
            }
        }
        Ok(())
    }

    /// Decodes every whole frame at the start of `buf`; returns how many
    /// bytes they took.
    fn frames(
        &mut self,
        buf: &[u8],
        on: &mut impl FnMut(Received<'_>),
    ) -> Result<usize, ServerFrameError> {
        let mut used = 0;
        while let Status::Complete((frame, n)) =
            decode_server_frame_with(&buf[used..], self.max_message, self.rsv1_allowed)?
        {
            self.frame(frame, on)?;
            used += n;
        }
        Ok(used)
    }
}

/// Turns the byte stream from a server (after the `101`) into messages and
/// control frames.
///
/// Input is decoded where it lies; only a frame cut off at the end of one
/// piece is copied, and only its own bytes. After an error the stream
/// cannot be resynchronised: every later call returns the same error.
pub struct Decoder {
    /// The start of a frame cut off at the end of the previous piece.
    pending: Vec<u8>,
    reassembly: Reassembly,
    failed: Option<ServerFrameError>,
}

impl Decoder {
    /// `max_message` bounds a single frame and a reassembled message.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            pending: Vec::new(),
            reassembly: Reassembly {
                opcode: None,
                compressed: false,
                data: Vec::new(),
                max_message,
                rsv1_allowed: false,
            },
            failed: None,
        }
    }

    /// Says that permessage-deflate was negotiated (RFC 7692): from now on
    /// RSV1 on the first frame of a data message marks it compressed and
    /// the message comes out as [`Received::CompressedText`] or
    /// [`Received::CompressedBinary`].
    pub fn allow_compressed(&mut self) {
        self.reassembly.rsv1_allowed = true;
    }

    /// Feeds the next piece of the stream, calling `on` for each complete
    /// message or control frame, in order.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on: impl FnMut(Received<'_>),
    ) -> Result<(), ServerFrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.feed_inner(input, &mut on);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    fn feed_inner(
        &mut self,
        mut input: &[u8],
        on: &mut impl FnMut(Received<'_>),
    ) -> Result<(), ServerFrameError> {
        // First finish the frame left over from the last piece, taking
        // from `input` only the bytes that belong to it: its header is read
        // from both (copied into a small array), then its rest is copied.
        while !self.pending.is_empty() {
            let mut head = [0u8; MAX_SERVER_HEADER_LEN];
            let have = self.pending.len().min(head.len());
            let more = (head.len() - have).min(input.len());
            head[..have].copy_from_slice(&self.pending[..have]);
            head[have..have + more].copy_from_slice(&input[..more]);
            let want = match decode_server_header_with(
                &head[..have + more],
                self.reassembly.rsv1_allowed,
            )? {
                Status::Complete(header) => {
                    header.header_len + checked_len(header, self.reassembly.max_message)?
                }
                // Fewer than 10 bytes in all, and still no whole header.
                Status::Partial => {
                    self.pending.extend_from_slice(input);
                    return Ok(());
                }
            };
            if self.pending.len() < want {
                let take = (want - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() < want {
                    return Ok(());
                }
            }
            let used = self.reassembly.frames(&self.pending, on)?;
            self.pending.drain(..used);
        }
        if self.pending.capacity() > KEEP_CAPACITY {
            self.pending = Vec::new();
        }
        let used = self.reassembly.frames(input, on)?;
        self.pending.extend_from_slice(&input[used..]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::decode_header;

    /// What the decoder handed out, owned: (kind, bytes).
    type Seen = Vec<(char, Vec<u8>)>;

    /// Feeds `pieces` in turn to a decoder with `max` as its limit.
    fn run_with(max: usize, pieces: &[&[u8]]) -> Result<Seen, ServerFrameError> {
        let mut decoder = Decoder::new(max);
        let mut seen = Vec::new();
        for piece in pieces {
            decoder.feed(piece, |r| {
                seen.push(match r {
                    Received::Text(d) => ('T', d.to_vec()),
                    Received::Binary(d) => ('B', d.to_vec()),
                    Received::CompressedText(d) => ('t', d.to_vec()),
                    Received::CompressedBinary(d) => ('b', d.to_vec()),
                    Received::Ping(d) => ('i', d.to_vec()),
                    Received::Pong(d) => ('o', d.to_vec()),
                    Received::Close(d) => ('C', d.to_vec()),
                })
            })?;
        }
        Ok(seen)
    }

    fn run(pieces: &[&[u8]]) -> Result<Seen, ServerFrameError> {
        run_with(1 << 20, pieces)
    }

    /// The same result fed whole, split in two at every byte, split in
    /// three around every byte, and byte by byte.
    fn split_everywhere(input: &[u8]) -> Result<Seen, ServerFrameError> {
        let whole = run(&[input]);
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(run(&[a, b]), whole, "cut at {cut} of {input:02x?}");
            if cut < input.len() {
                let (b, c) = b.split_at(1);
                assert_eq!(run(&[a, b, c]), whole, "byte {cut} alone of {input:02x?}");
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes), whole, "byte by byte: {input:02x?}");
        whole
    }

    fn text(s: &str) -> (char, Vec<u8>) {
        ('T', s.as_bytes().to_vec())
    }

    // --- frames from the server ---

    /// §5.7: "A single-frame unmasked text message".
    #[test]
    fn rfc_unmasked_hello() {
        let seen = split_everywhere(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(seen, Ok(vec![text("Hello")]));
    }

    /// §5.7: "A fragmented unmasked text message", with §5.7's unmasked
    /// ping between the fragments (control frames may be interleaved, §5.4).
    #[test]
    fn rfc_fragmented_hello_with_ping_inside() {
        let stream = [
            0x01, 0x03, 0x48, 0x65, 0x6c, // "Hel"
            0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f, // ping "Hello"
            0x80, 0x02, 0x6c, 0x6f, // "lo"
        ];
        assert_eq!(
            split_everywhere(&stream),
            Ok(vec![('i', b"Hello".to_vec()), text("Hello")])
        );
    }

    #[test]
    fn several_frames_in_one_piece() {
        let mut stream = vec![0x81, 0x02, b'h', b'i'];
        stream.extend_from_slice(&[0x8A, 0x00]); // empty pong
        stream.extend_from_slice(&[0x82, 0x7E, 0x01, 0x00]); // 256-byte binary
        stream.extend(0..=255u8);
        stream.extend_from_slice(&[0x81, 0x00]); // empty text
        stream.extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]); // close 1000
        assert_eq!(
            split_everywhere(&stream),
            Ok(vec![
                text("hi"),
                ('o', vec![]),
                ('B', (0..=255u8).collect()),
                text(""),
                ('C', vec![0x03, 0xE8])
            ])
        );
    }

    /// §5.7: "256 bytes binary message in a single unmasked frame" and
    /// "64KiB binary message in a single unmasked frame", in pieces of
    /// every awkward size.
    #[test]
    fn rfc_extended_lengths_in_pieces() {
        let mut stream = vec![0x82, 0x7E, 0x01, 0x00];
        stream.extend(std::iter::repeat_n(0x11, 256));
        stream.extend_from_slice(&[0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]);
        stream.extend(std::iter::repeat_n(0xAB, 65536));
        let whole = run(&[&stream]).unwrap();
        assert_eq!(
            whole.iter().map(|(k, d)| (*k, d.len())).collect::<Vec<_>>(),
            [('B', 256), ('B', 65536)]
        );
        for size in [1, 2, 3, 4, 5, 9, 10, 11, 259, 260, 261, 4096, 65535, 65546] {
            let pieces: Vec<&[u8]> = stream.chunks(size).collect();
            assert_eq!(run(&pieces).unwrap(), whole, "pieces of {size}");
        }
    }

    #[test]
    fn header_prefixes_are_partial() {
        let frames: [&[u8]; 3] = [
            &[0x81, 0x05],
            &[0x82, 0x7E, 0x01, 0x00],
            &[0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
        ];
        for (bytes, len) in frames.into_iter().zip([5, 256, 65536]) {
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_server_header(&bytes[..cut]),
                    Ok(Status::Partial),
                    "{bytes:02x?} cut at {cut}"
                );
            }
            let header = ServerHeader {
                fin: true,
                opcode: if len == 5 {
                    OpCode::Text
                } else {
                    OpCode::Binary
                },
                payload_len: len,
                header_len: bytes.len(),
                rsv1: false,
            };
            assert_eq!(decode_server_header(bytes), Ok(Status::Complete(header)));
            assert!(header.is_minimal());
        }
    }

    #[test]
    fn whole_frame_prefixes_are_partial() {
        let frame = [0x82, 0x7E, 0x00, 0x80]
            .into_iter()
            .chain(0..0x80)
            .collect::<Vec<u8>>();
        for cut in 0..frame.len() {
            assert_eq!(
                decode_server_frame(&frame[..cut], 1000),
                Ok(Status::Partial)
            );
        }
        let mut longer = frame.clone();
        longer.extend_from_slice(&[0x81, 0x00]);
        let Ok(Status::Complete((f, n))) = decode_server_frame(&longer, 1000) else {
            panic!("a whole frame");
        };
        assert_eq!((n, f.payload.len(), f.payload[127]), (132, 128, 127));
        // The limit is checked on the header alone.
        assert_eq!(
            decode_server_frame(&frame[..4], 127),
            Err(ServerFrameError::TooBig)
        );
    }

    #[test]
    fn non_minimal_lengths_are_read_but_reported() {
        // 5 bytes announced with the 16-bit form, then with the 64-bit form.
        let h16 = [0x81, 0x7E, 0x00, 0x05];
        let h64 = [0x81, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x05];
        for header in [&h16[..], &h64[..]] {
            let Ok(Status::Complete(h)) = decode_server_header(header) else {
                panic!("{header:02x?}");
            };
            assert_eq!(h.payload_len, 5);
            assert!(!h.is_minimal());
        }
    }

    /// Each violation, found at the first byte that shows it, and reported
    /// the same however the stream is split.
    #[test]
    fn violations() {
        use ServerFrameError::*;
        let cases: [(&[u8], ServerFrameError); 12] = [
            // §5.7's masked "Hello", as a server must never send it.
            (
                &[
                    0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                ],
                Masked,
            ),
            (&[0xC1, 0x00], ReservedBits),
            (&[0x91, 0x00], ReservedBits),
            (&[0x83, 0x00], ReservedOpCode(3)),
            (&[0x8F, 0x00], ReservedOpCode(0xF)),
            (&[0x09, 0x00], FragmentedControl),
            (&[0x89, 0x7E, 0x00, 0x7E], ControlTooLong),
            (&[0x80, 0x00], UnexpectedContinuation),
            (&[0x01, 0x00, 0x81, 0x00], ExpectedContinuation),
            (&[0x01, 0x00, 0x82, 0x01, 0x00], ExpectedContinuation),
            (&[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0], LengthOverflow),
            (&[0x82, 0x7F, 0, 0, 0, 0, 0x10, 0, 0, 0], TooBig),
        ];
        for (bytes, error) in cases {
            assert_eq!(split_everywhere(bytes), Err(error), "{bytes:02x?}");
        }
    }

    /// Feeds `pieces` to a decoder that negotiated permessage-deflate.
    fn run_compressed(pieces: &[&[u8]]) -> Result<Seen, ServerFrameError> {
        let mut decoder = Decoder::new(1 << 20);
        decoder.allow_compressed();
        let mut seen = Vec::new();
        for piece in pieces {
            decoder.feed(piece, |r| {
                seen.push(match r {
                    Received::Text(d) => ('T', d.to_vec()),
                    Received::CompressedText(d) => ('t', d.to_vec()),
                    Received::CompressedBinary(d) => ('b', d.to_vec()),
                    other => panic!("{other:?}"),
                })
            })?;
        }
        Ok(seen)
    }

    #[test]
    fn rsv1_marks_a_compressed_message_once_negotiated() {
        // RFC 7692 §7.2.3.1's compressed "Hello", whole, then in two
        // fragments (§7.2.3.2: RSV1 on the first only), then uncompressed.
        let hello = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        let fragments = [
            0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
        ];
        let plain = [0x81, 0x02, b'h', b'i'];
        let stream = [&hello[..], &fragments, &plain].concat();
        let compressed = ('t', hello[2..].to_vec());
        assert_eq!(
            run_compressed(&[&stream]),
            Ok(vec![compressed.clone(), compressed, text("hi")])
        );
        let cut: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(run_compressed(&cut), run_compressed(&[&stream]));
        assert_eq!(
            run_compressed(&[&[0xc2, 0x01, 0x00]]),
            Ok(vec![('b', vec![0x00])])
        );
        // Not negotiated: RSV1 is refused as before.
        assert_eq!(run(&[&hello]), Err(ServerFrameError::ReservedBits));
    }

    #[test]
    fn rsv1_on_controls_and_continuations_and_rsv2_stay_errors() {
        for bad in [
            &[0xc9, 0x00][..],                     // compressed ping
            &[0xc8, 0x02, 0x03, 0xe8],             // compressed close
            &[0x01, 0x01, b'a', 0xc0, 0x01, b'b'], // RSV1 on a continuation
            &[0xa1, 0x00],                         // RSV2
            &[0xe1, 0x00],                         // RSV1 and RSV2
        ] {
            assert_eq!(
                run_compressed(&[bad]),
                Err(ServerFrameError::ReservedBits),
                "{bad:02x?}"
            );
        }
    }

    #[test]
    fn reassembled_message_over_the_limit() {
        let stream = [0x01, 0x03, b'a', b'b', b'c', 0x80, 0x02, b'd', b'e'];
        assert_eq!(run_with(4, &[&stream]), Err(ServerFrameError::TooBig));
        assert_eq!(run_with(5, &[&stream]), Ok(vec![text("abcde")]));
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = Decoder::new(100);
        assert_eq!(
            decoder.feed(&[0xC1, 0x00], |_| {}),
            Err(ServerFrameError::ReservedBits)
        );
        let mut called = false;
        assert_eq!(
            decoder.feed(&[0x81, 0x00], |_| called = true),
            Err(ServerFrameError::ReservedBits)
        );
        assert!(!called);
    }

    /// A frame cut at the end of a piece is completed from the next piece
    /// without copying what follows it: the frames after it are lent
    /// straight from the input.
    #[test]
    fn only_the_cut_frame_is_buffered() {
        let mut decoder = Decoder::new(1 << 20);
        decoder
            .feed(&[0x81, 0x03, b'a'], |_| panic!("too early"))
            .unwrap();
        let next = [b'b', b'c', 0x81, 0x01, b'x', 0x81];
        let mut lent = Vec::new();
        decoder
            .feed(&next, |r| {
                if let Received::Text(t) = r {
                    lent.push((t.to_vec(), next.as_ptr_range().contains(&t.as_ptr())));
                }
            })
            .unwrap();
        assert_eq!(lent, [(b"abc".to_vec(), false), (b"x".to_vec(), true)]);
        assert_eq!(decoder.pending, [0x81]);
    }

    /// No input makes the decoder panic: pseudo-random bytes (biased
    /// towards plausible headers) fed in pseudo-random pieces.
    #[test]
    fn arbitrary_input_never_panics() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..2000 {
            let len = (next() % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| {
                    let r = next() as u8;
                    match i % 4 {
                        0 => r & 0x8F,
                        1 => r & 0x7F,
                        _ => r,
                    }
                })
                .collect();
            let mut decoder = Decoder::new(40);
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let n = (next() as usize % 7 + 1).min(rest.len());
                let (piece, tail) = rest.split_at(n);
                let _ = decoder.feed(piece, |_| {});
                rest = tail;
            }
            for k in 0..=bytes.len() {
                let _ = decode_server_frame(&bytes[k..], 40);
            }
        }
    }

    #[test]
    fn close_codes() {
        assert_eq!(close_code(&[0x03, 0xE8]), Some(CloseCode::NORMAL));
        assert_eq!(
            close_code(&[0x03, 0xF0, b'b', b'y', b'e']),
            Some(CloseCode::POLICY_VIOLATION)
        );
        assert_eq!(close_code(&[]), None);
        assert_eq!(close_code(&[0x03]), None);
    }

    // --- frames to the server ---

    /// §5.7: "A single-frame masked text message", key 37 fa 21 3d.
    #[test]
    fn rfc_masked_hello_is_what_we_write() {
        let mut out = vec![];
        encode_message_into(&mut out, OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        // §5.7's masked pong, and the first byte exactly as given.
        let mut out = vec![];
        encode_frame_into(&mut out, 0x8A, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(out[..2], [0x8A, 0x85]);
        let mut out = vec![];
        encode_frame_into(&mut out, 0xC1, b"", [1, 2, 3, 4]);
        assert_eq!(out, [0xC1, 0x80, 1, 2, 3, 4]);
    }

    /// The 16- and 64-bit length forms of §5.7's examples, masked, with
    /// the minimal form at each boundary; the server's decoder reads back
    /// what was written.
    #[test]
    fn written_frames_pass_the_server_decoder() {
        let cases: [(usize, &[u8]); 5] = [
            (0, &[0x82, 0x80]),
            (125, &[0x82, 0xFD]),
            (126, &[0x82, 0xFE, 0x00, 0x7E]),
            (65535, &[0x82, 0xFE, 0xFF, 0xFF]),
            (
                65536,
                &[0x82, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00],
            ),
        ];
        for (len, head) in cases {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = vec![0xEE]; // appends, keeping what is there
            encode_message_into(&mut out, OpCode::Binary, &payload, [9, 8, 7, 6]);
            assert_eq!(out[0], 0xEE);
            let out = &out[1..];
            assert_eq!(&out[..head.len()], head, "{len}");
            assert_eq!(out[head.len()..head.len() + 4], [9, 8, 7, 6]);
            let (header, n) = decode_header(out).unwrap().unwrap();
            assert_eq!(
                (header.payload_len, header.opcode),
                (len as u64, OpCode::Binary)
            );
            let mut body = out[n..].to_vec();
            apply_mask(&mut body, header.mask.unwrap(), 0);
            assert_eq!(body, payload);
        }
    }

    // --- the handshake ---

    /// §1.3's worked example.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn rfc_nonce_and_key() {
        assert_eq!(key_from_nonce(*b"the sample nonce"), KEY);
    }

    #[test]
    fn request_has_the_required_headers() {
        let mut out = Vec::new();
        write_upgrade_request(&mut out, "127.0.0.1:9000", "/chat?since=3", KEY, "");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /chat?since=3 HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut out = Vec::new();
        write_upgrade_request(&mut out, "h", "/", KEY, "Origin: http://h\r\n");
        assert!(out.ends_with(b"Version: 13\r\nOrigin: http://h\r\n\r\n"));
    }

    #[test]
    fn good_response_split_at_every_byte() {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             sec-websocket-ACCEPT:  {ACCEPT} \r\n\r\n"
        );
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x00]);
        for cut in 0..head.len() {
            assert_eq!(
                check_upgrade_response(&bytes[..cut], KEY),
                Ok(Status::Partial),
                "cut at {cut}"
            );
        }
        assert_eq!(
            check_upgrade_response(&bytes, KEY),
            Ok(Status::Complete(head.len()))
        );
    }

    #[test]
    fn refused_responses() {
        let cases = [
            (
                "HTTP/1.1 400 Bad Request\r\n\r\n",
                HandshakeError::NotSwitching,
            ),
            ("HTTP/1.1  503\r\n\r\n", HandshakeError::NotSwitching),
            ("garbage\r\n\r\n", HandshakeError::NotSwitching),
            ("\r\n\r\n", HandshakeError::NotSwitching),
            (
                "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n",
                HandshakeError::BadAccept,
            ),
            (
                "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xxxx\r\n\r\n",
                HandshakeError::BadAccept,
            ),
            (
                "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                HandshakeError::BadAccept,
            ),
        ];
        for (response, error) in cases {
            assert_eq!(
                check_upgrade_response(response.as_bytes(), KEY),
                Err(error),
                "{response:?}"
            );
        }
        let endless = vec![b'x'; MAX_RESPONSE_HEAD + 1];
        assert_eq!(
            check_upgrade_response(&endless, KEY),
            Err(HandshakeError::TooLong)
        );
        assert_eq!(
            check_upgrade_response(&endless[1..], KEY),
            Ok(Status::Partial)
        );
    }
}
