//! `fugu-bench`: the helpers `cargo xtask bench` measures fugu with (docs/bench.md), kept out
//! of the shipped `fugu` binary: `fugu-bench bench-exits` (a bare KVM loop on fugu's
//! hypervisor layer) and `fugu-bench bench-blk` (4 KiB reads through the virtio-blk model).
//! Each prints one line of `key=value` pairs on stdout.

use clap::Parser;
use fugu::exit_status::ExitStatus;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = fugu::bench::BenchCli::parse();
    match fugu::bench::main(cli.command) {
        Ok(line) => {
            println!("{line}");
            ExitStatus::Success.into()
        }
        Err(e) => {
            eprintln!("fugu-bench: error: {e}");
            ExitStatus::Failure.into()
        }
    }
}
