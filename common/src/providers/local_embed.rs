//! The built-in local embedder: no network, no weights. A feature-hashing bag of words (see
//! `crate::text::hash_embed`): lexical similarity only, no notion of synonyms. Good for
//! demos, tests and air-gapped installs; use a real embedding model for quality retrieval.

use async_trait::async_trait;

use super::{Embedder, ProviderError};

pub struct LocalEmbedder;

#[async_trait]
impl Embedder for LocalEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(texts.iter().map(|t| crate::text::hash_embed(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test]
    async fn one_unit_vector_per_text_matching_the_hashing_embedder() {
        let spec = spec("embedding", "local", "", "", "");
        let embedder = providers()
            .embedder(&spec)
            .expect("local is an embedding provider");
        let texts = strings(&["RabbitMQ quorum queue", "  ", "delivery limit of a queue"]);
        let vectors = embedder
            .embed(&texts)
            .await
            .expect("local embedding never fails");
        assert_eq!(vectors.len(), 3);
        for (text, v) in texts.iter().zip(&vectors) {
            assert_eq!(v, &crate::text::hash_embed(text));
            assert_eq!(v.len(), crate::text::EMBED_DIM);
        }
        let norm: f32 = vectors[0].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "unit length, got {norm}");
        // Blank text has no terms: the zero vector, not NaN.
        assert!(vectors[1].iter().all(|x| *x == 0.0));
    }

    #[tokio::test]
    async fn empty_input_gives_no_vectors() {
        assert!(LocalEmbedder.embed(&[]).await.expect("ok").is_empty());
    }
}
