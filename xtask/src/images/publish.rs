//! Publishing built images to a directory, and `--update-pins`.

use super::*;

/// The name of an image's file in a published tree: `IMAGE.FILE`, side by side with
/// index.json and every other image's files. Flat, because a GitHub release's assets (where
/// fugu's default index lives) are one flat list of names.
fn flat_name(image: &str, path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    format!("{image}.{file}")
}

/// Copy the built images and index.json into DIR, flat (see [`flat_name`]), which any static
/// HTTP server, or a release's assets, can serve.
pub(super) fn publish(out: &Path, idx: &index::Index, dir: &Path) -> Result {
    std::fs::create_dir_all(dir)?;
    let mut published = idx.clone();
    for img in &mut published.images {
        for f in &mut img.files {
            let from = out.join(&f.path);
            f.path = flat_name(&img.name, &f.path);
            let to = dir.join(&f.path);
            let tmp = to.with_extension("publish-tmp");
            std::fs::copy(&from, &tmp)?;
            std::fs::rename(&tmp, &to)?;
        }
    }
    let idx = &published;
    // A signature of an earlier index would not match the new one: `release --images`
    // signs this one.
    match std::fs::remove_file(dir.join("index.json.asc")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    // The index goes last, so a server never lists a file that is not there yet.
    let json = serde_json::to_string_pretty(idx).map_err(|e| Error::fail(e.to_string()))? + "\n";
    write_atomic(&dir.join("index.json"), json.as_bytes())?;
    println!(
        "published {} image(s) to {}; fugu needs the index signed:\n    \
         FUGU_SIGNING_KEY=KEY.asc cargo xtask release --images {} (docs/release.md)\n\
         then serve target/release-dist/images with any static HTTP server, e.g.\n    \
         python3 -m http.server -d target/release-dist/images 8000\nand point fugu at it:\n    \
         fugu image list --index http://HOST:8000/index.json \
         (or, unsigned: --insecure-skip-signature)",
        idx.images.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}

pub(super) fn update_pins(recipes: &[Recipe]) -> Result {
    let mut changed = 0;
    let mut kept = Vec::new();
    for r in recipes {
        let mut text = r.text.clone();
        for p in r.pins().map_err(Error::fail)? {
            match debs::current(&p) {
                Ok(new) if new == p => {
                    println!("{:<14} {} {} (unchanged)", r.name(), p.name, p.version)
                }
                Ok(new)
                    if (&new.name, &new.version, &new.sha256)
                        == (&p.name, &p.version, &p.sha256) =>
                {
                    println!(
                        "{:<14} {} {} (unchanged; its archive path recorded)",
                        r.name(),
                        p.name,
                        p.version
                    );
                    text = recipe::rewrite_pin(&text, &p.name, &new);
                    changed += 1;
                }
                Ok(new) => {
                    println!(
                        "{:<14} {} {} -> {} {}",
                        r.name(),
                        p.name,
                        p.version,
                        new.name,
                        new.version
                    );
                    text = recipe::rewrite_pin(&text, &p.name, &new);
                    changed += 1;
                }
                Err(why) => {
                    println!("{:<14} {} {} (kept: {why})", r.name(), p.name, p.version);
                    kept.push(format!("{}: {why}", r.name()));
                }
            }
        }
        if text != r.text {
            recipe::parse(&r.rel, &text).map_err(Error::fail)?;
            write_atomic(&r.path, text.as_bytes())?;
        }
    }
    println!("{changed} pin(s) updated; review with git diff images/");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn published_files_are_flat_and_named_after_their_image() {
        assert_eq!(
            super::flat_name("debian-amd64", "debian-amd64/vmlinuz"),
            "debian-amd64.vmlinuz"
        );
        assert_eq!(
            super::flat_name("mbr-i386", "disk.img"),
            "mbr-i386.disk.img"
        );
    }
}
