//! Tests of the resolution policy over a real store in a temp dir.

use secrecy::{ExposeSecret, SecretString};

use super::*;
use crate::config::PluginConfig;

/// `resolve` run to completion: the store and the environment answer without waiting.
trait ResolveNow {
    fn resolve_now(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError>;
}

impl<T: CredentialSource + ?Sized> ResolveNow for T {
    fn resolve_now(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        futures::executor::block_on(self.resolve(key, required, optional))
    }
}

const USER_KEY: &str = "sk-user1-registered-0123456789";
const SHARED_KEY: &str = "sk-shared-from-env-0123456789";

struct Fixture {
    _dir: tempfile::TempDir,
    config: PluginConfig,
    store: FileStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = PluginConfig {
        data_dir: dir.path().join("data"),
        credentials_key_file: dir.path().join("keys/credentials.key"),
        ..PluginConfig::default()
    };
    let store = FileStore::new(&config.data_dir, &config.credentials_key_file);
    store
        .set(
            &EntryId::new("ns-a", "user1", "openai").unwrap(),
            "OPENAI_API_KEY",
            &SecretString::from(USER_KEY),
        )
        .unwrap();
    Fixture {
        _dir: dir,
        config,
        store,
    }
}

fn env() -> Vec<(String, String)> {
    vec![
        ("OPENAI_API_KEY".into(), SHARED_KEY.into()),
        ("HOME".into(), "/root".into()),
    ]
}

fn key(namespace: &str, user: Option<&str>, provider: &str) -> CredentialKey {
    CredentialKey {
        namespace: namespace.into(),
        user_id: user.map(String::from),
        provider: provider.into(),
    }
}

fn openai(source: &dyn CredentialSource, key: &CredentialKey) -> Result<String, CredentialError> {
    let found = source.resolve_now(key, &["OPENAI_API_KEY".to_string()], &[])?;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "OPENAI_API_KEY");
    Ok(found[0].1.expose_secret().to_string())
}

fn assert_clean(err: &CredentialError) -> String {
    let text = err.to_string();
    for value in [USER_KEY, SHARED_KEY] {
        assert!(!text.contains(value), "{text}");
        assert!(!format!("{err:?}").contains(value));
    }
    text
}

#[test]
fn a_user_task_gets_its_own_registered_key_never_the_shared_one() {
    let f = fixture();
    let source = source_for(&f.config, env(), None);
    assert_eq!(
        openai(&*source, &key("ns-a", Some("user1"), "openai")).unwrap(),
        USER_KEY
    );
    // Unregistered user: an error naming everything and the fix, not the shared key.
    let err = openai(&*source, &key("ns-a", Some("user2"), "openai")).unwrap_err();
    let text = assert_clean(&err);
    assert!(
        matches!(err, CredentialError::NotRegistered { .. }),
        "{text}"
    );
    for part in [
        "OPENAI_API_KEY",
        r#"namespace "ns-a""#,
        r#"user "user2""#,
        r#"provider "openai""#,
        "polydev credentials set --namespace ns-a --user user2 --provider openai --variable OPENAI_API_KEY",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
}

#[test]
fn a_job_of_another_namespace_cannot_use_the_users_key() {
    let f = fixture();
    let source = source_for(&f.config, env(), None);
    let err = openai(&*source, &key("ns-b", Some("user1"), "openai")).unwrap_err();
    let text = assert_clean(&err);
    assert!(
        matches!(err, CredentialError::NotRegistered { .. }),
        "{text}"
    );
    assert!(
        text.contains(r#"namespace "ns-b""#) && text.contains("own namespace"),
        "{text}"
    );
    // Not even by copying the file over: the ciphertext is bound to namespace A.
    let b = EntryId::new("ns-b", "user1", "openai").unwrap();
    f.store
        .set(&b, "PLACEHOLDER", &SecretString::from("x"))
        .unwrap();
    let a = EntryId::new("ns-a", "user1", "openai").unwrap();
    std::fs::copy(f.store.entry_path(&a), f.store.entry_path(&b)).unwrap();
    let err = openai(&*source, &key("ns-b", Some("user1"), "openai")).unwrap_err();
    let text = assert_clean(&err);
    assert!(matches!(err, CredentialError::Corrupt { .. }), "{text}");
    assert!(
        text.contains("does not decrypt") && text.contains("polydev credentials set"),
        "{text}"
    );
}

#[test]
fn a_task_without_a_user_gets_the_shared_key_from_the_environment() {
    let f = fixture();
    let source = source_for(&f.config, env(), None);
    assert_eq!(
        openai(&*source, &key("ns-a", None, "openai")).unwrap(),
        SHARED_KEY
    );
    let err = openai(
        &*source_for(&f.config, vec![], None),
        &key("ns-a", None, "openai"),
    )
    .unwrap_err();
    let text = assert_clean(&err);
    assert!(matches!(err, CredentialError::Missing { .. }), "{text}");
    assert!(text.contains("agent's environment"), "{text}");

    // Only declared provider variables are taken from the environment.
    let found = source
        .resolve_now(&key("ns-a", None, "openai"), &[], &["HOME".to_string()])
        .unwrap();
    assert!(found.is_empty(), "HOME is no provider's credential");

    let off = PluginConfig {
        credentials_from_env: false,
        ..f.config.clone()
    };
    let err = openai(
        &*source_for(&off, env(), None),
        &key("ns-a", None, "openai"),
    )
    .unwrap_err();
    let text = assert_clean(&err);
    assert!(text.contains("credentials_from_env = false"), "{text}");
    // ... while user tasks still work.
    assert_eq!(
        openai(
            &*source_for(&off, env(), None),
            &key("ns-a", Some("user1"), "openai")
        )
        .unwrap(),
        USER_KEY
    );
}

#[test]
fn with_the_store_off_user_tasks_fail_clearly() {
    let f = fixture();
    let off = PluginConfig {
        credentials_from_store: false,
        ..f.config.clone()
    };
    let source = source_for(&off, env(), None);
    let err = openai(&*source, &key("ns-a", Some("user1"), "openai")).unwrap_err();
    let text = assert_clean(&err);
    assert!(
        matches!(err, CredentialError::StoreDisabled { .. }),
        "{text}"
    );
    assert!(
        text.contains("credentials_from_store = false") && text.contains("user \"user1\""),
        "{text}"
    );
    assert_eq!(
        openai(&*source, &key("ns-a", None, "openai")).unwrap(),
        SHARED_KEY
    );
    // Nothing required: nothing to fail.
    assert!(
        source
            .resolve_now(
                &key("ns-a", Some("user1"), "openai"),
                &[],
                &["OPENAI_API_KEY".into()]
            )
            .unwrap()
            .is_empty()
    );
}

#[test]
fn set_and_rm_take_effect_without_a_new_source() {
    let f = fixture();
    let source = source_for(&f.config, env(), None);
    let google = key("ns-a", Some("user1"), "google");
    let required = ["GOOGLE_API_KEY".to_string()];
    let optional = ["GOOGLE_PROJECT_ID".to_string()];
    let err = source
        .resolve_now(&google, &required, &optional)
        .unwrap_err();
    assert!(err.to_string().contains("GOOGLE_API_KEY"), "{err}");

    let id = EntryId::new("ns-a", "user1", "google").unwrap();
    f.store
        .set(&id, "GOOGLE_PROJECT_ID", &SecretString::from("proj-1"))
        .unwrap();
    let err = source
        .resolve_now(&google, &required, &optional)
        .unwrap_err();
    assert!(
        matches!(err, CredentialError::NotRegistered { ref variable, .. } if variable == "GOOGLE_API_KEY"),
        "{err}"
    );

    f.store
        .set(&id, "GOOGLE_API_KEY", &SecretString::from("g-key-1"))
        .unwrap();
    let found = source.resolve_now(&google, &required, &optional).unwrap();
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(
        found,
        [
            ("GOOGLE_API_KEY", "g-key-1"),
            ("GOOGLE_PROJECT_ID", "proj-1")
        ]
    );

    f.store.remove(&id, Some("GOOGLE_PROJECT_ID")).unwrap();
    assert_eq!(
        source
            .resolve_now(&google, &required, &optional)
            .unwrap()
            .len(),
        1
    );
    f.store.remove(&id, None).unwrap();
    assert!(source.resolve_now(&google, &required, &optional).is_err());
}

#[test]
fn broken_stores_give_clear_non_retryable_errors() {
    let f = fixture();
    let source = source_for(&f.config, env(), None);
    let user1 = key("ns-a", Some("user1"), "openai");
    let a = EntryId::new("ns-a", "user1", "openai").unwrap();

    std::fs::write(f.store.entry_path(&a), "not an entry\n").unwrap();
    let err = openai(&*source, &user1).unwrap_err();
    let text = assert_clean(&err);
    assert!(
        matches!(err, CredentialError::CorruptEntry { .. }),
        "{text}"
    );
    assert!(
        text.contains("polydev credentials rm --namespace ns-a --user user1 --provider openai"),
        "{text}"
    );

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.store.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = openai(&*source, &user1).unwrap_err();
    let text = assert_clean(&err);
    assert!(matches!(err, CredentialError::Store { .. }), "{text}");
    assert!(
        text.contains("chmod 700") && text.contains(r#"user "user1""#),
        "{text}"
    );

    // A bad namespace (Nomad never sends one) is refused before touching a path.
    let err = openai(&*source, &key("../x", Some("user1"), "openai")).unwrap_err();
    assert!(err.to_string().contains("invalid namespace"), "{err}");
    assert!(!matches!(err, CredentialError::Unavailable(_)));
}

#[test]
fn the_stores_shared_entry_serves_tasks_without_a_user_and_nobody_else() {
    let f = fixture();
    let stored = "sk-shared-from-the-store-0123456789";
    f.store
        .set(
            &EntryId::shared("openai").unwrap(),
            "OPENAI_API_KEY",
            &SecretString::from(stored),
        )
        .unwrap();
    // It wins over the environment, in every namespace, and needs no environment at all.
    let env_off = PluginConfig {
        credentials_from_env: false,
        ..f.config.clone()
    };
    for source in [
        source_for(&f.config, env(), None),
        source_for(&env_off, vec![], None),
    ] {
        for namespace in ["ns-a", "default"] {
            assert_eq!(
                openai(&*source, &key(namespace, None, "openai")).unwrap(),
                stored
            );
        }
        // A task naming a user never falls back to it.
        let err = openai(&*source, &key("default", Some("user1"), "openai")).unwrap_err();
        assert!(
            matches!(err, CredentialError::NotRegistered { .. }),
            "{err}"
        );
        assert_eq!(
            openai(&*source, &key("ns-a", Some("user1"), "openai")).unwrap(),
            USER_KEY
        );
    }
    // Another provider's shared entry is not this one's: the error names the fix.
    let err = source_for(&env_off, vec![], None)
        .resolve_now(
            &key("ns-a", None, "anthropic"),
            &["ANTHROPIC_API_KEY".to_string()],
            &[],
        )
        .unwrap_err();
    let text = assert_clean(&err);
    assert!(
        text.contains("polydev credentials set --shared --provider anthropic"),
        "{text}"
    );
    // With the store off, the shared entry is not read either.
    let store_off = PluginConfig {
        credentials_from_store: false,
        ..f.config.clone()
    };
    assert_eq!(
        openai(
            &*source_for(&store_off, env(), None),
            &key("ns-a", None, "openai")
        )
        .unwrap(),
        SHARED_KEY
    );
}
