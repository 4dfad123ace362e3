//! What this node has asked of the other nodes (through Redis) and not yet
//! heard back: name claims, resume records, `/rooms` listings, and the
//! API's posts and reads. Each answer, failure or timeout takes its entry
//! out again, and a connection that closes takes its own with it.
//!
//! Kept apart from the users and rooms because none of it exists on a
//! single node: alone, every list stays empty.

use super::api::{PendingPost, PendingRead};
use super::auth::Identity;
use super::names::Nick;
use super::target::Target;
use super::Opening;
use crate::cluster::bus::Ticket;
use crate::service::PeerId;

/// The questions in flight, one list per kind. Each is bounded: one entry
/// per user or connection at most, and the API's by
/// [`MAX_PENDING_POSTS`](super::api::MAX_PENDING_POSTS) and
/// [`MAX_PENDING_READS`](super::api::MAX_PENDING_READS).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Name changes waiting for Redis to say the name is free on every
    /// node.
    pub claims: Vec<Claim>,
    /// Connections that presented a token this node does not hold,
    /// waiting for Redis to hand over its record.
    pub resuming: Vec<Resuming>,
    /// `/rooms` asked of Redis: (ticket, asker).
    pub listings: Vec<(Ticket, PeerId)>,
    /// API posts waiting for Redis to number them, each until its answer,
    /// its failure or [`POST_TIMEOUT`](super::api::POST_TIMEOUT).
    pub posts: Vec<PendingPost>,
    /// API reads waiting for Redis, each until its answers, a failure or
    /// [`POST_TIMEOUT`](super::api::POST_TIMEOUT).
    pub reads: Vec<PendingRead>,
}

impl Pending {
    /// Connection `id` is gone, and its id may be given to the next one:
    /// its claim, resume and listing must not be answered to that one.
    /// (Its claimed name is held by no presence entry, so it is free
    /// again; the API's entries belong to HTTP requests, not connections.)
    pub fn forget(&mut self, id: PeerId) {
        self.claims.retain(|c| c.id != id);
        self.resuming.retain(|r| r.id != id);
        self.listings.retain(|l| l.1 != id);
    }
}

/// A `/nick` being checked across nodes.
#[derive(Debug)]
pub(super) struct Claim {
    pub ticket: Ticket,
    pub id: PeerId,
    pub room: usize,
    pub nick: Nick,
}

/// A connection waiting for its resume record from Redis: no welcome, no
/// join yet.
#[derive(Debug)]
pub(super) struct Resuming {
    pub ticket: Ticket,
    pub id: PeerId,
    pub target: Target,
    pub identity: Option<Identity>,
    pub opening: Opening,
}
