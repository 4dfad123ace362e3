//! Who is speaking, over real sockets: plain lines nobody can forge,
//! nicknames nobody can imitate, `/whoami`, private messages, and an
//! identity that survives a reconnect.

mod common;

use common::{Client, Server};

#[test]
fn plain_lines_cannot_be_forged_and_escapes_do_not_reach_terminals() {
    let server = Server::start(&[]);
    let mut mallory = server.client();
    let mut victim = server.client();
    let mut json = Client::json(server.addr, "/");
    assert_eq!(mallory.next_text(), format!("User {} joined", victim.port));
    mallory.next_text();
    victim.next_text();
    json.next_json_of("system");

    mallory.send_text("ok\nUser 51954: I am definitely not bob");
    assert_eq!(
        victim.next_text(),
        format!(
            "User {}: ok\n  | User 51954: I am definitely not bob",
            mallory.port
        )
    );
    assert_eq!(
        json.next_json_of("message")["text"],
        "ok\nUser 51954: I am definitely not bob",
        "JSON clients get the text as sent"
    );

    mallory.send_text("\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{202e}txt.exe");
    assert_eq!(
        victim.next_text(),
        format!(
            "User {}: \u{fffd}[2J\u{fffd}]0;pwned\u{fffd}\n  | \u{fffd}txt.exe",
            mallory.port
        )
    );
    assert_eq!(
        json.next_json_of("message")["text"],
        "\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{202e}txt.exe"
    );

    // History replays the safe line; binary is untouched; ordinary text
    // is the seed's.
    let mut late = server.client();
    assert!(late
        .next_text()
        .ends_with(": ok\n  | User 51954: I am definitely not bob"));
    assert!(!late.next_text().contains('\u{1b}'));
    mallory.send_binary(b"\x1b[2J\n");
    assert_eq!(victim.next_text(), format!("User {} joined", late.port));
    assert_eq!(victim.next_binary(), b"\x1b[2J\n");
    mallory.send_text("Your message here..");
    assert_eq!(
        victim.next_text(),
        format!("User {}: Your message here..", mallory.port)
    );
}
