//! The HTTP API for backends: post into a room, read its history, list
//! rooms, over plain HTTP on the chat's port (`--api-key-file`).
//!
//! ```text
//! POST /api/rooms/{room}/messages          {"from":"deploy","text":"v2 is out"} -> 201 {"room":..,"seq":N}
//! GET  /api/rooms/{room}/history?since=N   -> 200 {"room":..,"last_seq":N,"messages":[..]}
//! GET  /api/rooms                          -> 200 {"rooms":[{"name":..,"count":N,"users":[..],"last_seq":N}]}
//! ```
//!
//! Every call carries `Authorization: Bearer KEY` (RFC 6750 §2.1). No
//! header, or another scheme, is `401` with `WWW-Authenticate: Bearer`
//! (RFC 6750 §3); a wrong key is `403`. Keys are compared as SHA-1
//! digests in constant time, so the comparison's time says nothing of
//! how much of the key was right. Bodies are bounded by the loop
//! (`413`), must be `application/json` (`415`), and are parsed as one
//! object with the fields named (`400` for anything else).
//!
//! In cluster mode a post is numbered by Redis: its answer waits for the
//! publish script's reply (a [`PendingPost`], answered through
//! [`Context::answer_http`]), at most [`MAX_PENDING_POSTS`] at once, each
//! at most [`POST_TIMEOUT`]; while Redis is out of reach the message goes
//! to this node's users only and the answer says so at once.
//!
//! In cluster mode the two reads answer from Redis too, so that every
//! node gives the same answer whether or not it has users in the room:
//! `GET /api/rooms` lists the room directory's busiest rooms (every
//! node's) and reads each ([`crate::cluster::room_read`]), and a room's history is the
//! shared stream's. They too wait at most [`MAX_PENDING_READS`] at once,
//! each at most [`POST_TIMEOUT`]; while Redis is out of reach they answer
//! from this node's state at once, marked `"local_only": true`.
//!
//! A posted message speaks as `NAME (bot)`: the name passes the nickname
//! rules, and no nickname may hold a space or a parenthesis, so no user
//! can pose as a bot and no bot as a user.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use std::time::{Duration, Instant};

use super::{names, relay, take_first, target, Audience, Chat, Spoken};
use crate::cluster::bus::{Publish, Ticket};
use crate::cluster::room_read::RoomState;
use crate::service::{Context, HttpGet, HttpReply, HttpTicket, PeerId};

/// Most API posts waiting for Redis at once (past them: `503`).
pub const MAX_PENDING_POSTS: usize = 1024;

/// How long an API post waits for Redis to number it before `504`: under
/// the loop's default handshake timeout (10 s from the connection's
/// accept), which answers `408` if it passes first.
pub const POST_TIMEOUT: Duration = Duration::from_secs(5);

/// An API post whose answer waits for the publish script's reply.
#[derive(Debug)]
pub struct PendingPost {
    /// The publish's ticket on the bus.
    bus: Ticket,
    http: HttpTicket,
    room: String,
    since: Instant,
}

/// Most API reads waiting for Redis at once (past them: `503`).
pub const MAX_PENDING_READS: usize = 256;

/// An API read (cluster mode) whose answer waits for Redis.
#[derive(Debug)]
pub struct PendingRead {
    http: HttpTicket,
    since: Instant,
    what: Read,
}

#[derive(Debug)]
enum Read {
    /// `GET /api/rooms`: the room directory asked, or (`listing` `None`)
    /// its rooms being read, each a name, its ticket, and once answered
    /// its state.
    Rooms {
        listing: Option<Ticket>,
        rooms: Vec<(String, Ticket, Option<RoomState>)>,
        total: u64,
        complete: bool,
    },
    /// `GET /api/rooms/{room}/history`.
    History { ticket: Ticket, room: String },
}

impl PendingRead {
    fn waits_for(&self, ticket: Ticket) -> bool {
        match &self.what {
            Read::Rooms {
                listing: Some(t), ..
            } => *t == ticket,
            Read::Rooms { rooms, .. } => rooms.iter().any(|(_, t, _)| *t == ticket),
            Read::History { ticket: t, .. } => *t == ticket,
        }
    }
}

/// What the API answers when it is off (no `--api-key-file`).
const OFF: &str = "the HTTP API is off (start wschat with --api-key-file)";

/// Whether `path` is the API's (`/api` alone is the page of the room
/// `api`).
pub fn is_api(path: &str) -> bool {
    path.starts_with("/api/")
}

/// `Authorization: Bearer KEY` against the configured key.
fn authorised(call: &HttpGet<'_>, key: &[u8]) -> Result<(), HttpReply> {
    let given = call.authorization.and_then(|value| {
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    let Some(given) = given else {
        let mut reply = error(401, "send Authorization: Bearer KEY");
        reply
            .headers
            .push("WWW-Authenticate: Bearer realm=\"wschat\"".into());
        return Err(reply);
    };
    if same_key(given.as_bytes(), key) {
        Ok(())
    } else {
        Err(error(403, "wrong API key"))
    }
}

/// Equality of two keys in time that depends on neither (their digests
/// are compared whole).
fn same_key(given: &[u8], key: &[u8]) -> bool {
    let (a, b) = (Sha1::digest(given), Sha1::digest(key));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn reply(status: u16, body: &Value) -> HttpReply {
    HttpReply {
        status,
        content_type: "application/json",
        headers: vec!["Cache-Control: no-store".into()],
        body: body.to_string().into_bytes(),
    }
}

fn error(status: u16, why: &str) -> HttpReply {
    reply(status, &json!({ "error": why }))
}

fn not_allowed(allow: &str) -> HttpReply {
    let mut reply = error(405, &format!("use {allow}"));
    reply.headers.push(format!("Allow: {allow}"));
    reply
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Post {
    from: String,
    text: String,
}

impl Chat {
    /// Answers an API call: now, or (`None`, only given `ticket`) later
    /// through [`Context::answer_http`].
    pub(super) fn api(
        &mut self,
        call: &HttpGet<'_>,
        ticket: Option<HttpTicket>,
        cx: &mut impl Context,
    ) -> Option<HttpReply> {
        let Some(key) = self.config.api_key.clone() else {
            return Some(error(404, OFF));
        };
        if let Err(refused) = authorised(call, &key) {
            return Some(refused);
        }
        let (path, query) = call.target.split_once('?').unwrap_or((call.target, ""));
        let parts: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
        let shared = ticket.filter(|_| self.node.is_some() && self.bus.reachable());
        Some(match (call.method, parts.as_slice()) {
            ("GET" | "HEAD", ["rooms"]) => match shared {
                Some(http) => return self.read_rooms(http, cx),
                None => self.api_rooms(),
            },
            (_, ["rooms"]) => not_allowed("GET"),
            ("GET" | "HEAD", ["rooms", room, "history"]) => {
                let since = match since_of(query) {
                    Ok(since) => since,
                    Err(refused) => return Some(refused),
                };
                match shared {
                    Some(http) => return self.read_history(http, room, since, cx),
                    None => self.api_history(room, since),
                }
            }
            (_, ["rooms", _, "history"]) => not_allowed("GET"),
            ("POST", ["rooms", room, "messages"]) => return self.api_post(room, call, ticket, cx),
            (_, ["rooms", _, "messages"]) => not_allowed("POST"),
            _ => error(404, "no such API path (see the README)"),
        })
    }

    /// Redis numbered (`Some(seq)`) or may have lost (`None`) the message
    /// of the bus `ticket`: the post waiting for it, if any, is answered.
    pub(super) fn post_answered(
        &mut self,
        ticket: Ticket,
        seq: Option<u64>,
        cx: &mut impl Context,
    ) {
        let Some(post) = take_first(&mut self.pending.posts, |p| p.bus == ticket) else {
            return;
        };
        let answer = match seq {
            // As one node answers.
            Some(seq) => reply(201, &json!({ "room": post.room, "seq": seq })),
            None => error(
                503,
                "Redis did not confirm the message (it may or may not have reached other nodes); \
                 check the room's history before posting again",
            ),
        };
        cx.answer_http(post.http, answer);
    }

    /// Posts Redis did not answer within [`POST_TIMEOUT`] get `504`.
    pub(super) fn expire_posts(&mut self, cx: &mut impl Context) {
        let now = cx.clock().now;
        for post in overdue(&mut self.pending.posts, now, |p| p.since) {
            let why = format!(
                "Redis did not number the message within {} s (it may still reach the room)",
                POST_TIMEOUT.as_secs()
            );
            cx.answer_http(post.http, error(504, &why));
        }
    }

    /// This node's rooms (one node, or Redis out of reach).
    fn api_rooms(&self) -> HttpReply {
        let rooms: Vec<Value> = self
            .rooms
            .indices()
            .filter_map(|i| {
                let r = self.rooms.get(i)?;
                let (users, count) = self.names(i);
                Some(json!(ApiRoom {
                    name: &r.name,
                    count: count as u64,
                    users,
                    last_seq: r.last_seq,
                }))
            })
            .collect();
        let mut body = json!({ "rooms": rooms, "count": rooms.len(), "complete": true });
        self.mark_local(&mut body);
        reply(200, &body)
    }

    /// In cluster mode with Redis out of reach, an answer from this
    /// node's state says so.
    fn mark_local(&self, body: &mut Value) {
        if self.node.is_some() {
            body["local_only"] = Value::Bool(true);
        }
    }

    /// This node's history of `room` (one node, or Redis out of reach).
    fn api_history(&self, room: &str, since: u64) -> HttpReply {
        let Some(r) = self.rooms.index_of(room).and_then(|i| self.rooms.get(i)) else {
            return error(404, "no such room");
        };
        let messages: Vec<Value> = r
            .history
            .all()
            .filter(|e| e.seq > since)
            .map(|e| {
                json!(ApiMessage {
                    seq: e.seq,
                    ts: e.ts,
                    from: &e.from,
                    text: &e.text,
                    me: e.me,
                    verified: e.verified,
                })
            })
            .collect();
        let mut body = json!({ "room": r.name, "last_seq": r.last_seq, "messages": messages });
        self.mark_local(&mut body);
        reply(200, &body)
    }

    /// A post: its answer now, or `None` when it waits for Redis.
    fn api_post(
        &mut self,
        room: &str,
        call: &HttpGet<'_>,
        ticket: Option<HttpTicket>,
        cx: &mut impl Context,
    ) -> Option<HttpReply> {
        let json_body = call.content_type.is_some_and(|t| {
            let media = t.split(';').next().unwrap_or_default().trim();
            media.eq_ignore_ascii_case("application/json")
        });
        if !json_body {
            return Some(error(415, "send Content-Type: application/json"));
        }
        let post: Post = match serde_json::from_slice(call.body) {
            Ok(post) => post,
            Err(e) => {
                let why = format!("expected {{\"from\":\"NAME\",\"text\":\"TEXT\"}} ({e})");
                return Some(error(400, &why));
            }
        };
        let name = match names::check(&post.from) {
            Ok(nick) => nick.name,
            Err(why) => return Some(error(400, &format!("from: {why}"))),
        };
        if post.text.is_empty() {
            return Some(error(400, "text is empty"));
        }
        let room = match target::parse(&format!("/{room}")) {
            Ok(t) => t.room,
            Err(e) => return Some(error(404, e.reason())),
        };
        let index = match self.rooms.index_of(&room) {
            Some(i) => i,
            None => {
                let client = super::rooms::client_key(std::net::Ipv4Addr::LOCALHOST.into());
                if self.rooms.may_join(&room, client, self.limits()).is_err() {
                    return Some(error(503, "too many rooms"));
                }
                let index = self.rooms.named(&room, client, self.limits());
                if self.node.is_some() {
                    // As for a room's first user: the node hears the room
                    // (and its message comes back to be numbered) until
                    // the room is forgotten here.
                    self.bus.subscribe(cx.clock().now, &room);
                }
                index
            }
        };
        if ticket.is_some() && self.node.is_some() && self.pending.posts.len() >= MAX_PENDING_POSTS
        {
            return Some(error(
                503,
                "too many API posts are waiting for Redis to number them; try again",
            ));
        }
        let from: std::rc::Rc<str> = format!("{name} (bot)").into();
        let spoken = self.speak(
            index,
            PeerId::MAX,
            from,
            &post.text,
            (false, false),
            Audience::All,
            cx,
        );
        Some(match (spoken, ticket) {
            (Spoken::Numbered(seq), _) => reply(201, &json!({ "room": room, "seq": seq })),
            // Numbered by Redis like any message: the answer waits for
            // the script's reply (see `post_answered`).
            (Spoken::Queued(bus), Some(http)) => {
                self.pending.posts.push(PendingPost {
                    bus,
                    http,
                    room,
                    since: cx.clock().now,
                });
                return None;
            }
            // No way to answer later: the number comes with the message.
            (Spoken::Queued(_), None) => reply(202, &json!({ "room": room, "queued": true })),
            (Spoken::LocalOnly, _) => reply(
                202,
                &json!({ "room": room, "queued": false, "local_only": true }),
            ),
        })
    }
}

/// The entries of `pending` that have waited [`POST_TIMEOUT`], taken out.
fn overdue<T>(pending: &mut Vec<T>, now: Instant, since: impl Fn(&T) -> Instant) -> Vec<T> {
    pending
        .extract_if(.., |p| {
            now.saturating_duration_since(since(p)) >= POST_TIMEOUT
        })
        .collect()
}

/// The `since=N` of a history query (0 without one).
fn since_of(query: &str) -> Result<u64, HttpReply> {
    let mut since = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix("since=").map(str::parse::<u64>) {
            Some(Ok(n)) => since = n,
            Some(Err(_)) => return Err(error(400, "since must be a sequence number")),
            None => {}
        }
    }
    Ok(since)
}

/// A message as the API shows it, from this node's history or the
/// shared one.
#[derive(Serialize)]
struct ApiMessage<'a> {
    seq: u64,
    ts: u64,
    from: &'a str,
    text: &'a str,
    me: bool,
    verified: bool,
}

/// A room as `GET /api/rooms` lists it, from this node or the cluster.
#[derive(Serialize)]
struct ApiRoom<'a, U> {
    name: &'a str,
    count: u64,
    users: Vec<U>,
    last_seq: u64,
}

/// A history entry as the API shows it: a shared history entry (the
/// event as published) that is a message, decoded whole or left out.
fn shared_message(seq: u64, event: &[u8]) -> Option<Value> {
    let event = relay::decode(event).filter(|e| e.kind == relay::Kind::Message)?;
    let text = std::str::from_utf8(event.body).ok()?;
    Some(json!(ApiMessage {
        seq,
        ts: event.ts,
        from: event.from,
        text,
        me: event.me,
        verified: event.verified,
    }))
}

/// A room of the cluster as `GET /api/rooms` lists it.
fn shared_room(name: &str, state: &RoomState, list_limit: usize) -> Value {
    let users: Vec<&str> = state
        .members
        .iter()
        .take(list_limit)
        .map(|((_, name), _)| name.as_str())
        .collect();
    json!(ApiRoom {
        name,
        count: state.count,
        users,
        last_seq: state.last_seq,
    })
}

impl Chat {
    /// Whether one more read may wait for Redis.
    fn read_refused(&self) -> Option<HttpReply> {
        (self.pending.reads.len() >= MAX_PENDING_READS)
            .then(|| error(503, "too many API reads are waiting for Redis; try again"))
    }

    /// `GET /api/rooms` in cluster mode: the directory first.
    fn read_rooms(&mut self, http: HttpTicket, cx: &mut impl Context) -> Option<HttpReply> {
        if let Some(refused) = self.read_refused() {
            return Some(refused);
        }
        let now = cx.clock().now;
        match self.bus.list_rooms(now, self.config.list_limit) {
            Publish::Queued(listing) => {
                self.pending.reads.push(PendingRead {
                    http,
                    since: now,
                    what: Read::Rooms {
                        listing: Some(listing),
                        rooms: Vec::new(),
                        total: 0,
                        complete: true,
                    },
                });
                None
            }
            Publish::Local | Publish::Dropped => Some(self.api_rooms()),
        }
    }

    /// `GET /api/rooms/{room}/history` in cluster mode: the shared stream.
    fn read_history(
        &mut self,
        http: HttpTicket,
        room: &str,
        since: u64,
        cx: &mut impl Context,
    ) -> Option<HttpReply> {
        let room = match target::parse(&format!("/{room}")) {
            Ok(t) => t.room,
            Err(_) => return Some(error(404, "no such room")),
        };
        if let Some(refused) = self.read_refused() {
            return Some(refused);
        }
        let now = cx.clock().now;
        let entries = self.config.history.max_entries as u64;
        match self.bus.read_room(now, &room, 0, entries, since) {
            Publish::Queued(ticket) => {
                self.pending.reads.push(PendingRead {
                    http,
                    since: now,
                    what: Read::History { ticket, room },
                });
                None
            }
            Publish::Local | Publish::Dropped => Some(self.api_history(&room, since)),
        }
    }

    /// Whether an API read waits for the bus `ticket`.
    pub(super) fn read_waits_for(&self, ticket: Ticket) -> bool {
        self.pending.reads.iter().any(|r| r.waits_for(ticket))
    }

    /// The room directory answered an API read: each listed room is read.
    pub(super) fn read_listed(
        &mut self,
        ticket: Ticket,
        listed: Vec<(String, u64)>,
        total: u64,
        complete: bool,
        cx: &mut impl Context,
    ) {
        let Some(at) = self.pending.reads.iter().position(|r| r.waits_for(ticket)) else {
            return;
        };
        let now = cx.clock().now;
        let members = self.config.list_limit as u64;
        let mut rooms = Vec::with_capacity(listed.len());
        for (name, _) in listed {
            match self.bus.read_room(now, &name, members, 0, 0) {
                Publish::Queued(t) => rooms.push((name, t, None)),
                Publish::Local | Publish::Dropped => {
                    let read = self.pending.reads.swap_remove(at);
                    let why = "Redis went out of reach while the rooms were read; try again";
                    cx.answer_http(read.http, error(503, why));
                    return;
                }
            }
        }
        self.pending.reads[at].what = Read::Rooms {
            listing: None,
            rooms,
            total,
            complete,
        };
        self.read_done(at, cx);
    }

    /// A room read for an API read came back.
    pub(super) fn read_room_answered(
        &mut self,
        ticket: Ticket,
        state: RoomState,
        cx: &mut impl Context,
    ) {
        let Some(at) = self.pending.reads.iter().position(|r| r.waits_for(ticket)) else {
            return;
        };
        match &mut self.pending.reads[at].what {
            Read::Rooms { rooms, .. } => {
                if let Some(slot) = rooms.iter_mut().find(|(_, t, _)| *t == ticket) {
                    slot.2 = Some(state);
                }
                self.read_done(at, cx);
            }
            Read::History { room, .. } => {
                let room = std::mem::take(room);
                let read = self.pending.reads.swap_remove(at);
                let known = self.rooms.index_of(&room).is_some();
                if !known && state.last_seq == 0 && state.count == 0 {
                    cx.answer_http(read.http, error(404, "no such room"));
                    return;
                }
                let messages: Vec<Value> = state
                    .entries
                    .iter()
                    .filter_map(|(seq, event)| shared_message(*seq, event))
                    .collect();
                let body =
                    json!({ "room": room, "last_seq": state.last_seq, "messages": messages });
                cx.answer_http(read.http, reply(200, &body));
            }
        }
    }

    /// Answers the rooms read at `at` once every room of it is read.
    fn read_done(&mut self, at: usize, cx: &mut impl Context) {
        let Read::Rooms {
            listing: None,
            rooms,
            total,
            complete,
        } = &self.pending.reads[at].what
        else {
            return;
        };
        if rooms.iter().any(|(_, _, state)| state.is_none()) {
            return;
        }
        let listed: Vec<Value> = rooms
            .iter()
            .filter_map(|(name, _, state)| {
                Some(shared_room(name, state.as_ref()?, self.config.list_limit))
            })
            .collect();
        let body = json!({ "rooms": listed, "count": total, "complete": complete });
        let read = self.pending.reads.swap_remove(at);
        cx.answer_http(read.http, reply(200, &body));
    }

    /// A command an API read waited for failed.
    pub(super) fn read_lost(&mut self, ticket: Ticket, cx: &mut impl Context) {
        if let Some(read) = take_first(&mut self.pending.reads, |r| r.waits_for(ticket)) {
            cx.answer_http(read.http, error(503, "Redis did not answer; try again"));
        }
    }

    /// Reads Redis did not answer within [`POST_TIMEOUT`] get `504`.
    pub(super) fn expire_reads(&mut self, cx: &mut impl Context) {
        let now = cx.clock().now;
        for read in overdue(&mut self.pending.reads, now, |r| r.since) {
            let why = format!("Redis did not answer within {} s", POST_TIMEOUT.as_secs());
            cx.answer_http(read.http, error(504, &why));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_whole() {
        assert!(same_key(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_key(b"0123456789abcdeF", b"0123456789abcdef"));
        assert!(!same_key(b"0123456789abcde", b"0123456789abcdef"));
        assert!(!same_key(b"", b"0123456789abcdef"));
    }

    #[test]
    fn only_the_bearer_scheme_is_read() {
        let key = b"0123456789abcdef";
        let call = |auth| HttpGet {
            authorization: auth,
            ..HttpGet::get("/api/rooms")
        };
        assert!(authorised(&call(Some("Bearer 0123456789abcdef")), key).is_ok());
        assert!(authorised(&call(Some("bearer  0123456789abcdef")), key).is_ok());
        assert_eq!(authorised(&call(None), key).unwrap_err().status, 401);
        assert_eq!(
            authorised(&call(Some("Basic 0123456789abcdef")), key)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            authorised(&call(Some("Bearer nope")), key)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn api_paths() {
        assert!(!is_api("/api"), "the room api's page");
        assert!(is_api("/api/rooms"));
        assert!(!is_api("/apiary"));
        assert!(!is_api("/"));
    }
}
