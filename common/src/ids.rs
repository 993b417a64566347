//! Ids of the things a client names in a request path or body, as types that validate on parse.
//!
//! Where this sits in the job path: the ingress parses every id it takes from a request into one
//! of these before it touches the database or publishes a job, so a route's SQL and the job it
//! publishes only ever carry well-formed ids. The formats are exactly the ones ragq makes:
//!
//! | type | format | made by |
//! | --- | --- | --- |
//! | [`TenantId`], [`ChatId`], [`SessionId`], [`DatasetId`], [`DocumentId`], [`ChunkId`] | 32 lower-case hex digits (a v4 uuid's `simple()` form, RAGFlow's id style) | [`crate::db::new_id`] |
//! | [`FileId`] | `file-` + 32 hex | [`crate::batch::new_file_id`] |
//! | [`BatchId`] | `batch_` + 32 hex | [`crate::batch::new_batch_id`] |
//!
//! An id that does not parse cannot name any row, so a route answers it exactly as it answers a
//! well-formed id that is not the tenant's (RAGFlow's "You don't own …" messages): parsing
//! changes no client-visible answer, it only keeps malformed text out of the queries.
//!
//! Each type derefs to `&str` and binds to sqlx as `text`, so it goes wherever the bare `String`
//! went.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// A string that is not a well-formed id of the kind asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id")]
pub struct IdError {
    /// What was being parsed (`chat`, `dataset`, …).
    pub kind: &'static str,
    /// The text that did not parse.
    pub value: String,
}

/// True for 32 lower-case hex digits (what `Uuid::simple()` prints).
fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The prefix before the 32 hex digits (empty for RAGFlow-style ids).
            pub const PREFIX: &'static str = $prefix;

            /// A fresh id (a v4 uuid in this type's format).
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, uuid::Uuid::new_v4().simple()))
            }

            /// Parses `s`; `Err` unless it has exactly this type's format.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                match s.strip_prefix($prefix) {
                    Some(hex) if is_hex32(hex) => Ok($name(s.to_string())),
                    _ => Err(IdError {
                        kind: $kind,
                        value: s.to_string(),
                    }),
                }
            }

            /// An id read back from ragq's own tables (written by [`Self::generate`] or
            /// [`crate::db::new_id`]): trusted, not checked again.
            pub fn from_db(s: String) -> Self {
                $name(s)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <String as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<'q, sqlx::Postgres>>::encode(self.0.as_str(), buf)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                <String as sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }
    };
}

id_type!(
    /// A tenant (the owner of API keys, chats, datasets …).
    TenantId, "tenant", ""
);
id_type!(
    /// A chat assistant (`chats.id`).
    ChatId, "chat", ""
);
id_type!(
    /// A session of a chat (`sessions.id`).
    SessionId, "session", ""
);
id_type!(
    /// A dataset (RAGFlow's knowledge base, `datasets.id`).
    DatasetId, "dataset", ""
);
id_type!(
    /// A document of a dataset (`documents.id`).
    DocumentId, "document", ""
);
id_type!(
    /// A chunk of a document (`chunks.id`).
    ChunkId, "chunk", ""
);
id_type!(
    /// An OpenAI batch file (`batch_files.id`: `file-…`).
    FileId, "file", "file-"
);
id_type!(
    /// An OpenAI batch (`batches.id`: `batch_…`).
    BatchId, "batch", "batch_"
);

/// Parses each of `raw` as `T`, keeping the order; the ones that do not parse are returned
/// apart (a route reports them like ids it did not find).
pub fn parse_all<T: FromStr>(raw: &[String]) -> (Vec<T>, Vec<String>) {
    let mut ok = Vec::with_capacity(raw.len());
    let mut bad = Vec::new();
    for s in raw {
        match s.parse::<T>() {
            Ok(id) => ok.push(id),
            Err(_) => bad.push(s.clone()),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_the_ones_ragq_makes() {
        let made = crate::db::new_id();
        assert_eq!(ChatId::parse(&made).unwrap().as_str(), made);
        assert!(ChatId::parse("nope").is_err());
        assert!(ChatId::parse(&made.to_uppercase()).is_err());
        assert!(ChatId::parse(&format!("{made}0")).is_err());
        let file = crate::batch::new_file_id();
        assert!(FileId::parse(&file).is_ok());
        assert!(BatchId::parse(&file).is_err());
        let batch = crate::batch::new_batch_id();
        assert!(BatchId::parse(&batch).is_ok());
        assert!(FileId::parse(&made).is_err());
        assert!(DatasetId::parse(&DatasetId::generate()).is_ok());
        assert!(BatchId::generate().starts_with("batch_"));
        let e = DocumentId::parse("x").unwrap_err();
        assert_eq!(e.to_string(), "`x` is not a valid document id");
    }

    #[test]
    fn serde_validates() {
        let id = SessionId::generate();
        let s = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<SessionId>(&s).unwrap(), id);
        assert!(serde_json::from_str::<SessionId>("\"bad\"").is_err());
        let (ok, bad) = parse_all::<DatasetId>(&[id.to_string(), "bad".into()]);
        assert_eq!((ok.len(), bad), (1, vec!["bad".to_string()]));
    }
}
