//! What fugu (vmm), its xtask and its end-to-end tests share, so that a writer and its reader,
//! or two copies of one helper, cannot drift apart.
//!
//! Dependencies: std, libc, serde and sha2 only, all buildable by Debian's rustc 1.85 for i686
//! and x86_64. Nothing here depends on the other crates of the workspace.

pub mod date;
pub mod digest;
pub mod frame;
pub mod host;
pub mod index;
pub mod proc;
pub mod status;
pub mod units;
