//! The built-in local embedder: no network, no weights. A feature-hashing bag of words (see
//! `ragq_common::text::hash_embed`): lexical similarity only, no notion of synonyms. Good for
//! demos, tests and air-gapped installs; use a real embedding model for quality retrieval.

use async_trait::async_trait;

use super::{Embedder, ProviderError};

pub struct LocalEmbedder;

#[async_trait]
impl Embedder for LocalEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(texts
            .iter()
            .map(|t| ragq_common::text::hash_embed(t))
            .collect())
    }
}
