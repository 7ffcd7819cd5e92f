//! The gateway's config for the proxy scenarios, written at run time: the
//! same job as `bench/nginx.conf` and `bench/haproxy.cfg` (one upstream,
//! security headers on, a per-IP L7 limit too high to trigger, `/key/` with
//! an API key, plus `/jwt/` with an ES256 JWT that the peers cannot verify).
//! XDP is off here; the memory scenario adds it.

use std::path::{Path, PathBuf};

use sha2::Digest as _;
use test_support::jwt;

use super::servers::{API_KEY, Certs, Ports};

pub const JWT_ISSUER: &str = "https://bench.invalid/";
pub const JWT_AUDIENCE: &str = "bench";

/// A valid ES256 token for the bench issuer (one hour), signed with
/// `test-support/data/ec_private.pem`.
pub fn jwt_token() -> String {
    let now = jwt::now();
    let claims = serde_json::json!({
        "iss": JWT_ISSUER, "aud": JWT_AUDIENCE, "sub": "bench-user",
        "iat": now, "exp": now + 3600, "scope": "bench",
    });
    jwt::sign(
        jwt::header(jsonwebtoken::Algorithm::ES256, Some("k1")),
        &claims,
        &jwt::ec_key(),
    )
}

/// Extra top-level sections (e.g. `[xdp]` for the memory scenario); the
/// default turns XDP off.
pub fn config_text(dir: &Path, ports: &Ports, certs: &Certs, xdp: &str) -> String {
    let key_hash = hex(&sha2::Sha256::digest(API_KEY.as_bytes()));
    format!(
        r#"# Written by gw-bench (bench/src/gwconf.rs).
{xdp}

[admin]
socket = "{dir}/admin.sock"

[[listeners]]
name = "http"
address = "127.0.0.1:{http}"

[[listeners]]
name = "https"
address = "127.0.0.1:{https}"
tls = true

[[tls.certificates]]
chain = "{cert}"
key = "{key}"
server_names = ["localhost"]

[[upstreams]]
name = "origin"
targets = ["127.0.0.1:{origin}"]

# The aggregation row: one client GET answered from 3 parallel calls to
# the origin, merged (docs/aggregation.md).
[[routes]]
id = "aggregate"
path = "/agg/{{id}}"
aggregate = [
  {{ name = "a", upstream = "origin", path = "/public/a/{{id}}" }},
  {{ name = "b", upstream = "origin", path = "/public/b/{{id}}" }},
  {{ name = "c", upstream = "origin", path = "/public/c/{{id}}" }},
]

# The gRPC row: h2c to the tonic origin (bench/src/grpc.rs).
[[upstreams]]
name = "grpc"
targets = ["127.0.0.1:{origin_grpc}"]
protocol = "h2c"

[[routes]]
id = "grpc"
path_prefix = "/bench.Echo/"
upstream = "grpc"

[[routes]]
id = "public"
path_prefix = "/public/"
upstream = "origin"

[[routes]]
id = "key"
path_prefix = "/key/"
upstream = "origin"
auth = "key"

[[routes]]
id = "jwt"
path_prefix = "/jwt/"
upstream = "origin"
auth = "jwt"

[[routes]]
id = "validated"
path_prefix = "/validated/"
upstream = "origin"

# The schema of the benchmark's 1 KiB JSON body (bench/src/proxy.rs).
[[validation.rules]]
route = "validated"
method = "POST"
body_schema = {{ type = "object", required = ["items", "pad"], additionalProperties = false, properties = {{ items = {{ type = "array", maxItems = 100, items = {{ type = "object", required = ["id", "ok"], properties = {{ id = {{ type = "integer", minimum = 0 }}, ok = {{ type = "boolean" }} }} }} }}, pad = {{ type = "string", maxLength = 2048 }} }} }}

[limits]
max_connections = 40000
max_connections_per_ip = 40000

[security_headers]
enabled = true

[auth.api_keys.bench]
header = "x-api-key"
keys = [{{ name = "bench", sha256 = "{key_hash}" }}]

[auth.jwt.bench]
issuer = "{iss}"
audiences = ["{aud}"]
algorithms = ["ES256"]
public_key_files = [{{ path = "{ec_pub}", kid = "k1" }}]

[auth.policies.key]
type = "api_key"
providers = ["bench"]
strip_credential = true

[auth.policies.jwt]
type = "jwt"
providers = ["bench"]
headers = {{ "x-user-id" = "sub" }}
strip_credential = true

[rate_limit]
global = ["per-ip"]

[[rate_limit.limits]]
name = "per-ip"
rate = "1000000r/s"
burst = 1000000
key = "ip"

[escalation]
enabled = false

# As the peers' configs: NGINX has `access_log off`, HAProxy logs nothing.
[log]
access_log = "off"
"#,
        dir = dir.display(),
        http = ports.gw_http,
        https = ports.gw_https,
        origin = ports.origin,
        origin_grpc = ports.origin_grpc,
        cert = certs.cert.display(),
        key = certs.key.display(),
        iss = JWT_ISSUER,
        aud = JWT_AUDIENCE,
        ec_pub = jwt::data("ec_public.pem").display(),
    )
}

/// Writes the config (XDP off); returns its path and a valid JWT.
pub fn write(dir: &Path, ports: &Ports, certs: &Certs) -> (PathBuf, String) {
    let path = dir.join("gateway.toml");
    std::fs::write(
        &path,
        config_text(dir, ports, certs, "[xdp]\nenabled = false"),
    )
    .unwrap();
    (path, jwt_token())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
