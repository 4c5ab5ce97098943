//! A VM's console output: a bounded log (the newest bytes, up to a limit) that one writer
//! (the VM's stdout reader) appends to and any number of readers follow, each at its own
//! position; and the claim on the console's input (one client at a time types).

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

pub struct ConsoleLog {
    inner: Mutex<Inner>,
    changed: Condvar,
}

struct Inner {
    buf: VecDeque<u8>,
    cap: usize,
    /// Bytes ever appended: a reader's position counts in these.
    total: u64,
    /// The VM ended: no more output.
    closed: bool,
    /// The id of the client that holds the input.
    writer: Option<u64>,
}

/// What a reader gets.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// New bytes, and how many were lost because the reader fell behind the log's limit.
    Data(Vec<u8>, u64),
    /// Nothing new within the wait.
    Idle,
    /// The VM ended and everything was read.
    Closed,
}

impl ConsoleLog {
    pub fn new(cap: usize) -> ConsoleLog {
        ConsoleLog {
            inner: Mutex::new(Inner {
                buf: VecDeque::new(),
                cap: cap.max(1),
                total: 0,
                closed: false,
                writer: None,
            }),
            changed: Condvar::new(),
        }
    }

    pub fn append(&self, data: &[u8]) {
        let mut i = lock(&self.inner);
        // Only the tail fits if `data` alone exceeds the limit.
        let keep = &data[data.len().saturating_sub(i.cap)..];
        let over = (i.buf.len() + keep.len()).saturating_sub(i.cap);
        i.buf.drain(..over);
        i.buf.extend(keep);
        i.total += data.len() as u64;
        self.changed.notify_all();
    }

    pub fn close(&self) {
        lock(&self.inner).closed = true;
        self.changed.notify_all();
    }

    /// Everything kept, and the position after it.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        let i = lock(&self.inner);
        (i.buf.iter().copied().collect(), i.total)
    }

    /// The position after the last byte (where a reader without history starts).
    pub fn end(&self) -> u64 {
        lock(&self.inner).total
    }

    pub fn len(&self) -> usize {
        lock(&self.inner).buf.len()
    }

    /// The bytes after position `*pos`, waiting up to `wait` for some; advances `*pos`.
    pub fn read(&self, pos: &mut u64, wait: Duration) -> Chunk {
        let mut i = lock(&self.inner);
        if i.total <= *pos && !i.closed {
            i = match self.changed.wait_timeout(i, wait) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        if i.total > *pos {
            let first = i.total - i.buf.len() as u64;
            let lost = first.saturating_sub(*pos);
            let from = usize::try_from(pos.saturating_sub(first)).unwrap_or(usize::MAX);
            let data: Vec<u8> = i.buf.iter().skip(from).copied().collect();
            *pos = i.total;
            return Chunk::Data(data, lost);
        }
        if i.closed {
            Chunk::Closed
        } else {
            Chunk::Idle
        }
    }

    /// Claim the input for client `id`; false when another client holds it.
    pub fn claim_input(&self, id: u64) -> bool {
        let mut i = lock(&self.inner);
        match i.writer {
            Some(w) if w != id => false,
            _ => {
                i.writer = Some(id);
                true
            }
        }
    }

    pub fn release_input(&self, id: u64) {
        let mut i = lock(&self.inner);
        if i.writer == Some(id) {
            i.writer = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_readers_follow_it() {
        let log = ConsoleLog::new(8);
        let mut a = 0;
        log.append(b"hello");
        assert_eq!(
            log.read(&mut a, Duration::ZERO),
            Chunk::Data(b"hello".to_vec(), 0)
        );
        assert_eq!(log.read(&mut a, Duration::ZERO), Chunk::Idle);
        let mut b = 0;
        log.append(b" world!");
        // b fell behind: the log keeps the newest 8 bytes.
        assert_eq!(
            log.read(&mut b, Duration::ZERO),
            Chunk::Data(b"o world!".to_vec(), 4)
        );
        assert_eq!(
            log.read(&mut a, Duration::ZERO),
            Chunk::Data(b" world!".to_vec(), 0)
        );
        assert_eq!(log.snapshot(), (b"o world!".to_vec(), 12));
        log.append(&[b'x'; 20]);
        assert_eq!(log.snapshot().0, vec![b'x'; 8]);
        log.close();
        let mut c = log.end();
        assert_eq!(log.read(&mut c, Duration::ZERO), Chunk::Closed);
    }

    #[test]
    fn one_client_holds_the_input() {
        let log = ConsoleLog::new(8);
        assert!(log.claim_input(1));
        assert!(log.claim_input(1));
        assert!(!log.claim_input(2));
        log.release_input(2);
        assert!(!log.claim_input(2));
        log.release_input(1);
        assert!(log.claim_input(2));
    }

    #[test]
    fn a_reader_wakes_when_output_arrives() {
        let log = std::sync::Arc::new(ConsoleLog::new(64));
        let l2 = log.clone();
        let t = std::thread::spawn(move || {
            let mut pos = 0;
            l2.read(&mut pos, Duration::from_secs(10))
        });
        std::thread::sleep(Duration::from_millis(50));
        log.append(b"x");
        assert_eq!(t.join().unwrap(), Chunk::Data(b"x".to_vec(), 0));
    }
}
