//! Limits and protocol violations: each ends the offending connection
//! with the close code or HTTP status RFC 6455 names, and only that one.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::{frame, read_response_to_eof, upgrade_request, RawClient, Server, TIMEOUT};

#[test]
fn oversized_message_closes_the_sender_with_1009_and_the_room_goes_on() {
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));
    let mut big = server.client();
    let joined = format!("User {} joined", big.port);
    assert_eq!(a.next_text(), joined);
    assert_eq!(b.next_text(), joined);

    // Exactly at the limit is fine.
    let limit = "x".repeat(1024);
    big.send_text(&limit);
    let relayed = format!("User {}: {limit}", big.port);
    assert_eq!(a.next_text(), relayed);
    assert_eq!(b.next_text(), relayed);

    // Twice the limit is not.
    big.send_text(&"y".repeat(2048));
    assert_eq!(big.next_close_code(), 1009);
    big.expect_connection_closed();
    let left = format!("User {} left", big.port);
    assert_eq!(a.next_text(), left);
    assert_eq!(b.next_text(), left);

    // The others keep chatting.
    a.send_text("still here?");
    assert_eq!(b.next_text(), format!("User {}: still here?", a.port));
    b.send_text("yes");
    assert_eq!(a.next_text(), format!("User {}: yes", b.port));
}

#[test]
fn limit_applies_to_the_sum_of_fragments() {
    let server = Server::start(&["--max-message-size", "1KiB"]);
    let mut raw = RawClient::connect(server.addr);
    // Two 600-byte fragments: each under the limit, together over it.
    raw.send(&frame(0x01, &[b'a'; 600], true));
    raw.send(&frame(0x80, &[b'b'; 600], true));
    assert_eq!(raw.read_close_code(), 1009);
    raw.expect_eof();
}

#[test]
fn unmasked_frame_closes_with_1002() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(server.addr);
    raw.send(&frame(0x81, b"hi", false));
    assert_eq!(raw.read_close_code(), 1002);
    raw.expect_eof();
}

#[test]
fn reserved_opcode_closes_with_1002() {
    let server = Server::start(&[]);
    let mut raw = RawClient::connect(server.addr);
    raw.send(&frame(0x83, b"hi", true));
    assert_eq!(raw.read_close_code(), 1002);
    raw.expect_eof();
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let server = Server::start(&[]);
    // Two watchers, so that neither is the last one left in the room.
    let mut watcher = server.client();
    let other = server.client();
    assert_eq!(watcher.next_text(), format!("User {} joined", other.port));
    let mut raw = RawClient::connect(server.addr);
    assert_eq!(watcher.next_text(), format!("User {} joined", raw.port));

    raw.send(&frame(0x81, &[b'o', b'k', 0xff, 0xfe], true));
    assert_eq!(raw.read_close_code(), 1007);
    raw.expect_eof();
    // Nothing of the bad text was relayed: the next thing is the departure.
    assert_eq!(watcher.next_text(), format!("User {} left", raw.port));
}

#[test]
fn request_head_over_8k_gets_431() {
    let server = Server::start(&[]);
    let padding = format!("X-Padding: {}\r\n", "p".repeat(9 * 1024));
    let mut stream = server.tcp();
    stream
        .write_all(upgrade_request(server.addr, &padding).as_bytes())
        .unwrap();
    let (head, _) = read_response_to_eof(&mut stream);
    assert_eq!(head.status, 431);
}

#[test]
fn connections_past_the_limit_get_503() {
    let server = Server::start(&["--max-connections", "2"]);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));

    // The server answers before reading anything: send nothing, so no
    // unread request turns its close into a reset.
    let mut third = server.tcp();
    let (head, body) = read_response_to_eof(&mut third);
    assert_eq!(head.status, 503);
    assert!(!body.is_empty());

    // The two admitted users are unaffected.
    a.send_text("ping");
    assert_eq!(b.next_text(), format!("User {}: ping", a.port));

    // Once one leaves, its slot is free again. The slot frees when the
    // server has seen the TCP connection end, which no client can observe,
    // so retry (bounded) until a connection is admitted.
    a.close(1000);
    assert_eq!(a.next_close_code(), 1000);
    a.expect_connection_closed();
    drop(a);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let mut stream = server.tcp();
        stream
            .write_all(upgrade_request(server.addr, "").as_bytes())
            .unwrap();
        let head = common::read_head(&mut stream);
        if head.status == 101 {
            break;
        }
        assert_eq!(head.status, 503);
        assert!(Instant::now() < deadline, "slot never freed");
        thread::sleep(Duration::from_millis(20));
    }
}
