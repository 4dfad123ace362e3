//! `/rooms`: the rooms and how many are in each, bounded.
//!
//! Alone, a node lists its own rooms. In cluster mode it asks Redis' room
//! directory (see [`crate::cluster::redis_bus::ROOMS_SCRIPT`]) for every
//! node's rooms with users, and answers when Redis does (the loop never
//! waits, one question per user at a time); while Redis is out of reach,
//! or its answer is lost, it lists its own rooms and says so. Either way
//! the reply names at most `--list-limit` rooms, the busiest, counts the
//! rest and is charged to the asker.

use super::render::Extra;
use super::{take_first, Chat};
use crate::cluster::bus::{Publish, Ticket};
use crate::service::{Context, PeerId};

/// Said after a `/rooms` listing of this node's rooms while Redis is out
/// of reach.
pub(super) const OUT_OF_REACH: &str = "this node only: other nodes are out of reach";
/// Said after a `/rooms` listing of this node's rooms when Redis' answer
/// was lost.
pub(super) const NOT_ANSWERED: &str = "this node only: Redis did not answer";

/// A `/rooms` reply: `rooms` (name, users) of `count` in all (a lower
/// bound unless `complete`), and a `note` on what it covers.
fn rooms_text(rooms: &[(&str, usize)], count: usize, complete: bool, note: Option<&str>) -> String {
    let listed: Vec<String> = rooms
        .iter()
        .map(|(name, n)| format!("{name} ({n})"))
        .collect();
    let mut text = format!("Rooms: {}", listed.join(", "));
    match (count > rooms.len(), complete) {
        (true, true) => text.push_str(&format!(", and {} more", count - rooms.len())),
        (true, false) => text.push_str(&format!(", and at least {} more", count - rooms.len())),
        (false, true) => {}
        (false, false) => text.push_str(", and maybe more"),
    }
    if let Some(note) = note {
        text.push_str(&format!(" ({note})"));
    }
    text
}

impl Chat {
    /// `/rooms`: alone, this node's rooms; in cluster mode every node's
    /// (those with users), from Redis' room directory, answered when Redis
    /// answers; this node's, said so, while Redis is out of reach.
    pub(super) fn list_rooms(&mut self, id: PeerId, cx: &mut impl Context) {
        if self.over_budget(id, cx) {
            return;
        }
        if self.node.is_some() {
            if self.pending.listings.iter().any(|l| l.1 == id) {
                return self.error(id, "your last /rooms is still being answered", cx);
            }
            let now = cx.clock().now;
            match self.bus.list_rooms(now, self.config.list_limit) {
                Publish::Queued(ticket) => return self.pending.listings.push((ticket, id)),
                Publish::Dropped => return self.local_rooms(id, Some(OUT_OF_REACH), cx),
                Publish::Local => {}
            }
        }
        self.local_rooms(id, None, cx);
    }

    /// Redis listed the rooms of every node.
    pub(super) fn rooms_answered(
        &mut self,
        ticket: Ticket,
        rooms: Vec<(String, u64)>,
        total: u64,
        complete: bool,
        cx: &mut impl Context,
    ) {
        let Some((_, id)) = take_first(&mut self.pending.listings, |l| l.0 == ticket) else {
            return;
        };
        if self.users.get(id).is_none() {
            return;
        }
        let to = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let mut rooms: Vec<(&str, usize)> = rooms
            .iter()
            .take(self.config.list_limit)
            .map(|(name, n)| (name.as_str(), to(*n)))
            .collect();
        rooms.sort_unstable();
        let count = to(total).max(rooms.len());
        let text = rooms_text(&rooms, count, complete, None);
        let extra = Extra::Rooms {
            rooms: &rooms,
            count,
        };
        let bytes = self.system(id, &text, extra, cx);
        self.charge(id, bytes, cx);
    }

    /// This node's rooms, with `note` said after them if they are not
    /// all there are.
    pub(super) fn local_rooms(&mut self, id: PeerId, note: Option<&str>, cx: &mut impl Context) {
        if self.users.get(id).is_none() {
            return;
        }
        let mut rooms: Vec<(&str, usize)> = self
            .rooms
            .iter()
            .map(|r| (r.name.as_str(), r.len() + r.remote.len()))
            .collect();
        let count = rooms.len();
        let limit = self.config.list_limit;
        if count > limit {
            // The most populated: a bounded reply that still shows where
            // people are.
            rooms.select_nth_unstable_by(limit, |a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            rooms.truncate(limit);
        }
        rooms.sort_unstable();
        let text = rooms_text(&rooms, count, true, note);
        let extra = Extra::Rooms {
            rooms: &rooms,
            count,
        };
        let bytes = self.system(id, &text, extra, cx);
        self.charge(id, bytes, cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_replies_say_what_they_leave_out() {
        let rooms = [("a", 3), ("b", 1)];
        assert_eq!(rooms_text(&rooms, 2, true, None), "Rooms: a (3), b (1)");
        assert_eq!(
            rooms_text(&rooms, 5, true, None),
            "Rooms: a (3), b (1), and 3 more"
        );
        assert_eq!(
            rooms_text(&rooms, 5, false, None),
            "Rooms: a (3), b (1), and at least 3 more"
        );
        assert_eq!(
            rooms_text(&rooms, 2, false, None),
            "Rooms: a (3), b (1), and maybe more"
        );
        assert_eq!(
            rooms_text(&rooms[..1], 1, true, Some(OUT_OF_REACH)),
            "Rooms: a (3) (this node only: other nodes are out of reach)"
        );
    }
}
