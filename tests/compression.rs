//! permessage-deflate (RFC 7692) end to end over real sockets: the
//! negotiation, compressed frames on the wire (RSV1 seen in raw bytes),
//! a mixed room, the bad-input table, and real clients that compress
//! (Python `websockets`, Node's built-in WebSocket).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;

use common::{chat_text, node_with_websocket, python, read_head, upgrade_request, Server, TIMEOUT};
use wschat::protocol::client as wsclient;
use wschat::protocol::deflate;

/// What an offer of plain `permessage-deflate` is answered with.
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// A frame as it came off the wire: its first byte and its payload.
struct RawFrame {
    first: u8,
    payload: Vec<u8>,
}

/// A client speaking raw bytes, to see RSV1 and to send what no library
/// would.
struct Raw {
    stream: TcpStream,
    port: u16,
    extensions: Option<String>,
}

impl Raw {
    /// Upgrades with `extra` header lines; panics unless the answer is 101.
    fn connect(server: &Server, extra: &str) -> Raw {
        let mut stream = server.tcp();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
            .write_all(upgrade_request(server.addr, extra).as_bytes())
            .unwrap();
        let head = read_head(&mut stream);
        assert_eq!(head.status, 101, "{:?}", head.headers);
        let port = stream.local_addr().unwrap().port();
        Raw {
            stream,
            port,
            extensions: head.get("sec-websocket-extensions").map(str::to_owned),
        }
    }

    fn deflating(server: &Server) -> Raw {
        let raw = Raw::connect(server, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
        assert_eq!(raw.extensions.as_deref(), Some(ANSWER));
        raw
    }

    fn send(&mut self, first: u8, payload: &[u8]) {
        let mut out = Vec::new();
        wsclient::encode_frame_into(&mut out, first, payload, [1, 2, 3, 4]);
        self.stream.write_all(&out).unwrap();
    }

    fn read_frame(&mut self) -> RawFrame {
        let (first, payload) = common::read_raw_frame(&mut self.stream);
        RawFrame { first, payload }
    }

    /// The next text message, inflated if it came compressed, and
    /// whether it did.
    fn next_text(&mut self) -> (String, bool) {
        let frame = self.read_frame();
        assert_eq!(
            frame.first & 0x0F,
            1,
            "a text frame, got {:#x}",
            frame.first
        );
        let compressed = frame.first & 0x40 != 0;
        let bytes = match compressed {
            true => deflate::inflate(&frame.payload, 1 << 24).expect("valid deflate"),
            false => frame.payload,
        };
        (String::from_utf8(bytes).unwrap(), compressed)
    }

    /// The code of the Close the server sends next (data frames skipped).
    fn close_code(&mut self) -> u16 {
        loop {
            let frame = self.read_frame();
            if frame.first & 0x0F == 8 {
                return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            }
        }
    }
}

#[test]
fn deflate_is_agreed_only_with_the_flag() {
    let off = Server::start(&[]);
    let raw = Raw::connect(&off, "Sec-WebSocket-Extensions: permessage-deflate\r\n");
    assert_eq!(raw.extensions, None);

    let on = Server::start(&["--compression"]);
    Raw::deflating(&on);
    // No offer, no extension.
    assert_eq!(Raw::connect(&on, "").extensions, None);
}

#[test]
fn extension_offers_are_answered_as_rfc_7692_says() {
    let server = Server::start(&["--compression"]);
    // (offer lines, expected status, expected Sec-WebSocket-Extensions)
    let table: &[(&str, u16, Option<&str>)] = &[
        // Several offers over several lines: the first acceptable one.
        (
            "Sec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10, permessage-deflate\r\n",
            101,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"),
        ),
        // The browsers' offer.
        (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n",
            101,
            Some(ANSWER),
        ),
        // A quoted value is unescaped.
        (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=\"12\"\r\n",
            101,
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits=12"),
        ),
        // Declined (§7: unknown parameter, bad value, duplicate): no header.
        ("Sec-WebSocket-Extensions: permessage-deflate; foo=1\r\n", 101, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=7\r\n", 101, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=010\r\n", 101, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=16\r\n", 101, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits\r\n", 101, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover=1\r\n", 101, None),
        (
            "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover\r\n",
            101,
            None,
        ),
        // Malformed (RFC 6455 §4.2.1): 400.
        ("Sec-WebSocket-Extensions: permessage-deflate; =1\r\n", 400, None),
        ("Sec-WebSocket-Extensions: permessage-deflate; a=\"unterminated\r\n", 400, None),
        ("Sec-WebSocket-Extensions: ;;;\r\n", 400, None),
    ];
    for &(offer, status, answer) in table {
        let mut stream = server.tcp();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
            .write_all(upgrade_request(server.addr, offer).as_bytes())
            .unwrap();
        let head = read_head(&mut stream);
        assert_eq!(head.status, status, "{offer}");
        assert_eq!(head.get("sec-websocket-extensions"), answer, "{offer}");
    }
    // Everybody else keeps chatting.
    let mut a = server.client();
    let mut b = server.client();
    a.next_text();
    b.send_text("still here");
    assert_eq!(a.next_text(), format!("User {}: still here", b.port));
}

#[test]
fn a_mixed_room_gets_the_same_text_compressed_or_not() {
    let server = Server::start(&["--compression"]);
    let mut plain = server.client();
    let mut deflating = Raw::deflating(&server);
    assert_eq!(plain.next_text(), format!("User {} joined", deflating.port));

    // A long message from the plain client reaches the compressing one
    // with RSV1 set; a short one (under --compression-min-size) plain.
    let long = chat_text(1024);
    plain.send_text(&long);
    let (text, compressed) = deflating.next_text();
    assert_eq!(text, format!("User {}: {long}", plain.port));
    assert!(compressed, "1 KiB went uncompressed");
    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_deliveries_compressed_total"), 1);
    plain.send_text("hi");
    assert_eq!(
        deflating.next_text(),
        (format!("User {}: hi", plain.port), false)
    );

    // Compressed from the raw client, plain to the other.
    deflating.send(0xC1, &deflate::compress(long.as_bytes()));
    assert_eq!(
        plain.next_text(),
        format!("User {}: {long}", deflating.port)
    );
    // Fragmented, RSV1 on the first frame only (§6.1).
    let packed = deflate::compress(b"in two pieces");
    deflating.send(0x41, &packed[..4]);
    deflating.send(0x80, &packed[4..]);
    assert_eq!(
        plain.next_text(),
        format!("User {}: in two pieces", deflating.port)
    );
    // Both came compressed, whole and in pieces.
    assert_eq!(
        server
            .metrics()
            .count("wschat_messages_received_compressed_total"),
        2
    );
}

#[test]
fn history_replays_the_shared_compressed_frame() {
    let server = Server::start(&["--compression"]);
    let mut a = server.client();
    let long = chat_text(2000);
    a.send_text(&long);
    // Joining later, a compressing client is replayed the message
    // compressed.
    let mut late = Raw::deflating(&server);
    loop {
        let (text, compressed) = late.next_text();
        if text.ends_with(&long) {
            assert!(compressed);
            break;
        }
    }
}

/// Frames to send raw: first byte and payload.
type Frames = Vec<(u8, Vec<u8>)>;

/// The server's resident memory in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

#[test]
fn bad_compressed_input_gets_the_rfc_close_codes() {
    let server = Server::start(&["--compression", "--max-message-size", "64KiB"]);
    let mut bystander = server.client();
    let mut other = server.client();
    bystander.next_text();

    // (name, negotiate?, frames (first byte, payload), close code)
    let bomb = deflate::compress(&vec![0u8; 64 << 20]);
    let packed = deflate::compress(b"hello");
    let table: Vec<(&str, bool, Frames, u16)> = vec![
        ("deflate bomb", true, vec![(0xC2, bomb.clone())], 1009),
        (
            "RSV1 on a continuation",
            true,
            vec![(0x41, packed[..2].to_vec()), (0xC0, packed[2..].to_vec())],
            1002,
        ),
        (
            "RSV1 on the continuation of a plain message",
            true,
            vec![(0x01, b"he".to_vec()), (0xC0, b"llo".to_vec())],
            1002,
        ),
        ("compressed ping", true, vec![(0xC9, vec![])], 1002),
        ("compressed pong", true, vec![(0xCA, vec![])], 1002),
        (
            "RSV2 with deflate agreed",
            true,
            vec![(0xA1, b"x".to_vec())],
            1002,
        ),
        (
            "RSV3 with deflate agreed",
            true,
            vec![(0x91, b"x".to_vec())],
            1002,
        ),
        (
            "compressed close",
            true,
            vec![(0xC8, vec![0x03, 0xE8])],
            1002,
        ),
        (
            "RSV1 without negotiation",
            false,
            vec![(0xC1, packed.clone())],
            1002,
        ),
        (
            "invalid deflate",
            true,
            vec![(0xC1, vec![0xFF, 0xFF, 0xFF])],
            1007,
        ),
        (
            "deflate of invalid UTF-8",
            true,
            vec![(0xC1, deflate::compress(&[0x61, 0xC3]))],
            1007,
        ),
    ];
    let before = rss_kib(server.pid());
    for (name, negotiate, frames, code) in table {
        let mut raw = match negotiate {
            true => Raw::deflating(&server),
            false => Raw::connect(&server, ""),
        };
        for (first, payload) in frames {
            raw.send(first, &payload);
        }
        assert_eq!(raw.close_code(), code, "{name}");
    }
    // 64 MiB of zeros in 64 KiB of deflate: refused at the 64 KiB limit,
    // memory never near what it would inflate to.
    let after = rss_kib(server.pid());
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    other.send_text("unharmed");
    let unharmed = format!("User {}: unharmed", other.port);
    while bystander.next_text() != unharmed {}
}

const PYTHON_CLIENT: &str = r#"
import sys
from websockets.sync.client import connect
uri, text = sys.argv[1], sys.argv[2]
with connect(uri, compression="deflate", open_timeout=5) as ws:
    print(ws.response.headers.get("Sec-WebSocket-Extensions"), flush=True)
    ws.send(text)
    while True:
        got = ws.recv(timeout=5)
        if got.endswith(": from raw"):
            print(got, flush=True)
            break
"#;

#[test]
#[ignore = "needs python3 with websockets (target/py-venv, made by .ci/run); run with --include-ignored"]
fn python_websockets_with_deflate_chats_through_the_server() {
    let server = Server::start(&["--compression"]);
    let mut watcher = Raw::deflating(&server);
    let long = chat_text(1500);
    let uri = format!("ws://{}/", server.addr);
    let python = python();
    let child = Command::new(&python)
        .args(["-c", PYTHON_CLIENT, &uri, &long])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (see .ci/run for the venv)", python.display()));
    // The Python client compresses what it sends; the watcher sees it
    // relayed, compressed again by the server.
    let (text, compressed) = loop {
        let (text, compressed) = watcher.next_text();
        if text.ends_with(&long) {
            break (text, compressed);
        }
    };
    assert!(compressed && text.ends_with(&long));
    watcher.send(0xC1, &deflate::compress(b"from raw"));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "python client failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some(ANSWER));
    assert_eq!(
        lines.next(),
        Some(format!("User {}: from raw", watcher.port).as_str())
    );
}

const NODE_CLIENT: &str = r#"
const [uri, text] = process.argv.slice(-2);
const ws = new WebSocket(uri);
const timer = setTimeout(() => { console.log("timeout"); process.exit(2); }, 5000);
ws.onopen = () => { console.log(ws.extensions); ws.send(text); };
ws.onmessage = (e) => {
  if (e.data.endsWith(": back")) { console.log(e.data); clearTimeout(timer); ws.close(1000); }
};
ws.onclose = () => process.exit(0);
"#;

#[test]
#[ignore = "needs node 20.10+ (built-in WebSocket); run with --include-ignored"]
fn node_builtin_websocket_negotiates_deflate_and_chats() {
    let server = Server::start(&["--compression"]);
    let mut watcher = Raw::deflating(&server);
    let long = chat_text(1200);
    let uri = format!("ws://{}/", server.addr);
    let child = node_with_websocket()
        .args(["-e", NODE_CLIENT, &uri, &long])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("node not found: this test needs Node 20.10+");
    loop {
        let (text, compressed) = watcher.next_text();
        if text.ends_with(&long) {
            assert!(compressed);
            break;
        }
    }
    watcher.send(0xC1, &deflate::compress(b"back"));
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut lines = stdout.lines();
    // Node (undici) offers `permessage-deflate; client_max_window_bits`.
    assert_eq!(lines.next(), Some(ANSWER), "{stdout}");
    assert_eq!(
        lines.next(),
        Some(format!("User {}: back", watcher.port).as_str()),
        "{stdout}"
    );
    assert!(output.status.success(), "{stdout}");
}
