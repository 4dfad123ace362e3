//! What the loop does with a connection's events: admit and open
//! upgrades, answer plain HTTP, pass messages through flood control to the
//! service, and report every closure to it exactly once.

use std::net::SocketAddr;

use log::{info, warn};

use super::super::flood::Verdict;
use super::super::ops;
use super::super::peers::Peer;
use super::Server;
use crate::protocol::connection::{Closure, Event, Message};
use crate::protocol::frame::CloseCode;
use crate::protocol::handshake::{HttpRequest, Method, Refusal, Upgrade};
use crate::service::{self, Goodbye, HttpGet, PeerId, Service};

impl<S: Service> Server<S> {
    pub(super) fn dispatch(&mut self, key: PeerId, event: Event<'_>) {
        let Some(peer) = self.peers.slab.get(key) else {
            return;
        };
        let remote = peer.remote.addr();
        match event {
            Event::Upgrade(upgrade) => self.open(key, remote, &upgrade),
            Event::Http(request) => self.answer_http(key, remote, &request),
            Event::Refused(reason) => {
                self.peers.metrics.refusal(reason);
                info!("{remote} handshake refused: {reason}");
            }
            Event::Message(message) => self.on_message(key, message),
            Event::Closed(closure) => {
                // A closing connection takes no more messages.
                self.peers.release_held(key);
                self.report_closure(key, remote, closure);
            }
        }
    }

    /// A valid upgrade: the service admits it (or refuses with a status),
    /// then the `101` is queued and the service told.
    pub(super) fn open(&mut self, key: PeerId, remote: SocketAddr, upgrade: &Upgrade) {
        let request = service::Upgrade {
            remote,
            target: &upgrade.target,
            protocol: upgrade.protocol.as_deref(),
            cookie: upgrade.cookie.as_deref(),
        };
        let Some(peer) = self.peers.slab.get_mut(key) else {
            return;
        };
        let admitted = match self.service.admit(&request) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                self.peers.metrics.refusal(refusal.reason);
                info!("{remote} handshake refused: {}", refusal.reason);
                peer.conn
                    .respond(&Refusal::new(refusal.status, refusal.reason).response);
                return;
            }
        };
        peer.conn.accept(upgrade);
        self.peers.metrics.websockets_opened += 1;
        let with = request
            .protocol
            .map(|p| format!(" with protocol {p}"))
            .unwrap_or_default();
        info!("{remote} connected to {}{with}", request.target);
        self.service
            .on_open(key, &request, admitted, &mut self.peers);
    }

    pub(super) fn answer_http(&mut self, key: PeerId, remote: SocketAddr, request: &HttpRequest) {
        self.peers.metrics.http_requests += 1;
        let path = request.target.split('?').next().unwrap_or_default();
        let service = &self.service;
        let ours = match request.method {
            Method::Post => None,
            Method::Get | Method::Head => ops::answer(
                path,
                &self.peers,
                || service.gauges(),
                || service.degraded(),
            ),
        };
        let response = match ours {
            Some(response) => response,
            None => {
                let call = HttpGet {
                    method: request.method.as_str(),
                    target: &request.target,
                    authorization: request.authorization.as_deref(),
                    content_type: request.content_type.as_deref(),
                    body: &request.body,
                };
                let answer = match self.peers.http_ticket(key) {
                    Some(ticket) => self
                        .service
                        .on_http_deferred(ticket, &call, &mut self.peers),
                    None => Some(self.service.on_http(&call, &mut self.peers)),
                };
                let Some(reply) = answer else {
                    info!(
                        "{remote} HTTP {} {} -> answer deferred",
                        request.method.as_str(),
                        request.target
                    );
                    return;
                };
                ops::response(reply)
            }
        };
        info!(
            "{remote} HTTP {} {} -> {}",
            request.method.as_str(),
            request.target,
            response.status
        );
        if let Some(peer) = self.peers.slab.get_mut(key) {
            peer.conn.respond(&response);
        }
    }

    /// A message passes flood control before the service sees it.
    pub(super) fn on_message(&mut self, key: PeerId, message: Message<'_>) {
        let limits = self.flood_limits();
        let Some(peer) = self.peers.slab.get_mut(key) else {
            return;
        };
        let message = match &message {
            Message::Text(text) => service::Message::Text(text),
            Message::Binary(bytes) => service::Message::Binary(bytes),
        };
        self.peers.metrics.messages_in += 1;
        self.peers.metrics.bytes_in += message.len() as u64;
        self.peers.metrics.messages_in_compressed +=
            u64::from(peer.conn.last_message_was_compressed());
        match peer.flood.check(self.peers.tick.ms(), limits) {
            Verdict::Allow => self.service.on_message(key, message, &mut self.peers),
            Verdict::Drop { warn } => {
                self.peers.metrics.flood_drops += 1;
                if warn {
                    warn!(
                        "{} is over the message rate ({}/s): dropping its messages",
                        peer.remote, self.flood.rate
                    );
                    self.service.on_throttled(key, &mut self.peers);
                }
            }
            Verdict::Close => {
                let closed = self.peers.close(
                    key,
                    CloseCode::POLICY_VIOLATION,
                    "message rate over the limit",
                );
                if let Some((remote, closure)) = closed {
                    self.peers.metrics.flood_closes += 1;
                    warn!("{remote} kept flooding: closing");
                    self.report_closure(key, remote, closure);
                }
            }
        }
    }

    pub(super) fn report_closure(&mut self, key: PeerId, remote: SocketAddr, closure: Closure) {
        let who = if closure.by_peer { "peer" } else { "server" };
        info!(
            "{remote} disconnected: code {} by {who} ({})",
            closure.code, closure.detail
        );
        let goodbye = Goodbye {
            code: closure.code.0,
            by_peer: closure.by_peer,
        };
        self.service.on_close(key, goodbye, &mut self.peers);
    }

    /// Closes the peers whose queue passed the outbox's hard limit, and
    /// those the service asked to close.
    pub(super) fn settle_closes(&mut self) {
        loop {
            if let Some(key) = self.peers.next_overflowed() {
                self.close_slow_consumer(key);
            } else if let Some((key, code, reason)) = self.peers.next_close_request() {
                if let Some((remote, closure)) = self.peers.close(key, code, reason) {
                    info!("{remote}: closing, {reason}");
                    self.report_closure(key, remote, closure);
                }
            } else {
                return;
            }
        }
    }

    /// Closes a peer that does not read what it is sent (§7.4.1 1008: "a
    /// message that violates its policy").
    pub(super) fn close_slow_consumer(&mut self, key: PeerId) {
        let queued = self.peers.slab.get(key).map_or(0, Peer::queued_bytes);
        let closed = self
            .peers
            .close(key, CloseCode::POLICY_VIOLATION, "slow consumer");
        if let Some((remote, closure)) = closed {
            self.peers.metrics.slow_consumer_closes += 1;
            warn!("{remote} is a slow consumer ({queued} bytes queued): closing");
            self.report_closure(key, remote, closure);
        }
    }

    /// The transport ended under the connection.
    pub(super) fn lost(&mut self, key: PeerId, why: &'static str) {
        if let Some((remote, closure)) = self.peers.drop_peer(key, why) {
            self.report_closure(key, remote, closure);
            self.settle_closes();
        }
    }
}
