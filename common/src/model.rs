//! What a configured model is: its [`ModelKind`] and the [`Provider`] that serves it.
//!
//! Both are stored as lowercase text in `models.kind` and `models.provider`, and travel as the
//! same strings in JSON; the enums here are the only list of valid values. Parsing an unknown
//! name fails with an error that lists every valid one, so an operator's typo is caught when the
//! model is created rather than when the first job needs it.

use std::fmt;
use std::str::FromStr;

/// What a model does for the pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// Streams answers (a chat's `llm_model`).
    Chat,
    /// Turns text into vectors (a dataset's `embedding_model`).
    Embedding,
    /// Scores documents against a query (a chat's `rerank_model`).
    Rerank,
}

/// Who serves a model: picks the HTTP client (or the built-in embedder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    OpenAi,
    Vllm,
    Ollama,
    LocalAi,
    Xinference,
    Tgi,
    OpenAiCompatible,
    /// The built-in feature-hashing embedder (no network).
    Local,
    Jina,
    Nvidia,
    Cohere,
}

/// A name that is not one of the valid values; the message lists them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{given}`; valid values: {valid}")]
pub struct UnknownName {
    /// "model kind" or "provider".
    pub what: &'static str,
    pub given: String,
    /// The valid names, comma-separated.
    pub valid: String,
}

impl ModelKind {
    pub const ALL: [ModelKind; 3] = [ModelKind::Chat, ModelKind::Embedding, ModelKind::Rerank];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Chat => "chat",
            ModelKind::Embedding => "embedding",
            ModelKind::Rerank => "rerank",
        }
    }
}

impl Provider {
    pub const ALL: [Provider; 11] = [
        Provider::OpenAi,
        Provider::Vllm,
        Provider::Ollama,
        Provider::LocalAi,
        Provider::Xinference,
        Provider::Tgi,
        Provider::OpenAiCompatible,
        Provider::Local,
        Provider::Jina,
        Provider::Nvidia,
        Provider::Cohere,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Vllm => "vllm",
            Provider::Ollama => "ollama",
            Provider::LocalAi => "localai",
            Provider::Xinference => "xinference",
            Provider::Tgi => "tgi",
            Provider::OpenAiCompatible => "openai-compatible",
            Provider::Local => "local",
            Provider::Jina => "jina",
            Provider::Nvidia => "nvidia",
            Provider::Cohere => "cohere",
        }
    }

    /// Servers that speak OpenAI's `/chat/completions` and `/embeddings`.
    fn is_openai_like(self) -> bool {
        matches!(
            self,
            Provider::OpenAi
                | Provider::Vllm
                | Provider::Ollama
                | Provider::LocalAi
                | Provider::Xinference
                | Provider::Tgi
                | Provider::OpenAiCompatible
        )
    }

    /// Whether ragq has a client for this provider and kind (the worker's `Providers` builds
    /// exactly these; a unit test there keeps the two in step).
    pub fn serves(self, kind: ModelKind) -> bool {
        match kind {
            ModelKind::Chat => self.is_openai_like(),
            ModelKind::Embedding => self.is_openai_like() || self == Provider::Local,
            ModelKind::Rerank => matches!(
                self,
                Provider::Jina
                    | Provider::Xinference
                    | Provider::LocalAi
                    | Provider::Nvidia
                    | Provider::Cohere
            ),
        }
    }

    /// The providers that serve `kind`, comma-separated (for error messages).
    pub fn serving(kind: ModelKind) -> String {
        join(
            Provider::ALL
                .iter()
                .filter(|p| p.serves(kind))
                .map(|p| p.as_str()),
        )
    }
}

fn join<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

/// Implements `FromStr`, `Display`, `TryFrom<String>` and serde (as the stored name) for an
/// enum with `ALL` and `as_str`.
macro_rules! named {
    ($ty:ty, $what:literal) => {
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, UnknownName> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        given: s.to_string(),
                        valid: join(<$ty>::ALL.iter().map(|v| v.as_str())),
                    })
            }
        }
        impl TryFrom<String> for $ty {
            type Error = UnknownName;
            fn try_from(s: String) -> Result<Self, UnknownName> {
                s.parse()
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

named!(ModelKind, "model kind");
named!(Provider, "provider");

/// The associated data that binds a model's encrypted API key to its row: a ciphertext made for
/// one (tenant, kind, name) does not decrypt for another, so it cannot be copied between rows.
/// `kind` is the stored text of `models.kind`.
pub fn api_key_context(tenant_id: &str, kind: &str, name: &str) -> Vec<u8> {
    // NUL separators: PostgreSQL text cannot contain NUL, so the parts cannot run together.
    format!("ragq:models.api_key\0{tenant_id}\0{kind}\0{name}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_stored() {
        for p in Provider::ALL {
            assert_eq!(p.to_string().parse::<Provider>(), Ok(p));
            assert_eq!(
                serde_json::to_string(&p).expect("serializes"),
                format!("\"{p}\"")
            );
        }
        for k in ModelKind::ALL {
            assert_eq!(k.as_str().parse::<ModelKind>(), Ok(k));
        }
        let p: Provider = serde_json::from_str("\"openai-compatible\"").expect("parses");
        assert_eq!(p, Provider::OpenAiCompatible);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = "opnai".parse::<Provider>().expect_err("unknown");
        let msg = e.to_string();
        assert!(msg.contains("`opnai`"), "{msg}");
        for p in Provider::ALL {
            assert!(msg.contains(p.as_str()), "{msg}");
        }
        let e = "llm".parse::<ModelKind>().expect_err("unknown").to_string();
        assert!(e.contains("chat, embedding, rerank"), "{e}");
        assert!(serde_json::from_str::<Provider>("\"x\"").is_err());
    }

    #[test]
    fn which_provider_serves_which_kind() {
        assert!(Provider::OpenAi.serves(ModelKind::Chat));
        assert!(!Provider::Jina.serves(ModelKind::Chat));
        assert!(!Provider::Local.serves(ModelKind::Chat));
        assert!(Provider::Local.serves(ModelKind::Embedding));
        assert!(Provider::Xinference.serves(ModelKind::Rerank));
        assert!(!Provider::OpenAi.serves(ModelKind::Rerank));
        assert_eq!(
            Provider::serving(ModelKind::Rerank),
            "localai, xinference, jina, nvidia, cohere"
        );
    }
}
