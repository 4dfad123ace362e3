//! Thousands at once: a crowd of idle users joining one room, and the same
//! crowd leaving all at once, must cost work linear in its size, keep
//! memory bounded, and never keep a newcomer waiting.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{upgrade_request, Server, TIMEOUT};

/// How many idle users: enough that a quadratic cost shows (5,000 joins
/// announced one by one to everyone are 12.5 million deliveries), few
/// enough for two cores and the default descriptor limit.
const CROWD: usize = 5000;

/// Upgrades `n` raw connections that never read after their `101`
/// (writing every request before reading any answer, as a load tool
/// would).
fn crowd(server: &Server, n: usize) -> Vec<TcpStream> {
    let mut streams: Vec<TcpStream> = Vec::with_capacity(n);
    let request = upgrade_request(server.addr, "");
    for chunk in 0..n.div_ceil(500) {
        let start = streams.len();
        for _ in 0..500.min(n - chunk * 500) {
            let mut stream = common::tcp(server.addr);
            stream
                .write_all(request.as_bytes())
                .expect("upgrade request");
            streams.push(stream);
        }
        for stream in &mut streams[start..] {
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).expect("101");
            assert_eq!(&head, b"HTTP/1.1 101", "upgrade refused");
        }
    }
    streams
}

/// The time a fresh client takes to be upgraded.
fn handshake_time(server: &Server) -> Duration {
    let started = Instant::now();
    let mut client = server.client();
    let elapsed = started.elapsed();
    client.send_text("hello from the newcomer");
    elapsed
}

#[test]
fn a_crowd_joins_and_leaves_at_once_in_linear_work_and_bounded_memory() {
    let server = Server::start(&[]);
    let rss_before = server.rss_kib();
    let cpu_before = server.cpu_time();
    let deliveries_before = server.metrics().count("wschat_deliveries_total");
    let started = Instant::now();
    let streams = crowd(&server, CROWD);
    let joined_in = started.elapsed();
    let join_cpu = server.cpu_time().saturating_sub(cpu_before);
    let join_deliveries = server.metrics().count("wschat_deliveries_total") - deliveries_before;
    assert_eq!(
        server.metrics().count("wschat_chat_users"),
        CROWD as u64,
        "everyone got in"
    );
    // A newcomer is not kept waiting by the crowd.
    let late = handshake_time(&server);
    assert!(late < Duration::from_secs(2), "handshake took {late:?}");
    let rss = server.rss_kib();
    assert!(
        rss.saturating_sub(rss_before) < 100 * 1024,
        "RSS grew from {rss_before} to {rss} KiB for {CROWD} idle users"
    );

    // All of them go at once (a network outage, a proxy restart).
    let cpu_before = server.cpu_time();
    let deliveries_before = server.metrics().count("wschat_deliveries_total");
    drop(streams);
    // While they are being dropped, a newcomer is answered promptly.
    thread::sleep(Duration::from_millis(20));
    let during = handshake_time(&server);
    let deadline = Instant::now() + 4 * TIMEOUT;
    while server.metrics().count("wschat_chat_users") > 1 {
        assert!(Instant::now() < deadline, "the crowd is still leaving");
        thread::sleep(Duration::from_millis(50));
    }
    let leave_cpu = server.cpu_time().saturating_sub(cpu_before);
    let leave_deliveries = server.metrics().count("wschat_deliveries_total") - deliveries_before;
    // Linear work, counted rather than timed: each join and leave reaches
    // the room a bounded number of times (summaries, at most one a second
    // to everyone), not once per member (12.5 million each way).
    let linear = 20 * CROWD as u64;
    assert!(
        join_deliveries < linear && leave_deliveries < linear,
        "{join_deliveries} deliveries for {CROWD} joins, {leave_deliveries} for the leaves"
    );
    // The stall this guards against was seconds to a minute; the bound is
    // loose enough for an unoptimised build on a busy machine.
    assert!(
        during < Duration::from_secs(2),
        "a handshake during the mass departure took {during:?}"
    );
    eprintln!(
        "{CROWD} users: joined in {joined_in:?} ({join_cpu:?} of server CPU, {join_deliveries} \
         deliveries), left with {leave_cpu:?} of CPU ({leave_deliveries} deliveries); a \
         handshake took {late:?} after the joins and {during:?} during the departure"
    );
}
