//! fugu: a small KVM hypervisor for i386 and amd64 hosts and guests.
//!
//! See docs/ARCHITECTURE.md for the map of this crate.
//!
//! The crate root exports the entry points of the two binaries and the fuzz targets' facade
//! only; every module is private, so rustc reports the code nothing uses as dead.

mod acpi;
mod app;
mod arch;
mod backend;
mod bench;
mod bits;
mod boot;
mod cli;
mod console;
mod control;
mod devices;
mod exit_status;
#[doc(hidden)]
pub mod fuzzing;
mod host_compat;
mod hypervisor;
mod image;
mod machine;
mod memory;
mod outcome;
mod privileges;
mod seccomp;
mod signals;
mod sync;
mod trace;

#[cfg(test)]
mod layering;

/// The `fugu` binary (`src/main.rs`), and `fugud`, the same binary under another name.
pub use app::main;
/// The `fugu-bench` binary (`src/bin/fugu-bench.rs`).
pub use bench::entry as bench_main;
