//! Step 4: stream the model's answer, publishing each piece as a `delta` event.
//!
//! Bounded in time: the first token must arrive within `first_token`, and no gap between reads
//! may exceed `idle`. After the first piece (sent at once), pieces are coalesced into at most one
//! event per `coalesce` window: fewer, larger events cost the bus and the ingress less.
//! A cancelled job drops the upstream stream at once — closing the HTTP
//! connection is what makes the model stop generating — and keeps the partial answer.

use std::sync::Arc;

use futures::StreamExt;
use ragq_common::event::EventBody;
use tokio_util::sync::CancellationToken;

use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::job::limits::Limits;
use ragq_common::providers::{ChatModel, GenConf, Message, ProviderError};

pub struct Generated {
    pub answer: String,
    pub pieces: u64,
    /// True when the job was cancelled mid-answer.
    pub stopped: bool,
    /// When the first piece was published (time to first chunk, as the worker sees it).
    pub first_piece_at: Option<tokio::time::Instant>,
    /// When the first piece was read from the model (the upstream's time to first token).
    pub first_token_at: Option<tokio::time::Instant>,
}

pub async fn generate(
    model: Arc<dyn ChatModel>,
    messages: &[Message],
    conf: &GenConf,
    events: &mut JobEvents,
    limits: &Limits,
    cancel: &CancellationToken,
) -> Result<Generated, StepError> {
    let first_deadline = tokio::time::Instant::now() + limits.first_token;
    let mut stream = tokio::select! {
        r = tokio::time::timeout_at(first_deadline, model.stream(messages, conf)) => match r {
            Ok(s) => s?,
            Err(_) => return Err(ProviderError::Timeout("no first token").into()),
        },
        _ = cancel.cancelled() => return Ok(Generated { answer: String::new(), pieces: 0, stopped: true, first_piece_at: None, first_token_at: None }),
    };
    let mut answer = String::new();
    let mut pieces = 0u64;
    // Text read but not yet published, and when the last delta went out.
    let mut pending = String::new();
    let mut last_flush = tokio::time::Instant::now();
    let mut first_piece_at = None;
    let mut first_token_at = None;
    loop {
        let idle_deadline = if pieces == 0 {
            first_deadline
        } else {
            tokio::time::Instant::now() + limits.idle
        };
        // With text pending, wake up when the coalescing window closes to publish it.
        let flush_at = last_flush + limits.coalesce;
        let wake = if pending.is_empty() {
            idle_deadline
        } else {
            idle_deadline.min(flush_at)
        };
        let next = tokio::select! {
            r = tokio::time::timeout_at(wake, stream.next()) => r,
            _ = cancel.cancelled() => return Ok(Generated { answer, pieces, stopped: true, first_piece_at, first_token_at }),
        };
        match next {
            Err(_) if !pending.is_empty() && tokio::time::Instant::now() < idle_deadline => {
                events
                    .send(EventBody::Delta {
                        text: std::mem::take(&mut pending),
                    })
                    .await?;
                last_flush = tokio::time::Instant::now();
            }
            Err(_) if pieces == 0 => return Err(ProviderError::Timeout("no first token").into()),
            Err(_) => return Err(ProviderError::Timeout("stream idle").into()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(Some(Ok(text))) => {
                if text.is_empty() {
                    continue;
                }
                first_token_at.get_or_insert_with(tokio::time::Instant::now);
                answer.push_str(&text);
                pieces += 1;
                pending.push_str(&text);
                // The first piece goes out at once (time to first chunk); later pieces are
                // coalesced into at most one event per window.
                if pieces == 1 || tokio::time::Instant::now() >= flush_at {
                    events
                        .send(EventBody::Delta {
                            text: std::mem::take(&mut pending),
                        })
                        .await?;
                    last_flush = tokio::time::Instant::now();
                    first_piece_at.get_or_insert(last_flush);
                }
            }
        }
    }
    if !pending.is_empty() {
        events.send(EventBody::Delta { text: pending }).await?;
    }
    if pieces == 0 {
        return Err(ProviderError::Decode("the model returned an empty answer".into()).into());
    }
    Ok(Generated {
        answer,
        pieces,
        stopped: false,
        first_piece_at,
        first_token_at,
    })
}
