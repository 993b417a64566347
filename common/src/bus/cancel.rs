//! Worker side of cancellation, whichever bus: one watcher per worker process keeps a token per
//! running job and cancels it when the bus signals the job's id.
//!
//! Cancelling a job (see [`super::control::Control::cancel`]) does two things: it leaves a
//! *mark* (so a worker that receives the job later skips it) and sends a *signal* every worker
//! hears (so the one running it stops at once). The bus's listener calls
//! [`CancelWatcher::signal`]; [`CancelWatcher::watch`] asks the bus's [`CancelMarks`] whether
//! the mark is there already.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Whether a job was marked cancelled (a Redis key, a NATS key-value entry).
#[async_trait]
pub trait CancelMarks: Send + Sync + 'static {
    async fn is_cancelled(&self, job_id: Uuid) -> bool;
}

/// Worker side: the tokens of the running jobs (see the module docs).
#[derive(Clone)]
pub struct CancelWatcher {
    marks: Arc<dyn CancelMarks>,
    tokens: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
}

/// A running job's registration; dropping it forgets the job.
pub struct Watch {
    pub token: CancellationToken,
    tokens: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    job_id: Uuid,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(&self.job_id);
        }
    }
}

impl CancelWatcher {
    pub fn new(marks: Arc<dyn CancelMarks>) -> Self {
        CancelWatcher {
            marks,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A cancel signal for `job_id` arrived: stop it if it runs here.
    pub fn signal(&self, job_id: Uuid) {
        if let Some(token) = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&job_id).cloned())
        {
            token.cancel();
        }
    }

    /// True while someone besides the listener holds the watcher (the listener stops after).
    pub fn in_use(&self) -> bool {
        Arc::strong_count(&self.tokens) > 1
    }

    /// Registers a job about to run. The token is already cancelled when the job was cancelled
    /// while it waited in the queue.
    pub async fn watch(&self, job_id: Uuid) -> Watch {
        let token = CancellationToken::new();
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(job_id, token.clone());
        }
        if self.marks.is_cancelled(job_id).await {
            token.cancel();
        }
        Watch {
            token,
            tokens: self.tokens.clone(),
            job_id,
        }
    }
}
