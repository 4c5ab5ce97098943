//! Progress on stderr for the long commands (test-matrix, bench, images): indicatif's bar on a
//! terminal, redrawn in place with the lines printed above it; plain lines anywhere else (CI
//! logs, and the svm-tcg L1's console, whose lines the outer run reads back), where the bar
//! is hidden.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The bar on screen now, if any: every step line ([`crate::util::step`]) goes above it.
static ACTIVE: Mutex<Option<(u64, ProgressBar)>> = Mutex::new(None);
/// Tells the bars apart (the newest one is the one on screen).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Print a line on stderr, above the bar on screen if there is one.
pub fn line(text: &str) {
    let shown = ACTIVE
        .lock()
        .ok()
        .and_then(|a| a.as_ref().map(|(_, b)| b.clone()))
        .filter(|b| !b.is_hidden());
    match shown {
        Some(bar) => bar.println(text),
        None => eprintln!("{text}"),
    }
}

pub struct Bar {
    bar: ProgressBar,
    id: u64,
}

impl Bar {
    /// A bar over `len` steps; `what` names them ("cells", "workloads", "images").
    pub fn new(len: usize, what: &str) -> Bar {
        Bar::drawn(len, what, std::io::stderr().is_terminal())
    }

    fn drawn(len: usize, what: &str, visible: bool) -> Bar {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len as u64), target);
        let template = format!("[{{bar:30}}] {{pos}}/{{len}} {what}, {{elapsed}}; {{wide_msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("#> "));
        }
        // Keeps the elapsed time going while a long step runs.
        bar.enable_steady_tick(Duration::from_millis(500));
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some((id, bar.clone()));
        }
        Bar { bar, id }
    }

    /// A line of its own, above the bar (or alone where there is no bar).
    pub fn line(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// What runs now (shown on the bar only).
    pub fn set_message(&self, text: String) {
        self.bar.set_message(text);
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }

    pub fn done(&self) -> u64 {
        self.bar.position()
    }

    /// Remove the bar, leaving the lines.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if let Ok(mut a) = ACTIVE.lock() {
            if a.as_ref().is_some_and(|(id, _)| *id == self.id) {
                *a = None;
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_off_a_terminal_counts_and_is_hidden() {
        let b = Bar::drawn(3, "cells", false);
        assert!(b.bar.is_hidden());
        b.inc();
        b.inc();
        b.line("  [  2/3] PASS x");
        assert_eq!(b.done(), 2);
        b.finish();
    }
}
