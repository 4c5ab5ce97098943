//! fugu's build, package, image and test tooling: `cargo xtask <command>`.
//!
//! Each subcommand is one module; the xtask stays thin: it calls cargo, apt-get, dpkg-deb and
//! the `fugu` binary, and reports progress.

mod bench;
mod build;
mod ci;
mod deb;
mod flags;
mod fuzz;
mod guests;
mod images;
mod kvm_reload;
mod matrix_def;
mod netcheck;
mod package;
mod probe;
mod progress;
mod release;
mod svm_tcg;
mod targets;
mod test;
mod test_matrix;
mod tidy;
mod toolchain;
mod util;

use std::process::ExitCode;

pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build [--target T]... [--release]   build fugu for i686 / x86_64 / all (default: host)
  package [--target T]... [--check-reproducible] [--no-lintian]
                                      release .tar.gz, .deb and SHA256SUMS in target/package/
                                      (default: all targets)
  release [--from DIR] [--images DIR] [--out DIR] [--suite S] [--target T]... [--no-lintian]
                                      signed release in target/release-dist/: packages,
                                      SHA256SUMS(.asc), apt repository, signed image index;
                                      key: FUGU_SIGNING_KEY (docs/release.md)
  images [--only NAME]... [--check-reproducible] | --update-pins | publish DIR
                                      guest images from pinned Debian packages + index.json
                                      (target/images/out/; see docs/images.md)
  test                                fmt, clippy and every test, for both targets
  bench [--filter NAME] [--runs N]    fugu vs QEMU and other peers, as ratios (docs/bench.md)
  test-matrix [--list|--probe] [...]  boot the VM matrix (ci/matrix.def); SKIP what this host can't
  test-matrix merge RESULTS...        join several hosts' results (JSON, or JUnit) into one table
  ci generate | check                 write / verify the CI pipelines generated from ci/matrix.def
  fuzz [--time S] [--runs N] [--list] [TARGET]...
                                      run the fuzz targets (libFuzzer) on their seed corpus;
                                      60 s each by default; a crash fails (docs/fuzzing.md)
  help                                this text

targets: i686 (i386, x86), x86_64 (amd64), all, or a full triple";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let cmd = args.remove(0);
    let result = match cmd.as_str() {
        "build" => build::main(&args),
        "package" => package::main(&args),
        "release" => release::main(&args),
        "images" => images::main(&args),
        "test" => test::main(&args),
        "bench" => bench::main(&args),
        "test-matrix" => test_matrix::main(&args),
        "ci" => ci::main(&args),
        "fuzz" => fuzz::main(&args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(util::Error::usage(format!(
            "unknown command '{other}'\n\n{USAGE}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::from(e.code)
        }
    }
}
