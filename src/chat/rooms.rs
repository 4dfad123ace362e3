//! The rooms: who is in each, its history, and how many exist.
//!
//! A room keeps one member list per format (plain text, JSON) so that a
//! broadcast is a tight loop per format with no per-recipient lookup. An
//! empty room keeps its history for a while so clients can resume; the
//! number of rooms is bounded, and an empty room makes way for a new one.

use std::collections::HashMap;
use std::time::Instant;

use slab::Slab;

use super::history::History;
use crate::service::PeerId;

#[derive(Debug)]
pub struct Room {
    pub name: String,
    /// Everyone present who reads plain text, densely packed for fan-out.
    pub plain: Vec<PeerId>,
    /// Everyone present who reads JSON.
    pub json: Vec<PeerId>,
    pub history: History,
    /// The last sequence number given out (0: none yet).
    pub last_seq: u64,
    /// When the last member left.
    pub empty_since: Option<Instant>,
}

impl Room {
    fn new(name: &str) -> Room {
        Room {
            name: name.to_owned(),
            plain: Vec::new(),
            json: Vec::new(),
            history: History::default(),
            last_seq: 0,
            empty_since: None,
        }
    }

    pub fn members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.plain.iter().chain(&self.json).copied()
    }

    pub fn len(&self) -> usize {
        self.plain.len() + self.json.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list_mut(&mut self, json: bool) -> &mut Vec<PeerId> {
        if json {
            &mut self.json
        } else {
            &mut self.plain
        }
    }
}

/// Every room, by index and by name.
#[derive(Debug, Default)]
pub struct Rooms {
    slab: Slab<Room>,
    by_name: HashMap<String, usize>,
}

impl Rooms {
    pub fn get(&self, room: usize) -> Option<&Room> {
        self.slab.get(room)
    }

    pub fn get_mut(&mut self, room: usize) -> Option<&mut Room> {
        self.slab.get_mut(room)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.slab.iter().map(|(_, r)| r)
    }

    pub fn contains_name(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Whether a room called `name` may be joined: it exists, or one more
    /// fits under `max_rooms` (an empty room can always make way).
    pub fn has_room_for(&self, name: &str, max_rooms: usize) -> bool {
        self.contains_name(name)
            || self.slab.len() < max_rooms
            || self.slab.iter().any(|(_, r)| r.is_empty())
    }

    /// The room called `name`, made if needed (forgetting the longest-empty
    /// room when at `max_rooms`).
    pub fn named(&mut self, name: &str, max_rooms: usize) -> usize {
        if let Some(&room) = self.by_name.get(name) {
            return room;
        }
        if self.slab.len() >= max_rooms {
            let oldest_empty = self
                .slab
                .iter()
                .filter_map(|(i, r)| r.empty_since.map(|t| (t, i)))
                .min()
                .map(|(_, i)| i);
            if let Some(room) = oldest_empty {
                self.forget(room);
            }
        }
        let room = self.slab.insert(Room::new(name));
        self.by_name.insert(name.to_owned(), room);
        room
    }

    pub fn forget(&mut self, room: usize) {
        if self.slab.contains(room) {
            let r = self.slab.remove(room);
            self.by_name.remove(&r.name);
        }
    }

    /// Forgets the rooms that have been empty for `ttl` or longer.
    pub fn expire(&mut self, now: Instant, ttl: std::time::Duration) {
        let expired: Vec<usize> = self
            .slab
            .iter()
            .filter(|(_, r)| {
                r.empty_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
            })
            .map(|(i, _)| i)
            .collect();
        for room in expired {
            self.forget(room);
        }
    }
}
