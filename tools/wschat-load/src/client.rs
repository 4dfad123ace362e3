//! One load client: a non-blocking TCP connection (with TLS for `wss://`)
//! taken through connect, the opening handshake, the open state and the
//! closing handshake, with its own output buffer and frame decoder.
//!
//! The client knows nothing about load: complete text and binary
//! messages go to a callback (inflated first when permessage-deflate was
//! agreed), pings are answered, a server Close is echoed. The runner
//! watches [`State`] before and after each call to keep its counts.
//!
//! TLS is sans-IO as in the server: a rustls `ClientConnection` beside the
//! mio `TcpStream`. Bytes read from the socket go into rustls, plaintext
//! comes out into a buffer shared by all clients; frames go into rustls'
//! writer and its records onto the socket. The socket stays registered for
//! both readiness kinds (edge-triggered), so rustls' wants never change
//! the registration.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use flate2::Decompress;
use mio::event::Event;
use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use socket2::{Domain, Protocol, Socket, Type};
use wschat::protocol::client::{
    check_upgrade_response, close_code, encode_frame_into, encode_message_into, key_from_nonce,
    write_upgrade_request, Decoder, Received, Status,
};
use wschat::protocol::frame::{CloseCode, OpCode};

use crate::deflate::{self, Agreed, Inflate};
use crate::rng::XorShift64;

/// The largest message or frame accepted from a server.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Output buffers above this are released once drained.
const KEEP_CAPACITY: usize = 1 << 20;

/// FIN and RSV1 ("Per-Message Compressed", RFC 7692 §6) on a text frame.
const COMPRESSED_TEXT: u8 = 0x80 | 0x40 | 0x1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// TCP connect in progress.
    Connecting,
    /// TLS handshake and upgrade request sent, waiting for the `101` head.
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

/// What `wss://` needs: the client config and the name the certificate
/// must carry (the URL's host: an IP address or `localhost`).
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub name: ServerName<'static>,
}

/// Where to connect and what to put in the request.
pub struct Target {
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    pub path: String,
    /// `wss://`.
    pub tls: Option<Tls>,
    /// Offer permessage-deflate, and require it.
    pub deflate: bool,
}

impl Target {
    /// The host of the URL without port or IPv6 brackets: the name the
    /// server's certificate must carry.
    pub fn host_name(&self) -> &str {
        if let Some(v6) = self.host.strip_prefix('[') {
            return v6.split(']').next().unwrap_or_default();
        }
        self.host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(host, _)| host)
    }
}

/// Why clients failed or were dropped, summed over all clients.
#[derive(Default)]
pub struct Errors {
    /// TCP connect refused, reset or timed out.
    pub connect: u64,
    /// A non-101 answer, a bad accept key or extension answer, a failed
    /// TLS handshake, or EOF during the handshake.
    pub handshake: u64,
    /// `--deflate` asked, and the server's `101` agreed no extension.
    pub deflate_refused: u64,
    /// The server broke RFC 6455 framing or sent data that does not inflate.
    pub protocol: u64,
    /// Read or write errors on an open connection, TLS errors after the
    /// handshake included.
    pub io: u64,
    /// The first TLS or extension error, for the progress log.
    pub first_detail: Option<String>,
}

impl Errors {
    fn detail(&mut self, what: impl FnOnce() -> String) {
        if self.first_detail.is_none() {
            self.first_detail = Some(what());
        }
    }
}

/// What every client borrows while handling an event: one read buffer
/// and one TLS plaintext buffer for the whole process, the masking-key
/// generator, the error counts, the byte count and the shared inflater.
pub struct Shared {
    pub scratch: Vec<u8>,
    pub plain: Vec<u8>,
    pub rng: XorShift64,
    pub errors: Errors,
    /// Bytes read from every socket: what the server put on the wire
    /// (TLS records, frame headers, compressed payloads).
    pub wire_in: u64,
    pub inflate: Inflate,
}

impl Shared {
    pub fn new(buffer_len: usize, rng: XorShift64) -> Shared {
        Shared {
            scratch: vec![0; buffer_len],
            plain: vec![0; buffer_len],
            rng,
            errors: Errors::default(),
            wire_in: 0,
            inflate: Inflate::new(MAX_MESSAGE),
        }
    }
}

/// The parts of [`Shared`] that decoding needs beside the read buffers.
struct Ctx<'a> {
    rng: &'a mut XorShift64,
    errors: &'a mut Errors,
    inflate: &'a mut Inflate,
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

/// The inflater of a connection whose server keeps its context between
/// messages (it did not agree `server_no_context_takeover`).
struct OwnInflater {
    decompress: Decompress,
    out: Vec<u8>,
}

/// When a queued message is handed to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// At once.
    Now,
    /// With the sender's other messages of this pass, in one write (the
    /// closed loop, where one pass frees several of a sender's slots).
    Later,
}

pub struct Client {
    pub stream: TcpStream,
    tls: Option<Box<ClientConnection>>,
    /// Which of the configured servers it talks to.
    pub target: usize,
    state: State,
    /// The role of this client when it is one of the senders.
    pub sender: Option<u32>,
    /// `Sec-WebSocket-Key`, kept until the answer is checked.
    key: String,
    /// The request offered permessage-deflate.
    offered: bool,
    /// The response head as it arrives.
    head: Vec<u8>,
    decoder: Decoder,
    /// permessage-deflate, once the server agreed it.
    agreed: Option<Agreed>,
    own_inflater: Option<Box<OwnInflater>>,
    out: Vec<u8>,
    /// How much of `out` is already written (to the socket, or into rustls).
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
            tls: None,
            state: State::Connecting,
            sender,
            key: String::new(),
            offered: false,
            head: Vec::new(),
            decoder: Decoder::new(MAX_MESSAGE),
            agreed: None,
            own_inflater: None,
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

    /// What the server agreed for permessage-deflate, once open.
    pub fn agreed(&self) -> Option<Agreed> {
        self.agreed
    }

    /// Bytes queued but not yet accepted by the socket (1 or more while
    /// rustls holds records it could not write).
    pub fn backlog(&self) -> usize {
        let in_tls = self.tls.as_ref().is_some_and(|t| t.wants_write());
        self.out.len() - self.written + usize::from(in_tls)
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
                    self.start_handshake(target, shared);
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

    /// Sends the upgrade request, inside a TLS session for `wss://`
    /// (rustls holds it until its handshake is done).
    fn start_handshake(&mut self, target: &Target, shared: &mut Shared) {
        if let Some(tls) = &target.tls {
            match ClientConnection::new(Arc::clone(&tls.config), tls.name.clone()) {
                Ok(conn) => self.tls = Some(Box::new(conn)),
                Err(e) => {
                    shared.errors.detail(|| format!("TLS: {e}"));
                    shared.errors.handshake += 1;
                    self.state = State::Dead;
                    return;
                }
            }
        }
        let mut nonce = [0u8; 16];
        shared.rng.fill(&mut nonce);
        self.key = key_from_nonce(nonce);
        self.offered = target.deflate;
        let extra = if target.deflate { deflate::OFFER } else { "" };
        write_upgrade_request(&mut self.out, &target.host, &target.path, &self.key, extra);
        self.state = State::Handshaking;
        // Nothing can have arrived before the request (or ClientHello) went out.
        self.flush(&mut shared.errors);
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

    fn fail(&mut self, errors: &mut Errors) {
        if self.state == State::Handshaking {
            errors.handshake += 1;
        } else {
            errors.io += 1;
        }
        self.state = State::Dead;
    }

    /// Reads until the socket is drained (the poll is edge-triggered), or,
    /// unless `eof_pending` says the peer's FIN is already queued, until a
    /// short read.
    fn read(&mut self, shared: &mut Shared, eof_pending: bool, on_message: &mut impl FnMut(&[u8])) {
        let Shared {
            scratch,
            plain,
            rng,
            errors,
            wire_in,
            inflate,
        } = shared;
        let mut ctx = Ctx {
            rng,
            errors,
            inflate,
        };
        while matches!(
            self.state,
            State::Handshaking | State::Open | State::Closing
        ) {
            match self.stream.read(scratch) {
                Ok(0) => {
                    if self.state == State::Handshaking {
                        ctx.errors.handshake += 1;
                    }
                    self.state = State::Dead;
                }
                Ok(n) => {
                    *wire_in += n as u64;
                    if self.tls.is_some() {
                        self.ingest_tls(&scratch[..n], plain, &mut ctx, on_message);
                    } else {
                        self.ingest(&scratch[..n], &mut ctx, on_message);
                    }
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
                Err(_) => self.fail(ctx.errors),
            }
        }
    }

    /// Feeds TLS records to rustls and what they decrypt to to `ingest`.
    fn ingest_tls(
        &mut self,
        mut records: &[u8],
        plain: &mut [u8],
        ctx: &mut Ctx<'_>,
        on_message: &mut impl FnMut(&[u8]),
    ) {
        while !records.is_empty() && self.state != State::Dead {
            let Some(tls) = self.tls.as_mut() else { return };
            let taken = tls.read_tls(&mut records).map_err(|e| e.to_string());
            // Taking nothing from bytes at hand would loop forever.
            let taken = taken.and_then(|n| match n {
                0 => Err("rustls took no bytes".to_string()),
                n => Ok(n),
            });
            if let Err(e) = taken.and_then(|_| {
                tls.process_new_packets()
                    .map(drop)
                    .map_err(|e| e.to_string())
            }) {
                ctx.errors.detail(|| format!("TLS: {e}"));
                // rustls queued an alert: send it, best effort.
                let _ = tls.write_tls(&mut self.stream);
                self.fail(ctx.errors);
                return;
            }
            loop {
                let Some(tls) = self.tls.as_mut() else { return };
                match tls.reader().read(plain) {
                    // close_notify: the server ends the session; EOF follows.
                    Ok(0) => break,
                    Ok(n) => self.ingest(&plain[..n], ctx, on_message),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.fail(ctx.errors);
                        return;
                    }
                }
                if self.state == State::Dead {
                    return;
                }
            }
        }
    }

    fn ingest(&mut self, data: &[u8], ctx: &mut Ctx<'_>, on_message: &mut impl FnMut(&[u8])) {
        if self.state != State::Handshaking {
            self.decode(data, ctx, on_message);
            return;
        }
        self.head.extend_from_slice(data);
        match check_upgrade_response(&self.head, &self.key) {
            Ok(Status::Partial) => {}
            Ok(Status::Complete(body)) => {
                if let Err(e) = self.agree(body, ctx.errors) {
                    ctx.errors.detail(|| e);
                    ctx.errors.handshake += 1;
                    self.state = State::Dead;
                    return;
                }
                self.state = State::Open;
                self.key = String::new();
                let head = std::mem::take(&mut self.head);
                self.decode(&head[body..], ctx, on_message);
            }
            Err(_) => {
                ctx.errors.handshake += 1;
                self.state = State::Dead;
            }
        }
    }

    /// Checks the extension the `101` head (the first `len` bytes of
    /// `self.head`) agreed to against what was offered.
    fn agree(&mut self, len: usize, errors: &mut Errors) -> Result<(), String> {
        let offered = self.offered;
        match (deflate::parse_answer(&self.head[..len])?, offered) {
            (None, false) => Ok(()),
            (None, true) => {
                errors.deflate_refused += 1;
                Err("--deflate: the server agreed no permessage-deflate".into())
            }
            (Some(_), false) => Err("an extension in the answer, none offered".into()),
            (Some(agreed), true) => {
                self.decoder.allow_compressed();
                if !agreed.server_no_context_takeover {
                    self.own_inflater = Some(Box::new(OwnInflater {
                        decompress: Decompress::new(false),
                        out: Vec::new(),
                    }));
                }
                self.agreed = Some(agreed);
                Ok(())
            }
        }
    }

    fn decode(&mut self, data: &[u8], ctx: &mut Ctx<'_>, on_message: &mut impl FnMut(&[u8])) {
        let Client {
            decoder,
            out,
            state,
            server_close,
            own_inflater,
            ..
        } = self;
        let Ctx {
            rng,
            errors: _,
            inflate,
        } = ctx;
        let mut bad_data = false;
        let result = decoder.feed(data, |frame| match frame {
            Received::Text(message) | Received::Binary(message) => {
                if *state == State::Open {
                    on_message(message);
                }
            }
            Received::CompressedText(payload) | Received::CompressedBinary(payload) => {
                if *state != State::Open || bad_data {
                    return;
                }
                let inflated = match own_inflater.as_deref_mut() {
                    Some(own) => deflate::inflate_into(
                        &mut own.decompress,
                        false,
                        payload,
                        &mut own.out,
                        MAX_MESSAGE,
                    )
                    .map(|()| &own.out[..]),
                    None => inflate.message(payload),
                };
                match inflated {
                    Ok(message) => on_message(message),
                    Err(()) => bad_data = true,
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
        let code = match result {
            Err(e) => e.close_code(),
            // Not valid DEFLATE: 1007, as the server answers it.
            Ok(()) if bad_data => CloseCode::INVALID_PAYLOAD,
            Ok(()) => return,
        };
        ctx.errors.protocol += 1;
        encode_message_into(
            &mut self.out,
            OpCode::Close,
            &code.0.to_be_bytes(),
            ctx.rng.mask(),
        );
        self.flush(ctx.errors);
        self.state = State::Dead;
    }

    /// Queues one masked text frame and, with `When::Now`, tries to write
    /// it at once (with `When::Later`, [`Client::send_queued`] does).
    pub fn send_text(&mut self, payload: &[u8], shared: &mut Shared, write: When) {
        encode_message_into(&mut self.out, OpCode::Text, payload, shared.rng.mask());
        if write == When::Now {
            self.flush(&mut shared.errors);
        }
    }

    /// As [`Client::send_text`], for a payload already compressed (RSV1
    /// set).
    pub fn send_compressed_text(&mut self, payload: &[u8], shared: &mut Shared, write: When) {
        encode_frame_into(&mut self.out, COMPRESSED_TEXT, payload, shared.rng.mask());
        if write == When::Now {
            self.flush(&mut shared.errors);
        }
    }

    /// Tries to write what was queued with `When::Later`.
    pub fn send_queued(&mut self, shared: &mut Shared) {
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
        let done = match self.tls.is_some() {
            true => self.flush_tls(errors),
            false => self.flush_plain(errors),
        };
        if done {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            }
        }
    }

    /// Whether all of `out` went to the socket.
    fn flush_plain(&mut self, errors: &mut Errors) -> bool {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => {
                    self.fail(errors);
                    return false;
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.fail(errors);
                    return false;
                }
            }
        }
        true
    }

    /// Moves `out` into rustls (as much as its buffer limit takes) and its
    /// records onto the socket, until both are done or the socket is
    /// full. Whether all of `out` went into rustls.
    fn flush_tls(&mut self, errors: &mut Errors) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return true;
        };
        loop {
            let mut progress = false;
            while self.written < self.out.len() {
                match tls.writer().write(&self.out[self.written..]) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.written += n;
                        progress = true;
                    }
                    Err(_) => {
                        self.fail(errors);
                        return false;
                    }
                }
            }
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => {
                        self.fail(errors);
                        return false;
                    }
                    Ok(_) => progress = true,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        return self.written == self.out.len()
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.fail(errors);
                        return false;
                    }
                }
            }
            if self.written == self.out.len() || !progress {
                return self.written == self.out.len();
            }
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
        run_client_with(None, false, script)
    }

    /// [`run_client`] for `wss://` (`tls`) and `--deflate`.
    fn run_client_with(
        tls: Option<Tls>,
        deflate: bool,
        script: impl FnOnce(StdStream) + Send + 'static,
    ) -> (Vec<Vec<u8>>, Errors, Option<u16>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || script(listener.accept().unwrap().0));
        let target = Target {
            addr,
            host: addr.to_string(),
            path: "/".into(),
            tls,
            deflate,
        };
        let mut poll = Poll::new().unwrap();
        let mut stream = connect(&target, None).unwrap();
        let interest = Interest::READABLE | Interest::WRITABLE;
        poll.registry()
            .register(&mut stream, Token(0), interest)
            .unwrap();
        let mut client = Client::new(stream, None, 0);
        let mut shared = Shared::new(5, XorShift64::new(7));
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

    /// The `101` for the request on `sock`, with `extra` header lines.
    fn answer(sock: &mut impl Write, key: &str, extra: &str) {
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n{extra}\r\n",
            accept_key(key.as_bytes())
        );
        sock.write_all(head.as_bytes()).unwrap();
    }

    /// Reads the request head from `sock` whole.
    fn request_head(sock: &mut impl Read) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(sock.read(&mut byte).unwrap(), 1, "client hung up");
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    fn key_of(head: &str) -> String {
        head.lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .unwrap()
            .to_string()
    }

    const AGREED: &str = "Sec-WebSocket-Extensions: permessage-deflate; \
        server_no_context_takeover; client_no_context_takeover\r\n";

    #[test]
    fn deflate_offered_agreed_and_inflated() {
        let (messages, errors, close) = run_client_with(None, true, |mut sock| {
            let head = request_head(&mut sock);
            assert!(head.contains(deflate::OFFER), "{head}");
            answer(&mut sock, &key_of(&head), AGREED);
            // RFC 7692 §7.2.3.1's "Hello" twice (the second from the
            // cache), in two fragments, then an uncompressed "hi".
            let hello = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
            sock.write_all(&hello).unwrap();
            sock.write_all(&hello).unwrap();
            sock.write_all(&[
                0x41, 0x02, 0xf2, 0x48, 0x80, 0x05, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
            ])
            .unwrap();
            sock.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
            sock.write_all(&[0x88, 0x02, 0x03, 0xE8]).unwrap();
            let mut close = [0u8; 8];
            sock.read_exact(&mut close).unwrap();
            assert_eq!(close[..2], [0x88, 0x82], "the client's Close, uncompressed");
        });
        assert_eq!(
            messages,
            [&b"Hello"[..], b"Hello", b"Hello", b"hi"].map(<[u8]>::to_vec)
        );
        assert_eq!(
            (errors.handshake, errors.protocol, close),
            (0, 0, Some(1000))
        );
    }

    #[test]
    fn deflate_asked_but_not_agreed_fails_the_handshake() {
        let (messages, errors, _) = run_client_with(None, true, |mut sock| {
            let head = request_head(&mut sock);
            answer(&mut sock, &key_of(&head), "");
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        assert!(messages.is_empty());
        assert_eq!((errors.handshake, errors.deflate_refused), (1, 1));
        assert!(errors.first_detail.unwrap().contains("--deflate"));
    }

    #[test]
    fn an_extension_not_offered_fails_the_handshake() {
        let (_, errors, _) = run_client(|mut sock| {
            let head = request_head(&mut sock);
            assert!(!head.contains("Extensions"), "{head}");
            answer(&mut sock, &key_of(&head), AGREED);
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
        });
        assert_eq!((errors.handshake, errors.deflate_refused), (1, 0));
    }

    #[test]
    fn bad_deflate_data_and_compressed_controls_close_the_connection() {
        for (frame, code) in [
            (&[0xc1, 0x03, 0xff, 0xff, 0xff][..], 1007u16),
            (&[0xc9, 0x00][..], 1002),
        ] {
            let frame = frame.to_vec();
            let (messages, errors, _) = run_client_with(None, true, move |mut sock| {
                let head = request_head(&mut sock);
                answer(&mut sock, &key_of(&head), AGREED);
                sock.write_all(&frame).unwrap();
                let mut rest = Vec::new();
                let _ = sock.read_to_end(&mut rest);
                assert_eq!(rest.get(..2), Some(&[0x88, 0x82][..]), "a masked close");
                let got = u16::from_be_bytes([rest[6] ^ rest[2], rest[7] ^ rest[3]]);
                assert_eq!(got, code);
            });
            assert!(messages.is_empty());
            assert_eq!(errors.protocol, 1);
        }
    }

    /// A CA, and a server config with a `localhost`/127.0.0.1 certificate
    /// it signed; the CA's PEM.
    fn test_pki() -> (Arc<rustls::ServerConfig>, String) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        (Arc::new(config), ca.pem())
    }

    /// The client's TLS settings trusting `ca_pem`, for 127.0.0.1.
    fn client_tls(ca_pem: &str) -> Tls {
        let dir = std::env::temp_dir().join(format!("wschat-load-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("ca-{}.pem", ca_pem.len()));
        std::fs::write(&path, ca_pem).unwrap();
        let tls = crate::tls::client(&path, "127.0.0.1").unwrap();
        let _ = std::fs::remove_file(&path);
        tls
    }

    #[test]
    fn wss_through_rustls_with_deflate() {
        let (server_config, ca_pem) = test_pki();
        let tls = client_tls(&ca_pem);
        let (messages, errors, close) = run_client_with(Some(tls), true, move |sock| {
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let head = request_head(&mut tls);
            assert!(head.contains(deflate::OFFER));
            assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
            answer(&mut tls, &key_of(&head), AGREED);
            let big = vec![b'x'; 100_000];
            let mut frame = vec![0x82, 0x7F];
            frame.extend_from_slice(&(big.len() as u64).to_be_bytes());
            frame.extend_from_slice(&big);
            frame.extend_from_slice(&[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
            frame.extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]);
            tls.write_all(&frame).unwrap();
            tls.flush().unwrap();
            let mut close = [0u8; 8];
            tls.read_exact(&mut close).unwrap();
            assert_eq!(close[..2], [0x88, 0x82]);
        });
        assert_eq!(
            messages.len(),
            2,
            "{errors:?}",
            errors = errors.first_detail
        );
        assert_eq!(messages[0].len(), 100_000);
        assert_eq!(messages[1], b"Hello");
        assert_eq!(
            (errors.handshake, errors.protocol, close),
            (0, 0, Some(1000))
        );
    }

    #[test]
    fn an_untrusted_certificate_is_a_handshake_error() {
        let (server_config, _) = test_pki();
        let (_, other_ca) = test_pki();
        let (messages, errors, _) = run_client_with(Some(client_tls(&other_ca)), false, |sock| {
            let conn = rustls::ServerConnection::new(server_config).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, sock);
            let mut byte = [0u8; 1];
            assert!(
                tls.read(&mut byte).is_err(),
                "the client refuses the certificate"
            );
        });
        assert!(messages.is_empty());
        assert_eq!(errors.handshake, 1);
        let detail = errors.first_detail.unwrap();
        assert!(detail.contains("TLS"), "{detail}");
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
