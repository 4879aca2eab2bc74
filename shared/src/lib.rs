//! TeleAgent's Bitrix24 connector: everything the Lambda functions run, so each function's
//! `main.rs` only wires a handler from here to the runtime.
//!
//! Dependencies point one way: `http` and `sync` use `crm`, `store` and `vault`; `crm` uses `mcp`;
//! nothing else imports `http` or `sync`.

pub mod admin;
pub mod aws;
pub mod config;
pub mod crm;
pub mod events;
pub mod http;
pub mod mcp;
pub mod metrics;
pub mod phone;
pub mod secret;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod tenant;
pub mod tls;
pub mod vault;
