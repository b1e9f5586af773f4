//! [`FileStore`]: per-user provider credentials, encrypted at rest under the plugin's data dir.
//!
//! ```text
//! <key_file>  (default /etc/polydev/credentials.key)       32 random bytes        0600
//! <data_dir>/credentials/                                                        0700
//! <data_dir>/credentials/.lock                            flock of the writers   0600
//! <data_dir>/credentials/<namespace>/<user>/                                     0700
//! <data_dir>/credentials/<namespace>/<user>/<provider>.cred   one entry (entry.rs) 0600
//! ```
//!
//! The sealing key lives apart from what it seals (`credentials_key_file`, outside `data_dir` by
//! default): anything that copies or discloses the data dir — a backup, a bug that lets a task read
//! a file there — does not carry the key along with the sealed entries.
//!
//! Invariants:
//! - Every name is checked ([`crate::credential_model::names`]) before it touches a path.
//! - Every file and directory read must be private (`crate::private_file`): owned by this uid, no
//!   group/other bits, no symlinks. Anything else is refused with the command that fixes it. The
//!   key file's directory must be writable by nobody else either (else the key could be swapped).
//! - Only [`FileStore::set`] creates the key (the operator CLI); reading never does, so a plugin
//!   never invents a key nobody registered anything under. `set` also refuses to create a new key
//!   while entries exist (they would be sealed under a key that is gone).
//! - Writers (set, rm) hold an exclusive lock; every write is atomic. Readers take no lock: they
//!   see a whole old or a whole new entry file.
//! - The key is read once and kept in memory; each read `stat`s the key file and reloads it only
//!   if the file changed (device, inode, size, mtime or ctime), so a re-created key is picked up.
//! - Nothing here logs, and no error contains a value or key material.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use secrecy::SecretString;
use zeroize::Zeroizing;

pub use crate::credential_model::Listing;

use super::entry::EntryFile;
use super::sealed::{KEY_LEN, OpenError, StoreKey};
use crate::credential_model::names::{
    self, EntryId, NameError, NameKind, SHARED_NAMESPACE, SHARED_USER,
};
use crate::private_file::{self as private, PrivateFileError};
use std::os::unix::fs::MetadataExt;

/// Largest value `set` accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest entry file a reader accepts, in bytes.
const MAX_ENTRY_FILE_LEN: u64 = 4 * 1024 * 1024;

/// Why the store could not do something. Never contains a value or key material.
#[derive(Debug, thiserror::Error)]
pub enum FileStoreError {
    #[error(transparent)]
    Name(#[from] NameError),
    /// A file or directory is not private, or cannot be read or written.
    #[error(transparent)]
    Private(#[from] PrivateFileError),
    #[error(
        "the store key {path} does not exist{}",
        if *.entries_exist {
            ", but credentials are stored under it: restore the key file, or remove the \
             credentials directory and register every credential again"
        } else {
            ""
        },
        path = path.display()
    )]
    NoKey { path: PathBuf, entries_exist: bool },
    #[error(
        "the store key {path} does not exist, but {legacy} does: polydev now keeps the key \
         apart from the entries it seals; move it with `install -d -m 0700 {dir} && mv {legacy} \
         {path}`, or set credentials_key_file (and --key-file) to where it is",
        path = path.display(),
        legacy = legacy.display(),
        dir = path.parent().unwrap_or(Path::new("/")).display()
    )]
    KeyMoved { path: PathBuf, legacy: PathBuf },
    #[error("the store key {path} is unusable: {problem}", path = path.display())]
    BadKey { path: PathBuf, problem: String },
    #[error("{path} is corrupt: {problem}", path = path.display())]
    Corrupt { path: PathBuf, problem: String },
    #[error("{variable} in {path} does not decrypt: {reason}", path = path.display())]
    Undecryptable {
        path: PathBuf,
        variable: String,
        reason: OpenError,
    },
    #[error(
        "nothing is stored for {id}{}",
        .variable.as_ref().map(|v| format!(" under {v}")).unwrap_or_default()
    )]
    NotFound {
        id: EntryId,
        variable: Option<String>,
    },
    #[error("the value is {0}")]
    BadValue(&'static str),
    #[error("{action} {path}: {source}", path = path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What identifies one version of the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The encrypted credential store of one data dir.
pub struct FileStore {
    root: PathBuf,
    key_path: PathBuf,
    data_dir: PathBuf,
    cached_key: Mutex<Option<(FileStamp, Arc<StoreKey>)>>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("root", &self.root)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl FileStore {
    /// The store of `data_dir`: entries in `<data_dir>/credentials/`, sealed with the key in
    /// `key_path`. Touches nothing until used.
    pub fn new(data_dir: impl Into<PathBuf>, key_path: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        FileStore {
            root: data_dir.join("credentials"),
            key_path: key_path.into(),
            data_dir,
            cached_key: Mutex::new(None),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// Where the entry of `id` lives.
    pub fn entry_path(&self, id: &EntryId) -> PathBuf {
        self.root
            .join(id.namespace())
            .join(id.user())
            .join(format!("{}.cred", id.provider()))
    }

    /// The values of those `variables` that are stored for `id`, in the order asked; variables
    /// not stored are left out (so is everything when nothing is stored for `id`).
    pub fn get_many(
        &self,
        id: &EntryId,
        variables: &[String],
    ) -> Result<Vec<(String, SecretString)>, FileStoreError> {
        for variable in variables {
            names::check(NameKind::Variable, variable)?;
        }
        let Some(entry) = self.load(id)? else {
            return Ok(Vec::new());
        };
        let present: Vec<&String> = variables
            .iter()
            .filter(|v| entry.values.contains_key(*v))
            .collect();
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.key()?;
        present
            .into_iter()
            .map(|variable| {
                key.open(id, variable, &entry.values[variable])
                    .map(|value| (variable.clone(), value))
                    .map_err(|reason| FileStoreError::Undecryptable {
                        path: self.entry_path(id),
                        variable: variable.clone(),
                        reason,
                    })
            })
            .collect()
    }

    /// Store `value` as `variable` of `id`, replacing any previous value; creates the key, the
    /// data dir and the directories on first use. An entry file that no longer parses (what
    /// the plugin tells the operator to fix with `set`) is replaced by a new one: returns the
    /// problem it had, so the caller can say so.
    pub fn set(
        &self,
        id: &EntryId,
        variable: &str,
        value: &SecretString,
    ) -> Result<Option<String>, FileStoreError> {
        use secrecy::ExposeSecret;
        names::check(NameKind::Variable, variable)?;
        match value.expose_secret().len() {
            0 => return Err(FileStoreError::BadValue("empty")),
            n if n > MAX_VALUE_LEN => return Err(FileStoreError::BadValue("larger than 64 KiB")),
            _ => {}
        }
        private::ensure_parents(&self.data_dir)?;
        if let Some(key_dir) = self.key_path.parent() {
            private::ensure_parents(key_dir)?;
        }
        private::ensure_dir(&self.root)?;
        let _lock = private::Lock::acquire(&self.root.join(".lock"))?;
        let key = self.key_or_create()?;
        let user_dir = self.root.join(id.namespace()).join(id.user());
        private::ensure_dir(user_dir.parent().expect("has a parent"))?;
        private::ensure_dir(&user_dir)?;
        let (mut entry, replaced) = match self.load(id) {
            Ok(entry) => (entry.unwrap_or_default(), None),
            Err(FileStoreError::Corrupt { problem, .. }) => (EntryFile::default(), Some(problem)),
            Err(err) => return Err(err),
        };
        entry
            .values
            .insert(variable.to_string(), key.seal(id, variable, value));
        private::write_atomic(&self.entry_path(id), &entry.render())?;
        Ok(replaced)
    }

    /// Remove `variable` of `id`, or the whole entry when `variable` is `None`; returns the
    /// variable names removed. Empty directories left behind are removed too.
    pub fn remove(
        &self,
        id: &EntryId,
        variable: Option<&str>,
    ) -> Result<Vec<String>, FileStoreError> {
        if let Some(variable) = variable {
            names::check(NameKind::Variable, variable)?;
        }
        let not_found = || FileStoreError::NotFound {
            id: id.clone(),
            variable: variable.map(str::to_string),
        };
        if !private::check_dir(&self.root)? {
            return Err(not_found());
        }
        let _lock = private::Lock::acquire(&self.root.join(".lock"))?;
        let path = self.entry_path(id);
        let mut entry = match self.load(id) {
            // The whole entry of a file that no longer parses can still go.
            Err(FileStoreError::Corrupt { .. }) if variable.is_none() => {
                std::fs::remove_file(&path).map_err(|err| io_error("cannot remove", &path, err))?;
                return Ok(vec!["(the unreadable entry)".to_string()]);
            }
            loaded => loaded?.ok_or_else(not_found)?,
        };
        let removed = match variable {
            Some(variable) => {
                entry.values.remove(variable).ok_or_else(not_found)?;
                vec![variable.to_string()]
            }
            None => std::mem::take(&mut entry.values).into_keys().collect(),
        };
        if entry.values.is_empty() {
            std::fs::remove_file(&path).map_err(|err| io_error("cannot remove", &path, err))?;
            let user_dir = path.parent().expect("entry paths have parents");
            if std::fs::remove_dir(user_dir).is_ok() {
                let _ = std::fs::remove_dir(user_dir.parent().expect("user dirs have parents"));
            }
        } else {
            private::write_atomic(&path, &entry.render())?;
        }
        Ok(removed)
    }

    /// Every entry (optionally of one namespace and/or user), sorted, with its variable names.
    /// Never decrypts anything.
    pub fn list(
        &self,
        namespace: Option<&str>,
        user: Option<&str>,
    ) -> Result<Vec<Listing>, FileStoreError> {
        if let Some(namespace) = namespace {
            names::check(NameKind::Namespace, namespace)?;
        }
        if let Some(user) = user {
            names::check(NameKind::User, user)?;
        }
        let mut found = Vec::new();
        if !private::check_dir(&self.root)? {
            return Ok(found);
        }
        for ns in self.subdirs(&self.root, NameKind::Namespace)? {
            if namespace.is_some_and(|n| n != ns) {
                continue;
            }
            let ns_dir = self.root.join(&ns);
            for u in self.subdirs(&ns_dir, NameKind::User)? {
                if user.is_some_and(|wanted| wanted != u) {
                    continue;
                }
                let user_dir = ns_dir.join(&u);
                for provider in entry_names(&user_dir)? {
                    self.push_listing(EntryId::new(&ns, &u, &provider)?, &mut found);
                }
            }
        }
        // The node's shared keys, when no namespace or user narrows the list.
        let shared_dir = self.root.join(SHARED_NAMESPACE).join(SHARED_USER);
        if namespace.is_none()
            && user.is_none()
            && private::check_dir(&self.root.join(SHARED_NAMESPACE))?
            && private::check_dir(&shared_dir)?
        {
            for provider in entry_names(&shared_dir)? {
                self.push_listing(EntryId::shared(&provider)?, &mut found);
            }
        }
        Ok(found)
    }

    /// `id`'s listing, if its entry exists (an unreadable one with its problem).
    fn push_listing(&self, id: EntryId, found: &mut Vec<Listing>) {
        let variables = match self.load(&id) {
            Ok(Some(entry)) => Ok(entry.values.into_keys().collect()),
            Ok(None) => return,
            Err(err) => Err(err.to_string()),
        };
        let updated = std::fs::metadata(self.entry_path(&id))
            .and_then(|meta| meta.modified())
            .ok();
        found.push(Listing {
            id,
            updated,
            variables,
        });
    }

    /// Private subdirectories of `dir` whose names follow `kind`'s rule, sorted.
    fn subdirs(&self, dir: &Path, kind: NameKind) -> Result<Vec<String>, FileStoreError> {
        let mut names = Vec::new();
        for name in dir_names(dir)? {
            if names::check(kind, &name).is_ok() && private::check_dir(&dir.join(&name))? {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The parsed entry file of `id`, if it exists; every directory on the way must be private.
    fn load(&self, id: &EntryId) -> Result<Option<EntryFile>, FileStoreError> {
        let ns_dir = self.root.join(id.namespace());
        for dir in [&self.root, &ns_dir, &ns_dir.join(id.user())] {
            if !private::check_dir(dir)? {
                return Ok(None);
            }
        }
        let path = self.entry_path(id);
        let Some((bytes, _)) =
            private::read_file(&path, MAX_ENTRY_FILE_LEN).map_err(oversized_is_corrupt)?
        else {
            return Ok(None);
        };
        EntryFile::parse(&bytes)
            .map(Some)
            .map_err(|problem| FileStoreError::Corrupt { path, problem })
    }

    /// The key, from memory if the key file has not changed since it was read.
    fn key(&self) -> Result<Arc<StoreKey>, FileStoreError> {
        let path = &self.key_path;
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(self.no_key()),
            Err(err) => return Err(io_error("cannot inspect", path, err)),
        };
        private::check(path, &meta, false)?;
        if let Some(dir) = path.parent() {
            private::check_only_owner_writes(dir)?;
        }
        let mut cached = self.cached_key.lock();
        if let Some((stamp, key)) = cached.as_ref()
            && *stamp == FileStamp::of(&meta)
        {
            return Ok(key.clone());
        }
        let Some((bytes, meta)) = private::read_file(path, KEY_LEN as u64).map_err(|err| {
            match oversized_is_corrupt(err) {
                FileStoreError::Corrupt { problem, .. } => FileStoreError::BadKey {
                    path: path.clone(),
                    problem,
                },
                other => other,
            }
        })?
        else {
            return Err(self.no_key());
        };
        let bytes = Zeroizing::new(bytes);
        let array: &[u8; KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| FileStoreError::BadKey {
                    path: path.clone(),
                    problem: format!("it is {} bytes, not {KEY_LEN}", bytes.len()),
                })?;
        let key = Arc::new(StoreKey::from_bytes(array));
        *cached = Some((FileStamp::of(&meta), key.clone()));
        Ok(key)
    }

    /// The key, created first if there is none and no entry exists yet.
    fn key_or_create(&self) -> Result<Arc<StoreKey>, FileStoreError> {
        match self.key() {
            Err(FileStoreError::NoKey {
                entries_exist: false,
                ..
            }) => {
                let bytes = StoreKey::generate()
                    .map_err(|err| io_error("cannot generate", &self.key_path, err))?;
                private::create_once(&self.key_path, bytes.as_slice())?;
                self.key()
            }
            other => other,
        }
    }

    /// Why there is no key: none was ever made, or one is still where versions before
    /// `credentials_key_file` kept it (`<data_dir>/credentials.key`).
    fn no_key(&self) -> FileStoreError {
        let legacy = self.data_dir.join("credentials.key");
        if legacy != self.key_path && legacy.exists() {
            return FileStoreError::KeyMoved {
                path: self.key_path.clone(),
                legacy,
            };
        }
        FileStoreError::NoKey {
            path: self.key_path.clone(),
            entries_exist: self.any_entry(),
        }
    }

    /// Whether any entry file exists (for the missing-key diagnosis). Errors count as "yes":
    /// the caller then refuses rather than creating a key over unreadable entries.
    fn any_entry(&self) -> bool {
        self.list(None, None).map(|l| !l.is_empty()).unwrap_or(true)
    }
}

/// A store file larger than any valid one is corrupt, like one that does not parse (so `set`
/// replaces such an entry, and `rm` removes it).
fn oversized_is_corrupt(err: PrivateFileError) -> FileStoreError {
    match err {
        PrivateFileError::TooLarge { path, size, limit } => FileStoreError::Corrupt {
            path,
            problem: format!("it is {size} bytes, more than the {limit} allowed"),
        },
        other => other.into(),
    }
}

fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> FileStoreError {
    FileStoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Names in `dir` (not starting with `.`), sorted.
fn dir_names(dir: &Path) -> Result<Vec<String>, FileStoreError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|err| io_error("cannot list", dir, err))? {
        let entry = entry.map_err(|err| io_error("cannot list", dir, err))?;
        if let Ok(name) = entry.file_name().into_string()
            && !name.starts_with('.')
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Providers with an entry file (`<provider>.cred`) in `dir`, sorted.
fn entry_names(dir: &Path) -> Result<Vec<String>, FileStoreError> {
    Ok(dir_names(dir)?
        .into_iter()
        .filter_map(|name| name.strip_suffix(".cred").map(str::to_string))
        .filter(|provider| names::check(NameKind::Provider, provider).is_ok())
        .collect())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
