//! Jobs other than chat completions: retrieval (`POST /api/v1/retrieval`), document ingestion,
//! and the dataset-level model jobs (ask, related questions, mind map). Chat and OpenAI
//! completions run through [`crate::pipeline`].

pub mod ask;
pub mod datasets;
pub mod ingest;
pub mod mindmap;
pub mod related;
pub mod retrieval;
