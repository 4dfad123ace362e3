//! Slow consumers (ws-rs RUSTSEC-2020-0043: an outgoing buffer without a
//! bound grows with every broadcast a peer does not read).
//!
//! A few clients complete the handshake and never read while a user
//! broadcasts thousands of messages of 1 KiB. The README's policy: each
//! connection's queue holds at most `--max-outbox` plus one message; a
//! recipient over it is sent Close 1008 and dropped if it has not finished
//! closing within `--close-timeout`; everyone else keeps receiving
//! everything.

mod common;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, RawClient, Server, TIMEOUT};
use wschat::protocol::client::{close_code, decode_server_frame, Status};

/// Clients that never read.
const SLOW: usize = 3;
/// The size of each broadcast's text.
const SIZE: usize = 1024;
const MAX_OUTBOX: usize = 64 * 1024;
/// How many messages the sender may be ahead of the active receivers.
const WINDOW: usize = 16;
/// The largest Close frame: 2 bytes of header, 125 of payload.
const MAX_CLOSE_FRAME: usize = 2 + 125;
/// The most the server's resident memory may grow over the whole test.
const RSS_GROWTH_KIB: u64 = 32 * 1024;

/// How many messages to broadcast: enough that the kernel's buffers
/// cannot hide a reader that never reads. Linux grows a socket's send
/// buffer by itself up to `tcp_wmem`'s maximum (4 MiB by default), even
/// towards a peer whose receive window is tiny, and the test cannot size
/// the server's sockets; so the flood carries that much, plus the 64 KiB
/// the server may queue, plus a quarter for good measure (about 5,500
/// messages of 1 KiB with the default 4 MiB).
fn messages() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let kernel = wmem
        .split_whitespace()
        .nth(2)
        .and_then(|max| max.parse::<usize>().ok())
        .unwrap_or(4 << 20);
    let bytes = (kernel + MAX_OUTBOX + (64 << 10)) * 5 / 4;
    (bytes / SIZE).clamp(2000, 40_000)
}

/// The text of broadcast `i`: its number, then padding to [`SIZE`].
fn payload(i: usize) -> String {
    let mut text = format!("{i:05} ");
    text.extend(std::iter::repeat_n('x', SIZE - text.len()));
    text
}

/// Reads until the sender's every message arrived, in order, and the
/// slow clients' leaves. Returns the client and the ports whose leaves
/// were seen.
/// `progress` counts the messages received so far.
fn receive_all(
    mut client: Client,
    messages: usize,
    sender: u16,
    slow: BTreeSet<u16>,
    progress: Arc<AtomicUsize>,
) -> (Client, BTreeSet<u16>) {
    let prefix = format!("User {sender}: ");
    let mut next = 0;
    let mut left = BTreeSet::new();
    while next < messages || left.len() < slow.len() {
        let text = client.next_text();
        if let Some(body) = text.strip_prefix(&prefix) {
            assert_eq!(
                body,
                payload(next),
                "receiver {}: message {next}",
                client.port
            );
            next += 1;
            progress.store(next, Ordering::SeqCst);
        } else if let Some(port) = text
            .strip_prefix("User ")
            .and_then(|t| t.strip_suffix(" left"))
        {
            let port: u16 = port.parse().unwrap();
            assert!(slow.contains(&port), "receiver {}: {text:?}", client.port);
            assert!(
                left.insert(port),
                "receiver {}: twice {text:?}",
                client.port
            );
        } else {
            assert!(
                text.ends_with(" joined"),
                "receiver {}: unexpected {text:?}",
                client.port
            );
        }
    }
    (client, left)
}

/// Splits what a client read into server frames `(first byte, payload)`;
/// also returns how many bytes of a last, incomplete frame followed.
fn split_frames(mut bytes: &[u8]) -> (Vec<(u8, Vec<u8>)>, usize) {
    let mut frames = Vec::new();
    loop {
        match decode_server_frame(bytes, usize::MAX) {
            Ok(Status::Complete((frame, n))) => {
                frames.push((bytes[0], frame.payload.to_vec()));
                bytes = &bytes[n..];
            }
            Ok(Status::Partial) => return (frames, bytes.len()),
            Err(e) => panic!(
                "not a server frame ({e}): {:02x?}",
                &bytes[..bytes.len().min(16)]
            ),
        }
    }
}

#[test]
fn slow_consumers_are_cut_off_with_1008_and_the_room_gets_everything() {
    // Flood control is turned off (--max-message-rate 0): the sender sends
    // thousands of messages as fast as the receivers take them, far over
    // the default 100/s.
    let server = Server::start(&[
        "--max-outbox",
        "64KiB",
        "--max-message-rate",
        "0",
        "--close-timeout",
        "1",
        "--slow-consumer-grace",
        "1",
    ]);
    let rss_before = server.rss_kib();
    let messages = messages();

    let mut slow: Vec<RawClient> = (0..SLOW)
        .map(|_| RawClient::non_reader(server.addr))
        .collect();
    let slow_ports: BTreeSet<u16> = slow.iter().map(|c| c.port).collect();
    let receivers = [server.client(), server.client()];
    let mut sender = server.client();
    let sender_port = sender.port;

    // The largest frame: 4 header bytes (16-bit length), the name, the text.
    let message_frame = 4 + format!("User {sender_port}: ").len() + SIZE;
    let outbox_bound = SLOW * (MAX_OUTBOX + message_frame + MAX_CLOSE_FRAME);
    // The gauge sums every queue, and during the flood the two active
    // receivers' queues hold the messages in flight to them: at most
    // WINDOW + 1 each, since the sender waits for them.
    let in_flight = 2 * (WINDOW + 1) * message_frame;

    let progress: Vec<Arc<AtomicUsize>> = (0..receivers.len())
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let readers: Vec<_> = receivers
        .into_iter()
        .zip(&progress)
        .map(|(client, progress)| {
            let slow = slow_ports.clone();
            let progress = Arc::clone(progress);
            thread::spawn(move || receive_all(client, messages, sender_port, slow, progress))
        })
        .collect();

    // Scrape /metrics all through the flood.
    let flooding = Arc::new(AtomicBool::new(true));
    let outbox_seen = Arc::new(Mutex::new(Vec::new()));
    let scraper = {
        let flooding = Arc::clone(&flooding);
        let seen = Arc::clone(&outbox_seen);
        let addr = server.addr;
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(8);
            while flooding.load(Ordering::SeqCst) && Instant::now() < deadline {
                let scrape = common::scrape_metrics(addr);
                seen.lock()
                    .unwrap()
                    .push(scrape.count("wschat_outbox_bytes") as usize);
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // The sender stays at most WINDOW messages ahead of the slower active
    // receiver: active users that keep reading are never more than
    // WINDOW KiB behind, well inside the 64 KiB a queue may hold (a
    // sender outrunning a reader makes that reader a slow consumer too,
    // which is the policy, not what this test is about).
    let started = Instant::now();
    for i in 0..messages {
        let deadline = Instant::now() + TIMEOUT;
        while progress
            .iter()
            .any(|p| p.load(Ordering::SeqCst) + WINDOW < i)
        {
            assert!(
                Instant::now() < deadline,
                "the receivers stalled before message {i}"
            );
            thread::sleep(Duration::from_micros(200));
        }
        sender.send_text(&payload(i));
    }
    let mut receivers = Vec::new();
    let mut left = Vec::new();
    for reader in readers {
        let (client, seen) = reader
            .join()
            .unwrap_or_else(|_| panic!("a receiver failed"));
        receivers.push(client);
        left.push(seen);
    }
    let flood_time = started.elapsed();
    // One scrape right after the flood, while the slow clients' queues
    // are still held (they are dropped a close timeout later).
    let after = server.metrics();
    flooding.store(false, Ordering::SeqCst);
    scraper.join().expect("scraper");

    for seen in &left {
        assert_eq!(seen, &slow_ports, "every slow client's leave was announced");
    }
    let mut seen = outbox_seen.lock().unwrap().clone();
    let max_seen = seen.iter().copied().max().unwrap_or(0);
    assert!(
        max_seen <= outbox_bound + in_flight,
        "wschat_outbox_bytes reached {max_seen} during the flood, over {SLOW} x (64 KiB + \
         {message_frame} + {MAX_CLOSE_FRAME}) = {outbox_bound} plus {in_flight} in flight to \
         the receivers; samples {seen:?}"
    );
    // Once the receivers have everything, only the slow clients' queues
    // are left (until the close timeout drops them): the strict bound.
    let quiet = after.count("wschat_outbox_bytes") as usize;
    assert!(
        quiet <= outbox_bound,
        "wschat_outbox_bytes is {quiet} after the flood, over {SLOW} x (64 KiB + \
         {message_frame} + {MAX_CLOSE_FRAME}) = {outbox_bound}"
    );
    seen.push(quiet);
    let max_seen = max_seen.max(quiet);
    assert!(
        seen.len() >= 3,
        "only {} scrapes during the flood",
        seen.len()
    );
    // The bound was exercised: some slow client's queue did fill up.
    assert!(
        max_seen >= MAX_OUTBOX,
        "the queues never filled ({max_seen} bytes at most in {} samples over {flood_time:?})",
        seen.len()
    );
    assert_eq!(
        after.count("wschat_slow_consumer_disconnects_total"),
        SLOW as u64
    );

    // Now the slow clients read: the data they were sent, oldest first and
    // without gaps, then either Close 1008 or, once the close timeout has
    // dropped them, the end of the stream (possibly inside a frame).
    let prefix = format!("User {sender_port}: ");
    for client in &mut slow {
        let port = client.port;
        let deadline = Instant::now() + TIMEOUT;
        let mut bytes = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match client.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!("slow client {port}: no EOF within {TIMEOUT:?}")
                }
                Err(e) => panic!("slow client {port}: {e} (instead of EOF)"),
            }
            assert!(
                Instant::now() < deadline,
                "slow client {port}: no EOF in {TIMEOUT:?}"
            );
        }
        let (frames, partial) = split_frames(&bytes);
        let mut next = 0;
        let mut close = None;
        for (first, data) in &frames {
            assert!(
                close.is_none(),
                "slow client {port}: a frame after the Close"
            );
            if *first == 0x88 {
                close = Some(close_code(data).expect("a Close with a code").0);
                continue;
            }
            assert_eq!(*first, 0x81, "slow client {port}: only texts and a Close");
            let text = std::str::from_utf8(data).unwrap();
            match text.strip_prefix(&prefix) {
                Some(body) => {
                    assert_eq!(body, payload(next), "slow client {port}: message {next}");
                    next += 1;
                }
                None => assert!(
                    text.ends_with(" joined") || text.ends_with(" left"),
                    "slow client {port}: {text:?}"
                ),
            }
        }
        assert!(next > 0, "slow client {port} was sent no message at all");
        assert!(
            next < messages,
            "slow client {port} got everything: not slow"
        );
        // Without a Close, the close timeout dropped it, maybe mid-frame.
        if let Some(code) = close {
            assert_eq!(code, 1008, "slow client {port}: close code");
            assert_eq!(partial, 0, "slow client {port}: bytes after the Close");
        }
    }

    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(grown < RSS_GROWTH_KIB, "server RSS grew by {grown} KiB");

    // The room is intact: the receivers and the sender are still there
    // and still chat.
    sender.send_text("still there?");
    for receiver in &mut receivers {
        assert_eq!(
            receiver.next_text(),
            format!("User {sender_port}: still there?")
        );
    }
    let end = server.metrics();
    assert_eq!(end.count("wschat_chat_users"), 3);
    assert_eq!(
        end.count("wschat_slow_consumer_disconnects_total"),
        SLOW as u64
    );
}
