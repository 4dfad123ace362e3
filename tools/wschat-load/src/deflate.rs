//! permessage-deflate on the client side (RFC 7692), for `--deflate`:
//! the offer, the check of the server's answer, inflating what arrives
//! and building what is sent, without allocating per message.
//!
//! # Offer and answer
//!
//! The tool offers what browsers offer, `permessage-deflate;
//! client_max_window_bits`, and takes the server's answer as §7.1 lets a
//! server shape it: `server_no_context_takeover`,
//! `client_no_context_takeover`, `server_max_window_bits=N` (§7.1.2.1: only
//! if offered, and it was not: refused) and `client_max_window_bits=N`.
//! An answer naming anything else fails the connection (§7.1: "If a
//! received extension negotiation response includes a parameter that ... is
//! not defined ... the client MUST _Fail the WebSocket Connection_").
//!
//! # Inflating, once per broadcast
//!
//! A server that agreed `server_no_context_takeover` compresses every
//! message on its own (§7.1.1.1), so the inflated bytes are a function of
//! the compressed bytes alone; wschat and uWebSockets' shared compressor
//! also send one compressed payload to every recipient of a broadcast. The
//! tool receives each broadcast 99 times in a 100-client room and would
//! spend its core inflating the same bytes again and again, so
//! [`Inflate`] keeps the last few payloads it inflated (compared whole,
//! byte for byte) and their results. A server that keeps its context gets
//! an inflater per connection instead, and no cache.
//!
//! # Sending compressed
//!
//! A sent message is the marker (padded to a fixed length) and a filler
//! that is the same for every message. Compressing each whole message
//! would cost the tool ~50 µs of its core per message; instead the filler
//! is compressed once, and each message is a DEFLATE stream of two parts
//! (RFC 1951 §3.2.3: a stream is a series of blocks): a stored block
//! holding the marker, then the filler's compressed blocks, whose
//! back-references stay inside the filler. The server inflates a real
//! compressed message; only the marker travels uncompressed.

use flate2::{Decompress, FlushDecompress, Status};
use wschat::protocol::deflate::{Compressor, TAIL};
use wschat::protocol::extensions::{self, PERMESSAGE_DEFLATE};

/// The request header line of the offer.
pub const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// Sets of the shared inflater's cache, and the payloads each holds (the
/// messages in flight of every sender of a closed-loop run, with room to
/// spare). With one payload per slot, 160 messages in flight over 256
/// slots collided for 45% of the deliveries; with two per set, the sets
/// that three messages in flight shared (each delivery of each evicting
/// another in turn) still made two inflates per message in C1; with four
/// (least recently used evicted), one.
const CACHE_SETS: usize = 1024;
const CACHE_WAYS: usize = 4;

/// Buffers above this are released once used (a 64 MiB message once must
/// not stay 64 MiB per slot).
const KEEP_CAPACITY: usize = 1 << 20;

/// What the server agreed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// The server compresses each message on its own.
    pub server_no_context_takeover: bool,
    /// The server asks the client to do the same (the tool always does).
    pub client_no_context_takeover: bool,
    /// The window the client's messages may use; `None`: 15 bits.
    pub client_max_window_bits: Option<u8>,
}

impl Agreed {
    /// The window the client compresses with.
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(15)
    }
}

/// The `Sec-WebSocket-Extensions` values of a response head.
fn extension_values(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n').skip(1).filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"sec-websocket-extensions")
            .then(|| line[colon + 1..].trim_ascii())
    })
}

/// Reads the extension the server agreed to from its `101` head: `None`
/// when it agreed to none, an error when the answer is not one the offer
/// allows.
pub fn parse_answer(head: &[u8]) -> Result<Option<Agreed>, String> {
    let answers = extensions::parse(extension_values(head))
        .map_err(|e| format!("Sec-WebSocket-Extensions answer: {e}"))?;
    let answer = match answers.as_slice() {
        [] => return Ok(None),
        [one] => one,
        _ => return Err("more than one extension in the answer".into()),
    };
    if answer.name != PERMESSAGE_DEFLATE {
        return Err(format!("extension {:?} was not offered", answer.name));
    }
    let mut agreed = Agreed {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        client_max_window_bits: None,
    };
    let mut seen = [false; 3];
    for param in &answer.params {
        let value = param.value.as_deref();
        let slot = match (param.name, value) {
            ("server_no_context_takeover", None) => {
                agreed.server_no_context_takeover = true;
                0
            }
            ("client_no_context_takeover", None) => {
                agreed.client_no_context_takeover = true;
                1
            }
            // §7.1.2.2: the answer's value is "a decimal integer value
            // without leading zeroes between 8 to 15, inclusive".
            ("client_max_window_bits", Some(v)) => {
                let bits = v
                    .parse::<u8>()
                    .ok()
                    .filter(|b| (8..=15).contains(b) && !v.starts_with('0'))
                    .ok_or_else(|| format!("client_max_window_bits={v}"))?;
                agreed.client_max_window_bits = Some(bits);
                2
            }
            (name, _) => return Err(format!("parameter {name:?} not allowed in the answer")),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(format!("parameter {:?} twice", param.name));
        }
    }
    Ok(Some(agreed))
}

/// Inflates one message's payload (§7.2.2: the tail appended, then
/// DEFLATE) into `out`, replacing its contents, at most `max` bytes.
/// `decompress` is reset first unless the server keeps its context.
/// Allocates only when `out` must grow.
pub fn inflate_into(
    decompress: &mut Decompress,
    reset: bool,
    payload: &[u8],
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), ()> {
    if reset {
        decompress.reset(false);
    }
    out.clear();
    for mut input in [payload, &TAIL[..]] {
        loop {
            if out.len() == out.capacity() {
                // Room for one byte past the limit shows a message over it.
                if out.len() > max {
                    return Err(());
                }
                out.reserve_exact((2 * out.len()).max(4096).min(max + 1 - out.len()));
            }
            let (before, len) = (decompress.total_in(), out.len());
            let status = decompress
                .decompress_vec(input, out, FlushDecompress::Sync)
                .map_err(|_| ())?;
            let read = usize::try_from(decompress.total_in() - before).map_err(|_| ())?;
            input = &input[read.min(input.len())..];
            if status == Status::StreamEnd {
                break;
            }
            if read == 0 && out.len() == len && out.len() < out.capacity() {
                // No progress with room to write: stuck on bad data.
                if input.is_empty() {
                    break;
                }
                return Err(());
            }
            // Done with this input once it is all taken and room was left.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
    }
    if out.len() > max {
        return Err(());
    }
    Ok(())
}

/// One remembered payload and what it inflated to.
#[derive(Default)]
struct Slot {
    hash: u64,
    /// When it was last used (the inflater's lookup count then).
    used: u64,
    compressed: Vec<u8>,
    inflated: Vec<u8>,
}

/// The inflater of every connection whose server agreed
/// `server_no_context_takeover`, with its cache (see the module docs).
pub struct Inflate {
    decompress: Decompress,
    /// [`CACHE_WAYS`] per set: set `s` is `slots[s * CACHE_WAYS..][..CACHE_WAYS]`.
    slots: Vec<Slot>,
    /// Lookups so far: the clock of [`Slot::used`].
    lookups: u64,
    max: usize,
    /// Payloads inflated, and those found in the cache.
    pub inflated: u64,
    pub cached: u64,
}

/// A fast hash of a payload (FNV-1a over 8-byte words, then splitmix64's
/// finalizer so that every input bit reaches the low bits); equal hashes
/// are then compared byte for byte, so collisions cost time, not
/// correctness.
fn hash(bytes: &[u8]) -> u64 {
    // The ends and the length tell broadcasts apart (each starts with its
    // own marker); the cache compares the whole payload anyway, so a
    // collision costs a miss, never a wrong answer. Hashing every byte
    // was a third of the tool's time per delivery in C1.
    let cut = bytes.len().min(32);
    let (head, tail) = (&bytes[..cut], &bytes[bytes.len() - cut..]);
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ bytes.len() as u64;
    for part in [head, tail] {
        let mut words = part.chunks_exact(8);
        for word in words.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0100_0000_01b3);
        }
        for &b in words.remainder() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

impl Inflate {
    pub fn new(max: usize) -> Inflate {
        Inflate {
            decompress: Decompress::new(false),
            slots: (0..CACHE_WAYS * CACHE_SETS)
                .map(|_| Slot::default())
                .collect(),
            lookups: 0,
            max,
            inflated: 0,
            cached: 0,
        }
    }

    /// The inflated form of a payload compressed without context.
    pub fn message(&mut self, payload: &[u8]) -> Result<&[u8], ()> {
        let h = hash(payload);
        let set = (h % CACHE_SETS as u64) as usize;
        self.lookups += 1;
        let now = self.lookups;
        let ways = &mut self.slots[set * CACHE_WAYS..][..CACHE_WAYS];
        if let Some(way) = ways.iter().position(|slot| {
            slot.hash == h && slot.compressed == payload && !slot.compressed.is_empty()
        }) {
            self.cached += 1;
            ways[way].used = now;
            return Ok(&ways[way].inflated);
        }
        let way = (0..CACHE_WAYS)
            .min_by_key(|&way| ways[way].used)
            .unwrap_or(0);
        let slot = &mut ways[way];
        slot.used = now;
        self.inflated += 1;
        slot.compressed.clear();
        if slot.inflated.capacity() > KEEP_CAPACITY {
            slot.inflated = Vec::new();
        }
        if slot.compressed.capacity() > KEEP_CAPACITY {
            slot.compressed = Vec::new();
        }
        inflate_into(
            &mut self.decompress,
            true,
            payload,
            &mut slot.inflated,
            self.max,
        )?;
        slot.hash = h;
        slot.compressed.extend_from_slice(payload);
        Ok(&slot.inflated)
    }
}

/// Appends a DEFLATE stored block (RFC 1951 §3.2.4: BFINAL 0, BTYPE 00,
/// then LEN and NLEN) holding `head`, at most 65,535 bytes.
fn stored_block(out: &mut Vec<u8>, head: &[u8]) {
    let len = u16::try_from(head.len()).unwrap_or(u16::MAX);
    out.push(0x00);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&(!len).to_le_bytes());
    out.extend_from_slice(&head[..usize::from(len)]);
}

/// Replaces `out` with the compressed payload of the message `head`
/// followed by the filler whose compressed form (§7.2.1, tail removed) is
/// `filler`.
pub fn write_compressed(out: &mut Vec<u8>, head: &[u8], filler: &[u8]) {
    out.clear();
    stored_block(out, head);
    out.extend_from_slice(filler);
}

/// The filler compressed for each client window (8 to 15 bits), made
/// when first asked for.
pub struct CompressedFiller {
    filler: Vec<u8>,
    by_bits: [Option<Vec<u8>>; 8],
}

impl CompressedFiller {
    pub fn new(filler: Vec<u8>) -> CompressedFiller {
        CompressedFiller {
            filler,
            by_bits: Default::default(),
        }
    }

    /// The filler compressed with a window of at most `bits` bits.
    pub fn for_bits(&mut self, bits: u8) -> &[u8] {
        let bits = bits.clamp(8, 15);
        let filler = &self.filler;
        self.by_bits[usize::from(bits - 8)].get_or_insert_with(|| {
            let mut out = Vec::new();
            Compressor::for_window(bits).compress_into(&[filler], &mut out);
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wschat::protocol::deflate::{compress, inflate};

    fn head(extensions: &str) -> Vec<u8> {
        format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n{extensions}\r\n")
            .into_bytes()
    }

    #[test]
    fn answers_wschat_and_uws_give() {
        let wschat = head(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover; client_max_window_bits=15\r\n",
        );
        assert_eq!(
            parse_answer(&wschat),
            Ok(Some(Agreed {
                server_no_context_takeover: true,
                client_no_context_takeover: true,
                client_max_window_bits: Some(15),
            }))
        );
        let bare = head("sec-websocket-extensions: permessage-deflate\r\n");
        let agreed = parse_answer(&bare).unwrap().unwrap();
        assert!(!agreed.server_no_context_takeover);
        assert_eq!(agreed.client_window_bits(), 15);
        assert_eq!(parse_answer(&head("")), Ok(None));
    }

    #[test]
    fn answers_the_offer_does_not_allow() {
        for bad in [
            "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=16\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=09\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; mystery\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             server_no_context_takeover\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate, permessage-deflate\r\n",
            "Sec-WebSocket-Extensions: permessage-deflate;;\r\n",
        ] {
            assert!(parse_answer(&head(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn inflates_rfc_hello_and_refuses_garbage_and_bombs() {
        let mut d = Decompress::new(false);
        let mut out = Vec::new();
        // RFC 7692 §7.2.3.1.
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        inflate_into(&mut d, true, &hello, &mut out, 100).unwrap();
        assert_eq!(out, b"Hello");
        assert!(inflate_into(&mut d, true, &[0xff, 0xff, 0xff], &mut out, 100).is_err());
        let zeros = compress(&vec![0u8; 100_000]);
        assert!(inflate_into(&mut d, true, &zeros, &mut out, 50_000).is_err());
        assert!(out.capacity() <= 50_001, "bounded: {}", out.capacity());
        inflate_into(&mut d, true, &zeros, &mut out, 100_000).unwrap();
        assert_eq!(out.len(), 100_000);
    }

    #[test]
    fn context_takeover_keeps_the_window_between_messages() {
        // §7.2.3.2: "Hello" twice with context takeover; the second is a
        // back-reference into the first.
        let mut d = Decompress::new(false);
        let mut out = Vec::new();
        inflate_into(
            &mut d,
            false,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
            &mut out,
            100,
        )
        .unwrap();
        inflate_into(
            &mut d,
            false,
            &[0xf2, 0x00, 0x11, 0x00, 0x00],
            &mut out,
            100,
        )
        .unwrap();
        assert_eq!(out, b"Hello");
    }

    #[test]
    fn the_cache_answers_repeats_exactly() {
        let mut inflate = Inflate::new(1 << 20);
        let a = compress(b"User 1: ~L0:1:5~ hello there");
        let b = compress(b"User 1: ~L0:2:9~ hello there");
        for _ in 0..3 {
            assert_eq!(
                inflate.message(&a).unwrap(),
                b"User 1: ~L0:1:5~ hello there"
            );
            assert_eq!(
                inflate.message(&b).unwrap(),
                b"User 1: ~L0:2:9~ hello there"
            );
        }
        assert_eq!((inflate.inflated, inflate.cached), (2, 4));
        // Four payloads in one set stay together; a fifth evicts the one
        // used longest ago.
        inflate.slots.iter_mut().for_each(|s| s.compressed.clear());
        let set_of = |p: &[u8]| hash(p) % CACHE_SETS as u64;
        // Cheap valid payloads: a stored block, then the header byte of
        // the empty stored block whose LEN and NLEN are the tail.
        let stored = |i: u32| {
            let mut out = Vec::new();
            stored_block(&mut out, format!("message {i}").as_bytes());
            out.push(0x00);
            out
        };
        assert_eq!(inflate.message(&stored(7)).unwrap(), b"message 7");
        let texts: Vec<Vec<u8>> = (0..50_000u32).map(stored).collect();
        let first = set_of(&texts[0]);
        let same: Vec<&Vec<u8>> = texts
            .iter()
            .filter(|t| set_of(t) == first)
            .take(5)
            .collect();
        assert_eq!(same.len(), 5, "five payloads in one set");
        let (before_inflated, before_cached) = (inflate.inflated, inflate.cached);
        for _ in 0..3 {
            for text in &same[..4] {
                inflate.message(text).unwrap();
            }
        }
        assert_eq!(inflate.inflated - before_inflated, 4);
        assert_eq!(inflate.cached - before_cached, 8);
        inflate.message(same[4]).unwrap(); // evicts same[0]
        for text in &same[1..4] {
            inflate.message(text).unwrap();
        }
        assert_eq!(inflate.cached - before_cached, 11);
        inflate.message(same[0]).unwrap();
        assert_eq!(inflate.inflated - before_inflated, 6);
        assert!(inflate.message(&[0xff, 0xff]).is_err());
        // A failed payload is not remembered as good.
        assert!(inflate.message(&[0xff, 0xff]).is_err());
    }

    #[test]
    fn stored_marker_then_compressed_filler_is_one_valid_message() {
        let text = b"the chat is up and everyone is here today ".repeat(20);
        for bits in [8, 9, 12, 15] {
            let mut filler = CompressedFiller::new(text.clone());
            let mut out = Vec::new();
            write_compressed(&mut out, b"~L3:7:123~   ", filler.for_bits(bits));
            let whole = inflate(&out, 1 << 20).expect("valid DEFLATE");
            assert_eq!(&whole[..13], b"~L3:7:123~   ");
            assert_eq!(&whole[13..], &text[..], "{bits} bits");
        }
        let mut empty = CompressedFiller::new(Vec::new());
        let mut out = Vec::new();
        write_compressed(&mut out, b"~L0:0:0~", empty.for_bits(15));
        assert_eq!(inflate(&out, 100).unwrap(), b"~L0:0:0~");
    }
}
