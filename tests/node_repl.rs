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

mod common;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use common::{Client, Server, TIMEOUT};

/// `node`'s major version, or `None` if it cannot be run.
fn node_major() -> Option<u32> {
    let output = Command::new("node").arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    let version = String::from_utf8_lossy(&output.stdout);
    version
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()?
        .parse()
        .ok()
}

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
    fn start(name: &'static str, major: u32) -> Repl {
        let mut command = Command::new("node");
        if major < 22 {
            // WebSocket became a default global in Node 22.
            command.arg("--experimental-websocket");
        }
        let mut child = command
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

/// The port in an announcement `User <port> joined`.
fn joined_port(announcement: &str) -> u16 {
    announcement
        .strip_prefix("User ")
        .and_then(|s| s.strip_suffix(" joined"))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a join announcement: {announcement:?}"))
}

#[test]
fn two_node_repls_chat_through_localhost() {
    let Some(major) = node_major() else {
        eprintln!("SKIPPED: `node --version` could not be run; this test needs Node.js");
        return;
    };

    let server = Server::start_raw(&["--listen", "[::]:0"]);
    let port = server.port();
    // A Rust user in the room tells us, through the server's own
    // announcements, the port (name) of each Node client.
    let mut observer = Client::connect(server.addr);

    let seed_connect = format!("let ws = new WebSocket(\"ws://localhost:{port}\")");
    let seed_onmessage = "ws.onmessage = message => console.log(`${message.data}`)";

    let mut first = Repl::start("first", major);
    first.type_line(&seed_connect);
    first.type_line(seed_onmessage);
    first.wait_for_line("[Function (anonymous)]");
    let first_port = joined_port(&observer.next_text());

    let mut second = Repl::start("second", major);
    second.type_line(&seed_connect);
    second.type_line(seed_onmessage);
    second.wait_for_line("[Function (anonymous)]");
    let second_port = joined_port(&observer.next_text());
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
