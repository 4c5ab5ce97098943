//! Architecture-specific CPU and platform setup.
pub mod x86;
