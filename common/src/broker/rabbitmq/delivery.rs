//! The consuming side of RabbitMQ: deliveries as [`Delivery`]s, their settlement (ack, requeue,
//! dead-letter, hand back) and what a dead-lettered message says about itself.

use async_trait::async_trait;
use futures::StreamExt;
use lapin::{
    BasicProperties, Channel,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, BasicRejectOptions},
    types::{AMQPValue, FieldTable, ShortString},
};

use super::proto;
use crate::broker::{BrokerError, Delivery, JobConsumer, Settle};

pub(super) fn death_reason(props: &BasicProperties) -> String {
    let deaths = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned());
    if let Some(AMQPValue::FieldArray(arr)) = deaths
        && let Some(AMQPValue::FieldTable(first)) = arr.as_slice().first()
        && let Some(AMQPValue::LongString(reason)) = first.inner().get("reason")
    {
        return reason.to_string();
    }
    "unknown".into()
}

/// Consumes one lane.
pub struct RabbitConsumer {
    pub(super) channel: Channel,
    pub(super) consumer: lapin::Consumer,
}

struct RabbitSettle {
    acker: lapin::Acker,
    /// For [`Settle::hand_back`]: the consumer's channel (in confirm mode), the queue the job
    /// came from and its properties.
    channel: Channel,
    queue: ShortString,
    properties: BasicProperties,
}

#[async_trait]
impl Settle for RabbitSettle {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(proto)
    }
    async fn requeue(&self) -> Result<(), BrokerError> {
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .map(|_| ())
            .map_err(proto)
    }
    async fn dead_letter(&self) -> Result<(), BrokerError> {
        self.acker
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(|_| ())
            .map_err(proto)
    }
    async fn hand_back(&self, payload: &[u8], ttl_ms: i64) -> Result<(), BrokerError> {
        // The broker's own delivery headers are not the publisher's to send again.
        let mut headers = self.properties.headers().clone().unwrap_or_default();
        let kept: Vec<_> = headers
            .inner()
            .iter()
            .filter(|(k, _)| !k.as_str().starts_with("x-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers = FieldTable::default();
        for (k, v) in kept {
            headers.insert(k, v);
        }
        let props = self
            .properties
            .clone()
            .with_headers(headers)
            .with_expiration(ShortString::from(ttl_ms.max(1).to_string()));
        publish_confirmed(&self.channel, self.queue.clone(), payload, props).await?;
        self.ack().await
    }
}

/// Publishes to `queue` (default exchange, mandatory) on a channel in confirm mode and waits
/// for the broker's confirm: a nack or an unroutable return is [`BrokerError::Nacked`].
pub(super) async fn publish_confirmed(
    channel: &Channel,
    queue: ShortString,
    payload: &[u8],
    props: BasicProperties,
) -> Result<(), BrokerError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(""),
            queue,
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            payload,
            props,
        )
        .await
        .map_err(proto)?;
    let confirmation = confirm.await.map_err(proto)?;
    if confirmation.is_nack() || confirmation.take_message().is_some() {
        return Err(BrokerError::Nacked);
    }
    Ok(())
}

fn traceparent(props: &BasicProperties) -> Option<String> {
    match props
        .headers()
        .as_ref()?
        .inner()
        .get(crate::trace::HEADER)?
    {
        AMQPValue::LongString(s) => Some(s.to_string()),
        _ => None,
    }
}

fn delivery_count(props: &BasicProperties) -> u32 {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned())
        .and_then(|v| match v {
            AMQPValue::LongLongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongInt(n) => u32::try_from(n).ok(),
            AMQPValue::LongUInt(n) => Some(n),
            AMQPValue::ShortInt(n) => u32::try_from(n).ok(),
            AMQPValue::ShortUInt(n) => Some(u32::from(n)),
            _ => None,
        })
        .unwrap_or(0)
}

#[async_trait]
impl JobConsumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            match self.consumer.next().await? {
                Ok(d) => {
                    return Some(Ok(Delivery {
                        delivery_count: delivery_count(&d.properties),
                        message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
                        traceparent: traceparent(&d.properties),
                        death_reason: d
                            .properties
                            .headers()
                            .as_ref()
                            .is_some_and(|h| h.inner().contains_key("x-death"))
                            .then(|| death_reason(&d.properties)),
                        redelivered: d.redelivered,
                        payload: d.data,
                        settle: Box::new(RabbitSettle {
                            acker: d.acker,
                            channel: self.channel.clone(),
                            queue: d.routing_key,
                            properties: d.properties,
                        }),
                    }));
                }
                Err(err) => {
                    // With auto-recovery the channel comes back; wait for it and go on.
                    if let Err(e) = self.channel.wait_for_recovery(err).await {
                        return Some(Err(proto(e)));
                    }
                }
            }
        }
    }
}

/// A consumer that ends (`next` → `None`) when its subscription is dead: the [`super::Supervised`]
/// connection was replaced, or the consumer's channel stayed closed for [`Watched::CLOSED_FOR`]
/// — a consumer stream on a dead connection may simply never yield, so the worker would wait
/// forever instead of subscribing again.
pub(super) struct Watched {
    supervised: super::Supervised,
    subscribed_on: super::RabbitMq,
    inner: RabbitConsumer,
    closed_since: Option<tokio::time::Instant>,
    /// Made once, not per delivery: `next` runs for every job.
    check: tokio::time::Interval,
}

impl Watched {
    const CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);
    const CLOSED_FOR: std::time::Duration = std::time::Duration::from_secs(10);

    pub(super) fn new(
        supervised: super::Supervised,
        subscribed_on: super::RabbitMq,
        inner: RabbitConsumer,
    ) -> Self {
        let start = tokio::time::Instant::now() + Self::CHECK_EVERY;
        let mut check = tokio::time::interval_at(start, Self::CHECK_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Watched {
            supervised,
            subscribed_on,
            inner,
            closed_since: None,
            check,
        }
    }

    /// True when the subscription cannot come back by itself.
    fn dead(&mut self) -> bool {
        let replaced = !self
            .supervised
            .current()
            .same_connection(&self.subscribed_on);
        let closed = if self.inner.channel.status().connected() {
            self.closed_since = None;
            false
        } else {
            self.closed_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed()
                > Self::CLOSED_FOR
        };
        if replaced || closed {
            tracing::warn!(replaced, "subscription is dead; subscribing again");
        }
        replaced || closed
    }
}

#[async_trait]
impl JobConsumer for Watched {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        loop {
            tokio::select! {
                d = self.inner.next() => return d,
                _ = self.check.tick() => if self.dead() { return None },
            }
        }
    }
}
