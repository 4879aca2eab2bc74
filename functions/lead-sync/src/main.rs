//! lead-sync: the SQS-triggered consumer of the FIFO lead queue (partial batch responses).
//! Wiring only; the logic is `shared::sync`.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let processor = shared::sync::batch::lead_sync_from_env().await?;
    let processor = &processor;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = shared::sync::batch::deadline_from_epoch_ms(event.context.deadline);
        Ok::<SqsBatchResponse, Error>(processor.process(event.payload, deadline).await)
    }))
    .await
}
