//! How chat events look to clients: the seed's plain-text lines, or one
//! JSON object per event for clients of the `wschat.v1.json` subprotocol.
//!
//! Pure functions from an event to bytes. The chat calls each format at
//! most once per event, however many recipients it has.

/// The subprotocol that selects JSON events.
pub const JSON_PROTOCOL: &str = "wschat.v1.json";

/// One chat event, as the recipients should see it.
#[derive(Clone, Copy, Debug)]
pub enum Line<'a> {
    /// A chat message; `history` when replayed to a newcomer.
    Message {
        from: &'a str,
        text: &'a str,
        seq: u64,
        me: bool,
        history: bool,
    },
    Join {
        from: &'a str,
    },
    Leave {
        from: &'a str,
    },
    Nick {
        from: &'a str,
        to: &'a str,
    },
    System {
        text: &'a str,
        extra: Extra<'a>,
    },
    Error {
        text: &'a str,
    },
    /// Joins and leaves in a large room since the last summary, and how
    /// many are in the room now (instead of a line per join or leave).
    Presence {
        joined: u32,
        left: u32,
        count: usize,
    },
}

/// Structured data some system events carry for JSON clients.
#[derive(Clone, Copy, Debug)]
pub enum Extra<'a> {
    None,
    /// The welcome: the recipient's name and who is in the room (at most
    /// the list limit of them; `count` is how many there are).
    Welcome {
        you: &'a str,
        users: &'a [&'a str],
        count: usize,
    },
    /// The `/who` reply: some of the users, and how many there are.
    Users {
        users: &'a [&'a str],
        count: usize,
    },
    /// The `/rooms` reply: names and user counts of some rooms, and how
    /// many rooms there are.
    Rooms {
        rooms: &'a [(&'a str, usize)],
        count: usize,
    },
}

/// Where and when an event happened.
#[derive(Clone, Copy, Debug)]
pub struct Stamp<'a> {
    pub room: &'a str,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
}

/// The seed's plain-text line.
pub fn plain(line: &Line<'_>, out: &mut Vec<u8>) {
    let mut put = |parts: &[&str]| {
        parts
            .iter()
            .for_each(|p| out.extend_from_slice(p.as_bytes()))
    };
    match *line {
        Line::Message {
            from,
            text,
            me: false,
            ..
        } => put(&[from, ": ", text]),
        Line::Message {
            from,
            text,
            me: true,
            ..
        } => put(&["* ", from, " ", text]),
        Line::Join { from } => put(&[from, " joined"]),
        Line::Leave { from } => put(&[from, " left"]),
        Line::Nick { from, to } => put(&[from, " is now ", to]),
        Line::System { text, .. } => put(&["wschat: ", text]),
        Line::Error { text } => put(&["error: ", text]),
        Line::Presence {
            joined,
            left,
            count,
        } => put(&[&presence_text(joined, left, count)]),
    }
}

/// `3 users joined, 1 left (5002 here)`: the plain-text presence summary.
pub fn presence_text(joined: u32, left: u32, count: usize) -> String {
    let users = |n: u32| if n == 1 { "user" } else { "users" };
    let changes = match (joined, left) {
        (0, left) => format!("{left} {} left", users(left)),
        (joined, 0) => format!("{joined} {} joined", users(joined)),
        (joined, left) => format!("{joined} {} joined, {left} left", users(joined)),
    };
    format!("{changes} ({count} here)")
}

/// The JSON object of the `wschat.v1.json` protocol.
pub fn json(line: &Line<'_>, context: Stamp<'_>, out: &mut Vec<u8>) {
    let mut obj = Object::open(out);
    match *line {
        Line::Message {
            from,
            text,
            seq,
            me,
            history,
        } => {
            obj.str("type", if history { "history" } else { "message" });
            obj.str("room", context.room);
            obj.str("from", from);
            obj.str("text", text);
            obj.num("ts", context.ts);
            obj.num("seq", seq);
            if me {
                obj.raw("me", "true");
            }
        }
        Line::Join { from } | Line::Leave { from } => {
            obj.str(
                "type",
                if matches!(line, Line::Join { .. }) {
                    "join"
                } else {
                    "leave"
                },
            );
            obj.str("room", context.room);
            obj.str("from", from);
            obj.num("ts", context.ts);
        }
        Line::Nick { from, to } => {
            obj.str("type", "nick");
            obj.str("room", context.room);
            obj.str("from", from);
            obj.str("text", to);
            obj.num("ts", context.ts);
        }
        Line::System { text, extra } => {
            obj.str("type", "system");
            obj.str("room", context.room);
            obj.str("text", text);
            match extra {
                Extra::None => {}
                Extra::Welcome { you, users, count } => {
                    obj.str("you", you);
                    obj.strs("users", users);
                    obj.num("count", count as u64);
                }
                Extra::Users { users, count } => {
                    obj.strs("users", users);
                    obj.num("count", count as u64);
                }
                Extra::Rooms { rooms, count } => {
                    obj.rooms(rooms);
                    obj.num("count", count as u64);
                }
            }
            obj.num("ts", context.ts);
        }
        Line::Error { text } => {
            obj.str("type", "error");
            obj.str("room", context.room);
            obj.str("text", text);
            obj.num("ts", context.ts);
        }
        Line::Presence {
            joined,
            left,
            count,
        } => {
            obj.str("type", "presence");
            obj.str("room", context.room);
            obj.num("joined", u64::from(joined));
            obj.num("left", u64::from(left));
            obj.num("count", count as u64);
            obj.num("ts", context.ts);
        }
    }
    obj.close();
}

/// The most bytes [`json`] can take for a `history` event of `from` and
/// `text` (with a frame header): every control character counted as a
/// six-byte `\u00XX` escape. History is bounded by this, so that what a
/// JSON newcomer is replayed never exceeds the history's byte bound.
pub fn history_json_bound(from: &str, text: &str) -> usize {
    /// `{"type":"history","room":"…32…","from":,"text":,"ts":…20…,"seq":…20…,"me":true}`
    /// and a 10-byte frame header, rounded up.
    const FIXED: usize = 200;
    FIXED + json_string_bound(from) + json_string_bound(text)
}

/// The most bytes a JSON string of `s` takes, quotes included. It runs
/// on every message remembered, so it counts in byte-wide lanes (blocks of
/// 255 bytes cannot overflow a `u8` count), which vectorises 16 or 32
/// bytes at a time; counting straight into `usize` ran four bytes at a
/// time and cost a fifth of the server's CPU on 64 KiB messages.
fn json_string_bound(s: &str) -> usize {
    let mut escaped = 0;
    for block in s.as_bytes().chunks(255) {
        let (mut controls, mut quotes) = (0u8, 0u8);
        for &b in block {
            controls += u8::from(b < 0x20);
            quotes += u8::from(b == b'"' || b == b'\\');
        }
        escaped += usize::from(controls) * 5 + usize::from(quotes);
    }
    2 + s.len() + escaped
}

/// Writes one flat JSON object; string values are escaped by serde_json.
struct Object<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut Vec<u8>) -> Object<'o> {
        out.push(b'{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, value: &str) {
        // Writing into a Vec cannot fail, and a str always serializes.
        let _ = serde_json::to_writer(&mut *self.out, value);
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        self.string(value);
    }

    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.extend_from_slice(value.to_string().as_bytes());
    }

    fn raw(&mut self, key: &str, value: &str) {
        self.key(key);
        self.out.extend_from_slice(value.as_bytes());
    }

    fn strs(&mut self, key: &str, values: &[&str]) {
        self.key(key);
        self.out.push(b'[');
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.string(value);
        }
        self.out.push(b']');
    }

    fn rooms(&mut self, rooms: &[(&str, usize)]) {
        self.key("rooms");
        self.out.push(b'[');
        for (i, (name, users)) in rooms.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(b"{\"name\":");
            self.string(name);
            self.out
                .extend_from_slice(format!(",\"users\":{users}}}").as_bytes());
        }
        self.out.push(b']');
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_history_bound_holds_for_the_worst_text() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        for text in [
            "",
            "plain words",
            "\"quoted\" \\ slash",
            &controls,
            "é ✓ 😀",
        ] {
            for from in ["User 51234", "\u{1}\"x"] {
                let line = Line::Message {
                    from,
                    text,
                    seq: u64::MAX,
                    me: true,
                    history: true,
                };
                let stamp = Stamp {
                    room: "a-room-name-of-32-characters-xx_",
                    ts: u64::MAX,
                };
                let mut out = Vec::new();
                json(&line, stamp, &mut out);
                assert!(
                    out.len() + 10 <= history_json_bound(from, text),
                    "{} > bound for {text:?}",
                    out.len()
                );
            }
        }
    }

    use super::*;
    use serde_json::{json as j, Value};

    const AT: Stamp<'static> = Stamp {
        room: "rust",
        ts: 1_795_752_000_000,
    };

    fn as_json(line: Line<'_>) -> Value {
        let mut out = Vec::new();
        json(&line, AT, &mut out);
        serde_json::from_slice(&out).expect("valid JSON")
    }

    fn as_plain(line: Line<'_>) -> String {
        let mut out = Vec::new();
        plain(&line, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn message(me: bool, history: bool) -> Line<'static> {
        Line::Message {
            from: "alice",
            text: "hi <b>\"all\"</b>\n",
            seq: 42,
            me,
            history,
        }
    }

    #[test]
    fn plain_lines_are_the_seeds() {
        assert_eq!(
            as_plain(message(false, false)),
            "alice: hi <b>\"all\"</b>\n"
        );
        assert_eq!(as_plain(message(false, true)), "alice: hi <b>\"all\"</b>\n");
        assert_eq!(
            as_plain(message(true, false)),
            "* alice hi <b>\"all\"</b>\n"
        );
        assert_eq!(as_plain(Line::Join { from: "User 5" }), "User 5 joined");
        assert_eq!(as_plain(Line::Leave { from: "bob" }), "bob left");
        assert_eq!(
            as_plain(Line::Nick {
                from: "User 5",
                to: "bob"
            }),
            "User 5 is now bob"
        );
        assert_eq!(as_plain(Line::Error { text: "nope" }), "error: nope");
        assert_eq!(
            as_plain(Line::System {
                text: "hello",
                extra: Extra::None
            }),
            "wschat: hello"
        );
    }

    #[test]
    fn json_objects() {
        assert_eq!(
            as_json(message(false, false)),
            j!({"type":"message","room":"rust","from":"alice","text":"hi <b>\"all\"</b>\n","ts":1_795_752_000_000u64,"seq":42})
        );
        assert_eq!(as_json(message(true, true))["type"], "history");
        assert_eq!(as_json(message(true, true))["me"], true);
        assert_eq!(
            as_json(Line::Join { from: "User 5" }),
            j!({"type":"join","room":"rust","from":"User 5","ts":1_795_752_000_000u64})
        );
        assert_eq!(as_json(Line::Leave { from: "x" })["type"], "leave");
        assert_eq!(
            as_json(Line::Nick {
                from: "User 5",
                to: "bob"
            })["text"],
            "bob"
        );
        assert_eq!(as_json(Line::Error { text: "e" })["type"], "error");
        let users = ["alice", "User \"7\""];
        let welcome = as_json(Line::System {
            text: "hi",
            extra: Extra::Welcome {
                you: "alice",
                users: &users,
                count: 7,
            },
        });
        assert_eq!(welcome["you"], "alice");
        assert_eq!(welcome["users"], j!(["alice", "User \"7\""]));
        assert_eq!(welcome["count"], 7, "the list may be a part of the room");
        let rooms = [("lobby", 2), ("rust", 0)];
        let listed = as_json(Line::System {
            text: "r",
            extra: Extra::Rooms {
                rooms: &rooms,
                count: 3,
            },
        });
        assert_eq!(
            listed["rooms"],
            j!([{"name":"lobby","users":2},{"name":"rust","users":0}])
        );
        assert_eq!(listed["count"], 3);
        let who = as_json(Line::System {
            text: "w",
            extra: Extra::Users {
                users: &[],
                count: 0,
            },
        });
        assert_eq!((&who["users"], &who["count"]), (&j!([]), &j!(0)));
    }

    #[test]
    fn presence_summaries() {
        let line = |joined, left| Line::Presence {
            joined,
            left,
            count: 5002,
        };
        assert_eq!(as_plain(line(3, 1)), "3 users joined, 1 left (5002 here)");
        assert_eq!(as_plain(line(1, 0)), "1 user joined (5002 here)");
        assert_eq!(as_plain(line(0, 2)), "2 users left (5002 here)");
        assert_eq!(as_plain(line(1, 1)), "1 user joined, 1 left (5002 here)");
        assert_eq!(
            as_json(line(3, 1)),
            j!({"type":"presence","room":"rust","joined":3,"left":1,"count":5002,"ts":1_795_752_000_000u64})
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let v = as_json(Line::Message {
            from: "a",
            text: "\u{0}\u{1f}\u{2028}",
            seq: 1,
            me: false,
            history: false,
        });
        assert_eq!(v["text"], "\u{0}\u{1f}\u{2028}");
    }
}
