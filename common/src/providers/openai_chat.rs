//! OpenAI-compatible chat completions (`POST {base}/chat/completions`, `stream: true`): OpenAI,
//! vLLM, Ollama, LocalAI, Xinference, TGI and anything else speaking that API.

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;

use super::{
    ChatModel, GenConf, Message, ModelSpec, ProviderError, Timeouts, TokenStream, endpoint,
    retry::with_retry, status_error,
};
use crate::sse::SseParser;

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
                SseParser::default(),
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
                        None => {
                            // A last event whose blank line never came still counts.
                            finished = true;
                            let (mut text, mut error) = (String::new(), None);
                            let mut done = false;
                            let ended =
                                lines.finish(|e| on_data(e.data, &mut done, &mut text, &mut error));
                            if let Err(e) = ended {
                                error.get_or_insert(ProviderError::Decode(e.to_string()));
                            }
                            if !text.is_empty() {
                                pending.push_back(Ok(text));
                            }
                            if let Some(e) = error {
                                pending.push_back(Err(e));
                            }
                        }
                        Some(Err(e)) => {
                            finished = true;
                            let err = if e.is_timeout() {
                                ProviderError::Timeout("stream idle")
                            } else {
                                ProviderError::from(e)
                            };
                            pending.push_back(Err(err));
                        }
                        Some(Ok(chunk)) => {
                            let mut text = String::new();
                            let mut error = None;
                            let pushed = lines.push(&chunk, |e| {
                                on_data(e.data, &mut finished, &mut text, &mut error)
                            });
                            if let Err(e) = pushed {
                                error.get_or_insert(ProviderError::Decode(e.to_string()));
                            }
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

/// One event's `data` of a chat stream: `[DONE]` ends it (payloads after it are not part of the
/// answer), a chunk's content deltas are appended to `text`, anything else is a decode error.
fn on_data(data: &[u8], finished: &mut bool, text: &mut String, error: &mut Option<ProviderError>) {
    if *finished {
        return;
    }
    if data == b"[DONE]" {
        *finished = true;
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
        Err(e) => *error = Some(ProviderError::Decode(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::super::test_support::*;
    use super::*;

    const ROUTE: &str = "/v1/chat/completions";

    fn chat(base: &str, key: &str) -> std::sync::Arc<dyn ChatModel> {
        let spec = spec("chat", "openai", base, "gpt-4o-mini", key);
        providers().chat(&spec).expect("openai is a chat provider")
    }

    fn messages() -> Vec<Message> {
        vec![
            Message {
                role: "system",
                content: "Be brief.".into(),
            },
            Message {
                role: "user",
                content: "Hi?".into(),
            },
        ]
    }

    fn sse(body: &str) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), "text/event-stream")
    }

    /// Three content deltas (one split by a role-only chunk and an empty `choices`), then
    /// `[DONE]`, then a chunk that must never be read.
    const CANNED: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
        ": keep-alive comment\n\n",
        "data: {\"choices\":[]}\n\n",
        "data:{\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\", world\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"AFTER DONE\"}}]}\n\n",
    );

    async fn collect(stream: TokenStream) -> Vec<Result<String, ProviderError>> {
        stream.collect().await
    }

    #[tokio::test]
    async fn streams_content_deltas_until_done() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(ROUTE))
            .respond_with(sse(CANNED))
            .mount(&server)
            .await;
        let conf = GenConf {
            temperature: Some(0.1),
            max_tokens: Some(512),
            ..GenConf::default()
        };
        let stream = chat(&format!("{}/v1", server.uri()), "sk-chat")
            .stream(&messages(), &conf)
            .await
            .expect("stream starts");
        let items = collect(stream).await;
        let text: String = items
            .iter()
            .map(|r| r.as_ref().expect("no stream error").as_str())
            .collect();
        assert_eq!(text, "Hello, world");

        let reqs = requests(&server).await;
        assert_eq!(reqs.len(), 1);
        // GenConf is flattened into the body and unset fields are left out.
        assert_eq!(
            json_body(&reqs[0]),
            json!({
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi?"}
                ],
                "stream": true,
                "temperature": 0.1,
                "max_tokens": 512
            })
        );
        assert_eq!(auth(&reqs[0]).as_deref(), Some("Bearer sk-chat"));
    }

    #[tokio::test]
    async fn undecodable_chunk_ends_the_stream_with_a_decode_error() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(ROUTE))
            .respond_with(sse(concat!(
                "data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n\n",
                "data: {not json\n\n",
            )))
            .mount(&server)
            .await;
        let items = collect(
            chat(&format!("{}/v1", server.uri()), "")
                .stream(&messages(), &GenConf::default())
                .await
                .expect("stream starts"),
        )
        .await;
        assert_eq!(items.len(), 2, "{items:?}");
        assert_eq!(items[0].as_deref().ok(), Some("ok"));
        assert!(matches!(items[1], Err(ProviderError::Decode(_))));
        assert_eq!(auth(&requests(&server).await[0]), None);
    }

    async fn call(uri: String) -> Result<(), ProviderError> {
        let stream = chat(&format!("{uri}/v1"), "k")
            .stream(&messages(), &GenConf::default())
            .await?;
        let items = collect(stream).await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_deref().ok(), Some("hi"));
        Ok(())
    }

    fn ok() -> ResponseTemplate {
        sse("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n")
    }

    #[tokio::test]
    async fn retries_a_500_before_the_stream_starts() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(ROUTE))
            .respond_with(ResponseTemplate::new(500).set_body_string("boom"))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(ROUTE))
            .respond_with(ok())
            .mount(&server)
            .await;
        call(server.uri()).await.expect("second attempt streams");
        assert_eq!(requests(&server).await.len(), 2);
    }

    #[tokio::test]
    async fn retries_a_503() {
        transient_status_is_retried(ROUTE, ok(), call).await;
    }

    #[tokio::test]
    async fn a_400_is_a_status_error_without_retry() {
        client_error_is_not_retried(ROUTE, call).await;
    }
}
