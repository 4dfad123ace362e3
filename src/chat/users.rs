//! Who is connected: each user's name, room and format.
//!
//! A user is named by the remote port of its connection (`User 51234`, the
//! seed's rule) until it takes a nickname. Most users never need their
//! name as a string of its own, so none is made until it is needed: an
//! idle user is a few words in a dense vector.

use std::borrow::Cow;
use std::rc::Rc;
use std::time::Instant;

use super::budget::ReplyBudget;
use crate::service::PeerId;

#[derive(Debug)]
pub struct User {
    /// The remote port: the default name is `User <port>`.
    pub port: u16,
    /// The nickname, or the default name once it was needed as a shared
    /// string (history entries hold it).
    pub name: Option<Rc<str>>,
    /// `name` is a nickname (held in the room's registry), not a default
    /// `User <port>`.
    pub nick: bool,
    /// Its room's index (rooms are at most `--max-rooms`; see [`User::new`]).
    room: u32,
    /// Where this user sits in its room's member list for its format.
    slot: u32,
    /// Speaks the JSON subprotocol.
    pub json: bool,
    /// Its resume token, once it was told one.
    pub token: Option<super::resume::Token>,
    /// What only a user who asked for listings or is verified needs.
    rare: Option<Box<Rare>>,
}

/// A user's state that most users never need, kept out of line: an idle
/// anonymous user carries one word for it instead of the 32 bytes of
/// these two fields, and idle users are most of them.
#[derive(Debug, Default)]
struct Rare {
    /// What is left of its budget for `/who`, `/rooms` and `/help` replies.
    replies: ReplyBudget,
    /// A verified user's token runs out then (Unix ms; see `chat::auth`).
    verified_until: Option<u64>,
}

impl User {
    /// A user of room `room` at `slot` in its member list. Both are
    /// indices the chat made (a room below `--max-rooms`, a slot below
    /// the connections), far below 2^32.
    pub fn new(
        port: u16,
        name: Option<Rc<str>>,
        nick: bool,
        json: bool,
        room: usize,
        slot: usize,
    ) -> User {
        User {
            port,
            name,
            nick,
            room: index(room),
            slot: index(slot),
            json,
            token: None,
            rare: None,
        }
    }

    /// The index of its room.
    pub fn room(&self) -> usize {
        self.room as usize
    }

    /// Where it sits in its room's member list for its format.
    pub fn slot(&self) -> usize {
        self.slot as usize
    }

    /// It moved in its member list (another member left).
    pub fn set_slot(&mut self, slot: usize) {
        self.slot = index(slot);
    }

    /// Its name comes from a valid token.
    pub fn is_verified(&self) -> bool {
        self.verified_until().is_some()
    }

    /// When a verified user's token runs out (Unix ms).
    pub fn verified_until(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.verified_until)
    }

    /// Verified until `until` (Unix ms), or, with `None`, no longer.
    pub fn set_verified_until(&mut self, until: Option<u64>) {
        match until {
            Some(_) => self.rare().verified_until = until,
            None => {
                if let Some(rare) = &mut self.rare {
                    rare.verified_until = None;
                }
            }
        }
    }

    /// Its reply budget (a full one if it never spent any).
    pub fn replies(&self) -> ReplyBudget {
        self.rare.as_ref().map(|r| r.replies).unwrap_or_default()
    }

    /// Charges `bytes` of reply sent `now` at `rate` bytes a second (0:
    /// no limit, and nothing to keep).
    pub fn charge_replies(&mut self, bytes: usize, now: Instant, rate: usize) {
        if rate > 0 {
            self.rare().replies.charge(bytes, now, rate);
        }
    }

    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    pub fn name(&self) -> Cow<'_, str> {
        match &self.name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("User {}", self.port)),
        }
    }

    /// The name as a shared string, made once.
    pub fn shared_name(&mut self) -> Rc<str> {
        let port = self.port;
        Rc::clone(
            self.name
                .get_or_insert_with(|| Rc::from(format!("User {port}"))),
        )
    }
}

/// An index the chat made, as stored in a [`User`].
fn index(i: usize) -> u32 {
    u32::try_from(i).expect("room and slot indices are far below 2^32")
}

/// Every user, indexed by peer id (ids are small and reused, so a vector
/// beats a map).
#[derive(Debug, Default)]
pub struct Users(Vec<Option<User>>);

impl Users {
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (PeerId, &mut User)> {
        self.0
            .iter_mut()
            .enumerate()
            .filter_map(|(id, user)| Some((id, user.as_mut()?)))
    }

    pub fn get(&self, id: PeerId) -> Option<&User> {
        self.0.get(id).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, id: PeerId) -> Option<&mut User> {
        self.0.get_mut(id).and_then(Option::as_mut)
    }

    pub fn insert(&mut self, id: PeerId, user: User) {
        if self.0.len() <= id {
            self.0.resize_with(id + 1, || None);
        }
        self.0[id] = Some(user);
    }

    pub fn remove(&mut self, id: PeerId) -> Option<User> {
        self.0.get_mut(id).and_then(Option::take)
    }

    /// How many users are present.
    pub fn len(&self) -> usize {
        self.0.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idle user is a few words: the chat keeps one slot per peer id.
    #[test]
    fn a_user_stays_small() {
        assert!(std::mem::size_of::<Option<User>>() <= 56);
    }

    #[test]
    fn rare_state_is_made_only_when_needed() {
        let mut user = User::new(5000, None, false, false, 3, 7);
        assert_eq!((user.room(), user.slot()), (3, 7));
        assert!(!user.is_verified());
        user.set_verified_until(None);
        assert!(user.rare.is_none(), "clearing makes nothing");
        user.set_verified_until(Some(42));
        assert_eq!(user.verified_until(), Some(42));
        user.set_verified_until(None);
        assert!(!user.is_verified());
        user.set_slot(2);
        assert_eq!(user.slot(), 2);
    }
}
