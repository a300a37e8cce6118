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

/// A port of 127.0.0.1 that nothing listens on right now, for a server the tests start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("find a free port on 127.0.0.1")
}

/// Whether `program` is an executable file in one of `PATH`'s directories.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
