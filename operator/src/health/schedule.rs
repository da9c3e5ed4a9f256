//! When each check probes next, pure: one min-heap for every check (not a task per check), so a
//! deleted or changed check cannot leave a timer behind. Entries carry an epoch; changing or
//! removing a check bumps it and the stale heap entries are skipped when they come up.
//!
//! Probes run at a fixed rate (`due + interval`), so a slow probe or a busy scheduler does not
//! drift a check; when a probe is more than one interval late the next one is re-anchored at
//! `now + interval` instead of firing a burst to catch up.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::Duration;
use tokio::time::Instant;

/// See the module docs.
#[derive(Debug)]
pub struct Schedule<K: Clone + Eq + Hash + Ord> {
    heap: BinaryHeap<Reverse<(Instant, K, u64)>>,
    epochs: HashMap<K, u64>,
    next_epoch: u64,
}

impl<K: Clone + Eq + Hash + Ord> Default for Schedule<K> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            epochs: HashMap::new(),
            next_epoch: 0,
        }
    }
}

/// The first probe of a new or changed check: a point within its first interval given by
/// `unit` in `[0, 1)` (random in production), so checks applied together do not probe together.
pub fn first_due(now: Instant, interval: Duration, unit: f64) -> Instant {
    now + interval.mul_f64(unit.clamp(0.0, 0.999_999))
}

/// The probe after one that was due at `due` and started at `now`.
pub fn next_due(due: Instant, now: Instant, interval: Duration) -> Instant {
    let next = due + interval;
    if next <= now { now + interval } else { next }
}

impl<K: Clone + Eq + Hash + Ord> Schedule<K> {
    /// Schedules `key` at `due`, replacing any earlier schedule of it.
    pub fn set(&mut self, key: K, due: Instant) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.epochs.insert(key.clone(), epoch);
        self.heap.push(Reverse((due, key, epoch)));
    }

    pub fn remove(&mut self, key: &K) {
        self.epochs.remove(key);
    }

    pub fn contains(&self, key: &K) -> bool {
        self.epochs.contains_key(key)
    }

    /// Live checks.
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    fn drop_stale_head(&mut self) {
        while let Some(Reverse((_, key, epoch))) = self.heap.peek() {
            if self.epochs.get(key) == Some(epoch) {
                return;
            }
            self.heap.pop();
        }
    }

    /// When the earliest live check is due.
    pub fn next_wake(&mut self) -> Option<Instant> {
        self.drop_stale_head();
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Removes and returns every live check due at `now`, with the time it was due. A popped
    /// check is not scheduled again until [`Schedule::set`] is called for it.
    pub fn pop_due(&mut self, now: Instant) -> Vec<(K, Instant)> {
        let mut due = Vec::new();
        loop {
            self.drop_stale_head();
            match self.heap.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {
                    let Reverse((at, key, _)) = self.heap.pop().expect("peeked");
                    self.epochs.remove(&key);
                    due.push((key, at));
                }
                _ => return due,
            }
        }
    }

    /// Heap entries including stale ones (bounded: compacted when it doubles the live count).
    pub fn heap_len(&self) -> usize {
        self.heap.len()
    }

    /// Drops stale entries when they outnumber the live ones, so a check changed many times
    /// between two of its probes does not grow the heap.
    pub fn compact(&mut self) {
        if self.heap.len() > 2 * self.epochs.len() + 64 {
            let epochs = &self.epochs;
            self.heap
                .retain(|Reverse((_, key, epoch))| epochs.get(key) == Some(epoch));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_order_and_skips_replaced_and_removed_entries() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut sched = Schedule::default();
        sched.set("a", s(5));
        sched.set("b", s(2));
        sched.set("c", s(3));
        sched.set("a", s(1)); // changed spec: earlier
        sched.remove(&"c"); // deleted
        assert_eq!(sched.next_wake(), Some(s(1)));
        assert_eq!(sched.pop_due(s(4)), vec![("a", s(1)), ("b", s(2))]);
        // a's old entry at 5s is stale; nothing live remains.
        assert_eq!(sched.pop_due(s(10)), vec![]);
        assert!(sched.is_empty());
        assert_eq!(sched.next_wake(), None);
    }

    #[test]
    fn a_popped_check_waits_for_its_next_schedule() {
        let t0 = Instant::now();
        let mut sched = Schedule::default();
        sched.set(1u32, t0);
        assert_eq!(sched.pop_due(t0).len(), 1);
        assert!(!sched.contains(&1));
        assert!(sched.pop_due(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn fixed_rate_without_bursts() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        // On time, or a little late: the next probe keeps the grid.
        assert_eq!(next_due(t0, t0 + Duration::from_secs(3), i), t0 + i);
        // More than an interval late: re-anchored, no catch-up burst.
        let late = t0 + Duration::from_secs(25);
        assert_eq!(next_due(t0, late, i), late + i);
    }

    #[test]
    fn first_probe_is_spread_over_one_interval() {
        let t0 = Instant::now();
        let i = Duration::from_secs(10);
        assert_eq!(first_due(t0, i, 0.0), t0);
        assert_eq!(first_due(t0, i, 0.5), t0 + Duration::from_secs(5));
        assert!(first_due(t0, i, 1.0) < t0 + i);
    }

    #[test]
    fn compaction_bounds_the_heap() {
        let t0 = Instant::now();
        let mut sched = Schedule::default();
        for n in 0..1000u64 {
            sched.set("churn", t0 + Duration::from_secs(n));
            sched.compact();
        }
        assert!(
            sched.heap_len() <= 2 * sched.len() + 65,
            "{}",
            sched.heap_len()
        );
        assert_eq!(sched.len(), 1);
    }
}
