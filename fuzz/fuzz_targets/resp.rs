//! The RESP2 reply decoder (`wschat::cluster::resp`), fed a stream of
//! replies the way a socket delivers it, and the command encoder.
//!
//! Input: byte 0 steers the run as in the other targets (bits 0-2: how
//! many chunk-length bytes follow; bit 3: small limits, so the fuzzer
//! reaches them); the rest is the stream of server bytes.
//!
//! Invariants:
//! - Nothing panics, whatever the bytes and limits.
//! - Decoding the stream whole (reply after reply from the front, until
//!   `Partial` or an error) gives the same replies, the same bytes
//!   consumed, and the same ending (`Partial` with the same tail left, or
//!   the same error) as feeding it in the chosen chunks into a buffer and
//!   decoding whatever is complete after each chunk.
//! - A complete reply's consumed length is at least 3 and never more than
//!   the input; `check` agrees with `decode` on it; decoding just those
//!   bytes gives the same reply, and every shorter prefix is `Partial`.
//! - A reply respects the limits: bulk strings, arrays, depth, values.
//! - Any arguments encode as a command that decodes back (as an array of
//!   bulk strings) to the same arguments, of `command_len` bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::cluster::resp::{self, check, decode, Limits, Reply, RespError, Status};
use wschat_fuzz::{chunks, split_control};

#[derive(Debug, PartialEq)]
enum End {
    /// Bytes left over, waiting for more.
    Partial(usize),
    Error(RespError),
}

/// Every reply decoded from the front of `buf` in turn.
fn whole(buf: &[u8], limits: &Limits) -> (Vec<(Reply, usize)>, End) {
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        match decode(&buf[at..], limits) {
            Ok(Status::Complete((reply, n))) => {
                check_reply(&buf[at..], &reply, n, limits);
                out.push((reply, n));
                at += n;
            }
            Ok(Status::Partial) => return (out, End::Partial(buf.len() - at)),
            Err(e) => return (out, End::Error(e)),
        }
    }
}

/// The same stream fed in pieces, the way a link buffers it.
fn streamed(pieces: &[&[u8]], limits: &Limits) -> (Vec<(Reply, usize)>, End) {
    let mut held: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        held.extend_from_slice(piece);
        loop {
            match decode(&held, limits) {
                Ok(Status::Complete((reply, n))) => {
                    assert!(n <= held.len());
                    out.push((reply, n));
                    held.drain(..n);
                }
                Ok(Status::Partial) => break,
                Err(e) => return (out, End::Error(e)),
            }
        }
    }
    (out, End::Partial(held.len()))
}

fn check_reply(buf: &[u8], reply: &Reply, n: usize, limits: &Limits) {
    assert!(n >= 3 && n <= buf.len(), "consumed {n} of {}", buf.len());
    assert!(n <= limits.max_reply_len);
    assert_eq!(check(buf, limits), Ok(Status::Complete(n)));
    assert_eq!(
        decode(&buf[..n], limits),
        Ok(Status::Complete((reply.clone(), n)))
    );
    // Prefixes: a few cuts, not all (quadratic on long inputs).
    for cut in [0, 1, n / 2, n - 1] {
        assert_eq!(decode(&buf[..cut], limits), Ok(Status::Partial), "cut {cut}");
    }
    let mut values = 0;
    check_limits(reply, 0, limits, &mut values);
    assert!(values <= limits.max_elements);
}

fn check_limits(reply: &Reply, depth: usize, limits: &Limits, values: &mut usize) {
    *values += 1;
    match reply {
        Reply::Simple(s) | Reply::Error(s) => {
            assert!(s.len() <= limits.max_line_len);
            assert!(!s.contains(&b'\r') && !s.contains(&b'\n'));
        }
        Reply::Bulk(Some(b)) => assert!(b.len() <= limits.max_bulk_len),
        Reply::Array(Some(items)) => {
            assert!(items.len() <= limits.max_array_len);
            if !items.is_empty() {
                assert!(depth < limits.max_depth.min(resp::DEPTH_CEILING));
            }
            for item in items {
                check_limits(item, depth + 1, limits, values);
            }
        }
        Reply::Integer(_) | Reply::Bulk(None) | Reply::Array(None) => {}
    }
}

fn check_encode(data: &[u8]) {
    // Arguments: the input cut at each 0xFF byte, at most 64 of them.
    let args: Vec<&[u8]> = data.split(|&b| b == 0xFF).take(64).collect();
    let mut out = vec![b'x'];
    resp::encode_command(&mut out, &args);
    assert_eq!(out.len(), 1 + resp::command_len(&args));
    let limits = Limits {
        max_reply_len: usize::MAX,
        max_bulk_len: usize::MAX,
        ..Limits::default()
    };
    let Ok(Status::Complete((Reply::Array(Some(items)), n))) = decode(&out[1..], &limits) else {
        panic!("an encoded command does not decode");
    };
    assert_eq!(n, out.len() - 1);
    let back: Vec<&[u8]> = items
        .iter()
        .map(|r| match r {
            Reply::Bulk(Some(b)) => b.as_slice(),
            other => panic!("argument decoded as {other:?}"),
        })
        .collect();
    assert_eq!(back, args);
}

fuzz_target!(|data: &[u8]| {
    let (flags, lens, stream) = split_control(data);
    let limits = if flags & 1 != 0 {
        Limits {
            max_bulk_len: 16,
            max_array_len: 4,
            max_elements: 12,
            max_depth: 3,
            max_line_len: 12,
            max_reply_len: 96,
        }
    } else {
        Limits::default()
    };
    let expected = whole(stream, &limits);
    let pieces = chunks(stream, lens);
    let got = streamed(&pieces, &limits);
    assert_eq!(got, expected, "chunks {:?}", pieces.iter().map(|p| p.len()).collect::<Vec<_>>());
    // Byte by byte too, for short streams.
    if stream.len() <= 256 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(streamed(&bytes, &limits), expected, "byte by byte");
    }
    check_encode(stream);
});
