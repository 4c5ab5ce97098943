//! An ELF kernel with a PVH entry note (Xen's PHYS32_ENTRY), from the user's --kernel and
//! --initrd: the note walk, the start info, the module list and the memory map.
#![no_main]

use fugu::fuzzing::boot::{elf, load_kernel};
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let initrd = [0xa5u8; 5000];
    for mem in fugu_fuzz::memories(RAM) {
        let _ = elf::load_direct(&*mem, data, "console=hvc0", Some(&initrd), RAM);
    }
    // The dispatch fugu runs on --kernel, with one module as the initrd.
    let mem = fugu_fuzz::memory_with(RAM, &[]);
    let modules = [(initrd.to_vec(), "initrd".to_string())];
    let _ = load_kernel(&*mem, data, "vmlinux", "quiet", &modules, RAM);
});
