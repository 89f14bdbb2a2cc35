//! The SDK's tests, in one test binary (one link instead of one per file).
//!
//! `push` needs nothing; `client`, `worker`, `orchestrations` and `examples` start a real
//! `coffer serve` (built on first use: see `common`).

mod client;
mod common;
mod examples;
mod orchestrations;
mod push;
mod worker;
