//! `fugu-bench`: the helpers `cargo xtask bench` measures fugu with (docs/bench.md), kept out
//! of the shipped `fugu` binary: `fugu-bench bench-exits` (a bare KVM loop on fugu's
//! hypervisor layer) and `fugu-bench bench-blk` (4 KiB reads through the virtio-blk model).
//! Each prints one line of `key=value` pairs on stdout. All of it is in the library (`bench`).

fn main() -> std::process::ExitCode {
    fugu::bench_main()
}
