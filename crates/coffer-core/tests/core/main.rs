//! The services on a real store (SQLite or PostgreSQL, see `harness`): start-up, the
//! runtime read path, key lifecycle, declared backend capabilities.

mod backend;
mod harness;

mod auth;
mod capabilities;
mod config;
mod functions;
mod journal;
mod lifecycle;
mod orchestrations;
mod runtime;
mod signing;
mod startup;
