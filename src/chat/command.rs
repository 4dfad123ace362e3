//! What a user asked for: a message to the room, or a command.
//!
//! Plain-text clients type commands IRC-style (`/nick alice`); a text
//! starting with `//` is a message with one leading slash. JSON clients
//! send objects (`{"type":"message","text":"hi"}`), whose message text is
//! always literal, or `{"type":"command","text":"/who"}` for anything
//! typed. Both end up as one [`Request`].

use serde::Deserialize;

pub use super::names::MAX_NICK;

/// One thing a user asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Say(&'a str),
    Me(&'a str),
    Nick(&'a str),
    Who,
    WhoAmI,
    /// A private message to the user of that name in the room.
    Msg {
        to: &'a str,
        text: &'a str,
    },
    Rooms,
    Help,
    /// A fresh token for a verified user (`/token JWT`).
    Token(&'a str),
    /// Not understood: the reason goes back to the sender alone.
    Invalid(String),
}

/// Parses a line typed by a plain-text client.
pub fn parse_typed(text: &str) -> Request<'_> {
    match text.strip_prefix('/') {
        None => Request::Say(text),
        Some(rest) if rest.starts_with('/') => Request::Say(rest),
        Some(rest) => parse_command(rest),
    }
}

/// Parses the part after the `/` of a typed command.
fn parse_command(rest: &str) -> Request<'_> {
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (rest, ""),
    };
    let no_argument = |request: Request<'static>| {
        if arg.is_empty() {
            request
        } else {
            Request::Invalid(format!("/{name} takes no argument"))
        }
    };
    match name.to_ascii_lowercase().as_str() {
        "nick" if arg.is_empty() => Request::Invalid("usage: /nick NAME".into()),
        "nick" => Request::Nick(arg),
        "me" if arg.is_empty() => Request::Invalid("usage: /me ACTION".into()),
        "me" => Request::Me(arg),
        "who" => no_argument(Request::Who),
        "whoami" => no_argument(Request::WhoAmI),
        "msg" => parse_msg(arg),
        "rooms" => no_argument(Request::Rooms),
        "help" => no_argument(Request::Help),
        "token" if arg.is_empty() => Request::Invalid("usage: /token JWT".into()),
        "token" => Request::Token(arg),
        _ => Request::Invalid(format!("unknown command /{name} (try /help)")),
    }
}

/// `/msg NAME text`; a default name `User 51234` (in cluster mode
/// `User 51234@NODE`) is one name.
fn parse_msg(arg: &str) -> Request<'_> {
    const USAGE: &str = "usage: /msg NAME TEXT";
    let default_name = arg
        .get(..5)
        .filter(|p| p.eq_ignore_ascii_case("user "))
        .map(|_| {
            let digits = arg[5..].bytes().take_while(u8::is_ascii_digit).count();
            let end = 5 + digits;
            let node = match arg[end..].strip_prefix('@') {
                Some(rest) => {
                    let id = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
                    1 + rest.bytes().take_while(id).count()
                }
                None => 0,
            };
            end + node
        })
        .filter(|&end| end > 5 && arg[end..].starts_with(char::is_whitespace));
    let (to, text) = match default_name {
        Some(end) => (&arg[..end], &arg[end..]),
        None => match arg.split_once(char::is_whitespace) {
            Some((to, text)) => (to, text),
            None => return Request::Invalid(USAGE.into()),
        },
    };
    let text = text.trim_start();
    if to.is_empty() || text.is_empty() {
        return Request::Invalid(USAGE.into());
    }
    Request::Msg { to, text }
}

/// What a JSON client may send.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum JsonRequest {
    Message { text: String },
    Command { text: String },
    Nick { name: String },
    Me { text: String },
    Who,
    Whoami,
    Msg { to: String, text: String },
    Rooms,
    Help,
    Token { token: String },
}

/// A JSON client's request, owning its strings (they were unescaped).
#[derive(Debug, PartialEq, Eq)]
pub struct OwnedRequest(Kind, String, String);

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Say,
    Typed,
    Nick,
    Me,
    Who,
    WhoAmI,
    Msg,
    Rooms,
    Help,
    Token,
    Invalid,
}

impl OwnedRequest {
    /// Borrows it as a [`Request`].
    pub fn as_request(&self) -> Request<'_> {
        let text = self.1.as_str();
        match self.0 {
            Kind::Say => Request::Say(text),
            // A command object holds what a user typed at a prompt, so
            // `//text` is the literal `/text`, as when typed; it must start
            // with `/`, or it would just be a message.
            Kind::Typed if text.starts_with('/') => parse_typed(text),
            Kind::Typed => Request::Invalid("a command starts with /".into()),
            Kind::Nick => Request::Nick(text.trim()),
            Kind::Me => Request::Me(text),
            Kind::Who => Request::Who,
            Kind::WhoAmI => Request::WhoAmI,
            Kind::Msg if text.is_empty() => Request::Invalid("a private message has text".into()),
            Kind::Msg => Request::Msg {
                to: self.2.trim(),
                text,
            },
            Kind::Rooms => Request::Rooms,
            Kind::Help => Request::Help,
            Kind::Token => Request::Token(text.trim()),
            Kind::Invalid => Request::Invalid(text.to_owned()),
        }
    }
}

/// Parses a JSON client's message.
pub fn parse_json(text: &str) -> OwnedRequest {
    let one = |kind, text| OwnedRequest(kind, text, String::new());
    match serde_json::from_str::<JsonRequest>(text) {
        Ok(JsonRequest::Message { text }) => one(Kind::Say, text),
        Ok(JsonRequest::Command { text }) => one(Kind::Typed, text),
        Ok(JsonRequest::Nick { name }) => one(Kind::Nick, name),
        Ok(JsonRequest::Me { text }) => one(Kind::Me, text),
        Ok(JsonRequest::Who) => one(Kind::Who, String::new()),
        Ok(JsonRequest::Whoami) => one(Kind::WhoAmI, String::new()),
        Ok(JsonRequest::Msg { to, text }) => OwnedRequest(Kind::Msg, text, to),
        Ok(JsonRequest::Rooms) => one(Kind::Rooms, String::new()),
        Ok(JsonRequest::Help) => one(Kind::Help, String::new()),
        Ok(JsonRequest::Token { token }) => one(Kind::Token, token),
        Err(e) => one(
            Kind::Invalid,
            format!(
                "expected a JSON request such as {{\"type\":\"message\",\"text\":\"hi\"}} ({e})"
            ),
        ),
    }
}

/// The `/help` text.
pub const HELP: &str = "commands: /nick NAME (set your name), /who (users in this room), \
/whoami (your name, room, its last message number and your resume token), \
/msg NAME TEXT (a private message to one user in this room), \
/rooms (rooms and their users), /me ACTION (an action line), \
/token JWT (a fresh token, for verified users), /help; \
start a message with // to send a leading /";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_commands() {
        assert_eq!(parse_typed("hello"), Request::Say("hello"));
        assert_eq!(
            parse_typed("//not a command"),
            Request::Say("/not a command")
        );
        assert_eq!(parse_typed("/nick  alice "), Request::Nick("alice"));
        assert_eq!(parse_typed("/NICK bob"), Request::Nick("bob"));
        assert_eq!(parse_typed("/me waves hello"), Request::Me("waves hello"));
        assert_eq!(parse_typed("/who"), Request::Who);
        assert_eq!(parse_typed("/whoami"), Request::WhoAmI);
        assert_eq!(
            parse_typed("/msg bob hi there"),
            Request::Msg {
                to: "bob",
                text: "hi there"
            }
        );
        assert_eq!(
            parse_typed("/msg User 51234  hi"),
            Request::Msg {
                to: "User 51234",
                text: "hi"
            }
        );
        assert_eq!(
            parse_typed("/msg User 51234@n-2.x hi"),
            Request::Msg {
                to: "User 51234@n-2.x",
                text: "hi"
            }
        );
        assert_eq!(
            parse_typed("/msg user5 x"),
            Request::Msg {
                to: "user5",
                text: "x"
            }
        );
        assert_eq!(
            parse_typed("/msg Userx hi"),
            Request::Msg {
                to: "Userx",
                text: "hi"
            }
        );
        for bad in ["/msg", "/msg bob", "/msg bob   "] {
            assert_eq!(
                parse_typed(bad),
                Request::Invalid("usage: /msg NAME TEXT".into()),
                "{bad}"
            );
        }
        assert_eq!(parse_typed("/rooms"), Request::Rooms);
        assert_eq!(parse_typed("/help"), Request::Help);
        assert_eq!(parse_typed(""), Request::Say(""));
    }

    #[test]
    fn malformed_and_unknown_commands() {
        assert_eq!(
            parse_typed("/nick"),
            Request::Invalid("usage: /nick NAME".into())
        );
        assert_eq!(
            parse_typed("/me "),
            Request::Invalid("usage: /me ACTION".into())
        );
        assert_eq!(
            parse_typed("/who is there"),
            Request::Invalid("/who takes no argument".into())
        );
        assert_eq!(
            parse_typed("/foo bar"),
            Request::Invalid("unknown command /foo (try /help)".into())
        );
        assert!(matches!(parse_typed("/"), Request::Invalid(_)));
    }

    #[test]
    fn json_requests() {
        let r = |s: &str| parse_json(s);
        assert_eq!(
            r(r#"{"type":"message","text":"/lit"}"#).as_request(),
            Request::Say("/lit")
        );
        assert_eq!(
            r(r#"{"type":"command","text":"/nick al"}"#).as_request(),
            Request::Nick("al")
        );
        assert_eq!(
            r(r#"{"type":"command","text":"//x"}"#).as_request(),
            Request::Say("/x")
        );
        assert_eq!(
            r(r#"{"type":"nick","name":"al"}"#).as_request(),
            Request::Nick("al")
        );
        assert_eq!(
            r(r#"{"type":"me","text":"waves"}"#).as_request(),
            Request::Me("waves")
        );
        assert_eq!(r(r#"{"type":"who"}"#).as_request(), Request::Who);
        assert_eq!(r(r#"{"type":"whoami"}"#).as_request(), Request::WhoAmI);
        assert_eq!(
            r(r#"{"type":"msg","to":"bob","text":"/not a command"}"#).as_request(),
            Request::Msg {
                to: "bob",
                text: "/not a command"
            }
        );
        assert!(matches!(
            r(r#"{"type":"msg","to":"bob","text":""}"#).as_request(),
            Request::Invalid(_)
        ));
        assert_eq!(r(r#"{"type":"rooms"}"#).as_request(), Request::Rooms);
        assert_eq!(r(r#"{"type":"help"}"#).as_request(), Request::Help);
        assert_eq!(
            r(r#"{"type":"message","text":"a\u00e9\n"}"#).as_request(),
            Request::Say("aé\n")
        );
        for bad in [
            "hi",
            "{}",
            r#"{"type":"message"}"#,
            r#"{"type":"shout","text":"x"}"#,
            r#"{"type":"command","text":"no slash"}"#,
            r#"{"type":"message","text":"x","extra":1}"#,
            "[1,2]",
        ] {
            assert!(matches!(r(bad).as_request(), Request::Invalid(_)), "{bad}");
        }
    }
}
