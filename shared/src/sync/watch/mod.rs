//! Change watching (lead-watch): what managers change in Bitrix24 flows back to TeleAgent.
//!
//! - [`changes`]: the rules, pure: what a changed lead reports against its link;
//! - [`round`]: one tenant's round (list changed leads, publish `lead.changed`, record what was
//!   seen, move the cursor);
//! - [`fanout`]: the two triggers of lead-watch: the schedule enqueues one work item per due
//!   tenant to the watch queue; the watch queue's batches are watched in parallel, with partial
//!   batch responses.
//!
//! It sits in `sync` because it is the same connection seen from the other side: it reuses the
//! per-container connection cache, the rate gate in front of every call, and the one failure
//! plan (a revoked token puts the integration in `error` whichever function saw it first).

pub mod changes;
pub mod fanout;
pub mod round;

pub use fanout::{
    FanOut, FanOutReport, LeadWatch, LeadWatchError, WatchConsumer, WatchWork, lead_watch_from_env,
    lead_watch_with,
};
pub use round::{RoundReport, WatchError, Watcher};
