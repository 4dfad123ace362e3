//! permessage-deflate's payload transformation (`protocol::deflate`).
//!
//! Input: byte 0 and the chunk-length bytes after it (`split_control`);
//! flag bit 0 (byte 0's bit 3) picks the mode, bits 1-4 the limit.
//!
//! - Mode 0, arbitrary compressed data: the rest is pushed into an
//!   `Inflater` in the chunks asked for, then `finish`ed. After every step
//!   the inflated bytes and the bytes reserved for them are within the
//!   limit; no panic; a refusal is `Invalid` or `TooBig`. The same data
//!   pushed whole gives the same message or is refused too (data both
//!   too big and invalid may get either refusal, by where the backend's
//!   calls stop: regression-too-big-or-invalid), and the inflater reused
//!   after a `reset` gives exactly the same outcome.
//! - Mode 1, round trip: the rest, compressed (whole, and as two parts
//!   through a reused `Compressor`: zlib-rs may cut blocks differently),
//!   inflates back to itself when fed in the chunks asked for with the limit at its exact
//!   length, and is `TooBig` with one byte less.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::deflate::{compress, inflate, Compressor, InflateError, Inflater};
use wschat_fuzz::{chunks, split_control};

fn pushed(inflater: &mut Inflater, pieces: &[&[u8]]) -> Result<Vec<u8>, InflateError> {
    for piece in pieces {
        inflater.push(piece)?;
        assert!(inflater.output().len() <= inflater.max());
        assert!(inflater.reserved() <= inflater.max(), "reserved past the limit");
    }
    inflater.finish()
}

fuzz_target!(|data: &[u8]| {
    let (flags, lens, payload) = split_control(data);
    let pieces = chunks(payload, lens);
    if flags & 1 == 0 {
        // Limits from 0 to 30 KiB: small enough to be reached often.
        let max = usize::from(flags >> 1) * 2048;
        let mut inflater = Inflater::new(max);
        let got = pushed(&mut inflater, &pieces);
        if let Ok(out) = &got {
            assert!(out.len() <= max);
        }
        // Data both too big and invalid may be refused for either, by
        // where the backend's calls stop; the verdict and any message agree.
        match (&got, inflate(payload, max)) {
            (Ok(a), Ok(b)) => assert_eq!(a, &b, "chunked and whole differ"),
            (Err(_), Err(_)) => {}
            (a, b) => panic!("chunked {a:?}, whole {b:?}"),
        }
        inflater.reset();
        assert_eq!(got, pushed(&mut inflater, &pieces), "a reused inflater differs");
    } else {
        let packed = compress(payload);
        let cut = usize::from(flags >> 1).min(payload.len());
        let mut compressor = Compressor::new();
        let mut two = Vec::new();
        compressor.compress_into(&[&payload[..cut], &payload[cut..]], &mut two);
        assert_eq!(inflate(&two, payload.len()).as_deref(), Ok(payload), "parts");
        let pieces = chunks(&packed, lens);
        let mut inflater = Inflater::new(payload.len());
        assert_eq!(pushed(&mut inflater, &pieces).as_deref(), Ok(payload));
        if !payload.is_empty() {
            let mut short = Inflater::new(payload.len() - 1);
            assert_eq!(pushed(&mut short, &pieces), Err(InflateError::TooBig));
        }
    }
});
