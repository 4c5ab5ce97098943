//! fugu: a small KVM hypervisor for i386 and amd64 hosts and guests.
//!
//! See docs/ARCHITECTURE.md for the map of this crate.

// Not yet converted to checked conversions (casts that may truncate in the table and AML
// encoders; issue 19): remove this allow once the module is clean, as the other modules are.
#[allow(clippy::cast_possible_truncation)]
pub mod acpi;
pub mod arch;
pub mod backend;
pub mod bench;
// Not yet converted to checked conversions (37 casts that may truncate; issue 19): remove
// this allow once the module is clean, as the other modules are.
#[allow(clippy::cast_possible_truncation)]
pub mod boot;
pub mod cli;
pub mod console;
pub mod control;
// Not yet converted to checked conversions (169 casts that may truncate; issue 19): remove
// this allow once the module is clean, as the other modules are.
#[allow(clippy::cast_possible_truncation)]
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
