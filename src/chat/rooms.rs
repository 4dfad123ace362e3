//! The rooms: who is in each, its history, and how many exist.
//!
//! A room keeps one member list per format (plain text, JSON) so that a
//! broadcast is a tight loop per format with no per-recipient lookup. An
//! empty room keeps its history for a while so clients can resume; the
//! number of rooms is bounded, and an empty room makes way for a new one.
//!
//! The limits only ever refuse *making* a room: a room that exists can
//! always be joined, and the lobby is outside them altogether (it is not
//! counted and is made whenever someone comes), so that nobody can lock
//! everyone out by holding rooms. Each room remembers the client address
//! that made it, and one address may have at most so many rooms in
//! existence at a time, so it takes many addresses to fill the server.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use slab::Slab;

use super::history::History;
use super::names::Registry;
use super::presence::Presence;
use super::target::LOBBY;
use crate::service::PeerId;

/// Who is charged for a room: a client address, reduced to what one
/// client controls (see [`client_key`]).
pub type ClientKey = IpAddr;

/// The key a client address is charged under: an IPv4 address as it is
/// (IPv4-mapped IPv6 addresses are IPv4), an IPv6 address by its /64
/// prefix, the block one host or home network is usually given, so that
/// one machine cannot take a fresh address per room.
pub fn client_key(ip: IpAddr) -> ClientKey {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

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
    /// Who made it (`None` for the lobby, which is nobody's).
    pub creator: Option<ClientKey>,
    /// Joins and leaves not yet told (rooms above the announce limit).
    pub presence: Presence,
    /// The nicknames held here, by key: of users present and of those
    /// who dropped and may still come back.
    pub names: Registry,
    /// Users of this room who dropped and may still come back: while
    /// there are any, the room is not forgotten.
    pub away: usize,
    /// Cluster mode: the room's epoch as last heard from Redis.
    pub epoch: Option<Box<str>>,
    /// Cluster mode: the room was new here and its history is being
    /// fetched from Redis; the users who joined meanwhile get their
    /// replay when it comes.
    pub seeding: Option<Vec<Waiting>>,
    /// Cluster mode: who is here on other nodes.
    pub remote: super::roster::Roster,
}

/// A user waiting for its room's history from Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub id: PeerId,
    /// Its `?since=`.
    pub since: Option<u64>,
    /// The room's last sequence number when it joined: what came after
    /// was delivered to it live.
    pub upto: u64,
}

impl Room {
    fn new(name: &str, creator: Option<ClientKey>) -> Room {
        Room {
            name: name.to_owned(),
            plain: Vec::new(),
            json: Vec::new(),
            history: History::default(),
            last_seq: 0,
            empty_since: None,
            creator,
            presence: Presence::default(),
            names: Registry::default(),
            away: 0,
            epoch: None,
            seeding: None,
            remote: super::roster::Roster::default(),
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

/// How many rooms may exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoomLimits {
    /// Rooms at once, the lobby not counted.
    pub max_rooms: usize,
    /// Rooms one client address may have made that still exist (0: no
    /// limit).
    pub max_per_client: usize,
}

/// Why a new room cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// At `max_rooms`, and no empty room to forget.
    Server,
    /// This client address has made `max_per_client` rooms that exist.
    Client,
}

/// Every room, by index and by name.
#[derive(Debug, Default)]
pub struct Rooms {
    slab: Slab<Room>,
    by_name: HashMap<String, usize>,
    /// Rooms made by each client address that still exist.
    made_by: HashMap<ClientKey, usize>,
}

impl Rooms {
    pub fn get(&self, room: usize) -> Option<&Room> {
        self.slab.get(room)
    }

    pub fn get_mut(&mut self, room: usize) -> Option<&mut Room> {
        self.slab.get_mut(room)
    }

    /// Every room, the lobby included.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Room> {
        self.slab.iter().map(|(_, r)| r)
    }

    /// The index of the room called `name`, if it exists.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// Every room's index.
    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.slab.iter().map(|(i, _)| i)
    }

    pub fn contains_name(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The rooms counted against `max_rooms`: all but the lobby.
    fn counted(&self) -> usize {
        self.slab.len() - usize::from(self.contains_name(LOBBY))
    }

    /// Rooms made by `client` that still exist.
    pub fn made_by(&self, client: ClientKey) -> usize {
        self.made_by.get(&client).copied().unwrap_or(0)
    }

    /// Whether `client` may join the room called `name`: it exists, or it
    /// is the lobby, or the client may make one more and one more fits
    /// (an empty room can always make way).
    pub fn may_join(&self, name: &str, client: ClientKey, limits: RoomLimits) -> Result<(), Full> {
        if name == LOBBY || self.contains_name(name) {
            return Ok(());
        }
        if limits.max_per_client > 0 && self.made_by(client) >= limits.max_per_client {
            return Err(Full::Client);
        }
        if self.counted() < limits.max_rooms || self.oldest_empty().is_some() {
            Ok(())
        } else {
            Err(Full::Server)
        }
    }

    /// The room that has been empty longest, the lobby aside (forgetting
    /// it would free no place).
    fn oldest_empty(&self) -> Option<usize> {
        self.slab
            .iter()
            .filter(|(_, r)| r.creator.is_some() && r.away == 0)
            .filter_map(|(i, r)| r.empty_since.map(|t| (t, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// The room called `name`, made by `client` if needed (forgetting the
    /// longest-empty room when at `max_rooms`). Check [`Rooms::may_join`]
    /// first: this makes the room whatever the limits.
    pub fn named(&mut self, name: &str, client: ClientKey, limits: RoomLimits) -> usize {
        if let Some(&room) = self.by_name.get(name) {
            return room;
        }
        let creator = (name != LOBBY).then_some(client);
        if creator.is_some() && self.counted() >= limits.max_rooms {
            if let Some(room) = self.oldest_empty() {
                self.forget(room);
            }
        }
        if let Some(client) = creator {
            *self.made_by.entry(client).or_default() += 1;
        }
        let room = self.slab.insert(Room::new(name, creator));
        self.by_name.insert(name.to_owned(), room);
        room
    }

    pub fn forget(&mut self, room: usize) {
        if !self.slab.contains(room) {
            return;
        }
        let r = self.slab.remove(room);
        self.by_name.remove(&r.name);
        if let Some(client) = r.creator {
            if let Some(n) = self.made_by.get_mut(&client) {
                *n -= 1;
                if *n == 0 {
                    self.made_by.remove(&client);
                }
            }
        }
    }

    /// Forgets the rooms that have been empty for `ttl` or longer.
    pub fn expire(&mut self, now: Instant, ttl: std::time::Duration) {
        let expired: Vec<usize> = self
            .slab
            .iter()
            .filter(|(_, r)| {
                r.away == 0
                    && r.empty_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
            })
            .map(|(i, _)| i)
            .collect();
        for room in expired {
            self.forget(room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    const LIMITS: RoomLimits = RoomLimits {
        max_rooms: 4,
        max_per_client: 2,
    };

    fn ip(last: u8) -> ClientKey {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    /// Makes `name` for `client` if the limits allow.
    fn make(rooms: &mut Rooms, name: &str, client: ClientKey) -> Result<usize, Full> {
        rooms.may_join(name, client, LIMITS)?;
        Ok(rooms.named(name, client, LIMITS))
    }

    /// Empties a room, as the chat does when its last member leaves.
    fn vacate(rooms: &mut Rooms, room: usize, at: Instant) {
        rooms.get_mut(room).unwrap().empty_since = Some(at);
    }

    #[test]
    fn one_address_makes_a_few_rooms_and_can_still_join_any() {
        let mut rooms = Rooms::default();
        let a0 = make(&mut rooms, "a0", ip(1)).unwrap();
        make(&mut rooms, "a1", ip(1)).unwrap();
        assert_eq!(make(&mut rooms, "a2", ip(1)), Err(Full::Client));
        assert_eq!(
            make(&mut rooms, "a1", ip(1)).ok(),
            rooms.by_name.get("a1").copied()
        );
        assert!(make(&mut rooms, "a0", ip(9)).is_ok(), "others join it");
        assert!(
            make(&mut rooms, LOBBY, ip(1)).is_ok(),
            "the lobby is nobody's"
        );
        assert_eq!(rooms.made_by(ip(1)), 2);
        rooms.forget(a0);
        assert_eq!(
            rooms.made_by(ip(1)),
            1,
            "a forgotten room is no longer charged"
        );
        assert!(make(&mut rooms, "a2", ip(1)).is_ok());
    }

    #[test]
    fn at_max_rooms_only_new_rooms_are_refused_and_the_lobby_is_not_counted() {
        let mut rooms = Rooms::default();
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            make(&mut rooms, name, ip(i as u8)).unwrap();
        }
        assert_eq!(make(&mut rooms, "e", ip(7)), Err(Full::Server));
        assert!(make(&mut rooms, "c", ip(7)).is_ok(), "an existing room");
        let lobby = make(&mut rooms, LOBBY, ip(7)).expect("the lobby, made past the limit");
        assert_eq!(rooms.len(), 5);
        assert_eq!(rooms.get(lobby).unwrap().creator, None);
        // An empty lobby is not a place to free: the limit still holds.
        vacate(&mut rooms, lobby, Instant::now());
        assert_eq!(make(&mut rooms, "e", ip(7)), Err(Full::Server));
    }

    #[test]
    fn an_empty_room_makes_way_and_its_maker_is_uncharged() {
        let mut rooms = Rooms::default();
        let t0 = Instant::now();
        let mut made = Vec::new();
        for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
            made.push(make(&mut rooms, name, ip(i as u8)).unwrap());
        }
        vacate(&mut rooms, made[2], t0);
        vacate(&mut rooms, made[1], t0 + std::time::Duration::from_secs(1));
        make(&mut rooms, "e", ip(7)).expect("room for one more");
        assert!(!rooms.contains_name("c"), "the longest empty went");
        assert!(rooms.contains_name("b"));
        assert_eq!(rooms.made_by(ip(2)), 0);
        assert_eq!(rooms.made_by(ip(7)), 1);
    }

    #[test]
    fn unlimited_per_client_when_zero() {
        let limits = RoomLimits {
            max_rooms: 100,
            max_per_client: 0,
        };
        let mut rooms = Rooms::default();
        for i in 0..50 {
            let name = format!("r{i}");
            rooms.may_join(&name, ip(1), limits).unwrap();
            rooms.named(&name, ip(1), limits);
        }
        assert_eq!(rooms.made_by(ip(1)), 50);
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key(ip(5)), ip(5));
        let mapped: IpAddr = "::ffff:192.0.2.5".parse().unwrap();
        assert_eq!(
            client_key(mapped),
            ip(5),
            "IPv4 through the dual-stack socket"
        );
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b), "one /64");
        assert_ne!(client_key(a), client_key(c));
        assert_eq!(
            client_key(a),
            IpAddr::V6("2001:db8:1:2::".parse::<Ipv6Addr>().unwrap())
        );
    }
}
