//! The peers: each one's stream, protocol state and clocks, and the
//! batched writing of what the service queued for them.
//!
//! A delivery only queues a shared handle and marks the peer dirty; after
//! the batch of readiness events every dirty peer gets one vectored write
//! ([`Peers::flush_some`]), so a broadcast reaching a peer several times
//! in one pass costs it one system call. A peer whose queue grows long
//! within one pass is written early, so a long batch cannot make every
//! queue grow until the batch ends.
//!
//! Backpressure: a delivery that leaves a recipient whose socket is full
//! with more than [`Pressure::high`] bytes queued pauses the sender being
//! read (its
//! socket is not read again, so TCP flow control slows it down) until
//! that recipient drains to [`Pressure::low`]. A recipient that holds
//! senders back starts its slow-consumer clock (see [`super::timers`]):
//! one that does not drain within the grace is closed, so a stopped
//! reader cannot stall its room for long; one whose queue passes
//! `--max-outbox` (the memory bound) is closed at once.
//!
//! This is also the service's [`Context`]: it encodes messages and
//! delivers them to peers' outboxes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, info, warn};
use mio::{Registry, Token};
use slab::Slab;

use super::addresses::AddressCounts;
use super::flood::FloodGuard;
use super::metrics::Metrics;
use super::remote::Remote;
use super::stream::{Stream, WriteScratch};
use super::timers::{Stage, Tick, Times};
use crate::protocol::connection::{Closure, Connection, Phase, SendError, Settings};
use crate::protocol::deflate::Compressor;
use crate::protocol::extensions::Negotiated;
use crate::protocol::frame::{self, CloseCode, OpCode, RSV1};
use crate::protocol::outbox::{Flush, SharedFrame};
use crate::service::{Clock, Context, HttpReply, HttpTicket, Kind, Outgoing, PeerId};

/// Frames a peer may collect during one pass before they are written
/// early: bounds the queues (and the memory) of a long batch of events.
const EARLY_FLUSH_FRAMES: usize = 256;
/// Bytes a peer may collect during one pass before they are written early.
const EARLY_FLUSH_BYTES: usize = 256 * 1024;

/// The watermarks of backpressure, from `--max-outbox`, and how long a
/// reader may hold senders back (`--slow-consumer-grace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// Queued bytes at a recipient that pause the sender being read.
    pub high: usize,
    /// Queued bytes at or below which the senders it paused resume.
    pub low: usize,
    /// A recipient whose socket has taken none of our bytes for this long
    /// holds no sender back: it is closed as a slow consumer.
    pub grace: Duration,
}

impl Pressure {
    /// Pause at half the slow-consumer limit, resume at a quarter: a
    /// healthy reader's queue stays well under the limit, with one
    /// message per sender of overshoot.
    pub fn for_outbox(max_outbox_bytes: usize, grace: Duration) -> Pressure {
        Pressure {
            high: max_outbox_bytes / 2,
            low: max_outbox_bytes / 4,
            grace,
        }
    }
}

/// A peer as another peer remembers it: its key and the generation of the
/// connection that held the key then, so a key reused by a new connection
/// is not mistaken for the old one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PeerRef {
    key: PeerId,
    generation: u32,
}

/// The socket side of a peer's life, next to its protocol [`Phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Reading and writing.
    Live,
    /// A write failed: the peer is reported lost at the next flush, and
    /// nothing more is written to it.
    Broken,
    /// We shut down our side after the last byte; draining the peer's.
    Lingering,
    /// Waiting to be removed at the end of the batch.
    Gone,
}

pub struct Peer {
    pub stream: Stream,
    pub remote: Remote,
    pub conn: Connection,
    pub transport: Transport,
    pub times: Times,
    /// Queued in the dirty list for the end-of-batch flush.
    dirty: bool,
    pub flood: FloodGuard,
    /// Which connection this is among those that held its key.
    generation: u32,
    /// Recipients holding this sender paused; it is read only at 0.
    paused_by: u32,
    /// What only a peer under backpressure or past its end needs.
    rare: Option<Box<Rare>>,
}

/// The state of a peer that only backpressure or a finished connection
/// gives it, kept out of line: an idle peer carries one word for it, not
/// the 56 bytes of three fields, and idle connections are most of them.
#[derive(Debug, Default)]
struct Rare {
    /// Senders paused because this recipient's queue is high.
    holding: Vec<PeerRef>,
    /// Bytes read but not yet fed when the peer was paused mid-read.
    unread: Vec<u8>,
    /// Bytes read and thrown away since the connection was finished.
    discarded: usize,
}

impl Peer {
    pub fn new(stream: Stream, remote: SocketAddr, now: Tick, generation: u32) -> Peer {
        Peer {
            stream,
            remote: Remote::from(remote),
            conn: Connection::new(),
            transport: Transport::Live,
            times: Times::new(now),
            dirty: false,
            flood: FloodGuard::default(),
            generation,
            paused_by: 0,
            rare: None,
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Counts `n` bytes read and thrown away; returns the total.
    pub fn discard(&mut self, n: usize) -> usize {
        let rare = self.rare();
        rare.discarded = rare.discarded.saturating_add(n);
        rare.discarded
    }

    /// Whether bytes a pause left unread wait to be fed.
    pub fn has_unread(&self) -> bool {
        self.rare.as_ref().is_some_and(|r| !r.unread.is_empty())
    }

    /// Keeps bytes a pause left unread, after those already kept.
    pub fn keep_unread(&mut self, bytes: &[u8]) {
        self.rare().unread.extend_from_slice(bytes);
    }

    /// Takes the bytes a pause left unread (their memory goes with them).
    pub fn take_unread(&mut self) -> Vec<u8> {
        self.rare
            .as_mut()
            .map(|r| std::mem::take(&mut r.unread))
            .unwrap_or_default()
    }

    /// Backpressure holds this peer: its socket is not read.
    pub fn is_paused(&self) -> bool {
        self.paused_by > 0
    }

    /// The stage its deadlines follow.
    pub fn stage(&self) -> Stage {
        match (self.transport, self.conn.phase()) {
            (Transport::Gone, _) => Stage::Gone,
            (Transport::Lingering, _) => Stage::Lingering,
            (_, Phase::Handshake) if self.stream.is_tls_handshaking() => Stage::TlsHandshake,
            // A deferred HTTP answer is due within the handshake's time.
            (_, Phase::Handshake | Phase::Upgrading | Phase::Answering) => Stage::Handshake,
            (_, Phase::Open) => Stage::Open,
            (_, Phase::CloseSent | Phase::Done) => Stage::Closing,
        }
    }

    /// Records what a write achieved: `written` bytes taken by the socket
    /// at `now`. The write-stall clock runs while the socket takes none.
    fn note_write(&mut self, written: usize, now: Tick) {
        if !self.stream.is_blocked() {
            self.times.stalled_since = None;
        } else if written > 0 || self.times.stalled_since.is_none() {
            self.times.stalled_since = Some(now);
        }
    }

    /// Bytes waiting to reach this peer: its outbox and what its stream
    /// holds.
    pub fn queued_bytes(&self) -> usize {
        self.conn.outbox().queued_bytes() + self.stream.buffered()
    }

    /// Writes what the outbox holds as far as the socket takes; returns
    /// the result and the bytes that left the outbox. The write-stall
    /// clock counts what left the stream's own buffer too (a pipe or TLS
    /// records draining into the socket is progress).
    fn write_out(&mut self, scratch: &mut WriteScratch, now: Tick) -> (io::Result<Flush>, usize) {
        let queued = self.conn.outbox().queued_bytes();
        let buffered = self.stream.buffered();
        let result = self.stream.write_from(self.conn.outbox_mut(), scratch);
        let written = queued - self.conn.outbox().queued_bytes();
        let drained = buffered.saturating_sub(self.stream.buffered());
        self.note_write(written + drained, now);
        (result, written)
    }
}

/// The peers and what the service needs to reach them.
pub struct Peers {
    pub slab: Slab<Peer>,
    pub settings: Settings,
    pub pressure: Pressure,
    pub metrics: Metrics,
    /// The peer whose input is being handled: deliveries now are its.
    pub sender: Option<PeerId>,
    /// Counts connections, to tell apart those that held the same key.
    generations: u32,
    /// The loop's clock for this pass, and the same instant as a tick.
    pub clock: Clock,
    pub tick: Tick,
    /// Peers with new frames queued in this batch.
    dirty: Vec<PeerId>,
    /// The dirty list being flushed (kept to reuse its allocation), and
    /// the next of it to write.
    flush_batch: Vec<PeerId>,
    flush_next: usize,
    /// Peers whose outbox overflowed in this batch.
    overflowed: Vec<PeerId>,
    /// Closes the service asked for, done once its call returns.
    close_requests: Vec<(PeerId, CloseCode, &'static str)>,
    /// Peers whose write failed, to be reported lost.
    broken: Vec<PeerId>,
    /// Peers to remove at the end of the batch.
    to_remove: Vec<PeerId>,
    /// Senders no longer paused, to be read again.
    resumed: Vec<PeerId>,
    /// Connections held per client address.
    pub addresses: AddressCounts,
    /// The one compressor of the loop, made the first time a message is
    /// compressed (no context takeover: it serves every connection).
    deflater: Deflater,
    /// The loop's one buffer for gathering small frames into one slice of
    /// a write, and its pipes for splicing large ones.
    scratch: WriteScratch,
}

impl Peers {
    /// Peers held to `settings`; frames of `splice_min_size` bytes or more
    /// are spliced (0: none, see `stream`).
    pub fn new(
        settings: Settings,
        slow_consumer_grace: Duration,
        splice_min_size: usize,
        clock: Clock,
    ) -> Peers {
        Peers {
            slab: Slab::new(),
            pressure: Pressure::for_outbox(settings.max_outbox_bytes, slow_consumer_grace),
            settings,
            metrics: Metrics::default(),
            sender: None,
            generations: 0,
            clock,
            tick: Tick::default(),
            dirty: Vec::new(),
            flush_batch: Vec::new(),
            flush_next: 0,
            overflowed: Vec::new(),
            close_requests: Vec::new(),
            broken: Vec::new(),
            to_remove: Vec::new(),
            resumed: Vec::new(),
            addresses: AddressCounts::default(),
            deflater: Deflater::default(),
            scratch: WriteScratch::new(splice_min_size),
        }
    }

    /// The key the next connection will get (its token).
    pub fn next_key(&self) -> PeerId {
        self.slab.vacant_key()
    }

    /// Adds a new connection (already counted in [`Peers::addresses`]),
    /// with the generation that tells it apart from earlier holders of its
    /// key. Returns its key.
    pub fn insert(&mut self, stream: Stream, remote: SocketAddr) -> PeerId {
        self.generations = self.generations.wrapping_add(1);
        self.slab
            .insert(Peer::new(stream, remote, self.tick, self.generations))
    }

    /// The senders backpressure let go since the last call.
    pub fn take_resumed(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.resumed)
    }

    /// `to`'s queue is high and its socket full: it holds the sender
    /// back, unless its socket has taken nothing for the whole grace.
    ///
    /// Its grace counts from when its socket last took a byte, which for
    /// a reader that stopped is before its queue grew high. Otherwise
    /// stopped readers whose queues grow high one after another (each
    /// only once the last one's close let the sender go) would each hold
    /// the room for a whole grace in turn: 500 stopped readers held a
    /// healthy pair's 10 s of messages for 33 s.
    fn backlogged(&mut self, to: PeerId) {
        let Some(peer) = self.slab.get_mut(to) else {
            return;
        };
        let first = peer.times.backlogged_since.is_none();
        let stalled = peer.times.stalled_since.unwrap_or(self.tick);
        let since = *peer.times.backlogged_since.get_or_insert(stalled);
        if self.tick.since(since) < self.pressure.grace {
            self.hold_sender(to);
        } else if first {
            // It stopped reading a grace ago: closed now (1008), as one
            // past the memory bound is, and nobody waits for it.
            self.overflowed.push(to);
        }
        // Otherwise the sweep closes it within a second; meanwhile it
        // holds no new sender back.
    }

    /// `to` is over the high watermark: the sender being read waits for
    /// it to drain.
    fn hold_sender(&mut self, to: PeerId) {
        let Some(sender) = self.sender.filter(|&s| s != to) else {
            return;
        };
        let Some(generation) = self.slab.get(sender).map(|p| p.generation) else {
            return;
        };
        let held = PeerRef {
            key: sender,
            generation,
        };
        let Some(recipient) = self.slab.get_mut(to) else {
            return;
        };
        let holding = &mut recipient.rare().holding;
        if holding.contains(&held) {
            return;
        }
        holding.push(held);
        if let Some(sender) = self.slab.get_mut(sender) {
            if sender.paused_by == 0 {
                self.metrics.senders_paused += 1;
            }
            sender.paused_by += 1;
        }
    }

    /// Lets go of the senders `key` held (it drained, closed, or is gone).
    pub fn release_held(&mut self, key: PeerId) {
        let Some(peer) = self.slab.get_mut(key) else {
            return;
        };
        let Some(rare) = peer.rare.as_mut().filter(|r| !r.holding.is_empty()) else {
            return;
        };
        for held in std::mem::take(&mut rare.holding) {
            let Some(sender) = self.slab.get_mut(held.key) else {
                continue;
            };
            if sender.generation != held.generation || sender.paused_by == 0 {
                continue;
            }
            sender.paused_by -= 1;
            if sender.paused_by == 0 {
                self.resumed.push(held.key);
            }
        }
    }

    pub fn mark_dirty(&mut self, key: PeerId) {
        if let Some(peer) = self.slab.get_mut(key) {
            if !peer.dirty {
                peer.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// Starts a close the loop decided on: queues Close `code` and returns
    /// the closure to report, if the connection was open.
    pub fn close(
        &mut self,
        key: PeerId,
        code: CloseCode,
        reason: &'static str,
    ) -> Option<(SocketAddr, Closure)> {
        let peer = self.slab.get_mut(key)?;
        let remote = peer.remote.addr();
        let closure = peer.conn.close(code, reason);
        self.mark_dirty(key);
        // It takes no more messages, so it holds no sender back.
        self.release_held(key);
        Some((remote, closure?))
    }

    /// The next peer whose outbox overflowed, to be closed as a slow
    /// consumer.
    pub fn next_overflowed(&mut self) -> Option<PeerId> {
        self.overflowed.pop()
    }

    /// The next close the service asked for.
    pub fn next_close_request(&mut self) -> Option<(PeerId, CloseCode, &'static str)> {
        self.close_requests.pop()
    }

    /// The peers whose writes failed since the last call.
    pub fn take_broken(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.broken)
    }

    /// The transport ended under the connection: the last queued bytes (a
    /// Close reply) get one more chance, then the peer is removed at the
    /// end of the batch. Returns the closure to report, if it was open.
    pub fn drop_peer(&mut self, key: PeerId, why: &'static str) -> Option<(SocketAddr, Closure)> {
        let peer = self.slab.get_mut(key)?;
        if peer.transport == Transport::Gone {
            return None;
        }
        let closure = peer.conn.abort(why);
        if peer.transport == Transport::Live && !peer.conn.outbox().is_empty() {
            let _ = peer.write_out(&mut self.scratch, self.tick);
        }
        peer.transport = Transport::Gone;
        let remote = peer.remote.addr();
        self.to_remove.push(key);
        self.release_held(key);
        match closure {
            Some(closure) => Some((remote, closure)),
            None => {
                debug!("{remote} gone: {why}");
                None
            }
        }
    }

    /// Removes the peers that ended in this batch.
    pub fn remove_gone(&mut self, registry: &Registry) {
        for key in self.to_remove.drain(..) {
            if self.slab.contains(key) {
                let mut peer = self.slab.remove(key);
                if let Some(piped) = peer.stream.take_pipe() {
                    self.scratch.splicer.forget(piped);
                }
                self.addresses.remove(peer.remote.ip());
                peer.stream.deregister(registry);
                debug!("{} removed", peer.remote);
            }
        }
    }

    /// Writes every peer with new frames, until no one is left dirty.
    /// Peers whose write fails are left in [`Peers::take_broken`].
    /// Writes up to `max` of the dirty peers, in the order they were
    /// marked; returns whether some are still waiting. A peer marked again
    /// while it waits in the current round keeps its place, so frames
    /// queued for it meanwhile go out in the same write.
    pub fn flush_some(&mut self, registry: &Registry, max: usize) -> bool {
        let mut written = 0;
        while written < max {
            if self.flush_next == self.flush_batch.len() {
                self.flush_batch.clear();
                self.flush_next = 0;
                std::mem::swap(&mut self.flush_batch, &mut self.dirty);
                if self.flush_batch.is_empty() {
                    return false;
                }
            }
            let key = self.flush_batch[self.flush_next];
            self.flush_next += 1;
            if let Some(peer) = self.slab.get_mut(key) {
                peer.dirty = false;
                if !peer.stream.awaiting_writable() {
                    self.flush(key, registry);
                    written += 1;
                }
            }
        }
        true
    }

    /// The socket drained: write what waits.
    pub fn on_writable(&mut self, key: PeerId, registry: &Registry) {
        if self
            .slab
            .get(key)
            .is_some_and(|p| p.stream.awaiting_writable())
        {
            self.flush(key, registry);
        }
    }

    /// Writes what the peer has queued; asks for WRITABLE only while bytes
    /// remain; half-closes once its last byte is out.
    fn flush(&mut self, key: PeerId, registry: &Registry) {
        let Some(peer) = self.slab.get_mut(key) else {
            return;
        };
        match peer.transport {
            Transport::Live => {}
            Transport::Broken => return self.broken.push(key),
            Transport::Lingering | Transport::Gone => return,
        }
        let (result, written) = peer.write_out(&mut self.scratch, self.tick);
        self.metrics.bytes_out += written as u64;
        if result.is_err() {
            peer.transport = Transport::Broken;
            self.broken.push(key);
            return;
        }
        if let Err(e) = peer.stream.sync_interest(registry, Token(key)) {
            warn!("{}: reregister: {e}", peer.remote);
        }
        let drained = peer.queued_bytes() <= self.pressure.low;
        if drained {
            peer.times.backlogged_since = None;
        }
        if peer.conn.is_finished() && peer.stream.buffered() == 0 {
            self.finish(key);
        }
        if drained {
            self.release_held(key);
        }
    }

    /// Our last byte is out: half-close and drain what the peer still
    /// sends, so the kernel does not answer it with a reset that could
    /// destroy our final frames in flight.
    fn finish(&mut self, key: PeerId) {
        let Some(peer) = self.slab.get_mut(key) else {
            return;
        };
        if peer.stream.shutdown_write().is_err() {
            peer.transport = Transport::Gone;
            self.to_remove.push(key);
            return;
        }
        peer.transport = Transport::Lingering;
        peer.times.observe(Stage::Lingering, self.tick);
    }

    /// The loop went quiet after a burst: empty queues give back their
    /// buffers.
    pub fn release_idle_buffers(&mut self) {
        for (_, peer) in self.slab.iter_mut() {
            peer.conn.outbox_mut().release_if_empty();
        }
        self.scratch.splicer.release_idle();
    }

    /// The writes of a pass are done: the splicer's stages whose frame no
    /// outbox queues let it go.
    pub fn end_of_writes(&mut self) {
        self.scratch.splicer.release_unqueued();
    }

    /// Bytes spliced into sockets (large frames fanned out by reference).
    pub fn spliced_bytes(&self) -> u64 {
        self.scratch.splicer.spliced()
    }

    /// Bytes waiting in every peer's queue.
    pub fn queued_bytes(&self) -> usize {
        self.slab.iter().map(|(_, p)| p.queued_bytes()).sum()
    }
}

impl Context for Peers {
    fn clock(&self) -> Clock {
        self.clock
    }

    fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> Outgoing {
        self.metrics.messages_out += 1;
        encode_message(kind, parts)
    }

    fn deliver(&mut self, to: PeerId, message: &Outgoing) {
        let Some(peer) = self.slab.get_mut(to) else {
            return;
        };
        if peer.transport != Transport::Live {
            return;
        }
        // The plain path takes no reference count of its own.
        let deflated = peer.conn.deflate().and_then(|terms| {
            self.deflater
                .frame_for(message, terms, self.settings.compression_min_size)
        });
        match peer
            .conn
            .send(deflated.as_ref().unwrap_or(message.plain()), &self.settings)
        {
            Ok(()) => {
                self.metrics.deliveries += 1;
                self.metrics.deliveries_compressed += u64::from(deflated.is_some());
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(to);
                }
                let outbox = peer.conn.outbox();
                let long = outbox.frames() >= EARLY_FLUSH_FRAMES
                    || outbox.queued_bytes() >= EARLY_FLUSH_BYTES;
                if long && !peer.stream.is_blocked() {
                    // A long batch: hand the kernel what is queued now.
                    // A full socket is dealt with by the end-of-batch flush
                    // (the peer stays dirty); a failed write marks the peer
                    // broken, so it is written to no more.
                    let (result, written) = peer.write_out(&mut self.scratch, self.tick);
                    self.metrics.bytes_out += written as u64;
                    if result.is_err() {
                        peer.transport = Transport::Broken;
                    }
                }
                // Only a recipient whose socket is full holds senders back: a
                // queue that grew within this pass toward a socket that
                // takes everything is written at its end.
                if peer.stream.is_blocked() && peer.queued_bytes() >= self.pressure.high {
                    self.backlogged(to);
                }
            }
            Err(SendError::NotOpen) => {}
            Err(SendError::Overflow) => self.overflowed.push(to),
        }
    }

    fn close(&mut self, to: PeerId, code: u16, reason: &'static str) {
        self.close_requests.push((to, CloseCode(code), reason));
    }

    fn answer_http(&mut self, ticket: HttpTicket, reply: HttpReply) {
        let key = ticket.key();
        let Some(peer) = self.slab.get_mut(key) else {
            return;
        };
        if peer.generation != ticket.generation()
            || peer.transport != Transport::Live
            || peer.conn.phase() != Phase::Answering
        {
            return;
        }
        let response = super::ops::response(reply);
        info!("{} HTTP answered -> {}", peer.remote, response.status);
        peer.conn.respond(&response);
        self.mark_dirty(key);
    }
}

impl Peers {
    /// The ticket of `key`'s HTTP request, for a service that answers it
    /// later.
    pub fn http_ticket(&self, key: PeerId) -> Option<HttpTicket> {
        self.slab
            .get(key)
            .map(|peer| HttpTicket::new(key, peer.generation))
    }
}

/// One unfragmented server frame of `kind` whose payload is `parts`
/// concatenated, built in one allocation: what [`Context::encode`] hands
/// the service (the fan-out bench builds its frames with it too).
pub fn encode_message(kind: Kind, parts: &[&[u8]]) -> Outgoing {
    let opcode = match kind {
        Kind::Text => OpCode::Text,
        Kind::Binary => OpCode::Binary,
    };
    let len = parts.iter().map(|p| p.len()).sum();
    let mut header = [0u8; frame::MAX_SERVER_HEADER_LEN];
    Outgoing::from_plain(SharedFrame::concat(
        frame::encode_header(true, opcode, len, &mut header),
        parts,
    ))
}

/// The loop's compressors and scratch buffer, and the choice of frame
/// for a recipient that negotiated `permessage-deflate`.
#[derive(Debug, Default)]
struct Deflater {
    /// The full (15-bit) window: every peer but those that asked for less.
    compressor: Option<Compressor>,
    /// Smaller windows, made when a peer that asked for one first needs
    /// a message longer than its window.
    narrow: Vec<(u8, Compressor)>,
    scratch: Vec<u8>,
}

impl Deflater {
    /// The frame of `message` for a recipient with `terms`: compressed
    /// (RSV1) when it is at least `min_size` long, else `None` for the
    /// plain one. Each format is compressed once per message, the first
    /// time any recipient asks. A message is compressed whatever it
    /// gains: random bytes grow by a few bytes at most (stored blocks), and
    /// a rule by size alone keeps every peer's choice the same.
    fn frame_for(
        &mut self,
        message: &Outgoing,
        terms: Negotiated,
        min_size: usize,
    ) -> Option<SharedFrame> {
        let payload_len = frame::split_server_frame(message.plain().as_bytes())?
            .1
            .len();
        if payload_len < min_size.max(1) {
            return None;
        }
        if terms.may_compress(payload_len) {
            // Matches reach back less than the message's length, which
            // fits the window: the shared full-window frame will do.
            return message
                .deflated(|plain| {
                    compress(
                        plain,
                        self.compressor.get_or_insert_with(Compressor::new),
                        &mut self.scratch,
                    )
                })
                .cloned();
        }
        let bits = terms.server_window_bits();
        let at = match self.narrow.iter().position(|(b, _)| *b == bits) {
            Some(at) => at,
            None => {
                self.narrow.push((bits, Compressor::for_window(bits)));
                self.narrow.len() - 1
            }
        };
        let (narrow, scratch) = (&mut self.narrow[at].1, &mut self.scratch);
        message.deflated_narrow(bits, |plain| compress(plain, narrow, scratch))
    }
}

/// RFC 7692 §7.2.1 on the payload of `plain`, as a frame with RSV1 set.
fn compress(
    plain: &SharedFrame,
    compressor: &mut Compressor,
    scratch: &mut Vec<u8>,
) -> Option<SharedFrame> {
    let (first, payload) = frame::split_server_frame(plain.as_bytes())?;
    let opcode = OpCode::from_bits(first & 0x0F)?;
    scratch.clear();
    compressor.compress_into(&[payload], scratch);
    let mut header = [0u8; frame::MAX_SERVER_HEADER_LEN];
    let head = frame::encode_header_with(true, RSV1, opcode, scratch.len(), &mut header);
    let deflated = SharedFrame::concat(head, &[scratch.as_slice()]);
    if scratch.capacity() > 64 * 1024 {
        *scratch = Vec::new(); // a rare long message keeps no buffer
    }
    Some(deflated)
}

#[cfg(test)]
mod size_tests {
    use super::{Peer, Stream};

    /// An idle connection costs its `Peer` in the slab and little more
    /// (README, "Memory": S4's 0.4 KiB per idle connection): what only
    /// some connections need is boxed out of line (`Rare`, a message being
    /// assembled, a split control frame, the outbox's queue), the
    /// address is 18 bytes (`remote`), and this keeps it so.
    #[test]
    fn an_idle_peer_stays_small() {
        // mio's socket is one descriptor in release builds and carries a
        // selector id besides in debug ones: count the stream apart.
        let socket = std::mem::size_of::<mio::net::TcpStream>();
        let stream = std::mem::size_of::<Stream>();
        // Its socket with the tag and write state beside it, and a word
        // (a TLS box, or a plain socket's pipe): 16 bytes in release.
        assert!(
            stream <= (socket + 3).next_multiple_of(8) + 8,
            "a stream is its socket and a word ({stream} bytes)"
        );
        // 184 bytes in a release build.
        let rest = std::mem::size_of::<Peer>() - stream;
        assert!(rest <= 168, "Peer grew to {rest} bytes besides its stream");
    }
}
