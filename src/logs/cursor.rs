//! How far the log pump has got, persisted so a restarted plugin resumes without loss or
//! duplication.
//!
//! Per stream the cursor names the last record *completely consumed* — by its engine timestamp
//! and by how many records of that stream carried that same timestamp up to it (engines give
//! several records one timestamp) — plus `partial`: how many leading bytes of the *next* record of
//! that stream were already consumed. `partial` exists because the redactor may hold back the tail
//! of a record while it waits to see whether a secret continues; those bytes are not yet written,
//! so the record is not complete. "Consumed" means written to the sink or deliberately dropped.
//!
//! Storage: `<state_dir>/<container_id>.cursor`, a fixed-size binary record (magic, version,
//! flags, two stream cursors, FNV-1a checksum) rewritten in place with one `pwrite` at offset 0
//! after every record. One `pwrite` of 80 bytes into the page cache is atomic with respect to the
//! death of this process, which is the failure we guard against (plugin `kill -9`, crash, upgrade).
//! There is no `fsync`: after a power loss or kernel crash the file may be stale or torn — a torn
//! file fails its checksum and [`CursorFile::open`] reports it rather than guessing.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::engine::LogStream;

use super::LogError;

const MAGIC: &[u8; 4] = b"PDLC";
const VERSION: u8 = 1;
const STREAM_LEN: usize = 16 + 8 + 8;
const BODY_LEN: usize = 4 + 1 + 1 + 2 + 2 * STREAM_LEN;
/// Size of the cursor file in bytes.
pub const FILE_LEN: usize = BODY_LEN + 4;

const FLAG_LAUNCHED: u8 = 1;
const FLAG_FINISHED: u8 = 2;

/// Progress on one output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamCursor {
    /// Timestamp of the last completely consumed record; 0 when there is none.
    pub timestamp_nanos: i128,
    /// How many records of this stream with exactly `timestamp_nanos` were consumed, up to and
    /// including that last record.
    pub count_at_timestamp: u64,
    /// Leading bytes of the next record of this stream that were already consumed.
    pub partial: u64,
}

/// Progress of the whole pump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub stdout: StreamCursor,
    pub stderr: StreamCursor,
    /// The entrypoint's launch sentinel was seen on stderr.
    pub launched: bool,
    /// The pump completed (container exited, everything written, sinks closed).
    pub finished: bool,
}

impl Cursor {
    pub fn stream(&self, stream: LogStream) -> &StreamCursor {
        match stream {
            LogStream::Stdout => &self.stdout,
            LogStream::Stderr => &self.stderr,
        }
    }

    pub fn stream_mut(&mut self, stream: LogStream) -> &mut StreamCursor {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
        }
    }

    /// The `since` (whole seconds) to ask the engine for: the floor of the older stream's
    /// timestamp, 0 when a stream has consumed nothing yet (its records may be anywhere).
    pub fn since_unix_secs(&self) -> i64 {
        let oldest = self
            .stdout
            .timestamp_nanos
            .min(self.stderr.timestamp_nanos)
            .max(0);
        i64::try_from(oldest / 1_000_000_000).unwrap_or(i64::MAX)
    }

    fn encode(&self) -> [u8; FILE_LEN] {
        let mut buf = [0u8; FILE_LEN];
        buf[..4].copy_from_slice(MAGIC);
        buf[4] = VERSION;
        buf[5] =
            (u8::from(self.launched) * FLAG_LAUNCHED) | (u8::from(self.finished) * FLAG_FINISHED);
        for (i, s) in [self.stdout, self.stderr].iter().enumerate() {
            let at = 8 + i * STREAM_LEN;
            buf[at..at + 16].copy_from_slice(&s.timestamp_nanos.to_le_bytes());
            buf[at + 16..at + 24].copy_from_slice(&s.count_at_timestamp.to_le_bytes());
            buf[at + 24..at + 32].copy_from_slice(&s.partial.to_le_bytes());
        }
        let sum = fnv1a(&buf[..BODY_LEN]);
        buf[BODY_LEN..].copy_from_slice(&sum.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8; FILE_LEN]) -> Result<Cursor, &'static str> {
        if &buf[..4] != MAGIC {
            return Err("bad magic");
        }
        if buf[4] != VERSION {
            return Err("unknown version");
        }
        if buf[BODY_LEN..] != fnv1a(&buf[..BODY_LEN]).to_le_bytes() {
            return Err("checksum mismatch");
        }
        let stream = |i: usize| {
            let at = 8 + i * STREAM_LEN;
            let field = |from: usize, to: usize| &buf[at + from..at + to];
            StreamCursor {
                timestamp_nanos: i128::from_le_bytes(field(0, 16).try_into().unwrap_or_default()),
                count_at_timestamp: u64::from_le_bytes(
                    field(16, 24).try_into().unwrap_or_default(),
                ),
                partial: u64::from_le_bytes(field(24, 32).try_into().unwrap_or_default()),
            }
        };
        Ok(Cursor {
            stdout: stream(0),
            stderr: stream(1),
            launched: buf[5] & FLAG_LAUNCHED != 0,
            finished: buf[5] & FLAG_FINISHED != 0,
        })
    }
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The cursor of one container, open for fast rewriting.
#[derive(Debug)]
pub struct CursorFile {
    path: PathBuf,
    file: File,
    cursor: Cursor,
}

impl CursorFile {
    /// Where the cursor of `container_id` lives under `state_dir`.
    pub fn path_for(state_dir: &Path, container_id: &str) -> Result<PathBuf, LogError> {
        let safe = !container_id.is_empty()
            && container_id.len() <= 128
            && !container_id.starts_with('.')
            && container_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !safe {
            return Err(LogError::InvalidContainerId(container_id.to_string()));
        }
        Ok(state_dir.join(format!("{container_id}.cursor")))
    }

    /// Opens (creating the state dir and file if needed) and loads the cursor; a missing or
    /// empty file is the start of the stream.
    pub fn open(state_dir: &Path, container_id: &str) -> Result<CursorFile, LogError> {
        let path = Self::path_for(state_dir, container_id)?;
        let io_err = |source| LogError::CursorIo {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        let mut raw = Vec::with_capacity(FILE_LEN);
        file.read_to_end(&mut raw).map_err(io_err)?;
        let cursor = match <&[u8; FILE_LEN]>::try_from(raw.as_slice()) {
            _ if raw.is_empty() => Cursor::default(),
            Ok(buf) => Cursor::decode(buf).map_err(|reason| LogError::CursorCorrupt {
                path: path.clone(),
                reason,
            })?,
            Err(_) => {
                return Err(LogError::CursorCorrupt {
                    path,
                    reason: "wrong length",
                });
            }
        };
        Ok(CursorFile { path, file, cursor })
    }

    /// The last saved cursor.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Persists `cursor` (one `pwrite`; a no-op when unchanged).
    pub fn save(&mut self, cursor: &Cursor) -> Result<(), LogError> {
        if *cursor == self.cursor {
            return Ok(());
        }
        self.file
            .write_all_at(&cursor.encode(), 0)
            .map_err(|source| LogError::CursorIo {
                path: self.path.clone(),
                source,
            })?;
        self.cursor = *cursor;
        Ok(())
    }

    /// Deletes the cursor file (the task was destroyed).
    pub fn remove(self) -> Result<(), LogError> {
        remove_file(&self.path)
    }

    /// Deletes the cursor file of `container_id` if there is one (when no pump holds it open).
    pub fn remove_for(state_dir: &Path, container_id: &str) -> Result<(), LogError> {
        remove_file(&Self::path_for(state_dir, container_id)?)
    }
}

fn remove_file(path: &Path) -> Result<(), LogError> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != ErrorKind::NotFound => Err(LogError::CursorIo {
            path: path.to_path_buf(),
            source: err,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        Cursor {
            stdout: StreamCursor {
                timestamp_nanos: 1_700_000_001_500_000_000,
                count_at_timestamp: 3,
                partial: 0,
            },
            stderr: StreamCursor {
                timestamp_nanos: 1_700_000_000_250_000_000,
                count_at_timestamp: 1,
                partial: 7,
            },
            launched: true,
            finished: false,
        }
    }

    #[test]
    fn missing_file_is_the_start_then_saves_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut file = CursorFile::open(&state, "abc123").unwrap();
        assert_eq!(*file.cursor(), Cursor::default());
        assert_eq!(file.cursor().since_unix_secs(), 0);
        file.save(&sample()).unwrap();
        drop(file);
        let file = CursorFile::open(&state, "abc123").unwrap();
        assert_eq!(*file.cursor(), sample());
        assert_eq!(file.cursor().since_unix_secs(), 1_700_000_000);
        assert_eq!(
            std::fs::metadata(file.path()).unwrap().len(),
            FILE_LEN as u64
        );
        file.remove().unwrap();
        assert!(!state.join("abc123.cursor").exists());
        CursorFile::remove_for(&state, "abc123").unwrap();
    }

    #[test]
    fn since_is_zero_while_a_stream_has_nothing() {
        let mut c = sample();
        c.stdout = StreamCursor::default();
        assert_eq!(c.since_unix_secs(), 0);
    }

    #[test]
    fn torn_or_foreign_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = CursorFile::open(dir.path(), "c1").unwrap();
        file.save(&sample()).unwrap();
        let path = file.path().to_path_buf();
        drop(file);
        let mut raw = std::fs::read(&path).unwrap();
        raw[20] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        let err = CursorFile::open(dir.path(), "c1").unwrap_err();
        assert!(matches!(
            err,
            LogError::CursorCorrupt {
                reason: "checksum mismatch",
                ..
            }
        ));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(
            CursorFile::open(dir.path(), "c1"),
            Err(LogError::CursorCorrupt { .. })
        ));
    }

    #[test]
    fn ids_that_could_escape_the_state_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "x\0y"] {
            assert!(matches!(
                CursorFile::open(dir.path(), bad),
                Err(LogError::InvalidContainerId(_))
            ));
        }
    }
}
