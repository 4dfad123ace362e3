//! HTTP/1.1 strictness over real sockets against the real binary (issue
//! 10, items 8 and 9): requests declaring a body are refused (request
//! smuggling), absolute-form targets are accepted, `HEAD` is answered
//! like `GET` without the body, and bytes that are not HTTP are refused
//! at once rather than after the handshake timeout; and what a refused
//! client that keeps writing costs.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    http_exchange, read_head, text_frame, upgrade_request, Chatters, Head, RawClient, Server,
};

/// Reads a whole response until the server closes the connection,
/// without assuming a body of `Content-Length` bytes (a `HEAD`'s has
/// none).
fn read_to_eof(stream: &mut TcpStream) -> (Head, Vec<u8>) {
    let mut bytes = Vec::new();
    if let Err(e) = stream.read_to_end(&mut bytes) {
        panic!(
            "reading a response to EOF: {e}; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no blank line in {:?}", String::from_utf8_lossy(&bytes)));
    let head = Head::parse(std::str::from_utf8(&bytes[..at + 4]).expect("UTF-8 head"));
    (head, bytes[at + 4..].to_vec())
}

/// Sends `request` on a fresh connection; the response head and body.
fn exchange(addr: SocketAddr, request: &[u8]) -> (Head, Vec<u8>) {
    let mut stream = common::tcp(addr);
    stream.write_all(request).expect("write request");
    read_to_eof(&mut stream)
}

/// Completes an upgrade sent as `request` (which must be accepted).
fn upgrade_raw(addr: SocketAddr, request: &str) -> RawClient {
    let mut stream = common::tcp(addr);
    let port = stream.local_addr().unwrap().port();
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert_eq!(
        head.status, 101,
        "upgrade refused: {head:?} for {request:?}"
    );
    RawClient { stream, port }
}

/// The next text frame a raw client receives.
fn next_text(client: &mut RawClient) -> String {
    let (first, payload) = client.read_frame();
    assert_eq!(first, 0x81, "expected a text frame, got {payload:?}");
    String::from_utf8(payload).unwrap()
}

/// An upgrade request whose target is `target` instead of `/`.
fn upgrade_to(addr: SocketAddr, target: &str, extra: &str) -> String {
    upgrade_request(addr, extra).replacen("GET / ", &format!("GET {target} "), 1)
}

// ----- bodies -----

#[test]
fn upgrades_declaring_a_body_are_refused_and_the_body_never_reaches_the_room() {
    let server = Server::start(&[]);
    let mut listener = server.client();
    let smuggled = text_frame("smuggled");
    for header in [
        format!("Content-Length: {}\r\n", smuggled.len()),
        "Content-Length: 0\r\n".to_string(),
        "Transfer-Encoding: chunked\r\n".to_string(),
    ] {
        let mut bytes = upgrade_request(server.addr, &header).into_bytes();
        bytes.extend_from_slice(&smuggled);
        let (head, body) = exchange(server.addr, &bytes);
        assert_eq!(head.status, 400, "{header:?}: {body:?}");
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.starts_with("GET or HEAD with "),
            "{header:?}: {body:?}"
        );
    }
    // A plain GET with a body, too (RFC 9110 §9.3.1).
    let get = format!(
        "GET /rust HTTP/1.1\r\nHost: {}\r\nContent-Length: 5\r\n\r\nhello",
        server.addr
    );
    assert_eq!(exchange(server.addr, get.as_bytes()).0.status, 400);
    // The room heard of none of them: the next thing it hears is a
    // newcomer.
    let newcomer = server.client();
    assert_eq!(
        listener.next_text(),
        format!("User {} joined", newcomer.port)
    );
}

// ----- absolute-form targets -----

#[test]
fn absolute_form_upgrades_land_in_the_room_their_path_names() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let mut lobby = server.client();
    for (i, scheme) in ["ws", "WSS", "http", "https"].iter().enumerate() {
        let absolute = format!("{scheme}://{addr}/room{i}?since=0");
        let mut first = upgrade_raw(addr, &upgrade_to(addr, &absolute, ""));
        let second = upgrade_raw(addr, &upgrade_to(addr, &format!("/room{i}"), ""));
        assert_eq!(
            next_text(&mut first),
            format!("User {} joined", second.port),
            "{absolute}"
        );
    }
    // The lobby heard none of it.
    let newcomer = server.client();
    assert_eq!(lobby.next_text(), format!("User {} joined", newcomer.port));
}

#[test]
fn absolute_form_plain_gets_are_answered_by_path() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let get = |target: &str| {
        let request = format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        http_exchange(addr, request.as_bytes())
    };
    let (head, body) = get(&format!("http://{addr}/healthz"));
    assert_eq!((head.status, body.as_str()), (200, "ok\n"));
    let (head, body) = get("https://chat.example/rust");
    assert_eq!(head.status, 200);
    assert!(body.contains("wschat.v1.json"), "the chat page");
    assert_eq!(get("http://chat.example/a/b").0.status, 404);
    // Not origin-form, not absolute-form http(s)/ws(s): 400.
    for target in [
        "*",
        "rust",
        "ftp://chat.example/",
        "http://user@chat.example/",
    ] {
        assert_eq!(get(target).0.status, 400, "{target}");
    }
}

#[test]
fn the_absolute_forms_authority_is_the_host_the_origin_must_match() {
    let server = Server::start(&[]);
    let addr = server.addr;
    // The Host header names another host: RFC 9112 §3.2.2 has it ignored.
    let request = |authority: &str| {
        upgrade_to(
            addr,
            &format!("http://{authority}/"),
            &format!("Origin: http://{addr}\r\n"),
        )
        .replacen(&format!("Host: {addr}"), "Host: elsewhere.example", 1)
    };
    upgrade_raw(addr, &request(&addr.to_string()));
    let (head, body) = http_exchange(addr, request("elsewhere.example").as_bytes());
    assert_eq!(head.status, 403, "{body}");
    assert_eq!(body, "origin not allowed\n");
}

// ----- HEAD -----

#[test]
fn head_is_answered_like_get_without_the_body() {
    let server = Server::start(&[]);
    let addr = server.addr;
    for path in ["/", "/rust", "/healthz", "/no/such"] {
        let get = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let (get_head, get_body) = exchange(addr, get.as_bytes());
        let (head, body) = exchange(addr, get.replacen("GET", "HEAD", 1).as_bytes());
        assert_eq!(head.status, get_head.status, "{path}");
        assert!(
            body.is_empty(),
            "{path}: a HEAD answer has no body: {body:?}"
        );
        assert_eq!(
            head.get("Content-Length"),
            Some(get_body.len().to_string().as_str()),
            "{path}: the GET's length"
        );
        assert_eq!(
            head.get("Content-Type"),
            get_head.get("Content-Type"),
            "{path}"
        );
        assert_eq!(head.get("Connection"), Some("close"), "{path}");
    }
    // Upgrade headers on a HEAD are ignored: no 101, the page's head.
    let request = upgrade_request(addr, "").replacen("GET", "HEAD", 1);
    let (head, body) = exchange(addr, request.as_bytes());
    assert_eq!(head.status, 200, "{head:?}");
    assert!(body.is_empty());
    // Other methods: 405, naming both.
    let post = format!("POST /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    let (head, _) = exchange(addr, post.as_bytes());
    assert_eq!(head.status, 405);
    assert_eq!(head.get("Allow"), Some("GET, HEAD"));
    // A refused HEAD has no body either.
    let bodied = format!("HEAD / HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    let (head, body) = exchange(addr, bodied.as_bytes());
    assert_eq!(head.status, 400);
    assert!(body.is_empty(), "{body:?}");
}

// ----- not HTTP at all -----

/// A fixed pseudo-random stream (xorshift64), the same on every run.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The first bytes of a TLS 1.2+ ClientHello: a handshake record (0x16)
/// of version 3.1, then a ClientHello (0x01) of version 3.3.
fn client_hello() -> Vec<u8> {
    let mut hello = vec![
        0x16, 0x03, 0x01, 0x00, 0xf4, 0x01, 0x00, 0x00, 0xf0, 0x03, 0x03,
    ];
    hello.extend(noise(0xf4 - 6, 7));
    hello
}

#[test]
fn bytes_that_are_not_http_are_refused_at_once_not_after_the_timeout() {
    let server = Server::start(&["--handshake-timeout", "30"]);
    let long_method = format!("{} / HTTP/1.1\r\n", "M".repeat(40)).into_bytes();
    let cases: [(&str, Vec<u8>, u16, &str); 5] = [
        (
            "TLS ClientHello",
            client_hello(),
            400,
            "not an HTTP request\n",
        ),
        (
            // An SSH client sends its banner, then waits for the server's.
            "SSH banner",
            b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n".to_vec(),
            400,
            "not an HTTP request\n",
        ),
        (
            "2 KiB of noise",
            noise(2048, 1),
            400,
            "not an HTTP request\n",
        ),
        (
            "a request line with NUL",
            b"GET /\x00 HTTP/1.1\r\n".to_vec(),
            400,
            "not an HTTP request\n",
        ),
        (
            "a method of 40 bytes",
            long_method,
            501,
            "request method too long\n",
        ),
    ];
    for (name, bytes, status, reason) in cases {
        let started = Instant::now();
        let (head, body) = exchange(server.addr, &bytes);
        let took = started.elapsed();
        assert_eq!(head.status, status, "{name}");
        assert_eq!(String::from_utf8(body).unwrap(), reason, "{name}");
        assert!(
            took < Duration::from_secs(2),
            "{name}: answered after {took:?}"
        );
    }
    let metrics = server.metrics();
    assert_eq!(
        metrics.count("wschat_handshakes_refused_total{reason=\"not an HTTP request\"}"),
        4
    );
}

// ----- a refused client that keeps writing -----

/// What a refused client that never stops writing cost the server.
struct Flood {
    /// From the first byte to the end of the refusal (EOF).
    answered: Duration,
    /// From the first byte until the server stopped taking bytes (writes
    /// block or fail).
    cut_off: Duration,
    /// Bytes the client managed to write in all.
    written: u64,
    /// The server's CPU time over the whole run.
    cpu: Duration,
}

/// Connects, sends `first`, then writes junk as fast as the server takes
/// it while reading the answer; stops when writes fail or stall for
/// 500 ms, or after `limit`.
fn flood_after(server: &Server, first: &[u8], limit: Duration) -> (Head, Vec<u8>, Flood) {
    let cpu_before = server.cpu_time();
    let mut stream = server.tcp();
    let started = Instant::now();
    stream.write_all(first).unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let junk = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0u64;
        while started.elapsed() < limit {
            match writer.write(&chunk) {
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        (started.elapsed(), written)
    });
    let (head, body) = read_to_eof(&mut stream);
    let answered = started.elapsed();
    let (cut_off, written) = junk.join().unwrap();
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    let flood = Flood {
        answered,
        cut_off,
        written,
        cpu,
    };
    (head, body, flood)
}

/// The answer comes at once, the loop stops reading soon after, and
/// everyone else chats on meanwhile and after.
#[test]
fn a_refused_client_that_keeps_writing_gets_its_answer_and_is_cut_off() {
    let server = Server::start(&[]);
    let mut chatters = Chatters::start(&server, Duration::from_millis(20));
    let rounds_before = chatters.rounds();
    let (head, body, flood) = flood_after(&server, &client_hello(), Duration::from_secs(20));
    eprintln!(
        "answered after {:?}, cut off after {:?}, {} MiB taken, server CPU {:?}",
        flood.answered,
        flood.cut_off,
        flood.written >> 20,
        flood.cpu
    );
    assert_eq!(head.status, 400);
    assert_eq!(body, b"not an HTTP request\n");
    assert!(
        flood.answered < Duration::from_secs(2),
        "{:?}",
        flood.answered
    );
    assert!(
        flood.cut_off < Duration::from_secs(10),
        "{:?}",
        flood.cut_off
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while chatters.rounds() - rounds_before < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} rounds of chat in 5 s",
            chatters.rounds() - rounds_before
        );
        thread::sleep(Duration::from_millis(20));
    }
    chatters.check_alive();
    chatters.finish();
}

/// What the loop should achieve with `Connection::wants_input`: stop
/// reading a connection that has answered, after a bounded linger, so a
/// client that never stops writing costs neither CPU nor bandwidth.
#[test]
fn a_refused_client_that_keeps_writing_costs_the_server_next_to_nothing() {
    let server = Server::start(&[]);
    let (head, _, flood) = flood_after(&server, &client_hello(), Duration::from_secs(20));
    assert_eq!(head.status, 400);
    // Socket buffers on loopback hold a few MiB; a linger with a byte
    // budget adds little to that.
    assert!(
        flood.written < 64 << 20,
        "the server took {} MiB after refusing",
        flood.written >> 20
    );
    assert!(
        flood.cpu < Duration::from_millis(250),
        "server CPU {:?}",
        flood.cpu
    );
    assert!(
        flood.cut_off < Duration::from_secs(4),
        "{:?}",
        flood.cut_off
    );
}
