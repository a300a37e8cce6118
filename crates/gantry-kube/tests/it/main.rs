//! gantry-kube against the Kubernetes API emulator (`gantry_testkit::kube`): rollouts, the faults
//! they must catch, rollbacks, refusals, and agreement with the real `kubectl`.

// Tests: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod errors;
mod kubectl;
mod rollback;
mod rollout;
mod support;
