//! Reloading the config file (`SIGHUP`, `gateway reload`): the new file is
//! loaded and validated, the new proxy generation built and its new
//! listeners bound before anything changes; any failure keeps the running
//! config and says why ([`ReloadError`]).

#![forbid(unsafe_code)]

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use crate::{
    cluster::Cluster,
    config::{Config, ConfigError},
    escalate::Escalator,
    observe::Observe,
    phases::{self, PhasesError},
    proxy::{Proxy, ProxyError},
    ratelimit::quota_store::QuotaStore,
    xdp::{self, XdpMaps, maps::MapsError},
};

/// Why a reload was rejected; the running config stays in every case. The
/// text is what `gateway reload` prints after "reload rejected, ...".
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The gateway runs on its embedded default config: there is no file
    /// to re-read (the operator's invocation).
    #[error("running on the embedded default config; start with --config FILE to reload")]
    NoConfigFile,
    /// The file does not load: unreadable, not TOML, or invalid (the
    /// config's, at its file, line and column).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new file asks for shared rate limits, but the cluster link only
    /// starts with the gateway (the config's; a restart applies it).
    #[error(
        "shared rate limits need the [cluster] link, which starts with the gateway; restart it"
    )]
    SharedLimitsNeedCluster,
    /// The phases could not be built: a key file, schema or OpenAPI
    /// document the config names is unusable.
    #[error(transparent)]
    Phases(#[from] PhasesError),
    /// A new listener could not bind, or its certificates could not be
    /// loaded (the environment's or the files').
    #[error(transparent)]
    Listeners(#[from] ProxyError),
    /// The XDP maps refused the new settings (the kernel's side).
    #[error("applying the reloaded config to the XDP maps failed: {0:#}")]
    Xdp(MapsError),
}

/// Re-reads the config file `path` (`None`: the embedded default, which
/// cannot be reloaded) and swaps it in; relative files it names are looked
/// up under `base_dir`, the file's directory. A bad file (or certificate,
/// or key file) is an error naming file, line and problem, and nothing
/// changes: the running config stays.
#[allow(
    clippy::too_many_arguments,
    reason = "the long-lived pieces a reload hands to the new generation"
)]
pub fn try_reload(
    path: Option<&Path>,
    base_dir: &Path,
    current: &Config,
    maps: Option<&Arc<Mutex<XdpMaps>>>,
    proxy: &Proxy,
    escalator: &Arc<Escalator>,
    cluster: Option<&Arc<Cluster>>,
    observe: &Observe,
    quotas: &Arc<QuotaStore>,
) -> Result<Config, ReloadError> {
    let Some(path) = path else {
        return Err(ReloadError::NoConfigFile);
    };
    let new = Config::load(path)?;
    let restart_only = [
        (new.xdp.enabled != current.xdp.enabled, "xdp.enabled"),
        (new.xdp.interface != current.xdp.interface, "xdp.interface"),
        (new.xdp.mode != current.xdp.mode, "xdp.mode"),
        (new.xdp.pin_dir != current.xdp.pin_dir, "xdp.pin_dir"),
        (new.admin.socket != current.admin.socket, "admin.socket"),
        (new.demo != current.demo, "demo"),
        (new.escalation != current.escalation, "escalation"),
        (new.log != current.log, "log"),
        (new.observability != current.observability, "observability"),
        (new.cluster != current.cluster, "cluster"),
        (new.runtime != current.runtime, "runtime"),
        (
            new.rate_limit.quota_state != current.rate_limit.quota_state,
            "rate_limit.quota_state",
        ),
        (
            new.rate_limit.quota_max_consumers != current.rate_limit.quota_max_consumers,
            "rate_limit.quota_max_consumers",
        ),
    ];
    for (changed, key) in restart_only {
        if changed {
            tracing::warn!(
                setting = key,
                "changed in the config file; takes effect after a restart"
            );
        }
    }
    // Build the new proxy generation first: if certificates or key files
    // fail to load, nothing (XDP maps included) changes.
    if cluster.is_none() && new.rate_limit.limits.iter().any(|l| l.shared) {
        return Err(ReloadError::SharedLimitsNeedCluster);
    }
    let mut engines = phases::build_engines_with_quotas(
        &new,
        base_dir,
        Some(escalator.clone()),
        cluster.cloned(),
        quotas.clone(),
    )?;
    engines.observe = observe.clone();
    // Every new listener socket is bound here, before anything changes: one
    // that cannot bind fails the reload and the old listeners keep serving.
    let prepared = match proxy.prepare(&new, engines) {
        Ok(p) => p,
        Err(e) => {
            // The quota names `gateway quota` sees stay those of the running config.
            quotas.set_configured(current.rate_limit.quotas(), current.rate_limit.time_zone);
            return Err(e.into());
        }
    };
    if let Some(maps) = maps {
        // The protected ports follow the new listeners (derived at load
        // unless `[xdp] protected_ports` is set).
        let mut m = maps.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = xdp::apply::apply(&mut m, &new.xdp) {
            quotas.set_configured(current.rate_limit.quotas(), current.rate_limit.time_zone);
            return Err(ReloadError::Xdp(e));
        }
    }
    prepared.commit();
    tracing::info!(config = %path.display(), "config reloaded");
    Ok(new)
}

/// Logs the outcome of a reload and keeps whichever config is now running.
pub fn reloaded(
    current: Config,
    result: Result<Config, ReloadError>,
) -> (Config, Result<(), ReloadError>) {
    match result {
        Ok(new) => (new, Ok(())),
        Err(e) => {
            tracing::error!(error = %e, "config reload rejected; keeping the running config");
            (current, Err(e))
        }
    }
}
