//! What the consumer does with a delivery once its job returns ([`crate::dispatch::run`]).

/// Ack or requeue.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The client got a terminal event: ack.
    Finished,
    /// The event bus failed: requeue so another attempt can tell the client.
    Requeue,
}
