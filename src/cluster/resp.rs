//! RESP2, the Redis serialization protocol, sans-IO: commands encoded into
//! a caller's `Vec<u8>`, replies decoded from whatever bytes have arrived.
//!
//! Hand-written rather than the `redis-protocol` crate, for three reasons:
//! the part wschat needs (RESP2 replies, one command form) is a few hundred
//! lines; it follows the rest of the codebase's rules (check-then-parse,
//! [`Status::Partial`] is not an error, nothing panics on peer input); and
//! it bounds what a bad or hostile server can make us hold, which
//! `redis-protocol` 6 does not (it has no nesting limit and recurses once per
//! level, so a stream of `*1\r\n` overflows the stack; lengths are bounded
//! only by what the caller buffers). It also brings no `nom`/`bytes`.
//!
//! Decoding is in two passes over the same bytes, as in httparse and
//! mini-redis: [`check`] walks the reply without allocating and says how
//! long it is, or that more bytes are needed, or what is wrong with it;
//! only a complete reply is then built by [`decode`]. A reply trickling in
//! is thus re-walked per read, but payloads are skipped by their declared
//! length, so the cost is per element and per line byte, not per payload
//! byte.
//!
//! Every decision is made on the bytes read so far, left to right, so a
//! prefix of the input decodes as `Partial` or as exactly what the whole
//! input decodes to: splitting a reply anywhere never changes the result.
//!
//! ```text
//! +OK\r\n                  simple string      :42\r\n        integer
//! -ERR message\r\n         error              $3\r\nfoo\r\n  bulk string ($-1: null)
//! *2\r\n:1\r\n$1\r\nx\r\n  array of 2 (*-1: null; elements are any reply, nested)
//! ```
//!
//! RESP3 (`HELLO 3`) is not spoken: redis-server answers RESP2 until asked,
//! and its pushes (`>`) and other types are refused as
//! [`RespError::UnknownType`].

// Lengths here come from a server: none may be cut short by an `as` cast.
#![deny(clippy::cast_possible_truncation)]

use std::fmt;

/// The longest bulk string accepted by default: 16 MiB. A chat message
/// is at most `--max-message-size` (1 MiB by default) plus its envelope;
/// anything much larger is not ours.
pub const MAX_BULK_LEN: usize = 16 * 1024 * 1024;
/// The most elements one array may declare by default. History replays
/// are read in pages far smaller than this.
pub const MAX_ARRAY_LEN: usize = 64 * 1024;
/// The most values (of any type, at any depth) one reply may hold by
/// default; with [`MAX_ARRAY_LEN`] per array it bounds the memory of the
/// decoded tree (about 32 bytes a value plus the payloads).
pub const MAX_ELEMENTS: usize = 256 * 1024;
/// How deeply arrays may nest by default. Redis's own replies nest at most
/// a few levels (`XRANGE` inside `EXEC` is 4).
pub const MAX_DEPTH: usize = 8;
/// The hard ceiling on [`Limits::max_depth`], whatever a caller asks: the
/// decoder recurses once per level.
pub const DEPTH_CEILING: usize = 64;
/// The longest simple string or error line by default (also bounds the
/// digits of an integer or length): 64 KiB.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// The most bytes one whole reply may take on the wire by default: 64 MiB.
/// What the caller must buffer for one reply is bounded by this.
pub const MAX_REPLY_LEN: usize = 64 * 1024 * 1024;

/// What a reply may be, at most. A reply past any of these is an error
/// as soon as the bytes that prove it have arrived, before the rest is
/// awaited or anything is allocated for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bulk_len: usize,
    pub max_array_len: usize,
    pub max_elements: usize,
    /// Clamped to [`DEPTH_CEILING`].
    pub max_depth: usize,
    pub max_line_len: usize,
    pub max_reply_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: MAX_BULK_LEN,
            max_array_len: MAX_ARRAY_LEN,
            max_elements: MAX_ELEMENTS,
            max_depth: MAX_DEPTH,
            max_line_len: MAX_LINE_LEN,
            max_reply_len: MAX_REPLY_LEN,
        }
    }
}

/// Whether the input held a whole reply. `Partial` is not an error: keep
/// the bytes, read more, and ask again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status<T> {
    Complete(T),
    Partial,
}

/// A decoded RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`: a status line (no CR or LF inside).
    Simple(Vec<u8>),
    /// `-ERR ...`: the server refused the command; the connection is fine.
    Error(Vec<u8>),
    Integer(i64),
    /// `$n`; `None` for the null bulk string `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n`; `None` for the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a simple string or non-null bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Simple(b) | Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of a non-null array.
    pub fn as_array(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The text of an error reply (`ERR ...`, `NOSCRIPT ...`).
    pub fn as_error(&self) -> Option<&[u8]> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is an error reply whose first word is `code`
    /// (e.g. `NOSCRIPT`, `NOAUTH`, `WRONGPASS`).
    pub fn is_error_code(&self, code: &str) -> bool {
        match self {
            Reply::Error(e) => {
                let word = e.split(|&b| b == b' ').next().unwrap_or(&[]);
                word == code.as_bytes()
            }
            _ => false,
        }
    }
}

/// The most of a reply a log line shows (see [`Reply::brief`]).
pub const LOGGED_REPLY_BYTES: usize = 256;

impl Reply {
    /// The reply as a log line shows it: its `Debug` form, cut after
    /// [`LOGGED_REPLY_BYTES`]. A reply of an unexpected shape may be as
    /// large as the decoder allows (megabytes of history), and a warning
    /// about it must not be.
    pub fn brief(&self) -> String {
        let mut out = Capped(String::new());
        if fmt::write(&mut out, format_args!("{self:?}")).is_err() {
            out.0.push_str("...");
        }
        out.0
    }
}

/// A string that takes at most [`LOGGED_REPLY_BYTES`], then refuses.
struct Capped(String);

impl fmt::Write for Capped {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = LOGGED_REPLY_BYTES.saturating_sub(self.0.len());
        if s.len() <= room {
            self.0.push_str(s);
            return Ok(());
        }
        let mut cut = room;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.0.push_str(&s[..cut]);
        Err(fmt::Error)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "Simple({:?})", String::from_utf8_lossy(s)),
            Reply::Error(e) => write!(f, "Error({:?})", String::from_utf8_lossy(e)),
            Reply::Integer(n) => write!(f, "Integer({n})"),
            Reply::Bulk(None) => f.write_str("Bulk(null)"),
            Reply::Bulk(Some(b)) => write!(f, "Bulk({:?})", String::from_utf8_lossy(b)),
            Reply::Array(None) => f.write_str("Array(null)"),
            Reply::Array(Some(items)) => f.debug_list().entries(items).finish(),
        }
    }
}

/// Why bytes are not a RESP2 reply. Any of these leaves the stream out of
/// step: the connection must be dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RespError {
    /// The first byte of a value is not one of `+ - : $ *`.
    UnknownType(u8),
    /// A CR not followed by LF, or an LF without CR, in a line.
    BadLineEnd,
    /// An integer or length that is not `-?[0-9]+` within `i64`.
    BadNumber,
    /// A length below -1.
    BadLength,
    /// A bulk string's payload not followed by CRLF.
    BadBulkEnd,
    LineTooLong,
    BulkTooLong,
    ArrayTooLong,
    TooManyElements,
    TooDeep,
    ReplyTooLong,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP2 type byte {b:#04x}"),
            RespError::BadLineEnd => f.write_str("a line not ended by CRLF"),
            RespError::BadNumber => f.write_str("a malformed integer or length"),
            RespError::BadLength => f.write_str("a length below -1"),
            RespError::BadBulkEnd => f.write_str("a bulk string not followed by CRLF"),
            RespError::LineTooLong => f.write_str("a line over the length limit"),
            RespError::BulkTooLong => f.write_str("a bulk string over the length limit"),
            RespError::ArrayTooLong => f.write_str("an array over the length limit"),
            RespError::TooManyElements => f.write_str("a reply with too many values"),
            RespError::TooDeep => f.write_str("arrays nested too deeply"),
            RespError::ReplyTooLong => f.write_str("a reply over the size limit"),
        }
    }
}

impl std::error::Error for RespError {}

/// What a decoding step gives: a value, `Partial`, or why the bytes are
/// not RESP2.
pub type Step<T> = Result<Status<T>, RespError>;

/// Says how many bytes the reply at the start of `buf` takes, without
/// allocating; `Partial` if it is not all there yet.
pub fn check(buf: &[u8], limits: &Limits) -> Step<usize> {
    let mut scan = Scanner::new(buf, limits);
    match scan.value::<false>(0)? {
        Status::Complete(_) => Ok(Status::Complete(scan.pos)),
        Status::Partial => Ok(Status::Partial),
    }
}

/// Decodes the reply at the start of `buf`: the reply and how many bytes
/// of `buf` it took (the rest is the next reply's), or `Partial`.
pub fn decode(buf: &[u8], limits: &Limits) -> Step<(Reply, usize)> {
    let len = match check(buf, limits)? {
        Status::Complete(len) => len,
        Status::Partial => return Ok(Status::Partial),
    };
    // The same walk over the bytes just checked, now building: it takes
    // the same path and so ends at the same place.
    let mut scan = Scanner::new(&buf[..len], limits);
    match scan.value::<true>(0)? {
        Status::Complete(Some(reply)) if scan.pos == len => Ok(Status::Complete((reply, len))),
        // Not reached: the building walk is the checking walk.
        _ => Ok(Status::Partial),
    }
}

struct Scanner<'a> {
    buf: &'a [u8],
    pos: usize,
    limits: &'a Limits,
    elements: usize,
}

impl<'a> Scanner<'a> {
    fn new(buf: &'a [u8], limits: &'a Limits) -> Scanner<'a> {
        Scanner {
            buf,
            pos: 0,
            limits,
            elements: 0,
        }
    }

    /// Whether the first `end` bytes are here (and allowed).
    fn need(&self, end: usize) -> Step<()> {
        if end > self.limits.max_reply_len {
            Err(RespError::ReplyTooLong)
        } else if end > self.buf.len() {
            Ok(Status::Partial)
        } else {
            Ok(Status::Complete(()))
        }
    }

    /// The line starting at `pos` (without its CRLF); `pos` moves past it.
    fn line(&mut self) -> Step<&'a [u8]> {
        let start = self.pos;
        let line_cap = start
            .saturating_add(self.limits.max_line_len)
            .saturating_add(1);
        let cap = line_cap.min(self.limits.max_reply_len);
        let avail = self.buf.len().min(cap);
        let window = self.buf.get(start..avail).unwrap_or(&[]);
        match window.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(i) if window[i] == b'\n' => Err(RespError::BadLineEnd),
            Some(i) => {
                let cr = start + i;
                if let Status::Partial = self.need(cr + 2)? {
                    return Ok(Status::Partial);
                }
                if self.buf[cr + 1] != b'\n' {
                    return Err(RespError::BadLineEnd);
                }
                self.pos = cr + 2;
                Ok(Status::Complete(&self.buf[start..cr]))
            }
            None if avail == cap && cap == line_cap => Err(RespError::LineTooLong),
            None if avail == cap => Err(RespError::ReplyTooLong),
            None => Ok(Status::Partial),
        }
    }

    fn value<const BUILD: bool>(&mut self, depth: usize) -> Step<Option<Reply>> {
        self.elements += 1;
        if self.elements > self.limits.max_elements {
            return Err(RespError::TooManyElements);
        }
        if let Status::Partial = self.need(self.pos + 1)? {
            return Ok(Status::Partial);
        }
        let kind = self.buf[self.pos];
        if !matches!(kind, b'+' | b'-' | b':' | b'$' | b'*') {
            return Err(RespError::UnknownType(kind));
        }
        self.pos += 1;
        let line = match self.line()? {
            Status::Complete(line) => line,
            Status::Partial => return Ok(Status::Partial),
        };
        let reply = match kind {
            b'+' => BUILD.then(|| Reply::Simple(line.to_vec())),
            b'-' => BUILD.then(|| Reply::Error(line.to_vec())),
            b':' => {
                let n = parse_i64(line)?;
                BUILD.then_some(Reply::Integer(n))
            }
            b'$' => {
                let Some(len) = parse_len(line)? else {
                    return Ok(Status::Complete(BUILD.then_some(Reply::Bulk(None))));
                };
                if len > self.limits.max_bulk_len {
                    return Err(RespError::BulkTooLong);
                }
                let start = self.pos;
                let end = start.saturating_add(len).saturating_add(2);
                if let Status::Partial = self.need(end)? {
                    return Ok(Status::Partial);
                }
                if &self.buf[end - 2..end] != b"\r\n" {
                    return Err(RespError::BadBulkEnd);
                }
                self.pos = end;
                BUILD.then(|| Reply::Bulk(Some(self.buf[start..end - 2].to_vec())))
            }
            _ => {
                let Some(len) = parse_len(line)? else {
                    return Ok(Status::Complete(BUILD.then_some(Reply::Array(None))));
                };
                if len > self.limits.max_array_len {
                    return Err(RespError::ArrayTooLong);
                }
                if len > 0 && depth + 1 > self.limits.max_depth.min(DEPTH_CEILING) {
                    return Err(RespError::TooDeep);
                }
                let mut items = Vec::new();
                if BUILD {
                    items.reserve_exact(len);
                }
                for _ in 0..len {
                    match self.value::<BUILD>(depth + 1)? {
                        Status::Complete(item) => items.extend(item),
                        Status::Partial => return Ok(Status::Partial),
                    }
                }
                BUILD.then_some(Reply::Array(Some(items)))
            }
        };
        Ok(Status::Complete(reply))
    }
}

/// `-?[0-9]+` within `i64`.
fn parse_i64(line: &[u8]) -> Result<i64, RespError> {
    let (negative, digits) = match line {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, line),
    };
    if digits.is_empty() {
        return Err(RespError::BadNumber);
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadNumber);
        }
        let d = i64::from(d - b'0');
        n = n
            .checked_mul(10)
            .and_then(|n| {
                if negative {
                    n.checked_sub(d)
                } else {
                    n.checked_add(d)
                }
            })
            .ok_or(RespError::BadNumber)?;
    }
    Ok(n)
}

/// A bulk or array length: `None` for -1 (null).
fn parse_len(line: &[u8]) -> Result<Option<usize>, RespError> {
    match parse_i64(line)? {
        -1 => Ok(None),
        n if n < 0 => Err(RespError::BadLength),
        // A length past the address space is over any limit.
        n => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
    }
}

/// Appends a command, an array of bulk strings, to `out`: the only form
/// of request redis-server needs. Nothing is allocated but `out`'s growth.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(command_len(args));
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The bytes [`encode_command`] appends for `args`, to check a bound
/// before encoding.
pub fn command_len(args: &[&[u8]]) -> usize {
    let header = |n: usize| 1 + decimal_len(n) + 2;
    args.iter().fold(header(args.len()), |sum, arg| {
        sum + header(arg.len()) + arg.len() + 2
    })
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    let mut digits = [0u8; 20];
    out.extend_from_slice(format_u64(n as u64, &mut digits));
    out.extend_from_slice(b"\r\n");
}

fn decimal_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Writes `n` in decimal into `buf`, for numeric arguments (`MAXLEN`,
/// database numbers) without a `String`.
pub fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        // n % 10 < 10: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        buf[i] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }

    pub(crate) fn array(items: Vec<Reply>) -> Reply {
        Reply::Array(Some(items))
    }

    /// Decodes `input` whole, then checks that every prefix is `Partial`
    /// (for a complete reply) or `Partial`/the same error, and that bytes
    /// after the reply do not change it.
    fn decode_all_splits(input: &[u8], limits: &Limits) -> Step<(Reply, usize)> {
        let whole = decode(input, limits);
        for cut in 0..input.len() {
            let prefix = decode(&input[..cut], limits);
            match &whole {
                Ok(Status::Complete((_, n))) if cut >= *n => assert_eq!(prefix, whole),
                Ok(_) => assert_eq!(prefix, Ok(Status::Partial), "prefix of {cut} bytes"),
                Err(_) => assert!(
                    prefix == Ok(Status::Partial) || prefix == whole,
                    "prefix of {cut} bytes: {prefix:?} vs {whole:?}"
                ),
            }
        }
        if let Ok(Status::Complete((reply, n))) = &whole {
            let mut longer = input.to_vec();
            longer.extend_from_slice(b"+next\r\n");
            assert_eq!(
                decode(&longer, limits),
                Ok(Status::Complete((reply.clone(), *n)))
            );
            assert_eq!(check(input, limits), Ok(Status::Complete(*n)));
        }
        whole
    }

    fn complete(input: &[u8]) -> Reply {
        match decode_all_splits(input, &Limits::default()) {
            Ok(Status::Complete((reply, n))) => {
                assert_eq!(n, input.len(), "consumed");
                reply
            }
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn error(input: &[u8], limits: &Limits) -> RespError {
        match decode_all_splits(input, limits) {
            Err(e) => e,
            other => panic!("{input:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn simple_string_error_integer() {
        assert_eq!(complete(b"+OK\r\n"), Reply::Simple(b"OK".to_vec()));
        assert_eq!(complete(b"+\r\n"), Reply::Simple(Vec::new()));
        let e = complete(b"-NOSCRIPT No matching script. Please use EVAL.\r\n");
        assert!(e.is_error_code("NOSCRIPT"));
        assert!(!e.is_error_code("ERR"));
        assert_eq!(complete(b":0\r\n"), Reply::Integer(0));
        assert_eq!(complete(b":-1\r\n"), Reply::Integer(-1));
        assert_eq!(
            complete(b":9223372036854775807\r\n"),
            Reply::Integer(i64::MAX)
        );
        assert_eq!(
            complete(b":-9223372036854775808\r\n"),
            Reply::Integer(i64::MIN)
        );
    }

    #[test]
    fn bulk_strings() {
        assert_eq!(complete(b"$3\r\nfoo\r\n"), bulk(b"foo"));
        assert_eq!(complete(b"$0\r\n\r\n"), bulk(b""));
        assert_eq!(complete(b"$-1\r\n"), Reply::Bulk(None));
        // Binary-safe: CR, LF and NUL inside the payload.
        assert_eq!(complete(b"$4\r\n\r\n\x00\n\r\n"), bulk(b"\r\n\x00\n"));
    }

    #[test]
    fn arrays_nested_and_null() {
        assert_eq!(complete(b"*0\r\n"), array(vec![]));
        assert_eq!(complete(b"*-1\r\n"), Reply::Array(None));
        // A pub/sub push as redis-server sends it.
        assert_eq!(
            complete(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"),
            array(vec![bulk(b"message"), bulk(b"ch"), bulk(b"hello")])
        );
        // XRANGE: [[id, [field, value]]], with a null and an error inside.
        assert_eq!(
            complete(b"*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nm\r\n$2\r\nhi\r\n*3\r\n$-1\r\n*-1\r\n-ERR x\r\n"),
            array(vec![
                array(vec![bulk(b"1-0"), array(vec![bulk(b"m"), bulk(b"hi")])]),
                array(vec![
                    Reply::Bulk(None),
                    Reply::Array(None),
                    Reply::Error(b"ERR x".to_vec())
                ]),
            ])
        );
    }

    #[test]
    fn consumed_length_leaves_the_next_reply() {
        let input = b"+OK\r\n:1\r\n$1\r\nx\r\n";
        let limits = Limits::default();
        let mut at = 0;
        let mut replies = Vec::new();
        while let Ok(Status::Complete((reply, n))) = decode(&input[at..], &limits) {
            replies.push(reply);
            at += n;
        }
        assert_eq!(at, input.len());
        assert_eq!(
            replies,
            [Reply::Simple(b"OK".to_vec()), Reply::Integer(1), bulk(b"x")]
        );
        assert_eq!(decode(b"", &limits), Ok(Status::Partial));
    }

    #[test]
    fn a_reply_in_a_log_line_is_cut_short() {
        let small = Reply::Array(Some(vec![Reply::Integer(1), Reply::Bulk(None)]));
        assert_eq!(small.brief(), "[Integer(1), Bulk(null)]");
        let huge = Reply::Array(Some(vec![
            Reply::Bulk(Some(
                "é".repeat(1 << 20).into_bytes()
            ));
            3
        ]));
        let brief = huge.brief();
        assert!(
            brief.len() <= LOGGED_REPLY_BYTES + 3,
            "{} bytes",
            brief.len()
        );
        assert!(brief.starts_with("[Bulk(\"ééé"), "{brief}");
        assert!(brief.ends_with("..."), "{brief}");
    }

    #[test]
    fn malformed_input_is_an_error() {
        let l = Limits::default();
        assert_eq!(error(b"!3\r\nfoo\r\n", &l), RespError::UnknownType(b'!'));
        // RESP3 types are not spoken.
        assert_eq!(error(b">3\r\n", &l), RespError::UnknownType(b'>'));
        assert_eq!(error(b"_\r\n", &l), RespError::UnknownType(b'_'));
        assert_eq!(error(b"+OK\n", &l), RespError::BadLineEnd);
        assert_eq!(error(b"+OK\rX", &l), RespError::BadLineEnd);
        assert_eq!(error(b":\r\n", &l), RespError::BadNumber);
        assert_eq!(error(b":-\r\n", &l), RespError::BadNumber);
        assert_eq!(error(b":+1\r\n", &l), RespError::BadNumber);
        assert_eq!(error(b":1 \r\n", &l), RespError::BadNumber);
        assert_eq!(error(b":9223372036854775808\r\n", &l), RespError::BadNumber);
        assert_eq!(error(b"$-2\r\n", &l), RespError::BadLength);
        assert_eq!(error(b"*-5\r\n", &l), RespError::BadLength);
        assert_eq!(error(b"$3\r\nfooX\r\n", &l), RespError::BadBulkEnd);
        assert_eq!(error(b"$3\r\nfoo\n\r", &l), RespError::BadBulkEnd);
        // An error inside an array is found as soon as it arrives.
        assert_eq!(
            error(b"*2\r\n:1\r\n?\r\n", &l),
            RespError::UnknownType(b'?')
        );
    }

    #[test]
    fn limits_refuse_before_the_bytes_arrive() {
        let l = Limits {
            max_bulk_len: 4,
            max_array_len: 3,
            max_elements: 5,
            max_depth: 2,
            max_line_len: 6,
            max_reply_len: 30,
        };
        // Declared lengths are refused on the header alone.
        assert_eq!(decode(b"$5\r\n", &l), Err(RespError::BulkTooLong));
        assert!(matches!(
            decode(b"$4\r\nabcd\r\n", &l),
            Ok(Status::Complete(_))
        ));
        assert_eq!(
            decode(b"$99999999999999999999\r\n", &Limits::default()),
            Err(RespError::BadNumber)
        );
        assert_eq!(
            decode(b"$9223372036854775807\r\n", &Limits::default()),
            Err(RespError::BulkTooLong)
        );
        assert_eq!(decode(b"*4\r\n", &l), Err(RespError::ArrayTooLong));
        assert_eq!(
            error(b"*3\r\n*3\r\n:1\r\n:2\r\n:3\r\n:4\r\n", &l),
            RespError::TooManyElements
        );
        // Depth 2 is allowed, 3 is not; empty arrays open no level.
        assert!(matches!(
            decode(b"*1\r\n*1\r\n*0\r\n", &l),
            Ok(Status::Complete(_))
        ));
        assert_eq!(error(b"*1\r\n*1\r\n*1\r\n", &l), RespError::TooDeep);
        // A line without its end is refused once it is too long.
        assert_eq!(decode(b"+abcdef", &l), Ok(Status::Partial));
        assert_eq!(error(b"+abcdefg", &l), RespError::LineTooLong);
        assert!(matches!(
            decode(b"+abcdef\r\n", &l),
            Ok(Status::Complete(_))
        ));
        // The whole reply's size, counting what it declares.
        assert_eq!(
            error(b"*3\r\n$4\r\naaaa\r\n$4\r\nbbbb\r\n$4\r\ncc", &l),
            RespError::ReplyTooLong
        );
        assert_eq!(
            decode(b"*3\r\n$4\r\naaaa\r\n$4\r\nbbbb\r\n$4\r\n", &l),
            Err(RespError::ReplyTooLong)
        );
    }

    /// A hostile stream of `*1` a million deep is refused at the limit,
    /// without recursion past it.
    #[test]
    fn deep_nesting_does_not_overflow() {
        let input = b"*1\r\n".repeat(1_000_000);
        let limits = Limits {
            max_depth: usize::MAX,
            ..Limits::default()
        };
        assert_eq!(decode(&input, &limits), Err(RespError::TooDeep));
    }

    #[test]
    fn encodes_commands_as_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&mut out, &[b"SET", b"key", b"v\r\n"]);
        assert_eq!(
            out,
            b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$3\r\nv\r\n\r\n".as_slice()
        );
        assert_eq!(command_len(&[b"SET", b"key", b"v\r\n"]), out.len());
        out.clear();
        let big = vec![b'x'; 12345];
        encode_command(&mut out, &[b"", &big]);
        assert_eq!(command_len(&[b"", &big]), out.len());
        assert!(out.starts_with(b"*2\r\n$0\r\n\r\n$12345\r\nxxx"));
        // Appends: what was there stays.
        encode_command(&mut out, &[b"PING"]);
        assert!(out.ends_with(b"xx\r\n*1\r\n$4\r\nPING\r\n"));
    }

    #[test]
    fn formats_numbers() {
        let mut buf = [0u8; 20];
        assert_eq!(format_u64(0, &mut buf), b"0");
        assert_eq!(format_u64(1000, &mut buf), b"1000");
        assert_eq!(format_u64(u64::MAX, &mut buf), b"18446744073709551615");
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(9), 1);
        assert_eq!(decimal_len(10), 2);
    }
}
