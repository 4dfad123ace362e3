//! The HTTP API for backends over real sockets, with requests written the
//! way curl writes them: posting into a room (a chat user sees it at
//! once), history since a number, the room list, and every refusal.

mod common;

use std::net::SocketAddr;

use common::tls::file_with;
use common::{http_exchange, Client, Server};

const KEY: &str = "an API key of at least sixteen bytes";

fn start() -> Server {
    // Surrounding whitespace (an editor's newline) is not part of it.
    let path = file_with("api-key", &format!("{KEY}\n"));
    Server::start(&["--api-key-file", path.to_str().unwrap()])
}

/// A request as `curl -X METHOD -H ... -d BODY` sends it; returns the
/// status, the headers and the body.
fn call(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    let length = match method {
        "POST" => format!("Content-Length: {}\r\n", body.len()),
        _ => String::new(),
    };
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
         {headers}{length}\r\n{body}"
    );
    let (head, body) = http_exchange(addr, request.as_bytes());
    (head.status, body)
}

fn bearer() -> String {
    format!("Authorization: Bearer {KEY}\r\n")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

#[test]
fn a_backend_posts_into_a_room_and_reads_it_back() {
    let server = start();
    let mut user = Client::connect_path(server.addr, "/ops", None);
    let auth = bearer() + "Content-Type: application/json\r\n";
    let (status, body) = call(
        server.addr,
        "POST",
        "/api/rooms/ops/messages",
        &auth,
        r#"{"from":"deploy","text":"v2 is out"}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body), serde_json::json!({"room": "ops", "seq": 1}));
    assert_eq!(user.next_text(), "deploy (bot): v2 is out");

    let (status, body) = call(
        server.addr,
        "GET",
        "/api/rooms/ops/history?since=0",
        &bearer(),
        "",
    );
    assert_eq!(status, 200);
    let history = json(&body);
    assert_eq!(history["last_seq"], 1);
    assert_eq!(history["messages"][0]["from"], "deploy (bot)");
    assert_eq!(history["messages"][0]["text"], "v2 is out");
    let (_, body) = call(
        server.addr,
        "GET",
        "/api/rooms/ops/history?since=1",
        &bearer(),
        "",
    );
    assert_eq!(json(&body)["messages"], serde_json::json!([]));

    let mut head = common::tcp(server.addr);
    let request = format!(
        "HEAD /api/rooms HTTP/1.1\r\nHost: {}\r\n{}\r\n",
        server.addr,
        bearer()
    );
    std::io::Write::write_all(&mut head, request.as_bytes()).unwrap();
    assert_eq!(
        common::read_head(&mut head).status,
        200,
        "HEAD carries the key too"
    );
    let (status, body) = call(server.addr, "GET", "/api/rooms", &bearer(), "");
    assert_eq!(status, 200);
    let rooms = json(&body);
    let ops = rooms["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "ops")
        .expect("ops listed");
    assert_eq!(ops["count"], 1);
    assert_eq!(ops["users"], serde_json::json!([user.name()]));

    // A post into a room nobody is in makes it; the user chats on.
    let (status, _) = call(
        server.addr,
        "POST",
        "/api/rooms/empty/messages",
        &auth,
        r#"{"from":"cron","text":"nightly"}"#,
    );
    assert_eq!(status, 201);
    user.send_text("still here");
}

#[test]
fn every_bad_call_gets_its_status() {
    let server = start();
    let json_type = "Content-Type: application/json\r\n";
    let post = |headers: &str, body: &str| {
        call(server.addr, "POST", "/api/rooms/r/messages", headers, body).0
    };
    let good = r#"{"from":"bot","text":"hi"}"#;
    assert_eq!(post(json_type, good), 401, "no key");
    assert_eq!(
        post(&format!("Authorization: Basic {KEY}\r\n{json_type}"), good),
        401,
        "another scheme"
    );
    assert_eq!(
        post(
            &format!("Authorization: Bearer wrong-key-wrong-key\r\n{json_type}"),
            good
        ),
        403
    );
    let auth = bearer();
    assert_eq!(post(&auth, good), 415, "no content type");
    assert_eq!(
        post(&(auth.clone() + "Content-Type: text/plain\r\n"), good),
        415
    );
    let auth_json = auth.clone() + json_type;
    for bad in [
        "not json",
        "{}",
        r#"{"from":"bot"}"#,
        r#"{"from":"bot","text":""}"#,
        r#"{"from":"User 51234","text":"forged"}"#,
        r#"{"from":"a\u0000b","text":"x"}"#,
        r#"{"from":"bot","text":"x","extra":1}"#,
    ] {
        assert_eq!(post(&auth_json, bad), 400, "{bad}");
    }
    let big = format!(r#"{{"from":"bot","text":"{}"}}"#, "x".repeat(70 * 1024));
    assert_eq!(post(&auth_json, &big), 413);
    let (status, _) = call(
        server.addr,
        "POST",
        "/api/rooms/r/messages",
        &(auth_json.clone() + "Transfer-Encoding: chunked\r\n"),
        "",
    );
    assert_eq!(status, 411);
    assert_eq!(
        call(server.addr, "GET", "/api/rooms/r/messages", &auth, "").0,
        405
    );
    assert_eq!(
        call(server.addr, "POST", "/api/rooms", &auth_json, "{}").0,
        405
    );
    assert_eq!(call(server.addr, "GET", "/api/nothing", &auth, "").0, 404);
    assert_eq!(
        call(server.addr, "GET", "/api/rooms/nobody/history", &auth, "").0,
        404
    );
    assert_eq!(
        call(
            server.addr,
            "GET",
            "/api/rooms/r/history?since=x",
            &auth,
            ""
        )
        .0,
        400
    );
    assert_eq!(
        call(
            server.addr,
            "POST",
            "/api/rooms/no%20such/messages",
            &auth_json,
            good
        )
        .0,
        404
    );
    // The page is not for posting.
    assert_eq!(call(server.addr, "POST", "/", &auth_json, good).0, 405);
}

#[test]
fn without_the_flag_the_api_is_off() {
    let server = Server::start(&[]);
    assert_eq!(call(server.addr, "GET", "/api/rooms", &bearer(), "").0, 404);
    let (status, _) = call(
        server.addr,
        "POST",
        "/api/rooms/r/messages",
        &(bearer() + "Content-Type: application/json\r\n"),
        "{}",
    );
    assert_eq!(status, 405, "no POST at all");
    // A short key stops the start.
    let short = file_with("short-key", "short");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wschat"))
        .args(["--listen", "127.0.0.1:0", "--api-key-file"])
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}
