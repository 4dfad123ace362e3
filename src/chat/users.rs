//! Who is connected: each user's name, room and format.
//!
//! A user is named by the remote port of its connection (`User 51234`, the
//! seed's rule) until it takes a nickname. Most users never need their
//! name as a string of its own, so none is made until it is needed: an
//! idle user is a few words in a dense vector.

use std::borrow::Cow;
use std::rc::Rc;

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
    pub room: usize,
    /// Where this user sits in its room's member list for its format.
    pub slot: usize,
    /// Speaks the JSON subprotocol.
    pub json: bool,
    /// Its resume token, once it was told one.
    pub token: Option<super::resume::Token>,
    /// What is left of its budget for `/who`, `/rooms` and `/help` replies.
    pub replies: ReplyBudget,
    /// A verified user's token runs out then (Unix ms; see `chat::auth`).
    pub verified_until: Option<u64>,
}

impl User {
    /// Its name comes from a valid token.
    pub fn is_verified(&self) -> bool {
        self.verified_until.is_some()
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
