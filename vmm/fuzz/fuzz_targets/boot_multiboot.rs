//! A Multiboot v1 kernel from the user's --kernel: the header search, the a.out-kludge and
//! ELF loads, the modules, the memory map and the information structure.
#![no_main]

use fugu::fuzzing::boot::{detect, multiboot};
use libfuzzer_sys::fuzz_target;

const RAM: u64 = 32 << 20;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    let Ok(Some(hdr)) = multiboot::find_header(data) else {
        return;
    };
    let modules = vec![
        (vec![1u8; 3000], "mod1 arg".to_string()),
        (vec![2u8; 100], String::new()),
    ];
    for mem in fugu_fuzz::memories(RAM) {
        let _ = multiboot::load(&*mem, data, &hdr, "kernel a b", &modules, RAM);
        let _ = multiboot::load(&*mem, data, &hdr, "", &[], RAM);
    }
});
