//! The operator's side of ragq, as a library so that the tests can call it directly: the
//! `ragq` binary (`main.rs`) is a thin clap front over these modules.
//!
//! - [`admin`]: tenants and API keys, model settings (keys encrypted at rest), datasets loaded
//!   from a folder, chats, key re-encryption after a rotation;
//! - [`batch`]: question answering in bulk through a chat (`ragq batch run|status|cancel|results`);
//! - [`doctor`]: checks every dependency (PostgreSQL, RabbitMQ, Redis, each model) with a real
//!   minimal call and names the cause of a failure.
//!
//! It depends on `ragq-common` only: it never runs worker or ingress code.

pub mod admin;
pub mod batch;
pub mod doctor;
