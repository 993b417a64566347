//! ragq-common: see module docs.
pub mod text;
