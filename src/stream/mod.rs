//! The edge that runs the engine: the loop from a record source to a commit target
//! ([`runner`]: poll, process, dead-letter, commit with the offsets, one protocol for every
//! mode), what the run's health is judged from ([`health`]), and the in-process source and
//! sinks of `demo`, experiments, tests and benchmarks ([`memory`]), and the worker threads the
//! partition tasks run on ([`threads`]). Threads, channels and
//! clocks live here, not in the engine.

pub mod health;
pub mod memory;
pub mod runner;
pub mod threads;
