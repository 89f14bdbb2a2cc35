//! The services on the embedded store: start-up, the runtime read path, key lifecycle.

mod harness;

mod capabilities;

mod lifecycle;
mod runtime;
mod startup;
