//! Once a second the loop asks [`timers::due`] about every peer and
//! applies the verdicts; when it goes quiet it gives memory back.

use log::info;

use super::super::timers::{self, Expiry};
use super::{release_freed_memory, Server};
use crate::protocol::frame::CloseCode;
use crate::protocol::handshake::Refusal;
use crate::service::{PeerId, Service};

impl<S: Service> Server<S> {
    /// Applies every deadline's verdict (see [`timers`]).
    pub(super) fn sweep(&mut self) {
        let now = self.peers.tick;
        let mut expired: Vec<(PeerId, Expiry)> = Vec::new();
        for (key, peer) in self.peers.slab.iter_mut() {
            let stage = peer.stage();
            peer.times.observe(stage, now);
            if let Some(expiry) = timers::due(&peer.times, now, &self.timing) {
                expired.push((key, expiry));
            }
        }
        for (key, expiry) in expired {
            self.expire(key, expiry);
        }
    }

    fn expire(&mut self, key: PeerId, expiry: Expiry) {
        let Some(peer) = self.peers.slab.get_mut(key) else {
            return;
        };
        match expiry {
            Expiry::Handshake => {
                let refusal = Refusal::timed_out();
                info!("{} handshake refused: {}", peer.remote, refusal.reason);
                peer.conn.refuse(&refusal);
                self.peers.metrics.refusal(refusal.reason);
                self.peers.mark_dirty(key);
            }
            Expiry::TlsHandshake => {
                info!(
                    "{} dropped: TLS handshake not finished in time",
                    peer.remote
                );
                self.peers.metrics.refusal("TLS handshake timed out");
                self.peers.drop_peer(key, "TLS handshake timed out");
            }
            Expiry::Idle => {
                peer.times.ping_sent = Some(self.peers.tick);
                peer.conn.ping(b"");
                self.peers.mark_dirty(key);
            }
            Expiry::Silent => {
                self.peers.metrics.idle_timeouts += 1;
                self.lost(key, "no answer to ping");
            }
            Expiry::SlowConsumer => self.close_slow_consumer(key),
            Expiry::MessageTimeout => {
                let closed = self.peers.close(
                    key,
                    CloseCode::POLICY_VIOLATION,
                    "message not completed in time",
                );
                if let Some((remote, closure)) = closed {
                    info!("{remote} took too long to complete a message: closing");
                    self.report_closure(key, remote, closure);
                }
            }
            Expiry::WriteStalled => self.lost(key, "socket took no bytes for the write timeout"),
            Expiry::Closing => self.lost(key, "close handshake timed out"),
            Expiry::Linger => {
                self.peers.drop_peer(key, "linger over");
            }
        }
    }

    /// The loop went quiet after a burst: empty queues give back their
    /// buffers and the heap hands its free pages back to the kernel, so
    /// what a join storm or a flood needed does not stay resident.
    pub(super) fn shed_memory(&mut self) {
        self.peers.release_idle_buffers();
        release_freed_memory();
    }
}
