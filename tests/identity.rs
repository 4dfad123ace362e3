//! Who is speaking, over real sockets: plain lines nobody can forge,
//! nicknames nobody can imitate, `/whoami`, private messages, and an
//! identity that survives a reconnect.

mod common;

use std::time::{Duration, Instant};

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
    assert!(alice.next_text().starts_with(
        "wschat: You are alice in lobby; its last message is number 1; your resume token is "
    ));
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

/// Drops a client's TCP connection without a Close: a lost connection.
fn drop_connection(client: Client) {
    let stream = client.ws.get_ref();
    stream.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
}

#[test]
fn a_reconnect_within_the_grace_keeps_the_name_and_the_room_sees_nothing() {
    let server = Server::start(&["--resume-grace", "30"]);
    let mut observer = server.client();
    let mut alice = Client::json(server.addr, "/");
    let welcome = alice.next_json_of("system");
    let token = welcome["resume"].as_str().expect("a token").to_owned();
    assert_eq!(token.len(), 32);
    observer.next_text();
    alice.send_text(r#"{"type":"nick","name":"alice"}"#);
    alice.next_json_of("nick");
    observer.next_text();
    alice.send_text(r#"{"type":"message","text":"before"}"#);
    let seq = alice.next_json_of("message")["seq"].as_u64().unwrap();
    observer.next_text();

    drop_connection(alice);
    assert!(
        observer.silent_for(Duration::from_millis(1500)).is_ok(),
        "no leave for a short drop"
    );
    let mut back = Client::json(server.addr, &format!("/?resume={token}&since={seq}"));
    let welcome = back.next_json_of("system");
    assert_eq!(welcome["you"], "alice");
    let fresh = welcome["resume"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token, "a new token for the next time");
    assert!(
        observer.silent_for(Duration::from_millis(300)).is_ok(),
        "no join either"
    );
    back.send_text(r#"{"type":"message","text":"back again"}"#);
    assert_eq!(observer.next_text(), "alice: back again");

    // The spent token gets a new user, told why.
    let mut stale = Client::json(server.addr, &format!("/?resume={token}"));
    let welcome = stale.next_json_of("system");
    assert_eq!(welcome["you"], format!("User {}", stale.port));
    let note = stale.next_json_of("system");
    assert!(note["text"]
        .as_str()
        .unwrap()
        .starts_with("your resume token is not valid here"));
    assert_eq!(observer.next_text(), format!("User {} joined", stale.port));
    // A malformed one is refused at the handshake.
    let (head, _) = common::http_exchange(
        server.addr,
        common::upgrade_request(server.addr, "")
            .replace("GET / ", "GET /?resume=xyz ")
            .as_bytes(),
    );
    assert_eq!(head.status, 400);
}

#[test]
fn after_the_grace_the_leave_is_announced_and_the_token_is_refused() {
    let server = Server::start(&["--resume-grace", "1"]);
    let mut observer = server.client();
    let mut alice = Client::json(server.addr, "/");
    let token = alice.next_json_of("system")["resume"]
        .as_str()
        .unwrap()
        .to_owned();
    observer.next_text();
    alice.send_text(r#"{"type":"nick","name":"alice"}"#);
    alice.next_json_of("nick");
    observer.next_text();
    let dropped = Instant::now();
    drop_connection(alice);
    assert_eq!(observer.next_text(), "alice left");
    assert!(
        dropped.elapsed() >= Duration::from_millis(900),
        "{:?}",
        dropped.elapsed()
    );
    let mut late = Client::json(server.addr, &format!("/?resume={token}"));
    assert_eq!(
        late.next_json_of("system")["you"],
        format!("User {}", late.port)
    );
    assert!(late.next_json_of("system")["text"]
        .as_str()
        .unwrap()
        .contains("not valid here"));
    // Her name is free again.
    late.send_text(r#"{"type":"nick","name":"alice"}"#);
    assert_eq!(late.next_json_of("nick")["text"], "alice");
}

#[test]
fn a_plain_client_resumes_with_the_token_whoami_gave() {
    let server = Server::start(&["--resume-grace", "30"]);
    let mut observer = server.client();
    let mut bob = server.client();
    observer.next_text();
    bob.send_text("/whoami");
    let me = bob.next_text();
    let token = me.split("token is ").nth(1).expect("a token")[..32].to_owned();
    drop_connection(bob);
    assert!(observer.silent_for(Duration::from_millis(1500)).is_ok());
    let mut back = Client::connect_path(server.addr, &format!("/?resume={token}"), None);
    let welcome = back.next_text();
    assert!(
        welcome.starts_with("wschat: Welcome back: you are User "),
        "{welcome}"
    );
    back.send_text("same me");
    let heard = observer.next_text();
    assert!(
        heard.ends_with(": same me") && !heard.contains(&back.port.to_string()),
        "{heard}"
    );
    // A deliberate goodbye is a leave at once.
    back.close(1000);
    assert!(observer.next_text().ends_with(" left"));
}
