//! The local-run tools: what plays AWS Lambda's side on this machine. [`poller`] plays the SQS
//! event source mapping (batches, partial batch responses, visibility, dead-letter redrive),
//! [`runtime_api`] a Lambda Runtime API for starting the real function binaries, and [`run`]
//! the pieces `make demo`, `make dev` and the end-to-end tests share (cargo lambda watch, the
//! HTTP API through its function URLs, locally signed JWTs), and [`watch_round`] lead-watch's
//! round (the schedule, then the watch queue's mapping) and the consumer's view of its output;
//! [`function`] starts a release function binary as Lambda does (its environment, the process,
//! an API Gateway request), for the benchmark and the soak.

pub mod function;
pub mod poller;
pub mod run;
pub mod runtime_api;
pub mod watch_round;
