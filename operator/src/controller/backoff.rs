//! Per-object exponential back-off for transient errors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

const BASE: Duration = Duration::from_secs(2);
const MAX: Duration = Duration::from_secs(300);

/// Counts consecutive failures per object; reset on the first success.
#[derive(Debug, Default)]
pub struct BackoffTracker {
    failures: Mutex<HashMap<String, u32>>,
}

impl BackoffTracker {
    /// The delay before the next attempt: 2s, 4s, 8s, ... up to 5 minutes, with ±20% jitter so
    /// that objects failing together (a forge outage) don't retry in lockstep.
    pub fn next_delay(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock poisoned");
        let n = failures.entry(key.to_owned()).or_insert(0);
        *n = n.saturating_add(1);
        let exp = BASE.saturating_mul(1u32 << (*n - 1).min(16));
        let capped = exp.min(MAX);
        let jitter = rand::random_range(0.8..1.2);
        capped.mul_f64(jitter)
    }

    pub fn reset(&self, key: &str) {
        self.failures
            .lock()
            .expect("backoff lock poisoned")
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_with_a_cap_and_resets() {
        let b = BackoffTracker::default();
        let d1 = b.next_delay("a");
        let d2 = b.next_delay("a");
        let d3 = b.next_delay("a");
        assert!(
            d1 >= Duration::from_millis(1600) && d1 <= Duration::from_millis(2400),
            "{d1:?}"
        );
        assert!(
            d2 >= Duration::from_millis(3200) && d2 <= Duration::from_millis(4800),
            "{d2:?}"
        );
        assert!(
            d3 >= Duration::from_millis(6400) && d3 <= Duration::from_millis(9600),
            "{d3:?}"
        );
        for _ in 0..30 {
            b.next_delay("a");
        }
        assert!(b.next_delay("a") <= MAX.mul_f64(1.2));
        b.reset("a");
        assert!(b.next_delay("a") <= Duration::from_millis(2400));
        // Objects are independent.
        assert!(b.next_delay("b") <= Duration::from_millis(2400));
    }
}
