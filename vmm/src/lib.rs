//! fugu: a small KVM hypervisor for i386 and amd64 hosts and guests.
//!
//! See docs/ARCHITECTURE.md for the map of this crate.

pub mod acpi;
pub mod arch;
pub mod backend;
pub mod bench;
pub mod bits;
pub mod boot;
pub mod cli;
pub mod console;
pub mod control;
pub mod devices;
pub mod exit_status;
pub mod host_compat;
pub mod hypervisor;
pub mod image;
pub mod machine;
pub mod memory;
pub mod outcome;
pub mod privileges;
pub mod seccomp;
pub mod signals;
pub mod sync;
pub mod trace;

#[cfg(test)]
mod layering;
