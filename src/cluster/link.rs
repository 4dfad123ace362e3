//! One connection to Redis as a sans-IO state machine: time and bytes in,
//! bytes and events out, no socket.
//!
//! The loop owns the socket (a token in the same `mio` poll as the
//! WebSocket peers); the [`Link`] decides what to say and what it meant.
//! As in quinn-proto, time is an input: the loop asks [`Link::poll_timeout`]
//! when to call [`Link::handle_timeout`], and hands the clock to every call,
//! so each rule here is a unit test without sleeps or sockets.
//!
//! ```text
//!             handle_timeout: retry due              on_connected
//! Disconnected ─────────────────────> Connecting ──────────────────> Authenticating
//!      ^        (Event::Connect:                   (AUTH / SELECT      │ +OK for each
//!      │         open a socket)                     if the URL says)   v
//!      └──── EOF, I/O error, bad RESP, timeout, refused AUTH ───── Ready
//!            (Event::Disconnected with the backoff; commands in flight come back as Failed)
//! ```
//!
//! Two flavours ([`Role`]), one per connection, as Redis wants it:
//!
//! - [`Role::Commands`]: pipelined commands. Each [`Link::send`] carries a
//!   caller's tag; replies come back as [`Event::Reply`] with that tag, in
//!   the order sent (Redis answers a connection's commands in order, so a
//!   FIFO of tags is the whole bookkeeping). A command that was sent but
//!   not answered when the connection dropped comes back as
//!   [`Event::Failed`]: it may or may not have run.
//! - [`Role::Subscriber`]: `SUBSCRIBE`/`UNSUBSCRIBE` and the `message`
//!   pushes. The link remembers which channels are wanted, matches each
//!   confirmation to its request, yields [`Event::Message`] for wanted
//!   channels, and re-sends every wanted channel after a reconnect.
//!
//! Bounds: the bytes waiting to be written ([`MAX_OUTPUT_BYTES`]) and the
//! commands awaiting replies ([`MAX_PENDING`]); a command past either is
//! refused with [`SendError::Full`], which the caller counts as a drop. A
//! reply is bounded by [`resp::Limits`]. Timeouts: [`CONNECT_TIMEOUT`] from
//! asking for a socket to Ready, [`REPLY_TIMEOUT`] for the oldest
//! unanswered command; either disconnects. A link that has heard nothing
//! for [`PING_INTERVAL`] with nothing pending sends `PING`, so a server
//! gone silent (a half-open connection, a stopped process) is found out
//! within `PING_INTERVAL + REPLY_TIMEOUT` even by an idle subscriber.
//!
//! Reconnecting backs off exponentially from [`BACKOFF_BASE`] to
//! [`BACKOFF_CAP`] with jitter (each delay uniform in the upper half of
//! its step, from a deterministic generator seeded by the caller, so that
//! nodes restarted together spread out and tests can predict it). The
//! steps start over once a connection has been Ready for [`STABLE_AFTER`].

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use super::resp::{self, Reply, Status};
use super::url::RedisUrl;

/// Bytes that may wait to be written toward Redis on one link: 4 MiB,
/// some thousands of chat messages. Past it commands are refused.
pub const MAX_OUTPUT_BYTES: usize = 4 * 1024 * 1024;
/// Commands that may await replies on one link.
pub const MAX_PENDING: usize = 16 * 1024;
/// From asking for a socket to Ready (TCP, AUTH, SELECT).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the oldest unanswered command may wait before the link is
/// taken for dead (a stopped or wedged server answers nothing).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which a link with nothing pending pings the server.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// The first reconnect delay's step.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The largest reconnect delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// A connection Ready this long counts as healthy: the next failure
/// backs off from the first step again.
pub const STABLE_AFTER: Duration = Duration::from_secs(5);
/// Channels per `SUBSCRIBE` when re-subscribing after a reconnect.
pub const SUBSCRIBE_BATCH: usize = 256;

/// Which kind of connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Commands,
    Subscriber,
}

/// How a link logs in, what it may hold, and its timers.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub role: Role,
    /// `AUTH [user] password` after connecting.
    pub user: Option<Vec<u8>>,
    pub password: Option<Vec<u8>>,
    /// `SELECT db` after connecting when not 0.
    pub db: u32,
    pub max_output_bytes: usize,
    pub max_pending: usize,
    pub connect_timeout: Duration,
    pub reply_timeout: Duration,
    pub ping_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub resp: resp::Limits,
}

impl LinkConfig {
    /// The defaults of this module, logging in as `url` says.
    pub fn new(url: &RedisUrl, role: Role) -> LinkConfig {
        LinkConfig {
            role,
            user: url.user.clone(),
            password: url.password.clone(),
            db: url.db,
            max_output_bytes: MAX_OUTPUT_BYTES,
            max_pending: MAX_PENDING,
            connect_timeout: CONNECT_TIMEOUT,
            reply_timeout: REPLY_TIMEOUT,
            ping_interval: PING_INTERVAL,
            backoff_base: BACKOFF_BASE,
            backoff_cap: BACKOFF_CAP,
            resp: resp::Limits::default(),
        }
    }
}

/// Where the link is, for logs, metrics and `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No connection; waiting for the backoff to run out.
    Disconnected,
    /// Asked the caller for a socket (after [`Event::Connect`]).
    Connecting,
    /// Connected; `AUTH`/`SELECT` sent, not all answered.
    Authenticating,
    Ready,
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disconnect {
    /// The server closed the connection (e.g. it stopped, or dropped our
    /// subscriber past its output-buffer limit).
    Eof,
    Io(io::ErrorKind),
    /// The server's bytes are not RESP2 within our limits.
    Protocol(resp::RespError),
    ConnectTimeout,
    ReplyTimeout,
    /// `AUTH` was refused; the server's error text.
    Auth(String),
    /// `SELECT` was refused; the server's error text.
    Select(String),
    /// A reply or push that fits nothing we asked for.
    Unexpected(&'static str),
    /// An error reply no tag can take (in subscriber mode).
    Server(String),
}

impl fmt::Display for Disconnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disconnect::Eof => f.write_str("Redis closed the connection"),
            Disconnect::Io(kind) => write!(f, "I/O error: {kind}"),
            Disconnect::Protocol(e) => write!(f, "bad reply from Redis: {e}"),
            Disconnect::ConnectTimeout => {
                f.write_str("no ready connection within the connect timeout")
            }
            Disconnect::ReplyTimeout => {
                f.write_str("Redis did not answer within the reply timeout")
            }
            Disconnect::Auth(e) => write!(f, "AUTH refused: {e}"),
            Disconnect::Select(e) => write!(f, "SELECT refused: {e}"),
            Disconnect::Unexpected(what) => write!(f, "unexpected from Redis: {what}"),
            Disconnect::Server(e) => write!(f, "Redis error: {e}"),
        }
    }
}

/// What the link tells its caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<T> {
    /// Open a TCP connection to Redis now, then call
    /// [`Link::on_connected`] (or [`Link::on_error`] if it fails). Any
    /// previous socket is already closed (after [`Event::Disconnected`]).
    Connect,
    /// Logged in: commands may be sent (and subscriptions were re-sent).
    Ready,
    /// The reply to the command sent with `tag` (possibly an error reply:
    /// the connection is fine, the command was refused).
    Reply { tag: T, reply: Reply },
    /// The command sent with `tag` was lost with the connection: it may or
    /// may not have run.
    Failed { tag: T },
    /// Redis confirmed a subscription.
    Subscribed(Vec<u8>),
    /// Redis confirmed an unsubscription.
    Unsubscribed(Vec<u8>),
    /// A message published on a wanted channel.
    Message { channel: Vec<u8>, payload: Vec<u8> },
    /// The connection ended: close the socket; the link asks again with
    /// [`Event::Connect`] after `retry_in`. Comes before the `Failed`
    /// events of the commands it lost.
    Disconnected {
        reason: Disconnect,
        retry_in: Duration,
    },
}

/// Why a command was not queued. The caller counts it as a drop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Not Ready (disconnected or still logging in).
    NotReady,
    /// The output or the pending-reply bound is reached.
    Full,
    /// A command on a subscriber link or a subscription on a command link.
    WrongRole,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::NotReady => "the Redis link is not ready",
            SendError::Full => "the Redis link's queue is full",
            SendError::WrongRole => "not a command for this kind of Redis link",
        })
    }
}

impl std::error::Error for SendError {}

/// Counters since the link was made, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Times a socket was asked for.
    pub connects: u64,
    /// Times the link became Ready.
    pub ready: u64,
    pub disconnects: u64,
    /// Commands or subscriptions refused ([`SendError`]).
    pub refused: u64,
    /// Commands lost in flight ([`Event::Failed`]).
    pub failed: u64,
    /// Messages for channels no longer wanted (in flight across an
    /// unsubscribe), dropped.
    pub stray: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Disconnected { retry_at: Instant },
    Connecting { deadline: Instant },
    Authenticating { deadline: Instant },
    Ready { since: Instant },
}

#[derive(Debug)]
enum Expect<T> {
    Auth,
    Select,
    Command(T),
    /// Our keepalive.
    Ping,
    Subscribe(Vec<u8>),
    Unsubscribe(Vec<u8>),
}

#[derive(Debug)]
struct Pending<T> {
    expect: Expect<T>,
    sent: Instant,
}

/// One Redis connection's state, with caller tags of type `T`.
pub struct Link<T> {
    config: LinkConfig,
    state: State,
    /// Bytes to write; `out[out_start..]` are not written yet.
    out: Vec<u8>,
    out_start: usize,
    /// Received bytes of a reply not yet complete.
    input: Vec<u8>,
    /// When the server last sent bytes (or the connection was made).
    last_heard: Instant,
    pending: VecDeque<Pending<T>>,
    /// Subscriber links: the channels wanted, and those Redis confirmed
    /// on this connection.
    wanted: BTreeSet<Vec<u8>>,
    confirmed: BTreeSet<Vec<u8>>,
    events: VecDeque<Event<T>>,
    /// Failures since the last stable connection: the backoff's step.
    attempt: u32,
    rng: SplitMix64,
    stats: LinkStats,
}

impl<T> Link<T> {
    /// A link that asks for its first socket at `now`. `seed` drives the
    /// backoff's jitter: give each node its own (e.g. from its id).
    pub fn new(config: LinkConfig, seed: u64, now: Instant) -> Link<T> {
        Link {
            config,
            state: State::Disconnected { retry_at: now },
            out: Vec::new(),
            out_start: 0,
            input: Vec::new(),
            last_heard: now,
            pending: VecDeque::new(),
            wanted: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            events: VecDeque::new(),
            attempt: 0,
            rng: SplitMix64(seed),
            stats: LinkStats::default(),
        }
    }

    pub fn state(&self) -> LinkState {
        match self.state {
            State::Disconnected { .. } => LinkState::Disconnected,
            State::Connecting { .. } => LinkState::Connecting,
            State::Authenticating { .. } => LinkState::Authenticating,
            State::Ready { .. } => LinkState::Ready,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Whether `commands` more commands of `bytes` in all would be taken
    /// now by [`Link::send_raw`] (ready, and within both bounds): for a
    /// caller that gathers commands before it sends them.
    pub fn has_room(&self, commands: usize, bytes: usize) -> bool {
        self.is_ready()
            && self.pending.len() + commands <= self.config.max_pending
            && self.output().len() + bytes <= self.config.max_output_bytes
    }

    /// Commands (or subscription requests) awaiting their replies.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The channels this subscriber link wants, confirmed or not.
    pub fn subscriptions(&self) -> impl Iterator<Item = &[u8]> {
        self.wanted.iter().map(Vec::as_slice)
    }

    /// Whether Redis has confirmed `channel` on this connection.
    pub fn is_subscribed(&self, channel: &[u8]) -> bool {
        self.confirmed.contains(channel)
    }

    /// When [`Link::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Disconnected { retry_at } => Some(retry_at),
            State::Connecting { deadline } | State::Authenticating { deadline } => Some(deadline),
            State::Ready { .. } => Some(match self.pending.front() {
                Some(oldest) => oldest.sent + self.config.reply_timeout,
                None => self.last_heard + self.config.ping_interval,
            }),
        }
    }

    /// Acts on whatever deadline has passed at `now`: asks for a socket
    /// when the backoff is over, gives up on a connection that is not
    /// Ready in time or whose oldest command went unanswered.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Disconnected { retry_at } if now >= retry_at => {
                self.state = State::Connecting {
                    deadline: now + self.config.connect_timeout,
                };
                self.stats.connects += 1;
                self.events.push_back(Event::Connect);
            }
            State::Connecting { deadline } | State::Authenticating { deadline }
                if now >= deadline =>
            {
                self.fail(now, Disconnect::ConnectTimeout);
            }
            State::Ready { .. } => match self.pending.front() {
                Some(oldest) if now >= oldest.sent + self.config.reply_timeout => {
                    self.fail(now, Disconnect::ReplyTimeout);
                }
                None if now >= self.last_heard + self.config.ping_interval => {
                    self.push_command(&[b"PING"]);
                    self.pending.push_back(Pending {
                        expect: Expect::Ping,
                        sent: now,
                    });
                }
                _ => {}
            },
            _ => {}
        }
    }

    /// The socket asked for by [`Event::Connect`] is connected. Ignored in
    /// any other state.
    pub fn on_connected(&mut self, now: Instant) {
        let State::Connecting { deadline } = self.state else {
            return;
        };
        self.last_heard = now;
        if let Some(password) = self.config.password.clone() {
            match self.config.user.clone() {
                Some(user) => self.push_command(&[b"AUTH", &user, &password]),
                None => self.push_command(&[b"AUTH", &password]),
            }
            self.pending.push_back(Pending {
                expect: Expect::Auth,
                sent: now,
            });
        }
        if self.config.db != 0 {
            let mut digits = [0u8; 20];
            let db = resp::format_u64(u64::from(self.config.db), &mut digits);
            self.push_command(&[b"SELECT", db]);
            self.pending.push_back(Pending {
                expect: Expect::Select,
                sent: now,
            });
        }
        if self.pending.is_empty() {
            self.become_ready(now);
        } else {
            self.state = State::Authenticating { deadline };
        }
    }

    /// Bytes arrived from the socket. Ignored while there is no connection
    /// (stale bytes of a socket already given up).
    pub fn on_input(&mut self, now: Instant, bytes: &[u8]) {
        match self.state {
            State::Authenticating { .. } | State::Ready { .. } => {}
            State::Connecting { .. } => {
                // Bytes mean the socket is connected.
                self.on_connected(now);
            }
            State::Disconnected { .. } => return,
        }
        if !bytes.is_empty() {
            self.last_heard = now;
        }
        if self.input.is_empty() {
            // The common case: decode straight from the read buffer and
            // keep only an incomplete tail.
            if let Some(used) = self.process(now, bytes) {
                self.input.extend_from_slice(&bytes[used..]);
            }
        } else {
            let mut input = std::mem::take(&mut self.input);
            input.extend_from_slice(bytes);
            if let Some(used) = self.process(now, &input) {
                input.drain(..used);
                self.input = input;
            }
        }
    }

    /// The server closed the connection.
    pub fn on_eof(&mut self, now: Instant) {
        if !matches!(self.state, State::Disconnected { .. }) {
            self.fail(now, Disconnect::Eof);
        }
    }

    /// Connecting, reading or writing failed.
    pub fn on_error(&mut self, now: Instant, kind: io::ErrorKind) {
        if !matches!(self.state, State::Disconnected { .. }) {
            self.fail(now, Disconnect::Io(kind));
        }
    }

    /// The bytes to write to the socket now (empty when there are none).
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_start..]
    }

    /// `n` bytes of [`Link::output`] were written.
    pub fn advance_output(&mut self, n: usize) {
        self.out_start = (self.out_start + n).min(self.out.len());
        if self.out_start == self.out.len() {
            self.out.clear();
            self.out_start = 0;
        } else if self.out_start >= 64 * 1024 && self.out_start * 2 >= self.out.len() {
            self.out.drain(..self.out_start);
            self.out_start = 0;
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// Queues a command (pipelined behind any others); its reply comes
    /// back as [`Event::Reply`] with `tag`.
    pub fn send(&mut self, now: Instant, tag: T, args: &[&[u8]]) -> Result<(), SendError> {
        let check = if self.config.role != Role::Commands {
            Err(SendError::WrongRole)
        } else if !self.is_ready() {
            Err(SendError::NotReady)
        } else if self.pending.len() >= self.config.max_pending
            || self.output().len() + resp::command_len(args) > self.config.max_output_bytes
        {
            Err(SendError::Full)
        } else {
            Ok(())
        };
        if let Err(e) = check {
            self.stats.refused += 1;
            return Err(e);
        }
        self.push_command(args);
        self.pending.push_back(Pending {
            expect: Expect::Command(tag),
            sent: now,
        });
        Ok(())
    }

    /// [`Link::send`] of a command already encoded (one RESP array, e.g.
    /// by [`resp::encode_command`]), for a caller whose tag owns the bytes
    /// the command was made of: refused, the tag comes back with the
    /// reason, so that what it owns is not lost.
    pub fn send_raw(&mut self, now: Instant, tag: T, command: &[u8]) -> Result<(), (SendError, T)> {
        let check = if self.config.role != Role::Commands {
            Err(SendError::WrongRole)
        } else if !self.is_ready() {
            Err(SendError::NotReady)
        } else if self.pending.len() >= self.config.max_pending
            || self.output().len() + command.len() > self.config.max_output_bytes
        {
            Err(SendError::Full)
        } else {
            Ok(())
        };
        if let Err(e) = check {
            self.stats.refused += 1;
            return Err((e, tag));
        }
        self.out.extend_from_slice(command);
        self.pending.push_back(Pending {
            expect: Expect::Command(tag),
            sent: now,
        });
        Ok(())
    }

    /// Wants `channel` from now on, on this connection and every later
    /// one (sent now if Ready, else on reconnect). Already wanted: nothing.
    pub fn subscribe(&mut self, now: Instant, channel: &[u8]) -> Result<(), SendError> {
        let check = if self.config.role != Role::Subscriber {
            Err(SendError::WrongRole)
        } else if self.wanted.contains(channel) {
            return Ok(());
        } else if self.is_ready()
            && (self.pending.len() >= self.config.max_pending
                || self.output().len() + resp::command_len(&[b"SUBSCRIBE", channel])
                    > self.config.max_output_bytes)
        {
            Err(SendError::Full)
        } else {
            Ok(())
        };
        if let Err(e) = check {
            self.stats.refused += 1;
            return Err(e);
        }
        self.wanted.insert(channel.to_vec());
        if self.is_ready() {
            self.push_command(&[b"SUBSCRIBE", channel]);
            self.pending.push_back(Pending {
                expect: Expect::Subscribe(channel.to_vec()),
                sent: now,
            });
        }
        Ok(())
    }

    /// No longer wants `channel`. Never refused for space (it is what
    /// relieves a busy link); not wanted: nothing.
    pub fn unsubscribe(&mut self, now: Instant, channel: &[u8]) -> Result<(), SendError> {
        if self.config.role != Role::Subscriber {
            self.stats.refused += 1;
            return Err(SendError::WrongRole);
        }
        if self.wanted.remove(channel) && self.is_ready() {
            self.push_command(&[b"UNSUBSCRIBE", channel]);
            self.pending.push_back(Pending {
                expect: Expect::Unsubscribe(channel.to_vec()),
                sent: now,
            });
        }
        Ok(())
    }

    fn push_command(&mut self, args: &[&[u8]]) {
        resp::encode_command(&mut self.out, args);
    }

    fn become_ready(&mut self, now: Instant) {
        self.state = State::Ready { since: now };
        self.stats.ready += 1;
        self.events.push_back(Event::Ready);
        if self.config.role == Role::Subscriber && !self.wanted.is_empty() {
            let wanted: Vec<Vec<u8>> = self.wanted.iter().cloned().collect();
            for batch in wanted.chunks(SUBSCRIBE_BATCH) {
                let mut args: Vec<&[u8]> = Vec::with_capacity(batch.len() + 1);
                args.push(b"SUBSCRIBE");
                args.extend(batch.iter().map(Vec::as_slice));
                self.push_command(&args);
            }
            self.pending
                .extend(wanted.into_iter().map(|channel| Pending {
                    expect: Expect::Subscribe(channel),
                    sent: now,
                }));
        }
    }

    /// Decodes every complete reply in `buf`; how many bytes they took, or
    /// `None` if the connection failed on the way.
    fn process(&mut self, now: Instant, buf: &[u8]) -> Option<usize> {
        let mut at = 0;
        loop {
            match resp::decode(&buf[at..], &self.config.resp) {
                Ok(Status::Complete((reply, used))) => {
                    at += used;
                    if let Err(reason) = self.on_reply(now, reply) {
                        self.fail(now, reason);
                        return None;
                    }
                }
                Ok(Status::Partial) => return Some(at),
                Err(e) => {
                    self.fail(now, Disconnect::Protocol(e));
                    return None;
                }
            }
        }
    }

    fn on_reply(&mut self, now: Instant, reply: Reply) -> Result<(), Disconnect> {
        if self.config.role == Role::Subscriber && self.is_ready() {
            return self.on_push(reply);
        }
        let Some(front) = self.pending.pop_front() else {
            return Err(Disconnect::Unexpected("a reply to no command"));
        };
        match front.expect {
            Expect::Command(tag) => self.events.push_back(Event::Reply { tag, reply }),
            // Any answer will do: the server is alive.
            Expect::Ping => {}
            Expect::Auth | Expect::Select => {
                if let Reply::Error(e) = reply {
                    let text = String::from_utf8_lossy(&e).into_owned();
                    return Err(match front.expect {
                        Expect::Auth => Disconnect::Auth(text),
                        _ => Disconnect::Select(text),
                    });
                }
                let handshaking = self
                    .pending
                    .iter()
                    .any(|p| matches!(p.expect, Expect::Auth | Expect::Select));
                if !handshaking {
                    self.become_ready(now);
                }
            }
            Expect::Subscribe(_) | Expect::Unsubscribe(_) => {
                return Err(Disconnect::Unexpected(
                    "a subscription reply on a command link",
                ));
            }
        }
        Ok(())
    }

    /// A reply on a subscribed connection: a push `[kind, channel, x]`.
    fn on_push(&mut self, reply: Reply) -> Result<(), Disconnect> {
        if let Some(Pending {
            expect: Expect::Ping,
            ..
        }) = self.pending.front()
        {
            // Subscribed, Redis answers PING with ["pong", ""]; with no
            // subscription yet, with +PONG.
            let pong = match &reply {
                Reply::Simple(s) => s == b"PONG",
                Reply::Array(Some(items)) => {
                    items.len() == 2 && items[0].as_bytes() == Some(b"pong".as_slice())
                }
                _ => false,
            };
            if pong {
                self.pending.pop_front();
                return Ok(());
            }
        }
        let items = match reply {
            Reply::Array(Some(items)) if items.len() == 3 => items,
            Reply::Error(e) => {
                return Err(Disconnect::Server(String::from_utf8_lossy(&e).into_owned()));
            }
            _ => {
                return Err(Disconnect::Unexpected(
                    "a push that is not [kind, channel, value]",
                ))
            }
        };
        let [kind, channel, value]: [Reply; 3] = items
            .try_into()
            .map_err(|_| Disconnect::Unexpected("a push that is not [kind, channel, value]"))?;
        let (Reply::Bulk(Some(kind)), Reply::Bulk(Some(channel))) = (kind, channel) else {
            return Err(Disconnect::Unexpected("a push without kind and channel"));
        };
        match kind.as_slice() {
            b"message" => {
                let Reply::Bulk(Some(payload)) = value else {
                    return Err(Disconnect::Unexpected("a message without payload"));
                };
                if self.wanted.contains(&channel) {
                    self.events.push_back(Event::Message { channel, payload });
                } else {
                    self.stats.stray += 1;
                }
            }
            b"subscribe" | b"unsubscribe" => {
                let subscribe = kind.as_slice() == b"subscribe";
                let matches = match self.pending.front().map(|p| &p.expect) {
                    Some(Expect::Subscribe(c)) => subscribe && *c == channel,
                    Some(Expect::Unsubscribe(c)) => !subscribe && *c == channel,
                    _ => false,
                };
                if !matches {
                    return Err(Disconnect::Unexpected("a confirmation of nothing asked"));
                }
                self.pending.pop_front();
                if subscribe {
                    self.confirmed.insert(channel.clone());
                    self.events.push_back(Event::Subscribed(channel));
                } else {
                    self.confirmed.remove(&channel);
                    self.events.push_back(Event::Unsubscribed(channel));
                }
            }
            _ => return Err(Disconnect::Unexpected("a push of an unknown kind")),
        }
        Ok(())
    }

    fn fail(&mut self, now: Instant, reason: Disconnect) {
        if let State::Ready { since } = self.state {
            if now.saturating_duration_since(since) >= STABLE_AFTER {
                self.attempt = 0;
            }
        }
        let retry_in = self.backoff();
        self.attempt = self.attempt.saturating_add(1);
        self.state = State::Disconnected {
            retry_at: now + retry_in,
        };
        self.stats.disconnects += 1;
        self.out.clear();
        self.out_start = 0;
        self.input = Vec::new();
        self.confirmed.clear();
        self.events
            .push_back(Event::Disconnected { reason, retry_in });
        for pending in std::mem::take(&mut self.pending) {
            if let Expect::Command(tag) = pending.expect {
                self.stats.failed += 1;
                self.events.push_back(Event::Failed { tag });
            }
        }
    }

    /// The delay before the next connection: the step is
    /// `base * 2^attempt` capped at `cap`, the delay uniform in its upper
    /// half.
    fn backoff(&mut self) -> Duration {
        backoff_delay(
            self.config.backoff_base,
            self.config.backoff_cap,
            self.attempt,
            &mut self.rng,
        )
    }
}

fn backoff_delay(base: Duration, cap: Duration, attempt: u32, rng: &mut SplitMix64) -> Duration {
    let step = base
        .checked_mul(1u32 << attempt.min(31))
        .unwrap_or(cap)
        .min(cap);
    let half = step / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
    let jitter = if nanos == 0 {
        0
    } else {
        rng.next() % (nanos + 1)
    };
    half + Duration::from_nanos(jitter)
}

/// SplitMix64: a tiny deterministic generator, good enough for jitter.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::url;

    fn config(role: Role, url_text: &str) -> LinkConfig {
        LinkConfig::new(&url::parse(url_text).unwrap(), role)
    }

    fn events<T>(link: &mut Link<T>) -> Vec<Event<T>> {
        std::iter::from_fn(|| link.poll_event()).collect()
    }

    fn take_output<T>(link: &mut Link<T>) -> Vec<u8> {
        let out = link.output().to_vec();
        link.advance_output(out.len());
        out
    }

    fn cmd(args: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        resp::encode_command(&mut out, args);
        out
    }

    fn bulk(b: &[u8]) -> Reply {
        Reply::Bulk(Some(b.to_vec()))
    }

    /// A link taken to Ready at `t0` with no AUTH or SELECT.
    fn ready<T: PartialEq + fmt::Debug>(role: Role, t0: Instant) -> Link<T> {
        let mut link = Link::new(config(role, "redis://h"), 1, t0);
        assert_eq!(link.poll_timeout(), Some(t0));
        link.handle_timeout(t0);
        assert_eq!(events(&mut link), [Event::Connect]);
        assert_eq!(link.state(), LinkState::Connecting);
        link.on_connected(t0);
        assert_eq!(events(&mut link), [Event::Ready]);
        link
    }

    #[test]
    fn logs_in_with_auth_and_select_then_ready() {
        let t0 = Instant::now();
        let mut link: Link<u32> =
            Link::new(config(Role::Commands, "redis://alice:s%40cret@h/3"), 7, t0);
        link.handle_timeout(t0);
        assert_eq!(events(&mut link), [Event::Connect]);
        link.on_connected(t0);
        assert_eq!(link.state(), LinkState::Authenticating);
        let mut want = cmd(&[b"AUTH", b"alice", b"s@cret"]);
        want.extend(cmd(&[b"SELECT", b"3"]));
        assert_eq!(take_output(&mut link), want);
        assert_eq!(link.send(t0, 1, &[b"PING"]), Err(SendError::NotReady));
        link.on_input(t0, b"+OK\r\n+O");
        assert!(events(&mut link).is_empty());
        link.on_input(t0, b"K\r\n");
        assert_eq!(events(&mut link), [Event::Ready]);
        assert!(link.is_ready());
        assert_eq!(link.stats().refused, 1);
    }

    #[test]
    fn password_only_auths_the_default_user() {
        let t0 = Instant::now();
        let mut link: Link<u32> = Link::new(config(Role::Commands, "redis://:pw@h"), 7, t0);
        link.handle_timeout(t0);
        link.on_connected(t0);
        assert_eq!(take_output(&mut link), cmd(&[b"AUTH", b"pw"]));
    }

    #[test]
    fn refused_auth_disconnects_with_the_reason() {
        let t0 = Instant::now();
        let mut link: Link<u32> = Link::new(config(Role::Commands, "redis://:bad@h"), 7, t0);
        link.handle_timeout(t0);
        link.on_connected(t0);
        events(&mut link);
        link.on_input(t0, b"-WRONGPASS invalid username-password pair\r\n");
        let evs = events(&mut link);
        assert!(matches!(
            &evs[..],
            [Event::Disconnected { reason: Disconnect::Auth(e), .. }] if e.starts_with("WRONGPASS")
        ));
        assert_eq!(link.state(), LinkState::Disconnected);
    }

    /// Pipelined replies come back with their tags, in order, however the
    /// bytes are split.
    #[test]
    fn pipelined_replies_keep_their_tags_at_every_split() {
        let replies: &[u8] = b"+OK\r\n$1\r\nv\r\n:7\r\n-ERR no\r\n";
        for cut in 0..=replies.len() {
            let t0 = Instant::now();
            let mut link = ready::<&str>(Role::Commands, t0);
            link.send(t0, "set", &[b"SET", b"k", b"v"]).unwrap();
            link.send(t0, "get", &[b"GET", b"k"]).unwrap();
            link.send(t0, "incr", &[b"INCR", b"n"]).unwrap();
            link.send(t0, "bad", &[b"BAD"]).unwrap();
            let mut want = cmd(&[b"SET", b"k", b"v"]);
            want.extend(cmd(&[b"GET", b"k"]));
            want.extend(cmd(&[b"INCR", b"n"]));
            want.extend(cmd(&[b"BAD"]));
            assert_eq!(take_output(&mut link), want);
            assert_eq!(link.pending(), 4);
            link.on_input(t0, &replies[..cut]);
            link.on_input(t0, &replies[cut..]);
            assert_eq!(
                events(&mut link),
                [
                    Event::Reply {
                        tag: "set",
                        reply: Reply::Simple(b"OK".to_vec())
                    },
                    Event::Reply {
                        tag: "get",
                        reply: bulk(b"v")
                    },
                    Event::Reply {
                        tag: "incr",
                        reply: Reply::Integer(7)
                    },
                    Event::Reply {
                        tag: "bad",
                        reply: Reply::Error(b"ERR no".to_vec())
                    },
                ],
                "split at {cut}"
            );
            assert_eq!(link.pending(), 0);
        }
    }

    #[test]
    fn output_is_bounded_and_refusals_counted() {
        let t0 = Instant::now();
        let mut link = ready::<u32>(Role::Commands, t0);
        link.config.max_output_bytes = 80;
        link.config.max_pending = 3;
        let big = [b'x'; 40];
        assert_eq!(link.send(t0, 1, &[b"SET", b"k", &big]), Ok(()));
        assert_eq!(
            link.send(t0, 2, &[b"SET", b"k", &big]),
            Err(SendError::Full)
        );
        // Written bytes make room; pending replies still count.
        let n = link.output().len();
        link.advance_output(n);
        assert_eq!(link.send(t0, 3, &[b"SET", b"k", &big]), Ok(()));
        link.advance_output(link.output().len());
        assert_eq!(link.send(t0, 4, &[b"PING"]), Ok(()));
        assert_eq!(link.send(t0, 5, &[b"PING"]), Err(SendError::Full));
        assert_eq!(link.stats().refused, 2);
        assert_eq!(link.subscribe(t0, b"c"), Err(SendError::WrongRole));
    }

    #[test]
    fn eof_fails_commands_in_flight_and_backs_off() {
        let t0 = Instant::now();
        let mut link = ready::<u32>(Role::Commands, t0);
        link.send(t0, 1, &[b"GET", b"a"]).unwrap();
        link.send(t0, 2, &[b"GET", b"b"]).unwrap();
        link.on_input(t0, b"$-1\r\n$3\r\nab");
        link.on_eof(t0);
        let evs = events(&mut link);
        let [Event::Reply {
            tag: 1,
            reply: Reply::Bulk(None),
        }, Event::Disconnected {
            reason: Disconnect::Eof,
            retry_in,
        }, Event::Failed { tag: 2 }] = &evs[..]
        else {
            panic!("{evs:?}");
        };
        assert!(*retry_in >= BACKOFF_BASE / 2 && *retry_in <= BACKOFF_BASE);
        assert_eq!(link.output(), b"");
        assert_eq!(link.poll_timeout(), Some(t0 + *retry_in));
        // Stale bytes of the old socket are ignored.
        link.on_input(t0, b"cd\r\n");
        assert!(events(&mut link).is_empty());
        link.handle_timeout(t0 + *retry_in - Duration::from_nanos(1));
        assert!(events(&mut link).is_empty());
        link.handle_timeout(t0 + *retry_in);
        assert_eq!(events(&mut link), [Event::Connect]);
        let stats = link.stats();
        assert_eq!((stats.connects, stats.disconnects, stats.failed), (2, 1, 1));
    }

    #[test]
    fn bad_bytes_and_unasked_replies_disconnect() {
        let t0 = Instant::now();
        let mut link = ready::<u32>(Role::Commands, t0);
        link.on_input(t0, b"+OK\r\n");
        assert!(matches!(
            &events(&mut link)[..],
            [Event::Disconnected {
                reason: Disconnect::Unexpected(_),
                ..
            }]
        ));
        let mut link = ready::<u32>(Role::Commands, t0);
        link.send(t0, 1, &[b"PING"]).unwrap();
        link.on_input(t0, b"%2\r\n");
        assert!(matches!(
            &events(&mut link)[..],
            [
                Event::Disconnected {
                    reason: Disconnect::Protocol(resp::RespError::UnknownType(b'%')),
                    ..
                },
                Event::Failed { tag: 1 }
            ]
        ));
    }

    #[test]
    fn timeouts_connect_and_reply() {
        let t0 = Instant::now();
        let mut link: Link<u32> = Link::new(config(Role::Commands, "redis://h"), 1, t0);
        link.handle_timeout(t0);
        events(&mut link);
        assert_eq!(link.poll_timeout(), Some(t0 + CONNECT_TIMEOUT));
        link.handle_timeout(t0 + CONNECT_TIMEOUT);
        assert!(matches!(
            &events(&mut link)[..],
            [Event::Disconnected {
                reason: Disconnect::ConnectTimeout,
                ..
            }]
        ));

        let mut link = ready::<u32>(Role::Commands, t0);
        assert_eq!(link.poll_timeout(), Some(t0 + PING_INTERVAL));
        link.send(t0, 1, &[b"PING"]).unwrap();
        link.send(t0 + Duration::from_secs(1), 2, &[b"PING"])
            .unwrap();
        assert_eq!(link.poll_timeout(), Some(t0 + REPLY_TIMEOUT));
        link.on_input(t0, b"+PONG\r\n");
        assert_eq!(
            link.poll_timeout(),
            Some(t0 + Duration::from_secs(1) + REPLY_TIMEOUT)
        );
        link.handle_timeout(t0 + REPLY_TIMEOUT);
        assert_eq!(events(&mut link).len(), 1, "the first reply only");
        link.handle_timeout(t0 + Duration::from_secs(1) + REPLY_TIMEOUT);
        assert!(matches!(
            &events(&mut link)[..],
            [
                Event::Disconnected {
                    reason: Disconnect::ReplyTimeout,
                    ..
                },
                Event::Failed { tag: 2 }
            ]
        ));
    }

    /// Capped, jittered within the upper half of each step, the same for
    /// the same seed, starting over after a stable connection.
    #[test]
    fn backoff_is_capped_jittered_and_deterministic() {
        let delays = |seed: u64| -> Vec<Duration> {
            let t0 = Instant::now();
            let mut link: Link<u32> = Link::new(config(Role::Commands, "redis://h"), seed, t0);
            let mut now = t0;
            let mut out = Vec::new();
            for _ in 0..12 {
                link.handle_timeout(now);
                link.on_error(now, io::ErrorKind::ConnectionRefused);
                let evs = events(&mut link);
                let Some(Event::Disconnected { retry_in, .. }) = evs.last() else {
                    panic!("{evs:?}")
                };
                out.push(*retry_in);
                now += *retry_in;
            }
            out
        };
        let a = delays(42);
        assert_eq!(a, delays(42));
        assert_ne!(a, delays(43));
        for (i, d) in a.iter().enumerate() {
            let step = (BACKOFF_BASE * (1 << i)).min(BACKOFF_CAP);
            assert!(
                *d >= step / 2 && *d <= step,
                "attempt {i}: {d:?} for step {step:?}"
            );
        }
        assert!(a[11] >= BACKOFF_CAP / 2);
        // Reset after STABLE_AFTER of Ready, not before.
        let t0 = Instant::now();
        let mut link: Link<u32> = Link::new(config(Role::Commands, "redis://h"), 5, t0);
        let mut now = t0;
        for _ in 0..6 {
            link.handle_timeout(now);
            link.on_connected(now);
            now += Duration::from_secs(1);
            link.on_eof(now);
            let Some(Event::Disconnected { retry_in, .. }) = events(&mut link).pop() else {
                panic!()
            };
            now += retry_in;
        }
        assert_eq!(link.attempt, 6);
        link.handle_timeout(now);
        link.on_connected(now);
        link.on_eof(now + STABLE_AFTER);
        assert_eq!(link.attempt, 1);
        assert!(
            backoff_delay(BACKOFF_BASE, BACKOFF_CAP, u32::MAX, &mut SplitMix64(1)) <= BACKOFF_CAP
        );
        assert_eq!(
            backoff_delay(Duration::ZERO, BACKOFF_CAP, 3, &mut SplitMix64(1)),
            Duration::ZERO
        );
    }

    /// Silence with nothing pending: a PING; answered, quiet again;
    /// unanswered, the link is taken for dead.
    #[test]
    fn silent_links_ping_and_unanswered_pings_disconnect() {
        let t0 = Instant::now();
        let mut link = ready::<u32>(Role::Commands, t0);
        link.handle_timeout(t0 + PING_INTERVAL - Duration::from_millis(1));
        assert_eq!(link.output(), b"");
        // Input postpones it.
        link.send(t0, 1, &[b"GET", b"k"]).unwrap();
        take_output(&mut link);
        let t1 = t0 + Duration::from_secs(2);
        link.on_input(t1, b"$-1\r\n");
        assert_eq!(link.poll_timeout(), Some(t1 + PING_INTERVAL));
        link.handle_timeout(t1 + PING_INTERVAL);
        assert_eq!(take_output(&mut link), cmd(&[b"PING"]));
        assert_eq!(
            link.poll_timeout(),
            Some(t1 + PING_INTERVAL + REPLY_TIMEOUT)
        );
        link.on_input(t1 + PING_INTERVAL, b"+PONG\r\n");
        assert_eq!(events(&mut link).len(), 1, "only the GET's reply");
        assert_eq!(link.pending(), 0);
        let t2 = t1 + PING_INTERVAL;
        link.handle_timeout(t2 + PING_INTERVAL);
        assert_eq!(take_output(&mut link), cmd(&[b"PING"]));
        link.handle_timeout(t2 + PING_INTERVAL + REPLY_TIMEOUT);
        assert!(matches!(
            &events(&mut link)[..],
            [Event::Disconnected {
                reason: Disconnect::ReplyTimeout,
                ..
            }]
        ));

        // A subscriber is answered ["pong", ""] once subscribed, and
        // +PONG before; messages may come before the pong.
        let mut sub = ready::<()>(Role::Subscriber, t0);
        sub.handle_timeout(t0 + PING_INTERVAL);
        assert_eq!(take_output(&mut sub), cmd(&[b"PING"]));
        sub.on_input(t0 + PING_INTERVAL, b"+PONG\r\n");
        assert_eq!(sub.pending(), 0);
        let t3 = t0 + PING_INTERVAL;
        sub.subscribe(t3, b"a").unwrap();
        sub.on_input(t3, &push(b"subscribe", b"a", b"1"));
        sub.handle_timeout(t3 + PING_INTERVAL);
        assert_eq!(
            take_output(&mut sub),
            [cmd(&[b"SUBSCRIBE", b"a"]), cmd(&[b"PING"])].concat()
        );
        sub.on_input(t3 + PING_INTERVAL, &push(b"message", b"a", b"m"));
        sub.on_input(t3 + PING_INTERVAL, b"*2\r\n$4\r\npong\r\n$0\r\n\r\n");
        assert_eq!(
            events(&mut sub),
            [
                Event::Subscribed(b"a".to_vec()),
                Event::Message {
                    channel: b"a".to_vec(),
                    payload: b"m".to_vec()
                }
            ]
        );
        assert_eq!(sub.pending(), 0);
        assert!(sub.is_ready());
    }

    fn push(kind: &[u8], channel: &[u8], value: &[u8]) -> Vec<u8> {
        // Pushes are arrays of bulk strings (the count of a
        // (un)subscribe is an integer; both forms are read).
        let mut out = Vec::new();
        resp::encode_command(&mut out, &[kind, channel, value]);
        out
    }

    #[test]
    fn subscriber_confirms_delivers_and_resubscribes() {
        let t0 = Instant::now();
        let mut link: Link<()> = Link::new(config(Role::Subscriber, "redis://h"), 1, t0);
        // Wanted before the first connection: sent once Ready.
        link.subscribe(t0, b"b").unwrap();
        link.subscribe(t0, b"a").unwrap();
        link.subscribe(t0, b"a").unwrap();
        assert_eq!(link.send(t0, (), &[b"PING"]), Err(SendError::WrongRole));
        link.handle_timeout(t0);
        link.on_connected(t0);
        assert_eq!(events(&mut link), [Event::Connect, Event::Ready]);
        assert_eq!(take_output(&mut link), cmd(&[b"SUBSCRIBE", b"a", b"b"]));
        let mut input = push(b"subscribe", b"a", b"1");
        input.extend(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n");
        input.extend(push(b"message", b"a", b"hello"));
        for cut in 0..=input.len() {
            let mut l: Link<()> = Link::new(config(Role::Subscriber, "redis://h"), 1, t0);
            l.subscribe(t0, b"b").unwrap();
            l.subscribe(t0, b"a").unwrap();
            l.handle_timeout(t0);
            l.on_connected(t0);
            events(&mut l);
            l.on_input(t0, &input[..cut]);
            l.on_input(t0, &input[cut..]);
            assert_eq!(
                events(&mut l),
                [
                    Event::Subscribed(b"a".to_vec()),
                    Event::Subscribed(b"b".to_vec()),
                    Event::Message {
                        channel: b"a".to_vec(),
                        payload: b"hello".to_vec()
                    }
                ],
                "split at {cut}"
            );
        }
        link.on_input(t0, &input);
        events(&mut link);
        assert!(link.is_subscribed(b"a") && link.is_subscribed(b"b"));
        // Unsubscribe: a message in flight for it is dropped, counted.
        link.unsubscribe(t0, b"a").unwrap();
        assert_eq!(take_output(&mut link), cmd(&[b"UNSUBSCRIBE", b"a"]));
        link.on_input(t0, &push(b"message", b"a", b"late"));
        link.on_input(t0, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n");
        assert_eq!(events(&mut link), [Event::Unsubscribed(b"a".to_vec())]);
        assert_eq!(link.stats().stray, 1);
        assert!(!link.is_subscribed(b"a"));
        // Lost connection: resubscribe to what is still wanted.
        link.on_eof(t0);
        assert!(!link.is_subscribed(b"b"));
        let Some(Event::Disconnected { retry_in, .. }) = events(&mut link).pop() else {
            panic!()
        };
        link.subscribe(t0, b"c").unwrap();
        link.handle_timeout(t0 + retry_in);
        link.on_connected(t0 + retry_in);
        assert_eq!(take_output(&mut link), cmd(&[b"SUBSCRIBE", b"b", b"c"]));
        assert_eq!(link.subscriptions().collect::<Vec<_>>(), [b"b", b"c"]);
    }

    #[test]
    fn subscriber_refuses_confirmations_it_did_not_ask_for() {
        let t0 = Instant::now();
        let mut link = ready::<()>(Role::Subscriber, t0);
        link.subscribe(t0, b"a").unwrap();
        link.on_input(t0, &push(b"subscribe", b"z", b"1"));
        assert!(matches!(
            &events(&mut link)[..],
            [Event::Disconnected {
                reason: Disconnect::Unexpected(_),
                ..
            }]
        ));
        let mut link = ready::<()>(Role::Subscriber, t0);
        link.subscribe(t0, b"a").unwrap();
        link.on_input(t0, b"-NOPERM no\r\n");
        assert!(matches!(
            &events(&mut link)[..],
            [Event::Disconnected {
                reason: Disconnect::Server(_),
                ..
            }]
        ));
    }

    #[test]
    fn many_subscriptions_go_in_batches() {
        let t0 = Instant::now();
        let mut link: Link<()> = Link::new(config(Role::Subscriber, "redis://h"), 1, t0);
        for i in 0..(SUBSCRIBE_BATCH + 1) {
            link.subscribe(t0, format!("c{i:04}").as_bytes()).unwrap();
        }
        link.handle_timeout(t0);
        link.on_connected(t0);
        let out = take_output(&mut link);
        let mut at = 0;
        let mut commands = Vec::new();
        // Commands are arrays of bulk strings: decodable as replies.
        while let Ok(Status::Complete((reply, n))) =
            resp::decode(&out[at..], &resp::Limits::default())
        {
            commands.push(reply.as_array().unwrap().len() - 1);
            at += n;
        }
        assert_eq!(commands, [SUBSCRIBE_BATCH, 1]);
        assert_eq!(link.pending(), SUBSCRIBE_BATCH + 1);
    }
}
