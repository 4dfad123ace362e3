//! Heartbeats: a connection silent for `--ping-interval` is pinged; one
//! still silent `--pong-timeout` later is dropped (how dead clients that
//! never ping, like Node's, go away). Clients that answer stay.

mod common;

use std::io::{ErrorKind, Read};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, RawClient, Server};
use tungstenite::Message;

/// Reads what `client` is sent for `time`, answering pings (tungstenite
/// queues the Pong when it reads a Ping and writes it on the next read).
/// Returns every text received; any Close or error fails.
fn pump(client: &mut Client, time: Duration) -> Vec<String> {
    client
        .ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut texts = Vec::new();
    let mut pings = 0;
    let deadline = Instant::now() + time;
    while Instant::now() < deadline {
        match client.ws.read() {
            Ok(Message::Text(text)) => texts.push(text),
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("client {}: unexpected {other:?}", client.port),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("client {}: {e} after {pings} pings", client.port),
        }
    }
    // Flush a Pong still queued.
    let _ = client.ws.flush();
    client
        .ws
        .get_ref()
        .set_read_timeout(Some(common::TIMEOUT))
        .unwrap();
    assert!(
        pings >= 1,
        "client {}: never pinged in {time:?}",
        client.port
    );
    texts
}

#[test]
fn silent_clients_are_pinged_then_dropped_and_answering_ones_stay() {
    let server = Server::start(&["--ping-interval", "1", "--pong-timeout", "1"]);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));

    // The mute client completes the handshake and never writes again.
    let mut mute = RawClient::connect(server.addr);
    let mute_port = mute.port;
    let connected = Instant::now();
    let joined = format!("User {mute_port} joined");
    assert_eq!(a.next_text(), joined);
    assert_eq!(b.next_text(), joined);

    // A and B keep reading (and so answering pings) on threads of their own.
    let pumps: Vec<_> = [a, b]
        .into_iter()
        .map(|mut client| {
            thread::spawn(move || {
                let texts = pump(&mut client, Duration::from_millis(4500));
                (client, texts)
            })
        })
        .collect();

    // The mute client: a Ping within ~3 s (silent for the 1 s interval,
    // noticed by the once-a-second sweep), then, never answering, EOF
    // within ~5 s (1 s after the Ping, noticed by a sweep).
    let mut texts = Vec::new();
    let mut byte = [0u8; 1];
    let pinged_at = loop {
        // Frames one at a time; `read_frame` blocks at most TIMEOUT.
        let (first, payload) = mute.read_frame();
        match first {
            0x89 => {
                assert!(payload.len() <= 125, "a Ping of {} bytes", payload.len());
                break connected.elapsed();
            }
            0x81 => texts.push(String::from_utf8(payload).unwrap()),
            other => panic!("mute client: unexpected frame {other:#x}"),
        }
    };
    assert!(
        texts.is_empty(),
        "mute client: nobody chatted, got {texts:?}"
    );
    assert!(
        pinged_at <= Duration::from_secs(3),
        "pinged only after {pinged_at:?}"
    );
    // Nothing more comes after the Ping: the next read sees the end.
    match mute.stream.read(&mut byte) {
        Ok(0) => {}
        Ok(_) => panic!("mute client: more bytes after the Ping, {:#x}", byte[0]),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {
            panic!("mute client: reset instead of EOF")
        }
        Err(e) => panic!("mute client: no EOF: {e}"),
    }
    let eof_at = connected.elapsed();
    assert!(
        eof_at <= Duration::from_secs(5),
        "dropped only after {eof_at:?}"
    );
    assert!(
        eof_at >= pinged_at + Duration::from_millis(900),
        "dropped {eof_at:?} after connecting, pinged at {pinged_at:?}: before the pong timeout"
    );

    // A and B, which answered, stayed past 4 s and can still chat.
    let mut users = Vec::new();
    for pump in pumps {
        let (client, texts) = pump.join().expect("a pumping client failed");
        assert_eq!(
            texts,
            [format!("User {mute_port} left")],
            "client {}: only the mute client's leave",
            client.port
        );
        users.push(client);
    }
    assert!(connected.elapsed() >= Duration::from_secs(4));
    let (a, b) = users.split_at_mut(1);
    let (a, b) = (&mut a[0], &mut b[0]);
    a.send_text("still here");
    assert_eq!(b.next_text(), format!("User {}: still here", a.port));
    b.send_text("me too");
    assert_eq!(a.next_text(), format!("User {}: me too", b.port));

    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_idle_disconnects_total"), 1);
    assert_eq!(metrics.count("wschat_chat_users"), 2);
}

// Regression: a sweep that came late used to drop a connection silent for
// ping interval + pong timeout without ever pinging it. Here the server is
// paused for 2.5 s (as a loaded machine may do to it); on resuming it must
// ping, the client answers, and it stays.
#[test]
fn a_client_is_never_dropped_without_having_been_pinged() {
    let server = Server::start(&["--ping-interval", "1", "--pong-timeout", "1"]);
    let mut a = server.client();
    server.signal(libc::SIGSTOP);
    thread::sleep(Duration::from_millis(2500));
    server.signal(libc::SIGCONT);
    // Reading answers the pings; `pump` fails on a reset or EOF and
    // unless at least one Ping came.
    let texts = pump(&mut a, Duration::from_secs(2));
    assert!(texts.is_empty(), "{texts:?}");
    a.send_text("still here");
    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_idle_disconnects_total"), 0);
    assert_eq!(metrics.count("wschat_chat_users"), 1);
}
