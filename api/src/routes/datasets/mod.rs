//! Datasets (`/api/v1/datasets`): create, list, update, delete — RAGFlow's knowledge bases.
//!
//! Storage ↔ API names follow RAGFlow's renaming (`chunk_num → chunk_count`,
//! `doc_num → document_count`, `parser_id → chunk_method`, `embd_id → embedding_model`). The
//! counts are not stored on the dataset: they are summed from its documents when read, so they
//! can never drift. `embedding_model` is the name of one of the tenant's embedding models; a
//! RAGFlow-style `name@Factory` is accepted and resolved to `name`.
//!
//! Validation errors answer code 101 in pydantic's wording
//! (`Field: <name> - Message: <…> - Value: <…>`), as RAGFlow's `CreateDatasetReq` does.
//!
//! Where this sits in the job path: beside it. A dataset is what retrieval, ask and ingest jobs
//! search or fill; these routes manage it. The ownership check ([`owns_dataset`]) and name
//! de-duplication ([`free_name`]) are shared with [`super::documents`] and [`super::chunks`].
//!
//! | file | what |
//! | --- | --- |
//! | `handlers.rs` | the four routes |
//! | `validate.rs` | pydantic-style validation, `parser_config` defaults and merging |
//! | `rows.rs` | the dataset row and its RAGFlow shape, ownership, embedding model resolution |
//! | `names.rs` | RAGFlow's `duplicate_name` |

mod handlers;
mod names;
mod rows;
mod validate;

pub use handlers::{create, delete, list, update};
pub use names::free_name;
pub use rows::{not_your_dataset, owned_dataset, owns_dataset};
