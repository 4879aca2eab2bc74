//! Test support: the local-stack harness and the Bitrix24 sandbox portal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod aws_faults;
pub mod cfn;
pub mod harness;
pub mod iam;
pub mod local_run;
pub mod poller;
pub mod runtime_api;
pub mod sandbox;
