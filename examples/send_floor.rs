//! The send floor: the least work any WebSocket broadcast server can do
//! per delivery, to measure what the kernel alone costs.
//!
//! Issue 9 asks for S1 and S3 p99 latency at 0.8× uWebSockets', "if the
//! kernel's per-send cost makes a latency target unreachable for any
//! server, show the profile that proves it". This program is that bound
//! made runnable: one `mio` loop, a handshake, and for each message one
//! encoded frame written with one `write` per other client. No rooms, no
//! names, no history, no flood control, no timers, no limits, no logging:
//! nothing a real server must have. Whatever latency it shows under a
//! scenario is the kernel's part, which no server on this loopback and
//! this core can go under with one send per recipient.
//!
//! It speaks just enough of the chat's semantics for `wschat-load`:
//! every text or binary message reaches every other open client. It is a
//! measuring instrument, not a server to deploy: it trusts its clients
//! (no size limits, no UTF-8 check, unbounded queues toward slow readers).
//!
//! ```text
//! cargo build --release --example send_floor
//! target/release/examples/send_floor [PORT]      # prints "listening on ADDR"
//! ```

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use wschat::protocol::frame::{apply_mask, decode_header, encode_frame, OpCode};
use wschat::protocol::handshake::{accept_response, parse_request, Policy, Request};

const LISTENER: Token = Token(usize::MAX);

struct Client {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    input: Vec<u8>,
    /// Bytes the socket did not take yet (empty when it keeps up).
    output: Vec<u8>,
    open: bool,
}

impl Client {
    /// Sends `bytes` with one `write`, queueing what the socket refuses.
    /// Returns false if the connection broke.
    fn send(&mut self, bytes: &[u8]) -> bool {
        if !self.output.is_empty() {
            self.output.extend_from_slice(bytes);
            return true;
        }
        match self.stream.write(bytes) {
            Ok(n) => {
                self.output.extend_from_slice(&bytes[n..]);
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.output.extend_from_slice(bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// Writes what was queued; false if the connection broke.
    fn flush(&mut self) -> bool {
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => return false,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(_) => return false,
            }
        }
        true
    }
}

/// What one client's input holds next.
enum Input {
    /// Nothing complete yet.
    Partial,
    /// A data message to broadcast, as the server frame to send.
    Broadcast(Vec<u8>),
    /// A frame to answer to the sender alone (a pong, a close echo).
    Reply(Vec<u8>, bool),
    /// Garbage: drop the connection.
    Bad,
}

/// The handshake's answer for a complete request head, if it is a valid
/// upgrade: wschat's own sans-IO handshake (RFC 6455 §4.2), with any
/// origin accepted and no subprotocols or extensions offered.
fn handshake(head: &[u8]) -> Option<Vec<u8>> {
    let policy = Policy {
        allowed_origins: vec!["*".to_owned()],
        max_head_bytes: 8 * 1024,
        max_headers: 32,
        ..Policy::default()
    };
    match parse_request(head, &policy) {
        Ok(Request::Upgrade(upgrade)) => Some(accept_response(&upgrade)),
        _ => None,
    }
}

/// Takes the next whole frame from `input` (single-frame messages only:
/// what `wschat-load` sends).
fn next_frame(input: &mut Vec<u8>) -> Input {
    let (header, len) = match decode_header(input) {
        Ok(Some(h)) => h,
        Ok(None) => return Input::Partial,
        Err(_) => return Input::Bad,
    };
    let Ok(payload_len) = usize::try_from(header.payload_len) else {
        return Input::Bad;
    };
    if input.len() < len + payload_len {
        return Input::Partial;
    }
    let mut payload: Vec<u8> = input.drain(..len + payload_len).skip(len).collect();
    if let Some(mask) = header.mask {
        apply_mask(&mut payload, mask, 0);
    }
    match header.opcode {
        OpCode::Text | OpCode::Binary if header.fin => {
            Input::Broadcast(encode_frame(header.opcode, &payload))
        }
        OpCode::Ping => Input::Reply(encode_frame(OpCode::Pong, &payload), false),
        OpCode::Pong => Input::Partial,
        OpCode::Close => Input::Reply(encode_frame(OpCode::Close, &payload), true),
        _ => Input::Bad,
    }
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    println!("listening on {}", listener.local_addr()?);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut clients: Slab<Client> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut gone = Vec::new();
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    stream.set_nodelay(true)?;
                    let entry = clients.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    entry.insert(Client {
                        stream,
                        input: Vec::new(),
                        output: Vec::new(),
                        open: false,
                    });
                }
                continue;
            }
            let key = event.token().0;
            let Some(client) = clients.get_mut(key) else {
                continue;
            };
            if event.is_writable() && !client.flush() {
                gone.push(key);
                continue;
            }
            if !event.is_readable() {
                continue;
            }
            let mut eof = false;
            loop {
                match client.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => client.input.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            if !client.open {
                if let Some(end) = client.input.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head: Vec<u8> = client.input.drain(..end + 4).collect();
                    match handshake(&head) {
                        Some(reply) if client.send(&reply) => client.open = true,
                        _ => eof = true,
                    }
                }
            }
            while !eof && clients[key].open {
                match next_frame(&mut clients[key].input) {
                    Input::Partial => break,
                    Input::Bad => eof = true,
                    Input::Reply(frame, close) => {
                        eof = !clients[key].send(&frame) || close;
                    }
                    Input::Broadcast(frame) => {
                        // The whole point: one write per other client.
                        for (other, peer) in clients.iter_mut() {
                            if other != key && peer.open && !peer.send(&frame) {
                                gone.push(other);
                            }
                        }
                    }
                }
            }
            if eof {
                gone.push(key);
            }
        }
        for key in gone.drain(..) {
            if let Some(mut client) = clients.try_remove(key) {
                poll.registry().deregister(&mut client.stream)?;
            }
        }
    }
}
