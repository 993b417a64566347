//! Bounds of a search request, shared by the ingress (which validates the request) and the
//! retrieval worker (which runs it).
//!
//! Where this sits in the job path: `POST /api/v1/retrieval` is checked against these before its
//! `retrieval` job is published.
//!
//! `top_k` has three numbers today, on purpose or not:
//! - the ingress accepts `1..=`[`MAX_TOP_K_PARAM`] (any value that fits PostgreSQL's `integer`,
//!   like a chat's stored `top_k`);
//! - the worker clamps what it honours to 4096 (`worker/src/jobs/retrieval.rs`, `MAX_TOP_K`),
//!   which is also what `docs/ARCHITECTURE.md` says;
//! - the vector fallback's SQL takes at most `min(top_k, 256)` chunks per dataset.

/// Largest `top_k` the ingress accepts in a request (`i32::MAX`; larger is code 101).
pub const MAX_TOP_K_PARAM: i64 = i32::MAX as i64;

/// RAGFlow's default `top_k`.
pub const DEFAULT_TOP_K: i64 = 1024;

/// Largest `page_size` the ingress accepts.
pub const MAX_PAGE_SIZE: i64 = 1024;
