//! A user's budget in reply bytes, for the commands whose reply costs the
//! server more than the request costs the user (`/who`, `/rooms`, `/help`).
//!
//! A token bucket on bytes, holding one second's worth at the configured
//! rate, kept as a single instant per user (the generic cell rate
//! algorithm): the time at which the bucket would be full again. A reply
//! is allowed while the bucket is not empty and is then charged its whole
//! size on the wire, so a user gets at most the rate, plus one second's
//! worth, plus one reply, in any stretch of time, however large the room.

use std::time::{Duration, Instant};

/// How much the bucket holds, as time at the rate: one second's worth.
pub const BURST: Duration = Duration::from_secs(1);

/// One user's reply budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyBudget {
    /// When the bucket would be full again (`None`: it is full).
    full_at: Option<Instant>,
}

impl ReplyBudget {
    /// Whether a reply may go out now at `rate` bytes per second (0: no
    /// limit).
    pub fn allows(&self, now: Instant, rate: usize) -> bool {
        rate == 0
            || self
                .full_at
                .is_none_or(|t| t.saturating_duration_since(now) < BURST)
    }

    /// Charges `bytes` sent now.
    pub fn charge(&mut self, bytes: usize, now: Instant, rate: usize) {
        if rate == 0 {
            return;
        }
        let nanos = (bytes as u128 * 1_000_000_000) / rate as u128;
        let cost = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        let from = self.full_at.map_or(now, |t| t.max(now));
        self.full_at = Some(from + cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: usize = 1000;

    #[test]
    fn a_seconds_worth_then_the_rate() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::default();
        // 1000 bytes at once: a full bucket allows them, in 100-byte replies.
        for _ in 0..10 {
            assert!(b.allows(t0, RATE));
            b.charge(100, t0, RATE);
        }
        assert!(!b.allows(t0, RATE), "empty");
        // Any refill allows a reply, which is then paid for in full.
        let soon = t0 + Duration::from_millis(1);
        assert!(b.allows(soon, RATE));
        b.charge(100, soon, RATE);
        assert!(!b.allows(t0 + Duration::from_millis(100), RATE), "in debt");
        assert!(b.allows(t0 + Duration::from_millis(102), RATE));
    }

    #[test]
    fn a_reply_larger_than_the_bucket_is_sent_once_and_paid_for() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::default();
        assert!(b.allows(t0, RATE));
        b.charge(5000, t0, RATE);
        assert!(!b.allows(t0 + Duration::from_millis(3999), RATE), "in debt");
        assert!(b.allows(t0 + Duration::from_millis(4001), RATE));
    }

    #[test]
    fn bounded_over_any_stretch() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::default();
        let mut sent = 0;
        // Asking every millisecond for ten seconds, 300 bytes a reply.
        for ms in 0..10_000 {
            let now = t0 + Duration::from_millis(ms);
            if b.allows(now, RATE) {
                b.charge(300, now, RATE);
                sent += 300;
            }
        }
        assert!(sent <= 10 * RATE + RATE + 300, "{sent}");
        assert!(sent >= 10 * RATE, "{sent}: the rate is honoured");
    }

    #[test]
    fn a_quiet_user_gets_a_full_bucket_not_more() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::default();
        b.charge(100, t0, RATE);
        let later = t0 + Duration::from_secs(3600);
        let mut n = 0;
        while b.allows(later, RATE) {
            b.charge(100, later, RATE);
            n += 1;
        }
        assert_eq!(n, 10);
    }

    #[test]
    fn zero_is_no_limit() {
        let t0 = Instant::now();
        let mut b = ReplyBudget::default();
        b.charge(usize::MAX, t0, 0);
        assert!(b.allows(t0, 0));
    }
}
