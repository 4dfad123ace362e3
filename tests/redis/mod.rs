//! Helpers for driving `wschat::cluster::link` against a real
//! `redis-server`: a server of the test's own on a free loopback port, and
//! a small `mio` loop that owns the sockets the links ask for (what the
//! server's loop will do once this is wired in). Shared by
//! tests/redis_link.rs and examples/redis_publish_rate.rs.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream as StdStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wschat::cluster::link::{Event, Link};

/// A `redis-server` of our own: loopback only, nothing saved to disk.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one on a free port. Panics, naming the package, if there is
    /// no `redis-server`: a test that needs it must not pass without it.
    pub fn start(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = RedisServer::try_start(port, extra) {
                return server;
            }
        }
        panic!("redis-server would not start on a free port");
    }

    fn try_start(port: u16, extra: &[&str]) -> Option<RedisServer> {
        let dir = std::env::temp_dir().join(format!("wschat-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        server.spawn().then_some(server)
    }

    /// Starts it again on the same port (after [`RedisServer::kill`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server would not restart on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut args = vec![
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let child = Command::new("redis-server")
            .args(&args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot run redis-server ({e}): install Debian's redis-server \
                 (apt-get install redis-server)"
            ),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // e.g. the port was taken meanwhile
            }
            if answers(self.port) {
                self.child = Some(child);
                return true;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no goodbye to the clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`SIGSTOP`, `SIGCONT`) to this redis-server, which
    /// the test started and has not reaped.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = self.pid().expect("redis-server is running");
        let pid = libc::pid_t::try_from(pid).expect("a pid");
        // SAFETY: kill(2) has no memory effects; the pid is our own child,
        // not yet reaped (kill() reaps it and takes `child`).
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().unwrap().port()
}

/// Whether something on `port` answers `PING` with a RESP reply (`+PONG`,
/// or `-NOAUTH` when a password is required).
fn answers(port: u16) -> bool {
    let Ok(mut s) = StdStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(1) if b[0] == b'+' || b[0] == b'-')
}

struct Conn<T> {
    link: Link<T>,
    addr: SocketAddr,
    sock: Option<TcpStream>,
    connected: bool,
}

/// Links and their sockets in one `mio` poll: each link's token is its
/// index.
pub struct Net<T> {
    poll: Poll,
    events: Events,
    conns: Vec<Conn<T>>,
    buf: Vec<u8>,
}

impl<T> Net<T> {
    pub fn new() -> Net<T> {
        Net {
            poll: Poll::new().expect("a mio poll"),
            events: Events::with_capacity(64),
            conns: Vec::new(),
            buf: vec![0; 256 * 1024],
        }
    }

    /// Adds a link that connects to `addr`; returns its index.
    pub fn add(&mut self, link: Link<T>, addr: SocketAddr) -> usize {
        self.conns.push(Conn {
            link,
            addr,
            sock: None,
            connected: false,
        });
        self.conns.len() - 1
    }

    pub fn link(&mut self, i: usize) -> &mut Link<T> {
        &mut self.conns[i].link
    }

    /// One pass: timeouts, the links' events (acting on Connect and
    /// Disconnected), writes, then waiting up to `wait` for the sockets
    /// and feeding what they say. Events go to `out` as (index, event).
    pub fn step(&mut self, wait: Duration, out: &mut Vec<(usize, Event<T>)>) {
        let now = Instant::now();
        for conn in &mut self.conns {
            if conn.link.poll_timeout().is_some_and(|t| t <= now) {
                conn.link.handle_timeout(now);
            }
        }
        self.drain_events(out);
        for conn in &mut self.conns {
            if conn.connected {
                write_out(conn);
            }
        }
        self.drain_events(out);
        let now = Instant::now();
        let mut wait = wait;
        for conn in &self.conns {
            if let Some(t) = conn.link.poll_timeout() {
                wait = wait.min(t.saturating_duration_since(now));
            }
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
        }
        let now = Instant::now();
        let ready: Vec<usize> = self.events.iter().map(|e| e.token().0).collect();
        for i in ready {
            let Some(conn) = self.conns.get_mut(i) else {
                continue;
            };
            let Some(sock) = conn.sock.as_mut() else {
                continue;
            };
            if !conn.connected {
                match sock.take_error() {
                    Ok(None) if sock.peer_addr().is_ok() => {
                        conn.connected = true;
                        let _ = sock.set_nodelay(true);
                        conn.link.on_connected(now);
                    }
                    Ok(None) => continue, // not yet
                    Ok(Some(e)) | Err(e) => {
                        conn.link.on_error(now, e.kind());
                        continue;
                    }
                }
            }
            // Bytes read after the link gave up on this socket are
            // ignored by it; the socket goes when its Disconnected event
            // is handled.
            while let Some(sock) = conn.sock.as_mut() {
                match sock.read(&mut self.buf) {
                    Ok(0) => {
                        conn.link.on_eof(now);
                        break;
                    }
                    Ok(n) => conn.link.on_input(now, &self.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        conn.link.on_error(now, e.kind());
                        break;
                    }
                }
            }
        }
        self.drain_events(out);
    }

    fn drain_events(&mut self, out: &mut Vec<(usize, Event<T>)>) {
        for (i, conn) in self.conns.iter_mut().enumerate() {
            while let Some(event) = conn.link.poll_event() {
                match &event {
                    Event::Connect => {
                        conn.connected = false;
                        match TcpStream::connect(conn.addr) {
                            Ok(mut sock) => {
                                self.poll
                                    .registry()
                                    .register(
                                        &mut sock,
                                        Token(i),
                                        Interest::READABLE | Interest::WRITABLE,
                                    )
                                    .expect("register");
                                conn.sock = Some(sock);
                            }
                            Err(e) => conn.link.on_error(Instant::now(), e.kind()),
                        }
                    }
                    Event::Disconnected { .. } => {
                        if let Some(mut sock) = conn.sock.take() {
                            let _ = self.poll.registry().deregister(&mut sock);
                        }
                        conn.connected = false;
                    }
                    _ => {}
                }
                out.push((i, event));
            }
        }
    }

    /// Steps until `stop` is true of an event, or panics after `timeout`
    /// with what was seen. Returns every event seen, the last one included.
    pub fn run_until(
        &mut self,
        timeout: Duration,
        mut stop: impl FnMut(usize, &Event<T>) -> bool,
    ) -> Vec<(usize, Event<T>)>
    where
        T: std::fmt::Debug,
    {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut batch = Vec::new();
        loop {
            self.step(Duration::from_millis(10), &mut batch);
            let mut events = std::mem::take(&mut batch).into_iter();
            while let Some((i, event)) = events.next() {
                let done = stop(i, &event);
                seen.push((i, event));
                if done {
                    // The rest of this pass's events are in no link any
                    // more: keep them too.
                    seen.extend(events);
                    return seen;
                }
            }
            assert!(Instant::now() < deadline, "timed out; saw {seen:#?}");
        }
    }

    /// Steps for `time`, returning what was seen.
    pub fn run_for(&mut self, time: Duration) -> Vec<(usize, Event<T>)> {
        let deadline = Instant::now() + time;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            self.step(Duration::from_millis(10), &mut seen);
        }
        seen
    }
}

impl<T> Default for Net<T> {
    fn default() -> Self {
        Net::new()
    }
}

fn write_out<T>(conn: &mut Conn<T>) {
    let now = Instant::now();
    while !conn.link.output().is_empty() {
        let Some(sock) = conn.sock.as_mut() else {
            return;
        };
        match sock.write(conn.link.output()) {
            Ok(n) => conn.link.advance_output(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                conn.link.on_error(now, e.kind());
                return;
            }
        }
    }
}
