//! What a request's target asks for: which room, and where to resume.
//!
//! `/` and `/lobby` are the lobby; `/rust` is the room `rust`. A room name
//! is 1–32 characters from ASCII letters, digits, `-` and `_`, compared
//! case-insensitively and kept in lower case, so that `/Rust` and `/rust`
//! are one room and no name needs escaping anywhere it is shown. The query
//! may carry `since=SEQ`, the last sequence number a client saw, and
//! `resume=TOKEN`, the secret that gives a reconnecting client its name
//! back (32 hex digits), and `token=JWT`, a verified user's signed token
//! (see `chat::auth`; kept as it came, checked at admission).

/// The lobby's name.
pub const LOBBY: &str = "lobby";

/// The longest room name.
pub const MAX_ROOM_NAME: usize = 32;

/// A parsed request target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub room: String,
    pub since: Option<u64>,
    pub resume: Option<super::resume::Token>,
    pub token: Option<String>,
}

/// Why a target is refused; shown to the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetError {
    BadRoomName,
    BadSince,
    BadResume,
}

impl TargetError {
    pub fn reason(self) -> &'static str {
        match self {
            TargetError::BadRoomName => {
                "no such room: a room name is 1-32 ASCII letters, digits, - or _"
            }
            TargetError::BadSince => "since must be a sequence number",
            TargetError::BadResume => "resume must be a token of 32 hex digits",
        }
    }
}

/// Parses `/room?since=N`; other query parameters are ignored.
pub fn parse(target: &str) -> Result<Target, TargetError> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = path.strip_prefix('/').ok_or(TargetError::BadRoomName)?;
    let room = if name.is_empty() {
        LOBBY.to_owned()
    } else if valid_room_name(name) {
        name.to_ascii_lowercase()
    } else {
        return Err(TargetError::BadRoomName);
    };
    let (mut since, mut resume, mut token) = (None, None, None);
    for pair in query.split('&') {
        if let Some(value) = pair.strip_prefix("since=") {
            since = Some(value.parse().map_err(|_| TargetError::BadSince)?);
        } else if let Some(value) = pair.strip_prefix("resume=") {
            resume = Some(super::resume::parse(value).ok_or(TargetError::BadResume)?);
        } else if let Some(value) = pair.strip_prefix("token=") {
            token = Some(value.to_owned());
        }
    }
    Ok(Target {
        room,
        since,
        resume,
        token,
    })
}

fn valid_room_name(name: &str) -> bool {
    (1..=MAX_ROOM_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(target: &str) -> Result<String, TargetError> {
        parse(target).map(|t| t.room)
    }

    #[test]
    fn rooms_from_paths() {
        assert_eq!(room("/").unwrap(), "lobby");
        assert_eq!(room("/lobby").unwrap(), "lobby");
        assert_eq!(room("/Rust").unwrap(), "rust");
        assert_eq!(room("/a-b_C9").unwrap(), "a-b_c9");
        assert_eq!(room(&format!("/{}", "x".repeat(32))).unwrap().len(), 32);
    }

    #[test]
    fn bad_room_names() {
        for bad in ["", "rust", "/a/b", "/a b", "/%41", "/é", "/a.b", "/../x"] {
            assert_eq!(room(bad), Err(TargetError::BadRoomName), "{bad:?}");
        }
        assert_eq!(
            room(&format!("/{}", "x".repeat(33))),
            Err(TargetError::BadRoomName)
        );
    }

    #[test]
    fn since() {
        assert_eq!(parse("/rust?since=1234").unwrap().since, Some(1234));
        assert_eq!(parse("/?x=1&since=0&y").unwrap().since, Some(0));
        assert_eq!(parse("/rust").unwrap().since, None);
        assert_eq!(parse("/rust?since=-1"), Err(TargetError::BadSince));
        assert_eq!(parse("/rust?since="), Err(TargetError::BadSince));
    }

    #[test]
    fn resume() {
        let token = "00112233445566778899aabbccddeeff";
        let t = parse(&format!("/rust?since=4&resume={token}")).unwrap();
        assert_eq!(t.since, Some(4));
        assert_eq!(t.resume.map(|t| t[15]), Some(0xff));
        assert_eq!(parse("/rust").unwrap().resume, None);
        assert_eq!(parse("/?resume=xyz"), Err(TargetError::BadResume));
        assert_eq!(parse("/?resume="), Err(TargetError::BadResume));
    }
}
