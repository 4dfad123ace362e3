//! The client side of RFC 6455 framing: decoding what a server sends
//! (unmasked frames, §5.1) and encoding what a client sends (masked).
//!
//! `wschat::protocol::frame::decode_header` is the server's decoder and refuses
//! unmasked frames, so the small header parser here mirrors it with the
//! mask rule reversed. [`Decoder`] takes bytes as they arrive, in pieces
//! of any size, and hands out whole messages (reassembled from fragments)
//! and control frames.

use std::fmt;

use wschat::protocol::frame::{OpCode, MAX_CONTROL_PAYLOAD};

/// What a client refuses to accept from a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    ReservedBits,
    ReservedOpCode(u8),
    /// §5.1: "A client MUST close a connection if it detects a masked frame."
    Masked,
    FragmentedControl,
    ControlTooLong,
    LengthOverflow,
    /// A frame or reassembled message larger than the decoder's limit.
    TooBig,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open.
    ExpectedContinuation,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits => f.write_str("RSV bits set"),
            ProtocolError::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::Masked => f.write_str("masked server frame"),
            ProtocolError::FragmentedControl => f.write_str("fragmented control frame"),
            ProtocolError::ControlTooLong => f.write_str("control frame over 125 bytes"),
            ProtocolError::LengthOverflow => f.write_str("64-bit length with the top bit set"),
            ProtocolError::TooBig => f.write_str("message over the size limit"),
            ProtocolError::UnexpectedContinuation => f.write_str("continuation without a message"),
            ProtocolError::ExpectedContinuation => {
                f.write_str("data frame inside a fragmented message")
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload_len: u64,
    pub header_len: usize,
}

/// Decodes a server frame header at the start of `buf`; `Ok(None)` when
/// `buf` holds only part of it.
pub fn parse_header(buf: &[u8]) -> Result<Option<Header>, ProtocolError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    if b0 & 0x70 != 0 {
        return Err(ProtocolError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(ProtocolError::ReservedOpCode(b0 & 0x0F))?;
    if b1 & 0x80 != 0 {
        return Err(ProtocolError::Masked);
    }
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(ProtocolError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(ProtocolError::ControlTooLong);
        }
    }
    let (header_len, payload_len) = match len7 {
        126 => match buf.get(2..4) {
            Some(&[a, b]) => (4, u64::from(u16::from_be_bytes([a, b]))),
            _ => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(bytes) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
                (10, len)
            }
            None => return Ok(None),
        },
        _ => (2, u64::from(len7)),
    };
    Ok(Some(Header {
        fin,
        opcode,
        payload_len,
        header_len,
    }))
}

/// A complete unit handed out by the [`Decoder`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole text message (UTF-8 is not checked: the tool only looks
    /// for ASCII markers in it).
    Text(&'a [u8]),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    Close(&'a [u8]),
}

/// The state of a fragmented message being put back together.
struct Reassembly {
    opcode: Option<OpCode>,
    data: Vec<u8>,
    max_message: usize,
}

impl Reassembly {
    fn frame(
        &mut self,
        header: Header,
        payload: &[u8],
        on: &mut impl FnMut(Frame<'_>),
    ) -> Result<(), ProtocolError> {
        match (header.opcode, header.fin) {
            (OpCode::Ping, _) => on(Frame::Ping(payload)),
            (OpCode::Pong, _) => on(Frame::Pong(payload)),
            (OpCode::Close, _) => on(Frame::Close(payload)),
            (OpCode::Text | OpCode::Binary, _) if self.opcode.is_some() => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            (OpCode::Text, true) => on(Frame::Text(payload)),
            (OpCode::Binary, true) => on(Frame::Binary(payload)),
            (opcode @ (OpCode::Text | OpCode::Binary), false) => {
                self.opcode = Some(opcode);
                self.data.clear();
                self.data.extend_from_slice(payload);
            }
            (OpCode::Continuation, fin) => {
                let opcode = self.opcode.ok_or(ProtocolError::UnexpectedContinuation)?;
                if self.data.len() + payload.len() > self.max_message {
                    return Err(ProtocolError::TooBig);
                }
                self.data.extend_from_slice(payload);
                if fin {
                    self.opcode = None;
                    if opcode == OpCode::Text {
                        on(Frame::Text(&self.data));
                    } else {
                        on(Frame::Binary(&self.data));
                    }
                    self.data.clear();
                    if self.data.capacity() > 1 << 20 {
                        self.data = Vec::new();
                    }
                }
            }
        }
        Ok(())
    }
}

/// Decodes every complete frame in `buf`; returns how many bytes it used.
fn decode_frames(
    state: &mut Reassembly,
    buf: &[u8],
    on: &mut impl FnMut(Frame<'_>),
) -> Result<usize, ProtocolError> {
    let mut used = 0;
    while let Some(header) = parse_header(&buf[used..])? {
        let payload_len = usize::try_from(header.payload_len)
            .ok()
            .filter(|&n| n <= state.max_message)
            .ok_or(ProtocolError::TooBig)?;
        let start = used + header.header_len;
        let Some(payload) = buf.get(start..start + payload_len) else {
            break;
        };
        state.frame(header, payload, on)?;
        used = start + payload_len;
    }
    Ok(used)
}

/// Turns a byte stream from a server into frames.
pub struct Decoder {
    /// Bytes of an incomplete frame carried over between reads.
    pending: Vec<u8>,
    reassembly: Reassembly,
}

impl Decoder {
    /// `max_message` bounds a single frame and a reassembled message.
    pub fn new(max_message: usize) -> Decoder {
        Decoder {
            pending: Vec::new(),
            reassembly: Reassembly {
                opcode: None,
                data: Vec::new(),
                max_message,
            },
        }
    }

    /// Feeds the next bytes of the stream, calling `on` for each complete
    /// message or control frame. Input is parsed in place; only the tail
    /// of an unfinished frame is copied.
    pub fn feed(
        &mut self,
        input: &[u8],
        mut on: impl FnMut(Frame<'_>),
    ) -> Result<(), ProtocolError> {
        if self.pending.is_empty() {
            let used = decode_frames(&mut self.reassembly, input, &mut on)?;
            self.pending.extend_from_slice(&input[used..]);
        } else {
            self.pending.extend_from_slice(input);
            let used = decode_frames(&mut self.reassembly, &self.pending, &mut on)?;
            self.pending.drain(..used);
            if self.pending.is_empty() && self.pending.capacity() > 1 << 20 {
                self.pending = Vec::new();
            }
        }
        Ok(())
    }
}

/// Appends one masked, unfragmented client frame to `out` (§5.3: every
/// client frame is masked).
pub fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    wschat::protocol::frame::encode_client_frame_into(out, 0x80 | opcode.bits(), payload, mask);
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::protocol::frame::{apply_mask, decode_header};

    /// Feeds `input` in the given pieces and records what comes out.
    fn run(pieces: &[&[u8]]) -> Result<Vec<(char, Vec<u8>)>, ProtocolError> {
        let mut decoder = Decoder::new(1 << 20);
        let mut seen = Vec::new();
        for piece in pieces {
            decoder.feed(piece, |frame| {
                seen.push(match frame {
                    Frame::Text(d) => ('T', d.to_vec()),
                    Frame::Binary(d) => ('B', d.to_vec()),
                    Frame::Ping(d) => ('i', d.to_vec()),
                    Frame::Pong(d) => ('o', d.to_vec()),
                    Frame::Close(d) => ('C', d.to_vec()),
                })
            })?;
        }
        Ok(seen)
    }

    /// Every two-piece split, plus byte by byte, gives the same result
    /// as the whole input.
    fn assert_split_invariant(input: &[u8]) -> Vec<(char, Vec<u8>)> {
        let whole = run(&[input]).expect("valid stream");
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            assert_eq!(run(&[a, b]).expect("valid stream"), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(&bytes).expect("valid stream"), whole, "byte by byte");
        whole
    }

    fn text(s: &str) -> (char, Vec<u8>) {
        ('T', s.as_bytes().to_vec())
    }

    /// §5.7: "A single-frame unmasked text message".
    #[test]
    fn rfc_unmasked_hello() {
        let seen = assert_split_invariant(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
        assert_eq!(seen, [text("Hello")]);
    }

    /// §5.7: "A fragmented unmasked text message", with an unmasked ping
    /// between the fragments (control frames may be interleaved, §5.4).
    #[test]
    fn rfc_fragmented_hello_with_ping_inside() {
        let stream = [
            0x01, 0x03, 0x48, 0x65, 0x6c, // "Hel"
            0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f, // ping "Hello"
            0x80, 0x02, 0x6c, 0x6f, // "lo"
        ];
        let seen = assert_split_invariant(&stream);
        assert_eq!(seen, [('i', b"Hello".to_vec()), text("Hello")]);
    }

    #[test]
    fn several_frames_in_one_read() {
        let mut stream = vec![0x81, 0x02, b'h', b'i'];
        stream.extend_from_slice(&[0x8A, 0x00]); // empty pong
        stream.extend_from_slice(&[0x82, 0x7E, 0x01, 0x00]); // 256-byte binary
        stream.extend((0..=255u8).collect::<Vec<_>>());
        stream.extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]); // close 1000
        let seen = assert_split_invariant(&stream);
        assert_eq!(
            seen,
            [
                text("hi"),
                ('o', vec![]),
                ('B', (0..=255u8).collect()),
                ('C', vec![0x03, 0xE8])
            ]
        );
    }

    /// §5.7: the 64 KiB binary message, whose length takes 64 bits.
    #[test]
    fn rfc_64_kib_binary_in_arbitrary_pieces() {
        let mut stream = vec![0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        stream.extend(std::iter::repeat_n(0xAB, 65536));
        let whole = run(&[&stream]).unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].1.len(), 65536);
        for piece in [1, 3, 9, 10, 11, 4096, 65535] {
            let pieces: Vec<&[u8]> = stream.chunks(piece).collect();
            assert_eq!(run(&pieces).unwrap(), whole, "pieces of {piece}");
        }
    }

    #[test]
    fn partial_headers_need_more() {
        let header = [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00];
        for cut in 0..header.len() {
            assert_eq!(parse_header(&header[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            parse_header(&header),
            Ok(Some(Header {
                fin: true,
                opcode: OpCode::Binary,
                payload_len: 65536,
                header_len: 10
            }))
        );
    }

    #[test]
    fn violations_are_reported() {
        let cases: [(&[u8], ProtocolError); 9] = [
            (
                &[0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0],
                ProtocolError::Masked,
            ),
            (&[0xC1, 0x00], ProtocolError::ReservedBits),
            (&[0x83, 0x00], ProtocolError::ReservedOpCode(3)),
            (&[0x09, 0x00], ProtocolError::FragmentedControl),
            (&[0x89, 0x7E, 0x00, 0x7E], ProtocolError::ControlTooLong),
            (&[0x80, 0x00], ProtocolError::UnexpectedContinuation),
            (
                &[0x01, 0x00, 0x81, 0x00],
                ProtocolError::ExpectedContinuation,
            ),
            (
                &[0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0],
                ProtocolError::LengthOverflow,
            ),
            (
                &[0x82, 0x7F, 0, 0, 0, 0, 0x10, 0, 0, 0],
                ProtocolError::TooBig,
            ),
        ];
        for (bytes, error) in cases {
            assert_eq!(run(&[bytes]), Err(error), "{bytes:02x?}");
        }
    }

    #[test]
    fn reassembled_message_over_the_limit_is_refused() {
        let mut decoder = Decoder::new(4);
        let result = decoder.feed(
            &[0x01, 0x03, b'a', b'b', b'c', 0x80, 0x02, b'd', b'e'],
            |_| {},
        );
        assert_eq!(result, Err(ProtocolError::TooBig));
    }

    /// §5.7: the masked "Hello" with key 37 fa 21 3d.
    #[test]
    fn rfc_masked_hello_is_what_we_write() {
        let mut out = vec![];
        write_frame(&mut out, OpCode::Text, b"Hello", [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }

    #[test]
    fn written_frames_pass_the_server_decoder() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = vec![];
            write_frame(&mut out, OpCode::Binary, &payload, [9, 8, 7, 6]);
            let (header, n) = decode_header(&out).unwrap().unwrap();
            assert_eq!(header.payload_len, len as u64);
            assert_eq!(header.opcode, OpCode::Binary);
            let mut body = out[n..].to_vec();
            apply_mask(&mut body, header.mask.unwrap(), 0);
            assert_eq!(body, payload);
        }
    }
}
