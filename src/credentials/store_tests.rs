//! Tests of [`FileStore`] on a temp data dir.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use secrecy::{ExposeSecret, SecretString};

use super::*;

const VALUE: &str = "sk-store-test-0123456789abcdef";

fn id(namespace: &str, user: &str, provider: &str) -> EntryId {
    EntryId::new(namespace, user, provider).unwrap()
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text)
}

fn names(list: &[String]) -> Vec<String> {
    list.to_vec()
}

fn vars(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn get(store: &FileStore, id: &EntryId, variable: &str) -> Result<Option<String>, FileStoreError> {
    Ok(store
        .get_many(id, &vars(&[variable]))?
        .pop()
        .map(|(_, v)| v.expose_secret().to_string()))
}

/// Every byte under `dir`, file by file.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn round_trip_with_private_layout_and_no_plaintext_on_disk() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(
        data.path().join("state"),
        data.path().join("keys/credentials.key"),
    );
    let a = id("team-a", "user_1", "google");
    assert!(get(&store, &a, "GOOGLE_API_KEY").unwrap().is_none());
    assert!(
        !store.key_path().exists(),
        "reading never creates the key (or anything)"
    );

    store.set(&a, "GOOGLE_API_KEY", &secret(VALUE)).unwrap();
    store
        .set(&a, "GOOGLE_PROJECT_ID", &secret("project-x"))
        .unwrap();
    let found = store
        .get_many(&a, &vars(&["GOOGLE_PROJECT_ID", "NOPE", "GOOGLE_API_KEY"]))
        .unwrap();
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(
        found,
        [
            ("GOOGLE_PROJECT_ID", "project-x"),
            ("GOOGLE_API_KEY", VALUE)
        ],
        "asked order, absent ones left out"
    );

    // Replacing a value keeps the other.
    store
        .set(&a, "GOOGLE_API_KEY", &secret("sk-new-value"))
        .unwrap();
    assert_eq!(
        get(&store, &a, "GOOGLE_API_KEY").unwrap().unwrap(),
        "sk-new-value"
    );
    assert_eq!(
        get(&store, &a, "GOOGLE_PROJECT_ID").unwrap().unwrap(),
        "project-x"
    );

    let entry = store.entry_path(&a);
    assert_eq!(
        entry,
        data.path()
            .join("state/credentials/team-a/user_1/google.cred")
    );
    assert_eq!(mode(store.key_path()), 0o600);
    assert_eq!(std::fs::metadata(store.key_path()).unwrap().len(), 32);
    assert_eq!(mode(&entry), 0o600);
    assert_eq!(
        mode(&data.path().join("keys")),
        0o700,
        "the key's own directory"
    );
    for dir in [
        "state",
        "state/credentials",
        "state/credentials/team-a",
        "state/credentials/team-a/user_1",
    ] {
        assert_eq!(mode(&data.path().join(dir)), 0o700, "{dir}");
    }
    for (path, bytes) in all_files(data.path()) {
        for value in [VALUE, "sk-new-value", "project-x"] {
            assert!(!contains(&bytes, value), "{} holds a value", path.display());
        }
    }
    let text = std::fs::read_to_string(&entry).unwrap();
    assert!(
        text.starts_with("polydev-credentials v1\nGOOGLE_API_KEY "),
        "{text}"
    );
}

#[test]
fn a_file_copied_to_another_identity_does_not_decrypt() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    let owner = id("ns-a", "user1", "openai");
    store.set(&owner, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    for thief in [
        id("ns-b", "user1", "openai"),
        id("ns-a", "user2", "openai"),
        id("ns-a", "user1", "anthropic"),
    ] {
        // Give the thief an entry of its own so its directories exist, then overwrite it.
        store.set(&thief, "OTHER", &secret("x")).unwrap();
        std::fs::copy(store.entry_path(&owner), store.entry_path(&thief)).unwrap();
        let err = get(&store, &thief, "OPENAI_API_KEY").unwrap_err();
        assert!(
            matches!(&err, FileStoreError::Undecryptable { variable, .. } if variable == "OPENAI_API_KEY"),
            "{thief}: {err}"
        );
        assert!(!err.to_string().contains(VALUE));
    }
    // Renaming a variable inside the file does not work either.
    let path = store.entry_path(&owner);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("OPENAI_API_KEY ", "ANTHROPIC_API_KEY ")).unwrap();
    assert!(matches!(
        get(&store, &owner, "ANTHROPIC_API_KEY").unwrap_err(),
        FileStoreError::Undecryptable { .. }
    ));
}

#[test]
fn tampering_a_wrong_key_and_a_missing_key_are_errors() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    let a = id("default", "u1", "openai");
    store.set(&a, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    let path = store.entry_path(&a);
    let original = std::fs::read_to_string(&path).unwrap();

    // Flip one character of the ciphertext (the last field, before its padding/newline).
    let line = original.lines().nth(1).unwrap();
    let at = original.find(line).unwrap() + line.len() - 4;
    let mut tampered = original.clone().into_bytes();
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(&path, &tampered).unwrap();
    assert!(matches!(
        get(&store, &a, "OPENAI_API_KEY").unwrap_err(),
        FileStoreError::Undecryptable { .. }
    ));
    std::fs::write(&path, "garbage\n").unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
    assert!(matches!(err, FileStoreError::Corrupt { .. }), "{err}");
    std::fs::write(&path, &original).unwrap();
    assert_eq!(get(&store, &a, "OPENAI_API_KEY").unwrap().unwrap(), VALUE);

    // Another key (a changed key file is noticed despite the in-memory copy).
    let key_path = store.key_path().to_path_buf();
    let real_key = std::fs::read(&key_path).unwrap();
    std::fs::write(&key_path, [9u8; 32]).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
    assert!(err.to_string().contains("another key"), "{err}");
    std::fs::write(&key_path, [9u8; 31]).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
    assert!(err.to_string().contains("31 bytes, not 32"), "{err}");

    // No key at all: reading says entries exist; set refuses to make a new key over them.
    std::fs::remove_file(&key_path).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
    assert!(
        matches!(
            err,
            FileStoreError::NoKey {
                entries_exist: true,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("restore the key file"), "{err}");
    let err = store
        .set(
            &id("default", "u2", "openai"),
            "OPENAI_API_KEY",
            &secret("v"),
        )
        .unwrap_err();
    assert!(matches!(err, FileStoreError::NoKey { .. }), "{err}");
    assert!(!key_path.exists());
    std::fs::write(&key_path, &real_key).unwrap();
    set_mode(&key_path, 0o600);
    assert_eq!(get(&store, &a, "OPENAI_API_KEY").unwrap().unwrap(), VALUE);
}

#[test]
fn anything_not_private_is_refused_with_the_fix() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    let a = id("default", "u1", "openai");
    store.set(&a, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    let entry = store.entry_path(&a);
    let user_dir = entry.parent().unwrap().to_path_buf();
    let ns_dir = user_dir.parent().unwrap().to_path_buf();
    for (path, bad, good, fix) in [
        (store.key_path().to_path_buf(), 0o644, 0o600, "chmod 600"),
        (store.root().to_path_buf(), 0o755, 0o700, "chmod 700"),
        (ns_dir, 0o710, 0o700, "chmod 700"),
        (user_dir, 0o701, 0o700, "chmod 700"),
        (entry.clone(), 0o640, 0o600, "chmod 600"),
    ] {
        set_mode(&path, bad);
        let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                FileStoreError::Private(PrivateFileError::Refused { .. })
            ),
            "{text}"
        );
        assert!(
            text.contains(&path.display().to_string()) && text.contains(fix),
            "{text}"
        );
        if path != entry {
            let write = store
                .set(&a, "OPENAI_API_KEY", &secret("other"))
                .unwrap_err();
            assert!(
                matches!(
                    write,
                    FileStoreError::Private(PrivateFileError::Refused { .. })
                ),
                "{write}"
            );
        }
        set_mode(&path, good);
    }
    assert_eq!(get(&store, &a, "OPENAI_API_KEY").unwrap().unwrap(), VALUE);

    // A symlinked entry is refused, even to a private file.
    let other = data.path().join("elsewhere.cred");
    std::fs::copy(&entry, &other).unwrap();
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink(&other, &entry).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
}

#[test]
fn an_oversized_entry_is_corrupt_so_set_replaces_it() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    let a = id("default", "u1", "openai");
    store.set(&a, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    let entry = store.entry_path(&a);
    std::fs::write(&entry, vec![b'x'; MAX_ENTRY_FILE_LEN as usize + 1]).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err();
    assert!(matches!(err, FileStoreError::Corrupt { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("is corrupt: it is 4194305 bytes, more than the 4194304 allowed"),
        "{err}"
    );
    let replaced = store.set(&a, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    assert!(replaced.is_some_and(|problem| problem.contains("4194305 bytes")));
    assert_eq!(get(&store, &a, "OPENAI_API_KEY").unwrap().unwrap(), VALUE);
}

#[test]
fn a_key_of_another_owner_is_refused() {
    if private::euid() != 0 {
        return; // only root can give files away; CI runs as root
    }
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    let a = id("default", "u1", "openai");
    store.set(&a, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    std::os::unix::fs::chown(store.key_path(), Some(4321), None).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err().to_string();
    assert!(
        err.contains("owned by uid 4321") && err.contains("chown 0"),
        "{err}"
    );
    std::os::unix::fs::chown(store.key_path(), Some(0), None).unwrap();
    std::os::unix::fs::chown(store.entry_path(&a), Some(4321), None).unwrap();
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err().to_string();
    assert!(err.contains("owned by uid 4321"), "{err}");
}

#[test]
fn list_shows_names_never_values_and_remove_tidies_up() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    assert!(store.list(None, None).unwrap().is_empty());
    let a1 = id("ns-a", "user1", "openai");
    let a1g = id("ns-a", "user1", "google");
    let a2 = id("ns-a", "user2", "openai");
    let b1 = id("ns-b", "user1", "anthropic");
    store.set(&a1, "OPENAI_API_KEY", &secret(VALUE)).unwrap();
    store
        .set(&a1g, "GOOGLE_PROJECT_ID", &secret("p-123456789"))
        .unwrap();
    store
        .set(&a1g, "GOOGLE_API_KEY", &secret("g-123456789"))
        .unwrap();
    store
        .set(&a2, "OPENAI_API_KEY", &secret("o-123456789"))
        .unwrap();
    store
        .set(&b1, "ANTHROPIC_API_KEY", &secret("a-123456789"))
        .unwrap();
    // Stray files are ignored.
    std::fs::write(store.root().join("ns-a/user1/.google.cred.1.tmp"), "x").unwrap();
    std::fs::write(store.root().join("ns-a/user1/notes.txt"), "x").unwrap();

    let all = store.list(None, None).unwrap();
    let shown: Vec<String> = all
        .iter()
        .map(|l| format!("{} {:?}", l.id, l.variables))
        .collect();
    assert_eq!(
        shown,
        [
            r#"namespace "ns-a", user "user1", provider "google" Ok(["GOOGLE_API_KEY", "GOOGLE_PROJECT_ID"])"#,
            r#"namespace "ns-a", user "user1", provider "openai" Ok(["OPENAI_API_KEY"])"#,
            r#"namespace "ns-a", user "user2", provider "openai" Ok(["OPENAI_API_KEY"])"#,
            r#"namespace "ns-b", user "user1", provider "anthropic" Ok(["ANTHROPIC_API_KEY"])"#,
        ]
    );
    let debug = format!("{all:?} {store:?}");
    for value in [
        VALUE,
        "p-123456789",
        "g-123456789",
        "o-123456789",
        "a-123456789",
    ] {
        assert!(!debug.contains(value), "{debug}");
    }
    assert_eq!(store.list(Some("ns-b"), None).unwrap().len(), 1);
    assert_eq!(store.list(None, Some("user1")).unwrap().len(), 3);
    assert_eq!(store.list(Some("ns-a"), Some("user2")).unwrap().len(), 1);
    assert!(store.list(Some("a/b"), None).is_err());

    // A corrupt entry is listed with its problem, not hidden.
    std::fs::write(store.entry_path(&a2), "junk\n").unwrap();
    let listed = store.list(Some("ns-a"), Some("user2")).unwrap();
    assert!(
        listed[0]
            .variables
            .as_ref()
            .unwrap_err()
            .contains("corrupt")
    );
    // ... and repaired as the plugin's error says: `set` replaces it, `rm` removes it.
    let problem = store
        .set(&a2, "OPENAI_API_KEY", &secret("sk-again"))
        .unwrap();
    assert!(problem.is_some_and(|p| p.contains("first line")));
    assert_eq!(
        get(&store, &a2, "OPENAI_API_KEY").unwrap().unwrap(),
        "sk-again"
    );
    std::fs::write(store.entry_path(&a2), "junk\n").unwrap();
    assert!(
        store.remove(&a2, Some("OPENAI_API_KEY")).is_err(),
        "one variable of an unreadable entry cannot be picked out"
    );
    store.remove(&a2, None).unwrap();
    assert!(!store.entry_path(&a2).exists());
    store.set(&a2, "OPENAI_API_KEY", &secret("sk-a2")).unwrap();

    assert_eq!(
        store.remove(&a1g, Some("GOOGLE_PROJECT_ID")).unwrap(),
        names(&vars(&["GOOGLE_PROJECT_ID"]))
    );
    assert!(get(&store, &a1g, "GOOGLE_PROJECT_ID").unwrap().is_none());
    assert_eq!(
        get(&store, &a1g, "GOOGLE_API_KEY").unwrap().unwrap(),
        "g-123456789"
    );
    let err = store.remove(&a1g, Some("GOOGLE_PROJECT_ID")).unwrap_err();
    assert!(matches!(err, FileStoreError::NotFound { .. }), "{err}");
    assert_eq!(store.remove(&a1g, None).unwrap(), vars(&["GOOGLE_API_KEY"]));
    assert!(!store.entry_path(&a1g).exists());

    assert_eq!(
        store.remove(&b1, Some("ANTHROPIC_API_KEY")).unwrap(),
        vars(&["ANTHROPIC_API_KEY"])
    );
    assert!(
        !store.root().join("ns-b").exists(),
        "empty directories are removed"
    );
    let err = store.remove(&b1, None).unwrap_err().to_string();
    assert_eq!(
        err,
        r#"nothing is stored for namespace "ns-b", user "user1", provider "anthropic""#
    );
    let empty = FileStore::new(
        data.path().join("nothing"),
        test_key_file(data.path().join("nothing")),
    );
    assert!(matches!(
        empty.remove(&a1, None),
        Err(FileStoreError::NotFound { .. })
    ));
}

#[test]
fn names_and_values_are_checked() {
    let data = tempfile::tempdir().unwrap();
    let store = FileStore::new(data.path(), test_key_file(data.path()));
    let a = id("default", "u1", "openai");
    for bad in ["", "lower", "A-B", "1A", "A B"] {
        let err = store.set(&a, bad, &secret("v")).unwrap_err();
        assert!(matches!(err, FileStoreError::Name(_)), "{bad:?}: {err}");
        assert!(store.get_many(&a, &vars(&[bad])).is_err());
        assert!(store.remove(&a, Some(bad)).is_err());
    }
    assert!(matches!(
        store.set(&a, "K", &secret("")).unwrap_err(),
        FileStoreError::BadValue("empty")
    ));
    let big = "x".repeat(MAX_VALUE_LEN + 1);
    assert!(matches!(
        store.set(&a, "K", &secret(&big)).unwrap_err(),
        FileStoreError::BadValue(_)
    ));
    let max = "x".repeat(MAX_VALUE_LEN);
    store.set(&a, "K", &secret(&max)).unwrap();
    assert_eq!(get(&store, &a, "K").unwrap().unwrap().len(), MAX_VALUE_LEN);
}

#[test]
fn concurrent_writers_lose_no_variable() {
    let data = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(FileStore::new(data.path(), test_key_file(data.path())));
    let a = id("default", "u1", "openai");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            let a = a.clone();
            std::thread::spawn(move || {
                store
                    .set(&a, &format!("VAR_{i}"), &secret(&format!("value-{i}")))
                    .unwrap()
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let listed = store.list(None, None).unwrap();
    assert_eq!(listed[0].variables.as_ref().unwrap().len(), 8);
    for i in 0..8 {
        assert_eq!(
            get(&store, &a, &format!("VAR_{i}")).unwrap().unwrap(),
            format!("value-{i}")
        );
    }
}

#[test]
fn the_key_lives_apart_and_its_directory_must_not_be_writable_by_others() {
    let data = tempfile::tempdir().unwrap();
    let keys = data.path().join("keys");
    let store = FileStore::new(data.path().join("state"), keys.join("credentials.key"));
    let a = id("team-a", "user_1", "openai");
    store
        .set(&a, "OPENAI_API_KEY", &SecretString::from(VALUE))
        .unwrap();
    assert!(!data.path().join("state/credentials.key").exists());
    assert!(
        all_files(&data.path().join("state"))
            .iter()
            .all(|(path, _)| !path.ends_with("credentials.key")),
        "nothing key-like beside the entries"
    );
    // A directory others can write lets them swap the key: refused, with the fix.
    set_mode(&keys, 0o777);
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err().to_string();
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(
        err.contains(&format!("chmod go-w {}", keys.display())),
        "{err}"
    );
    set_mode(&keys, 0o755);
    assert_eq!(get(&store, &a, "OPENAI_API_KEY").unwrap().unwrap(), VALUE);
}

#[test]
fn a_key_left_in_the_data_dir_by_an_older_version_is_named_with_the_move() {
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("state");
    let old = FileStore::new(&state, state.join("credentials.key"));
    let a = id("team-a", "user_1", "openai");
    old.set(&a, "OPENAI_API_KEY", &SecretString::from(VALUE))
        .unwrap();
    let moved_to = data.path().join("etc/credentials.key");
    let store = FileStore::new(&state, &moved_to);
    let err = get(&store, &a, "OPENAI_API_KEY").unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "mv {} {}",
            state.join("credentials.key").display(),
            moved_to.display()
        )),
        "{err}"
    );
    let err = store
        .set(&a, "OPENAI_API_KEY", &SecretString::from("sk-other"))
        .unwrap_err();
    assert!(
        matches!(err, FileStoreError::KeyMoved { .. }),
        "never a new key over old entries: {err}"
    );
}

/// The test store's key: in a directory of its own, outside `<data_dir>/credentials`.
fn test_key_file(data_dir: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    data_dir.as_ref().join("sealing/credentials.key")
}
