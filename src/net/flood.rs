//! Per-connection flood control: a token bucket on messages.
//!
//! Each connection may send `rate` messages per second on average, with
//! bursts of up to `burst`. A message over the budget is dropped (its
//! sender is told once per window); a sender that keeps flooding, `burst`
//! dropped messages within one window, is disconnected with 1008. Only
//! data messages count: control frames are bounded by the protocol.
//!
//! The clock is the caller's, in milliseconds, so this is pure and
//! testable; it is a few words per connection.

use std::time::Duration;

/// The limits, shared by all connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodLimits {
    /// Sustained messages per second; 0 turns flood control off.
    pub rate: u32,
    /// Messages that may arrive at once after a quiet spell.
    pub burst: u32,
}

impl FloodLimits {
    /// The limits for the messages read just after the loop stood still
    /// for `stall` (the process was stopped, or a pass took that long):
    /// what peers sent meanwhile waited in the kernel and arrives at once,
    /// which is no flood. The burst grows by what the rate allows over the
    /// stall, so a sender within the rate loses nothing.
    pub fn after_stall(self, stall: Duration) -> FloodLimits {
        let secs = u32::try_from(stall.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
        FloodLimits {
            rate: self.rate,
            burst: self.burst.saturating_add(self.rate.saturating_mul(secs)),
        }
    }
}

/// What to do with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Drop it; `warn` is true for the first drop of a window.
    Drop {
        warn: bool,
    },
    /// The sender persists: disconnect it.
    Close,
}

/// How long a window of dropped messages lasts before it is forgiven.
const WINDOW_MS: u32 = 10_000;
/// Token amounts are kept in thousandths of a message.
const MILLI: u64 = 1000;

/// One connection's bucket.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodGuard {
    /// Thousandths of a message available (full when fresh: see `check`).
    tokens: u32,
    last_ms: u32,
    started: bool,
    dropped: u32,
    window_start_ms: u32,
}

impl FloodGuard {
    /// Charges one message arriving at `now_ms` (any monotonic
    /// millisecond clock; wrapping is harmless).
    pub fn check(&mut self, now_ms: u32, limits: FloodLimits) -> Verdict {
        if limits.rate == 0 {
            return Verdict::Allow;
        }
        let capacity = u64::from(limits.burst.max(1)) * MILLI;
        let tokens = if self.started {
            let elapsed = u64::from(now_ms.wrapping_sub(self.last_ms));
            (u64::from(self.tokens) + elapsed * u64::from(limits.rate)).min(capacity)
        } else {
            self.started = true;
            capacity
        };
        self.last_ms = now_ms;
        if tokens >= MILLI {
            self.tokens = u32::try_from(tokens - MILLI).unwrap_or(u32::MAX);
            return Verdict::Allow;
        }
        self.tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        if self.dropped == 0 || now_ms.wrapping_sub(self.window_start_ms) >= WINDOW_MS {
            self.window_start_ms = now_ms;
            self.dropped = 1;
            return Verdict::Drop { warn: true };
        }
        self.dropped += 1;
        if self.dropped >= limits.burst.max(1) {
            Verdict::Close
        } else {
            Verdict::Drop { warn: false }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FloodLimits = FloodLimits { rate: 10, burst: 5 };

    #[test]
    fn a_burst_is_allowed_then_the_rate() {
        let mut guard = FloodGuard::default();
        for _ in 0..5 {
            assert_eq!(guard.check(1000, LIMITS), Verdict::Allow);
        }
        assert_eq!(guard.check(1000, LIMITS), Verdict::Drop { warn: true });
        // 10 per second: one more every 100 ms.
        assert_eq!(guard.check(1099, LIMITS), Verdict::Drop { warn: false });
        assert_eq!(guard.check(1101, LIMITS), Verdict::Allow);
    }

    #[test]
    fn steady_senders_within_the_rate_are_never_dropped() {
        let mut guard = FloodGuard::default();
        for i in 0..1000u32 {
            assert_eq!(guard.check(i * 100, LIMITS), Verdict::Allow, "message {i}");
        }
    }

    #[test]
    fn persistent_flooding_closes() {
        let mut guard = FloodGuard::default();
        let verdicts: Vec<Verdict> = (0..20).map(|_| guard.check(0, LIMITS)).collect();
        assert_eq!(verdicts[5], Verdict::Drop { warn: true });
        assert_eq!(verdicts[9], Verdict::Close, "5 drops in one window");
    }

    #[test]
    fn drops_are_forgiven_after_a_window() {
        let mut guard = FloodGuard::default();
        for _ in 0..8 {
            guard.check(0, LIMITS);
        }
        // A quiet spell refills the bucket; a later flood warns afresh.
        for _ in 0..5 {
            assert_eq!(guard.check(20_000, LIMITS), Verdict::Allow);
        }
        assert_eq!(guard.check(20_000, LIMITS), Verdict::Drop { warn: true });
    }

    #[test]
    fn a_backlog_from_a_stall_is_not_a_flood() {
        // A sender at 5/s while the server was stopped for 70 s: 350
        // messages arrive at once when it resumes.
        let limits = FloodLimits {
            rate: 100,
            burst: 200,
        };
        let mut guard = FloodGuard::default();
        assert_eq!(guard.check(0, limits), Verdict::Allow);
        let forgiving = limits.after_stall(Duration::from_secs(70));
        let verdicts: Vec<Verdict> = (0..350).map(|_| guard.check(70_000, forgiving)).collect();
        assert!(verdicts.iter().all(|v| *v == Verdict::Allow));
        // Without the allowance the same backlog would be cut at the burst.
        let mut strict = FloodGuard::default();
        strict.check(0, limits);
        let dropped = (0..350)
            .filter(|_| strict.check(70_000, limits) != Verdict::Allow)
            .count();
        assert_eq!(dropped, 150);
    }

    #[test]
    fn zero_rate_is_off() {
        let mut guard = FloodGuard::default();
        let off = FloodLimits { rate: 0, burst: 0 };
        assert!((0..10_000).all(|_| guard.check(0, off) == Verdict::Allow));
    }

    #[test]
    fn clock_wrap_is_harmless() {
        let mut guard = FloodGuard::default();
        assert_eq!(guard.check(u32::MAX - 10, LIMITS), Verdict::Allow);
        assert_eq!(guard.check(5, LIMITS), Verdict::Allow);
    }
}
