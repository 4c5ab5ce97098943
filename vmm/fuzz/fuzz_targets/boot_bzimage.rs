//! A Linux bzImage from the user's --kernel: setup-header parsing, the protected-mode
//! kernel's load (linux-loader on vm-memory, the in-house loader otherwise), initrd placement
//! and the zero page.
#![no_main]

use fugu::fuzzing::boot::{detect, linux};
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    let _ = linux::parse(data);
    for mem in fugu_fuzz::memories(RAM) {
        let initrd = [0x5au8; 4096];
        let _ = linux::load(&*mem, data, "console=ttyS0", Some(&initrd), RAM, true);
        let _ = linux::load(&*mem, data, "", None, RAM, false);
    }
});
