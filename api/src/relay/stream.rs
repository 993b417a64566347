//! [`JobStream`]: one job's events as [`Item`]s, in order, without gaps, never waiting past the
//! deadline (the rules are in the [module docs](super)).
//!
//! Where this sits in the job path: made by [`crate::dispatch::start::start_job`] (or a resume),
//! read by a route's formatter until its terminal item.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use ragq_common::bus::EventSubscriber;
use ragq_common::bus::control::Control;
use ragq_common::bus::{Closed, Subscription};
use ragq_common::client_error::ErrorReason;
use ragq_common::event::{EventBody, StreamEvent};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::failure::Failure;
use super::readers::{Abandon, PRESENCE_REFRESH, PRESENCE_TTL, Presence, leave};
use super::{Item, resume_message};
use crate::fairness::TenantSlot;

pub struct JobStream {
    sub: Subscription,
    job_id: Uuid,
    control: Option<Arc<dyn Control>>,
    /// Events fetched from the replay stream, processed before live ones.
    pending: VecDeque<StreamEvent>,
    last_seq: u64,
    /// Delivery attempt of the events being relayed; a later attempt supersedes it.
    attempt: u32,
    deadline: Instant,
    finished: bool,
    /// The job's own terminal event (`done` or `error`) was relayed: the job is over.
    job_ended: bool,
    abandon: Option<Abandon>,
    presence: Option<Presence>,
    shutdown: Option<CancellationToken>,
    /// When the request was accepted, until the first answer text is relayed (TTFC).
    ttfc_from: Option<Instant>,
    /// The tenant's hold on one of its concurrent jobs: released with the terminal item, or
    /// when a client that left early is given up on (after the disconnect grace).
    slot: Option<TenantSlot>,
}

impl JobStream {
    pub fn new(sub: Subscription, job_id: Uuid, deadline: Instant) -> Self {
        JobStream {
            sub,
            job_id,
            control: None,
            pending: VecDeque::new(),
            last_seq: 0,
            attempt: 0,
            deadline,
            finished: false,
            job_ended: false,
            abandon: None,
            presence: None,
            shutdown: None,
            ttfc_from: None,
            slot: None,
        }
    }

    /// Holds the tenant's job `slot` until the job's stream ends (see [`TenantSlot`]).
    pub fn holding_slot(mut self, slot: TenantSlot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// Records `ragq_ttfc_seconds` (from `accepted`) when the first answer text is relayed.
    pub fn with_ttfc(mut self, accepted: Instant) -> Self {
        self.ttfc_from = Some(accepted);
        self
    }

    /// Fill gaps from the replay stream through `control`.
    pub fn with_replay(mut self, control: Arc<dyn Control>) -> Self {
        self.control = Some(control);
        self
    }

    /// A client's stream (a completion or a resume): it joins the job's reader set — or is
    /// already in it as `attached` (a new job's first reader, recorded with its owner) —, and
    /// when dropped before its terminal event it cancels the job after `grace` unless another
    /// reader is attached by then (`grace` zero: at once). Needs [`JobStream::with_replay`] first.
    pub fn owned_by_client(
        mut self,
        grace: Duration,
        local: Arc<dyn EventSubscriber>,
        attached: Option<Uuid>,
    ) -> Self {
        self.abandon = Some(Abandon { grace, local });
        if let Some(control) = self.control.clone() {
            let reader = attached.unwrap_or_else(|| {
                let reader = Uuid::new_v4();
                let job_id = self.job_id;
                tokio::spawn(async move {
                    if let Err(e) = control.attach_reader(job_id, reader, PRESENCE_TTL).await {
                        tracing::warn!(job = %job_id, error = %e, "attaching the reader failed");
                    }
                });
                reader
            });
            self.presence = Some(Presence {
                reader,
                refreshed: Instant::now(),
            });
        }
        self
    }

    /// End with [`Item::Interrupted`] when `shutdown` fires (the ingress is going away).
    pub fn until_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// Keeps this reader's attachment alive while it reads.
    fn refresh_presence(&mut self) {
        let (Some(p), Some(control)) = (self.presence.as_mut(), self.control.clone()) else {
            return;
        };
        if p.refreshed.elapsed() < PRESENCE_REFRESH {
            return;
        }
        p.refreshed = Instant::now();
        let (job_id, reader) = (self.job_id, p.reader);
        tokio::spawn(async move {
            let _ = control.attach_reader(job_id, reader, PRESENCE_TTL).await;
        });
    }

    /// Start from the beginning of the replay stream (resuming a job's stream).
    pub async fn replay_from_start(&mut self) {
        self.catch_up().await;
    }

    /// Queues every replayed event after the last one seen.
    async fn catch_up(&mut self) {
        let Some(control) = &self.control else { return };
        match control.replay(self.job_id).await {
            Ok(events) => {
                let after = self
                    .pending
                    .back()
                    .map_or((self.attempt, self.last_seq), |e| (e.attempt, e.seq));
                self.pending.extend(
                    events
                        .iter()
                        .filter_map(|p| StreamEvent::decode(p).ok())
                        .filter(|e| (e.attempt, e.seq) > after),
                );
            }
            Err(e) => tracing::warn!(job = %self.job_id, error = %e, "replay read failed"),
        }
    }

    fn cancel_job(&self) {
        if let Some(control) = self.control.clone() {
            let job_id = self.job_id;
            tokio::spawn(async move {
                if let Err(e) = control.cancel(job_id).await {
                    tracing::warn!(job = %job_id, error = %e, "cancel failed");
                }
            });
        }
    }

    /// The next item; `None` once a terminal item was returned. With the terminal item the
    /// tenant's slot is released (before the client sees the end, so it may start its next job
    /// at once).
    pub async fn next(&mut self, keep_alive: Duration) -> Option<Item> {
        let item = self.next_item(keep_alive).await;
        if self.finished
            && let Some(slot) = self.slot.take()
        {
            slot.release().await;
        }
        item
    }

    async fn next_item(&mut self, keep_alive: Duration) -> Option<Item> {
        if self.finished {
            return None;
        }
        self.refresh_presence();
        loop {
            if self.shutdown.as_ref().is_some_and(|s| s.is_cancelled()) {
                return Some(self.interrupted());
            }
            if let Some(event) = self.pending.pop_front() {
                if let Some(item) = self.accept(event) {
                    return Some(item);
                }
                continue;
            }
            let wake = (Instant::now() + keep_alive).min(self.deadline);
            let shutdown = self.shutdown.clone();
            let shutting_down = async {
                match &shutdown {
                    Some(s) => s.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let received = tokio::select! {
                r = tokio::time::timeout_at(wake, self.sub.recv()) => r,
                () = shutting_down => return Some(self.interrupted()),
            };
            let payload = match received {
                Ok(Ok(p)) => p,
                Ok(Err(closed)) => {
                    // Whatever the reason, the replay stream may already hold the rest.
                    if closed == Closed::Disconnected {
                        let _ = tokio::time::timeout(Duration::from_secs(1), self.catch_up()).await;
                        if !self.pending.is_empty() {
                            continue;
                        }
                    }
                    self.finished = true;
                    return Some(match closed {
                        Closed::SlowReader => {
                            self.cancel_job();
                            Item::Failed(Failure::local(
                                self.job_id,
                                ErrorReason::Internal,
                                "The client read too slowly; the stream was cut.",
                            ))
                        }
                        // Not the job's fault: it goes on, and can be resumed once the bus is back.
                        Closed::Disconnected => Item::Interrupted {
                            message: resume_message(
                                self.job_id,
                                "The ingress lost its connection to the event bus.",
                            ),
                        },
                    });
                }
                Err(_) => {
                    self.catch_up().await;
                    if !self.pending.is_empty() {
                        continue;
                    }
                    if Instant::now() >= self.deadline {
                        self.finished = true;
                        self.cancel_job();
                        return Some(Item::Failed(Failure::local(
                            self.job_id,
                            ErrorReason::Timeout,
                            "The answer did not complete before the deadline.",
                        )));
                    }
                    return Some(Item::Idle);
                }
            };
            if payload.is_empty() {
                // The bus reconnected: events may have been published meanwhile.
                self.catch_up().await;
                continue;
            }
            let event = match StreamEvent::decode(&payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "undecodable event skipped");
                    continue;
                }
            };
            if event.attempt == self.attempt
                && event.seq > self.last_seq + 1
                && self.control.is_some()
            {
                tracing::debug!(
                    expected = self.last_seq + 1,
                    got = event.seq,
                    "event gap: filling from replay"
                );
                self.catch_up().await;
                if self
                    .pending
                    .front()
                    .is_some_and(|e| e.attempt == self.attempt && e.seq == self.last_seq + 1)
                {
                    continue; // the live event is in the replay too, after the missing ones
                }
            }
            if let Some(item) = self.accept(event) {
                return Some(item);
            }
        }
    }

    /// Ends this connection's stream without touching the job.
    fn interrupted(&mut self) -> Item {
        self.finished = true;
        Item::Interrupted {
            message: resume_message(self.job_id, "This server is shutting down."),
        }
    }

    /// Applies ordering rules to one event; `None` for a duplicate.
    fn accept(&mut self, event: StreamEvent) -> Option<Item> {
        if event.attempt < self.attempt {
            return None; // from an attempt already superseded
        }
        if event.attempt > self.attempt {
            // A redelivery took over (its first event is a `reset`): follow its numbering.
            self.attempt = event.attempt;
            self.last_seq = event.seq.saturating_sub(1);
        }
        if event.seq <= self.last_seq {
            return None;
        }
        if event.seq != self.last_seq + 1 {
            tracing::warn!(job = %self.job_id, expected = self.last_seq + 1, got = event.seq, "event gap not fillable");
        }
        self.last_seq = event.seq;
        let metrics = &*crate::observe::METRICS;
        metrics.events_relayed.increment(1);
        Some(match event.body {
            EventBody::Delta { text } => {
                if !text.is_empty()
                    && let Some(accepted) = self.ttfc_from.take()
                {
                    metrics.ttfc.record(accepted.elapsed());
                }
                Item::Delta(text)
            }
            EventBody::Reference { reference } => Item::Reference(reference),
            EventBody::Result { data } => Item::Result(data),
            EventBody::Reset => Item::Reset,
            EventBody::Done(done) => {
                self.finished = true;
                self.job_ended = true;
                Item::Done(done)
            }
            EventBody::Error {
                code,
                message,
                reason,
                error_id,
            } => {
                self.finished = true;
                self.job_ended = true;
                Item::Failed(Failure::from_event(
                    self.job_id,
                    code,
                    message,
                    reason,
                    error_id,
                ))
            }
        })
    }
}

impl Drop for JobStream {
    fn drop(&mut self) {
        // Without an abandon, the slot (if any) is released as this drops.
        let Some(control) = self.control.clone() else {
            return;
        };
        // A stream that relayed the job's terminal event leaves its entry in the reader set to
        // expire (PRESENCE_TTL): the set only decides whether an unfinished job is cancelled,
        // and this job is over. One round trip fewer per answer.
        let presence = (!self.job_ended)
            .then(|| self.presence.take().map(|p| p.reader))
            .flatten();
        let abandon = match self.abandon.take() {
            Some(a) if !self.finished => Some(a),
            _ => None,
        };
        if presence.is_none() && abandon.is_none() {
            return;
        }
        // A client that left early keeps its tenant's slot until the job is given up on.
        let slot = abandon.as_ref().and(self.slot.take());
        leave(control, self.job_id, presence, abandon, slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ragq_common::event::ErrorCode;
    use std::sync::Arc;
    use tokio::sync::mpsc;

    fn stream() -> (mpsc::Sender<Vec<u8>>, JobStream) {
        let (tx, rx) = mpsc::channel(64);
        let sub = Subscription::new(rx, Arc::default(), Box::new(()));
        (
            tx,
            JobStream::new(sub, Uuid::now_v7(), Instant::now() + Duration::from_secs(5)),
        )
    }

    fn ev(attempt: u32, seq: u64, body: EventBody) -> Vec<u8> {
        StreamEvent { seq, attempt, body }.encode()
    }

    fn delta(t: &str) -> EventBody {
        EventBody::Delta { text: t.into() }
    }

    #[tokio::test]
    async fn duplicates_and_superseded_attempts_are_dropped() {
        let (tx, mut s) = stream();
        for e in [
            ev(0, 1, delta("a")),
            ev(0, 1, delta("a")),
            ev(0, 2, delta("b")),
            // A redelivery after the replay stream was lost numbers from 1 again.
            ev(1, 1, EventBody::Reset),
            ev(0, 3, delta("late from the dead attempt")),
            ev(1, 2, delta("x")),
            ev(
                1,
                3,
                EventBody::Error {
                    code: ErrorCode::Upstream,
                    message: "m".into(),
                    reason: None,
                    error_id: String::new(),
                },
            ),
        ] {
            tx.send(e).await.unwrap();
        }
        let mut got = Vec::new();
        while let Some(item) = s.next(Duration::from_secs(1)).await {
            got.push(format!("{item:?}"));
        }
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(
            got[0].contains("\"a\"") && got[1].contains("\"b\""),
            "{got:?}"
        );
        assert_eq!(got[2], "Reset");
        assert!(got[3].contains("\"x\""), "{got:?}");
        assert!(got[4].starts_with("Failed"), "{got:?}");
    }

    #[tokio::test]
    async fn shutdown_interrupts_with_a_resume_message() {
        let (_tx, s) = stream();
        let token = CancellationToken::new();
        let mut s = s.until_shutdown(token.clone());
        let job = s.job_id();
        let next = tokio::spawn(async move {
            let first = s.next(Duration::from_secs(5)).await;
            (first, s.next(Duration::from_secs(5)).await.is_none())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        token.cancel();
        let (first, ended) = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .unwrap()
            .unwrap();
        match first {
            Some(Item::Interrupted { message }) => {
                assert!(message.contains("resume") && message.contains(&job.to_string()))
            }
            other => panic!("{other:?}"),
        }
        assert!(ended);
    }
}
