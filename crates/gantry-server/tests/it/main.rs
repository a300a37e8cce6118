//! End-to-end tests of `gantry serve`.
