//! fw_cfg from the guest: selector and data port accesses of any width, the DMA address
//! registers, and DMA descriptors (control, length, address) in guest RAM from the input.
#![no_main]

use fugu::fuzzing::fw_cfg::{FwCfg, LEN};
use fugu::fuzzing::BusDevice;
use fugu_fuzz::Ops;
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let mut ops = Ops::new(data);
    let n_ops = (ops.u8() as usize) % 64;
    let program = ops.bytes(n_ops * 12);
    let mem = fugu_fuzz::memory_with(RAM, ops.rest());
    let mut f = FwCfg::new(RAM, 2).with_dma(mem);
    f.add_file("etc/table-loader", vec![7u8; 300]).unwrap();
    f.add_file("etc/acpi/tables", vec![9u8; 5000]).unwrap();
    let mut buf = [0u8; 8];
    for op in program.chunks(12) {
        let mut o = Ops::new(op);
        let kind = o.u8();
        let w = o.width();
        let off = o.u8() as u64 % (LEN + 4);
        let v = o.u64().to_be_bytes();
        if kind & 1 == 0 {
            f.write(off, &v[..w]);
        } else {
            f.read(off, &mut buf[..w]);
        }
    }
});
