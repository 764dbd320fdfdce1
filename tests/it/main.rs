//! Wharf's integration tests: one binary, real components (see `harness`).

mod admin;
mod api;
mod architecture;
mod browser;
mod cli;
mod crash;
mod demo;
mod faults;
mod harness;
mod maintenance;
mod mirrors;
mod mirrors_harness;
mod notify;
mod ops;
mod properties;
mod public;
mod pull;
mod referrers;
mod registry_mirrors;
mod signatures;
mod signing_harness;
mod sync;
mod token;
mod tree;
mod trust;
