//! End-to-end tests of `gantry serve` in-process: real git repositories,
//! GitHub-shaped signed webhooks, real Docker, the real HTTP API.

mod api;
mod support;
mod webhooks;
