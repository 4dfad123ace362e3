//! Rooms cannot be used to lock people out (issue 10, item 2): one
//! address holding a connection per room gets only a few rooms, and at
//! the room limit the lobby and every existing room stay open; only
//! *making* a room is ever refused.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::crowd::{idle_user, loopback, try_upgrade};
use common::{Client, Server, TIMEOUT};

/// The status an upgrade to `path` from `127.0.0.<from>` gets (the
/// connection is dropped).
fn status(server: &Server, from: u8, path: &str) -> u16 {
    try_upgrade(server.addr, loopback(from), path).0.status
}

/// Two users chat in `path`, each from its own address: the room works.
fn chat_works_in(server: &Server, path: &str, from: [u8; 2]) {
    let mut a = Client::connect_to(server.addr, loopback(from[0]), path, None);
    let mut b = Client::connect_to(server.addr, loopback(from[1]), path, None);
    let joined = format!("User {} joined", b.port);
    // Earlier chat in the room is replayed first.
    for _ in 0..100 {
        let line = a.next_text();
        if line == joined {
            break;
        }
        assert!(line.contains(": still open?"), "in {path}: {line:?}");
    }
    b.send_text("still open?");
    assert_eq!(a.next_text(), format!("User {}: still open?", b.port));
}

#[test]
fn a_thousand_rooms_from_one_address_lock_nobody_out() {
    // The attack of the issue, with every default: one address opens a
    // cheap connection per room, /r0 to /r999, and holds them.
    let server = Server::start(&[]);
    let started = Instant::now();
    let mut held: Vec<TcpStream> = Vec::new();
    let mut refused = 0;
    for i in 0..1000 {
        let (head, stream) = try_upgrade(server.addr, loopback(1), &format!("/r{i}"));
        match head.status {
            101 => held.push(stream),
            429 => refused += 1,
            other => panic!("/r{i}: status {other}"),
        }
    }
    assert_eq!(held.len(), 10, "--max-rooms-per-ip defaults to 10");
    assert_eq!(refused, 990);
    eprintln!("1000 attempts in {:?}", started.elapsed());

    // Everyone else, the attacker's own address included, still gets in:
    // the lobby by both its paths, and the rooms that exist.
    chat_works_in(&server, "/", [1, 2]);
    chat_works_in(&server, "/lobby", [3, 4]);
    chat_works_in(&server, "/r0", [1, 5]);
    // A new room is refused to the attacker's address only.
    assert_eq!(status(&server, 1, "/fresh"), 429);
    let _fresh = idle_user(server.addr, loopback(2), "/fresh");

    let metrics = server.metrics();
    assert_eq!(
        metrics.count(
            "wschat_handshakes_refused_total{reason=\"too many rooms made from this address\"}"
        ),
        991
    );
    assert_eq!(
        metrics.count("wschat_rooms"),
        12,
        "ten, the lobby and /fresh"
    );

    // Rooms are charged while they exist: once the attacker lets go (no
    // history, so the rooms go at once), its address may make rooms again.
    drop(held);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match try_upgrade(server.addr, loopback(1), "/again") {
            (head, _) if head.status == 101 => break,
            (head, _) => assert_eq!(head.status, 429),
        }
        assert!(Instant::now() < deadline, "the rooms were never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn at_the_room_limit_the_lobby_and_existing_rooms_stay_open() {
    // Many addresses together can fill --max-rooms; then only new rooms
    // are refused. Nobody has joined the lobby yet: it is made past the
    // limit (it is not counted against it).
    let server = Server::start(&["--max-rooms", "6", "--max-rooms-per-ip", "2"]);
    let mut held = Vec::new();
    for from in 2..=4u8 {
        for i in 0..2 {
            held.push(idle_user(
                server.addr,
                loopback(from),
                &format!("/a{from}-{i}"),
            ));
        }
    }
    assert_eq!(status(&server, 5, "/one-too-many"), 503);
    assert_eq!(
        status(&server, 2, "/one-too-many"),
        429,
        "its own limit first"
    );
    chat_works_in(&server, "/", [5, 6]);
    chat_works_in(&server, "/lobby", [7, 8]);
    chat_works_in(&server, "/a3-1", [5, 9]);
    let metrics = server.metrics();
    assert_eq!(
        metrics.count("wschat_handshakes_refused_total{reason=\"too many rooms\"}"),
        1
    );
    assert_eq!(metrics.count("wschat_rooms"), 7, "six and the lobby");
}
