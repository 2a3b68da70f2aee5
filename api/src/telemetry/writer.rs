//! The log's writer: lines are appended to a shared buffer, and a thread
//! of its own writes the buffer out every [`INTERVAL`] (or as soon as it
//! holds [`FLUSH_AT`] bytes).
//!
//! A request never waits for stdout, and never wakes anyone: only the
//! first line into an empty buffer and a buffer past [`FLUSH_AT`] signal
//! the thread. tracing-appender's writer, used before, sent each line
//! through a channel whose receiver was woken for almost every line and
//! spun before sleeping: per request 0.59 `write`, 0.37 `sched_yield` and
//! 0.26 `futex` system calls besides the request's own two
//! (docs/performance.md). Here a busy service makes one `write` per
//! interval.
//!
//! When stdout is not read, the buffer holds up to a limit of lines; the
//! ones after that are dropped and counted ([`LineWriter::dropped_lines`]).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long a line may wait in the buffer.
pub(crate) const INTERVAL: Duration = Duration::from_millis(20);

/// A buffer this large is written out at once.
const FLUSH_AT: usize = 256 * 1024;

/// Where lines are appended; clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) struct LineWriter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    buffer: Mutex<Buffer>,
    /// The writer thread waits on this for the first line, a full buffer
    /// or the end.
    wake: Condvar,
    /// Most lines the buffer holds.
    limit: usize,
    dropped: AtomicU64,
}

#[derive(Debug, Default)]
struct Buffer {
    bytes: Vec<u8>,
    lines: usize,
    closed: bool,
}

/// Keeps the writer thread running; dropping it writes out what is still
/// buffered and ends the thread.
#[derive(Debug)]
pub(crate) struct WriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LineWriter {
    /// A writer in front of `sink`, holding at most `limit` lines, and the
    /// guard of its thread.
    pub(crate) fn start<W: Write + Send + 'static>(
        sink: W,
        limit: usize,
    ) -> std::io::Result<(LineWriter, WriterGuard)> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer::default()),
            wake: Condvar::new(),
            limit,
            dropped: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_out(&shared, sink)
            })?;
        Ok((
            LineWriter {
                shared: Arc::clone(&shared),
            },
            WriterGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// Lines dropped so far because the buffer was full.
    pub(crate) fn dropped_lines(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Appends `line` (one or more whole lines), or drops and counts it
    /// when the buffer is full.
    fn append(&self, line: &[u8]) {
        let mut buffer = self.shared.lock();
        if buffer.lines >= self.shared.limit {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = buffer.bytes.len();
        buffer.bytes.extend_from_slice(line);
        buffer.lines += 1;
        // Signal once per batch: on its first line, and when it passes
        // the size that is written out at once.
        let was_empty = before == 0;
        let full = before < FLUSH_AT && buffer.bytes.len() >= FLUSH_AT;
        drop(buffer);
        if was_empty || full {
            self.shared.wake.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while appending leaves whole bytes behind: keep going.
        self.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread: waits for a first line, lets more gather for
/// [`INTERVAL`] (unless the buffer fills first), writes them in one go,
/// and after the guard is dropped, writes what is left and returns.
fn write_out<W: Write>(shared: &Shared, mut sink: W) {
    let mut out = Vec::new();
    loop {
        let mut buffer = shared.lock();
        while buffer.bytes.is_empty() && !buffer.closed {
            buffer = shared
                .wake
                .wait(buffer)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !buffer.closed && buffer.bytes.len() < FLUSH_AT {
            buffer = shared
                .wake
                .wait_timeout_while(buffer, INTERVAL, |buffer| {
                    buffer.bytes.len() < FLUSH_AT && !buffer.closed
                })
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::swap(&mut out, &mut buffer.bytes);
        buffer.lines = 0;
        let closed = buffer.closed;
        drop(buffer);
        // Nothing to do about a failed write to stdout but go on: the
        // next lines may get through.
        let _ = sink.write_all(&out).and_then(|()| sink.flush());
        out.clear();
        if closed && shared.lock().bytes.is_empty() {
            return;
        }
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Write for &LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.append(bytes);
        Ok(bytes.len())
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.append(bytes);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = &'a LineWriter;

    fn make_writer(&'a self) -> &'a LineWriter {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A sink that blocks every write until the test lets it go: a log
    /// consumer that stopped reading.
    #[derive(Clone)]
    struct Stalled(Arc<Mutex<Vec<u8>>>);

    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_log_consumer_costs_a_writer_nothing_and_the_drops_are_counted() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let held = sink.lock().expect("not poisoned");
        let (writer, guard) = LineWriter::start(Stalled(Arc::clone(&sink)), 100).expect("a thread");

        let (done, finished) = std::sync::mpsc::channel();
        let started = Instant::now();
        let lines = writer.clone();
        std::thread::spawn(move || {
            for line in 0..10_000 {
                (&lines)
                    .write_all(format!("line {line}\n").as_bytes())
                    .expect("a write never fails");
            }
            let _ = done.send(());
        });

        let wrote = finished.recv_timeout(Duration::from_secs(5));
        drop(held);

        assert!(
            wrote.is_ok(),
            "10,000 lines into a stalled sink were still being written after {:?}: a \
             writer waited for the log",
            started.elapsed()
        );
        let dropped = writer.dropped_lines();
        assert!(
            (9_700..10_000).contains(&dropped),
            "{dropped} of 10,000 lines dropped with room for 100 buffered"
        );
        drop(guard);
    }

    #[test]
    fn lines_arrive_whole_in_order_within_the_interval_and_the_rest_at_the_end() {
        let sink = Arc::new(Mutex::new(Vec::new()));
        let (writer, guard) =
            LineWriter::start(Stalled(Arc::clone(&sink)), 1_000_000).expect("a thread");
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for line in 0..20_000 {
                        (&writer)
                            .write_all(format!("{thread} {line}\n").as_bytes())
                            .expect("a write never fails");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("no panic");
        }
        (&writer).write_all(b"last\n").expect("a write never fails");
        let deadline = Instant::now() + INTERVAL * 50;
        while !sink.lock().expect("not poisoned").ends_with(b"last\n") {
            assert!(
                Instant::now() < deadline,
                "the last line was not written within {:?}",
                INTERVAL * 50
            );
            std::thread::sleep(INTERVAL / 4);
        }
        (&writer)
            .write_all(b"after\n")
            .expect("a write never fails");
        drop(guard);

        let text = String::from_utf8(sink.lock().expect("not poisoned").clone()).expect("UTF-8");
        let mut next = [0; 4];
        for line in text
            .lines()
            .filter(|line| !matches!(*line, "last" | "after"))
        {
            let (thread, number) = line.split_once(' ').expect("whole lines");
            let (thread, number): (usize, u32) = (
                thread.parse().expect("a thread"),
                number.parse().expect("a number"),
            );
            assert_eq!(number, next[thread], "thread {thread}'s lines out of order");
            next[thread] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        assert!(
            text.ends_with("last\nafter\n"),
            "the guard did not write out the rest"
        );
        assert_eq!(writer.dropped_lines(), 0);
    }
}
