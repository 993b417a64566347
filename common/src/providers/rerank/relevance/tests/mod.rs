//! One test module per row of [`super::ROWS`] (copy one to test a new row).

mod cohere;
mod jina;
mod localai;
mod xinference;
