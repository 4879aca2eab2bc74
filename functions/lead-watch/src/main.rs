//! lead-watch: managers' changes in Bitrix24 back to TeleAgent. Two triggers, one function: the
//! schedule (fan out one work item per due tenant to the watch queue) and that queue (watch the
//! batch's tenants; partial batch responses). Wiring only; the logic is `shared::sync::watch`.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let watch = shared::sync::watch::lead_watch_from_env().await?;
    let watch = &watch;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::sync::batch::deadline_from_epoch_ms(event.context.deadline);
        Ok::<Value, Error>(watch.handle(event.payload, deadline).await?)
    }))
    .await
}
