//! The command line, with every limit's default and the reason for it.
//!
//! `Config` is what the operator typed. This is the one module that knows
//! every layer: it turns the command line into each layer's own settings
//! ([`Config::settings`] for the connections, [`Config::timing`] and
//! [`Config::flood`] for the loop, [`Config::chat`] for the chat), and no
//! layer imports it.

use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use clap::Parser;

use crate::chat::auth::Verifier;
use crate::chat::history::Bounds;
use crate::chat::ChatConfig;
use crate::cluster::redis_bus::valid_node_id;
use crate::cluster::url::{self, RedisUrl};
use crate::net::flood::FloodLimits;
use crate::net::timers::Timing;
use crate::protocol::connection::Settings;
use crate::protocol::handshake::Policy;

/// A realtime WebSocket chat server: every message a user sends goes to
/// every other connected user, as `User <port>: <text>`.
#[derive(Parser, Clone, Debug)]
#[command(name = "wschat", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on. The default `[::]:8080` takes IPv6 and IPv4
    /// (dual-stack), falling back to `0.0.0.0:8080` where IPv6 is off.
    /// Port 0 picks a free port; the chosen address is printed on stdout.
    /// `none`: no plain listener (TLS only, with `--tls-listen`).
    #[arg(long, default_value = "[::]:8080", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Listen,

    /// Also serve wss:// and https:// on this address (with `--tls-cert`
    /// and `--tls-key`); port 0 picks a free port, printed on stdout as
    /// `wschat listening (TLS) on ADDR`.
    #[arg(long = "tls-listen", value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])]
    pub tls_listen: Option<SocketAddr>,

    /// PEM file of the TLS certificate chain, leaf first (reloaded on SIGHUP).
    #[arg(long = "tls-cert", value_name = "PEM", requires_all = ["tls_listen", "tls_key"])]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM file of the certificate's private key: PKCS#8, PKCS#1 (RSA)
    /// or SEC1 (EC) (reloaded on SIGHUP).
    #[arg(long = "tls-key", value_name = "PEM", requires_all = ["tls_listen", "tls_cert"])]
    pub tls_key: Option<std::path::PathBuf>,

    /// Echo mode: every message goes back to its sender only, unchanged
    /// (for conformance suites such as Autobahn).
    #[arg(long)]
    pub echo: bool,

    /// Also accept browsers from this Origin (repeatable; `*` accepts any).
    /// Requests without Origin (CLI tools, Node) and pages served from the
    /// server's own host are always accepted; others get 403.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    pub allow_origins: Vec<String>,

    /// A subprotocol the server speaks (repeatable), besides the built-in
    /// `wschat.v1.json`. The first one the client offers that the server
    /// speaks is selected; with no match the connection is accepted
    /// without one.
    #[arg(long = "protocol", value_name = "NAME")]
    pub protocols: Vec<String>,

    /// Largest message accepted, summed over its fragments (e.g. 1MiB,
    /// 64KiB, 1048576). Bigger ones are refused with close code 1009
    /// before any of it is buffered.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_message_size: usize,

    /// Offer permessage-deflate (RFC 7692) to clients that ask for it.
    /// Off by default: compressing costs CPU for every broadcast and
    /// inflating costs CPU for every compressed message received, for a
    /// gain only on slow links with long text (see README,
    /// "Compression"). When on, every connection agrees to no context
    /// takeover, so a broadcast is compressed once for all recipients.
    #[arg(long)]
    pub compression: bool,

    /// With --compression, messages shorter than this are sent
    /// uncompressed (deflate gains little on short text; README has the
    /// measurements).
    #[arg(long, default_value = "256", value_parser = parse_size, value_name = "BYTES")]
    pub compression_min_size: usize,

    /// Most fragments one message may have; more closes with 1008. Tiny
    /// fragments cost work per frame without adding bytes.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_fragments: usize,

    /// Bytes that may wait in one connection's outgoing queue. Senders to a
    /// reader with half of this queued are paused (not read) until it
    /// drains to a quarter. A reader that holds senders back for
    /// --slow-consumer-grace without draining, or whose queue passes this
    /// limit, is a slow consumer: it gets close 1008 and is dropped if it
    /// has not finished closing within the close timeout.
    #[arg(long, default_value = "1MiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_outbox: usize,

    /// Largest HTTP request head (request line and headers); more gets 431.
    #[arg(long, default_value = "8KiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_head: usize,

    /// Most header lines in a request; more gets 431.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_headers: usize,

    /// Most simultaneous connections; more get 503. Default: the
    /// descriptor limit (raised to its hard maximum at start) less a
    /// reserve for the listener and the process itself.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Most connections one client address may hold (IPv6: one /64, so
    /// rotating addresses within a block does not multiply them); more get
    /// 503; 0: no limit. One IPv4 address opens at most about 28,000 to a
    /// port (the ephemeral range), so the default leaves room for a load
    /// generator's 20,000 idle users; a public server should set what one
    /// home or office needs. Behind a reverse proxy every client shares
    /// its address.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub max_connections_per_ip: usize,

    /// Messages per second one connection may send on average (0: no
    /// limit). Excess messages are dropped and the sender is told; a
    /// sender that keeps flooding is closed with 1008. 100/s is far above
    /// anything typed and far below what floods the fan-out.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub max_message_rate: u32,

    /// Messages one connection may send at once after a quiet spell; also
    /// how many dropped messages within 10 s count as flooding.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub message_burst: u32,

    /// Messages of each room replayed to newcomers (0 turns history off).
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub history: usize,

    /// Bytes of message text each room's history may hold; the oldest
    /// messages go first. Keep it at most --max-outbox, which a replay must
    /// fit in.
    #[arg(long, default_value = "256KiB", value_parser = parse_size, value_name = "BYTES")]
    pub history_bytes: usize,

    /// Seconds an empty room keeps its history for clients to resume with
    /// `?since=`; then it is forgotten.
    #[arg(long, default_value = "600", value_parser = parse_secs, value_name = "SECS")]
    pub room_ttl: Duration,

    /// Seconds a user who dropped keeps its name for a reconnect with
    /// `?resume=TOKEN` (the token comes in the JSON welcome, or from
    /// /whoami), its leave announced only when they are over (0: no
    /// resuming, a drop is a leave at once).
    #[arg(long, default_value = "60", value_parser = parse_secs, value_name = "SECS")]
    pub resume_grace: Duration,

    /// Verify users: a file holding the HS256 secret (32 bytes or more;
    /// surrounding whitespace ignored) that signs the JSON Web Tokens
    /// clients bring in `?token=` or the `wschat_token` cookie.
    #[arg(long, value_name = "PATH")]
    pub auth_secret_file: Option<std::path::PathBuf>,

    /// Refuse upgrades that bring no valid token (401).
    #[arg(long, requires = "auth_secret_file")]
    pub require_auth: bool,

    /// Turn on the HTTP API for backends (`/api/...`): the file holds the
    /// key they send as `Authorization: Bearer KEY` (16 bytes or more;
    /// surrounding whitespace ignored).
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<std::path::PathBuf>,

    /// Most rooms at once, the lobby not counted (history memory is at
    /// most this, plus one, times --history-bytes); a new room beyond it
    /// gets 503 unless an empty room can be forgotten. Existing rooms and
    /// the lobby can always be joined.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_rooms: usize,

    /// Most rooms made from one client address that exist at a time (an
    /// IPv4 address, or an IPv6 /64); one more gets 429 (0: no limit).
    /// With the defaults it takes 100 addresses to fill --max-rooms.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub max_rooms_per_ip: usize,

    /// In a room with more members than this, joins and leaves are not
    /// announced one by one (N² lines to fill a room of N) but summed up,
    /// at most once a second: `3 users joined, 1 left (5002 here)`.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub announce_limit: usize,

    /// Bytes per second of /who, /rooms and /help replies one user may
    /// receive (a token bucket holding one second's worth; 0: no limit).
    /// Past it the user gets a short error instead of the reply.
    #[arg(long, default_value = "16KiB", value_parser = parse_size, value_name = "BYTES")]
    pub reply_rate: usize,

    /// Most names listed by /who and the JSON welcome, and most rooms by
    /// /rooms; the rest are counted (`and 4900 more`), so one reply is
    /// bounded however large the room.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub list_limit: usize,

    /// Seconds a client has to complete its upgrade request (then 408).
    #[arg(long, default_value = "10", value_parser = parse_secs, value_name = "SECS")]
    pub handshake_timeout: Duration,

    /// Seconds of silence after which the server pings a connection. 30 s
    /// stays under the 60 s idle timeout of common proxies (nginx).
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    pub ping_interval: Duration,

    /// Seconds a pinged connection has to say anything before it is dropped.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    pub pong_timeout: Duration,

    /// Seconds a peer has to answer our Close (or to take our last bytes)
    /// before the connection is dropped; also the shutdown grace period.
    #[arg(long, default_value = "5", value_parser = parse_secs, value_name = "SECS")]
    pub close_timeout: Duration,

    /// Seconds a reader may hold senders back (over half of --max-outbox
    /// queued) without draining to a quarter before it is closed as a
    /// slow consumer (1008). A reader that is slow but keeps reading
    /// drains within it; one that stopped does not.
    #[arg(long, default_value = "5", value_parser = parse_secs, value_name = "SECS")]
    pub slow_consumer_grace: Duration,

    /// Seconds a frame, or the fragments of a message, may take to arrive
    /// once begun; then close 1008. A peer that trickles a byte at a time
    /// is not silent, but it must still finish what it started.
    #[arg(long, default_value = "20", value_parser = parse_secs, value_name = "SECS")]
    pub message_timeout: Duration,

    /// Seconds the socket may refuse every byte we have for the peer
    /// before the connection is dropped, even if the peer keeps sending.
    #[arg(long, default_value = "30", value_parser = parse_secs, value_name = "SECS")]
    pub write_timeout: Duration,

    /// Join other nodes through this Redis (cluster mode):
    /// `redis://[user:password@]HOST:PORT[/DB]`. Off by default: a node
    /// alone needs no Redis. Redis unreachable at start is not fatal: the
    /// node starts degraded (local chat only, /healthz says so) and keeps
    /// retrying with capped exponential backoff.
    #[arg(long, value_name = "URL", value_parser = parse_redis)]
    pub redis: Option<RedisUrl>,

    /// This node's name in cluster mode, in every qualified user name
    /// (`User 51234@ID`): `[A-Za-z0-9_.-]{1,32}`. Default: the host name
    /// and the listening port (`HOST-PORT`; `HOST-PORT-PID` with
    /// --reuse-port or port 0, where the port does not tell nodes apart).
    #[arg(long = "node-id", value_name = "ID", requires = "redis", value_parser = parse_node_id)]
    pub node_id: Option<String>,

    /// Set SO_REUSEPORT on the listeners, so that several nodes on one
    /// machine share one port (the kernel spreads connections over them).
    #[arg(long = "reuse-port")]
    pub reuse_port: bool,

    /// Frames this long or longer (up to 192 KiB) go to plain sockets by
    /// splice(2) from kernel pages shared by every recipient, instead of
    /// being copied into each socket; 0 turns it off. At least 16KiB.
    /// Not for TLS, whose records are encrypted per connection.
    #[arg(long, default_value = "32KiB", value_parser = parse_size, value_name = "BYTES")]
    pub splice_min_size: usize,
}

impl Config {
    /// What every connection is held to. The subprotocols are the
    /// service's to declare ([`crate::service::Service::protocols`]).
    pub fn settings(&self) -> Settings {
        Settings {
            handshake: Policy {
                allowed_origins: self.allow_origins.clone(),
                protocols: Vec::new(),
                max_head_bytes: self.max_head,
                max_headers: self.max_headers,
                compression: self.compression,
                max_body_bytes: match self.api_key_file {
                    Some(_) => API_MAX_BODY,
                    None => 0,
                },
            },
            max_message_size: self.max_message_size,
            max_fragments: self.max_fragments,
            max_outbox_bytes: self.max_outbox,
            compression_min_size: self.compression_min_size,
        }
    }

    /// The chat's settings, with the secrets `--auth-secret-file` and
    /// `--api-key-file` name read (an error names a file that cannot be
    /// read or holds too short a secret).
    pub fn chat(&self) -> Result<ChatConfig, String> {
        Ok(ChatConfig {
            history: Bounds {
                max_entries: self.history,
                max_bytes: self.history_bytes,
            },
            room_ttl: self.room_ttl,
            max_rooms: self.max_rooms.max(1),
            max_rooms_per_client: self.max_rooms_per_ip,
            announce_limit: self.announce_limit,
            reply_rate: self.reply_rate,
            list_limit: self.list_limit.max(1),
            extra_protocols: self.protocols.clone(),
            resume_grace: self.resume_grace,
            verifier: load_verifier(self.auth_secret_file.as_deref())?,
            require_auth: self.require_auth,
            api_key: load_api_key(self.api_key_file.as_deref())?.map(Rc::from),
        })
    }

    pub fn flood(&self) -> FloodLimits {
        FloodLimits {
            rate: self.max_message_rate,
            burst: self.message_burst,
        }
    }

    pub fn timing(&self) -> Timing {
        Timing {
            handshake_timeout: self.handshake_timeout,
            ping_interval: self.ping_interval,
            pong_timeout: self.pong_timeout,
            close_timeout: self.close_timeout,
            slow_consumer_grace: self.slow_consumer_grace,
            message_timeout: self.message_timeout,
            write_timeout: self.write_timeout,
        }
    }
}

/// Parses `--redis`.
pub fn parse_redis(text: &str) -> Result<RedisUrl, String> {
    url::parse(text).map_err(|e| e.to_string())
}

/// Parses `--node-id`.
pub fn parse_node_id(text: &str) -> Result<String, String> {
    if valid_node_id(text) {
        Ok(text.to_owned())
    } else {
        Err("a node id is 1 to 32 of A-Z a-z 0-9 _ . -".into())
    }
}

/// The default node id: the host name (cut to what a node id may hold)
/// and the port, and the process id where the port is shared or chosen
/// by the kernel.
pub fn default_node_id(host: &str, port: u16, shared_port: bool, pid: u32) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(15)
        .collect();
    let host = if host.is_empty() { "node".into() } else { host };
    if shared_port || port == 0 {
        format!("{host}-{port}-{pid}")
    } else {
        format!("{host}-{port}")
    }
}

/// The largest body the HTTP API takes (`413` past it).
pub const API_MAX_BODY: usize = 64 * 1024;

/// The shortest API key accepted.
pub const MIN_API_KEY_LEN: usize = 16;

/// The contents of the file a `flag` names, surrounding whitespace (an
/// editor's newline) trimmed; the error names the flag and the file.
fn read_secret(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
    Ok(bytes.trim_ascii().to_vec())
}

/// Reads `--api-key-file`: `Ok(None)` without the flag; a clear error
/// for a file that cannot be read or a key too short.
fn load_api_key(path: Option<&Path>) -> Result<Option<Vec<u8>>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let key = read_secret("--api-key-file", path)?;
    if key.len() < MIN_API_KEY_LEN {
        return Err(format!(
            "--api-key-file {}: the key is {} bytes; at least {MIN_API_KEY_LEN} are needed",
            path.display(),
            key.len()
        ));
    }
    Ok(Some(key))
}

/// Reads `--auth-secret-file`: `Ok(None)` without the flag; a clear error
/// for a file that cannot be read or a secret too short.
fn load_verifier(path: Option<&Path>) -> Result<Option<Rc<Verifier>>, String> {
    let Some(path) = path else {
        return Ok(None);
    };
    let secret = read_secret("--auth-secret-file", path)?;
    Verifier::new(&secret)
        .map(|v| Some(Rc::new(v)))
        .map_err(|e| format!("--auth-secret-file {}: {e}", path.display()))
}

/// Parses a byte count: a number with an optional `KiB`, `MiB` or `GiB`
/// (or `K`, `M`, `G`, binary too).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 1048576, 64KiB or 1MiB"))?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return Err(format!("unknown unit in `{text}` (use KiB, MiB or GiB)")),
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Parses seconds, fractions allowed (`0.5`).
/// `--listen`'s value: the plain listener's address, or none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

/// `--listen`: an address, or `none` for no plain listener.
pub fn parse_listen(text: &str) -> Result<Listen, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Listen(None));
    }
    text.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{e} (an address such as [::]:8080, or none)"))
}

pub fn parse_secs(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{text}` is not a valid duration"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("16 M"), Ok(16 << 20));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1PiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn listen_none_is_tls_only() {
        assert_eq!(parse_listen("none"), Ok(Listen(None)));
        assert!(parse_listen("nowhere").is_err());
        let config = Config::try_parse_from([
            "wschat",
            "--listen",
            "none",
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ]);
        assert!(config.is_ok_and(|c| c.listen.0.is_none() && c.tls_listen.is_some()));
        assert!(Config::try_parse_from(["wschat", "--tls-listen", "127.0.0.1:0"]).is_err());
    }

    #[test]
    fn node_ids_default_to_host_and_port() {
        assert_eq!(default_node_id("box", 8080, false, 7), "box-8080");
        assert_eq!(default_node_id("box", 8080, true, 7), "box-8080-7");
        assert_eq!(default_node_id("box", 0, false, 7), "box-0-7");
        assert_eq!(default_node_id("a.b", 1, false, 7), "a_b-1");
        assert_eq!(default_node_id("", 1, false, 7), "node-1");
        assert!(valid_node_id(&default_node_id(
            &"h".repeat(99),
            65535,
            true,
            u32::MAX
        )));
        assert!(parse_node_id("n 1").is_err());
    }

    #[test]
    fn seconds() {
        assert_eq!(parse_secs("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("soon").is_err());
    }

    #[test]
    fn defaults_parse() {
        let config = Config::parse_from(["wschat"]);
        assert_eq!(config.listen.0.map(|a| a.port()), Some(8080));
        assert_eq!(config.tls_listen, None);
        let settings = config.settings();
        assert_eq!(settings.max_message_size, 1 << 20);
        assert_eq!(settings.handshake.max_head_bytes, 8 << 10);
        let chat = config.chat().unwrap();
        let documented = ChatConfig::default();
        assert_eq!(
            (
                chat.max_rooms,
                chat.max_rooms_per_client,
                chat.announce_limit,
                chat.reply_rate,
                chat.list_limit
            ),
            (
                documented.max_rooms,
                documented.max_rooms_per_client,
                documented.announce_limit,
                documented.reply_rate,
                documented.list_limit
            ),
            "the flags' defaults are the chat's"
        );
        assert_eq!((chat.max_rooms_per_client, chat.reply_rate), (10, 16 << 10));
    }
}
