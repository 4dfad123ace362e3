//! The client's opening handshake (RFC 6455 §4.1): the upgrade request
//! and the checks on the server's answer.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

use crate::rng::XorShift64;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A response head larger than this is refused.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    TooLong,
    /// The status line is not `HTTP/1.1 101`.
    NotSwitching,
    /// `Sec-WebSocket-Accept` is missing or does not match the key.
    BadAccept,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HandshakeError::TooLong => "response head too long",
            HandshakeError::NotSwitching => "status is not 101",
            HandshakeError::BadAccept => "missing or wrong Sec-WebSocket-Accept",
        })
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (§4.1).
pub fn new_key(rng: &mut XorShift64) -> String {
    let mut nonce = [0u8; 16];
    rng.fill(&mut nonce);
    STANDARD.encode(nonce)
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with (§4.2.2).
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Appends the upgrade request to `out`.
pub fn write_request(out: &mut Vec<u8>, host: &str, path: &str, key: &str) {
    for part in [
        "GET ",
        path,
        " HTTP/1.1\r\nHost: ",
        host,
        "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ",
        key,
        "\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
}

/// Checks the response head in `buf`. `Ok(None)` while the head is not
/// complete; otherwise where the first frame byte after it is.
pub fn parse_response(buf: &[u8], key: &str) -> Result<Option<usize>, HandshakeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > MAX_RESPONSE_HEAD {
            Err(HandshakeError::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status = lines.next().unwrap_or_default();
    let mut words = status.split(|&b| b == b' ').filter(|w| !w.is_empty());
    if !matches!(words.next(), Some(v) if v.starts_with(b"HTTP/1.")) || words.next() != Some(b"101")
    {
        return Err(HandshakeError::NotSwitching);
    }
    let expected = accept_for(key);
    let accepted = lines.any(|line| {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        line[..colon].eq_ignore_ascii_case(b"sec-websocket-accept")
            && line[colon + 1..].trim_ascii() == expected.as_bytes()
    });
    if accepted {
        Ok(Some(end + 4))
    } else {
        Err(HandshakeError::BadAccept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// §1.3's worked example.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    #[test]
    fn rfc_accept_example() {
        assert_eq!(accept_for(KEY), ACCEPT);
    }

    #[test]
    fn keys_are_16_bytes_of_base64() {
        let mut rng = XorShift64::new(1);
        let key = new_key(&mut rng);
        assert_eq!(STANDARD.decode(&key).unwrap().len(), 16);
        assert_ne!(key, new_key(&mut rng));
    }

    #[test]
    fn request_has_the_required_headers() {
        let mut out = Vec::new();
        write_request(&mut out, "127.0.0.1:9000", "/chat", KEY);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /chat HTTP/1.1\r\n"));
        for header in [
            "Host: 127.0.0.1:9000",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Version: 13",
        ] {
            assert!(text.contains(&format!("\r\n{header}\r\n")), "{header}");
        }
        assert!(text.ends_with(&format!(
            "Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )));
    }

    #[test]
    fn good_response_at_every_length() {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-ACCEPT:  {ACCEPT} \r\n\r\n"
        );
        let mut bytes = head.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x00]);
        for cut in 0..head.len() {
            assert_eq!(parse_response(&bytes[..cut], KEY), Ok(None), "cut at {cut}");
        }
        assert_eq!(parse_response(&bytes, KEY), Ok(Some(head.len())));
    }

    #[test]
    fn refusals() {
        let cases = [
            (
                "HTTP/1.1 400 Bad Request\r\n\r\n".to_string(),
                HandshakeError::NotSwitching,
            ),
            ("garbage\r\n\r\n".to_string(), HandshakeError::NotSwitching),
            (
                "HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n\r\n".to_string(),
                HandshakeError::BadAccept,
            ),
            (
                "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: xxxx\r\n\r\n".to_string(),
                HandshakeError::BadAccept,
            ),
        ];
        for (response, error) in cases {
            assert_eq!(
                parse_response(response.as_bytes(), KEY),
                Err(error),
                "{response:?}"
            );
        }
        let endless = vec![b'x'; MAX_RESPONSE_HEAD + 1];
        assert_eq!(parse_response(&endless, KEY), Err(HandshakeError::TooLong));
    }
}
