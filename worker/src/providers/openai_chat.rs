//! OpenAI-compatible chat completions (`POST {base}/chat/completions`, `stream: true`): OpenAI,
//! vLLM, Ollama, LocalAI, Xinference, TGI and anything else speaking that API.

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;

use super::{
    ChatModel, GenConf, Message, ModelSpec, ProviderError, Timeouts, TokenStream, endpoint,
    retry::with_retry, sse::SseLines, status_error,
};

pub struct OpenAiChat {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: String,
    retries: usize,
}

impl OpenAiChat {
    pub fn new(http: reqwest::Client, spec: &ModelSpec, t: &Timeouts) -> Self {
        OpenAiChat {
            http,
            url: endpoint(&spec.base_url, "chat/completions"),
            model: spec.model.clone(),
            api_key: spec.api_key.clone(),
            retries: t.retries,
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
}
#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}
#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(serde::Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
    stream: bool,
    #[serde(flatten)]
    conf: &'a GenConf,
}

#[async_trait]
impl ChatModel for OpenAiChat {
    async fn stream(
        &self,
        messages: &[Message],
        conf: &GenConf,
    ) -> Result<TokenStream, ProviderError> {
        let body = Request {
            model: &self.model,
            messages,
            stream: true,
            conf,
        };
        let resp = with_retry(self.retries, || async {
            let mut req = self.http.post(&self.url).json(&body);
            if !self.api_key.is_empty() {
                req = req.bearer_auth(&self.api_key);
            }
            let resp = req.send().await?;
            if !resp.status().is_success() {
                return Err(status_error(resp).await);
            }
            Ok(resp)
        })
        .await?;

        // Decode SSE `data:` payloads into content deltas; stop at `[DONE]`.
        let bytes = resp.bytes_stream();
        let stream = futures::stream::unfold(
            (
                bytes,
                SseLines::default(),
                std::collections::VecDeque::new(),
                false,
            ),
            |(mut bytes, mut lines, mut pending, mut finished)| async move {
                loop {
                    if let Some(item) = pending.pop_front() {
                        return Some((item, (bytes, lines, pending, finished)));
                    }
                    if finished {
                        return None;
                    }
                    match bytes.next().await {
                        None => return None,
                        Some(Err(e)) => {
                            finished = true;
                            let err = if e.is_timeout() {
                                ProviderError::Timeout("stream idle")
                            } else {
                                ProviderError::Http(e.to_string())
                            };
                            pending.push_back(Err(err));
                        }
                        Some(Ok(chunk)) => {
                            let mut text = String::new();
                            let mut error = None;
                            lines.push(&chunk, |data| {
                                if data == b"[DONE]" {
                                    finished = true;
                                    return;
                                }
                                match serde_json::from_slice::<Chunk>(data) {
                                    Ok(c) => {
                                        for choice in c.choices {
                                            if let Some(s) = choice.delta.and_then(|d| d.content) {
                                                text.push_str(&s);
                                            }
                                        }
                                    }
                                    Err(e) => error = Some(ProviderError::Decode(e.to_string())),
                                }
                            });
                            // Everything decoded from one read goes out as one delta.
                            if !text.is_empty() {
                                pending.push_back(Ok(text));
                            }
                            if let Some(e) = error {
                                finished = true;
                                pending.push_back(Err(e));
                            }
                        }
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }
}
