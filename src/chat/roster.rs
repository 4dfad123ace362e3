//! Who is in a room on other nodes, as this node last heard it.
//!
//! Two sources, on two Redis connections that race each other: the
//! room's join and leave events (pushed as they happen), and the room's
//! presence set (read every heartbeat: each node refreshes its own
//! members with an expiry, so a node that died without a word drops out
//! of it). The roster follows the events at once and the presence set
//! with care:
//!
//! - a member the set no longer lists is taken for gone only once it has
//!   not been seen (in a listing or a join) for [`TTL`], so that a
//!   listing read just before a join came in cannot make a leave of it;
//! - a member who left by its leave event is not brought back by a
//!   listing read just before its node took it out ([`TTL`] again).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a member may go unseen before it is taken for gone: its node
/// refreshes it every 2 s, and its entry in Redis expires after 6 s
/// without a refresh (`cluster::redis_bus::PRESENCE_TTL_MS`).
pub const TTL: Duration = Duration::from_secs(6);

/// A member on another node: the node and the name.
pub type Member = (String, String);

/// A member as a listing gives it: and whether it is a verified user.
pub type Listed = (Member, bool);

#[derive(Debug, Default)]
pub struct Roster {
    /// Members, when they were last seen, and whether they are verified
    /// users (as their join event or the last listing said).
    members: BTreeMap<Member, (Instant, bool)>,
    /// Members who left by their event, and when.
    left: BTreeMap<Member, Instant>,
}

impl Roster {
    /// A join event (of a verified user or not).
    pub fn joined(&mut self, node: &str, name: &str, verified: bool, now: Instant) {
        let member = (node.to_owned(), name.to_owned());
        self.left.remove(&member);
        self.members.insert(member, (now, verified));
    }

    /// A leave event; whether the member was here.
    pub fn left(&mut self, node: &str, name: &str, now: Instant) -> bool {
        let member = (node.to_owned(), name.to_owned());
        let was = self.members.remove(&member).is_some();
        self.left.insert(member, now);
        was
    }

    /// A listing of the presence set (other nodes' members only): returns
    /// the names of members now taken for gone (their nodes died or their
    /// leaves were missed), for the room to be told.
    pub fn listed(&mut self, listing: &[Listed], now: Instant) -> Vec<String> {
        self.left
            .retain(|_, at| now.saturating_duration_since(*at) < TTL);
        for (member, verified) in listing {
            if self.left.contains_key(member) {
                continue;
            }
            self.members.insert(member.clone(), (now, *verified));
        }
        let mut gone = Vec::new();
        self.members.retain(|member, (seen, _)| {
            let stale = now.saturating_duration_since(*seen) >= TTL;
            if stale {
                gone.push(member.1.clone());
            }
            !stale
        });
        gone
    }

    /// Forgets everyone (e.g. the room's numbering started over).
    pub fn clear(&mut self) {
        self.members.clear();
        self.left.clear();
    }

    /// The names of the members, by node then name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(|(_, name)| name.as_str())
    }

    /// The names of the members (in the order of [`Roster::names`]), and
    /// whether each is a verified user.
    pub fn flagged(&self) -> impl Iterator<Item = (&str, bool)> {
        self.members
            .iter()
            .map(|((_, name), (_, verified))| (name.as_str(), *verified))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: &str, name: &str) -> Listed {
        ((node.into(), name.into()), false)
    }

    #[test]
    fn events_count_at_once_listings_with_care() {
        let t0 = Instant::now();
        let mut r = Roster::default();
        r.joined("n2", "al", false, t0);
        // A listing read before the join: al is not gone yet.
        assert!(r.listed(&[], t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(r.names().collect::<Vec<_>>(), ["al"]);
        // Listed, then no more (its node died): gone after TTL unseen.
        assert!(r
            .listed(&[m("n2", "al")], t0 + Duration::from_secs(2))
            .is_empty());
        assert!(r.listed(&[], t0 + Duration::from_secs(7)).is_empty());
        assert_eq!(r.listed(&[], t0 + Duration::from_secs(8)), ["al"]);
        assert!(r.is_empty());
    }

    #[test]
    fn a_leave_is_not_undone_by_a_stale_listing() {
        let t0 = Instant::now();
        let mut r = Roster::default();
        r.joined("n2", "al", false, t0);
        assert!(r.left("n2", "al", t0));
        assert!(!r.left("n2", "al", t0));
        assert!(r
            .listed(&[m("n2", "al")], t0 + Duration::from_secs(1))
            .is_empty());
        assert_eq!(r.len(), 0);
        // A join again is believed.
        r.joined("n2", "al", false, t0 + Duration::from_secs(2));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn members_first_heard_in_a_listing_are_added_quietly() {
        let t0 = Instant::now();
        let mut r = Roster::default();
        assert!(r.listed(&[m("n2", "al"), m("n3", "al")], t0).is_empty());
        assert_eq!(r.len(), 2, "one name on two nodes: two members");
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn verified_members_are_told_apart_by_join_or_listing() {
        let t0 = Instant::now();
        let mut r = Roster::default();
        r.joined("n2", "alice", true, t0);
        r.joined("n2", "bob", false, t0);
        assert_eq!(
            r.flagged().collect::<Vec<_>>(),
            [("alice", true), ("bob", false)]
        );
        let carol = (("n3".to_owned(), "carol".to_owned()), true);
        assert!(r.listed(&[m("n2", "alice"), carol], t0).is_empty());
        assert_eq!(
            r.flagged().collect::<Vec<_>>(),
            [("alice", false), ("bob", false), ("carol", true)],
            "the listing is the newer word"
        );
    }
}
