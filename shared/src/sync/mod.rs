//! lead-sync's core: one lead event in, one [`Outcome`] out.
//!
//! - `engine`: the steps of one event, start to end ([`SyncEngine`]);
//! - [`connections`]: the per-container cache of tenants' tokens, bindings and MCP sessions, and
//!   the rate gate in front of every lead operation;
//! - [`resolution`]: finding the customer's lead (link, ORIGIN_ID, phone, create) and what is
//!   written to it, with the field rules in [`fields`];
//! - [`failure`]: the one place that decides what a failure leads to;
//! - [`replay`]: parked events coming back;
//! - [`ports`]: the narrow traits where the core meets DynamoDB, KMS and the portal;
//! - [`batch`]: the SQS side (FIFO groups, partial batch responses, the dead-letter queue);
//! - [`startup`]: what lead-sync builds once per container;
//! - [`watch`]: lead-watch, the way back: managers' changes in Bitrix24 to TeleAgent.

pub mod batch;
pub mod connections;
mod engine;
pub mod failure;
pub mod fields;
pub mod ports;
pub mod replay;
pub mod resolution;
pub mod startup;
pub mod watch;

pub use engine::SyncEngine;
pub use failure::{Outcome, SyncError};
