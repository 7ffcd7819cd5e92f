//! The admin HTTP listener (`[observability] listen`): `GET /metrics`
//! (Prometheus text format), `GET /healthz` (200 while the process runs)
//! and `GET /readyz` (200 only when the config is loaded, XDP is attached
//! or deliberately off, and some pool has a healthy target; otherwise 503
//! with a JSON body naming what is not ready), and the live dashboard
//! under `/dashboard/` (`/` redirects there; see [`dashboard`]).
//! `/metrics`, `/healthz` and `/readyz` have no authentication: bind the
//! listener to loopback or a management network.
//!
//! It reads the engines (`collect` at scrape time, `dashboard` per poll);
//! `observe` is what the request path writes to (access log, metrics,
//! trace), so the proxy depends on `observe` and this module on both.

#![forbid(unsafe_code)]

pub mod collect;
pub mod dashboard;

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::{net::TcpListener, task::JoinHandle};

use self::dashboard::Dashboard;
use crate::{observe::metrics::Metrics, proxy::server::StateWatch};

/// What `/readyz` looks at.
pub struct Readiness {
    /// "attached" or "off" (deliberately disabled); `gateway run` fails
    /// instead of starting with a failed attach.
    pub xdp: &'static str,
    /// The current proxy generation: ready when some upstream pool has a healthy target.
    pub state: StateWatch,
    /// Cluster mode's Redis link. Reported, but never a reason to be
    /// unready: without Redis the node serves with local limits.
    pub cluster: Option<std::sync::Arc<crate::cluster::Cluster>>,
}

impl Readiness {
    /// (ready, JSON body).
    pub fn check(&self) -> (bool, serde_json::Value) {
        let state = self.state.load();
        let (mut pools, mut healthy_pools) = (0, 0);
        let mut per_pool = serde_json::Map::new();
        for pool in state.pools.iter() {
            pools += 1;
            let targets = pool.targets();
            let up = targets.iter().filter(|t| t.available()).count();
            if up > 0 {
                healthy_pools += 1;
            }
            per_pool.insert(
                pool.name.to_string(),
                json!({"healthy_targets": up, "targets": targets.len()}),
            );
        }
        let upstreams_ok = healthy_pools > 0;
        let mut not_ready = Vec::new();
        if !upstreams_ok {
            not_ready.push(if pools == 0 {
                "no upstream pools are configured"
            } else {
                "no upstream pool has a healthy target"
            });
        }
        let ready = not_ready.is_empty();
        let mut body = json!({
            "ready": ready,
            "config": "loaded",
            "xdp": self.xdp,
            "upstreams": per_pool,
            "not_ready": not_ready,
        });
        if let Some(c) = &self.cluster {
            body["cluster"] = json!(if c.is_up() {
                "connected"
            } else {
                "disconnected"
            });
        }
        (ready, body)
    }
}

/// Binds the listener (errors are fatal to `gateway run`: it was asked for).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until aborted; `dashboard`: `None` when it is disabled.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    dashboard: Option<Arc<Dashboard>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let (m, r, d) = (metrics.clone(), readiness.clone(), dashboard.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (m, r, d) = (m.clone(), r.clone(), d.clone());
                    async move {
                        let path = req.uri().path();
                        let resp = match &d {
                            Some(d) if path == "/dashboard" || path.starts_with("/dashboard/") => {
                                d.answer(req, peer).await
                            }
                            Some(_) if path == "/" => dashboard::redirect("/dashboard/"),
                            _ => answer(&req, &m, &r),
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    })
}

fn answer(
    req: &Request<Incoming>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        "/healthz" => text(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (ready, body) = readiness.check();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            text(status, "application/json", format!("{body}\n"))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz, /readyz, /dashboard/\n".into(),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    r
}
