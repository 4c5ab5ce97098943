//! The `fugu` process: what `main.rs` runs. Picks the command (the hidden documentation
//! commands, `fugud` by its name, `run`, `image`, `disk`, the control commands) and maps its
//! end to an exit status; `fugu run` itself is in `run.rs`.

mod run;
mod serial_log;

use crate::cli::{Cli, Command};
use crate::exit_status::ExitStatus;
use clap::Parser;
use std::process::ExitCode;

/// The `fugu` binary (and `fugud`, the same binary under another name).
pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if crate::cli::DocCli::requested(&argv) {
        return docs(crate::cli::DocCli::parse_from(argv).command);
    }
    // fugud is this binary under another name (a link in the package).
    let called = argv
        .first()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str());
    if called == Some("fugud") {
        return crate::control::daemon::main(crate::cli::FugudCli::parse_from(argv));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Image(args) => ExitCode::from(crate::image::run::main(args)),
        Command::Disk(args) => disk(args.command),
        cmd => crate::control::client::main(cmd),
    }
}

/// `fugu disk create` and `fugu disk info`.
fn disk(cmd: crate::cli::DiskCommand) -> ExitCode {
    use crate::cli::{DiskCommand, DiskFormatArg};
    use crate::devices::virtio::blk::{image, Format};
    let r = match cmd {
        DiskCommand::Create {
            path,
            size,
            base,
            format,
        } => {
            let format = match format {
                Some(DiskFormatArg::Raw) => Format::Raw,
                Some(DiskFormatArg::Qcow2) => Format::Qcow2,
                None if base.is_some() || path.extension().is_some_and(|e| e == "qcow2") => {
                    Format::Qcow2
                }
                None => Format::Raw,
            };
            image::create(&path, size, base.as_deref(), format).map(|()| {
                println!("created {} ({})", path.display(), format.name());
            })
        }
        DiskCommand::Info { path } => image::info(&path).map(|s| print!("{s}")),
    };
    match r {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => {
            eprintln!("fugu: error: {e}");
            ExitStatus::Failure.into()
        }
    }
}

/// The hidden `fugu manpage [--out-dir DIR]` and `fugu completions <SHELL>` (for packaging).
fn docs(cmd: crate::cli::DocCommand) -> ExitCode {
    use crate::cli::DocCommand;
    let mut out = std::io::stdout();
    let result = match cmd {
        DocCommand::Manpage { out_dir } => crate::cli::manpages(out_dir.as_deref(), &mut out)
            .and_then(|written| {
                use std::io::Write;
                written
                    .iter()
                    .try_for_each(|p| writeln!(out, "{}", p.display()))
            }),
        DocCommand::Completions { shell } => crate::cli::completions(shell, &mut out),
        DocCommand::AcpiTables {
            cpus,
            bios_memory,
            out_dir,
        } => acpi_tables(cpus, bios_memory, &out_dir),
    };
    match result {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => {
            eprintln!("fugu: error: {e}");
            ExitStatus::Failure.into()
        }
    }
}

/// The hidden `fugu acpi-tables`: the tables of a VM with `cpus` vCPUs, one file each.
fn acpi_tables(cpus: u8, bios_memory: Option<u64>, dir: &std::path::Path) -> std::io::Result<()> {
    use crate::acpi::{build, dump, Config};
    let cfg = match bios_memory {
        Some(m) => Config::firmware(cpus.max(1), m),
        None => Config::direct(cpus.max(1)),
    };
    std::fs::create_dir_all(dir)?;
    let written = dump(&build(&cfg), dir).map_err(std::io::Error::other)?;
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}
