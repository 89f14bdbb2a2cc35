//! The services on the embedded store: start-up, the runtime read path, key lifecycle,
//! declared backend capabilities.

mod harness;

mod auth;
mod capabilities;
mod config;
mod journal;
mod lifecycle;
mod runtime;
mod startup;
