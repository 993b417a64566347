//! The status words stored in ragq's tables, as enums.
//!
//! Where this sits in the job path: the ingress writes and compares these when it starts or stops
//! work (a document parse is `RUNNING` while its ingest job is queued or working; a saved answer
//! is `done` or `stopped`), and the workers write them when the work ends. The strings are the
//! stored ones, unchanged (RAGFlow's upper-case run words for documents, OpenAI's lower-case words
//! for batches), so a row written before this type existed reads the same.
//!
//! Each enum has `as_str()` (the stored word) and `FromStr` (the reverse; anything else is a
//! [`StatusError`]).

use std::fmt;
use std::str::FromStr;

/// A word that is not one of a status enum's stored values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {kind} status")]
pub struct StatusError {
    pub kind: &'static str,
    pub value: String,
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal { $($(#[$vdoc:meta])* $variant:ident = $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored word.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl FromStr for $name {
            type Err = StatusError;
            fn from_str(s: &str) -> Result<Self, StatusError> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(StatusError { kind: $kind, value: s.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.as_str() == other
            }
        }
    };
}

status_enum!(
    /// `documents.run`: where a document's parse is (RAGFlow's `TaskStatus` words).
    RunStatus, "document run" {
        /// Uploaded, never parsed.
        Unstart = "UNSTART",
        /// An ingest job is queued or working on it.
        Running = "RUNNING",
        /// The parse was stopped (`DELETE …/chunks`).
        Cancel = "CANCEL",
        /// Parsed.
        Done = "DONE",
        /// The parse failed or outlived its deadline.
        Fail = "FAIL",
    }
);

status_enum!(
    /// `turns.status`: how a saved answer ended (the worker writes it; sessions list only `done`
    /// and `stopped` ones).
    TurnStatus, "turn" {
        Done = "done",
        /// The job was stopped (`POST …/completions/{job_id}/stop`); the partial answer is saved.
        Stopped = "stopped",
        Error = "error",
    }
);

status_enum!(
    /// `batches.status` (OpenAI's batch states).
    BatchStatus, "batch" {
        Validating = "validating",
        Failed = "failed",
        InProgress = "in_progress",
        Finalizing = "finalizing",
        Completed = "completed",
        Expired = "expired",
        Cancelling = "cancelling",
        Cancelled = "cancelled",
    }
);

status_enum!(
    /// `batch_lines.status`.
    LineStatus, "batch line" {
        Pending = "pending",
        Running = "running",
        Completed = "completed",
        Failed = "failed",
        Skipped = "skipped",
    }
);

status_enum!(
    /// RAGFlow's validity flag of a chat (`chats.status`): `'1'` live, `'0'` deleted.
    Validity, "validity" {
        Live = "1",
        Deleted = "0",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(*s));
        }
        for s in BatchStatus::ALL {
            assert_eq!(s.as_str().parse::<BatchStatus>(), Ok(*s));
        }
        assert_eq!(RunStatus::Running.as_str(), "RUNNING");
        assert_eq!(TurnStatus::Stopped.as_str(), "stopped");
        assert!("running".parse::<RunStatus>().is_err());
        assert!(RunStatus::Running == "RUNNING");
        assert_eq!(Validity::Live.as_str(), "1");
    }
}
