//! End-to-end tests: real guests built from `examples/`, real redb files,
//! the real `cairn` binary (or the library, for in-process properties).
//! One test binary, so the runtime is linked once.

mod activities;
mod bench;
mod cluster;
mod crash;
mod determinism;
mod disk;
mod examples;
mod faults;
mod fuzz;
mod generations;
mod hostile;
mod languages;
mod limits;
mod load;
mod operator;
mod power;
mod properties;
mod replay;
mod schedules;
mod server;
mod support;
mod ui;
mod updates;
mod upgrade;
mod workers;
