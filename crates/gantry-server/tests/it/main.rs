//! End-to-end tests of `gantry serve` in-process: real git repositories,
//! GitHub-shaped signed webhooks, real Docker, the real HTTP API.

mod api;
mod deploy;
mod deployments;
mod events;
#[path = "../common/huge_log.rs"]
mod huge_log;
mod metrics;
mod secrets;
mod support;
mod web;
mod webhooks;
