//! The frame header decoder, the header encoder and masking.
//!
//! Input: arbitrary bytes, decoded as a client frame header; the bytes
//! after the header are the payload.
//!
//! Invariants:
//! - `Ok(Some((h, n)))`: `n <= input.len()`, `n` is 6, 8 or 14 as the
//!   7-bit length says; the fields are the bits on the wire (FIN, opcode,
//!   no RSV, the mask = the 4 bytes before the payload, the length); a
//!   control frame has FIN and at most 125 bytes; a 64-bit length has its
//!   top bit clear; every shorter prefix decodes as `Ok(None)` and every
//!   longer input decodes the same.
//! - `Ok(None)` only for fewer than 14 bytes; `Err` is the same for any
//!   longer input and every prefix is `Ok(None)` or the same `Err`.
//! - Re-encoding the header in the server form (`encode_header`, unmasked)
//!   uses the minimal length encoding and is refused by the decoder as
//!   unmasked; the same header with the mask bit and key added decodes to
//!   the same fields.
//! - `apply_mask` is bytewise XOR with the key rotated by the offset;
//!   twice is the identity; unmasking in two pieces at any offset equals
//!   unmasking whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::frame::{
    apply_mask, decode_header, encode_header, FrameError, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD,
    MAX_HEADER_LEN, MAX_SERVER_HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_header(data);
    match decoded {
        Ok(Some((h, n))) => {
            check_header(data, &h, n);
            for k in 0..n {
                assert_eq!(decode_header(&data[..k]), Ok(None), "prefix of {k} bytes");
            }
            assert_eq!(decode_header(&data[..n]), decoded, "the header alone");
            check_reencode(&h);
            let payload = &data[n..];
            check_mask(payload, h.mask.unwrap(), data.first().copied().unwrap_or(0));
        }
        Ok(None) => {
            assert!(
                data.len() < MAX_HEADER_LEN,
                "{} bytes and no header",
                data.len()
            );
        }
        Err(e) => {
            check_error(data, e);
            for k in 0..data.len().min(MAX_HEADER_LEN) {
                let r = decode_header(&data[..k]);
                assert!(
                    r == Ok(None) || r == Err(e),
                    "prefix of {k}: {r:?} vs {e:?}"
                );
            }
            assert_eq!(
                decode_header(&data[..data.len().min(MAX_HEADER_LEN)]),
                Err(e)
            );
        }
    }
    // Masking on any bytes with a key taken from the input.
    if data.len() >= 5 {
        let mask = [data[0], data[1], data[2], data[3]];
        check_mask(&data[5..], mask, data[4]);
    }
    // Encoding any length, not just decodable ones.
    if data.len() >= 9 {
        let len = u64::from_le_bytes(data[1..9].try_into().unwrap()) >> (data[0] % 63 + 1);
        let opcode = [OpCode::Continuation, OpCode::Text, OpCode::Binary][usize::from(data[0] % 3)];
        let h = FrameHeader {
            fin: data[0] & 0x80 != 0,
            rsv: 0,
            opcode,
            mask: Some([data[1], data[2], data[3], data[4]]),
            payload_len: len,
        };
        check_reencode(&h);
    }
});

fn check_header(data: &[u8], h: &FrameHeader, n: usize) {
    assert!(
        n <= data.len(),
        "header length {n} past the input's {}",
        data.len()
    );
    let len7 = data[1] & 0x7F;
    let want = match len7 {
        126 => 8,
        127 => 14,
        _ => 6,
    };
    assert_eq!(n, want, "header length for 7-bit length {len7}");
    assert_eq!(h.fin, data[0] & 0x80 != 0);
    assert_eq!(h.rsv, 0, "RSV bits accepted");
    assert_eq!(h.opcode.bits(), data[0] & 0x0F);
    assert_eq!(OpCode::from_bits(h.opcode.bits()), Some(h.opcode));
    assert_ne!(data[1] & 0x80, 0, "unmasked header accepted");
    assert_eq!(
        h.mask,
        Some([data[n - 4], data[n - 3], data[n - 2], data[n - 1]])
    );
    let len = match len7 {
        126 => u64::from(u16::from_be_bytes([data[2], data[3]])),
        127 => u64::from_be_bytes(data[2..10].try_into().unwrap()),
        l => u64::from(l),
    };
    assert_eq!(h.payload_len, len);
    assert_eq!(
        h.payload_len >> 63,
        0,
        "64-bit length with the top bit set accepted"
    );
    if h.opcode.is_control() {
        assert!(h.fin, "fragmented control frame accepted");
        assert!(
            h.payload_len <= MAX_CONTROL_PAYLOAD as u64,
            "control frame of {len} bytes accepted"
        );
    }
}

fn check_error(data: &[u8], e: FrameError) {
    let (b0, b1) = (data[0], data[1]);
    let op = b0 & 0x0F;
    let control = op & 0x8 != 0;
    let expect = if OpCode::from_bits(op).is_none() {
        FrameError::ReservedOpCode(op)
    } else if b0 & 0x70 != 0 {
        FrameError::ReservedBits
    } else if control && b0 & 0x80 == 0 {
        FrameError::FragmentedControl
    } else if control && b1 & 0x7F > 125 {
        FrameError::ControlTooLong
    } else if b1 & 0x80 == 0 {
        FrameError::Unmasked
    } else {
        FrameError::LengthOverflow
    };
    assert_eq!(e, expect, "error for {:02x?}", &data[..data.len().min(14)]);
    if e == FrameError::LengthOverflow {
        assert_eq!(b1 & 0x7F, 127);
        assert_ne!(data[2] & 0x80, 0);
    }
}

fn check_reencode(h: &FrameHeader) {
    let mut buf = [0u8; MAX_SERVER_HEADER_LEN];
    let len = usize::try_from(h.payload_len).unwrap();
    let server = encode_header(h.fin, h.opcode, len, &mut buf).to_vec();
    assert_eq!(server[0], (u8::from(h.fin) << 7) | h.opcode.bits());
    assert_eq!(server[1] & 0x80, 0, "server header is masked");
    // Minimal length encoding (§5.2).
    let expect_len = if h.payload_len < 126 {
        2
    } else if h.payload_len <= 0xFFFF {
        4
    } else {
        10
    };
    assert_eq!(
        server.len(),
        expect_len,
        "length form for {}",
        h.payload_len
    );
    // The decoder refuses it as unmasked (control frames from the decoder
    // are valid, so no earlier rule applies).
    if !h.opcode.is_control() || (h.fin && h.payload_len <= 125) {
        assert_eq!(decode_header(&server), Err(FrameError::Unmasked));
    }
    // The masked equivalent decodes to the same fields.
    let mask = h.mask.unwrap_or([1, 2, 3, 4]);
    let mut client = server.clone();
    client[1] |= 0x80;
    client.extend_from_slice(&mask);
    if h.opcode.is_control() && h.payload_len > 125 {
        assert_eq!(decode_header(&client), Err(FrameError::ControlTooLong));
        return;
    }
    let (back, n) = decode_header(&client)
        .expect("masked re-encoding decodes")
        .expect("masked re-encoding is complete");
    assert_eq!(n, client.len());
    assert_eq!(
        (back.fin, back.opcode, back.payload_len),
        (h.fin, h.opcode, h.payload_len)
    );
    assert_eq!(back.mask, Some(mask));
    assert_eq!(back.rsv, 0);
}

fn check_mask(payload: &[u8], mask: [u8; 4], selector: u8) {
    let offset = usize::from(selector);
    // Reference: bytewise XOR with the key rotated by the offset.
    let reference: Vec<u8> = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[(i + offset) % 4])
        .collect();
    let mut whole = payload.to_vec();
    apply_mask(&mut whole, mask, offset);
    assert_eq!(whole, reference, "apply_mask at offset {offset}");
    let mut twice = whole.clone();
    apply_mask(&mut twice, mask, offset);
    assert_eq!(twice, payload, "masking twice is the identity");
    // Two pieces, split anywhere the input says.
    let split = if payload.is_empty() {
        0
    } else {
        usize::from(selector) * 7919 % (payload.len() + 1)
    };
    let mut pieces = payload.to_vec();
    let (a, b) = pieces.split_at_mut(split);
    apply_mask(a, mask, 0);
    apply_mask(b, mask, split);
    let mut from_zero = payload.to_vec();
    apply_mask(&mut from_zero, mask, 0);
    assert_eq!(
        pieces, from_zero,
        "unmasking split at {split} differs from whole"
    );
}
