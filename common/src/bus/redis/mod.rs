//! The Redis bus (`RAGQ_BUS=redis`), split by side:
//!
//! | module | side | what |
//! | --- | --- | --- |
//! | [`endpoint`] | both | the Redis URL and TLS roots → one `redis::Client` per process |
//! | [`keys`] | both | every Redis name |
//! | [`publisher`] | worker | events: replay stream append + publish |
//! | [`cancel`] | worker | the cancel listener and marks |
//! | [`subscriber`] | ingress | the one subscriber connection and its router |
//! | [`control`] | ingress | replay reads, job owners, readers, rate counters, sending cancel |
//! | [`replay`] | both | reading a job's replay stream |

pub mod cancel;
pub mod control;
pub mod endpoint;
pub mod keys;
pub mod publisher;
pub mod replay;
pub mod subscriber;
