//! HTTP routes, one module per resource: thin adapters from a request to the job path.
//!
//! Where this sits in the job path: after authentication ([`crate::auth`]). A route reads its
//! request through [`crate::request`], checks it against the database, and either answers from
//! the database (lists, updates, deletes) or starts a job through [`crate::dispatch`] and writes
//! the relayed events in its client's format ([`crate::wire`], [`crate::response`]).
//!
//! | module | what |
//! | --- | --- |
//! | [`completions`] | RAGFlow's native completion (and the RAGFlow ≥ 0.25 path) |
//! | [`jobs`] | stop / resume a running completion by its job id |
//! | [`openai`] | the OpenAI-compatible chat completion; [`batch`]: the OpenAI Batch API |
//! | [`chats`], [`sessions`] | chat assistants and their sessions |
//! | [`datasets`], [`documents`], [`chunks`] | knowledge bases, their files, parsing and chunks |
//! | [`retrieval`], [`ask`] | dataset-level search and model work without a chat |
//! | [`embed`] | embed tokens and the embedded chatbot / search routes |
//! | [`health`] | `/healthz`, `/readyz` |

pub mod ask;
pub mod batch;
pub mod chats;
pub mod chunks;
pub mod completions;
pub mod datasets;
pub mod documents;
pub mod embed;
pub mod health;
pub mod jobs;
pub mod openai;
pub mod retrieval;
pub mod sessions;

use axum::Router;
use axum::routing::{any, delete, get, post, put};

use batch::{batches, files};

use crate::envelope::{ApiError, code};
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(crate::observe::metrics_page))
        .route(
            "/api/v1/chats/{chat_id}/completions",
            post(completions::completions),
        )
        .route(
            "/api/v1/chats/{chat_id}/completions/{job_id}",
            get(jobs::resume),
        )
        .route(
            "/api/v1/chats/{chat_id}/completions/{job_id}/stop",
            post(jobs::stop),
        )
        .route(
            "/api/v1/chats",
            post(chats::create).get(chats::list).delete(chats::delete),
        )
        .route(
            "/api/v1/chats/{chat_id}",
            put(chats::update).patch(chats::update),
        )
        .route(
            "/api/v1/chats/{chat_id}/sessions",
            post(sessions::create)
                .get(sessions::list)
                .delete(sessions::delete),
        )
        .route(
            "/api/v1/chats/{chat_id}/sessions/{session_id}",
            put(sessions::update).patch(sessions::update),
        )
        .route(
            "/api/v1/chats_openai/{chat_id}/chat/completions",
            post(openai::chat_completions),
        )
        // POST and GET `…/files` are `batch::files::upload_router` (its own body limit).
        .route(
            "/api/v1/chats_openai/{chat_id}/files/{file_id}",
            get(files::get_file).delete(files::delete),
        )
        .route(
            "/api/v1/chats_openai/{chat_id}/files/{file_id}/content",
            get(files::content),
        )
        .route(
            "/api/v1/chats_openai/{chat_id}/batches",
            post(batches::create).get(batches::list_batches),
        )
        .route(
            "/api/v1/chats_openai/{chat_id}/batches/{batch_id}",
            get(batches::get),
        )
        .route(
            "/api/v1/chats_openai/{chat_id}/batches/{batch_id}/cancel",
            post(batches::cancel),
        )
        .route(
            "/api/v1/datasets",
            post(datasets::create)
                .get(datasets::list)
                .delete(datasets::delete),
        )
        .route("/api/v1/datasets/{dataset_id}", put(datasets::update))
        // POST (upload) is `documents::upload_router`, merged in lib.rs with its own body limit.
        .route(
            "/api/v1/datasets/{dataset_id}/documents",
            get(documents::list).delete(documents::delete),
        )
        .route(
            "/api/v1/datasets/{dataset_id}/chunks",
            post(chunks::parse).delete(chunks::stop_parsing),
        )
        .route(
            "/api/v1/datasets/{dataset_id}/documents/{document_id}/chunks",
            get(chunks::list).post(chunks::add).delete(chunks::remove),
        )
        .route(
            "/api/v1/datasets/{dataset_id}/documents/{document_id}/chunks/{chunk_id}",
            put(chunks::update).patch(chunks::update),
        )
        .route("/api/v1/retrieval", post(retrieval::retrieval))
        // RAGFlow ≥ 0.25 paths, beside the v0.22.1 ones (same handlers).
        .route(
            "/api/v1/chat/completions",
            post(completions::completions_by_body),
        )
        .route(
            "/api/v1/openai/{chat_id}/chat/completions",
            post(openai::chat_completions),
        )
        // Dataset-level model work without a chat (RAGFlow's sessions/ask, related_questions).
        .route("/api/v1/sessions/ask", post(ask::ask))
        .route(
            "/api/v1/sessions/related_questions",
            post(ask::related_questions),
        )
        .route("/api/v1/sessions/mindmap", post(ask::mindmap))
        // Embed tokens (API key) and the embedded chatbot and search routes (embed token only).
        .route(
            "/api/v1/embed_tokens",
            post(embed::create_token).get(embed::list_tokens),
        )
        .route("/api/v1/embed_tokens/{id}", delete(embed::revoke_token))
        .route(
            "/api/v1/chatbots/{chat_id}/completions",
            post(embed::chatbot_completions),
        )
        .route("/api/v1/chatbots/{chat_id}/info", get(embed::chatbot_info))
        .route("/api/v1/searchbots/ask", post(embed::searchbot_ask))
        .route(
            "/api/v1/searchbots/related_questions",
            post(embed::searchbot_related),
        )
        .route("/api/v1/searchbots/mindmap", post(embed::searchbot_mindmap))
        .route(
            "/api/v1/searchbots/retrieval_test",
            post(embed::searchbot_retrieval),
        )
        // Features of newer RAGFlow versions that ragq does not have.
        .route("/api/v1/agents", any(embed::not_served))
        .route("/api/v1/agents/{*rest}", any(embed::not_served))
        .route("/api/v1/agentbots/{*rest}", any(embed::not_served))
        .route("/api/v1/memories", any(embed::not_served))
        .route("/api/v1/memories/{*rest}", any(embed::not_served))
        .route("/api/v1/memory", any(embed::not_served))
        .route("/api/v1/memory/{*rest}", any(embed::not_served))
        .fallback(|| async { ApiError::new(code::NOT_FOUND, "Not Found") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(code::METHOD_NOT_ALLOWED, "Method Not Allowed")
        })
        .with_state(state)
}

/// Turns the body-limit layer's bare `413 length limit exceeded` (text/plain) into RAGFlow's
/// envelope: HTTP 200, code 101, like any other bad argument.
pub async fn envelope_payload_too_large<B>(
    resp: axum::http::Response<B>,
) -> axum::response::Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    if resp.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return axum::response::IntoResponse::into_response(ApiError::argument(
            "The request body is larger than the server accepts (RAGQ_MAX_BODY_BYTES).",
        ));
    }
    resp.map(axum::body::Body::new)
}
