//! Jobs other than chat completions: retrieval (`POST /api/v1/retrieval`) and document ingestion.
//! Chat and OpenAI completions run through [`crate::pipeline`].

pub mod ingest;
pub mod retrieval;
