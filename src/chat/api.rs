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
//! A posted message speaks as `NAME (bot)`: the name passes the nickname
//! rules, and no nickname may hold a space or a parenthesis, so no user
//! can pose as a bot and no bot as a user.

use serde::Deserialize;
use serde_json::{json, Value};
use sha1::{Digest, Sha1};

use std::time::{Duration, Instant};

use super::{names, target, Audience, Chat, Spoken};
use crate::cluster::bus::Ticket;
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
        Some(match (call.method, parts.as_slice()) {
            ("GET" | "HEAD", ["rooms"]) => self.api_rooms(),
            (_, ["rooms"]) => not_allowed("GET"),
            ("GET" | "HEAD", ["rooms", room, "history"]) => self.api_history(room, query),
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
        let Some(at) = self.posts.iter().position(|p| p.bus == ticket) else {
            return;
        };
        let post = self.posts.swap_remove(at);
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
        let mut at = 0;
        while at < self.posts.len() {
            if now.saturating_duration_since(self.posts[at].since) < POST_TIMEOUT {
                at += 1;
                continue;
            }
            let post = self.posts.swap_remove(at);
            let why = format!(
                "Redis did not number the message within {} s (it may still reach the room)",
                POST_TIMEOUT.as_secs()
            );
            cx.answer_http(post.http, error(504, &why));
        }
    }

    fn api_rooms(&self) -> HttpReply {
        let rooms: Vec<Value> = self
            .rooms
            .indices()
            .filter_map(|i| {
                let r = self.rooms.get(i)?;
                let (users, count) = self.names(i);
                Some(json!({
                    "name": r.name,
                    "count": count,
                    "users": users,
                    "last_seq": r.last_seq,
                }))
            })
            .collect();
        reply(200, &json!({ "rooms": rooms }))
    }

    fn api_history(&self, room: &str, query: &str) -> HttpReply {
        let mut since = 0;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.strip_prefix("since=").map(str::parse::<u64>) {
                Some(Ok(n)) => since = n,
                Some(Err(_)) => return error(400, "since must be a sequence number"),
                None => {}
            }
        }
        let Some(r) = self.rooms.index_of(room).and_then(|i| self.rooms.get(i)) else {
            return error(404, "no such room");
        };
        let messages: Vec<Value> = r
            .history
            .all()
            .filter(|e| e.seq > since)
            .map(|e| {
                json!({
                    "seq": e.seq,
                    "ts": e.ts,
                    "from": &*e.from,
                    "text": &*e.text,
                    "me": e.me,
                    "verified": e.verified,
                })
            })
            .collect();
        reply(
            200,
            &json!({ "room": r.name, "last_seq": r.last_seq, "messages": messages }),
        )
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
        if ticket.is_some() && self.node.is_some() && self.posts.len() >= MAX_PENDING_POSTS {
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
                self.posts.push(PendingPost {
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
