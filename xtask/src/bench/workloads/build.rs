//! A no-op `cargo xtask build` against the plain cargo command it runs.

use super::super::*;

pub(super) fn xtask_build(ctx: &Ctx) -> Bench {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = util::root();
    let xtask = || {
        let mut c = Command::new(&cargo);
        c.current_dir(&root)
            .args(["xtask", "build"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let plain = || {
        let mut c = Command::new(&cargo);
        c.current_dir(&root)
            .args([
                "build",
                "--package",
                "fugu",
                "--bin",
                "fugu",
                "--target-dir",
            ])
            .arg(root.join("target"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    };
    let limit = Duration::from_secs(1800);
    // What a real build would replace: a run that changed them was not a no-op (the tree is
    // shared with people editing it) and is done again.
    let bins = [
        root.join("target/debug/xtask"),
        root.join("target/debug/fugu"),
    ];
    let stamp = || -> Vec<Option<SystemTime>> {
        bins.iter()
            .map(|b| std::fs::metadata(b).and_then(|m| m.modified()).ok())
            .collect()
    };
    let discarded = std::cell::Cell::new(0u32);
    let noop = |make: &dyn Fn() -> Command, what: &str| -> std::result::Result<f64, NoNumbers> {
        for _ in 0..4 {
            let before = stamp();
            let (t, s) = timed(&mut make(), limit, what)?;
            expect_status(s, 0, what)?;
            if stamp() == before {
                return Ok(t);
            }
            discarded.set(discarded.get() + 1);
        }
        Err(Failed(format!(
            "{what} rebuilt something on every try (is the tree being edited?)"
        )))
    };
    // The first round may really build; it is not counted.
    noop(&xtask, "cargo xtask build")?;
    noop(&plain, "cargo build")?;
    discarded.set(0);
    let (mut f, mut p) = (Vec::new(), Vec::new());
    for _ in 0..ctx.runs {
        f.push(noop(&xtask, "cargo xtask build")?);
        p.push(noop(&plain, "cargo build")?);
    }
    Ok(Measured {
        fugu: f,
        peer: Some(p),
        note: format!("nothing to rebuild (a first, uncounted round builds; {} later runs rebuilt after edits to the tree and were repeated); peer: `cargo build --package fugu --bin fugu --target-dir target`, the command the xtask runs", discarded.get()),
    })
}
