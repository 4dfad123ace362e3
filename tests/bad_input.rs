//! The robustness table: one row per bad input, each sent over a real
//! socket to a server on which two well-behaved users keep chatting the
//! whole time.
//!
//! Every row asserts the exact HTTP status or close code its offender
//! gets, then EOF, and that the answer came within the row's bound; after
//! every row the two users must complete another round of chat. At the end
//! both users must have received every numbered message of the other, in
//! order, and nothing from the offenders but their joins and leaves.
//!
//! The rows cover known failures of WebSocket servers:
//!
//! | advisory | failure | row |
//! |---|---|---|
//! | tungstenite CVE-2023-43669 | a trickled head costs quadratic work | 8 KiB+ head, one byte per write: 431 |
//! | ws-rs RUSTSEC-2020-0043 | unbounded outgoing buffer | `tests/slow_consumer.rs` |
//! | rust-websocket RUSTSEC-2022-0035 | allocation by declared length | header declaring 2^62 bytes: 1009 before any payload |
//! | gorilla CVE-2020-27813 | frame length overflow | 64-bit length with the top bit set: 1002 |
//! | ws CVE-2021-32640 | ReDoS on Sec-WebSocket-Protocol | 7 KiB of spaces and commas: prompt 101 |
//! | ws CVE-2024-37890 | many headers | 100 header lines: 431 |
//! | ws GHSA-96hv-2xvq-fx4p | floods of tiny fragments | empty continuations past --max-fragments: 1008 |
//! | websocket-extensions CVE-2020-7662 | ReDoS on Sec-WebSocket-Extensions | pathological value: prompt 101, no extensions |
//! | cross-site WebSocket hijacking | foreign pages open sockets | Origin: http://evil.example: 403 |
//!
//! plus every handshake refusal the README lists and every RFC 6455
//! framing and close-code rule.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{
    close_frame, frame, header_64, read_head, read_response_to_eof, upgrade_request, Chatters,
    RawClient, Server, TIMEOUT,
};

/// What a row sends.
enum Send {
    /// These bytes in one write on a fresh connection.
    Request(Vec<u8>),
    /// These bytes one per write (and one TCP segment each: no Nagle).
    Trickle(Vec<u8>),
    /// These bytes, then silence: the server has to give up by itself.
    Stall(Vec<u8>),
    /// Nothing at all: connect and wait for the server.
    Connect,
    /// After a completed upgrade, each element in a write of its own.
    Frames(Vec<Vec<u8>>),
}

/// What the offender must get.
enum Expect {
    /// This HTTP status, then EOF.
    Status(u16),
    /// `101` without `Sec-WebSocket-Protocol` or `Sec-WebSocket-Extensions`
    /// (then the row closes cleanly with 1000).
    Accepted,
    /// A Close with this code, then EOF; before it nothing but room
    /// traffic (`User ...` texts).
    Close(u16),
    /// The flood warning text, then a Close with this code; once the
    /// Close is answered, EOF.
    Throttled(u16),
}

struct Row {
    name: String,
    send: Send,
    expect: Expect,
    /// The most the answer may take once everything was sent.
    within: Duration,
}

fn row(name: impl Into<String>, send: Send, expect: Expect) -> Row {
    Row {
        name: name.into(),
        send,
        expect,
        within: TIMEOUT,
    }
}

impl Row {
    fn within(mut self, limit: Duration) -> Row {
        self.within = limit;
        self
    }
}

const THROTTLE_WARNING: &str = "wschat: you are sending too fast; messages are being dropped";

/// The most the server's resident memory may grow during one row.
const ROW_RSS_GROWTH_KIB: u64 = 16 * 1024;
/// The most CPU time the server may spend during one row (a quadratic
/// parse or a busy loop would blow it).
const ROW_CPU: Duration = Duration::from_secs(1);

/// A server with two users chatting on it, and the rows run so far.
struct Table {
    server: Server,
    chatters: Chatters,
    /// What each chatter must have seen besides the partner's messages:
    /// the offenders' joins and leaves, in order.
    expected_foreign: Vec<String>,
}

impl Table {
    fn start(args: &[&str], period: Duration) -> Table {
        let server = Server::start(args);
        let chatters = Chatters::start(&server, period);
        Table {
            server,
            chatters,
            expected_foreign: Vec::new(),
        }
    }

    /// An offender completed its upgrade: the room hears of it.
    fn joined(&mut self, port: u16) {
        self.expected_foreign.push(format!("User {port} joined"));
    }

    fn left(&mut self, port: u16) {
        self.expected_foreign.push(format!("User {port} left"));
    }

    fn run_all(&mut self, rows: Vec<Row>) {
        for row in rows {
            self.run(row);
        }
    }

    fn run(&mut self, row: Row) {
        self.chatters.check_alive();
        let name = row.name.clone();
        let rss_before = self.server.rss_kib();
        let cpu_before = self.server.cpu_time();

        let mut stream = self.server.tcp();
        let mut raw = None;
        match &row.send {
            Send::Request(bytes) | Send::Stall(bytes) => stream.write_all(bytes).unwrap(),
            Send::Trickle(bytes) => {
                for byte in bytes {
                    stream
                        .write_all(std::slice::from_ref(byte))
                        .unwrap_or_else(|e| panic!("{name}: trickling: {e}"));
                }
            }
            Send::Connect => {}
            Send::Frames(frames) => {
                let mut client = RawClient::upgrade(stream.try_clone().unwrap(), self.server.addr);
                self.joined(client.port);
                for bytes in frames {
                    client.send(bytes);
                }
                raw = Some(client);
            }
        }
        let sent = Instant::now();

        match row.expect {
            Expect::Status(status) => {
                let (head, body) = read_response_to_eof(&mut stream);
                assert_eq!(head.status, status, "{name}: got {head:?} {body:?}");
            }
            Expect::Accepted => {
                let head = read_head(&mut stream);
                assert_eq!(head.status, 101, "{name}: got {head:?}");
                assert_eq!(head.get("Sec-WebSocket-Protocol"), None, "{name}");
                assert_eq!(head.get("Sec-WebSocket-Extensions"), None, "{name}");
                let answered = sent.elapsed();
                assert!(answered <= row.within, "{name}: 101 after {answered:?}");
                let port = stream.local_addr().unwrap().port();
                self.joined(port);
                let mut client = RawClient { stream, port };
                client.send(&close_frame(1000, b""));
                let (before, code) = client.read_until_close();
                assert_room_traffic(&name, &before);
                assert_eq!(code, 1000, "{name}: the clean close is answered with 1000");
                client.expect_eof();
                self.left(port);
            }
            Expect::Close(code) => {
                let mut client = raw.expect("a Close is expected of an upgraded row");
                let (before, got) = client.read_until_close();
                assert_room_traffic(&name, &before);
                assert_eq!(got, code, "{name}: close code");
                client.expect_eof();
                self.left(client.port);
            }
            Expect::Throttled(code) => {
                let mut client = raw.expect("a Close is expected of an upgraded row");
                let (before, got) = client.read_until_close();
                let texts: Vec<String> = before
                    .iter()
                    .map(|(first, payload)| {
                        assert_eq!(*first, 0x81, "{name}: only texts before the Close");
                        String::from_utf8(payload.clone()).unwrap()
                    })
                    .collect();
                let warnings = texts.iter().filter(|t| *t == THROTTLE_WARNING).count();
                assert_eq!(warnings, 1, "{name}: one warning expected in {texts:?}");
                assert!(
                    texts
                        .iter()
                        .all(|t| t == THROTTLE_WARNING || t.starts_with("User ")),
                    "{name}: unexpected texts {texts:?}"
                );
                assert_eq!(got, code, "{name}: close code after the warning");
                // This Close starts a close handshake (it does not fail the
                // connection): the server waits for our answer, as RFC 6455
                // §7.1.2 has it, then ends the TCP connection.
                client.send(&close_frame(code, b""));
                client.expect_eof();
                self.left(client.port);
            }
        }
        let answered = sent.elapsed();
        assert!(
            answered <= row.within,
            "{name}: answered after {answered:?}, bound {:?}",
            row.within
        );

        let grown = self.server.rss_kib().saturating_sub(rss_before);
        assert!(
            grown < ROW_RSS_GROWTH_KIB,
            "{name}: server RSS grew by {grown} KiB"
        );
        let cpu = self.server.cpu_time().saturating_sub(cpu_before);
        assert!(cpu < ROW_CPU, "{name}: the server spent {cpu:?} of CPU");
        // The room goes on: one more round of chat, promptly.
        self.chatters.wait_rounds(1, TIMEOUT);
    }

    /// Stops the chatters; each must have seen the other's every message
    /// (checked as they went) and nothing else but the offenders' joins
    /// and leaves, in order.
    fn finish(self) {
        let Table {
            server,
            chatters,
            expected_foreign,
        } = self;
        let log = chatters.finish();
        assert!(log.rounds >= 2, "only {} rounds of chat", log.rounds);
        for (user, foreign) in log.foreign.iter().enumerate() {
            assert_eq!(
                foreign, &expected_foreign,
                "user {user} saw other things than the offenders' joins and leaves"
            );
        }
        drop(server);
    }
}

/// What an offender may receive before its Close: the room's chat.
fn assert_room_traffic(name: &str, frames: &[(u8, Vec<u8>)]) {
    for (first, payload) in frames {
        let text = std::str::from_utf8(payload).unwrap_or_default();
        assert!(
            *first == 0x81 && text.starts_with("User "),
            "{name}: unexpected frame {first:#x} {text:?} before the Close"
        );
    }
}

fn concat(frames: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
    frames.into_iter().flatten().collect()
}

/// Chat rounds for servers with the default flood limit (100/s).
const PERIOD: Duration = Duration::from_millis(20);

#[test]
fn handshake_rows() {
    let mut table = Table::start(&["--protocol", "chat"], PERIOD);
    let addr = table.server.addr;
    let upgrade = |extra: &str| upgrade_request(addr, extra).into_bytes();
    let without = |line: &str| {
        let request = upgrade_request(addr, "");
        assert!(request.contains(line), "{line:?}");
        request.replacen(line, "", 1).into_bytes()
    };
    let replaced = |from: &str, to: &str| {
        let request = upgrade_request(addr, "");
        assert!(request.contains(from), "{from:?}");
        request.replacen(from, to, 1).into_bytes()
    };

    // 8 KiB + 1 of head without its end, one byte per write.
    let mut trickled = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nX-Trickle: ").into_bytes();
    trickled.resize(8 * 1024 + 1, b'a');
    let many_headers: String = (0..100).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let protocol_redos = format!("Sec-WebSocket-Protocol: {}x\r\n", " ,".repeat(3584));
    let extensions_redos = format!(
        "Sec-WebSocket-Extensions: permessage-deflate; a=\"{}\r\n",
        "\\c".repeat(3000)
    );

    let rows = vec![
        row(
            "CVE-2023-43669: 8 KiB+ head trickled one byte per write",
            Send::Trickle(trickled),
            Expect::Status(431),
        )
        .within(Duration::from_secs(1)),
        row(
            "CVE-2021-32640: 7 KiB of spaces and commas in Sec-WebSocket-Protocol",
            Send::Request(upgrade(&protocol_redos)),
            Expect::Accepted,
        )
        .within(Duration::from_secs(1)),
        row(
            "CVE-2024-37890: 100 header lines",
            Send::Request(upgrade(&many_headers)),
            Expect::Status(431),
        ),
        row(
            "CVE-2020-7662: pathological Sec-WebSocket-Extensions",
            Send::Request(upgrade(&extensions_redos)),
            Expect::Accepted,
        )
        .within(Duration::from_secs(1)),
        row(
            "cross-site WebSocket hijacking: Origin http://evil.example",
            Send::Request(upgrade("Origin: http://evil.example\r\n")),
            Expect::Status(403),
        ),
        row(
            "method POST",
            Send::Request(replaced("GET ", "POST ")),
            Expect::Status(405),
        ),
        row(
            "method PUT",
            Send::Request(replaced("GET ", "PUT ")),
            Expect::Status(405),
        ),
        row(
            "HTTP/1.0",
            Send::Request(replaced("HTTP/1.1", "HTTP/1.0")),
            Expect::Status(400),
        ),
        row(
            "not HTTP at all",
            Send::Request(b"\x16\x03\x01 hello there\r\n\r\n".to_vec()),
            Expect::Status(400),
        ),
        row(
            "missing Host",
            Send::Request(without(&format!("Host: {addr}\r\n"))),
            Expect::Status(400),
        ),
        row(
            "duplicate Host",
            Send::Request(upgrade(&format!("Host: {addr}\r\n"))),
            Expect::Status(400),
        ),
        row(
            "missing Sec-WebSocket-Key",
            Send::Request(without("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")),
            Expect::Status(400),
        ),
        row(
            "duplicate Sec-WebSocket-Key",
            Send::Request(upgrade("Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n")),
            Expect::Status(400),
        ),
        row(
            "Sec-WebSocket-Key of 15 bytes",
            Send::Request(replaced("dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAA")),
            Expect::Status(400),
        ),
        row(
            "Sec-WebSocket-Key of 17 bytes",
            Send::Request(replaced(
                "dGhlIHNhbXBsZSBub25jZQ==",
                "AAAAAAAAAAAAAAAAAAAAAAA=",
            )),
            Expect::Status(400),
        ),
        row(
            "Sec-WebSocket-Key not base64",
            Send::Request(replaced(
                "dGhlIHNhbXBsZSBub25jZQ==",
                "!!!!!!!!!!!!!!!!!!!!!!==",
            )),
            Expect::Status(400),
        ),
        row(
            "Sec-WebSocket-Version 8",
            Send::Request(replaced(
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Version: 8",
            )),
            Expect::Status(426),
        ),
        row(
            "missing Sec-WebSocket-Version",
            Send::Request(without("Sec-WebSocket-Version: 13\r\n")),
            Expect::Status(400),
        ),
        row(
            "Connection without the upgrade token",
            Send::Request(replaced("Connection: Upgrade", "Connection: keep-alive")),
            Expect::Status(400),
        ),
        row(
            "no Connection header",
            Send::Request(without("Connection: Upgrade\r\n")),
            Expect::Status(400),
        ),
        row(
            "Upgrade to something else with a key",
            Send::Request(replaced("Upgrade: websocket", "Upgrade: h2c")),
            Expect::Status(400),
        ),
        row(
            "request smuggling: Content-Length and a frame as the body",
            Send::Request([upgrade("Content-Length: 8\r\n"), frame(0x81, b"hi", true)].concat()),
            Expect::Status(400),
        ),
        row(
            "request smuggling: Transfer-Encoding: chunked",
            Send::Request(upgrade("Transfer-Encoding: chunked\r\n")),
            Expect::Status(400),
        ),
        row(
            "Content-Length: 0 on an upgrade",
            Send::Request(upgrade("Content-Length: 0\r\n")),
            Expect::Status(400),
        ),
        row(
            "an SSH banner, then waiting for the server's",
            Send::Stall(b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
            Expect::Status(400),
        )
        .within(Duration::from_secs(1)),
        row(
            "a TLS ClientHello, trickled",
            Send::Trickle(vec![0x16, 0x03, 0x01, 0x00, 0xf4, 0x01]),
            Expect::Status(400),
        )
        .within(Duration::from_secs(1)),
        row(
            "a method of 40 bytes",
            Send::Request(replaced("GET ", &format!("{} ", "M".repeat(40)))),
            Expect::Status(501),
        ),
    ];
    table.run_all(rows);
    table.finish();
}

#[test]
fn handshake_timeout_rows() {
    let mut table = Table::start(&["--handshake-timeout", "1"], PERIOD);
    let addr = table.server.addr;
    let partial = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n");
    let rows = vec![
        // Deadlines are swept once a second: 408 within 1-2 s.
        row(
            "head not complete within --handshake-timeout",
            Send::Stall(partial.into_bytes()),
            Expect::Status(408),
        )
        .within(Duration::from_secs(3)),
        row(
            "nothing sent within --handshake-timeout",
            Send::Connect,
            Expect::Status(408),
        )
        .within(Duration::from_secs(3)),
    ];
    table.run_all(rows);
    table.finish();
}

#[test]
fn connection_limit_row() {
    // The two chatters and one more fill the server.
    let mut table = Table::start(&["--max-connections", "3"], PERIOD);
    let mut holder = RawClient::connect(table.server.addr);
    table.joined(holder.port);
    // The server answers before reading anything: send nothing, so no
    // unread request turns its close into a reset.
    table.run(
        row(
            "one connection over --max-connections",
            Send::Connect,
            Expect::Status(503),
        )
        .within(Duration::from_secs(1)),
    );
    holder.send(&close_frame(1000, b""));
    let (before, code) = holder.read_until_close();
    assert_room_traffic("holder", &before);
    assert_eq!(code, 1000);
    holder.expect_eof();
    table.left(holder.port);
    table.finish();
}

#[test]
fn frame_rows() {
    let mut table = Table::start(
        &["--max-message-size", "1KiB", "--max-fragments", "16"],
        PERIOD,
    );
    let f = |first: u8, payload: &[u8]| frame(first, payload, true);
    let one = |bytes: Vec<u8>| Send::Frames(vec![bytes]);

    let mut rows = vec![
        row(
            "RUSTSEC-2022-0035: header declaring 2^62 bytes, no payload",
            one(header_64(0x82, 1 << 62)),
            Expect::Close(1009),
        )
        .within(Duration::from_secs(1)),
        row(
            "RUSTSEC-2022-0035: text header declaring 2^62 bytes, no payload",
            one(header_64(0x81, 1 << 62)),
            Expect::Close(1009),
        )
        .within(Duration::from_secs(1)),
        row(
            "CVE-2020-27813: 64-bit length with the top bit set",
            one(header_64(0x82, (1 << 63) | 5)),
            Expect::Close(1002),
        ),
        row(
            "CVE-2020-27813: 64-bit length of all ones",
            one(header_64(0x82, u64::MAX)),
            Expect::Close(1002),
        ),
        row(
            "GHSA-96hv-2xvq-fx4p: 100 empty continuations, over --max-fragments 16",
            Send::Frames(vec![f(0x01, b""), concat((0..100).map(|_| f(0x00, b"")))]),
            Expect::Close(1008),
        ),
        row(
            "unmasked frame",
            one(frame(0x81, b"hi", false)),
            Expect::Close(1002),
        ),
        row("RSV1 set", one(f(0xC1, b"hi")), Expect::Close(1002)),
        row("RSV2 set", one(f(0xA1, b"hi")), Expect::Close(1002)),
        row("RSV3 set", one(f(0x91, b"hi")), Expect::Close(1002)),
        row("RSV1 on a ping", one(f(0xC9, b"hi")), Expect::Close(1002)),
        row("fragmented ping", one(f(0x09, b"hi")), Expect::Close(1002)),
        row(
            "fragmented close",
            one(f(0x08, &1000u16.to_be_bytes())),
            Expect::Close(1002),
        ),
        row(
            "ping payload of 126 bytes",
            one(f(0x89, &[b'p'; 126])),
            Expect::Close(1002),
        ),
        row(
            "pong payload of 126 bytes",
            one(f(0x8A, &[b'p'; 126])),
            Expect::Close(1002),
        ),
        row(
            "close payload of 126 bytes",
            one(close_frame(1000, &[b'r'; 124])),
            Expect::Close(1002),
        ),
        row(
            "continuation without a message",
            one(f(0x80, b"x")),
            Expect::Close(1002),
        ),
        row(
            "non-final continuation without a message",
            one(f(0x00, b"x")),
            Expect::Close(1002),
        ),
        row(
            "new text frame inside a fragmented message",
            Send::Frames(vec![f(0x01, b"a"), f(0x81, b"b")]),
            Expect::Close(1002),
        ),
        row(
            "new binary frame inside a fragmented message",
            Send::Frames(vec![f(0x01, b"a"), f(0x82, b"b")]),
            Expect::Close(1002),
        ),
        row(
            "close payload of 1 byte",
            one(f(0x88, &[0x03])),
            Expect::Close(1002),
        ),
        row(
            "close reason not UTF-8",
            one(close_frame(1000, &[0xff, 0xfe])),
            Expect::Close(1007),
        ),
        row(
            "text not UTF-8",
            one(f(0x81, &[b'o', b'k', 0xff, 0xfe])),
            Expect::Close(1007),
        ),
        row(
            "text with an overlong encoding",
            one(f(0x81, &[0xC0, 0xAF])),
            Expect::Close(1007),
        ),
        row(
            "text with a UTF-16 surrogate",
            one(f(0x81, &[0xED, 0xA0, 0x80])),
            Expect::Close(1007),
        ),
        row(
            "UTF-8 sequence cut across fragments, continued wrongly",
            Send::Frames(vec![f(0x01, b"caf\xC3"), f(0x80, b"(")]),
            Expect::Close(1007),
        ),
        row(
            "text message ending inside a UTF-8 sequence",
            Send::Frames(vec![f(0x01, b"\xE2\x82"), f(0x80, b"")]),
            Expect::Close(1007),
        ),
        row(
            "text over --max-message-size 1KiB",
            one(f(0x81, &[b'x'; 1025])),
            Expect::Close(1009),
        ),
        row(
            "binary over --max-message-size 1KiB",
            one(f(0x82, &[7; 2048])),
            Expect::Close(1009),
        ),
        row(
            "fragments adding up over --max-message-size",
            Send::Frames(vec![f(0x01, &[b'a'; 600]), f(0x80, &[b'b'; 600])]),
            Expect::Close(1009),
        ),
        row(
            "many fragments adding up over --max-message-size",
            Send::Frames(vec![
                f(0x02, &[1; 100]),
                concat((0..10).map(|_| f(0x00, &[2; 100]))),
                f(0x80, &[3; 100]),
            ]),
            Expect::Close(1009),
        ),
    ];
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        rows.push(row(
            format!("reserved opcode {opcode:#x}"),
            one(f(0x80 | opcode, b"x")),
            Expect::Close(1002),
        ));
    }
    // §7.4: codes that must never be sent (1005, 1006, 1015), reserved
    // ones (1004, 1016-2999) and ones outside every range.
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        rows.push(row(
            format!("close code {code}"),
            one(close_frame(code, b"")),
            Expect::Close(1002),
        ));
    }
    // Valid closes are echoed; an empty one is answered with 1000.
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1011, 3000, 3999, 4000, 4999,
    ] {
        rows.push(row(
            format!("valid close code {code}"),
            one(close_frame(code, b"bye")),
            Expect::Close(code),
        ));
    }
    rows.push(row("empty close", one(f(0x88, b"")), Expect::Close(1000)));
    table.run_all(rows);
    table.finish();
}

#[test]
fn flood_row() {
    // Five messages a second, bursts of five: the chatters send about
    // three a second each.
    let mut table = Table::start(
        &["--max-message-rate", "5", "--message-burst", "5"],
        Duration::from_millis(300),
    );
    let flood = concat((0..30).map(|i| frame(0x81, format!("flood-{i}").as_bytes(), true)));
    table.run(row(
        "flood over --max-message-rate 5 --message-burst 5",
        Send::Frames(vec![flood]),
        Expect::Throttled(1008),
    ));

    // What the room saw of the floods: their joins, the burst of five
    // allowed messages (give or take one refilled token), their leaves.
    let Table {
        server,
        chatters,
        expected_foreign,
    } = table;
    let log = chatters.finish();
    for (user, foreign) in log.foreign.iter().enumerate() {
        let mut rest = foreign.iter().peekable();
        for want in &expected_foreign {
            if want.ends_with(" left") {
                // Before the leave: the flooder's allowed messages, in order.
                let port = want
                    .strip_prefix("User ")
                    .and_then(|s| s.strip_suffix(" left"))
                    .unwrap();
                let prefix = format!("User {port}: flood-");
                let mut relayed = 0;
                while rest.peek().is_some_and(|t| t.starts_with(&prefix)) {
                    assert_eq!(rest.next().unwrap(), &format!("{prefix}{relayed}"));
                    relayed += 1;
                }
                assert!(
                    (5..=6).contains(&relayed),
                    "user {user}: {relayed} flood messages relayed: {foreign:?}"
                );
            }
            assert_eq!(rest.next(), Some(want), "user {user}: {foreign:?}");
        }
        assert_eq!(rest.next(), None, "user {user}: {foreign:?}");
    }
    assert!(log.rounds >= 2, "only {} rounds of chat", log.rounds);
    drop(server);
}
