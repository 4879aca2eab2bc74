//! The typed producer for Rust callers (tests, the demo):
//! validate, then one FIFO `SendMessage`. The Python chat pipeline makes the same call by hand
//! (README), with the same group and deduplication ids.

use tracing::instrument;

use super::{EventError, LeadEvent};

/// Sends lead events to the FIFO lead queue (`LEAD_QUEUE_URL`).
#[derive(Clone, Debug)]
pub struct LeadEventProducer {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    /// The event breaks the contract; nothing was sent. Not worth retrying.
    #[error("lead event is invalid: {0}")]
    Invalid(#[from] EventError),
    /// SQS refused or could not be reached; the event may be sent again as is (the deduplication
    /// id makes a repeat within SQS's five-minute window harmless).
    #[error("sending the lead event to SQS failed: {0}")]
    Send(#[source] Box<aws_sdk_sqs::Error>),
}

impl LeadEventProducer {
    pub fn new(sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self { sqs, queue_url }
    }

    /// Validates, then SendMessage with MessageGroupId = group_id(), MessageDeduplicationId =
    /// event_id: one customer's events stay in order, and a producer retry is not a second event.
    #[instrument(skip_all, fields(tenant_id = %event.tenant_id, event_id = %event.event_id))]
    pub async fn send(&self, event: &LeadEvent) -> Result<(), ProducerError> {
        event.validate()?;
        let out = self
            .sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(event.to_json())
            .message_group_id(event.group_id())
            .message_deduplication_id(&event.event_id)
            .send()
            .await
            .map_err(|e| ProducerError::Send(Box::new(e.into())))?;
        tracing::debug!(message_id = out.message_id(), "lead event sent");
        Ok(())
    }
}
