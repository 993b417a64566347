//! RAGFlow's defaults for a chat assistant (v0.22.1), used when a chat is created without them.

use serde_json::{Value, json};

/// RAGFlow's default system prompt; `{knowledge}` is replaced by the retrieved chunks.
pub const SYSTEM_PROMPT: &str = "You are an intelligent assistant. Please summarize the content of the knowledge base to answer the question. Please list the data in the knowledge base and answer in detail. When all knowledge base content is irrelevant to the question, your answer must include the sentence \"The answer you are looking for is not found in the knowledge base!\" Answers need to consider chat history.\n      Here is the knowledge base:\n      {knowledge}\n      The above is the knowledge base.";

/// The opener shown at the start of a session.
pub const PROLOGUE: &str = "Hi! I'm your assistant. What can I do for you?";

/// Answer given when nothing relevant is retrieved.
pub const EMPTY_RESPONSE: &str = "Sorry! No relevant content was found in the knowledge base!";

/// The default `prompt_config` (RAGFlow's storage form).
pub fn prompt_config() -> Value {
    json!({
        "system": SYSTEM_PROMPT,
        "prologue": PROLOGUE,
        "parameters": [{"key": "knowledge", "optional": false}],
        "empty_response": EMPTY_RESPONSE,
        "quote": true,
        "tts": false,
        "refine_multiturn": true,
    })
}

/// The default `llm_setting`.
pub fn llm_setting() -> Value {
    json!({"temperature": 0.1, "top_p": 0.3, "frequency_penalty": 0.7, "presence_penalty": 0.4, "max_tokens": 512})
}
