//! Counts failed authentications per client address in fixed windows. Over
//! the threshold the source gets 429 without its credentials being checked
//! (which also stops it burning CPU on password hashes), and the escalation
//! hook is told once per window, so the penalty module can block it in the
//! kernel. IPv6 sources are counted per /64, as one host usually owns one.

#![forbid(unsafe_code)]

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{cache::TtlCache, config::BruteForceSection};

/// A source went over the failure threshold in the current window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbuseReport {
    /// The client address (IPv6 truncated to its /64).
    pub source: IpAddr,
    /// Failures counted in the window so far.
    pub failures: u32,
    /// The configured window.
    pub window: Duration,
}

/// Called when a source crosses the threshold (once per source and window).
pub type AbuseHook = Arc<dyn Fn(AbuseReport) + Send + Sync>;

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

pub struct BruteForce {
    enabled: bool,
    max_failures: u32,
    window: Duration,
    counters: TtlCache<IpAddr, Window>,
}

impl BruteForce {
    pub fn new(cfg: &BruteForceSection) -> Self {
        Self {
            enabled: cfg.enabled,
            max_failures: cfg.max_failures,
            window: cfg.window.get(),
            counters: TtlCache::new(cfg.max_sources),
        }
    }

    /// `Some(retry_after)` if the source is over the limit now.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if !self.enabled {
            return None;
        }
        let w = self.counters.get(&key(ip), now)?;
        (w.failures >= self.max_failures).then(|| self.retry_after(w, now))
    }

    /// Records one failure; reports when this failure crosses the threshold.
    pub fn record_failure(&self, ip: IpAddr, now: Instant, hook: Option<&AbuseHook>) {
        if !self.enabled {
            return;
        }
        let source = key(ip);
        let window = self.window;
        let crossed = self.counters.update(source, now, |current| {
            let mut w = match current {
                Some(w) if now.duration_since(w.start) < window => *w,
                _ => Window {
                    start: now,
                    failures: 0,
                },
            };
            w.failures = w.failures.saturating_add(1);
            (w, w.start + window, w.failures == self.max_failures)
        });
        if crossed {
            tracing::warn!(%source, failures = self.max_failures, "source exceeded auth failure threshold");
            if let Some(hook) = hook {
                hook(AbuseReport {
                    source,
                    failures: self.max_failures,
                    window,
                });
            }
        }
    }

    fn retry_after(&self, w: Window, now: Instant) -> Duration {
        let left = (w.start + self.window).saturating_duration_since(now);
        // Whole seconds, at least 1 (Retry-After has 1 s resolution).
        let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        Duration::from_secs(secs.max(1))
    }
}

fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;

    #[test]
    fn threshold_window_and_hook() {
        let bf = BruteForce::new(&BruteForceSection {
            enabled: true,
            max_failures: 3,
            window: crate::duration::Span::from_secs(60),
            max_sources: 10,
        });
        let reports = Arc::new(Mutex::new(Vec::new()));
        let r = reports.clone();
        let hook: AbuseHook = Arc::new(move |a| r.lock().push(a));
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        let now = Instant::now();
        for _ in 0..2 {
            bf.record_failure(ip, now, Some(&hook));
        }
        assert_eq!(bf.check(ip, now), None);
        bf.record_failure("2001:db8::2".parse().unwrap(), now, Some(&hook));
        let retry = bf.check(ip, now).expect("same /64 is over the limit");
        assert!(retry <= Duration::from_secs(60) && retry >= Duration::from_secs(1));
        bf.record_failure(ip, now, Some(&hook));
        assert_eq!(reports.lock().len(), 1, "reported once per window");
        assert_eq!(
            reports.lock()[0].source,
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(bf.check(ip, now + Duration::from_secs(61)), None);
    }
}
