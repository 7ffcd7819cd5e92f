//! OAuth2 token introspection against a loopback HTTPS endpoint: active and
//! inactive tokens, client credentials sent, positive and negative caching,
//! expired `exp`, and an endpoint that is down (503, never success).

mod auth_support;

use std::sync::Arc;

use auth_support::*;
use base64::Engine as _;
use gateway::auth::{AuthMethod, Authenticator};

fn config(server: &MockServer) -> String {
    format!(
        r#"
[auth.introspection.idp]
endpoint = "{url}"
client_id = "gateway"
client_secret = "s3cr3t&x"
ca_file = "{ca}"
timeout = "2s"

[auth.policies.api]
type = "introspection"
providers = ["idp"]
scopes = ["read"]
headers = {{ "x-user-id" = "sub" }}
"#,
        url = server.url("/introspect"),
        ca = server.ca_file.display(),
    )
}

/// Active for token "good", "readonly" lacks the scope, everything else inactive.
fn idp() -> Handler {
    Arc::new(|body: &[u8]| {
        let body = String::from_utf8_lossy(body);
        let exp = now() + 600;
        if body.contains("token=good&") {
            (
                200,
                format!(r#"{{"active":true,"sub":"alice","scope":"read write","exp":{exp}}}"#),
            )
        } else if body.contains("token=readonly&") {
            (
                200,
                format!(r#"{{"active":true,"sub":"bob","scope":"other","exp":{exp}}}"#),
            )
        } else if body.contains("token=expired&") {
            (
                200,
                format!(
                    r#"{{"active":true,"sub":"carol","scope":"read","exp":{}}}"#,
                    now() - 10
                ),
            )
        } else {
            (200, r#"{"active":false}"#.to_owned())
        }
    })
}

async fn status(a: &Authenticator, token: &str) -> u16 {
    match a.authenticate("api", &bearer(token), CLIENT).await {
        Ok(_) => 200,
        Err(f) => {
            assert_problem_without(&f, token);
            f.status().as_u16()
        }
    }
}

#[tokio::test]
async fn active_inactive_and_cached() {
    let server = MockServer::start(idp()).await;
    let a = authenticator(&config(&server));
    let mut req = bearer("good");
    let id = a.authenticate("api", &req, CLIENT).await.unwrap();
    assert_eq!(id.subject, "alice");
    assert_eq!(
        id.method,
        AuthMethod::Introspection {
            provider: "idp".into()
        }
    );
    a.apply_identity(&id, &mut req);
    assert_eq!(req.headers["x-user-id"], "alice");

    // The endpoint saw the token form-encoded and our client credentials.
    let (headers, body) = server.requests.lock().unwrap()[0].clone();
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "token=good&token_type_hint=access_token"
    );
    let basic = base64::engine::general_purpose::STANDARD.encode("gateway:s3cr3t%26x");
    assert_eq!(headers["authorization"], format!("Basic {basic}").as_str());

    // Cached: no second call for the same token.
    assert_eq!(status(&a, "good").await, 200);
    assert_eq!(server.hits(), 1);

    // Inactive → 401 invalid_token, cached briefly too.
    assert_eq!(status(&a, "revoked").await, 401);
    assert_eq!(status(&a, "revoked").await, 401);
    assert_eq!(server.hits(), 2);
    let f = a
        .authenticate("api", &bearer("revoked"), CLIENT)
        .await
        .unwrap_err();
    assert!(
        f.www_authenticate()
            .unwrap()
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    // Active but past exp → inactive; active without the scope → 403.
    assert_eq!(status(&a, "expired").await, 401);
    assert_eq!(status(&a, "readonly").await, 403);
}

#[tokio::test]
async fn endpoint_down_is_503_and_not_cached() {
    let server = MockServer::start(fixed(500, "boom")).await;
    let a = authenticator(&config(&server));
    assert_eq!(status(&a, "good").await, 503);
    // Garbage answers are failures too, never success.
    server.set(fixed(200, "not json"));
    assert_eq!(status(&a, "good").await, 503);
    server.set(fixed(200, r#"{"sub":"x"}"#));
    assert_eq!(status(&a, "good").await, 503, "no `active` member");
    assert_eq!(server.hits(), 3, "failures are not cached");
    server.set(idp());
    assert_eq!(status(&a, "good").await, 200);

    // Nothing listening at all.
    let toml = config(&server).replace(&server.addr.port().to_string(), "1");
    let a = authenticator(&toml);
    assert_eq!(status(&a, "good").await, 503);
}

#[test]
fn secret_is_redacted_in_debug() {
    let toml = "[auth.introspection.idp]\nendpoint = \"https://idp.test/i\"\nclient_id = \"gw\"\nclient_secret = \"hunter2\"\n";
    let section = parse_auth(toml);
    let dbg = format!("{section:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
}
