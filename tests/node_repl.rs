//! The seed's flow with real Node: two interactive REPLs each type
//!
//! ```js
//! let ws = new WebSocket("ws://localhost:PORT")
//! ws.onmessage = message => console.log(`${message.data}`)
//! ws.send("...")
//! ```
//!
//! and see each other's joins and messages. `localhost` may resolve to
//! `::1` or `127.0.0.1`, so the server listens dual-stack on `[::]:0`.
//!
//! Needs `node` 20.10+ (the first with a WebSocket client, behind
//! `--experimental-websocket` until 22), so plain `cargo test` skips it as
//! ignored; `cargo test -- --include-ignored` (what `scripts/test.sh` runs)
//! runs it, and then a missing or too old Node fails it.

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use common::node::{required_flag, websocket_flag};
use common::{Client, Server, TIMEOUT};

/// An interactive `node` REPL fed through its stdin.
struct Repl {
    name: &'static str,
    child: Child,
    stdin: ChildStdin,
    chunks: Receiver<String>,
    /// Everything printed on stdout so far.
    out: String,
    err: Arc<Mutex<Vec<u8>>>,
}

impl Repl {
    fn start(name: &'static str, flag: Option<&str>) -> Repl {
        let mut child = Command::new("node")
            .args(flag)
            .arg("-i")
            .env("NODE_NO_WARNINGS", "1")
            .env_remove("NODE_OPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node -i");
        let stdin = child.stdin.take().unwrap();

        let mut stdout = child.stdout.take().unwrap();
        let (tx, chunks) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0
                    || tx
                        .send(String::from_utf8_lossy(&buf[..n]).into_owned())
                        .is_err()
                {
                    break;
                }
            }
        });
        let err = common::collect(child.stderr.take().unwrap());
        Repl {
            name,
            child,
            stdin,
            chunks,
            out: String::new(),
            err,
        }
    }

    /// Types one statement.
    fn type_line(&mut self, statement: &str) {
        writeln!(self.stdin, "{statement}").expect("write to node's stdin");
        self.stdin.flush().unwrap();
    }

    /// Whether some output line, prompts (`> `) aside, is exactly `line`.
    fn printed(&self, line: &str) -> bool {
        self.out.lines().any(|l| {
            let mut l = l;
            while let Some(rest) = l.strip_prefix("> ") {
                l = rest;
            }
            l == line
        })
    }

    /// Waits up to [`TIMEOUT`] for the REPL to print `line`.
    fn wait_for_line(&mut self, line: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.printed(line) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.out.push_str(&chunk),
                Err(e) => panic!(
                    "node REPL {} did not print {line:?} within {TIMEOUT:?} ({e}).\n\
                     stdout:\n{}\nstderr:\n{}",
                    self.name,
                    self.out,
                    String::from_utf8_lossy(&self.err.lock().unwrap())
                ),
            }
        }
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A REPL that typed the seed's two lines against `port`, and its port
/// as the server announced it to `observer`.
fn seed_repl(
    name: &'static str,
    flag: Option<&str>,
    port: u16,
    observer: &mut Client,
) -> (Repl, u16) {
    let mut repl = Repl::start(name, flag);
    repl.type_line(&format!(
        "let ws = new WebSocket(\"ws://localhost:{port}\")"
    ));
    repl.type_line("ws.onmessage = message => console.log(`${message.data}`)");
    repl.wait_for_line("[Function (anonymous)]");
    let joined = joined_port(&observer.next_text());
    (repl, joined)
}

/// The port in an announcement `User <port> joined`.
fn joined_port(announcement: &str) -> u16 {
    announcement
        .strip_prefix("User ")
        .and_then(|s| s.strip_suffix(" joined"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a join announcement: {announcement:?}"))
}

#[test]
fn websocket_flag_follows_node_versions() {
    assert_eq!(websocket_flag("v24.1.0"), Ok(None));
    assert_eq!(websocket_flag("v22.0.0\n"), Ok(None));
    let flag = Ok(Some("--experimental-websocket"));
    assert_eq!(websocket_flag("v21.0.0"), flag);
    assert_eq!(websocket_flag("v20.20.2"), flag);
    assert_eq!(websocket_flag("v20.10.0"), flag);
    for old in ["v20.9.0", "v18.19.1", "v8.0.0"] {
        let err = websocket_flag(old).unwrap_err();
        assert!(err.contains("needs Node 20.10+"), "{old}: {err}");
    }
    for junk in ["", "v", "node", "v22", "vx.y.z"] {
        assert!(websocket_flag(junk).is_err(), "{junk:?}");
    }
}

#[test]
#[ignore = "needs Node 20.10+ as `node`; run with `cargo test -- --include-ignored`"]
fn two_node_repls_chat_through_localhost() {
    // Run, this test fails without what it needs: it is never skipped silently.
    let flag = required_flag();

    let server = Server::start_raw(&["--listen", "[::]:0"]);
    let port = server.port();
    // A Rust user in the room tells us, through the server's own
    // announcements, the port (name) of each Node client.
    let mut observer = Client::connect(server.addr);

    let (mut first, first_port) = seed_repl("first", flag, port, &mut observer);
    let (mut second, second_port) = seed_repl("second", flag, port, &mut observer);
    assert_ne!(first_port, second_port);

    // The first sees the second join.
    first.wait_for_line(&format!("User {second_port} joined"));

    // The first speaks; the second (and the observer) hear it.
    first.type_line("ws.send(\"hello from node\")");
    let heard = format!("User {first_port}: hello from node");
    second.wait_for_line(&heard);
    assert_eq!(observer.next_text(), heard);

    // And back.
    second.type_line("ws.send(\"héllo back 🎉\")");
    let heard = format!("User {second_port}: héllo back 🎉");
    first.wait_for_line(&heard);
    assert_eq!(observer.next_text(), heard);

    // The first never printed its own message.
    assert!(
        !first.printed(&format!("User {first_port}: hello from node")),
        "the sender got its own message back:\n{}",
        first.out
    );
}

#[test]
#[ignore = "needs Node 20.10+ as `node`; run with `cargo test -- --include-ignored`"]
fn a_node_repl_cannot_forge_lines_or_send_terminal_escapes() {
    let flag = required_flag();
    let server = Server::start_raw(&["--listen", "[::]:0"]);
    let port = server.port();
    let mut observer = Client::connect(server.addr);

    let (mut mallory, mallory_port) = seed_repl("mallory", flag, port, &mut observer);
    let (mut victim, victim_port) = seed_repl("victim", flag, port, &mut observer);
    mallory.wait_for_line(&format!("User {victim_port} joined"));

    // The forging string, typed exactly as a user would.
    mallory.type_line(r#"ws.send("ok\nUser 51954: I am definitely not bob")"#);
    victim.wait_for_line(&format!("User {mallory_port}: ok"));
    victim.wait_for_line("  | User 51954: I am definitely not bob");
    assert!(
        !victim.printed("User 51954: I am definitely not bob"),
        "a forged line reached the victim:\n{}",
        victim.out
    );

    // Terminal escapes: clear the screen, set the title, ring the bell.
    mallory.type_line(r#"ws.send("\x1b[2J\x1b]0;pwned\x07")"#);
    let shown = format!("User {mallory_port}: \u{FFFD}[2J\u{FFFD}]0;pwned\u{FFFD}");
    victim.wait_for_line(&shown);
    assert!(
        !victim.out.contains('\u{1b}') && !victim.out.contains('\u{7}'),
        "an escape reached the victim's terminal: {:?}",
        victim.out
    );

    // Ordinary text is the seed's, byte for byte.
    mallory.type_line("ws.send(\"Your message here..\")");
    victim.wait_for_line(&format!("User {mallory_port}: Your message here.."));
}
