//! Fixtures shared by the provider unit tests (compiled only under `cfg(test)`).
//!
//! Each provider test starts its own [`wiremock::MockServer`] on 127.0.0.1, builds a
//! [`ModelSpec`] whose `base_url` points at it, and goes through [`Providers`] exactly like the
//! pipeline does, so the `provider` string registration is exercised too.
//!
//! The three retry scenarios below are the contract of [`super::post_json`] and of the chat
//! stream's connect phase, checked once per provider: a transient status is retried, a client
//! error is not, and a hung upstream fails after a bounded number of attempts. Timeouts are a
//! few hundred milliseconds so the whole suite stays fast.

use std::future::Future;
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use super::{ModelSpec, ProviderError, Providers, Timeouts};

/// Per-attempt bound used by every provider test.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// Retries after the first attempt.
pub(crate) const RETRIES: usize = 2;

pub(crate) fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        request: REQUEST_TIMEOUT,
        idle: Duration::from_millis(300),
        retries: RETRIES,
    }
}

pub(crate) fn providers() -> Providers {
    Providers::new(timeouts(), &crate::tls::TlsRoots::public()).expect("HTTP client builds")
}

pub(crate) fn spec(
    kind: &str,
    provider: &str,
    base_url: &str,
    model: &str,
    api_key: &str,
) -> ModelSpec {
    ModelSpec {
        name: format!("{provider}-{kind}"),
        kind: kind.parse().expect("test kind"),
        provider: provider.parse().expect("test provider"),
        base_url: base_url.into(),
        model: model.into(),
        api_key: api_key.into(),
        max_tokens: 8192,
    }
}

pub(crate) fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| t.to_string()).collect()
}

/// Every request the server received, in arrival order.
pub(crate) async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

/// The JSON body of a recorded request.
pub(crate) fn json_body(req: &Request) -> serde_json::Value {
    serde_json::from_slice(&req.body).expect("request body is JSON")
}

/// The `authorization` header of a recorded request, if any.
pub(crate) fn auth(req: &Request) -> Option<String> {
    req.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A 503 and then `ok`: the call succeeds, after exactly two requests.
pub(crate) async fn transient_status_is_retried<F, Fut>(route: &str, ok: ResponseTemplate, call: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), ProviderError>>,
{
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ok)
        .mount(&server)
        .await;
    let res = call(server.uri()).await;
    assert!(res.is_ok(), "expected success after a retry, got {res:?}");
    assert_eq!(requests(&server).await.len(), 2, "one failure + one retry");
}

/// A 400 fails at once with [`ProviderError::Status`] carrying the upstream body.
pub(crate) async fn client_error_is_not_retried<F, Fut>(route: &str, call: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), ProviderError>>,
{
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad model name"))
        .mount(&server)
        .await;
    match call(server.uri()).await {
        Err(ProviderError::Status { status, body }) => {
            assert_eq!(status, 400);
            assert_eq!(body, "bad model name");
        }
        other => panic!("expected a 400 status error, got {other:?}"),
    }
    assert_eq!(requests(&server).await.len(), 1, "a 400 is not retried");
}

/// An upstream slower than [`REQUEST_TIMEOUT`] gives [`ProviderError::Timeout`] after
/// `1 + RETRIES` attempts, well within a second or two.
pub(crate) async fn hung_upstream_times_out<F, Fut>(route: &str, ok: ResponseTemplate, call: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<(), ProviderError>>,
{
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(route))
        .respond_with(ok.set_delay(Duration::from_secs(5)))
        .mount(&server)
        .await;
    let started = Instant::now();
    let res = call(server.uri()).await;
    let took = started.elapsed();
    assert!(
        matches!(res, Err(ProviderError::Timeout(_))),
        "expected a timeout, got {res:?}"
    );
    assert_eq!(requests(&server).await.len(), 1 + RETRIES);
    assert!(
        took < Duration::from_secs(2),
        "timeouts must bound the call, took {took:?}"
    );
}
