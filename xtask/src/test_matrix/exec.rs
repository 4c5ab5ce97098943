//! Boot one cell and judge it: fugu (through `ip netns exec` and with the host side of its
//! network when the cell has one) must exit with the expected status, leave every marker in
//! the serial log and the bytes it must write in its files. Retries make a later pass FLAKY.

use super::runner::INIT_STARTED;
use super::{BootSpec, Outcome};
use crate::netcheck;
use fugu_common::proc::{signal_name, tail_file, Proc, Waited};
use fugu_common::status::ExitStatus;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Boot one cell and judge it. Never returns Pass unless the command ran to the expected end.
pub fn execute(spec: &BootSpec, interrupted: &AtomicBool) -> Outcome {
    // The cell's files first: dnsmasq checks its TFTP folder when it starts and serves
    // nothing (no DHCP either) when the folder is missing, as it was on a fresh clone's first
    // network boot.
    for (p, data) in &spec.files {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        if let Err(e) = std::fs::write(p, data) {
            return Outcome::fail(format!("cannot write {}: {e}", p.display()));
        }
    }
    let Some(net) = &spec.net else {
        return boot(spec, &[], interrupted);
    };
    if !spec.program.is_file() {
        return Outcome::fail(format!("missing fugu binary {}", spec.program.display()));
    }
    if let Err(e) = netcheck::setup(net) {
        return Outcome::fail(format!("cannot set up the tap in a network namespace: {e}"));
    }
    // dnsmasq on the host side (DHCP, and TFTP for network boots); the guest's log shows the
    // lease it got.
    let mut dnsmasq = None;
    if net.dhcp.is_some() {
        let dir = spec.vmm_log.parent().unwrap_or(Path::new("."));
        let log = spec.vmm_log.with_extension("dnsmasq.log");
        match netcheck::start_dnsmasq(net, dir, &log) {
            Ok(child) => dnsmasq = Some(child),
            Err(e) => {
                netcheck::teardown(net);
                return Outcome::fail(format!("cannot start DHCP on the tap: {e}"));
            }
        }
    }
    let stop_dnsmasq = |d: Option<std::process::Child>| {
        if let Some(mut d) = d {
            let _ = d.kill();
            let _ = d.wait();
        }
    };
    if net.dhcp.is_some() && !net.answer_frames {
        let o = boot(spec, &["ip", "netns", "exec", &net.ns], interrupted);
        stop_dnsmasq(dnsmasq);
        netcheck::teardown(net);
        return o;
    }
    // The frame responder: the guest's frame must come from its MAC and get an answer.
    let stop = AtomicBool::new(false);
    let (outcome, seen) = std::thread::scope(|s| {
        let (ready, listening) = std::sync::mpsc::channel();
        let host = s.spawn(|| netcheck::respond(net, &stop, ready));
        // Under load the responder's thread may start late; a frame the guest sends before
        // the socket is bound is lost (seen once on 3 December: the guest waited 30 s and
        // failed). A responder that cannot open its socket drops `ready` and says why below.
        let _ = listening.recv_timeout(Duration::from_secs(30));
        let o = boot(spec, &["ip", "netns", "exec", &net.ns], interrupted);
        stop.store(true, Ordering::SeqCst);
        let seen = host
            .join()
            .unwrap_or_else(|_| Err("the host-side responder panicked".into()));
        (o, seen)
    });
    stop_dnsmasq(dnsmasq);
    netcheck::teardown(net);
    match (outcome, seen) {
        (Outcome::Pass, Ok(mac)) if mac == net.mac => Outcome::Pass,
        (Outcome::Pass, Ok(mac)) => Outcome::fail(format!(
            "the host side got the guest's frame from {mac:02x?}, expected {}",
            net.mac_text()
        )),
        (Outcome::Pass, Err(e)) => Outcome::fail(e),
        (o, _) => o,
    }
}

/// How a boot's wait ended.
enum End {
    Exited(std::process::ExitStatus),
    Interrupted,
    TimedOut,
    /// The serial log did not grow for the spec's silence limit: the guest hung.
    Silent(Duration),
}

/// Wait for fugu until it exits, the timeout passes, the run is interrupted or (with
/// `spec.silence`) its serial log stops growing; press the guest's power button (SIGPWR) once
/// when the serial log first shows `spec.press_power_button`.
fn wait_judging(
    child: &mut Proc,
    spec: &BootSpec,
    interrupted: &AtomicBool,
) -> std::io::Result<End> {
    if spec.press_power_button.is_none() && spec.silence.is_none() {
        return Ok(
            match child.wait(spec.timeout, Duration::from_millis(20), Some(interrupted))? {
                Waited::Exited(s) => End::Exited(s),
                Waited::TimedOut => End::TimedOut,
                Waited::Interrupted => End::Interrupted,
            },
        );
    }
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let mut pressed = false;
    let (mut size, mut grew) = (0u64, start);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(End::Exited(s));
        }
        if interrupted.load(Ordering::SeqCst) {
            child.kill();
            return Ok(End::Interrupted);
        }
        let now = Instant::now();
        if now >= deadline {
            child.kill();
            return Ok(End::TimedOut);
        }
        if let Some(limit) = spec.silence {
            let len = std::fs::metadata(&spec.serial_log).map_or(0, |m| m.len());
            if len != size {
                (size, grew) = (len, now);
            } else if now.duration_since(grew) >= limit {
                child.kill();
                return Ok(End::Silent(limit));
            }
        }
        if let Some(line) = spec.press_power_button.as_deref().filter(|_| !pressed) {
            if tail_file(&spec.serial_log, usize::MAX).contains(line) {
                if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                    // SAFETY: kill(2) on the child this function waits for; no memory is shared.
                    unsafe { libc::kill(pid, libc::SIGPWR) };
                }
                pressed = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Boot (through `wrapper`, e.g. `ip netns exec NS`, when given) and judge the result.
fn boot(spec: &BootSpec, wrapper: &[&str], interrupted: &AtomicBool) -> Outcome {
    let with_tail = |reason: String| {
        let mut tail = String::new();
        let serial = tail_file(&spec.serial_log, 12);
        if !serial.is_empty() {
            let _ = writeln!(
                tail,
                "serial log ({}):\n{serial}",
                spec.serial_log.display()
            );
        }
        let vmm = tail_file(&spec.vmm_log, 6);
        if !vmm.is_empty() {
            let _ = writeln!(tail, "fugu output ({}):\n{vmm}", spec.vmm_log.display());
        }
        Outcome::Fail { reason, tail }
    };
    if !spec.program.is_file() {
        return Outcome::fail(format!("missing fugu binary {}", spec.program.display()));
    }
    for p in [&spec.serial_log, &spec.vmm_log] {
        let _ = std::fs::remove_file(p);
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
    }
    let out = match std::fs::File::create(&spec.vmm_log) {
        Ok(f) => f,
        Err(e) => return Outcome::fail(format!("cannot create {}: {e}", spec.vmm_log.display())),
    };
    let err = match out.try_clone() {
        Ok(f) => f,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    let mut cmd = match wrapper.split_first() {
        Some((w, rest)) => {
            let mut c = Command::new(w);
            c.args(rest).arg(&spec.program);
            c
        }
        None => Command::new(&spec.program),
    };
    cmd.args(&spec.args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let mut child = match Proc::spawn(&mut cmd, true) {
        Ok(c) => c,
        Err(e) => return Outcome::fail(format!("cannot start {}: {e}", spec.program.display())),
    };
    let status = match wait_judging(&mut child, spec, interrupted) {
        Ok(End::Exited(s)) => s,
        Ok(End::Interrupted) => return with_tail("interrupted".into()),
        Ok(End::TimedOut) => {
            return with_tail(format!(
                "timed out after {} s: the guest hung or never reached its exit",
                spec.timeout.as_secs()
            ))
        }
        Ok(End::Silent(limit)) => {
            return with_tail(format!(
                "the guest hung: its serial log did not grow for {} s",
                limit.as_secs()
            ))
        }
        Err(e) => return Outcome::fail(format!("waiting for fugu: {e}")),
    };
    if let Some(sig) = status.signal() {
        return with_tail(format!(
            "fugu crashed: killed by signal {sig} ({})",
            signal_name(sig)
        ));
    }
    let code = status.code().unwrap_or(-1);
    let after_init = spec.accept_after_init.is_some_and(|(c, msg)| {
        code == c
            && tail_file(&spec.serial_log, usize::MAX).contains(INIT_STARTED)
            && tail_file(&spec.vmm_log, usize::MAX).contains(msg)
    });
    if code != spec.expect_status && !after_init {
        let meaning = ExitStatus::of_run(code)
            .map(|s| format!(" ({})", s.meaning()))
            .unwrap_or_default();
        return with_tail(format!(
            "fugu exited with status {code}{meaning}, expected {}",
            spec.expect_status
        ));
    }
    let serial = std::fs::read(&spec.serial_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    for m in &spec.expect_markers {
        if !serial.contains(m.as_str()) {
            return with_tail(format!(
                "exit status {code} as expected, but the serial log lacks '{m}'"
            ));
        }
    }
    for (p, off, want) in &spec.file_checks {
        let got = std::fs::read(p).unwrap_or_default();
        if got.get(*off..off + want.len()) != Some(&want[..]) {
            return with_tail(format!(
                "the guest did not leave '{}' at byte {off} of {}",
                String::from_utf8_lossy(want),
                p.display()
            ));
        }
    }
    Outcome::Pass
}

/// Keep a failed attempt's logs beside the next attempt's (`STEM.serial.log` becomes
/// `STEM.attempt1.serial.log`): the next boot starts its logs afresh.
fn keep_attempt_logs(spec: &BootSpec, attempt: usize) {
    for p in [&spec.serial_log, &spec.vmm_log] {
        let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let kept = match name.split_once('.') {
            Some((stem, rest)) => format!("{stem}.attempt{attempt}.{rest}"),
            None => format!("{name}.attempt{attempt}"),
        };
        let _ = std::fs::rename(p, p.with_file_name(kept));
    }
}

/// Boot a cell; a failed boot is run again up to `retries` times. A pass after a failure is
/// `Flaky`, carrying what the failed attempts said (never a plain PASS).
pub fn execute_with_retries(spec: &BootSpec, retries: u32, interrupted: &AtomicBool) -> Outcome {
    let mut failures: Vec<String> = Vec::new();
    loop {
        match execute(spec, interrupted) {
            Outcome::Fail { reason, tail }
                if u32::try_from(failures.len()).is_ok_and(|n| n < retries)
                    && !interrupted.load(Ordering::SeqCst) =>
            {
                let _ = tail;
                failures.push(reason);
                keep_attempt_logs(spec, failures.len());
            }
            Outcome::Pass if !failures.is_empty() => {
                let n = failures.len() + 1;
                let before: Vec<String> = failures
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!("attempt {}: {r}", i + 1))
                    .collect();
                return Outcome::Flaky {
                    note: format!("flaky: passed on attempt {n} ({})", before.join("; ")),
                };
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_matrix::testutil::{fake, reason, tmp};

    #[test]
    fn a_failure_after_init_passes_only_when_it_is_the_declared_one() {
        let d = tmp("after-init");
        let no = AtomicBool::new(false);
        let with = |name: &str, script: &str| {
            let mut s = fake(&d, name, script, 60);
            s.accept_after_init = Some((6, "signalled SIGBUS during KVM_RUN"));
            s
        };
        let ok = with(
            "ok",
            "printf 'hello from the guest\\nRun /sbin/init as init process\\n' > \"$0\"; \
             echo 'fugu: the host signalled SIGBUS during KVM_RUN' >&2; exit 6",
        );
        assert_eq!(execute(&ok, &no), Outcome::Pass);
        let before_init = with(
            "before",
            "echo 'hello from the guest' > \"$0\"; \
             echo 'fugu: the host signalled SIGBUS during KVM_RUN' >&2; exit 6",
        );
        assert!(reason(&execute(&before_init, &no)).contains("status 6"));
        let other_crash = with(
            "other",
            "printf 'hello from the guest\\nRun /sbin/init as init process\\n' > \"$0\"; \
             echo 'fugu: triple fault' >&2; exit 6",
        );
        assert!(reason(&execute(&other_crash, &no)).contains("status 6"));
        let no_marker = with(
            "nomarker",
            "printf 'Run /sbin/init as init process\\n' > \"$0\"; \
             echo 'fugu: the host signalled SIGBUS during KVM_RUN' >&2; exit 6",
        );
        assert!(reason(&execute(&no_marker, &no)).contains("lacks 'hello from the guest'"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_guest_whose_serial_log_stops_growing_is_hung_and_its_attempt_logs_are_kept() {
        let d = tmp("silence");
        let no = AtomicBool::new(false);
        let mut s = fake(
            &d,
            "quiet",
            "echo 'booting' > \"$0\"; sleep 30; echo 'hello from the guest' >> \"$0\"; exit 33",
            60,
        );
        s.silence = Some(Duration::from_secs(1));
        let o = execute_with_retries(&s, 1, &no);
        assert!(
            reason(&o).contains("hung: its serial log did not grow for 1 s"),
            "{o:?}"
        );
        for attempt in ["attempt1.serial.log", "attempt1.vmm.log"] {
            assert!(
                d.join(format!("quiet.{attempt}")).is_file(),
                "{attempt} kept"
            );
        }
        // A guest that keeps printing is not silent, however long it runs.
        let mut busy = fake(
            &d,
            "busy",
            "for i in 1 2 3 4 5 6; do echo tick >> \"$0\"; sleep 0.4; done; \
             echo 'hello from the guest' >> \"$0\"; exit 33",
            60,
        );
        busy.silence = Some(Duration::from_secs(1));
        assert_eq!(execute(&busy, &no), Outcome::Pass);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn pass_needs_status_and_marker() {
        let d = tmp("pass");
        let no = AtomicBool::new(false);
        let ok = fake(
            &d,
            "ok",
            "echo 'hello from the guest' > \"$0\"; exit 33",
            60,
        );
        assert_eq!(execute(&ok, &no), Outcome::Pass);
        let nomark = fake(&d, "nomark", "echo 'something else' > \"$0\"; exit 33", 60);
        assert!(reason(&execute(&nomark, &no)).contains("lacks 'hello from the guest'"));
        let bad = fake(
            &d,
            "bad",
            "echo 'hello from the guest' > \"$0\"; echo oops >&2; exit 6",
            60,
        );
        let o = execute(&bad, &no);
        assert!(
            reason(&o).contains("status 6") && reason(&o).contains("crashed"),
            "{o:?}"
        );
        let Outcome::Fail { tail, .. } = o else {
            panic!()
        };
        assert!(
            tail.contains("hello from the guest") && tail.contains("oops"),
            "{tail}"
        );
        std::fs::remove_dir_all(d).unwrap();
    }

    /// The matrix presses the power button (SIGPWR) once the guest says it waits for it; a
    /// guest that never says so is not signalled and runs into its timeout.
    #[test]
    fn the_power_button_is_pressed_when_the_guest_waits_for_it() {
        let d = tmp("button");
        let no = AtomicBool::new(false);
        // A stand-in VM: says it waits, and on SIGPWR writes the marker and exits 33.
        let script = "trap 'echo \"hello from the guest\" >> \"$0\"; exit 33' PWR; \
                      echo waiting >> \"$0\"; i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 7";
        let mut s = fake(&d, "pressed", script, 60);
        s.press_power_button = Some("waiting".into());
        assert_eq!(execute(&s, &no), Outcome::Pass);
        let mut never = fake(&d, "never", script, 2);
        never.press_power_button = Some("something the guest never prints".into());
        assert!(reason(&execute(&never, &no)).contains("timed out"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
