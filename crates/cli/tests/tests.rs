//! The `locksmith` binary, as people and scripts use it: one test binary
//! for the whole command line.

mod common;

mod cli;
mod dashboard;
mod docs;
mod mcp;
mod postgres;
mod run;
mod server;
