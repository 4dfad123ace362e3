//! Running out of file descriptors (EMFILE) before `--max-connections`:
//! connections over the limit are refused with 503 through the reserve
//! descriptor (or, at worst, wait in the backlog); the server neither
//! hangs nor spins on the error, and recovers once descriptors free up.

mod common;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{read_response_to_eof, Server, TIMEOUT};

/// The descriptor limit the server runs under, and how many connections
/// the test opens: more than fit.
const LIMIT: usize = 64;
const CONNECTIONS: usize = 80;

/// Starts the server under `ulimit -n 64`, with a connection limit far
/// above it (and, since `--max-connections` is given, the server does not
/// raise its descriptor limit).
fn start_limited() -> Server {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {LIMIT} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_wschat"))
        .args(["--listen", "127.0.0.1:0", "--max-connections", "1000"]);
    let server = Server::start_command(command, &["(ulimit -n 64)", "--max-connections", "1000"]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/<pid>/limits");
    let soft: usize = open_files
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .expect("a numeric soft limit");
    assert_eq!(soft, LIMIT, "the server's descriptor limit: {open_files}");
    server
}

/// What became of a connection the test made and wrote nothing on.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    /// Answered 503, then EOF.
    Refused,
    /// Nothing yet: accepted and waiting for a request, or in the backlog.
    Held,
}

fn fate(stream: &mut TcpStream) -> Fate {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let peeked = stream.peek(&mut byte);
    stream.set_nonblocking(false).unwrap();
    match peeked {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Fate::Held,
        Ok(n) if n > 0 => {
            let (head, body) = read_response_to_eof(stream);
            assert_eq!(head.status, 503, "over the limit: {head:?} {body:?}");
            Fate::Refused
        }
        other => panic!("a connection ended without an answer: {other:?}"),
    }
}

/// The numbers of the descriptors the process `pid` holds.
fn descriptors(pid: u32) -> Vec<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

#[test]
fn out_of_descriptors_refuses_with_503_and_recovers_without_spinning() {
    let server = start_limited();
    // Descriptors inherited from whoever runs the test may sit above the
    // limit (a make jobserver's pipe, say): only those below it count.
    let own = descriptors(server.pid());
    let low = own.iter().filter(|&&fd| fd < LIMIT).count();
    assert!(low < LIMIT / 2, "the server holds {own:?} at rest");
    let free = LIMIT - low;
    let full = own.len() + free;

    // Connect, sending nothing (so no unread request turns a refusal's
    // close into a reset).
    let mut conns: Vec<TcpStream> = (0..CONNECTIONS).map(|_| server.tcp()).collect();
    // Let the server take them all in; a refusal is answered at accept.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.fd_count() < full && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    thread::sleep(Duration::from_millis(100));
    assert_eq!(
        server.fd_count(),
        full,
        "every descriptor below {LIMIT} in use"
    );

    // Every connection is refused with 503 (`fate` checks the status) or
    // held, never ended without an answer. The free descriptors' worth
    // are accepted (and wait for a request); every other one is refused
    // through the reserve descriptor rather than left in the backlog.
    // (Answers may still be on their way: look again, briefly.)
    let mut fates: Vec<Fate> = conns.iter_mut().map(fate).collect();
    let over = CONNECTIONS.saturating_sub(free);
    let deadline = Instant::now() + Duration::from_secs(2);
    let refused = loop {
        let refused = fates.iter().filter(|f| **f == Fate::Refused).count();
        if refused >= over || Instant::now() >= deadline {
            break refused;
        }
        thread::sleep(Duration::from_millis(20));
        for (conn, fate_now) in conns.iter_mut().zip(fates.iter_mut()) {
            if *fate_now == Fate::Held {
                *fate_now = fate(conn);
            }
        }
    };
    assert_eq!(
        refused, over,
        "{refused} of {CONNECTIONS} connections refused with {free} descriptors free: {fates:?}"
    );

    // Over the limit, the server idles: no busy loop on EMFILE. New
    // connections keep being refused promptly meanwhile.
    let cpu_before = server.cpu_time();
    let window = Instant::now();
    let mut late_refused = 0;
    while window.elapsed() < Duration::from_secs(2) {
        let mut late = server.tcp();
        late.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let started = Instant::now();
        let (head, _) = read_response_to_eof(&mut late);
        assert_eq!(head.status, 503, "a connection while full");
        assert!(started.elapsed() < Duration::from_secs(1));
        late_refused += 1;
        thread::sleep(Duration::from_millis(200));
    }
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    assert!(
        cpu < Duration::from_secs(1),
        "the server used {cpu:?} of CPU in 2 s while out of descriptors"
    );
    assert!(late_refused >= 5);

    // Closing some held connections frees descriptors: /healthz answers.
    let mut closed = 0;
    let mut kept = Vec::new();
    for (conn, fate) in conns.into_iter().zip(&fates) {
        if *fate == Fate::Held && closed < 10 {
            drop(conn);
            closed += 1;
        } else {
            kept.push(conn);
        }
    }
    assert_eq!(closed, 10);
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (head, body) = server.get("/healthz");
        if head.status == 200 {
            assert_eq!(body.trim_end(), "ok");
            break;
        }
        assert_eq!(head.status, 503, "/healthz while full");
        assert!(
            Instant::now() < deadline,
            "/healthz still refused {TIMEOUT:?} after closing 10 connections"
        );
        thread::sleep(Duration::from_millis(20));
    }
    // And WebSocket users can join again and chat.
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));
    b.send_text("room again");
    assert_eq!(a.next_text(), format!("User {}: room again", b.port));
    let metrics = server.metrics();
    assert!(
        metrics.count("wschat_handshakes_refused_total{reason=\"out of file descriptors\"}")
            >= (refused + late_refused) as u64
    );
    drop(kept);
}
