//! How long the read-ahead's GETs are, from what the store's answers have shown.
//!
//! A GET costs a wait for its first byte, then the transfer. Short GETs keep many in flight
//! (good on S3, where the first byte takes tens of milliseconds and one connection carries
//! about 100 MB/s); on a store whose first byte takes hundreds of milliseconds (a distant
//! region, an overloaded gateway, a small S3-compatible server that reads the whole object
//! for every ranged GET) the same GETs spend most of their time waiting, and a sequential
//! reader waits with them. So a read-ahead GET is made long enough that its first-byte wait
//! is at most a quarter of its transfer time: `4 x first-byte time x transfer rate`, between
//! the usual GET length and a quarter of the memory cache (the read-ahead window then grows
//! to two such GETs, up to half the cache: `Blocks::read_ahead_window`). The same idea as
//! mountpoint-s3's growing prefetch requests, driven by measurement rather than by a fixed
//! schedule.

use std::sync::Mutex;
use std::time::Duration;

/// A GET's first-byte wait is at most 1/`WAIT_SHARE` of its transfer time.
const WAIT_SHARE: f64 = 4.0;

/// Weight of a new sample in the running averages.
const NEW_SAMPLE_WEIGHT: f64 = 0.25;

/// Bodies shorter than this say little about the transfer rate (their time is mostly
/// the proxy's and the client's overhead).
const MIN_RATE_SAMPLE: u64 = 256 << 10;

/// Running averages of the first-byte wait and the transfer rate of this store's GETs.
#[derive(Debug, Default)]
pub(crate) struct GetPacing {
    seen: Mutex<Seen>,
}

#[derive(Debug, Default)]
struct Seen {
    /// Seconds from sending a GET to its first body byte.
    first_byte: Option<f64>,
    /// Body bytes per second, once a body long enough to tell has come.
    rate: Option<f64>,
}

fn blend(old: Option<f64>, new: f64) -> f64 {
    match old {
        Some(old) => old + NEW_SAMPLE_WEIGHT * (new - old),
        None => new,
    }
}

impl GetPacing {
    /// One finished GET: `first_byte` after sending it, then `bytes` of body in `body`.
    pub(crate) fn record(&self, first_byte: Duration, bytes: u64, body: Duration) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.first_byte = Some(blend(seen.first_byte, first_byte.as_secs_f64()));
        if bytes >= MIN_RATE_SAMPLE && !body.is_zero() {
            seen.rate = Some(blend(seen.rate, bytes as f64 / body.as_secs_f64()));
        }
    }

    /// Bytes one read-ahead GET should ask for: `usual` until the store has been measured,
    /// then enough to keep the wait for the first byte a small share, within
    /// `[usual, longest]`.
    pub(crate) fn read_ahead_get(&self, usual: u64, longest: u64) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(first_byte), Some(rate)) = (seen.first_byte, seen.rate) else {
            return usual;
        };
        let worth = (WAIT_SHARE * first_byte * rate) as u64;
        worth.clamp(usual, longest.max(usual))
    }

    /// Bytes a streaming GET may read and drop to reach a block further on rather than be
    /// replaced by a new GET: what the store sends in the time a new GET waits for its
    /// first byte (reading them costs no more than that wait), at least `least`.
    pub(crate) fn skip_limit(&self, least: u64) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(first_byte), Some(rate)) = (seen.first_byte, seen.rate) else {
            return least;
        };
        ((first_byte * rate) as u64).max(least)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unmeasured_store_gets_the_usual_length() {
        assert_eq!(
            GetPacing::default().read_ahead_get(16 * MIB, 32 * MIB),
            16 * MIB
        );
    }

    #[test]
    fn a_fast_first_byte_keeps_the_usual_length() {
        let pacing = GetPacing::default();
        // S3-like: 30 ms to the first byte, 100 MB/s: 4 x 0.03 x 1e8 = 12 MB < 16 MiB.
        pacing.record(ms(30), 100_000_000, ms(1000));
        assert_eq!(pacing.read_ahead_get(16 * MIB, 32 * MIB), 16 * MIB);
    }

    #[test]
    fn a_slow_first_byte_lengthens_gets_up_to_the_step() {
        let pacing = GetPacing::default();
        // 50 ms at 100 MB/s: 20 MB, between the bounds.
        pacing.record(ms(50), 100_000_000, ms(1000));
        assert_eq!(pacing.read_ahead_get(16 * MIB, 32 * MIB), 20_000_000);
        // Much slower first bytes: capped at the read-ahead step.
        for _ in 0..20 {
            pacing.record(ms(400), 75_000_000, ms(1000));
        }
        assert_eq!(pacing.read_ahead_get(16 * MIB, 32 * MIB), 32 * MIB);
    }

    #[test]
    fn a_stream_skips_what_the_store_sends_during_one_first_byte_wait() {
        let pacing = GetPacing::default();
        assert_eq!(pacing.skip_limit(MIB), MIB, "unmeasured");
        pacing.record(ms(300), 100_000_000, ms(1000));
        assert_eq!(pacing.skip_limit(MIB), 30_000_000);
        let fast = GetPacing::default();
        fast.record(ms(5), 100_000_000, ms(1000));
        assert_eq!(fast.skip_limit(MIB), MIB);
    }

    #[test]
    fn short_bodies_do_not_set_the_rate() {
        let pacing = GetPacing::default();
        pacing.record(ms(400), 1000, ms(1));
        assert_eq!(pacing.read_ahead_get(16 * MIB, 32 * MIB), 16 * MIB);
    }
}
