//! One room's shared state read from Redis at one instant, for a node
//! that may hold none of it: the HTTP API's room list and history answer
//! the same on every node of a cluster, whether or not that node has
//! users in the room.
//!
//! [`ROOM_SCRIPT`] touches only the room's own keys (one hash tag, one
//! Redis Cluster slot) and writes nothing. Its reply begins as
//! `HISTORY_SCRIPT`'s does (`{epoch, entries, ...}`), so both are read by
//! one parser.

use super::redis_bus::{history, split_entry};
use super::resp::Reply;
use super::RoomKeys;

/// Reads a room on Redis' clock: `KEYS[1]` `wschat:{ROOM}:epoch`,
/// `KEYS[2]` `:history`, `KEYS[3]` `:seq`, `KEYS[4]` `:presence`,
/// `KEYS[5]` `:verified`; `ARGV[1]` most members listed, `ARGV[2]` most
/// history entries (0: none), `ARGV[3]` only entries after this sequence
/// number. Returns `{epoch or false, entries newest first, last seq,
/// live members counted, members, verified members}`; members whose
/// presence entry expired are neither listed nor counted.
pub const ROOM_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = '(' .. now
local entries = {}
if tonumber(ARGV[2]) > 0 then
  entries = redis.call('XREVRANGE', KEYS[2], '+', '(' .. ARGV[3] .. '-0', 'COUNT', ARGV[2])
end
return {redis.call('GET', KEYS[1]), entries,
  tonumber(redis.call('GET', KEYS[3]) or '0'),
  redis.call('ZCOUNT', KEYS[4], live, '+inf'),
  redis.call('ZRANGEBYSCORE', KEYS[4], live, '+inf', 'LIMIT', 0, ARGV[1]),
  redis.call('ZRANGEBYSCORE', KEYS[5], live, '+inf', 'LIMIT', 0, ARGV[1])}
";

/// What [`ROOM_SCRIPT`] read of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomState {
    /// The room's epoch (`None`: no message yet).
    pub epoch: Option<String>,
    /// History entries after the sequence number asked, oldest first:
    /// (seq, the event as published).
    pub entries: Vec<(u64, Vec<u8>)>,
    /// The room's last sequence number (0: none yet).
    pub last_seq: u64,
    /// How many members the room has on every node.
    pub count: u64,
    /// Its members ((node, name), and whether a verified user), at most
    /// the number asked.
    pub members: Vec<((String, String), bool)>,
}

/// The script's keys for `room`, in its order.
pub fn keys(room: &str) -> [String; 5] {
    let k = RoomKeys::new(room);
    [k.epoch, k.history, k.seq, k.presence, k.verified]
}

/// A [`ROOM_SCRIPT`] reply, or `None` if it is not one (never trusted in
/// part).
pub fn parse(reply: &Reply) -> Option<RoomState> {
    let (epoch, entries) = history(reply)?;
    let items = reply.as_array()?;
    let last_seq = u64::try_from(items.get(2)?.as_integer()?).ok()?;
    let count = u64::try_from(items.get(3)?.as_integer()?).ok()?;
    let listed = |at: usize| -> Option<Vec<&[u8]>> {
        items
            .get(at)?
            .as_array()?
            .iter()
            .map(Reply::as_bytes)
            .collect()
    };
    let verified = listed(5)?;
    let members = listed(4)?
        .into_iter()
        .map(|entry| Some((split_entry(entry)?, verified.contains(&entry))))
        .collect::<Option<_>>()?;
    Some(RoomState {
        epoch,
        entries,
        last_seq,
        count,
        members,
    })
}

#[cfg(test)]
mod tests {
    use super::super::resp::tests::{array, bulk};
    use super::*;

    fn entry(id: &[u8], event: &[u8]) -> Reply {
        array(vec![bulk(id), array(vec![bulk(b"m"), bulk(event)])])
    }

    #[test]
    fn a_reply_is_read_whole() {
        let reply = array(vec![
            bulk(b"e1"),
            array(vec![entry(b"7-0", b"seven"), entry(b"6-0", b"six")]),
            Reply::Integer(7),
            Reply::Integer(2),
            array(vec![bulk(b"n1\x1falice"), bulk(b"n2\x1fbob")]),
            array(vec![bulk(b"n2\x1fbob")]),
        ]);
        let state = parse(&reply).expect("a room state");
        assert_eq!(state.epoch.as_deref(), Some("e1"));
        assert_eq!(
            state.entries,
            vec![(6, b"six".to_vec()), (7, b"seven".to_vec())]
        );
        assert_eq!((state.last_seq, state.count), (7, 2));
        assert_eq!(
            state.members,
            vec![
                (("n1".into(), "alice".into()), false),
                (("n2".into(), "bob".into()), true)
            ]
        );
    }

    #[test]
    fn an_empty_room_has_no_epoch_and_no_one() {
        let reply = array(vec![
            Reply::Bulk(None),
            array(vec![]),
            Reply::Integer(0),
            Reply::Integer(0),
            array(vec![]),
            array(vec![]),
        ]);
        let state = parse(&reply).expect("a room state");
        assert_eq!(state.epoch, None);
        assert!(state.entries.is_empty() && state.members.is_empty());
    }

    #[test]
    fn anything_else_is_refused_whole() {
        let good = || {
            vec![
                bulk(b"e1"),
                array(vec![]),
                Reply::Integer(1),
                Reply::Integer(1),
                array(vec![bulk(b"n1\x1falice")]),
                array(vec![]),
            ]
        };
        assert!(parse(&array(good())).is_some());
        for (at, bad) in [
            (2, Reply::Integer(-1)),
            (3, bulk(b"1")),
            (4, array(vec![bulk(b"no separator")])),
            (4, array(vec![Reply::Integer(1)])),
            (5, Reply::Bulk(None)),
        ] {
            let mut items = good();
            items[at] = bad;
            assert_eq!(parse(&array(items)), None, "item {at}");
        }
        assert_eq!(parse(&array(good()[..5].to_vec())), None);
        assert_eq!(parse(&Reply::Error(b"ERR".to_vec())), None);
    }

    #[test]
    fn the_keys_share_the_room_s_hash_tag() {
        for key in keys("rust") {
            assert!(key.starts_with("wschat:{rust}:"), "{key}");
        }
    }
}
