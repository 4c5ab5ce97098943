//! Helpers shared by the matrix's unit tests.

use super::{BootSpec, Outcome};
use crate::matrix_def::{Cell, Def, Plan};
use crate::probe::Probe;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fugu-matrix-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fake "fugu": a shell script given as `sh -c SCRIPT LOG`.
pub fn fake(dir: &Path, name: &str, script: &str, timeout_s: u64) -> BootSpec {
    let serial_log = dir.join(format!("{name}.serial.log"));
    BootSpec {
        program: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into(), serial_log.clone().into()],
        serial_log,
        vmm_log: dir.join(format!("{name}.vmm.log")),
        timeout: Duration::from_secs(timeout_s),
        expect_status: 33,
        expect_markers: vec!["hello from the guest".into()],
        files: vec![],
        file_checks: vec![],
        net: None,
        accept_after_init: None,
        press_power_button: None,
        silence: None,
    }
}

pub fn reason(o: &Outcome) -> &str {
    match o {
        Outcome::Fail { reason, .. } | Outcome::Skip { reason } => reason,
        Outcome::Flaky { note } => note,
        Outcome::Pass => "PASS",
    }
}

pub fn pvm_probe() -> Probe {
    Probe {
        modules: vec!["kvm".into(), "kvm_pvm".into()],
        dev_kvm: Ok(()),
        tap: Ok(()),
        netns: Ok(()),
        ..Probe::default()
    }
}

pub fn cell_and_plan(def: &Def, id: &str) -> (Cell, Plan) {
    let c = def.cells().into_iter().find(|c| c.id() == id).unwrap();
    let plan = def.plan(&c);
    (c, plan)
}
