//! How a model call fails ([`ProviderError`]): what is worth retrying, which client-visible code
//! a failure becomes, and the log detail with every URL secret removed (`describe`).

use crate::client_error::ErrorReason;
use crate::model::{ModelKind, Provider};

/// A provider call failed.
///
/// The `Display` of every variant is **log detail**: it may hold an upstream status and up to
/// 300 bytes of the upstream's body (which can echo a key or a prompt). It never reaches a client:
/// a failed job shows the client only the fixed message of [`ProviderError::reason`] with an error
/// id (see `crate::client_error`), and the worker logs this detail under the same id.
///
/// URLs are kept out even of the detail's reqwest part: `describe` drops reqwest's
/// `for url (…)` and appends the URL without its user info, query and fragment — a model's
/// `base_url` may carry a key there (`?api-key=…`, `https://user:key@host`), and logs are read
/// by more people than the `models` table.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Connection refused, DNS failure, TLS handshake failure: nothing answered.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// Any other failure to send the request or read the answer.
    #[error("provider `{provider}` does not serve {kind} models")]
    Unsupported { kind: ModelKind, provider: Provider },
    #[error("upstream request failed: {0}")]
    Http(String),
    #[error("upstream answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("upstream sent an unexpected response: {0}")]
    Decode(String),
    #[error("upstream timed out: {0}")]
    Timeout(&'static str),
}

impl ProviderError {
    /// Worth retrying: the same request may succeed a moment later.
    pub fn is_transient(&self) -> bool {
        match self {
            ProviderError::Http(_) | ProviderError::Unreachable(_) | ProviderError::Timeout(_) => {
                true
            }
            ProviderError::Status { status, .. } => matches!(status, 408 | 425 | 429 | 500..=599),
            _ => false,
        }
    }

    /// The client-visible error code of this failure. An unknown provider string is the model
    /// settings' fault (`bad_request`), not the upstream's.
    pub fn reason(&self) -> ErrorReason {
        match self {
            ProviderError::Unsupported { .. } => ErrorReason::BadRequest,
            ProviderError::Unreachable(_) => ErrorReason::UpstreamUnavailable,
            ProviderError::Timeout(_) => ErrorReason::UpstreamTimeout,
            ProviderError::Status { status: 429, .. } => ErrorReason::UpstreamRateLimited,
            ProviderError::Http(_) | ProviderError::Status { .. } | ProviderError::Decode(_) => {
                ErrorReason::UpstreamError
            }
        }
    }

    /// A failure to decode an answer's body.
    pub(crate) fn decode(e: reqwest::Error) -> Self {
        ProviderError::Decode(describe(e))
    }
}

impl From<reqwest::Error> for ProviderError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            ProviderError::Timeout("request")
        } else if e.is_connect() {
            ProviderError::Unreachable(describe(e))
        } else {
            ProviderError::Http(describe(e))
        }
    }
}

/// A reqwest error for the logs: its kind and the chain of causes (`error sending request: client
/// error (Connect): tcp connect error: Connection refused (os error 111)`), then the URL as
/// [`redact_url`] leaves it. reqwest's own `Display` would print the full URL.
pub(crate) fn describe(e: reqwest::Error) -> String {
    let url = e.url().map(redact_url);
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    if let Some(url) = url {
        out.push_str(" (url ");
        out.push_str(&url);
        out.push(')');
    }
    out
}

/// `scheme://host[:port]/path` — the URL without user info, query and fragment, the places a
/// key can hide in a `base_url`.
pub(crate) fn redact_url(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}
