//! The request phases other modules own, as the proxy's [`Phase`](crate::proxy::Phase)s:
//! authenticate (`auth`), validate (`validate`), rate limit
//! (`ratelimit`). [`build_engines`] makes them from a config, at start and on
//! every reload; the escalation engine is made once and survives reloads
//! (its memory of offenders is state, not config), and so is the cluster
//! link, which shared limits use.

#![forbid(unsafe_code)]

pub mod auth;
pub mod ratelimit;
pub mod validate;

use std::{path::Path, sync::Arc};

use crate::{
    auth::{AuthConfigError, Authenticator},
    config::Config,
    escalate::Escalator,
    proxy::{
        Engines,
        phase::{Allow, Phases},
    },
    ratelimit::quota_store::{QuotaStore, system_clock},
    validate::{ValidationConfigError, Validators},
};

/// Why the request phases could not be built from a config (a key file,
/// schema or rule the config names is unusable); the caller keeps its
/// running phases.
#[derive(Debug, thiserror::Error)]
pub enum PhasesError {
    /// An authentication provider could not be set up.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// A validation rule, schema or OpenAPI document is unusable.
    #[error(transparent)]
    Validation(#[from] ValidationConfigError),
}

/// Builds the phases (and the authenticator behind them) for `config`; `base_dir` is where relative files
/// (schemas, OpenAPI documents) are looked up: the config file's directory.
/// Fails with a message naming what is wrong (an unreadable key file, an
/// invalid schema and its route); the caller keeps its running engines.
/// Quota counts live in memory only, made afresh: the gateway itself uses
/// [`build_engines_with_quotas`] with its persistent store.
pub fn build_engines(
    config: &Config,
    base_dir: &Path,
    escalation: Option<Arc<Escalator>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) -> Result<Engines, PhasesError> {
    let quotas = Arc::new(QuotaStore::new(
        None,
        system_clock(),
        config.rate_limit.quota_max_consumers,
    ));
    build_engines_with_quotas(config, base_dir, escalation, cluster, quotas)
}

/// [`build_engines`] counting quotas in `quotas`, a store that outlives
/// reloads (and is persisted by its owner).
pub fn build_engines_with_quotas(
    config: &Config,
    base_dir: &Path,
    escalation: Option<Arc<Escalator>>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    quotas: Arc<QuotaStore>,
) -> Result<Engines, PhasesError> {
    let authenticator = Arc::new(Authenticator::from_config(&config.auth)?);
    let validators = Validators::from_config(&config.validation, base_dir)?;
    Ok(Engines {
        phases: Phases {
            authenticate: Arc::new(auth::AuthPhase::new(authenticator.clone(), config)),
            validate: if validators.is_empty() {
                Arc::new(Allow)
            } else {
                Arc::new(validate::ValidatePhase::new(validators))
            },
            rate_limit: Arc::new(ratelimit::RateLimitPhase::new(config, cluster, quotas)),
        },
        escalation,
        observe: crate::observe::Observe::default(),
        authenticator: Some(authenticator),
    })
}
