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
    /// Worker threads that serve requests (1: tokio's single-threaded
    /// scheduler, more: its multi-threaded one). Unset (the default):
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

    /// The tokio runtime for these settings, every driver (IO, time)
    /// enabled: the single-threaded scheduler when there is one worker
    /// (the thread that calls `block_on` runs every task, with none of the
    /// work-stealing scheduler's cross-thread wake-ups and atomics; about a
    /// fifth less CPU per proxied request on one core, `cargo xtask bench`),
    /// the multi-threaded one otherwise.
    ///
    /// # Errors
    /// The runtime's IO driver could not be created (epoll, eventfd).
    pub fn build(&self) -> std::io::Result<tokio::runtime::Runtime> {
        self.build_with_idle_hook(|| {})
    }

    /// [`RuntimeSection::build`], with `on_idle` called each time a worker
    /// thread runs out of work and is about to wait for IO or a timer
    /// (tokio's `on_thread_park`), on that thread. The binary hands its
    /// allocator's memory release here; the hook must be cheap when there
    /// is nothing to do, as it runs between every burst of events.
    ///
    /// # Errors
    /// As [`RuntimeSection::build`].
    pub fn build_with_idle_hook(
        &self,
        on_idle: impl Fn() + Send + Sync + 'static,
    ) -> std::io::Result<tokio::runtime::Runtime> {
        match self.worker_threads() {
            1 => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .on_thread_park(on_idle)
                .build(),
            n => tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .on_thread_park(on_idle)
                .build(),
        }
    }
}

/// Runs blocking `f` from a task: through `block_in_place` on the
/// multi-threaded runtime (the other workers go on), in place on the
/// single-threaded one (where `block_in_place` would panic; every other
/// task waits until `f` returns, so only use it where nothing is served
/// yet, as the upgrade hand-over does).
pub fn block_in_place<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
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
    fn one_worker_is_the_single_threaded_scheduler_and_blocking_works_on_both() {
        use tokio::runtime::RuntimeFlavor;
        for (n, flavor) in [
            (1, RuntimeFlavor::CurrentThread),
            (2, RuntimeFlavor::MultiThread),
        ] {
            let r = RuntimeSection {
                worker_threads: NonZeroUsize::new(n),
            };
            let rt = r.build().unwrap();
            assert_eq!(rt.handle().runtime_flavor(), flavor, "{n} workers");
            // `tokio::task::block_in_place` panics on the single-threaded one.
            let got = rt.block_on(async { tokio::spawn(async { block_in_place(|| 7) }).await });
            assert_eq!(got.unwrap(), 7, "{n} workers");
        }
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
