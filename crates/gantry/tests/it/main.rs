//! The `gantry` binary as a user runs it: `gantry lint` and `gantry run`
//! against the real Docker engine.

mod client;
mod lint;
mod run;
mod support;
