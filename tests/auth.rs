//! Verified users over real sockets (`--auth-secret-file`,
//! `--require-auth`): tokens in the query and in the cookie, every kind of
//! bad token refused with 401 and logged, the verified name shown as such
//! and taken from an anonymous holder, rooms limited by the token, and the
//! close at `exp` unless a fresh token came. Tokens are signed here with
//! ring's HMAC, not with the server's JWT library.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use common::jwt::{self, now_s};
use common::tls::file_with;
use common::{read_head, tcp, Client, Server, KEY};

const SECRET: &str = "a test secret of more than thirty-two bytes";

fn start(extra: &[&str]) -> Server {
    // Surrounding whitespace (an editor's newline) is not part of it.
    let path = file_with("auth-secret", &format!("{SECRET}\n"));
    let mut args = vec!["--auth-secret-file", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// A token for `name`, valid for `secs` more seconds.
fn token(name: &str, secs: u64) -> String {
    jwt::for_user(name, secs, SECRET.as_bytes())
}

/// The status the server answers an upgrade of `path` with `extra`
/// header lines.
fn upgrade_status(addr: SocketAddr, path: &str, extra: &str) -> u16 {
    let mut stream = tcp(addr);
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .unwrap();
    read_head(&mut stream).status
}

fn wait_for_log(server: &Server, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !server.log().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_verified_user_is_shown_as_such_and_takes_its_name_from_an_impostor() {
    let server = start(&[]);
    // An anonymous user takes the name first.
    let mut impostor = Client::json(server.addr, "/r");
    impostor.next_json_of("system");
    impostor.send_text(r#"{"type":"nick","name":"alice"}"#);
    impostor.next_json_of("nick");
    let mut plain = Client::connect_path(server.addr, "/r", None);
    impostor.next_json_of("join");

    let path = format!("/r?token={}", token("alice", 60));
    let mut alice = Client::json(server.addr, &path);
    assert_eq!(alice.next_json_of("system")["you"], "alice");
    // The impostor is told, and everyone sees the name go back first.
    let told = impostor.next_json_of("system");
    assert!(
        told["text"]
            .as_str()
            .unwrap()
            .contains("belongs to a verified user"),
        "{told}"
    );
    let renamed = plain.next_text();
    assert_eq!(renamed, format!("alice is now User {}", impostor.port));
    assert_eq!(plain.next_text(), "alice joined");

    alice.send_text(r#"{"type":"message","text":"it is me"}"#);
    let seen = impostor.next_json_of("message");
    assert_eq!(
        (&seen["from"], &seen["verified"]),
        (&"alice".into(), &true.into())
    );
    assert_eq!(plain.next_text(), "alice: it is me");
    // An anonymous message carries no such mark.
    impostor.send_text(r#"{"type":"message","text":"hm"}"#);
    assert_eq!(
        alice.next_json_of("message")["text"],
        "it is me",
        "her own, back"
    );
    let hm = alice.next_json_of("message");
    assert_eq!(hm["text"], "hm");
    assert!(hm.get("verified").is_none(), "{hm}");

    assert_eq!(plain.next_text(), format!("User {}: hm", impostor.port));
    plain.send_text("/who");
    let who = plain.next_text();
    assert!(who.contains("alice (verified)"), "{who}");
    alice.send_text(r#"{"type":"who"}"#);
    assert_eq!(
        alice.next_json_of("system")["verified"],
        serde_json::json!(["alice"])
    );

    // Nobody else may take it while she is here, and she keeps it.
    plain.send_text("/nick alice");
    assert!(plain
        .next_text()
        .starts_with("error: the name alice is taken"));
    alice.send_text(r#"{"type":"nick","name":"bob"}"#);
    assert!(alice.next_json_of("error")["text"]
        .as_str()
        .unwrap()
        .contains("comes from your token"));

    // A holder of another spelling of a verified name (here Cyrillic
    // letters that look like Latin `coe`) loses it too, under its own
    // spelling.
    let mut lookalike = Client::json(server.addr, "/r");
    lookalike.next_json_of("system");
    assert!(plain.next_text().ends_with("joined"));
    lookalike.send_text(r#"{"type":"nick","name":"\u0441\u043e\u0435"}"#);
    lookalike.next_json_of("nick");
    assert!(plain.next_text().ends_with("is now \u{441}\u{43e}\u{435}"));
    let path = format!("/r?token={}", token("coe", 60));
    let _coe = Client::connect_path(server.addr, &path, None);
    assert_eq!(
        plain.next_text(),
        format!("\u{441}\u{43e}\u{435} is now User {}", lookalike.port)
    );
    assert_eq!(plain.next_text(), "coe joined");
    // Taking its spelling back is refused: it looks like the verified name.
    lookalike.send_text(r#"{"type":"nick","name":"\u0441\u043e\u0435"}"#);
    assert!(lookalike.next_json_of("error")["text"]
        .as_str()
        .unwrap()
        .contains("taken"));
}

#[test]
fn the_page_brings_its_token_in_a_cookie() {
    let server = start(&["--require-auth"]);
    let cookie = format!(
        "Cookie: theme=dark; wschat_token={}\r\n",
        token("carol", 60)
    );
    assert_eq!(upgrade_status(server.addr, "/", &cookie), 101);
    let mut request =
        tungstenite::ClientRequestBuilder::new(format!("ws://{}/", server.addr).parse().unwrap())
            .with_sub_protocol("wschat.v1.json")
            .with_header("Cookie", format!("wschat_token={}", token("carol", 60)));
    request = request.with_header("X-Test", "1");
    let (mut ws, _) = tungstenite::client(request, tcp(server.addr)).expect("upgrade");
    let welcome: serde_json::Value = loop {
        let text = ws.read().unwrap().into_text().unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        if v["type"] == "system" {
            break v;
        }
    };
    assert_eq!(welcome["you"], "carol");
}

#[test]
fn bad_tokens_get_401_with_the_reason_logged_and_others_keep_chatting() {
    let server = start(&["--require-auth"]);
    let mut a = Client::connect_path(server.addr, &format!("/?token={}", token("ann", 60)), None);
    let mut b = Client::connect_path(server.addr, &format!("/?token={}", token("ben", 60)), None);
    assert_eq!(a.next_text(), "ben joined");

    let exp = now_s() + 60;
    let claims = format!(r#"{{"sub":"mallory","exp":{exp}}}"#);
    let good = token("mallory", 60);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = B64.encode(format!(r#"{{"sub":"admin","exp":{exp}}}"#));
    let tampered = parts.join(".");
    let none = format!(
        "{}.{}.",
        B64.encode(r#"{"alg":"none"}"#),
        B64.encode(&claims)
    );
    let cases = [
        ("no token", String::new(), "a token is required"),
        (
            "wrong key",
            jwt::sign(
                "HS256",
                &claims,
                b"another secret of thirty-two bytes or more",
            ),
            "signature does not match",
        ),
        ("tampered", tampered, "signature does not match"),
        ("alg none", none, "not signed with HS256"),
        (
            "HS512",
            jwt::sign("HS512", &claims, SECRET.as_bytes()),
            "not signed with HS256",
        ),
        (
            "expired",
            jwt::sign(
                "HS256",
                &format!(r#"{{"sub":"m","exp":{}}}"#, now_s() - 1),
                SECRET.as_bytes(),
            ),
            "token has expired",
        ),
        (
            "no exp",
            jwt::sign("HS256", r#"{"sub":"m"}"#, SECRET.as_bytes()),
            "exp is required",
        ),
        (
            "reserved name",
            jwt::sign(
                "HS256",
                &format!(r#"{{"sub":"User 51234","exp":{exp}}}"#),
                SECRET.as_bytes(),
            ),
            "not a valid nickname",
        ),
        ("garbage", "not.a.jwt".to_owned(), "not a well-formed JWT"),
    ];
    for (what, token, reason) in cases {
        let path = match token.is_empty() {
            true => "/".to_owned(),
            false => format!("/?token={token}"),
        };
        assert_eq!(upgrade_status(server.addr, &path, ""), 401, "{what}");
        wait_for_log(&server, reason);
    }
    // A token for other rooms only.
    let rooms = jwt::sign(
        "HS256",
        &format!(r#"{{"sub":"dan","exp":{exp},"rooms":["staff"]}}"#),
        SECRET.as_bytes(),
    );
    assert_eq!(
        upgrade_status(server.addr, &format!("/?token={rooms}"), ""),
        403
    );
    assert_eq!(
        upgrade_status(server.addr, &format!("/staff?token={rooms}"), ""),
        101
    );

    b.send_text("still here");
    assert_eq!(a.next_text(), "ben: still here");
}

#[test]
fn a_token_that_runs_out_closes_its_connection_unless_renewed() {
    let server = start(&[]);
    let mut short =
        Client::connect_path(server.addr, &format!("/?token={}", token("eve", 2)), None);
    let mut renewed =
        Client::connect_path(server.addr, &format!("/?token={}", token("fay", 2)), None);
    assert_eq!(short.next_text(), "fay joined");
    renewed.send_text(&format!("/token {}", token("fay", 60)));
    assert!(renewed.next_text().starts_with("wschat: token accepted"));
    // Someone else's token is no renewal.
    short.send_text(&format!("/token {}", token("fay", 60)));
    assert!(short.next_text().starts_with("error: token refused"));

    assert_eq!(short.next_close_code(), 4001);
    wait_for_log(&server, "eve: token expired, closing");
    assert_eq!(renewed.next_text(), "eve left");
    renewed.send_text("/who");
    assert_eq!(
        renewed.next_text(),
        "wschat: Users in lobby (1): fay (verified)"
    );
}

#[test]
fn startup_refuses_a_missing_or_short_secret() {
    for (file, why) in [
        (PathBuf::from("/nonexistent/wschat-secret"), "No such file"),
        (
            file_with("short-secret", "short\n"),
            "HS256 needs at least 32",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(["--listen", "127.0.0.1:0", "--auth-secret-file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains(why), "{log}");
    }
}
