//! The pool's size as the plugin sees it, written for `polydev pool status`.
//!
//! The operator CLI reads Docker and the slots directory, which show what exists but not what
//! the pool *wants* (its desired size lives only in the plugin's memory). So each refiller writes
//! `<data_dir>/pool-status/<provider>.json` whenever its desired size or growth limit changes,
//! and at least every [`REWRITE_EVERY`] while it runs; the CLI shows it when it is fresher than
//! [`FRESH_FOR`] (else the plugin is not running, and the numbers would mislead).
//!
//! Invariants: a file is replaced atomically (written beside, then renamed), so a reader never
//! sees half of one; nothing secret is in it; a failed write is logged and never stops a refill.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How often a running refiller rewrites an unchanged status.
pub const REWRITE_EVERY: Duration = Duration::from_secs(30);
/// How old a status may be and still be shown.
pub const FRESH_FOR: Duration = Duration::from_secs(90);

const DIR: &str = "pool-status";

/// One provider's pool, as last written by its refiller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrittenStatus {
    pub desired: usize,
    pub target: u32,
    pub max: u32,
    pub growth_limit: Option<String>,
    /// When it was written, in seconds since the Unix epoch.
    pub written_unix_secs: u64,
}

impl WrittenStatus {
    /// Whether it was written within [`FRESH_FOR`] of `now`.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        now.saturating_sub(self.written_unix_secs) <= FRESH_FOR.as_secs()
    }
}

fn path(data_dir: &Path, provider: &str) -> PathBuf {
    data_dir.join(DIR).join(format!("{provider}.json"))
}

/// Replace the status of `provider` under `data_dir`.
pub fn write(data_dir: &Path, provider: &str, status: &WrittenStatus) -> std::io::Result<()> {
    let dir = data_dir.join(DIR);
    std::fs::create_dir_all(&dir)?;
    let mut file = tempfile::NamedTempFile::new_in(&dir)?;
    file.write_all(&serde_json::to_vec(status).map_err(std::io::Error::other)?)?;
    file.persist(path(data_dir, provider))
        .map(drop)
        .map_err(|err| err.error)
}

/// The status of `provider` under `data_dir`, if one was written and reads back whole.
pub fn read(data_dir: &Path, provider: &str) -> Option<WrittenStatus> {
    let bytes = std::fs::read(path(data_dir, provider)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Every provider with a status under `data_dir`.
pub fn providers(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join(DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()?
                .strip_suffix(".json")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Seconds since the Unix epoch, now.
pub fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_status_reads_back_and_goes_stale() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "openai"), None);
        let status = WrittenStatus {
            desired: 12,
            target: 2,
            max: 32,
            growth_limit: Some("held at max".into()),
            written_unix_secs: now_unix_secs(),
        };
        write(dir.path(), "openai", &status).unwrap();
        write(dir.path(), "openai", &status).unwrap();
        assert_eq!(read(dir.path(), "openai"), Some(status.clone()));
        assert_eq!(providers(dir.path()), vec!["openai".to_string()]);
        assert!(status.is_fresh(SystemTime::now()));
        assert!(!status.is_fresh(SystemTime::now() + FRESH_FOR + Duration::from_secs(5)));
        std::fs::write(path(dir.path(), "google"), "{half").unwrap();
        assert_eq!(read(dir.path(), "google"), None, "unreadable is absent");
    }
}
