//! OpenAI chat-completions format, as RAGFlow v0.22.1's `/api/v1/chats_openai/{id}/chat/completions`
//! writes it (see `ragflow-api.md` §5), plus the OpenAI-style error body.
//!
//! # Streaming
//!
//! Each event is `data:{json}\n\n` (no space after `data:`, Python `json.dumps` separators, as
//! RAGFlow). One `chat.completion.chunk` per [`Item::Delta`]:
//!
//! ```text
//! data:{"id": "chatcmpl-<chat_id>", "choices": [{"delta": {"content": "<delta>", "role": "assistant",
//!  "function_call": null, "tool_calls": null, "reasoning_content": null}, "finish_reason": null,
//!  "index": 0, "logprobs": null}], "created": <unix s>, "model": "model",
//!  "object": "chat.completion.chunk", "system_fingerprint": "", "usage": null}
//! ```
//!
//! Everything but the delta text is constant for a stream (`id` is per chat, `created` is taken
//! once when the stream starts, `model` is the literal `"model"`), so [`OpenAiSse`] builds the
//! text before and after the content once and a chunk costs one escape of the delta plus one
//! buffer copy. The final chunk has `content: null`, `finish_reason: "stop"` and `usage`; with
//! `reference` on, its delta also carries `reference` (RAGFlow chunk list) and `final_content`
//! (the decorated answer of [`Done`]). The stream closes with `data:[DONE]\n\n`.
//!
//! Deltas are the worker's text pieces as they come: the decorated final answer (which may have
//! `[ID:n]` citations inserted) is **not** diffed into the stream — it only appears as
//! `final_content` — so the concatenated deltas are exactly what the model wrote.
//!
//! **Usage counts characters, not tokens**, as RAGFlow: `prompt_tokens` is the length of the last
//! user message, `completion_tokens` the number of characters streamed (non-stream: of the
//! decorated answer).
//!
//! **Failures.** A failed job ([`Item::Failed`]) sends one chunk whose content is
//! `"**ERROR**: <message>"`, then the final chunk and `[DONE]` (RAGFlow's behaviour on an
//! exception). The message is the failure's client text — a fixed message per error code and
//! `(error id err_…)` — never an upstream's answer or an internal error.
//!
//! **Regeneration** ([`Item::Reset`], sent when a worker died and another one answers the job
//! again): OpenAI deltas cannot be taken back. If no text was sent yet, the reset is invisible
//! and the regenerated answer streams normally. If text was already sent, the stream ends with
//! an error chunk ([`INTERRUPTED`]), the final chunk and `[DONE]`, rather than splicing a second,
//! different answer onto the first one; the client sees a clear failure and can ask again.
//!
//! # Errors
//!
//! [`OpenAiError`] is `{"error": {"message", "type", "param", "code"}}` with a real HTTP status,
//! which is what makes the `openai` SDK raise (RAGFlow's HTTP 200 envelope does not).
//!
//! Where this sits in the job path: last, for the OpenAI-compatible route (`routes::openai`)
//! and the batch output files. Files: [`sse`] (the stream), [`body`] (the non-stream answer),
//! [`error`] (the error body and its status).

pub mod body;
pub mod error;
pub mod sse;

pub use body::{Completion, chunks_json, completion_json};
pub use error::OpenAiError;
pub use sse::OpenAiSse;

/// The closing line of every OpenAI stream.
pub const DONE: &[u8] = b"data:[DONE]\n\n";

/// Content of the error chunk sent when a regeneration starts after text was already streamed.
pub const INTERRUPTED: &str = "**ERROR**: The answer was interrupted by a worker failure and is \
                               being regenerated; the text above is incomplete. Please ask again.";

/// `chatcmpl-<chat_id>`: RAGFlow's completion id, constant per chat.
pub fn completion_id(chat_id: &str) -> String {
    format!("chatcmpl-{chat_id}")
}

/// Python's `len(str)`: the number of code points.
pub fn char_len(s: &str) -> u64 {
    s.chars().count() as u64
}

#[cfg(test)]
mod tests;
