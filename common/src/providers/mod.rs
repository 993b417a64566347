//! Model providers reached over their public HTTP APIs.
//!
//! Three small traits: [`ChatModel`] (streaming chat completion), [`Embedder`] and [`Reranker`].
//! A [`ModelSpec`] (a row of the `models` table, its API key decrypted) names a [`Provider`];
//! [`Providers`] turns a spec into a client. Adding a chat or embedding provider is one new file
//! implementing one trait, one variant of [`Provider`] (with [`Provider::serves`]) and one line in
//! the matching `match` below; a rerank provider is one row of [`rerank::relevance::ROWS`] when it
//! speaks a known shape (see [`rerank`]).
//!
//! Every call has timeouts; requests are retried with jittered exponential backoff on transient
//! failures (connection errors, 408/429/5xx) — but a chat stream is never retried once its first
//! token has been read.

pub mod error;
pub mod instrumented;
pub mod local_embed;
pub mod openai_chat;
pub mod openai_embed;
pub mod rerank;
pub mod retry;
#[cfg(test)]
mod test_support;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use crate::model::{ModelKind, Provider};
use crate::tls::TlsRoots;
use async_trait::async_trait;
pub use error::ProviderError;
use futures::Stream;

/// One configured model: a row of `models` with its API key decrypted (see
/// [`crate::models`]). `Debug` masks the key.
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ModelSpec {
    pub name: String,
    pub kind: ModelKind,
    pub provider: Provider,
    pub base_url: String,
    pub model: String,
    /// Plaintext, sent as the bearer token; empty = no `Authorization` header.
    pub api_key: String,
    pub max_tokens: i32,
}

impl std::fmt::Debug for ModelSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("provider", &self.provider)
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &crate::secret::mask(&self.api_key))
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// A chat message sent to a chat model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

/// Generation settings (RAGFlow `llm_setting`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct GenConf {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
}

/// Text pieces as the model produces them.
pub type TokenStream = Pin<Box<dyn Stream<Item = Result<String, ProviderError>> + Send>>;

#[async_trait]
pub trait ChatModel: Send + Sync {
    /// Starts a streaming completion. Returns once the upstream accepted the request; the
    /// stream yields text deltas. Dropping the stream closes the upstream connection, which makes
    /// the model stop generating.
    async fn stream(
        &self,
        messages: &[Message],
        conf: &GenConf,
    ) -> Result<TokenStream, ProviderError>;
}

#[async_trait]
pub trait Embedder: Send + Sync {
    /// One unit-length vector per input text.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError>;
}

#[async_trait]
pub trait Reranker: Send + Sync {
    /// One relevance score (0..=1) per document, in input order.
    async fn rerank(&self, query: &str, documents: &[String]) -> Result<Vec<f32>, ProviderError>;
}

/// Timeouts for upstream calls.
#[derive(Clone, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    /// Whole-request bound for embeddings and rerank.
    pub request: Duration,
    /// Longest silence between two reads of a chat stream.
    pub idle: Duration,
    /// Retries after the first attempt for transient failures.
    pub retries: usize,
}

/// Builds provider clients sharing one HTTP connection pool.
#[derive(Clone)]
pub struct Providers {
    http: reqwest::Client,
    timeouts: Timeouts,
}

impl Providers {
    /// `roots` are the trust anchors for HTTPS providers (public roots plus the extra CA file).
    pub fn new(timeouts: Timeouts, roots: &TlsRoots) -> Result<Self, ProviderError> {
        let tls = roots
            .client_config()
            .map_err(|e| ProviderError::Http(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.idle)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(ProviderError::from)?;
        Ok(Providers { http, timeouts })
    }

    /// The chat client of `spec`, counted and timed (see [`instrumented`]).
    pub fn chat(&self, spec: &ModelSpec) -> Result<Arc<dyn ChatModel>, ProviderError> {
        Ok(Arc::new(instrumented::Instrumented::new(
            self.chat_client(spec)?,
            spec,
        )))
    }

    /// The embedding client of `spec`, counted and timed (the in-process `local` embedder is not
    /// an upstream call and is not wrapped).
    pub fn embedder(&self, spec: &ModelSpec) -> Result<Arc<dyn Embedder>, ProviderError> {
        let client = self.embedder_client(spec)?;
        if spec.provider == Provider::Local {
            return Ok(client);
        }
        Ok(Arc::new(instrumented::Instrumented::new(client, spec)))
    }

    /// The rerank client of `spec`, counted and timed.
    pub fn reranker(&self, spec: &ModelSpec) -> Result<Arc<dyn Reranker>, ProviderError> {
        Ok(Arc::new(instrumented::Instrumented::new(
            self.reranker_client(spec)?,
            spec,
        )))
    }

    fn chat_client(&self, spec: &ModelSpec) -> Result<Arc<dyn ChatModel>, ProviderError> {
        use Provider::*;
        match spec.provider {
            OpenAi | Vllm | Ollama | LocalAi | Xinference | Tgi | OpenAiCompatible => Ok(Arc::new(
                openai_chat::OpenAiChat::new(self.http.clone(), spec, &self.timeouts),
            )),
            provider @ (Local | Jina | Nvidia | Cohere) => Err(ProviderError::Unsupported {
                kind: ModelKind::Chat,
                provider,
            }),
        }
    }

    fn embedder_client(&self, spec: &ModelSpec) -> Result<Arc<dyn Embedder>, ProviderError> {
        use Provider::*;
        match spec.provider {
            Local => Ok(Arc::new(local_embed::LocalEmbedder)),
            OpenAi | Vllm | Ollama | LocalAi | Xinference | Tgi | OpenAiCompatible => Ok(Arc::new(
                openai_embed::OpenAiEmbed::new(self.http.clone(), spec, &self.timeouts),
            )),
            provider @ (Jina | Nvidia | Cohere) => Err(ProviderError::Unsupported {
                kind: ModelKind::Embedding,
                provider,
            }),
        }
    }

    fn reranker_client(&self, spec: &ModelSpec) -> Result<Arc<dyn Reranker>, ProviderError> {
        rerank::client(self.http.clone(), spec, &self.timeouts).ok_or(ProviderError::Unsupported {
            kind: ModelKind::Rerank,
            provider: spec.provider,
        })
    }
}

/// Joins a base URL and a path without doubling or dropping the slash.
pub(crate) fn endpoint(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// One configured model's HTTP endpoint: where to POST, with which key and model name, bounded
/// and retried like every call that is safe to repeat (embeddings, rerank). Providers hold one
/// and add only their request and response shapes.
pub(crate) struct JsonEndpoint {
    http: reqwest::Client,
    url: String,
    /// The model name sent upstream.
    pub(crate) model: String,
    api_key: String,
    timeouts: Timeouts,
}

impl JsonEndpoint {
    pub(crate) fn new(http: reqwest::Client, spec: &ModelSpec, url: String, t: &Timeouts) -> Self {
        JsonEndpoint {
            http,
            url,
            model: spec.model.clone(),
            api_key: spec.api_key.clone(),
            timeouts: t.clone(),
        }
    }

    /// POSTs `body` (per-attempt timeout, retries of transient failures), decodes the answer.
    pub(crate) async fn post<T: serde::de::DeserializeOwned>(
        &self,
        body: &serde_json::Value,
    ) -> Result<T, ProviderError> {
        post_json(
            &self.http,
            &self.url,
            &self.api_key,
            body,
            self.timeouts.request,
            self.timeouts.retries,
        )
        .await
    }
}

/// POSTs a JSON body and decodes a JSON answer, with a per-attempt timeout and retries of
/// transient failures (embeddings, rerank: calls that are safe to repeat).
pub(crate) async fn post_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
    api_key: &str,
    body: &serde_json::Value,
    timeout: Duration,
    retries: usize,
) -> Result<T, ProviderError> {
    retry::with_retry(retries, || async {
        let mut req = http.post(url).json(body).timeout(timeout);
        if !api_key.is_empty() {
            req = req.bearer_auth(api_key);
        }
        let resp = req.send().await?;
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        resp.json::<T>().await.map_err(ProviderError::decode)
    })
    .await
}

/// Reads an error response into a [`ProviderError::Status`] (body cut to 300 bytes).
pub(crate) async fn status_error(resp: reqwest::Response) -> ProviderError {
    let status = resp.status().as_u16();
    let mut body = resp.text().await.unwrap_or_default();
    if body.len() > 300 {
        let mut cut = 300;
        while !body.is_char_boundary(cut) {
            cut -= 1;
        }
        body.truncate(cut);
    }
    ProviderError::Status { status, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client_error::ErrorReason;

    /// A connection refused is `Unreachable` (`upstream_unavailable`), and its detail names the
    /// URL without user info or query, where a key could be.
    #[tokio::test]
    async fn connect_errors_are_unreachable_and_their_detail_hides_url_secrets() {
        let providers = test_support::providers();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = format!("http://user:sk-pass@{addr}/gw/v1/embeddings?api-key=sk-query");
        let err = providers
            .http
            .post(&url)
            .send()
            .await
            .map(|_| ())
            .map_err(ProviderError::from)
            .unwrap_err();
        assert_eq!(err.reason(), ErrorReason::UpstreamUnavailable);
        let detail = err.to_string();
        assert!(detail.starts_with("upstream unreachable: "), "{detail}");
        assert!(
            detail.contains(&format!("(url http://{addr}/gw/v1/embeddings)")),
            "{detail}"
        );
        assert!(!detail.contains("sk-"), "{detail}");
        assert!(err.is_transient());
    }

    #[test]
    fn reasons_by_status() {
        let status = |status| ProviderError::Status {
            status,
            body: String::new(),
        };
        assert_eq!(status(429).reason(), ErrorReason::UpstreamRateLimited);
        assert_eq!(status(503).reason(), ErrorReason::UpstreamError);
        assert_eq!(
            ProviderError::Decode("x".into()).reason(),
            ErrorReason::UpstreamError
        );
        assert_eq!(
            ProviderError::Timeout("request").reason(),
            ErrorReason::UpstreamTimeout
        );
    }

    /// [`Provider::serves`] (what `put_model` accepts) and the clients built here agree.
    #[test]
    fn serves_agrees_with_the_clients_built() {
        let providers = test_support::providers();
        for provider in Provider::ALL {
            for kind in ModelKind::ALL {
                let spec =
                    test_support::spec(kind.as_str(), provider.as_str(), "http://x", "m", "");
                let built = match kind {
                    ModelKind::Chat => providers.chat(&spec).is_ok(),
                    ModelKind::Embedding => providers.embedder(&spec).is_ok(),
                    ModelKind::Rerank => providers.reranker(&spec).is_ok(),
                };
                assert_eq!(built, provider.serves(kind), "{provider} {kind}");
            }
        }
    }

    #[test]
    fn debug_masks_the_api_key() {
        let spec = test_support::spec("chat", "openai", "http://x", "m", "sk-abcdefghijklmnop1234");
        let shown = format!("{spec:?}");
        assert!(!shown.contains("abcdefghijklmnop"), "{shown}");
        assert!(shown.contains("sk-a******1234"), "{shown}");
    }
}
