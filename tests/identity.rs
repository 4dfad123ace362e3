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

#[test]
fn look_alike_reserved_and_invisible_nicknames_are_refused_with_a_reason() {
    let server = Server::start(&[]);
    let mut alice = server.client();
    let mut other = server.client();
    alice.next_text();
    alice.send_text("/nick alice");
    assert_eq!(
        alice.next_text(),
        format!("User {} is now alice", alice.port)
    );
    other.next_text();
    let refusals = [
        (
            "ALICE",
            "the name ALICE is taken in this room: it looks like alice",
        ),
        ("\u{430}lice", "a nickname cannot mix scripts"),
        (
            "a1ice",
            "the name a1ice is taken in this room: it looks like alice",
        ),
        (
            &format!("User\u{2800}{}", alice.port),
            "U+2800 is not allowed",
        ),
        (&format!("user{}", alice.port), "that name is reserved"),
        ("Us\u{435}r1", "cannot mix scripts"),
        ("bob\u{202e}", "invisible formatting characters"),
        ("zero\u{200b}width", "invisible formatting characters"),
        ("wschat", "that name is reserved"),
        ("\u{3164}", "U+3164 is not allowed"),
    ];
    for (name, why) in refusals {
        other.send_text(&format!("/nick {name}"));
        let reply = other.next_text();
        assert!(
            reply.starts_with("error: ") && reply.contains(why),
            "{name:?}: {reply}"
        );
    }
    other.send_text("/nick bob");
    assert_eq!(other.next_text(), format!("User {} is now bob", other.port));
    assert_eq!(alice.next_text(), format!("User {} is now bob", other.port));
}

#[test]
fn whoami_and_private_messages_over_sockets() {
    let server = Server::start(&[]);
    let mut alice = server.client();
    let mut bob = Client::json(server.addr, "/");
    let mut carol = server.client();
    alice.next_text();
    alice.next_text();
    bob.next_json_of("system");
    bob.next_json_of("join");
    alice.send_text("/nick alice");
    alice.next_text();
    bob.next_json_of("nick");
    carol.next_text();
    alice.send_text("hello all");
    bob.next_json_of("message");
    carol.next_text();

    alice.send_text("/whoami");
    assert_eq!(
        alice.next_text(),
        "wschat: You are alice in lobby; its last message is number 1"
    );
    bob.send_text(r#"{"type":"whoami"}"#);
    let me = bob.next_json_of("system");
    assert_eq!(me["you"], format!("User {}", bob.port));
    assert_eq!(me["last_seq"], 1);

    alice.send_text(&format!("/msg User {} meet at 5", bob.port));
    assert_eq!(
        alice.next_text(),
        format!("[private to User {}] meet at 5", bob.port)
    );
    let got = bob.next_json_of("private");
    assert_eq!(
        (&got["from"], &got["text"]),
        (&"alice".into(), &"meet at 5".into())
    );
    bob.send_text(r#"{"type":"msg","to":"Alice","text":"ok"}"#);
    assert_eq!(
        alice.next_text(),
        "[private] User ".to_owned() + &bob.port.to_string() + ": ok"
    );
    assert_eq!(bob.next_json_of("private")["to"], "alice");
    alice.send_text("/msg nobody hi");
    assert_eq!(
        alice.next_text(),
        "error: nobody called nobody is in this room"
    );
    // Carol heard none of it, and history holds none of it.
    alice.send_text("public again");
    assert_eq!(carol.next_text(), "alice: public again");
    let mut late = server.client();
    assert_eq!(late.next_text(), "alice: hello all");
    assert_eq!(late.next_text(), "alice: public again");
    assert!(late
        .silent_for(std::time::Duration::from_millis(200))
        .is_ok());
}
