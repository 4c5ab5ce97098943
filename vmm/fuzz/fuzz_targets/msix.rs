//! MSI-X from the guest: table writes and reads of any width at any offset, PBA reads, the
//! enable and function-mask bits through configuration writes, and vectors fired meanwhile.
#![no_main]

use fugu::fuzzing::pci::{ConfigSpace, Msix};
use fugu_fuzz::{NoIrq, Ops};
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops::new(data);
    let n = ops.u16() % 80;
    let mut cfg = ConfigSpace::new(0x1af4, 0x1000, 0x02_00_00, 0);
    let mut m = Msix::new(&mut cfg, n, 1, 0, 0x800, Arc::new(NoIrq::default()));
    let mut buf = [0u8; 8];
    while !ops.is_empty() {
        let kind = ops.u8();
        let w = ops.width();
        let v = ops.u64().to_le_bytes();
        let off = ops.u16() as u64;
        match kind % 7 {
            0 | 1 => m.write_table(off, &v[..w]),
            2 => m.read_table(off, &mut buf[..w]),
            3 => m.read_pba(off, &mut buf[..w]),
            4 => {
                cfg.write(off as usize % 256, &v[..w.min(4)]);
                m.config_written(&cfg);
            }
            5 => m.notify(off as u16),
            _ => m.reset(),
        }
    }
    let _ = (m.len(), m.enabled(), m.table_bytes(), m.pba_bytes());
});
