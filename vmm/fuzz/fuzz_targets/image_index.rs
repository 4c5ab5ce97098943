//! An image index (index.json) as `fugu image` downloads it: JSON, then the schema's
//! checks, then what the commands read from a valid one.
#![no_main]

use fugu::fuzzing::image::parse_index;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(idx) = parse_index("http://fuzz/index.json", data) else {
        return;
    };
    for img in &idx.images {
        let _ = img.total_size();
        let _ = img.kind_roles();
        for f in &img.files {
            let _ = img.file(&f.role);
            let _ = fugu::fuzzing::image::file_name(&f.path);
        }
        assert!(idx.find(&img.name).is_some());
    }
});
