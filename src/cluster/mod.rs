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
//! | [`throttle`] | a warning said at most once per interval, for what other publishers cause |
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
//! | `wschat:{ROOM}:events` | pub/sub channel | every event of the room: a batch of chat messages `*FIRST EPOCH COUNT\n` then `LEN\nMESSAGE` per message ([`parse_batch`]), or an unsequenced event `0 - PAYLOAD` ([`parse_event`]) |
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
pub mod throttle;
pub mod url;

/// The prefix of every key and channel wschat uses.
pub const KEY_PREFIX: &str = "wschat:";

/// The room directory: which node has users in which room, until when.
pub const DIRECTORY_ROOMS: &str = "wschat:{*}:rooms";
/// The room directory's counts: users per room and node.
pub const DIRECTORY_COUNTS: &str = "wschat:{*}:counts";

/// Appends a batch of chat messages to their room atomically: assigns the
/// room's next sequence numbers (one `INCRBY` for the batch), stores each
/// message in the room's history stream under its own `SEQ-0` id (trimmed
/// to about `ARGV[1]` entries) and publishes the whole batch to the room's
/// channel in one `PUBLISH` ([`parse_batch`]), in one `EVALSHA`, so that
/// every node sees one order per room and a newcomer on any node can be
/// replayed the same history (the way Centrifugo's Redis engine does it).
/// One call per room per pass of the loop, however many messages the pass
/// read (at most [`MAX_BATCH_MESSAGES`] and [`MAX_BATCH_BYTES`] a call):
/// Redis runs the script's fixed part, and each subscriber node parses a
/// push, once per batch rather than once per message.
///
/// - `KEYS[1]` `wschat:{ROOM}:seq`, `KEYS[2]` `wschat:{ROOM}:history`,
///   `KEYS[3]` `wschat:{ROOM}:epoch`, `KEYS[4]` `wschat:{ROOM}:events`
///   (the channel is passed as a key so that Redis Cluster checks it
///   hashes to the room's slot, as sharded pub/sub will need).
/// - `ARGV[1]` the history's `MAXLEN`, `ARGV[2]` the epoch to adopt if the
///   room has none (a new room, or Redis lost it): a token without spaces
///   or line feeds, e.g. `NODE-UNIXMS-TICKET`; `ARGV[3..]` the messages
///   (the chat's encoding), oldest first, at least one.
/// - Returns `{first, epoch}`: the messages are numbered `first`,
///   `first + 1`, ... in order. Publishes the batch ([`parse_batch`]).
///
/// When the numbering starts over (`first` is 1, or the epoch is gone) any
/// old history is deleted first, so stream ids stay increasing and a
/// client resuming with an old `since` learns from the new epoch that its
/// numbers mean nothing here. Redis runs a script alone: nothing else
/// happens between the `INCRBY` and the `PUBLISH`.
pub const PUBLISH_SCRIPT: &str = "\
local n = #ARGV - 2
if n < 1 then
  return redis.error_reply('ERR no message')
end
local first = redis.call('INCRBY', KEYS[1], n) - n + 1
local epoch = redis.call('GET', KEYS[3])
if first == 1 or not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[3], epoch)
  redis.call('DEL', KEYS[2])
end
local out = {string.format('*%d %s %d\\n', first, epoch, n)}
for i = 1, n do
  local m = ARGV[i + 2]
  redis.call('XADD', KEYS[2], string.format('%d-0', first + i - 1), 'm', m)
  out[2 * i] = string.format('%d\\n', #m)
  out[2 * i + 1] = m
end
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[1])
redis.call('PUBLISH', KEYS[4], table.concat(out))
return {first, epoch}
";

/// The SHA-1 of [`PUBLISH_SCRIPT`] in hex, as `SCRIPT LOAD` returns it and
/// `EVALSHA` takes it (a unit test checks it is the script's).
pub const PUBLISH_SCRIPT_SHA1: &str = "e46db3e33b4822a7d3ed4017af75505422d5ec26";

/// Most messages one [`PUBLISH_SCRIPT`] call carries; a pass that read
/// more for one room makes more calls.
pub const MAX_BATCH_MESSAGES: usize = 64;
/// Most message bytes one call carries (a longer message goes alone).
pub const MAX_BATCH_BYTES: usize = 64 * 1024;

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
    messages: &'a [&'a [u8]],
    maxlen: [u8; 20],
    maxlen_at: usize,
    epoch: &'a [u8],
}

impl<'a> PublishCall<'a> {
    /// `epoch` must contain no space or line feed (it is a field of the
    /// published batch); `messages` at least one, oldest first.
    pub fn new(keys: &'a RoomKeys, messages: &'a [&'a [u8]], maxlen: u64, epoch: &'a [u8]) -> Self {
        let mut digits = [0u8; 20];
        let len = resp::format_u64(maxlen, &mut digits).len();
        PublishCall {
            keys,
            messages,
            maxlen: digits,
            maxlen_at: 20 - len,
            epoch,
        }
    }

    fn with<'s>(&'s self, command: &'s [u8], script: &'s [u8]) -> Vec<&'s [u8]> {
        let mut args = Vec::with_capacity(9 + self.messages.len());
        args.extend([
            command,
            script,
            b"4",
            self.keys.seq.as_bytes(),
            self.keys.history.as_bytes(),
            self.keys.epoch.as_bytes(),
            self.keys.events.as_bytes(),
            &self.maxlen[self.maxlen_at..],
            self.epoch,
        ]);
        args.extend_from_slice(self.messages);
        args
    }

    /// `EVALSHA sha 4 KEYS... ARGV...`: the usual call.
    pub fn evalsha(&self) -> Vec<&[u8]> {
        self.with(b"EVALSHA", PUBLISH_SCRIPT_SHA1.as_bytes())
    }

    /// `EVAL script 4 KEYS... ARGV...`: the fallback after `NOSCRIPT`
    /// (Redis restarted or its script cache was flushed); it also caches
    /// the script again.
    pub fn eval(&self) -> Vec<&[u8]> {
        self.with(b"EVAL", PUBLISH_SCRIPT.as_bytes())
    }
}

/// A batch of sequenced messages as [`PUBLISH_SCRIPT`] publishes it:
///
/// ```text
/// *FIRST EPOCH COUNT\n        header: '*', decimal FIRST, the epoch, decimal COUNT >= 1
/// LEN\nMESSAGE               COUNT times: decimal LEN, a line feed, LEN bytes
/// ```
///
/// The messages are numbered `FIRST`, `FIRST + 1`, ... in order. The `*`
/// tells a batch from an unsequenced event ([`parse_event`]), whose first
/// byte is a digit. The payload arrives whole (one RESP bulk string, which
/// [`resp`] decodes incrementally), so this parser is not incremental; it
/// takes all or nothing: `None` for anything not exactly of this form
/// (trailing bytes included), never a panic.
#[derive(Debug, PartialEq, Eq)]
pub struct Batch<'a> {
    pub first: u64,
    pub epoch: &'a [u8],
    pub messages: Vec<&'a [u8]>,
}

/// Most decimal digits of a sequence number, a count or a length.
const MAX_DIGITS: usize = 19;

/// A decimal number ending at the first `end` byte of `bytes`, and what
/// follows that byte.
fn decimal(bytes: &[u8], end: u8) -> Option<(u64, &[u8])> {
    let at = bytes.iter().take(MAX_DIGITS + 1).position(|&b| b == end)?;
    let digits = &bytes[..at];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    Some((n, &bytes[at + 1..]))
}

/// Parses a published batch (see [`Batch`]).
pub fn parse_batch(payload: &[u8]) -> Option<Batch<'_>> {
    let rest = payload.strip_prefix(b"*")?;
    let (first, rest) = decimal(rest, b' ')?;
    let space = rest.iter().position(|&b| b == b' ')?;
    let (epoch, rest) = (&rest[..space], &rest[space + 1..]);
    if epoch.is_empty() || epoch.contains(&b'\n') {
        return None;
    }
    let (count, mut rest) = decimal(rest, b'\n')?;
    if count == 0 || first == 0 || first.checked_add(count - 1).is_none() {
        return None;
    }
    // Each message takes at least two bytes ("0\n"): a count beyond that
    // is a lie, and no allocation is made for it.
    let count = usize::try_from(count).ok()?;
    if count > rest.len() / 2 {
        return None;
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        let (len, after) = decimal(rest, b'\n')?;
        let len = usize::try_from(len).ok()?;
        if len > after.len() {
            return None;
        }
        messages.push(&after[..len]);
        rest = &after[len..];
    }
    rest.is_empty().then_some(Batch {
        first,
        epoch,
        messages,
    })
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
        let messages: [&[u8]; 2] = [b"hello world", b"x"];
        let call = PublishCall::new(&keys, &messages, 1000, b"n1-17");
        let mut out = Vec::new();
        resp::encode_command(&mut out, &call.evalsha());
        let want = format!(
            "*11\r\n$7\r\nEVALSHA\r\n$40\r\n{PUBLISH_SCRIPT_SHA1}\r\n$1\r\n4\r\n\
             $18\r\nwschat:{{lobby}}:seq\r\n$22\r\nwschat:{{lobby}}:history\r\n\
             $20\r\nwschat:{{lobby}}:epoch\r\n$21\r\nwschat:{{lobby}}:events\r\n\
             $4\r\n1000\r\n$5\r\nn1-17\r\n$11\r\nhello world\r\n$1\r\nx\r\n"
        );
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let eval = call.eval();
        assert_eq!(eval[0], b"EVAL");
        assert_eq!(eval[1], PUBLISH_SCRIPT.as_bytes());
        assert_eq!(&eval[2..], &call.evalsha()[2..]);
        let one: [&[u8]; 1] = [b""];
        assert_eq!(PublishCall::new(&keys, &one, 0, b"e").evalsha()[7], b"0");
    }

    /// The hex of a batch of two messages, `hi` and the empty one,
    /// numbered 41 and 42 in epoch `n1-5`.
    const TWO: &[u8] = b"\x2a\x34\x31\x20n1-5\x20\x32\x0a\x32\x0ahi\x30\x0a";

    #[test]
    fn parses_published_batches() {
        assert_eq!(TWO, b"*41 n1-5 2\n2\nhi0\n");
        assert_eq!(
            parse_batch(TWO),
            Some(Batch {
                first: 41,
                epoch: b"n1-5",
                messages: vec![b"hi", b""],
            })
        );
        // Bytes of any value inside a message, line feeds included.
        let odd = b"*1 e 1\n3\n\n\x00\xff";
        assert_eq!(
            parse_batch(odd).map(|b| b.messages),
            Some(vec![&b"\n\x00\xff"[..]])
        );
    }

    /// All or nothing: every cut of a batch short of its end, and every
    /// kind of lie, is `None` (and never a panic).
    #[test]
    fn malformed_batches_are_refused() {
        for at in 0..TWO.len() {
            assert_eq!(parse_batch(&TWO[..at]), None, "cut at {at}");
        }
        let mut longer = TWO.to_vec();
        longer.push(b'x');
        assert_eq!(parse_batch(&longer), None);
        for bad in [
            &b"41 n1-5 1\n2\nhi"[..],             // no '*': an event, not a batch
            b"*0 e 1\n2\nhi",                     // seq 0 is unsequenced
            b"*1 e 0\n",                          // no message
            b"*1  1\n2\nhi",                      // no epoch
            b"*1 e\nx 1\n2\nhi",                  // a line feed in the epoch
            b"*x e 1\n2\nhi",                     // not a number
            b"*1 e 1\n-2\nhi",                    // a negative length
            b"*1 e 1\n3\nhi",                     // shorter than said
            b"*1 e 2\n2\nhi",                     // fewer than said
            b"*1 e 99999999\n0\n",                // a count no payload can hold
            b"*18446744073709551615 e 2\n0\n0\n", // numbers past u64
            b"*99999999999999999999 e 1\n0\n",
            b"*1 e 1\n99999999999999999999\n",
            b"*1 e 1\n18446744073709551615\n",
        ] {
            assert_eq!(parse_batch(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        // Garbage of every length, for no panic.
        let noise: Vec<u8> = (0u32..512)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for at in 0..noise.len() {
            let mut b = b"*".to_vec();
            b.extend_from_slice(&noise[..at]);
            let _ = parse_batch(&b);
        }
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
