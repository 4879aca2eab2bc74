//! `bare-runtime`: a do-nothing `lambda_runtime` function, the benchmark's reference point. Its
//! cold start and memory are what the runtime alone costs, so the figures of our six functions
//! can be read as "runtime + what we added".

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(event.payload)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
