//! The opening handshake (RFC 6455 §4.2) as pure functions: find the end
//! of an HTTP/1.1 request head, parse it with `httparse`, check it, and
//! build the `101` or the refusal that answers it.
//!
//! [`HeadScanner`] finds the blank line that ends a request head while it
//! trickles in, looking at each received byte a bounded number of times,
//! so a slow sender cannot make us redo work (the failure of
//! CVE-2023-43669, where every new byte re-parsed the whole head). On the
//! way, [`HeadScanner::scan_request`] reads the request line, so that
//! bytes that cannot be an HTTP request (a TLS ClientHello, an SSH banner,
//! noise) are refused at the first byte that shows it, instead of after
//! the handshake timeout. [`parse_head`] then runs once over the
//! complete head. Bytes after the blank line are not part of the request:
//! they are the first frames, and the caller keeps them.
//!
//! The server answers `GET` (the upgrade, the page, `/healthz`,
//! `/metrics`) and `HEAD` (the same without the body, for uptime checks),
//! nothing else. It never reads a request body, so it refuses any request
//! that declares one: a body we skip is a body a proxy in front of us
//! may read as the next request, and after a `101` it would be read as
//! frames (request smuggling).

use std::borrow::Cow;
use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

use crate::protocol::extensions::{self, Negotiated};

/// §1.3: the GUID appended to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// How the server is configured to answer handshakes.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Origins accepted besides the request's own host; `*` accepts any.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in no particular order: the client's
    /// order of preference decides.
    pub protocols: Vec<String>,
    /// The largest request head accepted, in bytes.
    pub max_head_bytes: usize,
    /// The most header lines accepted.
    pub max_headers: usize,
    /// Whether `permessage-deflate` offers are negotiated (RFC 7692).
    /// When false, `Sec-WebSocket-Extensions` is not read at all.
    pub compression: bool,
    /// The largest `POST` body accepted, in bytes; 0: `POST` is refused
    /// with `405` like any other method (the default, without the API).
    pub max_body_bytes: usize,
}

/// The methods the server answers. RFC 9110 §9.1: "All general-purpose
/// servers MUST support the methods GET and HEAD."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    /// RFC 9110 §9.3.2: "The HEAD method is identical to GET except that
    /// the server MUST NOT send content in the response."
    Head,
    /// Only with [`Policy::max_body_bytes`]: the backends' HTTP API.
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
        }
    }
}

/// What a complete, well-formed request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade, accepted.
    Upgrade(Upgrade),
    /// A plain HTTP `GET` without `Upgrade: websocket`, or a `HEAD` (whose
    /// answer is the `GET`'s without its body: see [`ParsedHead::method`]).
    Http(HttpRequest),
}

/// What [`parse_head`] read from a complete head.
#[derive(Debug, PartialEq, Eq)]
pub struct ParsedHead {
    /// The method, once the head parsed and the method is one we answer;
    /// kept for refusals too, since the answer to a `HEAD` never has a
    /// body, whatever its status. `None` when the head did not parse or
    /// asked for another method: then the answer carries its body.
    pub method: Option<Method>,
    pub outcome: Result<Request, Refusal>,
}

/// An accepted upgrade: what the connection was opened with.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The request target in origin form, e.g. `/` or `/rust?since=12`
    /// (an absolute-form `http://host/rust?since=12` is given as its path
    /// and query: see [`parse_target`]).
    pub target: String,
    /// The subprotocol selected (one the client offered), if any.
    pub protocol: Option<String>,
    /// The `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
    /// The `permessage-deflate` terms agreed, if the policy allows
    /// compression and the client offered something acceptable.
    pub deflate: Option<Negotiated>,
    /// The `Cookie` header's value (several are joined with `; `, as RFC
    /// 6265 §5.4 has a user agent send them), for the application.
    pub cookie: Option<String>,
}

/// A plain HTTP request, for the application to answer. A `HEAD` is
/// answered exactly like a `GET` of the same target: the connection
/// leaves the body out when it writes the response.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub method: Method,
    /// The request target in origin form, like [`Upgrade::target`].
    pub target: String,
    /// The `Authorization` header's value, if any.
    pub authorization: Option<String>,
    /// The `Content-Type` header's value, if any.
    pub content_type: Option<String>,
    /// A `POST`'s declared body length (`Content-Length`).
    pub body_len: usize,
    /// A `POST`'s body, once the connection has read all of it.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A `GET` or `HEAD` of `target`, without a body.
    pub fn get(method: Method, target: String) -> HttpRequest {
        HttpRequest {
            method,
            target,
            authorization: None,
            content_type: None,
            body_len: 0,
            body: Vec::new(),
        }
    }
}

/// An HTTP response, written whole then the connection is closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines, each without its CRLF.
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A `text/plain` response whose body is `text` plus a newline.
    pub fn text(status: u16, text: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: format!("{text}\n").into_bytes(),
        }
    }

    pub fn with_header(mut self, line: impl Into<String>) -> HttpResponse {
        self.headers.push(line.into());
        self
    }

    /// The response on the wire. Every response closes the connection,
    /// so it says so.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_for(Method::Get)
    }

    /// The response on the wire as the answer to a `method` request. To a
    /// `HEAD` it is the same head, `Content-Length` included, without the
    /// body: RFC 9110 §8.6, a server "MUST NOT send Content-Length in such
    /// a response unless its field value equals the decimal number of
    /// octets that would have been sent in the content of a response if
    /// the same request had used the GET method".
    pub fn to_bytes_for(&self, method: Method) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len()
        );
        for line in &self.headers {
            let _ = write!(head, "{line}\r\n");
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if method != Method::Head {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// Why a request was refused: the response to send and a reason to log.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub response: HttpResponse,
    pub reason: &'static str,
}

impl Refusal {
    /// A `text/plain` refusal whose body is the reason.
    pub fn new(status: u16, reason: &'static str) -> Refusal {
        Refusal {
            response: HttpResponse::text(status, reason),
            reason,
        }
    }

    fn version_required(status: u16, reason: &'static str) -> Refusal {
        let mut refusal = Refusal::new(status, reason);
        // §4.2.2: the server "MUST respond with ... a |Sec-WebSocket-Version|
        // header field indicating the version(s) the server is capable of
        // understanding".
        refusal
            .response
            .headers
            .push("Sec-WebSocket-Version: 13".into());
        refusal
    }

    /// The refusal for a head that grew past the limit before ending.
    pub fn head_too_large() -> Refusal {
        Refusal::new(431, "request head too large")
    }

    /// The refusal for a request head that did not arrive in time.
    pub fn timed_out() -> Refusal {
        Refusal::new(408, "request head not received in time")
    }
}

/// Finds the empty line that ends a request head as it arrives in pieces,
/// and (with [`HeadScanner::scan_request`]) whether its first line can be
/// an HTTP request line at all.
///
/// Line endings are read as `httparse` reads them (RFC 7230 §3.5: "a
/// recipient MAY recognize a single LF as a line terminator and ignore any
/// preceding CR"), so `\r\n\r\n`, `\n\n`, `\r\n\n` and `\n\r\n` all end
/// a head, and the scanner and the parser always agree on where the head
/// stops and the first frame starts. Each byte is looked at once, so total
/// work is linear in the bytes received however they are split, and every
/// verdict falls on the same byte however they are split.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadScanner {
    state: LineState,
    start: Start,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum LineState {
    /// Inside a line (or before any byte).
    #[default]
    InLine,
    /// Just after a line's LF: an empty line may follow.
    LineStart,
    /// A CR at the start of a line: its LF ends the head.
    EmptyLineCr,
}

impl LineState {
    /// The state after `byte`; `None` when `byte` ends the head.
    fn next(self, byte: u8) -> Option<LineState> {
        match (self, byte) {
            (LineState::LineStart | LineState::EmptyLineCr, b'\n') => None,
            (_, b'\n') => Some(LineState::LineStart),
            (LineState::LineStart, b'\r') => Some(LineState::EmptyLineCr),
            _ => Some(LineState::InLine),
        }
    }
}

/// The longest method read before the request is refused: beyond the
/// longest registered one (`UPDATEREDIRECTREF`, 17 bytes), with room.
pub const MAX_METHOD_LEN: usize = 32;

/// What an HTTP-version looks like, `#` for a digit. RFC 9112 §2.3:
/// "HTTP-version = HTTP-name "/" DIGIT "." DIGIT", "HTTP-name = %s"HTTP""
/// (case-sensitive). Which versions we answer is `parse_head`'s business.
const VERSION_SHAPE: &[u8; 8] = b"HTTP/#.#";

/// How far the request line has got. RFC 9112 §3: "request-line =
/// method SP request-target SP HTTP-version", §3.1: "method = token".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Start {
    /// Before the method. RFC 9112 §2.2: "a server that is expecting to
    /// receive and parse a request-line SHOULD ignore at least one empty
    /// line (CRLF) received prior to the request-line" (and httparse
    /// skips any number, CRLF or bare LF).
    #[default]
    Blank,
    /// A CR before the method: only its LF may follow.
    BlankCr,
    /// This many bytes of the method, all `tchar`.
    Method(u8),
    /// In the request target; `true` once it has a byte.
    Target(bool),
    /// This many bytes of [`VERSION_SHAPE`] matched.
    Version(u8),
    /// The CR after the version: its LF ends the request line.
    LineCr,
    /// The request line is complete and well formed: the rest is
    /// httparse's to judge.
    Http,
    /// Not a request we can answer; the verdict does not change.
    Bad(BadStart),
}

impl Start {
    fn next(self, byte: u8) -> Start {
        match (self, byte) {
            (Start::Blank, b'\r') => Start::BlankCr,
            (Start::Blank | Start::BlankCr, b'\n') => Start::Blank,
            (Start::Blank, b) if is_tchar(b) => Start::Method(1),
            (Start::Method(_), b' ') => Start::Target(false),
            (Start::Method(n), b) if is_tchar(b) => {
                if usize::from(n) == MAX_METHOD_LEN {
                    Start::Bad(BadStart::MethodTooLong)
                } else {
                    Start::Method(n + 1)
                }
            }
            (Start::Target(_), b) if is_target_byte(b) => Start::Target(true),
            (Start::Target(true), b' ') => Start::Version(0),
            (Start::Version(8), b'\r') => Start::LineCr,
            // §2.2: "A recipient MAY recognize a single LF as a line
            // terminator", as httparse does.
            (Start::Version(8) | Start::LineCr, b'\n') => Start::Http,
            (Start::Version(n), b) if fits_version(n, b) => Start::Version(n + 1),
            (Start::Http | Start::Bad(_), _) => self,
            // A control byte, a delimiter or a byte over 0x7F in the
            // method, a CR not followed by LF, whitespace or a control
            // byte in the target, a line that ends before its version or
            // without one: no request line looks like that, and httparse
            // would refuse the head.
            _ => Start::Bad(BadStart::NotHttp),
        }
    }
}

/// A byte a request target may hold, as httparse reads one: anything
/// but whitespace, control bytes and DEL (the RFC 3986 characters, plus
/// the unescaped ones and raw UTF-8 that clients send anyway).
fn is_target_byte(b: u8) -> bool {
    matches!(b, b'!'..=0x7e | 0x80..=0xff)
}

/// Whether `b` may be byte `n` (< 8) of an HTTP-version.
fn fits_version(n: u8, b: u8) -> bool {
    match VERSION_SHAPE.get(usize::from(n)) {
        Some(b'#') => b.is_ascii_digit(),
        Some(&expected) => b == expected,
        None => false,
    }
}

/// RFC 9110 §5.6.2: `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" /
/// "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Why a request line cannot be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadStart {
    /// A byte no request line can have there: RFC 9112 §3, "Recipients of
    /// an invalid request-line SHOULD respond with either a 400 (Bad
    /// Request) error or a 301 (Moved Permanently) redirect".
    NotHttp,
    /// More than [`MAX_METHOD_LEN`] bytes of method. RFC 9112 §3: "A
    /// server that receives a method longer than any that it implements
    /// SHOULD respond with a 501 (Not Implemented) status code."
    MethodTooLong,
}

impl BadStart {
    pub fn refusal(self) -> Refusal {
        match self {
            BadStart::NotHttp => Refusal::new(400, "not an HTTP request"),
            BadStart::MethodTooLong => Refusal::new(501, "request method too long"),
        }
    }
}

/// What [`HeadScanner::scan_request`] found in a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scan {
    /// Nothing decided yet: partial input is not an error.
    More,
    /// The head ends just before this index of the chunk.
    End(usize),
    /// The byte at this index of the chunk shows the bytes cannot be
    /// answered as a request; whatever follows is irrelevant.
    Refuse(usize, BadStart),
}

impl HeadScanner {
    /// Returns the index just past the terminator within `chunk`, if the
    /// head ends there. Looks at line endings only (see
    /// [`HeadScanner::scan_request`] for the request line).
    pub fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &byte) in chunk.iter().enumerate() {
            match self.state.next(byte) {
                Some(state) => self.state = state,
                None => {
                    *self = HeadScanner::default();
                    return Some(i + 1);
                }
            }
        }
        None
    }

    /// Like [`HeadScanner::scan`], finding the same end, but also reads
    /// the request line (optional empty lines, a method of `tchar`s, SP, a
    /// target without whitespace or control bytes, SP, `HTTP/d.d`, the
    /// line end) and refuses at the first byte that cannot continue it,
    /// or at a method over [`MAX_METHOD_LEN`]. Once the request line has
    /// ended, the rest is [`HeadScanner::scan`]: the check costs the
    /// request line's bytes, whatever the head's size.
    pub fn scan_request(&mut self, chunk: &[u8]) -> Scan {
        for (i, &byte) in chunk.iter().enumerate() {
            if self.start == Start::Http {
                return match self.scan(&chunk[i..]) {
                    Some(end) => Scan::End(i + end),
                    None => Scan::More,
                };
            }
            self.start = self.start.next(byte);
            if let Start::Bad(why) = self.start {
                return Scan::Refuse(i, why);
            }
            match self.state.next(byte) {
                Some(state) => self.state = state,
                None => {
                    *self = HeadScanner::default();
                    return Scan::End(i + 1);
                }
            }
        }
        Scan::More
    }
}

/// The §1.3 accept value: base64(SHA-1(key ++ GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// Parses and checks a complete request head (ending in `\r\n\r\n`).
/// [`parse_head`] with the method left out.
pub fn parse_request(head: &[u8], policy: &Policy) -> Result<Request, Refusal> {
    parse_head(head, policy).outcome
}

/// Parses and checks a complete request head, as found by
/// [`HeadScanner`]. Its start is not checked again: a caller that did not
/// use [`HeadScanner::scan_request`] gets httparse's verdict on it (`400`,
/// or `405` for a long method).
pub fn parse_head(head: &[u8], policy: &Policy) -> ParsedHead {
    let mut storage = vec![httparse::EMPTY_HEADER; policy.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut storage);
    let refused = |refusal| ParsedHead {
        method: None,
        outcome: Err(refusal),
    };
    match req.parse(head) {
        // The scanner and httparse agree on where a head ends; should they
        // ever not, refuse rather than drop the bytes in between.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) => {
            return refused(Refusal::new(400, "malformed HTTP request"))
        }
        Ok(httparse::Status::Partial) => {
            return refused(Refusal::new(400, "incomplete request head"))
        }
        Err(httparse::Error::TooManyHeaders) => {
            return refused(Refusal::new(431, "too many header fields"))
        }
        Err(_) => return refused(Refusal::new(400, "malformed HTTP request")),
    }
    let method = match req.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        Some("POST") if policy.max_body_bytes > 0 => Method::Post,
        // §4.2.1: "The method of the request MUST be GET"; plain HTTP is
        // GET and HEAD only.
        _ => return refused(Refusal::new(405, "method not allowed").with_allow()),
    };
    ParsedHead {
        method: Some(method),
        outcome: check_request(&req, method, policy),
    }
}

/// The rules for a parsed `GET` or `HEAD`, in order: version, body,
/// target, host; then, for a `GET` asking for it, the upgrade.
fn check_request(
    req: &httparse::Request<'_, '_>,
    method: Method,
    policy: &Policy,
) -> Result<Request, Refusal> {
    if req.version != Some(1) {
        // §4.2.1: "an HTTP version of 1.1 or higher".
        return Err(Refusal::new(400, "HTTP/1.1 required"));
    }
    let headers = Headers(req.headers);
    let body_len = match method {
        Method::Post => body_length(&headers, policy.max_body_bytes)?,
        Method::Get | Method::Head => {
            refuse_body(&headers)?;
            0
        }
    };
    let target = parse_target(req.path.unwrap_or("/"))?;
    let Some(host) = headers.one("host")? else {
        // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request)
        // status code to any HTTP/1.1 request message that lacks a Host
        // header field", absolute-form or not.
        return Err(Refusal::new(400, "missing Host header"));
    };
    // RFC 9112 §3.2.2: "When an origin server receives a request with an
    // absolute-form of request-target, the origin server MUST ignore the
    // received Host header field (if any) and instead use the host
    // information of the request-target."
    let host = target.authority.map_or(host, str::as_bytes);
    let target = target.path.into_owned();
    if method == Method::Post {
        return Ok(Request::Http(HttpRequest {
            method,
            target,
            authorization: text_header(&headers, "authorization")?,
            content_type: text_header(&headers, "content-type")?,
            body_len,
            body: Vec::new(),
        }));
    }
    if method == Method::Head {
        // Only a GET may upgrade, and a HEAD is answered as plain HTTP
        // whatever it asks: RFC 9110 §7.8, "A server MAY ignore a received
        // Upgrade header field if it wishes to continue using the current
        // protocol on that connection."
        let mut request = HttpRequest::get(method, target);
        request.authorization = text_header(&headers, "authorization")?;
        return Ok(Request::Http(request));
    }
    let upgrade = headers.one("upgrade")?;
    if !upgrade.is_some_and(|v| has_token(v, "websocket")) {
        if upgrade.is_some() || headers.any("sec-websocket-key") {
            return Err(Refusal::new(400, "Upgrade must be websocket"));
        }
        let mut request = HttpRequest::get(method, target);
        request.authorization = text_header(&headers, "authorization")?;
        return Ok(Request::Http(request));
    }
    if !headers.all("connection").any(|v| has_token(v, "upgrade")) {
        return Err(Refusal::new(
            400,
            "Connection header lacks the upgrade token",
        ));
    }
    match headers.one("sec-websocket-version")? {
        None => {
            return Err(Refusal::version_required(
                400,
                "missing Sec-WebSocket-Version",
            ))
        }
        Some(v) if v.trim_ascii() != b"13" => {
            return Err(Refusal::version_required(
                426,
                "unsupported WebSocket version",
            ))
        }
        Some(_) => {}
    }
    let key = headers
        .one("sec-websocket-key")?
        .map(<[u8]>::trim_ascii)
        .ok_or(Refusal::new(400, "missing Sec-WebSocket-Key"))?;
    // §4.2.1: the key is "a base64-encoded value that, when decoded, is 16
    // bytes in length".
    if !matches!(BASE64.decode(key), Ok(nonce) if nonce.len() == 16) {
        return Err(Refusal::new(
            400,
            "Sec-WebSocket-Key is not base64 of 16 bytes",
        ));
    }
    if let Some(origin) = headers.one("origin")? {
        if !origin_allowed(origin, host, &policy.allowed_origins) {
            return Err(Refusal::new(403, "origin not allowed"));
        }
    }
    let protocol = select_protocol(headers.all("sec-websocket-protocol"), &policy.protocols);
    let deflate = match policy.compression {
        // RFC 7692 §5: the first acceptable offer; a malformed header is
        // 400 (see `extensions`'s docs for why declined and refused differ).
        true => extensions::negotiate(headers.all("sec-websocket-extensions"))
            .map_err(|m| Refusal::new(400, m.reason()))?,
        false => None,
    };
    Ok(Request::Upgrade(Upgrade {
        target,
        protocol,
        accept: accept_key(key),
        deflate,
        cookie: joined_cookies(headers.all("cookie")),
    }))
}

/// Every `Cookie` header's value as one, or `None` without any (values
/// that are not UTF-8 are left out: no cookie of ours is).
fn joined_cookies<'b>(values: impl Iterator<Item = &'b [u8]>) -> Option<String> {
    let parts: Vec<&str> = values
        .filter_map(|v| std::str::from_utf8(v.trim_ascii()).ok())
        .filter(|v| !v.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// A `GET` or `HEAD` must not declare a body. RFC 9110 §9.3.1: "content
/// received in a GET request has no generally defined semantics, cannot
/// alter the meaning or target of the request, and might lead some
/// implementations to reject the request and close the connection
/// because of its potential as a request smuggling attack" (§9.3.2 says
/// the same of HEAD). We never read a body: a proxy in front of us that
/// does would see its bytes as ours to answer, and after a `101` we would
/// read them as frames. So the framing headers are refused outright,
/// `Content-Length: 0` included: a rule with no exceptions is one that
/// two parsers cannot read differently.
fn refuse_body(headers: &Headers<'_, '_>) -> Result<(), Refusal> {
    if headers.any("transfer-encoding") {
        return Err(Refusal::new(400, "GET or HEAD with Transfer-Encoding"));
    }
    if headers.any("content-length") {
        return Err(Refusal::new(400, "GET or HEAD with Content-Length"));
    }
    Ok(())
}

/// A header that may appear at most once, as text for the application
/// (`None` when absent or not UTF-8; twice is `400`, as for every such
/// header).
fn text_header(headers: &Headers<'_, '_>, name: &'static str) -> Result<Option<String>, Refusal> {
    Ok(headers
        .one(name)?
        .and_then(|v| std::str::from_utf8(v.trim_ascii()).ok())
        .map(str::to_owned))
}

/// A `POST`'s body length. RFC 9112 §6.3 lets a server that does not
/// implement a transfer coding answer 501, and one that wants a length
/// 411; bodies here are small JSON documents, so only `Content-Length` is
/// read, once, as plain digits: §6.3 also says a message with both
/// `Transfer-Encoding` and `Content-Length` "might indicate that the
/// sender is attempting to perform request smuggling", so that is refused
/// too, and a list value (`Content-Length: 5, 5`) is not accepted.
fn body_length(headers: &Headers<'_, '_>, max: usize) -> Result<usize, Refusal> {
    if headers.any("transfer-encoding") {
        return Err(Refusal::new(
            411,
            "Transfer-Encoding is not accepted: send Content-Length",
        ));
    }
    let Some(value) = headers.one("content-length")? else {
        return Err(Refusal::new(411, "a POST needs Content-Length"));
    };
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(Refusal::new(400, "Content-Length is not a number"));
    }
    let len: usize = std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or(Refusal::new(400, "Content-Length is not a number"))?;
    if len > max {
        return Err(Refusal::new(413, "request body too large"));
    }
    Ok(len)
}

/// A request target read as RFC 9112 §3.2 has it.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'t> {
    /// The origin form (absolute path and query) that the rest of the
    /// server sees.
    pub path: Cow<'t, str>,
    /// The authority of an absolute-form target: the host the request is
    /// for, in place of the `Host` header.
    pub authority: Option<&'t str>,
}

/// Reads a request target: the origin form (`/rust?since=1`) as it is,
/// the absolute form (`http://host/rust?since=1`, also `https`, `ws`,
/// `wss`) as its path and query plus its authority. RFC 9112 §3.2.2: "A
/// server MUST accept the absolute-form in requests even though most
/// HTTP/1.1 clients will only send the absolute-form to a proxy." The
/// authority-form and the asterisk-form are for `CONNECT` and `OPTIONS`
/// only (§3.2.3, §3.2.4), so a `GET` with them, or with anything else, is
/// refused.
pub fn parse_target(target: &str) -> Result<Target<'_>, Refusal> {
    if target.starts_with('/') {
        return Ok(Target {
            path: Cow::Borrowed(target),
            authority: None,
        });
    }
    let invalid = || Refusal::new(400, "invalid request target");
    let (scheme, rest) = target.split_once("://").ok_or_else(invalid)?;
    // RFC 3986 §3.1: "schemes are case-insensitive".
    if !["http", "https", "ws", "wss"]
        .iter()
        .any(|s| scheme.eq_ignore_ascii_case(s))
    {
        return Err(invalid());
    }
    // RFC 3986 §4.3: "absolute-URI = scheme ":" hier-part [ "?" query ]",
    // no fragment.
    if rest.contains('#') {
        return Err(invalid());
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        // RFC 9110 §4.2.4: a recipient "SHOULD parse for userinfo and treat
        // its presence as an error; it is likely being used to obscure the
        // authority for the sake of phishing attacks."
        return Err(Refusal::new(400, "userinfo in request target"));
    }
    if authority.is_empty() {
        // RFC 9110 §4.2.1: "A recipient that processes such a URI
        // reference MUST reject it as invalid."
        return Err(Refusal::new(400, "request target without a host"));
    }
    // RFC 9112 §3.2.1: "If the target URI's path component is empty, the
    // client MUST send "/" as the path within the origin-form".
    let path = match tail.as_bytes().first() {
        Some(b'/') => Cow::Borrowed(tail),
        None => Cow::Borrowed("/"),
        Some(_) => Cow::Owned(format!("/{tail}")),
    };
    Ok(Target {
        path,
        authority: Some(authority),
    })
}

impl Refusal {
    /// RFC 9110 §15.5.6: the 405 "MUST generate an Allow header field".
    fn with_allow(mut self) -> Refusal {
        self.response.headers.push("Allow: GET, HEAD".into());
        self
    }
}

/// The `101 Switching Protocols` response for an accepted upgrade.
/// §4.2.2 asks for `Connection: Upgrade` exactly; a protocol is echoed
/// only when one was selected from the client's offer.
pub fn accept_response(upgrade: &Upgrade) -> Vec<u8> {
    let mut out = String::with_capacity(160);
    out.push_str(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
    );
    let _ = write!(out, "Sec-WebSocket-Accept: {}\r\n", upgrade.accept);
    if let Some(protocol) = &upgrade.protocol {
        let _ = write!(out, "Sec-WebSocket-Protocol: {protocol}\r\n");
    }
    if let Some(deflate) = &upgrade.deflate {
        let _ = write!(out, "Sec-WebSocket-Extensions: {}\r\n", deflate.response());
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// The parsed header lines, looked up case-insensitively.
struct Headers<'h, 'b>(&'h [httparse::Header<'b>]);

impl<'b> Headers<'_, 'b> {
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.0
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn any(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }

    /// A header that may appear at most once.
    fn one(&self, name: &'static str) -> Result<Option<&'b [u8]>, Refusal> {
        let mut values = self.all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(Refusal::new(400, duplicate_reason(name)));
        }
        Ok(first)
    }
}

fn duplicate_reason(name: &str) -> &'static str {
    match name {
        "host" => "duplicate Host header",
        "upgrade" => "duplicate Upgrade header",
        "sec-websocket-key" => "duplicate Sec-WebSocket-Key header",
        "sec-websocket-version" => "duplicate Sec-WebSocket-Version header",
        "origin" => "duplicate Origin header",
        _ => "duplicate header",
    }
}

/// The elements of a comma-separated header value, trimmed, empty ones
/// skipped. A single pass with no backtracking, whatever the input.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|e| !e.is_empty())
}

/// Whether a comma list holds `token`, compared case-insensitively.
fn has_token(value: &[u8], token: &str) -> bool {
    list_elements(value).any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
}

/// §4.2.2: the server selects "one or none of the acceptable protocols"
/// the client listed; the client's order decides among several.
fn select_protocol<'b>(
    offers: impl Iterator<Item = &'b [u8]>,
    supported: &[String],
) -> Option<String> {
    offers
        .flat_map(list_elements)
        .find_map(|offer| supported.iter().find(|s| s.as_bytes() == offer))
        .cloned()
}

/// §10.2: servers that are not meant for every web page "SHOULD verify
/// the |Origin| field". A page on the server's own host is always
/// allowed; others only when listed (or `*`).
fn origin_allowed(origin: &[u8], host: &[u8], allowed: &[String]) -> bool {
    if allowed
        .iter()
        .any(|a| a == "*" || a.as_bytes().eq_ignore_ascii_case(origin))
    {
        return true;
    }
    same_host(origin, host)
}

/// Whether `Origin: scheme://name[:port]` names the same host and port as
/// the `Host` header, filling in the scheme's default port on either side.
fn same_host(origin: &[u8], host: &[u8]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return false,
    };
    match (
        split_host_port(authority, default_port),
        split_host_port(host.trim(), default_port),
    ) {
        (Some((oh, op)), Some((hh, hp))) => op == hp && oh.eq_ignore_ascii_case(hh),
        _ => false,
    }
}

/// Splits `name[:port]` (with `[v6]` literals), filling in `default_port`.
fn split_host_port(authority: &str, default_port: u16) -> Option<(&str, u16)> {
    let (name, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (name, after) = rest.split_once(']')?;
        (name, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!name.is_empty()).then_some((name, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            allowed_origins: vec![],
            protocols: vec!["chat".into(), "superchat".into()],
            max_head_bytes: 8192,
            max_headers: 64,
            compression: false,
            max_body_bytes: 0,
        }
    }

    fn compressing() -> Policy {
        Policy {
            compression: true,
            ..policy()
        }
    }

    fn parse_with(extra: &str, policy: &Policy) -> Result<Request, Refusal> {
        parse_request(request(extra).as_bytes(), policy)
    }

    #[test]
    fn deflate_is_negotiated_only_when_the_policy_allows() {
        let offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";
        assert_eq!(upgrade(offer).deflate, None);
        let Ok(Request::Upgrade(u)) = parse_with(offer, &compressing()) else {
            panic!("expected an upgrade");
        };
        let response = String::from_utf8(accept_response(&u)).unwrap();
        assert!(response.contains(
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
             client_no_context_takeover\r\n"
        ));
        // Off, even a malformed header is not read.
        assert!(parse_with("Sec-WebSocket-Extensions: ;;\r\n", &policy()).is_ok());
    }

    #[test]
    fn deflate_offers_over_several_lines_first_acceptable_wins() {
        let extra = "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\
                     Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16, \
                     permessage-deflate; server_max_window_bits=10\r\n";
        let Ok(Request::Upgrade(u)) = parse_with(extra, &compressing()) else {
            panic!("expected an upgrade");
        };
        assert_eq!(u.deflate.map(|n| n.server_max_window_bits), Some(Some(10)));
        let response = String::from_utf8(accept_response(&u)).unwrap();
        assert!(response.contains("; server_max_window_bits=10\r\n"));
    }

    #[test]
    fn unacceptable_offers_are_declined_malformed_ones_refused() {
        let declined = "Sec-WebSocket-Extensions: permessage-deflate; foo\r\n";
        let Ok(Request::Upgrade(u)) = parse_with(declined, &compressing()) else {
            panic!("expected an upgrade");
        };
        assert_eq!(u.deflate, None);
        assert!(!String::from_utf8(accept_response(&u))
            .unwrap()
            .contains("Extensions"));
        for bad in ["permessage-deflate; =1", "permessage-deflate;; x", "\"a\""] {
            let extra = format!("Sec-WebSocket-Extensions: {bad}\r\n");
            match parse_with(&extra, &compressing()) {
                Err(r) => assert_eq!(r.response.status, 400, "{bad}"),
                Ok(other) => panic!("{bad}: accepted as {other:?}"),
            }
        }
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(extra: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn upgrade(extra: &str) -> Upgrade {
        match parse_request(request(extra).as_bytes(), &policy()) {
            Ok(Request::Upgrade(u)) => u,
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    fn status(req: &str) -> u16 {
        match parse_request(req.as_bytes(), &policy()) {
            Err(refusal) => refusal.response.status,
            Ok(other) => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// §1.3: "the server would append the string ... and return
    /// s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".
    #[test]
    fn rfc_accept_key_example() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rfc_example_request_is_accepted() {
        let u = upgrade(
            "Origin: http://server.example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n",
        );
        assert_eq!(u.target, "/chat");
        assert_eq!(u.protocol.as_deref(), Some("chat"));
        assert_eq!(
            String::from_utf8(accept_response(&u)).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        );
    }

    #[test]
    fn client_order_selects_protocol_and_unknown_ones_are_never_echoed() {
        assert_eq!(
            upgrade("Sec-WebSocket-Protocol: superchat, chat\r\n")
                .protocol
                .as_deref(),
            Some("superchat")
        );
        assert_eq!(
            upgrade("Sec-WebSocket-Protocol: x\r\nSec-WebSocket-Protocol: ,chat\r\n")
                .protocol
                .as_deref(),
            Some("chat")
        );
        let u = upgrade("Sec-WebSocket-Protocol: mqtt, soap\r\n");
        assert_eq!(u.protocol, None);
        assert!(!String::from_utf8(accept_response(&u))
            .unwrap()
            .contains("Sec-WebSocket-Protocol"));
        assert_eq!(upgrade("").protocol, None);
    }

    #[test]
    fn connection_and_upgrade_tokens_are_case_insensitive_lists() {
        let req = request("").replace("Connection: Upgrade", "Connection: keep-alive, UPGRADE");
        let req = req.replace("Upgrade: websocket", "upgrade: WebSocket");
        assert!(matches!(
            parse_request(req.as_bytes(), &policy()),
            Ok(Request::Upgrade(_))
        ));
        let req = request("").replace("Connection: Upgrade", "Connection: keep-alive");
        assert_eq!(status(&req), 400);
    }

    #[test]
    fn origins() {
        upgrade("");
        upgrade("Origin: http://server.example.com:80\r\n");
        upgrade("Origin: HTTP://Server.Example.com\r\n");
        assert_eq!(status(&request("Origin: http://evil.example\r\n")), 403);
        assert_eq!(status(&request("Origin: null\r\n")), 403);
        // Behind a TLS-terminating proxy the page is https on the same host.
        upgrade("Origin: https://server.example.com\r\n");
        assert_eq!(
            status(&request("Origin: https://server.example.com:8443\r\n")),
            403
        );
        let mut allow = policy();
        allow.allowed_origins = vec!["http://evil.example".into()];
        let req = request("Origin: http://evil.example\r\n");
        assert!(parse_request(req.as_bytes(), &allow).is_ok());
        allow.allowed_origins = vec!["*".into()];
        let req = request("Origin: null\r\n");
        assert!(parse_request(req.as_bytes(), &allow).is_ok());
    }

    #[test]
    fn same_host_compares_ports_and_v6_literals() {
        assert!(same_host(b"http://localhost:8080", b"localhost:8080"));
        assert!(!same_host(b"http://localhost:8081", b"localhost:8080"));
        assert!(same_host(b"http://[::1]:8080", b"[::1]:8080"));
        assert!(same_host(b"https://example.com", b"example.com:443"));
        assert!(!same_host(b"file://", b"example.com"));
        assert!(!same_host(b"http://:80", b":80"));
    }

    #[test]
    fn version_rules() {
        let req = request("").replace("Version: 13", "Version: 8");
        let refusal = parse_request(req.as_bytes(), &policy()).unwrap_err();
        assert_eq!(refusal.response.status, 426);
        assert!(String::from_utf8(refusal.response.to_bytes())
            .unwrap()
            .contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let req = request("").replace("Sec-WebSocket-Version: 13\r\n", "");
        assert_eq!(status(&req), 400);
    }

    #[test]
    fn refusals() {
        assert_eq!(status(&request("").replace("GET", "POST")), 405);
        assert_eq!(status(&request("").replace("HTTP/1.1", "HTTP/1.0")), 400);
        assert_eq!(
            status(&request("").replace("Host: server.example.com\r\n", "")),
            400
        );
        assert_eq!(
            status(&request(&format!("Sec-WebSocket-Key: {KEY}\r\n"))),
            400
        );
        assert_eq!(status(&request("").replace(KEY, "dGhlIHNhbXBsZQ==")), 400);
        assert_eq!(status(&request("").replace(KEY, "not base64!")), 400);
        assert_eq!(
            status(&request("").replace("Upgrade: websocket", "Upgrade: h2c")),
            400
        );
        assert_eq!(status("GARBAGE\r\n\r\n"), 400);
        let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&request(&many)), 431);
    }

    #[test]
    fn plain_get_is_an_http_request() {
        let req = "GET /rust HTTP/1.1\r\nHost: localhost\r\n\r\n";
        assert_eq!(
            parse_request(req.as_bytes(), &policy()),
            Ok(Request::Http(HttpRequest::get(Method::Get, "/rust".into())))
        );
    }

    #[test]
    fn scanner_finds_the_end_at_every_split() {
        let head = request("");
        let bytes = head.as_bytes();
        for split in 0..bytes.len() {
            let mut scanner = HeadScanner::default();
            let found = match scanner.scan(&bytes[..split]) {
                Some(end) => end,
                None => split + scanner.scan(&bytes[split..]).expect("end found"),
            };
            assert_eq!(found, bytes.len(), "split at {split}");
        }
        // Byte-at-a-time, with frames after the head.
        let mut scanner = HeadScanner::default();
        let mut stream = bytes.to_vec();
        stream.extend_from_slice(&[0x81, 0x80]);
        let end = stream.iter().position(|b| scanner.scan(&[*b]).is_some());
        assert_eq!(end, Some(bytes.len() - 1));
    }

    /// Found by the `handshake` fuzz target: a head ending in `\n\r\n`
    /// (bare LF line endings, which httparse accepts) used to be scanned on
    /// to a later `\r\n\r\n`, and the frames in between were lost.
    #[test]
    fn bare_lf_line_endings_end_the_head_where_httparse_does() {
        let lf = request("").replace("\r\n", "\n");
        for ending in ["\n", "\r\n"] {
            let head = format!("{}{ending}", lf.trim_end_matches('\n').to_owned() + "\n");
            let mut bytes = head.clone().into_bytes();
            bytes.extend_from_slice(b"\r\n\r\n\x81\x80");
            let end = HeadScanner::default().scan(&bytes).expect("head ends");
            assert_eq!(end, head.len(), "{ending:?}");
            assert!(matches!(
                parse_request(&bytes[..end], &policy()),
                Ok(Request::Upgrade(_))
            ));
        }
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(b"GET / HTTP/1.1\r\nHost: a\r\n\n"), Some(26));
    }

    #[test]
    fn scanner_handles_near_misses() {
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(b"a\r\n\r\r\n\r\n"), Some(8));
        let mut scanner = HeadScanner::default();
        assert_eq!(scanner.scan(b"a\r\n\n\r\n"), Some(4), "LF ends a line too");
        let mut scanner = HeadScanner::default();
        assert_eq!(
            scanner.scan(b"a\r\nb\r\r\nc"),
            None,
            "CR CR LF is no empty line"
        );
    }

    fn parsed(req: &str) -> ParsedHead {
        parse_head(req.as_bytes(), &policy())
    }

    fn reason(req: &str) -> &'static str {
        match parse_request(req.as_bytes(), &policy()) {
            Err(refusal) => refusal.reason,
            Ok(other) => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn http(req: &str) -> HttpRequest {
        match parse_request(req.as_bytes(), &policy()) {
            Ok(Request::Http(r)) => r,
            other => panic!("expected plain HTTP, got {other:?}"),
        }
    }

    // ----- bodies (issue 10) -----

    #[test]
    fn upgrades_declaring_a_body_are_refused_whatever_the_value() {
        for (header, why) in [
            ("Content-Length: 5\r\n", "GET or HEAD with Content-Length"),
            ("Content-Length: 0\r\n", "GET or HEAD with Content-Length"),
            (
                "content-length: 5, 5\r\n",
                "GET or HEAD with Content-Length",
            ),
            (
                "Transfer-Encoding: chunked\r\n",
                "GET or HEAD with Transfer-Encoding",
            ),
            (
                "transfer-encoding: identity\r\n",
                "GET or HEAD with Transfer-Encoding",
            ),
            (
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                "GET or HEAD with Transfer-Encoding",
            ),
        ] {
            let req = request(header);
            assert_eq!(status(&req), 400, "{header:?}");
            assert_eq!(reason(&req), why, "{header:?}");
        }
    }

    #[test]
    fn obfuscated_framing_headers_do_not_parse_at_all() {
        // Whitespace before the colon (RFC 9112 §5.1: "No whitespace is
        // allowed between the field name and colon") and obs-fold (§5.2)
        // are how smuggling hides a Transfer-Encoding from one parser.
        for header in [
            "Transfer-Encoding : chunked\r\n",
            "X: y\r\n Transfer-Encoding: chunked\r\n",
        ] {
            assert_eq!(reason(&request(header)), "malformed HTTP request");
        }
    }

    #[test]
    fn plain_get_and_head_declaring_a_body_are_refused() {
        let get = "GET /rust HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(reason(get), "GET or HEAD with Content-Length");
        let head = get.replace("GET", "HEAD");
        let p = parsed(&head);
        assert_eq!(p.method, Some(Method::Head), "the 400 is a HEAD's: no body");
        assert_eq!(
            p.outcome.unwrap_err().reason,
            "GET or HEAD with Content-Length"
        );
        // Other methods may carry bodies: they get 405 before the body
        // matters.
        assert_eq!(status(&get.replace("GET", "POST")), 405);
    }

    // ----- absolute-form targets (issue 10) -----

    #[test]
    fn absolute_form_targets_become_origin_form() {
        for (target, path, authority) in [
            ("/chat", "/chat", None),
            ("/", "/", None),
            ("http://h/chat", "/chat", Some("h")),
            (
                "HTTP://h:8080/chat?since=3",
                "/chat?since=3",
                Some("h:8080"),
            ),
            ("https://h/", "/", Some("h")),
            ("ws://[::1]:80/rust", "/rust", Some("[::1]:80")),
            ("WSS://h", "/", Some("h")),
            ("http://h?since=3", "/?since=3", Some("h")),
        ] {
            let t = parse_target(target).unwrap_or_else(|r| panic!("{target}: {r:?}"));
            assert_eq!(
                (t.path.as_ref(), t.authority),
                (path, authority),
                "{target}"
            );
        }
        for (target, why) in [
            ("*", "invalid request target"),
            ("rust", "invalid request target"),
            ("h:80", "invalid request target"),
            ("ftp://h/chat", "invalid request target"),
            ("http:/chat", "invalid request target"),
            ("http://h/chat#top", "invalid request target"),
            ("http://user@h/chat", "userinfo in request target"),
            ("http:///chat", "request target without a host"),
            ("http://?x", "request target without a host"),
        ] {
            assert_eq!(parse_target(target).unwrap_err().reason, why, "{target}");
            let req = request("").replace("GET /chat", &format!("GET {target}"));
            assert_eq!(status(&req), 400, "{target}");
        }
    }

    #[test]
    fn absolute_form_upgrade_and_get_see_the_origin_form() {
        let req = request("").replace("GET /chat", "GET http://server.example.com/chat?x=1");
        match parse_request(req.as_bytes(), &policy()) {
            Ok(Request::Upgrade(u)) => assert_eq!(u.target, "/chat?x=1"),
            other => panic!("{other:?}"),
        }
        let get = "GET ws://server.example.com HTTP/1.1\r\nHost: server.example.com\r\n\r\n";
        assert_eq!(http(get).target, "/");
    }

    #[test]
    fn absolute_form_authority_is_the_host_for_the_origin_check() {
        // The Host header says otherwise: it is ignored (RFC 9112 §3.2.2).
        let absolute = |authority: &str, origin: &str| {
            request(&format!("Origin: {origin}\r\n"))
                .replace("GET /chat", &format!("GET http://{authority}/chat"))
                .replace("Host: server.example.com", "Host: other.example")
        };
        upgrade_ok(&absolute("server.example.com", "http://server.example.com"));
        upgrade_ok(&absolute(
            "server.example.com:8080",
            "http://server.example.com:8080",
        ));
        assert_eq!(
            status(&absolute("server.example.com", "http://other.example")),
            403,
            "the Host header no longer vouches for the page"
        );
        // The Host header is still required, once (RFC 9112 §3.2).
        let req = absolute("server.example.com", "http://server.example.com")
            .replace("Host: other.example\r\n", "");
        assert_eq!(reason(&req), "missing Host header");
    }

    fn upgrade_ok(req: &str) {
        match parse_request(req.as_bytes(), &policy()) {
            Ok(Request::Upgrade(_)) => {}
            other => panic!("expected an upgrade, got {other:?} for {req:?}"),
        }
    }

    // ----- HEAD (issue 10) -----

    #[test]
    fn head_is_plain_http_with_its_method() {
        let p = parsed("HEAD /healthz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(p.method, Some(Method::Head));
        assert_eq!(
            p.outcome,
            Ok(Request::Http(HttpRequest::get(
                Method::Head,
                "/healthz".into()
            )))
        );
        assert_eq!(
            parsed("GET / HTTP/1.1\r\nHost: h\r\n\r\n").method,
            Some(Method::Get)
        );
        // Its version and Host are checked as a GET's.
        assert_eq!(
            reason("HEAD / HTTP/1.0\r\nHost: h\r\n\r\n"),
            "HTTP/1.1 required"
        );
        assert_eq!(reason("HEAD / HTTP/1.1\r\n\r\n"), "missing Host header");
    }

    #[test]
    fn head_never_upgrades_its_upgrade_headers_are_ignored() {
        let head = request("").replace("GET", "HEAD");
        let p = parsed(&head);
        assert_eq!(p.method, Some(Method::Head));
        assert_eq!(
            p.outcome,
            Ok(Request::Http(HttpRequest::get(
                Method::Head,
                "/chat".into()
            )))
        );
        // Even ones a GET would be refused for.
        let bad = head.replace("Upgrade: websocket", "Upgrade: h2c");
        assert!(matches!(parsed(&bad).outcome, Ok(Request::Http(_))));
    }

    #[test]
    fn other_methods_get_405_allowing_get_and_head() {
        for method in ["POST", "PUT", "OPTIONS", "get", "Head"] {
            let p = parsed(&request("").replacen("GET", method, 1));
            assert_eq!(p.method, None, "{method}");
            let refusal = p.outcome.unwrap_err();
            assert_eq!(refusal.response.status, 405, "{method}");
            assert!(refusal
                .response
                .headers
                .contains(&"Allow: GET, HEAD".to_string()));
        }
    }

    #[test]
    fn a_post_declares_its_length_once_in_digits_within_the_limit() {
        let api = Policy {
            max_body_bytes: 100,
            ..policy()
        };
        let post = |headers: &str| {
            let head = format!("POST /api/rooms HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
            parse_head(head.as_bytes(), &api)
        };
        let ok = post(
            "Content-Length: 100\r\nAuthorization: Bearer k\r\nContent-Type: application/json\r\n",
        );
        assert_eq!(ok.method, Some(Method::Post));
        match ok.outcome {
            Ok(Request::Http(r)) => {
                assert_eq!(
                    (r.body_len, r.authorization.as_deref()),
                    (100, Some("Bearer k"))
                );
                assert_eq!(r.content_type.as_deref(), Some("application/json"));
            }
            other => panic!("{other:?}"),
        }
        let status = |headers: &str| post(headers).outcome.unwrap_err().response.status;
        assert_eq!(status(""), 411, "no length");
        assert_eq!(status("Transfer-Encoding: chunked\r\n"), 411);
        assert_eq!(
            status("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
            411,
            "smuggling shape"
        );
        assert_eq!(status("Content-Length: 101\r\n"), 413);
        assert_eq!(status("Content-Length: 99999999999999999999\r\n"), 400);
        for bad in ["5, 5", "+5", "-1", "0x5", " ", "5 5"] {
            assert_eq!(
                status(&format!("Content-Length: {bad}\r\n")),
                400,
                "{bad:?}"
            );
        }
        assert_eq!(
            status("Content-Length: 5\r\nContent-Length: 5\r\n"),
            400,
            "twice"
        );
        let keys = "Content-Length: 1\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n";
        assert_eq!(status(keys), 400, "two keys: which one?");
        // GET and HEAD still may not carry one.
        let get = "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            parse_request(get.as_bytes(), &api)
                .unwrap_err()
                .response
                .status,
            400
        );
    }

    #[test]
    fn head_response_keeps_the_gets_length_without_the_body() {
        let r = HttpResponse::text(200, "ok").with_header("Cache-Control: no-cache");
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 3\r\nConnection: close\r\nCache-Control: no-cache\r\n\r\n";
        assert_eq!(r.to_bytes_for(Method::Head), head.as_bytes());
        assert_eq!(
            r.to_bytes_for(Method::Get),
            format!("{head}ok\n").as_bytes()
        );
        assert_eq!(r.to_bytes(), r.to_bytes_for(Method::Get));
    }

    // ----- the request line (issue 10) -----

    /// Feeds `bytes` whole, then split at every position, then byte by
    /// byte, and returns the outcome as an absolute offset, checking that
    /// all agree: `Ok(Some(end))`, `Ok(None)` (undecided) or
    /// `Err((at, why))`.
    fn scan_everywhere(bytes: &[u8]) -> Result<Option<usize>, (usize, BadStart)> {
        fn absolute(chunks: &[&[u8]]) -> Result<Option<usize>, (usize, BadStart)> {
            let mut scanner = HeadScanner::default();
            let mut at = 0;
            for chunk in chunks {
                match scanner.scan_request(chunk) {
                    Scan::More => at += chunk.len(),
                    Scan::End(end) => return Ok(Some(at + end)),
                    Scan::Refuse(i, why) => return Err((at + i, why)),
                }
            }
            Ok(None)
        }
        let whole = absolute(&[bytes]);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(absolute(&[a, b]), whole, "split at {cut} of {bytes:02x?}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(absolute(&bytewise), whole, "bytewise {bytes:02x?}");
        if let Ok(end) = whole {
            // When the start is fine, the end is the plain scanner's.
            assert_eq!(HeadScanner::default().scan(bytes), end, "{bytes:02x?}");
        }
        whole
    }

    /// A fixed pseudo-random stream (xorshift64), the same on every run.
    fn noise(len: usize, mut seed: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn requests_start_like_http_at_every_split() {
        let head = request("");
        assert_eq!(scan_everywhere(head.as_bytes()), Ok(Some(head.len())));
        let leading = format!("\r\n{head}");
        assert_eq!(scan_everywhere(leading.as_bytes()), Ok(Some(leading.len())));
        let bare_lf = format!("\n{head}");
        assert_eq!(scan_everywhere(bare_lf.as_bytes()), Ok(Some(bare_lf.len())));
        // Partial input is not an error.
        for partial in [
            &b""[..],
            b"G",
            b"GET",
            b"\r",
            b"\r\n",
            b"GET ",
            b"M-SEARCH",
            b"GET /r",
            b"GET /r HTTP/",
            b"GET /r HTTP/1.1",
            b"GET /r HTTP/1.1\r",
            b"GET /r HTTP/1.1\r\nHost: h\r\n",
        ] {
            assert_eq!(scan_everywhere(partial), Ok(None), "{partial:?}");
        }
        let longest = [&[b'A'; MAX_METHOD_LEN][..], b" / HTTP/1.1\r\n"].concat();
        assert_eq!(scan_everywhere(&longest), Ok(None));
        // Two line ends before any method end the head (httparse then
        // finds it incomplete: a 400 after the scan).
        assert_eq!(scan_everywhere(b"\r\n\r\nGET"), Ok(Some(4)));
        // A version we do not answer has the right shape: httparse
        // refuses it once the head is complete.
        let two = request("").replace("HTTP/1.1", "HTTP/2.0");
        assert_eq!(scan_everywhere(two.as_bytes()), Ok(Some(two.len())));
        assert_eq!(reason(&two), "malformed HTTP request");
        // Bare LF line ends, as httparse reads them.
        let lf = request("").replace("\r\n", "\n");
        assert_eq!(scan_everywhere(lf.as_bytes()), Ok(Some(lf.len())));
    }

    #[test]
    fn bytes_that_cannot_start_a_request_are_refused_where_they_show() {
        use BadStart::{MethodTooLong, NotHttp};
        let ssh = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n";
        let cases: Vec<(&str, Vec<u8>, usize, BadStart)> = vec![
            // A TLS ClientHello: handshake record 0x16, version 3.1, length.
            (
                "TLS ClientHello",
                vec![
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ],
                0,
                NotHttp,
            ),
            // All tchar up to its line end...
            (
                "SSH banner",
                b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
                19,
                NotHttp,
            ),
            // ... or up to the SP before its comment, which then reads as
            // a target with no version after it.
            ("SSH banner with a comment", ssh.to_vec(), 30, NotHttp),
            ("NUL", vec![0x00], 0, NotHttp),
            ("DEL", vec![0x7f], 0, NotHttp),
            ("byte over 0x7F", vec![b'G', 0xc3, 0xa9], 1, NotHttp),
            ("leading SP", b" GET / HTTP/1.1\r\n".to_vec(), 0, NotHttp),
            ("delimiter", b"(GET) / HTTP/1.1\r\n".to_vec(), 0, NotHttp),
            ("TAB for SP", b"GET\t/ HTTP/1.1\r\n".to_vec(), 3, NotHttp),
            (
                "line end in the method",
                b"GET\r\n\r\n".to_vec(),
                3,
                NotHttp,
            ),
            ("bare CR before the method", b"\rGET".to_vec(), 1, NotHttp),
            ("two SPs", b"GET  / HTTP/1.1\r\n".to_vec(), 4, NotHttp),
            ("HTTP/0.9, no version", b"GET /\r\n".to_vec(), 5, NotHttp),
            (
                "control byte in the target",
                b"GET /a\x00b HTTP/1.1".to_vec(),
                6,
                NotHttp,
            ),
            (
                "another protocol",
                b"GET / FTP/1.1\r\n".to_vec(),
                6,
                NotHttp,
            ),
            (
                "lower-case version",
                b"GET / http/1.1\r\n".to_vec(),
                6,
                NotHttp,
            ),
            (
                "version not digits",
                b"GET / HTTP/x.1\r\n".to_vec(),
                11,
                NotHttp,
            ),
            (
                "after the version",
                b"GET / HTTP/1.1 \r\n".to_vec(),
                14,
                NotHttp,
            ),
            (
                "CR without LF",
                b"GET / HTTP/1.1\rHost: h".to_vec(),
                15,
                NotHttp,
            ),
            ("CR CR", b"\r\r\n".to_vec(), 1, NotHttp),
            (
                "method over MAX_METHOD_LEN",
                [&[b'A'; MAX_METHOD_LEN + 1][..], b" / HTTP/1.1\r\n"].concat(),
                MAX_METHOD_LEN,
                MethodTooLong,
            ),
        ];
        for (name, bytes, at, why) in cases {
            assert_eq!(scan_everywhere(&bytes), Err((at, why)), "{name}");
        }
        assert_eq!(BadStart::NotHttp.refusal().response.status, 400);
        assert_eq!(BadStart::NotHttp.refusal().reason, "not an HTTP request");
        assert_eq!(BadStart::MethodTooLong.refusal().response.status, 501);
    }

    #[test]
    fn random_bytes_are_refused_within_the_first_few() {
        for seed in 1..=64 {
            let bytes = noise(2048, seed);
            match scan_everywhere(&bytes) {
                Err((at, _)) => assert!(at <= MAX_METHOD_LEN + 2, "seed {seed}: at {at}"),
                // Noise that happens to start "token SP" is left to the
                // head limits; none of these seeds does.
                other => panic!("seed {seed}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_refused_start_stays_refused() {
        let mut scanner = HeadScanner::default();
        assert_eq!(
            scanner.scan_request(b"\x16\x03"),
            Scan::Refuse(0, BadStart::NotHttp)
        );
        assert_eq!(
            scanner.scan_request(b"GET / HTTP/1.1\r\n\r\n"),
            Scan::Refuse(0, BadStart::NotHttp)
        );
    }

    #[test]
    fn tchar_is_rfc_9110s_and_the_early_refusal_never_refuses_what_httparse_takes() {
        let rfc: Vec<u8> = (b'0'..=b'9')
            .chain(b'A'..=b'Z')
            .chain(b'a'..=b'z')
            .chain(*b"!#$%&'*+-.^_`|~")
            .collect();
        for b in 0..=255u8 {
            assert_eq!(is_tchar(b), rfc.contains(&b), "{b:#04x}");
        }
        // Any byte anywhere in a request: if the scanner refuses, httparse
        // does not read a request either.
        let request = b"\r\nGET /a?b=c HTTP/1.1\r\nHost: h\r\n\r\n";
        for b in 0..=255u8 {
            for at in 0..request.len() {
                let mut bytes = request.to_vec();
                bytes[at] = b;
                let scanned = HeadScanner::default().scan_request(&bytes);
                let mut headers = [httparse::EMPTY_HEADER; 4];
                let parsed = httparse::Request::new(&mut headers).parse(&bytes);
                if let Scan::Refuse(..) = scanned {
                    assert!(parsed.is_err(), "{b:#04x} at {at}: {parsed:?}");
                }
            }
        }
    }

    #[test]
    fn response_bytes() {
        let r = HttpResponse::text(426, "hint").with_header("Upgrade: websocket");
        assert_eq!(
            String::from_utf8(r.to_bytes()).unwrap(),
            "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 5\r\nConnection: close\r\nUpgrade: websocket\r\n\r\nhint\n"
        );
    }
}
