//! The non-stream `chat.completion` answer.

use ragq_common::event::{Done, RefChunk, Reference};
use serde_json::{Value, json};

use super::{char_len, completion_id};

/// RAGFlow's `chunks_format(reference)`: the chunk list (`[]` without a reference).
pub fn chunks_json(reference: Option<&Reference>) -> Value {
    let chunks: &[RefChunk] = reference.map_or(&[], |r| &r.chunks);
    serde_json::to_value(chunks).unwrap_or_else(|_| json!([]))
}

/// What a non-stream answer needs besides the job's events.
pub struct Completion<'a> {
    pub chat_id: &'a str,
    /// The request's `model`, echoed back.
    pub model: &'a str,
    pub created: i64,
    /// Length of the last user message (characters).
    pub prompt_chars: u64,
    pub with_reference: bool,
}

/// The non-stream `chat.completion` body (plain JSON, no envelope).
pub fn completion_json(c: &Completion<'_>, done: &Done, reference: Option<&Reference>) -> Value {
    let content_chars = char_len(&done.answer);
    let mut message = json!({"role": "assistant", "content": done.answer});
    if c.with_reference {
        message["reference"] = chunks_json(reference);
    }
    json!({
        "id": completion_id(c.chat_id),
        "object": "chat.completion",
        "created": c.created,
        "model": c.model,
        "usage": {
            "prompt_tokens": c.prompt_chars,
            "completion_tokens": content_chars,
            "total_tokens": c.prompt_chars + content_chars,
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "accepted_prediction_tokens": content_chars,
                "rejected_prediction_tokens": 0,
            },
        },
        "choices": [{"message": message, "logprobs": null, "finish_reason": "stop", "index": 0}],
    })
}
