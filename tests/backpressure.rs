//! Overload without losing anyone: senders faster than their readers are
//! slowed down (their sockets are not read while a recipient's queue is
//! high), readers that keep reading get everything, and only a reader
//! that stops is dropped, after `--slow-consumer-grace`.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::{text_frame, Client, RawClient, Server, TIMEOUT};

/// A text of `size` bytes that starts with its number.
fn payload(seq: usize, size: usize) -> String {
    let mut text = format!("{seq:06} ");
    text.extend(std::iter::repeat_n('x', size - text.len()));
    text
}

/// Reads until `expected` messages from each of `senders` arrived, each
/// sender's in order, sleeping `pause` after each (a reader slower than
/// the senders, but steady). Join lines are skipped; anything else fails.
fn read_all(
    mut client: Client,
    senders: Vec<u16>,
    expected: usize,
    size: usize,
    pause: Duration,
    allow_leaves: bool,
) -> Client {
    let mut next: HashMap<u16, usize> = senders.iter().map(|&s| (s, 0)).collect();
    while next.values().any(|&n| n < expected) {
        let text = client.next_text();
        if text.ends_with(" joined") || (allow_leaves && text.ends_with(" left")) {
            continue;
        }
        let (name, body) = text
            .split_once(": ")
            .unwrap_or_else(|| panic!("reader {}: unexpected {text:?}", client.port));
        let port: u16 = name
            .strip_prefix("User ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("reader {}: from {name:?}", client.port));
        let n = next
            .get_mut(&port)
            .unwrap_or_else(|| panic!("reader {}: from a stranger {port}", client.port));
        assert_eq!(body.len(), size, "reader {}: message size", client.port);
        assert_eq!(
            &body[..7],
            &payload(*n, size)[..7],
            "reader {}: order from {port}",
            client.port
        );
        *n += 1;
        if !pause.is_zero() {
            thread::sleep(pause);
        }
    }
    client
}

/// Starts readers, waits until each sender's join reached them all, then
/// sends `count` messages of `size` from every sender as fast as the
/// socket takes them, and joins the readers.
fn flood(
    server: &Server,
    senders: usize,
    readers: usize,
    count: usize,
    size: usize,
    pause: Duration,
    allow_leaves: bool,
) -> Vec<Client> {
    let receivers: Vec<Client> = (0..readers).map(|_| server.client()).collect();
    let mut senders: Vec<RawClient> = (0..senders)
        .map(|_| RawClient::connect(server.addr))
        .collect();
    let ports: Vec<u16> = senders.iter().map(|s| s.port).collect();
    // Everyone has seen everyone join once the last join reached the
    // first receiver: the server handles them in order.
    let handles: Vec<_> = receivers
        .into_iter()
        .map(|client| {
            let ports = ports.clone();
            thread::spawn(move || read_all(client, ports, count, size, pause, allow_leaves))
        })
        .collect();
    // A sender reads too (what the other senders say), on a thread of its
    // own, as a client's event loop would.
    let drains: Vec<_> = senders
        .iter()
        .map(|sender| {
            let mut stream = sender.stream.try_clone().expect("clone");
            stream.set_read_timeout(None).unwrap();
            thread::spawn(move || {
                let mut sink = vec![0u8; 1 << 16];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
            })
        })
        .collect();
    let writers: Vec<_> = senders
        .drain(..)
        .map(|mut sender| {
            thread::spawn(move || {
                sender.stream.set_write_timeout(Some(4 * TIMEOUT)).unwrap();
                for seq in 0..count {
                    sender.send(&text_frame(&payload(seq, size)));
                }
                sender
            })
        })
        .collect();
    let senders: Vec<RawClient> = writers
        .into_iter()
        .map(|w| w.join().expect("a sender failed"))
        .collect();
    let readers = handles
        .into_iter()
        .map(|h| {
            h.join().unwrap_or_else(|_| {
                let log = server.log();
                let tail: Vec<&str> = log.lines().filter(|l| !l.contains("DEBUG")).collect();
                panic!("a reader failed; server log:\n{}", tail.join("\n"))
            })
        })
        .collect();
    for sender in senders {
        let _ = sender.stream.shutdown(std::net::Shutdown::Both);
    }
    for drain in drains {
        drain.join().expect("drain");
    }
    readers
}

#[test]
fn readers_slower_than_their_senders_get_everything_in_bounded_memory() {
    let server = Server::start(&["--max-message-rate", "0"]);
    let rss_before = server.rss_kib();
    let started = Instant::now();
    // Two senders of 64 KiB as fast as they can; eight readers that take
    // eight milliseconds per message (8 MB/s each, slower than even an
    // unoptimised server on a busy machine sends): 19 MiB to each reader,
    // far more than the kernel's buffers and the 1 MiB a queue may hold.
    flood(
        &server,
        2,
        8,
        150,
        64 * 1024,
        Duration::from_millis(8),
        false,
    );
    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_slow_consumer_disconnects_total"), 0);
    assert!(
        metrics.count("wschat_senders_paused_total") > 0,
        "the senders outran the readers and were paused"
    );
    let growth = server.rss_kib().saturating_sub(rss_before);
    assert!(
        growth < 64 * 1024,
        "RSS grew by {growth} KiB in {:?}",
        started.elapsed()
    );
}

#[test]
fn three_one_mib_messages_in_a_row_reach_ten_readers() {
    // Within every default limit (a message is at most 1 MiB, and there
    // is no rate at issue with three), as a Python `websockets` sender's
    // three `await ws.send()` calls would do.
    let server = Server::start(&[]);
    flood(&server, 1, 10, 3, 1 << 20, Duration::ZERO, false);
    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_slow_consumer_disconnects_total"), 0);
}

/// A stock Python `websockets` client: three `await ws.send()` of 1 MiB
/// each (as the tests above number them), after printing its port.
const PYTHON_SENDER: &str = r#"
import asyncio, sys, websockets
async def main():
    async with websockets.connect(sys.argv[1]) as ws:
        print(ws.local_address[1], flush=True)
        for seq in range(3):
            await ws.send(f"{seq:06} " + "x" * ((1 << 20) - 7))
        await asyncio.sleep(1)
asyncio.run(main())
"#;

#[test]
#[ignore = "needs python3 with websockets (target/py-venv, made by .ci/run); run with --include-ignored"]
fn a_python_websockets_sender_s_three_1_mib_messages_reach_ten_readers() {
    use std::io::BufRead;
    let server = Server::start(&[]);
    let readers: Vec<Client> = (0..10).map(|_| server.client()).collect();
    let python = common::python();
    let mut child = std::process::Command::new(&python)
        .args(["-c", PYTHON_SENDER, &format!("ws://{}/", server.addr)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (see .ci/run for the venv)", python.display()));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the sender's port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port {line:?}"));
    let handles: Vec<_> = readers
        .into_iter()
        .map(|r| thread::spawn(move || read_all(r, vec![port], 3, 1 << 20, Duration::ZERO, true)))
        .collect();
    for h in handles {
        h.join()
            .unwrap_or_else(|_| panic!("a reader failed; log:\n{}", server.log()));
    }
    assert!(child.wait().expect("python").success());
    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_slow_consumer_disconnects_total"), 0);
}

#[test]
fn forty_64_kib_messages_in_a_row_reach_ten_readers() {
    let server = Server::start(&[]);
    flood(&server, 1, 10, 40, 64 * 1024, Duration::ZERO, false);
    let metrics = server.metrics();
    assert_eq!(metrics.count("wschat_slow_consumer_disconnects_total"), 0);
}

#[test]
fn only_the_readers_that_stop_are_dropped_after_the_grace() {
    let server = Server::start(&["--max-message-rate", "0", "--slow-consumer-grace", "1"]);
    let stopped: Vec<RawClient> = (0..20)
        .map(|_| RawClient::non_reader(server.addr))
        .collect();
    // A healthy pair and a sender of 16 KiB messages: 8 MiB each, far
    // past what the stopped readers' sockets and queues can take.
    let started = Instant::now();
    let readers = flood(&server, 1, 2, 500, 16 * 1024, Duration::ZERO, true);
    let elapsed = started.elapsed();
    let metrics = server.metrics();
    assert_eq!(
        metrics.count("wschat_slow_consumer_disconnects_total"),
        stopped.len() as u64,
        "every stopped reader, and only they, were dropped"
    );
    assert!(
        elapsed < Duration::from_secs(20),
        "the room was held up for {elapsed:?}"
    );
    // The stopped readers got Close 1008 at the end of what they were sent
    // (or the connection ended, once the close timeout dropped them).
    for mut client in stopped {
        let mut sink = vec![0u8; 1 << 16];
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline {
            match client.stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    drop(readers);
}

#[test]
fn a_json_newcomer_is_replayed_history_of_control_characters_without_being_closed() {
    let server = Server::start(&["--max-message-rate", "0"]);
    let mut talker = server.client();
    // 64 messages of 4 KiB of U+0001: each is 24 KiB as JSON (`\u0001`),
    // 1.5 MiB of replay if history kept all of them by their text size.
    let text = "\u{1}".repeat(4096);
    for _ in 0..64 {
        talker.send_text(&text);
    }
    // The talker's own history: a plain line per message it did not get;
    // a metrics scrape orders us after the server handled them all.
    let held = server.metrics().count("wschat_history_messages");
    assert!(held > 0, "history holds some of it");
    let stream = common::tcp(server.addr);
    let request =
        tungstenite::ClientRequestBuilder::new(format!("ws://{}/", server.addr).parse().unwrap())
            .with_sub_protocol("wschat.v1.json");
    let (mut json, _) = tungstenite::client(request, stream).expect("JSON client");
    let mut history = 0;
    while history < held {
        match json.read().expect("an event, not a close") {
            tungstenite::Message::Text(t) => {
                let event: serde_json::Value = serde_json::from_str(&t).expect("JSON");
                if event["type"] == "history" {
                    assert_eq!(event["text"].as_str(), Some(text.as_str()));
                    history += 1;
                }
            }
            tungstenite::Message::Close(frame) => panic!("closed during the replay: {frame:?}"),
            _ => {}
        }
    }
    // Still open and chatting.
    talker.send_text("still here?");
    loop {
        if let tungstenite::Message::Text(t) = json.read().expect("live event") {
            if t.contains("still here?") {
                break;
            }
        }
    }
    assert_eq!(
        server
            .metrics()
            .count("wschat_slow_consumer_disconnects_total"),
        0
    );
}
