//! Listening and accepting: binding the listeners, taking connections off
//! the backlog, and refusing what cannot be kept.
//!
//! Running out of descriptors (`EMFILE`) must not turn the loop into a
//! spin on the same error: a descriptor is held in reserve and freed to
//! accept and refuse one waiting connection with `503`, then taken back
//! (as nginx does); with none to spare, accepting pauses for a moment.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::protocol::handshake::HttpResponse;

/// How long to stop accepting after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// The listen backlog asked of the kernel (capped by
/// `net.core.somaxconn`, 4096 on current Linux): room for a join storm of
/// thousands while the loop accepts in batches.
const BACKLOG: i32 = 4096;

/// What one accept attempt gave.
pub enum Accepted {
    /// A connection to admit, its address in canonical form (IPv4 clients
    /// of the dual-stack listener arrive as `::ffff:a.b.c.d`).
    Socket(TcpStream, SocketAddr),
    /// Out of descriptors: a waiting connection was refused with 503.
    RefusedForDescriptors,
    /// Nothing more to accept now (drained, paused or out of descriptors).
    Done,
}

/// The listening sockets and the state of accepting.
pub struct Listeners {
    listeners: Vec<TcpListener>,
    /// A descriptor held back for refusing when the process runs out.
    reserve_fd: Option<std::fs::File>,
    paused_until: Option<Instant>,
}

impl Listeners {
    /// Binds each of `addrs` (listener `i` is `addrs[i]`) and registers
    /// them with tokens counting down from `base`. `reuse_port` sets
    /// `SO_REUSEPORT`, so that several processes may listen on one port
    /// and the kernel spreads new connections over them.
    pub fn bind(
        addrs: &[SocketAddr],
        registry: &Registry,
        base: usize,
        reuse_port: bool,
    ) -> io::Result<Listeners> {
        let mut listeners = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let mut listener = TcpListener::from_std(bind_listener(addr, reuse_port)?);
            registry.register(&mut listener, Token(base - i), Interest::READABLE)?;
            listeners.push(listener);
        }
        Ok(Listeners {
            listeners,
            reserve_fd: open_reserve(),
            paused_until: None,
        })
    }

    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(TcpListener::local_addr).collect()
    }

    /// When accepting resumes after a pause, if paused.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Ends a pause that is over; returns whether accepting resumed.
    pub fn resume_if_due(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            return true;
        }
        false
    }

    /// Takes one connection off listener `index`'s backlog.
    pub fn accept(&mut self, index: usize, now: Instant) -> Accepted {
        if self.paused_until.is_some() {
            return Accepted::Done;
        }
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return Accepted::Done;
            };
            match listener.accept() {
                Ok((socket, remote)) => {
                    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
                    return Accepted::Socket(socket, remote);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Accepted::Done,
                Err(e) if is_out_of_descriptors(&e) => {
                    if self.refuse_with_reserve(index) {
                        return Accepted::RefusedForDescriptors;
                    }
                    // No descriptor to spare: leave the backlog alone for a
                    // moment rather than spin on the same error.
                    warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.paused_until = Some(now + ACCEPT_BACKOFF);
                    return Accepted::Done;
                }
                Err(e) => debug!("accept: {e}"),
            }
        }
    }

    /// Out of descriptors: frees the reserve one to take a waiting
    /// connection off the backlog and refuse it with 503, then takes the
    /// reserve back. Returns whether a connection was refused.
    fn refuse_with_reserve(&mut self, index: usize) -> bool {
        if self.reserve_fd.take().is_none() {
            return false;
        }
        let refused = match self.listeners.get(index).map(TcpListener::accept) {
            Some(Ok((socket, remote))) => {
                warn!("{remote} refused: out of file descriptors");
                refuse_now(socket, 503, "server out of file descriptors");
                true
            }
            _ => false,
        };
        self.reserve_fd = open_reserve();
        refused
    }

    /// Stops listening (shutdown).
    pub fn close(&mut self, registry: &Registry) {
        for mut listener in self.listeners.drain(..) {
            let _ = registry.deregister(&mut listener);
        }
    }
}

/// Answers a connection we will not keep, then closes it: write the
/// response into the fresh socket's empty send buffer, half-close, and
/// read what already arrived so the close is a FIN, not a reset that could
/// destroy the response in flight.
pub fn refuse_now(mut socket: TcpStream, status: u16, reason: &str) {
    let _ = socket.write(&HttpResponse::text(status, reason).to_bytes());
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 1024];
    while matches!(socket.read(&mut sink), Ok(n) if n > 0) {}
}

fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Binds a non-blocking listener. An IPv6 wildcard also takes IPv4
/// (dual-stack); if IPv6 is unavailable the IPv4 wildcard is used.
fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        if reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    match open(addr) {
        Err(e)
            if addr.is_ipv6()
                && addr.ip().is_unspecified()
                && e.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
        {
            let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
            warn!("IPv6 unavailable ({e}); listening on {v4} only");
            open(v4)
        }
        other => other,
    }
}
