//! One load client: a non-blocking TCP connection taken through connect,
//! the opening handshake, the open state and the closing handshake, with
//! its own output buffer and frame decoder.
//!
//! The client knows nothing about load: complete text and binary
//! messages go to a callback, pings are answered, a server Close is
//! echoed. The runner watches [`State`] before and after each call to
//! keep its counts.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;

use mio::event::Event;
use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};
use wschat::protocol::client::{
    check_upgrade_response, close_code, encode_message_into, key_from_nonce, write_upgrade_request,
    Decoder, Received, Status,
};
use wschat::protocol::frame::{CloseCode, OpCode};

use crate::rng::XorShift64;

/// The largest message or frame accepted from a server.
const MAX_MESSAGE: usize = 64 << 20;

/// Output buffers above this are released once drained.
const KEEP_CAPACITY: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for the `101` head.
    Handshaking,
    Open,
    /// A Close frame was sent or received; waiting for the server to
    /// close the TCP connection.
    Closing,
    /// Finished, failed or dropped: the runner removes it.
    Dead,
}

impl State {
    /// Still connecting or handshaking.
    pub fn is_pending(self) -> bool {
        matches!(self, State::Connecting | State::Handshaking)
    }

    /// Got through the handshake, whatever happened after.
    pub fn is_established(self) -> bool {
        matches!(self, State::Open | State::Closing)
    }
}

/// Where to connect and what to put in the request.
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    pub path: String,
}

/// Why clients failed or were dropped, summed over all clients.
#[derive(Default)]
pub struct Errors {
    /// TCP connect refused, reset or timed out.
    pub connect: u64,
    /// A non-101 answer, a bad accept key, or EOF during the handshake.
    pub handshake: u64,
    /// The server broke RFC 6455 framing.
    pub protocol: u64,
    /// Read or write errors on an open connection.
    pub io: u64,
}

/// What every client borrows while handling an event: one read buffer
/// for the whole process, the masking-key generator, the error counts.
pub struct Shared {
    pub scratch: Vec<u8>,
    pub rng: XorShift64,
    pub errors: Errors,
}

/// Opens a non-blocking TCP connection, bound to `source` first when
/// given. The connect completes later (the socket turns writable).
pub fn connect(target: &Target, source: Option<Ipv4Addr>) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target.addr),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = source {
        bind_address_no_port(&socket);
        socket.bind(&SocketAddr::from((ip, 0)).into())?;
    }
    match socket.connect(&target.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = TcpStream::from_std(socket.into());
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Asks the kernel to pick the source port at connect time rather than
/// at bind time, so each source address offers its ports per
/// destination rather than once. Best effort: without it, binding still
/// works, with fewer ports.
fn bind_address_no_port(socket: &Socket) {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a pointer to a live c_int
    // whose size is passed alongside.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

pub struct Client {
    pub stream: TcpStream,
    /// Which of the configured servers it talks to.
    pub target: usize,
    state: State,
    /// The role of this client when it is one of the senders.
    pub sender: Option<u32>,
    /// `Sec-WebSocket-Key`, kept until the answer is checked.
    key: String,
    /// The response head as it arrives.
    head: Vec<u8>,
    decoder: Decoder,
    out: Vec<u8>,
    /// How much of `out` is already written.
    written: usize,
    /// The code of a Close the server started (1005 for one without a
    /// code), not one answering ours.
    server_close: Option<u16>,
}

impl Client {
    pub fn new(stream: TcpStream, sender: Option<u32>, target: usize) -> Client {
        Client {
            target,
            stream,
            state: State::Connecting,
            sender,
            key: String::new(),
            head: Vec::new(),
            decoder: Decoder::new(MAX_MESSAGE),
            out: Vec::new(),
            written: 0,
            server_close: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The code of the Close the server sent while the connection was
    /// open, if it did.
    pub fn server_close(&self) -> Option<u16> {
        self.server_close
    }

    /// Bytes queued but not yet accepted by the socket.
    pub fn backlog(&self) -> usize {
        self.out.len() - self.written
    }

    /// Handles a readiness event: finishes the connect, reads and
    /// decodes whatever arrived (handing each complete message to
    /// `on_message`), and writes what is queued.
    pub fn handle(
        &mut self,
        event: &Event,
        target: &Target,
        shared: &mut Shared,
        on_message: &mut impl FnMut(&[u8]),
    ) {
        if self.state == State::Connecting {
            match self.connected() {
                Ok(true) => {
                    let mut nonce = [0u8; 16];
                    shared.rng.fill(&mut nonce);
                    self.key = key_from_nonce(nonce);
                    write_upgrade_request(&mut self.out, &target.host, &target.path, &self.key, "");
                    self.state = State::Handshaking;
                    // Nothing can have arrived before the request went out.
                    self.flush(&mut shared.errors);
                    return;
                }
                Ok(false) if !event.is_error() => return,
                _ => {
                    shared.errors.connect += 1;
                    self.state = State::Dead;
                    return;
                }
            }
        }
        let eof_pending = event.is_read_closed() || event.is_error();
        self.read(shared, eof_pending, on_message);
        if self.state != State::Dead {
            self.flush(&mut shared.errors);
        }
    }

    /// Whether the connect finished: `Ok(false)` for a spurious wakeup.
    fn connected(&self) -> io::Result<bool> {
        if let Some(e) = self.stream.take_error()? {
            return Err(e);
        }
        match self.stream.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotConnected => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads until the socket is drained (the poll is edge-triggered), or,
    /// unless `eof_pending` says the peer's FIN is already queued, until a
    /// short read.
    fn read(&mut self, shared: &mut Shared, eof_pending: bool, on_message: &mut impl FnMut(&[u8])) {
        let Shared {
            scratch,
            rng,
            errors,
        } = shared;
        while matches!(
            self.state,
            State::Handshaking | State::Open | State::Closing
        ) {
            match self.stream.read(scratch) {
                Ok(0) => {
                    if self.state == State::Handshaking {
                        errors.handshake += 1;
                    }
                    self.state = State::Dead;
                }
                Ok(n) => {
                    self.ingest(&scratch[..n], rng, errors, on_message);
                    // A short read emptied the socket. Linux's edge-triggered
                    // epoll reports every later arrival, so the read that would
                    // only say WouldBlock can be skipped: it is one syscall per
                    // event saved, and most events carry a single message.
                    if n < scratch.len() && !eof_pending {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    if self.state == State::Handshaking {
                        errors.handshake += 1;
                    } else {
                        errors.io += 1;
                    }
                    self.state = State::Dead;
                }
            }
        }
    }

    fn ingest(
        &mut self,
        data: &[u8],
        rng: &mut XorShift64,
        errors: &mut Errors,
        on_message: &mut impl FnMut(&[u8]),
    ) {
        if self.state != State::Handshaking {
            self.decode(data, rng, errors, on_message);
            return;
        }
        self.head.extend_from_slice(data);
        match check_upgrade_response(&self.head, &self.key) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete(body)) => {
                self.state = State::Open;
                self.key = String::new();
                let head = std::mem::take(&mut self.head);
                self.decode(&head[body..], rng, errors, on_message);
            }
            Err(_) => {
                errors.handshake += 1;
                self.state = State::Dead;
            }
        }
    }

    fn decode(
        &mut self,
        data: &[u8],
        rng: &mut XorShift64,
        errors: &mut Errors,
        on_message: &mut impl FnMut(&[u8]),
    ) {
        let Client {
            decoder,
            out,
            state,
            server_close,
            ..
        } = self;
        let result = decoder.feed(data, |frame| match frame {
            Received::Text(message) | Received::Binary(message) => {
                if *state == State::Open {
                    on_message(message);
                }
            }
            Received::Ping(payload) => encode_message_into(out, OpCode::Pong, payload, rng.mask()),
            Received::Pong(_) => {}
            Received::Close(body) => {
                if *state == State::Open {
                    *server_close = Some(close_code(body).map_or(CloseCode::NO_STATUS.0, |c| c.0));
                    // Echo the status code (§5.5.1), not the reason.
                    let code = body.get(..2).unwrap_or_default();
                    encode_message_into(out, OpCode::Close, code, rng.mask());
                    *state = State::Closing;
                }
            }
        });
        if let Err(e) = result {
            errors.protocol += 1;
            let code = e.close_code().0.to_be_bytes();
            encode_message_into(&mut self.out, OpCode::Close, &code, rng.mask());
            self.flush(errors);
            self.state = State::Dead;
        }
    }

    /// Queues one masked text frame and tries to write it at once.
    pub fn send_text(&mut self, payload: &[u8], shared: &mut Shared) {
        encode_message_into(&mut self.out, OpCode::Text, payload, shared.rng.mask());
        self.flush(&mut shared.errors);
    }

    /// Starts the closing handshake (or gives up on a pending connect).
    pub fn close(&mut self, shared: &mut Shared) {
        match self.state {
            State::Open => {
                let code = CloseCode::NORMAL.0.to_be_bytes();
                encode_message_into(&mut self.out, OpCode::Close, &code, shared.rng.mask());
                self.state = State::Closing;
                self.flush(&mut shared.errors);
            }
            State::Connecting | State::Handshaking => self.state = State::Dead,
            State::Closing | State::Dead => {}
        }
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self, errors: &mut Errors) {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => {
                    errors.io += 1;
                    self.state = State::Dead;
                    return;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    errors.io += 1;
                    self.state = State::Dead;
                    return;
                }
            }
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};
    use std::thread;
    use std::time::{Duration, Instant};

    use mio::{Events, Interest, Poll, Token};

    use super::*;
    use wschat::protocol::handshake::accept_key;

    /// Reads the upgrade request and returns its key.
    fn read_request(sock: &mut StdStream) -> String {
        let mut head = Vec::new();
        let mut buf = [0u8; 512];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut buf).unwrap();
            assert!(n > 0, "client hung up during the request");
            head.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8(head).unwrap();
        head.lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .to_string()
    }

    /// Runs one client against `script` (the server side, on a thread)
    /// until the client is dead; returns the messages it delivered, the
    /// error counts and the code of the server's Close. The 5-byte read buffer makes every read short
    /// or full in turn.
    fn run_client(
        script: impl FnOnce(StdStream) + Send + 'static,
    ) -> (Vec<Vec<u8>>, Errors, Option<u16>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || script(listener.accept().unwrap().0));
        let target = Target {
            addr,
            host: addr.to_string(),
            path: "/".into(),
        };
        let mut poll = Poll::new().unwrap();
        let mut stream = connect(&target, None).unwrap();
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(0), interest)
            .unwrap();
        let mut client = Client::new(stream, None, 0);
        let mut shared = Shared {
            scratch: vec![0; 5],
            rng: XorShift64::new(7),
            errors: Errors::default(),
        };
        let mut messages = Vec::new();
        let mut events = Events::with_capacity(8);
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.state() != State::Dead && Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            for event in events.iter() {
                client.handle(event, &target, &mut shared, &mut |m: &[u8]| {
                    messages.push(m.to_vec())
                });
            }
        }
        let (state, close) = (client.state(), client.server_close());
        drop(client);
        server.join().unwrap();
        assert_eq!(state, State::Dead, "client did not finish");
        (messages, shared.errors, close)
    }

    #[test]
    fn frames_after_the_head_pings_and_the_closing_handshake() {
        let (messages, errors, close) = run_client(|mut sock| {
            let key = read_request(&mut sock);
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key.as_bytes())
            )
            .into_bytes();
            // A message in the same segment as the head, then a message
            // in two fragments with a ping between them, sent in two parts.
            out.extend_from_slice(&[0x81, 0x02, b'h', b'i']);
            out.extend_from_slice(&[0x01, 0x01, b'a', 0x89, 0x01, b'p', 0x80, 0x01, b'b']);
            let (first, rest) = out.split_at(out.len() - 4);
            sock.write_all(first).unwrap();
            thread::sleep(Duration::from_millis(20));
            sock.write_all(rest).unwrap();

            let mut pong = [0u8; 7];
            sock.read_exact(&mut pong).unwrap();
            assert_eq!(pong[..2], [0x8A, 0x81], "a masked one-byte pong");
            assert_eq!(pong[6] ^ pong[2], b'p', "echoing the ping payload");

            sock.write_all(&[0x88, 0x02, 0x03, 0xE8]).unwrap();
            let mut close = [0u8; 8];
            sock.read_exact(&mut close).unwrap();
            assert_eq!(close[..2], [0x88, 0x82], "a masked close with a code");
            assert_eq!([close[6] ^ close[2], close[7] ^ close[3]], [0x03, 0xE8]);
        });
        assert_eq!(messages, [b"hi".to_vec(), b"ab".to_vec()]);
        assert_eq!(close, Some(1000));
        assert_eq!(
            (errors.connect, errors.handshake, errors.protocol),
            (0, 0, 0)
        );
    }

    #[test]
    fn refused_upgrade_is_a_handshake_error() {
        let (messages, errors, close) = run_client(|mut sock| {
            read_request(&mut sock);
            sock.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
        });
        assert!(messages.is_empty());
        assert_eq!((errors.handshake, close), (1, None));
    }

    #[test]
    fn masked_server_frame_is_a_protocol_error() {
        let (_, errors, close) = run_client(|mut sock| {
            let key = read_request(&mut sock);
            let head = format!(
                "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                accept_key(key.as_bytes())
            );
            sock.write_all(head.as_bytes()).unwrap();
            sock.write_all(&[0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1]).unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
            assert_eq!(rest.get(..2), Some(&[0x88, 0x82][..]), "close 1002 first");
        });
        assert_eq!((errors.handshake, errors.protocol, close), (0, 1, None));
    }
}
