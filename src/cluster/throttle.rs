//! A warning said at most once per interval, for what others can make
//! happen at any rate.
//!
//! Whoever can publish on a room's channel (another program on the same
//! Redis, a node of an incompatible version) decides how many malformed
//! pushes this node receives. A log line per push would let them flood the
//! operator's logs and spend this loop's time formatting; no line at all
//! would hide the problem. So the first is said at once, and later ones at
//! most once per interval, with how many were held back meanwhile. The
//! metric (`wschat_redis_malformed`) still counts every one.

use std::time::{Duration, Instant};

/// The state of one throttled warning.
#[derive(Debug, Default)]
pub struct Throttle {
    /// When the next line may be said; `None` before the first.
    next: Option<Instant>,
    /// Occurrences since the last line said.
    held: u64,
}

impl Throttle {
    /// Counts one occurrence at `now`. Returns `Some(held)` if a line
    /// should be said now, `held` being the occurrences kept quiet since
    /// the last one; `None` if this one is held back.
    pub fn allow(&mut self, now: Instant, every: Duration) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.held = self.held.saturating_add(1);
            return None;
        }
        self.next = Some(now + every);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(10);

    #[test]
    fn the_first_is_said_then_one_per_interval_with_the_count_held() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.allow(t0, EVERY), Some(0));
        for i in 1..=1000 {
            assert_eq!(throttle.allow(t0 + Duration::from_millis(i), EVERY), None);
        }
        assert_eq!(throttle.allow(t0 + EVERY, EVERY), Some(1000));
        assert_eq!(throttle.allow(t0 + EVERY, EVERY), None);
        // After a quiet spell, the next is said at once.
        assert_eq!(throttle.allow(t0 + EVERY * 5, EVERY), Some(1));
        assert_eq!(throttle.allow(t0 + EVERY * 7, EVERY), Some(0));
    }
}
