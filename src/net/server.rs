//! The event loop: one thread, one `mio::Poll`, every socket in it.
//!
//! This is the only module that touches sockets. It accepts connections,
//! reads into one buffer shared by all of them, feeds the bytes to each
//! peer's [`Connection`], passes what comes out to the [`Service`], and
//! writes each peer's queued frames after every batch of readiness events,
//! so that a broadcast reaching a peer several times in one pass costs it
//! one `writev`.
//!
//! Tokens: a peer's token is its key in the `Slab` of peers; listeners and
//! the signal pipe take tokens from the top of the `usize` range, which no
//! slab key reaches. A peer that ends is removed only after the whole
//! batch of events is handled, so a key freed in a batch cannot be reused
//! for a new connection while stale events for the old one are pending.
//!
//! Timers are coarse (a sweep over all peers once a second): every
//! deadline here is seconds long.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::config::Timing;
use crate::net::flood::{FloodGuard, FloodLimits, Verdict};
use crate::net::metrics::{Gauges, Metrics};
use crate::protocol::connection::{
    Closure, Connection, Event, Input, Message, Phase, SendError, Settings,
};
use crate::protocol::frame::{self, CloseCode, OpCode};
use crate::protocol::handshake::{HttpRequest, HttpResponse, Refusal};
use crate::protocol::outbox::{Flush, SharedFrame};
use crate::service::{Kind, Opened, Outbound, PeerId, Service};

const SIGNALS: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// Slab keys stay below this, far from the reserved tokens.
const MAX_PEER_KEY: usize = usize::MAX - 1024;

/// How long one read may be; also the shared read buffer's size. Large
/// enough that a 64 KiB message usually arrives whole and is lent out
/// without a copy; there is one such buffer for the whole server.
const READ_BUFFER: usize = 256 * 1024;
/// Frames a peer may collect during one pass before they are written
/// early: bounds the queues (and the memory) of a long batch of events.
const EARLY_FLUSH_FRAMES: usize = 256;
/// How long the loop must have nothing to do, after handling events,
/// before it hands freed memory back to the kernel.
const TRIM_WHEN_IDLE_FOR: Duration = Duration::from_millis(50);
/// Reads one peer gets per pass before the others have their turn.
const READS_PER_PASS: usize = 8;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How long to stop accepting after the process ran out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// How long a closed connection may drain the peer's last bytes, so that
/// closing with unread input does not reset away our final frames.
const LINGER: Duration = Duration::from_secs(2);

/// Milliseconds since the server started, in 32 bits to keep per-peer
/// state small. It wraps after 49 days; only differences are taken, with
/// wrapping arithmetic, and every deadline is far shorter than that.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tick(u32);

impl Tick {
    fn since_start(started: Instant, now: Instant) -> Tick {
        Tick(now.duration_since(started).as_millis() as u32)
    }

    /// The time from `earlier` to `self`.
    fn since(self, earlier: Tick) -> Duration {
        Duration::from_millis(u64::from(self.0.wrapping_sub(earlier.0)))
    }
}

/// What the loop needs beyond the per-connection settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub settings: Settings,
    pub timing: Timing,
    pub flood: FloodLimits,
    pub max_connections: usize,
}

/// The socket side of a peer's life, next to its protocol [`Phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// Reading and writing.
    Live,
    /// We shut down our side after the last byte; draining the peer's.
    Lingering,
    /// Waiting to be removed at the end of the batch.
    Gone,
}

struct Peer {
    socket: TcpStream,
    remote: SocketAddr,
    conn: Connection,
    transport: Transport,
    /// The protocol phase as of the last sweep, and since when.
    phase: Phase,
    phase_since: Tick,
    last_read: Tick,
    /// When our heartbeat ping went out, while it is unanswered.
    ping_sent: Option<Tick>,
    /// WRITABLE interest is registered (the outbox hit a full socket).
    awaiting_writable: bool,
    /// Queued in `Hub::dirty` for the end-of-batch flush.
    dirty: bool,
    flood: FloodGuard,
}

/// The peers and what the service needs to reach them.
struct Hub {
    peers: Slab<Peer>,
    settings: Settings,
    /// Peers with new frames queued in this batch.
    dirty: Vec<PeerId>,
    /// Peers whose outbox overflowed in this batch.
    overflowed: Vec<PeerId>,
    metrics: Metrics,
}

impl Hub {
    fn mark_dirty(&mut self, key: PeerId) {
        if let Some(peer) = self.peers.get_mut(key) {
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(key);
            }
        }
    }
}

impl Outbound for Hub {
    fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> SharedFrame {
        let opcode = match kind {
            Kind::Text => OpCode::Text,
            Kind::Binary => OpCode::Binary,
        };
        let len = parts.iter().map(|p| p.len()).sum();
        self.metrics.messages_out += 1;
        let mut header = [0u8; frame::MAX_SERVER_HEADER_LEN];
        SharedFrame::concat(frame::encode_header(true, opcode, len, &mut header), parts)
    }

    fn deliver(&mut self, to: PeerId, frame: &SharedFrame) {
        let Some(peer) = self.peers.get_mut(to) else {
            return;
        };
        match peer.conn.send(frame, &self.settings) {
            Ok(()) => {
                self.metrics.deliveries += 1;
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(to);
                }
                let outbox = peer.conn.outbox_mut();
                if outbox.frames() >= EARLY_FLUSH_FRAMES && !peer.awaiting_writable {
                    // A long batch: hand the kernel what is queued now rather
                    // than let every queue grow until the batch ends. Errors
                    // and a full socket are dealt with by the end-of-batch
                    // flush, which sees them again (the peer stays dirty).
                    let before = outbox.queued_bytes();
                    let _ = outbox.write_to(&mut peer.socket);
                    self.metrics.bytes_out += (before - outbox.queued_bytes()) as u64;
                }
            }
            Err(SendError::NotOpen) => {}
            Err(SendError::Overflow) => self.overflowed.push(to),
        }
    }
}

/// The running server.
pub struct Server<S: Service> {
    poll: Poll,
    listeners: Vec<TcpListener>,
    signals: Signals,
    hub: Hub,
    service: S,
    timing: Timing,
    flood: FloodLimits,
    max_connections: usize,
    /// A descriptor held back so that, when the process runs out, one can
    /// be freed to accept and refuse a waiting connection (as nginx does).
    reserve_fd: Option<std::fs::File>,
    read_buf: Vec<u8>,
    /// Peers that still had bytes to read when their turn ended.
    read_again: Vec<PeerId>,
    /// The dirty list being flushed (kept to reuse its allocation).
    flush_batch: Vec<PeerId>,
    to_remove: Vec<PeerId>,
    started: Instant,
    now: Instant,
    /// `now` as a [`Tick`].
    tick: Tick,
    next_sweep: Instant,
    accept_paused_until: Option<Instant>,
    /// Events were handled since memory was last handed back.
    busy_since_trim: bool,
    /// Set once a signal asked us to stop: the time we give up waiting.
    shutdown_deadline: Option<Instant>,
}

impl<S: Service> Server<S> {
    /// Binds the listener and the signal handlers.
    pub fn bind(config: ServerConfig, service: S) -> io::Result<Server<S>> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::from_std(bind_listener(config.listen)?);
        poll.registry()
            .register(&mut listener, Token(LISTENER_BASE), Interest::READABLE)?;
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let now = Instant::now();
        Ok(Server {
            poll,
            listeners: vec![listener],
            signals,
            hub: Hub {
                peers: Slab::new(),
                settings: config.settings,
                dirty: Vec::new(),
                overflowed: Vec::new(),
                metrics: Metrics::default(),
            },
            service,
            timing: config.timing,
            flood: config.flood,
            max_connections: config.max_connections.min(MAX_PEER_KEY),
            reserve_fd: open_reserve(),
            read_buf: vec![0; READ_BUFFER],
            read_again: Vec::new(),
            flush_batch: Vec::new(),
            to_remove: Vec::new(),
            started: now,
            now,
            tick: Tick(0),
            next_sweep: now + SWEEP_EVERY,
            accept_paused_until: None,
            shutdown_deadline: None,
            busy_since_trim: false,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> io::Result<Vec<SocketAddr>> {
        self.listeners.iter().map(TcpListener::local_addr).collect()
    }

    /// Runs until a signal asks to stop and every peer is gone (or the
    /// close timeout passes).
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            self.tick = Tick::since_start(self.started, self.now);
            if events.is_empty() && self.busy_since_trim {
                self.shed_memory();
                self.busy_since_trim = false;
            }
            self.busy_since_trim |= !events.is_empty();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.on_signal(),
                    Token(t) if t > MAX_PEER_KEY => self.accept(LISTENER_BASE - t),
                    Token(key) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            let to_eof = event.is_read_closed() || event.is_error();
                            self.on_readable(key, to_eof);
                        }
                        if event.is_writable() {
                            self.on_writable(key);
                        }
                    }
                }
            }
            self.after_batch();
            if let Some(deadline) = self.shutdown_deadline {
                if self.hub.peers.is_empty() {
                    info!("shutdown complete");
                    return Ok(());
                }
                if self.now >= deadline {
                    info!(
                        "shutdown: dropping {} unfinished connections",
                        self.hub.peers.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    fn poll_timeout(&self) -> Duration {
        if !self.read_again.is_empty() {
            return Duration::ZERO;
        }
        if self.busy_since_trim {
            return TRIM_WHEN_IDLE_FOR;
        }
        let mut wake = self.next_sweep;
        if let Some(resume) = self.accept_paused_until {
            wake = wake.min(resume);
        }
        wake.saturating_duration_since(Instant::now())
    }

    /// Everything done once per pass, after the readiness events.
    fn after_batch(&mut self) {
        for key in std::mem::take(&mut self.read_again) {
            self.on_readable(key, true);
        }
        self.flush_dirty();
        if self.accept_paused_until.is_some_and(|t| self.now >= t) {
            self.accept_paused_until = None;
            for i in 0..self.listeners.len() {
                self.accept(i);
            }
        }
        if self.now >= self.next_sweep {
            self.next_sweep = self.now + SWEEP_EVERY;
            self.sweep();
            self.service.on_tick(self.now);
            self.flush_dirty();
        }
        for key in self.to_remove.drain(..) {
            if self.hub.peers.contains(key) {
                let mut peer = self.hub.peers.remove(key);
                let _ = self.poll.registry().deregister(&mut peer.socket);
                debug!("{} removed", peer.remote);
            }
        }
    }

    // ----- accepting -----

    fn accept(&mut self, index: usize) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((socket, remote)) => self.admit(socket, remote),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_out_of_descriptors(&e) => {
                    if self.refuse_with_reserve(index) {
                        continue;
                    }
                    // No descriptor to spare: leave the backlog alone for a
                    // moment rather than spin on the same error.
                    warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(self.now + ACCEPT_BACKOFF);
                    return;
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
                self.hub.metrics.refusal("out of file descriptors");
                refuse_now(socket, 503, "server out of file descriptors");
                true
            }
            _ => false,
        };
        self.reserve_fd = open_reserve();
        refused
    }

    fn admit(&mut self, mut socket: TcpStream, remote: SocketAddr) {
        // IPv4 clients of the dual-stack listener arrive as ::ffff:a.b.c.d.
        let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
        self.hub.metrics.connections_accepted += 1;
        if self.hub.peers.len() >= self.max_connections {
            warn!(
                "{remote} refused: at the connection limit ({})",
                self.max_connections
            );
            self.hub.metrics.refusal("connection limit");
            refuse_now(socket, 503, "server at its connection limit");
            return;
        }
        if let Err(e) = socket.set_nodelay(true) {
            debug!("{remote}: TCP_NODELAY: {e}");
        }
        let entry = self.hub.peers.vacant_entry();
        let key = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), Interest::READABLE)
        {
            warn!("{remote}: register: {e}");
            return;
        }
        entry.insert(Peer {
            socket,
            remote,
            conn: Connection::new(),
            transport: Transport::Live,
            phase: Phase::Handshake,
            phase_since: self.tick,
            last_read: self.tick,
            ping_sent: None,
            awaiting_writable: false,
            dirty: false,
            flood: FloodGuard::default(),
        });
        debug!("{remote} accepted as {key}");
    }

    // ----- reading -----

    /// Reads what the peer sent. With edge-triggered readiness a short
    /// read proves the socket drained (unless the peer also closed, which
    /// needs one more read to see). A peer that keeps the socket full is
    /// cut off after [`READS_PER_PASS`] reads and resumed next pass, so
    /// one fast sender cannot starve the rest.
    fn on_readable(&mut self, key: PeerId, to_eof: bool) {
        // The buffer leaves `self` while its bytes are lent to events.
        let mut buf = std::mem::take(&mut self.read_buf);
        let mut reads = 0;
        while let Some(peer) = self.hub.peers.get_mut(key) {
            if peer.transport == Transport::Gone {
                break;
            }
            if reads == READS_PER_PASS {
                self.read_again.push(key);
                break;
            }
            reads += 1;
            match peer.socket.read(&mut buf) {
                Ok(0) => {
                    self.lost(key, "connection closed by peer");
                    break;
                }
                Ok(n) => {
                    peer.last_read = self.tick;
                    peer.ping_sent = None;
                    if peer.transport == Transport::Live {
                        self.feed(key, &mut buf[..n]);
                    }
                    if n < buf.len() && !to_eof {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.lost(key, "connection reset");
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// Runs freshly read bytes through the peer's connection.
    fn feed(&mut self, key: PeerId, bytes: &mut [u8]) {
        let mut input = Input::new(bytes);
        loop {
            let Some(peer) = self.hub.peers.get_mut(key) else {
                return;
            };
            let Some(event) = peer.conn.next_event(&mut input, &self.hub.settings) else {
                break;
            };
            self.dispatch(key, event);
            self.settle_overflows();
        }
        self.hub.mark_dirty(key);
    }

    fn dispatch(&mut self, key: PeerId, event: Event<'_>) {
        let Some(peer) = self.hub.peers.get_mut(key) else {
            return;
        };
        let remote = peer.remote;
        match event {
            Event::Upgrade(upgrade) => {
                let opened = Opened {
                    remote,
                    target: &upgrade.target,
                    protocol: upgrade.protocol.as_deref(),
                };
                if let Err(refusal) = self.service.admit(&opened) {
                    self.hub.metrics.refusal(refusal.reason);
                    info!("{remote} handshake refused: {}", refusal.reason);
                    peer.conn.respond(&refusal.response);
                    return;
                }
                peer.conn.accept(&upgrade);
                self.hub.metrics.websockets_opened += 1;
                info!(
                    "{remote} connected to {}{}",
                    upgrade.target,
                    upgrade
                        .protocol
                        .as_deref()
                        .map(|p| format!(" with protocol {p}"))
                        .unwrap_or_default()
                );
                self.service.on_open(key, opened, &mut self.hub);
            }
            Event::Http(request) => {
                self.hub.metrics.http_requests += 1;
                let response = self.answer_http(&request);
                info!(
                    "{remote} HTTP GET {} -> {}",
                    request.target, response.status
                );
                if let Some(peer) = self.hub.peers.get_mut(key) {
                    peer.conn.respond(&response);
                }
            }
            Event::Refused(reason) => {
                self.hub.metrics.refusal(reason);
                info!("{remote} handshake refused: {reason}");
            }
            Event::Message(message) => self.on_message(key, message),
            Event::Closed(closure) => self.report_closure(key, remote, closure),
        }
    }

    /// A message passes flood control before the service sees it.
    fn on_message(&mut self, key: PeerId, message: Message<'_>) {
        let Some(peer) = self.hub.peers.get_mut(key) else {
            return;
        };
        let len = match &message {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        };
        self.hub.metrics.messages_in += 1;
        self.hub.metrics.bytes_in += len as u64;
        match peer.flood.check(self.tick.0, self.flood) {
            Verdict::Allow => self.service.on_message(key, message, &mut self.hub),
            Verdict::Drop { warn } => {
                self.hub.metrics.flood_drops += 1;
                if warn {
                    warn!(
                        "{} is over the message rate ({}/s): dropping its messages",
                        peer.remote, self.flood.rate
                    );
                    self.service.on_throttled(key, &mut self.hub);
                }
            }
            Verdict::Close => {
                let remote = peer.remote;
                if let Some(closure) = peer
                    .conn
                    .close(CloseCode::POLICY_VIOLATION, "message rate over the limit")
                {
                    self.hub.metrics.flood_closes += 1;
                    warn!("{remote} kept flooding: closing");
                    self.report_closure(key, remote, closure);
                }
            }
        }
    }

    /// The loop's own endpoints; anything else is the service's.
    fn answer_http(&mut self, request: &HttpRequest) -> HttpResponse {
        let path = request.target.split('?').next().unwrap_or_default();
        match path {
            "/healthz" => HttpResponse::text(200, "ok"),
            "/metrics" => {
                let mut body = String::with_capacity(4096);
                let gauges = Gauges {
                    connections: self.hub.peers.len(),
                    open: self
                        .hub
                        .peers
                        .iter()
                        .filter(|(_, p)| p.conn.phase() == Phase::Open)
                        .count(),
                    queued_bytes: self
                        .hub
                        .peers
                        .iter()
                        .map(|(_, p)| p.conn.outbox().queued_bytes())
                        .sum(),
                };
                self.hub.metrics.render(gauges, &mut body);
                self.service.render_metrics(&mut body);
                HttpResponse {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    headers: Vec::new(),
                    body: body.into_bytes(),
                }
            }
            _ => self.service.on_http(request),
        }
    }

    fn report_closure(&mut self, key: PeerId, remote: SocketAddr, closure: Closure) {
        let who = if closure.by_peer { "peer" } else { "server" };
        info!(
            "{remote} disconnected: code {} by {who} ({})",
            closure.code, closure.detail
        );
        self.service.on_close(key, closure.code, &mut self.hub);
    }

    /// Closes the peers that stopped reading (§7.4.1 1008: "a message that
    /// violates its policy").
    fn settle_overflows(&mut self) {
        while let Some(key) = self.hub.overflowed.pop() {
            let Some(peer) = self.hub.peers.get_mut(key) else {
                continue;
            };
            let queued = peer.conn.outbox().queued_bytes();
            let remote = peer.remote;
            if let Some(closure) = peer
                .conn
                .close(CloseCode::POLICY_VIOLATION, "slow consumer")
            {
                self.hub.metrics.slow_consumer_closes += 1;
                warn!("{remote} is a slow consumer ({queued} bytes queued): closing");
                self.hub.mark_dirty(key);
                self.report_closure(key, remote, closure);
            }
        }
    }

    /// The transport ended under the connection.
    fn lost(&mut self, key: PeerId, why: &'static str) {
        let Some(peer) = self.hub.peers.get_mut(key) else {
            return;
        };
        let remote = peer.remote;
        let closure = peer.conn.abort(why);
        // A Close reply already queued gets one last chance to leave.
        if peer.transport == Transport::Live && !peer.conn.outbox().is_empty() {
            let _ = peer.conn.outbox_mut().write_to(&mut peer.socket);
        }
        peer.transport = Transport::Gone;
        self.to_remove.push(key);
        if let Some(closure) = closure {
            self.report_closure(key, remote, closure);
            self.settle_overflows();
        } else {
            debug!("{remote} gone: {why}");
        }
    }

    // ----- writing -----

    /// Writes every peer with new frames. Flushing can mark more peers
    /// dirty (a failed write is a departure, announced to the others), so
    /// this goes round until no one is left.
    fn flush_dirty(&mut self) {
        let mut batch = std::mem::take(&mut self.flush_batch);
        loop {
            std::mem::swap(&mut batch, &mut self.hub.dirty);
            if batch.is_empty() {
                break;
            }
            for &key in &batch {
                if let Some(peer) = self.hub.peers.get_mut(key) {
                    peer.dirty = false;
                    if !peer.awaiting_writable {
                        self.flush(key);
                    }
                }
            }
            batch.clear();
        }
        self.flush_batch = batch;
    }

    fn on_writable(&mut self, key: PeerId) {
        if self.hub.peers.get(key).is_some_and(|p| p.awaiting_writable) {
            self.flush(key);
        }
    }

    /// Writes what the peer has queued; asks for WRITABLE only while bytes
    /// remain.
    fn flush(&mut self, key: PeerId) {
        let Some(peer) = self.hub.peers.get_mut(key) else {
            return;
        };
        if peer.transport != Transport::Live {
            return;
        }
        let before = peer.conn.outbox().queued_bytes();
        let result = peer.conn.outbox_mut().write_to(&mut peer.socket);
        self.hub.metrics.bytes_out += (before - peer.conn.outbox().queued_bytes()) as u64;
        let blocked = match result {
            Ok(Flush::Done) => false,
            Ok(Flush::Blocked) => true,
            Err(_) => {
                self.lost(key, "write failed");
                return;
            }
        };
        if blocked != peer.awaiting_writable {
            let interest = if blocked {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut peer.socket, Token(key), interest)
            {
                warn!("{}: reregister: {e}", peer.remote);
            }
            peer.awaiting_writable = blocked;
        }
        if peer.conn.is_finished() {
            self.finish(key);
        }
    }

    /// Our last byte is out: half-close and drain what the peer still
    /// sends, so the kernel does not answer it with a reset that could
    /// destroy our final frames in flight.
    fn finish(&mut self, key: PeerId) {
        let Some(peer) = self.hub.peers.get_mut(key) else {
            return;
        };
        if peer.transport != Transport::Live {
            return;
        }
        if peer.socket.shutdown(std::net::Shutdown::Write).is_err() {
            peer.transport = Transport::Gone;
            self.to_remove.push(key);
            return;
        }
        peer.transport = Transport::Lingering;
        peer.phase_since = self.tick;
    }

    // ----- timers -----

    /// Enforces every deadline: handshake, heartbeat, close and linger.
    fn sweep(&mut self) {
        let now = self.tick;
        let timing = self.timing;
        let mut expired: Vec<(PeerId, Expiry)> = Vec::new();
        for (key, peer) in self.hub.peers.iter_mut() {
            let phase = peer.conn.phase();
            if phase != peer.phase {
                peer.phase = phase;
                peer.phase_since = now;
            }
            let in_phase = now.since(peer.phase_since);
            let silent = now.since(peer.last_read);
            let expiry = match (peer.transport, phase) {
                (Transport::Gone, _) => None,
                (Transport::Lingering, _) => (in_phase >= LINGER).then_some(Expiry::Linger),
                (Transport::Live, Phase::Handshake | Phase::Upgrading) => {
                    (in_phase >= timing.handshake_timeout).then_some(Expiry::Handshake)
                }
                // Dropped only after a ping went unanswered for the whole
                // pong timeout: a late sweep delays the ping, never skips it.
                (Transport::Live, Phase::Open) => match peer.ping_sent {
                    Some(at) => (now.since(at) >= timing.pong_timeout).then_some(Expiry::Silent),
                    None => (silent >= timing.ping_interval).then_some(Expiry::Idle),
                },
                (Transport::Live, Phase::CloseSent | Phase::Done) => {
                    (in_phase >= timing.close_timeout).then_some(Expiry::Closing)
                }
            };
            if let Some(expiry) = expiry {
                expired.push((key, expiry));
            }
        }
        for (key, expiry) in expired {
            self.expire(key, expiry);
        }
    }

    /// The loop went quiet after a burst: empty queues give back their
    /// buffers and the heap hands its free pages back to the kernel, so
    /// what a join storm or a flood needed does not stay resident. Busy
    /// connections keep their buffers while traffic lasts.
    fn shed_memory(&mut self) {
        for (_, peer) in self.hub.peers.iter_mut() {
            peer.conn.outbox_mut().release_if_empty();
        }
        release_freed_memory();
    }

    fn expire(&mut self, key: PeerId, expiry: Expiry) {
        let Some(peer) = self.hub.peers.get_mut(key) else {
            return;
        };
        match expiry {
            Expiry::Handshake => {
                let refusal = Refusal::timed_out();
                info!("{} handshake refused: {}", peer.remote, refusal.reason);
                self.hub.metrics.refusal(refusal.reason);
                peer.conn.refuse(&refusal);
                self.hub.mark_dirty(key);
            }
            Expiry::Idle => {
                peer.ping_sent = Some(self.tick);
                peer.conn.ping(b"");
                self.hub.mark_dirty(key);
            }
            Expiry::Silent => {
                self.hub.metrics.idle_timeouts += 1;
                self.lost(key, "no answer to ping");
            }
            Expiry::Closing => self.lost(key, "close handshake timed out"),
            Expiry::Linger => {
                peer.transport = Transport::Gone;
                self.to_remove.push(key);
            }
        }
    }

    // ----- shutdown -----

    fn on_signal(&mut self) {
        let signals: Vec<i32> = self.signals.pending().collect();
        for signal in signals {
            if self.shutdown_deadline.is_some() {
                info!("signal {signal} again: exiting now");
                std::process::exit(0);
            }
            self.begin_shutdown(signal);
        }
    }

    /// Stops accepting and sends every user Close 1001 (§7.4.1: "an
    /// endpoint is 'going away', such as a server going down").
    fn begin_shutdown(&mut self, signal: i32) {
        info!(
            "signal {signal}: shutting down, closing {} connections",
            self.hub.peers.len()
        );
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let keys: Vec<PeerId> = self.hub.peers.iter().map(|(key, _)| key).collect();
        let mut closures = Vec::new();
        for &key in &keys {
            let peer = &mut self.hub.peers[key];
            if let Some(closure) = peer
                .conn
                .close(CloseCode::GOING_AWAY, "server shutting down")
            {
                closures.push((key, peer.remote, closure));
            }
            self.hub.mark_dirty(key);
        }
        for (key, remote, closure) in closures {
            self.report_closure(key, remote, closure);
        }
        self.shutdown_deadline = Some(self.now + self.timing.close_timeout);
    }
}

#[derive(Clone, Copy, Debug)]
enum Expiry {
    Handshake,
    Idle,
    Silent,
    Closing,
    Linger,
}

/// Answers a connection we will not keep, then closes it: write the
/// response into the fresh socket's empty send buffer, half-close, and
/// read what already arrived so the close is a FIN, not a reset that could
/// destroy the response in flight.
fn refuse_now(mut socket: TcpStream, status: u16, reason: &str) {
    let _ = socket.write(&HttpResponse::text(status, reason).to_bytes());
    let _ = socket.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 1024];
    while matches!(socket.read(&mut sink), Ok(n) if n > 0) {}
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
fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let open = |addr: SocketAddr| -> io::Result<std::net::TcpListener> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
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
