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
        /// The sender's name comes from a valid token (JSON says so).
        verified: bool,
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
    /// A private message from `from` to `to`; `sent` in the copy its
    /// sender gets.
    Private {
        from: &'a str,
        to: &'a str,
        text: &'a str,
        sent: bool,
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
        /// Those of `users` who are verified (omitted when none).
        verified: &'a [&'a str],
        /// The resume token (absent when resuming is off).
        resume: Option<&'a str>,
    },
    /// The `/whoami` reply: the recipient's name, the room's last
    /// sequence number, and its resume token if it has one.
    WhoAmI {
        you: &'a str,
        last_seq: u64,
        resume: Option<&'a str>,
    },
    /// The `/who` reply: some of the users, and how many there are.
    Users {
        users: &'a [&'a str],
        count: usize,
        /// Those of `users` who are verified.
        verified: &'a [&'a str],
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

/// What begins each continuation line of a multi-line text in plain
/// text: a line break, two spaces, a bar and a space. No event line
/// starts with a space (names have none, and every other line begins with
/// a name, `wschat: `, `error: `, `* `, `[private` or a digit), so a
/// continuation can never pass for a line of its own or another speaker.
pub const CONTINUATION: &str = "\n  | ";

/// What plain text shows instead of a control or invisible formatting
/// character: U+FFFD REPLACEMENT CHARACTER.
pub const REPLACEMENT: char = '\u{FFFD}';

/// How a character of user text is shown in plain text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Care {
    /// As it is.
    Keep,
    /// A line break: shown as [`CONTINUATION`].
    Break,
    /// Shown as this character instead.
    Replace(char),
}

/// How `c` is shown in plain text. Line breaks are LF, CR (CRLF is one
/// break), NEL U+0085, LS U+2028 and PS U+2029. A tab is a space. Every
/// other control character (C0, DEL, C1: among them ESC, which starts the
/// terminal escape sequences that clear screens and set titles) and every
/// format character (general category Cf: bidi embeddings, overrides,
/// isolates and marks, zero-width space, word joiner, BOM, soft hyphen,
/// tags, interlinear annotations...) is U+FFFD, except the zero-width
/// joiner and non-joiner that emoji sequences and Persian need.
#[inline]
fn care(c: char) -> Care {
    match c {
        '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}' => Care::Break,
        '\t' => Care::Replace(' '),
        '\u{200C}' | '\u{200D}' => Care::Keep,
        c if c.is_control() || is_format(c) => Care::Replace(REPLACEMENT),
        _ => Care::Keep,
    }
}

/// General category Cf (as in the `unicode-properties` tables, Unicode
/// 16 to 18 alike), written out so that testing a
/// character is a few comparisons, not a table search; a test checks it
/// against the `unicode-properties` tables.
#[inline]
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{600}'..='\u{605}'
            | '\u{61C}'
            | '\u{6DD}'
            | '\u{70F}'
            | '\u{890}'..='\u{891}'
            | '\u{8E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

/// Whether a UTF-8 byte may begin a character that [`care`] does not
/// keep: a C0 control or DEL, or the lead byte of a C1 control, a line
/// or paragraph separator or a format character (U+0080-00AD, U+0600-070F,
/// U+0890-08E2, U+180E, U+2000-206F, U+FEFF-FFFB, U+110BD-1D17A,
/// U+E0001-E007F). Arithmetic only, so the scan vectorises.
#[inline(always)]
fn suspicious(b: u8) -> u8 {
    // Primitive operators only (no `From` calls), so that even an
    // unoptimised build does this in a few instructions.
    ((b < 0x20)
        | (b == 0x7F)
        | (b == 0xC2)
        | (b == 0xD8)
        | (b == 0xDB)
        | (b == 0xDC)
        | (b == 0xE0)
        | (b == 0xE1)
        | (b == 0xE2)
        | (b == 0xEF)
        | (b == 0xF0)
        | (b == 0xF3)) as u8
}

/// Whether `s` may hold something plain text must not show as it is.
/// Printable ASCII is passed 64 bytes at a time, eight words tested at
/// once with arithmetic alone (a byte below 0x20, or 0x7F and above, sets
/// a high bit); from the first block that is not printable ASCII on, each
/// byte is tested by `suspicious`, 64 at a time and branch-free. Both
/// vectorise, and each block costs a handful of instructions even
/// unoptimised. False for ordinary text (ASCII, Latin, Cyrillic, Greek,
/// CJK...), which then goes out as it came, with no copy.
#[inline]
pub fn may_need_care(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut blocks = bytes.chunks_exact(64);
    let mut start = 0;
    for block in &mut blocks {
        if !printable_ascii(block) {
            return lead_bytes_need_care(&bytes[start..]);
        }
        start += 64;
    }
    lead_bytes_need_care(blocks.remainder())
}

/// Whether 64 bytes are all printable ASCII (0x20 to 0x7E).
#[inline(always)]
fn printable_ascii(block: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut flags = 0u64;
    for k in 0..8 {
        let mut word = [0u8; 8];
        word.copy_from_slice(&block[8 * k..8 * k + 8]);
        let w = u64::from_le_bytes(word);
        // A byte below 0x20 borrows into its high bit; one of 0x7F or
        // above has it set after adding one (or before).
        flags |= (w.wrapping_sub(ONES * 0x20) & !w) | w.wrapping_add(ONES) | w;
    }
    flags & HIGH == 0
}

/// The byte-by-byte test of [`may_need_care`].
#[inline]
fn lead_bytes_need_care(bytes: &[u8]) -> bool {
    bytes
        .chunks(64)
        .any(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | suspicious(b)) != 0)
}

/// `text` as plain text shows it: itself when nothing in it needs care
/// (the usual case, no copy), else with each line break made a
/// [`CONTINUATION`] and each control or format character replaced (see
/// `care`).
pub fn safe(text: &str) -> std::borrow::Cow<'_, str> {
    if !may_need_care(text) || text.chars().all(|c| care(c) == Care::Keep) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match care(c) {
            Care::Keep => out.push(c),
            Care::Replace(r) => out.push(r),
            Care::Break => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str(CONTINUATION);
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The seed's plain-text line, with every name and text made [`safe`].
pub fn plain(line: &Line<'_>, out: &mut Vec<u8>) {
    let mut put = |parts: &[&str]| {
        parts
            .iter()
            .for_each(|p| out.extend_from_slice(safe(p).as_bytes()))
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
        Line::Private {
            from,
            text,
            sent: false,
            ..
        } => put(&["[private] ", from, ": ", text]),
        Line::Private {
            to,
            text,
            sent: true,
            ..
        } => put(&["[private to ", to, "] ", text]),
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
            verified,
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
            if verified {
                obj.raw("verified", "true");
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
                Extra::Welcome {
                    you,
                    users,
                    count,
                    verified,
                    resume,
                } => {
                    obj.str("you", you);
                    obj.strs("users", users);
                    obj.num("count", count as u64);
                    if !verified.is_empty() {
                        obj.strs("verified", verified);
                    }
                    if let Some(resume) = resume {
                        obj.str("resume", resume);
                    }
                }
                Extra::WhoAmI {
                    you,
                    last_seq,
                    resume,
                } => {
                    obj.str("you", you);
                    obj.num("last_seq", last_seq);
                    if let Some(resume) = resume {
                        obj.str("resume", resume);
                    }
                }
                Extra::Users {
                    users,
                    count,
                    verified,
                } => {
                    obj.strs("users", users);
                    obj.num("count", count as u64);
                    if !verified.is_empty() {
                        obj.strs("verified", verified);
                    }
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
        Line::Private { from, to, text, .. } => {
            obj.str("type", "private");
            obj.str("room", context.room);
            obj.str("from", from);
            obj.str("to", to);
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
    /// `{"type":"history","room":"…32…","from":,"text":,"ts":…20…,"seq":…20…,"me":true,"verified":true}`
    /// and a 10-byte frame header, rounded up.
    const FIXED: usize = 200;
    FIXED + json_string_bound(from) + json_string_bound(text)
}

/// [`history_json_bound`] for a text of `len` bytes whose [`Scan`] found
/// `json_extra`.
pub fn history_json_bound_scanned(from: &str, len: usize, json_extra: usize) -> usize {
    const FIXED: usize = 200;
    FIXED + json_string_bound(from) + 2 + len + json_extra
}

/// The most bytes a JSON string of `s` takes, quotes included.
fn json_string_bound(s: &str) -> usize {
    2 + s.len() + scan(s).json_extra
}

/// What one pass over a message's bytes learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scan {
    /// Plain text may have to show it otherwise ([`may_need_care`]'s
    /// answer; [`safe`] decides).
    pub care: bool,
    /// The most bytes escaping adds to it in a JSON string: every control
    /// character counted as a six-byte `\u00XX`, `"` and `\` as two.
    pub json_extra: usize,
}

/// Scans a message once for both plain text and history: arithmetic on
/// each byte, without branches, 64 bytes at a time into byte-wide
/// counters (at most 64 per block, so they cannot overflow), so that it
/// vectorises on whole vector registers and runs at memory speed on every
/// message said. (With one `u32` counter per byte, as it once was, the
/// compiler widened every byte four times over and the scan cost a third
/// of the server's time on 64 KiB messages.)
pub fn scan(text: &str) -> Scan {
    let bytes = text.as_bytes();
    let blocks = bytes.chunks_exact(64);
    let tail = blocks.remainder();
    let (mut flags, mut extra) = (0u8, 0usize);
    for block in blocks {
        let (block_flags, controls, doubled) = scan_block(block);
        flags |= block_flags;
        extra += usize::from(controls) * 5 + usize::from(doubled);
    }
    let (tail_flags, controls, doubled) = scan_block(tail);
    flags |= tail_flags;
    extra += usize::from(controls) * 5 + usize::from(doubled);
    Scan {
        care: flags != 0,
        json_extra: extra,
    }
}

/// For at most 64 bytes: whether any is [`suspicious`], how many are C0
/// controls (six bytes as `\u00XX` instead of one), and how many are `"`
/// or `\` (two bytes instead of one). A block of ASCII (no high bit in
/// any byte, as in most chat text) needs only the C0 and DEL tests; the
/// lead-byte tests run only on a block that has non-ASCII bytes.
#[inline(always)]
fn scan_block(block: &[u8]) -> (u8, u8, u8) {
    debug_assert!(block.len() <= 64);
    let (mut high, mut flags, mut controls, mut doubled) = (0u8, 0u8, 0u8, 0u8);
    for &b in block {
        high |= b;
        flags |= ((b < 0x20) | (b == 0x7F)) as u8;
        controls += (b < 0x20) as u8;
        doubled += ((b == b'"') | (b == b'\\')) as u8;
    }
    if high >= 0x80 {
        for &b in block {
            flags |= suspicious(b);
        }
    }
    (flags, controls, doubled)
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
                    verified: false,
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
            verified: false,
        }
    }

    #[test]
    fn plain_lines_are_the_seeds() {
        assert_eq!(
            as_plain(message(false, false)),
            "alice: hi <b>\"all\"</b>\n  | "
        );
        assert_eq!(
            as_plain(message(false, true)),
            "alice: hi <b>\"all\"</b>\n  | "
        );
        assert_eq!(
            as_plain(message(true, false)),
            "* alice hi <b>\"all\"</b>\n  | "
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
                verified: &[],
                resume: Some("ab"),
            },
        });
        assert_eq!(welcome["you"], "alice");
        assert_eq!(welcome["resume"], "ab");
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
                verified: &[],
            },
        });
        assert_eq!((&who["users"], &who["count"]), (&j!([]), &j!(0)));
    }

    #[test]
    fn private_messages_look_private_on_both_sides() {
        let line = |sent| Line::Private {
            from: "alice",
            to: "bob",
            text: "psst\nUser 2: x",
            sent,
        };
        assert_eq!(
            as_plain(line(false)),
            "[private] alice: psst\n  | User 2: x"
        );
        assert_eq!(as_plain(line(true)), "[private to bob] psst\n  | User 2: x");
        assert_eq!(
            as_json(line(false)),
            j!({"type":"private","room":"rust","from":"alice","to":"bob","text":"psst\nUser 2: x","ts":1_795_752_000_000u64})
        );
        assert_eq!(as_json(line(true)), as_json(line(false)));
        let me = as_json(Line::System {
            text: "t",
            extra: Extra::WhoAmI {
                you: "alice",
                last_seq: 42,
                resume: Some("00ff"),
            },
        });
        assert_eq!(
            (&me["you"], &me["last_seq"], &me["resume"]),
            (&j!("alice"), &j!(42), &j!("00ff"))
        );
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
            verified: false,
        });
        assert_eq!(v["text"], "\u{0}\u{1f}\u{2028}");
    }

    #[test]
    fn line_breaks_become_continuations_that_no_line_starts_with() {
        let cases = [
            (
                "ok\nUser 51954: I am definitely not bob",
                "ok\n  | User 51954: I am definitely not bob",
            ),
            ("a\r\nb", "a\n  | b"),
            ("a\rb", "a\n  | b"),
            ("a\n\rb", "a\n  | \n  | b"),
            ("a\u{85}b\u{2028}c\u{2029}d", "a\n  | b\n  | c\n  | d"),
            ("\n", "\n  | "),
            ("a\n\nb", "a\n  | \n  | b"),
        ];
        for (text, shown) in cases {
            assert_eq!(safe(text), shown, "{text:?}");
            let line = as_plain(Line::Message {
                from: "User 1",
                text,
                seq: 1,
                me: false,
                history: false,
                verified: false,
            });
            for continuation in line.split('\n').skip(1) {
                assert!(continuation.starts_with("  | "), "{line:?}");
            }
        }
    }

    #[test]
    fn controls_escapes_and_format_characters_are_replaced() {
        let cases = [
            (
                "\x1b[2J\x1b]0;pwned\x07",
                "\u{FFFD}[2J\u{FFFD}]0;pwned\u{FFFD}",
            ),
            ("tab\there", "tab here"),
            (
                "nul\0 del\x7f c1\u{9b}31m",
                "nul\u{FFFD} del\u{FFFD} c1\u{FFFD}31m",
            ),
            ("\u{202E}evil\u{202C}", "\u{FFFD}evil\u{FFFD}"),
            (
                "\u{2066}x\u{2069}\u{200E}\u{200F}\u{061C}",
                "\u{FFFD}x\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}",
            ),
            (
                "zero\u{200B}width\u{2060}\u{FEFF}",
                "zero\u{FFFD}width\u{FFFD}\u{FFFD}",
            ),
            ("soft\u{AD}hyphen", "soft\u{FFFD}hyphen"),
            ("tag\u{E0041}", "tag\u{FFFD}"),
            ("\u{FFF9}anno\u{FFFB}", "\u{FFFD}anno\u{FFFD}"),
            // Kept: joiners in emoji and Persian, and ordinary text.
            ("👨\u{200D}👩\u{200D}👧", "👨\u{200D}👩\u{200D}👧"),
            ("می\u{200C}خواهم", "می\u{200C}خواهم"),
            ("“quotes” — é ✓ 日本 Привет", "“quotes” — é ✓ 日本 Привет"),
        ];
        for (text, shown) in cases {
            assert_eq!(safe(text), shown, "{text:?}");
        }
    }

    #[test]
    fn ordinary_text_is_not_copied() {
        for text in ["Your message here..", "héllo back 🎉", "“x” — 日本", ""] {
            assert!(
                matches!(safe(text), std::borrow::Cow::Borrowed(_)),
                "{text:?}"
            );
        }
        assert!(!may_need_care(
            "Your message here.. plain ASCII, Привет, 日本語"
        ));
    }

    #[test]
    fn the_format_characters_are_those_of_the_unicode_tables() {
        use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            assert_eq!(
                is_format(c),
                c.general_category() == GeneralCategory::Format,
                "U+{:04X}",
                u32::from(c)
            );
        }
    }

    #[test]
    fn the_byte_scan_catches_every_character_that_needs_care() {
        let mut buf = [0u8; 4];
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if care(c) != Care::Keep {
                let first = c.encode_utf8(&mut buf).as_bytes()[0];
                assert_eq!(suspicious(first), 1, "U+{:04X}", u32::from(c));
            }
        }
    }

    /// `scan` against a byte-at-a-time reference, with each character of
    /// interest placed at every offset around the 64-byte block edges, in
    /// ASCII blocks and blocks that also hold harmless non-ASCII text.
    #[test]
    fn the_block_scan_agrees_with_a_byte_at_a_time_reference() {
        fn reference(text: &str) -> Scan {
            let bytes = text.as_bytes();
            Scan {
                care: bytes.iter().any(|&b| suspicious(b) == 1),
                json_extra: bytes
                    .iter()
                    .map(|&b| match b {
                        0x00..=0x1F => 5,
                        b'"' | b'\\' => 1,
                        _ => 0,
                    })
                    .sum(),
            }
        }
        for filler in ["a", "é"] {
            for special in [
                "\n", "\u{1b}", "\u{7f}", "\u{2028}", "\u{85}", "\"", "\\", "z",
            ] {
                for at in [0, 1, 62, 63, 64, 65, 127, 128, 190] {
                    let mut text: String = filler.repeat(at);
                    text.push_str(special);
                    text.push_str(&filler.repeat(70));
                    assert_eq!(
                        scan(&text),
                        reference(&text),
                        "{special:?} after {at} x {filler:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_plain_line_is_made_safe() {
        assert_eq!(
            as_plain(Line::Error {
                text: "unknown command /x\x1b[2J"
            }),
            "error: unknown command /x\u{FFFD}[2J"
        );
        assert_eq!(
            as_plain(Line::Message {
                from: "a",
                text: "waves\nUser 2: hi",
                seq: 1,
                me: true,
                history: false,
                verified: false,
            }),
            "* a waves\n  | User 2: hi"
        );
    }
}
