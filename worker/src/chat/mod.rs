//! The chat pipeline — the `chat` and `openai_chat` job kinds (and batch lines, which answer
//! through it) — one module per step, in the order [`answer`] runs them:
//!
//! ```text
//! context (PostgreSQL: chat, models, history) → refine (follow-up → standalone question)
//!   → retrieve (hybrid search, crate::search) → rerank (rerank model, if any)
//!   → prompt → generate (LLM stream → delta events) → citations → save → done event
//! ```
//!
//! When this worker answered the chat before, context and retrieve are one statement
//! ([`early_search`]): the search runs on the chat's last settings, and is kept only when the
//! context read beside it confirms them.
//!
//! It runs inside the job path ([`crate::dispatch`]): its failures are [`StepError`]s that
//! the dispatcher turns into the job's one `error` event. Every step before generation observes
//! the cancel too: a job stopped there is saved as a stopped, empty turn and ends with `done`.

pub mod citations;
pub mod context;
pub mod early_search;
pub mod generate;
pub mod prompt;
pub mod refine;
pub mod rerank;
pub mod retrieve;
pub mod save;

use std::time::{Duration, Instant};

use ragq_common::event::{EventBody, Reference};
use ragq_common::job::Job;
use ragq_common::providers::GenConf;
use ragq_common::text::approx_tokens;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::job::cancel::until_cancelled;
use crate::job::deps::Deps;
use crate::job::error::StepError;
use crate::job::events::JobEvents;
use crate::metrics::{METRICS, Step};

/// Answers a chat job: replays a turn an earlier delivery saved, or runs every step (see the
/// module docs) and ends with `done`.
pub async fn answer(
    deps: &Deps,
    job: &Job,
    attempt: u32,
    events: &mut JobEvents,
    cancel: &CancellationToken,
) -> Result<(), StepError> {
    let redelivered = attempt > 0;
    let started = Instant::now();
    let queued = queued_ms(job);
    if cancel.is_cancelled() {
        return Err(StepError::Cancelled);
    }
    if redelivered {
        events.continue_after(deps.bus.last_seq(job.id).await?);
        // A turn saved by the earlier attempt is replayed, never regenerated or saved again.
        if let Some(saved) = save::find(&deps.db, job).await? {
            return save::replay(events, saved).await;
        }
        events.send(EventBody::Reset).await?;
    }
    // Every step before generation observes the cancel too: a job stopped there is saved
    // as a stopped, empty turn and ends with `done` at once.
    let Some(loaded) = until_cancelled(cancel, early_search::load(deps, job)).await else {
        return save::stopped_early(deps, job, events).await;
    };
    let (ctx, early) = loaded?;
    let loaded = started.elapsed();

    let quote = job.options.quote.unwrap_or_else(|| ctx.chat.quote());
    let model = deps.providers.chat(&ctx.llm)?;
    let has_knowledge = ctx.embedding.is_some() && !ctx.chat.dataset_ids.is_empty();
    // A follow-up question is searched for as the standalone question it stands for.
    let metrics = &*METRICS;
    metrics.step(Step::Context, loaded);
    let mut refine_time = Duration::ZERO;
    let search_question = if has_knowledge && ctx.chat.refine_multiturn() && !ctx.history.is_empty()
    {
        let refine_started = Instant::now();
        let refined = refine::refine(
            model.clone(),
            &ctx.history,
            &job.question,
            deps.limits.first_token,
        );
        let refined = until_cancelled(cancel, refined).await;
        refine_time = refine_started.elapsed();
        metrics.step(Step::Refine, refine_time);
        match refined {
            Some(q) => q,
            None => return save::stopped_early(deps, job, events).await,
        }
    } else {
        job.question.clone()
    };
    let refined = search_question != job.question;
    let reference = match &ctx.embedding {
        Some(spec) if !ctx.chat.dataset_ids.is_empty() => {
            let params = retrieve::params(&ctx);
            let q = &search_question;
            // Found with the context when the chat's plan was known and still holds.
            let found = match early.and_then(|e| e.usable(&ctx, refined)) {
                Some(found) => found,
                None => match retrieve::retrieve(deps, &ctx, spec, &params, q, cancel).await? {
                    Some(found) => found,
                    None => return save::stopped_early(deps, job, events).await,
                },
            };
            let Some(found) = rerank::rerank(deps, ctx.rerank.as_ref(), found, q, cancel).await?
            else {
                return save::stopped_early(deps, job, events).await;
            };
            retrieve::reference(found, &params)
        }
        _ => Reference::default(),
    };
    let retrieved = started.elapsed();

    // Nothing found and the chat has a canned answer for that: answer without the model.
    if reference.chunks.is_empty()
        && !ctx.chat.dataset_ids.is_empty()
        && let Some(empty) = ctx.chat.empty_response()
    {
        let empty = empty.to_string();
        events
            .send(EventBody::Delta {
                text: empty.clone(),
            })
            .await?;
        let answer = save::Answer {
            raw: &empty,
            decorated: &empty,
            reference: None,
            prompt: String::new(),
            prompt_tokens: 0,
            stopped: false,
        };
        return save::finish(deps, job, events, answer).await;
    }

    if quote && !reference.chunks.is_empty() {
        events
            .send(EventBody::Reference {
                reference: reference.clone(),
            })
            .await?;
    }
    let knowledge_docs = reference.doc_aggs.len();
    let max_tokens = ctx.llm.max_tokens.max(256) as usize;
    let knowledge = prompt::knowledge(&reference.chunks, max_tokens * 97 / 100);
    let parameters = ctx.chat.parameters();
    let (messages, system) = prompt::build(&prompt::PromptInput {
        system_template: ctx.chat.system(),
        knowledge: &knowledge,
        variables: &job.options.variables,
        parameters: &parameters,
        quote,
        history: &ctx.history,
        question: &job.question,
        max_tokens,
    });
    let conf = gen_conf(&ctx.chat.llm_setting, max_tokens);
    let prompted = started.elapsed();
    metrics.step(Step::Prompt, prompted - retrieved);
    let upstream_before = crate::metrics::upstream_time() + refine_time;
    let generate_started = tokio::time::Instant::now();
    // OpenTelemetry GenAI conventions: a `chat {model}` span with the usage recorded.
    let span_name = format!("chat {}", ctx.llm.model);
    let chat_span = tracing::info_span!(
        "chat",
        otel.name = %span_name,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = ctx.llm.provider.as_str(),
        gen_ai.request.model = %ctx.llm.model,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
    );
    let generated = generate::generate(model, &messages, &conf, events, &deps.limits, cancel)
        .instrument(chat_span.clone())
        .await?;
    let total = started.elapsed();
    metrics.step(Step::LlmTotal, total - prompted);
    if let Some(first_token) = generated.first_token_at {
        let to_first_token = first_token - generate_started;
        metrics.step(Step::LlmFirstToken, to_first_token);
        // The worker's own share of the time to first chunk (TensorZero's "overhead").
        if let Some(first_piece) = generated.first_piece_at {
            let to_first_piece = first_piece.into_std() - started;
            metrics
                .overhead
                .record(to_first_piece.saturating_sub(upstream_before + to_first_token));
        }
    }
    // Where a job's time went (RUST_LOG=ragq_worker::chat=debug): queued = from the
    // ingress creating the job (its UUIDv7 timestamp) to this worker starting it.
    tracing::debug!(
        job = %job.id,
        queued_ms = queued,
        context_ms = ms(loaded),
        retrieve_ms = ms(retrieved - loaded),
        prompt_ms = ms(prompted - retrieved),
        first_chunk_ms = generated.first_piece_at.map(|t| ms(t.into_std() - started)),
        total_ms = ms(total),
        "job timings"
    );

    let (answer, cited) = if quote && !generated.stopped {
        citations::decorate(&generated.answer, &reference.chunks)
    } else {
        (generated.answer.clone(), Vec::new())
    };
    let reference = (quote && !reference.chunks.is_empty()).then(|| Reference {
        doc_aggs: citations::cited_doc_aggs(&reference.doc_aggs, &reference.chunks, &cited),
        ..reference
    });
    // The final reference keeps only the documents the answer cites: resend it if that changed.
    if let Some(r) = &reference
        && r.doc_aggs.len() != knowledge_docs
    {
        events
            .send(EventBody::Reference {
                reference: r.clone(),
            })
            .await?;
    }
    let prompt_tokens: usize = messages.iter().map(|m| approx_tokens(&m.content)).sum();
    chat_span.record("gen_ai.usage.input_tokens", prompt_tokens as u64);
    chat_span.record(
        "gen_ai.usage.output_tokens",
        approx_tokens(&generated.answer) as u64,
    );
    chat_span.in_scope(|| tracing::debug!(pieces = generated.pieces, "chat answered"));
    let prompt_text = format!(
        "{system}\n\n### Query:\n{}\n\n - Total: {:.1}ms\n  - Check LLM: {:.1}ms\n  - Retrieval: {:.1}ms\n  - Generate answer: {:.1}ms",
        job.question,
        total.as_secs_f64() * 1e3,
        loaded.as_secs_f64() * 1e3,
        (retrieved - loaded).as_secs_f64() * 1e3,
        (total - retrieved).as_secs_f64() * 1e3,
    );
    let answer = save::Answer {
        raw: &generated.answer,
        decorated: &answer,
        reference: reference.as_ref(),
        prompt: prompt_text,
        prompt_tokens: prompt_tokens as u64,
        stopped: generated.stopped,
    };
    save::finish(deps, job, events, answer).await
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds since the job was created (the timestamp in its UUIDv7), if it has one.
fn queued_ms(job: &Job) -> Option<i64> {
    let (secs, nanos) = job.id.get_timestamp()?.to_unix();
    let created_ms = secs as i64 * 1000 + i64::from(nanos / 1_000_000);
    Some(chrono::Utc::now().timestamp_millis() - created_ms)
}

/// Generation settings from the chat's `llm_setting`, `max_tokens` clipped to the model budget.
pub fn gen_conf(setting: &serde_json::Value, budget: usize) -> GenConf {
    let f = |k: &str| setting.get(k).and_then(serde_json::Value::as_f64);
    GenConf {
        temperature: f("temperature"),
        top_p: f("top_p"),
        presence_penalty: f("presence_penalty"),
        frequency_penalty: f("frequency_penalty"),
        max_tokens: setting
            .get("max_tokens")
            .and_then(serde_json::Value::as_u64)
            .map(|m| m.min(budget as u64) as u32),
    }
}
