//! A warning said at most once per interval, for what others can make
//! happen at any rate.
//!
//! Whoever can publish on a room's channel (another program on the same
//! Redis, a node of an incompatible version) decides how many malformed
//! pushes this node receives. A log line per push would let them flood the
//! operator's logs and spend this loop's time formatting; no line at all
//! would hide the problem. So the first is said at once, and later ones at
//! most once per [`EVERY`], with how many were held back meanwhile. The
//! metrics (`wschat_redis_malformed` for pushes not of the bus's form,
//! `wschat_relay_undecodable` for events not of the chat's encoding) still
//! count every one.

use std::fmt;
use std::time::{Duration, Instant};

/// At most one line of a throttled warning per this long.
pub const EVERY: Duration = Duration::from_secs(10);

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
    /// the last one (shown as [`Held`]); `None` if this one is held back.
    pub fn allow(&mut self, now: Instant) -> Option<Held> {
        if self.next.is_some_and(|next| now < next) {
            self.held = self.held.saturating_add(1);
            return None;
        }
        self.next = Some(now + EVERY);
        Some(Held(std::mem::take(&mut self.held)))
    }
}

/// Occurrences kept quiet before a line; shown at the end of the line
/// (nothing when there were none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held(pub u64);

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more since the last warning)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_said_then_one_per_interval_with_the_count_held() {
        let t0 = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.allow(t0), Some(Held(0)));
        for i in 1..=1000 {
            assert_eq!(throttle.allow(t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(throttle.allow(t0 + EVERY), Some(Held(1000)));
        assert_eq!(throttle.allow(t0 + EVERY), None);
        // After a quiet spell, the next is said at once.
        assert_eq!(throttle.allow(t0 + EVERY * 5), Some(Held(1)));
        assert_eq!(throttle.allow(t0 + EVERY * 7), Some(Held(0)));
    }

    #[test]
    fn what_was_held_is_said_only_when_something_was() {
        assert_eq!(format!("dropped{}", Held(0)), "dropped");
        assert_eq!(
            format!("dropped{}", Held(3)),
            "dropped (3 more since the last warning)"
        );
    }
}
