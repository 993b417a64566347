//! Parsing and chunks.
//!
//! - `POST /api/v1/datasets/{id}/chunks {"document_ids": [...]}` starts parsing: each document
//!   is marked `RUNNING` (progress 0, "Queued", old chunks removed, as RAGFlow does) with a new
//!   ingest job's id in `task_id`, then one `ingest` job per document is published on the ingest
//!   lane (its own queue and small prefetch, so parsing never delays a chat) with a one-hour
//!   deadline. The answer is `{"code": 0}` once the broker has confirmed every job; progress is
//!   read from the documents list. A document already parsing (run `RUNNING`, or
//!   0 < progress < 1) is refused with 102, and nothing is started.
//! - `DELETE` on the same path cancels: run `CANCEL`, progress 0, chunks removed. The worker sees
//!   it before its next embedding batch (its conditional writes no longer match) and stops.
//! - `GET/POST/DELETE /api/v1/datasets/{ds}/documents/{doc}/chunks`: list a document's chunks
//!   (document order), add one chunk, delete chunks. Adding needs an embedding, which is model
//!   work: the ingress publishes an `ingest` job carrying the chunk and waits for the worker's
//!   result (interactive lane: the client is waiting, and it is one embedding call).
//!
//! | file | what |
//! | --- | --- |
//! | `parsing.rs` | start and stop parsing (ingest jobs on the ingest lane) |
//! | `crud.rs` | list, add, update and delete a document's chunks |

mod crud;
mod parsing;

pub use crud::{add, list, remove, update};
pub use parsing::{PARSE_DEADLINE, parse, stop_parsing};
