//! Large messages fanned out from shared kernel pages (splice, see
//! `net::stream::splice`): every reader gets each one byte for byte and in
//! order with the small ones around it, over the size range spliced and
//! past it, and a reader that stops holding spliced bytes is still the
//! only one dropped.

mod common;

use std::thread;
use std::time::Duration;

use common::{Client, Server};
use tungstenite::Message;

/// Message `i`'s bytes: its size cycles through frames under, inside
/// and over the spliced range (32 KiB to 192 KiB by default), its content
/// depends on `i` at every byte.
fn blob(i: usize) -> Vec<u8> {
    const SIZES: [usize; 6] = [20_000, 40_000, 65_536, 100_003, 196_590, 300_000];
    let size = SIZES[i % SIZES.len()];
    let mut x = (i as u32).wrapping_mul(2_654_435_761) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

const MESSAGES: usize = 48;

/// The next message that is not a join or leave line.
fn next_said(reader: &mut Client) -> Message {
    loop {
        match reader.next() {
            Message::Text(text) if text.ends_with(" joined") || text.ends_with(" left") => {}
            other => return other,
        }
    }
}

/// Reads `MESSAGES` blobs, each followed by the sender's small text,
/// checking every byte; join and leave lines are skipped.
fn read_everything(mut reader: Client, sender: u16) {
    let mut i = 0;
    while i < MESSAGES {
        match next_said(&mut reader) {
            Message::Binary(bytes) => {
                assert!(
                    bytes == blob(i),
                    "reader {}: message {i} ({} bytes) differs",
                    reader.port,
                    bytes.len()
                );
                let text = next_said(&mut reader);
                assert_eq!(text, Message::text(format!("User {sender}: after {i}")));
                i += 1;
            }
            other => panic!("reader {}: unexpected {other:?}", reader.port),
        }
    }
}

/// `readers` readers and a sender join `server`; the sender sends
/// `MESSAGES` blobs, each followed by a small text, and every reader
/// must get them all.
fn send_to_readers(server: &Server, readers: usize) {
    let readers: Vec<Client> = (0..readers).map(|_| server.client()).collect();
    let mut sender = server.client();
    let port = sender.port;
    let threads: Vec<_> = readers
        .into_iter()
        .map(|r| thread::spawn(move || read_everything(r, port)))
        .collect();
    for i in 0..MESSAGES {
        sender.send_binary(&blob(i));
        sender.send_text(&format!("after {i}"));
    }
    for t in threads {
        t.join().expect("a reader that reads lost something");
    }
}

/// Five readers and a sender on a server with `args`; returns the bytes
/// the server says it spliced.
fn fan_out(args: &[&str]) -> u64 {
    let server = Server::start(&[&["--max-message-rate", "0"], args].concat());
    send_to_readers(&server, 5);
    server.metrics().count("wschat_bytes_spliced_total")
}

#[test]
fn large_messages_reach_every_reader_byte_for_byte_in_order_with_small_ones() {
    let spliced = fan_out(&[]);
    // The 40,000-, 65,536-, 100,003- and 196,590-byte messages (with
    // their headers, the last one just under 192 KiB) to five readers,
    // eight of each.
    let expected = 5 * 8 * (40_004 + 65_546 + 100_013 + 196_600);
    assert_eq!(spliced, expected, "what was spliced");
}

#[test]
fn with_splicing_off_the_same_messages_arrive_and_nothing_is_spliced() {
    assert_eq!(fan_out(&["--splice-min-size", "0"]), 0);
}

#[test]
fn a_stopped_reader_holding_spliced_bytes_alone_is_dropped() {
    let server = Server::start(&["--max-message-rate", "0", "--slow-consumer-grace", "1"]);
    let mut stopped = server.client();
    send_to_readers(&server, 3);
    // The stopped reader was closed as a slow consumer: what reached it
    // ends in Close 1008 (or the connection was cut after the close
    // timeout).
    thread::sleep(Duration::from_millis(200));
    let scrape = server.metrics();
    assert_eq!(scrape.count("wschat_slow_consumer_disconnects_total"), 1);
    assert!(scrape.count("wschat_bytes_spliced_total") > 0);
    stopped.ws.get_mut().set_nonblocking(false).unwrap();
    let mut code = None;
    while code.is_none() {
        match stopped.ws.read() {
            Ok(Message::Close(frame)) => code = frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert!(
        matches!(code, None | Some(1008)),
        "the stopped reader's close: {code:?}"
    );
}
