//! The timestamped marker each load message carries, and the padding
//! around it.
//!
//! A message is `~L<sender>:<seq>:<sent_ns>~` followed by ASCII filler up
//! to the requested size, where `sent_ns` counts nanoseconds since the
//! tool started (one process, one monotonic clock, so receive time minus
//! `sent_ns` is the latency). Servers prepend their own prefix
//! (`User 40312: `), so receivers look for the marker near the start of
//! the text instead of at a fixed offset.

use std::io::Write;

const OPEN: &[u8] = b"~L";
const CLOSE: u8 = b'~';

/// How far into a received message the marker may start. Prefixes are
/// short; bounding the search keeps 64 KiB messages cheap.
pub const SEARCH_LIMIT: usize = 256;

/// The longest marker: `~L` + u32 + `:` + u64 + `:` + u64 + `~`.
pub const MAX_MARKER_LEN: usize = 2 + 10 + 1 + 20 + 1 + 20 + 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Marker {
    pub sender: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Replaces `out` with the marker, then `filler` up to `size` bytes (or
/// as much of it as there is).
pub fn write_with_filler(out: &mut Vec<u8>, marker: Marker, size: usize, filler: &[u8]) {
    write_marker(out, marker);
    let n = size.saturating_sub(out.len()).min(filler.len());
    out.extend_from_slice(&filler[..n]);
}

/// Replaces `out` with the marker padded with spaces to
/// [`MAX_MARKER_LEN`] bytes, so that every message has the same length.
pub fn write_padded_marker(out: &mut Vec<u8>, marker: Marker) {
    write_marker(out, marker);
    out.resize(MAX_MARKER_LEN, b' ');
}

fn write_marker(out: &mut Vec<u8>, marker: Marker) {
    out.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "~L{}:{}:{}~",
        marker.sender, marker.seq, marker.sent_ns
    );
}

/// Words of everyday chat, for a filler that compresses like chat text
/// does (about 2.5:1 on its own at 1 KiB) rather than like `abc…z`.
const WORDS: [&str; 64] = [
    "hello",
    "there",
    "how",
    "are",
    "you",
    "today",
    "the",
    "chat",
    "is",
    "up",
    "and",
    "running",
    "again",
    "did",
    "anyone",
    "see",
    "that",
    "new",
    "release",
    "yesterday",
    "I",
    "think",
    "we",
    "should",
    "try",
    "it",
    "on",
    "staging",
    "first",
    "before",
    "Friday",
    "lol",
    "sure",
    "thanks",
    "for",
    "sharing",
    "link",
    "meeting",
    "moved",
    "to",
    "3pm",
    "coffee",
    "later",
    "who",
    "wants",
    "lunch",
    "deploy",
    "went",
    "fine",
    "but",
    "logs",
    "look",
    "weird",
    "can",
    "someone",
    "check",
    "please",
    "ok",
    "great",
    "work",
    "team",
    "see",
    "tomorrow",
    "bye",
];

/// `len` bytes of chat-like text (words, spaces, some punctuation; never
/// `~`), the same for every run.
pub fn chat_text(len: usize) -> Vec<u8> {
    let mut rng = crate::rng::XorShift64::new(0x5eed_c4a7);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next_u64();
        out.extend_from_slice(WORDS[(r % 64) as usize].as_bytes());
        out.extend_from_slice(match (r >> 8) % 16 {
            0 => b". ",
            1 => b", ",
            2 => b"? ",
            3 => b"! ",
            _ => b" ",
        });
    }
    out.truncate(len);
    out
}

/// Finds and parses the first well-formed marker starting within the
/// first [`SEARCH_LIMIT`] bytes of `text`.
pub fn find(text: &[u8]) -> Option<Marker> {
    let window = &text[..text.len().min(SEARCH_LIMIT + OPEN.len())];
    let mut from = 0;
    // A byte search for the first byte, then a look at the second: the
    // tool does this for every message it receives, millions a second.
    while let Some(pos) = window[from..].iter().position(|&b| b == OPEN[0]) {
        let start = from + pos;
        if window.get(start + 1) == Some(&OPEN[1]) {
            if let Some(marker) = parse_at(&text[start + OPEN.len()..]) {
                return Some(marker);
            }
        }
        from = start + 1;
    }
    None
}

/// Parses `<sender>:<seq>:<sent_ns>~` at the start of `rest`.
fn parse_at(rest: &[u8]) -> Option<Marker> {
    let (sender, rest) = number(rest, b':')?;
    let (seq, rest) = number(rest, b':')?;
    let (sent_ns, _) = number(rest, CLOSE)?;
    Some(Marker {
        sender: u32::try_from(sender).ok()?,
        seq,
        sent_ns,
    })
}

/// A decimal u64 of at least one digit, then `end`; returns the value
/// and what follows `end`. One pass over the digits: the tool reads some
/// 30 of them per message received, millions of messages a second.
fn number(bytes: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let digit = b.wrapping_sub(b'0');
        if digit >= 10 {
            return (i > 0 && b == end).then(|| (value, &bytes[i + 1..]));
        }
        // Nineteen digits never overflow a u64, so the usual markers (the
        // clock's nanoseconds have 10 to 13) are read without overflow
        // checks.
        value = if i < 19 {
            value * 10 + u64::from(digit)
        } else {
            value.checked_mul(10)?.checked_add(u64::from(digit))?
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: Marker = Marker {
        sender: 7,
        seq: 12345,
        sent_ns: 987_654_321,
    };

    /// The message for `marker` padded with `abc…z` to `size` bytes.
    fn write_message(out: &mut Vec<u8>, marker: Marker, size: usize) {
        write_with_filler(out, marker, size, &crate::cli::Filler::Abc.bytes(size));
    }

    #[test]
    fn format_is_as_documented_and_padded_to_size() {
        let mut out = Vec::new();
        write_message(&mut out, M, 64);
        assert_eq!(out.len(), 64);
        assert!(out.starts_with(b"~L7:12345:987654321~abc"));
        assert_eq!(out.iter().filter(|&&b| b == b'~').count(), 2);
        assert!(out.is_ascii());
    }

    #[test]
    fn chat_filler_and_padded_marker() {
        let text = chat_text(1000);
        assert_eq!(text.len(), 1000);
        assert_eq!(text, chat_text(1000), "the same every run");
        assert!(text.is_ascii() && !text.contains(&b'~'));
        let compressed = wschat::protocol::deflate::compress(&text);
        assert!(
            (250..600).contains(&compressed.len()),
            "compresses like text: {}",
            compressed.len()
        );
        let mut out = Vec::new();
        write_with_filler(&mut out, M, 64, &text);
        assert_eq!(out.len(), 64);
        assert_eq!(find(&out), Some(M));
        write_padded_marker(&mut out, M);
        assert_eq!(out.len(), MAX_MARKER_LEN);
        assert_eq!(find(&out), Some(M));
    }

    #[test]
    fn size_below_marker_length_gives_marker_only() {
        let mut out = vec![1, 2, 3];
        write_message(&mut out, M, 4);
        assert_eq!(out, b"~L7:12345:987654321~");
    }

    #[test]
    fn round_trip_with_and_without_prefix() {
        let mut out = Vec::new();
        write_message(&mut out, M, 100);
        assert_eq!(find(&out), Some(M));
        let mut prefixed = b"User 40312: ".to_vec();
        prefixed.extend_from_slice(&out);
        assert_eq!(find(&prefixed), Some(M));
    }

    #[test]
    fn extreme_values_round_trip() {
        let m = Marker {
            sender: u32::MAX,
            seq: u64::MAX,
            sent_ns: u64::MAX,
        };
        let mut out = Vec::new();
        write_message(&mut out, m, 0);
        assert_eq!(out.len(), MAX_MARKER_LEN);
        assert_eq!(find(&out), Some(m));
    }

    #[test]
    fn announcements_and_garbage_have_no_marker() {
        for text in [
            &b"User 40312 joined"[..],
            b"",
            b"~",
            b"~L",
            b"~L1:2:3",
            b"~L1:2~",
            b"~Lx:2:3~",
            b"~L1::3~",
            b"~L99999999999:1:1~",
            b"~L1:99999999999999999999999:1~",
        ] {
            assert_eq!(find(text), None, "{:?}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn a_broken_marker_does_not_hide_a_later_good_one() {
        assert_eq!(
            find(b"~L~Lx ~L1:2:3~"),
            Some(Marker {
                sender: 1,
                seq: 2,
                sent_ns: 3
            })
        );
    }

    #[test]
    fn marker_beyond_the_search_limit_is_ignored() {
        let mut text = vec![b' '; SEARCH_LIMIT + 1];
        text.extend_from_slice(b"~L1:2:3~");
        assert_eq!(find(&text), None);
        let mut text = vec![b' '; SEARCH_LIMIT];
        text.extend_from_slice(b"~L1:2:3~");
        assert!(find(&text).is_some());
    }
}
