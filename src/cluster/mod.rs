//! Many nodes, one chat: the pieces for scale-out over Redis, sans-IO.
//!
//! Nothing here touches a socket. The loop (`net/`) will own the Redis
//! sockets as tokens in its one `mio` poll and feed them to [`link`]; the
//! chat will talk to other nodes only through [`bus::Bus`]. A single node
//! without `--redis` uses [`bus::LocalBus`] and none of the rest.
//!
//! | module | responsibility |
//! |---|---|
//! | [`resp`] | RESP2: commands encoded, replies decoded incrementally, every size bounded |
//! | [`link`] | one Redis connection: login, pipelined commands with tags, subscriptions, timeouts, backoff |
//! | [`url`] | `redis://[user:password@]HOST:PORT[/DB]` |
//! | [`bus`] | the seam between the chat and other nodes; [`bus::LocalBus`] for one node |
//! | [`redis_bus`] | [`bus::Bus`] over two links: publish script, pub/sub per room, reachability |
//! | this file | the key scheme and the publish script |
//!
//! # Keys and channels
//!
//! Every key and channel of a room carries the room in a hash tag,
//! `wschat:{ROOM}:...`, so that Redis Cluster puts all of a room's keys on
//! one slot: the publish script may then touch them together, and a later
//! step can spread rooms over a cluster with sharded pub/sub
//! (`SPUBLISH`/`SSUBSCRIBE`, Redis 7) or over several plain Redis instances
//! by hashing the room. Room names are `[a-z0-9_-]{1,32}` (see the chat's
//! target rule), so they never contain the `{` `}` of a hash tag.
//!
//! | key | type | what |
//! |---|---|---|
//! | `wschat:{ROOM}:seq` | string (integer) | the room's last sequence number (`INCR`) |
//! | `wschat:{ROOM}:history` | stream | the room's messages, entry id `SEQ-0`, field `m`; trimmed with `MAXLEN ~` |
//! | `wschat:{ROOM}:epoch` | string | the room's epoch: changes when Redis lost the room's numbering |
//! | `wschat:{ROOM}:events` | pub/sub channel | every event of the room, as `SEQ EPOCH PAYLOAD` ([`parse_event`]) |
//! | `wschat:{ROOM}:presence` | sorted set | members (`NODE US NAME`, US the byte 0x1f), scored by when their entry expires |
//! | `wschat:{ROOM}:nicks` | hash | nickname (lower case) → its owner, for uniqueness across nodes |
//! | `wschat:{ROOM}:verified` | sorted set | the presence entries of verified users, scored as in `:presence` |
//! | `wschat:{ROOM}:resume:DIGEST` | string | a resume token's record (the token's hex SHA-1) |
//! | [`DIRECTORY_ROOMS`] `wschat:{*}:rooms` | sorted set | `ROOM US NODE`: the rooms each node has users in, scored by when the entry expires |
//! | [`DIRECTORY_COUNTS`] `wschat:{*}:counts` | hash | `ROOM US NODE` → that node's users in the room |
//!
//! The room directory is the one thing not of a room: its two keys share
//! the hash tag `{*}`, which no room name can be, so a script may touch
//! both on one Redis Cluster slot and no room's keys collide with them.
//!
//! History entries have the id `SEQ-0`, so what a client resuming with
//! `?since=SINCE` missed is `XRANGE wschat:{ROOM}:history (SINCE-0 +`, with
//! no index of its own.

pub mod bus;
pub mod link;
pub mod redis_bus;
pub mod resp;
pub mod room_read;
pub mod url;

/// The prefix of every key and channel wschat uses.
pub const KEY_PREFIX: &str = "wschat:";

/// The room directory: which node has users in which room, until when.
pub const DIRECTORY_ROOMS: &str = "wschat:{*}:rooms";
/// The room directory's counts: users per room and node.
pub const DIRECTORY_COUNTS: &str = "wschat:{*}:counts";

/// Appends a chat message to its room atomically: assigns the room's next
/// sequence number, stores the message in the room's history stream
/// (trimmed to about `ARGV[2]` entries) and publishes it to the room's
/// channel, in one `EVALSHA`, so that every node sees one order per room
/// and a newcomer on any node can be replayed the same history (the way
/// Centrifugo's Redis engine does it).
///
/// - `KEYS[1]` `wschat:{ROOM}:seq`, `KEYS[2]` `wschat:{ROOM}:history`,
///   `KEYS[3]` `wschat:{ROOM}:epoch`, `KEYS[4]` `wschat:{ROOM}:events`
///   (the channel is passed as a key so that Redis Cluster checks it
///   hashes to the room's slot, as sharded pub/sub will need).
/// - `ARGV[1]` the message (the chat's encoding), `ARGV[2]` the history's
///   `MAXLEN`, `ARGV[3]` the epoch to adopt if the room has none (a new
///   room, or Redis lost it): a token without spaces, e.g. `NODE-UNIXMS`.
/// - Returns `{seq, epoch}`. Publishes `SEQ EPOCH MESSAGE`.
///
/// When the numbering starts over (`seq` is 1, or the epoch is gone) any
/// old history is deleted first, so stream ids stay increasing and a
/// client resuming with an old `since` learns from the new epoch that its
/// numbers mean nothing here. Redis runs a script alone: nothing else
/// happens between the `INCR` and the `PUBLISH`.
pub const PUBLISH_SCRIPT: &str = "\
local seq = redis.call('INCR', KEYS[1])
local epoch = redis.call('GET', KEYS[3])
if seq == 1 or not epoch then
  epoch = ARGV[3]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[2])
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], string.format('%d-0', seq), 'm', ARGV[1])
redis.call('PUBLISH', KEYS[4], string.format('%d ', seq) .. epoch .. ' ' .. ARGV[1])
return {seq, epoch}
";

/// The SHA-1 of [`PUBLISH_SCRIPT`] in hex, as `SCRIPT LOAD` returns it and
/// `EVALSHA` takes it (a unit test checks it is the script's).
pub const PUBLISH_SCRIPT_SHA1: &str = "0e910182f96fcc7743ebef03b13e9ced47e10204";

/// The keys and the channel of one room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomKeys {
    pub seq: String,
    pub history: String,
    pub epoch: String,
    pub events: String,
    pub presence: String,
    pub nicks: String,
    /// The presence entries of verified users (a subset of `presence`).
    pub verified: String,
}

impl RoomKeys {
    pub fn new(room: &str) -> RoomKeys {
        let key = |suffix: &str| format!("{KEY_PREFIX}{{{room}}}:{suffix}");
        RoomKeys {
            seq: key("seq"),
            history: key("history"),
            epoch: key("epoch"),
            events: key("events"),
            presence: key("presence"),
            nicks: key("nicks"),
            verified: key("verified"),
        }
    }

    /// The key of a resume token's record: `wschat:{ROOM}:resume:DIGEST`
    /// (the token's hex SHA-1, never the token).
    pub fn resume(&self, digest: &str) -> String {
        let room_prefix = self.nicks.strip_suffix("nicks").unwrap_or(&self.nicks);
        format!("{room_prefix}resume:{digest}")
    }
}

/// The arguments of one run of [`PUBLISH_SCRIPT`], for
/// [`link::Link::send`].
pub struct PublishCall<'a> {
    keys: &'a RoomKeys,
    message: &'a [u8],
    maxlen: [u8; 20],
    maxlen_at: usize,
    epoch: &'a [u8],
}

impl<'a> PublishCall<'a> {
    /// `epoch` must contain no space (it is a field of the published
    /// `SEQ EPOCH MESSAGE`).
    pub fn new(keys: &'a RoomKeys, message: &'a [u8], maxlen: u64, epoch: &'a [u8]) -> Self {
        let mut digits = [0u8; 20];
        let len = resp::format_u64(maxlen, &mut digits).len();
        PublishCall {
            keys,
            message,
            maxlen: digits,
            maxlen_at: 20 - len,
            epoch,
        }
    }

    fn with<'s>(&'s self, command: &'s [u8], script: &'s [u8]) -> [&'s [u8]; 10] {
        [
            command,
            script,
            b"4",
            self.keys.seq.as_bytes(),
            self.keys.history.as_bytes(),
            self.keys.epoch.as_bytes(),
            self.keys.events.as_bytes(),
            self.message,
            &self.maxlen[self.maxlen_at..],
            self.epoch,
        ]
    }

    /// `EVALSHA sha 4 KEYS... ARGV...`: the usual call.
    pub fn evalsha(&self) -> [&[u8]; 10] {
        self.with(b"EVALSHA", PUBLISH_SCRIPT_SHA1.as_bytes())
    }

    /// `EVAL script 4 KEYS... ARGV...`: the fallback after `NOSCRIPT`
    /// (Redis restarted or its script cache was flushed); it also caches
    /// the script again.
    pub fn eval(&self) -> [&[u8]; 10] {
        self.with(b"EVAL", PUBLISH_SCRIPT.as_bytes())
    }
}

/// A published room event: `SEQ EPOCH PAYLOAD` (`SEQ` decimal, 0 for an
/// unsequenced event such as a join; `EPOCH` without spaces, `-` when
/// unsequenced). `None` if it is not of that form.
pub fn parse_event(message: &[u8]) -> Option<(u64, &[u8], &[u8])> {
    let space = message.iter().position(|&b| b == b' ')?;
    let (seq, rest) = (&message[..space], &message[space + 1..]);
    if seq.is_empty() || seq.len() > 19 || !seq.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let seq = std::str::from_utf8(seq).ok()?.parse().ok()?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let (epoch, payload) = (&rest[..space], &rest[space + 1..]);
    if epoch.is_empty() {
        return None;
    }
    Some((seq, epoch, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha1::{Digest, Sha1};

    #[test]
    fn keys_carry_the_room_in_a_hash_tag() {
        let keys = RoomKeys::new("rust");
        assert_eq!(keys.seq, "wschat:{rust}:seq");
        assert_eq!(keys.history, "wschat:{rust}:history");
        assert_eq!(keys.epoch, "wschat:{rust}:epoch");
        assert_eq!(keys.events, "wschat:{rust}:events");
        assert_eq!(keys.presence, "wschat:{rust}:presence");
        assert_eq!(keys.nicks, "wschat:{rust}:nicks");
        assert_eq!(keys.verified, "wschat:{rust}:verified");
    }

    #[test]
    fn script_sha1_is_the_scripts() {
        let digest = Sha1::digest(PUBLISH_SCRIPT.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, PUBLISH_SCRIPT_SHA1);
    }

    /// What goes on the wire is the script and its arguments, byte for
    /// byte (redis-server's own check is in tests/redis_link.rs).
    #[test]
    fn publish_call_encodes_the_script_and_its_arguments() {
        let keys = RoomKeys::new("lobby");
        let call = PublishCall::new(&keys, b"hello world", 1000, b"n1-17");
        let mut out = Vec::new();
        resp::encode_command(&mut out, &call.evalsha());
        let want = format!(
            "*10\r\n$7\r\nEVALSHA\r\n$40\r\n{PUBLISH_SCRIPT_SHA1}\r\n$1\r\n4\r\n\
             $18\r\nwschat:{{lobby}}:seq\r\n$22\r\nwschat:{{lobby}}:history\r\n\
             $20\r\nwschat:{{lobby}}:epoch\r\n$21\r\nwschat:{{lobby}}:events\r\n\
             $11\r\nhello world\r\n$4\r\n1000\r\n$5\r\nn1-17\r\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let eval = call.eval();
        assert_eq!(eval[0], b"EVAL");
        assert_eq!(eval[1], PUBLISH_SCRIPT.as_bytes());
        assert_eq!(&eval[2..], &call.evalsha()[2..]);
        assert_eq!(PublishCall::new(&keys, b"", 0, b"e").evalsha()[8], b"0");
    }

    #[test]
    fn parses_published_events() {
        assert_eq!(
            parse_event(b"42 n1-17 hello world"),
            Some((42, &b"n1-17"[..], &b"hello world"[..]))
        );
        assert_eq!(parse_event(b"0 - "), Some((0, &b"-"[..], &b""[..])));
        assert_eq!(parse_event(b"42 e"), None);
        assert_eq!(parse_event(b" e x"), None);
        assert_eq!(parse_event(b"4x e x"), None);
        assert_eq!(parse_event(b"1  x"), None);
        assert_eq!(parse_event(b"99999999999999999999 e x"), None);
        assert_eq!(parse_event(b""), None);
    }
}
