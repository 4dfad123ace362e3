//! Identity that survives a reconnect: secret resume tokens, and the users
//! who dropped and may come back within the grace period.
//!
//! A token is 128 random bits from the operating system (`getrandom`),
//! shown as 32 lowercase hex digits. The chat finds a presented token by
//! its SHA-1 digest (so a lookup's timing says nothing about the token)
//! and then compares the token itself in constant time. A token is used
//! once: resuming with it issues a new one. Tokens exist only for users
//! present who were told theirs and for users away within the grace, so
//! their number is bounded by the connections plus [`MAX_AWAY`].

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use sha1::{Digest, Sha1};

use crate::service::PeerId;

/// A resume token.
pub type Token = [u8; 16];

/// What a token is filed under.
type Key = [u8; 20];

/// The most users kept away at once; beyond, a drop is a leave at once.
pub const MAX_AWAY: usize = 65_536;

/// A new token, or `None` if the OS has no randomness to give (then the
/// user simply gets none, and its drops are leaves).
pub fn fresh() -> Option<Token> {
    let mut token = [0u8; 16];
    getrandom::getrandom(&mut token).ok().map(|()| token)
}

/// A token as users see it: 32 lowercase hex digits.
pub fn hex(token: &Token) -> String {
    token.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 32 hex digits (either case).
pub fn parse(text: &str) -> Option<Token> {
    if text.len() != 32 || !text.is_ascii() {
        return None;
    }
    let mut token = [0u8; 16];
    for (i, byte) in token.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(token)
}

/// Equality that takes the same time wherever the tokens differ.
pub fn same(a: &Token, b: &Token) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keep the fold from being turned into an early exit.
    std::hint::black_box(diff) == 0
}

fn key(token: &Token) -> Key {
    Sha1::digest(token).into()
}

/// What a token is filed under, in hex: the name other nodes know it by
/// (in Redis' `wschat:{ROOM}:resume:DIGEST`), which does not give the
/// token away.
pub fn digest(token: &Token) -> String {
    key(token).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_digest(text: &str) -> Option<Key> {
    if text.len() != 40 || !text.is_ascii() {
        return None;
    }
    let mut k = [0u8; 20];
    for (i, byte) in k.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(k)
}

/// Who a token belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A user present.
    Present(PeerId),
    /// A user who dropped (the id of its departure).
    Away(u64),
}

#[derive(Debug)]
struct Ticket {
    token: Token,
    owner: Owner,
    room: usize,
}

/// A user who dropped and may come back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Away {
    pub name: Rc<str>,
    /// `name` is a nickname (held in the room's registry).
    pub nick: bool,
    pub room: usize,
    pub until: Instant,
    /// The id of its departure.
    pub departure: u64,
    token: Token,
}

/// Every token, and every user away.
#[derive(Debug, Default)]
pub struct Tokens {
    tickets: HashMap<Key, Ticket>,
    away: HashMap<u64, Away>,
    /// Departures in the order they end (the grace is the same for all).
    order: VecDeque<u64>,
    next_away: u64,
}

/// What a presented token turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    /// No such token (never issued, used, or expired), or one for another
    /// room.
    Unknown,
    /// The token of a user still connected (its old connection has not
    /// been seen to drop yet): the new connection takes its place.
    Present(PeerId),
    /// A user away: its name and room come back.
    Away(Away),
}

impl Tokens {
    /// Files `token` for the user `id` in `room`.
    pub fn issue(&mut self, token: Token, id: PeerId, room: usize) {
        let ticket = Ticket {
            token,
            owner: Owner::Present(id),
            room,
        };
        self.tickets.insert(key(&token), ticket);
    }

    /// Forgets `token`.
    pub fn revoke(&mut self, token: &Token) {
        self.tickets.remove(&key(token));
    }

    /// Takes (uses up) `token` if it is a live one for `room`.
    pub fn take(&mut self, token: &Token, room: usize) -> Found {
        let k = key(token);
        let Some(ticket) = self.tickets.get(&k) else {
            return Found::Unknown;
        };
        if !same(&ticket.token, token) || ticket.room != room {
            return Found::Unknown;
        }
        let owner = ticket.owner;
        self.tickets.remove(&k);
        match owner {
            Owner::Present(id) => Found::Present(id),
            Owner::Away(departure) => match self.away.remove(&departure) {
                Some(away) => Found::Away(away),
                None => Found::Unknown,
            },
        }
    }

    /// Whether `token` is a live one for `room` here (it is not used up).
    pub fn holds(&self, token: &Token, room: usize) -> bool {
        self.tickets
            .get(&key(token))
            .is_some_and(|t| same(&t.token, token) && t.room == room)
    }

    /// Takes the token filed under the hex `digest` in `room`: a user of
    /// this node came back on another one (whose Redis record said so).
    pub fn take_digest(&mut self, digest: &str, room: usize) -> Found {
        let Some(token) = parse_digest(digest)
            .and_then(|k| self.tickets.get(&k))
            .map(|t| t.token)
        else {
            return Found::Unknown;
        };
        self.take(&token, room)
    }

    /// Keeps the user whose token is `token` away until `until`; its
    /// departure id, or `None` if the token is unknown or too many are
    /// away already (then the token is revoked).
    pub fn depart(
        &mut self,
        token: &Token,
        name: Rc<str>,
        nick: bool,
        room: usize,
        until: Instant,
    ) -> Option<u64> {
        let k = key(token);
        if self.away.len() >= MAX_AWAY {
            self.tickets.remove(&k);
            return None;
        }
        let ticket = self.tickets.get_mut(&k)?;
        let departure = self.next_away;
        self.next_away += 1;
        ticket.owner = Owner::Away(departure);
        let away = Away {
            name,
            nick,
            room,
            until,
            departure,
            token: *token,
        };
        self.away.insert(departure, away);
        self.order.push_back(departure);
        Some(departure)
    }

    /// The next departure whose grace has ended by `now`, removed with
    /// its token.
    pub fn expire_one(&mut self, now: Instant) -> Option<(u64, Away)> {
        while let Some(&departure) = self.order.front() {
            let Some(away) = self.away.get(&departure) else {
                // Came back already.
                self.order.pop_front();
                continue;
            };
            if away.until > now {
                return None;
            }
            self.order.pop_front();
            let away = self.away.remove(&departure)?;
            self.tickets.remove(&key(&away.token));
            return Some((departure, away));
        }
        None
    }

    /// How many users are away.
    pub fn away(&self) -> usize {
        self.away.len()
    }

    /// How many tokens are live.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_are_random_hex_and_parse_back() {
        let (a, b) = (fresh().unwrap(), fresh().unwrap());
        assert_ne!(a, b);
        let shown = hex(&a);
        assert_eq!(shown.len(), 32);
        assert!(shown
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(parse(&shown), Some(a));
        assert_eq!(parse(&shown.to_uppercase()), Some(a));
        for bad in [
            "",
            "00",
            &"g".repeat(32),
            &"0".repeat(31),
            &"0".repeat(33),
            "é0000000000000000000000000000000",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert!(same(&a, &a));
        assert!(!same(&a, &b));
    }

    #[test]
    fn a_token_is_used_once_for_its_room_and_expires_with_the_grace() {
        let mut tokens = Tokens::default();
        let t0 = Instant::now();
        let (a, b) = (fresh().unwrap(), fresh().unwrap());
        tokens.issue(a, 1, 0);
        tokens.issue(b, 2, 0);
        assert_eq!(tokens.take(&a, 5), Found::Unknown, "another room");
        assert_eq!(tokens.take(&a, 0), Found::Present(1));
        assert_eq!(tokens.take(&a, 0), Found::Unknown, "used");
        let gone = tokens.depart(&b, "bob".into(), true, 0, t0 + Duration::from_secs(60));
        assert!(gone.is_some());
        assert_eq!(tokens.away(), 1);
        assert!(tokens.expire_one(t0 + Duration::from_secs(59)).is_none());
        let (departure, away) = tokens.expire_one(t0 + Duration::from_secs(60)).unwrap();
        assert_eq!((Some(departure), &*away.name), (gone, "bob"));
        assert_eq!(tokens.take(&b, 0), Found::Unknown, "expired");
        assert!(tokens.is_empty());
        let c = fresh().unwrap();
        tokens.issue(c, 3, 0);
        tokens.depart(&c, "carol".into(), true, 0, t0);
        match tokens.take(&c, 0) {
            Found::Away(away) => assert_eq!(&*away.name, "carol"),
            other => panic!("{other:?}"),
        }
        assert!(
            tokens.expire_one(t0 + Duration::from_secs(999)).is_none(),
            "came back"
        );
    }

    #[test]
    fn other_nodes_name_a_token_by_its_digest() {
        let mut tokens = Tokens::default();
        let a = fresh().unwrap();
        let d = digest(&a);
        assert_eq!(d.len(), 40);
        tokens.issue(a, 1, 0);
        assert!(tokens.holds(&a, 0));
        assert!(!tokens.holds(&a, 1));
        assert_eq!(tokens.take_digest(&d, 1), Found::Unknown, "another room");
        assert_eq!(tokens.take_digest(&d[..39], 0), Found::Unknown);
        assert_eq!(tokens.take_digest(&d, 0), Found::Present(1));
        assert!(!tokens.holds(&a, 0), "used");
    }
}
