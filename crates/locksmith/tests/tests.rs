//! The library on a real store file: guards, many real processes, process
//! binding and the sweeper. One test binary for the crate.

mod guard;
mod processes;
mod sweep;
