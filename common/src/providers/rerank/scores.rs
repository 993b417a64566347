//! Turning a rerank answer into the [`Reranker`](crate::providers::Reranker) contract: exactly one score
//! in `0..=1` per input document, in input order.
//!
//! Rerank APIs answer with a list of `(index, score)` pairs, usually sorted by score, sometimes
//! cut by `top_n`, and with scores on different scales:
//!
//! - **probabilities** (Cohere, Jina): already in `0..=1`;
//! - **logits** (NVIDIA NIM `logit`): unbounded, often negative; a sigmoid maps them onto
//!   `(0, 1)` without changing their order (the same mapping FlagEmbedding applies with
//!   `normalize=True`);
//! - **either** (Xinference, LocalAI): these servers pass through whatever the model produced.
//!   Calibrated models give `0..=1`, raw cross-encoders (bge-reranker without normalisation)
//!   give logits. [`Scale::Auto`] keeps a batch that lies wholly in `0..=1` and treats any other
//!   batch as logits.
//!
//! Whatever the upstream sent, [`in_input_order`] never panics: an index outside the input
//! (or negative) is ignored, a document the answer does not mention scores `0`, and so does an
//! entry without a score.

/// The `{results: [{index, relevance_score}]}` answer shared by Jina, Xinference, LocalAI and
/// Cohere (extra fields such as `document` or `usage` are ignored).
#[derive(serde::Deserialize)]
pub(crate) struct RelevanceResults {
    results: Vec<RelevanceItem>,
}

#[derive(serde::Deserialize)]
struct RelevanceItem {
    index: i64,
    #[serde(default)]
    relevance_score: Option<f64>,
}

impl RelevanceResults {
    /// One score per input document, in input order (see [`in_input_order`]).
    pub(crate) fn scores(self, len: usize, scale: Scale) -> Vec<f32> {
        in_input_order(
            len,
            self.results
                .into_iter()
                .map(|i| (i.index, i.relevance_score)),
            scale,
        )
    }
}

/// How a provider's raw scores become `0..=1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Scores are probabilities; anything outside `0..=1` is clamped.
    Unit,
    /// Scores are logits; each goes through [`sigmoid`].
    Logit,
    /// Probabilities when every score of the batch lies in `0..=1`, logits otherwise.
    Auto,
}

/// The logistic function: maps an unbounded logit onto `(0, 1)` and keeps the order
/// (`sigmoid(0) = 0.5`). Stable for any finite input: a huge negative logit gives `0`, a huge
/// positive one `1`.
pub fn sigmoid(x: f64) -> f32 {
    (1.0 / (1.0 + (-x).exp())) as f32
}

/// Places `(index, score)` pairs into a vector of `len` scores in input order, scaled per
/// `scale`. Out-of-range or negative indexes are ignored; missing scores stay `0`. When an
/// index appears twice the last entry wins.
pub fn in_input_order(
    len: usize,
    items: impl IntoIterator<Item = (i64, Option<f64>)>,
    scale: Scale,
) -> Vec<f32> {
    let placed: Vec<(usize, f64)> = items
        .into_iter()
        .filter_map(|(index, score)| {
            let index = usize::try_from(index).ok().filter(|i| *i < len)?;
            Some((index, score?))
        })
        .filter(|(_, s)| s.is_finite())
        .collect();
    let logits = match scale {
        Scale::Unit => false,
        Scale::Logit => true,
        Scale::Auto => placed.iter().any(|(_, s)| !(0.0..=1.0).contains(s)),
    };
    let mut scores = vec![0f32; len];
    for (index, raw) in placed {
        scores[index] = if logits {
            sigmoid(raw)
        } else {
            raw.clamp(0.0, 1.0) as f32
        };
    }
    scores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_is_bounded_and_centred() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797).abs() < 1e-5);
        assert!((sigmoid(-2.0) - 0.119_203).abs() < 1e-5);
        assert_eq!(sigmoid(1e6), 1.0);
        assert_eq!(sigmoid(-1e6), 0.0);
    }

    #[test]
    fn places_by_index_and_ignores_bad_indexes() {
        let got = in_input_order(
            3,
            [
                (2, Some(0.9)),
                (0, Some(0.1)),
                (7, Some(1.0)),
                (-1, Some(1.0)),
            ],
            Scale::Unit,
        );
        assert_eq!(got, vec![0.1, 0.0, 0.9]);
    }

    #[test]
    fn missing_scores_are_zero_even_for_logits() {
        let got = in_input_order(3, [(0, None), (1, Some(0.0))], Scale::Logit);
        assert_eq!(got, vec![0.0, 0.5, 0.0]);
    }

    #[test]
    fn unit_scale_clamps() {
        let got = in_input_order(2, [(0, Some(1.5)), (1, Some(-0.5))], Scale::Unit);
        assert_eq!(got, vec![1.0, 0.0]);
    }

    #[test]
    fn auto_keeps_probabilities_and_maps_logits() {
        let probs = in_input_order(2, [(0, Some(0.25)), (1, Some(1.0))], Scale::Auto);
        assert_eq!(probs, vec![0.25, 1.0]);
        // One score out of 0..=1 marks the batch as logits: all of it goes through the sigmoid.
        let logits = in_input_order(2, [(0, Some(0.25)), (1, Some(-3.0))], Scale::Auto);
        assert_eq!(logits, vec![sigmoid(0.25), sigmoid(-3.0)]);
        assert!(logits[0] > logits[1]);
    }
}
