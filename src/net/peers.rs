//! The peers: each one's stream, protocol state and clocks, and the
//! batched writing of what the service queued for them.
//!
//! A delivery only queues a shared handle and marks the peer dirty; after
//! the batch of readiness events every dirty peer gets one vectored write
//! ([`Peers::flush_dirty`]), so a broadcast reaching a peer several times
//! in one pass costs it one system call. A peer whose queue grows long
//! within one pass is written early, so a long batch cannot make every
//! queue grow until the batch ends.
//!
//! This is also the service's [`Context`]: it encodes messages and
//! delivers them to peers' outboxes.

use std::net::SocketAddr;

use log::{debug, warn};
use mio::{Registry, Token};
use slab::Slab;

use super::flood::FloodGuard;
use super::metrics::Metrics;
use super::stream::Stream;
use super::timers::{Stage, Tick, Times};
use crate::protocol::connection::{Closure, Connection, Phase, SendError, Settings};
use crate::protocol::frame::{self, CloseCode, OpCode};
use crate::protocol::outbox::{Flush, SharedFrame};
use crate::service::{Clock, Context, Kind, Outgoing, PeerId};

/// Frames a peer may collect during one pass before they are written
/// early: bounds the queues (and the memory) of a long batch of events.
const EARLY_FLUSH_FRAMES: usize = 256;

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
    pub remote: SocketAddr,
    pub conn: Connection,
    pub transport: Transport,
    pub times: Times,
    /// Queued in the dirty list for the end-of-batch flush.
    dirty: bool,
    pub flood: FloodGuard,
}

impl Peer {
    pub fn new(stream: Stream, remote: SocketAddr, now: Tick) -> Peer {
        Peer {
            stream,
            remote,
            conn: Connection::new(),
            transport: Transport::Live,
            times: Times::new(now),
            dirty: false,
            flood: FloodGuard::default(),
        }
    }

    /// The stage its deadlines follow.
    pub fn stage(&self) -> Stage {
        match (self.transport, self.conn.phase()) {
            (Transport::Gone, _) => Stage::Gone,
            (Transport::Lingering, _) => Stage::Lingering,
            (_, Phase::Handshake | Phase::Upgrading) => Stage::Handshake,
            (_, Phase::Open) => Stage::Open,
            (_, Phase::CloseSent | Phase::Done) => Stage::Closing,
        }
    }

    /// Bytes waiting to reach this peer: its outbox and what its stream
    /// holds.
    pub fn queued_bytes(&self) -> usize {
        self.conn.outbox().queued_bytes() + self.stream.buffered()
    }
}

/// The peers and what the service needs to reach them.
pub struct Peers {
    pub slab: Slab<Peer>,
    pub settings: Settings,
    pub metrics: Metrics,
    /// The loop's clock for this pass, and the same instant as a tick.
    pub clock: Clock,
    pub tick: Tick,
    /// Peers with new frames queued in this batch.
    dirty: Vec<PeerId>,
    /// The dirty list being flushed (kept to reuse its allocation).
    flush_batch: Vec<PeerId>,
    /// Peers whose outbox overflowed in this batch.
    overflowed: Vec<PeerId>,
    /// Peers whose write failed, to be reported lost.
    broken: Vec<PeerId>,
    /// Peers to remove at the end of the batch.
    to_remove: Vec<PeerId>,
}

impl Peers {
    pub fn new(settings: Settings, clock: Clock) -> Peers {
        Peers {
            slab: Slab::new(),
            settings,
            metrics: Metrics::default(),
            clock,
            tick: Tick(0),
            dirty: Vec::new(),
            flush_batch: Vec::new(),
            overflowed: Vec::new(),
            broken: Vec::new(),
            to_remove: Vec::new(),
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
        let remote = peer.remote;
        let closure = peer.conn.close(code, reason);
        self.mark_dirty(key);
        Some((remote, closure?))
    }

    /// The next peer whose outbox overflowed, to be closed as a slow
    /// consumer.
    pub fn next_overflowed(&mut self) -> Option<PeerId> {
        self.overflowed.pop()
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
            let _ = peer.stream.write_from(peer.conn.outbox_mut());
        }
        peer.transport = Transport::Gone;
        self.to_remove.push(key);
        match closure {
            Some(closure) => Some((peer.remote, closure)),
            None => {
                debug!("{} gone: {why}", peer.remote);
                None
            }
        }
    }

    /// Removes the peers that ended in this batch.
    pub fn remove_gone(&mut self, registry: &Registry) {
        for key in self.to_remove.drain(..) {
            if self.slab.contains(key) {
                let mut peer = self.slab.remove(key);
                peer.stream.deregister(registry);
                debug!("{} removed", peer.remote);
            }
        }
    }

    /// Writes every peer with new frames, until no one is left dirty.
    /// Peers whose write fails are left in [`Peers::take_broken`].
    pub fn flush_dirty(&mut self, registry: &Registry) {
        let mut batch = std::mem::take(&mut self.flush_batch);
        loop {
            std::mem::swap(&mut batch, &mut self.dirty);
            if batch.is_empty() {
                break;
            }
            for &key in &batch {
                if let Some(peer) = self.slab.get_mut(key) {
                    peer.dirty = false;
                    if !peer.stream.awaiting_writable() {
                        self.flush(key, registry);
                    }
                }
            }
            batch.clear();
        }
        self.flush_batch = batch;
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
        let before = peer.conn.outbox().queued_bytes();
        let result = peer.stream.write_from(peer.conn.outbox_mut());
        self.metrics.bytes_out += (before - peer.conn.outbox().queued_bytes()) as u64;
        let blocked = match result {
            Ok(Flush::Done) => false,
            Ok(Flush::Blocked) => true,
            Err(_) => {
                peer.transport = Transport::Broken;
                self.broken.push(key);
                return;
            }
        };
        if let Err(e) = peer.stream.want_writable(registry, Token(key), blocked) {
            warn!("{}: reregister: {e}", peer.remote);
        }
        if peer.conn.is_finished() {
            self.finish(key);
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
        let opcode = match kind {
            Kind::Text => OpCode::Text,
            Kind::Binary => OpCode::Binary,
        };
        let len = parts.iter().map(|p| p.len()).sum();
        self.metrics.messages_out += 1;
        let mut header = [0u8; frame::MAX_SERVER_HEADER_LEN];
        Outgoing::from_plain(SharedFrame::concat(
            frame::encode_header(true, opcode, len, &mut header),
            parts,
        ))
    }

    fn deliver(&mut self, to: PeerId, message: &Outgoing) {
        let Some(peer) = self.slab.get_mut(to) else {
            return;
        };
        if peer.transport != Transport::Live {
            return;
        }
        match peer.conn.send(message.plain(), &self.settings) {
            Ok(()) => {
                self.metrics.deliveries += 1;
                if !peer.dirty {
                    peer.dirty = true;
                    self.dirty.push(to);
                }
                let outbox = peer.conn.outbox_mut();
                if outbox.frames() >= EARLY_FLUSH_FRAMES && !peer.stream.awaiting_writable() {
                    // A long batch: hand the kernel what is queued now.
                    // A full socket is dealt with by the end-of-batch flush
                    // (the peer stays dirty); a failed write marks the peer
                    // broken, so it is written to no more.
                    let before = outbox.queued_bytes();
                    let result = peer.stream.write_from(outbox);
                    self.metrics.bytes_out += (before - outbox.queued_bytes()) as u64;
                    if result.is_err() {
                        peer.transport = Transport::Broken;
                    }
                }
            }
            Err(SendError::NotOpen) => {}
            Err(SendError::Overflow) => self.overflowed.push(to),
        }
    }
}
