//! Joins and leaves in large rooms, counted and then summarised.
//!
//! Telling everyone in a room of N about each join costs N deliveries per
//! join, N² to fill the room, queued mostly at users who never read. Above
//! the announce limit the chat counts joins and leaves instead and tells
//! the room at most once per [`PERIOD`]: `3 users joined, 1 left (5002
//! here)`, encoded once per format. The first change after a quiet period
//! is told at once; the changes that follow within the period wait for it
//! to end and go out with the next event the chat handles after that, so
//! a room of N costs O(N) per period however many join.

use std::time::{Duration, Instant};

/// The shortest time between two summaries of one room.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One room's changes not yet told.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Presence {
    joined: u32,
    left: u32,
    /// When the last summary went out.
    last_sent: Option<Instant>,
    /// The room is on the chat's list of rooms with a summary waiting.
    pub scheduled: bool,
}

impl Presence {
    /// Counts a join (`true`) or a leave; returns whether a summary may
    /// go out now.
    pub fn record(&mut self, join: bool, now: Instant) -> bool {
        if join {
            self.joined = self.joined.saturating_add(1);
        } else {
            self.left = self.left.saturating_add(1);
        }
        self.may_send(now)
    }

    /// Whether a period has passed since the last summary.
    pub fn may_send(&self, now: Instant) -> bool {
        self.last_sent
            .is_none_or(|t| now.saturating_duration_since(t) >= PERIOD)
    }

    /// When the next summary may go out (`None`: at once).
    pub fn due_at(&self) -> Option<Instant> {
        self.last_sent.map(|t| t + PERIOD)
    }

    /// Some joins or leaves are waiting to be told.
    pub fn is_pending(&self) -> bool {
        self.joined > 0 || self.left > 0
    }

    /// Takes the waiting counts `(joined, left)` for a summary sent now.
    pub fn take(&mut self, now: Instant) -> Option<(u32, u32)> {
        if !self.is_pending() {
            return None;
        }
        let counts = (self.joined, self.left);
        self.joined = 0;
        self.left = 0;
        self.last_sent = Some(now);
        Some(counts)
    }

    /// Forgets counts nobody is left to hear (the room emptied).
    pub fn clear(&mut self) {
        self.joined = 0;
        self.left = 0;
    }
}

/// The rooms with a summary waiting for its period to end, and the
/// earliest time one of them may go out (a room may appear twice after
/// its index was reused; harmless).
#[derive(Debug, Default)]
pub struct Schedule {
    rooms: Vec<usize>,
    next: Option<Instant>,
}

impl Schedule {
    /// `room`'s summary may go out at `at`.
    pub fn add(&mut self, room: usize, at: Instant) {
        self.rooms.push(room);
        self.keep_for(at);
    }

    /// A room kept on the list (by [`Schedule::take`]'s caller) may go
    /// out at `at`.
    pub fn keep_for(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |t| t.min(at)));
    }

    /// The rooms to look at now, if any may be due at `now`: the list is
    /// emptied, and what is put back with [`Schedule::put_back`] (each
    /// with [`Schedule::keep_for`]) waits for the next time.
    pub fn take(&mut self, now: Instant) -> Option<Vec<usize>> {
        if self.next.is_none_or(|t| now < t) {
            return None;
        }
        self.next = None;
        Some(std::mem::take(&mut self.rooms))
    }

    /// The rooms still waiting after a [`Schedule::take`] (its buffer
    /// reused).
    pub fn put_back(&mut self, mut rooms: Vec<usize>) {
        rooms.append(&mut self.rooms);
        self.rooms = rooms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_change_goes_out_at_once_then_one_summary_per_period() {
        let t0 = Instant::now();
        let mut p = Presence::default();
        assert!(p.record(true, t0), "nothing sent yet: at once");
        assert_eq!(p.take(t0), Some((1, 0)));
        assert!(!p.is_pending());
        let soon = t0 + Duration::from_millis(300);
        assert!(!p.record(true, soon));
        assert!(!p.record(true, soon));
        assert!(!p.record(false, soon));
        assert_eq!(p.due_at(), Some(t0 + PERIOD));
        assert!(!p.may_send(t0 + Duration::from_millis(999)));
        assert!(p.may_send(t0 + PERIOD));
        assert_eq!(p.take(t0 + PERIOD), Some((2, 1)), "coalesced");
        assert_eq!(p.take(t0 + PERIOD), None, "nothing twice");
        assert_eq!(p.due_at(), Some(t0 + PERIOD + PERIOD));
    }

    #[test]
    fn an_emptied_room_forgets_its_counts() {
        let now = Instant::now();
        let mut p = Presence::default();
        p.record(false, now);
        p.clear();
        assert!(!p.is_pending());
        assert_eq!(p.take(now), None);
    }

    #[test]
    fn a_schedule_is_due_at_its_earliest_room_and_keeps_what_is_put_back() {
        let t0 = Instant::now();
        let mut schedule = Schedule::default();
        assert_eq!(schedule.take(t0), None, "nothing scheduled");
        schedule.add(3, t0 + PERIOD);
        schedule.add(5, t0 + PERIOD / 2);
        assert_eq!(schedule.take(t0), None, "not yet");
        let rooms = schedule.take(t0 + PERIOD / 2).expect("room 5 is due");
        assert_eq!(rooms, [3, 5]);
        // Room 3 is not due yet: it is put back, and due at its time.
        schedule.put_back(vec![3]);
        schedule.keep_for(t0 + PERIOD);
        assert_eq!(schedule.take(t0 + PERIOD / 2), None);
        assert_eq!(schedule.take(t0 + PERIOD), Some(vec![3]));
        assert_eq!(schedule.take(t0 + 2 * PERIOD), None, "empty again");
    }
}
