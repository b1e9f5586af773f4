//! A stand-in for Nomad's logmon for the tests without Docker: the task's FIFO at its path, held
//! open by the test and drained into memory, so what the log pump wrote can be read back.
//!
//! The FIFO is held open for reading *and* writing: a writer then never waits for a reader and
//! never sees `EPIPE`, as with a logmon that outlives plugin restarts. A thread drains it every
//! few milliseconds, for at most [`LIFETIME`], and stops when the stand-in is dropped.
#![allow(dead_code)]

use parking_lot::Mutex;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest a stand-in drains its FIFO.
const LIFETIME: Duration = Duration::from_secs(300);

struct Drained {
    fifo: File,
    received: Vec<u8>,
}

impl Drained {
    /// Reads everything the pipe holds now.
    fn drain(&mut self) {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.fifo.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => self.received.extend_from_slice(&chunk[..n]),
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

pub struct Logmon {
    drained: Arc<Mutex<Drained>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Logmon {
    /// Creates the FIFO at `path` (mode 0600, as logmon does) and starts draining it.
    pub fn start(path: &Path) -> Logmon {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .unwrap_or_else(|errno| panic!("mkfifo {}: {errno}", path.display()));
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        let drained = Arc::new(Mutex::new(Drained {
            fifo,
            received: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (drained, stop) = (drained.clone(), stop.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + LIFETIME;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    drained.lock().drain();
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Logmon {
            drained,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything written to the FIFO so far.
    pub fn received(&self) -> Vec<u8> {
        let mut drained = self.drained.lock();
        drained.drain();
        drained.received.clone()
    }
}

impl Drop for Logmon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
