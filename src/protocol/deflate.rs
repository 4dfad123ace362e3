//! The payload transformation of `permessage-deflate` (RFC 7692 §7.2)
//! without context takeover, sans-IO: a message's bytes in, its
//! compressed bytes out, and back, each message on its own.
//!
//! Both `server_no_context_takeover` and `client_no_context_takeover` are
//! always agreed ([`super::extensions`]), so no LZ77 window outlives a
//! message: a [`Compressor`] and an [`Inflater`] are reset between
//! messages, can serve any connection, and an idle connection needs
//! neither.
//!
//! # Compressing (§7.2.1)
//!
//! "1. Compress all the octets of the payload of the message using
//! DEFLATE. 2. If the resulting data does not end with an empty DEFLATE
//! block with no compression (the "BTYPE" bits are set to 00), append an
//! empty DEFLATE block with no compression to the tail end. 3. Remove 4
//! octets (that are 0x00 0x00 0xff 0xff) from the tail end." A sync flush
//! ends the data with exactly that empty stored block; should a backend
//! ever not, the message is written as stored blocks instead, which is
//! always valid.
//!
//! # Inflating (§7.2.2)
//!
//! "1. Append 4 octets of 0x00 0x00 0xff 0xff to the tail end of the
//! payload of the message. 2. Decompress the resulting data using
//! DEFLATE." The [`Inflater`] takes a message's fragments as they come and
//! inflates into an output it grows itself, in steps, never past the
//! limit it was given: a decompression bomb (a few KiB that inflate to
//! GiB) is refused with [`InflateError::TooBig`] once the limit is
//! reached, before memory grows further. At the end it also appends an
//! empty final stored block, and the data must end there: data cut short
//! inside a block is invalid, not a shorter message.
//!
//! # Close codes
//!
//! RFC 7692 names no close code for a payload that is not valid DEFLATE.
//! RFC 6455 §7.4.1 has the one that fits: "1007 indicates that an endpoint
//! is terminating the connection because it has received data within a
//! message that was not consistent with the type of the message"; the
//! frames themselves were well formed, so 1002 ("protocol error") would
//! misdescribe it. ws (Node) also answers 1007. A message that inflates
//! past the limit is 1009 ("a message that is too big for it to
//! process"), as for an uncompressed one.
//!
//! # The backend, by measurement
//!
//! `cargo bench --bench deflate`, 1 KiB of chat-like text and 64 KiB of
//! the same, on this machine (2 cores, heavily shared while measured:
//! the absolute times are several times what an idle machine gives; the
//! libdeflate rows, run in both passes, show the two passes saw about
//! the same load). Criterion medians, 2026-12-02:
//!
//! | work | flate2 + miniz_oxide | flate2 + zlib-rs | libdeflate (one-shot) |
//! |---|---|---|---|
//! | compress 1 KiB, level 1 | 48 µs, 410 B | 31 µs, 496 B | 24 µs, 369 B |
//! | compress 1 KiB, level 6 | 78 µs, 368 B | 66 µs, 367 B | 42–53 µs, 370 B |
//! | compress 64 KiB, level 1 | 0.70 ms, 19.2 KB | 0.49 ms, 24.7 KB | 0.75–1.13 ms, 16.1 KB |
//! | compress 64 KiB, level 6 | 13.1 ms, 12.7 KB | 6.9 ms, 12.6 KB | 2.4–3.7 ms, 13.4 KB |
//! | inflate 1 KiB | 13.2 µs | 13.8 µs | 11.8–13.2 µs |
//! | inflate 64 KiB | 301 µs | 151 µs | 69 µs |
//! | one compressor made | 319 KB | 380 KB | (C heap, not counted) |
//! | one inflater made | 43 KB | 48 KB | (C heap, not counted) |
//!
//! A fresh compressor per message costs about 5–10% at 1 KiB (the
//! `-fresh` rows), hence [`Compressor`], kept by the loop and reset.
//!
//! The choice: flate2 on zlib-rs. It is faster than miniz_oxide at every
//! size but inflating 1 KiB (even), and it streams. libdeflate is faster
//! still, but one-shot: inflating needs the whole compressed message
//! buffered and an output buffer sized up front, and the inflated size is
//! not known before inflating, so the buffer is either the whole size
//! limit per message or a retry loop; the bounded, fragment-by-fragment
//! inflate below needs a streaming API. It would also bring C code into
//! the server. (Compressing, where the whole message is at hand,
//! libdeflate could serve later behind [`Compressor`] if its 1.3-2.8x at
//! level 6 matters; the bench keeps it as the yardstick. It ends every
//! message with a BFINAL block, which RFC 7692 §7.2.3.4 follows with one
//! more byte: on 1 KiB of chat text its frames come out 4 B longer than
//! zlib-rs' sync-flushed ones, as long as uWebSockets'.)

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::protocol::frame::CloseCode;

/// The bytes §7.2.1 removes from a compressed message and §7.2.2 puts
/// back: the LEN and NLEN of an empty stored block.
pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// An empty stored block with BFINAL set, appended after [`TAIL`] to
/// check that a message's data ends on a block boundary.
const FINAL_EMPTY_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];

/// The compression level (zlib's scale, 0–9). Level 6 (zlib's default):
/// at level 1 zlib-rs halves the time but its output is 35% larger at
/// 1 KiB and 97% larger at 64 KiB; a broadcast is compressed once for
/// all its recipients, so the bytes on the wire weigh more.
pub const LEVEL: u32 = 6;

/// The first step an inflated message grows by; later steps double it.
const FIRST_STEP: usize = 1024;

/// A deflate compressor reused for message after message, reset between
/// them (no context takeover). One is enough for a whole server: it
/// holds nothing between calls but its own tables.
pub struct Compressor {
    state: Compress,
}

impl fmt::Debug for Compressor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compressor").finish_non_exhaustive()
    }
}

impl Default for Compressor {
    fn default() -> Compressor {
        Compressor::new()
    }
}

impl Compressor {
    pub fn new() -> Compressor {
        Compressor::with_level(LEVEL)
    }

    /// A compressor at `level` (0–9; larger values are taken as 9).
    pub fn with_level(level: u32) -> Compressor {
        Compressor {
            // Raw deflate: no zlib header (§7.2.1 compresses with DEFLATE,
            // RFC 1951).
            state: Compress::new(Compression::new(level.min(9)), false),
        }
    }

    /// A compressor whose matches reach back at most `2^bits` bytes, for
    /// a peer that asked for `server_max_window_bits=bits` (RFC 7692
    /// §7.1.2.1), at level [`LEVEL`]. zlib has no 8-bit window for raw
    /// deflate (it takes 9 to 15), so for 8 the message is written as
    /// stored blocks (level 0), which reach back nowhere.
    pub fn for_window(bits: u8) -> Compressor {
        match bits {
            0..=8 => Compressor::with_level(0),
            _ => Compressor {
                state: Compress::new_with_window_bits(Compression::new(LEVEL), false, bits.min(15)),
            },
        }
    }

    /// Appends to `out` the compressed form of the message made of `parts`
    /// (concatenated), ready to be a frame's payload with RSV1 set.
    pub fn compress_into(&mut self, parts: &[&[u8]], out: &mut Vec<u8>) {
        let start = out.len();
        let total: usize = parts.iter().map(|p| p.len()).sum();
        // One reset per message, before it: a reset clears zlib's hash
        // table (64 KiB at the default memory level), which for a chat
        // message of 1 KiB costs as much as compressing it.
        self.state.reset();
        let ok = self.run(parts, total, out);
        if ok && out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        } else {
            out.truncate(start);
            stored_into(parts, out);
        }
    }

    /// A sync-flushed deflate stream of `parts`; `false` if the backend
    /// failed (it does not, given room to write).
    fn run(&mut self, parts: &[&[u8]], total: usize, out: &mut Vec<u8>) -> bool {
        // Text compresses to well under half; more room is made if not.
        out.reserve(total / 2 + 64);
        for part in parts {
            let mut input = *part;
            while !input.is_empty() {
                if out.capacity() == out.len() {
                    out.reserve(input.len() / 2 + 64);
                }
                let before = self.state.total_in();
                if self
                    .state
                    .compress_vec(input, out, FlushCompress::None)
                    .is_err()
                {
                    return false;
                }
                input = &input[consumed(before, self.state.total_in(), input.len())..];
            }
        }
        // Flush until the backend leaves room unused: all is written.
        loop {
            out.reserve(64);
            if self
                .state
                .compress_vec(&[], out, FlushCompress::Sync)
                .is_err()
            {
                return false;
            }
            if out.len() < out.capacity() {
                return true;
            }
        }
    }
}

/// Compresses one message with a fresh compressor (§7.2.1, the trailing
/// `00 00 ff ff` removed). A server compressing many messages keeps a
/// [`Compressor`] instead: making one allocates its tables.
pub fn compress(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Compressor::new().compress_into(&[payload], &mut out);
    out
}

/// The message as stored (uncompressed) DEFLATE blocks, each at most
/// 65,535 bytes, ending with the BTYPE bits of an empty stored block
/// whose LEN and NLEN (the [`TAIL`]) are left off, as §7.2.1 asks. RFC
/// 7692 §7.2.3.3 shows "Hello" this way.
fn stored_into(parts: &[&[u8]], out: &mut Vec<u8>) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    out.reserve(total + total / 65_535 * 5 + 6);
    let mut bytes = parts.iter().flat_map(|p| p.iter().copied()).peekable();
    while bytes.peek().is_some() {
        let block: Vec<u8> = bytes.by_ref().take(65_535).collect();
        let len = u16::try_from(block.len()).expect("a block is at most 65,535 bytes");
        out.push(0x00); // BFINAL 0, BTYPE 00, then up to the byte boundary
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out.push(0x00);
}

/// Input bytes a backend call consumed, from its running totals.
fn consumed(before: u64, after: u64, available: usize) -> usize {
    usize::try_from(after - before).map_or(available, |n| n.min(available))
}

/// Why a compressed message is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InflateError {
    /// Not valid DEFLATE data, or data that does not end where §7.2.2
    /// says it must.
    Invalid,
    /// It inflates to more than the limit.
    TooBig,
}

impl InflateError {
    /// The close code the connection fails with (see the module docs).
    pub fn close_code(self) -> CloseCode {
        match self {
            InflateError::Invalid => CloseCode::INVALID_PAYLOAD,
            InflateError::TooBig => CloseCode::MESSAGE_TOO_BIG,
        }
    }
}

impl fmt::Display for InflateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InflateError::Invalid => "invalid compressed data",
            InflateError::TooBig => "message over the size limit once inflated",
        })
    }
}

impl std::error::Error for InflateError {}

/// Inflates one compressed message at a time, fed its fragments as they
/// arrive, into at most `max` bytes. Reusable: [`Inflater::finish`] and
/// [`Inflater::reset`] make it ready for the next message.
pub struct Inflater {
    state: Decompress,
    out: Vec<u8>,
    max: usize,
    /// A block with BFINAL set was inflated: what follows is ignored.
    ended: bool,
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("inflated", &self.out.len())
            .field("max", &self.max)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Inflater {
    /// An inflater for messages of at most `max` inflated bytes.
    pub fn new(max: usize) -> Inflater {
        Inflater {
            state: Decompress::new(false),
            out: Vec::new(),
            max,
            ended: false,
        }
    }

    /// The limit on a message's inflated size.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes reserved for the inflated message: never more than
    /// [`Inflater::max`] (the allocator may round up).
    pub fn reserved(&self) -> usize {
        self.out.capacity()
    }

    /// The message inflated so far (for checking UTF-8 as it comes).
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// Inflates the next piece of the message's compressed payload.
    pub fn push(&mut self, compressed: &[u8]) -> Result<(), InflateError> {
        self.run(compressed)
    }

    /// Ends the message: §7.2.2's tail goes in, the data must end on a
    /// block boundary, and the inflated message comes out. The inflater
    /// is then ready for the next message.
    pub fn finish(&mut self) -> Result<Vec<u8>, InflateError> {
        let ended = self
            .run(&TAIL)
            .and_then(|()| self.run(&FINAL_EMPTY_BLOCK))
            .and_then(|()| self.ended.then_some(()).ok_or(InflateError::Invalid));
        let out = std::mem::take(&mut self.out);
        self.reset();
        ended.map(|()| out)
    }

    /// Drops the message in progress, if any.
    pub fn reset(&mut self) {
        self.state.reset(false);
        self.out = Vec::new();
        self.ended = false;
    }

    fn run(&mut self, mut input: &[u8]) -> Result<(), InflateError> {
        while !self.ended {
            let room = self.max - self.out.len().min(self.max);
            let (read, wrote, status) = if room == 0 {
                // Full: one byte more would be too many. Look for it in a
                // byte of stack, so the limit is never allocated past.
                let mut probe = [0u8; 1];
                let (read, wrote, status) = self.step(input, &mut probe)?;
                if wrote > 0 {
                    return Err(InflateError::TooBig);
                }
                (read, wrote, status)
            } else {
                if self.out.capacity() == self.out.len() {
                    let step = (2 * self.out.len())
                        .max(4 * input.len())
                        .max(FIRST_STEP)
                        .min(room);
                    self.out.reserve_exact(step);
                }
                let len = self.out.len();
                let before = (self.state.total_in(), self.state.total_out());
                let status = self
                    .state
                    .decompress_vec(input, &mut self.out, FlushDecompress::None)
                    .map_err(|_| InflateError::Invalid)?;
                let read = consumed(before.0, self.state.total_in(), input.len());
                let wrote = self.out.len() - len;
                if self.out.len() > self.max {
                    return Err(InflateError::TooBig);
                }
                (read, wrote, status)
            };
            input = &input[read..];
            if status == Status::StreamEnd {
                self.ended = true;
                break;
            }
            if read == 0 && wrote == 0 {
                if input.is_empty() || status == Status::BufError {
                    // Waiting for more input (or, with input left and no
                    // progress, a stream the backend cannot go on with).
                    return match input.is_empty() {
                        true => Ok(()),
                        false => Err(InflateError::Invalid),
                    };
                }
                return Err(InflateError::Invalid);
            }
            if input.is_empty() && self.out.len() < self.out.capacity() {
                return Ok(()); // all taken, and room was left: done for now
            }
        }
        Ok(())
    }

    /// One call into the backend with `output` as the room.
    fn step(
        &mut self,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(usize, usize, Status), InflateError> {
        let (tin, tout) = (self.state.total_in(), self.state.total_out());
        let status = self
            .state
            .decompress(input, output, FlushDecompress::None)
            .map_err(|_| InflateError::Invalid)?;
        let read = consumed(tin, self.state.total_in(), input.len());
        let wrote = consumed(tout, self.state.total_out(), output.len());
        Ok((read, wrote, status))
    }
}

/// Inflates one whole compressed message (§7.2.2) into at most `max`
/// bytes.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut inflater = Inflater::new(max);
    inflater.push(compressed)?;
    inflater.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7692 §7.2.3.1: "Hello" compressed.
    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    fn chat_text(len: usize) -> Vec<u8> {
        let words = [
            "hello", "there", "how", "are", "you", "today", "the", "chat", "is", "up",
        ];
        let mut out = Vec::new();
        let mut i = 7usize;
        while out.len() < len {
            i = i.wrapping_mul(31).wrapping_add(17) % 1009;
            out.extend_from_slice(words[i % words.len()].as_bytes());
            out.push(if i.is_multiple_of(7) { b'\n' } else { b' ' });
        }
        out.truncate(len);
        out
    }

    #[test]
    fn rfc_examples_inflate() {
        // §7.2.3.1: a message compressed in one frame.
        assert_eq!(inflate(&HELLO, 100).unwrap(), b"Hello");
        // §7.2.3.1: the same in two fragments.
        let mut inflater = Inflater::new(100);
        inflater.push(&[0xf2, 0x48, 0xcd]).unwrap();
        inflater.push(&[0xc9, 0xc9, 0x07, 0x00]).unwrap();
        assert_eq!(inflater.finish().unwrap(), b"Hello");
        // §7.2.3.3: no compression (a stored block).
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(inflate(&stored, 100).unwrap(), b"Hello");
        // §7.2.3.4: a block with BFINAL set; what follows is ignored.
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(inflate(&bfinal, 100).unwrap(), b"Hello");
        // §7.2.3.5: two DEFLATE blocks in one message.
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate(&two, 100).unwrap(), b"Hello");
        // §7.2.3.6: an empty message compressed.
        assert_eq!(inflate(&[0x00], 100).unwrap(), b"");
    }

    #[test]
    fn compress_strips_the_tail_and_round_trips() {
        let hello = compress(b"Hello");
        assert!(!hello.ends_with(&TAIL));
        assert_eq!(inflate(&hello, 5).unwrap(), b"Hello");
        assert_eq!(compress(b""), [0x00]);
        for len in [1, 100, 1024, 65_535, 65_536, 200_000] {
            let text = chat_text(len);
            let packed = compress(&text);
            assert!(
                len < 1000 || packed.len() < text.len() / 2,
                "{len}: {}",
                packed.len()
            );
            assert_eq!(inflate(&packed, len).unwrap(), text, "{len}");
        }
        // Incompressible bytes still round-trip.
        let noise: Vec<u8> = (0u32..70_000)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(inflate(&compress(&noise), noise.len()).unwrap(), noise);
    }

    #[test]
    fn a_compressor_is_reset_between_messages() {
        let mut compressor = Compressor::new();
        let text = chat_text(4000);
        let mut first = Vec::new();
        compressor.compress_into(&[&text], &mut first);
        let mut second = Vec::new();
        compressor.compress_into(&[&text], &mut second);
        // No context taken over: the second is the same bytes as the
        // first and inflates on its own.
        assert_eq!(first, second);
        assert_eq!(inflate(&second, 4000).unwrap(), text);
        // In two parts the backend may cut blocks elsewhere; it inflates
        // to the same message.
        let mut parts = Vec::new();
        compressor.compress_into(&[&text[..2000], &text[2000..]], &mut parts);
        assert_eq!(inflate(&parts, 4000).unwrap(), text);
        let mut inflater = Inflater::new(4000);
        for _ in 0..3 {
            for piece in first.chunks(7) {
                inflater.push(piece).unwrap();
            }
            assert_eq!(inflater.finish().unwrap(), text);
        }
    }

    #[test]
    fn stored_blocks_are_valid_deflate() {
        let mut out = Vec::new();
        stored_into(&[b"Hel", b"lo"], &mut out);
        assert_eq!(
            out,
            [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00]
        );
        let big = chat_text(150_000);
        let mut out = Vec::new();
        stored_into(&[&big], &mut out);
        assert_eq!(out.len(), big.len() + 3 * 5 + 1);
        assert_eq!(inflate(&out, big.len()).unwrap(), big);
        let mut empty = Vec::new();
        stored_into(&[], &mut empty);
        assert_eq!(inflate(&empty, 0).unwrap(), b"");
    }

    #[test]
    fn the_limit_is_exact_and_never_allocated_past() {
        let text = chat_text(10_000);
        let packed = compress(&text);
        assert_eq!(inflate(&packed, 10_000).unwrap(), text);
        assert_eq!(inflate(&packed, 9_999), Err(InflateError::TooBig));
        assert_eq!(inflate(&packed, 0), Err(InflateError::TooBig));
        assert_eq!(inflate(&[0x00], 0).unwrap(), b"");
        // A bomb: 64 MiB of zeros is about 64 KiB compressed.
        let zeros = vec![0u8; 64 << 20];
        let bomb = compress(&zeros);
        drop(zeros);
        assert!(bomb.len() < 100_000, "{}", bomb.len());
        let mut inflater = Inflater::new(1 << 20);
        let mut refused = None;
        for (i, piece) in bomb.chunks(1000).enumerate() {
            match inflater.push(piece) {
                Ok(()) => assert!(inflater.output().len() <= 1 << 20),
                Err(e) => {
                    refused = Some((i, e));
                    break;
                }
            }
            assert!(inflater.reserved() <= 1 << 20);
        }
        // Refused within the first 1 MiB's worth of input, not at the end.
        let (at, e) = refused.expect("refused");
        assert_eq!(e, InflateError::TooBig);
        assert!(at < 10, "refused at piece {at}");
        assert_eq!(e.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn invalid_data_is_refused() {
        for bad in [
            &[][..],                               // no data at all: the tail alone is no block
            &[0xff, 0xff, 0xff],                   // BTYPE 11 is reserved
            &[0xf2, 0x48],                         // cut short inside a block
            &HELLO[..5],                           // cut short before the block ends
            &[0x00, 0x05, 0x00, 0xfa],             // a stored block cut short
            &[0x00, 0x05, 0x00, 0x00, 0x00, 0x48], // NLEN is not !LEN
        ] {
            let got = inflate(bad, 1000);
            assert_eq!(got, Err(InflateError::Invalid), "{bad:02x?}");
        }
        assert_eq!(
            InflateError::Invalid.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
        // After an error a reset inflater takes the next message.
        let mut inflater = Inflater::new(100);
        assert!(inflater.push(&[0xff, 0xff, 0xff]).is_err());
        inflater.reset();
        inflater.push(&HELLO).unwrap();
        assert_eq!(inflater.finish().unwrap(), b"Hello");
    }
}
