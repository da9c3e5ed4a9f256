//! The rolling window of one check, pure and bounded: the latest probes (at most
//! [`MAX_SAMPLES`], none older than [`MAX_AGE`]), from which availability and latency
//! percentiles are computed for status. 8 bytes per sample, so ≤ 1 KiB per check.

use jiff::Timestamp;
use std::collections::VecDeque;
use std::time::Duration;

pub const MAX_SAMPLES: usize = 100;
pub const MAX_AGE: Duration = Duration::from_secs(3600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sample {
    /// Seconds since the epoch (fits until 2106).
    at: u32,
    /// Latency in microseconds (capped at ~35 minutes), the top bit set for a success.
    latency_ok: u32,
}

const OK_BIT: u32 = 1 << 31;

impl Sample {
    fn ok(&self) -> bool {
        self.latency_ok & OK_BIT != 0
    }

    fn latency_us(&self) -> u32 {
        self.latency_ok & !OK_BIT
    }
}

/// See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    samples: VecDeque<Sample>,
}

/// The figures status shows.
#[derive(Clone, Debug, PartialEq)]
pub struct Figures {
    pub availability: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub window: String,
}

impl Window {
    pub fn record(&mut self, at: Timestamp, ok: bool, latency: Duration) {
        let latency_us = u32::try_from(latency.as_micros())
            .unwrap_or(u32::MAX)
            .min(OK_BIT - 1);
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: u32::try_from(at.as_second().max(0)).unwrap_or(u32::MAX),
            latency_ok: latency_us | if ok { OK_BIT } else { 0 },
        });
        self.expire(at);
    }

    fn expire(&mut self, now: Timestamp) {
        let oldest = now.as_second() - MAX_AGE.as_secs() as i64;
        while self
            .samples
            .front()
            .is_some_and(|s| i64::from(s.at) < oldest)
        {
            self.samples.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Availability and nearest-rank latency percentiles over the window; `None` when empty.
    pub fn figures(&self) -> Option<Figures> {
        let n = self.samples.len();
        if n == 0 {
            return None;
        }
        let ok = self.samples.iter().filter(|s| s.ok()).count();
        let mut lat: Vec<u32> = self.samples.iter().map(Sample::latency_us).collect();
        lat.sort_unstable();
        let rank = |p: f64| {
            let i = ((p / 100.0) * n as f64).ceil() as usize;
            Duration::from_micros(u64::from(lat[i.clamp(1, n) - 1]))
        };
        let span = i64::from(self.samples.back().map(|s| s.at).unwrap_or_default())
            - i64::from(self.samples.front().map(|s| s.at).unwrap_or_default());
        Some(Figures {
            availability: percent(ok, n),
            p50: format_latency(rank(50.0)),
            p95: format_latency(rank(95.0)),
            p99: format_latency(rank(99.0)),
            window: format!(
                "{n} probe{} over {}",
                if n == 1 { "" } else { "s" },
                format_span(Duration::from_secs(span.max(0) as u64))
            ),
        })
    }
}

/// `99.5%`, `100%`, `0%`: one decimal, trailing `.0` dropped.
fn percent(ok: usize, n: usize) -> String {
    let tenths = (ok as f64 * 1000.0 / n as f64).floor() as u64;
    if tenths.is_multiple_of(10) {
        format!("{}%", tenths / 10)
    } else {
        format!("{}.{}%", tenths / 10, tenths % 10)
    }
}

/// `850us`, `12ms`, `1.25s`.
pub fn format_latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{}ms", us / 1000)
    } else {
        let s = format!("{:.2}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// `45s`, `16m40s`, `1h0m0s`.
fn format_span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    #[test]
    fn figures_over_the_latest_probes() {
        let mut w = Window::default();
        assert!(w.figures().is_none());
        for i in 0..200 {
            // 1..=200 ms; every 10th fails.
            w.record(at(i * 10), i % 10 != 0, Duration::from_millis(i as u64 + 1));
        }
        assert_eq!(w.len(), MAX_SAMPLES, "bounded by count");
        let f = w.figures().unwrap();
        // The latest 100: 101..=200 ms, 10 failures.
        assert_eq!(f.availability, "90%");
        assert_eq!(f.p50, "150ms");
        assert_eq!(f.p95, "195ms");
        assert_eq!(f.p99, "199ms");
        assert_eq!(f.window, "100 probes over 16m30s");
    }

    #[test]
    fn old_samples_expire() {
        let mut w = Window::default();
        w.record(at(0), false, Duration::from_millis(5));
        w.record(at(3601), true, Duration::from_millis(5));
        assert_eq!(w.len(), 1);
        assert_eq!(w.figures().unwrap().availability, "100%");
        assert_eq!(w.figures().unwrap().window, "1 probe over 0s");
    }

    #[test]
    fn a_sample_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Sample>(), 8);
        let mut w = Window::default();
        w.record(at(0), true, Duration::from_secs(7200));
        w.record(at(1), false, Duration::from_micros(3));
        let f = w.figures().unwrap();
        assert_eq!(f.availability, "50%");
        assert_eq!(f.p50, "3us");
    }

    #[test]
    fn formats() {
        assert_eq!(percent(199, 200), "99.5%");
        assert_eq!(percent(2, 3), "66.6%");
        assert_eq!(percent(0, 3), "0%");
        assert_eq!(format_latency(Duration::from_micros(850)), "850us");
        assert_eq!(format_latency(Duration::from_millis(1250)), "1.25s");
        assert_eq!(format_latency(Duration::from_secs(2)), "2s");
        assert_eq!(format_span(Duration::from_secs(3600)), "1h0m0s");
    }
}
