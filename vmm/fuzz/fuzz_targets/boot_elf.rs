//! An ELF kernel from the user's --kernel (32- or 64-bit, booted directly): header and
//! program-header parsing, segment loading with BSS, the note walk, the zero page.
#![no_main]

use fugu::fuzzing::boot::{detect, elf};
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    for mem in fugu_fuzz::memories(RAM) {
        let _ = elf::load_direct(&*mem, data, "console=ttyS0", None, RAM);
    }
});
