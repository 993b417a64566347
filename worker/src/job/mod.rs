//! The job path, from a delivery to its last event:
//!
//! ```text
//! consumer (deliveries → tasks) → crate::dispatch (deadline, fault hook, by kind)
//!   ├─ chat / openai_chat ──→ crate::chat (context → refine → retrieve → rerank → prompt
//!   │                                       → generate → citations → save → done)
//!   ├─ retrieval, ingest, ask, related_questions, mindmap, batch_line → crate::jobs::*
//!   └─ a failure → job::error (one `error` event, detail logged under an error id)
//! → job::outcome (ack or requeue) → consumer settles the delivery; job::give_up ends the
//!   stream of a job that leaves without its own terminal event.
//! ```
//!
//! What every kind shares lives here: [`deps::Deps`] (database, model clients, event bus,
//! [`limits`]), numbered [`events`], typed [`error`]s and how they reach a client, the [`outcome`]
//! the consumer acts on, the [`cancel`] helper, [`give_up`] and the test-only [`faults`]. The
//! kinds themselves ([`crate::chat`], [`crate::jobs`]) depend on these, never on
//! [`dispatch`], which is the one module that knows them all.

pub mod cancel;
pub mod deps;
pub mod error;
pub mod events;
pub mod faults;
pub mod give_up;
pub mod limits;
pub mod outcome;
