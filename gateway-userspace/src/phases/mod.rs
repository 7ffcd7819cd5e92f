//! The request phases other modules own, adapted to the proxy's [`Phase`]
//! hook: authenticate (`auth`), rate limit (`ratelimit`). [`build_hooks`]
//! makes them from a config, at start and on every reload; the escalation
//! engine is made once and survives reloads (its memory of offenders is
//! state, not config).

#![forbid(unsafe_code)]

pub mod auth;
pub mod ratelimit;

use std::sync::Arc;

use crate::{
    auth::Authenticator,
    config::Config,
    escalate::Escalator,
    proxy::{Hooks, hooks::Allow},
};

/// Builds the hooks for `config`. Fails with a message naming what is wrong
/// (an unreadable key file, say); the caller keeps its running hooks.
pub fn build_hooks(config: &Config, escalation: Option<Arc<Escalator>>) -> Result<Hooks, String> {
    let authenticator =
        Arc::new(Authenticator::from_config(&config.auth).map_err(|e| e.to_string())?);
    Ok(Hooks {
        authenticate: Arc::new(auth::AuthPhase::new(authenticator.clone(), config)),
        validate: Arc::new(Allow),
        rate_limit: Arc::new(ratelimit::RateLimitPhase::new(config)),
        escalation,
        observe: crate::observe::Observe::default(),
        authenticator: Some(authenticator),
    })
}
