//! Helpers shared by the log module's tests: FIFOs with a reader that behaves like logmon's.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

/// Creates a FIFO (mode 0600) at `dir/name`.
pub fn mkfifo(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    if let Err(errno) = nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
    {
        panic!("mkfifo {}: {errno}", path.display());
    }
    path
}

/// Like logmon: a blocking `O_RDONLY` open (waits for a writer), then copy until EOF.
pub fn spawn_reader(path: &Path) -> JoinHandle<Vec<u8>> {
    spawn_reader_limited(path, usize::MAX)
}

/// A reader that closes the FIFO after `limit` bytes (or at EOF), returning what it read.
pub fn spawn_reader_limited(path: &Path, limit: usize) -> JoinHandle<Vec<u8>> {
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let mut file = std::fs::File::open(&path).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while out.len() < limit {
            let want = buf.len().min(limit - out.len());
            match file.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(err) => panic!("reading {}: {err}", path.display()),
            }
        }
        out
    })
}
