//! An image index (index.json) as `fugu image` downloads it: JSON, then the schema's
//! checks, then what the commands read from a valid one.
#![no_main]

use fugu::image::fetch::parse_index;
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
            let _ = fugu::image::index::file_name(&f.path);
        }
        assert!(idx.find(&img.name).is_some());
    }
});
