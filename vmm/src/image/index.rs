//! The image index schema, defined once in fugu-common (the xtask writes it, fugu reads it).

pub use fugu_common::index::*;
