//! Exponential backoff with jitter, shared by the token fetch retries and
//! [`WokeloRetryPolicy`](crate::WokeloRetryPolicy).

use std::time::Duration;

/// The wait before retry number `attempt` (1-based): `base * 2^(attempt-1)`,
/// capped at `max`, times a random factor in [0.5, 1.0), so that clients that
/// failed together do not retry together.
pub(crate) fn jittered(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max)
        .mul_f64(0.5 + fastrand::f64() / 2.0)
}

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
}
