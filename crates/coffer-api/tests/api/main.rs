//! The HTTP API end to end: a real server on 127.0.0.1, the embedded store, a real client.

mod harness;

mod audit;
mod authz;
mod config;
mod connections;
mod events;
mod input;
mod limits;
mod openapi;
mod secrets;
