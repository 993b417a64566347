//! `POST /v1/embeddings`: OpenAI-compatible embeddings from the local hashing embedder.
//!
//! Vectors come from [`ragq_common::text::hash_embed`] ([`EMBED_DIM`] dimensions, unit length,
//! all zeros for a text without terms), so the simulator agrees exactly with ragq's built-in
//! local embedder. The response is sent after `embed_ms`, measured from the request's arrival.
//! `encoding_format` may be `float` (default) or `base64` (little-endian `f32`s, as OpenAI does).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::{IntoResponse, Response};
use ragq_common::text::{EMBED_DIM, hash_embed};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::AppState;
use crate::error::{ApiError, default_model, parse_body};
use crate::flags::ModelFlags;
use crate::shutdown::deadline;
use crate::stats::SimStats;

#[derive(Deserialize)]
struct EmbeddingsRequest {
    #[serde(default = "default_model")]
    model: String,
    input: Input,
    #[serde(default)]
    encoding_format: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Serialize)]
struct EmbeddingsResponse {
    object: &'static str,
    data: Vec<Embedding>,
    model: String,
    usage: Usage,
}

#[derive(Serialize)]
struct Embedding {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

/// Handler of `POST /v1/embeddings`.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let arrived = Instant::now();
    SimStats::bump(&state.stats.embedding_requests);
    match handle(state, arrived, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: AppState,
    arrived: Instant,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: EmbeddingsRequest = parse_body(body)?;
    let inputs = match req.input {
        Input::One(text) => vec![text],
        Input::Many(texts) if texts.is_empty() => {
            return Err(ApiError::invalid_request("`input` must not be empty"));
        }
        Input::Many(texts) => texts,
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid_request(format!(
                "unsupported encoding_format {other:?} (use \"float\" or \"base64\")"
            )));
        }
    };
    let flags = ModelFlags::parse(&req.model);
    if let Some(status) = flags.failure_status() {
        return Err(ApiError::simulated(status));
    }
    if flags.stall {
        return Err(state.stall(arrived).await);
    }

    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let v = hash_embed(text);
            debug_assert_eq!(v.len(), EMBED_DIM);
            Embedding {
                object: "embedding",
                index,
                embedding: if base64 {
                    Vector::Base64(encode_base64(&v))
                } else {
                    Vector::Float(v)
                },
            }
        })
        .collect();
    state
        .wait_until(deadline(arrived, state.cfg.embed_latency()))
        .await?;
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data,
        model: req.model,
        usage: Usage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        },
    })
    .into_response())
}

/// Standard base64 (with padding) of the little-endian bytes of `v`.
fn encode_base64(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let b = [
            group[0],
            *group.get(1).unwrap_or(&0),
            *group.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= group.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_reference_vectors() {
        // 1.0f32 = 00 00 80 3f; 2 floats = 8 bytes -> one padding char.
        assert_eq!(encode_base64(&[1.0]), "AACAPw==");
        assert_eq!(encode_base64(&[1.0, -2.0]), "AACAPwAAAMA=");
        assert_eq!(encode_base64(&[1.0, 0.0, -2.0]), "AACAPwAAAAAAAADA");
        assert_eq!(encode_base64(&[]), "");
    }
}
