//! One integration-test binary: one link step, shared statics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod mcp_client;
mod sandbox;
mod store;
mod template;
mod vault;
