//! The job kinds other than chat completions, each run by [`crate::dispatch`]: retrieval
//! (`POST /api/v1/retrieval`), document ingestion, the dataset-level model jobs (ask, related
//! questions, mind map, sharing [`datasets`]), and batch lines (answered by [`crate::chat`],
//! results written to `batch_lines`, throttled per tenant by `job::limits::BatchLimits`). Chat and OpenAI
//! completions are [`crate::chat`].

pub mod ask;
pub mod batch_line;
pub mod datasets;
pub mod ingest;
pub mod mindmap;
pub mod related;
pub mod retrieval;
