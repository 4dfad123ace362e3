//! The opening handshake over raw TCP: refusals, origins, subprotocols,
//! the exact `101`, and frames that arrive in the same write as the head.

mod common;

use std::io::Write;

use common::{http_exchange, read_head, text_frame, upgrade_request, Head, Server};

/// The RFC 6455 §1.3 sample key and its accept value.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Sends an upgrade request with `extra` headers and returns the `101`
/// head, checked for the fields every accepted upgrade must carry.
fn upgrade(server: &Server, extra: &str) -> Head {
    let mut stream = server.tcp();
    stream
        .write_all(upgrade_request(server.addr, extra).as_bytes())
        .unwrap();
    let head = read_head(&mut stream);
    assert_eq!(head.status, 101, "expected 101 for {extra:?}: {head:?}");
    assert_eq!(head.get("Upgrade"), Some("websocket"));
    assert_eq!(head.get("Connection"), Some("Upgrade"));
    assert_eq!(head.get("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    head
}

/// The status of the response to an upgrade request with `extra` headers.
fn upgrade_status(server: &Server, extra: &str) -> u16 {
    let request = upgrade_request(server.addr, extra);
    http_exchange(server.addr, request.as_bytes()).0.status
}

/// A plain GET of a room path is a browser: it gets the chat page.
#[test]
fn plain_get_of_a_room_gets_the_chat_page() {
    let server = Server::start(&[]);
    for path in ["/", "/rust"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
        let (head, body) = http_exchange(server.addr, request.as_bytes());
        assert_eq!(head.status, 200);
        assert_eq!(head.get("Content-Type"), Some("text/html; charset=utf-8"));
        assert!(
            body.contains("wschat.v1.json"),
            "the page speaks the JSON protocol"
        );
    }
    let request = format!("GET /no/such HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    assert_eq!(http_exchange(server.addr, request.as_bytes()).0.status, 404);
}

#[test]
fn wrong_version_gets_426_naming_version_13() {
    let server = Server::start(&[]);
    let request = upgrade_request(server.addr, "")
        .replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let (head, _) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(head.status, 426);
    assert_eq!(head.get("Sec-WebSocket-Version"), Some("13"));
}

#[test]
fn post_gets_405() {
    let server = Server::start(&[]);
    let request = upgrade_request(server.addr, "").replacen("GET", "POST", 1);
    let (head, _) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(head.status, 405);
    // HEAD is answered too (tests/http_strictness.rs).
    assert_eq!(head.get("Allow"), Some("GET, HEAD"));
}

#[test]
fn missing_key_gets_400() {
    let server = Server::start(&[]);
    let request = upgrade_request(server.addr, "")
        .replace(&format!("Sec-WebSocket-Key: {SAMPLE_KEY}\r\n"), "");
    assert!(!request.contains("Sec-WebSocket-Key"));
    let (head, _) = http_exchange(server.addr, request.as_bytes());
    assert_eq!(head.status, 400);
}

#[test]
fn foreign_origin_is_refused_by_default() {
    let server = Server::start(&[]);
    assert_eq!(
        upgrade_status(&server, "Origin: http://evil.example\r\n"),
        403
    );
}

#[test]
fn listed_origin_is_accepted() {
    let server = Server::start(&["--allow-origin", "http://evil.example"]);
    upgrade(&server, "Origin: http://evil.example\r\n");
    // Only the listed one.
    assert_eq!(
        upgrade_status(&server, "Origin: http://other.example\r\n"),
        403
    );
}

#[test]
fn wildcard_origin_accepts_any() {
    let server = Server::start(&["--allow-origin", "*"]);
    upgrade(&server, "Origin: http://evil.example\r\n");
}

#[test]
fn origin_matching_host_is_accepted() {
    let server = Server::start(&[]);
    // upgrade_request sends `Host: <addr>`; a page from that host is fine.
    upgrade(&server, &format!("Origin: http://{}\r\n", server.addr));
}

#[test]
fn subprotocol_follows_the_clients_preference() {
    let server = Server::start(&["--protocol", "chat", "--protocol", "superchat"]);
    let head = upgrade(&server, "Sec-WebSocket-Protocol: superchat, chat\r\n");
    assert_eq!(head.get("Sec-WebSocket-Protocol"), Some("superchat"));

    let head = upgrade(&server, "Sec-WebSocket-Protocol: foo\r\n");
    assert_eq!(head.get("Sec-WebSocket-Protocol"), None, "{head:?}");
}

#[test]
fn accepted_upgrade_answers_the_rfc_sample_key() {
    let server = Server::start(&[]);
    // `upgrade` checks `Connection: Upgrade` (exactly, once) and the
    // accept value for the RFC sample key.
    let head = upgrade(&server, "");
    // Nothing was offered, so nothing is selected.
    assert_eq!(head.get("Sec-WebSocket-Protocol"), None, "{head:?}");
    assert_eq!(head.get("Sec-WebSocket-Extensions"), None, "{head:?}");
}

#[test]
fn deflate_offer_is_not_accepted() {
    let server = Server::start(&[]);
    let head = upgrade(
        &server,
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
    );
    assert_eq!(head.get("Sec-WebSocket-Extensions"), None, "{head:?}");
}

#[test]
fn frames_in_the_same_write_as_the_head_are_processed() {
    let server = Server::start(&[]);
    let mut listener = server.client();

    let mut stream = server.tcp();
    let port = stream.local_addr().unwrap().port();
    let mut bytes = upgrade_request(server.addr, "").into_bytes();
    bytes.extend_from_slice(&text_frame("early bird"));
    stream.write_all(&bytes).unwrap();

    let head = read_head(&mut stream);
    assert_eq!(head.status, 101);
    assert_eq!(listener.next_text(), format!("User {port} joined"));
    assert_eq!(listener.next_text(), format!("User {port}: early bird"));
}

/// One rule for a bad `since`, whether the request upgrades or not: a
/// malformed query is `400`, a path that names no room `404`.
#[test]
fn a_bad_since_is_400_on_a_plain_get_and_on_an_upgrade() {
    let server = Server::start(&[]);
    let get = format!(
        "GET /rust?since=x HTTP/1.1\r\nHost: {}\r\n\r\n",
        server.addr
    );
    assert_eq!(http_exchange(server.addr, get.as_bytes()).0.status, 400);
    let upgrade = upgrade_request(server.addr, "").replacen("GET / ", "GET /rust?since=x ", 1);
    assert!(upgrade.starts_with("GET /rust?since=x "), "{upgrade}");
    assert_eq!(http_exchange(server.addr, upgrade.as_bytes()).0.status, 400);
}
