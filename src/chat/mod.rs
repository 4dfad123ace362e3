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
//! same frame goes to every recipient of that format. In echo mode (for
//! conformance suites) every message goes back to its sender alone,
//! unchanged, and nothing else happens. Nothing here knows about sockets
//! or frame bytes.

pub mod command;
pub mod history;
pub mod render;
pub mod target;

use std::borrow::Cow;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use slab::Slab;

use crate::net::metrics;
use crate::protocol::connection::Message;
use crate::protocol::frame::CloseCode;
use crate::protocol::handshake::{HttpRequest, HttpResponse, Refusal};
use crate::protocol::outbox::SharedFrame;
use crate::service::{Kind, Opened, Outbound, PeerId, Service};
use command::Request;
use history::{Bounds, Entry, History};
use render::{Context, Extra, Line, JSON_PROTOCOL};

/// The chat page served for a room path without an upgrade.
const PAGE: &str = include_str!("page.html");

/// How messages are routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The chat: rooms, names, history.
    Broadcast,
    /// Each message back to its sender, unchanged.
    Echo,
}

/// The chat's limits.
#[derive(Clone, Copy, Debug)]
pub struct ChatConfig {
    pub mode: Mode,
    /// Per-room history bounds (0 entries: no history).
    pub history: Bounds,
    /// How long an empty room's history is kept for clients to resume.
    pub room_ttl: Duration,
    /// Most rooms at once.
    pub max_rooms: usize,
}

impl ChatConfig {
    /// The defaults documented in the README.
    pub fn new(mode: Mode) -> ChatConfig {
        ChatConfig {
            mode,
            history: Bounds {
                max_entries: 100,
                max_bytes: 256 * 1024,
            },
            room_ttl: Duration::from_secs(600),
            max_rooms: 1000,
        }
    }
}

#[derive(Debug)]
struct User {
    /// The remote port: the default name is `User <port>`.
    port: u16,
    /// The nickname, or the default name once it was needed as a shared
    /// string (history entries hold it). Most idle users never need one,
    /// and holding no small allocation per user keeps their memory in a
    /// few dense vectors.
    name: Option<Rc<str>>,
    room: usize,
    /// Where this user sits in its room's member list for its format.
    slot: usize,
    /// Speaks the JSON subprotocol.
    json: bool,
}

impl User {
    fn name(&self) -> Cow<'_, str> {
        match &self.name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("User {}", self.port)),
        }
    }

    /// The name as a shared string, made once.
    fn shared_name(&mut self) -> Rc<str> {
        let port = self.port;
        Rc::clone(
            self.name
                .get_or_insert_with(|| Rc::from(format!("User {port}"))),
        )
    }
}

#[derive(Debug)]
struct Room {
    name: String,
    /// Everyone present who reads plain text, densely packed for fan-out.
    plain: Vec<PeerId>,
    /// Everyone present who reads JSON. Two lists, so that a broadcast is
    /// a tight loop per format with no per-recipient lookup.
    json: Vec<PeerId>,
    history: History,
    /// The last sequence number given out (0: none yet).
    last_seq: u64,
    /// When the last member left.
    empty_since: Option<Instant>,
}

impl Room {
    fn members(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.plain.iter().chain(&self.json).copied()
    }

    fn len(&self) -> usize {
        self.plain.len() + self.json.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn list_mut(&mut self, json: bool) -> &mut Vec<PeerId> {
        if json {
            &mut self.json
        } else {
            &mut self.plain
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
    /// Indexed by peer id.
    users: Vec<Option<User>>,
    rooms: Slab<Room>,
    by_name: HashMap<String, usize>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Encodes `line` for one format.
fn encode(line: &Line<'_>, room: &str, json: bool, out: &mut impl Outbound) -> SharedFrame {
    if json {
        let mut bytes = Vec::with_capacity(128);
        render::json(line, Context { room, ts: now_ms() }, &mut bytes);
        return out.encode(Kind::Text, &[&bytes]);
    }
    match *line {
        // The hot path: straight into the frame, no intermediate buffer.
        Line::Message {
            from,
            text,
            me: false,
            ..
        } => out.encode(Kind::Text, &[from.as_bytes(), b": ", text.as_bytes()]),
        _ => {
            let mut bytes = Vec::with_capacity(64);
            render::plain(line, &mut bytes);
            out.encode(Kind::Text, &[&bytes])
        }
    }
}

impl Chat {
    pub fn new(config: ChatConfig) -> Chat {
        Chat {
            config,
            users: Vec::new(),
            rooms: Slab::new(),
            by_name: HashMap::new(),
        }
    }

    /// How many users are present, in all rooms.
    pub fn len(&self) -> usize {
        self.users.iter().flatten().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn user(&self, id: PeerId) -> Option<&User> {
        self.users.get(id).and_then(Option::as_ref)
    }

    /// Sends `line` to the chosen members of `room`, encoding it once per
    /// format actually needed.
    fn to_room(&self, room: usize, line: &Line<'_>, audience: Audience, out: &mut impl Outbound) {
        self.to_room_with(room, line, audience, None, out);
    }

    /// [`Chat::to_room`], with the plain-text frame already made.
    fn to_room_with(
        &self,
        room: usize,
        line: &Line<'_>,
        audience: Audience,
        plain: Option<&SharedFrame>,
        out: &mut impl Outbound,
    ) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        for (json, list) in [(false, &r.plain), (true, &r.json)] {
            let skip = match audience {
                Audience::All => None,
                Audience::Others(id) => Some(id),
                Audience::OthersUnlessJson(id) => (!json).then_some(id),
            };
            // Encode nothing when nobody would receive it.
            if list.is_empty() || (list.len() == 1 && Some(list[0]) == skip) {
                continue;
            }
            let frame = match plain {
                Some(frame) if !json => frame.clone(),
                _ => encode(line, &r.name, json, out),
            };
            for &member in list {
                if Some(member) != skip {
                    out.deliver(member, &frame);
                }
            }
        }
    }

    /// Sends `line` to one user, in its format.
    fn to_user(&self, id: PeerId, line: &Line<'_>, out: &mut impl Outbound) {
        if let Some(user) = self.user(id) {
            let room = self.rooms.get(user.room).map_or("", |r| r.name.as_str());
            let frame = encode(line, room, user.json, out);
            out.deliver(id, &frame);
        }
    }

    fn system(&self, id: PeerId, text: &str, extra: Extra<'_>, out: &mut impl Outbound) {
        self.to_user(id, &Line::System { text, extra }, out);
    }

    fn error(&self, id: PeerId, text: &str, out: &mut impl Outbound) {
        self.to_user(id, &Line::Error { text }, out);
    }

    /// The room called `name`, made if needed (forgetting the longest-empty
    /// room when at the limit; `admit` made sure there is one).
    fn room_named(&mut self, name: &str) -> usize {
        if let Some(&room) = self.by_name.get(name) {
            return room;
        }
        if self.rooms.len() >= self.config.max_rooms {
            let oldest_empty = self
                .rooms
                .iter()
                .filter_map(|(i, r)| r.empty_since.map(|t| (t, i)))
                .min()
                .map(|(_, i)| i);
            if let Some(room) = oldest_empty {
                self.forget_room(room);
            }
        }
        let room = self.rooms.insert(Room {
            name: name.to_owned(),
            plain: Vec::new(),
            json: Vec::new(),
            history: History::default(),
            last_seq: 0,
            empty_since: None,
        });
        self.by_name.insert(name.to_owned(), room);
        room
    }

    fn forget_room(&mut self, room: usize) {
        if self.rooms.contains(room) {
            let r = self.rooms.remove(room);
            self.by_name.remove(&r.name);
        }
    }

    /// Replays history to a newcomer: everything held, or what came after
    /// `since`, saying plainly when some of it is gone.
    fn replay(&self, id: PeerId, room: usize, since: Option<u64>, out: &mut impl Outbound) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let entries: Vec<&Entry> = match since {
            Some(since) if since > r.last_seq => {
                let note = format!(
                    "seq {since} is ahead of this room (its last is {}): the server may have restarted; replaying all it holds",
                    r.last_seq
                );
                self.system(id, &note, Extra::None, out);
                r.history.all().collect()
            }
            Some(since) => {
                let replay = r.history.since(since, r.last_seq);
                if let Some((first_missed, first_held)) = replay.gap {
                    let note = format!(
                        "history no longer holds messages {first_missed} to {}; replaying from {first_held}",
                        first_held - 1
                    );
                    self.system(id, &note, Extra::None, out);
                }
                replay.entries
            }
            None => r.history.all().collect(),
        };
        let json = self.user(id).is_some_and(|u| u.json);
        for e in entries {
            if !json {
                // Plain clients get the very frame sent live.
                out.deliver(id, &e.plain);
                continue;
            }
            let line = Line::Message {
                from: &e.from,
                text: e.text(),
                seq: e.seq,
                me: e.me,
                history: true,
            };
            self.to_user(id, &line, out);
        }
    }

    /// A message or `/me` action: numbered, remembered, delivered.
    fn say(&mut self, id: PeerId, text: &str, me: bool, out: &mut impl Outbound) {
        let Some(user) = self.users.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let (room, from) = (user.room, user.shared_name());
        let bounds = self.config.history;
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.last_seq += 1;
        let seq = r.last_seq;
        let line = Line::Message {
            from: &from,
            text,
            seq,
            me,
            history: false,
        };
        // The plain-text frame is made once, for its recipients and for
        // history alike: remembering a message copies nothing.
        let plain = encode(&line, &r.name, false, out);
        if bounds.max_entries > 0 {
            let entry = Entry {
                seq,
                ts: now_ms(),
                from: Rc::clone(&from),
                plain: plain.clone(),
                text_len: text.len(),
                me,
            };
            r.history.push(entry, bounds);
        }
        self.to_room_with(
            room,
            &line,
            Audience::OthersUnlessJson(id),
            Some(&plain),
            out,
        );
    }

    fn nick(&mut self, id: PeerId, wanted: &str, out: &mut impl Outbound) {
        if let Err(why) = command::check_nick(wanted) {
            return self.error(id, &why, out);
        }
        let Some(user) = self.user(id) else {
            return;
        };
        let room = user.room;
        if user.name() == wanted {
            return self.error(id, &format!("you are already {wanted}"), out);
        }
        let taken = self.rooms.get(room).is_some_and(|r| {
            r.members().any(|m| {
                m != id
                    && self
                        .user(m)
                        .is_some_and(|u| u.name().to_lowercase() == wanted.to_lowercase())
            })
        });
        if taken {
            return self.error(id, &format!("the name {wanted} is taken in this room"), out);
        }
        let new: Rc<str> = Rc::from(wanted);
        let Some(user) = self.users.get_mut(id).and_then(Option::as_mut) else {
            return;
        };
        let old = user.name().into_owned();
        user.name = Some(Rc::clone(&new));
        let line = Line::Nick {
            from: &old,
            to: &new,
        };
        self.to_room(room, &line, Audience::All, out);
    }

    fn who(&self, id: PeerId, out: &mut impl Outbound) {
        let Some(r) = self.user(id).and_then(|u| self.rooms.get(u.room)) else {
            return;
        };
        let names: Vec<Cow<'_, str>> = r
            .members()
            .filter_map(|m| self.user(m))
            .map(User::name)
            .collect();
        let names: Vec<&str> = names.iter().map(|n| n.as_ref()).collect();
        let text = format!(
            "Users in {} ({}): {}",
            r.name,
            names.len(),
            names.join(", ")
        );
        self.system(id, &text, Extra::Users(&names), out);
    }

    fn list_rooms(&self, id: PeerId, out: &mut impl Outbound) {
        let mut rooms: Vec<(&str, usize)> = self
            .rooms
            .iter()
            .map(|(_, r)| (r.name.as_str(), r.len()))
            .collect();
        rooms.sort_unstable();
        let listed: Vec<String> = rooms
            .iter()
            .map(|(name, n)| format!("{name} ({n})"))
            .collect();
        let text = format!("Rooms: {}", listed.join(", "));
        self.system(id, &text, Extra::Rooms(&rooms), out);
    }

    fn handle(&mut self, id: PeerId, request: Request<'_>, out: &mut impl Outbound) {
        match request {
            Request::Say(text) => self.say(id, text, false, out),
            Request::Me(text) => self.say(id, text, true, out),
            Request::Nick(name) => self.nick(id, name, out),
            Request::Who => self.who(id, out),
            Request::Rooms => self.list_rooms(id, out),
            Request::Help => self.system(id, command::HELP, Extra::None, out),
            Request::Invalid(why) => self.error(id, &why, out),
        }
    }
}

impl Service for Chat {
    fn admit(&mut self, opened: &Opened<'_>) -> Result<(), Refusal> {
        let target = match target::parse(opened.target) {
            Ok(target) => target,
            Err(e @ target::TargetError::BadRoomName) => return Err(Refusal::new(404, e.reason())),
            Err(e) => return Err(Refusal::new(400, e.reason())),
        };
        let known = self.by_name.contains_key(&target.room);
        let room_to_spare = self.rooms.iter().any(|(_, r)| r.is_empty());
        if !known && self.rooms.len() >= self.config.max_rooms && !room_to_spare {
            return Err(Refusal::new(503, "too many rooms"));
        }
        Ok(())
    }

    fn on_open(&mut self, id: PeerId, opened: Opened<'_>, out: &mut impl Outbound) {
        let Ok(target) = target::parse(opened.target) else {
            return;
        };
        let room = self.room_named(&target.room);
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let json = opened.protocol == Some(JSON_PROTOCOL);
        let list = r.list_mut(json);
        let user = User {
            port: opened.remote.port(),
            name: None,
            room,
            slot: list.len(),
            json,
        };
        list.push(id);
        r.empty_since = None;
        if self.users.len() <= id {
            self.users.resize_with(id + 1, || None);
        }
        let (name, json) = (user.name().into_owned(), user.json);
        self.users[id] = Some(user);
        if self.config.mode == Mode::Echo {
            return;
        }
        if json {
            let r = &self.rooms[room];
            let users: Vec<Cow<'_, str>> = r
                .members()
                .filter_map(|m| self.user(m))
                .map(User::name)
                .collect();
            let users: Vec<&str> = users.iter().map(|n| n.as_ref()).collect();
            let text = format!("You are {name} in {}", r.name);
            let extra = Extra::Welcome {
                you: &name,
                users: &users,
            };
            self.system(id, &text, extra, out);
        }
        self.replay(id, room, target.since, out);
        self.to_room(room, &Line::Join { from: &name }, Audience::Others(id), out);
    }

    fn on_message(&mut self, id: PeerId, message: Message<'_>, out: &mut impl Outbound) {
        let Some(user) = self.user(id) else {
            return;
        };
        let (room, json) = (user.room, user.json);
        match (self.config.mode, message) {
            (Mode::Echo, Message::Text(text)) => {
                let frame = out.encode(Kind::Text, &[text.as_bytes()]);
                out.deliver(id, &frame);
            }
            (Mode::Echo, Message::Binary(bytes)) => {
                let frame = out.encode(Kind::Binary, &[&bytes]);
                out.deliver(id, &frame);
            }
            (Mode::Broadcast, Message::Binary(bytes)) => {
                let Some(r) = self.rooms.get(room) else {
                    return;
                };
                if r.members().any(|m| m != id) {
                    let frame = out.encode(Kind::Binary, &[&bytes]);
                    r.members()
                        .filter(|&m| m != id)
                        .for_each(|m| out.deliver(m, &frame));
                }
            }
            (Mode::Broadcast, Message::Text(text)) if json => {
                let request = command::parse_json(&text);
                self.handle(id, request.as_request(), out);
            }
            (Mode::Broadcast, Message::Text(text)) => {
                self.handle(id, command::parse_typed(&text), out)
            }
        }
    }

    fn on_close(&mut self, id: PeerId, _code: CloseCode, out: &mut impl Outbound) {
        let Some(user) = self.users.get_mut(id).and_then(Option::take) else {
            return;
        };
        let Some(r) = self.rooms.get_mut(user.room) else {
            return;
        };
        let list = r.list_mut(user.json);
        list.swap_remove(user.slot);
        if let Some(&moved) = list.get(user.slot) {
            if let Some(Some(other)) = self.users.get_mut(moved) {
                other.slot = user.slot;
            }
        }
        if r.is_empty() {
            if r.history.is_empty() {
                self.forget_room(user.room);
                return;
            }
            r.empty_since = Some(Instant::now());
        }
        if self.config.mode == Mode::Broadcast {
            self.to_room(
                user.room,
                &Line::Leave { from: &user.name() },
                Audience::Others(id),
                out,
            );
        }
    }

    fn on_throttled(&mut self, id: PeerId, out: &mut impl Outbound) {
        self.system(
            id,
            "you are sending too fast; messages are being dropped",
            Extra::None,
            out,
        );
    }

    fn on_tick(&mut self, now: Instant) {
        let ttl = self.config.room_ttl;
        let expired: Vec<usize> = self
            .rooms
            .iter()
            .filter(|(_, r)| {
                r.empty_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= ttl)
            })
            .map(|(i, _)| i)
            .collect();
        for room in expired {
            self.forget_room(room);
        }
    }

    fn on_http(&mut self, request: &HttpRequest) -> HttpResponse {
        match target::parse(&request.target) {
            Ok(_) => HttpResponse {
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
            Err(e) => HttpResponse::text(404, e.reason()),
        }
    }

    fn render_metrics(&self, out: &mut String) {
        metrics::gauge(
            out,
            "wschat_chat_users",
            "Users in the chat, all rooms.",
            self.len(),
        );
        metrics::gauge(
            out,
            "wschat_rooms",
            "Rooms, including empty ones kept for their history.",
            self.rooms.len(),
        );
        let (entries, bytes) = self.rooms.iter().fold((0, 0), |(n, b), (_, r)| {
            (n + r.history.len(), b + r.history.bytes())
        });
        metrics::gauge(
            out,
            "wschat_history_messages",
            "Messages held in room histories.",
            entries,
        );
        metrics::gauge(
            out,
            "wschat_history_bytes",
            "Bytes of text held in room histories.",
            bytes,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::borrow::Cow;

    /// Records deliveries as (recipient, payload) without framing, and
    /// counts encodings.
    #[derive(Default)]
    struct Recorder {
        encoded: usize,
        sent: Vec<(PeerId, Vec<u8>)>,
    }

    impl Outbound for Recorder {
        fn encode(&mut self, _kind: Kind, parts: &[&[u8]]) -> SharedFrame {
            self.encoded += 1;
            SharedFrame::concat(&[], parts)
        }

        fn deliver(&mut self, to: PeerId, frame: &SharedFrame) {
            self.sent.push((to, frame.as_bytes().to_vec()));
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
        Chat::new(ChatConfig::new(Mode::Broadcast))
    }

    fn join(chat: &mut Chat, id: PeerId, target: &str, json: bool, out: &mut Recorder) {
        let remote = SocketAddr::from(([127, 0, 0, 1], 5000 + id as u16));
        let opened = Opened {
            remote,
            target,
            protocol: json.then_some(JSON_PROTOCOL),
        };
        chat.admit(&opened).expect("admitted");
        chat.on_open(id, opened, out);
    }

    fn say(chat: &mut Chat, id: PeerId, text: &str, out: &mut Recorder) {
        chat.on_message(id, Message::Text(Cow::Borrowed(text)), out);
    }

    use std::net::SocketAddr;

    fn sorted(mut v: Vec<(PeerId, String)>) -> Vec<(PeerId, String)> {
        v.sort();
        v
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
        chat.on_message(2, Message::Binary(Cow::Borrowed(&[0, 159])), &mut out);
        assert_eq!(
            {
                let mut bin: Vec<(PeerId, Vec<u8>)> = out.sent.drain(..).collect();
                bin.sort();
                bin
            },
            [(0, vec![0, 159]), (1, vec![0, 159])]
        );
        chat.on_close(0, CloseCode::NORMAL, &mut out);
        assert_eq!(
            sorted(out.take()),
            [(1, "User 5000 left".into()), (2, "User 5000 left".into())]
        );
        chat.on_close(2, CloseCode::NORMAL, &mut out);
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
            chat.admit(&Opened {
                remote,
                target,
                protocol: None,
            })
            .map_err(|r| r.response.status)
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
            [(1, "error: the name ALICE is taken in this room".into())]
        );
        say(&mut chat, 1, "/nick bad name", &mut out);
        assert_eq!(
            out.take(),
            [(
                1,
                "error: a nickname has no spaces or control characters".into()
            )]
        );
        say(&mut chat, 0, "/nick alice", &mut out);
        assert_eq!(out.take(), [(0, "error: you are already alice".into())]);
        chat.on_close(0, CloseCode::NORMAL, &mut out);
        assert_eq!(out.take(), [(1, "alice left".into())]);
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
        let mut config = ChatConfig::new(Mode::Broadcast);
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
        chat.on_close(0, CloseCode::NORMAL, &mut out);
        assert!(
            !chat.by_name.contains_key("quiet"),
            "no history: forgotten at once"
        );
        join(&mut chat, 0, "/talky", false, &mut out);
        say(&mut chat, 0, "x", &mut out);
        chat.on_close(0, CloseCode::NORMAL, &mut out);
        chat.on_tick(Instant::now());
        assert!(chat.by_name.contains_key("talky"), "kept for resuming");
        chat.on_tick(Instant::now() + Duration::from_secs(601));
        assert!(!chat.by_name.contains_key("talky"));
        assert!(chat.rooms.is_empty());
    }

    #[test]
    fn room_limit() {
        let mut config = ChatConfig::new(Mode::Broadcast);
        config.max_rooms = 2;
        let (mut chat, mut out) = (Chat::new(config), Recorder::default());
        join(&mut chat, 0, "/a", false, &mut out);
        join(&mut chat, 1, "/b", false, &mut out);
        let remote = SocketAddr::from(([127, 0, 0, 1], 1));
        let c = Opened {
            remote,
            target: "/c",
            protocol: None,
        };
        assert_eq!(chat.admit(&c).map_err(|r| r.response.status), Err(503));
        say(&mut chat, 1, "kept", &mut out);
        chat.on_close(1, CloseCode::NORMAL, &mut out);
        join(&mut chat, 2, "/c", false, &mut out);
        assert!(!chat.by_name.contains_key("b"), "the empty room made way");
    }

    #[test]
    fn echo_mode_returns_to_sender_only() {
        let (mut chat, mut out) = (Chat::new(ChatConfig::new(Mode::Echo)), Recorder::default());
        join(&mut chat, 0, "/", false, &mut out);
        join(&mut chat, 1, "/", false, &mut out);
        assert!(out.take().is_empty());
        say(&mut chat, 1, "/nick not-a-command-here", &mut out);
        assert_eq!(out.take(), [(1, "/nick not-a-command-here".into())]);
        chat.on_close(1, CloseCode::NORMAL, &mut out);
        assert!(out.take().is_empty());
    }

    #[test]
    fn plain_http_gets_the_page_on_room_paths() {
        let mut chat = chat();
        let page = chat.on_http(&HttpRequest {
            target: "/rust".into(),
        });
        assert_eq!(page.status, 200);
        assert!(page.content_type.starts_with("text/html"));
        let missing = chat.on_http(&HttpRequest {
            target: "/a/b".into(),
        });
        assert_eq!(missing.status, 404);
    }

    #[test]
    fn metrics_count_rooms_and_history() {
        let (mut chat, mut out) = (chat(), Recorder::default());
        join(&mut chat, 0, "/a", false, &mut out);
        say(&mut chat, 0, "abc", &mut out);
        let mut text = String::new();
        chat.render_metrics(&mut text);
        assert!(text.contains("wschat_rooms 1\n"));
        assert!(text.contains("wschat_history_messages 1\n"));
        assert!(text.contains("wschat_chat_users 1\n"));
    }
}
