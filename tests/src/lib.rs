//! Test support: the local-stack harness and the Bitrix24 sandbox portal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod aws_faults;
pub mod cfn;
pub mod harness;
pub mod iam;
pub mod local;
pub mod sandbox;
