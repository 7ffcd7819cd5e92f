//! A buffered line writer on its own thread, for the access log: request
//! workers append a finished line to a shared buffer (a short lock and a
//! copy, no system call) and a dedicated thread writes the buffer out when
//! it holds `buffer_bytes` or every `flush_interval`, whichever comes first.
//! This is NGINX's `access_log ... buffer=64k flush=...` without its one
//! drawback: a worker never waits for the disk. A disk slower than the
//! request rate fills the buffer up to `max_pending_bytes`; beyond it lines
//! are counted as dropped (reported on the application log) rather than
//! stalling requests.
//!
//! The file is reopened on request (SIGUSR1, after logrotate moved it):
//! lines appended before the reopen go to the old file, later ones to the
//! new. Dropping the writer (or [`LineWriter::close`]) writes what is
//! pending and joins the thread.

#![forbid(unsafe_code)]

use std::{
    fs::File,
    io::Write,
    mem,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

/// Where the writer thread sends its bytes.
pub enum Output {
    /// Standard output.
    Stdout,
    /// A file opened for appending.
    File(File),
}

impl Output {
    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Output::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Output::File(f) => f.write_all(bytes),
        }
    }
}

/// Buffer sizes and the flush interval.
#[derive(Clone, Copy, Debug)]
pub struct Buffering {
    /// Write as soon as this many bytes are pending.
    pub buffer_bytes: usize,
    /// Write pending bytes at least this often.
    pub flush_interval: Duration,
    /// Drop (and count) lines beyond this many pending bytes.
    pub max_pending_bytes: usize,
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    /// A file to switch to after writing what is pending (reopen).
    switch_to: Option<File>,
    dropped: u64,
    closing: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    buffering: Buffering,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle request workers append lines through.
pub struct LineWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl LineWriter {
    /// Starts the writer thread (named `access-log`).
    pub fn start(output: Output, buffering: Buffering) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: Vec::with_capacity(buffering.buffer_bytes),
                ..State::default()
            }),
            wake: Condvar::new(),
            buffering,
        });
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, output)
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one line (the caller includes the trailing newline). Never
    /// blocks on IO; drops the line when `max_pending_bytes` are waiting.
    pub fn push(&self, line: &[u8]) {
        let b = self.shared.buffering;
        let mut s = self.shared.lock();
        if s.pending.len() + line.len() > b.max_pending_bytes {
            s.dropped += 1;
            return;
        }
        s.pending.extend_from_slice(line);
        if s.pending.len() >= b.buffer_bytes {
            drop(s);
            self.shared.wake.notify_one();
        }
    }

    /// Switches to `file` once what is pending now has been written.
    pub fn reopen(&self, file: File) {
        self.shared.lock().switch_to = Some(file);
        self.shared.wake.notify_one();
    }

    /// Writes everything pending and stops the thread. Later lines are
    /// dropped. Idempotent.
    pub fn close(&self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.close();
    }
}

fn run(shared: &Shared, mut output: Output) {
    let b = shared.buffering;
    let mut spare = Vec::with_capacity(b.buffer_bytes);
    loop {
        let (switch_to, dropped, closing) = {
            let mut s = shared.lock();
            if s.pending.len() < b.buffer_bytes && s.switch_to.is_none() && !s.closing {
                s = shared
                    .wake
                    .wait_timeout(s, b.flush_interval)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            mem::swap(&mut s.pending, &mut spare);
            (s.switch_to.take(), mem::take(&mut s.dropped), s.closing)
        };
        if !spare.is_empty() {
            if let Err(e) = output.write_all(&spare) {
                tracing::warn!(error = %e, bytes = spare.len(), "writing the access log failed");
            }
            spare.clear();
            // Keep the buffer's memory bounded after a burst.
            spare.shrink_to(b.buffer_bytes);
        }
        if dropped > 0 {
            tracing::warn!(
                lines = dropped,
                "access log lines dropped: the log target is slower than the request rate"
            );
        }
        if let Some(file) = switch_to {
            output = Output::File(file);
        }
        if closing {
            let rest = mem::take(&mut shared.lock().pending);
            if !rest.is_empty() {
                let _ = output.write_all(&rest);
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{path::PathBuf, time::Instant};

    /// A directory of this test's own, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let p = std::env::temp_dir()
                .join(format!("gateway-log-writer-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn buffering(buffer_bytes: usize, flush_ms: u64, max: usize) -> Buffering {
        Buffering {
            buffer_bytes,
            flush_interval: Duration::from_millis(flush_ms),
            max_pending_bytes: max,
        }
    }

    fn read(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    fn wait_for(path: &std::path::Path, lines: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = read(path);
            if text.lines().count() >= lines || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn lines_reach_the_file_in_order_after_the_flush_interval() {
        let dir = TempDir::new("order");
        let path = dir.path().join("a.log");
        let w = LineWriter::start(
            Output::File(File::create(&path).unwrap()),
            buffering(1 << 16, 20, 1 << 20),
        )
        .unwrap();
        for i in 0..100 {
            w.push(format!("line {i}\n").as_bytes());
        }
        let text = wait_for(&path, 100);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text, expected);
    }

    #[test]
    fn close_writes_what_is_pending() {
        let dir = TempDir::new("close");
        let path = dir.path().join("a.log");
        // A flush interval far longer than the test: only close() writes.
        let w = LineWriter::start(
            Output::File(File::create(&path).unwrap()),
            buffering(1 << 16, 3_600_000, 1 << 20),
        )
        .unwrap();
        w.push(b"one\n");
        w.push(b"two\n");
        w.close();
        assert_eq!(read(&path), "one\ntwo\n");
        w.push(b"after close\n");
        drop(w);
        assert_eq!(read(&path), "one\ntwo\n");
    }

    #[test]
    fn full_buffer_is_written_without_waiting_for_the_interval() {
        let dir = TempDir::new("full");
        let path = dir.path().join("a.log");
        let w = LineWriter::start(
            Output::File(File::create(&path).unwrap()),
            buffering(64, 3_600_000, 1 << 20),
        )
        .unwrap();
        let line = [b'x'; 63];
        w.push(&[&line[..], b"\n"].concat());
        assert_eq!(wait_for(&path, 1).len(), 64);
        drop(w);
    }

    #[test]
    fn lines_beyond_the_pending_bound_are_dropped_not_blocking() {
        let dir = TempDir::new("bound");
        let path = dir.path().join("a.log");
        let w = LineWriter::start(
            Output::File(File::create(&path).unwrap()),
            buffering(1 << 16, 3_600_000, 10),
        )
        .unwrap();
        w.push(b"12345\n");
        w.push(b"67890\n"); // 12 bytes pending would pass the 10-byte bound
        w.close();
        assert_eq!(read(&path), "12345\n");
    }

    #[test]
    fn reopen_switches_files_after_the_pending_lines() {
        let dir = TempDir::new("reopen");
        let (old, new) = (dir.path().join("old.log"), dir.path().join("new.log"));
        let w = LineWriter::start(
            Output::File(File::create(&old).unwrap()),
            buffering(1 << 16, 3_600_000, 1 << 20),
        )
        .unwrap();
        w.push(b"before\n");
        w.reopen(File::create(&new).unwrap());
        assert_eq!(wait_for(&old, 1), "before\n");
        w.push(b"after\n");
        w.close();
        assert_eq!(read(&old), "before\n");
        assert_eq!(read(&new), "after\n");
    }
}
