//! The chat policy: who hears what.
//!
//! It keeps the seed's behaviour: each user is named by the remote port
//! of its connection (`User 51234`); a newcomer is announced to everyone
//! else (`User 51234 joined`), a departure too (`User 51234 left`); a text
//! goes to every *other* user as `User 51234: <text>`, and a binary
//! message goes to the others unchanged. In echo mode (for conformance
//! suites) every message goes back to its sender alone, unchanged.
//!
//! Each outgoing message is encoded once and the same frame is handed to
//! every recipient. Nothing here knows about sockets or frame bytes.

use crate::connection::Message;
use crate::frame::CloseCode;
use crate::handshake::{HttpRequest, HttpResponse};
use crate::metrics;
use crate::service::{Kind, Opened, Outbound, PeerId, Service};

/// How messages are routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The seed's chat: everything to everyone else.
    Broadcast,
    /// Each message back to its sender, unchanged.
    Echo,
}

#[derive(Debug)]
struct User {
    port: u16,
    /// Where this user sits in `Chat::members`.
    slot: usize,
}

/// The room everybody is in.
#[derive(Debug)]
pub struct Chat {
    mode: Mode,
    /// Indexed by peer id.
    users: Vec<Option<User>>,
    /// The ids of everyone present, densely packed for fan-out.
    members: Vec<PeerId>,
}

impl Chat {
    pub fn new(mode: Mode) -> Chat {
        Chat {
            mode,
            users: Vec::new(),
            members: Vec::new(),
        }
    }

    /// How many users are present.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn user(&self, id: PeerId) -> Option<&User> {
        self.users.get(id).and_then(Option::as_ref)
    }

    /// Delivers one frame made of `parts` to everyone but `except`.
    fn broadcast(&self, except: PeerId, kind: Kind, parts: &[&[u8]], out: &mut impl Outbound) {
        // Encode nothing when nobody would receive it.
        if self.members.iter().all(|&m| m == except) {
            return;
        }
        let frame = out.encode(kind, parts);
        for &member in &self.members {
            if member != except {
                out.deliver(member, &frame);
            }
        }
    }

    fn announce(&self, id: PeerId, port: u16, what: &str, out: &mut impl Outbound) {
        let mut digits = itoa_buf();
        let port = format_port(&mut digits, port);
        self.broadcast(id, Kind::Text, &[b"User ", port, what.as_bytes()], out);
    }
}

/// Room for the decimal digits of a `u16`.
fn itoa_buf() -> [u8; 5] {
    [0; 5]
}

/// Writes `port` in decimal into `buf`, returning the digits.
fn format_port(buf: &mut [u8; 5], mut port: u16) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (port % 10) as u8;
        port /= 10;
        if port == 0 {
            return &buf[at..];
        }
    }
}

impl Service for Chat {
    fn on_open(&mut self, id: PeerId, opened: Opened<'_>, out: &mut impl Outbound) {
        if self.users.len() <= id {
            self.users.resize_with(id + 1, || None);
        }
        let port = opened.remote.port();
        self.users[id] = Some(User {
            port,
            slot: self.members.len(),
        });
        self.members.push(id);
        if self.mode == Mode::Broadcast {
            self.announce(id, port, " joined", out);
        }
    }

    fn on_message(&mut self, id: PeerId, message: Message<'_>, out: &mut impl Outbound) {
        let Some(user) = self.user(id) else {
            return;
        };
        match (self.mode, message) {
            (Mode::Echo, Message::Text(text)) => {
                let frame = out.encode(Kind::Text, &[text.as_bytes()]);
                out.deliver(id, &frame);
            }
            (Mode::Echo, Message::Binary(bytes)) => {
                let frame = out.encode(Kind::Binary, &[&bytes]);
                out.deliver(id, &frame);
            }
            (Mode::Broadcast, Message::Text(text)) => {
                let mut digits = itoa_buf();
                let port = format_port(&mut digits, user.port);
                self.broadcast(
                    id,
                    Kind::Text,
                    &[b"User ", port, b": ", text.as_bytes()],
                    out,
                );
            }
            (Mode::Broadcast, Message::Binary(bytes)) => {
                self.broadcast(id, Kind::Binary, &[&bytes], out);
            }
        }
    }

    fn on_close(&mut self, id: PeerId, _code: CloseCode, out: &mut impl Outbound) {
        let Some(user) = self.users.get_mut(id).and_then(Option::take) else {
            return;
        };
        self.members.swap_remove(user.slot);
        if let Some(&moved) = self.members.get(user.slot) {
            if let Some(Some(other)) = self.users.get_mut(moved) {
                other.slot = user.slot;
            }
        }
        if self.mode == Mode::Broadcast {
            self.announce(id, user.port, " left", out);
        }
    }

    fn on_throttled(&mut self, id: PeerId, out: &mut impl Outbound) {
        let frame = out.encode(
            Kind::Text,
            &[b"wschat: you are sending too fast; messages are being dropped"],
        );
        out.deliver(id, &frame);
    }

    fn render_metrics(&self, out: &mut String) {
        metrics::gauge(
            out,
            "wschat_chat_users",
            "Users in the chat.",
            self.members.len(),
        );
    }

    fn on_http(&mut self, _request: &HttpRequest) -> HttpResponse {
        HttpResponse::text(
            426,
            "This is a WebSocket chat server. Connect with a WebSocket client, \
             e.g. in Node: new WebSocket(\"ws://localhost:8080\")",
        )
        .with_header("Upgrade: websocket")
        .with_header("Sec-WebSocket-Version: 13")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::SharedFrame;
    use std::borrow::Cow;

    /// Records deliveries as (recipient, kind, payload) without framing.
    #[derive(Default)]
    struct Recorder {
        encoded: usize,
        sent: Vec<(PeerId, Kind, Vec<u8>)>,
        kinds: Vec<Kind>,
    }

    impl Outbound for Recorder {
        fn encode(&mut self, kind: Kind, parts: &[&[u8]]) -> SharedFrame {
            self.encoded += 1;
            self.kinds.push(kind);
            SharedFrame::concat(&[], parts)
        }

        fn deliver(&mut self, to: PeerId, frame: &SharedFrame) {
            let kind = *self.kinds.last().expect("encoded first");
            self.sent.push((to, kind, frame.as_bytes().to_vec()));
        }
    }

    impl Recorder {
        fn take(&mut self) -> Vec<(PeerId, String)> {
            self.sent
                .drain(..)
                .map(|(to, _, bytes)| (to, String::from_utf8_lossy(&bytes).into_owned()))
                .collect()
        }
    }

    fn open(chat: &mut Chat, id: PeerId, port: u16, out: &mut Recorder) {
        let remote = format!("127.0.0.1:{port}").parse().unwrap();
        chat.on_open(
            id,
            Opened {
                remote,
                target: "/",
                protocol: None,
            },
            out,
        );
    }

    fn text(s: &str) -> Message<'_> {
        Message::Text(Cow::Borrowed(s))
    }

    #[test]
    fn joins_messages_and_leaves_go_to_the_others_only() {
        let mut chat = Chat::new(Mode::Broadcast);
        let mut out = Recorder::default();
        open(&mut chat, 0, 5000, &mut out);
        assert!(out.take().is_empty(), "nobody to tell");
        open(&mut chat, 1, 5001, &mut out);
        assert_eq!(out.take(), [(0, "User 5001 joined".to_string())]);
        open(&mut chat, 2, 65535, &mut out);
        assert_eq!(
            out.take(),
            [
                (0, "User 65535 joined".into()),
                (1, "User 65535 joined".into())
            ]
        );

        out.encoded = 0;
        chat.on_message(1, text("hi"), &mut out);
        assert_eq!(
            out.take(),
            [(0, "User 5001: hi".into()), (2, "User 5001: hi".into())]
        );
        assert_eq!(out.encoded, 1, "encoded once for all recipients");

        chat.on_close(0, CloseCode::NORMAL, &mut out);
        let mut left = out.take();
        left.sort();
        assert_eq!(
            left,
            [(1, "User 5000 left".into()), (2, "User 5000 left".into())]
        );
        assert_eq!(chat.len(), 2);

        chat.on_message(2, Message::Binary(Cow::Borrowed(&[0, 159])), &mut out);
        assert_eq!(out.sent, [(1, Kind::Binary, vec![0, 159])]);
    }

    #[test]
    fn member_slots_stay_consistent_after_removals() {
        let mut chat = Chat::new(Mode::Broadcast);
        let mut out = Recorder::default();
        for id in 0..5 {
            open(&mut chat, id, 6000 + id as u16, &mut out);
        }
        for id in [1, 4, 0] {
            chat.on_close(id, CloseCode::NORMAL, &mut out);
        }
        out.take();
        chat.on_message(2, text("x"), &mut out);
        assert_eq!(out.take(), [(3, "User 6002: x".into())]);
        // A reused id is a new user.
        open(&mut chat, 1, 7000, &mut out);
        out.take();
        chat.on_message(1, text("y"), &mut out);
        let mut got = out.take();
        got.sort();
        assert_eq!(
            got,
            [(2, "User 7000: y".into()), (3, "User 7000: y".into())]
        );
    }

    #[test]
    fn the_last_user_hears_the_other_leave() {
        let mut chat = Chat::new(Mode::Broadcast);
        let mut out = Recorder::default();
        open(&mut chat, 0, 5000, &mut out);
        open(&mut chat, 1, 5001, &mut out);
        out.take();
        chat.on_close(1, CloseCode::NORMAL, &mut out);
        assert_eq!(out.take(), [(0, "User 5001 left".to_string())]);
        chat.on_message(0, text("alone"), &mut out);
        assert_eq!(out.encoded, 2, "nothing encoded for nobody");
    }

    #[test]
    fn echo_mode_returns_to_sender_only() {
        let mut chat = Chat::new(Mode::Echo);
        let mut out = Recorder::default();
        open(&mut chat, 0, 5000, &mut out);
        open(&mut chat, 1, 5001, &mut out);
        assert!(out.take().is_empty());
        chat.on_message(1, text("ping"), &mut out);
        assert_eq!(out.take(), [(1, "ping".into())]);
        chat.on_close(1, CloseCode::NORMAL, &mut out);
        assert!(out.take().is_empty());
    }

    #[test]
    fn unknown_ids_are_ignored() {
        let mut chat = Chat::new(Mode::Broadcast);
        let mut out = Recorder::default();
        chat.on_message(9, text("x"), &mut out);
        chat.on_close(9, CloseCode::NORMAL, &mut out);
        assert!(out.sent.is_empty());
    }

    #[test]
    fn ports_format_in_decimal() {
        let mut buf = itoa_buf();
        for port in [0u16, 7, 10, 8080, 65535] {
            assert_eq!(format_port(&mut buf, port), port.to_string().as_bytes());
        }
    }

    #[test]
    fn plain_http_gets_a_hint() {
        let mut chat = Chat::new(Mode::Broadcast);
        let r = chat.on_http(&HttpRequest { target: "/".into() });
        assert_eq!(r.status, 426);
        assert!(String::from_utf8(r.body).unwrap().contains("new WebSocket"));
    }
}
