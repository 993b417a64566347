//! [`OpenAiSse`]: a job's items as OpenAI `chat.completion.chunk` events (see the
//! [module docs](super) for the format, failures and regeneration).

use bytes::Bytes;
use ragq_common::event::Reference;
use serde_json::{Value, json};

use super::body::chunks_json;
use super::{DONE, INTERRUPTED, char_len, completion_id};
use crate::envelope::{push_escaped, to_py_json};
use crate::relay::Item;
use crate::wire::KEEP_ALIVE;

/// Builds the SSE bytes of one OpenAI-style stream.
pub struct OpenAiSse {
    /// `data:{"id": "chatcmpl-…", "choices": [{"delta": {"content": "`
    head: String,
    /// `", "role": "assistant", … "usage": null}\n\n`
    tail: String,
    chat_id: String,
    created: i64,
    prompt_chars: u64,
    completion_chars: u64,
    with_reference: bool,
    /// The latest `reference` event (only kept when `with_reference`).
    reference: Option<Reference>,
    /// The text streamed so far, kept only when `with_reference` (it becomes `final_content`
    /// when the job fails before `done`).
    text: String,
    /// Whether any content chunk was sent (a reset after that cannot be hidden).
    sent_text: bool,
    finished: bool,
}

impl OpenAiSse {
    /// `created` is the stream's Unix time in seconds; `prompt_chars` the length of the last user
    /// message; `with_reference` adds `reference` and `final_content` to the final chunk.
    pub fn new(chat_id: &str, created: i64, prompt_chars: u64, with_reference: bool) -> Self {
        let mut head = String::from("data:{\"id\": \"");
        push_escaped(&mut head, &completion_id(chat_id));
        head.push_str("\", \"choices\": [{\"delta\": {\"content\": \"");
        let tail = format!(
            "\", \"role\": \"assistant\", \"function_call\": null, \"tool_calls\": null, \
             \"reasoning_content\": null}}, \"finish_reason\": null, \"index\": 0, \
             \"logprobs\": null}}], \"created\": {created}, \"model\": \"model\", \
             \"object\": \"chat.completion.chunk\", \"system_fingerprint\": \"\", \"usage\": null}}\n\n"
        );
        OpenAiSse {
            head,
            tail,
            chat_id: chat_id.into(),
            created,
            prompt_chars,
            completion_chars: 0,
            with_reference,
            reference: None,
            text: String::new(),
            sent_text: false,
            finished: false,
        }
    }

    /// True once a terminal chunk and `[DONE]` were produced: the caller stops reading.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The bytes to send for `item` (`None`: nothing to send). Terminal output ends with [`DONE`].
    pub fn event(&mut self, item: Item) -> Option<Bytes> {
        if self.finished {
            return None;
        }
        match item {
            Item::Delta(text) => {
                if text.is_empty() {
                    return None;
                }
                self.completion_chars += char_len(&text);
                self.sent_text = true;
                let mut out = String::with_capacity(
                    self.head.len() + text.len() + text.len() / 8 + self.tail.len(),
                );
                self.push_content_chunk(&mut out, &text);
                if self.with_reference {
                    self.text.push_str(&text);
                }
                Some(Bytes::from(out))
            }
            Item::Reference(r) => {
                if self.with_reference {
                    self.reference = Some(r);
                }
                None
            }
            Item::Reset if !self.sent_text => {
                self.reference = None;
                None
            }
            Item::Reset => Some(self.fail(INTERRUPTED)),
            Item::Idle => Some(Bytes::from_static(KEEP_ALIVE)),
            Item::Result(_) => None,
            Item::Done(done) => {
                self.finished = true;
                let mut out = self.final_chunk(&done.answer);
                out.extend_from_slice(DONE);
                Some(Bytes::from(out))
            }
            Item::Failed(failure) => Some(self.fail(&format!("**ERROR**: {}", failure.message))),
            Item::Interrupted { message } => Some(self.fail(&format!("**ERROR**: {message}"))),
        }
    }

    /// One content chunk (`head` + escaped `content` + `tail`) appended to `out`.
    fn push_content_chunk(&self, out: &mut String, content: &str) {
        out.push_str(&self.head);
        push_escaped(out, content);
        out.push_str(&self.tail);
    }

    /// Error chunk, final chunk, `[DONE]`.
    fn fail(&mut self, content: &str) -> Bytes {
        self.finished = true;
        let mut out = String::with_capacity(self.head.len() + self.tail.len() + content.len());
        self.push_content_chunk(&mut out, content);
        let mut out = out.into_bytes();
        let partial = std::mem::take(&mut self.text);
        out.extend_from_slice(&self.final_chunk(&partial));
        out.extend_from_slice(DONE);
        Bytes::from(out)
    }

    /// `data:{final chunk}\n\n`: no content, `finish_reason: "stop"`, usage, and with reference
    /// on, `reference` + `final_content`.
    fn final_chunk(&self, final_content: &str) -> Vec<u8> {
        let mut delta = json!({
            "content": null, "role": "assistant", "function_call": null, "tool_calls": null,
            "reasoning_content": null,
        });
        if self.with_reference {
            delta["reference"] = chunks_json(self.reference.as_ref());
            delta["final_content"] = Value::from(final_content);
        }
        let body = json!({
            "id": completion_id(&self.chat_id),
            "choices": [{"delta": delta, "finish_reason": "stop", "index": 0, "logprobs": null}],
            "created": self.created,
            "model": "model",
            "object": "chat.completion.chunk",
            "system_fingerprint": "",
            "usage": {
                "prompt_tokens": self.prompt_chars,
                "completion_tokens": self.completion_chars,
                "total_tokens": self.prompt_chars + self.completion_chars,
            },
        });
        let json = to_py_json(&body);
        let mut out = Vec::with_capacity(json.len() + 7);
        out.extend_from_slice(b"data:");
        out.extend_from_slice(&json);
        out.extend_from_slice(b"\n\n");
        out
    }
}

impl crate::wire::SseFormat for OpenAiSse {
    fn event(&mut self, item: Item) -> Option<Bytes> {
        OpenAiSse::event(self, item)
    }
    fn is_finished(&self) -> bool {
        OpenAiSse::is_finished(self)
    }
}
