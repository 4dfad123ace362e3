//! Helpers shared by the fuzz targets: how an input chooses its chunking,
//! a driver that feeds a `Connection` and summarises what it did, and a
//! strict reader of what a server may put on the wire.

use wschat::protocol::client::{self, ServerFrame, Status};
use wschat::protocol::connection::{Connection, Event, Input, Message, Phase, Settings};
use wschat::protocol::frame::{CloseCode, OpCode};
use wschat::protocol::handshake::{self, HttpResponse, Method};

/// The upgrade request the connection target puts before the fuzz bytes,
/// so the fuzzer spends its time on frames.
pub const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";

/// The accept value for [`UPGRADE`]'s key (RFC 6455 §1.3).
pub const UPGRADE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Splits a fuzz input into (flags, chunk lengths, payload).
///
/// Byte 0: bits 0-2 = how many chunk-length bytes follow (0-7), bits 3-7
/// are flags for the target. The next bytes are chunk lengths, each
/// `byte + 1`, used in turn and cyclically; with none, the payload is one
/// chunk. The rest of the input is the payload.
pub fn split_control(data: &[u8]) -> (u8, &[u8], &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return (0, &[], &[]);
    };
    let n = usize::from(first & 7).min(rest.len());
    let (lens, payload) = rest.split_at(n);
    (first >> 3, lens, payload)
}

/// Cuts `payload` into the chunks `lens` asks for (see [`split_control`]).
pub fn chunks<'a>(payload: &'a [u8], lens: &[u8]) -> Vec<&'a [u8]> {
    if lens.is_empty() {
        return vec![payload];
    }
    let mut out = Vec::new();
    let mut rest = payload;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(lens[i % lens.len()]) + 1).min(rest.len());
        let (a, b) = rest.split_at(n);
        out.push(a);
        rest = b;
        i += 1;
    }
    out
}

/// The connection limits the connection targets run with: small, so the
/// fuzzer reaches them.
pub fn small_settings() -> Settings {
    let mut settings = Settings {
        max_message_size: 4096,
        max_fragments: 16,
        max_outbox_bytes: 4096,
        ..Default::default()
    };
    // Room for the fixed request (about 200 bytes), not for much more.
    settings.handshake.max_head_bytes = 1024;
    settings.handshake.max_headers = 16;
    settings
}

/// The limits with a tiny outbox allowance, so that a peer that sends
/// Pings and never reads the Pongs reaches it within an input.
pub fn tight_outbox_settings() -> Settings {
    Settings {
        max_outbox_bytes: 64,
        ..small_settings()
    }
}

/// How far past `max_outbox_bytes` a connection's own queue (its
/// `footprint`) may grow while nothing is flushed: the 101 (or a refusal),
/// one control frame over the limit and the final Close, with their
/// per-frame charges.
pub const OUTBOX_SLACK: usize = 512;

fn check_outbox_bound(conn: &Connection, settings: &Settings) {
    // The footprint is what `max_outbox_bytes` limits: bytes plus a handle
    // per frame.
    let footprint = conn.outbox().footprint();
    assert!(
        footprint <= settings.max_outbox_bytes + OUTBOX_SLACK,
        "the connection's own replies take {footprint} bytes of outbox ({} frames) for a \
         peer that is not reading (max_outbox_bytes {} + slack {OUTBOX_SLACK})",
        conn.outbox().frames(),
        settings.max_outbox_bytes
    );
}

/// An event with its data owned, for comparing runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A valid upgrade request (the driver then accepts or refuses it).
    Upgrade {
        target: String,
        protocol: Option<String>,
        accept: String,
    },
    Http(String),
    Refused(&'static str),
    Text(String),
    Binary(Vec<u8>),
    /// Close code and whether the peer ended it. The detail text is not
    /// compared: it is for logs.
    Closed(u16, bool),
}

/// A frame the server sent, read back from its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl OutFrame {
    /// What two runs must agree on: the frame, except that a Close is
    /// compared by its code only (the reason is a log string).
    pub fn comparable(&self) -> (bool, u8, Vec<u8>) {
        if self.opcode == 0x8 {
            (
                self.fin,
                self.opcode,
                self.payload.iter().take(2).copied().collect(),
            )
        } else {
            (self.fin, self.opcode, self.payload.clone())
        }
    }

    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == 0x8)
            .then(|| client::close_code(&self.payload))
            .flatten()
            .map(|code| code.0)
    }
}

/// What one run of a connection produced.
#[derive(Debug)]
pub struct Run {
    pub events: Vec<Seen>,
    /// Everything the outbox wrote, in order.
    pub output: Vec<u8>,
    pub phase: Phase,
    /// The request was a `HEAD`: its answer has no body.
    pub head: bool,
}

/// How the driver answers a valid upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// `respond` with a 403, as an application refusing the target would.
    Refuse,
}

/// Feeds `chunks` to `conn` one read at a time, the way the server does:
/// `next_event` until `None`, answering upgrade requests with `verdict`
/// and plain HTTP requests with a 404, and (when `flush_each`) draining
/// the outbox after every read. Checks the per-event invariants as it goes.
pub fn drive(
    mut conn: Connection,
    chunks: &[&[u8]],
    settings: &Settings,
    flush_each: bool,
    verdict: Verdict,
) -> Run {
    let refuse_upgrades = verdict == Verdict::Refuse;
    let mut events = Vec::new();
    let mut output = Vec::new();
    for chunk in chunks {
        let mut copy = chunk.to_vec();
        let mut input = Input::new(&mut copy);
        while let Some(event) = conn.next_event(&mut input, settings) {
            let seen = match event {
                Event::Upgrade(u) => {
                    assert_eq!(conn.phase(), Phase::Upgrading);
                    if refuse_upgrades {
                        conn.respond(&HttpResponse::text(403, "refused by the caller"));
                    } else {
                        conn.accept(&u);
                        assert_eq!(conn.phase(), Phase::Open);
                    }
                    Seen::Upgrade {
                        target: u.target,
                        protocol: u.protocol,
                        accept: u.accept,
                    }
                }
                Event::Http(r) => {
                    conn.respond(&HttpResponse::text(404, "not here"));
                    Seen::Http(r.target)
                }
                Event::Refused(why) => Seen::Refused(why),
                Event::Message(Message::Text(t)) => {
                    assert!(
                        t.len() <= settings.max_message_size,
                        "text message of {} bytes over the {} limit",
                        t.len(),
                        settings.max_message_size
                    );
                    assert!(std::str::from_utf8(t.as_bytes()).is_ok());
                    Seen::Text(t.into_owned())
                }
                Event::Message(Message::Binary(b)) => {
                    assert!(
                        b.len() <= settings.max_message_size,
                        "binary message of {} bytes over the {} limit",
                        b.len(),
                        settings.max_message_size
                    );
                    Seen::Binary(b.into_owned())
                }
                Event::Closed(c) => {
                    assert_eq!(
                        conn.phase(),
                        Phase::Done,
                        "Closed leaves the connection done"
                    );
                    Seen::Closed(c.code.0, c.by_peer)
                }
            };
            events.push(seen);
            check_outbox_bound(&conn, settings);
        }
        check_outbox_bound(&conn, settings);
        assert!(
            input.is_empty(),
            "next_event returned None with {} bytes unconsumed (phase {:?})",
            input.len(),
            conn.phase()
        );
        if flush_each {
            flush(&mut conn, &mut output);
        }
    }
    flush(&mut conn, &mut output);
    assert_eq!(
        conn.is_finished(),
        conn.phase() == Phase::Done,
        "a flushed connection is finished exactly when done"
    );
    Run {
        events,
        output,
        phase: conn.phase(),
        head: conn.request_method() == Some(Method::Head),
    }
}

fn flush(conn: &mut Connection, output: &mut Vec<u8>) {
    let queued = conn.outbox().queued_bytes();
    let before = output.len();
    conn.outbox_mut()
        .write_to(output)
        .expect("writing to a Vec cannot fail");
    assert_eq!(
        output.len() - before,
        queued,
        "queued_bytes counts what is written"
    );
    assert_eq!(conn.outbox().queued_bytes(), 0);
    assert!(conn.outbox().is_empty());
}

/// Checks the order of events: at most one of each ending, nothing after
/// the end, and (when `handshake`) nothing before the connection opened.
pub fn check_event_order(events: &[Seen], handshake: bool, verdict: Verdict) {
    let mut opened = !handshake;
    let mut ended = false;
    for (i, e) in events.iter().enumerate() {
        match e {
            Seen::Upgrade { .. } | Seen::Http(_) | Seen::Refused(_) => {
                assert!(
                    handshake && i == 0,
                    "handshake outcome at event {i}: {events:?}"
                );
                opened = matches!(e, Seen::Upgrade { .. }) && verdict == Verdict::Accept;
                ended = !opened;
            }
            Seen::Text(_) | Seen::Binary(_) => {
                assert!(opened, "message before the upgrade: {events:?}");
                assert!(!ended, "message after the connection ended: {events:?}");
            }
            Seen::Closed(code, by_peer) => {
                assert!(opened, "Closed before the upgrade: {events:?}");
                assert!(!ended, "second ending: {events:?}");
                ended = true;
                let code = CloseCode(*code);
                if *by_peer {
                    assert!(
                        code.is_valid_on_wire() || code == CloseCode::NO_STATUS,
                        "peer close reported with code {code}"
                    );
                } else {
                    assert!(code.is_valid_on_wire(), "we closed with code {code}");
                }
            }
        }
    }
}

/// Reads an HTTP response off the front of `out`: (status, head length,
/// headers as (lowercase name, value)).
pub fn read_http_response(out: &[u8]) -> (u16, usize, Vec<(String, Vec<u8>)>) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!(
            "the server's HTTP response does not parse: {other:?}\n{}",
            String::from_utf8_lossy(out)
        ),
    };
    assert_eq!(resp.version, Some(1), "HTTP/1.1 response");
    let status = resp.code.expect("status code");
    let headers = resp
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect();
    (status, n, headers)
}

pub fn header<'h>(headers: &'h [(String, Vec<u8>)], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// Checks a refusal or answer to plain HTTP: a complete response whose
/// body is exactly `Content-Length` bytes and ends the output.
pub fn check_plain_response(out: &[u8], expect_status: Option<u16>, head: bool) {
    let (status, n, headers) = read_http_response(out);
    if let Some(s) = expect_status {
        assert_eq!(status, s);
    }
    assert!(
        (200..600).contains(&status) && status != 101,
        "status {status}"
    );
    let len: usize =
        std::str::from_utf8(header(&headers, "content-length").expect("Content-Length"))
            .unwrap()
            .parse()
            .expect("numeric Content-Length");
    // The answer to a HEAD has the GET's Content-Length and no body.
    let body = if head { 0 } else { len };
    assert_eq!(
        out.len() - n,
        body,
        "body is Content-Length bytes (none for HEAD) and nothing follows"
    );
    assert_eq!(header(&headers, "connection"), Some(&b"close"[..]));
}

/// Reads `out` as a sequence of frames a server may send: what the shared
/// client decoder accepts (unmasked, no RSV bits, defined opcodes, control
/// frames unfragmented and at most 125 bytes, no 64-bit length with the top
/// bit), and more strictly minimal lengths, Close bodies well formed,
/// final text frames valid UTF-8, nothing after a Close, and no partial
/// frame at the end.
pub fn parse_server_frames(mut out: &[u8]) -> Vec<OutFrame> {
    let mut frames: Vec<OutFrame> = Vec::new();
    while !out.is_empty() {
        assert!(
            frames.last().is_none_or(|f| f.opcode != 0x8),
            "bytes after a Close frame: {out:02x?}"
        );
        let (frame, n) = match client::decode_server_frame(out, usize::MAX) {
            Ok(Status::Complete(whole)) => whole,
            Ok(Status::Partial) => panic!("truncated server frame {out:02x?}"),
            Err(e) => panic!("not a frame a server may send ({e}): {out:02x?}"),
        };
        let ServerFrame { header, payload } = frame;
        assert!(
            header.is_minimal(),
            "non-minimal length: {} bytes in a {}-byte header",
            header.payload_len,
            header.header_len
        );
        match header.opcode {
            OpCode::Close => match payload {
                [] => {}
                [_] => panic!("server Close with a one-byte body"),
                [_, _, reason @ ..] => {
                    let code = client::close_code(payload).expect("two bytes");
                    assert!(code.is_valid_on_wire(), "server sent close code {code}");
                    assert!(
                        std::str::from_utf8(reason).is_ok(),
                        "close reason not UTF-8"
                    );
                }
            },
            OpCode::Text if header.fin => {
                assert!(std::str::from_utf8(payload).is_ok(), "text not UTF-8")
            }
            _ => {}
        }
        frames.push(OutFrame {
            fin: header.fin,
            opcode: header.opcode.bits(),
            payload: payload.to_vec(),
        });
        out = &out[n..];
    }
    frames
}

/// Checks a whole run against the events it reported: the 101 (or the
/// refusal) first, then valid server frames that agree with the events.
/// Returns the frames.
pub fn check_output(run: &Run, handshake: bool, verdict: Verdict) -> Vec<OutFrame> {
    let mut out = run.output.as_slice();
    if handshake {
        match run.events.first() {
            None => {
                assert!(out.is_empty(), "output before the handshake completed");
                assert_eq!(run.phase, Phase::Handshake);
                return Vec::new();
            }
            Some(Seen::Upgrade { .. }) if verdict == Verdict::Refuse => {
                check_plain_response(out, Some(403), run.head);
                assert_eq!(run.phase, Phase::Done);
                return Vec::new();
            }
            Some(Seen::Upgrade { accept, .. }) => {
                let (status, n, headers) = read_http_response(out);
                assert_eq!(status, 101);
                assert_eq!(header(&headers, "upgrade"), Some(&b"websocket"[..]));
                assert_eq!(header(&headers, "connection"), Some(&b"Upgrade"[..]));
                assert_eq!(
                    header(&headers, "sec-websocket-accept"),
                    Some(accept.as_bytes())
                );
                out = &out[n..];
            }
            Some(Seen::Http(_)) => {
                check_plain_response(out, Some(404), run.head);
                assert_eq!(run.phase, Phase::Done);
                return Vec::new();
            }
            Some(Seen::Refused(_)) => {
                check_plain_response(out, None, run.head);
                assert_eq!(run.phase, Phase::Done);
                return Vec::new();
            }
            Some(other) => panic!("first event {other:?}"),
        }
    }
    let frames = parse_server_frames(out);
    // Without server-side sends the only frames are Pongs and one Close.
    for f in &frames {
        assert!(
            matches!(f.opcode, 0x8 | 0xA),
            "unexpected server frame opcode {:#x}",
            f.opcode
        );
    }
    let closed = run.events.iter().find_map(|e| match e {
        Seen::Closed(code, by_peer) => Some((*code, *by_peer)),
        _ => None,
    });
    let last_close = frames.last().filter(|f| f.opcode == 0x8);
    match closed {
        None => {
            assert!(last_close.is_none(), "Close sent but no Closed event");
            assert_ne!(run.phase, Phase::Done, "done without a Closed event");
        }
        Some((code, by_peer)) => {
            let sent = last_close.expect("a Closed event without a Close frame sent");
            let expect = if by_peer && code == CloseCode::NO_STATUS.0 {
                CloseCode::NORMAL.0
            } else {
                code
            };
            assert_eq!(
                sent.close_code(),
                Some(expect),
                "the Close sent carries the code reported"
            );
            assert_eq!(run.phase, Phase::Done);
        }
    }
    frames
}

/// Runs a connection three ways (the chunks the input asked for, one
/// chunk, one byte at a time, flushing only at the end) and checks every
/// invariant, including that all three agree; then once more in the
/// chosen chunks with the outbox drained after each, as a reading peer
/// would, checking each invariant but not agreement (what a connection
/// does may depend on how much the peer has read).
pub fn check_connection(
    fresh: fn() -> Connection,
    stream: &[u8],
    lens: &[u8],
    handshake: bool,
    settings: &Settings,
    verdict: Verdict,
) -> Run {
    let split = chunks(stream, lens);
    let flushing = drive(fresh(), &split, settings, true, verdict);
    check_event_order(&flushing.events, handshake, verdict);
    check_output(&flushing, handshake, verdict);

    let chunked = drive(fresh(), &split, settings, false, verdict);
    check_event_order(&chunked.events, handshake, verdict);
    let chunked_frames = check_output(&chunked, handshake, verdict);

    let whole = drive(fresh(), &[stream], settings, false, verdict);
    assert_eq!(
        chunked.events, whole.events,
        "events differ between chunkings {lens:?} and whole"
    );
    assert_eq!(
        chunked.phase, whole.phase,
        "phase differs between chunkings"
    );
    let whole_frames = check_output(&whole, handshake, verdict);
    let cmp = |f: &[OutFrame]| f.iter().map(OutFrame::comparable).collect::<Vec<_>>();
    assert_eq!(
        cmp(&chunked_frames),
        cmp(&whole_frames),
        "output frames differ between chunkings"
    );

    if stream.len() <= 2048 {
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let bytewise = drive(fresh(), &bytes, settings, false, verdict);
        assert_eq!(
            bytewise.events, whole.events,
            "events differ fed byte by byte"
        );
        let bytewise_frames = check_output(&bytewise, handshake, verdict);
        assert_eq!(
            cmp(&bytewise_frames),
            cmp(&whole_frames),
            "output differs fed byte by byte"
        );
    }
    whole
}

/// Whether `accept` is what the handshake module computes for `key`.
pub fn accept_matches(key: &[u8], accept: &str) -> bool {
    handshake::accept_key(key) == accept
}
