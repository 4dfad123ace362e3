//! The service's upstream connections (Redis, for the cluster) as sockets
//! in the loop's one poll: no thread, no blocking client, no channel.
//!
//! The loop carries bytes and nothing more. Each [`Upstream`] says which
//! socket it wants ([`Upstream::wanted_socket`]: a number that grows with
//! each reconnect, or `None` while it backs off), when its next deadline
//! is, and what to write; this module opens a non-blocking
//! [`mio::net::TcpStream`] when a new number is wanted, closes the old
//! one, feeds what it reads, writes what is queued until the socket would
//! block, and calls `handle_timeout` when a deadline passes. What the
//! bytes mean (RESP, logins, subscriptions, backoff) is the upstream's.
//!
//! Tokens: upstream `i` has token [`TOKEN_BASE`]` - i`, in the range the
//! loop reserves at the top of `usize` for itself (slab keys stay below
//! `usize::MAX - 1024`; the signal pipe and listeners take the top few),
//! so an upstream's token never meets a peer's.

use std::io::{self, Read, Write};
use std::time::Instant;

use log::{debug, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::service::{Service, Upstream, MAX_UPSTREAMS};

/// Upstream `i` has token `TOKEN_BASE - i`: below the listeners'
/// (`usize::MAX - 1` down), above every slab key (`usize::MAX - 1024`).
pub const TOKEN_BASE: usize = usize::MAX - 512;

// Below every listener token (a handful from `usize::MAX - 1` down),
// above every slab key (below `usize::MAX - 1024`), checked when compiled.
const _: () =
    assert!(TOKEN_BASE < usize::MAX - 8 && TOKEN_BASE - MAX_UPSTREAMS > usize::MAX - 1024);

/// The upstream index a token belongs to, if it is an upstream's.
pub fn index_of(token: Token) -> Option<usize> {
    let i = TOKEN_BASE.checked_sub(token.0)?;
    (i < MAX_UPSTREAMS).then_some(i)
}

/// One upstream's socket.
#[derive(Debug, Default)]
struct Slot {
    /// The socket and which of the upstream's connections it is.
    sock: Option<(u64, TcpStream)>,
    /// The connect finished (the upstream was told).
    connected: bool,
}

/// Every upstream's socket.
#[derive(Debug, Default)]
pub struct Upstreams {
    slots: Vec<Slot>,
    /// The earliest upstream deadline, as of the last [`Upstreams::sync`].
    wake: Option<Instant>,
}

impl Upstreams {
    /// Sockets for the upstreams `service` has now (none: this module
    /// costs the loop nothing).
    pub fn new(service: &mut impl Service) -> Upstreams {
        let count = (0..MAX_UPSTREAMS)
            .take_while(|&i| service.upstream(i).is_some())
            .count();
        Upstreams {
            slots: (0..count).map(|_| Slot::default()).collect(),
            wake: None,
        }
    }

    /// Whether there are upstreams at all.
    pub fn is_active(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The earliest deadline of any upstream.
    pub fn wake(&self) -> Option<Instant> {
        self.wake
    }

    /// Runs the upstreams' due timeouts, opens and closes sockets as they
    /// want, and writes what they have queued.
    pub fn sync(&mut self, service: &mut impl Service, registry: &Registry, now: Instant) {
        self.wake = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(up) = service.upstream(i) else {
                continue;
            };
            if up.poll_timeout().is_some_and(|t| t <= now) {
                up.handle_timeout(now);
            }
            let wanted = up.wanted_socket();
            let current = slot.sock.as_ref().map(|(n, _)| *n);
            if current.is_some() && current != wanted {
                if let Some((_, mut sock)) = slot.sock.take() {
                    let _ = registry.deregister(&mut sock);
                }
                slot.connected = false;
            }
            if let (Some(n), None) = (wanted, &slot.sock) {
                let addr = up.addr();
                match TcpStream::connect(addr) {
                    Ok(mut sock) => {
                        let token = Token(TOKEN_BASE - i);
                        match registry.register(
                            &mut sock,
                            token,
                            Interest::READABLE | Interest::WRITABLE,
                        ) {
                            Ok(()) => {
                                debug!("upstream {i}: connecting to {addr}");
                                slot.sock = Some((n, sock));
                            }
                            Err(e) => {
                                warn!("upstream {i}: register: {e}");
                                up.on_error(now, e.kind());
                            }
                        }
                    }
                    Err(e) => up.on_error(now, e.kind()),
                }
            }
            if slot.connected {
                write_out(slot, up, now);
            }
            if let Some(t) = up.poll_timeout() {
                self.wake = Some(self.wake.map_or(t, |w: Instant| w.min(t)));
            }
        }
    }

    /// A readiness event for upstream `i`: finishes a connect, reads
    /// everything there is, writes what is queued.
    pub fn on_event(
        &mut self,
        i: usize,
        event: &Event,
        service: &mut impl Service,
        buf: &mut [u8],
        now: Instant,
    ) {
        let (Some(slot), Some(up)) = (self.slots.get_mut(i), service.upstream(i)) else {
            return;
        };
        let Some((_, sock)) = slot.sock.as_mut() else {
            return;
        };
        if !slot.connected {
            match sock.take_error() {
                Ok(None) if sock.peer_addr().is_ok() => {
                    slot.connected = true;
                    let _ = sock.set_nodelay(true);
                    up.on_connected(now);
                }
                // Not connected yet (a spurious wakeup).
                Ok(None) if !event.is_error() => return,
                Ok(None) => return up.on_error(now, io::ErrorKind::ConnectionRefused),
                Ok(Some(e)) | Err(e) => return up.on_error(now, e.kind()),
            }
        }
        loop {
            let Some((_, sock)) = slot.sock.as_mut() else {
                return;
            };
            match sock.read(buf) {
                Ok(0) => {
                    up.on_eof(now);
                    return;
                }
                Ok(n) => up.on_input(now, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    up.on_error(now, e.kind());
                    return;
                }
            }
        }
        write_out(slot, up, now);
    }
}

/// Writes the upstream's output until it is all out or the socket would
/// block (edge-triggered WRITABLE interest brings us back then).
fn write_out(slot: &mut Slot, up: &mut dyn Upstream, now: Instant) {
    while let Some((_, sock)) = slot.sock.as_mut() {
        let out = up.output();
        if out.is_empty() {
            return;
        }
        match sock.write(out) {
            Ok(0) => return up.on_error(now, io::ErrorKind::WriteZero),
            Ok(n) => up.advance_output(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return up.on_error(now, e.kind()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_tokens_sit_between_peers_and_listeners() {
        assert_eq!(index_of(Token(TOKEN_BASE)), Some(0));
        assert_eq!(index_of(Token(TOKEN_BASE - 1)), Some(1));
        assert_eq!(index_of(Token(TOKEN_BASE - MAX_UPSTREAMS)), None);
        assert_eq!(index_of(Token(TOKEN_BASE + 1)), None);
        assert_eq!(index_of(Token(usize::MAX)), None);
    }
}
