//! [`Bus`] over Redis: two [`Link`]s, one for pipelined commands, one in
//! subscribe mode, both sockets carried by the loop as upstreams.
//!
//! - A chat message (sequenced) runs [`PUBLISH_SCRIPT`] with
//!   [`PublishCall`]: `EVALSHA` (the script is loaded with `SCRIPT LOAD`
//!   each time the command link becomes ready), and `EVAL` once after a
//!   `NOSCRIPT` (Redis restarted or its script cache was flushed). The
//!   reply is [`BusEvent::Sequenced`]; a failure [`BusEvent::Lost`].
//! - Joins, leaves and nick changes (unsequenced) are a plain `PUBLISH`
//!   of `0 - PAYLOAD` on the room's channel.
//! - The room's channel is subscribed while this node has users in it;
//!   every `message` push becomes [`BusEvent::Remote`], our own included
//!   (the chat delivers its own sequenced messages when they come back, so
//!   every node delivers a room's messages in the one order Redis gave
//!   them). A sequenced message for a room whose subscription Redis has
//!   not confirmed yet waits (at most [`MAX_AWAITING`] of them) until it
//!   is, so that it cannot be published before we listen.
//! - Each time Redis confirms a room's subscription (first, and after
//!   every reconnect), the room's shared history is fetched with
//!   [`HISTORY_SCRIPT`] (its epoch and last entries, in one atomic read)
//!   and handed to the chat as [`BusEvent::History`]: everything
//!   published after the confirmation comes as a push, everything before
//!   is in the reply, and the chat merges the two by sequence number.
//! - Other nodes are reachable while both links are ready:
//!   [`BusEvent::Reachable`] is said on every change.
//! - A sequenced message Redis did not confirm (its reply lost with the
//!   connection, an error reply, never sent) comes back to the chat as
//!   [`BusEvent::Unconfirmed`], to be delivered here. A lost reply does not
//!   mean the script did not run (a stalled Redis may run it once it
//!   wakes, after the command link gave up): such a message may still come
//!   back on the subscription, and is then dropped (this node delivered
//!   it already), by a hash of it kept until then ([`MAX_RETURNED`]) or
//!   until the subscriber link drops (after which nothing sent before can
//!   come back).
//! - A message Redis numbered whose push this node has not heard yet is
//!   kept (at most [`MAX_UNHEARD`], by count and bytes) until it is heard.
//!   If the subscriber link drops first, or a later message of the room is
//!   heard first (pushes come in the room's order on one connection), its
//!   push will never come: it is handed to the chat from the reply instead,
//!   as the [`BusEvent::Remote`] the push would have been, so the sender's
//!   node does not miss what every other node shows.
//! - The room directory ([`DIRECTORY_SCRIPT`], [`ROOMS_SCRIPT`]): each
//!   node keeps, for each room it has users in, an entry with its count
//!   that expires like presence entries, refreshed on every join and leave
//!   and every heartbeat; `/rooms` reads it with one script.
//!
//! Bounds: each link's output and pending replies ([`super::link`]), the
//! messages awaiting a subscription ([`MAX_AWAITING`]); past them a
//! publish is [`Publish::Dropped`] and counted. The hashes of unconfirmed
//! messages ([`MAX_RETURNED`]) and the numbered messages whose push is
//! awaited ([`MAX_UNHEARD`], [`MAX_UNHEARD_BYTES`]) are bounded too, the
//! oldest forgotten (and counted). The events the bus hands
//! the chat are made one at a time from the links' events, so the chat's
//! pace is the bus's.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use log::{info, warn};

use super::bus::{Bus, BusEvent, Presence, Publish, Ticket};
use super::link::{Event, Link, LinkConfig, LinkState, Role};
use super::resp::Reply;
use super::room_read;
use super::throttle::Throttle;
use super::url::RedisUrl;
use super::{
    parse_batch, parse_event, PublishCall, RoomKeys, DIRECTORY_COUNTS, DIRECTORY_ROOMS, KEY_PREFIX,
    MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, PUBLISH_SCRIPT,
};
use crate::service::{Gauge, Upstream};

/// Sequenced messages that may wait for their room's subscription.
pub const MAX_AWAITING: usize = 1024;

/// Unconfirmed messages remembered (by a hash) in case Redis ran them
/// after all: one coming back past this many is delivered here twice.
pub const MAX_RETURNED: usize = 1024;

/// Numbered messages of ours whose push is awaited, at most; past it (or
/// [`MAX_UNHEARD_BYTES`]) the oldest is forgotten, and shown here only if
/// its push does come.
pub const MAX_UNHEARD: usize = 1024;
/// The bytes those messages may hold.
pub const MAX_UNHEARD_BYTES: usize = 4 * 1024 * 1024;

/// The history stream's `MAXLEN ~` by default.
pub const DEFAULT_HISTORY_MAXLEN: u64 = 1000;

/// Reads a room's epoch and its last `ARGV[1]` history entries, newest
/// first, at one instant: `KEYS[1]` `wschat:{ROOM}:epoch`, `KEYS[2]`
/// `wschat:{ROOM}:history`. Returns `{epoch or false, entries}`.
pub const HISTORY_SCRIPT: &str = "\
return {redis.call('GET', KEYS[1]), redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[1])}
";

/// Refreshes this node's members of a room and lists the room's
/// members, on Redis' clock (so nodes' clocks need not agree):
/// `KEYS[1]` `wschat:{ROOM}:presence` (a sorted set of `NODE US NAME`
/// scored by when the entry expires, in ms), `KEYS[2]`
/// `wschat:{ROOM}:verified` (the same, for the verified users only),
/// `ARGV[1]` the time to live in ms, `ARGV[2]` most members listed,
/// `ARGV[3..]` the members to refresh, each after one flag byte (`1`: a
/// verified user). Expired entries are removed first; the keys
/// themselves expire when no node refreshes them. Returns `{members,
/// verified members}`, read at one instant.
pub const PRESENCE_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
for i = 3, #ARGV do
  local entry = string.sub(ARGV[i], 2)
  redis.call('ZADD', KEYS[1], now + ttl, entry)
  if string.sub(ARGV[i], 1, 1) == '1' then
    redis.call('ZADD', KEYS[2], now + ttl, entry)
  else
    redis.call('ZREM', KEYS[2], entry)
  end
end
if #ARGV >= 3 then
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  redis.call('PEXPIRE', KEYS[2], ttl * 2)
end
local max = tonumber(ARGV[2]) - 1
return {redis.call('ZRANGE', KEYS[1], 0, max), redis.call('ZRANGE', KEYS[2], 0, max)}
";

/// Claims a name in a room across nodes, atomically: `KEYS[1]`
/// `wschat:{ROOM}:nicks` (a hash: name key → the holder's presence
/// entry), `KEYS[2]` `wschat:{ROOM}:presence`; `ARGV[1]` the claimant's
/// new presence entry (`NODE US NAME`), `ARGV[2]` its old one (`""`: none),
/// `ARGV[3]` the presence time to live (ms), `ARGV[4]` how many keys
/// follow for the new name, then those keys, then the old name's keys to
/// free. A key is taken while its holder's presence entry lives (so a dead
/// node's names come free when its entries expire). Returns 1, or the
/// holder's entry.
pub const NICK_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[4])
for i = 5, 4 + n do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder and holder ~= ARGV[1] and holder ~= ARGV[2] then
    local expires = redis.call('ZSCORE', KEYS[2], holder)
    if expires and tonumber(expires) > now then
      return holder
    end
  end
end
for i = 5, 4 + n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
end
for i = 5 + n, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[2] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
if ARGV[2] ~= '' then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
";

/// Takes a name in a room for a verified user, whoever holds it:
/// `KEYS[1]` `wschat:{ROOM}:nicks`, `KEYS[2]` `wschat:{ROOM}:presence`;
/// `ARGV[1]` the claimant's presence entry (`NODE US NAME`), `ARGV[2]`
/// the presence time to live (ms), `ARGV[3..]` the name's keys. Every key
/// passes to the claimant in one step; returns the entries of the live
/// holders it took them from (each once), for their nodes to be told.
pub const TAKE_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local taken, seen = {}, {}
for i = 3, #ARGV do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder and holder ~= ARGV[1] and not seen[holder] then
    local expires = redis.call('ZSCORE', KEYS[2], holder)
    if expires and tonumber(expires) > now then
      seen[holder] = true
      taken[#taken + 1] = holder
    end
  end
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[1])
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
return taken
";

/// Frees a name's keys if `ARGV[1]` (a presence entry) holds them:
/// `KEYS[1]` `wschat:{ROOM}:nicks`, `ARGV[2..]` the keys.
pub const RELEASE_SCRIPT: &str = "\
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return 1
";

/// Takes a resume record: `KEYS[1]` `wschat:{ROOM}:resume:DIGEST`,
/// `KEYS[2]` `wschat:{ROOM}:nicks`, `ARGV[1]` this node's id. The record
/// is `NODE US NICK US NAME (US KEY)*` (see `chat::Chat::resume_record`);
/// the name's keys, if the old node's entry holds them, pass to this
/// node's entry in the same step, so the name is never free between.
/// Returns the record, or nil.
pub const RESUME_TAKE_SCRIPT: &str = "\
local v = redis.call('GET', KEYS[1])
if not v then
  return false
end
redis.call('DEL', KEYS[1])
local f = {}
for part in string.gmatch(v, '[^\\31]+') do
  f[#f + 1] = part
end
if #f >= 3 then
  local old = f[1] .. '\\31' .. f[3]
  local new = ARGV[1] .. '\\31' .. f[3]
  for i = 4, #f do
    if redis.call('HGET', KEYS[2], f[i]) == old then
      redis.call('HSET', KEYS[2], f[i], new)
    end
  end
end
return v
";

/// Refreshes this node's entries in the room directory, on Redis' clock:
/// `KEYS[1]` [`DIRECTORY_ROOMS`] (a sorted set of `ROOM US NODE` scored by
/// when the entry expires, in ms), `KEYS[2]` [`DIRECTORY_COUNTS`] (a hash
/// of the same entries → users); `ARGV[1]` the time to live in ms,
/// `ARGV[2]` this node, then pairs `ROOM COUNT` (0: the node has left the
/// room, its entry goes). Up to 100 expired entries (of dead nodes) are
/// removed on the way; the keys expire when no node refreshes them (a
/// refresh never shortens their life).
pub const DIRECTORY_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
for _, entry in ipairs(dead) do
  redis.call('ZREM', KEYS[1], entry)
  redis.call('HDEL', KEYS[2], entry)
end
for i = 3, #ARGV - 1, 2 do
  local entry = ARGV[i] .. '\\31' .. ARGV[2]
  local n = tonumber(ARGV[i + 1])
  if n and n > 0 then
    redis.call('ZADD', KEYS[1], now + ttl, entry)
    redis.call('HSET', KEYS[2], entry, n)
  else
    redis.call('ZREM', KEYS[1], entry)
    redis.call('HDEL', KEYS[2], entry)
  end
end
for k = 1, 2 do
  if redis.call('PTTL', KEYS[k]) < ttl * 2 then
    redis.call('PEXPIRE', KEYS[k], ttl * 2)
  end
end
return 1
";

/// Lists the room directory: `KEYS` as [`DIRECTORY_SCRIPT`]'s, `ARGV[1]`
/// most rooms returned, `ARGV[2]` most live entries read. Sums each room's
/// users over the nodes whose entries live, and returns `{total rooms,
/// complete (1, or 0 when more entries lived than were read), ROOM, USERS,
/// ...}` for the busiest rooms (most users first, then by name).
pub const ROOMS_SCRIPT: &str = "\
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local most = tonumber(ARGV[2])
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf', 'LIMIT', 0, most + 1)
local complete = 1
if #live > most then
  complete = 0
  live[#live] = nil
end
local users, names = {}, {}
for _, entry in ipairs(live) do
  local room = string.match(entry, '^[^\\31]+')
  if room then
    if not users[room] then
      users[room] = 0
      names[#names + 1] = room
    end
    users[room] = users[room] + (tonumber(redis.call('HGET', KEYS[2], entry)) or 0)
  end
end
table.sort(names, function(a, b)
  if users[a] ~= users[b] then
    return users[a] > users[b]
  end
  return a < b
end)
local out = {#names, complete}
for i = 1, math.min(#names, tonumber(ARGV[1])) do
  out[#out + 1] = names[i]
  out[#out + 1] = users[names[i]]
end
return out
";

/// Presence entries live this long without a refresh (ms).
pub const PRESENCE_TTL_MS: u64 = 6_000;
/// Between two refreshes of this node's presence entries.
pub const PRESENCE_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);
/// Most members one presence listing returns (a reply stays bounded).
pub const MAX_LISTED: u64 = 10_000;

/// The separator between node and name in a presence entry.
const US: u8 = 0x1f;

/// What a command on the command link was for.
#[derive(Debug)]
enum Tag {
    /// The history of `room` ([`HISTORY_SCRIPT`]).
    History { room: String },
    /// The presence listing of `room` ([`PRESENCE_SCRIPT`]).
    Presence { room: String },
    /// A name claim ([`NICK_SCRIPT`]).
    Claim { ticket: Ticket },
    /// A verified user's name taken in `room` ([`TAKE_SCRIPT`]).
    Take { room: String, name: String },
    /// A resume record taken ([`RESUME_TAKE_SCRIPT`]).
    Resume { ticket: Ticket },
    /// The room directory listed ([`ROOMS_SCRIPT`]).
    Rooms { ticket: Ticket },
    /// One room's state read ([`room_read::ROOM_SCRIPT`]).
    Room { ticket: Ticket },
    /// A batch of `room`'s messages ([`PUBLISH_SCRIPT`]), oldest first,
    /// each with its ticket.
    Publish {
        room: String,
        items: Vec<(Ticket, Vec<u8>)>,
        /// Sent again with `EVAL` after `NOSCRIPT` already.
        retried: bool,
        sent: Instant,
    },
    /// `SCRIPT LOAD`, or a `PUBLISH` whose reply only counts.
    Quiet,
}

/// A message of ours Redis numbered, its push not heard yet.
#[derive(Debug)]
struct Unheard {
    room: String,
    seq: u64,
    epoch: String,
    event: Vec<u8>,
}

impl Unheard {
    fn into_event(self) -> BusEvent {
        BusEvent::Remote {
            room: self.room,
            seq: self.seq,
            epoch: self.epoch,
            event: self.event,
        }
    }
}

/// A message waiting for its room's subscription.
#[derive(Debug)]
struct Awaiting {
    ticket: Ticket,
    room: String,
    message: Vec<u8>,
}

/// A room's messages published in this pass, sent at its end
/// ([`Bus::flush`]) as one script call, or sooner when full.
#[derive(Debug, Default)]
struct Gathered {
    items: Vec<(Ticket, Vec<u8>)>,
    bytes: usize,
}

/// What one batch's command takes beyond its messages' bytes (the
/// script's hash, the keys, the numbers, the RESP framing), about.
const BATCH_OVERHEAD: usize = 512;
/// What each message adds to it (its RESP header).
const MESSAGE_OVERHEAD: usize = 16;

/// A link and where it connects: what the loop carries.
struct Conn<T> {
    link: Link<T>,
    addr: SocketAddr,
}

impl<T> Upstream for Conn<T> {
    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn wanted_socket(&self) -> Option<u64> {
        match self.link.state() {
            LinkState::Disconnected => None,
            _ => Some(self.link.stats().connects),
        }
    }

    fn on_connected(&mut self, now: Instant) {
        self.link.on_connected(now);
    }

    fn on_input(&mut self, now: Instant, bytes: &[u8]) {
        self.link.on_input(now, bytes);
    }

    fn on_eof(&mut self, now: Instant) {
        self.link.on_eof(now);
    }

    fn on_error(&mut self, now: Instant, kind: io::ErrorKind) {
        self.link.on_error(now, kind);
    }

    fn output(&self) -> &[u8] {
        self.link.output()
    }

    fn advance_output(&mut self, n: usize) {
        self.link.advance_output(n);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.link.poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.link.handle_timeout(now);
    }
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Events handed to Redis (sequenced and not).
    pub published: u64,
    /// Events not sent: Redis out of reach or a queue full.
    pub dropped: u64,
    /// Sequenced events that may not have run (connection lost, error).
    pub lost: u64,
    /// `message` pushes received (our own included).
    pub received: u64,
    /// Times other nodes became unreachable.
    pub outages: u64,
    /// Unconfirmed messages (delivered here) heard back after all, and
    /// dropped so as not to deliver them twice.
    pub heard_late: u64,
    /// Numbered messages of ours whose push was lost (the subscriber link
    /// dropped), handed to the chat from the script's reply.
    pub unheard: u64,
    /// Numbered messages of ours forgotten while their push was awaited
    /// (too many awaited).
    pub unheard_forgotten: u64,
    /// Sum and count of publish round trips, in microseconds (one per
    /// script call).
    pub publish_us_sum: u64,
    pub publish_count: u64,
    /// Publish script calls sent (each carries a batch of a room's
    /// messages).
    pub publish_calls: u64,
    /// Pushes whose event or batch was not of the published form
    /// (dropped, and logged).
    pub malformed: u64,
}

/// The Redis bus.
pub struct RedisBus {
    commands: Conn<Tag>,
    subscriber: Conn<()>,
    /// The start of the epoch a room gets when Redis has none for it:
    /// `NODE-UNIXMS` (then `-TICKET`).
    epoch: Vec<u8>,
    history_maxlen: u64,
    /// Entries fetched for a room's history (the chat's history length).
    replay_count: u64,
    next_ticket: u64,
    events: VecDeque<BusEvent>,
    awaiting: VecDeque<Awaiting>,
    /// Each room's messages of this pass, not sent yet.
    gathered: BTreeMap<String, Gathered>,
    /// The bytes they hold (with [`MESSAGE_OVERHEAD`] each).
    gathered_bytes: usize,
    /// Rooms subscribed, by their channel.
    channels: BTreeMap<Vec<u8>, String>,
    /// This node's id, as in presence entries.
    node: Vec<u8>,
    /// This node's members of each room (their presence entries).
    /// The flag is whether the member is a verified user.
    members: BTreeMap<String, BTreeMap<Vec<u8>, bool>>,
    /// When presence is next refreshed.
    next_heartbeat: Instant,
    /// Hashes of unconfirmed messages handed back to the chat (see
    /// [`BusEvent::Unconfirmed`]), oldest first, at most [`MAX_RETURNED`].
    returned: VecDeque<u64>,
    /// The last numbered push heard in each room (epoch, seq).
    heard: BTreeMap<String, (String, u64)>,
    /// Our numbered messages whose push is awaited, in reply order.
    unheard: VecDeque<Unheard>,
    /// The bytes of their events.
    unheard_bytes: usize,
    reachable: bool,
    /// Why not reachable, for `/healthz`.
    why: Option<String>,
    stats: BusStats,
    /// Malformed pushes are said at most once per
    /// [`throttle::EVERY`](super::throttle::EVERY).
    malformed_warning: Throttle,
}

impl fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBus")
            .field("addr", &self.commands.addr)
            .field("commands", &self.commands.link.state())
            .field("subscriber", &self.subscriber.link.state())
            .field("reachable", &self.reachable)
            .field("stats", &self.stats)
            .finish()
    }
}

impl RedisBus {
    /// A bus that connects to `addr` (resolved from `url`) as soon as the
    /// loop drives it. `node` seeds the backoff's jitter and the epochs of
    /// new rooms; `unix_ms` is now.
    pub fn new(
        url: &RedisUrl,
        addr: SocketAddr,
        node: &str,
        unix_ms: u64,
        history_maxlen: u64,
        replay_count: u64,
        now: Instant,
    ) -> RedisBus {
        let seed = node.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }) ^ unix_ms;
        RedisBus {
            commands: Conn {
                link: Link::new(LinkConfig::new(url, Role::Commands), seed, now),
                addr,
            },
            subscriber: Conn {
                link: Link::new(LinkConfig::new(url, Role::Subscriber), seed ^ 1, now),
                addr,
            },
            epoch: format!("{node}-{unix_ms}").into_bytes(),
            history_maxlen,
            replay_count,
            next_ticket: 0,
            events: VecDeque::new(),
            awaiting: VecDeque::new(),
            gathered: BTreeMap::new(),
            gathered_bytes: 0,
            channels: BTreeMap::new(),
            node: node.as_bytes().to_vec(),
            members: BTreeMap::new(),
            next_heartbeat: now,
            returned: VecDeque::new(),
            heard: BTreeMap::new(),
            unheard: VecDeque::new(),
            unheard_bytes: 0,
            reachable: false,
            why: Some("connecting to Redis".into()),
            stats: BusStats::default(),
            malformed_warning: Throttle::default(),
        }
    }

    pub fn stats(&self) -> BusStats {
        self.stats
    }

    fn both_ready(&self) -> bool {
        self.commands.link.is_ready() && self.subscriber.link.is_ready()
    }

    /// Says a change of reachability, once per change.
    fn update_reachable(&mut self, why: Option<String>) {
        let now_reachable = self.both_ready();
        if now_reachable == self.reachable {
            if !now_reachable && why.is_some() {
                self.why = why;
            }
            return;
        }
        self.reachable = now_reachable;
        if now_reachable {
            info!("Redis reachable: chat across nodes");
            self.why = None;
        } else {
            self.stats.outages += 1;
            self.why = Some(why.unwrap_or_else(|| "Redis link down".into()));
            warn!(
                "Redis out of reach ({}): chat stays on this node",
                self.why.as_deref().unwrap_or_default()
            );
            // What waited for a subscription or the pass's end was never
            // sent.
            while let Some(a) = self.awaiting.pop_front() {
                self.unconfirmed(a.ticket, a.room, a.message);
            }
            self.gathered_bytes = 0;
            for (room, gathered) in std::mem::take(&mut self.gathered) {
                for (ticket, message) in gathered.items {
                    self.unconfirmed(ticket, room.clone(), message);
                }
            }
        }
        self.events.push_back(BusEvent::Reachable(now_reachable));
    }

    /// Whether a message of `len` bytes may be gathered: the command link
    /// will take it with everything gathered so far (each room's batch one
    /// command more), so that what is gathered is bounded as the link is.
    fn has_room_for(&self, room: &str, len: usize) -> bool {
        let new_batch = usize::from(!self.gathered.contains_key(room));
        let batches = self.gathered.len() + new_batch;
        let bytes = self.gathered_bytes + len + MESSAGE_OVERHEAD + batches * BATCH_OVERHEAD;
        self.commands.link.has_room(batches, bytes)
    }

    /// Adds `message` to `room`'s batch of this pass; a batch that would
    /// pass [`MAX_BATCH_BYTES`] is sent first, one that reaches
    /// [`MAX_BATCH_MESSAGES`] is sent at once.
    fn gather(&mut self, now: Instant, ticket: Ticket, room: &str, message: Vec<u8>) {
        let full = self
            .gathered
            .get(room)
            .is_some_and(|g| !g.items.is_empty() && g.bytes + message.len() > MAX_BATCH_BYTES);
        if full {
            self.seal(now, room);
        }
        let len = message.len() + MESSAGE_OVERHEAD;
        let gathered = match self.gathered.get_mut(room) {
            Some(g) => g,
            None => self.gathered.entry(room.to_owned()).or_default(),
        };
        gathered.items.push((ticket, message));
        gathered.bytes += len;
        self.gathered_bytes += len;
        if gathered.items.len() >= MAX_BATCH_MESSAGES {
            self.seal(now, room);
        }
    }

    /// Sends `room`'s gathered batch, if any; what the link refuses goes
    /// back to the chat as [`BusEvent::Unconfirmed`].
    fn seal(&mut self, now: Instant, room: &str) {
        let Some((room, gathered)) = self.gathered.remove_entry(room) else {
            return;
        };
        self.gathered_bytes -= gathered.bytes;
        self.send_gathered(now, room, gathered.items);
    }

    /// Sends a batch; what the link refuses goes back to the chat.
    fn send_gathered(&mut self, now: Instant, room: String, items: Vec<(Ticket, Vec<u8>)>) {
        if let Some(refused) = self.send_batch(now, room.clone(), items, false) {
            for (ticket, message) in refused {
                self.unconfirmed(ticket, room.clone(), message);
            }
        }
    }

    /// Runs the publish script for `items` (oldest first) in `room`; the
    /// items back if the link refused the command.
    fn send_batch(
        &mut self,
        now: Instant,
        room: String,
        items: Vec<(Ticket, Vec<u8>)>,
        retried: bool,
    ) -> Option<Vec<(Ticket, Vec<u8>)>> {
        // Nothing to send: nothing refused.
        let &(first_ticket, _) = items.first()?;
        let keys = RoomKeys::new(&room);
        // A room (re)numbered by this publish gets an epoch no other
        // numbering had: this process's `NODE-STARTMS`, and the ticket.
        let mut epoch = Vec::with_capacity(self.epoch.len() + 21);
        epoch.extend_from_slice(&self.epoch);
        epoch.push(b'-');
        let mut digits = [0u8; 20];
        epoch.extend_from_slice(super::resp::format_u64(first_ticket.0, &mut digits));
        let messages: Vec<&[u8]> = items.iter().map(|(_, m)| m.as_slice()).collect();
        let call = PublishCall::new(&keys, &messages, self.history_maxlen, &epoch);
        let args = if retried { call.eval() } else { call.evalsha() };
        let bytes: usize = messages.iter().map(|m| m.len()).sum();
        let mut out = Vec::with_capacity(bytes + MESSAGE_OVERHEAD * messages.len() + 256);
        super::resp::encode_command(&mut out, &args);
        drop(args);
        drop(messages);
        // The tag keeps the messages for a retry after NOSCRIPT and for
        // the chat if Redis does not confirm them.
        let tag = Tag::Publish {
            room,
            items,
            retried,
            sent: now,
        };
        match self.commands.link.send_raw(now, tag, &out) {
            Ok(()) => {
                self.stats.publish_calls += 1;
                None
            }
            Err((e, tag)) => {
                warn!("Redis: {e}");
                match tag {
                    Tag::Publish { items, .. } => Some(items),
                    _ => None,
                }
            }
        }
    }

    /// Sends a command whose answer comes back as an event keyed by a
    /// new ticket (`tag` made from it): queued under that ticket, or
    /// dropped if the link refused it.
    fn send_ticketed(&mut self, now: Instant, tag: fn(Ticket) -> Tag, command: &[u8]) -> Publish {
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        if self.send_encoded(now, tag(ticket), command) {
            Publish::Queued(ticket)
        } else {
            Publish::Dropped
        }
    }

    fn send_encoded(&mut self, now: Instant, tag: Tag, command: &[u8]) -> bool {
        match self.commands.link.send_raw(now, tag, command) {
            Ok(()) => true,
            Err((e, _)) => {
                warn!("Redis: {e}");
                false
            }
        }
    }

    /// Hands a sequenced message Redis did not confirm back to the
    /// chat, remembering it in case it comes back after all.
    fn unconfirmed(&mut self, ticket: Ticket, room: String, event: Vec<u8>) {
        self.stats.lost += 1;
        if self.returned.len() >= MAX_RETURNED {
            self.returned.pop_front();
        }
        self.returned.push_back(event_hash(&room, &event));
        self.events.push_back(BusEvent::Unconfirmed {
            ticket,
            room,
            event,
        });
    }

    /// Redis numbered our `event`: unless its push was heard already, it
    /// is awaited, or handed over now if the subscriber link is down (its
    /// push cannot come: a subscription made from now on is processed
    /// after the script that already ran).
    fn expect_push(&mut self, room: String, seq: u64, epoch: String, event: Vec<u8>) {
        if let Some((heard_epoch, heard_seq)) = self.heard.get(&room) {
            if *heard_epoch == epoch && *heard_seq >= seq {
                return;
            }
        }
        let unheard = Unheard {
            room,
            seq,
            epoch,
            event,
        };
        if !self.subscriber.link.is_ready() {
            self.stats.unheard += 1;
            self.events.push_back(unheard.into_event());
            return;
        }
        while self.unheard.len() >= MAX_UNHEARD
            || (!self.unheard.is_empty()
                && self.unheard_bytes + unheard.event.len() > MAX_UNHEARD_BYTES)
        {
            if let Some(old) = self.unheard.pop_front() {
                self.unheard_bytes -= old.event.len();
                self.stats.unheard_forgotten += 1;
            }
        }
        self.unheard_bytes += unheard.event.len();
        self.unheard.push_back(unheard);
    }

    /// Pushes numbered `first..=last` in `room`: our messages of the room
    /// numbered before them and not heard will not be (handed over first,
    /// in order); ours numbered among them are these.
    fn heard_push(&mut self, room: &str, first: u64, last: u64, epoch: &[u8]) {
        match self.heard.get_mut(room) {
            Some((e, s)) if e.as_bytes() == epoch => *s = (*s).max(last),
            Some(held) => *held = (String::from_utf8_lossy(epoch).into_owned(), last),
            None => {
                let epoch = String::from_utf8_lossy(epoch).into_owned();
                self.heard.insert(room.to_owned(), (epoch, last));
            }
        }
        if self.unheard.is_empty() {
            return;
        }
        let mut keep = VecDeque::with_capacity(self.unheard.len());
        while let Some(u) = self.unheard.pop_front() {
            if u.room != room || u.seq > last {
                keep.push_back(u);
                continue;
            }
            self.unheard_bytes -= u.event.len();
            if u.seq < first {
                self.stats.unheard += 1;
                self.events.push_back(u.into_event());
            }
        }
        self.unheard = keep;
    }

    /// Refreshes this node's directory entries: each room with its count
    /// (0: gone from the room).
    fn refresh_directory(&mut self, now: Instant, rooms: &[(&str, usize)]) {
        if rooms.is_empty() || !self.commands.link.is_ready() {
            return;
        }
        let mut ttl = [0u8; 20];
        let ttl = super::resp::format_u64(PRESENCE_TTL_MS, &mut ttl);
        let counts: Vec<String> = rooms.iter().map(|(_, n)| n.to_string()).collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(6 + 2 * rooms.len());
        args.extend([
            b"EVAL".as_slice(),
            DIRECTORY_SCRIPT.as_bytes(),
            b"2",
            DIRECTORY_ROOMS.as_bytes(),
            DIRECTORY_COUNTS.as_bytes(),
            ttl,
            &self.node,
        ]);
        for ((room, _), n) in rooms.iter().zip(&counts) {
            args.push(room.as_bytes());
            args.push(n.as_bytes());
        }
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        self.send_encoded(now, Tag::Quiet, &out);
    }

    /// This node's presence entry for `member`.
    fn entry(&self, member: &str) -> Vec<u8> {
        let mut entry = Vec::with_capacity(self.node.len() + 1 + member.len());
        entry.extend_from_slice(&self.node);
        entry.push(US);
        entry.extend_from_slice(member.as_bytes());
        entry
    }

    /// Refreshes `entries` of `room` (none: only lists) and asks for the
    /// room's listing.
    fn refresh_presence(&mut self, now: Instant, room: &str, entries: &[(&[u8], bool)]) {
        if !self.commands.link.is_ready() {
            return;
        }
        let keys = RoomKeys::new(room);
        let (mut ttl, mut max) = ([0u8; 20], [0u8; 20]);
        let ttl = super::resp::format_u64(PRESENCE_TTL_MS, &mut ttl);
        let max = super::resp::format_u64(MAX_LISTED, &mut max);
        let flagged: Vec<Vec<u8>> = entries
            .iter()
            .map(|&(entry, verified)| {
                let mut arg = Vec::with_capacity(1 + entry.len());
                arg.push(if verified { b'1' } else { b'0' });
                arg.extend_from_slice(entry);
                arg
            })
            .collect();
        let mut args: Vec<&[u8]> = Vec::with_capacity(entries.len() + 7);
        args.extend([
            b"EVAL".as_slice(),
            PRESENCE_SCRIPT.as_bytes(),
            b"2",
            keys.presence.as_bytes(),
            keys.verified.as_bytes(),
            ttl,
            max,
        ]);
        args.extend(flagged.iter().map(Vec::as_slice));
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        let tag = Tag::Presence {
            room: room.to_owned(),
        };
        self.send_encoded(now, tag, &out);
    }

    /// Asks for `room`'s shared history.
    fn fetch_history(&mut self, now: Instant, room: &str) {
        if self.replay_count == 0 || !self.commands.link.is_ready() {
            return;
        }
        let keys = RoomKeys::new(room);
        let mut digits = [0u8; 20];
        let count = super::resp::format_u64(self.replay_count, &mut digits);
        let args: [&[u8]; 6] = [
            b"EVAL",
            HISTORY_SCRIPT.as_bytes(),
            b"2",
            keys.epoch.as_bytes(),
            keys.history.as_bytes(),
            count,
        ];
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        let tag = Tag::History {
            room: room.to_owned(),
        };
        if !self.send_encoded(now, tag, &out) {
            // Nobody waits for it for ever: an empty history.
            self.events.push_back(BusEvent::History {
                room: room.to_owned(),
                epoch: None,
                entries: Vec::new(),
            });
        }
    }

    /// Sends what waited for `channel`'s subscription.
    fn release(&mut self, now: Instant, room: &str) {
        let mut keep = VecDeque::with_capacity(self.awaiting.len());
        while let Some(a) = self.awaiting.pop_front() {
            if a.room != room {
                keep.push_back(a);
                continue;
            }
            // Sent with the pass's batch of the room (or sooner, if full).
            self.gather(now, a.ticket, &a.room, a.message);
            self.stats.published += 1;
        }
        self.awaiting = keep;
    }

    fn on_command_event(&mut self, now: Instant, event: Event<Tag>) {
        match event {
            Event::Ready => {
                let load: [&[u8]; 3] = [b"SCRIPT", b"LOAD", PUBLISH_SCRIPT.as_bytes()];
                let mut out = Vec::new();
                super::resp::encode_command(&mut out, &load);
                self.send_encoded(now, Tag::Quiet, &out);
                // Subscriptions confirmed before this link was ready
                // fetched nothing.
                let heard: Vec<String> = self
                    .channels
                    .iter()
                    .filter(|(c, _)| self.subscriber.link.is_subscribed(c))
                    .map(|(_, room)| room.clone())
                    .collect();
                for room in heard {
                    self.fetch_history(now, &room);
                }
                self.update_reachable(None);
            }
            Event::Reply {
                tag: Tag::Presence { room },
                reply,
            } => {
                let (Some(items), Some(verified)) = (
                    reply
                        .as_array()
                        .and_then(|a| a.first())
                        .and_then(Reply::as_array),
                    reply
                        .as_array()
                        .and_then(|a| a.get(1))
                        .and_then(Reply::as_array),
                ) else {
                    warn!(
                        "Redis: the presence of {room} came back as {}",
                        reply.brief()
                    );
                    return;
                };
                let verified: std::collections::BTreeSet<&[u8]> =
                    verified.iter().filter_map(Reply::as_bytes).collect();
                let members = items
                    .iter()
                    .filter_map(Reply::as_bytes)
                    .filter(|entry| {
                        !entry.starts_with(&self.node) || entry.get(self.node.len()) != Some(&US)
                    })
                    .filter_map(|entry| Some((split_entry(entry)?, verified.contains(entry))))
                    .collect();
                self.events.push_back(BusEvent::Roster { room, members });
            }
            Event::Reply {
                tag: Tag::History { room },
                reply,
            } => match history(&reply) {
                Some((epoch, entries)) => self.events.push_back(BusEvent::History {
                    room,
                    epoch,
                    entries,
                }),
                None => {
                    warn!(
                        "Redis: the history of {room} came back as {}",
                        reply.brief()
                    );
                    // Nobody waits for it for ever.
                    self.events.push_back(BusEvent::History {
                        room,
                        epoch: None,
                        entries: Vec::new(),
                    });
                }
            },
            Event::Disconnected { reason, retry_in } => {
                self.update_reachable(Some(format!(
                    "Redis command link: {reason}; retrying in {retry_in:?}"
                )));
            }
            Event::Reply {
                tag:
                    Tag::Publish {
                        room,
                        items,
                        retried,
                        sent,
                    },
                reply,
            } => {
                if reply.is_error_code("NOSCRIPT") && !retried {
                    if let Some(refused) = self.send_batch(now, room.clone(), items, true) {
                        for (ticket, message) in refused {
                            self.unconfirmed(ticket, room.clone(), message);
                        }
                    }
                    return;
                }
                let took = now.saturating_duration_since(sent);
                self.stats.publish_us_sum += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.stats.publish_count += 1;
                match sequenced(&reply) {
                    Some((first, epoch)) => {
                        for ((ticket, message), seq) in items.into_iter().zip(first..) {
                            self.events.push_back(BusEvent::Sequenced {
                                ticket,
                                room: room.clone(),
                                seq,
                                epoch: epoch.clone(),
                            });
                            self.expect_push(room.clone(), seq, epoch.clone(), message);
                        }
                    }
                    None => {
                        warn!("Redis: the publish script answered {}", reply.brief());
                        for (ticket, message) in items {
                            self.unconfirmed(ticket, room.clone(), message);
                        }
                    }
                }
            }
            Event::Reply {
                tag: Tag::Claim { ticket },
                reply,
            } => {
                let holder = match &reply {
                    Reply::Integer(1) => None,
                    other => match other.as_bytes() {
                        Some(entry) => Some(match entry.iter().position(|&b| b == US) {
                            Some(at) => format!(
                                "{}@{}",
                                String::from_utf8_lossy(&entry[at + 1..]),
                                String::from_utf8_lossy(&entry[..at])
                            ),
                            None => String::from_utf8_lossy(entry).into_owned(),
                        }),
                        None => {
                            warn!("Redis: a name claim came back as {}", reply.brief());
                            self.events.push_back(BusEvent::Lost { ticket });
                            return;
                        }
                    },
                };
                self.events.push_back(BusEvent::Claimed { ticket, holder });
            }
            Event::Reply {
                tag: Tag::Take { room, name },
                reply,
            } => {
                let Some(items) = reply.as_array() else {
                    warn!(
                        "Redis: taking the name {name} in {room} came back as {}",
                        reply.brief()
                    );
                    return;
                };
                let from = items
                    .iter()
                    .filter_map(Reply::as_bytes)
                    .filter_map(split_entry)
                    .collect();
                self.events.push_back(BusEvent::Taken { room, name, from });
            }
            Event::Reply {
                tag: Tag::Resume { ticket },
                reply,
            } => match (&reply, reply.as_bytes()) {
                (_, Some(record)) => self.events.push_back(BusEvent::Resume {
                    ticket,
                    record: Some(record.to_vec()),
                }),
                (Reply::Bulk(None), None) => self.events.push_back(BusEvent::Resume {
                    ticket,
                    record: None,
                }),
                _ => {
                    warn!("Redis: a resume came back as {}", reply.brief());
                    self.events.push_back(BusEvent::Lost { ticket });
                }
            },
            Event::Reply {
                tag: Tag::Rooms { ticket },
                reply,
            } => match directory(&reply) {
                Some((total, complete, rooms)) => self.events.push_back(BusEvent::Rooms {
                    ticket,
                    rooms,
                    total,
                    complete,
                }),
                None => {
                    warn!("Redis: the room directory came back as {}", reply.brief());
                    self.events.push_back(BusEvent::Lost { ticket });
                }
            },
            Event::Reply {
                tag: Tag::Room { ticket },
                reply,
            } => match room_read::parse(&reply) {
                Some(state) => self.events.push_back(BusEvent::Room { ticket, state }),
                None => {
                    warn!("Redis: reading a room came back as {}", reply.brief());
                    self.events.push_back(BusEvent::Lost { ticket });
                }
            },
            Event::Failed {
                tag:
                    Tag::Claim { ticket }
                    | Tag::Resume { ticket }
                    | Tag::Rooms { ticket }
                    | Tag::Room { ticket },
            } => self.events.push_back(BusEvent::Lost { ticket }),
            Event::Failed {
                tag: Tag::Publish { room, items, .. },
            } => {
                for (ticket, message) in items {
                    self.unconfirmed(ticket, room.clone(), message);
                }
            }
            Event::Reply {
                tag: Tag::Quiet,
                reply,
            } => {
                if let Some(e) = reply.as_error() {
                    warn!("Redis: {}", String::from_utf8_lossy(e));
                }
            }
            _ => {}
        }
    }

    fn on_subscriber_event(&mut self, now: Instant, event: Event<()>) {
        match event {
            Event::Ready => self.update_reachable(None),
            Event::Disconnected { reason, retry_in } => {
                // Nothing published before can come back on a new
                // connection.
                self.returned.clear();
                self.update_reachable(Some(format!(
                    "Redis subscriber link: {reason}; retrying in {retry_in:?}"
                )));
                self.unheard_bytes = 0;
                while let Some(u) = self.unheard.pop_front() {
                    self.stats.unheard += 1;
                    self.events.push_back(u.into_event());
                }
            }
            Event::Subscribed(channel) => {
                if let Some(room) = self.channels.get(&channel).cloned() {
                    self.fetch_history(now, &room);
                    self.release(now, &room);
                }
            }
            Event::Message { channel, payload } => {
                let Some(room) = room_of(&channel) else {
                    return;
                };
                let room = room.to_owned();
                if payload.first() == Some(&b'*') {
                    self.on_batch(&room, &payload);
                    return;
                }
                self.stats.received += 1;
                let Some((seq, epoch, event)) = parse_event(&payload) else {
                    self.malformed(&room);
                    return;
                };
                if seq > 0 {
                    self.heard_push(&room, seq, seq, epoch);
                    if self.heard_late(&room, event) {
                        return;
                    }
                }
                self.events.push_back(BusEvent::Remote {
                    room,
                    seq,
                    epoch: String::from_utf8_lossy(epoch).into_owned(),
                    event: event.to_vec(),
                });
            }
            _ => {}
        }
    }

    /// A push of `room` neither a batch nor an event: dropped, counted,
    /// and said at most once per
    /// [`throttle::EVERY`](super::throttle::EVERY), as others decide how
    /// many arrive.
    fn malformed(&mut self, room: &str) {
        self.stats.malformed += 1;
        if let Some(held) = self.malformed_warning.allow(Instant::now()) {
            warn!("Redis: a malformed event in {room}, dropped{held}");
        }
    }

    /// Whether our `event` in `room`, handed to the chat unconfirmed,
    /// has come back after all (then not delivered again).
    fn heard_late(&mut self, room: &str, event: &[u8]) -> bool {
        if self.returned.is_empty() {
            return false;
        }
        let hash = event_hash(room, event);
        let Some(at) = self.returned.iter().position(|&h| h == hash) else {
            return false;
        };
        self.returned.remove(at);
        self.stats.heard_late += 1;
        info!(
            "Redis ran a message of {room} it had not confirmed: delivered here already, not again"
        );
        true
    }

    /// A batch of `room`'s messages ([`parse_batch`]): each becomes a
    /// [`BusEvent::Remote`] with its own number, in order.
    fn on_batch(&mut self, room: &str, payload: &[u8]) {
        let Some(batch) = parse_batch(payload) else {
            self.malformed(room);
            return;
        };
        let count = batch.messages.len() as u64;
        self.stats.received += count;
        // parse_batch checked that first + count - 1 fits.
        let last = batch.first + (count - 1);
        self.heard_push(room, batch.first, last, batch.epoch);
        let epoch = String::from_utf8_lossy(batch.epoch).into_owned();
        for (event, seq) in batch.messages.into_iter().zip(batch.first..) {
            if self.heard_late(room, event) {
                continue;
            }
            self.events.push_back(BusEvent::Remote {
                room: room.to_owned(),
                seq,
                epoch: epoch.clone(),
                event: event.to_vec(),
            });
        }
    }
}

/// The `{seq, epoch}` the publish script returns.
fn sequenced(reply: &Reply) -> Option<(u64, String)> {
    let items = reply.as_array()?;
    let seq = u64::try_from(items.first()?.as_integer()?).ok()?;
    let epoch = String::from_utf8(items.get(1)?.as_bytes()?.to_vec()).ok()?;
    Some((seq, epoch))
}

/// The node and the name of a presence entry (`NODE US NAME`).
pub(super) fn split_entry(entry: &[u8]) -> Option<(String, String)> {
    let at = entry.iter().position(|&b| b == US)?;
    let node = std::str::from_utf8(&entry[..at]).ok()?.to_owned();
    let name = std::str::from_utf8(&entry[at + 1..]).ok()?.to_owned();
    Some((node, name))
}

/// The epoch and the entries (oldest first) of a [`HISTORY_SCRIPT`]
/// reply; entries whose id is not `SEQ-0` or without an `m` field are
/// left out.
#[allow(clippy::type_complexity)]
pub(super) fn history(reply: &Reply) -> Option<(Option<String>, Vec<(u64, Vec<u8>)>)> {
    let items = reply.as_array()?;
    let epoch = match items.first()? {
        Reply::Bulk(None) => None,
        other => Some(String::from_utf8(other.as_bytes()?.to_vec()).ok()?),
    };
    let mut entries: Vec<(u64, Vec<u8>)> = items
        .get(1)?
        .as_array()?
        .iter()
        .filter_map(|entry| {
            let parts = entry.as_array()?;
            let id = std::str::from_utf8(parts.first()?.as_bytes()?).ok()?;
            let seq = id.strip_suffix("-0")?.parse().ok()?;
            let fields = parts.get(1)?.as_array()?;
            let at = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(Reply::as_bytes) == Some(b"m"))?;
            Some((seq, at.get(1)?.as_bytes()?.to_vec()))
        })
        .collect();
    entries.reverse();
    Some((epoch, entries))
}

/// The `{total, complete, ROOM, USERS, ...}` of a [`ROOMS_SCRIPT`] reply.
#[allow(clippy::type_complexity)]
fn directory(reply: &Reply) -> Option<(u64, bool, Vec<(String, u64)>)> {
    let items = reply.as_array()?;
    let total = u64::try_from(items.first()?.as_integer()?).ok()?;
    let complete = items.get(1)?.as_integer()? == 1;
    let rooms = items
        .get(2..)?
        .chunks_exact(2)
        .filter_map(|pair| {
            let room = String::from_utf8(pair[0].as_bytes()?.to_vec()).ok()?;
            Some((room, u64::try_from(pair[1].as_integer()?).ok()?))
        })
        .collect();
    Some((total, complete, rooms))
}

/// A 64-bit FNV-1a hash of a room's event, to know it again.
fn event_hash(room: &str, event: &[u8]) -> u64 {
    let step = |h: u64, b: &u8| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
    let h = room.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325, step);
    event.iter().fold(step(h, &0x1f), step)
}

/// The channel of `room`'s events (as [`RoomKeys::events`], alone).
fn events_channel(room: &str) -> String {
    format!("{KEY_PREFIX}{{{room}}}:events")
}

/// The room of a channel `wschat:{ROOM}:events`.
fn room_of(channel: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(channel).ok()?;
    let rest = text.strip_prefix(KEY_PREFIX)?.strip_prefix('{')?;
    rest.strip_suffix("}:events")
}

impl Bus for RedisBus {
    fn publish(&mut self, now: Instant, room: &str, event: &[u8], sequenced: bool) -> Publish {
        if !self.reachable {
            self.stats.dropped += 1;
            return Publish::Dropped;
        }
        if !sequenced {
            // After the room's messages gathered before it, as published.
            self.seal(now, room);
            let channel = events_channel(room);
            let mut payload = Vec::with_capacity(event.len() + 4);
            payload.extend_from_slice(b"0 - ");
            payload.extend_from_slice(event);
            let mut out = Vec::new();
            super::resp::encode_command(&mut out, &[b"PUBLISH", channel.as_bytes(), &payload]);
            if self.send_encoded(now, Tag::Quiet, &out) {
                self.stats.published += 1;
                self.next_ticket += 1;
                return Publish::Queued(Ticket(self.next_ticket));
            }
            self.stats.dropped += 1;
            return Publish::Dropped;
        }
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        let channel = events_channel(room);
        if !self.subscriber.link.is_subscribed(channel.as_bytes()) {
            if self.awaiting.len() >= MAX_AWAITING {
                self.stats.dropped += 1;
                return Publish::Dropped;
            }
            self.awaiting.push_back(Awaiting {
                ticket,
                room: room.to_owned(),
                message: event.to_vec(),
            });
            return Publish::Queued(ticket);
        }
        if !self.has_room_for(room, event.len()) {
            self.stats.dropped += 1;
            return Publish::Dropped;
        }
        self.gather(now, ticket, room, event.to_vec());
        self.stats.published += 1;
        Publish::Queued(ticket)
    }

    fn flush(&mut self, now: Instant) {
        if self.gathered.is_empty() {
            return;
        }
        self.gathered_bytes = 0;
        for (room, gathered) in std::mem::take(&mut self.gathered) {
            self.send_gathered(now, room, gathered.items);
        }
    }

    fn subscribe(&mut self, now: Instant, room: &str) {
        let channel = events_channel(room).into_bytes();
        if let Err(e) = self.subscriber.link.subscribe(now, &channel) {
            warn!("Redis: cannot subscribe to {room}: {e}");
        }
        self.channels.insert(channel, room.to_owned());
    }

    fn unsubscribe(&mut self, now: Instant, room: &str) {
        let channel = events_channel(room).into_bytes();
        let _ = self.subscriber.link.unsubscribe(now, &channel);
        self.channels.remove(&channel);
        self.heard.remove(room);
        let before = self.unheard.len();
        self.unheard.retain(|u| u.room != room);
        if self.unheard.len() != before {
            self.unheard_bytes = self.unheard.iter().map(|u| u.event.len()).sum();
        }
    }

    fn retain_rooms(&mut self, now: Instant, keep: &dyn Fn(&str) -> bool) {
        let gone: Vec<String> = self
            .channels
            .values()
            .filter(|room| !keep(room))
            .cloned()
            .collect();
        for room in gone {
            self.unsubscribe(now, &room);
        }
    }

    fn presence(&mut self, now: Instant, room: &str, member: &str, presence: Presence) {
        let entry = self.entry(member);
        match presence {
            Presence::Joined { verified } => {
                let set = self.members.entry(room.to_owned()).or_default();
                set.insert(entry.clone(), verified);
                let count = set.len();
                self.refresh_presence(now, room, &[(&entry, verified)]);
                self.refresh_directory(now, &[(room, count)]);
            }
            Presence::Left => {
                let mut count = 0;
                if let Some(set) = self.members.get_mut(room) {
                    set.remove(entry.as_slice());
                    count = set.len();
                    if set.is_empty() {
                        self.members.remove(room);
                    }
                }
                self.refresh_directory(now, &[(room, count)]);
                if self.commands.link.is_ready() {
                    let keys = RoomKeys::new(room);
                    // One command per reply awaited (one tag each).
                    for key in [&keys.presence, &keys.verified] {
                        let mut out = Vec::new();
                        super::resp::encode_command(&mut out, &[b"ZREM", key.as_bytes(), &entry]);
                        self.send_encoded(now, Tag::Quiet, &out);
                    }
                }
            }
        }
    }

    fn claim_name(
        &mut self,
        now: Instant,
        room: &str,
        keys: &[String],
        name: &str,
        previous: Option<(&[String], &str)>,
    ) -> Publish {
        if !self.reachable {
            self.stats.dropped += 1;
            return Publish::Dropped;
        }
        let room_keys = RoomKeys::new(room);
        let entry = self.entry(name);
        let old = previous
            .map(|(_, name)| self.entry(name))
            .unwrap_or_default();
        let (mut ttl, mut n) = ([0u8; 20], [0u8; 20]);
        let ttl = super::resp::format_u64(PRESENCE_TTL_MS, &mut ttl);
        let n = super::resp::format_u64(keys.len() as u64, &mut n);
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            NICK_SCRIPT.as_bytes(),
            b"2",
            room_keys.nicks.as_bytes(),
            room_keys.presence.as_bytes(),
            &entry,
            &old,
            ttl,
            n,
        ];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        if let Some((old_keys, _)) = previous {
            args.extend(old_keys.iter().map(|k| k.as_bytes()));
        }
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        let sent = self.send_ticketed(now, |ticket| Tag::Claim { ticket }, &out);
        if sent == Publish::Dropped {
            self.stats.dropped += 1;
        }
        sent
    }

    fn take_name(&mut self, now: Instant, room: &str, keys: &[String], name: &str) {
        if !self.reachable {
            self.stats.dropped += 1;
            return;
        }
        let room_keys = RoomKeys::new(room);
        let entry = self.entry(name);
        let mut ttl = [0u8; 20];
        let ttl = super::resp::format_u64(PRESENCE_TTL_MS, &mut ttl);
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            TAKE_SCRIPT.as_bytes(),
            b"2",
            room_keys.nicks.as_bytes(),
            room_keys.presence.as_bytes(),
            &entry,
            ttl,
        ];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        let tag = Tag::Take {
            room: room.to_owned(),
            name: name.to_owned(),
        };
        if !self.send_encoded(now, tag, &out) {
            self.stats.dropped += 1;
        }
    }

    fn keep_resume(
        &mut self,
        now: Instant,
        room: &str,
        digest: &str,
        record: Option<&[u8]>,
        ttl_ms: u64,
    ) {
        if !self.commands.link.is_ready() {
            return;
        }
        let key = RoomKeys::new(room).resume(digest);
        let mut ttl = [0u8; 20];
        let ttl = super::resp::format_u64(ttl_ms.max(1), &mut ttl);
        let mut out = Vec::new();
        match record {
            None => super::resp::encode_command(&mut out, &[b"DEL", key.as_bytes()]),
            Some([]) => {
                super::resp::encode_command(&mut out, &[b"PEXPIRE", key.as_bytes(), ttl]);
            }
            Some(record) => {
                super::resp::encode_command(&mut out, &[b"SET", key.as_bytes(), record, b"PX", ttl])
            }
        }
        self.send_encoded(now, Tag::Quiet, &out);
    }

    fn take_resume(&mut self, now: Instant, room: &str, digest: &str) -> Publish {
        if !self.reachable {
            return Publish::Dropped;
        }
        let keys = RoomKeys::new(room);
        let key = keys.resume(digest);
        let args: [&[u8]; 6] = [
            b"EVAL",
            RESUME_TAKE_SCRIPT.as_bytes(),
            b"2",
            key.as_bytes(),
            keys.nicks.as_bytes(),
            &self.node,
        ];
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        self.send_ticketed(now, |ticket| Tag::Resume { ticket }, &out)
    }

    fn release_name(&mut self, now: Instant, room: &str, keys: &[String], name: &str) {
        if !self.commands.link.is_ready() {
            return;
        }
        let room_keys = RoomKeys::new(room);
        let entry = self.entry(name);
        let mut args: Vec<&[u8]> = vec![
            b"EVAL",
            RELEASE_SCRIPT.as_bytes(),
            b"1",
            room_keys.nicks.as_bytes(),
            &entry,
        ];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        self.send_encoded(now, Tag::Quiet, &out);
    }

    fn tick(&mut self, now: Instant) {
        if now < self.next_heartbeat || !self.reachable {
            return;
        }
        self.next_heartbeat = now + PRESENCE_HEARTBEAT;
        let rooms: Vec<(String, BTreeMap<Vec<u8>, bool>)> = self
            .members
            .iter()
            .map(|(room, set)| (room.clone(), set.clone()))
            .collect();
        for (room, entries) in &rooms {
            let entries: Vec<(&[u8], bool)> =
                entries.iter().map(|(e, v)| (e.as_slice(), *v)).collect();
            self.refresh_presence(now, room, &entries);
        }
        let counts: Vec<(&str, usize)> = rooms
            .iter()
            .map(|(room, entries)| (room.as_str(), entries.len()))
            .collect();
        self.refresh_directory(now, &counts);
    }

    fn list_rooms(&mut self, now: Instant, limit: usize) -> Publish {
        if !self.reachable {
            return Publish::Dropped;
        }
        let (mut most, mut read) = ([0u8; 20], [0u8; 20]);
        let most = super::resp::format_u64(limit as u64, &mut most);
        let read = super::resp::format_u64(MAX_LISTED, &mut read);
        let args: [&[u8]; 7] = [
            b"EVAL",
            ROOMS_SCRIPT.as_bytes(),
            b"2",
            DIRECTORY_ROOMS.as_bytes(),
            DIRECTORY_COUNTS.as_bytes(),
            most,
            read,
        ];
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        self.send_ticketed(now, |ticket| Tag::Rooms { ticket }, &out)
    }

    fn read_room(
        &mut self,
        now: Instant,
        room: &str,
        members: u64,
        entries: u64,
        since: u64,
    ) -> Publish {
        if !self.reachable {
            return Publish::Dropped;
        }
        let keys = room_read::keys(room);
        let mut digits = [[0u8; 20]; 3];
        let [a, b, c] = &mut digits;
        let numbers = [
            super::resp::format_u64(members, a),
            super::resp::format_u64(entries, b),
            super::resp::format_u64(since, c),
        ];
        let mut args: Vec<&[u8]> = vec![b"EVAL", room_read::ROOM_SCRIPT.as_bytes(), b"5"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        args.extend(numbers);
        let mut out = Vec::new();
        super::resp::encode_command(&mut out, &args);
        self.send_ticketed(now, |ticket| Tag::Room { ticket }, &out)
    }

    fn remote_members(&self, _room: &str) -> Vec<String> {
        Vec::new()
    }

    fn poll_event(&mut self, now: Instant) -> Option<BusEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Some(event);
            }
            if let Some(event) = self.subscriber.link.poll_event() {
                self.on_subscriber_event(now, event);
            } else if let Some(event) = self.commands.link.poll_event() {
                self.on_command_event(now, event);
            } else {
                return None;
            }
        }
    }

    fn reachable(&self) -> bool {
        self.reachable
    }

    fn degraded(&self) -> Option<String> {
        (!self.reachable).then(|| self.why.clone().unwrap_or_default())
    }

    fn upstream(&mut self, i: usize) -> Option<&mut dyn Upstream> {
        match i {
            0 => Some(&mut self.commands),
            1 => Some(&mut self.subscriber),
            _ => None,
        }
    }

    fn gauges(&self) -> Vec<Gauge> {
        let to = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let c = self.commands.link.stats();
        let s = self.subscriber.link.stats();
        let mean_us = self
            .stats
            .publish_us_sum
            .checked_div(self.stats.publish_count)
            .unwrap_or(0);
        vec![
            Gauge {
                name: "wschat_redis_up",
                help: "1 while both Redis links are ready, else 0.",
                value: usize::from(self.reachable),
            },
            Gauge {
                name: "wschat_redis_reconnects",
                help: "Times a Redis link became ready, both links summed.",
                value: to(c.ready + s.ready),
            },
            Gauge {
                name: "wschat_redis_outages",
                help: "Times other nodes became unreachable.",
                value: to(self.stats.outages),
            },
            Gauge {
                name: "wschat_redis_published",
                help: "Events handed to Redis.",
                value: to(self.stats.published),
            },
            Gauge {
                name: "wschat_redis_publish_calls",
                help: "Publish script calls: each carries a room's messages of one pass of the loop.",
                value: to(self.stats.publish_calls),
            },
            Gauge {
                name: "wschat_redis_malformed",
                help: "Pushes from Redis not of the published form, dropped.",
                value: to(self.stats.malformed),
            },
            Gauge {
                name: "wschat_redis_received",
                help: "Events received from Redis (our own included).",
                value: to(self.stats.received),
            },
            Gauge {
                name: "wschat_redis_dropped",
                help: "Events not sent to Redis (unreachable or a queue full).",
                value: to(self.stats.dropped),
            },
            Gauge {
                name: "wschat_redis_lost",
                help: "Sequenced events Redis did not confirm (delivered on this node only).",
                value: to(self.stats.lost),
            },
            Gauge {
                name: "wschat_redis_heard_late",
                help: "Unconfirmed messages (delivered on this node only) that Redis ran after all, not delivered twice.",
                value: to(self.stats.heard_late),
            },
            Gauge {
                name: "wschat_redis_unheard",
                help: "Numbered messages of ours whose push was lost with the subscriber link, shown here from the script's reply.",
                value: to(self.stats.unheard),
            },
            Gauge {
                name: "wschat_redis_unheard_forgotten",
                help: "Numbered messages of ours forgotten while too many pushes were awaited.",
                value: to(self.stats.unheard_forgotten),
            },
            Gauge {
                name: "wschat_redis_publish_mean_us",
                help: "Mean round trip of the publish script, in microseconds.",
                value: to(mean_us),
            },
            Gauge {
                name: "wschat_redis_pending",
                help: "Commands awaiting Redis' reply.",
                value: self.commands.link.pending(),
            },
            Gauge {
                name: "wschat_redis_rooms_subscribed",
                help: "Rooms whose events this node wants to hear.",
                value: self.channels.len(),
            },
            Gauge {
                name: "wschat_redis_rooms_heard",
                help: "Rooms whose subscription Redis confirmed on the current connection.",
                value: self
                    .channels
                    .keys()
                    .filter(|c| self.subscriber.link.is_subscribed(c))
                    .count(),
            },
        ]
    }
}

/// How long a node id may be (it is in every qualified name and epoch).
pub const MAX_NODE_ID: usize = 32;

/// Whether `id` is a usable node id: `[A-Za-z0-9_.-]{1,32}` (no space: it
/// is a field of the published events and of epochs).
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_NODE_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_their_room() {
        assert_eq!(room_of(b"wschat:{lobby}:events"), Some("lobby"));
        assert_eq!(room_of(RoomKeys::new("a-b").events.as_bytes()), Some("a-b"));
        assert_eq!(room_of(b"wschat:{lobby}:seq"), None);
        assert_eq!(room_of(b"other"), None);
        assert_eq!(events_channel("x"), RoomKeys::new("x").events);
    }

    #[test]
    fn the_script_reply_is_a_sequence_and_an_epoch() {
        let reply = Reply::Array(Some(vec![
            Reply::Integer(7),
            Reply::Bulk(Some(b"n1-5".to_vec())),
        ]));
        assert_eq!(sequenced(&reply), Some((7, "n1-5".into())));
        assert_eq!(sequenced(&Reply::Integer(7)), None);
        assert_eq!(
            sequenced(&Reply::Array(Some(vec![Reply::Integer(-1)]))),
            None
        );
    }

    #[test]
    fn history_replies_come_oldest_first() {
        let bulk = |b: &[u8]| Reply::Bulk(Some(b.to_vec()));
        let entry = |id: &[u8], m: &[u8]| {
            Reply::Array(Some(vec![
                bulk(id),
                Reply::Array(Some(vec![bulk(b"m"), bulk(m)])),
            ]))
        };
        let reply = Reply::Array(Some(vec![
            bulk(b"n1-5"),
            Reply::Array(Some(vec![
                entry(b"3-0", b"c"),
                entry(b"2-0", b"b"),
                entry(b"x-0", b"bad id"),
            ])),
        ]));
        assert_eq!(
            history(&reply),
            Some((
                Some("n1-5".into()),
                vec![(2, b"b".to_vec()), (3, b"c".to_vec())]
            ))
        );
        let empty = Reply::Array(Some(vec![Reply::Bulk(None), Reply::Array(Some(vec![]))]));
        assert_eq!(history(&empty), Some((None, vec![])));
        assert_eq!(history(&Reply::Integer(1)), None);
    }

    #[test]
    fn directory_replies_list_rooms_and_their_users() {
        let bulk = |b: &[u8]| Reply::Bulk(Some(b.to_vec()));
        let reply = Reply::Array(Some(vec![
            Reply::Integer(3),
            Reply::Integer(1),
            bulk(b"a"),
            Reply::Integer(5),
            bulk(b"b"),
            Reply::Integer(1),
        ]));
        assert_eq!(
            directory(&reply),
            Some((3, true, vec![("a".into(), 5), ("b".into(), 1)]))
        );
        let cut = Reply::Array(Some(vec![Reply::Integer(0), Reply::Integer(0)]));
        assert_eq!(directory(&cut), Some((0, false, vec![])));
        assert_eq!(directory(&Reply::Integer(1)), None);
        assert_eq!(directory(&Reply::Array(Some(vec![bulk(b"x")]))), None);
    }

    #[test]
    fn event_hashes_tell_rooms_and_events_apart() {
        assert_eq!(event_hash("a", b"hi"), event_hash("a", b"hi"));
        assert_ne!(event_hash("a", b"hi"), event_hash("b", b"hi"));
        assert_ne!(event_hash("a", b"hi"), event_hash("a", b"ho"));
        assert_ne!(event_hash("ab", b"c"), event_hash("a", b"bc"));
    }

    /// Both links taken to Ready, sans IO, and the lobby heard.
    fn ready_bus(now: Instant) -> RedisBus {
        let url = super::super::url::parse("redis://127.0.0.1:1").expect("url");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let mut bus = RedisBus::new(&url, addr, "n1", 1, 10, 10, now);
        for i in 0..2 {
            let up = bus.upstream(i).expect("a link");
            up.handle_timeout(now);
            up.on_connected(now);
        }
        while bus.poll_event(now).is_some() {}
        assert!(bus.reachable());
        bus.subscribe(now, "lobby");
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$21\r\nwschat:{lobby}:events\r\n:1\r\n";
        bus.upstream(1).expect("subscriber").on_input(now, confirm);
        while bus.poll_event(now).is_some() {}
        bus
    }

    fn push(payload: &[u8]) -> Vec<u8> {
        let mut out = b"*3\r\n$7\r\nmessage\r\n$21\r\nwschat:{lobby}:events\r\n".to_vec();
        out.extend_from_slice(format!("${}\r\n", payload.len()).as_bytes());
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        out
    }

    /// A publish whose reply is lost with the command link comes back to
    /// the chat; if Redis ran it after all and it is heard on the live
    /// subscription, it is dropped, not delivered twice.
    #[test]
    fn an_unconfirmed_message_comes_back_once() {
        let now = Instant::now();
        let mut bus = ready_bus(now);
        let Publish::Queued(ticket) = bus.publish(now, "lobby", b"ev", true) else {
            panic!("not queued");
        };
        bus.upstream(0).expect("commands").on_eof(now);
        let events: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        assert!(events.contains(&BusEvent::Reachable(false)), "{events:?}");
        let back = BusEvent::Unconfirmed {
            ticket,
            room: "lobby".into(),
            event: b"ev".to_vec(),
        };
        assert_eq!(events.iter().filter(|e| **e == back).count(), 1);
        assert_eq!(bus.stats().lost, 1);

        let sub = bus.upstream(1).expect("subscriber");
        sub.on_input(now, &push(&batch(5, &[b"ev"])));
        sub.on_input(now, &push(&batch(6, &[b"other"])));
        let heard: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        assert_eq!(
            heard,
            [BusEvent::Remote {
                room: "lobby".into(),
                seq: 6,
                epoch: "e1".into(),
                event: b"other".to_vec(),
            }]
        );
        assert_eq!(bus.stats().heard_late, 1);
        // Once only: the same bytes again are delivered.
        bus.upstream(1)
            .expect("subscriber")
            .on_input(now, &push(&batch(7, &[b"ev"])));
        assert!(matches!(
            bus.poll_event(now),
            Some(BusEvent::Remote { seq: 7, .. })
        ));
    }

    /// Publishes `ev` in the lobby and feeds the command link the replies
    /// it awaits: the script load, the lobby's history, then the publish
    /// numbered 5 in epoch `e1`.
    fn publish_numbered(bus: &mut RedisBus, now: Instant) -> Vec<BusEvent> {
        assert!(matches!(
            bus.publish(now, "lobby", b"ev", true),
            Publish::Queued(_)
        ));
        bus.flush(now);
        let replies = b"+sha\r\n*2\r\n$-1\r\n*0\r\n*2\r\n:5\r\n$2\r\ne1\r\n";
        bus.upstream(0).expect("commands").on_input(now, replies);
        std::iter::from_fn(|| bus.poll_event(now)).collect()
    }

    fn remote(seq: u64, event: &[u8]) -> BusEvent {
        BusEvent::Remote {
            room: "lobby".into(),
            seq,
            epoch: "e1".into(),
            event: event.to_vec(),
        }
    }

    /// A numbered message of ours whose push is lost with the subscriber
    /// link is handed over from the reply, once; one heard is not.
    #[test]
    fn a_numbered_message_whose_push_is_lost_comes_from_its_reply() {
        let now = Instant::now();
        let remotes = |events: &[BusEvent]| -> Vec<BusEvent> {
            events
                .iter()
                .filter(|e| matches!(e, BusEvent::Remote { .. }))
                .cloned()
                .collect()
        };
        // The subscriber link drops before the push came.
        let mut bus = ready_bus(now);
        assert!(remotes(&publish_numbered(&mut bus, now)).is_empty());
        bus.upstream(1).expect("subscriber").on_eof(now);
        let events: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        let out = events.iter().position(|e| *e == BusEvent::Reachable(false));
        let ours = events.iter().position(|e| *e == remote(5, b"ev"));
        assert!(out.is_some() && ours > out, "{events:?}");
        assert_eq!(remotes(&events).len(), 1);
        assert_eq!(bus.stats().unheard, 1);

        // A later message of the room is heard first: ours will not be.
        let mut bus = ready_bus(now);
        publish_numbered(&mut bus, now);
        bus.upstream(1)
            .expect("subscriber")
            .on_input(now, &push(&batch(6, &[b"other"])));
        let events: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        assert_eq!(events, [remote(5, b"ev"), remote(6, b"other")]);

        // Heard before or after its reply: delivered from the push alone.
        let mut bus = ready_bus(now);
        bus.upstream(1)
            .expect("subscriber")
            .on_input(now, &push(b"5 e1 ev"));
        assert_eq!(
            remotes(&publish_numbered(&mut bus, now)),
            [remote(5, b"ev")]
        );
        let mut bus = ready_bus(now);
        publish_numbered(&mut bus, now);
        bus.upstream(1)
            .expect("subscriber")
            .on_input(now, &push(b"5 e1 ev"));
        bus.upstream(1).expect("subscriber").on_eof(now);
        let events: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        assert_eq!(remotes(&events), [remote(5, b"ev")]);
        assert_eq!(bus.stats().unheard, 0);
    }

    /// A batch as the publish script publishes it, in epoch `e1`.
    fn batch(first: u64, messages: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{first} e1 {}\n", messages.len()).into_bytes();
        for m in messages {
            out.extend_from_slice(format!("{}\n", m.len()).as_bytes());
            out.extend_from_slice(m);
        }
        out
    }

    /// The publish script calls in the command link's output, and the
    /// messages each carries (what follows the epoch argument).
    fn calls(bus: &mut RedisBus) -> Vec<Vec<Vec<u8>>> {
        let out = bus.upstream(0).expect("commands").output().to_vec();
        let config = super::super::resp::Limits::default();
        let mut at = 0;
        let mut found = Vec::new();
        while at < out.len() {
            let super::super::resp::Status::Complete((reply, used)) =
                super::super::resp::decode(&out[at..], &config).expect("RESP")
            else {
                panic!("a partial command");
            };
            at += used;
            let args: Vec<Vec<u8>> = reply
                .as_array()
                .expect("a command")
                .iter()
                .map(|a| a.as_bytes().expect("a bulk").to_vec())
                .collect();
            if args[0] == b"EVALSHA" || args[0] == b"EVAL" && args[1] == PUBLISH_SCRIPT.as_bytes() {
                found.push(args[9..].to_vec());
            }
        }
        found
    }

    /// A pass's messages of a room go in one script call, numbered in
    /// order from the reply's first, and come back in one push.
    #[test]
    fn a_rooms_messages_of_one_pass_are_one_call() {
        let now = Instant::now();
        let mut bus = ready_bus(now);
        let tickets: Vec<Ticket> = [&b"a"[..], b"bb", b"c"]
            .iter()
            .map(|m| match bus.publish(now, "lobby", m, true) {
                Publish::Queued(t) => t,
                other => panic!("{other:?}"),
            })
            .collect();
        assert!(calls(&mut bus).is_empty(), "sent before the pass ended");
        bus.flush(now);
        assert_eq!(
            calls(&mut bus),
            [vec![b"a".to_vec(), b"bb".to_vec(), b"c".to_vec()]]
        );
        assert_eq!(bus.stats().publish_calls, 1);
        let replies = b"+sha\r\n*2\r\n$-1\r\n*0\r\n*2\r\n:7\r\n$2\r\ne1\r\n";
        bus.upstream(0).expect("commands").on_input(now, replies);
        let events: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        let sequenced: Vec<(Ticket, u64)> = events
            .iter()
            .filter_map(|e| match e {
                BusEvent::Sequenced { ticket, seq, .. } => Some((*ticket, *seq)),
                _ => None,
            })
            .collect();
        assert_eq!(
            sequenced,
            [(tickets[0], 7), (tickets[1], 8), (tickets[2], 9)]
        );
        bus.upstream(1)
            .expect("subscriber")
            .on_input(now, &push(&batch(7, &[b"a", b"bb", b"c"])));
        let heard: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        assert_eq!(heard, [remote(7, b"a"), remote(8, b"bb"), remote(9, b"c")]);
        bus.upstream(1).expect("subscriber").on_eof(now);
        let after: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        assert!(
            !after.iter().any(|e| matches!(e, BusEvent::Remote { .. })),
            "{after:?}"
        );
        assert_eq!(bus.stats().unheard, 0);
        assert_eq!(bus.stats().received, 3);
    }

    /// Past [`MAX_BATCH_MESSAGES`] or [`MAX_BATCH_BYTES`] a room makes
    /// more calls, in order; rooms never share one.
    #[test]
    fn batches_are_bounded_and_of_one_room() {
        let now = Instant::now();
        let mut bus = ready_bus(now);
        bus.subscribe(now, "rust");
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$20\r\nwschat:{rust}:events\r\n:2\r\n";
        bus.upstream(1).expect("subscriber").on_input(now, confirm);
        while bus.poll_event(now).is_some() {}
        for i in 0..130u32 {
            bus.publish(now, "lobby", i.to_string().as_bytes(), true);
        }
        bus.publish(now, "rust", b"r", true);
        let big = vec![b'x'; MAX_BATCH_BYTES];
        bus.publish(now, "rust", &big, true);
        bus.flush(now);
        let sizes: Vec<usize> = calls(&mut bus).iter().map(Vec::len).collect();
        // Lobby: 64 sent as soon as full, 64 more, then 2 at the pass's
        // end; rust: the big one alone after "r".
        assert_eq!(sizes, [64, 64, 1, 2, 1], "{sizes:?}");
        let lobby: Vec<Vec<u8>> = calls(&mut bus)
            .into_iter()
            .filter(|c| c.len() != 1)
            .flatten()
            .collect();
        let want: Vec<Vec<u8>> = (0..130u32).map(|i| i.to_string().into_bytes()).collect();
        assert_eq!(lobby, want);
        assert_eq!(bus.stats().publish_calls, 5);
    }

    /// A join published after messages of the same pass goes after them.
    #[test]
    fn an_unsequenced_event_follows_the_messages_before_it() {
        let now = Instant::now();
        let mut bus = ready_bus(now);
        bus.publish(now, "lobby", b"m", true);
        bus.publish(now, "lobby", b"joined", false);
        let out = bus.upstream(0).expect("commands").output().to_vec();
        let text = String::from_utf8_lossy(&out);
        let script = text.find("EVALSHA").expect("the batch");
        let join = text.find("0 - joined").expect("the join");
        assert!(script < join, "{text}");
    }

    /// NOSCRIPT sends the whole batch again with EVAL; a failed call
    /// gives every message of it back to the chat.
    #[test]
    fn a_batch_is_retried_and_lost_whole() {
        let now = Instant::now();
        let mut bus = ready_bus(now);
        bus.publish(now, "lobby", b"a", true);
        bus.publish(now, "lobby", b"b", true);
        bus.flush(now);
        let replies = b"+sha\r\n*2\r\n$-1\r\n*0\r\n-NOSCRIPT No matching script\r\n";
        bus.upstream(0).expect("commands").on_input(now, replies);
        while bus.poll_event(now).is_some() {}
        let sent = calls(&mut bus);
        assert_eq!(sent.len(), 2, "the EVALSHA and its EVAL");
        assert_eq!(sent[0], sent[1]);
        bus.upstream(0).expect("commands").on_eof(now);
        let events: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
        let back: Vec<&[u8]> = events
            .iter()
            .filter_map(|e| match e {
                BusEvent::Unconfirmed { event, .. } => Some(event.as_slice()),
                _ => None,
            })
            .collect();
        assert_eq!(back, [&b"a"[..], b"b"]);
        assert_eq!(bus.stats().lost, 2);
    }

    /// A batch split at every byte on the subscriber link gives the same
    /// events; a malformed one is dropped and counted, never a panic.
    #[test]
    fn batches_are_heard_at_any_split_and_malformed_ones_counted() {
        let now = Instant::now();
        let wire = push(&batch(3, &[b"x\ny", b"", b"z"]));
        for at in 0..=wire.len() {
            let mut bus = ready_bus(now);
            let sub = bus.upstream(1).expect("subscriber");
            sub.on_input(now, &wire[..at]);
            sub.on_input(now, &wire[at..]);
            let heard: Vec<BusEvent> = std::iter::from_fn(|| bus.poll_event(now)).collect();
            assert_eq!(
                heard,
                [remote(3, b"x\ny"), remote(4, b""), remote(5, b"z")],
                "split at {at}"
            );
        }
        let mut bus = ready_bus(now);
        for bad in [&b"*3 e1 2\n1\nx"[..], b"*3 e1 1\n5\nx", b"*", b"garbage"] {
            bus.upstream(1)
                .expect("subscriber")
                .on_input(now, &push(bad));
        }
        assert_eq!(bus.poll_event(now), None);
        assert_eq!(bus.stats().malformed, 4);
        assert!(bus.reachable());
        // The link lives on: the next batch is heard.
        bus.upstream(1)
            .expect("subscriber")
            .on_input(now, &push(&batch(9, &[b"ok"])));
        assert_eq!(bus.poll_event(now), Some(remote(9, b"ok")));
    }

    #[test]
    fn node_ids() {
        assert!(valid_node_id("n1"));
        assert!(valid_node_id("host.example-8080"));
        assert!(!valid_node_id(""));
        assert!(!valid_node_id("a b"));
        assert!(!valid_node_id(&"x".repeat(33)));
    }

    #[test]
    fn unreachable_until_both_links_are_ready() {
        let url = super::super::url::parse("redis://127.0.0.1:1").expect("url");
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let now = Instant::now();
        let mut bus = RedisBus::new(&url, addr, "n1", 1, 10, 10, now);
        assert!(!bus.reachable());
        assert!(bus.degraded().is_some());
        assert_eq!(bus.publish(now, "lobby", b"x", true), Publish::Dropped);
        assert_eq!(bus.publish(now, "lobby", b"x", false), Publish::Dropped);
        assert_eq!(bus.stats().dropped, 2);
        assert!(bus.upstream(0).is_some() && bus.upstream(1).is_some());
        assert!(bus.upstream(2).is_none());
    }
}
