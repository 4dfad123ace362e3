//! Shared helpers for the integration tests: they drive the real `wschat`
//! binary over real sockets on loopback.
//!
//! Every wait here is bounded by [`TIMEOUT`]: a server that stays silent
//! makes a test fail, never hang.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

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

/// The bound on every single wait: startup, a read, a process exit.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// A running `wschat` process, killed when dropped.
pub struct Server {
    child: Child,
    /// The address printed on the `wschat listening on ADDR` line.
    pub listen: SocketAddr,
    /// `listen` with a wildcard IP replaced by the loopback address of the
    /// same family: where clients connect.
    pub addr: SocketAddr,
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_wschat"))
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wschat");

        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });

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
        let listen: SocketAddr = line
            .strip_prefix("wschat listening on ")
            .unwrap_or_else(|| panic!("unexpected first stdout line: {line:?}"))
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Server {
            child,
            listen,
            addr: SocketAddr::new(ip, listen.port()),
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

/// A well-formed upgrade request for `host`, with `extra` header lines
/// (each ending in `\r\n`) before the blank line.
pub fn upgrade_request(host: SocketAddr, extra: &str) -> String {
    format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
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
pub fn read_head(stream: &mut TcpStream) -> Head {
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
    Head::parse(std::str::from_utf8(&head).expect("UTF-8 head"))
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
/// non-zero key unless `masked` is false.
pub fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
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
    pub fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = tcp(addr);
        let port = stream.local_addr().unwrap().port();
        stream
            .write_all(upgrade_request(addr, "").as_bytes())
            .unwrap();
        let head = read_head(&mut stream);
        assert_eq!(head.status, 101, "upgrade refused: {head:?}");
        RawClient { stream, port }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write frame");
    }

    /// Reads one server frame: `(first byte, payload)`. Server frames must
    /// not be masked.
    pub fn read_frame(&mut self) -> (u8, Vec<u8>) {
        let mut header = [0u8; 2];
        self.stream
            .read_exact(&mut header)
            .unwrap_or_else(|e| panic!("raw client {}: frame header: {e}", self.port));
        assert_eq!(header[1] & 0x80, 0, "server frames must not be masked");
        let len = match header[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.stream.read_exact(&mut b).unwrap();
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.stream.read_exact(&mut b).unwrap();
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
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
        assert!(payload.len() >= 2, "Close without a code");
        std::str::from_utf8(&payload[2..]).expect("Close reason must be UTF-8");
        u16::from_be_bytes([payload[0], payload[1]])
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
