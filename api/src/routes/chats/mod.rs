//! Chat assistants (RAGFlow v0.22.1 `api/apps/sdk/chat.py`):
//! `POST /api/v1/chats`, `GET /api/v1/chats`, `PUT /api/v1/chats/{chat_id}` and
//! `DELETE /api/v1/chats`.
//!
//! # Request names and storage names
//!
//! RAGFlow renames a chat's fields on the way in and renames them back on the way out. The
//! `chats` table keeps RAGFlow's storage names, which are also what the worker reads:
//!
//! | request / response | `chats` |
//! | --- | --- |
//! | `avatar` | `avatar` (RAGFlow `icon`) |
//! | `dataset_ids` (list: full `datasets` objects) | `dataset_ids` (RAGFlow `kb_ids`) |
//! | `llm.model_name` | `llm_model` (RAGFlow `llm_id`) |
//! | other `llm.*` (`temperature`, `top_p`, …) | `llm_setting` |
//! | `prompt.prompt`, `opener`, `variables`, `show_quote` | `prompt_config.system`, `prologue`, `parameters`, `quote` |
//! | `prompt.empty_response`, `tts`, `refine_multiturn`, unknown keys | `prompt_config` under the same name |
//! | `prompt.similarity_threshold`, `top_n`, `top_k`, `rerank_model` | columns `similarity_threshold`, `top_n`, `top_k`, `rerank_model` |
//! | `prompt.keywords_similarity_weight` | `vector_similarity_weight` = 1 − value (see below) |
//! | `show_quotation` (or `do_refer`) | `do_refer` (`"1"`/`"0"`) |
//!
//! As in RAGFlow, `prompt` also accepts the storage names (`prompt.system`, `prompt.prologue`,
//! `prompt.rerank_id`, `prompt.vector_similarity_weight`, …); when a request sends both names,
//! the request name wins.
//!
//! # `keywords_similarity_weight`
//!
//! The worker scores a chunk as `(1 − vsw)·term + vsw·vector`, so the keyword weight is
//! `1 − vsw`. RAGFlow writes `keywords_similarity_weight` unchanged into
//! `vector_similarity_weight` and reads it back as `1 − vsw`, so 0.7 comes back as
//! 0.30000000000000004 and the meaning flips. ragq does not copy that bug: it stores
//! `vector_similarity_weight = 1 − keywords_similarity_weight` and answers
//! `keywords_similarity_weight = 1 − vector_similarity_weight`, rounded to 6 decimals (the
//! column is a `real`). What a client sends is what it reads back, and the SDK default 0.7
//! gives the server default `vector_similarity_weight` 0.3. A `prompt.vector_similarity_weight`
//! (storage name) is stored as given.
//!
//! # Validation
//!
//! Types and ranges are checked first (code 101: not JSON, `name` not a string, `dataset_ids`
//! not a list, `llm`/`prompt` not objects, numbers out of range, …). Then RAGFlow's checks run in
//! RAGFlow's order, with its code 102 messages: every dataset is the tenant's (`You don't own
//! the dataset {id}`) and has chunks (`The dataset {id} doesn't own parsed file`); all datasets
//! share one embedding model (code **109**, as RAGFlow); `llm.model_name` is one of the
//! tenant's chat models; `rerank_model` is one of its rerank models; `name` is given and not
//! taken by another live chat; `tenant_id` is not sent; every non-optional variable appears as
//! `{key}` in the system prompt.
//!
//! # Defaults (create)
//!
//! `chat_defaults` supplies the `prompt_config` and `llm_setting` defaults. A key that is
//! **absent** gets its default; a key sent as `null` stays `null` (the SDK sends
//! `empty_response: null`, which turns the empty-retrieval answer off). An empty or null system
//! prompt is replaced by the default, as in RAGFlow. With no `llm.model_name`, the chat uses the
//! tenant's chat model marked `is_default`, or else its first chat model by name.
//!
//! # Deviations from RAGFlow v0.22.1
//!
//! - `keywords_similarity_weight` round-trips (above).
//! - Absent `llm` keys get the default `llm_setting` values on create (RAGFlow stores only the
//!   keys sent). `null` keeps `null`.
//! - PUT without `dataset_ids` (or with `null`) keeps the chat's datasets; RAGFlow's PUT unlinks
//!   them. `dataset_ids: []` unlinks them on purpose. PUT with `llm.model_name: null` keeps the
//!   model.
//! - DELETE with `ids` null, absent or empty deletes **nothing** and answers code 102; RAGFlow
//!   soft-deletes every chat of the tenant, which one missing argument should not do.
//! - `tenant_id` in a PUT body is rejected like in POST (RAGFlow would move the chat).
//! - A rerank model must be one of the tenant's `rerank` models; RAGFlow also accepts two
//!   built-in names that ragq cannot run.
//! - The 109 message has no stray quote (RAGFlow: `Datasets use different embedding models."`).
//! - `meta_data_filter` is always `{}`; ragq has no metadata filtering.
//!
//! # Files
//!
//! Where this sits in the job path: beside it. A chat is what a completion job answers with
//! (the worker reads the `chats` row); these routes create and manage it.
//!
//! | file | what |
//! | --- | --- |
//! | `handlers.rs` | the four routes |
//! | `input.rs` | parsing a POST/PUT body into [`input::ChatInput`] (types, ranges, renames) |
//! | `checks.rs` | RAGFlow's checks against the database (datasets, models, name, variables) |
//! | `output.rs` | the `chats` row and its RAGFlow response shape |

mod checks;
mod handlers;
mod input;
mod output;

pub use handlers::{create, delete, list, update};
