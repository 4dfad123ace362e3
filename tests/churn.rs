//! Churn: thousands of connect/handshake/close cycles, ended every way a
//! client can end one, must leave the server exactly as they found it: no
//! descriptor kept, no connection left in its table, no user left in the
//! room.

mod common;

use std::io::{ErrorKind, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{upgrade_request, Client, RawClient, Server};
use tungstenite::Message;

const CYCLES: usize = 3000;
/// Connections open at once: each batch is opened, then closed.
const BATCH: usize = 100;
/// The whole churn must take less than this.
const CHURN_LIMIT: Duration = Duration::from_secs(8);
/// How long the server may take to notice the last connections ended.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// How much the server's resident memory may grow over the churn.
const RSS_GROWTH_KIB: u64 = 16 * 1024;

/// One cycle's connection while it is open.
enum Open {
    /// A tungstenite user: closes with 1000, waits for the answer and EOF.
    Clean(Box<Client>),
    /// Upgraded, then dropped without a Close (a reset if unread chat
    /// traffic is pending).
    Abrupt(RawClient),
    /// Half a request head, then dropped.
    MidHandshake(TcpStream),
}

fn open(server: &Server, n: usize) -> Open {
    match n % 3 {
        0 => Open::Clean(Box::new(server.client())),
        1 => Open::Abrupt(RawClient::connect(server.addr)),
        _ => {
            let mut stream = server.tcp();
            let request = upgrade_request(server.addr, "");
            stream
                .write_all(&request.as_bytes()[..request.len() / 2])
                .unwrap();
            Open::MidHandshake(stream)
        }
    }
}

fn close(conn: Open) {
    match conn {
        Open::Clean(mut client) => {
            client.close(1000);
            // Room traffic (joins, leaves) may come first.
            loop {
                match client.ws.read() {
                    Ok(Message::Text(_) | Message::Ping(_) | Message::Pong(_)) => {}
                    Ok(Message::Close(frame)) => {
                        let code = frame.map(|f| u16::from(f.code));
                        assert_eq!(code, Some(1000), "client {}", client.port);
                    }
                    Err(tungstenite::Error::ConnectionClosed) => break,
                    Err(tungstenite::Error::Io(e))
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                    {
                        panic!("client {}: no end to the close handshake", client.port)
                    }
                    Err(e) => panic!("client {}: {e}", client.port),
                    Ok(other) => panic!("client {}: unexpected {other:?}", client.port),
                }
            }
        }
        Open::Abrupt(raw) => drop(raw),
        Open::MidHandshake(stream) => drop(stream),
    }
}

/// Polls `probe` until it returns `want`, at most `limit`; returns the
/// last value seen.
fn poll_until<T: PartialEq + Copy>(limit: Duration, want: T, mut probe: impl FnMut() -> T) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let got = probe();
        if got == want || Instant::now() >= deadline {
            return got;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// Regression: a write failing inside `Server::flush` announces a
// departure, marking other peers dirty mid-flush; those used to be lost
// (never written to again), so clean-close cycles hung.
#[test]
fn thousands_of_cycles_leave_no_descriptor_and_no_connection_behind() {
    let server = Server::start(&[]);
    // Nothing connected yet: every descriptor now is the server's own.
    let baseline_fds = server.fd_count();
    let before = server.metrics();
    let mut scrapes = 0u64;
    // The scrape is the only connection while it is answered.
    assert_eq!(before.count("wschat_connections"), 1);
    let rss_before = server.rss_kib();

    let started = Instant::now();
    for batch in 0..CYCLES / BATCH {
        let conns: Vec<Open> = (0..BATCH)
            .map(|i| open(&server, batch * BATCH + i))
            .collect();
        for conn in conns {
            close(conn);
        }
        assert!(
            started.elapsed() < CHURN_LIMIT,
            "{} cycles took {:?}",
            (batch + 1) * BATCH,
            started.elapsed()
        );
    }
    let churn_time = started.elapsed();

    // Every connection ends on the server's side too: back to the scrape
    // alone.
    let connections = poll_until(DRAIN_LIMIT, 1, || {
        scrapes += 1;
        server.metrics().count("wschat_connections")
    });
    assert_eq!(
        connections, 1,
        "wschat_connections did not return to the baseline within {DRAIN_LIMIT:?}"
    );
    let after = server.metrics();
    scrapes += 1;
    assert_eq!(after.count("wschat_connections_open"), 0);
    assert_eq!(after.count("wschat_chat_users"), 0);
    assert_eq!(
        after.count("wschat_connections_accepted_total")
            - before.count("wschat_connections_accepted_total"),
        CYCLES as u64 + scrapes,
        "every connection made was accepted once (the {scrapes} scrapes included)"
    );
    assert_eq!(
        after.count("wschat_websockets_opened_total")
            - before.count("wschat_websockets_opened_total"),
        // Two of every three cycles complete the handshake.
        (0..CYCLES).filter(|n| n % 3 != 2).count() as u64,
    );

    // And every descriptor is given back (the last scrape's goes once the
    // server has seen it end).
    let fds = poll_until(DRAIN_LIMIT, baseline_fds, || server.fd_count());
    assert_eq!(
        fds, baseline_fds,
        "the server holds {fds} descriptors after the churn, {baseline_fds} before"
    );
    let grown = server.rss_kib().saturating_sub(rss_before);
    assert!(
        grown < RSS_GROWTH_KIB,
        "server RSS grew by {grown} KiB over {CYCLES} cycles (in {churn_time:?})"
    );

    // The server still works.
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));
    b.send_text("after the churn");
    assert_eq!(a.next_text(), format!("User {}: after the churn", b.port));
}
