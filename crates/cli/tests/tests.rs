//! The `locksmith` binary, as people and scripts use it: one test binary
//! for the whole command line.

mod common;

mod cli;
mod dashboard;
mod mcp;
mod postgres;
mod readme;
mod run;
mod server;
