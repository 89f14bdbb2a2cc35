//! The HTTP API end to end: a real server on 127.0.0.1, a real store (SQLite or PostgreSQL,
//! see `harness`), a real client.

mod backend;
mod harness;

mod audit;
mod authz;
mod config;
mod connections;
mod events;
mod input;
mod limits;
mod openapi;
mod orchestrations;
mod runtime;
mod secrets;
mod ui;
