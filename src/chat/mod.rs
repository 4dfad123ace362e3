//! The chat policy: rooms, names, commands, history; who hears what.
//!
//! A client that asks for nothing more gets the seed's behaviour: it is
//! named by its remote port (`User 51234`); a newcomer is announced to the
//! others (`User 51234 joined`), a departure too (`User 51234 left`); a
//! text goes to every *other* user in the room as `User 51234: <text>`; a
//! binary message goes to the others unchanged. On top of that: rooms by
//! URL path, IRC-style commands, per-room history replayed to newcomers
//! and resumable with `?since=SEQ`, and JSON events for clients of the
//! `wschat.v1.json` subprotocol (see README.md for the protocol).
//!
//! Every event is encoded at most once per format (plain, JSON), and the
//! same outgoing handle goes to every recipient of that format. Nothing
//! here knows about sockets or frame bytes: the chat sees only the
//! [`crate::service`] types.
//!
//! In cluster mode ([`Chat::clustered`]) the same policy spans nodes
//! through a [`Bus`] (see README, "Many nodes"): a message is published
//! and delivered here when it comes back numbered, in the room's one
//! order; other nodes' events ([`relay`]) are delivered like local ones,
//! encoded once per format; who is where comes from [`roster`]; a room new
//! here takes its history from Redis. Alone, the bus is [`LocalBus`] and
//! none of that runs.
//!
//! No one user can make the chat do work for everyone: making rooms is
//! limited per client address (joining one never is), joins and leaves in
//! large rooms are summarised ([`presence`]), and replies that list things
//! are bounded in length and charged to the asker ([`budget`]).
//!
//! [`Chat`]'s methods live by concern: here the users' own acts (speaking,
//! private messages, commands, joining and leaving) and the [`Service`]
//! the loop drives; `deliver` gets lines to users, `nick` changes names,
//! `identity` keeps who a user is across reconnects, `cluster` applies what
//! other nodes said, and [`api`] answers backends.

pub mod api;
pub mod auth;
pub mod budget;
mod cluster;
pub mod command;
mod deliver;
pub mod echo;
pub mod history;
mod identity;
mod listing;
pub mod names;
mod nick;
mod pending;
pub mod presence;
pub mod relay;
pub mod render;
pub mod resume;
pub mod rooms;
pub mod roster;
pub mod target;
pub mod users;

use std::borrow::Cow;
use std::rc::Rc;
use std::time::{Duration, Instant};

use cluster::Others;
use command::Request;
use history::{Bounds, Entry};
use names::Holder;
use pending::{Claim, Pending, Resuming};
use render::{Extra, Line, Stamp, JSON_PROTOCOL};
use resume::{Found, Tokens};
use rooms::{client_key, ClientKey, Full, RoomLimits, Rooms, Waiting};
use target::{Target, TargetError};
use users::{User, Users};

use log::{info, warn};

use crate::cluster::bus::{Bus, BusEvent, LocalBus, Presence, Publish, Ticket};
use crate::service::Clock;
use crate::service::{
    Context, Gauge, Goodbye, HttpGet, HttpReply, HttpTicket, Kind, Message, Outgoing, PeerId,
    Refusal, Service, Upgrade, Upstream,
};
use relay::Relayed;

/// The chat page served for a room path without an upgrade.
const PAGE: &str = include_str!("page.html");

/// The chat's limits.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Per-room history bounds (0 entries: no history).
    pub history: Bounds,
    /// How long an empty room's history is kept for clients to resume.
    pub room_ttl: Duration,
    /// Most rooms at once, the lobby not counted.
    pub max_rooms: usize,
    /// Most rooms one client address may have made that still exist (0:
    /// no limit).
    pub max_rooms_per_client: usize,
    /// Rooms with more members than this get a presence summary at most
    /// once per [`presence::PERIOD`] instead of a line per join or leave.
    pub announce_limit: usize,
    /// Bytes per second of `/who`, `/rooms` and `/help` replies one user
    /// may receive (0: no limit).
    pub reply_rate: usize,
    /// Most names a `/who` reply or a JSON welcome lists, and most rooms a
    /// `/rooms` reply lists; the rest are counted.
    pub list_limit: usize,
    /// Subprotocols accepted besides `wschat.v1.json` (their clients get
    /// plain text).
    pub extra_protocols: Vec<String>,
    /// How long a user who dropped (and had been told its resume token)
    /// keeps its name for a reconnect with `?resume=TOKEN`, unannounced
    /// (zero: no resuming, every drop is a leave).
    pub resume_grace: Duration,
    /// Checks the tokens of verified users (`--auth-secret-file`); `None`:
    /// nobody is verified and tokens are ignored.
    pub verifier: Option<Rc<auth::Verifier>>,
    /// Refuse upgrades without a valid token (`--require-auth`).
    pub require_auth: bool,
    /// The key of the HTTP API (`--api-key-file`); `None`: the API is off.
    pub api_key: Option<Rc<[u8]>>,
}

impl Default for ChatConfig {
    /// The defaults documented in the README.
    fn default() -> ChatConfig {
        ChatConfig {
            history: Bounds {
                max_entries: 100,
                max_bytes: 256 * 1024,
            },
            room_ttl: Duration::from_secs(600),
            max_rooms: 1000,
            max_rooms_per_client: 10,
            announce_limit: 100,
            reply_rate: 16 * 1024,
            list_limit: 100,
            extra_protocols: Vec::new(),
            resume_grace: Duration::from_secs(60),
            verifier: None,
            require_auth: false,
            api_key: None,
        }
    }
}

/// Who in a room receives an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Audience {
    /// Everyone.
    All,
    /// Everyone but this user.
    Others(PeerId),
    /// Everyone but this user if it speaks plain text: a JSON client sees
    /// its own messages, to learn their sequence numbers.
    OthersUnlessJson(PeerId),
}

/// Every room and user.
#[derive(Debug)]
pub struct Chat {
    config: ChatConfig,
    users: Users,
    rooms: Rooms,
    /// Rooms with a presence summary waiting for its period to end.
    due: presence::Schedule,
    /// Resume tokens and the users away.
    tokens: Tokens,
    /// Other nodes ([`LocalBus`] when there are none).
    bus: Box<dyn Bus>,
    /// This node's id in cluster mode (default names are then qualified,
    /// `User 51234@NODE`); `None` alone.
    node: Option<Rc<str>>,
    /// What other nodes were asked and have not answered yet.
    pending: Pending,
    /// How the other nodes' side looks from here (cluster mode).
    others: Others,
}

/// What [`Chat::open`] needs of the upgrade (which is gone once a resume
/// is answered).
#[derive(Clone, Copy, Debug)]
pub(super) struct Opening {
    client: ClientKey,
    json: bool,
    port: u16,
}

/// A resume record from Redis: who the token's user was, and where.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    node: String,
    nick: bool,
    name: Rc<str>,
}

/// How long a connected user's resume record lives in Redis (its node
/// shortens it to `--resume-grace` when the user drops, and deletes it
/// when the token is used or given up); a bound for a node that died.
const RECORD_TTL_MS: u64 = 24 * 3600 * 1000;

/// In cluster mode, how much longer than the record a user away is kept
/// on its node, so that a resume taken on another node just before the
/// record expired is heard here before the leave would be told.
const RESUME_MARGIN: Duration = Duration::from_secs(1);

/// `NODE US NICK US NAME (US KEY)*`: what [`RESUME_TAKE_SCRIPT`] reads.
///
/// [`RESUME_TAKE_SCRIPT`]: crate::cluster::redis_bus::RESUME_TAKE_SCRIPT
fn encode_record(node: &str, name: &str, nick: bool) -> Vec<u8> {
    let mut out = format!("{node}\x1f{}\x1f{name}", u8::from(nick)).into_bytes();
    if nick {
        for key in names::keys(name) {
            out.push(0x1f);
            out.extend_from_slice(key.as_bytes());
        }
    }
    out
}

/// The record in `bytes`, if they are one (anything else is not trusted).
fn decode_record(bytes: &[u8]) -> Option<Record> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut fields = text.split('\x1f');
    let node = fields.next().filter(|n| !n.is_empty())?;
    let nick = match fields.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let name = fields.next().filter(|n| !n.is_empty())?;
    if name.chars().any(char::is_control) {
        return None;
    }
    Some(Record {
        node: node.to_owned(),
        nick,
        name: Rc::from(name),
    })
}

/// What became of a message said here (see [`Chat::speak`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spoken {
    /// Numbered and delivered here.
    Numbered(u64),
    /// On its way through Redis; numbered when it comes back (the
    /// script's answer carries this ticket).
    Queued(Ticket),
    /// Other nodes are out of reach: delivered on this node only, unnumbered.
    LocalOnly,
}

/// The close code of a connection whose user resumed on another one
/// (RFC 6455 §7.4.2 leaves 4000-4999 to applications).
pub const REPLACED_CLOSE_CODE: u16 = 4002;

/// The address a client is charged under for the rooms it makes. Today
/// the peer address of the connection; a trusted proxy's forwarded
/// address would be chosen here once the seam carries one.
fn client_of(upgrade: &Upgrade<'_>) -> ClientKey {
    client_key(upgrade.remote.ip())
}

/// A join or a leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Join,
    Leave,
}

/// What the sender of a message that reached this node only is told.
fn not_confirmed(text: &str) -> String {
    const SHOWN: usize = 40;
    let cut = match text.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    };
    format!("your message \"{cut}\" was shown on this node only: Redis did not confirm it, so other nodes may not have it")
}

/// Whether `name` is `wanted`, as a user would type it: a nickname by its
/// keys (case and look-alikes do not matter), a default name exactly but
/// for the case of `User`.
/// Takes out the first of `pending` that `is` picks: what waits for an
/// answer from the bus (a post, a read, a resume, a claim, a listing) is
/// kept in a small vector and found again by its ticket.
fn take_first<T>(pending: &mut Vec<T>, is: impl Fn(&T) -> bool) -> Option<T> {
    let at = pending.iter().position(is)?;
    Some(pending.swap_remove(at))
}

fn same_name(name: &str, wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted) || names::keys(name) == names::keys(&names::normalise(wanted))
}

/// The status a bad target gets, on an upgrade and a plain GET alike:
/// a path that names no room is `404`, a malformed query `400`.
fn refusal(e: TargetError) -> Refusal {
    let status = match e {
        TargetError::BadRoomName => 404,
        TargetError::BadSince | TargetError::BadResume => 400,
    };
    Refusal {
        status,
        reason: e.reason(),
    }
}

/// Encodes `line` for one format; `ts` is when it happened.
fn encode(line: &Line<'_>, room: &str, json: bool, ts: u64, cx: &mut impl Context) -> Outgoing {
    if json {
        let mut bytes = Vec::with_capacity(128);
        render::json(line, Stamp { room, ts }, &mut bytes);
        return cx.encode(Kind::Text, &[&bytes]);
    }
    match *line {
        // The hot path: straight into the frame, no intermediate buffer.
        Line::Message {
            from,
            text,
            me: false,
            ..
        } => {
            // Ordinary text goes into the frame as it came (no copy).
            let text = render::safe(text);
            cx.encode(Kind::Text, &[from.as_bytes(), b": ", text.as_bytes()])
        }
        _ => {
            let mut bytes = Vec::with_capacity(64);
            render::plain(line, &mut bytes);
            cx.encode(Kind::Text, &[&bytes])
        }
    }
}

impl Chat {
    pub fn new(config: ChatConfig) -> Chat {
        Chat {
            config,
            users: Users::default(),
            rooms: Rooms::default(),
            due: presence::Schedule::default(),
            tokens: Tokens::default(),
            bus: Box::new(LocalBus),
            node: None,
            pending: Pending::default(),
            others: Others::default(),
        }
    }

    /// A chat that is one node of many, joined by `bus`, as node `node`.
    pub fn clustered(config: ChatConfig, bus: Box<dyn Bus>, node: &str) -> Chat {
        Chat {
            bus,
            node: Some(Rc::from(node)),
            ..Chat::new(config)
        }
    }

    /// How many users are present, in all rooms.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// A message or `/me` action: numbered, remembered, delivered.
    fn say(&mut self, id: PeerId, text: &str, me: bool, cx: &mut impl Context) {
        let Some(user) = self.users.get_mut(id) else {
            return;
        };
        let (room, from, verified) = (user.room(), user.shared_name(), user.is_verified());
        let audience = Audience::OthersUnlessJson(id);
        self.speak(room, id, from, text, (me, verified), audience, cx);
    }

    /// `from` (peer `id`, or `PeerId::MAX` for no peer) says `text` in
    /// `room`. In cluster mode it is numbered by Redis and delivered here
    /// when it comes back, in the room's one order; if it cannot go, this
    /// node alone hears it, unnumbered and not in history (which holds the
    /// shared numbering). Otherwise it is numbered and delivered here now.
    #[allow(clippy::too_many_arguments)]
    fn speak(
        &mut self,
        room: usize,
        id: PeerId,
        from: Rc<str>,
        text: &str,
        (me, verified): (bool, bool),
        audience: Audience,
        cx: &mut impl Context,
    ) -> Spoken {
        let mut spoken = Spoken::Numbered(0);
        if self.node.is_some() {
            match self.relay(
                room,
                relay::Kind::Message,
                id,
                me,
                &from,
                text.as_bytes(),
                cx,
            ) {
                Publish::Queued(ticket) => return Spoken::Queued(ticket),
                Publish::Local => {}
                // Out of reach, the room was told; a queue toward Redis
                // full, only the sender can be.
                Publish::Dropped if self.bus.reachable() && self.users.get(id).is_some() => {
                    self.system(id, &not_confirmed(text), Extra::None, cx);
                    spoken = Spoken::LocalOnly;
                }
                Publish::Dropped => spoken = Spoken::LocalOnly,
            }
        }
        let Some(r) = self.rooms.get(room) else {
            return spoken;
        };
        let remember = spoken != Spoken::LocalOnly;
        let seq = r.last_seq + u64::from(remember);
        if remember {
            spoken = Spoken::Numbered(seq);
        }
        let ts = cx.clock().unix_ms;
        self.message(
            room,
            from,
            text,
            (me, verified),
            seq,
            ts,
            audience,
            remember,
            cx,
        );
        spoken
    }

    /// Message `seq` of `room` (a `/me` action or not, said by a verified
    /// user or not): remembered, delivered to `audience`.
    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        room: usize,
        from: Rc<str>,
        text: &str,
        (me, verified): (bool, bool),
        seq: u64,
        ts: u64,
        audience: Audience,
        remember: bool,
        cx: &mut impl Context,
    ) {
        let bounds = self.config.history;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if remember && seq <= r.last_seq {
            // The numbering started over (Redis lost the room, or this
            // node numbered messages alone meanwhile): what is held would
            // no longer be in order.
            r.history = history::History::default();
        }
        if remember {
            r.last_seq = seq;
        }
        let line = Line::Message {
            from: &from,
            text,
            seq,
            me,
            history: false,
            verified,
        };
        // One pass over the text tells whether plain text must take care
        // of it and what it can cost history. The plain-text message is
        // made once, for its recipients and for history alike: ordinary
        // text goes into the frame as it came.
        let scan = render::scan(text);
        let plain = if me || scan.care {
            encode(&line, &r.name, false, ts, cx)
        } else {
            cx.encode(Kind::Text, &[from.as_bytes(), b": ", text.as_bytes()])
        };
        if remember && bounds.max_entries > 0 {
            let entry = Entry::new(
                seq,
                ts,
                Rc::clone(&from),
                text,
                me,
                plain.clone(),
                scan.json_extra,
            )
            .by_verified(verified);
            r.history.push(entry, bounds);
        }
        self.to_room_at(room, &line, audience, Some(&plain), ts, cx);
    }

    /// A private message to the user called `to` in the sender's room.
    fn private(&mut self, id: PeerId, to: &str, text: &str, cx: &mut impl Context) {
        let Some(user) = self.users.get(id) else {
            return;
        };
        let Some(r) = self.rooms.get(user.room()) else {
            return;
        };
        let recipient = match self.find(user.room(), to) {
            Ok(recipient) => recipient,
            Err(why) => {
                let remote = r.remote.names().find(|n| same_name(n, to));
                let Some(remote) = remote.map(str::to_owned) else {
                    return self.error(id, &why, cx);
                };
                // On another node: its node delivers it.
                let (from, room) = (user.name().into_owned(), user.room());
                let body = relay::private_body(&remote, text);
                self.relay(room, relay::Kind::Private, id, false, &from, &body, cx);
                let line = Line::Private {
                    from: &from,
                    to: &remote,
                    text,
                    sent: true,
                };
                self.to_user(id, &line, cx);
                return;
            }
        };
        if recipient == id {
            return self.error(id, "that is you", cx);
        }
        let (from, to) = (user.name(), self.users.get(recipient).map(User::name));
        let Some(to) = to else {
            return;
        };
        let ts = cx.clock().unix_ms;
        let room = r.name.as_str();
        for (peer, sent) in [(recipient, false), (id, true)] {
            let line = Line::Private {
                from: &from,
                to: &to,
                text,
                sent,
            };
            let json = self.users.get(peer).is_some_and(|u| u.json);
            let message = encode(&line, room, json, ts, cx);
            cx.deliver(peer, &message);
        }
    }

    /// The member of `room` called `name`: a nickname by its keys (so
    /// case and look-alikes do not matter), a default name `User <port>`
    /// by its port.
    fn find(&self, room: usize, name: &str) -> Result<PeerId, String> {
        let Some(r) = self.rooms.get(room) else {
            return Err("no room".into());
        };
        // `User PORT`, or in cluster mode `User PORT@NODE` (this node's).
        let default = name
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("user "))
            .map(|_| match name[5..].split_once('@') {
                Some((port, node)) => (port, Some(node)),
                None => (&name[5..], None),
            });
        let port = match default {
            Some((port, node)) if node.is_none() || node == self.node.as_deref() => {
                port.parse::<u16>().ok()
            }
            Some((_, Some(_))) => return Err(format!("nobody called {name} is in this room")),
            _ => None,
        };
        if let Some(port) = port {
            // A resumed user keeps the name of its first port, so the
            // name decides, not the port (no string made per member).
            let wanted = match &self.node {
                Some(node) => format!("User {port}@{node}"),
                None => format!("User {port}"),
            };
            let mut found = r.members().filter(|&m| {
                self.users.get(m).is_some_and(|u| {
                    !u.nick
                        && match &u.name {
                            Some(name) => **name == *wanted,
                            None => u.port == port,
                        }
                })
            });
            return match (found.next(), found.next()) {
                (Some(m), None) => Ok(m),
                (Some(_), Some(_)) => Err(format!(
                    "more than one user here is called User {port}; ask them to take a nickname"
                )),
                (None, _) => Err(format!("nobody called User {port} is in this room")),
            };
        }
        match r.names.holder(&names::keys(&names::normalise(name))) {
            Some(Holder::User(m)) => Ok(m),
            Some(Holder::Away(_)) => Err(format!("{name} is reconnecting; try again shortly")),
            None => Err(format!("nobody called {name} is in this room")),
        }
    }

    /// The names of a room's first members, at most the list limit of
    /// them (so the cost is bounded however large the room), and how many
    /// members it has.
    fn names(&self, room: usize) -> (Vec<Cow<'_, str>>, usize) {
        self.rooms.get(room).map_or_else(
            || (Vec::new(), 0),
            |r| {
                // This node's users, then other nodes' (cluster mode).
                let names = r
                    .members()
                    .filter_map(|m| self.users.get(m))
                    .map(User::name)
                    .chain(r.remote.names().map(Cow::Borrowed))
                    .take(self.config.list_limit)
                    .collect();
                (names, r.len() + r.remote.len())
            },
        )
    }

    /// The names of `room`'s verified users among those [`Chat::names`]
    /// lists, on this node and on others (as their join events and the
    /// presence listings said).
    fn verified_names(&self, room: usize) -> Vec<&str> {
        self.rooms.get(room).map_or_else(Vec::new, |r| {
            r.members()
                .filter_map(|m| self.users.get(m))
                .map(|u| (u.name.as_deref(), u.is_verified()))
                .chain(r.remote.flagged().map(|(n, v)| (Some(n), v)))
                .take(self.config.list_limit)
                .filter_map(|(name, verified)| name.filter(|_| verified))
                .collect()
        })
    }

    /// Whether `id` has spent its reply budget; if so it is told, in a
    /// short error line, and the command is not answered.
    fn over_budget(&self, id: PeerId, cx: &mut impl Context) -> bool {
        let rate = self.config.reply_rate;
        let spent = self
            .users
            .get(id)
            .is_some_and(|u| !u.replies().allows(cx.clock().now, rate));
        if spent {
            let text = format!(
                "replies to /who, /rooms and /help are limited to {rate} bytes a second; try again shortly"
            );
            self.error(id, &text, cx);
        }
        spent
    }

    /// Charges `bytes` of reply to `id`'s budget.
    fn charge(&mut self, id: PeerId, bytes: usize, cx: &mut impl Context) {
        let (now, rate) = (cx.clock().now, self.config.reply_rate);
        if let Some(user) = self.users.get_mut(id) {
            user.charge_replies(bytes, now, rate);
        }
    }

    fn who(&mut self, id: PeerId, cx: &mut impl Context) {
        let Some(room) = self.users.get(id).map(|u| u.room()) else {
            return;
        };
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        if self.over_budget(id, cx) {
            return;
        }
        let (names, count) = self.names(room);
        let verified = self.verified_names(room);
        let names: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
        let shown: Vec<String> = names
            .iter()
            .map(|&n| match verified.contains(&n) {
                true => format!("{n} (verified)"),
                false => n.to_owned(),
            })
            .collect();
        let mut text = format!("Users in {} ({count}): {}", r.name, shown.join(", "));
        if count > names.len() {
            text.push_str(&format!(", and {} more", count - names.len()));
        }
        let users = Extra::Users {
            users: &names,
            count,
            verified: &verified,
        };
        let bytes = self.system(id, &text, users, cx);
        self.charge(id, bytes, cx);
    }

    fn help(&mut self, id: PeerId, cx: &mut impl Context) {
        if self.over_budget(id, cx) {
            return;
        }
        let bytes = self.system(id, command::HELP, Extra::None, cx);
        self.charge(id, bytes, cx);
    }

    fn handle(&mut self, id: PeerId, request: Request<'_>, cx: &mut impl Context) {
        match request {
            Request::Say(text) => self.say(id, text, false, cx),
            Request::Me(text) => self.say(id, text, true, cx),
            Request::Nick(name) => self.nick(id, name, cx),
            Request::Who => self.who(id, cx),
            Request::WhoAmI => self.whoami(id, cx),
            Request::Msg { to, text } => self.private(id, to, text, cx),
            Request::Rooms => self.list_rooms(id, cx),
            Request::Help => self.help(id, cx),
            Request::Token(token) => self.refresh_token(id, token, cx),
            Request::Invalid(why) => self.error(id, &why, cx),
        }
    }

    /// Takes `user` (just removed) out of its room's member list.
    fn detach(&mut self, id: PeerId, user: &User) {
        let Some(r) = self.rooms.get_mut(user.room()) else {
            return;
        };
        let list = r.list_mut(user.json);
        if list.get(user.slot()) != Some(&id) {
            return;
        }
        list.swap_remove(user.slot());
        if let Some(&moved) = list.get(user.slot()) {
            if let Some(other) = self.users.get_mut(moved) {
                other.set_slot(user.slot());
            }
        }
    }

    /// Announces the leaves of users whose grace has ended, freeing their
    /// names.
    fn expire_away(&mut self, cx: &mut impl Context) {
        let now = cx.clock().now;
        while let Some((departure, away)) = self.tokens.expire_one(now) {
            self.relay(
                away.room,
                relay::Kind::Leave,
                PeerId::MAX,
                false,
                &away.name,
                b"",
                cx,
            );
            let Some(r) = self.rooms.get_mut(away.room) else {
                continue;
            };
            r.away -= 1;
            if away.nick {
                r.names
                    .remove(&names::keys(&away.name), Holder::Away(departure));
            }
            if r.is_empty() {
                if r.history.is_empty() && r.away == 0 {
                    self.rooms.forget(away.room);
                }
                continue;
            }
            let size = r.len() + 1;
            // Nobody present has this id: everyone is told.
            self.announce(away.room, Change::Leave, &away.name, PeerId::MAX, size, cx);
        }
    }

    fn limits(&self) -> RoomLimits {
        RoomLimits {
            max_rooms: self.config.max_rooms,
            max_per_client: self.config.max_rooms_per_client,
        }
    }

    /// Welcomes `id` into its room: as the user its token names (found
    /// here, `remote` `None`; or in Redis, `Some(Some(record))`), or as a
    /// new user (`Some(None)`: another node's token that was not there).
    fn open(
        &mut self,
        id: PeerId,
        opening: Opening,
        target: Target,
        identity: Option<auth::Identity>,
        remote: Option<Option<Record>>,
        cx: &mut impl Context,
    ) {
        let limits = self.limits();
        let new_here = self.node.is_some() && !self.rooms.contains_name(&target.room);
        let room = self.rooms.named(&target.room, opening.client, limits);
        if new_here && self.node.is_some() && self.bus.reachable() {
            // Its history is fetched from Redis once the subscription is
            // confirmed; replays wait for it.
            if let Some(r) = self.rooms.get_mut(room) {
                r.seeding = Some(Vec::new());
            }
        }
        // A resume: the name comes back, and nobody is told of a join.
        let mut resumed: Option<(Rc<str>, bool)> = None;
        let mut refused = false;
        // The node the user resumed from, if another.
        let mut moved_from = None;
        let here = remote.is_none();
        match remote {
            Some(Some(record)) => {
                resumed = Some((record.name, record.nick));
                moved_from = Some(record.node);
            }
            Some(None) => refused = target.resume.is_some(),
            None => {}
        }
        if let Some(token) = target
            .resume
            .filter(|_| !self.config.resume_grace.is_zero() && here)
        {
            // Used up: its record in Redis goes too.
            self.forget_record(&token, room, None);
            match self.tokens.take(&token, room) {
                Found::Present(old) => {
                    // Its old connection has not been seen to drop: the
                    // new one takes its place, and the old one is heard
                    // no more and closed.
                    if let Some(mut user) = self.users.remove(old) {
                        self.detach(old, &user);
                        resumed = Some((user.shared_name(), user.nick));
                        cx.close(old, REPLACED_CLOSE_CODE, "resumed on another connection");
                    }
                }
                Found::Away(away) => {
                    if let Some(r) = self.rooms.get_mut(room) {
                        r.away -= 1;
                    }
                    resumed = Some((away.name, away.nick));
                }
                Found::Unknown => refused = true,
            }
        }
        let mut displaced = None;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let json = opening.json;
        let (mut name, mut nick) = match (&resumed, &self.node) {
            (Some((name, nick)), _) => (Some(Rc::clone(name)), *nick),
            // Ports repeat across nodes: the node tells them apart.
            (None, Some(node)) => (
                Some(Rc::from(format!("User {}@{node}", opening.port))),
                false,
            ),
            (None, None) => (None, false),
        };
        let verified_until = identity.as_ref().map(|i| i.expires_ms);
        if let Some(identity) = &identity {
            name = Some(Rc::from(identity.name.as_str()));
            nick = true;
        }
        // A name is held once per room: a verified user takes its name
        // from whoever holds it unverified (or from its own older
        // connection), and a resumed user whose name went meanwhile to a
        // verified one comes back with its default name.
        if let Some(held) = name.as_ref().filter(|_| nick) {
            let keys = names::keys(held);
            match r.names.holder(&keys) {
                // (A connection taken over by a resume is gone already.)
                Some(Holder::User(other)) if other != id && self.users.get(other).is_some() => {
                    if identity.is_some() {
                        displaced = Some(other);
                    } else {
                        (name, nick) = (None, false);
                    }
                }
                Some(Holder::Away(departure)) if identity.is_some() => {
                    r.names.remove(&keys, Holder::Away(departure));
                }
                _ => {}
            }
        }
        let list = r.list_mut(json);
        let mut user = User::new(opening.port, name, nick, json, room, list.len());
        user.set_verified_until(verified_until);
        list.push(id);
        r.empty_since = None;
        if let Some(name) = user.name.as_ref().filter(|_| nick) {
            r.names.insert(&names::keys(name), Holder::User(id));
        }
        let size = r.len();
        let last_seq = r.last_seq;
        let name = user.name().into_owned();
        self.users.insert(id, user);
        if let Some(other) = displaced {
            self.unname(other, room, &name, cx);
        }
        if size == 1 && self.node.is_some() {
            // Subscribed until the room is forgotten here (see on_tick),
            // so its history here keeps up while it is empty.
            self.bus.subscribe(cx.clock().now, &target.room);
        }
        if identity.is_some() && self.node.is_some() {
            // Its name is taken across nodes too, so nobody on another
            // node can take it while it is here, and a holder there is
            // renamed by its node once Redis says who it was (see
            // `taken`).
            let keys = names::keys(&name);
            self.bus
                .take_name(cx.clock().now, &target.room, &keys, &name);
        }
        // JSON clients are given their token at once; plain ones when they
        // ask (`/whoami`), or when they resumed (theirs was used up).
        let token = if json || resumed.is_some() {
            self.token_of(id)
        } else {
            None
        };
        if json {
            let (names, count) = self.names(room);
            let users: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
            let verified = self.verified_names(room);
            let again = if resumed.is_some() { " again" } else { "" };
            let text = format!("You are {name} in {}{again}", target.room);
            let extra = Extra::Welcome {
                you: &name,
                users: &users,
                count,
                verified: &verified,
                resume: token.as_deref(),
            };
            self.system(id, &text, extra, cx);
        } else if let (Some(token), Some(_)) = (&token, &resumed) {
            let text = format!(
                "Welcome back: you are {name} in {} again; {}",
                target.room,
                self.token_text(token, last_seq)
            );
            self.system(id, &text, Extra::None, cx);
        }
        if refused {
            let text = format!(
                "your resume token is not valid here (expired, already used, or for another room): you are {name}, a new user"
            );
            self.system(id, &text, Extra::None, cx);
        }
        match self.rooms.get_mut(room).and_then(|r| r.seeding.as_mut()) {
            Some(waiting) => waiting.push(Waiting {
                id,
                since: target.since,
                upto: last_seq,
            }),
            None => self.replay(id, room, target.since, &|_| false, cx),
        }
        // Back from another node: quiet if the room still lists it there
        // (that node then drops it without a leave), else a join.
        let quiet = match &moved_from {
            Some(old) => {
                let now = cx.clock().now;
                let listed = self
                    .rooms
                    .get_mut(room)
                    .is_some_and(|r| r.remote.left(old, &name, now));
                if listed {
                    let digest = target.resume.as_ref().map(resume::digest);
                    let body = relay::resumed_body(old, digest.as_deref().unwrap_or_default());
                    self.relay(room, relay::Kind::Resumed, id, false, &name, &body, cx);
                }
                listed
            }
            None => resumed.is_some(),
        };
        if !quiet {
            self.announce(room, Change::Join, &name, id, size, cx);
            self.relay(room, relay::Kind::Join, id, false, &name, b"", cx);
        }
    }
}

impl Service for Chat {
    type Admitted = (Target, Option<auth::Identity>);

    fn protocols(&self) -> Vec<String> {
        let mut protocols = self.config.extra_protocols.clone();
        protocols.push(JSON_PROTOCOL.to_owned());
        protocols
    }

    fn admit(&mut self, upgrade: &Upgrade<'_>) -> Result<Self::Admitted, Refusal> {
        let target = target::parse(upgrade.target).map_err(refusal)?;
        let identity = self.identify(upgrade, &target)?;
        match self
            .rooms
            .may_join(&target.room, client_of(upgrade), self.limits())
        {
            Ok(()) => Ok((target, identity)),
            Err(Full::Server) => Err(Refusal {
                status: 503,
                reason: "too many rooms",
            }),
            Err(Full::Client) => Err(Refusal {
                status: 429,
                reason: "too many rooms made from this address",
            }),
        }
    }

    fn on_open(
        &mut self,
        id: PeerId,
        upgrade: &Upgrade<'_>,
        (target, identity): Self::Admitted,
        cx: &mut impl Context,
    ) {
        self.summarise_due(cx);
        let opening = Opening {
            client: client_of(upgrade),
            json: upgrade.protocol == Some(JSON_PROTOCOL),
            port: upgrade.remote.port(),
        };
        // A token this node does not hold may be another node's: its
        // record is asked of Redis, and the connection waits for it.
        if let (Some(token), Some(_)) = (target.resume, &self.node) {
            let here = self
                .rooms
                .index_of(&target.room)
                .is_some_and(|room| self.tokens.holds(&token, room));
            if !here && !self.config.resume_grace.is_zero() {
                let now = cx.clock().now;
                let digest = resume::digest(&token);
                if let Publish::Queued(ticket) = self.bus.take_resume(now, &target.room, &digest) {
                    self.pending.resuming.push(Resuming {
                        ticket,
                        id,
                        target,
                        identity,
                        opening,
                    });
                    return;
                }
                // Out of reach: a new user.
                return self.open(id, opening, target, identity, Some(None), cx);
            }
        }
        self.open(id, opening, target, identity, None, cx);
    }
    fn on_message(&mut self, id: PeerId, message: Message<'_>, cx: &mut impl Context) {
        self.summarise_due(cx);
        let Some(user) = self.users.get(id) else {
            return;
        };
        let (room, json) = (user.room(), user.json);
        match message {
            Message::Binary(bytes) => {
                let Some(r) = self.rooms.get(room) else {
                    return;
                };
                if r.members().any(|m| m != id) {
                    let message = cx.encode(Kind::Binary, &[bytes]);
                    r.members()
                        .filter(|&m| m != id)
                        .for_each(|m| cx.deliver(m, &message));
                }
                self.relay(room, relay::Kind::Binary, id, false, "", bytes, cx);
            }
            Message::Text(text) if json => {
                let request = command::parse_json(text);
                self.handle(id, request.as_request(), cx);
            }
            Message::Text(text) => self.handle(id, command::parse_typed(text), cx),
        }
    }

    fn on_close(&mut self, id: PeerId, goodbye: Goodbye, cx: &mut impl Context) {
        self.summarise_due(cx);
        // Gone with questions in flight: their answers must find nobody,
        // not the next connection given the same id (a resumed user's old
        // node tells the leave at its grace's end).
        self.pending.forget(id);
        let Some(mut user) = self.users.remove(id) else {
            return;
        };
        self.detach(id, &user);
        let now = cx.clock().now;
        // Another node may take the record until the grace ends; this node
        // waits a little longer to hear of it before it tells a leave.
        let margin = match self.node {
            Some(_) => RESUME_MARGIN,
            None => Duration::ZERO,
        };
        // A drop (anything but the peer's own normal close) of a user who
        // knows its token is kept quiet for the grace period.
        let goodbye_said = goodbye.by_peer && matches!(goodbye.code, 1000 | 1005);
        if let Some(token) = user.token {
            let name = user.shared_name();
            let departure = match goodbye_said {
                false => self.tokens.depart(
                    &token,
                    Rc::clone(&name),
                    user.nick,
                    user.room(),
                    now + self.config.resume_grace + margin,
                ),
                true => {
                    self.tokens.revoke(&token);
                    None
                }
            };
            let grace_ms = u64::try_from(self.config.resume_grace.as_millis()).unwrap_or(u64::MAX);
            let ttl = departure.map(|_| grace_ms);
            self.forget_record(&token, user.room(), ttl);
            if let (Some(departure), Some(r)) = (departure, self.rooms.get_mut(user.room())) {
                r.away += 1;
                if user.nick {
                    r.names.insert(&names::keys(&name), Holder::Away(departure));
                }
                if r.is_empty() {
                    r.presence.clear();
                    r.empty_since = Some(now);
                }
                return;
            }
        }
        if self.node.is_some() {
            let name = user.name();
            self.relay(user.room(), relay::Kind::Leave, id, false, &name, b"", cx);
        }
        let Some(r) = self.rooms.get_mut(user.room()) else {
            return;
        };
        if let Some(name) = user.name.as_ref().filter(|_| user.nick) {
            r.names.remove(&names::keys(name), Holder::User(id));
        }
        if r.is_empty() {
            // Nobody is left to be told.
            r.presence.clear();
            if r.history.is_empty() && r.away == 0 {
                self.rooms.forget(user.room());
            } else {
                r.empty_since = Some(now);
            }
            return;
        }
        let size = r.len() + 1;
        self.announce(user.room(), Change::Leave, &user.name(), id, size, cx);
    }

    fn on_throttled(&mut self, id: PeerId, cx: &mut impl Context) {
        self.summarise_due(cx);
        self.system(
            id,
            "you are sending too fast; messages are being dropped",
            Extra::None,
            cx,
        );
    }

    fn on_tick(&mut self, cx: &mut impl Context) {
        self.summarise_due(cx);
        self.expire_away(cx);
        self.expire_tokens(cx);
        self.expire_posts(cx);
        self.expire_reads(cx);
        self.rooms.expire(cx.clock().now, self.config.room_ttl);
        if self.node.is_some() {
            self.bus.tick(cx.clock().now);
            let rooms = &self.rooms;
            self.bus
                .retain_rooms(cx.clock().now, &|room| rooms.contains_name(room));
        }
    }

    fn upstream(&mut self, i: usize) -> Option<&mut dyn Upstream> {
        self.bus.upstream(i)
    }

    fn on_upstream(&mut self, cx: &mut impl Context) {
        self.summarise_due(cx);
        self.on_bus(cx);
    }

    /// The pass's messages go to other nodes: one publish per room.
    fn on_batch_end(&mut self, cx: &mut impl Context) {
        self.bus.flush(cx.clock().now);
    }

    fn degraded(&self) -> Option<String> {
        self.bus.degraded()
    }

    fn on_http(&mut self, request: &HttpGet<'_>, cx: &mut impl Context) -> HttpReply {
        let path = request.target.split('?').next().unwrap_or_default();
        if api::is_api(path) {
            // Without a ticket the API answers at once.
            return self
                .api(request, None, cx)
                .unwrap_or_else(|| HttpReply::text(500, "no answer"));
        }
        if !matches!(request.method, "GET" | "HEAD") {
            let mut reply = HttpReply::text(405, "the page takes GET or HEAD");
            reply.headers.push("Allow: GET, HEAD".into());
            return reply;
        }
        match target::parse(request.target) {
            Ok(_) => HttpReply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: vec![
                    "Cache-Control: no-cache".into(),
                    "Content-Security-Policy: default-src 'self'; connect-src 'self' ws: wss:; \
                     style-src 'unsafe-inline'; script-src 'unsafe-inline'"
                        .into(),
                ],
                body: PAGE.as_bytes().to_vec(),
            },
            Err(e) => {
                let refused = refusal(e);
                HttpReply::text(refused.status, refused.reason)
            }
        }
    }

    fn on_http_deferred(
        &mut self,
        ticket: HttpTicket,
        request: &HttpGet<'_>,
        cx: &mut impl Context,
    ) -> Option<HttpReply> {
        let path = request.target.split('?').next().unwrap_or_default();
        if api::is_api(path) {
            return self.api(request, Some(ticket), cx);
        }
        Some(self.on_http(request, cx))
    }

    fn gauges(&self) -> Vec<Gauge> {
        let (entries, bytes) = self.rooms.iter().fold((0, 0), |(n, b), r| {
            (n + r.history.len(), b + r.history.bytes())
        });
        let mut gauges = self.bus.gauges();
        gauges.extend([
            Gauge {
                name: "wschat_chat_users",
                help: "Users in the chat, all rooms.",
                value: self.len(),
            },
            Gauge {
                name: "wschat_relay_undecodable",
                help: "Events from other nodes not in this release's relay encoding (dropped).",
                value: usize::try_from(self.others.undecodable).unwrap_or(usize::MAX),
            },
            Gauge {
                name: "wschat_rooms",
                help: "Rooms, including empty ones kept for their history.",
                value: self.rooms.len(),
            },
            Gauge {
                name: "wschat_users_away",
                help: "Users who dropped and may resume within --resume-grace.",
                value: self.tokens.away(),
            },
            Gauge {
                name: "wschat_resume_tokens",
                help: "Live resume tokens (users told theirs, and users away).",
                value: self.tokens.len(),
            },
            Gauge {
                name: "wschat_history_messages",
                help: "Messages held in room histories.",
                value: entries,
            },
            Gauge {
                name: "wschat_history_bytes",
                help: "Bytes held in room histories.",
                value: bytes,
            },
        ]);
        gauges
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::outbox::SharedFrame;
    use crate::service::Clock;
    use serde_json::Value;

    const BYE: Goodbye = Goodbye {
        code: 1000,
        by_peer: true,
    };

    /// Records deliveries as (recipient, payload) without framing, and
    /// counts encodings.
    struct Recorder {
        clock: Clock,
        encoded: usize,
        sent: Vec<(PeerId, Vec<u8>)>,
        closed: Vec<(PeerId, u16, &'static str)>,
    }

    impl Default for Recorder {
        fn default() -> Recorder {
            Recorder {
                clock: Clock::read(),
                encoded: 0,
                sent: Vec::new(),
                closed: Vec::new(),
            }
        }
    }

    impl Context for Recorder {
        fn clock(&self) -> Clock {
            self.clock
        }

        fn encode(&mut self, _kind: Kind, parts: &[&[u8]]) -> Outgoing {
            self.encoded += 1;
            Outgoing::from_plain(SharedFrame::concat(&[], parts))
        }

        fn deliver(&mut self, to: PeerId, message: &Outgoing) {
            self.sent.push((to, message.plain().as_bytes().to_vec()));
        }

        fn close(&mut self, to: PeerId, code: u16, reason: &'static str) {
            self.closed.push((to, code, reason));
        }

        fn answer_http(&mut self, _ticket: crate::service::HttpTicket, _reply: HttpReply) {
            unreachable!("one node answers HTTP at once");
        }
    }

    impl Recorder {
        fn take(&mut self) -> Vec<(PeerId, String)> {
            self.sent
                .drain(..)
                .map(|(to, bytes)| (to, String::from_utf8(bytes).expect("UTF-8")))
                .collect()
        }

        fn lines_for(&mut self, id: PeerId) -> Vec<String> {
            self.take()
                .into_iter()
                .filter(|(to, _)| *to == id)
                .map(|(_, s)| s)
                .collect()
        }

        fn json_for(&mut self, id: PeerId) -> Vec<Value> {
            self.lines_for(id)
                .iter()
                .map(|s| serde_json::from_str(s).expect("JSON"))
                .collect()
        }
    }

    fn chat() -> Chat {
        Chat::new(ChatConfig::default())
    }

    fn join(chat: &mut Chat, id: PeerId, target: &str, json: bool, out: &mut Recorder) {
        let remote = SocketAddr::from(([127, 0, 0, 1], 5000 + id as u16));
        let upgrade = Upgrade {
            remote,
            target,
            protocol: json.then_some(JSON_PROTOCOL),
            cookie: None,
        };
        let admitted = chat.admit(&upgrade).expect("admitted");
        chat.on_open(id, &upgrade, admitted, out);
    }

    fn say(chat: &mut Chat, id: PeerId, text: &str, out: &mut Recorder) {
        chat.on_message(id, Message::Text(text), out);
    }

    use std::net::SocketAddr;

    fn sorted(mut v: Vec<(PeerId, String)>) -> Vec<(PeerId, String)> {
        v.sort();
        v
    }

    #[test]
    fn resume_records_round_trip_and_refuse_what_is_not_one() {
        let bytes = encode_record("n1", "alice", true);
        assert!(bytes.starts_with(b"n1\x1f1\x1falice\x1f"), "{bytes:?}");
        let record = decode_record(&bytes).expect("a record");
        assert_eq!((record.node.as_str(), record.nick), ("n1", true));
        assert_eq!(&*record.name, "alice");
        assert_eq!(
            encode_record("n2", "User 5@n2", false),
            b"n2\x1f0\x1fUser 5@n2"
        );
        for bad in [
            &b""[..],
            b"n1",
            b"n1\x1f2\x1falice",
            b"\x1f1\x1falice",
            b"n1\x1f1\x1f",
            b"n1\x1f1\x1fa\nb",
            b"n1\x1f1\x1f\xff",
        ] {
            assert_eq!(decode_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_seed_behaviour_in_the_lobby() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        assert!(out.take().is_empty(), "nobody to tell, nothing to replay");
        join(&mut chat, 1, "/", false, &mut out);
        assert_eq!(out.take(), [(0, "User 5001 joined".to_string())]);
        join(&mut chat, 2, "/lobby", false, &mut out);
        assert_eq!(
            sorted(out.take()),
            [
                (0, "User 5002 joined".into()),
                (1, "User 5002 joined".into())
            ]
        );
        out.encoded = 0;
        say(&mut chat, 1, "hi", &mut out);
        assert_eq!(
            sorted(out.take()),
            [(0, "User 5001: hi".into()), (2, "User 5001: hi".into())]
        );
        assert_eq!(out.encoded, 1, "encoded once for all recipients");
        chat.on_message(2, Message::Binary(&[0, 159]), &mut out);
        assert_eq!(
            {
                let mut bin: Vec<(PeerId, Vec<u8>)> = out.sent.drain(..).collect();
                bin.sort();
                bin
            },
            [(0, vec![0, 159]), (1, vec![0, 159])]
        );
        chat.on_close(0, BYE, &mut out);
        assert_eq!(
            sorted(out.take()),
            [(1, "User 5000 left".into()), (2, "User 5000 left".into())]
        );
        chat.on_close(2, BYE, &mut out);
        assert_eq!(
            out.take(),
            [(1, "User 5002 left".into())],
            "the last one hears it too"
        );
    }

    #[test]
    fn rooms_keep_to_themselves() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/rust", false, &mut out);
        join(&mut chat, 1, "/Rust", false, &mut out);
        join(&mut chat, 2, "/go", false, &mut out);
        out.take();
        say(&mut chat, 0, "borrowck", &mut out);
        assert_eq!(out.take(), [(1, "User 5000: borrowck".into())]);
        say(&mut chat, 2, "alone", &mut out);
        assert!(out.take().is_empty());
        say(&mut chat, 2, "/rooms", &mut out);
        assert_eq!(out.take(), [(2, "wschat: Rooms: go (1), rust (2)".into())]);
        say(&mut chat, 0, "/who", &mut out);
        assert_eq!(
            out.take(),
            [(0, "wschat: Users in rust (2): User 5000, User 5001".into())]
        );
    }

    #[test]
    fn bad_targets_are_refused_at_the_handshake() {
        let mut chat = chat();
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let refuse = |chat: &mut Chat, target: &str| {
            chat.admit(&Upgrade {
                remote,
                target,
                protocol: None,
                cookie: None,
            })
            .map(|_| ())
            .map_err(|r| r.status)
        };
        assert_eq!(refuse(&mut chat, "/no/such"), Err(404));
        assert_eq!(refuse(&mut chat, "/rust?since=x"), Err(400));
        assert_eq!(refuse(&mut chat, "/rust?since=3"), Ok(()));
    }

    #[test]
    fn nicknames() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        join(&mut chat, 1, "/", false, &mut out);
        out.take();
        say(&mut chat, 0, "/nick alice", &mut out);
        assert_eq!(
            sorted(out.take()),
            [
                (0, "User 5000 is now alice".into()),
                (1, "User 5000 is now alice".into())
            ]
        );
        say(&mut chat, 0, "hello", &mut out);
        assert_eq!(out.take(), [(1, "alice: hello".into())]);
        say(&mut chat, 1, "/nick ALICE", &mut out);
        assert_eq!(
            out.take(),
            [(
                1,
                "error: the name ALICE is taken in this room: it looks like alice".into()
            )]
        );
        say(&mut chat, 1, "/nick bad name", &mut out);
        assert_eq!(
            out.take(),
            [(1, "error: a nickname cannot contain spaces (U+0020)".into())]
        );
        say(&mut chat, 0, "/nick alice", &mut out);
        assert_eq!(out.take(), [(0, "error: you are already alice".into())]);
        chat.on_close(0, BYE, &mut out);
        assert_eq!(out.take(), [(1, "alice left".into())]);
    }

    #[test]
    fn look_alike_and_reserved_names_are_refused() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        join(&mut chat, 1, "/", false, &mut out);
        say(&mut chat, 0, "/nick scope", &mut out);
        out.take();
        say(
            &mut chat,
            1,
            "/nick \u{455}\u{441}\u{43e}\u{440}\u{435}",
            &mut out,
        );
        assert_eq!(
            out.lines_for(1),
            ["error: the name \u{455}\u{441}\u{43e}\u{440}\u{435} is taken in this room: it looks like scope"],
            "all Cyrillic"
        );
        say(&mut chat, 1, "/nick \u{430}lice", &mut out);
        assert!(out.lines_for(1)[0].contains("cannot mix scripts"));
        say(&mut chat, 1, "/nick User\u{2800}5000", &mut out);
        assert!(out.lines_for(1)[0].contains("U+2800 is not allowed"));
        say(&mut chat, 1, "/nick user5000", &mut out);
        assert!(out.lines_for(1)[0].contains("reserved"));
        say(&mut chat, 0, "/nick Scope", &mut out);
        assert_eq!(out.take().len(), 2, "a new spelling of one's own name");
        say(&mut chat, 0, "/nick carol", &mut out);
        out.take();
        say(&mut chat, 1, "/nick scope", &mut out);
        assert_eq!(out.lines_for(0), ["User 5001 is now scope"], "freed");
    }

    #[test]
    fn whoami_and_private_messages() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        join(&mut chat, 1, "/r", true, &mut out);
        join(&mut chat, 2, "/r", false, &mut out);
        join(&mut chat, 3, "/other", false, &mut out);
        say(&mut chat, 0, "/nick alice", &mut out);
        say(&mut chat, 0, "one", &mut out);
        out.take();
        say(&mut chat, 0, "/whoami", &mut out);
        let me = out.lines_for(0).remove(0);
        assert!(
            me.starts_with(
                "wschat: You are alice in r; its last message is number 1; your resume token is "
            ),
            "{me}"
        );
        say(&mut chat, 1, r#"{"type":"whoami"}"#, &mut out);
        let me = &out.json_for(1)[0];
        assert_eq!(
            (&me["you"], &me["last_seq"]),
            (&"User 5001".into(), &1.into())
        );
        say(&mut chat, 0, "/msg User 5001 psst\nUser 5002: hi", &mut out);
        let sent = sorted(out.take());
        assert_eq!(sent.len(), 2, "the two of them only: {sent:?}");
        assert_eq!(
            sent[0],
            (0, "[private to User 5001] psst\n  | User 5002: hi".into())
        );
        let got: Value = serde_json::from_str(&sent[1].1).unwrap();
        assert_eq!(
            (&got["type"], &got["from"], &got["to"], &got["text"]),
            (
                &"private".into(),
                &"alice".into(),
                &"User 5001".into(),
                &"psst\nUser 5002: hi".into()
            )
        );
        say(
            &mut chat,
            1,
            r#"{"type":"msg","to":"ALICE","text":"back"}"#,
            &mut out,
        );
        assert_eq!(out.lines_for(0), ["[private] User 5001: back"]);
        say(&mut chat, 0, "/msg User 5003 x", &mut out);
        assert_eq!(
            out.lines_for(0),
            ["error: nobody called User 5003 is in this room"],
            "other rooms are not reached"
        );
        say(&mut chat, 0, "/msg bob x", &mut out);
        assert_eq!(
            out.lines_for(0),
            ["error: nobody called bob is in this room"]
        );
        say(&mut chat, 0, "/msg alice x", &mut out);
        assert_eq!(out.lines_for(0), ["error: that is you"]);
        assert_eq!(
            chat.rooms
                .get(chat.users.get(0).unwrap().room())
                .unwrap()
                .last_seq,
            1
        );
        say(&mut chat, 0, "/whoami", &mut out);
        let me = out.lines_for(0).remove(0);
        assert!(me.contains("number 1;"), "not numbered, not kept: {me}");
    }

    /// A JSON user of `/r` named `name`; returns its resume token.
    fn json_user(chat: &mut Chat, id: PeerId, name: &str, out: &mut Recorder) -> String {
        join(chat, id, "/r", true, out);
        let welcome = out.json_for(id).remove(0);
        say(
            chat,
            id,
            &format!(r#"{{"type":"nick","name":"{name}"}}"#),
            out,
        );
        out.take();
        welcome["resume"].as_str().expect("a token").to_owned()
    }

    const DROP: Goodbye = Goodbye {
        code: 1006,
        by_peer: false,
    };

    #[test]
    fn a_drop_within_the_grace_is_invisible_and_keeps_the_name() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        let token = json_user(&mut chat, 1, "alice", &mut out);
        assert_eq!(token.len(), 32);
        chat.on_close(1, DROP, &mut out);
        chat.on_tick(&mut out);
        assert!(out.take().is_empty(), "no leave yet");
        // The name is kept for her.
        say(&mut chat, 0, "/nick alice", &mut out);
        assert!(out.lines_for(0)[0].contains("kept for a user who is reconnecting"));
        out.clock.now += Duration::from_secs(59);
        join(
            &mut chat,
            2,
            &format!("/r?resume={token}&since=0"),
            true,
            &mut out,
        );
        let welcome = out.json_for(2).remove(0);
        assert_eq!(welcome["you"], "alice");
        assert_eq!(welcome["text"], "You are alice in r again");
        let new_token = welcome["resume"].as_str().unwrap().to_owned();
        assert_ne!(new_token, token, "single use: a new one");
        assert!(out.take().is_empty(), "no join told");
        say(
            &mut chat,
            2,
            r#"{"type":"message","text":"back"}"#,
            &mut out,
        );
        assert_eq!(out.lines_for(0), ["alice: back"]);
        // The old token is spent: a new user, told so.
        join(&mut chat, 3, &format!("/r?resume={token}"), false, &mut out);
        let lines = out.lines_for(3);
        assert!(
            lines[0].starts_with("wschat: your resume token is not valid here"),
            "{lines:?}"
        );
        // Taking over a connection that has not dropped yet.
        join(
            &mut chat,
            4,
            &format!("/r?resume={new_token}"),
            true,
            &mut out,
        );
        assert_eq!(out.json_for(4)[0]["you"], "alice");
        assert_eq!(
            out.closed,
            [(2, REPLACED_CLOSE_CODE, "resumed on another connection")],
            "the connection taken over is closed"
        );
        say(
            &mut chat,
            2,
            r#"{"type":"message","text":"ghost"}"#,
            &mut out,
        );
        assert!(out.take().is_empty(), "the old connection is heard no more");
        chat.on_close(2, DROP, &mut out);
        assert!(out.take().is_empty());
        say(&mut chat, 0, "/who", &mut out);
        let who = out.lines_for(0).remove(0);
        assert_eq!(who.matches("alice").count(), 1, "{who}");
    }

    #[test]
    fn after_the_grace_the_leave_is_told_and_the_token_refused() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        let token = json_user(&mut chat, 1, "alice", &mut out);
        chat.on_close(1, DROP, &mut out);
        out.clock.now += Duration::from_secs(60);
        chat.on_tick(&mut out);
        assert_eq!(out.lines_for(0), ["alice left"]);
        say(&mut chat, 0, "/nick alice", &mut out);
        assert_eq!(out.lines_for(0), ["User 5000 is now alice"], "freed");
        join(&mut chat, 2, &format!("/r?resume={token}"), true, &mut out);
        let events = out.json_for(2);
        assert_eq!(events[0]["you"], "User 5002");
        assert!(events[1]["text"]
            .as_str()
            .unwrap()
            .starts_with("your resume token is not valid here"));
        assert_eq!(chat.tokens.away(), 0);
    }

    #[test]
    fn a_goodbye_or_a_user_never_told_its_token_leaves_at_once() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        json_user(&mut chat, 1, "alice", &mut out);
        let bye = Goodbye {
            code: 1000,
            by_peer: true,
        };
        chat.on_close(1, bye, &mut out);
        assert_eq!(out.lines_for(0), ["alice left"]);
        join(&mut chat, 2, "/r", false, &mut out);
        out.take();
        chat.on_close(2, DROP, &mut out);
        assert_eq!(out.lines_for(0), ["User 5002 left"], "the seed's behaviour");
        // A plain user told its token by /whoami is kept.
        join(&mut chat, 3, "/r", false, &mut out);
        out.take();
        say(&mut chat, 3, "/whoami", &mut out);
        let me = out.lines_for(3).remove(0);
        let token = me.split("token is ").nth(1).unwrap()[..32].to_owned();
        chat.on_close(3, DROP, &mut out);
        assert!(out.take().is_empty());
        join(&mut chat, 4, &format!("/r?resume={token}"), false, &mut out);
        let lines = out.lines_for(4);
        assert!(
            lines[0].starts_with(
                "wschat: Welcome back: you are User 5003 in r again; your resume token is "
            ),
            "{lines:?}"
        );
        assert!(out.take().is_empty());
        say(&mut chat, 0, "/msg User 5003 still you?", &mut out);
        assert_eq!(
            out.lines_for(4),
            ["[private] User 5000: still you?"],
            "found by the name it kept"
        );
        // With resuming off, no token and no grace.
        let config = ChatConfig {
            resume_grace: Duration::ZERO,
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        join(&mut chat, 1, "/r", true, &mut out);
        assert!(out.json_for(1)[0].get("resume").is_none());
        chat.on_close(1, DROP, &mut out);
        assert_eq!(out.lines_for(0), ["User 5001 left"]);
    }

    #[test]
    fn a_room_with_users_away_is_not_forgotten() {
        let config = ChatConfig {
            history: Bounds {
                max_entries: 0,
                max_bytes: 0,
            },
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        let token = json_user(&mut chat, 0, "alice", &mut out);
        chat.on_close(0, DROP, &mut out);
        assert!(chat.rooms.contains_name("r"), "kept for her");
        join(&mut chat, 1, &format!("/r?resume={token}"), true, &mut out);
        assert_eq!(out.json_for(1)[0]["you"], "alice");
        chat.on_close(1, DROP, &mut out);
        out.clock.now += Duration::from_secs(61);
        chat.on_tick(&mut out);
        assert!(!chat.rooms.contains_name("r"), "forgotten after the grace");
    }

    #[test]
    fn commands_and_escapes() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        join(&mut chat, 1, "/", false, &mut out);
        out.take();
        say(&mut chat, 0, "/me waves", &mut out);
        assert_eq!(out.take(), [(1, "* User 5000 waves".into())]);
        say(&mut chat, 0, "//etc/passwd is a path", &mut out);
        assert_eq!(out.take(), [(1, "User 5000: /etc/passwd is a path".into())]);
        say(&mut chat, 0, "/frobnicate", &mut out);
        assert_eq!(
            out.take(),
            [(0, "error: unknown command /frobnicate (try /help)".into())]
        );
        say(&mut chat, 0, "/help", &mut out);
        let help = out.take();
        assert_eq!(help.len(), 1);
        assert!(help[0].1.starts_with("wschat: commands: /nick NAME"));
    }

    #[test]
    fn history_is_replayed_to_newcomers_alone_before_live_traffic() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        say(&mut chat, 0, "one", &mut out);
        say(&mut chat, 0, "/me two", &mut out);
        say(&mut chat, 0, "/who", &mut out);
        out.take();
        join(&mut chat, 1, "/r", false, &mut out);
        assert_eq!(
            out.take(),
            [
                (1, "User 5000: one".into()),
                (1, "* User 5000 two".into()),
                (0, "User 5001 joined".into()),
            ]
        );
    }

    #[test]
    fn since_resumes_exactly_and_says_what_is_gone() {
        let mut config = ChatConfig::default();
        config.history.max_entries = 3;
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        for i in 1..=5 {
            say(&mut chat, 0, &format!("m{i}"), &mut out);
        }
        join(&mut chat, 1, "/r?since=3", false, &mut out);
        assert_eq!(out.lines_for(1), ["User 5000: m4", "User 5000: m5"]);
        join(&mut chat, 2, "/r?since=1", false, &mut out);
        assert_eq!(
            out.lines_for(2),
            [
                "wschat: history no longer holds messages 2 to 2; replaying from 3",
                "User 5000: m3",
                "User 5000: m4",
                "User 5000: m5"
            ]
        );
        join(&mut chat, 3, "/r?since=5", false, &mut out);
        assert!(out.lines_for(3).is_empty(), "nothing missed");
        join(&mut chat, 4, "/r?since=99", false, &mut out);
        let lines = out.lines_for(4);
        assert!(
            lines[0].starts_with("wschat: seq 99 is ahead of this room"),
            "{lines:?}"
        );
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn json_clients_get_objects_and_their_own_messages() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/r", false, &mut out);
        say(&mut chat, 0, "before", &mut out);
        out.take();
        join(&mut chat, 1, "/r", true, &mut out);
        let events = out.json_for(1);
        assert_eq!(events[0]["type"], "system");
        assert_eq!(events[0]["you"], "User 5001");
        assert_eq!(
            events[0]["users"],
            serde_json::json!(["User 5000", "User 5001"])
        );
        assert_eq!(events[1]["type"], "history");
        assert_eq!(events[1]["text"], "before");
        assert_eq!(events[1]["seq"], 1);
        join(&mut chat, 2, "/r", true, &mut out);
        out.take();
        out.encoded = 0;
        say(
            &mut chat,
            1,
            r#"{"type":"message","text":"<b>hi</b>"}"#,
            &mut out,
        );
        let sent = sorted(out.take());
        assert_eq!(out.encoded, 2, "once per format, not per recipient");
        assert_eq!(sent[0], (0, "User 5001: <b>hi</b>".into()));
        let own: Value = serde_json::from_str(&sent[1].1).unwrap();
        assert_eq!(
            (sent[1].0, sent[2].0),
            (1, 2),
            "the JSON sender gets its own message"
        );
        assert_eq!(sent[1].1, sent[2].1, "the same bytes");
        assert_eq!(own["type"], "message");
        assert_eq!(own["from"], "User 5001");
        assert_eq!(own["seq"], 2);
        assert_eq!(own["room"], "r");
        say(&mut chat, 1, "not json", &mut out);
        let error = out.json_for(1);
        assert_eq!(error[0]["type"], "error");
        say(&mut chat, 1, r#"{"type":"who"}"#, &mut out);
        assert_eq!(
            out.json_for(1)[0]["users"].as_array().map(Vec::len),
            Some(3)
        );
        say(&mut chat, 1, r#"{"type":"nick","name":"bob"}"#, &mut out);
        let to_plain = out.take();
        assert!(to_plain.contains(&(0, "User 5001 is now bob".into())));
    }

    #[test]
    fn empty_rooms_are_forgotten_after_their_ttl_or_at_once_without_history() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/quiet", false, &mut out);
        chat.on_close(0, BYE, &mut out);
        assert!(
            !chat.rooms.contains_name("quiet"),
            "no history: forgotten at once"
        );
        join(&mut chat, 0, "/talky", false, &mut out);
        say(&mut chat, 0, "x", &mut out);
        chat.on_close(0, BYE, &mut out);
        chat.on_tick(&mut out);
        assert!(chat.rooms.contains_name("talky"), "kept for resuming");
        out.clock.now += Duration::from_secs(601);
        chat.on_tick(&mut out);
        assert!(!chat.rooms.contains_name("talky"));
        assert!(chat.rooms.is_empty());
    }

    #[test]
    fn room_limit() {
        let config = ChatConfig {
            max_rooms: 2,
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        join(&mut chat, 0, "/a", false, &mut out);
        join(&mut chat, 1, "/b", false, &mut out);
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let c = Upgrade {
            remote,
            target: "/c",
            protocol: None,
            cookie: None,
        };
        assert_eq!(chat.admit(&c).map_err(|r| r.status), Err(503));
        say(&mut chat, 1, "kept", &mut out);
        chat.on_close(1, BYE, &mut out);
        join(&mut chat, 2, "/c", false, &mut out);
        assert!(!chat.rooms.contains_name("b"), "the empty room made way");
    }

    fn upgrade_from<'a>(ip: [u8; 4], target: &'a str) -> Upgrade<'a> {
        Upgrade {
            remote: SocketAddr::from((ip, 40000)),
            target,
            protocol: None,
            cookie: None,
        }
    }

    #[test]
    fn making_rooms_is_limited_per_address_joining_never() {
        let config = ChatConfig {
            max_rooms: 3,
            max_rooms_per_client: 2,
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        let status = |chat: &mut Chat, ip, target| {
            chat.admit(&upgrade_from(ip, target))
                .map(|_| ())
                .map_err(|r| r.status)
        };
        join(&mut chat, 0, "/a", false, &mut out); // 127.0.0.1
        join(&mut chat, 1, "/b", false, &mut out);
        assert_eq!(status(&mut chat, [127, 0, 0, 1], "/c"), Err(429));
        assert_eq!(status(&mut chat, [127, 0, 0, 1], "/a"), Ok(()), "joining");
        assert_eq!(
            status(&mut chat, [10, 0, 0, 2], "/c"),
            Ok(()),
            "another address"
        );
        let c = upgrade_from([10, 0, 0, 2], "/c");
        let admitted = chat.admit(&c).unwrap();
        chat.on_open(2, &c, admitted, &mut out);
        // Full: no new room for anyone, but every room that exists, and
        // the lobby (not there yet, not counted), stay open to all.
        assert_eq!(status(&mut chat, [10, 0, 0, 3], "/d"), Err(503));
        for target in ["/", "/lobby", "/a", "/b", "/c"] {
            assert_eq!(status(&mut chat, [10, 0, 0, 3], target), Ok(()), "{target}");
        }
        join(&mut chat, 3, "/", false, &mut out);
        assert_eq!(chat.rooms.len(), 4, "three rooms and the lobby");
        // Rooms without history go when their last user does, and so does
        // the charge to whoever made them.
        chat.on_close(0, BYE, &mut out);
        assert_eq!(status(&mut chat, [127, 0, 0, 1], "/d"), Ok(()));
    }

    /// A chat whose rooms summarise presence above 3 members.
    fn small_announce_limit() -> (Chat, Recorder) {
        let config = ChatConfig {
            announce_limit: 3,
            ..ChatConfig::default()
        };
        (Chat::new(config), Recorder::default())
    }

    #[test]
    fn large_rooms_get_one_summary_a_second_instead_of_a_line_per_join() {
        let (mut chat, mut out) = small_announce_limit();
        for id in 0..3 {
            join(&mut chat, id, "/", false, &mut out);
        }
        assert_eq!(
            sorted(out.take()),
            [
                (0, "User 5001 joined".into()),
                (0, "User 5002 joined".into()),
                (1, "User 5002 joined".into())
            ],
            "the seed's lines up to the limit"
        );
        // Past the limit: the first change after a quiet second is told at
        // once, to everyone (the newcomer too, who sees the count).
        join(&mut chat, 3, "/", false, &mut out);
        let sent = sorted(out.take());
        assert_eq!(sent.len(), 4);
        assert!(
            sent.iter().all(|(_, l)| l == "1 user joined (4 here)"),
            "{sent:?}"
        );
        // A second later, the next one goes out at once too, encoded once
        // per format.
        out.clock.now += presence::PERIOD;
        join(&mut chat, 9, "/", true, &mut out);
        out.json_for(9);
        out.encoded = 0;
        out.clock.now += presence::PERIOD;
        join(&mut chat, 4, "/", false, &mut out);
        let sent = sorted(out.take());
        assert_eq!(out.encoded, 2, "once per format");
        let plain: Vec<_> = sent.iter().filter(|(to, _)| *to != 9).collect();
        assert_eq!(plain.len(), 5);
        assert!(
            plain.iter().all(|(_, l)| l == "1 user joined (6 here)"),
            "{sent:?}"
        );
        let json: Value = serde_json::from_str(&sent[5].1).unwrap();
        assert_eq!(
            (
                &json["type"],
                &json["joined"],
                &json["left"],
                &json["count"]
            ),
            (&"presence".into(), &1.into(), &0.into(), &6.into())
        );
        // Within the second, changes are only counted...
        join(&mut chat, 5, "/", false, &mut out);
        join(&mut chat, 6, "/", false, &mut out);
        chat.on_close(1, BYE, &mut out);
        assert!(out.take().is_empty());
        out.clock.now += Duration::from_millis(500);
        say(&mut chat, 0, "too soon", &mut out);
        assert!(out.take().iter().all(|(_, l)| !l.contains("joined")));
        // ...and go out with the first event once it has passed, before it.
        out.clock.now += presence::PERIOD;
        say(&mut chat, 0, "hi", &mut out);
        assert_eq!(
            out.lines_for(2),
            ["2 users joined, 1 left (7 here)", "User 5000: hi"]
        );
    }

    #[test]
    fn below_the_limit_again_single_lines_resume_after_what_was_counted() {
        let (mut chat, mut out) = small_announce_limit();
        for id in 0..5 {
            join(&mut chat, id, "/", false, &mut out);
        }
        out.take();
        chat.on_close(4, BYE, &mut out); // 5 with the leaver: counted
        chat.on_close(3, BYE, &mut out); // 4: counted
        chat.on_close(2, BYE, &mut out); // 3: a line, after the count
        assert_eq!(
            out.lines_for(0),
            ["1 user joined, 2 left (3 here)", "User 5002 left"],
            "nothing lost, in order"
        );
    }

    #[test]
    fn filling_a_room_costs_linear_deliveries() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        let n = 3000;
        for id in 0..n {
            join(&mut chat, id, "/", false, &mut out);
            // Joins arriving over three seconds.
            out.clock.now += Duration::from_millis(1);
        }
        let limit = ChatConfig::default().announce_limit;
        let lines = limit * (limit - 1) / 2;
        // Up to the limit the seed's lines, then a summary a second, to
        // at most n each: four seconds begun.
        assert!(out.sent.len() <= lines + 4 * n, "{}", out.sent.len());
        // Nothing is lost: every join is in a line or a summary.
        out.clock.now += presence::PERIOD;
        say(&mut chat, 0, "/help", &mut out);
        let seen = out.lines_for(0);
        let told: usize = seen
            .iter()
            .map(|l| match l.split_once(" user") {
                _ if l.starts_with("User ") && l.ends_with(" joined") => 1,
                Some((n, _)) => n.parse().unwrap_or(0),
                None => 0,
            })
            .sum();
        assert_eq!(told, n - 1, "{seen:?}");
        assert_eq!(
            seen.iter()
                .rev()
                .nth(1)
                .map(|l| l.ends_with(&format!("({n} here)"))),
            Some(true),
            "{seen:?}"
        );
    }

    #[test]
    fn who_lists_a_bounded_number_of_names() {
        let config = ChatConfig {
            list_limit: 3,
            announce_limit: 2,
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        for id in 0..10 {
            join(&mut chat, id, "/", false, &mut out);
        }
        out.take();
        say(&mut chat, 9, "/who", &mut out);
        assert_eq!(
            out.lines_for(9),
            ["wschat: Users in lobby (10): User 5000, User 5001, User 5002, and 7 more"]
        );
        join(&mut chat, 10, "/", true, &mut out);
        let welcome = &out.json_for(10)[0];
        assert_eq!(welcome["users"].as_array().map(Vec::len), Some(3));
        assert_eq!(welcome["count"], 11);
        say(&mut chat, 10, r#"{"type":"who"}"#, &mut out);
        let who = &out.json_for(10)[0];
        assert_eq!(
            (who["users"].as_array().map(Vec::len), &who["count"]),
            (Some(3), &11.into())
        );
    }

    #[test]
    fn rooms_lists_the_busiest_within_the_limit() {
        let config = ChatConfig {
            list_limit: 2,
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        let rooms = ["/a", "/b", "/b", "/b", "/c", "/c"];
        for (id, room) in rooms.into_iter().enumerate() {
            join(&mut chat, id, room, false, &mut out);
        }
        out.take();
        say(&mut chat, 0, "/rooms", &mut out);
        assert_eq!(
            out.lines_for(0),
            ["wschat: Rooms: b (3), c (2), and 1 more"]
        );
    }

    #[test]
    fn an_unconfirmed_message_is_quoted_short_to_its_sender() {
        assert_eq!(
            not_confirmed("hi"),
            "your message \"hi\" was shown on this node only: Redis did not confirm it, so other nodes may not have it"
        );
        let long = "é".repeat(50);
        let told = not_confirmed(&long);
        assert!(told.starts_with(&format!("your message \"{}…\" was", "é".repeat(40))));
    }

    #[test]
    fn listing_replies_are_charged_to_the_asker() {
        let help = "wschat: ".len() + command::HELP.len();
        let config = ChatConfig {
            reply_rate: help * 3 / 2,
            ..ChatConfig::default()
        };
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        join(&mut chat, 1, "/", false, &mut out);
        out.take();
        // The bucket holds one and a half /help replies: two go out (the
        // second on credit), then nothing until it has refilled.
        say(&mut chat, 0, "/help", &mut out);
        say(&mut chat, 0, "/help", &mut out);
        say(&mut chat, 0, "/who", &mut out);
        let lines = out.lines_for(0);
        assert!(lines[0].starts_with("wschat: commands:"));
        assert!(lines[1].starts_with("wschat: commands:"));
        assert_eq!(
            lines[2],
            format!(
                "error: replies to /who, /rooms and /help are limited to {} bytes a second; try again shortly",
                help * 3 / 2
            )
        );
        say(&mut chat, 1, "/who", &mut out);
        assert!(
            out.lines_for(1)[0].starts_with("wschat: Users"),
            "each user has its own"
        );
        out.clock.now += Duration::from_secs(2);
        say(&mut chat, 0, "/who", &mut out);
        assert!(out.lines_for(0)[0].starts_with("wschat: Users"), "refilled");
    }

    #[test]
    fn replayed_history_carries_the_time_it_was_said() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        say(&mut chat, 0, "earlier", &mut out);
        let said_at = out.clock.unix_ms;
        out.clock.unix_ms += 3_000;
        out.clock.now += Duration::from_secs(3);
        join(&mut chat, 1, "/", true, &mut out);
        let events = out.json_for(1);
        let history = events
            .iter()
            .find(|e| e["type"] == "history")
            .expect("a history event");
        assert_eq!(history["ts"], said_at, "the time it was said");
        let welcome = events
            .iter()
            .find(|e| e["type"] == "system")
            .expect("welcome");
        assert_eq!(welcome["ts"], said_at + 3_000, "live events carry now");
    }

    #[test]
    fn plain_http_gets_the_page_on_room_paths() {
        let mut chat = chat();
        let mut out = Recorder::default();
        let page = chat.on_http(&HttpGet::get("/rust"), &mut out);
        assert_eq!(page.status, 200);
        assert!(page.content_type.starts_with("text/html"));
        let missing = chat.on_http(&HttpGet::get("/a/b"), &mut out);
        assert_eq!(missing.status, 404);
        let bad_since = chat.on_http(&HttpGet::get("/rust?since=x"), &mut out);
        assert_eq!(bad_since.status, 400, "the same status as on an upgrade");
    }

    #[test]
    fn metrics_count_rooms_and_history() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/a", false, &mut out);
        say(&mut chat, 0, "abc", &mut out);
        let gauges = chat.gauges();
        let value = |name: &str| gauges.iter().find(|g| g.name == name).map(|g| g.value);
        assert_eq!(value("wschat_rooms"), Some(1));
        assert_eq!(value("wschat_history_messages"), Some(1));
        assert_eq!(value("wschat_chat_users"), Some(1));
    }
}
