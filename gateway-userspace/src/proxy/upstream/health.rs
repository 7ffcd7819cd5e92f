//! Active health checks: one task per target sends `GET <path>` every
//! `interval`; `unhealthy_threshold` consecutive failures (no answer within
//! `timeout`, or a non-2xx status) take it out of rotation and
//! `healthy_threshold` consecutive successes bring it back. The tasks stop
//! when the pool set they belong to is replaced (reload) or dropped.
//!
//! When the pool's membership changes (DNS), a target that stays keeps its
//! task and its health; a new target gets a task (it starts healthy, as at
//! start); a removed target's task stops.

#![forbid(unsafe_code)]

use std::sync::Arc;

use http::{HeaderValue, Request, Uri};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};

use super::pool::{Pool, Target};
use crate::proxy::body;

/// Starts the checks of one pool (nothing when they are disabled): one
/// task that keeps one check task per current target.
pub fn spawn(pool: &Arc<Pool>) -> Vec<JoinHandle<()>> {
    if !pool.config.health_check.enabled {
        return Vec::new();
    }
    vec![tokio::spawn(follow(pool.clone()))]
}

/// Keeps one check task per target across membership changes. The check
/// tasks live in a `JoinSet`, so they end with this task.
async fn follow(pool: Arc<Pool>) {
    let mut members = pool.watch_members();
    let mut tasks = JoinSet::new();
    // The targets being checked, with their check task.
    let mut running: Vec<(Arc<Target>, AbortHandle)> = Vec::new();
    loop {
        members.borrow_and_update();
        let targets = pool.targets();
        running.retain(|(t, task)| {
            let stays = targets.iter().any(|c| Arc::ptr_eq(c, t));
            if !stays {
                task.abort();
            }
            stays
        });
        for t in targets.iter() {
            if !running.iter().any(|(r, _)| Arc::ptr_eq(r, t)) {
                let task = tasks.spawn(check_loop(pool.clone(), t.clone()));
                running.push((t.clone(), task));
            }
        }
        // Reap the aborted ones.
        while tasks.try_join_next().is_some() {}
        if members.changed().await.is_err() {
            return;
        }
    }
}

/// Checks one target every `interval` for as long as it is in the pool.
async fn check_loop(pool: Arc<Pool>, target: Arc<Target>) {
    let cfg = pool.config.health_check.clone();
    let name = pool.name.clone();
    {
        let (mut ok_run, mut fail_run) = (0u32, 0u32);
        let mut tick = tokio::time::interval(cfg.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let ok = check(&pool, &target, &cfg.path, cfg.timeout.get()).await;
            if ok {
                ok_run += 1;
                fail_run = 0;
                if ok_run >= cfg.healthy_threshold.0 {
                    target.set_healthy(true);
                }
            } else {
                fail_run += 1;
                ok_run = 0;
                tracing::debug!(upstream = %name, target = %target.addr, "health check failed");
                if fail_run >= cfg.unhealthy_threshold.0 {
                    target.set_healthy(false);
                }
            }
        }
    }
}

/// One probe: `GET <path>` on a kept-alive or new connection; a 2xx
/// within `timeout` is a success. The body is not read, so the probe's
/// connection is closed afterwards, never reused by requests.
async fn check(
    pool: &Pool,
    target: &Arc<Target>,
    path: &str,
    timeout: std::time::Duration,
) -> bool {
    let Ok(uri) = Uri::try_from(path) else {
        return false;
    };
    let Ok(mut req) = Request::get(uri)
        .header(http::header::USER_AGENT, "gateway-health-check")
        .body(body::empty())
    else {
        return false;
    };
    // The Host real requests get when the client sends none: a literal
    // `host_header`, else the target (`name:port` or `ip:port`), so a
    // virtual-hosted backend answers its checks as it answers requests.
    let host = match &pool.config.host_header {
        crate::proxy::config::upstream::HostHeader::Literal(v) => Ok(v.clone()),
        _ => HeaderValue::try_from(target.authority()),
    };
    if let Ok(host) = host {
        req.headers_mut().insert(http::header::HOST, host);
    }
    let sent = pool.connector.send(target, req);
    match tokio::time::timeout(timeout, sent).await {
        Ok(Ok((resp, _conn))) => resp.status().is_success(),
        Ok(Err(_)) => false,
        Err(_) => {
            // A check that hangs may be a dead shared HTTP/2 connection:
            // the next check (and request) opens a new one.
            target.conns.drop_shared();
            false
        }
    }
}
