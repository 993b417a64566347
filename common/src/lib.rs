//! # ragq-common
//!
//! Everything the ingress (`ragq-api`) and the workers (`ragq-worker`) share. They never depend
//! on each other; they agree through the types here.
//!
//! Layout:
//! - [`job`]: the job published to the broker; [`event`]: the events streamed back;
//!   [`client_error`]: the error codes and messages a client may see, and error ids.
//! - [`broker`]: the job queue (traits + RabbitMQ); [`bus`]: the event stream (traits + Redis).
//! - [`db`]: PostgreSQL pool and embedded migrations; [`auth`]: API key generation and hashing.
//! - [`config`]: `RAGQ_*` settings shared by the binaries; [`telemetry`]: logging;
//!   [`metrics`]: the Prometheus recorder and metric names; [`trace`]: W3C `traceparent`.
//! - [`text`]: tokenizer and the local hashing embedder; [`sse`]: the event-stream parser.
//! - [`batch`]: the OpenAI batch state machine shared by the ingress, workers and CLI.
//! - [`model`]: model kinds and providers; [`secret`]: model API keys encrypted at rest.
//! - [`providers`]: the model clients (chat, embedding, rerank) over HTTP; [`models`]: the
//!   `models` rows turned into usable specs (keys decrypted).
//! - [`indexing`]: a document → chunks → embeddings → the `chunks` table (ingest jobs, CLI).
//! - [`ids`]: id newtypes that validate on parse; [`status`]: the stored status words as enums.
//! - [`health`]: the readiness check of every `/readyz`; [`json`]: `real` columns as short
//!   decimals; [`ownership`]: a search's dataset/document isolation check; [`retrieval`]: a
//!   search request's bounds.

pub mod auth;
pub mod batch;
pub mod broker;
pub mod bus;
pub mod chat_defaults;
pub mod client_error;
pub mod config;
pub mod db;
pub mod embed_token;
pub mod event;
pub mod health;
pub mod ids;
pub mod indexing;
pub mod job;
pub mod json;
pub mod metrics;
pub mod model;
pub mod models;
pub mod nats;
pub mod openai_request;
pub mod ownership;
pub mod providers;
pub mod retrieval;
pub mod secret;
pub mod sse;
pub mod status;
pub mod telemetry;
pub mod tenant_limits;
pub mod text;
pub mod tls;
pub mod trace;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
