//! Every per-connection deadline, decided by pure functions over ticks.
//!
//! The loop keeps a few [`Tick`]s per peer and, once a second, asks
//! [`due`] whether one of them has run out; it then applies the verdict
//! (refuse with 408, ping, drop). Nothing here reads a clock or touches a
//! socket, so each rule is a unit test without sleeps.
//!
//! | stage | deadline | verdict |
//! |---|---|---|
//! | TLS handshake | `handshake_timeout` after accept | [`Expiry::TlsHandshake`]: drop (no keys, no `408`) |
//! | handshake | `handshake_timeout` after accept (the TLS handshake's time included) | [`Expiry::Handshake`]: `408` |
//! | open | `ping_interval` of silence | [`Expiry::Idle`]: send a Ping |
//! | open, pinged | `pong_timeout` after the ping with nothing read | [`Expiry::Silent`]: drop |
//! | open, queue over half of `--max-outbox` | `slow_consumer_grace` without draining to a quarter, counted from when its socket last took a byte | [`Expiry::SlowConsumer`]: close 1008 |
//! | open, mid-frame or mid-message | `message_timeout` since it began | [`Expiry::MessageTimeout`]: close 1008 |
//! | any, socket refusing our bytes | `write_timeout` without a byte taken | [`Expiry::WriteStalled`]: drop |
//! | closing | `close_timeout` after our Close | [`Expiry::Closing`]: drop |
//! | lingering | [`LINGER`] after our last byte | [`Expiry::Linger`]: drop |

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// How long a closed connection may drain the peer's last bytes, so that
/// closing with unread input does not reset away our final frames.
pub const LINGER: Duration = Duration::from_secs(2);

/// Milliseconds since the server started, in 32 bits to keep per-peer
/// state small. It wraps after 49 days; only differences are taken, with
/// wrapping arithmetic, and every deadline is far shorter than that.
///
/// It is kept plus one, never 0, so that an `Option<Tick>` is 4 bytes,
/// not 8: a peer keeps four of them. The one count that would be 0 (the
/// last millisecond before a wrap) is kept as the next one: a millisecond
/// of error once in 49 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick(NonZeroU32);

impl Default for Tick {
    fn default() -> Tick {
        Tick::from_ms(0)
    }
}

impl Tick {
    /// The tick `ms` milliseconds after start.
    pub const fn from_ms(ms: u32) -> Tick {
        match NonZeroU32::new(ms.wrapping_add(1)) {
            Some(ms) => Tick(ms),
            None => Tick(NonZeroU32::MIN),
        }
    }

    /// Its milliseconds since start (wrapping).
    pub fn ms(self) -> u32 {
        self.0.get().wrapping_sub(1)
    }

    /// The tick of `now` for a server started at `started`.
    pub fn since_start(started: Instant, now: Instant) -> Tick {
        let ms = now.duration_since(started).as_millis();
        // Truncation is the wrap-around described above.
        Tick::from_ms((ms & u128::from(u32::MAX)) as u32)
    }

    /// The time from `earlier` to `self`.
    pub fn since(self, earlier: Tick) -> Duration {
        Duration::from_millis(u64::from(self.0.get().wrapping_sub(earlier.0.get())))
    }
}

/// The timers the loop enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub handshake_timeout: Duration,
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub close_timeout: Duration,
    /// How long a reader may hold senders back without draining.
    pub slow_consumer_grace: Duration,
    /// How long a frame, or a message's fragments, may take to arrive.
    pub message_timeout: Duration,
    /// How long the socket may refuse every byte we have for it.
    pub write_timeout: Duration,
}

/// Where a connection is, as far as its deadlines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Stage {
    /// Accepted; the upgrade request is not complete or not answered.
    #[default]
    Handshake,
    /// Accepted on the TLS listener, the TLS handshake not finished: no
    /// byte of HTTP can be read or answered yet.
    TlsHandshake,
    Open,
    /// We sent a Close (or answered and are flushing): waiting to finish.
    Closing,
    /// Our last byte is out; draining what the peer still sends.
    Lingering,
    /// Removed at the end of the pass: no deadline applies.
    Gone,
}

/// A peer's clocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    /// The stage as last observed, and since when.
    pub stage: Stage,
    pub stage_since: Tick,
    pub last_read: Tick,
    /// When our heartbeat ping went out, while it is unanswered.
    pub ping_sent: Option<Tick>,
    /// Since when its queue has been high enough to hold senders back
    /// (and not yet drained), or, if its socket had stopped taking bytes
    /// before, since then.
    pub backlogged_since: Option<Tick>,
    /// Since when a frame or fragmented message has been in progress.
    pub partial_since: Option<Tick>,
    /// Since when the socket has taken none of our bytes.
    pub stalled_since: Option<Tick>,
}

impl Times {
    /// The clocks of a connection accepted at `now`.
    pub fn new(now: Tick) -> Times {
        Times {
            stage: Stage::Handshake,
            stage_since: now,
            last_read: now,
            ping_sent: None,
            backlogged_since: None,
            partial_since: None,
            stalled_since: None,
        }
    }

    /// Bytes arrived: the peer is alive, any ping is answered.
    pub fn on_read(&mut self, now: Tick) {
        self.last_read = now;
        self.ping_sent = None;
    }

    /// Records the stage the connection is in; a new stage restarts its
    /// clock, except between the TLS handshake and the upgrade request:
    /// one handshake timeout covers both, so a peer cannot double its
    /// time by finishing TLS at the last moment.
    pub fn observe(&mut self, stage: Stage, now: Tick) {
        let handshaking = |s: Stage| matches!(s, Stage::Handshake | Stage::TlsHandshake);
        if stage != self.stage && !(handshaking(stage) && handshaking(self.stage)) {
            self.stage_since = now;
        }
        self.stage = stage;
    }
}

/// A deadline that ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// It held senders back for the whole grace: close 1008.
    SlowConsumer,
    /// A frame or message began long ago and is still not complete.
    MessageTimeout,
    /// The socket took none of our bytes for the write timeout.
    WriteStalled,
    /// The upgrade request did not arrive in time: refuse with 408.
    Handshake,
    /// The TLS handshake did not finish in time. A 408 needs the keys the
    /// handshake never made, and our handshake records are the peer's to
    /// read: drop it now rather than wait out a close timeout for bytes
    /// that can never be sent.
    TlsHandshake,
    /// Silent for a ping interval: ping it.
    Idle,
    /// Our ping went unanswered for the pong timeout: drop it.
    Silent,
    /// The close handshake did not finish: drop it.
    Closing,
    /// The linger is over: drop it.
    Linger,
}

/// Which deadline of a peer in `times` has run out at `now`, if any.
pub fn due(times: &Times, now: Tick, timing: &Timing) -> Option<Expiry> {
    let in_stage = now.since(times.stage_since);
    let over = |since: Option<Tick>, limit: Duration| since.is_some_and(|t| now.since(t) >= limit);
    if times.stage != Stage::Gone && over(times.stalled_since, timing.write_timeout) {
        return Some(Expiry::WriteStalled);
    }
    match times.stage {
        Stage::Gone => None,
        Stage::Lingering => (in_stage >= LINGER).then_some(Expiry::Linger),
        Stage::Handshake => (in_stage >= timing.handshake_timeout).then_some(Expiry::Handshake),
        Stage::TlsHandshake => {
            (in_stage >= timing.handshake_timeout).then_some(Expiry::TlsHandshake)
        }
        // Dropped only after a ping went unanswered for the whole pong
        // timeout: a late sweep delays the ping, never skips it.
        Stage::Open if over(times.backlogged_since, timing.slow_consumer_grace) => {
            Some(Expiry::SlowConsumer)
        }
        Stage::Open if over(times.partial_since, timing.message_timeout) => {
            Some(Expiry::MessageTimeout)
        }
        Stage::Open => match times.ping_sent {
            Some(at) => (now.since(at) >= timing.pong_timeout).then_some(Expiry::Silent),
            None => (now.since(times.last_read) >= timing.ping_interval).then_some(Expiry::Idle),
        },
        Stage::Closing => (in_stage >= timing.close_timeout).then_some(Expiry::Closing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        handshake_timeout: Duration::from_secs(10),
        ping_interval: Duration::from_secs(30),
        pong_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_secs(5),
        slow_consumer_grace: Duration::from_secs(5),
        message_timeout: Duration::from_secs(20),
        write_timeout: Duration::from_secs(30),
    };

    fn s(secs: u32) -> Tick {
        Tick::from_ms(secs * 1000)
    }

    #[test]
    fn handshake_must_finish_in_time() {
        let times = Times::new(s(0));
        assert_eq!(due(&times, Tick::from_ms(9_999), &TIMING), None);
        assert_eq!(due(&times, s(10), &TIMING), Some(Expiry::Handshake));
    }

    #[test]
    fn bytes_before_the_upgrade_do_not_extend_the_handshake() {
        let mut times = Times::new(s(0));
        times.on_read(s(9));
        assert_eq!(due(&times, s(10), &TIMING), Some(Expiry::Handshake));
    }

    #[test]
    fn a_tls_handshake_must_finish_in_the_handshake_timeout() {
        let mut times = Times::new(s(0));
        times.observe(Stage::TlsHandshake, s(1));
        assert_eq!(due(&times, Tick::from_ms(9_999), &TIMING), None);
        assert_eq!(due(&times, s(10), &TIMING), Some(Expiry::TlsHandshake));
    }

    #[test]
    fn the_tls_handshake_and_the_upgrade_share_one_timeout() {
        let mut times = Times::new(s(0));
        times.observe(Stage::TlsHandshake, s(1));
        // TLS done at 9 s: the upgrade request has the 1 s that is left.
        times.observe(Stage::Handshake, s(9));
        assert_eq!(due(&times, Tick::from_ms(9_999), &TIMING), None);
        assert_eq!(due(&times, s(10), &TIMING), Some(Expiry::Handshake));
        // Open restarts the clock as before.
        times.observe(Stage::Open, s(10));
        assert_eq!(times.stage_since, s(10));
    }

    #[test]
    fn silence_gets_a_ping_then_a_drop() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(1));
        assert_eq!(due(&times, s(29), &TIMING), None, "reading at 0");
        assert_eq!(due(&times, s(30), &TIMING), Some(Expiry::Idle));
        times.ping_sent = Some(s(31));
        assert_eq!(due(&times, s(60), &TIMING), None, "the pong has 30 s");
        assert_eq!(due(&times, s(61), &TIMING), Some(Expiry::Silent));
    }

    #[test]
    fn any_read_answers_the_ping() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        times.ping_sent = Some(s(30));
        times.on_read(s(45));
        assert_eq!(due(&times, s(61), &TIMING), None);
        assert_eq!(due(&times, s(75), &TIMING), Some(Expiry::Idle));
    }

    #[test]
    fn a_late_sweep_delays_the_drop_never_skips_the_ping() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        // The loop was stopped for 100 s: the first verdict is a ping.
        assert_eq!(due(&times, s(100), &TIMING), Some(Expiry::Idle));
    }

    #[test]
    fn closing_and_lingering_have_their_own_clocks() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        times.observe(Stage::Closing, s(20));
        assert_eq!(due(&times, s(24), &TIMING), None);
        assert_eq!(due(&times, s(25), &TIMING), Some(Expiry::Closing));
        times.observe(Stage::Lingering, s(22));
        assert_eq!(due(&times, s(23), &TIMING), None);
        assert_eq!(due(&times, s(24), &TIMING), Some(Expiry::Linger));
        times.observe(Stage::Gone, s(24));
        assert_eq!(due(&times, s(1000), &TIMING), None);
    }

    #[test]
    fn a_backlogged_reader_has_the_grace_then_is_closed() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        times.backlogged_since = Some(s(10));
        assert_eq!(due(&times, s(14), &TIMING), None, "within the grace");
        assert_eq!(due(&times, s(15), &TIMING), Some(Expiry::SlowConsumer));
        // It drained: the clock is off.
        times.backlogged_since = None;
        assert_eq!(due(&times, s(15), &TIMING), None);
    }

    #[test]
    fn a_backlogged_reader_is_closed_even_while_it_keeps_sending() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        times.backlogged_since = Some(s(1));
        times.on_read(s(5));
        assert_eq!(due(&times, s(6), &TIMING), Some(Expiry::SlowConsumer));
    }

    #[test]
    fn a_message_must_be_completed_in_time_however_it_trickles() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        times.partial_since = Some(s(2));
        // A byte every 5 s keeps it from being silent, not from its deadline.
        for at in [7, 12, 17] {
            times.on_read(s(at));
            assert_eq!(due(&times, s(at), &TIMING), None);
        }
        times.on_read(s(22));
        assert_eq!(due(&times, s(22), &TIMING), Some(Expiry::MessageTimeout));
    }

    #[test]
    fn a_socket_that_takes_nothing_is_dropped_even_while_it_sends() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Open, s(0));
        times.stalled_since = Some(s(5));
        times.on_read(s(30));
        assert_eq!(due(&times, s(34), &TIMING), None);
        assert_eq!(due(&times, s(35), &TIMING), Some(Expiry::WriteStalled));
        // Also while handshaking or closing.
        times.observe(Stage::Closing, s(35));
        assert_eq!(due(&times, s(35), &TIMING), Some(Expiry::WriteStalled));
    }

    #[test]
    fn observing_the_same_stage_keeps_its_clock() {
        let mut times = Times::new(s(0));
        times.observe(Stage::Handshake, s(5));
        assert_eq!(times.stage_since, s(0));
    }

    #[test]
    fn ticks_wrap_harmlessly() {
        let before = Tick::from_ms(u32::MAX - 499);
        let after = Tick::from_ms(500);
        assert_eq!(after.since(before), Duration::from_millis(1000));
        let mut times = Times::new(before);
        times.observe(Stage::Closing, before);
        assert_eq!(
            due(&times, Tick::from_ms(4_499), &TIMING),
            None,
            "4,999 ms after"
        );
        assert_eq!(
            due(&times, Tick::from_ms(4_500), &TIMING),
            Some(Expiry::Closing)
        );
    }

    #[test]
    fn a_tick_is_never_zero_so_an_absent_one_costs_nothing() {
        assert_eq!(std::mem::size_of::<Option<Tick>>(), 4);
        assert_eq!(Tick::from_ms(0).ms(), 0);
        assert_eq!(Tick::from_ms(7).ms(), 7);
        // The one count kept as the next: a millisecond late, once a wrap.
        let last = Tick::from_ms(u32::MAX);
        assert_eq!(last, Tick::from_ms(0));
        assert_eq!(
            Tick::from_ms(1).since(Tick::from_ms(u32::MAX - 1)),
            Duration::from_millis(3)
        );
    }
}
