//! One integration-test binary: one link step, shared statics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod aws_faults;
mod batch;
mod corpus_e2e;
mod crm;
mod e2e;
mod events;
mod http_api;
mod mcp_client;
mod metrics;
mod sandbox;
mod soak;
mod store;
mod sync;
mod template;
mod vault;
mod watch;
