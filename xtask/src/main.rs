//! fugu's build, package, image and test tooling: `cargo xtask <command>`.
//!
//! Each subcommand is one module; the xtask stays thin: it calls cargo, apt-get, dpkg-deb and
//! the `fugu` binary, and reports progress.

mod build;
mod guests;
mod targets;
mod test;
mod toolchain;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build [--target T]... [--release]   build fugu for i686 / x86_64 / all (default: host)
  test                                fmt, clippy and every test, for both targets
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
        "test" => test::main(&args),
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
