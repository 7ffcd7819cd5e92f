//! Logging and monitoring, as the request path writes them: the ECS JSON
//! access log (`access_log`, written by hand through `json_out`),
//! Prometheus metrics (`metrics`), W3C trace context (`trace`), and the
//! application log format (`app_log`). The admin
//! HTTP listener that serves them, with the collectors read at scrape time
//! and the dashboard, is `admin_http`.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod app_log;
pub mod config;
pub mod json_out;
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
