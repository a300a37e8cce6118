//! The `gantry` binary as a user runs it: `gantry lint`, `gantry run`,
//! `gantry serve` and the client commands, against the real Docker engine.

mod client;
mod deployments;
mod example;
mod lint;
mod run;
mod secret;
mod serve;
mod support;
