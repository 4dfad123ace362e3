//! `--redis redis://[user:password@]HOST:PORT[/DB]`: where Redis is and
//! how to log in.
//!
//! The forms redis-cli and the Redis clients accept, less what wschat does
//! not speak: `redis://host`, `redis://host:6380`, `redis://:pass@host`
//! (the `default` user), `redis://user:pass@host/2`, `redis://[::1]:6379`.
//! User and password are percent-decoded (`%40` for `@`, `%3A` for `:`),
//! as in any URL; they are bytes, since Redis passwords are. `rediss://`
//! (TLS), query strings and a user without a password are refused with a
//! reason rather than half-understood. The password never appears in
//! `Debug` output.

use std::fmt;
use std::net::Ipv6Addr;

/// The port Redis listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 6379;

/// A parsed `redis://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// A host name or IP address; an IPv6 address without its brackets.
    pub host: String,
    pub port: u16,
    /// `AUTH user password` when both are given, `AUTH password` when only
    /// the password is (the `default` user).
    pub user: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    /// `SELECT db` when not 0.
    pub db: u32,
}

impl RedisUrl {
    /// `host:port`, with brackets around an IPv6 address: what
    /// `ToSocketAddrs` takes.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user.as_deref().map(String::from_utf8_lossy))
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("db", &self.db)
            .finish()
    }
}

impl fmt::Display for RedisUrl {
    /// The URL with the password left out, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("redis://")?;
        match (&self.user, &self.password) {
            (Some(user), _) => write!(f, "{}:***@", String::from_utf8_lossy(user))?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        write!(f, "{}/{}", self.authority(), self.db)
    }
}

/// Why a `--redis` value is not a URL wschat can use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlError {
    /// Not `redis://...`; carries the scheme found.
    Scheme(String),
    /// `rediss://`: TLS to Redis is not supported.
    Tls,
    /// No host between `//` and the port or path.
    NoHost,
    /// A host name with characters no host name has.
    BadHost,
    /// `[...]` that is not an IPv6 address, or a bare IPv6 address.
    BadIpv6,
    /// Not a number in 1..=65535.
    BadPort,
    /// The path is not `/` followed by a database number.
    BadDb,
    /// `%` not followed by two hex digits.
    BadPercent,
    /// A user name with no password.
    UserWithoutPassword,
    /// `?...` or `#...`: no options are understood.
    Query,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(s) => write!(
                f,
                "the Redis URL must start with redis:// (found {s:?}); e.g. redis://127.0.0.1:6379"
            ),
            UrlError::Tls => f.write_str("rediss:// (TLS) is not supported; use redis://"),
            UrlError::NoHost => f.write_str("the Redis URL names no host"),
            UrlError::BadHost => f.write_str("the Redis URL's host is not a host name or address"),
            UrlError::BadIpv6 => {
                f.write_str("an IPv6 address in a Redis URL goes in brackets: redis://[::1]:6379")
            }
            UrlError::BadPort => f.write_str("the Redis URL's port is not a number in 1-65535"),
            UrlError::BadDb => {
                f.write_str("the Redis URL's path must be a database number, e.g. /0")
            }
            UrlError::BadPercent => f.write_str(
                "a % in the Redis URL's user or password is not followed by two hex digits",
            ),
            UrlError::UserWithoutPassword => {
                f.write_str("the Redis URL has a user but no password (redis://user:password@host)")
            }
            UrlError::Query => {
                f.write_str("the Redis URL may not have a query (?) or fragment (#)")
            }
        }
    }
}

impl std::error::Error for UrlError {}

/// Parses a `redis://[user:password@]HOST[:PORT][/DB]` URL.
pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(UrlError::Scheme(url.chars().take(16).collect()));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" => {}
        "rediss" => return Err(UrlError::Tls),
        _ => return Err(UrlError::Scheme(scheme.to_string())),
    }
    if rest.contains(['?', '#']) {
        return Err(UrlError::Query);
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    // The last `@` ends the user info: an unencoded `@` in a password is
    // still read as the user meant.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (info, None),
            };
            let user = (!user.is_empty())
                .then(|| percent_decode(user))
                .transpose()?;
            let password = password.map(percent_decode).transpose()?;
            match (user, password) {
                (Some(_), None) => return Err(UrlError::UserWithoutPassword),
                (None, Some(p)) if p.is_empty() => (None, None),
                pair => pair,
            }
        }
    };
    let (host, port) = parse_host_port(hostport)?;
    let db = match path {
        "" => 0,
        digits if digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse().map_err(|_| UrlError::BadDb)?
        }
        _ => return Err(UrlError::BadDb),
    };
    Ok(RedisUrl {
        host,
        port,
        user,
        password,
        db,
    })
}

fn parse_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return Err(UrlError::BadIpv6);
        };
        let addr: Ipv6Addr = addr.parse().map_err(|_| UrlError::BadIpv6)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UrlError::BadPort)?),
        };
        (addr.to_string(), port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(UrlError::BadIpv6);
        }
        if host.is_empty() {
            return Err(UrlError::NoHost);
        }
        let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        if !host.bytes().all(ok) {
            return Err(UrlError::BadHost);
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => match p.parse() {
            Ok(0) | Err(_) => return Err(UrlError::BadPort),
            Ok(port) => port,
        },
        Some(_) => return Err(UrlError::BadPort),
    };
    Ok((host, port))
}

fn percent_decode(s: &str) -> Result<Vec<u8>, UrlError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: u8| char::from(b).to_digit(16);
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(UrlError::BadPercent);
            };
            // Two hex digits: at most 255.
            out.push(u8::try_from(hi * 16 + lo).map_err(|_| UrlError::BadPercent)?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(host: &str, port: u16, user: Option<&[u8]>, pass: Option<&[u8]>, db: u32) -> RedisUrl {
        RedisUrl {
            host: host.into(),
            port,
            user: user.map(<[u8]>::to_vec),
            password: pass.map(<[u8]>::to_vec),
            db,
        }
    }

    #[test]
    fn host_port_and_db() {
        assert_eq!(
            parse("redis://localhost"),
            Ok(url("localhost", 6379, None, None, 0))
        );
        assert_eq!(
            parse("redis://127.0.0.1:6380"),
            Ok(url("127.0.0.1", 6380, None, None, 0))
        );
        assert_eq!(
            parse("redis://Redis.Example:7000/3"),
            Ok(url("redis.example", 7000, None, None, 3))
        );
        assert_eq!(parse("redis://h/"), Ok(url("h", 6379, None, None, 0)));
        assert_eq!(parse("REDIS://h:1/0"), Ok(url("h", 1, None, None, 0)));
    }

    #[test]
    fn ipv6_in_brackets() {
        assert_eq!(
            parse("redis://[::1]:6390/1"),
            Ok(url("::1", 6390, None, None, 1))
        );
        assert_eq!(parse("redis://[::1]"), Ok(url("::1", 6379, None, None, 0)));
        assert_eq!(parse("redis://[::1]").unwrap().authority(), "[::1]:6379");
        assert_eq!(parse("redis://::1:6379"), Err(UrlError::BadIpv6));
        assert_eq!(parse("redis://[::1"), Err(UrlError::BadIpv6));
        assert_eq!(parse("redis://[nope]:1"), Err(UrlError::BadIpv6));
        assert_eq!(parse("redis://[::1]6379"), Err(UrlError::BadPort));
    }

    #[test]
    fn user_and_password_percent_decoded() {
        assert_eq!(
            parse("redis://alice:s%40cr%3At@h:1/2"),
            Ok(url("h", 1, Some(b"alice"), Some(b"s@cr:t"), 2))
        );
        assert_eq!(
            parse("redis://:pw@h"),
            Ok(url("h", 6379, None, Some(b"pw"), 0))
        );
        // An unencoded `@` in the password: the last one ends it.
        assert_eq!(
            parse("redis://:p@w@h"),
            Ok(url("h", 6379, None, Some(b"p@w"), 0))
        );
        assert_eq!(
            parse("redis://:%ff@h"),
            Ok(url("h", 6379, None, Some(b"\xff"), 0))
        );
        assert_eq!(parse("redis://:@h"), Ok(url("h", 6379, None, None, 0)));
        assert_eq!(parse("redis://:%4@h"), Err(UrlError::BadPercent));
        assert_eq!(parse("redis://:%zz@h"), Err(UrlError::BadPercent));
        assert_eq!(parse("redis://alice@h"), Err(UrlError::UserWithoutPassword));
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            parse("localhost:6379"),
            Err(UrlError::Scheme("localhost:6379".into()))
        );
        assert_eq!(parse("http://h"), Err(UrlError::Scheme("http".into())));
        assert_eq!(parse("rediss://h"), Err(UrlError::Tls));
        assert_eq!(parse("redis://"), Err(UrlError::NoHost));
        assert_eq!(parse("redis://:6379"), Err(UrlError::NoHost));
        assert_eq!(parse("redis://h o"), Err(UrlError::BadHost));
        assert_eq!(parse("redis://h:0"), Err(UrlError::BadPort));
        assert_eq!(parse("redis://h:65536"), Err(UrlError::BadPort));
        assert_eq!(parse("redis://h:"), Err(UrlError::BadPort));
        assert_eq!(parse("redis://h:+1"), Err(UrlError::BadPort));
        assert_eq!(parse("redis://h/x"), Err(UrlError::BadDb));
        assert_eq!(parse("redis://h/1/2"), Err(UrlError::BadDb));
        assert_eq!(parse("redis://h/99999999999"), Err(UrlError::BadDb));
        assert_eq!(parse("redis://h?db=1"), Err(UrlError::Query));
        assert!(UrlError::Tls.to_string().contains("rediss://"));
    }

    #[test]
    fn password_stays_out_of_logs() {
        let u = parse("redis://alice:secret@h:1/2").unwrap();
        assert!(!format!("{u:?}").contains("secret"));
        assert_eq!(u.to_string(), "redis://alice:***@h:1/2");
        assert_eq!(parse("redis://h").unwrap().to_string(), "redis://h:6379/0");
    }
}
