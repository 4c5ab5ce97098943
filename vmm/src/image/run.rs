//! `fugu image ...` and `fugu run --image NAME`, as called from `app`.

use super::commands::{self, Options};
use super::signature::Policy;
use crate::cli::{BootArg, ImageArgs, ImageCommand, RunArgs};
use std::path::PathBuf;

/// Exit status of `fugu image` when something went wrong (2 stays "invalid command line").
pub const EXIT_IMAGE_ERROR: u8 = fugu_common::status::ExitStatus::ImageError.code();

/// Run one `fugu image` subcommand; the exit status.
pub fn main(args: ImageArgs) -> u8 {
    use std::io::IsTerminal;
    let opts = Options {
        index: args.index,
        cache: args.cache,
        progress: std::io::stderr().is_terminal(),
        signature: match (args.insecure_skip_signature, args.keyring) {
            (true, _) => Policy::Skip,
            (false, Some(k)) => Policy::Verify(k),
            (false, None) => Policy::default(),
        },
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

/// Why `fugu run --image NAME` cannot boot the image.
#[derive(Debug, thiserror::Error)]
pub enum RunImageError {
    /// Not in the cache, or the cache cannot be read or verified.
    #[error(transparent)]
    Image(#[from] super::ImageError),
    /// The cached image lacks the file its kind boots (`what`: "kernel", "disk").
    #[error(
        "cached image '{name}' is damaged: it has no {what} file; run `fugu image pull {name}` \
         again"
    )]
    Damaged { name: String, what: &'static str },
    #[error(
        "image '{0}' is a BIOS disk (kind bios-disk): the firmware boots its master boot \
         record, so --initrd and --cmdline do not apply"
    )]
    BiosDiskArgs(String),
    /// `nbp`: the cached network boot program, where the index names one.
    #[error(
        "image '{name}' is a PXE network boot program (kind pxe), not something fugu boots \
         from the cache: a DHCP/TFTP server on the guest's network serves it and the \
         firmware's network boot loads it. Serve {} (e.g. dnsmasq with --enable-tftp and \
         --dhcp-boot) on a tap device and run `fugu run --bios --net tap=NAME --boot net`",
        nbp_file(.name, .nbp.as_deref())
    )]
    Pxe { name: String, nbp: Option<PathBuf> },
    #[error("image '{name}' is of kind '{kind}', which this fugu cannot boot")]
    UnknownKind { name: String, kind: String },
}

/// What a PXE image's message tells the user to serve.
fn nbp_file(name: &str, nbp: Option<&std::path::Path>) -> String {
    nbp.map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("the '{name}' image's nbp file"))
}

/// For `fugu run --image NAME`: fill in what the cached image boots with (cache:
/// FUGU_IMAGE_CACHE, else the XDG cache directory). See [`apply_from`].
pub fn apply(args: &mut RunArgs) -> Result<(), RunImageError> {
    let cache = std::env::var_os("FUGU_IMAGE_CACHE").map(std::path::PathBuf::from);
    apply_from(cache, args)
}

/// `--image NAME` from the cache `cache` (None: the XDG default), by the image's kind:
///
/// - "linux", "multiboot", "elf": its kernel, initrd and command line (`--cmdline` is
///   appended), and its disk, read-only, as the first `--disk`.
/// - "bios-disk": booted through the BIOS from its disk, as with
///   `--bios --disk FILE,ro --boot disk` (the disk first, read-only, further `--disk`s after).
/// - "pxe": refused with an explanation: a network boot program is served to the guest by a
///   DHCP/TFTP server, not booted from the cache.
pub fn apply_from(cache: Option<PathBuf>, args: &mut RunArgs) -> Result<(), RunImageError> {
    let Some(name) = args.image.clone() else {
        return Ok(());
    };
    let img = commands::resolve(cache, &name)?;
    match img.kind.as_str() {
        "linux" | "multiboot" | "elf" => {
            let kernel = img.kernel.ok_or_else(|| RunImageError::Damaged {
                name: name.clone(),
                what: "kernel",
            })?;
            args.kernel = Some(kernel);
            if let Some(initrd) = img.initrd {
                args.initrd.insert(0, initrd.to_string_lossy().into_owned());
            }
            if let Some(disk) = img.disk {
                insert_read_only_disk(args, disk, &img.disk_format);
            }
            args.cmdline = match (img.cmdline.is_empty(), args.cmdline.is_empty()) {
                (_, true) => img.cmdline,
                (true, false) => std::mem::take(&mut args.cmdline),
                (false, false) => format!("{} {}", img.cmdline, args.cmdline),
            };
            Ok(())
        }
        "bios-disk" => {
            let disk = img.disk.ok_or_else(|| RunImageError::Damaged {
                name: name.clone(),
                what: "disk",
            })?;
            if !args.initrd.is_empty() || !args.cmdline.is_empty() {
                return Err(RunImageError::BiosDiskArgs(name));
            }
            args.bios = Some(None);
            args.boot = Some(BootArg::Disk);
            insert_read_only_disk(args, disk, &img.disk_format);
            Ok(())
        }
        "pxe" => Err(RunImageError::Pxe { name, nbp: img.nbp }),
        other => Err(RunImageError::UnknownKind {
            name,
            kind: other.to_string(),
        }),
    }
}

/// The image's disk, read-only, as the first virtio disk (`/dev/vda`), in the format the
/// index gives: the cached image stays as pulled (and `fugu image verify` stays true).
fn insert_read_only_disk(args: &mut RunArgs, path: PathBuf, format: &str) {
    use crate::devices::virtio::blk::Format;
    args.disk.insert(
        0,
        crate::devices::virtio::setup::DiskConfig {
            path,
            read_only: true,
            format: Some(if format == "qcow2" {
                Format::Qcow2
            } else {
                Format::Raw
            }),
        },
    );
}
