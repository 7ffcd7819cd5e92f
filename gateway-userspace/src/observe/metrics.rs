//! The Prometheus metrics (prometheus-client, text exposition). Event
//! counters and histograms live here and are updated by the request path;
//! state that already exists elsewhere (XDP per-CPU counters, upstream
//! health, escalation counters, JWKS fetches) is read when scraped by the
//! collectors in `collect`. Labels are bounded: route ids and upstream
//! names come from the config, methods and status classes from fixed sets,
//! reasons from enums; client addresses never become labels.

#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// A route's request series, resolved at the route's first request and
/// kept by the route for its config generation: counting a request is then
/// an index and an atomic add, not a lock and a hash of the labels per
/// family per request. Empty until used, so a route no request reached
/// exports no series (as before).
#[derive(Debug, Default)]
pub struct RouteSeries {
    duration: std::sync::OnceLock<Histogram>,
    /// By [`method_index`], then [`status_index`].
    requests: [[std::sync::OnceLock<Counter>; 5]; METHODS.len()],
}

/// A pool's upstream latency series, resolved at its first request (see
/// [`RouteSeries`]).
#[derive(Debug, Default)]
pub struct UpstreamSeries(std::sync::OnceLock<Histogram>);

/// The method labels, in [`method_index`] order.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

/// `route` ("-": no route matched), `method`, `status` class ("2xx").
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route id from the config, `-` when no route matched.
    pub route: Arc<str>,
    /// The request method, from [`method_label`]'s fixed set.
    pub method: &'static str,
    /// The response status class, from [`status_class`].
    pub status: &'static str,
}

/// `route`: a configured route id (`-` when no route matched).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route id from the config, `-` when no route matched.
    pub route: Arc<str>,
}

/// `upstream`: a configured upstream pool name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    /// The upstream pool name from the config.
    pub upstream: Arc<str>,
}

/// One call of an aggregate route: `outcome` is `ok`, `timeout`,
/// `failed`, `too_large`, `total_too_large` or `dependency_failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// The aggregate route's id.
    pub route: Arc<str>,
    /// The call's name within the route.
    pub call: Arc<str>,
    /// The upstream pool the call went to.
    pub upstream: Arc<str>,
    /// How the call ended (see the type's list).
    pub outcome: &'static str,
}

/// `reason`: a `Rejection` reason code, or an auth failure reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The stable snake_case code of the reason.
    pub reason: &'static str,
}

/// `route` and the L7 rate-limit `decision`: `allowed`, `delayed`, `rejected` or `over_quota`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The route id from the config.
    pub route: Arc<str>,
    /// `allowed`, `delayed`, `rejected` or `over_quota`.
    pub decision: &'static str,
}

/// An auth policy (a config name) and the failure reason (a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The auth policy's name from the config.
    pub policy: Arc<str>,
    /// The auth failure reason's stable code.
    pub reason: &'static str,
}

/// A route and the limit (a config name, or `plan:<name>` /
/// `limit:<name>` for a quota) that rejected a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The route id from the config.
    pub route: Arc<str>,
    /// The limit's name, or `plan:<name>` / `limit:<name>` for a quota.
    pub limit: Arc<str>,
}

/// `result` of a TLS handshake: `ok`, `error` or `timeout`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, `error` or `timeout`.
    pub result: &'static str,
}

/// Latency buckets in seconds: 1 ms to 30 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The process's metrics; one per process, shared by every config generation.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// `gateway_http_requests_total`: requests answered, by route, method and status class.
    pub requests: Family<RequestLabels, Counter>,
    /// `gateway_http_request_duration_seconds`: request head to response head, by route (buckets 1
    /// ms to 30 s).
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// `gateway_upstream_request_duration_seconds`: sending to an upstream until its response head,
    /// by pool.
    pub upstream_duration: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    /// `gateway_auth_failures_total`: requests that got no identity, by failure reason.
    pub auth_failures: Family<ReasonLabels, Counter>,
    /// Auth failures by policy and reason.
    pub auth_policy_failures: Family<PolicyLabels, Counter>,
    /// 429s by route and the limit or quota that answered them.
    pub rate_limit_rejections: Family<LimitLabels, Counter>,
    /// Aggregate route calls, by route, call, upstream and outcome.
    pub aggregate_calls: Family<CallLabels, Histogram, fn() -> Histogram>,
    /// `gateway_validation_failures_total`: requests rejected by request validation (400, 415), by
    /// route.
    pub validation_failures: Family<RouteLabels, Counter>,
    /// `gateway_rate_limit_decisions_total`: L7 rate-limit outcomes, by route and decision.
    pub rate_limit_decisions: Family<DecisionLabels, Counter>,
    /// `gateway_rejections_total`: requests the gateway answered itself, by `Rejection` reason
    /// code.
    pub rejections: Family<ReasonLabels, Counter>,
    /// `gateway_tls_handshakes_total`: TLS handshakes on the proxy listeners, by result.
    pub tls_handshakes: Family<ResultLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, empty, registered under the `gateway_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("gateway");
        let m = Self {
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency as fn() -> Histogram),
            upstream_duration: Family::new_with_constructor(latency as fn() -> Histogram),
            auth_failures: Family::default(),
            auth_policy_failures: Family::default(),
            rate_limit_rejections: Family::default(),
            aggregate_calls: Family::new_with_constructor(latency as fn() -> Histogram),
            validation_failures: Family::default(),
            rate_limit_decisions: Family::default(),
            rejections: Family::default(),
            tls_handshakes: Family::default(),
        };
        r.register(
            "http_requests",
            "Requests answered, by route, method and status class",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "Time from request head to response head, by route",
            m.request_duration.clone(),
        );
        r.register(
            "upstream_request_duration_seconds",
            "Time from sending to an upstream to its response head, by upstream pool",
            m.upstream_duration.clone(),
        );
        r.register(
            "aggregate_call_duration_seconds",
            "Calls made by aggregate routes, from start to the whole body read, by route, call, upstream and outcome",
            m.aggregate_calls.clone(),
        );
        r.register(
            "auth_failures",
            "Requests that did not get an identity, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "auth_policy_failures",
            "Requests that failed authentication, by auth policy and reason",
            m.auth_policy_failures.clone(),
        );
        r.register(
            "rate_limit_rejections",
            "Requests rejected (429) by a rate limit or quota, by route and limit",
            m.rate_limit_rejections.clone(),
        );
        r.register(
            "validation_failures",
            "Requests rejected by request validation, by route",
            m.validation_failures.clone(),
        );
        r.register(
            "rate_limit_decisions",
            "L7 rate-limit outcomes (allowed, delayed, rejected), by route",
            m.rate_limit_decisions.clone(),
        );
        r.register(
            "rejections",
            "Requests the gateway answered itself, by reason code",
            m.rejections.clone(),
        );
        r.register(
            "tls_handshakes",
            "TLS handshakes on the proxy listeners, by result (ok, error, timeout)",
            m.tls_handshakes.clone(),
        );
        *m.registry.lock().unwrap_or_else(|p| p.into_inner()) = r;
        m
    }

    /// Adds a collector read at every scrape (names get the `gateway_` prefix).
    pub fn register_collector(&self, c: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register_collector(c);
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }

    /// The text exposition of the request-path families only (requests,
    /// latency, auth, validation, rate limits, rejections), without the
    /// collectors (which walk the XDP maps): what the dashboard polls.
    pub fn encode_events(&self) -> String {
        let mut r = Registry::with_prefix("gateway");
        r.register("http_requests", "", self.requests.clone());
        r.register(
            "http_request_duration_seconds",
            "",
            self.request_duration.clone(),
        );
        r.register("auth_failures", "", self.auth_failures.clone());
        r.register(
            "auth_policy_failures",
            "",
            self.auth_policy_failures.clone(),
        );
        r.register(
            "rate_limit_rejections",
            "",
            self.rate_limit_rejections.clone(),
        );
        r.register("validation_failures", "", self.validation_failures.clone());
        r.register(
            "rate_limit_decisions",
            "",
            self.rate_limit_decisions.clone(),
        );
        r.register("rejections", "", self.rejections.clone());
        let mut out = String::new();
        if encode(&mut out, &r).is_err() {
            out.clear();
        }
        out
    }

    /// Counts a finished request. Labels are shared (`Arc`) or static, so
    /// looking up the series allocates nothing.
    pub fn request(&self, route: &Arc<str>, method: &http::Method, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.clone(),
                method: method_label(method),
                status: status_class(status),
            })
            .inc();
        self.request_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .observe(seconds);
    }

    /// [`Metrics::request`] through the route's resolved series.
    pub fn request_on(
        &self,
        series: &RouteSeries,
        route: &Arc<str>,
        method: &http::Method,
        status: u16,
        seconds: f64,
    ) {
        let (m, s) = (method_index(method), status_index(status));
        series.requests[m][s]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        route: route.clone(),
                        method: METHODS[m],
                        status: status_class(status),
                    })
                    .clone()
            })
            .inc();
        series
            .duration
            .get_or_init(|| {
                self.request_duration
                    .get_or_create(&RouteLabels {
                        route: route.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// Observes an upstream's latency (sending to its response head)
    /// through the pool's resolved series.
    pub fn upstream_on(&self, series: &UpstreamSeries, upstream: &Arc<str>, seconds: f64) {
        series
            .0
            .get_or_init(|| {
                self.upstream_duration
                    .get_or_create(&UpstreamLabels {
                        upstream: upstream.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }

    /// Counts an auth failure of `policy` (a configured name: bounded).
    pub fn auth_policy_failure(&self, policy: &Arc<str>, reason: &'static str) {
        self.auth_policy_failures
            .get_or_create(&PolicyLabels {
                policy: policy.clone(),
                reason,
            })
            .inc();
    }

    /// Counts a 429 of `route` answered by `limit` (a configured name).
    pub fn rate_limit_rejection(&self, route: &Arc<str>, limit: &Arc<str>) {
        self.rate_limit_rejections
            .get_or_create(&LimitLabels {
                route: route.clone(),
                limit: limit.clone(),
            })
            .inc();
    }

    /// Counts a TLS handshake on a proxy listener; `result` is `ok`, `error` or `timeout`.
    pub fn tls_handshake(&self, result: &'static str) {
        self.tls_handshakes
            .get_or_create(&ResultLabels { result })
            .inc();
    }
}

/// The method's place in [`METHODS`].
fn method_index(m: &http::Method) -> usize {
    use http::Method as M;
    match *m {
        M::GET => 0,
        M::HEAD => 1,
        M::POST => 2,
        M::PUT => 3,
        M::DELETE => 4,
        M::PATCH => 5,
        M::OPTIONS => 6,
        M::CONNECT => 7,
        M::TRACE => 8,
        _ => 9,
    }
}

/// The status class's place in a [`RouteSeries`] row.
fn status_index(s: u16) -> usize {
    match s {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The method as a label: the standard ones, everything else `OTHER`.
pub fn method_label(m: &http::Method) -> &'static str {
    use http::Method as M;
    match *m {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The status class as a label: `1xx` to `4xx`, everything else (5xx and out-of-range codes) `5xx`.
pub fn status_class(s: u16) -> &'static str {
    match s {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prefixed_counters_with_total() {
        let m = Metrics::new();
        m.request(
            &"api".into(),
            &http::Method::from_bytes(b"BREW").unwrap(),
            404,
            0.01,
        );
        let text = m.encode();
        assert!(
            text.contains(
                r#"gateway_http_requests_total{route="api",method="OTHER",status="4xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "gateway_http_request_duration_seconds_bucket{le=\"0.01\",route=\"api\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
