//! The NATS bus (`RAGQ_BUS=nats`). Being written.

use async_trait::async_trait;
use uuid::Uuid;

use crate::bus::cancel::{CancelMarks, CancelWatcher};
use crate::bus::control::{Control, TenantAdmission, TenantJobLimits};
use crate::bus::{BusError, EventPublisher, EventSubscriber, Subscription};
use crate::config::NatsConfig;
use crate::event::StreamEvent;
use crate::tls::TlsRoots;

/// One NATS connection with the bus's JetStream stream and buckets declared.
#[derive(Clone)]
pub struct NatsBus {
    client: async_nats::Client,
}

fn unfinished() -> BusError {
    BusError::Nats("the NATS bus is not finished".into())
}

impl NatsBus {
    pub async fn connect(
        nats: &NatsConfig,
        _prefix: &str,
        name: &str,
        roots: &TlsRoots,
    ) -> Result<NatsBus, BusError> {
        let client = crate::nats::connect(nats, name, roots)
            .await
            .map_err(|e| BusError::Connection(e.to_string()))?;
        Ok(NatsBus { client })
    }
    pub fn subscriber(&self, _buffer: usize) -> NatsSubscriber {
        NatsSubscriber { _client: self.client.clone() }
    }
    pub fn control(&self) -> NatsControl {
        NatsControl
    }
    pub fn publisher(&self) -> NatsPublisher {
        NatsPublisher
    }
    pub async fn cancel_watcher(&self) -> Result<CancelWatcher, BusError> {
        Ok(CancelWatcher::new(std::sync::Arc::new(NatsMarks)))
    }
}

pub struct NatsSubscriber {
    _client: async_nats::Client,
}
pub struct NatsControl;
pub struct NatsPublisher;
struct NatsMarks;

#[async_trait]
impl CancelMarks for NatsMarks {
    async fn is_cancelled(&self, _job_id: Uuid) -> bool {
        false
    }
}

#[async_trait]
impl EventSubscriber for NatsSubscriber {
    async fn subscribe(&self, _job_id: Uuid) -> Result<Subscription, BusError> {
        Err(unfinished())
    }
    fn open_streams(&self) -> usize {
        0
    }
    fn readers_of(&self, _job_id: Uuid) -> usize {
        0
    }
    fn is_connected(&self) -> bool {
        false
    }
}

#[async_trait]
impl EventPublisher for NatsPublisher {
    async fn publish(&self, _job_id: Uuid, _event: &StreamEvent) -> Result<(), BusError> {
        Err(unfinished())
    }
    async fn last_seq(&self, _job_id: Uuid) -> Result<u64, BusError> {
        Err(unfinished())
    }
    async fn last_event(&self, _job_id: Uuid) -> Result<Option<StreamEvent>, BusError> {
        Err(unfinished())
    }
}

#[async_trait]
impl Control for NatsControl {
    async fn replay(&self, _job_id: Uuid) -> Result<Vec<Vec<u8>>, BusError> {
        Err(unfinished())
    }
    async fn set_owner(&self, _: Uuid, _: &str, _: std::time::Duration) -> Result<(), BusError> {
        Err(unfinished())
    }
    async fn owner(&self, _: Uuid) -> Result<Option<String>, BusError> {
        Err(unfinished())
    }
    async fn cancel(&self, _: Uuid) -> Result<(), BusError> {
        Err(unfinished())
    }
    async fn attach_reader(&self, _: Uuid, _: Uuid, _: std::time::Duration) -> Result<(), BusError> {
        Err(unfinished())
    }
    async fn detach_reader(&self, _: Uuid, _: Uuid) -> Result<(), BusError> {
        Err(unfinished())
    }
    async fn attached_readers(&self, _: Uuid) -> Result<u64, BusError> {
        Err(unfinished())
    }
    async fn count_request(&self, _: &str, _: u64, _: u64) -> Result<u64, BusError> {
        Err(unfinished())
    }
    async fn admit_tenant_job(
        &self,
        _: &str,
        _: Uuid,
        _: i64,
        _: TenantJobLimits,
    ) -> Result<TenantAdmission, BusError> {
        Err(unfinished())
    }
    async fn release_tenant_job(&self, _: &str, _: Uuid) -> Result<(), BusError> {
        Err(unfinished())
    }
    async fn ping(&self) -> bool {
        false
    }
}
