//! `--echo`: every message goes back to its sender alone, unchanged, and
//! nobody is announced.

mod common;

use common::Server;

#[test]
fn echo_returns_messages_to_the_sender_only() {
    let server = Server::start(&["--echo"]);
    let mut a = server.client();
    let mut b = server.client();

    // No "joined" for B reaches A: A's next message is its own echo,
    // unchanged (no "User <port>: " prefix).
    a.send_text("héllo 🎉");
    assert_eq!(a.next_text(), "héllo 🎉");

    // B did not get A's text: B's next message is its own echo.
    b.send_text("from b");
    assert_eq!(b.next_text(), "from b");

    let blob = [0u8, 159, 255, 0x88, 0x80, 7];
    a.send_binary(&blob);
    assert_eq!(a.next_binary(), blob);

    // Nor A's binary.
    b.send_text("again");
    assert_eq!(b.next_text(), "again");

    // No "left" either: B leaves, then A's next message is its own echo.
    b.close(1000);
    assert_eq!(b.next_close_code(), 1000);
    b.expect_connection_closed();
    a.send_text("still alone");
    assert_eq!(a.next_text(), "still alone");
}
