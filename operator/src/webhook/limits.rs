//! Bounded in-memory state of the ingress: the delivery-id de-duplication cache, the
//! token-bucket rate limiters, the global in-flight body-byte budget ([`ByteBudget`]) and the
//! concurrency caps per address and in total ([`ConcurrencyCap`]). Everything is bounded
//! (least recently used entries are evicted, or a key exists only while it holds a permit)
//! because keys come from the network, and time is passed in (`now`) so the logic is pure and
//! testable without sleeping.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A map with a capacity that evicts the least recently *touched* entry. Touch order is kept
/// in a `BTreeMap` keyed by a monotonically increasing sequence number, so every operation is
/// `O(log n)`.
#[derive(Debug)]
pub(crate) struct BoundedLru<K, V> {
    entries: HashMap<K, (u64, V)>,
    order: BTreeMap<u64, K>,
    next_seq: u64,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> BoundedLru<K, V> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            capacity: capacity.max(1),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// The entry for `key`, marking it most recently used.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let seq = self.bump();
        let (old_seq, value) = self.entries.get_mut(key)?;
        let old = std::mem::replace(old_seq, seq);
        if let Some(k) = self.order.remove(&old) {
            self.order.insert(seq, k);
        }
        Some(value)
    }

    /// The entry for `key` without touching it.
    pub(crate) fn peek(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    /// Insert or replace `key` as the most recently used entry, evicting the least recently
    /// used one when full.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        let seq = self.bump();
        if let Some((old_seq, _)) = self.entries.insert(key.clone(), (seq, value)) {
            self.order.remove(&old_seq);
        }
        self.order.insert(seq, key);
        while self.entries.len() > self.capacity {
            self.pop_oldest();
        }
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let (seq, value) = self.entries.remove(key)?;
        self.order.remove(&seq);
        Some(value)
    }

    /// The least recently used entry.
    pub(crate) fn oldest(&self) -> Option<(&K, &V)> {
        let (_, key) = self.order.first_key_value()?;
        self.entries.get(key).map(|(_, v)| (key, v))
    }

    pub(crate) fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, key) = self.order.pop_first()?;
        let (_, value) = self.entries.remove(&key)?;
        Some((key, value))
    }
}

/// Delivery ids seen recently. An id is remembered for `ttl` after it was first recorded
/// (repeats do not extend it), in insertion order, so expired ids are always the oldest.
#[derive(Debug)]
pub(crate) struct DedupeCache<K> {
    seen: BoundedLru<K, Instant>,
    ttl: Duration,
}

impl<K: Clone + Eq + Hash> DedupeCache<K> {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            seen: BoundedLru::new(capacity),
            ttl,
        }
    }

    /// Record `key`; `false` if it was already recorded within the TTL (a duplicate).
    /// Checking and recording are one step so concurrent redeliveries cannot both pass.
    pub(crate) fn record(&mut self, key: K, now: Instant) -> bool {
        self.expire(now);
        if self.seen.peek(&key).is_some() {
            return false;
        }
        self.seen.insert(key, now);
        true
    }

    /// Forget `key` (used when the delivery was refused after all, so a redelivery counts).
    pub(crate) fn forget(&mut self, key: &K) {
        self.seen.remove(key);
    }

    fn expire(&mut self, now: Instant) {
        while let Some((_, recorded)) = self.seen.oldest() {
            if now.saturating_duration_since(*recorded) < self.ttl {
                break;
            }
            self.seen.pop_oldest();
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// A token bucket: `tokens` refill at `rate` per second up to `burst`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets per key, bounded: an evicted key starts again with a full bucket, which only
/// matters if more than `capacity` keys are active at once.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    buckets: BoundedLru<K, Bucket>,
    rate: f64,
    burst: f64,
}

impl<K: Clone + Eq + Hash> RateLimiter<K> {
    /// `rate` tokens per second (non-positive or NaN: no refill), `burst` of at least one.
    pub(crate) fn new(capacity: usize, rate: f64, burst: u32) -> Self {
        Self {
            buckets: BoundedLru::new(capacity),
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                0.0
            },
            burst: f64::from(burst.max(1)),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> Bucket {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        Bucket {
            tokens: (bucket.tokens + elapsed * self.rate).min(self.burst),
            updated: now,
        }
    }

    fn current(&mut self, key: &K, now: Instant) -> Bucket {
        let full = Bucket {
            tokens: self.burst,
            updated: now,
        };
        let bucket = self.buckets.get_mut(key).map_or(full, |b| *b);
        self.refilled(bucket, now)
    }

    /// Take one token, or say how long until one is available.
    pub(crate) fn try_acquire(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut bucket = self.current(key, now);
        let result = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait_for_token(bucket))
        };
        self.buckets.insert(key.clone(), bucket);
        result
    }

    /// Whether a token is available (without taking it); how long to wait otherwise.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        match self.buckets.peek(key) {
            None => Ok(()),
            Some(bucket) => {
                let bucket = self.refilled(*bucket, now);
                if bucket.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait_for_token(bucket))
                }
            }
        }
    }

    /// Take one token if there is one (charging a failure never fails).
    pub(crate) fn charge(&mut self, key: &K, now: Instant) {
        let mut bucket = self.current(key, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        self.buckets.insert(key.clone(), bucket);
    }

    fn wait_for_token(&self, bucket: Bucket) -> Duration {
        if self.rate == 0.0 {
            return Duration::MAX;
        }
        Duration::from_secs_f64(((1.0 - bucket.tokens) / self.rate).max(0.0))
    }
}

/// Bytes of request bodies buffered at once, across all requests. A request reserves bytes
/// *before* it buffers them ([`Reservation::grow`]) and gives them back when its
/// [`Reservation`] is dropped, so the sum of buffered bodies never exceeds `capacity`.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    capacity: usize,
    used: AtomicUsize,
}

impl ByteBudget {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved right now.
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty reservation to grow.
    pub(crate) fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes one request holds from a [`ByteBudget`]; released on drop.
#[derive(Debug)]
pub(crate) struct Reservation {
    budget: Arc<ByteBudget>,
    bytes: usize,
}

impl Reservation {
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Reserve `extra` more bytes; `false` (and nothing reserved) when the budget cannot
    /// cover them.
    pub(crate) fn grow(&mut self, extra: usize) -> bool {
        let budget = &self.budget;
        let reserved = budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(extra).filter(|&n| n <= budget.capacity)
            })
            .is_ok();
        if reserved {
            self.bytes += extra;
        }
        reserved
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Why a [`ConcurrencyCap`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CapExceeded {
    /// The cap over all keys.
    Total,
    /// The cap of this one key (an address).
    PerKey,
}

#[derive(Debug)]
struct CapState<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

/// Things held at once (connections, requests), in total and per key. A key is present only
/// while it holds a permit, so the map is bounded by the total cap.
#[derive(Debug)]
pub(crate) struct ConcurrencyCap<K: Eq + Hash> {
    total: usize,
    per_key: usize,
    state: Mutex<CapState<K>>,
}

impl<K: Clone + Eq + Hash> ConcurrencyCap<K> {
    pub(crate) fn new(total: usize, per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            total: total.max(1),
            per_key: per_key.max(1),
            state: Mutex::new(CapState {
                total: 0,
                per_key: HashMap::new(),
            }),
        })
    }

    /// A permit, counted against `key`'s cap too unless `key` is `None` (exempt, e.g. a
    /// trusted proxy that carries many clients).
    pub(crate) fn try_admit(self: &Arc<Self>, key: Option<K>) -> Result<Permit<K>, CapExceeded> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.total >= self.total {
            return Err(CapExceeded::Total);
        }
        if let Some(key) = &key {
            let held = state.per_key.entry(key.clone()).or_insert(0);
            if *held >= self.per_key {
                return Err(CapExceeded::PerKey);
            }
            *held += 1;
        }
        state.total += 1;
        Ok(Permit {
            cap: self.clone(),
            key,
        })
    }

    /// Permits held in total and by `key`.
    #[cfg(test)]
    pub(crate) fn held(&self, key: &K) -> (usize, usize) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.total, state.per_key.get(key).copied().unwrap_or(0))
    }
}

/// One admitted connection or request; gives its place back on drop.
#[derive(Debug)]
pub(crate) struct Permit<K: Clone + Eq + Hash> {
    cap: Arc<ConcurrencyCap<K>>,
    key: Option<K>,
}

impl<K: Clone + Eq + Hash> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut state = self
            .cap
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.total = state.total.saturating_sub(1);
        if let Some(key) = &self.key
            && let Some(held) = state.per_key.get_mut(key)
        {
            *held -= 1;
            if *held == 0 {
                state.per_key.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn byte_budget_reserves_before_and_releases_on_drop() {
        let budget = ByteBudget::new(100);
        let mut a = budget.reservation();
        assert!(a.grow(60));
        let mut b = budget.reservation();
        assert!(!b.grow(41), "60 + 41 exceeds the budget");
        assert_eq!(b.bytes(), 0, "a refused growth reserves nothing");
        assert!(b.grow(40));
        assert_eq!(budget.in_use(), 100);
        assert!(!a.grow(1));
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(b.grow(60));
        assert_eq!(b.bytes(), 100);
        assert!(!b.grow(usize::MAX), "overflow is a refusal, not a wrap");
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrency_cap_counts_per_key_and_in_total() {
        let cap = ConcurrencyCap::new(3, 2);
        let a1 = cap.try_admit(Some("a")).unwrap();
        let a2 = cap.try_admit(Some("a")).unwrap();
        assert_eq!(cap.try_admit(Some("a")).unwrap_err(), CapExceeded::PerKey);
        let b1 = cap.try_admit(Some("b")).unwrap();
        assert_eq!(cap.try_admit(Some("c")).unwrap_err(), CapExceeded::Total);
        assert_eq!(cap.try_admit(None).unwrap_err(), CapExceeded::Total);
        drop(a1);
        assert_eq!(cap.held(&"a"), (2, 1));
        // An exempt holder counts only against the total.
        let exempt = cap.try_admit(None).unwrap();
        assert_eq!(cap.try_admit(Some("d")).unwrap_err(), CapExceeded::Total);
        drop((a2, b1, exempt));
        assert_eq!(cap.held(&"a"), (0, 0));
        assert!(
            cap.state.lock().unwrap().per_key.is_empty(),
            "keys leave with their last permit"
        );
    }

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut lru = BoundedLru::new(2);
        lru.insert("a", 1);
        lru.insert("b", 2);
        assert_eq!(lru.get_mut(&"a"), Some(&mut 1)); // "b" is now the oldest
        lru.insert("c", 3);
        assert_eq!(lru.len(), 2);
        assert_eq!(lru.peek(&"b"), None);
        assert_eq!(lru.peek(&"a"), Some(&1));
        assert_eq!(lru.peek(&"c"), Some(&3));
        assert_eq!(lru.remove(&"a"), Some(1));
        assert_eq!(lru.pop_oldest(), Some(("c", 3)));
        assert_eq!(lru.pop_oldest(), None);
    }

    #[test]
    fn dedupe_detects_repeats_until_ttl_and_is_bounded() {
        let t0 = Instant::now();
        let mut cache = DedupeCache::new(3, Duration::from_secs(60));
        assert!(cache.record("d1", t0));
        assert!(!cache.record("d1", t0 + Duration::from_secs(30)));
        // The repeat did not extend the TTL.
        assert!(cache.record("d1", t0 + Duration::from_secs(60)));

        let t1 = t0 + Duration::from_secs(100);
        for id in ["x", "y", "z", "w"] {
            assert!(cache.record(id, t1));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.record("x", t1), "oldest id was evicted at capacity");

        cache.forget(&"w");
        assert!(cache.record("w", t1));
    }

    #[test]
    fn dedupe_expires_old_entries_on_use() {
        let t0 = Instant::now();
        let mut cache = DedupeCache::new(100, Duration::from_secs(10));
        for i in 0..50 {
            cache.record(i, t0);
        }
        cache.record(1000, t0 + Duration::from_secs(11));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn token_bucket_allows_burst_then_refills() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 2.0, 3);
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(&"k", t0), Ok(()));
        }
        let wait = limiter.try_acquire(&"k", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(limiter.try_acquire(&"other", t0), Ok(()));
        assert!(
            limiter
                .try_acquire(&"k", t0 + Duration::from_millis(400))
                .is_err()
        );
        assert_eq!(
            limiter.try_acquire(&"k", t0 + Duration::from_millis(900)),
            Ok(())
        );
        // Refill is capped at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(limiter.try_acquire(&"k", later), Ok(()));
        }
        assert!(limiter.try_acquire(&"k", later).is_err());
    }

    #[test]
    fn check_and_charge_model_failure_budgets() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 1.0, 2);
        assert_eq!(limiter.check(&"ip", t0), Ok(()));
        limiter.charge(&"ip", t0);
        assert_eq!(limiter.check(&"ip", t0), Ok(()));
        limiter.charge(&"ip", t0);
        limiter.charge(&"ip", t0);
        assert_eq!(limiter.check(&"ip", t0), Err(Duration::from_secs(1)));
        assert_eq!(limiter.check(&"ip", t0 + Duration::from_secs(1)), Ok(()));
    }

    #[test]
    fn zero_rate_never_refills() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(10, 0.0, 0);
        assert_eq!(limiter.try_acquire(&"k", t0), Ok(()));
        assert_eq!(
            limiter.try_acquire(&"k", t0 + Duration::from_secs(1_000_000)),
            Err(Duration::MAX)
        );
    }
}
