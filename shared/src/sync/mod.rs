//! lead-sync's engine: one lead event in, one [`Outcome`] out (design.md §4). `engine` runs the
//! steps (claim, integration, token cache, lead resolution, link), `fields` holds the pure field
//! rules, `outcome` the one place where failures become outcomes, `batch` the SQS side.

pub mod batch;
mod engine;
pub mod fields;
pub mod outcome;

pub use engine::{SyncEngine, SyncStats};
pub use outcome::{Outcome, SyncError};
