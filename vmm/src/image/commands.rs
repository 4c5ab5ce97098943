//! The `fugu image` subcommands; results on stdout, progress and notes on stderr.

use super::cache::{Cache, Cached, Entry};
use super::fetch::{self, Location, Progress};
use super::index::{self, Image};
use super::signature::Policy;
use super::ImageError;
use std::path::PathBuf;

/// Options shared by the subcommands.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// --index / FUGU_IMAGE_INDEX; None means the default ([`super::DEFAULT_INDEX`]).
    pub index: Option<String>,
    /// --cache; None means the XDG cache directory.
    pub cache: Option<PathBuf>,
    /// Draw progress bars (when stderr is a terminal).
    pub progress: bool,
    /// How the index is trusted: its signature against a keyring, or not at all.
    pub signature: Policy,
}

impl Options {
    /// Where the index is, and the index, checked; a failure with the default index says
    /// what that index is and how to use another.
    fn index(&self) -> Result<(Location, index::Index), ImageError> {
        let fetched = Location::parse(self.index.as_deref().unwrap_or(super::DEFAULT_INDEX))
            .and_then(|loc| fetch::fetch_index(&loc, &self.signature).map(|idx| (loc, idx)));
        match fetched {
            Err(e) if self.index.is_none() => Err(ImageError::DefaultIndex {
                source: Box::new(e),
            }),
            other => other,
        }
    }
}

fn human(n: u64) -> String {
    fugu_common::units::human_bytes(n)
}

/// `fugu image list`: the index's images and which are cached; with `cached_only` the cache
/// alone, without the network.
pub fn list(opts: &Options, cached_only: bool) -> Result<(), ImageError> {
    let cache = Cache::open(opts.cache.clone())?;
    let cached = cache.list()?;
    let is_cached = |img: &Image| {
        cached.iter().any(|c| {
            matches!(c, Ok(c) if c.entry.image.name == img.name
                && c.entry.image.files == img.files)
        })
    };
    if !cached_only {
        let (loc, idx) = opts.index()?;
        println!(
            "{:<16} {:<6} {:<10} {:>10}  {:<8} description",
            "NAME", "ARCH", "KIND", "SIZE", "CACHED"
        );
        for img in &idx.images {
            let state = if is_cached(img) {
                "yes"
            } else if cached
                .iter()
                .any(|c| matches!(c, Ok(c) if c.entry.image.name == img.name))
            {
                "outdated"
            } else {
                "-"
            };
            println!(
                "{:<16} {:<6} {:<10} {:>10}  {:<8} {}",
                img.name,
                img.arch,
                img.kind,
                human(img.total_size()),
                state,
                img.description
            );
        }
        println!("({} image(s) in {loc})", idx.images.len());
        return Ok(());
    }
    println!(
        "{:<16} {:<6} {:<10} {:>10}  source",
        "NAME", "ARCH", "KIND", "SIZE"
    );
    for c in &cached {
        match c {
            Ok(c) => println!(
                "{:<16} {:<6} {:<10} {:>10}  {}",
                c.entry.image.name,
                c.entry.image.arch,
                c.entry.image.kind,
                human(c.entry.image.total_size()),
                c.entry.source
            ),
            Err((n, e)) => println!("{n:<16} (damaged: {e})"),
        }
    }
    println!("(cache: {})", cache.root.display());
    Ok(())
}

/// A progress bar on stderr for one file, or nothing.
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new(show: bool, len: u64, label: &str) -> Bar {
        if !show {
            return Bar(None);
        }
        let pb = indicatif::ProgressBar::with_draw_target(
            Some(len),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message(label.to_string());
        Bar(Some(pb))
    }

    fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish();
        }
    }
}

impl Progress for Bar {
    fn set(&self, done: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(done);
        }
    }

    fn note(&self, msg: &str) {
        match &self.0 {
            Some(pb) => pb.println(format!("fugu: {msg}")),
            None => eprintln!("fugu: {msg}"),
        }
    }
}

/// `fugu image pull NAME...`
pub fn pull(opts: &Options, names: &[String]) -> Result<Vec<Cached>, ImageError> {
    let (loc, idx) = opts.index()?;
    let cache = Cache::open(opts.cache.clone())?;
    // Every name must exist before anything is downloaded.
    let mut images = Vec::new();
    for n in names {
        let img = idx.find(n).ok_or_else(|| ImageError::UnknownImage {
            name: n.clone(),
            have: idx
                .images
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        let have = env!("CARGO_PKG_VERSION");
        if !super::version_at_least(have, &img.min_fugu_version) {
            return Err(ImageError::TooOld {
                name: n.clone(),
                need: img.min_fugu_version.clone(),
                have: have.into(),
            });
        }
        images.push(img.clone());
    }
    let mut done = Vec::new();
    for img in images {
        done.push(pull_one(opts, &cache, &loc, &img)?);
    }
    Ok(done)
}

fn pull_one(
    opts: &Options,
    cache: &Cache,
    loc: &Location,
    img: &Image,
) -> Result<Cached, ImageError> {
    let up_to_date = || {
        cache
            .load(&img.name)
            .ok()
            .filter(|c| c.entry.image.files == img.files && cache.verify(&img.name).is_ok())
    };
    if let Some(c) = up_to_date() {
        println!("{}: up to date in {}", img.name, c.dir.display());
        return Ok(c);
    }
    // One pull of an image at a time: a second one waits, then finds the image in place.
    let lock = cache.lock(
        &img.name,
        Some(&|lock: &std::path::Path| {
            eprintln!(
                "fugu: another fugu is pulling image '{}' (it holds {}); waiting for it",
                img.name,
                lock.display()
            )
        }),
    )?;
    if let Some(c) = up_to_date() {
        println!("{}: up to date in {}", img.name, c.dir.display());
        return Ok(c);
    }
    let partial = cache.partial_dir(&img.name);
    std::fs::create_dir_all(&partial).map_err(|e| ImageError::io(partial.display(), e))?;
    let result = check_space(&partial, img).and_then(|()| fetch_files(opts, loc, img, &partial));
    let result = match result {
        Ok(()) => cache.install(
            &partial,
            &Entry {
                source: loc.to_string(),
                image: img.clone(),
            },
        ),
        Err(e) => Err(e),
    };
    let kept = match &result {
        // A network failure (an HTTP error status included) keeps what was downloaded so
        // the next pull resumes; anything else (a checksum or size mismatch) leaves nothing.
        Err(ImageError::Network { .. }) => partial_has_data(&partial),
        Err(_) => false,
        Ok(_) => true,
    };
    if !kept {
        let _ = std::fs::remove_dir_all(&partial);
    }
    drop(lock);
    // Each only succeeds when empty: no other pull in progress, nothing else cached.
    let _ = std::fs::remove_dir(cache.root.join(".partial"));
    match result {
        Ok(c) => {
            println!(
                "{}: {} in {} files, verified, in {}",
                img.name,
                human(img.total_size()),
                img.files.len(),
                c.dir.display()
            );
            Ok(c)
        }
        // Say where the bytes are only when they really are kept.
        Err(ImageError::Network { url, msg }) if kept => Err(ImageError::Network {
            url,
            msg: format!(
                "{msg}; what was downloaded is kept in {} and the next `fugu image pull {}` resumes there",
                partial.display(),
                img.name
            ),
        }),
        Err(e) => {
            let _ = std::fs::remove_dir(&cache.root);
            Err(e)
        }
    }
}

/// Refuse a pull that cannot fit in the cache's file system before downloading anything
/// (an index may declare any size).
fn check_space(partial: &std::path::Path, img: &Image) -> Result<(), ImageError> {
    // What is already there (complete files, resumable parts) needs no new space.
    let need: u64 = img
        .files
        .iter()
        .map(|f| {
            let name = index::file_name(&f.path);
            let have = [partial.join(name), partial.join(format!("{name}.part"))]
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0);
            f.size.saturating_sub(have)
        })
        .fold(0u64, u64::saturating_add);
    let free = free_bytes(partial).map_err(|e| ImageError::io(partial.display(), e))?;
    if need > free {
        return Err(ImageError::NoSpace {
            name: img.name.clone(),
            need,
            free,
            dir: partial.display().to_string(),
        });
    }
    Ok(())
}

/// Bytes an unprivileged user may still write in the file system holding `dir`.
fn free_bytes(dir: &std::path::Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: struct statvfs is plain integers: all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes one struct statvfs into `st`; `c` is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)] // the field widths differ between targets
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

fn partial_has_data(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .any(|e| e.metadata().map(|m| m.len() > 0).unwrap_or(false))
        })
        .unwrap_or(false)
}

fn fetch_files(
    opts: &Options,
    loc: &Location,
    img: &Image,
    partial: &std::path::Path,
) -> Result<(), ImageError> {
    for f in &img.files {
        let name = index::file_name(&f.path);
        let final_path = partial.join(name);
        let part = partial.join(format!("{name}.part"));
        if final_path.exists() {
            if super::sha256_file(&final_path)? == f.sha256 {
                continue;
            }
            let _ = std::fs::remove_file(&final_path);
        }
        let src = loc.join(&f.path);
        let resumed = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        if resumed > 0 && resumed < f.size {
            eprintln!("fugu: resuming {} at byte {resumed}", f.path);
        }
        let bar = Bar::new(opts.progress, f.size, &f.path);
        bar.set(resumed.min(f.size));
        let r = fetch::download(&src, f, &part, &bar);
        bar.finish();
        let sum = r?;
        if sum != f.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(ImageError::Checksum {
                what: src.to_string(),
                expected: f.sha256.clone(),
                got: sum,
            });
        }
        std::fs::rename(&part, &final_path).map_err(|e| ImageError::io(final_path.display(), e))?;
    }
    Ok(())
}

/// `fugu image verify [NAME...]` (all cached images when none are named).
pub fn verify(opts: &Options, names: &[String]) -> Result<(), ImageError> {
    let cache = Cache::open(opts.cache.clone())?;
    let names: Vec<String> = if names.is_empty() {
        cache
            .list()?
            .into_iter()
            .map(|c| match c {
                Ok(c) => c.entry.image.name,
                Err((n, _)) => n,
            })
            .collect()
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        println!("no images in {}", cache.root.display());
        return Ok(());
    }
    let mut first_err = None;
    for n in &names {
        match cache.verify(n) {
            Ok(c) => println!("{n}: ok ({} files)", c.entry.image.files.len()),
            Err(e) => {
                println!("{n}: FAILED: {e}");
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// `fugu image rm NAME...`
pub fn rm(opts: &Options, names: &[String]) -> Result<(), ImageError> {
    let cache = Cache::open(opts.cache.clone())?;
    for n in names {
        if cache.remove(n)? {
            println!("{n}: removed");
        } else {
            return Err(ImageError::NotCached(n.clone()));
        }
    }
    Ok(())
}

/// What `fugu run --image NAME` boots: the cached files by role (which of them an image has
/// depends on its kind; see [`index::KINDS`]).
#[derive(Debug, Clone)]
pub struct RunImage {
    pub kind: String,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub disk: Option<PathBuf>,
    /// The disk's format as the index gives it ("raw" when it says nothing).
    pub disk_format: String,
    /// A network boot program (kind "pxe").
    pub nbp: Option<PathBuf>,
    pub cmdline: String,
}

/// Resolve a cached image for `fugu run --image`: every file it lists must be there, with
/// its checksum (checked again only when a file changed since it was last verified).
pub fn resolve(cache_dir: Option<PathBuf>, name: &str) -> Result<RunImage, ImageError> {
    let cache = Cache::open(cache_dir)?;
    let c = cache.load_verified(name)?;
    Ok(RunImage {
        kind: c.entry.image.kind.clone(),
        kernel: c.path("kernel"),
        initrd: c.path("initrd"),
        disk: c.path("disk"),
        disk_format: c
            .entry
            .image
            .file("disk")
            .and_then(|f| f.format.clone())
            .unwrap_or_else(|| "raw".into()),
        nbp: c.path("nbp"),
        cmdline: c.entry.image.cmdline.clone(),
    })
}
