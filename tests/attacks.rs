//! What an attacker found in an afternoon, each kept as a regression test
//! against the real binary: trickling peers, peers that never read,
//! refused clients that keep writing, one address taking every slot,
//! flood control after a stall, and signals.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::{text_frame, Client, RawClient, Server, TIMEOUT};
use socket2::{Domain, Protocol, Socket, Type};

/// Reads server frames until a Close; returns its code.
fn read_close(client: &mut RawClient) -> u16 {
    loop {
        let (first, payload) = client.read_frame();
        if first == 0x88 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[test]
fn a_frame_trickled_a_byte_at_a_time_must_still_finish_in_time() {
    let server = Server::start(&["--message-timeout", "2"]);
    let mut bystander = server.client();
    let mut slow = RawClient::connect(server.addr);
    let frame = text_frame("this message never ends");
    let started = Instant::now();
    // One byte every 300 ms: never silent, never done.
    for &byte in frame.iter().take(12) {
        if slow.stream.write_all(&[byte]).is_err() {
            break;
        }
        thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(read_close(&mut slow), 1008, "closed as a policy violation");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Everyone else chats on.
    let mut other = server.client();
    other.send_text("still fine");
    assert!(bystander.next_text().ends_with(" joined"));
    loop {
        let text = bystander.next_text();
        if text.ends_with("still fine") {
            break;
        }
    }
}

#[test]
fn a_peer_that_pings_but_never_reads_is_dropped_when_its_socket_stalls() {
    // The slow-consumer grace is long, so only the write timeout can drop
    // it; the outbox is large, so our queue for it never overflows.
    let server = Server::start(&[
        "--write-timeout",
        "2",
        "--slow-consumer-grace",
        "60",
        "--max-outbox",
        "64MiB",
        "--max-message-rate",
        "0",
    ]);
    let mut stalled = RawClient::non_reader(server.addr);
    let port = stalled.port;
    let mut talker = server.client();
    // Fill its socket: 8 MiB of chat it never reads.
    let text = "x".repeat(16 * 1024);
    for _ in 0..512 {
        talker.send_text(&text);
    }
    // It keeps pinging all along.
    let started = Instant::now();
    let ping = common::frame(0x89, b"alive", true);
    let mut gone = false;
    while started.elapsed() < Duration::from_secs(10) {
        if stalled.stream.write_all(&ping).is_err() {
            gone = true;
            break;
        }
        if server.metrics().count("wschat_chat_users") == 1 {
            gone = true;
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    assert!(
        gone,
        "User {port} was still there after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn a_refused_client_that_keeps_writing_is_cut_off_cheaply() {
    let server = Server::start(&[]);
    let cpu_before = server.cpu_time();
    let mut stream = server.tcp();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        .unwrap();
    let junk = vec![b'j'; 64 * 1024];
    let started = Instant::now();
    let mut written = 0usize;
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    while started.elapsed() < Duration::from_secs(5) {
        match stream.write(&junk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the server took {written} bytes for 5 s"
    );
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    assert!(cpu < Duration::from_secs(1), "{cpu:?} of CPU");
    // It answered first.
    let mut bystander = server.client();
    bystander.send_text("hi");
}

#[test]
fn one_address_cannot_take_every_connection() {
    let server = Server::start_raw(&["--listen", "0.0.0.0:0", "--max-connections-per-ip", "3"]);
    let held: Vec<Client> = (0..3).map(|_| server.client()).collect();
    let request = common::upgrade_request(server.addr, "");
    let (head, body) = common::http_exchange(server.addr, request.as_bytes());
    assert_eq!(head.status, 503, "{body}");
    // Another address is still welcome.
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    let from = SocketAddr::from(([127, 0, 0, 2], 0));
    socket.bind(&from.into()).expect("bind 127.0.0.2");
    socket
        .connect_timeout(&server.addr.into(), TIMEOUT)
        .expect("connect");
    let mut newcomer = RawClient::upgrade(socket.into(), server.addr);
    newcomer.send(&text_frame("from elsewhere"));
    // Once they leave, the address may connect again.
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    let metrics = loop {
        let (head, body) = server.get("/metrics");
        if head.status == 200 {
            break common::Scrape::parse(&body).expect("metrics");
        }
        assert!(Instant::now() < deadline, "still refused after they left");
        thread::sleep(Duration::from_millis(50));
    };
    let refused =
        metrics.count("wschat_handshakes_refused_total{reason=\"connections per address\"}");
    assert!(refused >= 1, "{refused} refusals counted");
}

#[test]
fn messages_that_waited_out_a_stall_are_not_a_flood() {
    // A rate of 10/s with a burst of 5: two users at 5/s through a 4 s
    // stall send 20 each, which arrive at once when the server resumes.
    let server = Server::start(&["--max-message-rate", "10", "--message-burst", "5"]);
    let mut observer = server.client();
    let mut users: Vec<Client> = (0..2).map(|_| server.client()).collect();
    let names: Vec<String> = users.iter().map(Client::name).collect();
    for _ in 0..2 {
        assert!(observer.next_text().ends_with(" joined"));
    }
    server.signal(libc::SIGSTOP);
    for i in 0..20 {
        for user in &mut users {
            user.send_text(&format!("tick {i}"));
        }
        thread::sleep(Duration::from_millis(200));
    }
    server.signal(libc::SIGCONT);
    let mut got = 0;
    while got < 40 {
        let text = observer.next_text();
        assert!(
            names
                .iter()
                .any(|n| text.starts_with(&format!("{n}: tick "))),
            "unexpected {text:?}"
        );
        got += 1;
    }
    assert_eq!(
        server
            .metrics()
            .count("wschat_flood_dropped_messages_total"),
        0
    );
}

#[test]
fn sighup_and_sigusr1_do_not_stop_the_chat() {
    let server = Server::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    assert!(a.next_text().ends_with(" joined"));
    for signal in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        server.signal(signal);
        thread::sleep(Duration::from_millis(100));
        b.send_text("still here");
        assert!(a.next_text().ends_with(": still here"), "after {signal}");
    }
    assert!(server.log().contains("SIGHUP"), "the reload is logged");
}

#[test]
fn sigterm_exits_within_the_close_timeout_with_users_not_reading() {
    let mut server = Server::start(&["--close-timeout", "2"]);
    let readers: Vec<Client> = (0..20).map(|_| server.client()).collect();
    let mut stalled: Vec<RawClient> = (0..20)
        .map(|_| RawClient::non_reader(server.addr))
        .collect();
    let mut talker = server.client();
    for _ in 0..200 {
        talker.send_text(&"y".repeat(8 * 1024));
    }
    let started = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server
        .wait_exit(Duration::from_secs(4))
        .expect("exited within the close timeout and a second");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "exit took {:?}",
        started.elapsed()
    );
    drop(readers);
    stalled.clear();
}
