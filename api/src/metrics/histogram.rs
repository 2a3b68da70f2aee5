//! A lock-free histogram of whole numbers (microseconds, batch sizes) in
//! buckets a quarter of a doubling wide: values under 8 exactly, larger
//! ones within 12.5 %. Recording is one `fetch_add`; reading takes and
//! resets the counts, so each report holds what happened since the last.

use std::sync::atomic::{AtomicU64, Ordering};

/// Values below this have a bucket each.
const EXACT: u64 = 8;

/// Buckets: the exact ones, then four a doubling up to 2^28 (268 s in
/// microseconds, far past any timeout). Larger values count in the last.
const BUCKETS: usize = 112;

/// Counts per bucket.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket of `value`: itself below [`EXACT`], else four a doubling.
fn bucket(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let doubling = 63 - value.leading_zeros();
    let quarter = (value >> (doubling - 2)) & 3;
    let index = 4 * doubling as usize + quarter as usize - 4;
    index.min(BUCKETS - 1)
}

/// The value a bucket stands for: itself when exact, else its middle.
fn middle(index: usize) -> f64 {
    if index < EXACT as usize {
        return index as f64;
    }
    let doubling = (index + 4) / 4;
    let quarter = (index + 4) % 4;
    let low = (1_u64 << doubling) as f64;
    low * (1.0 + (quarter as f64 + 0.5) / 4.0)
}

impl Histogram {
    /// Counts one `value`.
    pub fn record(&self, value: u64) {
        self.counts[bucket(value)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts since the last take, as (value, count) for every bucket
    /// that counted anything, smallest first; the counts restart at zero.
    pub fn take(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter_map(|(index, count)| {
                let count = count.swap(0, Ordering::Relaxed);
                (count > 0).then(|| (middle(index), count))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact_and_larger_ones_within_an_eighth() {
        for value in 0..EXACT {
            assert_eq!(middle(bucket(value)), value as f64);
        }
        for value in [8, 9, 15, 16, 17, 100, 999, 1_000, 54_321, 10_000_000] {
            let shown = middle(bucket(value));
            let error = (shown - value as f64).abs() / value as f64;
            assert!(
                error <= 0.125,
                "{value} is shown as {shown} ({:.1} % off)",
                error * 100.0
            );
        }
    }

    #[test]
    fn buckets_grow_with_their_values_and_huge_values_land_in_the_last() {
        let mut last = 0;
        for value in 0..100_000 {
            let index = bucket(value);
            assert!(index >= last, "{value} went back to bucket {index}");
            last = index;
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert!(middle(BUCKETS - 1) > 2.0e8, "{}", middle(BUCKETS - 1));
    }

    #[test]
    fn taking_returns_every_count_once() {
        let histogram = Histogram::default();
        for value in [1, 1, 2, 300, 310, 5_000] {
            histogram.record(value);
        }

        let taken = histogram.take();

        assert_eq!(taken.iter().map(|(_, count)| count).sum::<u64>(), 6);
        assert_eq!(taken[0], (1.0, 2));
        assert_eq!(taken[1], (2.0, 1));
        assert!(histogram.take().is_empty(), "counts restart at zero");
    }
}
