//! Wharf's integration tests: one binary, real components (see `harness`).

mod harness;
mod pull;
mod sync;
mod tree;
