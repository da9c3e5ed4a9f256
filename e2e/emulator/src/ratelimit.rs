//! Per-client rate-limit buckets with GitHub's and GitLab's header vocabularies.
//!
//! Flow, per API request: [`Bucket::exhausted`] is checked *before* the handler runs (an
//! exhausted client gets 403/429 and nothing happens), and [`Bucket::consume`] is called
//! *after* it, only when the answer is not a 304 — GitHub does not charge conditional requests
//! that hit, and clients' ETag caches are exactly what we want to measure.
use http::HeaderValue;
use http::header::HeaderMap;

use super::model::Forge;
use super::state::now;

/// One fixed window of `limit` requests.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub limit: u32,
    pub remaining: u32,
    pub window_secs: u64,
    /// Unix time at which `remaining` goes back to `limit`.
    pub reset: i64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(limit: u32, window_secs: u64) -> Self {
        Self {
            limit,
            remaining: limit,
            window_secs,
            reset: now() + window_secs as i64,
        }
    }

    /// Starts a new window when the old one has passed.
    pub fn roll(&mut self) {
        let t = now();
        if t >= self.reset {
            self.remaining = self.limit;
            self.reset = t + self.window_secs as i64;
        }
    }

    /// Whether the next request must be refused.
    pub fn exhausted(&mut self) -> bool {
        self.roll();
        self.remaining == 0
    }

    /// Charges one request.
    pub fn consume(&mut self) {
        self.roll();
        self.remaining = self.remaining.saturating_sub(1);
    }

    /// Requests used in this window.
    pub fn used(&self) -> u32 {
        self.limit - self.remaining.min(self.limit)
    }

    /// Adds the forge's rate-limit headers (Gitea sends none).
    pub fn write_headers(&self, forge: Forge, h: &mut HeaderMap) {
        let mut put = |k: &'static str, v: String| {
            if let Ok(v) = HeaderValue::from_str(&v) {
                h.insert(k, v);
            }
        };
        match forge {
            Forge::Github => {
                put("x-ratelimit-limit", self.limit.to_string());
                put("x-ratelimit-remaining", self.remaining.to_string());
                put("x-ratelimit-used", self.used().to_string());
                put("x-ratelimit-reset", self.reset.to_string());
                put("x-ratelimit-resource", "core".into());
            }
            Forge::Gitlab => {
                put("ratelimit-limit", self.limit.to_string());
                put("ratelimit-observed", self.used().to_string());
                put("ratelimit-remaining", self.remaining.to_string());
                put("ratelimit-reset", self.reset.to_string());
                let reset_time = jiff::Timestamp::from_second(self.reset)
                    .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
                    .unwrap_or_default();
                put("ratelimit-resettime", reset_time);
            }
            Forge::Gitea => {}
        }
    }
}
