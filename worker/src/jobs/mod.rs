//! Jobs other than chat completions: retrieval (`POST /api/v1/retrieval`), document ingestion,
//! the dataset-level model jobs (ask, related questions, mind map), and batch lines (answered
//! by [`crate::pipeline`], results written to `batch_lines`). Chat and OpenAI completions run
//! through [`crate::pipeline`].

pub mod ask;
pub mod batch_line;
pub mod datasets;
pub mod ingest;
pub mod mindmap;
pub mod related;
pub mod retrieval;
