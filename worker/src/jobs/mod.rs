//! Jobs other than chat completions: retrieval (`POST /api/v1/retrieval`) and document ingestion, and batch lines
//! (answered by [`crate::pipeline`], results written to `batch_lines`).
//! Chat and OpenAI completions run through [`crate::pipeline`].

pub mod batch_line;
pub mod ingest;
pub mod retrieval;
