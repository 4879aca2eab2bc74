//! One integration-test binary: one link step, shared statics.
mod store;
mod vault;
