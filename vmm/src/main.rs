use clap::Parser;
use fugu::cli::{BackendArg, Cli, Command, RunArgs};
use fugu::hypervisor::Backend;
use fugu::vm::{Machine, VmConfig};
use std::process::ExitCode;

/// fugu's own failure to start a VM (see the EXIT STATUS section of --help).
const EXIT_SETUP: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))
}

fn run(args: RunArgs) -> ExitCode {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        fugu::console::restore_terminal();
        prev(info);
    }));
    match setup(args) {
        Ok((machine, _raw)) => {
            let exit = machine.run();
            drop(_raw);
            eprintln!("fugu: {}", exit.describe());
            ExitCode::from(exit.status() as u8)
        }
        Err(msg) => {
            eprintln!("fugu: error: {msg}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

fn setup(args: RunArgs) -> Result<(Machine, Option<fugu::console::RawTerminal>), String> {
    let backend = match args.backend {
        Some(BackendArg::RustVmm) => Backend::RustVmm,
        Some(BackendArg::Portable) => Backend::Portable,
        None => Backend::host_default(),
    };
    let kernel = read_file("kernel", &args.kernel)?;
    let mut modules = Vec::new();
    for spec in &args.initrd {
        let path = spec.split_whitespace().next().unwrap_or(spec);
        modules.push((
            read_file("initrd", std::path::Path::new(path))?,
            spec.clone(),
        ));
    }
    let (serial_out, serial_in): (Box<dyn std::io::Write + Send>, bool) = match args.serial.as_str()
    {
        "stdio" => (Box::new(std::io::stdout()), true),
        "none" => (Box::new(std::io::sink()), false),
        path => (
            Box::new(
                std::fs::File::create(path)
                    .map_err(|e| format!("cannot create serial log {path}: {e}"))?,
            ),
            false,
        ),
    };
    let cfg = VmConfig {
        backend,
        mem_size: args.memory,
        cpus: args.cpus,
        kernel,
        cmdline: args.cmdline,
        modules,
        serial_out,
        serial_in,
    };
    let machine = Machine::new(cfg).map_err(|e| e.to_string())?;
    let raw = serial_in.then(fugu::console::RawTerminal::enable);
    Ok((machine, raw))
}
