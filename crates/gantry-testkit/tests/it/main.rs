//! Tests of the testkit itself, against the reference clients: the `git` CLI and `kubectl`.

// Test helpers outside `#[test]` functions are not covered by `allow-unwrap-in-tests`.
#![allow(clippy::unwrap_used)]

mod git;
mod git_http;
mod kube;
mod kube_api;
