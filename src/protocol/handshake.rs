//! The opening handshake (RFC 6455 §4.2) as pure functions: find the end
//! of an HTTP/1.1 request head, parse it with `httparse`, check it, and
//! build the `101` or the refusal that answers it.
//!
//! [`HeadScanner`] finds the blank line that ends a request head while it
//! trickles in, looking at each received byte a bounded number of times,
//! so a slow sender cannot make us redo work (the failure of
//! CVE-2023-43669, where every new byte re-parsed the whole head).
//! [`parse_request`] then runs once over the complete head. Bytes after
//! the blank line are not part of the request: they are the first frames,
//! and the caller keeps them.

use std::fmt::Write as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

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
}

/// What a complete, well-formed request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade, accepted.
    Upgrade(Upgrade),
    /// A plain HTTP `GET` without `Upgrade: websocket`.
    Http(HttpRequest),
}

/// An accepted upgrade: what the connection was opened with.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// The request target, e.g. `/` or `/rust?since=12`.
    pub target: String,
    /// The subprotocol selected (one the client offered), if any.
    pub protocol: Option<String>,
    /// The `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
}

/// A plain HTTP request, for the application to answer.
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest {
    pub target: String,
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
        bytes.extend_from_slice(&self.body);
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
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
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

/// Finds the empty line that ends a request head as it arrives in pieces.
///
/// Line endings are read as `httparse` reads them (RFC 7230 §3.5: "a
/// recipient MAY recognize a single LF as a line terminator and ignore any
/// preceding CR"), so `\r\n\r\n`, `\n\n`, `\r\n\n` and `\n\r\n` all end
/// a head, and the scanner and the parser always agree on where the head
/// stops and the first frame starts. Each byte is looked at once, so total
/// work is linear in the bytes received however they are split.
#[derive(Clone, Copy, Debug, Default)]
pub struct HeadScanner {
    state: LineState,
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

impl HeadScanner {
    /// Returns the index just past the terminator within `chunk`, if the
    /// head ends there.
    pub fn scan(&mut self, chunk: &[u8]) -> Option<usize> {
        for (i, &byte) in chunk.iter().enumerate() {
            self.state = match (self.state, byte) {
                (LineState::LineStart | LineState::EmptyLineCr, b'\n') => {
                    self.state = LineState::InLine;
                    return Some(i + 1);
                }
                (_, b'\n') => LineState::LineStart,
                (LineState::LineStart, b'\r') => LineState::EmptyLineCr,
                _ => LineState::InLine,
            };
        }
        None
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
pub fn parse_request(head: &[u8], policy: &Policy) -> Result<Request, Refusal> {
    let mut storage = vec![httparse::EMPTY_HEADER; policy.max_headers.max(1)];
    let mut req = httparse::Request::new(&mut storage);
    match req.parse(head) {
        // The scanner and httparse agree on where a head ends; should they
        // ever not, refuse rather than drop the bytes in between.
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        Ok(httparse::Status::Complete(_)) => {
            return Err(Refusal::new(400, "malformed HTTP request"))
        }
        Ok(httparse::Status::Partial) => return Err(Refusal::new(400, "incomplete request head")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::new(431, "too many header fields"))
        }
        Err(_) => return Err(Refusal::new(400, "malformed HTTP request")),
    }
    let target = req.path.unwrap_or("/").to_owned();
    if req.method != Some("GET") {
        // §4.2.1: "The method of the request MUST be GET".
        return Err(Refusal::new(405, "method not allowed").with_allow_get());
    }
    if req.version != Some(1) {
        // §4.2.1: "an HTTP version of 1.1 or higher".
        return Err(Refusal::new(400, "HTTP/1.1 required"));
    }
    let headers = Headers(req.headers);
    let host = headers.one("host")?;
    let Some(host) = host else {
        return Err(Refusal::new(400, "missing Host header"));
    };
    let upgrade = headers.one("upgrade")?;
    if !upgrade.is_some_and(|v| has_token(v, "websocket")) {
        if upgrade.is_some() || headers.any("sec-websocket-key") {
            return Err(Refusal::new(400, "Upgrade must be websocket"));
        }
        return Ok(Request::Http(HttpRequest { target }));
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
    Ok(Request::Upgrade(Upgrade {
        target,
        protocol,
        accept: accept_key(key),
    }))
}

impl Refusal {
    fn with_allow_get(mut self) -> Refusal {
        self.response.headers.push("Allow: GET".into());
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
            Ok(Request::Http(HttpRequest {
                target: "/rust".into()
            }))
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
