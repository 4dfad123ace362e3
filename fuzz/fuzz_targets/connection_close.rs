//! The server closing an open connection (`Connection::close`, as the
//! slow-consumer rule and shutdown do) at a point the input chooses, while
//! the peer's bytes keep arriving: compared with the same bytes fed to a
//! connection that stays open.
//!
//! Input: byte 0 bits 0-2 = number of chunk-length bytes that follow, bits
//! 3-7 = before which chunk (modulo the chunk count + 1) the server
//! closes; the rest is the stream after the handshake.
//!
//! Invariants:
//! - before the close, both connections report the same events and send
//!   the same bytes;
//! - `close` reports a closure (1001, not by the peer) exactly when the
//!   connection was still open, and then queues exactly one Close frame
//!   carrying 1001; nothing else is sent after it;
//! - after the close no event is reported (messages are discarded,
//!   §5.5.1; the peer's Close completes the handshake silently);
//! - the closing connection ends (`Done`) after its close only when the
//!   open one, fed the same bytes, would have ended too (a Close from the
//!   peer or a protocol error): sending Close must not turn bytes the peer
//!   sent in good faith before seeing it into an error; and it always ends
//!   when the open one received the peer's Close;
//! - bytes are left unconsumed only once the connection is done.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::protocol::connection::{Connection, Event, Input, Phase};
use wschat::protocol::frame::CloseCode;
use wschat_fuzz::{chunks, parse_server_frames, small_settings, split_control};

/// Per chunk: the events (as debug strings) and the bytes sent.
struct Trace {
    events: Vec<Vec<String>>,
    sent: Vec<Vec<u8>>,
    phase_before: Vec<Phase>,
}

fn feed(
    conn: &mut Connection,
    chunk: &[u8],
    settings: &wschat::protocol::connection::Settings,
) -> Vec<String> {
    let mut copy = chunk.to_vec();
    let mut input = Input::new(&mut copy);
    let mut events = Vec::new();
    while let Some(event) = conn.next_event(&mut input, settings) {
        events.push(match event {
            Event::Closed(c) => format!("Closed({}, {})", c.code, c.by_peer),
            other => format!("{other:?}"),
        });
    }
    assert!(
        input.is_empty() || conn.phase() == Phase::Done,
        "{} bytes left unconsumed in phase {:?}",
        input.len(),
        conn.phase()
    );
    events
}

fn flush(conn: &mut Connection) -> Vec<u8> {
    let mut out = Vec::new();
    conn.outbox_mut().write_to(&mut out).unwrap();
    out
}

fuzz_target!(|data: &[u8]| {
    let (flags, lens, stream) = split_control(data);
    let settings = small_settings();
    let split = chunks(stream, lens);
    let at = usize::from(flags) % (split.len() + 1);

    // The connection that stays open.
    let mut open = Connection::open();
    let mut a = Trace {
        events: vec![],
        sent: vec![],
        phase_before: vec![],
    };
    for chunk in &split {
        a.phase_before.push(open.phase());
        a.events.push(feed(&mut open, chunk, &settings));
        a.sent.push(flush(&mut open));
    }
    a.phase_before.push(open.phase());

    // The one the server closes before chunk `at`.
    let mut closing = Connection::open();
    let mut before = Vec::new();
    for (i, chunk) in split[..at].iter().enumerate() {
        assert_eq!(
            feed(&mut closing, chunk, &settings),
            a.events[i],
            "events before the close"
        );
        let sent = flush(&mut closing);
        assert_eq!(sent, a.sent[i], "bytes sent before the close");
        before.extend_from_slice(&sent);
    }
    assert_eq!(closing.phase(), a.phase_before[at]);
    let was_open = closing.phase() == Phase::Open;
    let closure = closing.close(CloseCode::GOING_AWAY, "server closing");
    match &closure {
        Some(c) => {
            assert!(
                was_open,
                "close reported a closure for a connection not open"
            );
            assert_eq!((c.code, c.by_peer), (CloseCode::GOING_AWAY, false));
            assert_eq!(closing.phase(), Phase::CloseSent);
        }
        None => assert!(!was_open, "closing an open connection reported nothing"),
    }
    let mut after = flush(&mut closing);
    for chunk in &split[at..] {
        let events = feed(&mut closing, chunk, &settings);
        assert!(
            events.is_empty(),
            "events after the server's close: {events:?}"
        );
        after.extend_from_slice(&flush(&mut closing));
    }
    let mut all = before.clone();
    all.extend_from_slice(&after);
    let frames = parse_server_frames(&all);
    if was_open {
        let ours = parse_server_frames(&after);
        assert_eq!(
            ours.len(),
            1,
            "after close, exactly our Close is sent: {ours:?}"
        );
        assert_eq!(ours[0].close_code(), Some(CloseCode::GOING_AWAY.0));
        assert_eq!(frames.last(), ours.last());

        // Did the open connection end on the bytes after the close point?
        let later: Vec<&String> = a.events[at..].iter().flatten().collect();
        let open_ended = later.iter().any(|e| e.starts_with("Closed("));
        let peer_closed = later
            .iter()
            .any(|e| e.starts_with("Closed(") && e.ends_with(", true)"));
        if closing.phase() == Phase::Done {
            assert!(
                open_ended,
                "after our Close the connection failed on bytes the open connection \
                 accepted (open one saw {later:?})"
            );
        }
        if peer_closed {
            assert_eq!(
                closing.phase(),
                Phase::Done,
                "the peer's Close did not finish the close"
            );
        }
    } else {
        assert!(
            after.is_empty(),
            "bytes sent by a connection that was not open"
        );
    }
});
