//! Test support: the local-stack harness and the Bitrix24 sandbox portal.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod harness;
pub mod sandbox;
