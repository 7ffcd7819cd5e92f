//! `gateway quota get|reset <consumer>` on the gateway side. A consumer is
//! what quotas count by: the identity (API key name, token `sub`) for plan
//! quotas, the limit's key for `[[rate_limit.limits]]` quotas. In cluster
//! mode the counts are read from and deleted in Redis (the shared truth),
//! and this node's copy follows; without Redis, this node's counts answer.

#![forbid(unsafe_code)]

use super::{
    protocol::{QuotaCleared, QuotaRow, QuotaUsage, Request, Response},
    server::AdminState,
};
use crate::{
    cluster::RedisQuotaError,
    ratelimit::{
        quota::window_bounds,
        quota_store::{QuotaStore, Usage},
    },
};

/// Longest consumer accepted (identities are at most 1 KiB).
const MAX_CONSUMER: usize = 1024;

/// Serves a `QuotaGet` or `QuotaReset` request.
pub async fn handle(state: &AdminState, req: Request) -> Response {
    let Some(store) = &state.quotas else {
        return Response::err("this gateway keeps no quota counts");
    };
    match req {
        Request::QuotaGet { consumer } => match check(&consumer) {
            Ok(()) => Response::ok(get(state, store, &consumer).await),
            Err(e) => Response::err(e.to_string()),
        },
        Request::QuotaReset { consumer, quota } => match check(&consumer) {
            Ok(()) => Response::from_result(reset(state, store, &consumer, quota.as_deref()).await),
            Err(e) => Response::err(e.to_string()),
        },
        _ => Response::err("not a quota request"),
    }
}

/// Why a quota request was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuotaAdminError {
    /// The consumer is empty or too long (the operator's input).
    #[error("the consumer must be 1 to {MAX_CONSUMER} bytes (an API key name or token subject)")]
    Consumer,
    /// `--quota` names no configured or counted quota (the operator's input).
    #[error("no quota named '{0}'; quotas are named plan:<plan> or limit:<limit>")]
    UnknownQuota(String),
    /// Redis refused or did not answer the reset (the cluster's side);
    /// this node's counts are untouched.
    #[error(transparent)]
    Cluster(#[from] RedisQuotaError),
}

fn check(consumer: &str) -> Result<(), QuotaAdminError> {
    if consumer.is_empty() || consumer.len() > MAX_CONSUMER {
        return Err(QuotaAdminError::Consumer);
    }
    Ok(())
}

fn row(quota: &str, limit: Option<u64>, u: Usage, now: i64, source: &str) -> QuotaRow {
    QuotaRow {
        quota: quota.to_owned(),
        used: u.used,
        limit,
        remaining: limit.map(|l| l.saturating_sub(u.used)),
        window_start_unix: u.window_start,
        window_end_unix: u.window_end,
        resets_in_secs: (u.window_end - now).max(0),
        source: source.to_owned(),
    }
}

async fn get(state: &AdminState, store: &QuotaStore, consumer: &str) -> QuotaUsage {
    let now = store.now();
    let (configured, tz) = store.configured();
    let limit_of = |name: &str| {
        configured
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, q)| q.count)
    };
    let mut rows: Vec<(String, QuotaRow)> = store
        .get(consumer)
        .into_iter()
        .map(|(q, u)| {
            let v = row(&q, limit_of(&q), u, now, "node");
            (q, v)
        })
        .collect();
    let mut cluster_error = None;
    if let Some(c) = &state.cluster {
        for (name, quota) in &configured {
            let (start, end) = window_bounds(now, quota.window, tz);
            match c.quota_get(name, start, consumer).await {
                Ok(0) => {}
                Ok(used) => {
                    let u = Usage {
                        window_start: start,
                        window_end: end,
                        used,
                    };
                    rows.retain(|(q, _)| q != name);
                    rows.push((
                        name.clone(),
                        row(name, Some(quota.count), u, now, "cluster"),
                    ));
                }
                Err(e) => {
                    cluster_error = Some(e.to_string());
                    break;
                }
            }
        }
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    QuotaUsage {
        consumer: consumer.to_owned(),
        quotas: rows.into_iter().map(|(_, v)| v).collect(),
        cluster_error,
    }
}

async fn reset(
    state: &AdminState,
    store: &QuotaStore,
    consumer: &str,
    quota: Option<&str>,
) -> Result<QuotaCleared, QuotaAdminError> {
    let (configured, tz) = store.configured();
    if let Some(q) = quota
        && !configured.iter().any(|(n, _)| n == q)
        && store.get(consumer).iter().all(|(n, _)| n != q)
    {
        return Err(QuotaAdminError::UnknownQuota(q.to_owned()));
    }
    let mut cluster_removed = 0usize;
    if let Some(c) = &state.cluster {
        let now = store.now();
        for (name, q) in configured
            .iter()
            .filter(|(n, _)| quota.is_none_or(|want| want == n))
        {
            let (start, _) = window_bounds(now, q.window, tz);
            if c.quota_reset(name, start, consumer)
                .await
                .map_err(QuotaAdminError::Cluster)?
            {
                cluster_removed += 1;
            }
        }
    }
    let removed = store.reset(consumer, quota);
    tracing::info!(
        consumer,
        quota,
        removed,
        cluster_removed,
        "quota counts reset"
    );
    Ok(QuotaCleared {
        consumer: consumer.to_owned(),
        removed,
        cluster_removed,
        cluster: state.cluster.is_some(),
    })
}
