//! SIGTERM: every user gets Close 1001 (going away) and the process exits
//! with status 0.

mod common;

use std::time::{Duration, Instant};

use common::Server;

fn sigterm(server: &Server) {
    let pid = libc::pid_t::try_from(server.pid()).unwrap();
    // SAFETY: kill(2) with a valid signal number has no memory effects;
    // the pid is our own child, which has not been reaped yet.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
}

#[test]
fn sigterm_closes_every_user_with_1001_and_exits_0() {
    let mut server = Server::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    assert_eq!(a.next_text(), format!("User {} joined", b.port));

    sigterm(&server);

    // Both get Close 1001; tungstenite answers it, which lets the server
    // finish each close handshake and stop.
    assert_eq!(a.next_close_code(), 1001);
    assert_eq!(b.next_close_code(), 1001);
    a.expect_connection_closed();
    b.expect_connection_closed();
    // The server half-closed and lingers until the clients close theirs.
    drop(a);
    drop(b);

    let status = server
        .wait_exit(Duration::from_secs(3))
        .expect("wschat still running 3 s after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn shutdown_does_not_wait_past_the_close_timeout() {
    let mut server = Server::start(&["--close-timeout", "1"]);
    // This user never reads, so never answers the server's Close.
    let mut mute = server.client();
    let mut other = server.client();
    assert_eq!(mute.next_text(), format!("User {} joined", other.port));

    let started = Instant::now();
    sigterm(&server);
    assert_eq!(other.next_close_code(), 1001);
    other.expect_connection_closed();
    drop(other);

    let status = server
        .wait_exit(Duration::from_secs(4))
        .expect("wschat still running 4 s after SIGTERM with --close-timeout 1");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "exited after {:?}, before the close timeout, with a user still closing",
        started.elapsed()
    );
    drop(mute);
}
