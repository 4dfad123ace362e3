//! The RFC 6455 base framing protocol (§5): frame headers, masking and
//! close codes, as pure functions over byte slices.
//!
//! Nothing here owns a buffer or a socket. [`decode_header`] looks at the
//! first bytes of a slice and either says how long the header is, says it
//! needs more bytes (`Ok(None)`), or names the protocol violation. Payloads
//! are never copied here: the caller unmasks them in place with
//! [`apply_mask`] and decides where they go.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

// Lengths here come from peers: none may be cut short by an `as` cast.
#![deny(clippy::cast_possible_truncation)]

use std::fmt;

/// The longest possible header: 2 fixed bytes, 8 bytes of extended
/// length, 4 bytes of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// The longest header a server writes (servers never mask, §5.1).
pub const MAX_SERVER_HEADER_LEN: usize = 10;

/// §5.5: "All control frames MUST have a payload length of 125 bytes or less".
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The frame types of §5.2 and §11.8. Reserved values are rejected while
/// decoding, so an `OpCode` is always one the protocol defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    /// Maps the 4-bit opcode field; `None` for the reserved values
    /// 0x3–0x7 and 0xB–0xF.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xA => Some(OpCode::Pong),
            _ => None,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// §5.5: "Control frames are identified by opcodes where the most
    /// significant bit of the opcode is 1."
    pub fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A decoded frame header. The payload follows it on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub fin: bool,
    /// The three RSV bits, right-aligned (RSV1 = 0b100).
    pub rsv: u8,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
}

/// Why a header cannot be accepted. Each maps to the close code the RFC
/// names for it through [`FrameError::close_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// RSV bits set with no extension negotiated (§5.2: "the receiving
    /// endpoint MUST _Fail the WebSocket Connection_").
    ReservedBits,
    /// Opcode 0x3–0x7 or 0xB–0xF.
    ReservedOpCode(u8),
    /// §5.5: "Control frames themselves MUST NOT be fragmented."
    FragmentedControl,
    /// §5.5: control payloads are at most 125 bytes.
    ControlTooLong,
    /// §5.1: "The server MUST close the connection upon receiving a frame
    /// that is not masked."
    Unmasked,
    /// §5.2: "the most significant bit MUST be 0" in a 64-bit length.
    LengthOverflow,
}

impl FrameError {
    pub fn close_code(self) -> CloseCode {
        CloseCode::PROTOCOL_ERROR
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::ReservedBits => f.write_str("RSV bits set without an extension"),
            FrameError::ReservedOpCode(op) => write!(f, "reserved opcode {op:#x}"),
            FrameError::FragmentedControl => f.write_str("fragmented control frame"),
            FrameError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            FrameError::Unmasked => f.write_str("unmasked client frame"),
            FrameError::LengthOverflow => f.write_str("64-bit length with the top bit set"),
        }
    }
}

/// Decodes the header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a header; otherwise the
/// header and its length in bytes. The rules checked here are the ones a
/// header alone can break; sequence rules (continuations, UTF-8) belong to
/// the connection.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    decode_header_with(buf, 0)
}

/// RSV1 in [`FrameHeader::rsv`]: "Per-Message Compressed" once
/// `permessage-deflate` is agreed (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// [`decode_header`] for a connection that negotiated extensions using
/// the RSV bits in `allowed` (RFC 6455 §5.2: "MUST be 0 unless an
/// extension is negotiated that defines meanings for non-zero values").
/// Which frames may carry them is the connection's rule (RFC 7692 §6.1).
pub fn decode_header_with(
    buf: &[u8],
    allowed: u8,
) -> Result<Option<(FrameHeader, usize)>, FrameError> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(FrameError::ReservedOpCode(b0 & 0x0F))?;
    if rsv & !allowed != 0 {
        return Err(FrameError::ReservedBits);
    }
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7F;
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if usize::from(len7) > MAX_CONTROL_PAYLOAD {
            return Err(FrameError::ControlTooLong);
        }
    }
    if !masked {
        return Err(FrameError::Unmasked);
    }
    let ext_len = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext_len + 4;
    if buf.len() < header_len {
        return Ok(None);
    }
    let payload_len = match ext_len {
        2 => u64::from(u16::from_be_bytes([buf[2], buf[3]])),
        8 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&buf[2..10]);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(FrameError::LengthOverflow);
            }
            len
        }
        _ => u64::from(len7),
    };
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&buf[2 + ext_len..header_len]);
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask: Some(mask),
        payload_len,
    };
    Ok(Some((header, header_len)))
}

/// Writes an unmasked server frame header for a payload of `payload_len`
/// bytes, using the minimal length encoding (§5.2: "the minimal number of
/// bytes MUST be used to encode the length"). Returns the bytes to send.
pub fn encode_header(
    fin: bool,
    opcode: OpCode,
    payload_len: usize,
    out: &mut [u8; MAX_SERVER_HEADER_LEN],
) -> &[u8] {
    encode_header_with(fin, 0, opcode, payload_len, out)
}

/// [`encode_header`] with the RSV bits `rsv` set (RSV1 for a compressed
/// message, RFC 7692 §6).
pub fn encode_header_with(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload_len: usize,
    out: &mut [u8; MAX_SERVER_HEADER_LEN],
) -> &[u8] {
    out[0] = (u8::from(fin) << 7) | ((rsv & 0x7) << 4) | opcode.bits();
    // Each form is picked by converting, not casting, so no length is ever
    // written cut short (on x86-64, the same instructions the casts made).
    let n = if let Ok(len @ 0..=125) = u8::try_from(payload_len) {
        out[1] = len;
        2
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        // A usize is at most 64 bits on every target Rust supports.
        let len = u64::try_from(payload_len).expect("a usize fits in a u64");
        out[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    &out[..n]
}

/// Encodes a whole unfragmented server frame into one new buffer: the
/// form every outgoing message takes before it is shared among recipients.
/// Splits an unmasked, unfragmented frame this server encoded into its
/// first byte (FIN, RSV, opcode) and its payload; `None` if `frame` is
/// not one (shorter than its header says).
pub fn split_server_frame(frame: &[u8]) -> Option<(u8, &[u8])> {
    let [b0, b1, ..] = *frame else {
        return None;
    };
    let header_len = match b1 & 0x7F {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    frame.get(header_len..).map(|payload| (b0, payload))
}

pub fn encode_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut header = [0u8; MAX_SERVER_HEADER_LEN];
    let head = encode_header(true, opcode, payload.len(), &mut header);
    let mut frame = Vec::with_capacity(head.len() + payload.len());
    frame.extend_from_slice(head);
    frame.extend_from_slice(payload);
    frame
}

/// Encodes a Close frame carrying `code` and `reason`. `None` sends the
/// empty body (§5.5.1: the body is optional).
pub fn encode_close(code: Option<CloseCode>, reason: &str) -> Vec<u8> {
    match code {
        None => encode_frame(OpCode::Close, &[]),
        Some(code) => {
            let mut body = Vec::with_capacity(2 + reason.len());
            body.extend_from_slice(&code.0.to_be_bytes());
            // Keep the frame within the control limit, cutting on a char boundary.
            let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            body.extend_from_slice(&reason.as_bytes()[..end]);
            encode_frame(OpCode::Close, &body)
        }
    }
}

/// XORs `buf` with the masking key (§5.3), where `offset` is the position
/// of `buf[0]` within the frame's payload (so a payload can be unmasked in
/// pieces as it arrives).
///
/// Works a word at a time: the key is rotated to the offset once and
/// applied to 8-byte chunks, which the compiler vectorises.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let key8 = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word) ^ key8;
        chunk.copy_from_slice(&x.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// A close status code (§7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// §7.4.1: "designated for use in applications expecting a status code
    /// to indicate that no status code was actually present." Never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// §7.4.1: the connection closed without a Close frame. Never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);

    /// Whether a peer may put this code in a Close frame. 1005, 1006 and
    /// 1015 are reserved for local reporting (§7.4.1: "MUST NOT be set as
    /// a status code in a Close control frame by an endpoint"); 1004 is
    /// reserved; 1012–1014 were registered with IANA after the RFC;
    /// 3000–4999 belong to libraries and applications; the rest of
    /// 0–2999 is unassigned.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (FrameHeader, usize) {
        decode_header(bytes)
            .expect("valid header")
            .expect("complete header")
    }

    /// §5.7: "A single-frame masked text message" containing "Hello".
    #[test]
    fn rfc_example_masked_hello() {
        let mut frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode(&frame);
        assert_eq!(n, 6);
        assert!(h.fin);
        assert_eq!(h.opcode, OpCode::Text);
        assert_eq!(h.payload_len, 5);
        apply_mask(&mut frame[n..], h.mask.unwrap(), 0);
        assert_eq!(&frame[n..], b"Hello");
    }

    /// §5.7: the unmasked "Hello", which is what a server sends.
    #[test]
    fn rfc_example_unmasked_hello_encodes() {
        assert_eq!(
            encode_frame(OpCode::Text, b"Hello"),
            [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
        );
    }

    /// §5.7: a server must reject the unmasked form when it receives it.
    #[test]
    fn unmasked_client_frame_is_rejected() {
        let frame = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(decode_header(&frame), Err(FrameError::Unmasked));
    }

    /// §5.7: "Unmasked Ping request and masked Ping response" (the masked
    /// pong form, which is what a client sends).
    #[test]
    fn rfc_example_masked_pong() {
        let mut frame = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = decode(&frame);
        assert_eq!(h.opcode, OpCode::Pong);
        apply_mask(&mut frame[n..], h.mask.unwrap(), 0);
        assert_eq!(&frame[n..], b"Hello");
    }

    /// §5.7: "256 bytes binary message in a single unmasked frame" and the
    /// 64 KiB one: the 16- and 64-bit length forms.
    #[test]
    fn rfc_example_extended_lengths_encode() {
        let mut out = [0u8; MAX_SERVER_HEADER_LEN];
        assert_eq!(
            encode_header(true, OpCode::Binary, 256, &mut out),
            [0x82, 0x7E, 0x01, 0x00]
        );
        assert_eq!(
            encode_header(true, OpCode::Binary, 65536, &mut out),
            [0x82, 0x7F, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00]
        );
        assert_eq!(
            encode_header(true, OpCode::Binary, 125, &mut out),
            [0x82, 0x7D]
        );
        assert_eq!(
            encode_header(true, OpCode::Binary, 126, &mut out),
            [0x82, 0x7E, 0x00, 0x7E]
        );
        assert_eq!(
            encode_header(true, OpCode::Binary, 65535, &mut out),
            [0x82, 0x7E, 0xFF, 0xFF]
        );
    }

    /// §5.7: "A fragmented unmasked text message", first fragment header.
    #[test]
    fn encode_fragment_without_fin() {
        let mut out = [0u8; MAX_SERVER_HEADER_LEN];
        assert_eq!(
            encode_header(false, OpCode::Text, 3, &mut out),
            [0x01, 0x03]
        );
    }

    #[test]
    fn masked_extended_lengths_decode() {
        let (h, n) = decode(&[0x82, 0xFE, 0x01, 0x00, 1, 2, 3, 4]);
        assert_eq!((h.payload_len, n), (256, 8));
        let (h, n) = decode(&[
            0x82, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4,
        ]);
        assert_eq!((h.payload_len, n), (65536, 14));
        assert_eq!(h.mask, Some([1, 2, 3, 4]));
    }

    #[test]
    fn partial_header_needs_more_at_every_boundary() {
        let frame = [
            0x82, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 1, 2, 3, 4,
        ];
        for cut in 0..frame.len() {
            assert_eq!(decode_header(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(decode_header(&frame).unwrap().is_some());
    }

    #[test]
    fn top_bit_of_64_bit_length_is_rejected() {
        let frame = [
            0x82, 0xFF, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 1, 2, 3, 4,
        ];
        assert_eq!(decode_header(&frame), Err(FrameError::LengthOverflow));
    }

    #[test]
    fn rsv1_passes_only_when_allowed() {
        // RFC 7692 §7.2.3.1's compressed "Hello", masked with zeros.
        let frame = [0xC1, 0x87, 0, 0, 0, 0];
        assert_eq!(decode_header(&frame), Err(FrameError::ReservedBits));
        let (h, n) = decode_header_with(&frame, RSV1).unwrap().unwrap();
        assert_eq!(
            (h.rsv, h.opcode, h.payload_len, n),
            (RSV1, OpCode::Text, 7, 6)
        );
        // RSV2 and RSV3 stay reserved.
        assert_eq!(
            decode_header_with(&[0xE1, 0x80, 0, 0, 0, 0], RSV1),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode_header_with(&[0xD1, 0x80, 0, 0, 0, 0], RSV1),
            Err(FrameError::ReservedBits)
        );
    }

    #[test]
    fn server_frames_split_into_first_byte_and_payload() {
        let hello = encode_frame(OpCode::Text, b"Hello");
        assert_eq!(split_server_frame(&hello), Some((0x81, &b"Hello"[..])));
        let long = encode_frame(OpCode::Binary, &[7u8; 300]);
        assert_eq!(split_server_frame(&long), Some((0x82, &[7u8; 300][..])));
        assert_eq!(split_server_frame(&[0x81, 0x7E, 0x01]), None);
        assert_eq!(split_server_frame(&[0x81]), None);
    }

    #[test]
    fn compressed_header_sets_rsv1() {
        let mut out = [0u8; MAX_SERVER_HEADER_LEN];
        // §7.2.3.1: "0xc1 0x07 0xf2 0x48 0xcd 0xc9 0xc9 0x07 0x00".
        assert_eq!(
            encode_header_with(true, RSV1, OpCode::Text, 7, &mut out),
            [0xC1, 0x07]
        );
    }

    #[test]
    fn reserved_bits_and_opcodes_are_rejected() {
        assert_eq!(
            decode_header(&[0xC1, 0x80, 0, 0, 0, 0]),
            Err(FrameError::ReservedBits)
        );
        assert_eq!(
            decode_header(&[0x91, 0x80, 0, 0, 0, 0]),
            Err(FrameError::ReservedBits)
        );
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                decode_header(&[0x80 | op, 0x80, 0, 0, 0, 0]),
                Err(FrameError::ReservedOpCode(op))
            );
        }
    }

    #[test]
    fn control_frame_rules() {
        // Ping without FIN.
        assert_eq!(
            decode_header(&[0x09, 0x80, 0, 0, 0, 0]),
            Err(FrameError::FragmentedControl)
        );
        // Ping announcing 126 bytes (16-bit length form).
        assert_eq!(
            decode_header(&[0x89, 0xFE, 0x00, 0x7E, 0, 0, 0, 0]),
            Err(FrameError::ControlTooLong)
        );
        // 125 bytes is the most a control frame may carry.
        let (h, _) = decode(&[0x89, 0xFD, 0, 0, 0, 0]);
        assert_eq!(h.payload_len, 125);
    }

    #[test]
    fn mask_at_any_offset_matches_bytewise_xor() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        let original: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut whole = original.clone();
        apply_mask(&mut whole, mask, 0);
        for (i, (&m, &o)) in whole.iter().zip(&original).enumerate() {
            assert_eq!(m, o ^ mask[i % 4]);
        }
        // Unmasking in arbitrary pieces gives the same result.
        for split in [1usize, 3, 7, 8, 9, 500, 999] {
            let mut pieces = original.clone();
            let (a, b) = pieces.split_at_mut(split);
            apply_mask(a, mask, 0);
            apply_mask(b, mask, split);
            assert_eq!(pieces, whole, "split at {split}");
        }
    }

    #[test]
    fn close_frame_encoding() {
        assert_eq!(encode_close(None, ""), [0x88, 0x00]);
        assert_eq!(
            encode_close(Some(CloseCode::NORMAL), "bye"),
            [0x88, 0x05, 0x03, 0xE8, b'b', b'y', b'e']
        );
        let long = "é".repeat(100);
        let frame = encode_close(Some(CloseCode::GOING_AWAY), &long);
        assert!(frame.len() - 2 <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn close_codes_allowed_on_the_wire() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(ok).is_valid_on_wire(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_valid_on_wire(), "{bad}");
        }
    }
}
