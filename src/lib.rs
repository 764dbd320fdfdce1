//! Wharf: a container registry front for a volunteer mirror network.
//! See ARCHITECTURE.md for the code map and the invariants.

pub mod accounts;
pub mod admin;
pub mod app;
pub mod clock;
pub mod config;
pub mod control;
pub mod crawl;
pub mod demo;
pub mod edge;
#[doc(hidden)]
pub mod fuzzing;
pub mod geo;
pub mod hooks;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod public;
pub mod registry;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod sync;
pub mod tls;
pub mod tree;
