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
//!
//! Bounds: each link's output and pending replies ([`super::link`]), the
//! messages awaiting a subscription ([`MAX_AWAITING`]); past them a
//! publish is [`Publish::Dropped`] and counted. The events the bus hands
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
use super::url::RedisUrl;
use super::{parse_event, PublishCall, RoomKeys, KEY_PREFIX, PUBLISH_SCRIPT};
use crate::service::{Gauge, Upstream};

/// Sequenced messages that may wait for their room's subscription.
pub const MAX_AWAITING: usize = 1024;

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
    Publish {
        ticket: Ticket,
        room: String,
        message: Vec<u8>,
        /// Sent again with `EVAL` after `NOSCRIPT` already.
        retried: bool,
        sent: Instant,
    },
    /// `SCRIPT LOAD`, or a `PUBLISH` whose reply only counts.
    Quiet,
}

/// A message waiting for its room's subscription.
#[derive(Debug)]
struct Awaiting {
    ticket: Ticket,
    room: String,
    message: Vec<u8>,
}

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
    /// Sum and count of publish round trips, in microseconds.
    pub publish_us_sum: u64,
    pub publish_count: u64,
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
    /// Rooms subscribed, by their channel.
    channels: BTreeMap<Vec<u8>, String>,
    /// This node's id, as in presence entries.
    node: Vec<u8>,
    /// This node's members of each room (their presence entries).
    /// The flag is whether the member is a verified user.
    members: BTreeMap<String, BTreeMap<Vec<u8>, bool>>,
    /// When presence is next refreshed.
    next_heartbeat: Instant,
    reachable: bool,
    /// Why not reachable, for `/healthz`.
    why: Option<String>,
    stats: BusStats,
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
            channels: BTreeMap::new(),
            node: node.as_bytes().to_vec(),
            members: BTreeMap::new(),
            next_heartbeat: now,
            reachable: false,
            why: Some("connecting to Redis".into()),
            stats: BusStats::default(),
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
            // What waited for a subscription will not be heard back.
            while let Some(a) = self.awaiting.pop_front() {
                self.stats.lost += 1;
                self.events.push_back(BusEvent::Lost { ticket: a.ticket });
            }
        }
        self.events.push_back(BusEvent::Reachable(now_reachable));
    }

    /// Runs the publish script for `message` in `room`.
    fn send_publish(
        &mut self,
        now: Instant,
        ticket: Ticket,
        room: String,
        message: Vec<u8>,
        retried: bool,
    ) -> bool {
        let keys = RoomKeys::new(&room);
        // A room (re)numbered by this publish gets an epoch no other
        // numbering had: this process's `NODE-STARTMS`, and the ticket.
        let mut epoch = Vec::with_capacity(self.epoch.len() + 21);
        epoch.extend_from_slice(&self.epoch);
        epoch.push(b'-');
        let mut digits = [0u8; 20];
        epoch.extend_from_slice(super::resp::format_u64(ticket.0, &mut digits));
        let call = PublishCall::new(&keys, &message, self.history_maxlen, &epoch);
        let args = if retried { call.eval() } else { call.evalsha() };
        // The tag keeps the message for a retry after NOSCRIPT; the
        // command is encoded first, so the message moves into it.
        let mut out = Vec::with_capacity(message.len() + 256);
        super::resp::encode_command(&mut out, &args);
        let tag = Tag::Publish {
            ticket,
            room,
            message,
            retried,
            sent: now,
        };
        self.send_encoded(now, tag, &out)
    }

    fn send_encoded(&mut self, now: Instant, tag: Tag, command: &[u8]) -> bool {
        match self.commands.link.send_raw(now, tag, command) {
            Ok(()) => true,
            Err(e) => {
                warn!("Redis: {e}");
                false
            }
        }
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
            let ticket = a.ticket;
            if self.send_publish(now, ticket, a.room, a.message, false) {
                self.stats.published += 1;
            } else {
                self.stats.lost += 1;
                self.events.push_back(BusEvent::Lost { ticket });
            }
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
                    warn!("Redis: the presence of {room} came back as {reply:?}");
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
                    warn!("Redis: the history of {room} came back as {reply:?}");
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
                        ticket,
                        room,
                        message,
                        retried,
                        sent,
                    },
                reply,
            } => {
                if reply.is_error_code("NOSCRIPT") && !retried {
                    if !self.send_publish(now, ticket, room, message, true) {
                        self.stats.lost += 1;
                        self.events.push_back(BusEvent::Lost { ticket });
                    }
                    return;
                }
                let took = now.saturating_duration_since(sent);
                self.stats.publish_us_sum += u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
                self.stats.publish_count += 1;
                match sequenced(&reply) {
                    Some((seq, epoch)) => self.events.push_back(BusEvent::Sequenced {
                        ticket,
                        room,
                        seq,
                        epoch,
                    }),
                    None => {
                        warn!("Redis: the publish script answered {reply:?}");
                        self.stats.lost += 1;
                        self.events.push_back(BusEvent::Lost { ticket });
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
                            warn!("Redis: a name claim came back as {reply:?}");
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
                    warn!("Redis: taking the name {name} in {room} came back as {reply:?}");
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
                    warn!("Redis: a resume came back as {reply:?}");
                    self.events.push_back(BusEvent::Lost { ticket });
                }
            },
            Event::Failed {
                tag: Tag::Claim { ticket } | Tag::Resume { ticket },
            } => self.events.push_back(BusEvent::Lost { ticket }),
            Event::Failed {
                tag: Tag::Publish { ticket, .. },
            } => {
                self.stats.lost += 1;
                self.events.push_back(BusEvent::Lost { ticket });
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
                self.update_reachable(Some(format!(
                    "Redis subscriber link: {reason}; retrying in {retry_in:?}"
                )));
            }
            Event::Subscribed(channel) => {
                if let Some(room) = self.channels.get(&channel).cloned() {
                    self.fetch_history(now, &room);
                    self.release(now, &room);
                }
            }
            Event::Message { channel, payload } => {
                self.stats.received += 1;
                let Some(room) = room_of(&channel) else {
                    return;
                };
                let Some((seq, epoch, event)) = parse_event(&payload) else {
                    warn!(
                        "Redis: a malformed event on {}",
                        String::from_utf8_lossy(&channel)
                    );
                    return;
                };
                self.events.push_back(BusEvent::Remote {
                    room: room.to_owned(),
                    seq,
                    epoch: String::from_utf8_lossy(epoch).into_owned(),
                    event: event.to_vec(),
                });
            }
            _ => {}
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
fn split_entry(entry: &[u8]) -> Option<(String, String)> {
    let at = entry.iter().position(|&b| b == US)?;
    let node = std::str::from_utf8(&entry[..at]).ok()?.to_owned();
    let name = std::str::from_utf8(&entry[at + 1..]).ok()?.to_owned();
    Some((node, name))
}

/// The epoch and the entries (oldest first) of a [`HISTORY_SCRIPT`]
/// reply; entries whose id is not `SEQ-0` or without an `m` field are
/// left out.
#[allow(clippy::type_complexity)]
fn history(reply: &Reply) -> Option<(Option<String>, Vec<(u64, Vec<u8>)>)> {
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
        if self.send_publish(now, ticket, room.to_owned(), event.to_vec(), false) {
            self.stats.published += 1;
            Publish::Queued(ticket)
        } else {
            self.stats.dropped += 1;
            Publish::Dropped
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
                self.members
                    .entry(room.to_owned())
                    .or_default()
                    .insert(entry.clone(), verified);
                self.refresh_presence(now, room, &[(&entry, verified)]);
            }
            Presence::Left => {
                if let Some(set) = self.members.get_mut(room) {
                    set.remove(entry.as_slice());
                    if set.is_empty() {
                        self.members.remove(room);
                    }
                }
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
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        if self.send_encoded(now, Tag::Claim { ticket }, &out) {
            Publish::Queued(ticket)
        } else {
            self.stats.dropped += 1;
            Publish::Dropped
        }
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
        self.next_ticket += 1;
        let ticket = Ticket(self.next_ticket);
        if self.send_encoded(now, Tag::Resume { ticket }, &out) {
            Publish::Queued(ticket)
        } else {
            Publish::Dropped
        }
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
        for (room, entries) in rooms {
            let entries: Vec<(&[u8], bool)> =
                entries.iter().map(|(e, v)| (e.as_slice(), *v)).collect();
            self.refresh_presence(now, &room, &entries);
        }
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
                help: "Sequenced events that may not have reached Redis.",
                value: to(self.stats.lost),
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
