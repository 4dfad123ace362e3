//! The seam between the chat policy and the other nodes.
//!
//! The chat decides what happens in a room; a [`Bus`] carries it to
//! every other node that has users in that room, and brings theirs back.
//! On one node there is nobody to tell: [`LocalBus`], the default, does
//! nothing and answers [`Publish::Local`], so the chat numbers and
//! delivers its messages itself exactly as it does today, at today's cost.
//! [`super::redis_bus::RedisBus`] answers
//! [`Publish::Queued`]: the room's sequence number is assigned by Redis
//! (see [`super::PUBLISH_SCRIPT`]) and comes back as
//! [`BusEvent::Sequenced`], while other nodes' events arrive as
//! [`BusEvent::Remote`].
//!
//! The bus knows rooms, opaque event bytes and member names; it knows no
//! chat types, so the chat's encoding of an event (who, what, which
//! format) stays the chat's business. Calls never block and never fail
//! loudly: what cannot be sent is said by the return value and counted.

use std::fmt;
use std::time::Instant;

use super::room_read::RoomState;
use crate::service::{Gauge, Upstream};

/// What became of a published event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// No other node: number and deliver it locally now.
    Local,
    /// On its way; the outcome comes back as [`BusEvent::Sequenced`] or
    /// [`BusEvent::Lost`] with this ticket.
    Queued(Ticket),
    /// Not sent (the link to other nodes is down or full): deliver it
    /// locally, and tell the room that other nodes did not get it.
    Dropped,
}

/// Matches a [`Publish::Queued`] to its outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// Whether a member is in a room, for presence across nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Joined (or refreshed); `verified`: a verified user, which other
    /// nodes' listings say.
    Joined {
        verified: bool,
    },
    Left,
}

/// What the bus brings back from other nodes (or from Redis).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BusEvent {
    /// Our event with `ticket` got the room's sequence number `seq` in
    /// room epoch `epoch`.
    Sequenced {
        ticket: Ticket,
        room: String,
        seq: u64,
        epoch: String,
    },
    /// Our event with `ticket` may not have reached the other nodes.
    Lost { ticket: Ticket },
    /// Our sequenced event in `room` (the bytes given to
    /// [`Bus::publish`]) was not confirmed by Redis: never sent (an
    /// outage before its room was heard), refused, or its reply lost with
    /// the connection. It may have reached other nodes (a lost reply does
    /// not say the script did not run), but this node will not hear it
    /// back: the chat delivers it here, unnumbered, and tells its sender.
    /// If it does come back after all on a live subscription, the bus
    /// drops it (see [`super::redis_bus`]), so nobody here gets it twice.
    Unconfirmed {
        ticket: Ticket,
        room: String,
        event: Vec<u8>,
    },
    /// The answer to [`Bus::list_rooms`]: the busiest rooms with users on
    /// any node (name, users on every node), at most the limit asked,
    /// `total` rooms in all; `complete` is false when the directory held
    /// more entries than one listing reads (then `total` is a lower bound).
    Rooms {
        ticket: Ticket,
        rooms: Vec<(String, u64)>,
        total: u64,
        complete: bool,
    },
    /// The answer to [`Bus::read_room`].
    Room { ticket: Ticket, state: RoomState },
    /// Another node's event in `room` (`seq` 0 for unsequenced events
    /// such as joins and leaves).
    Remote {
        room: String,
        seq: u64,
        /// The room's epoch (`-` for unsequenced events).
        epoch: String,
        event: Vec<u8>,
    },
    /// The room's shared history (the last messages, oldest first, each
    /// with its sequence number and the event published), fetched each
    /// time Redis confirms the room's subscription, and its epoch (`None`:
    /// no message yet).
    History {
        room: String,
        epoch: Option<String>,
        entries: Vec<(u64, Vec<u8>)>,
    },
    /// A member of `room` on another node came or went (including members
    /// of a node that died, once their presence entries expire).
    Member {
        room: String,
        member: String,
        presence: Presence,
    },
    /// Who is in `room` on other nodes ((node, name), and whether a
    /// verified user), as the room's
    /// presence entries say: read every heartbeat (see
    /// [`Bus::tick`]), so members of a node that died without a word drop
    /// out once their entries expire.
    Roster {
        room: String,
        members: Vec<((String, String), bool)>,
    },
    /// The outcome of [`Bus::take_name`]: `name` is now its claimant's in
    /// `room`, taken from these holders on other nodes or this one
    /// ((node, name) of each live presence entry that held a key).
    Taken {
        room: String,
        name: String,
        from: Vec<(String, String)>,
    },
    /// The outcome of [`Bus::claim_name`]: granted (`holder` `None`), or
    /// held by `holder` (`NAME@NODE`), present on another node.
    Claimed {
        ticket: Ticket,
        holder: Option<String>,
    },
    /// Other nodes are out of reach (`false`) or back (`true`): each room
    /// is told once, and a gap in history is reported, not hidden.
    Reachable(bool),
    /// The answer to [`Bus::take_resume`]: the record (as stored with
    /// [`Bus::keep_resume`]), or `None` if there was none (never stored,
    /// taken, or expired). A failure is [`BusEvent::Lost`].
    Resume {
        ticket: Ticket,
        record: Option<Vec<u8>>,
    },
}

/// The chat's way to other nodes.
pub trait Bus: fmt::Debug {
    /// True for [`LocalBus`]: there are no other nodes, and the chat
    /// need not even encode what it would publish.
    fn is_local(&self) -> bool {
        false
    }

    /// Carries `event` (the chat's own encoding) to the other nodes with
    /// users in `room`. `sequenced` asks for the room's next sequence
    /// number and a place in its shared history (chat messages); joins,
    /// leaves and nick changes are not sequenced.
    fn publish(&mut self, now: Instant, room: &str, event: &[u8], sequenced: bool) -> Publish;

    /// Sends what [`Bus::publish`] gathered since the last call (the
    /// Redis bus: one script call per room, carrying that room's
    /// messages). The chat calls it whenever the loop is about to write
    /// ([`crate::service::Service::on_batch_end`]); a message is
    /// [`Publish::Queued`] from the start, and its outcome comes as for
    /// any other.
    fn flush(&mut self, _now: Instant) {}

    /// This node has users in `room`: bring other nodes' events for it.
    fn subscribe(&mut self, now: Instant, room: &str);

    /// This node has no more users in `room`.
    fn unsubscribe(&mut self, now: Instant, room: &str);

    /// Unsubscribes every room `keep` says no to (the chat forgot them).
    fn retain_rooms(&mut self, _now: Instant, _keep: &dyn Fn(&str) -> bool) {}

    /// A member of this node joined or left `room` (refreshed by the bus
    /// itself while it lasts, so a dead node's members expire).
    fn presence(&mut self, now: Instant, room: &str, member: &str, presence: Presence);

    /// The members of `room` on other nodes, as last heard.
    fn remote_members(&self, room: &str) -> Vec<String>;

    /// Claims, in `room` and across nodes, the name `name` compared by
    /// `keys`, releasing the `previous` name (its keys and the name) if
    /// this member had one. A name is held while its holder's presence
    /// entry lives, so a dead node's names come free when its entries
    /// expire. [`Publish::Queued`]: the outcome comes as
    /// [`BusEvent::Claimed`] (or [`BusEvent::Lost`]); [`Publish::Local`]:
    /// nobody else to ask.
    fn claim_name(
        &mut self,
        _now: Instant,
        _room: &str,
        _keys: &[String],
        _name: &str,
        _previous: Option<(&[String], &str)>,
    ) -> Publish {
        Publish::Local
    }

    /// Frees `name` (compared by `keys`) in `room` if this node's member
    /// `name` holds it (the member left).
    fn release_name(&mut self, _now: Instant, _room: &str, _keys: &[String], _name: &str) {}

    /// Takes `name`'s keys in `room` for this node's verified user of
    /// that name, whoever holds them (atomically, across nodes); answered
    /// by [`BusEvent::Taken`] (nothing while other nodes are out of
    /// reach).
    fn take_name(&mut self, _now: Instant, _room: &str, _keys: &[String], _name: &str) {}

    /// Stores (`Some(record)`) a resume token's record under its hex
    /// `digest` in `room` for `ttl_ms`, or (`None`) deletes it; `ttl_ms`
    /// alone with an empty record only shortens its life. No answer.
    fn keep_resume(
        &mut self,
        _now: Instant,
        _room: &str,
        _digest: &str,
        _record: Option<&[u8]>,
        _ttl_ms: u64,
    ) {
    }

    /// Takes (reads and deletes, atomically) the record under `digest`
    /// in `room`, moving the name claims it lists from the old node's
    /// presence entry to this node's; answered by [`BusEvent::Resume`].
    fn take_resume(&mut self, _now: Instant, _room: &str, _digest: &str) -> Publish {
        Publish::Local
    }

    /// Lists the rooms that have users on any node, the `limit` busiest,
    /// with their users on every node. [`Publish::Queued`]: answered by
    /// [`BusEvent::Rooms`] (or [`BusEvent::Lost`]); [`Publish::Local`]:
    /// this node's rooms are all there are; [`Publish::Dropped`]: other
    /// nodes are out of reach.
    fn list_rooms(&mut self, _now: Instant, _limit: usize) -> Publish {
        Publish::Local
    }

    /// Reads `room`'s shared state at one instant: its last sequence
    /// number, its members on every node (at most `members`), and at most
    /// `entries` of its last history entries after `since`, even if no
    /// user of this node is in it. [`Publish::Queued`]: answered by
    /// [`BusEvent::Room`] (or [`BusEvent::Lost`]); [`Publish::Local`]: this
    /// node's state is all there is; [`Publish::Dropped`]: Redis is out of
    /// reach.
    fn read_room(
        &mut self,
        _now: Instant,
        _room: &str,
        _members: u64,
        _entries: u64,
        _since: u64,
    ) -> Publish {
        Publish::Local
    }

    /// Called about once a second: heartbeats (presence and the room
    /// directory refreshed).
    fn tick(&mut self, _now: Instant) {}

    /// The next event from other nodes, if any.
    fn poll_event(&mut self, now: Instant) -> Option<BusEvent>;

    /// Whether other nodes can be reached now (`/healthz` says degraded
    /// when not). Always true for [`LocalBus`].
    fn reachable(&self) -> bool;

    /// Why other nodes are out of reach, for `/healthz`.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// The bus's `i`th connection, for the loop to carry (see
    /// [`crate::service::Service::upstream`]).
    fn upstream(&mut self, _i: usize) -> Option<&mut dyn Upstream> {
        None
    }

    /// The bus's numbers for `/metrics`.
    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }
}

/// The single-node bus: nobody else to tell, nothing to hear.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalBus;

impl Bus for LocalBus {
    fn is_local(&self) -> bool {
        true
    }

    fn publish(&mut self, _now: Instant, _room: &str, _event: &[u8], _sequenced: bool) -> Publish {
        Publish::Local
    }

    fn subscribe(&mut self, _now: Instant, _room: &str) {}

    fn unsubscribe(&mut self, _now: Instant, _room: &str) {}

    fn presence(&mut self, _now: Instant, _room: &str, _member: &str, _presence: Presence) {}

    fn remote_members(&self, _room: &str) -> Vec<String> {
        Vec::new()
    }

    fn poll_event(&mut self, _now: Instant) -> Option<BusEvent> {
        None
    }

    fn reachable(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_bus_keeps_everything_local() {
        let now = Instant::now();
        let mut bus = LocalBus;
        assert_eq!(bus.publish(now, "lobby", b"hi", true), Publish::Local);
        assert_eq!(bus.publish(now, "lobby", b"joined", false), Publish::Local);
        bus.subscribe(now, "lobby");
        bus.presence(now, "lobby", "User 1", Presence::Joined { verified: false });
        assert!(bus.remote_members("lobby").is_empty());
        assert_eq!(bus.list_rooms(now, 10), Publish::Local);
        assert_eq!(bus.poll_event(now), None);
        assert!(bus.is_local());
        assert!(bus.reachable());
        bus.unsubscribe(now, "lobby");
        // Usable as a trait object by a chat that holds `Box<dyn Bus>`.
        let mut boxed: Box<dyn Bus> = Box::new(LocalBus);
        assert_eq!(boxed.publish(now, "r", b"x", true), Publish::Local);
    }
}
