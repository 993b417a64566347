//! The answering pipeline, one module per step:
//!
//! ```text
//! context (PostgreSQL) → retrieve (PostgreSQL + embeddings) → rerank (inside retrieve)
//!   → prompt → generate (LLM stream → delta events) → citations → persist → done event
//! ```
//!
//! Every failure ends the job's stream with one `error` event; only a failure of the event bus
//! itself (nobody could be told) makes the job go back to the queue. The event carries a
//! client-visible code, a fixed message and an error id, never the failure's detail, which is
//! logged under that id ([`error::StepError::report`]).

pub mod citations;
pub mod common_terms;
pub mod context;
pub mod error;
pub mod events;
pub mod faults;
pub mod generate;
pub mod give_up;
pub mod persist;
pub mod prompt;
pub mod refine;
pub mod retrieve;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ragq_common::bus::EventPublisher;
use ragq_common::event::{Done, EventBody, Reference, Usage};
use ragq_common::job::{Job, JobKind};
use ragq_common::text::approx_tokens;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::metrics::Step;
use error::StepError;
use events::JobEvents;
use ragq_common::providers::{GenConf, Providers};
use tracing::Instrument;

/// What the consumer should do with the delivery once the pipeline returns.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client got a terminal event: ack.
    Finished,
    /// The event bus failed: requeue so another attempt can tell the client.
    Requeue,
}

/// Everything a job needs, shared by all of a worker's jobs.
pub struct Pipeline {
    pub db: PgPool,
    pub providers: Providers,
    /// Decrypt the models' API keys (`RAGQ_SECRET_KEY`, `RAGQ_SECRET_KEY_PREVIOUS`).
    pub secrets: ragq_common::secret::SecretKeys,
    pub bus: Arc<dyn EventPublisher>,
    pub limits: generate::Limits,
    pub worker_id: String,
    /// Search words too common to query alone (cached from PostgreSQL's statistics).
    pub common_terms: common_terms::CommonTerms,
    /// The queue's `x-delivery-limit`: a delivery whose count reached it is the job's last.
    pub delivery_limit: u32,
    /// Per-tenant concurrency and 429 backoff of batch lines (see `jobs::batch_line`).
    pub batch: crate::jobs::batch_line::BatchLimits,
    /// Test-only fault injection; always `None` in production (see [`faults`]).
    pub faults: Option<faults::FaultHook>,
}

impl Pipeline {
    /// Runs a job to its terminal event. `attempt` counts earlier deliveries of the same job
    /// (0 = first delivery); a later attempt replays or regenerates.
    pub async fn run(&self, job: &Job, attempt: u32, cancel: CancellationToken) -> Outcome {
        if job.kind == JobKind::BatchLine {
            // No events: the result goes to `batch_lines` (see `jobs::batch_line`).
            return crate::metrics::with_upstream_clock(crate::jobs::batch_line::run(
                self, job, cancel,
            ))
            .await;
        }
        crate::metrics::with_upstream_clock(self.run_job(job, attempt, cancel)).await
    }

    async fn run_job(&self, job: &Job, attempt: u32, cancel: CancellationToken) -> Outcome {
        let mut events = JobEvents::new(self.bus.clone(), job.id, attempt);
        let remaining = job.remaining_ms();
        let result = if remaining <= 0 {
            Err(StepError::Deadline)
        } else if let Err(e) = self.injected(faults::FaultPoint::Start, job, attempt).await {
            Err(e)
        } else {
            let work = async {
                match job.kind {
                    JobKind::Chat | JobKind::OpenaiChat => {
                        self.answer(job, attempt, &mut events, &cancel).await
                    }
                    JobKind::Retrieval => crate::jobs::retrieval::run(self, job, &mut events).await,
                    JobKind::Ingest => crate::jobs::ingest::run(self, job, &cancel).await,
                    JobKind::BatchLine => Ok(()),
                    JobKind::Ask => crate::jobs::ask::run(self, job, &mut events, &cancel).await,
                    JobKind::RelatedQuestions => {
                        crate::jobs::related::run(self, job, &mut events, &cancel).await
                    }
                    JobKind::Mindmap => {
                        crate::jobs::mindmap::run(self, job, &mut events, &cancel).await
                    }
                }
            };
            match tokio::time::timeout(Duration::from_millis(remaining as u64), work).await {
                Ok(r) => r,
                Err(_) => Err(StepError::Deadline),
            }
        };
        let result = match result {
            // Once the turn is saved the answer stands, deadline or not: send it.
            Err(StepError::Deadline) if job.kind == JobKind::Chat && job.session_id.is_some() => {
                self.saved_answer_past_deadline(job, &mut events).await
            }
            r => r,
        };
        let outcome = match result {
            Ok(()) => Outcome::Finished,
            Err(StepError::Bus(e)) => {
                tracing::warn!(job = %job.id, error = %e, "event bus failed; requeueing");
                crate::metrics::error(crate::metrics::ERROR_BUS);
                Outcome::Requeue
            }
            Err(e) => {
                // The detail is logged under a fresh error id; the client sees a fixed message
                // with that id (`error::StepError::report`).
                let reported = e.report(job);
                match events.send(reported.event()).await {
                    Ok(()) => Outcome::Finished,
                    Err(_) => Outcome::Requeue,
                }
            }
        };
        // Requeued jobs are counted by the consumer (it knows whether it is the last attempt).
        if outcome == Outcome::Finished {
            let finished = events.outcome().unwrap_or(crate::metrics::OUTCOME_DONE);
            crate::metrics::job_finished(Some(job.kind), finished);
            tracing::debug!(job = %job.id, outcome = finished, "job finished");
        }
        outcome
    }

    /// The deadline passed: if the turn was saved meanwhile (between save and `done`), the
    /// client gets it with `done`; otherwise the deadline stands.
    async fn saved_answer_past_deadline(
        &self,
        job: &Job,
        events: &mut JobEvents,
    ) -> Result<(), StepError> {
        let found =
            tokio::time::timeout(Duration::from_secs(2), persist::find(&self.db, job)).await;
        let Ok(Ok(Some(saved))) = found else {
            return Err(StepError::Deadline);
        };
        tracing::info!(job = %job.id, "deadline passed after the turn was saved: sending it");
        events
            .send(EventBody::Done(Box::new(saved_done(saved))))
            .await?;
        Ok(())
    }

    /// Asks the test-only fault hook, if any (see [`faults`]); never fails in production.
    async fn injected(
        &self,
        point: faults::FaultPoint,
        job: &Job,
        attempt: u32,
    ) -> Result<(), StepError> {
        let Some(hook) = &self.faults else {
            return Ok(());
        };
        match hook(point, job, attempt) {
            faults::Fault::None => Ok(()),
            faults::Fault::Panic => panic!("injected fault: job {} panics", job.id),
            faults::Fault::BusFailure => Err(StepError::Bus(
                ragq_common::bus::BusError::Connection("injected fault: publish failed".into()),
            )),
            faults::Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }

    pub(crate) async fn answer(
        &self,
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
            events.continue_after(self.bus.last_seq(job.id).await?);
            // A turn saved by the earlier attempt is replayed, never regenerated or saved again.
            if let Some(saved) = persist::find(&self.db, job).await? {
                return replay(events, saved).await;
            }
            events.send(EventBody::Reset).await?;
        }
        // Every step before generation observes the cancel too: a job stopped there is saved
        // as a stopped, empty turn and ends with `done` at once.
        let Some(ctx) = until_cancelled(cancel, context::load(&self.db, &self.secrets, job)).await
        else {
            return self.stopped_early(job, events).await;
        };
        let ctx = ctx?;
        let loaded = started.elapsed();

        let quote = job.options.quote.unwrap_or_else(|| ctx.chat.quote());
        let model = self.providers.chat(&ctx.llm)?;
        let has_knowledge = ctx.embedding.is_some() && !ctx.chat.dataset_ids.is_empty();
        // A follow-up question is searched for as the standalone question it stands for.
        let metrics = &*crate::metrics::METRICS;
        metrics.step(Step::Context, loaded);
        let mut refine_time = Duration::ZERO;
        let search_question =
            if has_knowledge && ctx.chat.refine_multiturn() && !ctx.history.is_empty() {
                let refine_started = Instant::now();
                let refined = refine::refine(
                    model.clone(),
                    &ctx.history,
                    &job.question,
                    self.limits.first_token,
                );
                let refined = until_cancelled(cancel, refined).await;
                refine_time = refine_started.elapsed();
                metrics.step(Step::Refine, refine_time);
                match refined {
                    Some(q) => q,
                    None => return self.stopped_early(job, events).await,
                }
            } else {
                job.question.clone()
            };
        let reference = match &ctx.embedding {
            Some(spec) if !ctx.chat.dataset_ids.is_empty() => {
                let embedder = self.providers.embedder(spec)?;
                let reranker = match &ctx.rerank {
                    Some(r) => Some(self.providers.reranker(r)?),
                    None => None,
                };
                let params = retrieve::Params {
                    dataset_ids: ctx.chat.dataset_ids.clone(),
                    top_n: ctx.chat.top_n.max(0) as usize,
                    top_k: i64::from(ctx.chat.top_k),
                    similarity_threshold: ctx.chat.similarity_threshold,
                    vector_similarity_weight: ctx.chat.vector_similarity_weight,
                    document_ids: Vec::new(),
                };
                // Retrieval includes the embedding and rerank calls: dropped on cancel.
                let retrieved = retrieve::retrieve(
                    &self.db,
                    &self.common_terms,
                    embedder,
                    reranker,
                    &params,
                    &search_question,
                )
                .instrument(tracing::info_span!(
                    "retrieval",
                    gen_ai.operation.name = "retrieval",
                    gen_ai.data_source.id = %ctx.chat.dataset_ids.join(","),
                ));
                match until_cancelled(cancel, retrieved).await {
                    Some(r) => r?,
                    None => return self.stopped_early(job, events).await,
                }
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
            return self
                .finish(job, events, &empty, &empty, None, String::new(), 0, false)
                .await;
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
        let generated = generate::generate(model, &messages, &conf, events, &self.limits, cancel)
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
        // Where a job's time went (RUST_LOG=ragq_worker::pipeline=debug): queued = from the
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
        self.finish(
            job,
            events,
            &generated.answer,
            &answer,
            reference.as_ref(),
            prompt_text,
            prompt_tokens as u64,
            generated.stopped,
        )
        .await
    }

    /// A cancel before generation: an empty answer, saved as stopped, then `done`.
    async fn stopped_early(&self, job: &Job, events: &mut JobEvents) -> Result<(), StepError> {
        tracing::info!(job = %job.id, "cancelled before generation");
        self.finish(job, events, "", "", None, String::new(), 0, true)
            .await
    }

    /// Saves the turn, then publishes `done`: a client that sees `done` and asks again finds the
    /// turn in the history.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        job: &Job,
        events: &mut JobEvents,
        raw_answer: &str,
        answer: &str,
        reference: Option<&Reference>,
        prompt: String,
        prompt_tokens: u64,
        stopped: bool,
    ) -> Result<(), StepError> {
        let status = if stopped {
            persist::Status::Stopped
        } else {
            persist::Status::Done
        };
        let saving = Instant::now();
        persist::save(&self.db, job, answer, reference, status, &self.worker_id).await?;
        let metrics = &*crate::metrics::METRICS;
        metrics.step(Step::Save, saving.elapsed());
        self.injected(faults::FaultPoint::AfterSave, job, events.attempt())
            .await?;
        let done = Done {
            message_id: job.message_id.clone(),
            answer: answer.to_string(),
            prompt,
            created_at: chrono::Utc::now().timestamp_micros() as f64 / 1e6,
            usage: Usage {
                prompt_tokens,
                completion_tokens: approx_tokens(raw_answer) as u64,
            },
            stopped,
        };
        metrics.tokens_in.increment(done.usage.prompt_tokens);
        metrics.tokens_out.increment(done.usage.completion_tokens);
        events.send(EventBody::Done(Box::new(done))).await?;
        Ok(())
    }
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

/// Runs `fut` unless the job is cancelled first (`None`: cancelled, `fut` dropped).
pub(crate) async fn until_cancelled<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        r = fut => Some(r),
    }
}

/// The `done` event of a saved turn.
fn saved_done(saved: persist::SavedTurn) -> Done {
    Done {
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: approx_tokens(&saved.answer) as u64,
        },
        message_id: saved.message_id,
        answer: saved.answer,
        prompt: String::new(),
        created_at: chrono::Utc::now().timestamp_micros() as f64 / 1e6,
        stopped: saved.status == "stopped",
    }
}

/// Re-sends a turn saved by an earlier attempt of the same job.
async fn replay(events: &mut JobEvents, saved: persist::SavedTurn) -> Result<(), StepError> {
    events.send(EventBody::Reset).await?;
    events
        .send(EventBody::Delta {
            text: saved.answer.clone(),
        })
        .await?;
    if let Ok(reference) = serde_json::from_value::<Reference>(saved.reference.0.clone())
        && !reference.chunks.is_empty()
    {
        events.send(EventBody::Reference { reference }).await?;
    }
    events
        .send(EventBody::Done(Box::new(saved_done(saved))))
        .await?;
    Ok(())
}

/// Generation settings from the chat's `llm_setting`, `max_tokens` clipped to the model budget.
pub(crate) fn gen_conf(setting: &serde_json::Value, budget: usize) -> GenConf {
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
