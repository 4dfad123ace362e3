//! The chat semantics end to end: joins, relayed text and binary messages,
//! UTF-8, the close handshake and abrupt disconnects.

mod common;

use common::Server;

#[test]
fn three_users_chat_join_and_leave() {
    let server = Server::start(&[]);

    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));

    let mut c = server.client();
    let c_joined = format!("User {} joined", c.port);
    assert_eq!(a.next_text(), c_joined);
    assert_eq!(b.next_text(), c_joined);

    // A's text reaches the others, prefixed with A's name.
    a.send_text("hello");
    let from_a = format!("User {}: hello", a.port);
    assert_eq!(b.next_text(), from_a);
    assert_eq!(c.next_text(), from_a);

    // A does not hear itself: the next thing A gets is B's follow-up.
    b.send_text("hi A");
    let from_b = format!("User {}: hi A", b.port);
    assert_eq!(a.next_text(), from_b);
    assert_eq!(c.next_text(), from_b);

    // Binary goes to the others unchanged (no name prefix).
    let blob = [0u8, 159, 255, 1, 2, 3, 0x81, 0x80];
    c.send_binary(&blob);
    assert_eq!(a.next_binary(), blob);
    assert_eq!(b.next_binary(), blob);

    // Multi-byte UTF-8 arrives intact.
    a.send_text("héllo 🎉");
    let utf8 = format!("User {}: héllo 🎉", a.port);
    assert_eq!(b.next_text(), utf8);
    assert_eq!(c.next_text(), utf8);

    // C closes with 1000: the server answers with its own Close 1000, ends
    // the TCP connection, and the others learn that C left.
    c.close(1000);
    assert_eq!(c.next_close_code(), 1000);
    c.expect_connection_closed();
    let c_left = format!("User {} left", c.port);
    assert_eq!(a.next_text(), c_left);
    assert_eq!(b.next_text(), c_left);

    // D joins, then vanishes without a Close frame: A and B learn D left.
    let d = server.client();
    let d_joined = format!("User {} joined", d.port);
    assert_eq!(a.next_text(), d_joined);
    assert_eq!(b.next_text(), d_joined);
    let d_left = format!("User {} left", d.port);
    drop(d);
    assert_eq!(a.next_text(), d_left);
    assert_eq!(b.next_text(), d_left);

    // The room still works for those who stayed.
    b.send_text("still here");
    assert_eq!(a.next_text(), format!("User {}: still here", b.port));
}

/// With two users, the one who stays must hear that the other left.
#[test]
fn last_remaining_user_hears_the_other_leave() {
    let server = Server::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));

    b.close(1000);
    assert_eq!(b.next_close_code(), 1000);
    assert_eq!(a.next_text(), format!("User {} left", b.port));

    // The same after an abrupt disconnect.
    let c = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", c.port));
    let c_port = c.port;
    drop(c);
    assert_eq!(a.next_text(), format!("User {c_port} left"));
}

/// History replayed to a JSON newcomer carries the time each message was
/// said, not the time of the replay.
#[test]
fn replayed_history_keeps_the_time_it_was_said() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let server = Server::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));
    a.send_text("said before you came");
    // Once b has it, the server has handled it: it was said by now.
    assert_eq!(
        b.next_text(),
        format!("User {}: said before you came", a.port)
    );
    let said_by = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    std::thread::sleep(Duration::from_millis(1500));
    let stream = common::tcp(server.addr);
    let request =
        tungstenite::ClientRequestBuilder::new(format!("ws://{}/", server.addr).parse().unwrap())
            .with_sub_protocol("wschat.v1.json");
    let (mut json, _) = tungstenite::client(request, stream).expect("JSON client");
    let history = loop {
        let message = json.read().expect("an event");
        let event: serde_json::Value = match message {
            tungstenite::Message::Text(t) => serde_json::from_str(&t).expect("JSON"),
            _ => continue,
        };
        if event["type"] == "history" {
            break event;
        }
    };
    assert_eq!(history["text"], "said before you came");
    let ts = history["ts"].as_u64().expect("ts");
    assert!(
        ts <= said_by,
        "ts {ts} is the time it was said (by {said_by}), not of the replay"
    );
}
