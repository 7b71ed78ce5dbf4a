//! The latency histogram every load client of the harness records into.
//!
//! Log-linear: values below 128 units are counted exactly, every power of
//! two above that is split into 64 buckets, so a value is known within
//! 1/64 (under 1.6 %) of itself over the whole `u64` range, in a fixed
//! table of 3,776 counters and with no allocation per sample. The unit is
//! the histogram's resolution: a microsecond for the stress scenarios, a
//! nanosecond for `ratebench`.
//!
//! A quantile falls in one bucket and can be read from either of its edges:
//! [`Histogram::quantile`] gives the lower edge (a latency at least this
//! long), [`Histogram::quantile_upper`] the upper edge, capped at the
//! largest sample (a latency at most this long). The stress scenarios
//! report the first, `make bench`'s fixed-rate run the second.

use std::time::Duration;

/// Buckets counted one value each.
const EXACT: u64 = 128;
/// Buckets per power of two above [`EXACT`].
const SUB: u64 = 64;
/// Enough buckets for every `u64`: the exact ones, then 64 for each of the
/// powers of two from 2^7 to 2^63.
const BUCKETS: usize = (EXACT + (64 - 7) * SUB) as usize;

/// A latency histogram (see the module's text).
#[derive(Clone, Debug)]
pub struct Histogram {
    /// Samples per bucket.
    counts: Vec<u64>,
    /// Samples in all.
    total: u64,
    /// The largest sample, in units.
    max: u64,
    /// Nanoseconds per unit.
    unit_ns: u64,
}

impl Histogram {
    /// A histogram counting in microseconds.
    pub fn micros() -> Histogram {
        Histogram::with_unit(1000)
    }

    /// A histogram counting in nanoseconds.
    pub fn nanos() -> Histogram {
        Histogram::with_unit(1)
    }

    fn with_unit(unit_ns: u64) -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0, unit_ns }
    }

    /// The bucket of value `v`.
    fn index(v: u64) -> usize {
        if v < EXACT {
            return v as usize;
        }
        let msb = 63 - u64::from(v.leading_zeros());
        let shift = msb - 6;
        (shift * SUB + (v >> shift)) as usize
    }

    /// The smallest value of bucket `i`.
    fn lower(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT {
            return i;
        }
        let shift = i / SUB - 1;
        (i - shift * SUB) << shift
    }

    /// The largest value of bucket `i`.
    fn upper(i: usize) -> u64 {
        let i = i as u64;
        if i < EXACT {
            return i;
        }
        let shift = i / SUB - 1;
        // In u128: the last bucket ends at u64::MAX, one below 2^64.
        (((u128::from(i - shift * SUB) + 1) << shift) - 1) as u64
    }

    fn units(&self, d: Duration) -> u64 {
        u64::try_from(d.as_nanos() / u128::from(self.unit_ns)).unwrap_or(u64::MAX)
    }

    fn duration(&self, units: u64) -> Duration {
        Duration::from_nanos(units.saturating_mul(self.unit_ns))
    }

    /// Records one latency.
    pub fn record(&mut self, d: Duration) {
        let v = self.units(d);
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds `other`'s samples (of the same resolution).
    pub fn merge(&mut self, other: &Histogram) {
        debug_assert_eq!(self.unit_ns, other.unit_ns, "histograms of different resolutions");
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// Samples recorded.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The bucket holding the `q` quantile (0..=1); `None` when empty.
    fn bucket(&self, q: f64) -> Option<usize> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(i);
            }
        }
        Some(BUCKETS - 1)
    }

    /// The `q` quantile (0..=1), read from the lower edge of its bucket;
    /// `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.bucket(q).map(|i| self.duration(Self::lower(i)))
    }

    /// The `q` quantile (0..=1), read from the upper edge of its bucket
    /// and never above the largest sample; `None` when empty.
    pub fn quantile_upper(&self, q: f64) -> Option<Duration> {
        self.bucket(q).map(|i| self.duration(Self::upper(i).min(self.max)))
    }

    /// Samples at or under `d` (to the bucket holding `d`: within a
    /// sixty-fourth).
    pub fn count_within(&self, d: Duration) -> u64 {
        let last = Self::index(self.units(d));
        self.counts[..=last].iter().sum()
    }

    /// The largest sample; `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        (self.total > 0).then(|| self.duration(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_lands_in_a_bucket_that_holds_it_within_a_sixty_fourth() {
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 4095, 4096, 123_456, 10_000_000, u64::MAX / 3, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < BUCKETS, "{v}: bucket {i} out of the table");
            let (lo, hi) = (Histogram::lower(i), Histogram::upper(i));
            assert!(lo <= v && v <= hi, "{v}: bucket {i} is [{lo}, {hi}]");
            assert!(v - lo <= v / 64 + 1, "{v}: bucket from {lo} too coarse");
        }
    }

    #[test]
    fn buckets_tile_the_values_without_gaps() {
        for i in 0..BUCKETS - 1 {
            assert_eq!(Histogram::upper(i) + 1, Histogram::lower(i + 1), "between buckets {i} and {}", i + 1);
        }
        assert_eq!(Histogram::upper(BUCKETS - 1), u64::MAX);
    }

    #[test]
    fn quantiles_read_from_either_edge() {
        let mut h = Histogram::micros();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.max(), None);
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let us = |d: Option<Duration>| d.map(|d| d.as_micros());
        assert_eq!(us(h.quantile(0.5)), Some(50));
        assert_eq!(us(h.quantile(0.99)), Some(99));
        assert_eq!(us(h.quantile(1.0)), Some(100));
        assert_eq!(us(h.quantile_upper(1.0)), Some(100));
        assert_eq!(us(h.max()), Some(100));
        let mut n = Histogram::nanos();
        n.record(Duration::from_nanos(1000));
        n.record(Duration::from_nanos(1003));
        // 1000 and 1003 share the bucket [1000, 1007]: the upper edge is
        // capped at the largest sample.
        assert_eq!(n.quantile(0.5), Some(Duration::from_nanos(1000)));
        assert_eq!(n.quantile_upper(0.5), Some(Duration::from_nanos(1003)));
        let mut m = Histogram::nanos();
        m.record(Duration::from_nanos(5));
        n.merge(&m);
        assert_eq!((n.len(), n.quantile(0.01)), (3, Some(Duration::from_nanos(5))));
    }
}
