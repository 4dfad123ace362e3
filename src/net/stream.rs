//! A peer's byte stream: every read, vectored write, shutdown and
//! readiness-interest decision on a peer's socket goes through here.
//!
//! A stream is a plain `TcpStream` or a TLS one (rustls'
//! `ServerConnection` next to the socket, in `tls`): the loop and the
//! connection above do not change, and [`Stream::buffered`] reports what
//! the TLS layer holds so it counts against the slow-consumer limit.
//!
//! A plain stream writing large frames borrows a pipe from the loop's
//! [`Splicer`] (in `splice`): the frame's pages are shared with every
//! other recipient instead of copied for each. What the pipe holds
//! counts as buffered, as TLS records do.

use std::io::{self, Read};
use std::net::Shutdown;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::protocol::outbox::{Flush, Gather, Outbox};

mod splice;
mod tls;

pub use splice::{Piped, Splicer, DESCRIPTORS as SPLICE_DESCRIPTORS};
pub use tls::BUFFER_LIMIT as TLS_BUFFER_LIMIT;

/// What every write of the loop shares: the buffer runs of small frames
/// are gathered in, and the pipes large frames are spliced through.
pub struct WriteScratch {
    pub gather: Gather,
    pub splicer: Splicer,
}

impl WriteScratch {
    /// Splicing frames of at least `splice_min_size` bytes (0: none).
    pub fn new(splice_min_size: usize) -> WriteScratch {
        WriteScratch {
            gather: Gather::default(),
            splicer: Splicer::new(splice_min_size),
        }
    }
}

/// The socket, and the write state beside it in each variant: an enum's
/// small fields fill the bytes after its tag, so a stream is two words,
/// not three (idle connections are most of memory; `net::peers` keeps
/// a test on a peer's size). A plain socket's pipe, while it has one,
/// is the second word.
enum Io {
    Plain(TcpStream, WriteState, Option<Box<Piped>>),
    Tls(Box<tls::TlsIo>, WriteState),
}

/// Where writing to the socket stands.
#[derive(Clone, Copy, Default)]
struct WriteState {
    /// The last write left bytes the socket would not take.
    blocked: bool,
    /// WRITABLE interest is registered: the loop waits for the socket to
    /// drain before writing again.
    writable_registered: bool,
}

/// One peer's socket and the readiness it is registered for.
pub struct Stream {
    io: Io,
}

impl Stream {
    pub fn plain(socket: TcpStream) -> Stream {
        Stream {
            io: Io::Plain(socket, WriteState::default(), None),
        }
    }

    /// A TLS stream: `conn` is a fresh `ServerConnection`, its handshake
    /// still to come.
    pub fn tls(socket: TcpStream, conn: rustls::ServerConnection) -> Stream {
        Stream {
            io: Io::Tls(
                Box::new(tls::TlsIo::new(socket, conn)),
                WriteState::default(),
            ),
        }
    }

    fn write_state(&self) -> WriteState {
        match &self.io {
            Io::Plain(_, write, _) | Io::Tls(_, write) => *write,
        }
    }

    fn write_state_mut(&mut self) -> &mut WriteState {
        match &mut self.io {
            Io::Plain(_, write, _) | Io::Tls(_, write) => write,
        }
    }

    fn socket(&mut self) -> &mut TcpStream {
        match &mut self.io {
            Io::Plain(socket, ..) => socket,
            Io::Tls(tls, _) => &mut tls.socket,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, Io::Tls(..))
    }

    /// A TLS stream whose handshake has not finished (no keys yet).
    pub fn is_tls_handshaking(&self) -> bool {
        match &self.io {
            Io::Plain(..) => false,
            Io::Tls(tls, _) => tls.is_handshaking(),
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

    /// Reads what arrived into `buf` (for TLS, the plaintext). A TLS
    /// error is `InvalidData`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.io {
            Io::Plain(socket, ..) => socket.read(buf),
            Io::Tls(tls, write) => {
                let result = tls.read(buf);
                // Handshake records the socket would not take wait for
                // WRITABLE like any other bytes.
                write.blocked |= tls.buffered() > 0;
                result
            }
        }
    }

    /// Whether a read of `n` bytes out of `want` proves nothing is left to
    /// read until the next readiness event: for a plain socket a short read
    /// does; for TLS only a read that ended on the socket's `WouldBlock`
    /// with rustls' plaintext drained (a short read may also stop at a
    /// close_notify or EOF, which the next read reports).
    pub fn drained_by(&self, n: usize, want: usize) -> bool {
        match &self.io {
            Io::Plain(..) => n < want,
            Io::Tls(tls, _) => tls.drained(),
        }
    }

    /// Writes as much of `outbox` as the socket takes, in vectored writes,
    /// small frames gathered and large ones spliced through `scratch`
    /// (for TLS: encrypted in records of up to 16 KiB, see `tls`; rustls
    /// copies every slice into its records, so there is nothing to gather
    /// or splice).
    pub fn write_from(
        &mut self,
        outbox: &mut Outbox,
        scratch: &mut WriteScratch,
    ) -> io::Result<Flush> {
        let result = match &mut self.io {
            Io::Plain(socket, _, piped) if piped.is_none() && !scratch.splicer.is_on() => {
                outbox.write_gathered(socket, &mut scratch.gather)
            }
            Io::Plain(socket, _, piped) => {
                let mut sink = splice::Sink {
                    socket,
                    piped,
                    splicer: &mut scratch.splicer,
                };
                let flush = outbox.write_sharing(&mut sink, &mut scratch.gather);
                match (flush, sink.finish()) {
                    (Ok(Flush::Done), Ok(false)) => Ok(Flush::Blocked),
                    (Ok(flush), Ok(_)) => Ok(flush),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                }
            }
            Io::Tls(tls, _) => tls.write_from(outbox),
        };
        if let Ok(flush) = &result {
            self.write_state_mut().blocked = *flush == Flush::Blocked;
        }
        result
    }

    /// The last write found the socket full: writing again before it
    /// drains would only fail again.
    pub fn is_blocked(&self) -> bool {
        self.write_state().blocked
    }

    /// Whether the loop is waiting for the socket to become writable.
    pub fn awaiting_writable(&self) -> bool {
        self.write_state().writable_registered
    }

    /// Asks for WRITABLE readiness while the socket is blocked, and stops
    /// asking once it is not (re-registering only on a change).
    pub fn sync_interest(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let write = self.write_state_mut();
        if write.blocked == write.writable_registered {
            return Ok(());
        }
        let interest = if write.blocked {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        write.writable_registered = write.blocked;
        registry.reregister(self.socket(), token, interest)
    }

    /// Sends FIN after our last byte (for TLS, after close_notify);
    /// reading goes on.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Io::Tls(tls, _) = &mut self.io {
            tls.close_notify();
        }
        self.socket().shutdown(Shutdown::Write)
    }

    /// Bytes accepted from the outbox but still held in this stream (the
    /// TLS records rustls holds for the socket, at most
    /// [`TLS_BUFFER_LIMIT`]; what a plain socket's pipe holds).
    pub fn buffered(&self) -> usize {
        match &self.io {
            Io::Plain(_, _, piped) => piped.as_ref().map_or(0, |p| p.held()),
            Io::Tls(tls, _) => tls.buffered(),
        }
    }

    /// The pipe lent to this stream, for the stream's end.
    pub fn take_pipe(&mut self) -> Option<Box<Piped>> {
        match &mut self.io {
            Io::Plain(_, _, piped) => piped.take(),
            Io::Tls(..) => None,
        }
    }
}
