//! Logging, monitoring and operations: the ECS JSON access log
//! (`access_log`), Prometheus metrics (`metrics`, and `collect` for what is
//! read at scrape time), W3C trace context (`trace`), the admin HTTP
//! listener with `/metrics`, `/healthz`, `/readyz` (`http`), and the
//! application log format (`app_log`).

#![forbid(unsafe_code)]

pub mod access_log;
pub mod app_log;
pub mod collect;
pub mod config;
pub mod dashboard;
pub mod http;
pub mod log_writer;
pub mod metrics;
pub mod trace;

use std::sync::Arc;

pub use access_log::AccessLog;
pub use config::{AccessLogTarget, LogSection, ObservabilitySection};
pub use metrics::Metrics;

/// What the request path reports to: made once per process and kept across
/// reloads (counters must not restart; the log file stays open).
#[derive(Clone)]
pub struct Observe {
    /// The Prometheus metrics the request path updates.
    pub metrics: Arc<Metrics>,
    /// The access log the request path writes a line per request to.
    pub access_log: Arc<AccessLog>,
}

impl Default for Observe {
    /// Fresh metrics nobody scrapes and no access log.
    fn default() -> Self {
        Self {
            metrics: Arc::new(Metrics::new()),
            access_log: Arc::new(AccessLog::off()),
        }
    }
}
