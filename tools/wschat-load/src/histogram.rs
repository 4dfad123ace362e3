//! A log-linear latency histogram in the style of HdrHistogram.
//!
//! Values are nanoseconds. Below 128 ns every value has its own bucket;
//! above, each power of two is split into 128 equal buckets, so a bucket
//! is never wider than 1/128 (0.8 %) of the values it holds. The range
//! ends at 60 s (about 3,800 buckets, 30 KiB); larger values land in the
//! last bucket while the exact maximum is kept aside. Recording is an
//! index computation and an increment: no allocation per sample.

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;

/// The largest value with its own bucket: 60 seconds.
pub const MAX_TRACKED_NS: u64 = 60_000_000_000;

const fn index_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let shift = exponent - SUB_BITS;
    let sub = (value >> shift) - SUB;
    (SUB + shift as u64 * SUB + sub) as usize
}

const BUCKETS: usize = index_of(MAX_TRACKED_NS) + 1;

/// The smallest and largest value a bucket stands for.
fn bounds_of(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index);
    }
    let shift = (index - SUB) / SUB;
    let sub = (index - SUB) % SUB;
    let low = (SUB + sub) << shift;
    (low, low + (1u64 << shift) - 1)
}

pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, ns: u64) {
        let index = index_of(ns.min(MAX_TRACKED_NS));
        self.counts[index] += 1;
        self.total += 1;
        self.sum += u128::from(ns);
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> Option<u64> {
        (self.total > 0).then_some(self.max)
    }

    pub fn min(&self) -> Option<u64> {
        (self.total > 0).then_some(self.min)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    /// The value at or below which `pct` percent of the samples fall,
    /// reported as the highest value of its bucket (never above the
    /// recorded maximum). `None` when nothing was recorded.
    pub fn percentile(&self, pct: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let wanted = ((pct / 100.0) * self.total as f64).ceil() as u64;
        let wanted = wanted.clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                let (_, high) = bounds_of(index);
                return Some(high.min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: u64, expected: u64, tolerance: f64) -> bool {
        (actual as f64 - expected as f64).abs() <= expected as f64 * tolerance
    }

    #[test]
    fn empty_has_no_percentiles() {
        let h = Histogram::new();
        assert_eq!(h.percentile(50.0), None);
        assert_eq!(h.max(), None);
        assert_eq!(h.mean(), None);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [3, 7, 100, 127] {
            h.record(v);
        }
        assert_eq!(h.percentile(25.0), Some(3));
        assert_eq!(h.percentile(50.0), Some(7));
        assert_eq!(h.percentile(75.0), Some(100));
        assert_eq!(h.percentile(100.0), Some(127));
    }

    #[test]
    fn buckets_are_contiguous_and_within_one_percent() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = bounds_of(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert!(high >= low);
            assert!((high - low) as f64 <= low as f64 / 100.0 + 1.0);
            assert_eq!(index_of(low), index);
            assert_eq!(index_of(high), index);
            expected_low = high + 1;
        }
        assert!(bounds_of(BUCKETS - 1).1 >= MAX_TRACKED_NS);
    }

    #[test]
    fn uniform_microseconds_give_expected_percentiles() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(us * 1_000);
        }
        assert_eq!(h.count(), 10_000);
        assert!(within(h.percentile(50.0).unwrap(), 5_000_000, 0.01));
        assert!(within(h.percentile(99.0).unwrap(), 9_900_000, 0.01));
        assert!(within(h.percentile(99.9).unwrap(), 9_990_000, 0.01));
        assert_eq!(h.percentile(100.0), Some(10_000_000));
        assert_eq!(h.max(), Some(10_000_000));
        assert_eq!(h.min(), Some(1_000));
        assert!(within(h.mean().unwrap() as u64, 5_000_500, 0.0001));
    }

    #[test]
    fn one_slow_sample_shows_in_the_tail_only() {
        let mut h = Histogram::new();
        for _ in 0..999 {
            h.record(50_000);
        }
        h.record(2_000_000_000);
        assert!(within(h.percentile(99.0).unwrap(), 50_000, 0.01));
        assert!(within(h.percentile(99.99).unwrap(), 2_000_000_000, 0.01));
        assert_eq!(h.max(), Some(2_000_000_000));
    }

    #[test]
    fn values_beyond_the_range_are_clamped_but_max_is_exact() {
        let mut h = Histogram::new();
        h.record(u64::MAX / 2);
        h.record(10);
        assert_eq!(h.max(), Some(u64::MAX / 2));
        assert!(h.percentile(100.0).unwrap() >= MAX_TRACKED_NS);
        assert_eq!(h.percentile(50.0), Some(10));
    }
}
