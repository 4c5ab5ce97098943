//! The legacy PC devices small kernels and firmware expect.

pub mod cmos;
pub mod debug_exit;
pub mod debugcon;
pub mod fw_cfg;
pub mod i8042;
pub mod pm;
pub mod serial;
