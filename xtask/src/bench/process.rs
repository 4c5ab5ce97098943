//! Running the VMs and peers for the benchmarks, on the xtask's one process helper.

use super::{Failed, NoNumbers};
use crate::util;
use fugu_common::proc::{Proc, Waited};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// No serial output for this long: the guest (or its VMM) stopped.
const STALL: Duration = Duration::from_secs(90);

/// Wait for `p` at most `limit`; kills it and fails when it takes longer. Polls every 200 µs:
/// the wait is part of what is timed.
fn wait_for(p: &mut Proc, limit: Duration, what: &str) -> Result<ExitStatus, NoNumbers> {
    match p.wait(limit, Duration::from_micros(200), None)? {
        Waited::Exited(s) => Ok(s),
        Waited::TimedOut | Waited::Interrupted => Err(Failed(format!(
            "{what} did not finish within {} s",
            limit.as_secs()
        ))),
    }
}

/// Run `cmd` to completion (stdin null, output discarded unless captured by the caller's
/// settings); returns the wall time and its exit status.
pub(super) fn timed(
    cmd: &mut Command,
    limit: Duration,
    what: &str,
) -> Result<(f64, ExitStatus), NoNumbers> {
    cmd.stdin(Stdio::null());
    let start = Instant::now();
    let mut child =
        Proc::spawn(cmd, false).map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
    let status = wait_for(&mut child, limit, what)?;
    Ok((start.elapsed().as_secs_f64(), status))
}

pub(super) fn expect_status(status: ExitStatus, want: i32, what: &str) -> Result<(), NoNumbers> {
    if status.code() == Some(want) {
        Ok(())
    } else {
        Err(Failed(format!(
            "{what} ended with {status}, expected exit status {want}"
        )))
    }
}

/// A VM that keeps running until killed (dropped).
pub(super) struct Running {
    /// Killed when the Running is dropped.
    pub child: Proc,
    lines: mpsc::Receiver<String>,
}

impl Running {
    /// Start `cmd` with stderr read line by line.
    pub fn start(cmd: &mut Command, what: &str) -> Result<Running, NoNumbers> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child =
            Proc::spawn(cmd, false).map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
        let (tx, rx) = mpsc::channel();
        if let Some(err) = child.take_stderr() {
            std::thread::spawn(move || {
                for l in BufReader::new(err).lines().map_while(|l| l.ok()) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Running { child, lines: rx })
    }

    /// The first stderr line for which `f` gives a value, within `limit`.
    pub fn find_line<T>(
        &mut self,
        limit: Duration,
        what: &str,
        f: impl Fn(&str) -> Option<T>,
    ) -> Result<T, NoNumbers> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    if let Some(v) = f(&l) {
                        return Ok(v);
                    }
                    seen.push(l);
                }
                Err(_) => {
                    return Err(Failed(format!(
                        "{what}: the expected line did not come within {} s; it printed: {}",
                        limit.as_secs(),
                        util::tail(&seen.join("\n"), 5)
                    )))
                }
            }
        }
    }

    /// Wait until `file` contains `marker`.
    pub fn wait_file(
        &mut self,
        file: &Path,
        marker: &str,
        limit: Duration,
        what: &str,
    ) -> Result<(), NoNumbers> {
        let deadline = Instant::now() + limit;
        loop {
            if std::fs::read_to_string(file).is_ok_and(|s| s.contains(marker)) {
                return Ok(());
            }
            if let Some(s) = self.child.try_wait()? {
                return Err(Failed(format!(
                    "{what} ended ({s}) before printing its marker"
                )));
            }
            if Instant::now() > deadline {
                return Err(Failed(format!(
                    "{what} did not print its marker within {} s",
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The last line of a serial log, trimmed (empty when there is none): what a VMM that never
/// reached its marker printed last.
pub(super) fn last_line(serial: &Path) -> String {
    std::fs::read_to_string(serial)
        .ok()
        .and_then(|s| s.lines().last().map(|l| l.trim().to_string()))
        .unwrap_or_default()
}

/// Start `cmd`, wait until `serial` contains `marker` (or the process ends / `limit` passes),
/// kill it; the seconds to the marker, or None when it never appeared.
pub(super) fn time_to_marker(
    cmd: &mut Command,
    serial: &Path,
    marker: &str,
    limit: Duration,
    what: &str,
) -> Result<Option<f64>, NoNumbers> {
    let _ = std::fs::remove_file(serial);
    let start = Instant::now();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child =
        Proc::spawn(cmd, false).map_err(|e| Failed(format!("cannot run {what}: {e}")))?;
    // A VMM that stops without exiting (QEMU pauses on a KVM internal error) shows as a
    // serial log that no longer grows.
    let (mut last_len, mut last_change) = (0usize, Instant::now());
    let result = loop {
        let log = std::fs::read_to_string(serial).unwrap_or_default();
        if log.contains(marker) {
            break Some(start.elapsed().as_secs_f64());
        }
        if log.len() != last_len {
            (last_len, last_change) = (log.len(), Instant::now());
        }
        if start.elapsed() > limit
            || last_change.elapsed() > STALL
            || matches!(child.try_wait(), Ok(Some(_)))
        {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill();
    Ok(result)
}
