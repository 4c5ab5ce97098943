//! Build what the runnable cells boot before any of them starts.

use super::{Artifacts, Options, Runner};
use crate::matrix_def::Cell;
use crate::probe;
use crate::targets::Target;
use crate::util::{self, step, Result};
use crate::{build, guests};

/// Build what `cells` (with their runners) boot: the fugu builds, the tiny guests and boot
/// programs, the Linux images (or, with --no-build, find them in target/). What cannot be
/// built is recorded in the artifacts, and the cells that need it FAIL with the reason.
pub fn prepare(cells: &[(&Cell, Runner)], o: &Options) -> Result<Artifacts> {
    let mut arts = Artifacts {
        log_dir: o.log_dir.clone(),
        images: util::root().join("target").join("images").join("out"),
        ..Artifacts::default()
    };
    std::fs::create_dir_all(&arts.log_dir)?;
    // Build only what the runnable cells use.
    let mut builds: Vec<Target> = Vec::new();
    // The build axis values the cells name (x86_64-portable runs the x86_64 build).
    let mut axis_builds: Vec<String> = Vec::new();
    let mut want_guests = false;
    let mut want_images: Vec<String> = Vec::new();
    for (cell, r) in cells {
        let b = cell.get("build");
        if let Some((t, _)) = super::runner::build_of(b) {
            if !builds.contains(&t) {
                builds.push(t);
            }
            if !axis_builds.iter().any(|x| x == b) {
                axis_builds.push(b.to_string());
            }
        }
        want_guests |= r.needs_guests();
        if let Some(image) = r
            .image(cell.get("guest"))
            .filter(|i| !want_images.contains(i))
        {
            want_images.push(image);
        }
    }
    builds.sort();
    for t in builds {
        let r = if o.build {
            build::build_fugu(t, false)
                .map_err(|e| format!("building fugu for {} failed: {e}", t.short()))
        } else {
            let p = probe::fugu_path(t);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!(
                    "fugu for {} is not built ({}) and --no-build was given",
                    t.short(),
                    p.display()
                ))
            }
        };
        if let Err(e) = &r {
            step(format!("{e}; its cells will FAIL"));
        }
        for b in &axis_builds {
            if super::runner::build_of(b).is_some_and(|(bt, _)| bt == t) {
                arts.fugu.insert(b.clone(), r.clone());
            }
        }
    }
    if o.build && !want_images.is_empty() {
        // The Linux images (a minimal kernel compile the first time, ~5-9 min with make -j2;
        // cached afterwards), through the images command so that the matrix boots exactly
        // what `cargo xtask images` builds.
        step(format!(
            "building {} (cargo xtask images)",
            want_images.join(", ")
        ));
        if let Err(e) = crate::images::build_only(&want_images) {
            step(format!(
                "building the Linux images failed: {e}; their cells will FAIL"
            ));
            for name in &want_images {
                arts.image_errors.insert(name.clone(), e.to_string());
            }
        }
    }
    if want_guests {
        let built = if o.build {
            guests::build_all()
                .map(|v| v.into_iter().map(|(g, p)| (g.name, p)).collect::<Vec<_>>())
                .map_err(|e| format!("assembling the tiny guests failed: {e}"))
        } else {
            Ok(guests::GUESTS
                .iter()
                .map(|g| (g.name, guests::out_dir().join(format!("{}.elf", g.name))))
                .collect())
        };
        for g in guests::GUESTS {
            let r = match &built {
                Ok(v) => v
                    .iter()
                    .find(|(n, _)| *n == g.name)
                    .map(|(_, p)| p.clone())
                    .ok_or_else(|| format!("missing image: guest {} was not built", g.name)),
                Err(e) => Err(e.clone()),
            };
            arts.guests.insert(g.name.to_string(), r);
        }
        // The boot programs for the firmware cells (assembled by build_all).
        for p in guests::BOOT_PROGRAMS {
            let bin = guests::out_dir().join(format!("{}.bin", p.name));
            let r = match &built {
                Ok(_) if bin.is_file() => Ok(bin),
                Ok(_) => Err(format!(
                    "missing image: boot program {} was not built",
                    p.name
                )),
                Err(e) => Err(e.clone()),
            };
            arts.guests.insert(p.name.to_string(), r);
        }
    }
    Ok(arts)
}
