//! The `[runtime]` section: how many tokio worker threads serve requests.
//! Read once at start (the runtime exists before the config could be
//! reloaded), so a change takes effect after a restart.

#![forbid(unsafe_code)]

use std::num::NonZeroUsize;

use serde::Deserialize;

/// Tokio runtime settings.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeSection {
    /// Worker threads of the multi-threaded runtime. Unset (the default):
    /// one per CPU this process may run on (its affinity mask and cgroup
    /// CPU quota, as `std::thread::available_parallelism` reports), which is
    /// what NGINX's `worker_processes auto` and Envoy's `--concurrency`
    /// default do. Set it lower to leave CPUs to the upstreams on a shared
    /// host.
    pub worker_threads: Option<NonZeroUsize>,
}

impl RuntimeSection {
    /// The number of worker threads to start: the configured value, or the
    /// CPUs available to the process (1 if that cannot be read).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads
            .or_else(|| std::thread::available_parallelism().ok())
            .map_or(1, NonZeroUsize::get)
    }

    /// A multi-threaded tokio runtime with these settings and every driver
    /// (IO, time) enabled.
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.worker_threads())
            .enable_all()
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_the_available_cpus() {
        let cpus = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(RuntimeSection::default().worker_threads(), cpus);
    }

    #[test]
    fn configured_count_is_used() {
        let r: RuntimeSection = toml::from_str("worker_threads = 3").unwrap();
        assert_eq!(r.worker_threads(), 3);
        let rt = r.build().unwrap();
        assert_eq!(rt.metrics().num_workers(), 3);
    }

    #[test]
    fn zero_threads_is_refused() {
        let e = toml::from_str::<RuntimeSection>("worker_threads = 0").unwrap_err();
        assert!(e.to_string().contains("nonzero"), "{e}");
    }
}
