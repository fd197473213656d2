//! Exponential backoff with jitter, shared by the token fetch retries and
//! [`WokeloRetryPolicy`](crate::WokeloRetryPolicy).

use std::time::Duration;

/// The wait before retry number `attempt` (1-based): `base * 2^(attempt-1)`,
/// capped at `max`, times a random factor in [0.5, 1.0), so that clients that
/// failed together do not retry together.
///
/// Total for every input: the doubling saturates (at `Duration::MAX`, then
/// capped at `max`) and the jitter is drawn in whole nanoseconds, so no
/// `attempt`, `base` or `max` can overflow or panic.
pub(crate) fn jittered(base: Duration, max: Duration, attempt: u32) -> Duration {
    let nominal = base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(max)
        .as_nanos();
    let half = nominal / 2;
    // [nominal / 2, nominal): the upper half, drawn uniformly.
    let nanos = half + fastrand::u128(0..(nominal - half).max(1));
    // At most `max` in nanoseconds, so the seconds fit a u64.
    Duration::new(
        u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX),
        (nanos % NANOS_PER_SEC) as u32,
    )
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_within_the_jitter() {
        let (base, max) = (Duration::from_millis(200), Duration::from_secs(10));
        for attempt in 1..=20 {
            let nominal = base.saturating_mul(1 << (attempt - 1).min(16)).min(max);
            let d = jittered(base, max, attempt);
            assert!(d >= nominal / 2 && d < nominal, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn no_attempt_overflows() {
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        for attempt in [0, 1, 64, 65, 1000, u32::MAX - 1, u32::MAX] {
            let d = jittered(base, max, attempt);
            assert!(d <= max, "attempt {attempt}: {d:?}");
        }
        let d = jittered(base, max, u32::MAX);
        assert!(d >= max / 2 && d < max, "{d:?}");
    }

    #[test]
    fn no_base_or_cap_overflows() {
        for attempt in [1, 2, 64, u32::MAX] {
            let d = jittered(Duration::MAX, Duration::MAX, attempt);
            assert!(d >= Duration::MAX / 2, "attempt {attempt}: {d:?}");
            let d = jittered(Duration::MAX, Duration::from_secs(60), attempt);
            assert!(d >= Duration::from_secs(30) && d < Duration::from_secs(60));
        }
        assert_eq!(
            jittered(Duration::ZERO, Duration::MAX, u32::MAX),
            Duration::ZERO
        );
        assert_eq!(jittered(Duration::MAX, Duration::ZERO, 3), Duration::ZERO);
        // One nanosecond cannot be halved: it stays within [0, 1] ns.
        assert!(jittered(Duration::from_nanos(1), Duration::MAX, 1) <= Duration::from_nanos(1));
    }
}
