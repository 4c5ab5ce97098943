//! fugu: a small KVM hypervisor for i386 and amd64 hosts and guests.
//!
//! See docs/ARCHITECTURE.md for the map of this crate.

pub mod arch;
pub mod bench;
pub mod boot;
pub mod cli;
pub mod console;
pub mod devices;
pub mod host_compat;
pub mod hypervisor;
pub mod image;
pub mod memory;
pub mod vcpu;
pub mod vm;
