//! `fugu image ...` and `fugu run --image NAME`, as called from main.rs.

use super::commands::{self, Options};
use crate::cli::{ImageArgs, ImageCommand, RunArgs};

/// Exit status of `fugu image` when something went wrong (2 stays "invalid command line").
pub const EXIT_IMAGE_ERROR: u8 = 1;

/// Run one `fugu image` subcommand; the exit status.
pub fn main(args: ImageArgs) -> u8 {
    use std::io::IsTerminal;
    let opts = Options {
        index: args.index,
        cache: args.cache,
        progress: std::io::stderr().is_terminal(),
    };
    let result = match &args.command {
        ImageCommand::List { cached } => commands::list(&opts, *cached),
        ImageCommand::Pull { names } => commands::pull(&opts, names).map(|_| ()),
        ImageCommand::Verify { names } => commands::verify(&opts, names),
        ImageCommand::Rm { names } => commands::rm(&opts, names),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("fugu: error: {e}");
            EXIT_IMAGE_ERROR
        }
    }
}

/// For `fugu run --image NAME`: fill in the kernel, initrd, command line and disk of the
/// cached image (cache: FUGU_IMAGE_CACHE, else the XDG cache directory).
pub fn apply(args: &mut RunArgs) -> Result<(), String> {
    let Some(name) = args.image.clone() else {
        return Ok(());
    };
    let cache = std::env::var_os("FUGU_IMAGE_CACHE").map(std::path::PathBuf::from);
    let img = commands::resolve(cache, &name).map_err(|e| e.to_string())?;
    if !matches!(img.kind.as_str(), "linux" | "multiboot" | "elf") {
        return Err(format!(
            "image '{name}' is of kind '{}', which this fugu cannot boot",
            img.kind
        ));
    }
    args.kernel = Some(img.kernel);
    if let Some(initrd) = img.initrd {
        args.initrd.insert(0, initrd.to_string_lossy().into_owned());
    }
    if let Some(disk) = img.disk {
        // Read-only: the cached image stays as pulled (and `fugu image verify` stays true).
        args.disk.insert(
            0,
            crate::devices::virtio::setup::DiskConfig {
                path: disk,
                read_only: true,
            },
        );
    }
    args.cmdline = match (img.cmdline.is_empty(), args.cmdline.is_empty()) {
        (_, true) => img.cmdline,
        (true, false) => std::mem::take(&mut args.cmdline),
        (false, false) => format!("{} {}", img.cmdline, args.cmdline),
    };
    Ok(())
}
