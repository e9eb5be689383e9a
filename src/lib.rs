//! lmpi: clone very large (Lustre) filesystems as one MPI job.
//!
//! The binary is thin; everything lives here, one module per job. Only
//! `transport::mpi` touches MPI; only `fsops` makes file-system syscalls.

pub mod bounded;
pub mod config;
pub mod control;
pub mod engine;
pub mod errlog;
pub mod filter;
pub mod fsops;
pub mod host;
pub mod lustre;
pub mod manifest;
pub mod passes;
pub mod progress;
pub mod report;
pub mod run;
pub mod settings;
pub mod signals;
pub mod stats;
pub mod statsd;
pub mod status;
pub mod track;
pub mod transport;
