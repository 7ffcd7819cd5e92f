//! Upstreams as real services: HTTPS and mTLS backends with a private CA
//! made here (rcgen), h2c and HTTP/2 over TLS chosen by ALPN, the Host sent
//! upstream (`host_header`), and gRPC end to end with a tonic server and
//! client (unary, both streaming directions, deadlines, statuses, and the
//! gateway's own refusals as gRPC statuses). Each test asserts on what the
//! backend received, not only on what the client got.

mod proxy_common;
mod upstream_support;

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use gateway::{config::Config, phases::build_engines, proxy::Proxy};
use http::{Request, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use proxy_common::*;
use tokio::net::TcpListener;
use tonic::{
    Status,
    codegen::{BoxFuture, Service, http::uri::PathAndQuery, tokio_stream},
    server::{
        ClientStreamingService, Grpc, ServerStreamingService, StreamingService, UnaryService,
    },
    transport::Channel,
};
use tonic_prost::ProstCodec;
use upstream_support::*;

fn route_all(upstream: &str) -> String {
    format!("[[routes]]\nid = \"all\"\npath_prefix = \"/\"\nupstream = \"{upstream}\"\n")
}

/// A GET with this Host and `Connection: close`.
async fn get_host(addr: SocketAddr, path: &str, host: &str) -> RawResponse {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await
}

/// The proxy with the upstream `b` and one catch-all route.
async fn gateway(upstream_extra: &str, targets: &[SocketAddr]) -> (Proxy, SocketAddr) {
    proxy(&format!(
        "{PLAIN}\n{}\n{}",
        upstream("b", targets, upstream_extra),
        route_all("b")
    ))
    .await
}

// ---------------------------------------------------------------------------
// TLS and mTLS to the upstream.

#[tokio::test]
async fn https_upstream_with_a_private_ca_and_server_name() {
    let (ca, _dir, ca_file) = ca_in_dir("https");
    let backend = tls_backend(&ca, "backend.internal", &[b"http/1.1"]).await;
    let (_p, addr) = gateway(&tls_line(&ca_file, "backend.internal"), &[backend.addr]).await;
    let r = get(addr, "/x?y=1", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let got = backend.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uri, "/x?y=1");
    assert_eq!(got[0].headers["host"], "test.local");
    // Over TLS the request says https to the backend? No: X-Forwarded-Proto
    // is the client's scheme (plain here), whatever the upstream hop is.
    assert_eq!(got[0].headers["x-forwarded-proto"], "http");
}

#[tokio::test]
async fn https_upstream_signed_by_another_ca_is_502_and_never_receives_the_request() {
    let (ca, other) = (Ca::new("backend CA"), Ca::new("some other CA"));
    let dir = Dir::tagged("upstream-wrong-ca");
    let ca_file = dir.write("other.pem", &other.pem());
    let backend = Backend::start(
        Some(server_tls(&ca, &["backend.internal"], &[b"http/1.1"], None)),
        Speaks::Http1,
    )
    .await;
    let (_p, addr) = gateway(
        &format!(
            "retries = 0\ntls = {{ ca_file = \"{}\", server_name = \"backend.internal\" }}",
            ca_file.display()
        ),
        &[backend.addr],
    )
    .await;
    let r = get(addr, "/secret", "").await;
    assert_eq!(r.status, 502);
    assert!(backend.got().is_empty(), "{:?}", backend.got());

    // Right CA, wrong name: refused the same way.
    let good = dir.write("ca.pem", &ca.pem());
    let (_p2, addr2) = gateway(
        &format!(
            "retries = 0\ntls = {{ ca_file = \"{}\", server_name = \"someone-else.internal\" }}",
            good.display()
        ),
        &[backend.addr],
    )
    .await;
    assert_eq!(get(addr2, "/secret", "").await.status, 502);
    assert!(backend.got().is_empty());

    // verify = false accepts it (with a warning at start).
    let (_p3, addr3) = gateway("tls = { verify = false }", &[backend.addr]).await;
    assert_eq!(get(addr3, "/lab", "").await.status, 200);
    assert_eq!(backend.got().len(), 1);
}

#[tokio::test]
async fn mtls_upstream_gets_the_client_certificate() {
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let dir = Dir::tagged("upstream-mtls");
    let ca_file = dir.write("ca.pem", &server_ca.pem());
    let (chain, key) = client_ca.leaf(&["gateway.internal"]);
    let (cert_file, key_file) = (dir.write("gw.crt", &chain), dir.write("gw.key", &key));
    let backend = Backend::start(
        Some(server_tls(
            &server_ca,
            &["backend.internal"],
            &[b"http/1.1"],
            Some(&client_ca),
        )),
        Speaks::Http1,
    )
    .await;

    // Without a client certificate the backend refuses the handshake.
    let (_p, addr) = gateway(
        &format!(
            "retries = 0\ntls = {{ ca_file = \"{}\", server_name = \"backend.internal\" }}",
            ca_file.display()
        ),
        &[backend.addr],
    )
    .await;
    assert_eq!(get(addr, "/m", "").await.status, 502);
    assert!(backend.got().is_empty());

    let (_p2, addr2) = gateway(
        &format!(
            "tls = {{ ca_file = \"{}\", server_name = \"backend.internal\", client_cert = \"{}\", client_key = \"{}\" }}",
            ca_file.display(),
            cert_file.display(),
            key_file.display()
        ),
        &[backend.addr],
    )
    .await;
    let r = get(addr2, "/m", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(backend.got().len(), 1);
}

#[test]
fn upstream_tls_config_errors_name_the_upstream_and_file() {
    let base = |extra: &str| {
        format!(
            "{PLAIN}\n[[upstreams]]\nname = \"b\"\ntargets = [\"127.0.0.1:1\"]\n{extra}\n{}",
            route_all("b")
        )
    };
    let e = Config::parse(&base("protocol = \"h2\""), "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("gw.toml:") && e.contains("needs a `tls` table"),
        "{e}"
    );
    let e = Config::parse(&base("protocol = \"h2c\"\ntls = {}"), "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("h2c is HTTP/2 without TLS"), "{e}");
    let e = Config::parse(&base("tls = { client_cert = \"a.pem\" }"), "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("go together"), "{e}");
    let e = Config::parse(&base("host_header = \"a b\""), "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("host_header"), "{e}");
    let e = Config::parse(&base("protocol = \"h3\""), "gw.toml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("gw.toml:"), "{e}");
}

#[tokio::test]
async fn a_missing_ca_file_fails_the_start_with_the_path() {
    let toml = format!(
        "{PLAIN}\n{}\n{}\n[xdp]\nenabled = false\n",
        upstream(
            "b",
            &["127.0.0.1:1".parse().unwrap()],
            "tls = { ca_file = \"/nonexistent/ca.pem\" }"
        ),
        route_all("b")
    );
    let config = Config::parse(&toml, "gw.toml").unwrap();
    let e = Proxy::start(&config, gateway::proxy::Engines::default())
        .await
        .err()
        .expect("a missing CA file must fail the start")
        .to_string();
    assert!(
        e.contains("upstream 'b'") && e.contains("/nonexistent/ca.pem"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------
// HTTP/2 upstreams and the Host sent.

#[tokio::test]
async fn h2c_upstream_gets_http2_with_the_authority() {
    let backend = Backend::start(None, Speaks::H2c).await;
    let (_p, addr) = gateway("protocol = \"h2c\"", &[backend.addr]).await;
    for i in 0..3 {
        let r = get_host(addr, &format!("/h2/{i}?q=1"), "api.example.com").await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, "backend saw HTTP/2.0");
    }
    // A body goes through as DATA frames.
    let post = "POST /h2/post HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(raw(addr, post.as_bytes()).await.status, 200);
    let got = backend.got();
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].body, b"hello");
    for g in &got[..3] {
        assert_eq!(g.version, Version::HTTP_2);
        // hyper's HTTP/2 server puts :scheme and :authority in the URI.
        assert!(
            g.uri.starts_with("http://api.example.com/h2/") && g.uri.ends_with("?q=1"),
            "{}",
            g.uri
        );
        assert!(!g.headers.contains_key("host"), "{:?}", g.headers);
    }
}

#[tokio::test]
async fn auto_picks_http2_by_alpn_and_h2_refuses_a_backend_without_it() {
    let (ca, _dir, ca_file) = ca_in_dir("alpn");
    let tls = tls_line(&ca_file, "b.internal");
    let h2_backend = tls_backend(&ca, "b.internal", &[b"h2", b"http/1.1"]).await;
    let h1_backend = tls_backend(&ca, "b.internal", &[b"http/1.1"]).await;

    let (_p, addr) = gateway(&format!("protocol = \"auto\"\n{tls}"), &[h2_backend.addr]).await;
    assert_eq!(get(addr, "/a", "").await.body, "backend saw HTTP/2.0");
    assert_eq!(get(addr, "/b", "").await.body, "backend saw HTTP/2.0");
    let (_p2, addr2) = gateway(&format!("protocol = \"auto\"\n{tls}"), &[h1_backend.addr]).await;
    assert_eq!(get(addr2, "/c", "").await.body, "backend saw HTTP/1.1");
    assert_eq!(get(addr2, "/d", "").await.body, "backend saw HTTP/1.1");

    let (_p3, addr3) = gateway(
        &format!("protocol = \"h2\"\nretries = 0\n{tls}"),
        &[h1_backend.addr],
    )
    .await;
    assert_eq!(get(addr3, "/e", "").await.status, 502);
    assert_eq!(h1_backend.got().len(), 2, "only /c and /d arrived");
    assert_eq!(h2_backend.got().len(), 2);
}

#[tokio::test]
async fn host_header_preserve_target_and_literal() {
    let backend = Backend::start(None, Speaks::Http1).await;
    let (_p1, a1) = gateway("", &[backend.addr]).await;
    let (_p2, a2) = gateway("host_header = \"target\"", &[backend.addr]).await;
    let (_p3, a3) = gateway("host_header = \"API.Internal.:8443\"", &[backend.addr]).await;
    for a in [a1, a2, a3] {
        assert_eq!(get_host(a, "/h", "app.example.com").await.status, 200);
    }
    let got = backend.got();
    assert_eq!(got[0].headers["host"], "app.example.com");
    assert_eq!(got[1].headers["host"], backend.addr.to_string().as_str());
    assert_eq!(got[2].headers["host"], "api.internal:8443");
    // The client's host stays visible to the backend as X-Forwarded-Host.
    for g in &got {
        assert_eq!(g.headers["x-forwarded-host"], "app.example.com");
    }
}

// ---------------------------------------------------------------------------
// gRPC end to end (tonic on both sides).

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

fn msg(t: &str) -> Msg {
    Msg { text: t.to_owned() }
}

type Codec = ProstCodec<Msg, Msg>;
type MsgStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Msg, Status>> + Send>>;

/// `test.Echo`: Unary (echoes; `sleep` waits 2 s; `fail` answers
/// NOT_FOUND with a message), ServerStream (three replies), ClientStream
/// (joins what it got with `+`), Bidi (`echo:` + each message).
#[derive(Clone, Default)]
struct Echo {
    /// Metadata of the calls the server received (header names).
    seen: Arc<Mutex<Vec<http::HeaderMap>>>,
}

struct Unary;
impl UnaryService<Msg> for Unary {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, Status>;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let text = req.into_inner().text;
            match text.as_str() {
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(tonic::Response::new(msg("late")))
                }
                "fail" => Err(Status::not_found("no such thing: 100%")),
                _ => Ok(tonic::Response::new(msg(&text))),
            }
        })
    }
}

struct ServerStream;
impl ServerStreamingService<Msg> for ServerStream {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<tonic::Response<MsgStream>, Status>;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move {
            let t = req.into_inner().text;
            let items: Vec<Result<Msg, Status>> =
                (0..3).map(|i| Ok(msg(&format!("{t}-{i}")))).collect();
            Ok(tonic::Response::new(
                Box::pin(tokio_stream::iter(items)) as MsgStream
            ))
        })
    }
}

struct ClientStream;
impl ClientStreamingService<Msg> for ClientStream {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, Status>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let mut s = req.into_inner();
            let mut parts = Vec::new();
            while let Some(m) = s.message().await? {
                parts.push(m.text);
            }
            Ok(tonic::Response::new(msg(&parts.join("+"))))
        })
    }
}

struct Bidi;
impl StreamingService<Msg> for Bidi {
    type Response = Msg;
    type ResponseStream = MsgStream;
    type Future = BoxFuture<tonic::Response<MsgStream>, Status>;
    fn call(&mut self, req: tonic::Request<tonic::Streaming<Msg>>) -> Self::Future {
        Box::pin(async move {
            let mut s = req.into_inner();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(m)) = s.message().await {
                    if tx.send(Ok(msg(&format!("echo:{}", m.text)))).await.is_err() {
                        return;
                    }
                }
            });
            let out = tokio_stream::wrappers::ReceiverStream::new(rx);
            Ok(tonic::Response::new(Box::pin(out) as MsgStream))
        })
    }
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        self.seen.lock().unwrap().push(req.headers().clone());
        let path = req.uri().path().to_owned();
        Box::pin(async move {
            let mut grpc = Grpc::new(Codec::default());
            Ok(match path.as_str() {
                "/test.Echo/Unary" => grpc.unary(Unary, req).await,
                "/test.Echo/ServerStream" => grpc.server_streaming(ServerStream, req).await,
                "/test.Echo/ClientStream" => grpc.client_streaming(ClientStream, req).await,
                "/test.Echo/Bidi" => grpc.streaming(Bidi, req).await,
                _ => Status::unimplemented("no such method").into_http(),
            })
        })
    }
}

/// A tonic server with [`Echo`] on an ephemeral loopback port (h2c).
async fn grpc_backend() -> (SocketAddr, Echo) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Echo::default();
    let svc = echo.clone();
    tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let _ = tonic::transport::Server::builder()
            .serve_with_incoming(svc, incoming)
            .await;
    });
    (addr, echo)
}

/// SHA-256 of `demo-key`.
const KEY_HASH: &str = "c48a01f49fd0f2cc404bc3cbbc80e91457a3d41bb429a695243de4c61794155c";

/// The gateway in front of `backend` (h2c): `/test.Echo/` public, and
/// `/secure.Echo/` behind an API key with a 1r/m, burst 2 limit per key.
async fn grpc_gateway(backend: SocketAddr) -> (Proxy, SocketAddr) {
    grpc_gateway_with(backend, "").await
}

/// [`grpc_gateway`] with extra top-level TOML (e.g. `[limits]`).
async fn grpc_gateway_with(backend: SocketAddr, extra: &str) -> (Proxy, SocketAddr) {
    let toml = format!(
        r#"{PLAIN}
{upstream}
[[routes]]
id = "echo"
path_prefix = "/test.Echo/"
upstream = "g"

[[routes]]
id = "secure"
path_prefix = "/secure.Echo/"
rewrite_prefix = "/test.Echo/"
upstream = "g"
auth = "key"
rate_limits = ["tight"]

[auth.api_keys.k]
keys = [{{ name = "client-1", sha256 = "{KEY_HASH}" }}]

[auth.policies.key]
type = "api_key"
providers = ["k"]

[[rate_limit.limits]]
name = "tight"
rate = "1r/m"
burst = 2
key = "identity"

{extra}
[xdp]
enabled = false
"#,
        upstream = upstream(
            "g",
            &[backend],
            "protocol = \"h2c\"\nrequest_timeout = \"5s\""
        ),
    );
    let config = Config::parse(&toml, "test.toml").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let engines = build_engines(&config, Path::new("."), None, None).expect("engines");
    let proxy = Proxy::start(&config, engines).await.expect("proxy starts");
    let addr = proxy.local_addr("main").expect("listener");
    (proxy, addr)
}

async fn client(addr: SocketAddr) -> tonic::client::Grpc<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("the gateway accepts an HTTP/2 connection");
    tonic::client::Grpc::new(channel)
}

async fn unary(
    g: &mut tonic::client::Grpc<Channel>,
    path: &'static str,
    req: tonic::Request<Msg>,
) -> Result<Msg, Status> {
    g.ready().await.unwrap();
    g.unary(req, PathAndQuery::from_static(path), Codec::default())
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn grpc_unary_and_streaming_calls_pass_end_to_end_with_trailers() {
    let (backend, echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway(backend).await;
    let mut g = client(addr).await;

    let r = unary(&mut g, "/test.Echo/Unary", tonic::Request::new(msg("hi"))).await;
    assert_eq!(r.unwrap().text, "hi");

    // The upstream's status and message arrive in trailers, unchanged.
    let e = unary(&mut g, "/test.Echo/Unary", tonic::Request::new(msg("fail")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), "no such thing: 100%");

    g.ready().await.unwrap();
    let mut s = g
        .server_streaming(
            tonic::Request::new(msg("n")),
            PathAndQuery::from_static("/test.Echo/ServerStream"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await.unwrap() {
        got.push(m.text);
    }
    assert_eq!(got, ["n-0", "n-1", "n-2"]);

    g.ready().await.unwrap();
    let r = g
        .client_streaming(
            tonic::Request::new(tokio_stream::iter(vec![msg("a"), msg("b"), msg("c")])),
            PathAndQuery::from_static("/test.Echo/ClientStream"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.text, "a+b+c");

    // Bidirectional, interleaved: each reply comes before the next send,
    // so nothing in the path may buffer a whole direction.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    g.ready().await.unwrap();
    tx.send(msg("one")).await.unwrap();
    let mut replies = g
        .streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static("/test.Echo/Bidi"),
            Codec::default(),
        )
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), replies.message())
        .await
        .expect("the first reply arrives while the request stream is open");
    assert_eq!(first.unwrap().unwrap().text, "echo:one");
    tx.send(msg("two")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().text, "echo:two");
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());

    // What the backend got: HTTP/2 calls with te: trailers.
    let seen = echo.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 5);
    for h in &seen {
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["content-type"], "application/grpc");
    }
}

#[tokio::test]
async fn grpc_refusals_are_grpc_statuses_and_never_reach_the_backend() {
    let (backend, echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway(backend).await;
    let mut g = client(addr).await;

    // No credentials: UNAUTHENTICATED, from the gateway.
    let e = unary(&mut g, "/secure.Echo/Unary", tonic::Request::new(msg("x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(echo.seen.lock().unwrap().is_empty());

    // With the key: three calls pass (1r/m with burst 2, NGINX semantics),
    // the fourth is RESOURCE_EXHAUSTED.
    let keyed = |t: &str| {
        let mut r = tonic::Request::new(msg(t));
        r.metadata_mut()
            .insert("x-api-key", "demo-key".parse().unwrap());
        r
    };
    assert_eq!(
        unary(&mut g, "/secure.Echo/Unary", keyed("1"))
            .await
            .unwrap()
            .text,
        "1"
    );
    assert!(
        unary(&mut g, "/secure.Echo/Unary", keyed("2"))
            .await
            .is_ok()
    );
    assert!(
        unary(&mut g, "/secure.Echo/Unary", keyed("3"))
            .await
            .is_ok()
    );
    let e = unary(&mut g, "/secure.Echo/Unary", keyed("4"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert_eq!(echo.seen.lock().unwrap().len(), 3);

    // No route: UNIMPLEMENTED.
    let e = unary(&mut g, "/nope.Svc/Call", tonic::Request::new(msg("x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    assert_eq!(echo.seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn grpc_deadline_is_the_smaller_of_grpc_timeout_and_the_route() {
    let (backend, echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway(backend).await;
    // A bare h2 client: tonic's own client enforces `grpc-timeout` itself
    // and would answer first; this test is about the gateway enforcing it.
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}/test.Echo/Unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        // The backend answers after 2 s; the pool allows 5 s; the call 300 ms.
        .header("grpc-timeout", "300m")
        .body(())
        .unwrap();
    let (resp, mut body) = h2.send_request(req, false).unwrap();
    let encoded = prost::Message::encode_to_vec(&msg("sleep"));
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&encoded);
    body.send_data(Bytes::from(frame), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("the gateway answers before the backend")
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "4", "{:?}", resp.headers());
    assert_eq!(resp.headers()["content-type"], "application/grpc");
    // The call did reach the backend, with its deadline.
    let seen = echo.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["grpc-timeout"], "300m");
}

#[tokio::test]
async fn grpc_to_an_http1_upstream_is_unavailable_not_a_downgrade() {
    let origin = Origin::start("h1").await;
    let (_p, addr) = gateway("", &[origin.addr]).await;
    let mut g = client(addr).await;
    let e = unary(&mut g, "/test.Echo/Unary", tonic::Request::new(msg("x")))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(origin.requests().is_empty());
}

/// A gRPC-Web call over HTTP/1.1, as a browser sends it: (status,
/// headers, body bytes).
async fn grpc_web_call(
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, http::HeaderMap, Vec<u8>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post(path)
        .header("host", "app.example.com")
        .header("content-type", content_type)
        .header("x-grpc-web", "1")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the response ends")
        .unwrap()
        .to_bytes()
        .to_vec();
    (parts.status.as_u16(), parts.headers, bytes)
}

/// A length-prefixed gRPC message (flag 0).
fn grpc_frame(m: &Msg) -> Vec<u8> {
    let encoded = prost::Message::encode_to_vec(m);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(encoded.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

/// Splits a gRPC-Web body into (messages, trailer block).
fn web_messages(mut b: &[u8]) -> (Vec<Msg>, String) {
    let (mut msgs, mut trailers) = (Vec::new(), String::new());
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        let payload = &b[5..5 + len];
        if b[0] & 0x80 != 0 {
            trailers = String::from_utf8(payload.to_vec()).unwrap();
        } else {
            msgs.push(<Msg as prost::Message>::decode(payload).unwrap());
        }
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes");
    (msgs, trailers)
}

/// Base64 that may be padded per chunk, as gRPC-Web text allows.
fn decode_chunked_base64(text: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let mut out = Vec::new();
    let mut start = 0;
    for i in (0..text.len()).step_by(4) {
        if text[i..i + 4].contains(&b'=') || i + 4 == text.len() {
            base64::engine::general_purpose::STANDARD
                .decode_vec(&text[start..i + 4], &mut out)
                .unwrap();
            start = i + 4;
        }
    }
    out
}

#[tokio::test]
async fn grpc_web_is_translated_to_grpc_and_back() {
    let (backend, echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway(backend).await;

    // Binary.
    let (status, h, body) = grpc_web_call(
        addr,
        "/test.Echo/Unary",
        "application/grpc-web+proto",
        grpc_frame(&msg("from a browser")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "application/grpc-web+proto");
    let (msgs, trailers) = web_messages(&body);
    assert_eq!(msgs, [msg("from a browser")], "{h:?} {body:?}");
    assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");
    {
        let seen = echo.seen.lock().unwrap();
        assert_eq!(seen[0]["content-type"], "application/grpc+proto");
        assert_eq!(seen[0]["te"], "trailers");
    }

    // Text (base64 both ways).
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode(grpc_frame(&msg("text mode")));
    let (status, h, body) = grpc_web_call(
        addr,
        "/test.Echo/Unary",
        "application/grpc-web-text",
        text.into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "application/grpc-web-text");
    let (msgs, trailers) = web_messages(&decode_chunked_base64(&body));
    assert_eq!(msgs, [msg("text mode")]);
    assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");
    assert_eq!(
        echo.seen.lock().unwrap()[1]["content-type"],
        "application/grpc"
    );

    // The upstream's error without a message is trailers-only: its status
    // stays in the headers, where gRPC-Web reads it too.
    let (status, h, body) = grpc_web_call(
        addr,
        "/test.Echo/Unary",
        "application/grpc-web",
        grpc_frame(&msg("fail")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["grpc-status"], "5");
    // As tonic encoded it, unchanged.
    assert_eq!(h["grpc-message"], "no%20such%20thing:%20100%25");
    assert!(body.is_empty());

    // The gateway's own refusal, in the call's content type.
    let (status, h, body) = grpc_web_call(
        addr,
        "/secure.Echo/Unary",
        "application/grpc-web+proto",
        grpc_frame(&msg("no key")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["grpc-status"], "16");
    assert_eq!(h["content-type"], "application/grpc-web+proto");
    assert!(body.is_empty());
    assert_eq!(echo.seen.lock().unwrap().len(), 3);
}

/// An h2c target that allows one stream at a time: concurrent requests
/// wait for the stream to free up (never refused), so the target never
/// sees more than one at once, and every client gets its answer.
#[tokio::test]
async fn h2_upstream_respects_max_concurrent_streams() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (now, peak, served) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let (n2, p2, s2) = (now.clone(), peak.clone(), served.clone());
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (n, p, s) = (n2.clone(), p2.clone(), s2.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (n, p, s) = (n.clone(), p.clone(), s.clone());
                    async move {
                        let in_flight = n.fetch_add(1, Ordering::SeqCst) + 1;
                        p.fetch_max(in_flight, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        n.fetch_sub(1, Ordering::SeqCst);
                        s.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("one"))))
                    }
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .max_concurrent_streams(1)
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
            });
        }
    });
    let (_p, addr) = gateway("protocol = \"h2c\"", &[backend]).await;
    let calls: Vec<_> = (0..4)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/c/{i}"), "").await }))
        .collect();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(served.load(Ordering::SeqCst), 4);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        1,
        "the target's limit was exceeded"
    );
}

/// A raw gRPC call over a bare h2 connection: (HTTP status, headers).
async fn raw_grpc(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, http::HeaderMap) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut h2, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let (resp, mut send) = h2.send_request(req.body(()).unwrap(), false).unwrap();
    send.send_data(Bytes::from(body), true).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("an answer")
        .unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

/// Client-made failures never eject a target: calls with a deadline
/// shorter than the pool's (`grpc-timeout`) and gRPC-Web bodies that are
/// not base64, each more times than `passive.consecutive_failures` (5).
#[tokio::test]
async fn clients_cannot_eject_a_grpc_target() {
    let (backend, echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway(backend).await;
    for _ in 0..6 {
        let (status, h) = raw_grpc(
            addr,
            "/test.Echo/Unary",
            &[("grpc-timeout", "20m")],
            grpc_frame(&msg("sleep")),
        )
        .await;
        assert_eq!((status, h["grpc-status"].to_str().unwrap()), (200, "4"));
    }
    for _ in 0..6 {
        let (status, h, _) = grpc_web_call(
            addr,
            "/test.Echo/Unary",
            "application/grpc-web-text",
            b"!!!!".to_vec(),
        )
        .await;
        // The client's malformed body: INVALID_ARGUMENT, not UNAVAILABLE.
        assert_eq!(status, 200);
        assert_eq!(h["grpc-status"], "3", "{h:?}");
        assert_eq!(h["cache-control"], "no-store");
    }
    let mut g = client(addr).await;
    let r = unary(
        &mut g,
        "/test.Echo/Unary",
        tonic::Request::new(msg("still up")),
    )
    .await;
    assert_eq!(r.expect("the target was not ejected").text, "still up");
    // The deadline-limited calls reached the backend; the bad bodies did
    // not decode into a call it could answer.
    assert!(echo.seen.lock().unwrap().len() >= 7);
}

/// Only POST with a gRPC content type is gRPC: a GET with one, or an
/// `application/grpc-foo` POST, is an ordinary request (HTTP statuses,
/// request buffering).
#[tokio::test]
async fn only_grpc_content_types_on_post_are_grpc() {
    let (backend, _echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway(backend).await;
    let get = "GET /nothing/here HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc\r\nConnection: close\r\n\r\n";
    let r = raw(addr, get.as_bytes()).await;
    assert_eq!(r.status, 404, "{}", r.head);
    let post = "POST /nothing/here HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-foo\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi";
    let r = raw(addr, post.as_bytes()).await;
    assert_eq!(r.status, 404, "{}", r.head);
}

/// A client-streaming call whose messages come slower than
/// `body_min_rate` allows a plain body, but each within the idle timeout,
/// is served (a long call is not a slowloris).
#[tokio::test]
async fn slow_grpc_streams_are_not_cut_by_the_minimum_body_rate() {
    let (backend, _echo) = grpc_backend().await;
    let (_p, addr) = grpc_gateway_with(
        backend,
        "[limits]\nbody_read_timeout = \"1s\"\nbody_min_rate = 100000\n",
    )
    .await;
    let mut g = client(addr).await;
    g.ready().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let sender = tokio::spawn(async move {
        for part in ["a", "b", "c", "d"] {
            tokio::time::sleep(Duration::from_millis(600)).await;
            tx.send(msg(part)).await.unwrap();
        }
    });
    let r = g
        .client_streaming(
            tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            PathAndQuery::from_static("/test.Echo/ClientStream"),
            Codec::default(),
        )
        .await;
    sender.await.unwrap();
    assert_eq!(
        r.expect("the slow stream is served").into_inner().text,
        "a+b+c+d"
    );
}

/// `auto` against a target that chooses HTTP/1.1: a gRPC call is refused
/// (UNAVAILABLE), never sent downgraded; plain requests still work.
#[tokio::test]
async fn auto_never_downgrades_grpc_to_http1() {
    let (ca, _dir, ca_file) = ca_in_dir("downgrade");
    let h1 = tls_backend(&ca, "b.internal", &[b"http/1.1"]).await;
    let (_p, addr) = gateway(
        &format!(
            "protocol = \"auto\"\nretries = 0\n{}",
            tls_line(&ca_file, "b.internal")
        ),
        &[h1.addr],
    )
    .await;
    // Once before ALPN is known, once after.
    for _ in 0..2 {
        let (status, h) = raw_grpc(addr, "/pkg.Svc/Call", &[], grpc_frame(&msg("x"))).await;
        assert_eq!(
            (status, h["grpc-status"].to_str().unwrap()),
            (200, "14"),
            "{h:?}"
        );
    }
    assert!(h1.got().is_empty(), "{:?}", h1.got());
    assert_eq!(get(addr, "/plain", "").await.status, 200);
    assert_eq!(h1.got().len(), 1);
}
