//! The worker pool that boots the cells in parallel, and the progress display that follows it.

use super::exec::execute_with_retries;
use super::{BootSpec, Outcome};
use crate::progress::Bar;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// A finished cell, as the workers report it.
pub enum Event {
    Started(usize),
    Finished(usize, Outcome, f64),
    /// Nothing happened for a while (lets a progress display keep its clock going).
    Tick,
}

/// Boot `jobs` with `njobs` workers. Each job is a cell's boot or its FAIL reason; the results
/// come back in job order. `on_event` sees progress (on the calling thread).
pub fn run_jobs(
    jobs: Vec<Result<BootSpec, String>>,
    njobs: usize,
    retries: u32,
    interrupted: &AtomicBool,
    on_event: &mut dyn FnMut(&Event),
) -> Vec<(Outcome, f64)> {
    let n = jobs.len();
    let queue = Mutex::new(jobs.into_iter().enumerate().collect::<VecDeque<_>>());
    let mut results: Vec<Option<(Outcome, f64)>> = vec![None; n];
    let (tx, rx) = mpsc::channel::<Event>();
    std::thread::scope(|s| {
        for _ in 0..njobs.max(1).min(n.max(1)) {
            let tx = tx.clone();
            let queue = &queue;
            s.spawn(move || loop {
                let next = queue.lock().map(|mut q| q.pop_front()).ok().flatten();
                let Some((i, job)) = next else { break };
                let _ = tx.send(Event::Started(i));
                let t = Instant::now();
                let outcome = if interrupted.load(Ordering::SeqCst) {
                    Outcome::fail("interrupted before it ran")
                } else {
                    match job {
                        Ok(spec) => execute_with_retries(&spec, retries, interrupted),
                        Err(reason) => Outcome::fail(reason),
                    }
                };
                let _ = tx.send(Event::Finished(i, outcome, t.elapsed().as_secs_f64()));
            });
        }
        drop(tx);
        loop {
            let ev = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(ev) => ev,
                Err(mpsc::RecvTimeoutError::Timeout) => Event::Tick,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            on_event(&ev);
            if let Event::Finished(i, o, secs) = ev {
                results[i] = Some((o, secs));
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| (Outcome::fail("the worker running it died"), 0.0)))
        .collect()
}

/// The progress on stderr: a line per finished cell, and on a terminal a bar with the cells
/// running now ([`crate::progress::Bar`]).
pub struct Progress {
    ids: Vec<String>,
    bar: Bar,
    running: Vec<usize>,
    failed: usize,
}

impl Progress {
    /// `ids`: the cells of the jobs, in job order.
    pub fn new(ids: Vec<String>) -> Progress {
        let bar = Bar::new(ids.len(), "cells");
        Progress {
            ids,
            bar,
            running: Vec::new(),
            failed: 0,
        }
    }

    pub fn on_event(&mut self, ev: &Event) {
        let total = self.ids.len();
        match ev {
            Event::Started(i) => self.running.push(*i),
            Event::Tick => {}
            Event::Finished(i, outcome, secs) => {
                self.running.retain(|x| x != i);
                self.bar.inc();
                let word = outcome.status().word();
                if matches!(outcome, Outcome::Fail { .. }) {
                    self.failed += 1;
                }
                let id = self.ids.get(*i).map_or("?", String::as_str);
                let done = self.bar.done();
                let mut line = format!("  [{done:>3}/{total}] {word} {id} ({secs:.1} s)");
                match outcome {
                    Outcome::Fail { reason, .. } => line.push_str(&format!(": {reason}")),
                    Outcome::Flaky { note } => line.push_str(&format!(": {note}")),
                    _ => {}
                }
                self.bar.line(&line);
            }
        }
        let names: Vec<&str> = self
            .running
            .iter()
            .filter_map(|i| self.ids.get(*i).map(String::as_str))
            .collect();
        self.bar.set_message(format!(
            "{} failed; running: {}",
            self.failed,
            names.join(", ")
        ));
    }

    /// Clear the bar.
    pub fn finish(&self) {
        self.bar.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_matrix::report::results::Status;
    use crate::test_matrix::testutil::{fake, reason, tmp};

    #[test]
    fn hang_crash_and_missing_binary_fail_with_reasons_and_the_rest_runs() {
        let d = tmp("mix");
        let no = AtomicBool::new(false);
        let mut missing = fake(&d, "missing", "exit 33", 60);
        missing.program = d.join("no-such-fugu");
        let jobs = vec![
            Ok(fake(&d, "hang", "echo booting > \"$0\"; exec sleep 600", 1)),
            Ok(fake(&d, "crash", "kill -SEGV $$", 60)),
            Err("missing image: target/guests/nothing.elf".to_string()),
            Ok(missing),
            Ok(fake(
                &d,
                "ok",
                "echo 'hello from the guest' > \"$0\"; exit 33",
                60,
            )),
        ];
        let mut events = 0;
        let r = run_jobs(jobs, 2, 0, &no, &mut |e| {
            if !matches!(e, Event::Tick) {
                events += 1
            }
        });
        assert_eq!(r.len(), 5);
        assert_eq!(events, 10, "a start and a finish per job");
        assert!(reason(&r[0].0).contains("timed out"), "{:?}", r[0]);
        let Outcome::Fail { tail, .. } = &r[0].0 else {
            panic!()
        };
        assert!(tail.contains("booting"));
        assert!(
            reason(&r[1].0).contains("signal 11 (SIGSEGV)"),
            "{:?}",
            r[1]
        );
        assert!(reason(&r[2].0).contains("missing image"));
        assert!(reason(&r[3].0).contains("missing fugu binary"));
        assert_eq!(r[4].0, Outcome::Pass, "the last cell still ran");
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_retry_that_passes_is_flaky_and_says_why_and_no_retry_keeps_the_fail() {
        let d = tmp("retry");
        let no = AtomicBool::new(false);
        // Fails (status 6) on its first boot, passes on the second.
        let once = "if [ -f \"$0.tried\" ]; then echo 'hello from the guest' > \"$0\"; exit 33; \
                    else touch \"$0.tried\"; exit 6; fi";
        let r = run_jobs(vec![Ok(fake(&d, "once", once, 60))], 1, 1, &no, &mut |_| {});
        match &r[0].0 {
            Outcome::Flaky { note } => {
                assert!(note.starts_with("flaky: passed on attempt 2"), "{note}");
                assert!(
                    note.contains("attempt 1: fugu exited with status 6"),
                    "{note}"
                );
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(r[0].0.status(), Status::Pass);
        let r = run_jobs(
            vec![Ok(fake(&d, "twice", once, 60))],
            1,
            0,
            &no,
            &mut |_| {},
        );
        assert!(reason(&r[0].0).contains("status 6"), "{:?}", r[0]);
        let always = "exit 6";
        let r = run_jobs(
            vec![Ok(fake(&d, "always", always, 60))],
            1,
            2,
            &no,
            &mut |_| {},
        );
        assert!(reason(&r[0].0).contains("status 6"), "{:?}", r[0]);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn an_interrupt_fails_what_did_not_finish() {
        let d = tmp("intr");
        let stop = AtomicBool::new(true);
        let r = run_jobs(
            vec![Ok(fake(
                &d,
                "a",
                "echo 'hello from the guest' > \"$0\"; exit 33",
                60,
            ))],
            1,
            0,
            &stop,
            &mut |_| {},
        );
        assert!(reason(&r[0].0).contains("interrupted"));
        std::fs::remove_dir_all(d).unwrap();
    }
}
