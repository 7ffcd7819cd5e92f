//! The built-in demo upstream (`[demo] enabled = true`): a tiny HTTP/1.1
//! server on a loopback address that answers every request with JSON
//! describing what it received (method, path, query, headers), so
//! `curl http://127.0.0.1:8080/api/v1/hello` shows what the proxy forwards.

#![forbid(unsafe_code)]

use std::{collections::BTreeMap, convert::Infallible, net::SocketAddr};

use http::{HeaderValue, Request, Response, header};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, task::JoinHandle};

use super::body::{self, ProxyBody};

/// Binds the demo server (or serves on `inherited`, the socket a previous
/// process handed over) and serves it in a task. Returns the bound
/// address, the task and a duplicate of the socket (for a successor).
///
/// `stop` turning true stops accepting (a successor serves the demo from
/// then on); connections already accepted are served until this process
/// exits, so this process's own pooled connections never race with a
/// close.
pub async fn start(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<(SocketAddr, JoinHandle<()>, std::os::fd::OwnedFd)> {
    let listener = match inherited {
        Some(l) => {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)?
        }
        None => TcpListener::bind(addr).await?,
    };
    let local = listener.local_addr()?;
    let fd = std::os::fd::AsFd::as_fd(&listener).try_clone_to_owned()?;
    tracing::info!(address = %local, "demo upstream listening (JSON echo)");
    let task = tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, _)) => tcp,
                    Err(_) => continue,
                },
                _ = stop.wait_for(|s| *s) => return,
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tcp), service_fn(echo))
                    .await;
            });
        }
    });
    Ok((local, task, fd))
}

async fn echo(req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "upstream": "gateway demo echo",
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": req.uri().query(),
        "headers": headers,
    });
    let mut resp = Response::new(body::full(format!("{doc:#}\n")));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("gateway-demo"));
    Ok(resp)
}
