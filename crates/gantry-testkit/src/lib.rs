//! Test-only helpers shared by Gantry's integration tests: real things to test against where the
//! real thing can run here (git repositories, a smart-HTTP git server).
//!
//! Everything here panics with a clear message instead of returning errors: a fixture that cannot
//! be set up is a broken test, not a condition to handle. Nothing here knows Gantry's business
//! logic.

pub mod docker;
pub mod git;
pub mod git_http;
pub mod kube;
pub mod registry;
pub mod sshd;
pub mod webdriver;
pub mod webhook;

pub use docker::docker_available;
pub use git::FixtureRepo;
pub use git_http::{GitHttpServer, RequestRecord};
pub use sshd::Sshd;
