//! The event loop: one thread, one `mio::Poll`, every socket in it.
//!
//! Each pass reads the clock once, handles the batch of readiness events
//! (accepting, reading into one buffer shared by all peers, feeding each
//! peer's [`Connection`](crate::protocol::connection::Connection) and passing what comes out to the [`Service`]),
//! then writes every peer with queued frames once, applies the timers'
//! verdicts once a second, and removes the peers that ended. A long
//! flush (a fan-out to hundreds of sockets) looks for new input every
//! `FLUSH_CHUNK` peers, so a message that arrives meanwhile shares the
//! write to every recipient not yet written (S3 p50 7 ms -> 4 ms, S2W
//! +25% in side-by-side runs; README, Performance).
//!
//! Tokens: a peer's token is its key in the `Slab` of peers; listeners and
//! the signal pipe take tokens from the top of the `usize` range, which no
//! slab key reaches, and the service's upstream connections (Redis) take
//! theirs from [`upstream::TOKEN_BASE`] down, between the two. A peer that ends is removed only after the whole
//! batch of events is handled, so a key freed in a batch cannot be reused
//! for a new connection while stale events for the old one are pending.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Poll, Token};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook_mio::v1_0::Signals;

use super::accept::{refuse_now, Accepted, Listeners};
use super::flood::FloodLimits;
use super::peers::{Peers, Transport};
use super::stream::Stream;
use super::timers::{Tick, Timing};
use super::tls::TlsIdentity;
use super::upstream::{self, Upstreams};
use crate::protocol::connection::{Input, Settings};
use crate::protocol::frame::CloseCode;
use crate::service::{Clock, PeerId, Service};

mod dispatch;
mod sweep;

const SIGNALS: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Slab keys stay below this, far from the reserved tokens.
const MAX_PEER_KEY: usize = usize::MAX - 1024;

/// How long one read may be; also the shared read buffer's size. Large
/// enough that a 64 KiB message usually arrives whole and is lent out
/// without a copy; there is one such buffer for the whole server.
const READ_BUFFER: usize = 256 * 1024;
/// How long the loop must have nothing to do, after handling events,
/// before it hands freed memory back to the kernel.
const TRIM_WHEN_IDLE_FOR: Duration = Duration::from_millis(50);
/// Peers written between two looks for new input during a flush: some
/// 80 µs of writes on loopback, against the one `epoll_wait` that looks
/// (16 gave S3 p99 7.7-10.6 ms, 64 gave 8-25 ms, in interleaved runs).
const FLUSH_CHUNK: usize = 16;
/// Looks for new input during one pass's flushes at most: new messages
/// cannot keep a pass from ending (and the timers from running).
const MAX_POLLS_IN_FLUSH: usize = 256;
/// Bytes one peer may be read per pass before the others have their turn.
/// It also bounds what one pass can queue toward a recipient from one
/// sender, with backpressure pausing a sender between messages.
const READ_BUDGET: usize = 512 * 1024;
/// Bytes read and thrown away from a connection that is finished (our
/// last bytes are out or it was refused) before it is dropped.
const DISCARD_LIMIT: usize = 256 * 1024;
/// Connections accepted from one listener per pass.
const ACCEPT_BATCH: usize = 256;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// A pass that starts this much later than the loop meant to is a stall
/// (the process was stopped, or the loop fell behind).
const STALL: Duration = Duration::from_secs(1);
/// How long after a stall flood control allows for its backlog.
const STALL_FORGIVEN_FOR: Duration = Duration::from_secs(5);

/// What the loop needs beyond the service.
pub struct ServerConfig {
    /// The plain listener (`None`: TLS only).
    pub listen: Option<SocketAddr>,
    /// The TLS listener and its certificate.
    pub tls: Option<(SocketAddr, TlsIdentity)>,
    pub settings: Settings,
    pub timing: Timing,
    pub flood: FloodLimits,
    pub max_connections: usize,
    /// Most connections one client address (an IPv6 /64) may hold; 0: no
    /// limit.
    pub max_connections_per_ip: usize,
    /// `SO_REUSEPORT` on the listeners (several nodes on one port).
    pub reuse_port: bool,
    /// Frames of at least this many bytes are spliced to plain sockets
    /// from shared kernel pages (0: never; see `stream`).
    pub splice_min_size: usize,
}

/// The running server.
pub struct Server<S: Service> {
    poll: Poll,
    listeners: Listeners,
    signals: Signals,
    peers: Peers,
    /// The TLS listener's index among the listeners, and its certificate.
    tls: Option<(usize, TlsIdentity)>,
    service: S,
    timing: Timing,
    flood: FloodLimits,
    max_connections: usize,
    max_connections_per_ip: usize,
    /// A listener's backlog was not drained last pass.
    accept_again: bool,
    read_buf: Vec<u8>,
    /// Peers that still had bytes to read when their turn ended.
    read_again: Vec<PeerId>,
    started: Instant,
    next_sweep: Instant,
    /// Events were handled since memory was last handed back.
    busy_since_trim: bool,
    /// Set once a signal asked us to stop: the time we give up waiting.
    shutdown_deadline: Option<Instant>,
    /// Where [`Server::poll_during_flush`] collects events.
    flush_events: Events,
    /// After a stall: until when, and the flood limits allowing for it.
    stall_forgiven: Option<(Instant, FloodLimits)>,
    /// The service's upstream sockets (none for a single chat node).
    upstreams: Upstreams,
}

impl<S: Service> Server<S> {
    /// Binds the listener and the signal handlers. The service's
    /// subprotocols join the handshake policy.
    pub fn bind(config: ServerConfig, service: S) -> io::Result<Server<S>> {
        let poll = Poll::new()?;
        let mut addrs: Vec<SocketAddr> = config.listen.into_iter().collect();
        let tls = config.tls.map(|(addr, identity)| {
            addrs.push(addr);
            (addrs.len() - 1, identity)
        });
        let listeners = Listeners::bind(&addrs, poll.registry(), LISTENER_BASE, config.reuse_port)?;
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2])?;
        poll.registry()
            .register(&mut signals, SIGNALS, mio::Interest::READABLE)?;
        let mut settings = config.settings;
        settings.handshake.protocols = service.protocols();
        let clock = Clock::read();
        let mut service = service;
        let upstreams = Upstreams::new(&mut service);
        Ok(Server {
            poll,
            listeners,
            signals,
            peers: Peers::new(
                settings,
                config.timing.slow_consumer_grace,
                config.splice_min_size,
                clock,
            ),
            tls,
            service,
            timing: config.timing,
            flood: config.flood,
            max_connections: config.max_connections.min(MAX_PEER_KEY),
            max_connections_per_ip: config.max_connections_per_ip,
            accept_again: false,
            read_buf: vec![0; READ_BUFFER],
            read_again: Vec::new(),
            started: clock.now,
            next_sweep: clock.now + SWEEP_EVERY,
            busy_since_trim: false,
            shutdown_deadline: None,
            flush_events: Events::with_capacity(256),
            stall_forgiven: None,
            upstreams,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.local_addrs()
    }

    /// Runs until a signal asks to stop and every peer is gone (or the
    /// close timeout passes).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            let polled_at = Instant::now();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let previous = self.peers.clock.now;
            self.peers.clock = Clock::read();
            self.peers.tick = Tick::since_start(self.started, self.peers.clock.now);
            self.notice_stall(previous, polled_at, timeout);
            if events.is_empty() && self.busy_since_trim {
                self.shed_memory();
                self.busy_since_trim = false;
            }
            self.busy_since_trim |= !events.is_empty();
            for event in events.iter() {
                self.on_event(event);
            }
            self.after_batch();
            if let Some(deadline) = self.shutdown_deadline {
                if self.peers.slab.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.peers.clock.now >= deadline {
                    let left = self.peers.slab.len();
                    info!("shutdown: dropping {left} unfinished connections");
                    return Ok(());
                }
            }
        }
    }

    fn on_event(&mut self, event: &Event) {
        match event.token() {
            SIGNALS => self.on_signal(),
            Token(t) if t > MAX_PEER_KEY => match upstream::index_of(Token(t)) {
                Some(i) => {
                    let now = self.peers.clock.now;
                    self.upstreams
                        .on_event(i, event, &mut self.service, &mut self.read_buf, now);
                }
                None => self.accept(LISTENER_BASE - t),
            },
            Token(key) => {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    let to_eof = event.is_read_closed() || event.is_error();
                    self.on_readable(key, to_eof);
                }
                if event.is_writable() {
                    self.peers.on_writable(key, self.poll.registry());
                }
            }
        }
    }

    /// A pass that began long after it should have (the last pass took
    /// long, or the poll woke late) means everyone's messages piled up in
    /// the kernel meanwhile: flood control allows for them for a while.
    fn notice_stall(&mut self, previous: Instant, polled_at: Instant, timeout: Duration) {
        let now = self.peers.clock.now;
        let busy = polled_at.saturating_duration_since(previous);
        let overslept = now.saturating_duration_since(polled_at + timeout);
        let stall = busy.max(overslept);
        if stall >= STALL && self.flood.rate > 0 {
            warn!("the loop stood still for {stall:?}: allowing for the backlog");
            self.stall_forgiven = Some((now + STALL_FORGIVEN_FOR, self.flood.after_stall(stall)));
        } else if self.stall_forgiven.is_some_and(|(until, _)| now >= until) {
            self.stall_forgiven = None;
        }
    }

    /// The flood limits in force this pass.
    fn flood_limits(&self) -> FloodLimits {
        self.stall_forgiven.map_or(self.flood, |(_, limits)| limits)
    }

    fn poll_timeout(&self) -> Duration {
        if !self.read_again.is_empty() || self.accept_again {
            return Duration::ZERO;
        }
        if self.busy_since_trim {
            return TRIM_WHEN_IDLE_FOR;
        }
        let mut wake = self.next_sweep;
        if let Some(resume) = self.listeners.paused_until() {
            wake = wake.min(resume);
        }
        if let Some(deadline) = self.shutdown_deadline {
            wake = wake.min(deadline);
        }
        if let Some(due) = self.upstreams.wake() {
            wake = wake.min(due);
        }
        wake.saturating_duration_since(Instant::now())
    }

    /// Everything done once per pass, after the readiness events.
    fn after_batch(&mut self) {
        for key in std::mem::take(&mut self.read_again) {
            self.on_readable(key, true);
        }
        if self.upstreams.is_active() {
            self.drive_upstreams();
        }
        self.flush();
        let now = self.peers.clock.now;
        let resumed = self.listeners.resume_if_due(now);
        if resumed || std::mem::take(&mut self.accept_again) {
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            self.sweep();
            self.service.on_tick(&mut self.peers);
            self.settle_closes();
            self.flush();
        }
        // What the sweep and the writes gathered (e.g. departures told to
        // other nodes) goes out.
        if self.upstreams.is_active() {
            self.send_upstream();
        }
        self.peers.remove_gone(self.poll.registry());
    }

    /// The upstreams' timeouts and sockets, then the service acts on what
    /// they said (which may deliver to peers and queue more toward them),
    /// then what it gathered is sent.
    fn drive_upstreams(&mut self) {
        let now = self.peers.clock.now;
        self.upstreams
            .sync(&mut self.service, self.poll.registry(), now);
        self.service.on_upstream(&mut self.peers);
        self.send_upstream();
    }

    /// What the service gathered since the last time (e.g. a room's
    /// messages toward Redis, one script call per room) goes out, and the
    /// upstreams are written.
    fn send_upstream(&mut self) {
        let now = self.peers.clock.now;
        self.service.on_batch_end(&mut self.peers);
        self.upstreams
            .sync(&mut self.service, self.poll.registry(), now);
    }

    /// Writes every peer with queued frames; a failed write is a
    /// departure, announced to the others, which queues more.
    fn flush(&mut self) {
        let mut polls = 0;
        loop {
            while self.peers.flush_some(self.poll.registry(), FLUSH_CHUNK) {
                if polls < MAX_POLLS_IN_FLUSH {
                    polls += 1;
                    self.poll_during_flush();
                }
            }
            let broken = self.peers.take_broken();
            if broken.is_empty() {
                break;
            }
            for key in broken {
                self.lost(key, "write failed");
            }
        }
        self.peers.end_of_writes();
        // Senders whose recipients drained are read again next pass.
        self.read_again.extend(self.peers.take_resumed());
    }

    /// A long fan-out takes a while to write (a few µs of kernel time per
    /// recipient): what arrived meanwhile is read now, so a message sent
    /// during it goes out in the same write as the one before to every
    /// recipient not written yet, instead of waiting for the whole
    /// fan-out and then costing each recipient a second system call.
    /// The upstreams are driven too: what a sender said goes to Redis now,
    /// and what Redis sent back is delivered now, rather than each waiting
    /// for the fan-out's end (in cluster mode that wait was most of the
    /// p99: 3.2-3.5 ms against 1.9 ms with it, `perf/cluster.sh 5`).
    fn poll_during_flush(&mut self) {
        let mut events = std::mem::replace(&mut self.flush_events, Events::with_capacity(0));
        match self.poll.poll(&mut events, Some(Duration::ZERO)) {
            Ok(()) => {
                for event in events.iter() {
                    self.on_event(event);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => warn!("poll during a flush: {e}"),
        }
        let any = !events.is_empty();
        self.flush_events = events;
        if any && self.upstreams.is_active() {
            self.drive_upstreams();
        }
    }

    // ----- accepting -----

    /// Accepts up to [`ACCEPT_BATCH`] connections; the rest of the backlog
    /// waits for the next pass, so a connection storm cannot hold up the
    /// peers already connected.
    fn accept(&mut self, index: usize) {
        for _ in 0..ACCEPT_BATCH {
            match self.listeners.accept(index, self.peers.clock.now) {
                Accepted::Socket(socket, remote) => self.admit(socket, remote, index),
                Accepted::RefusedForDescriptors => {
                    self.peers.metrics.connections_accepted += 1;
                    self.peers.metrics.refusal("out of file descriptors");
                }
                Accepted::Done => return,
            }
        }
        self.accept_again = true;
    }

    fn admit(&mut self, socket: TcpStream, remote: SocketAddr, listener: usize) {
        self.peers.metrics.connections_accepted += 1;
        if self.peers.slab.len() >= self.max_connections {
            warn!(
                "{remote} refused: at the connection limit ({})",
                self.max_connections
            );
            self.peers.metrics.refusal("connection limit");
            refuse_now(socket, 503, "server at its connection limit");
            return;
        }
        if !self
            .peers
            .addresses
            .try_add(remote.ip(), self.max_connections_per_ip)
        {
            warn!(
                "{remote} refused: its address holds {} connections already",
                self.max_connections_per_ip
            );
            self.peers.metrics.refusal("connections per address");
            refuse_now(socket, 503, "too many connections from your address");
            return;
        }
        let mut stream = match &self.tls {
            Some((index, identity)) if *index == listener => {
                match rustls::ServerConnection::new(identity.config()) {
                    Ok(conn) => Stream::tls(socket, conn),
                    Err(e) => {
                        warn!("{remote}: TLS: {e}");
                        self.peers.addresses.remove(remote.ip());
                        return;
                    }
                }
            }
            _ => Stream::plain(socket),
        };
        if let Err(e) = stream.set_nodelay() {
            debug!("{remote}: TCP_NODELAY: {e}");
        }
        let key = self.peers.next_key();
        if let Err(e) = stream.register(self.poll.registry(), Token(key)) {
            warn!("{remote}: register: {e}");
            self.peers.addresses.remove(remote.ip());
            return;
        }
        let key = self.peers.insert(stream, remote);
        debug!("{remote} accepted as {key}");
    }

    // ----- reading -----

    /// Reads what the peer sent. With edge-triggered readiness a short
    /// read proves the socket drained (unless the peer also closed, which
    /// needs one more read to see). A peer that keeps the socket full is
    /// cut off after [`READ_BUDGET`] bytes and resumed next pass, so one
    /// fast sender cannot starve the rest; a peer paused by backpressure
    /// is not read at all (its bytes wait in the kernel, and TCP slows
    /// the sender) until the recipients it filled have drained.
    fn on_readable(&mut self, key: PeerId, to_eof: bool) {
        if !self.feed_unread(key) {
            return;
        }
        // The buffer leaves `self` while its bytes are lent to events.
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut budget = READ_BUDGET;
        while let Some(peer) = self.peers.slab.get_mut(key) {
            if peer.transport == Transport::Gone || peer.is_paused() {
                break;
            }
            if budget == 0 {
                self.read_again.push(key);
                break;
            }
            let want = budget.min(buf.len());
            match peer.stream.read(&mut buf[..want]) {
                Ok(0) => {
                    self.lost(key, "connection closed by peer");
                    break;
                }
                Ok(n) => {
                    let drained = peer.stream.drained_by(n, want);
                    budget -= n;
                    peer.times.on_read(self.peers.tick);
                    if peer.transport == Transport::Live && peer.conn.wants_input() {
                        self.feed(key, &mut buf[..n]);
                    } else if peer.discard(n) > DISCARD_LIMIT {
                        // Refused or finished, and it keeps writing: stop
                        // reading what nobody will look at.
                        self.peers.drop_peer(key, "kept sending after the end");
                        break;
                    }
                    if drained && !to_eof {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    info!("{} dropped: TLS: {e}", peer.remote);
                    self.peers.metrics.refusal("TLS error");
                    self.lost(key, "TLS error");
                    break;
                }
                Err(_) => {
                    self.lost(key, "connection reset");
                    break;
                }
            }
        }
        self.read_buf = buf;
        // TLS handshake records the socket would not take are written when
        // it drains, as frames are.
        if self
            .peers
            .slab
            .get(key)
            .is_some_and(|p| p.stream.buffered() > 0)
        {
            self.peers.mark_dirty(key);
        }
    }

    /// Feeds what a pause left unread; returns whether the socket may be
    /// read now.
    fn feed_unread(&mut self, key: PeerId) -> bool {
        let Some(peer) = self.peers.slab.get_mut(key) else {
            return false;
        };
        if peer.is_paused() {
            return false;
        }
        if !peer.has_unread() {
            return true;
        }
        let mut unread = peer.take_unread();
        self.feed(key, &mut unread);
        self.peers
            .slab
            .get(key)
            .is_some_and(|p| !p.is_paused() && !p.has_unread())
    }

    /// Runs bytes read from the peer through its connection. If a message
    /// pauses it (backpressure), the bytes after that message are kept
    /// for when it resumes.
    fn feed(&mut self, key: PeerId, bytes: &mut [u8]) {
        let mut input = Input::new(bytes);
        self.peers.sender = Some(key);
        while let Some(peer) = self.peers.slab.get_mut(key) {
            if peer.is_paused() {
                if peer.transport == Transport::Live && !input.is_empty() {
                    peer.keep_unread(input.remaining());
                }
                break;
            }
            let Some(event) = peer.conn.next_event(&mut input, &self.peers.settings) else {
                break;
            };
            self.dispatch(key, event);
            self.settle_closes();
        }
        self.peers.sender = None;
        if let Some(peer) = self.peers.slab.get_mut(key) {
            let partial = &mut peer.times.partial_since;
            match (peer.conn.is_mid_message(), *partial) {
                (true, None) => *partial = Some(self.peers.tick),
                (false, Some(_)) => *partial = None,
                _ => {}
            }
        }
        self.peers.mark_dirty(key);
    }

    // ----- shutdown -----

    /// SIGINT and SIGTERM stop the server (a second one at once); SIGHUP
    /// reloads the TLS certificate and key (connections open keep theirs;
    /// a bad file is logged and the old certificate kept); SIGUSR1 and SIGUSR2 are ignored,
    /// so a stray `kill -USR1` does not end every chat.
    fn on_signal(&mut self) {
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            match signal {
                SIGHUP => self.reload_tls(),
                SIGUSR1 | SIGUSR2 => info!("signal {signal} ignored"),
                _ if self.shutdown_deadline.is_some() => {
                    info!("signal {signal} again: exiting now");
                    std::process::exit(0);
                }
                _ => self.begin_shutdown(signal),
            }
        }
    }

    fn reload_tls(&mut self) {
        let Some((_, identity)) = &mut self.tls else {
            info!("SIGHUP: no TLS certificate to reload; carrying on");
            return;
        };
        match identity.reload() {
            Ok(()) => info!("SIGHUP: TLS certificate reloaded; new connections use it"),
            Err(e) => warn!("SIGHUP: TLS certificate not reloaded, keeping the old one: {e}"),
        }
    }

    /// Stops accepting and sends every user Close 1001 (§7.4.1: "an
    /// endpoint is 'going away', such as a server going down").
    fn begin_shutdown(&mut self, signal: i32) {
        info!(
            "signal {signal}: shutting down, closing {} connections",
            self.peers.slab.len()
        );
        self.listeners.close(self.poll.registry());
        let keys: Vec<PeerId> = self.peers.slab.iter().map(|(key, _)| key).collect();
        let mut closures = Vec::new();
        for key in keys {
            let closed = self
                .peers
                .close(key, CloseCode::GOING_AWAY, "server shutting down");
            closures.extend(closed.map(|(remote, closure)| (key, remote, closure)));
        }
        for (key, remote, closure) in closures {
            self.report_closure(key, remote, closure);
        }
        self.shutdown_deadline = Some(self.peers.clock.now + self.timing.close_timeout);
    }
}

/// Gives memory freed after a burst back to the kernel. glibc keeps freed
/// chunks in the middle of the heap mapped, so the queues of a join storm
/// or a flood would otherwise stay in the resident set for good.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory() {
    // SAFETY: malloc_trim has no preconditions; it only hands whole free
    // pages back to the kernel and leaves every live allocation alone.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}
