//! The BIOS boot programs (MBR and PXE NBP) as images: assembled sectors with their check.

use super::*;

/// The size of a sector, and where a master boot record keeps its signature 55 AA.
const SECTOR: usize = 512;

/// A boot program of images/guests/mbr.S (xtask/src/guests.rs, `[program] name`) as an image
/// of its kind: "bios-disk", a raw disk image of `[disk] size_mib` MiB that starts with the
/// program (sector 0 is the MBR, its stage follows); or "pxe", the network boot program as
/// one file for a TFTP server. Both are the assembled bytes and zeros, so they are as
/// reproducible as the assembly. Returns (file name, role).
pub(super) fn boot_program(
    ctx: &Ctx,
    r: &Recipe,
    stage: &Path,
    sources: &mut Vec<index::Source>,
) -> std::result::Result<(String, &'static str), Problem> {
    let want = need(r, "program", "name")?;
    let arch = need(r, "image", "arch")?;
    let built = guests::build_boot_programs().map_err(|e| Problem::Fail(e.msg))?;
    let (prog, bin) = built
        .into_iter()
        .find(|(p, _)| p.name == want)
        .ok_or_else(|| {
            Problem::Fail(format!(
                "{}: no boot program named '{want}' in xtask/src/guests.rs",
                r.rel
            ))
        })?;
    if prog.arch != arch {
        return Err(Problem::Fail(format!(
            "{}: arch is {arch}, but boot program {want} ends in {} mode",
            r.rel, prog.arch
        )));
    }
    let dir = ctx.root.join("images/guests");
    for f in guests::BOOT_PROGRAM_SOURCES {
        sources.push(source(ctx, &dir.join(f))?);
    }
    let data = std::fs::read(&bin)?;
    match need(r, "image", "kind")?.as_str() {
        "bios-disk" => {
            if data.len() < SECTOR || data[SECTOR - 2..SECTOR] != [0x55, 0xaa] {
                return Err(Problem::Fail(format!(
                    "{}: {} is not a master boot record (no 55 AA at byte 510)",
                    r.rel,
                    bin.display()
                )));
            }
            let size_mib: usize = need(r, "disk", "size_mib")?.parse().map_err(|_| {
                Problem::Fail(format!("{}: [disk] size_mib must be a number", r.rel))
            })?;
            let size = size_mib << 20;
            if size < data.len() {
                return Err(Problem::Fail(format!(
                    "{}: [disk] size_mib = {size_mib} is smaller than {want} ({} bytes)",
                    r.rel,
                    data.len()
                )));
            }
            let mut disk = data;
            disk.resize(size, 0);
            std::fs::write(stage.join("disk.img"), disk)?;
            Ok(("disk.img".into(), "disk"))
        }
        "pxe" => {
            let file = format!("{want}.pxe");
            std::fs::write(stage.join(&file), data)?;
            Ok((file, "nbp"))
        }
        other => Err(Problem::Fail(format!(
            "{}: builder boot-program makes kind bios-disk or pxe, not '{other}'",
            r.rel
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_boot_program_is_an_image_of_its_kind() {
        let root = util::root();
        let all = load_recipes(&root, &[]).unwrap();
        for p in guests::BOOT_PROGRAMS {
            let r = all
                .iter()
                .find(|r| r.name() == p.name)
                .unwrap_or_else(|| panic!("no images/{}.image", p.name));
            assert_eq!(r.builder(), "boot-program", "{}", r.rel);
            assert_eq!(r.get("program", "name"), Some(p.name), "{}", r.rel);
            assert_eq!(r.get("image", "arch"), Some(p.arch), "{}", r.rel);
            let kind = if p.name.starts_with("nbp-") {
                "pxe"
            } else {
                "bios-disk"
            };
            assert_eq!(r.get("image", "kind"), Some(kind), "{}", r.rel);
            assert!(
                index::KINDS.iter().any(|(k, _)| *k == kind),
                "{kind} is not a kind fugu knows"
            );
        }
    }
}
