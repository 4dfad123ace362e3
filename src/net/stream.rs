//! A peer's byte stream: every read, vectored write, shutdown and
//! readiness-interest decision on a peer's socket goes through here.
//!
//! Today a stream is a plain `TcpStream`. A TLS stream is one more
//! variant beside it (rustls' `ServerConnection` next to the socket, as in
//! rustls' own mio example): the loop and the connection above do not
//! change, and [`Stream::buffered`] reports what such a layer holds so it
//! counts against the slow-consumer limit.

use std::io::{self, Read};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::protocol::outbox::{Flush, Outbox};

enum Io {
    Plain(TcpStream),
}

/// One peer's socket and the readiness it is registered for.
pub struct Stream {
    io: Io,
    /// The last write left bytes the socket would not take.
    blocked: bool,
    /// WRITABLE interest is registered: the loop waits for the socket to
    /// drain before writing again.
    writable_registered: bool,
}

impl Stream {
    pub fn plain(socket: TcpStream) -> Stream {
        Stream {
            io: Io::Plain(socket),
            blocked: false,
            writable_registered: false,
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        match &mut self.io {
            Io::Plain(socket) => socket,
        }
    }

    /// Registers for reading (writing is asked for only when needed).
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(self.socket(), token, Interest::READABLE)
    }

    pub fn deregister(&mut self, registry: &Registry) {
        let _ = registry.deregister(self.socket());
    }

    pub fn set_nodelay(&mut self) -> io::Result<()> {
        self.socket().set_nodelay(true)
    }

    /// Reads what arrived into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket().read(buf)
    }

    /// Writes as much of `outbox` as the socket takes, in vectored writes.
    pub fn write_from(&mut self, outbox: &mut Outbox) -> io::Result<Flush> {
        let result = outbox.write_to(self.socket());
        if let Ok(flush) = &result {
            self.blocked = *flush == Flush::Blocked;
        }
        result
    }

    /// The last write found the socket full: writing again before it
    /// drains would only fail again.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Whether the loop is waiting for the socket to become writable.
    pub fn awaiting_writable(&self) -> bool {
        self.writable_registered
    }

    /// Asks for WRITABLE readiness while the socket is blocked, and stops
    /// asking once it is not (re-registering only on a change).
    pub fn sync_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        if self.blocked == self.writable_registered {
            return Ok(());
        }
        let interest = if self.blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        self.writable_registered = self.blocked;
        registry.reregister(self.socket(), token, interest)
    }

    /// Sends FIN after our last byte; reading goes on.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        self.socket().shutdown(Shutdown::Write)
    }

    /// Bytes accepted from the outbox but still held in this stream (a
    /// TLS layer's buffered records); always 0 for a plain socket.
    pub fn buffered(&self) -> usize {
        match &self.io {
            Io::Plain(_) => 0,
        }
    }
}
