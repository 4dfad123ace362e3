//! The request-head scanner and the handshake parser.
//!
//! Input: byte 0 bits 0-2 = number of chunk-length bytes that follow, bits
//! 3-4 choose a policy; the rest is the bytes received.
//!
//! Invariants:
//! - `HeadScanner` fed the bytes in the chunks the input chooses finds the
//!   same end as when fed them whole, and that end is just past the first
//!   empty line, found the slow way: lines end in LF with an optional CR
//!   before it (RFC 7230 §3.5, as httparse reads them), so the head ends
//!   at the first `\n\n` or `\n\r\n`.
//! - `parse_request` on the head never panics, and:
//!   - an upgrade is only granted to a `GET` of HTTP/1.1 (per httparse)
//!     that httparse reads as exactly the head the scanner found (no bytes
//!     left between the two ends), whose `Sec-WebSocket-Key` gives the
//!     accept value reported; a protocol is only selected if the server
//!     speaks it; the `101` parses as HTTP with the right headers;
//!   - a refusal is a 4xx whose bytes parse as a complete HTTP response,
//!     body of `Content-Length` bytes, `Connection: close`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::handshake::{
    accept_response, parse_request, parse_target, HeadScanner, Policy, Request,
};
use wschat_fuzz::{
    accept_matches, check_plain_response, chunks, header, read_http_response, split_control,
};

fn policy(which: u8) -> Policy {
    match which % 4 {
        0 => Policy {
            allowed_origins: vec![],
            protocols: vec![],
            max_head_bytes: 8192,
            max_headers: 64,
            compression: false,
            max_body_bytes: 0,
        },
        1 => Policy {
            allowed_origins: vec!["http://example.com".into()],
            protocols: vec!["chat".into(), "superchat".into()],
            max_head_bytes: 8192,
            max_headers: 64,
            compression: true,
            max_body_bytes: 1024,
        },
        2 => Policy {
            allowed_origins: vec!["*".into()],
            protocols: vec!["chat".into()],
            max_head_bytes: 8192,
            max_headers: 4,
            compression: true,
            max_body_bytes: 16,
        },
        _ => Policy {
            allowed_origins: vec![],
            protocols: vec!["".into(), "a".into()],
            max_head_bytes: 8192,
            max_headers: 0,
            compression: false,
            max_body_bytes: 0,
        },
    }
}

/// Just past the first empty line: an LF, an optional CR, an LF.
fn first_empty_line_end(bytes: &[u8]) -> Option<usize> {
    (0..bytes.len()).find_map(|i| match &bytes[i..] {
        [b'\n', b'\n', ..] => Some(i + 2),
        [b'\n', b'\r', b'\n', ..] => Some(i + 3),
        _ => None,
    })
}

fuzz_target!(|data: &[u8]| {
    let (flags, lens, bytes) = split_control(data);

    let whole = HeadScanner::default().scan(bytes);
    let reference = first_empty_line_end(bytes);
    assert_eq!(whole, reference, "scanner on the whole input");

    let mut scanner = HeadScanner::default();
    let mut at = 0;
    let mut chunked = None;
    for chunk in chunks(bytes, lens) {
        if let Some(end) = scanner.scan(chunk) {
            assert!(end >= 1 && end <= chunk.len());
            chunked = Some(at + end);
            break;
        }
        at += chunk.len();
    }
    assert_eq!(chunked, whole, "scanner fed in chunks {lens:?}");

    let Some(end) = whole else { return };
    let head = &bytes[..end];
    let policy = policy(flags);
    match parse_request(head, &policy) {
        Ok(Request::Upgrade(u)) => {
            let mut headers = vec![httparse::EMPTY_HEADER; policy.max_headers.max(1)];
            let mut req = httparse::Request::new(&mut headers);
            // The request httparse read must be the whole head: bytes
            // between its end and the scanner's would be dropped (they are
            // the client's first frames).
            let parsed = req.parse(head);
            assert!(
                matches!(parsed, Ok(httparse::Status::Complete(n)) if n == end),
                "upgrade granted, but httparse ends the request at {parsed:?} and the scanner \
                 at {end}: the bytes between are dropped"
            );
            assert_eq!(req.method, Some("GET"));
            assert_eq!(req.version, Some(1));
            // The target in origin form: an absolute-form request's path
            // (RFC 9112 §3.2.2), or the path as sent.
            let path = req.path.expect("a request path");
            let origin_form = parse_target(path).expect("a target the upgrade accepted");
            assert_eq!(origin_form.path, u.target.as_str());
            let keys: Vec<&[u8]> = req
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-key"))
                .map(|h| h.value.trim_ascii())
                .collect();
            assert_eq!(keys.len(), 1, "upgrade granted with {} keys", keys.len());
            assert!(accept_matches(keys[0], &u.accept));
            if let Some(p) = &u.protocol {
                assert!(
                    policy.protocols.contains(p),
                    "selected unknown protocol {p:?}"
                );
            }
            let response = accept_response(&u);
            let (status, n, headers) = read_http_response(&response);
            assert_eq!(status, 101);
            assert_eq!(n, response.len(), "nothing after the 101 head");
            assert_eq!(
                header(&headers, "sec-websocket-accept"),
                Some(u.accept.as_bytes())
            );
            assert_eq!(
                header(&headers, "sec-websocket-protocol"),
                u.protocol.as_deref().map(str::as_bytes)
            );
        }
        Ok(Request::Http(r)) => {
            assert!(!r.target.is_empty());
        }
        Err(refusal) => {
            let status = refusal.response.status;
            assert!((400..500).contains(&status), "refusal status {status}");
            assert!(!refusal.reason.is_empty());
            check_plain_response(&refusal.response.to_bytes(), Some(status), false);
        }
    }
});
