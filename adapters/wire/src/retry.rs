//! The backoff every adapter retries with.

use std::time::Duration;

use backon::ExponentialBuilder;

/// Exponential backoff from `min` to `max`, at most `times` retries, with full random jitter.
///
/// The jitter's generator is seeded at random for every call (backon's `std` feature): with a
/// fixed seed every process and every request would wait exactly the same delays, and clients
/// that failed together would retry together, in lockstep, against a platform that is already
/// struggling.
pub fn jittered(min: Duration, max: Duration, times: usize) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_max_times(times)
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use backon::BackoffBuilder;

    use super::*;

    #[test]
    fn two_backoffs_do_not_wait_the_same() {
        let delays = || -> Vec<Duration> {
            jittered(Duration::from_millis(200), Duration::from_secs(20), 5)
                .build()
                .collect()
        };
        let (a, b) = (delays(), delays());
        assert_eq!(a.len(), 5);
        assert_ne!(a, b, "the same delays twice: the jitter is not random");
        // Jitter adds up to one more delay on top of each step, never less than the step.
        assert!(
            a[0] >= Duration::from_millis(200) && a[0] <= Duration::from_millis(400),
            "{a:?}"
        );
    }
}
