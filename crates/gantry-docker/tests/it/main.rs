//! Integration tests against the real Docker engine.
//!
//! Each test finds Docker itself and skips with a note when none answers, except under
//! `CI=true`, where a missing engine fails the test. Every test uses its own run id, so they
//! run in parallel, and removes its run at the end, even when it fails.

// Helpers outside `#[test]` functions are test code too; a panic is the right failure here.
#![allow(clippy::unwrap_used)]

mod build;
mod cleanup;
mod connect;
mod images;
mod push;
mod services;
mod stages;
mod support;
mod workspace;
