//! Shared helpers for the integration tests: they drive the real `wschat`
//! binary over real sockets on loopback.
//!
//! Every wait here is bounded by [`TIMEOUT`]: a server that stays silent
//! makes a test fail, never hang.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod crowd;
pub mod jwt;
pub mod node;
pub mod tls;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};
use wschat::protocol::client::{self as wsclient, Status};
use wschat::protocol::frame::{self, OpCode};

/// The bound on every single wait: startup, a read, a process exit.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Chat-like text of `len` bytes (compressible as chat is).
pub fn chat_text(len: usize) -> String {
    let words = ["hello", "there", "how", "is", "the", "chat", "today", "ok"];
    let mut out = String::new();
    let mut i = 3usize;
    while out.len() < len {
        out.push_str(words[i % words.len()]);
        out.push(' ');
        i = i.wrapping_mul(7).wrapping_add(5);
    }
    out.truncate(len);
    out
}

/// The Python interpreter with `websockets` installed: `$WSCHAT_PYTHON`,
/// else the venv `.ci/run` makes at `target/py-venv`.
pub fn python() -> std::path::PathBuf {
    std::env::var_os("WSCHAT_PYTHON").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/py-venv/bin/python"),
        std::path::PathBuf::from,
    )
}

/// `node`, with the flag Node 20 and 21 need for the built-in WebSocket
/// (on by default from Node 22). Panics if there is no node.
pub fn node_with_websocket() -> Command {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .expect("node not found: this test needs Node 20.10+");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    let mut command = Command::new("node");
    if version.starts_with("v20.") || version.starts_with("v21.") {
        command.arg("--experimental-websocket");
    }
    command
}

/// A running `wschat` process, killed when dropped.
pub struct Server {
    child: Child,
    /// The address printed on the `wschat listening on ADDR` line.
    pub listen: SocketAddr,
    /// `listen` with a wildcard IP replaced by the loopback address of the
    /// same family: where clients connect.
    pub addr: SocketAddr,
    /// The `wschat listening (TLS) on ADDR` line's address, loopback for
    /// a wildcard, when the server was started with `--tls-listen`.
    pub tls_addr: Option<SocketAddr>,
    /// Everything the server wrote on stderr (its log), for diagnostics.
    log: Arc<Mutex<Vec<u8>>>,
}

impl Server {
    /// Starts the binary listening on `127.0.0.1:0` with `args` added.
    pub fn start(args: &[&str]) -> Server {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::start_raw(&all)
    }

    /// Starts the binary with exactly `args` (pass your own `--listen`).
    pub fn start_raw(args: &[&str]) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wschat"));
        command.args(args);
        Server::start_command(command, args)
    }

    /// Starts `command`, which must end up running the binary (e.g. a
    /// shell that sets a limit and `exec`s it, so that the child's pid is
    /// the server's); `args` are only for messages.
    pub fn start_command(mut command: Command, args: &[&str]) -> Server {
        let mut child = command
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wschat");

        let log = collect(child.stderr.take().expect("stderr piped"));

        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let plain = !args.windows(2).any(|w| w == ["--listen", "none"]);
        let tls = args.contains(&"--tls-listen");
        let (mut listen, mut tls_listen) = (None, None);
        while (plain && listen.is_none()) || (tls && tls_listen.is_none()) {
            let line = match rx.recv_timeout(TIMEOUT) {
                Ok(line) => line,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "no listening line from wschat {args:?} within {TIMEOUT:?} ({e}); log:\n{}",
                        String::from_utf8_lossy(&log.lock().unwrap())
                    );
                }
            };
            let parse = |text: &str| -> SocketAddr {
                text.parse()
                    .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
            };
            if let Some(addr) = line.strip_prefix("wschat listening on ") {
                listen = Some(parse(addr));
            } else if let Some(addr) = line.strip_prefix("wschat listening (TLS) on ") {
                tls_listen = Some(parse(addr));
            } else {
                panic!("unexpected stdout line: {line:?}");
            }
        }
        let Some(listen) = listen.or(tls_listen) else {
            panic!("no listener for {args:?}");
        };
        Server {
            child,
            listen,
            addr: connectable(listen),
            tls_addr: tls_listen.map(connectable),
            log,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    /// Waits up to `limit` for the process to exit; `None` if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// A raw TCP connection with read and write timeouts set.
    pub fn tcp(&self) -> TcpStream {
        tcp(self.addr)
    }

    /// A WebSocket client that completed its handshake.
    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("----- wschat log -----\n{}", self.log());
        }
    }
}

/// `listen` with a wildcard IP replaced by the loopback address of the
/// same family.
fn connectable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// A TCP connection to `addr` with read and write timeouts of [`TIMEOUT`].
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// A tungstenite client over a blocking socket whose reads time out.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    /// The client's local port: the server names the user after it.
    pub port: u16,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = tcp(addr);
        let port = stream.local_addr().unwrap().port();
        let (ws, response) = tungstenite::client(format!("ws://{addr}/"), stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {addr}: {e}"));
        assert_eq!(response.status(), 101);
        Client { ws, port }
    }

    /// A client of `path` (e.g. `/rust?since=3`) offering `protocol`.
    pub fn connect_path(addr: SocketAddr, path: &str, protocol: Option<&str>) -> Client {
        let stream = tcp(addr);
        let port = stream.local_addr().unwrap().port();
        let mut request =
            tungstenite::ClientRequestBuilder::new(format!("ws://{addr}{path}").parse().unwrap());
        if let Some(protocol) = protocol {
            request = request.with_sub_protocol(protocol);
        }
        let (ws, response) = tungstenite::client(request, stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {addr}{path}: {e}"));
        assert_eq!(response.status(), 101);
        Client { ws, port }
    }

    /// A `wschat.v1.json` client of `path`.
    pub fn json(addr: SocketAddr, path: &str) -> Client {
        Client::connect_path(addr, path, Some("wschat.v1.json"))
    }

    /// The next JSON event whose `type` is `kind`, skipping others.
    pub fn next_json_of(&mut self, kind: &str) -> serde_json::Value {
        loop {
            let event = self.next_json();
            if event["type"] == kind {
                return event;
            }
        }
    }

    /// Whether nothing arrives within `wait` (control frames aside).
    pub fn silent_for(&mut self, wait: Duration) -> Result<(), Message> {
        self.ws.get_ref().set_read_timeout(Some(wait)).unwrap();
        let result = loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(message) => break Err(message),
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    break Ok(())
                }
                Err(e) => panic!("client {}: read failed: {e}", self.port),
            }
        };
        self.ws.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
        result
    }

    /// The chat name the server gives this client.
    pub fn name(&self) -> String {
        format!("User {}", self.port)
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("send text from {}: {e}", self.port));
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::binary(bytes.to_vec()))
            .unwrap_or_else(|e| panic!("send binary from {}: {e}", self.port));
    }

    /// The next data or close message; pings and pongs are skipped.
    /// Panics if nothing arrives within [`TIMEOUT`].
    pub fn next(&mut self) -> Message {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            match self.ws.read() {
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(message) => return message,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("client {}: no message within {TIMEOUT:?}", self.port)
                }
                Err(e) => panic!("client {}: read failed: {e}", self.port),
            }
            assert!(
                Instant::now() < deadline,
                "client {}: only control frames for {TIMEOUT:?}",
                self.port
            );
        }
    }

    /// The next message, which must be text.
    pub fn next_text(&mut self) -> String {
        match self.next() {
            Message::Text(text) => text,
            other => panic!("client {}: expected text, got {other:?}", self.port),
        }
    }

    /// The next message, which must be binary.
    pub fn next_binary(&mut self) -> Vec<u8> {
        match self.next() {
            Message::Binary(bytes) => bytes,
            other => panic!("client {}: expected binary, got {other:?}", self.port),
        }
    }

    /// The next message, which must be a Close; returns its code.
    pub fn next_close_code(&mut self) -> u16 {
        match self.next() {
            Message::Close(Some(frame)) => u16::from(frame.code),
            other => panic!(
                "client {}: expected a Close with a code, got {other:?}",
                self.port
            ),
        }
    }

    /// Starts the close handshake with `code`.
    pub fn close(&mut self, code: u16) {
        self.ws
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: "".into(),
            }))
            .unwrap_or_else(|e| panic!("close from {}: {e}", self.port));
    }

    /// After the close handshake: the server must end the TCP connection
    /// (tungstenite reports `ConnectionClosed` on EOF) within [`TIMEOUT`].
    pub fn expect_connection_closed(&mut self) {
        loop {
            match self.ws.read() {
                Err(tungstenite::Error::ConnectionClosed) => return,
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    panic!("client {}: server kept the TCP connection open", self.port)
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    panic!(
                        "client {}: connection reset instead of closed: {e}",
                        self.port
                    )
                }
                Err(e) => panic!("client {}: unexpected error {e}", self.port),
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                Ok(other) => panic!("client {}: unexpected {other:?} after close", self.port),
            }
        }
    }
}

// ----- raw HTTP -----

/// The next server frame on `stream`, read by its length bytes alone: its
/// first byte and payload, whatever its RSV bits (a compressed frame's
/// RSV1 included, which [`RawClient::read_frame`]'s decoder refuses).
pub fn read_raw_frame(stream: &mut impl Read) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).unwrap();
            usize::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).unwrap();
            usize::try_from(u64::from_be_bytes(b)).unwrap()
        }
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

/// The `Sec-WebSocket-Key` of [`upgrade_request`]: RFC 6455 §1.3's example.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A well-formed upgrade request for `/` on `host`, with `extra` header
/// lines (each ending in `\r\n`) before the blank line.
pub fn upgrade_request(host: SocketAddr, extra: &str) -> String {
    let mut out = Vec::new();
    wsclient::write_upgrade_request(&mut out, &host.to_string(), "/", KEY, extra);
    String::from_utf8(out).expect("ASCII request")
}

/// An HTTP response head: status and header lines.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    /// `(name, value)` in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn parse(text: &str) -> Head {
        let mut lines = text.split("\r\n");
        let status_line = lines.next().expect("a status line");
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(
            parts.next(),
            Some("HTTP/1.1"),
            "status line {status_line:?}"
        );
        let status = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (name, value) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                (name.to_string(), value.trim().to_string())
            })
            .collect();
        Head { status, headers }
    }

    /// Every value of the header `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of `name`; panics if it appears more than once.
    pub fn get(&self, name: &str) -> Option<&str> {
        let all = self.all(name);
        assert!(all.len() <= 1, "header {name} repeated: {all:?}");
        all.first().copied()
    }
}

/// Reads a response head (through the blank line) byte by byte, so that
/// nothing after it is consumed.
pub fn read_head(stream: &mut impl Read) -> Head {
    let head = read_head_bytes(stream);
    Head::parse(std::str::from_utf8(&head).expect("UTF-8 head"))
}

fn read_head_bytes(stream: &mut impl Read) -> Vec<u8> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "EOF inside a response head: {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading a response head: {e}; got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 16 * 1024, "response head too long");
    }
    head
}

/// Sends `request` on a fresh connection and reads the whole response,
/// until the server closes the connection. Returns the head and the body.
pub fn http_exchange(addr: SocketAddr, request: &[u8]) -> (Head, String) {
    let mut stream = tcp(addr);
    stream.write_all(request).expect("write request");
    read_response_to_eof(&mut stream)
}

/// Reads a response until EOF (every refusal closes the connection).
pub fn read_response_to_eof(stream: &mut TcpStream) -> (Head, String) {
    let mut bytes = Vec::new();
    if let Err(e) = stream.read_to_end(&mut bytes) {
        panic!(
            "reading a response to EOF: {e}; got {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let text = String::from_utf8(bytes).expect("UTF-8 response");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no blank line in response {text:?}"));
    let head = Head::parse(&format!("{head}\r\n\r\n"));
    if let Some(len) = head.get("Content-Length") {
        assert_eq!(len.parse::<usize>().unwrap(), body.len(), "Content-Length");
    }
    (head, body.to_string())
}

// ----- raw frames -----

/// A client frame: `first` is the FIN/RSV/opcode byte; masked with a fixed
/// non-zero key unless `masked` is false (which breaks §5.3 on purpose:
/// the server must refuse it).
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = Vec::new();
    if masked {
        wsclient::encode_frame_into(&mut out, first, payload, [0x37, 0xfa, 0x21, 0x3d]);
    } else {
        let mut header = [0u8; frame::MAX_SERVER_HEADER_LEN];
        let head = frame::encode_header(true, OpCode::Binary, payload.len(), &mut header);
        out.push(first);
        out.extend_from_slice(&head[1..]);
        out.extend_from_slice(payload);
    }
    out
}

/// A masked, final text frame.
pub fn text_frame(text: &str) -> Vec<u8> {
    frame(0x81, text.as_bytes(), true)
}

/// A raw connection that completed the upgrade; frames are written and
/// read by hand.
pub struct RawClient {
    pub stream: TcpStream,
    pub port: u16,
}

impl RawClient {
    /// A client with a small receive buffer (set before connecting, so the
    /// window it advertises is small from the start) that completes the
    /// upgrade and then never reads: the kernel's buffers fill soon and the
    /// server's queue for it grows.
    pub fn non_reader(addr: SocketAddr) -> RawClient {
        RawClient::non_reader_with_buffer(addr, 4096)
    }

    /// A [`RawClient::non_reader`] whose receive buffer is `bytes` (the
    /// kernel doubles it, within `net.core.rmem_max`): stopped readers of
    /// several sizes fill up at different times.
    pub fn non_reader_with_buffer(addr: SocketAddr, bytes: usize) -> RawClient {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
            .expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), TIMEOUT)
            .expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        RawClient::upgrade(stream, addr)
    }

    pub fn connect(addr: SocketAddr) -> RawClient {
        RawClient::upgrade(tcp(addr), addr)
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write frame");
    }

    /// Reads one server frame: `(first byte, payload)`. It must be one a
    /// client accepts (unmasked, no RSV, a defined opcode, control frames
    /// whole and short). Reads only the frame's bytes.
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let mut header = Vec::with_capacity(frame::MAX_SERVER_HEADER_LEN);
        let len = loop {
            match wsclient::decode_server_header(&header) {
                Ok(Status::Complete(h)) => break h.payload_len,
                Ok(Status::Partial) => {}
                Err(e) => panic!(
                    "raw client {}: bad server frame {header:02x?}: {e}",
                    self.port
                ),
            }
            let mut byte = [0u8; 1];
            self.stream
                .read_exact(&mut byte)
                .unwrap_or_else(|e| panic!("raw client {}: frame header: {e}", self.port));
            header.push(byte[0]);
        };
        let mut payload = vec![0u8; usize::try_from(len).unwrap()];
        self.stream
            .read_exact(&mut payload)
            .unwrap_or_else(|e| panic!("raw client {}: frame payload: {e}", self.port));
        (header[0], payload)
    }

    /// The next frame must be a final Close; returns its code.
    pub fn read_close_code(&mut self) -> u16 {
        let (first, payload) = self.read_frame();
        assert_eq!(
            first, 0x88,
            "expected a Close frame, got payload {payload:?}"
        );
        let code = wsclient::close_code(&payload).expect("Close without a code");
        std::str::from_utf8(&payload[2..]).expect("Close reason must be UTF-8");
        code.0
    }

    /// The server must end the TCP connection (EOF) within [`TIMEOUT`].
    pub fn expect_eof(&mut self) {
        let mut buf = [0u8; 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("raw client {}: {n} more bytes after Close", self.port),
            Err(e) => panic!("raw client {}: expected EOF, got {e}", self.port),
        }
    }
}

// ----- the server process, seen from /proc -----

impl Server {
    /// A field of `/proc/<pid>/status` in kB (e.g. `VmRSS`).
    pub fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in {path}"))
    }

    /// Sends `signal` to the server process (`SIGSTOP`, `SIGHUP`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).unwrap();
        // SAFETY: kill(2) has no memory effects; the pid is our own child,
        // not yet reaped.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    /// The server's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// How many descriptors the server holds (`/proc/<pid>/fd`).
    pub fn fd_count(&self) -> usize {
        let path = format!("/proc/{}/fd", self.pid());
        std::fs::read_dir(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .count()
    }

    /// CPU time the server used so far, user plus system
    /// (`/proc/<pid>/stat` fields 14 and 15).
    pub fn cpu_time(&self) -> Duration {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // The command name may hold spaces: fields are counted after it.
        let (_, rest) = stat.rsplit_once(')').expect("stat has (comm)");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): utime is field 14, stime 15.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no memory effects.
        let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_sec = u64::try_from(per_sec)
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(100);
        Duration::from_millis(ticks * 1000 / per_sec)
    }

    /// `GET path` on a fresh connection; the whole response.
    pub fn get(&self, path: &str) -> (Head, String) {
        http_get(self.addr, path)
    }

    /// Scrapes `GET /metrics`, checks it is well-formed Prometheus text
    /// and returns the samples.
    pub fn metrics(&self) -> Scrape {
        scrape_metrics(self.addr)
    }
}

/// `GET path` to `addr` on a fresh connection; the whole response.
pub fn http_get(addr: SocketAddr, path: &str) -> (Head, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    http_exchange(addr, request.as_bytes())
}

/// Scrapes `GET /metrics` at `addr` (usable from any thread), checks it is
/// well-formed Prometheus text and returns the samples.
pub fn scrape_metrics(addr: SocketAddr) -> Scrape {
    let (head, body) = http_get(addr, "/metrics");
    assert_eq!(head.status, 200, "/metrics status; body {body:?}");
    let content_type = head.get("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "/metrics Content-Type {content_type:?}"
    );
    Scrape::parse(&body).unwrap_or_else(|e| panic!("/metrics is not Prometheus text: {e}\n{body}"))
}

// ----- Prometheus text -----

/// One scrape of `/metrics`: every sample by its series (`name` or
/// `name{labels}` exactly as exposed).
#[derive(Debug, Clone)]
pub struct Scrape {
    pub samples: Vec<(String, f64)>,
    /// `# TYPE` of each metric family.
    pub types: std::collections::HashMap<String, String>,
}

impl Scrape {
    /// Parses the text exposition format 0.0.4, strictly: every sample
    /// line is `name{labels} value` with a numeric value, and every family
    /// has `# HELP` and `# TYPE` lines before its first sample.
    pub fn parse(text: &str) -> Result<Scrape, String> {
        use std::collections::{HashMap, HashSet};
        let mut helps = HashSet::new();
        let mut types = HashMap::new();
        let mut samples = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), Some(_)) => {
                        check_metric_name(name).map_err(|e| format!("line {n}: {e}"))?;
                        if !helps.insert(name.to_string()) {
                            return Err(format!("line {n}: second HELP for {name}"));
                        }
                    }
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        check_metric_name(name).map_err(|e| format!("line {n}: {e}"))?;
                        let kind = kind.trim();
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind)
                        {
                            return Err(format!("line {n}: unknown type {kind:?}"));
                        }
                        if types.insert(name.to_string(), kind.to_string()).is_some() {
                            return Err(format!("line {n}: second TYPE for {name}"));
                        }
                    }
                    _ => {}
                }
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| format!("line {n}: no value in {line:?}"))?;
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .map_err(|_| format!("line {n}: value {v:?} is not a number"))?,
            };
            let name = match series.split_once('{') {
                None => series,
                Some((name, labels)) => {
                    let labels = labels
                        .strip_suffix('}')
                        .ok_or_else(|| format!("line {n}: unterminated labels in {line:?}"))?;
                    check_labels(labels).map_err(|e| format!("line {n}: {e}"))?;
                    name
                }
            };
            check_metric_name(name).map_err(|e| format!("line {n}: {e}"))?;
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .find(|f| types.contains_key(*f))
                .unwrap_or(name);
            if !types.contains_key(family) || !helps.contains(family) {
                return Err(format!(
                    "line {n}: sample of {name} without # HELP and # TYPE before it"
                ));
            }
            samples.push((series.to_string(), value));
        }
        Ok(Scrape { samples, types })
    }

    /// The value of `series` (`name` or `name{labels}` as exposed), if any.
    pub fn value(&self, series: &str) -> Option<f64> {
        self.samples
            .iter()
            .find(|(s, _)| s == series)
            .map(|&(_, v)| v)
    }

    /// The value of `series`; panics if it is missing.
    pub fn get(&self, series: &str) -> f64 {
        self.value(series)
            .unwrap_or_else(|| panic!("no {series} in /metrics: {:?}", self.samples))
    }

    /// The value of `series` as a count.
    pub fn count(&self, series: &str) -> u64 {
        let v = self.get(series);
        assert!(
            v >= 0.0 && v.fract() == 0.0,
            "{series} = {v} is not a count"
        );
        v as u64
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        });
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

/// `key="value",...` with `\\`, `\"` and `\n` escapes in values.
fn check_labels(labels: &str) -> Result<(), String> {
    let mut rest = labels;
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("bad labels {labels:?}"))?;
        check_metric_name(key).map_err(|_| format!("bad label name {key:?}"))?;
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated label value in {labels:?}")),
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\' | '"' | 'n')) => {}
                    _ => return Err(format!("bad escape in {labels:?}")),
                },
                Some((i, '"')) => break i,
                Some(_) => {}
            }
        };
        rest = &after[end + 1..];
        if let Some(more) = rest.strip_prefix(',') {
            rest = more;
        } else if !rest.is_empty() {
            return Err(format!("junk after a label value in {labels:?}"));
        }
    }
    Ok(())
}

// ----- more raw-frame helpers -----

/// A masked Close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(0x88, &payload, true)
}

/// A masked frame *header* (no payload follows) declaring `len` bytes with
/// the 64-bit length form, whatever `len` is.
pub fn header_64(first: u8, len: u64) -> Vec<u8> {
    let mut out = vec![first, 0x80 | 127];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0x37, 0xfa, 0x21, 0x3d]);
    out
}

impl RawClient {
    /// Completes the upgrade on an already connected `stream` (e.g. one
    /// with socket options set before connecting): a `101` with the right
    /// `Sec-WebSocket-Accept`.
    pub fn upgrade(mut stream: TcpStream, addr: SocketAddr) -> RawClient {
        let port = stream.local_addr().unwrap().port();
        stream
            .write_all(upgrade_request(addr, "").as_bytes())
            .unwrap();
        let head = read_head_bytes(&mut stream);
        assert_eq!(
            wsclient::check_upgrade_response(&head, KEY),
            Ok(Status::Complete(head.len())),
            "upgrade refused: {}",
            String::from_utf8_lossy(&head)
        );
        RawClient { stream, port }
    }

    /// Reads frames until a Close, within [`TIMEOUT`] in all. Returns the
    /// frames before it (`(first byte, payload)`: chat traffic from the
    /// room) and the Close's code.
    pub fn read_until_close(&mut self) -> (Vec<(u8, Vec<u8>)>, u16) {
        let deadline = Instant::now() + TIMEOUT;
        let mut before = Vec::new();
        loop {
            let (first, payload) = self.read_frame();
            if first & 0x0F == 0x8 {
                assert_eq!(first, 0x88, "Close frame with FIN/RSV bits {first:#x}");
                let code = wsclient::close_code(&payload).expect("Close without a code");
                std::str::from_utf8(&payload[2..]).expect("Close reason must be UTF-8");
                return (before, code.0);
            }
            before.push((first, payload));
            assert!(
                Instant::now() < deadline,
                "raw client {}: no Close within {TIMEOUT:?}",
                self.port
            );
        }
    }
}

// ----- two users chatting in the background -----

/// Two well-behaved tungstenite users exchanging numbered messages on a
/// thread of their own, in lock step: each message is awaited by its
/// recipient before the next is sent, so every message is checked to
/// arrive, in order. Anything else they receive is recorded.
pub struct Chatters {
    stop: Arc<std::sync::atomic::AtomicBool>,
    rounds: Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<thread::JoinHandle<ChatLog>>,
    /// The two users' ports (their chat names).
    pub ports: [u16; 2],
}

/// What the chatters saw.
#[derive(Debug)]
pub struct ChatLog {
    /// Rounds completed; each round both users sent one message and the
    /// other received it.
    pub rounds: usize,
    /// Per user, in order, every text that was not the partner's expected
    /// next message (joins, leaves, ...).
    pub foreign: [Vec<String>; 2],
}

impl Chatters {
    /// Connects two users and starts them chatting, one round per
    /// `period` (mind `--max-message-rate`: each user sends one message a
    /// round).
    pub fn start(server: &Server, period: Duration) -> Chatters {
        let mut a = server.client();
        let b = server.client();
        assert_eq!(a.next_text(), format!("User {} joined", b.port));
        let ports = [a.port, b.port];
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop2, rounds2) = (Arc::clone(&stop), Arc::clone(&rounds));
        let handle = thread::spawn(move || {
            use std::sync::atomic::Ordering::SeqCst;
            let mut users = [a, b];
            let mut foreign: [Vec<String>; 2] = [Vec::new(), Vec::new()];
            let mut round = 0;
            loop {
                let last = stop2.load(SeqCst);
                for from in 0..2 {
                    let to = 1 - from;
                    let text = format!("round {round} from {from}");
                    users[from].send_text(&text);
                    let prefix = format!("User {}: ", users[from].port);
                    let expected = format!("{prefix}{text}");
                    loop {
                        let got = users[to].next_text();
                        if got == expected {
                            break;
                        }
                        assert!(
                            !got.starts_with(&prefix),
                            "user {to} got {got:?} while waiting for {expected:?}"
                        );
                        foreign[to].push(got);
                    }
                }
                round += 1;
                rounds2.store(round, SeqCst);
                if last {
                    return ChatLog {
                        rounds: round,
                        foreign,
                    };
                }
                thread::sleep(period);
            }
        });
        Chatters {
            stop,
            rounds,
            handle: Some(handle),
            ports,
        }
    }

    /// Rounds completed so far.
    pub fn rounds(&self) -> usize {
        self.rounds.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Panics (with the chatters' own failure) if they stopped.
    pub fn check_alive(&mut self) {
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            let result = self.handle.take().unwrap().join();
            match result {
                Err(panic) => panic!("the chatters failed: {}", panic_text(&panic)),
                Ok(log) => panic!("the chatters stopped early: {log:?}"),
            }
        }
    }

    /// Waits until `more` further rounds are done (the server still
    /// relays promptly), at most `limit`.
    pub fn wait_rounds(&mut self, more: usize, limit: Duration) {
        let target = self.rounds() + more;
        let deadline = Instant::now() + limit;
        while self.rounds() < target {
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "the chatters did {} of {more} rounds in {limit:?}",
                more + self.rounds() - target
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops after one last round and returns what they saw.
    pub fn finish(mut self) -> ChatLog {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let handle = self.handle.take().expect("running");
        match handle.join() {
            Ok(log) => log,
            Err(panic) => panic!("the chatters failed: {}", panic_text(&panic)),
        }
    }
}

impl Drop for Chatters {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-text panic)".into())
}

/// Reads `source` to its end on a thread of its own, keeping every byte;
/// the buffer can be looked at any time (a child's stderr, for a report).
pub fn collect(mut source: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = source.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    log
}
