//! The chat's own encoding of an event for other nodes (what the bus
//! carries as opaque bytes): which node and peer it came from, when, who,
//! and what.
//!
//! ```text
//! KIND US NODE US PEER US TS US FLAGS US FROM US BODY
//! ```
//!
//! `US` is the ASCII unit separator (0x1F). Every field but the last is
//! free of it: `KIND` is one letter, `NODE` a node id
//! (`[A-Za-z0-9_.-]`), `PEER` and `TS` decimal, `FLAGS` one digit (1: a `/me` action, 2: said by a
//! verified user, summed), `FROM` a
//! user name (names hold no control characters, see `names`); `BODY`, the
//! rest, is anything (a message's text, a new nickname, binary bytes).
//! An event that does not parse is dropped by the receiver, never
//! trusted in part.

use std::str;

use crate::service::PeerId;

const US: u8 = 0x1f;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A chat message or `/me` action (`BODY` the text): sequenced.
    Message,
    /// A user joined (`FROM`); unsequenced, as are the rest.
    Join,
    /// A user left (`FROM`).
    Leave,
    /// `FROM` is now called `BODY`.
    Nick,
    /// A binary message (`BODY` the bytes).
    Binary,
    /// A private message from `FROM`: `BODY` is the recipient's name, a
    /// unit separator, and the text.
    Private,
    /// `FROM` came back here with a resume token issued on another node:
    /// `BODY` is that node, a unit separator, and the hex SHA-1 digest of
    /// the token. Its old node drops it without a leave; every node moves
    /// it in its roster without a word.
    Resumed,
    /// The verified user `FROM` took its name from an anonymous holder on
    /// another node: `BODY` is that node, a unit separator, and the
    /// holder's name. The holder's node renames it, as one node does.
    Taken,
}

impl Kind {
    fn letter(self) -> u8 {
        match self {
            Kind::Message => b'm',
            Kind::Join => b'j',
            Kind::Leave => b'l',
            Kind::Nick => b'n',
            Kind::Binary => b'b',
            Kind::Private => b'p',
            Kind::Resumed => b'r',
            Kind::Taken => b't',
        }
    }

    fn from_letter(letter: &[u8]) -> Option<Kind> {
        Some(match letter {
            b"m" => Kind::Message,
            b"j" => Kind::Join,
            b"l" => Kind::Leave,
            b"n" => Kind::Nick,
            b"b" => Kind::Binary,
            b"p" => Kind::Private,
            b"r" => Kind::Resumed,
            b"t" => Kind::Taken,
            _ => return None,
        })
    }
}

/// One event, as sent or as received (borrowing the bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relayed<'a> {
    pub kind: Kind,
    pub node: &'a str,
    /// The sender's peer id on its node (`PeerId::MAX` when no peer is
    /// meant: a post through the HTTP API).
    pub peer: PeerId,
    /// Milliseconds since the Unix epoch, on the sender's clock.
    pub ts: u64,
    pub me: bool,
    /// Said by a verified user (see `chat::auth`).
    pub verified: bool,
    pub from: &'a str,
    pub body: &'a [u8],
}

impl Relayed<'_> {
    /// The event's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.node.len() + self.from.len() + self.body.len());
        out.push(self.kind.letter());
        for field in [
            self.node.as_bytes(),
            self.peer.to_string().as_bytes(),
            self.ts.to_string().as_bytes(),
            &[b'0' + u8::from(self.me) + 2 * u8::from(self.verified)],
            self.from.as_bytes(),
        ] {
            out.push(US);
            out.extend_from_slice(field);
        }
        out.push(US);
        out.extend_from_slice(self.body);
        out
    }
}

/// The event in `bytes`, if they are one.
pub fn decode(bytes: &[u8]) -> Option<Relayed<'_>> {
    let mut fields = bytes.splitn(7, |&b| b == US);
    let kind = Kind::from_letter(fields.next()?)?;
    let node = str::from_utf8(fields.next()?).ok()?;
    let peer = decimal(fields.next()?)?;
    let ts = decimal(fields.next()?)?;
    let (me, verified) = match fields.next()? {
        &[flags @ b'0'..=b'3'] => ((flags - b'0') & 1 == 1, (flags - b'0') & 2 == 2),
        _ => return None,
    };
    let from = str::from_utf8(fields.next()?).ok()?;
    let body = fields.next()?;
    if node.is_empty() || from.chars().any(char::is_control) {
        return None;
    }
    Some(Relayed {
        kind,
        node,
        peer: usize::try_from(peer).ok()?,
        ts,
        me,
        verified,
        from,
        body,
    })
}

/// The body of a [`Kind::Private`] event: recipient and text.
pub fn private_body(to: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(to.len() + 1 + text.len());
    body.extend_from_slice(to.as_bytes());
    body.push(US);
    body.extend_from_slice(text.as_bytes());
    body
}

/// The recipient and the text of a [`Kind::Private`] body.
pub fn parse_private(body: &[u8]) -> Option<(&str, &str)> {
    let at = body.iter().position(|&b| b == US)?;
    let to = str::from_utf8(&body[..at]).ok()?;
    let text = str::from_utf8(&body[at + 1..]).ok()?;
    Some((to, text))
}

/// The body of a [`Kind::Resumed`] event: the old node and the digest.
pub fn resumed_body(node: &str, digest: &str) -> Vec<u8> {
    private_body(node, digest)
}

/// The old node and the token's digest of a [`Kind::Resumed`] body.
pub fn parse_resumed(body: &[u8]) -> Option<(&str, &str)> {
    parse_private(body).filter(|(node, digest)| !node.is_empty() && !digest.is_empty())
}

/// The body of a [`Kind::Taken`] event: the holder's node and name.
pub fn taken_body(node: &str, holder: &str) -> Vec<u8> {
    private_body(node, holder)
}

/// The holder's node and name of a [`Kind::Taken`] body.
pub fn parse_taken(body: &[u8]) -> Option<(&str, &str)> {
    parse_private(body).filter(|(node, holder)| !node.is_empty() && !holder.is_empty())
}

/// A decimal as [`Relayed::encode`] writes it (no sign, no leading zero),
/// so that one event has one encoding.
fn decimal(field: &[u8]) -> Option<u64> {
    // Up to u64::MAX's 20 digits (a peer id of `PeerId::MAX`, "no peer",
    // included); a larger number fails the parse.
    if field.is_empty() || field.len() > 20 || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if field.len() > 1 && field[0] == b'0' {
        return None;
    }
    str::from_utf8(field).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body: &[u8]) -> Relayed<'_> {
        Relayed {
            kind: Kind::Message,
            node: "n1",
            peer: 7,
            ts: 1_700_000_000_000,
            me: true,
            verified: false,
            from: "User 51234@n1",
            body,
        }
    }

    #[test]
    fn round_trips_any_body() {
        for body in [&b""[..], b"hello", b"a\x1fb\x1f", b"\xff\x00"] {
            let event = sample(body);
            assert_eq!(decode(&event.encode()), Some(event));
        }
        for kind in [
            Kind::Join,
            Kind::Leave,
            Kind::Nick,
            Kind::Binary,
            Kind::Private,
            Kind::Resumed,
            Kind::Taken,
        ] {
            let event = Relayed {
                kind,
                ..sample(b"x")
            };
            assert_eq!(decode(&event.encode()), Some(event));
        }
        for (me, verified, digit) in [
            (false, false, "0"),
            (true, false, "1"),
            (false, true, "2"),
            (true, true, "3"),
        ] {
            let event = Relayed {
                me,
                verified,
                ..sample(b"x")
            };
            let bytes = event.encode();
            assert_eq!(bytes.split(|&b| b == US).nth(4), Some(digit.as_bytes()));
            assert_eq!(decode(&bytes), Some(event));
        }
        let nobody = Relayed {
            peer: PeerId::MAX,
            ..sample(b"x")
        };
        assert_eq!(decode(&nobody.encode()), Some(nobody), "no peer (the API)");
        let mut bad = sample(b"x").encode();
        let flags = bad
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == US)
            .nth(3)
            .map(|(i, _)| i + 1)
            .unwrap();
        bad[flags] = b'4';
        assert_eq!(decode(&bad), None, "an unknown flag digit is not trusted");
    }

    #[test]
    fn private_bodies_name_the_recipient() {
        let body = private_body("User 1@n2", "psst\x1fstill text");
        assert_eq!(
            parse_private(&body),
            Some(("User 1@n2", "psst\x1fstill text"))
        );
        assert_eq!(parse_private(b"no separator"), None);
    }

    #[test]
    fn a_resume_names_the_old_node_and_the_digest() {
        let bytes = b"r\x1fn2\x1f3\x1f1\x1f0\x1falice\x1fn1\x1fab12";
        let event = decode(bytes).expect("an event");
        assert_eq!(
            (event.kind, event.node, event.from),
            (Kind::Resumed, "n2", "alice")
        );
        assert_eq!(parse_resumed(event.body), Some(("n1", "ab12")));
        assert_eq!(resumed_body("n1", "ab12"), b"n1\x1fab12");
        assert_eq!(parse_resumed(b"\x1fab12"), None, "no node");
        assert_eq!(parse_resumed(b"n1\x1f"), None, "no digest");
        assert_eq!(parse_resumed(b"n1"), None);
    }

    #[test]
    fn a_take_names_the_holder_s_node_and_name() {
        let bytes = b"t\x1fn1\x1f7\x1f1\x1f0\x1falice\x1fn2\x1fAlice";
        let event = decode(bytes).expect("an event");
        assert_eq!((event.kind, event.from), (Kind::Taken, "alice"));
        assert_eq!(parse_taken(event.body), Some(("n2", "Alice")));
        assert_eq!(taken_body("n2", "Alice"), b"n2\x1fAlice");
        assert_eq!(parse_taken(b"\x1fAlice"), None, "no node");
        assert_eq!(parse_taken(b"n2\x1f"), None, "no holder");
    }

    #[test]
    fn refuses_what_is_not_an_event() {
        let good = sample(b"hi").encode();
        for cut in 0..good.len() - 2 {
            // Cut before the body's separator: a field is missing.
            if good[..cut].iter().filter(|&&b| b == US).count() < 6 {
                assert_eq!(decode(&good[..cut]), None, "{cut}");
            }
        }
        assert_eq!(decode(b"x\x1fn\x1f1\x1f1\x1f0\x1fa\x1fb"), None);
        assert_eq!(decode(b"m\x1fn\x1f-1\x1f1\x1f0\x1fa\x1fb"), None);
        assert_eq!(decode(b"m\x1fn\x1f1\x1f1\x1f4\x1fa\x1fb"), None);
        assert_eq!(decode(b"m\x1f\x1f1\x1f1\x1f0\x1fa\x1fb"), None);
        assert_eq!(decode(b"m\x1fn\x1f1\x1f1\x1f0\x1fa\nb\x1fb"), None);
        assert_eq!(
            decode(b"m\x1fn\x1f01\x1f1\x1f0\x1fa\x1fb"),
            None,
            "one encoding"
        );
        assert_eq!(decode(b"m\x1fn\x1f1\x1f1\x1f0\x1fa\x7f\x1fb"), None);
        assert!(decode(b"m\x1fn\x1f0\x1f0\x1f0\x1fa\x1fb").is_some());
        assert!(decode(b"m\x1fn\x1f1\x1f1\x1f0\x1fa\x1fb").is_some());
    }
}
