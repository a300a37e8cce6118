//! Tests of the testkit itself, against the `git` CLI as the reference client.

// Test helpers outside `#[test]` functions are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

mod git;
mod git_http;
