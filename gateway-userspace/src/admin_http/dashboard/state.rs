//! `GET /dashboard/api/state`: one JSON document with everything the page
//! shows, read from the state that already exists (the XDP maps through the
//! admin socket's handler, the escalator, the proxy's current generation,
//! the metrics families, the cluster link). Counters are totals since the
//! process (or, for XDP, the pinned maps) started: clients compute rates
//! from two polls. Never a secret: API keys, tokens and the Redis password
//! are not reachable from here (the cluster part is its redacted status).
//! The shape is documented in docs/operations.md ("Dashboard").

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, sync::Arc};

use serde_json::{Value, json};

use super::exposition::{self, Sample};
use crate::{
    admin::{
        protocol::ClusterStatus,
        server::{AdminState, read_stats},
    },
    escalate::Escalator,
    observe::Metrics,
    proxy::server::StateWatch,
};

/// How many top dropped sources the state lists.
pub const TOP_DROPPED: usize = 20;

/// What the state is read from; all shared with the rest of the gateway.
pub struct Sources {
    /// What the admin socket reaches: the XDP maps, cluster and quotas.
    pub admin: Arc<AdminState>,
    /// The escalation engine (recent escalations, active blocks).
    pub escalator: Arc<Escalator>,
    /// The current proxy generation (routes, upstream health).
    pub proxy: StateWatch,
    /// The request-path metrics (the event families the charts poll).
    pub metrics: Arc<Metrics>,
    /// "attached" or "off".
    pub xdp: &'static str,
    /// When the process started, Unix seconds.
    pub started_unix: u64,
}

/// The whole state document. Walks the XDP maps (system calls per entry):
/// call it off the async workers (`spawn_blocking`).
pub fn build(s: &Sources, write_enabled: bool, refresh_ms: u64) -> Value {
    let now = crate::clock::unix_now();
    let (blocks, blocks_truncated) = blocks(s);
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_unix": now,
        "uptime_secs": now.saturating_sub(s.started_unix),
        "refresh_ms": refresh_ms,
        "write_enabled": write_enabled,
        "xdp": xdp(s),
        "blocks": blocks,
        "blocks_truncated": blocks_truncated,
        "escalations": escalations(&s.escalator),
        "traffic": traffic(&s.metrics.encode_events()),
        "upstreams": upstreams(&s.proxy),
        "cluster": ClusterStatus {
            configured: s.admin.cluster.is_some(),
            link: s.admin.cluster.as_ref().map(|c| c.status()),
        },
    })
}

/// Kernel verdict counters and the top dropped sources (the admin
/// socket's `stats`), or `{"enabled": false}`.
fn xdp(s: &Sources) -> Value {
    let mut v = json!({
        "enabled": s.admin.maps.is_some(),
        "state": s.xdp,
        "interface": s.admin.interface,
        "mode": s.admin.mode,
    });
    match read_stats(&s.admin, TOP_DROPPED) {
        Some(Ok(stats)) => {
            v["counters"] = json!(stats.counters);
            v["top_dropped"] = json!(stats.top_dropped);
        }
        Some(Err(e)) => v["error"] = json!(e.to_string()),
        None => {}
    }
    v
}

/// The kernel blocklist (the admin socket's `block list`): net, source
/// (operator, config, escalation), reason, offences, TTL left, cluster
/// flag and origin node.
///
/// At most [`MAX_BLOCKS`] (the second value says whether there are more):
/// polled every second, the walk must not hold the maps' lock for long
/// when the blocklist is large; `gateway block list` shows them all.
fn blocks(s: &Sources) -> (Value, bool) {
    match crate::admin::server::block_list_first(&s.admin, MAX_BLOCKS) {
        Some(Ok((blocks, more))) => (json!(blocks), more),
        _ => (json!([]), false),
    }
}

/// Blocks the dashboard lists.
pub const MAX_BLOCKS: usize = 1000;

fn escalations(e: &Escalator) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let offences: BTreeMap<&str, u64> = crate::escalate::Offence::ALL
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name(), e.offences_total[i].load(Relaxed)))
        .collect();
    json!({
        "total": e.escalations_total.load(Relaxed),
        "errors": e.escalation_errors_total.load(Relaxed),
        "active": e.active_blocks(),
        "offences": offences,
        "recent": e.recent(),
    })
}

/// Requests by route and status class, latency quantiles by route, rate
/// limit outcomes, auth failures by policy, validation refusals and the
/// gateway's own rejections, from the metrics families.
pub fn traffic(exposition_text: &str) -> Value {
    let samples = exposition::parse(exposition_text);
    let named = |n: &'static str| samples.iter().filter(move |s| s.name == n);
    let count = |s: &Sample| s.value as u64;

    let mut requests: BTreeMap<(String, String), u64> = BTreeMap::new();
    for s in named("gateway_http_requests_total") {
        *requests
            .entry((s.label("route").into(), s.label("status").into()))
            .or_default() += count(s);
    }
    let requests: Vec<Value> = requests
        .into_iter()
        .map(|((route, status), n)| json!({ "route": route, "status": status, "count": n }))
        .collect();

    let mut buckets: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in named("gateway_http_request_duration_seconds_bucket") {
        let le = match s.label("le") {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or(f64::INFINITY),
        };
        buckets
            .entry(s.label("route").into())
            .or_default()
            .push((le, s.value));
    }
    let sums: BTreeMap<&str, f64> = named("gateway_http_request_duration_seconds_sum")
        .map(|s| (s.label("route"), s.value))
        .collect();
    let latency: Vec<Value> = buckets
        .into_iter()
        .map(|(route, mut b)| {
            b.sort_by(|x, y| x.0.total_cmp(&y.0));
            json!({
                "route": route,
                "count": b.last().map(|l| l.1 as u64).unwrap_or(0),
                "sum_seconds": sums.get(route.as_str()).copied().unwrap_or(0.0),
                "p50_seconds": exposition::quantile(0.5, &b),
                "p99_seconds": exposition::quantile(0.99, &b),
                "buckets": b.iter().map(|(le, n)| json!([
                    if le.is_infinite() { json!("+Inf") } else { json!(le) },
                    *n as u64,
                ])).collect::<Vec<_>>(),
            })
        })
        .collect();

    let rows = |name: &'static str, keys: &[&'static str]| -> Vec<Value> {
        named(name)
            .map(|s| {
                let mut v = serde_json::Map::new();
                for k in keys {
                    v.insert((*k).to_owned(), json!(s.label(k)));
                }
                v.insert("count".into(), json!(count(s)));
                Value::Object(v)
            })
            .collect()
    };
    json!({
        "requests": requests,
        "latency": latency,
        "rate_limit_decisions": rows("gateway_rate_limit_decisions_total", &["route", "decision"]),
        "rate_limit_rejections": rows("gateway_rate_limit_rejections_total", &["route", "limit"]),
        "auth_failures": rows("gateway_auth_policy_failures_total", &["policy", "reason"]),
        "validation_failures": rows("gateway_validation_failures_total", &["route"]),
        "rejections": rows("gateway_rejections_total", &["reason"]),
    })
}

/// Each pool of the running generation and each target's health.
fn upstreams(proxy: &StateWatch) -> Value {
    let state = proxy.load();
    let pools: Vec<Value> = state
        .pools
        .iter()
        .map(|pool| {
            let targets: Vec<Value> = pool
                .targets()
                .iter()
                .map(|t| {
                    json!({
                        "address": t.addr.to_string(),
                        "host": t.host.as_deref(),
                        "available": t.available(),
                        "active_healthy": t.active_healthy(),
                        "ejected_secs_left": t.ejected_for().map(|d| d.as_secs_f64().ceil() as u64),
                        "ejections": t.ejections(),
                        "failures": t.failures(),
                        "consecutive_failures": t.consecutive_failures(),
                        "in_flight": t.in_flight(),
                        "weight": t.weight(),
                        "priority": t.priority(),
                    })
                })
                .collect();
            let (added, removed) = pool.membership_changes();
            let dns: Vec<Value> = pool
                .dns
                .failures()
                .into_iter()
                .map(|(name, failures)| json!({ "name": name, "lookup_failures": failures }))
                .collect();
            json!({
                "name": &*pool.name,
                "active_checks": pool.config.health_check.enabled,
                "passive_ejection_after": pool.config.passive.consecutive_failures,
                "healthy_targets": targets.iter().filter(|t| t["available"] == true).count(),
                "targets": targets,
                "dns_names": dns,
                "membership_changes": { "added": added, "removed": removed },
            })
        })
        .collect();
    Value::Array(pools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_reads_the_metric_families() {
        let m = Metrics::new();
        let api: Arc<str> = "api".into();
        for (status, secs) in [(200, 0.003), (200, 0.004), (503, 0.2), (429, 0.001)] {
            m.request(&api, &http::Method::GET, status, secs);
        }
        m.rate_limit_rejection(&api, &"per-ip".into());
        let keys: Arc<str> = "keys".into();
        m.auth_policy_failure(&keys, "invalid_credentials");
        m.auth_policy_failure(&keys, "invalid_credentials");
        m.validation_failures
            .get_or_create(&crate::observe::metrics::RouteLabels { route: api.clone() })
            .inc();
        let t = traffic(&m.encode_events());
        let find = |rows: &Value, key: &str, val: &str| {
            rows.as_array()
                .unwrap()
                .iter()
                .find(|r| r[key] == val)
                .cloned()
                .unwrap_or_else(|| panic!("{key}={val} in {rows}"))
        };
        assert_eq!(find(&t["requests"], "status", "2xx")["count"], 2);
        assert_eq!(find(&t["requests"], "status", "5xx")["count"], 1);
        let lat = find(&t["latency"], "route", "api");
        assert_eq!(lat["count"], 4);
        let p50 = lat["p50_seconds"].as_f64().unwrap();
        assert!(p50 > 0.0025 && p50 <= 0.005, "{lat}");
        let p99 = lat["p99_seconds"].as_f64().unwrap();
        assert!(p99 > 0.1 && p99 <= 0.25, "{lat}");
        assert_eq!(
            find(&t["rate_limit_rejections"], "limit", "per-ip")["count"],
            1
        );
        let a = find(&t["auth_failures"], "policy", "keys");
        assert_eq!(
            (a["reason"].as_str(), a["count"].as_u64()),
            (Some("invalid_credentials"), Some(2))
        );
        assert_eq!(find(&t["validation_failures"], "route", "api")["count"], 1);
    }
}
