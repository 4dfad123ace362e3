//! `Sec-WebSocket-Extensions` (RFC 6455 §9.1) and the negotiation of
//! `permessage-deflate` (RFC 7692 §5, §7), as pure functions.
//!
//! [`parse`] reads the header's values (one per header line; RFC 7230
//! §3.2.2 makes several lines the same as one line joined with `,`) into
//! [`Offer`]s in one linear pass over the bytes: no regex, no
//! backtracking, each byte looked at once (the failures of ws
//! CVE-2021-32640 and websocket-extensions CVE-2020-7662 were regexes that
//! backtracked on crafted values). At most [`MAX_OFFERS`] offers and
//! [`MAX_PARAMS`] parameters per offer are accepted.
//!
//! The grammar, from RFC 6455 §9.1 with RFC 7230's `token`,
//! `quoted-string` and optional whitespace around separators:
//!
//! ```text
//! extension-list = 1#extension
//! extension      = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//!     ; When using the quoted-string syntax variant, the value
//!     ; after quoted-string unescaping MUST conform to the
//!     ; 'token' ABNF.
//! ```
//!
//! Empty list elements (`a, , b`) are skipped, as RFC 7230 §7 asks ("a
//! recipient MUST parse and ignore a reasonable number of empty list
//! elements"). Names are compared exactly, as written in the RFCs.
//!
//! # Malformed is 400; unacceptable is declined
//!
//! Two different failures, two answers:
//!
//! - A header value that does not match the grammar above is a handshake
//!   that does not match RFC 6455 §4.2.1, for which "the server MUST stop
//!   processing the client's handshake and return an HTTP response with an
//!   appropriate error code (such as 400 Bad Request)". [`parse`] and
//!   [`negotiate`] return [`Malformed`] and the handshake answers `400`
//!   (ws and Python's websockets do the same). So does a header past the
//!   offer or parameter bounds.
//! - A well-formed `permessage-deflate` offer this server cannot accept is
//!   declined, not refused: RFC 7692 §7: "A server MUST decline an
//!   extension negotiation offer for this extension if any of the
//!   following conditions are met: The negotiation offer contains an
//!   extension parameter not defined for use in an offer. The negotiation
//!   offer contains an extension parameter with an invalid value. The
//!   negotiation offer contains multiple extension parameters with the
//!   same name. The server doesn't support the offered configuration."
//!   The next offer is tried (§5: "The order of elements is important as
//!   it specifies the client's preference"); with none left the `101` has
//!   no `Sec-WebSocket-Extensions` and the connection runs uncompressed.
//!
//! # What the server answers
//!
//! Always `server_no_context_takeover` and `client_no_context_takeover`,
//! which RFC 7692 lets the server add unasked (§7.1.1.1: "A server MAY
//! include the "server_no_context_takeover" extension parameter in an
//! extension negotiation response even if the extension negotiation offer
//! being accepted by the extension negotiation response didn't include
//! the "server_no_context_takeover" extension parameter"; §7.1.1.2: "A
//! server MAY include the "client_no_context_takeover" extension parameter
//! in an extension negotiation response"). Every message is then
//! compressed on its own: a broadcast is compressed once for every
//! recipient, and an idle connection keeps no compression state.
//!
//! `server_max_window_bits=N` is echoed when offered (§7.1.2.1: "A server
//! accepts an extension negotiation offer with this parameter by including
//! the "server_max_window_bits" extension parameter in the extension
//! negotiation response to send back to the client with the same or
//! smaller value as the offer"). The server keeps its promise without a
//! second compressor: with no context takeover, a match in a message of
//! `L` bytes reaches back less than `L` bytes, so a message of at most
//! `2^N` bytes compressed with any window fits a window of `2^N`; longer
//! messages go to that recipient uncompressed (see
//! [`Negotiated::may_compress`]).
//!
//! `client_max_window_bits=N` is echoed when offered with a value (the
//! client then keeps to it) and left out when offered without one, or not
//! offered (§7.1.2.2: "If a received extension negotiation offer doesn't
//! have the "client_max_window_bits" extension parameter, the
//! corresponding extension negotiation response to the offer MUST NOT
//! include the "client_max_window_bits" extension parameter"). The
//! server's inflater takes any window up to 15 bits, so no value is ever
//! refused.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Most extension offers accepted in one request (over all its
/// `Sec-WebSocket-Extensions` lines). Browsers send one or two.
pub const MAX_OFFERS: usize = 32;

/// Most parameters accepted on one offer. `permessage-deflate` defines
/// four.
pub const MAX_PARAMS: usize = 16;

/// The extension this module negotiates (RFC 7692 §7).
pub const PERMESSAGE_DEFLATE: &str = "permessage-deflate";

/// One parameter of an offer: `name` or `name=value`. A quoted value is
/// given unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param<'h> {
    pub name: &'h str,
    pub value: Option<Cow<'h, str>>,
}

/// One element of the extension list: an extension name and its
/// parameters, in the order written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offer<'h> {
    pub name: &'h str,
    pub params: Vec<Param<'h>>,
}

/// Why a `Sec-WebSocket-Extensions` header is refused (with `400`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// The value does not match the RFC 6455 §9.1 grammar; `line` is the
    /// index of the header line, `at` the byte offset within it.
    Syntax { line: usize, at: usize },
    /// More than [`MAX_OFFERS`] offers.
    TooManyOffers,
    /// An offer with more than [`MAX_PARAMS`] parameters.
    TooManyParams,
}

impl Malformed {
    /// The reason given in the `400` response and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::Syntax { .. } => "malformed Sec-WebSocket-Extensions header",
            Malformed::TooManyOffers => "too many extensions offered",
            Malformed::TooManyParams => "too many extension parameters",
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Syntax { line, at } => {
                write!(f, "{} (line {line}, byte {at})", self.reason())
            }
            _ => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for Malformed {}

/// What was agreed for one connection. `None` means the parameter was
/// not offered (or, for the client's window, offered without a value): a
/// window of 15 bits, and the parameter absent from the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// The largest LZ77 window (as a power of two) that the server's
    /// messages may use, as the client asked.
    pub server_max_window_bits: Option<u8>,
    /// The largest window the client promised to use, echoed back.
    pub client_max_window_bits: Option<u8>,
}

impl Negotiated {
    /// The server's window in bits (15 when the client did not limit it).
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(15)
    }

    /// Whether a message of `len` uncompressed bytes, compressed on its own
    /// with any window, keeps to the window this client asked for: its
    /// matches reach back less than `len` bytes, so it does when `len` is
    /// at most the window. A longer message goes to this client plain.
    pub fn may_compress(&self, len: usize) -> bool {
        // RFC 1951 §3.2.5: distances are at most 32,768 (2^15): a 15-bit
        // window takes any deflate stream.
        self.server_window_bits() >= 15 || len <= 1usize << self.server_window_bits()
    }

    /// The `Sec-WebSocket-Extensions` value of the `101` response.
    pub fn response(&self) -> String {
        let mut out = String::with_capacity(120);
        out.push_str(PERMESSAGE_DEFLATE);
        out.push_str("; server_no_context_takeover; client_no_context_takeover");
        if let Some(bits) = self.server_max_window_bits {
            let _ = write!(out, "; server_max_window_bits={bits}");
        }
        if let Some(bits) = self.client_max_window_bits {
            let _ = write!(out, "; client_max_window_bits={bits}");
        }
        out
    }
}

/// Parses every `Sec-WebSocket-Extensions` value of a request (one per
/// header line, in order) into its offers.
pub fn parse<'h>(values: impl IntoIterator<Item = &'h [u8]>) -> Result<Vec<Offer<'h>>, Malformed> {
    let mut offers = Vec::new();
    for (line, value) in values.into_iter().enumerate() {
        parse_line(value, line, &mut offers)?;
    }
    Ok(offers)
}

/// Picks the first acceptable `permessage-deflate` offer of a request's
/// `Sec-WebSocket-Extensions` values. `Ok(None)`: nothing acceptable was
/// offered (answer without the header); `Err`: refuse with `400`.
pub fn negotiate<'h>(
    values: impl IntoIterator<Item = &'h [u8]>,
) -> Result<Option<Negotiated>, Malformed> {
    // The whole header is parsed before anything is accepted: a malformed
    // tail refuses the handshake even after an acceptable offer.
    let offers = parse(values)?;
    Ok(offers.iter().find_map(accept))
}

/// RFC 7692 §7: the terms of one `permessage-deflate` offer, or `None` to
/// decline it.
pub fn accept(offer: &Offer<'_>) -> Option<Negotiated> {
    if offer.name != PERMESSAGE_DEFLATE {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreed = Negotiated {
        server_max_window_bits: None,
        client_max_window_bits: None,
    };
    for param in &offer.params {
        let value = param.value.as_deref();
        let slot = match param.name {
            // §7.1.1.1, §7.1.1.2: "This extension parameter has no value."
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            // §7.1.2.1: "This parameter has a decimal integer value without
            // leading zeroes between 8 to 15, inclusive".
            "server_max_window_bits" => {
                agreed.server_max_window_bits = Some(window_bits(value?)?);
                2
            }
            // §7.1.2.2: "This parameter has no value or a decimal integer
            // value without leading zeroes between 8 to 15 inclusive".
            "client_max_window_bits" => {
                agreed.client_max_window_bits = match value {
                    None => None,
                    Some(v) => Some(window_bits(v)?),
                };
                3
            }
            // An unknown parameter, or a value where none is allowed.
            _ => return None,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None; // the same parameter twice
        }
    }
    Some(agreed)
}

/// `8` to `15`, written without leading zeroes.
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// RFC 7230 §3.2.6: `tchar`.
fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z')
}

/// RFC 7230 §3.2.6: `qdtext`.
fn is_qdtext(b: u8) -> bool {
    matches!(b, b'\t' | b' ' | 0x21 | 0x23..=0x5B | 0x5D..=0x7E | 0x80..=0xFF)
}

/// A cursor over one header value; every method moves forward only.
struct Cursor<'h> {
    bytes: &'h [u8],
    at: usize,
    line: usize,
}

impl<'h> Cursor<'h> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn error(&self) -> Malformed {
        Malformed::Syntax {
            line: self.line,
            at: self.at,
        }
    }

    /// OWS: spaces and tabs.
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// One or more `tchar`s.
    fn token(&mut self) -> Result<&'h str, Malformed> {
        let start = self.at;
        while self.peek().is_some_and(is_tchar) {
            self.at += 1;
        }
        if self.at == start {
            return Err(self.error());
        }
        // Every tchar is ASCII.
        std::str::from_utf8(&self.bytes[start..self.at]).map_err(|_| self.error())
    }

    /// A quoted-string (the cursor on its opening quote), unescaped; its
    /// content must be a token (RFC 6455 §9.1).
    fn quoted_token(&mut self) -> Result<Cow<'h, str>, Malformed> {
        let open = self.at;
        self.at += 1;
        let start = self.at;
        let mut unescaped: Option<String> = None;
        loop {
            let Some(b) = self.peek() else {
                return Err(self.error()); // no closing quote
            };
            let byte = match b {
                b'"' => break,
                b'\\' => {
                    self.at += 1;
                    match self.peek() {
                        // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                        Some(c @ (b'\t' | b' ' | 0x21..=0x7E | 0x80..=0xFF)) => {
                            let done = &self.bytes[start..self.at - 1];
                            let s = unescaped.get_or_insert_with(|| {
                                // `done` holds only tchars so far (checked below).
                                String::from_utf8_lossy(done).into_owned()
                            });
                            if !is_tchar(c) {
                                return Err(self.error());
                            }
                            s.push(char::from(c));
                            self.at += 1;
                            continue;
                        }
                        _ => return Err(self.error()),
                    }
                }
                b if is_qdtext(b) => b,
                _ => return Err(self.error()),
            };
            // qdtext, but the unescaped value must be a token.
            if !is_tchar(byte) {
                return Err(self.error());
            }
            if let Some(s) = &mut unescaped {
                s.push(char::from(byte));
            }
            self.at += 1;
        }
        let end = self.at;
        self.at += 1; // the closing quote
        if end == start || unescaped.as_ref().is_some_and(String::is_empty) {
            // An empty token.
            self.at = open;
            return Err(self.error());
        }
        Ok(match unescaped {
            Some(s) => Cow::Owned(s),
            None => Cow::Borrowed(
                std::str::from_utf8(&self.bytes[start..end]).map_err(|_| self.error())?,
            ),
        })
    }
}

/// Parses one header line's list of extensions onto `offers`.
fn parse_line<'h>(
    value: &'h [u8],
    line: usize,
    offers: &mut Vec<Offer<'h>>,
) -> Result<(), Malformed> {
    let mut c = Cursor {
        bytes: value,
        at: 0,
        line,
    };
    loop {
        c.skip_ows();
        match c.peek() {
            None => return Ok(()),
            Some(b',') => {
                c.at += 1; // an empty element
                continue;
            }
            Some(_) => {}
        }
        if offers.len() == MAX_OFFERS {
            return Err(Malformed::TooManyOffers);
        }
        let name = c.token()?;
        let mut params = Vec::new();
        c.skip_ows();
        while c.peek() == Some(b';') {
            c.at += 1;
            c.skip_ows();
            let name = c.token()?;
            c.skip_ows();
            let value = if c.peek() == Some(b'=') {
                c.at += 1;
                c.skip_ows();
                let value = match c.peek() {
                    Some(b'"') => c.quoted_token()?,
                    _ => Cow::Borrowed(c.token()?),
                };
                c.skip_ows();
                Some(value)
            } else {
                None
            };
            if params.len() == MAX_PARAMS {
                return Err(Malformed::TooManyParams);
            }
            params.push(Param { name, value });
        }
        offers.push(Offer { name, params });
        match c.peek() {
            None => return Ok(()),
            Some(b',') => c.at += 1,
            Some(_) => return Err(c.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(s: &str) -> Result<Vec<Offer<'_>>, Malformed> {
        parse([s.as_bytes()])
    }

    fn neg(lines: &[&str]) -> Result<Option<Negotiated>, Malformed> {
        negotiate(lines.iter().map(|l| l.as_bytes()))
    }

    fn response(lines: &[&str]) -> Option<String> {
        neg(lines).expect("well-formed").map(|n| n.response())
    }

    fn p<'a>(name: &'a str, value: Option<&'a str>) -> Param<'a> {
        Param {
            name,
            value: value.map(Cow::Borrowed),
        }
    }

    const BOTH: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn offers_params_and_values_parse() {
        let offers =
            one("permessage-deflate; client_max_window_bits, foo;a=1; b=\"x\" ;c ,bar").unwrap();
        assert_eq!(offers.len(), 3);
        assert_eq!(offers[0].name, "permessage-deflate");
        assert_eq!(offers[0].params, vec![p("client_max_window_bits", None)]);
        assert_eq!(offers[1].name, "foo");
        assert_eq!(
            offers[1].params,
            vec![p("a", Some("1")), p("b", Some("x")), p("c", None)]
        );
        assert_eq!(
            offers[2],
            Offer {
                name: "bar",
                params: vec![]
            }
        );
    }

    #[test]
    fn quoted_values_are_unescaped_and_must_be_tokens() {
        let offers = one(r#"e; a="10"; b="1\0"; c = "x-y" "#).unwrap();
        assert_eq!(
            offers[0].params,
            vec![p("a", Some("10")), p("b", Some("10")), p("c", Some("x-y"))]
        );
        for bad in [
            r#"e; a="1 0""#,    // a space is qdtext but not a token
            r#"e; a="""#,       // empty
            r#"e; a="\ ""#,     // an escaped space is not a token either
            r#"e; a="10"#,      // unterminated
            r#"e; a="10\"#,     // unterminated after a backslash
            r#"e; a="1,0""#,    // a comma is no tchar
            "e; a=\"1\u{7f}\"", // DEL is not qdtext
        ] {
            assert!(matches!(one(bad), Err(Malformed::Syntax { .. })), "{bad}");
        }
    }

    #[test]
    fn empty_elements_and_whitespace_are_allowed() {
        assert_eq!(one("").unwrap(), vec![]);
        assert_eq!(one(" , ,\t,").unwrap(), vec![]);
        let offers = one(",a ,\t b\t;\tx\t=\t1\t,").unwrap();
        assert_eq!(offers.len(), 2);
        assert_eq!(offers[1].params, vec![p("x", Some("1"))]);
    }

    #[test]
    fn syntax_errors_are_malformed() {
        for bad in [
            ";",
            "a;",
            "a; ",
            "a;;b",
            "a; =1",
            "a; b=",
            "a; b= ,c",
            "a b",
            "a; b c",
            "a; b=1 2",
            "a; b=\"1\"2",
            "\"a\"",
            "a=1",
            "a/b",
            "a; b=1/2",
            "a, ; b",
            "a\u{e9}",
            "a\r\n b",
        ] {
            assert!(
                matches!(one(bad), Err(Malformed::Syntax { .. })),
                "{bad:?} parsed"
            );
        }
        assert_eq!(one("a, b c"), Err(Malformed::Syntax { line: 0, at: 5 }));
        assert_eq!(
            parse(["a".as_bytes(), "b;".as_bytes()]),
            Err(Malformed::Syntax { line: 1, at: 2 })
        );
    }

    #[test]
    fn offers_and_params_are_bounded() {
        let many = vec!["x"; MAX_OFFERS].join(", ");
        assert_eq!(one(&many).unwrap().len(), MAX_OFFERS);
        assert_eq!(one(&format!("{many}, x")), Err(Malformed::TooManyOffers));
        // Split across lines, the bound is on the request.
        let lines = vec!["x"; MAX_OFFERS + 1];
        assert_eq!(
            parse(lines.iter().map(|l| l.as_bytes())),
            Err(Malformed::TooManyOffers)
        );
        let params = format!("x{}", "; p".repeat(MAX_PARAMS));
        assert_eq!(one(&params).unwrap()[0].params.len(), MAX_PARAMS);
        assert_eq!(one(&format!("{params}; p")), Err(Malformed::TooManyParams));
    }

    #[test]
    fn several_lines_are_one_list() {
        let lines = [
            "foo, permessage-deflate; server_max_window_bits=10",
            "",
            "permessage-deflate",
        ];
        let split = parse(lines.iter().map(|l| l.as_bytes())).unwrap();
        let joined = lines.join(", ");
        assert_eq!(split, one(&joined).unwrap());
        assert_eq!(split.len(), 3);
    }

    #[test]
    fn hostile_inputs_are_linear_and_bounded() {
        // The shapes that made backtracking parsers quadratic or worse.
        let n = 100_000;
        let spaces = format!("a;{}", " ".repeat(n));
        assert!(one(&spaces).is_err());
        let quotes = format!("a; b=\"{}", "\\a".repeat(n));
        assert!(one(&quotes).is_err());
        let params = format!("a{}", ";b".repeat(n));
        assert_eq!(one(&params), Err(Malformed::TooManyParams));
        let commas = ",".repeat(n);
        assert_eq!(one(&commas).unwrap(), vec![]);
        let tokens = "a".repeat(n);
        assert_eq!(one(&tokens).unwrap()[0].name.len(), n);
    }

    #[test]
    fn plain_offers_get_both_no_context_takeovers() {
        // RFC 7692 §5.1's example and the offers browsers send.
        for offer in [
            "permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate;server_no_context_takeover;client_no_context_takeover",
            "x-webkit-deflate-frame, permessage-deflate",
        ] {
            assert_eq!(response(&[offer]).as_deref(), Some(BOTH), "{offer}");
        }
        assert_eq!(
            neg(&["permessage-deflate"]).unwrap(),
            Some(Negotiated {
                server_max_window_bits: None,
                client_max_window_bits: None,
            })
        );
    }

    #[test]
    fn window_bits_are_honoured() {
        // RFC 7692 §7.1.2's examples, and quoted values.
        assert_eq!(
            response(&["permessage-deflate; client_max_window_bits; server_max_window_bits=10"]),
            Some(format!("{BOTH}; server_max_window_bits=10"))
        );
        assert_eq!(
            response(&["permessage-deflate; client_max_window_bits=\"12\""]),
            Some(format!("{BOTH}; client_max_window_bits=12"))
        );
        let both =
            neg(&["permessage-deflate; server_max_window_bits=8; client_max_window_bits=15"])
                .unwrap()
                .unwrap();
        assert_eq!(both.server_max_window_bits, Some(8));
        assert_eq!(both.client_max_window_bits, Some(15));
        assert_eq!(both.server_window_bits(), 8);
        assert!(both.may_compress(256));
        assert!(!both.may_compress(257));
        let free = neg(&["permessage-deflate"]).unwrap().unwrap();
        assert!(free.may_compress(32 * 1024));
        // A 15-bit window takes any deflate stream, whatever its length.
        assert!(free.may_compress(1 << 20));
        for bits in 8..=15 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            assert_eq!(
                neg(&[&offer]).unwrap().unwrap().server_max_window_bits,
                Some(bits)
            );
        }
    }

    #[test]
    fn the_first_acceptable_offer_wins() {
        // RFC 7692 §5.1: a client's fallbacks, most preferred first.
        let lines = ["permessage-deflate; server_max_window_bits=7, permessage-deflate; server_max_window_bits=9, permessage-deflate"];
        assert_eq!(
            response(&lines),
            Some(format!("{BOTH}; server_max_window_bits=9"))
        );
        let split = [
            "permessage-deflate; foo",
            "permessage-deflate; client_max_window_bits=10",
        ];
        assert_eq!(
            response(&split),
            Some(format!("{BOTH}; client_max_window_bits=10"))
        );
    }

    #[test]
    fn unacceptable_offers_are_declined() {
        for offer in [
            "deflate-frame",
            "Permessage-Deflate",
            "permessage-deflate; foo",
            "permessage-deflate; foo=1",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=\"x\"",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; client_max_window_bits=150",
            "permessage-deflate; client_max_window_bits=\"1\\6\"",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        ] {
            assert_eq!(neg(&[offer]), Ok(None), "{offer} accepted");
        }
        assert_eq!(neg(&[]), Ok(None));
    }

    #[test]
    fn a_malformed_tail_refuses_even_after_an_acceptable_offer() {
        let m = neg(&["permessage-deflate, x;"]);
        assert_eq!(m, Err(Malformed::Syntax { line: 0, at: 22 }));
        assert_eq!(
            m.unwrap_err().reason(),
            "malformed Sec-WebSocket-Extensions header"
        );
        assert!(neg(&["permessage-deflate", "\"x\""]).is_err());
    }
}
