//! polydev's Vault source against a real OpenBao dev server (TLS, its own CA): reads through the
//! cache, rotation and deletion within `cache_ttl`, stale-if-error, the permission error, a
//! short-TTL token renewed across its expiry, AppRole login (and login again past the max TTL),
//! and OpenBao stopped and started again. No error holds a key or a token.

mod support;

use std::time::Duration;

use polydev::config::{VaultAuth, VaultConfig};
use polydev::credentials::EntryId;
use polydev::vault::{VaultError, VaultHealth, VaultStore};
use secrecy::ExposeSecret;
use support::openbao::OpenBao;
use tokio_util::sync::CancellationToken;

fn config(bao: &OpenBao, auth: VaultAuth, cache_ttl: Duration) -> VaultConfig {
    VaultConfig {
        address: bao.address.clone(),
        mount: "secret".into(),
        path_prefix: "polydev".into(),
        auth,
        ca_file: Some(bao.ca_file.clone()),
        namespace: None,
        cache_ttl,
        stale_if_error: Duration::from_millis(1),
        request_timeout: Duration::from_secs(5),
    }
}

/// Write a secret file the way polydev requires it: readable by its owner only.
fn write_private(path: &std::path::Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn token_file(bao: &OpenBao, token: &str) -> VaultAuth {
    let path = bao.dir().join(format!("token-{}", token.len()));
    write_private(&path, &format!("{token}\n"));
    VaultAuth::TokenFile(path)
}

/// A store connected to `bao` with `auth` and a cache of `cache_ttl`.
async fn connected(
    bao: &OpenBao,
    auth: VaultAuth,
    cache_ttl: Duration,
) -> std::sync::Arc<VaultStore> {
    VaultStore::connect(&config(bao, auth, cache_ttl), CancellationToken::new())
        .await
        .unwrap()
}

fn user(ns: &str, user: &str) -> EntryId {
    EntryId::new(ns, user, "openai").unwrap()
}

async fn key_of(store: &VaultStore, id: &EntryId) -> Option<String> {
    store.read(id).await.unwrap().and_then(|entry| {
        entry
            .get("OPENAI_API_KEY")
            .map(|v| v.expose_secret().to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_deletion_reach_readers_within_the_cache_ttl() {
    let bao = OpenBao::start();
    let auth = token_file(&bao, &bao.root_token);
    let ttl = Duration::from_millis(800);
    let store = VaultStore::connect(&config(&bao, auth, ttl), CancellationToken::new())
        .await
        .unwrap();
    let id = user("default", "user_123");
    assert_eq!(key_of(&store, &id).await, None);
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-first-0001")],
    );
    tokio::time::sleep(ttl).await;
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-first-0001"));

    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-second-0002")],
    );
    // Within the TTL the cached value is served (no request to Vault); after it, the new one.
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-first-0001"));
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-second-0002"));

    bao.must(&[
        "kv",
        "metadata",
        "delete",
        "secret/polydev/default/user_123/openai",
    ]);
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(key_of(&store, &id).await, None);

    // A soft delete (`kv delete`, the latest version only) is a deletion too.
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-third-0003")],
    );
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-third-0003"));
    bao.must(&["kv", "delete", "secret/polydev/default/user_123/openai"]);
    tokio::time::sleep(ttl + Duration::from_millis(50)).await;
    assert_eq!(key_of(&store, &id).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_separate_subtrees() {
    let bao = OpenBao::start();
    let auth = token_file(&bao, &bao.root_token);
    let store = connected(&bao, auth, Duration::from_millis(1)).await;
    bao.put(
        "polydev/team-a/alice/openai",
        &[("OPENAI_API_KEY", "sk-alice-0001")],
    );
    assert_eq!(
        key_of(&store, &user("team-a", "alice")).await.as_deref(),
        Some("sk-alice-0001")
    );
    assert_eq!(key_of(&store, &user("team-b", "alice")).await, None);
    bao.put(
        "polydev/_shared/_node/openai",
        &[("OPENAI_API_KEY", "sk-node-0001")],
    );
    let shared = store
        .read(&EntryId::shared("openai").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shared["OPENAI_API_KEY"].expose_secret(), "sk-node-0001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_read_gets_the_permission_error_naming_path_and_policy() {
    let bao = OpenBao::start();
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-denied-0001")],
    );
    let token = bao.token_with_policy(
        "elsewhere",
        "path \"secret/data/other/*\" { capabilities = [\"read\"] }",
        &[],
    );
    let auth = token_file(&bao, &token);
    let store = connected(&bao, auth, Duration::from_secs(1)).await;
    let err = store.read(&user("default", "user_123")).await.unwrap_err();
    assert!(matches!(err, VaultError::Denied { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("secret/polydev/default/user_123/openai"),
        "{text}"
    );
    assert!(text.contains("path \"secret/data/polydev/*\""), "{text}");
    assert!(text.contains("\"read\""), "{text}");
    assert!(
        !text.contains(&token) && !text.contains("sk-denied"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused_at_connect_without_showing_it() {
    let bao = OpenBao::start();
    let auth = token_file(&bao, "s.not-a-real-token-0000");
    let err = VaultStore::connect(
        &config(&bao, auth, Duration::from_secs(1)),
        CancellationToken::new(),
    )
    .await
    .err()
    .expect("a bad token is an error");
    let text = err.to_string();
    assert!(text.contains("token is unusable"), "{text}");
    assert!(text.contains("token-"), "names the token file: {text}");
    assert!(!text.contains("s.not-a-real-token"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_token_is_renewed_across_its_expiry() {
    let bao = OpenBao::start();
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-renew-0001")],
    );
    let token = bao.token_with_policy(
        "polydev",
        "path \"secret/data/polydev/*\" { capabilities = [\"read\"] }",
        &["-ttl=3s", "-explicit-max-ttl=60s"],
    );
    let auth = token_file(&bao, &token);
    let store = connected(&bao, auth, Duration::from_millis(1)).await;
    let id = user("default", "user_123");
    // Nine seconds is three of the token's original lifetimes.
    for _ in 0..9 {
        assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-renew-0001"));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (code, out, _) = bao.cli_as(&token, &["token", "lookup", "-format=json"], None);
    assert_eq!(code, Some(0), "the token itself was kept alive: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approle_logs_in_and_logs_in_again_past_the_max_ttl() {
    let bao = OpenBao::start();
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-approle-0001")],
    );
    bao.must(&["auth", "enable", "approle"]);
    let (code, out, err) = bao.cli_as(
        &bao.root_token,
        &["policy", "write", "polydev", "-"],
        Some("path \"secret/data/polydev/*\" { capabilities = [\"read\"] }"),
    );
    assert_eq!(code, Some(0), "{out}{err}");
    bao.must(&[
        "write",
        "auth/approle/role/polydev",
        "token_policies=polydev",
        "token_ttl=2s",
        "token_max_ttl=4s",
    ]);
    let role_id = bao.must(&[
        "read",
        "-field=role_id",
        "auth/approle/role/polydev/role-id",
    ]);
    let secret_id = bao.must(&[
        "write",
        "-f",
        "-field=secret_id",
        "auth/approle/role/polydev/secret-id",
    ]);
    let role_file = bao.dir().join("role-id");
    let secret_file = bao.dir().join("secret-id");
    write_private(&role_file, role_id.trim());
    write_private(&secret_file, secret_id.trim());
    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id_file: role_file,
        secret_id_file: secret_file,
    };
    let store = connected(&bao, auth, Duration::from_millis(1)).await;
    let id = user("default", "user_123");
    for _ in 0..8 {
        assert_eq!(
            key_of(&store, &id).await.as_deref(),
            Some("sk-approle-0001")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_stopped_is_retryable_and_unhealthy_then_works_again() {
    let mut bao = OpenBao::start();
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-fault-0001")],
    );
    let auth = token_file(&bao, &bao.root_token);
    let mut settings = config(&bao, auth, Duration::from_millis(200));
    settings.stale_if_error = Duration::from_secs(2);
    let store = VaultStore::connect(&settings, CancellationToken::new())
        .await
        .unwrap();
    let id = user("default", "user_123");
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-fault-0001"));

    bao.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Past the TTL but within stale_if_error: the cached entry is served.
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-fault-0001"));
    assert!(matches!(store.health(), VaultHealth::Unhealthy(_)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = store.read(&id).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains(&bao.address), "{err}");
    assert!(!err.to_string().contains("sk-fault"), "{err}");

    bao.resume();
    bao.put(
        "polydev/default/user_123/openai",
        &[("OPENAI_API_KEY", "sk-fault-0002")],
    );
    assert_eq!(key_of(&store, &id).await.as_deref(), Some("sk-fault-0002"));
    assert_eq!(store.health(), VaultHealth::Healthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_writes_keep_other_variables_and_list_shows_them() {
    let bao = OpenBao::start();
    let auth = token_file(&bao, &bao.root_token);
    let store = connected(&bao, auth, Duration::from_millis(1)).await;
    let id = EntryId::new("default", "user_123", "google").unwrap();
    store
        .set(&id, "GOOGLE_API_KEY", &"g-key-0001".to_string().into())
        .await
        .unwrap();
    store
        .set(&id, "GOOGLE_PROJECT_ID", &"proj-1".to_string().into())
        .await
        .unwrap();
    let entry = store.read(&id).await.unwrap().unwrap();
    assert_eq!(entry["GOOGLE_API_KEY"].expose_secret(), "g-key-0001");
    assert_eq!(entry["GOOGLE_PROJECT_ID"].expose_secret(), "proj-1");
    let listed = store.list(None, None).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].0, id);
    assert!(listed[0].1.is_some(), "the update time is read");
    assert_eq!(listed[0].2, vec!["GOOGLE_API_KEY", "GOOGLE_PROJECT_ID"]);
    assert_eq!(
        store.remove(&id, Some("GOOGLE_PROJECT_ID")).await.unwrap(),
        vec!["GOOGLE_PROJECT_ID"]
    );
    assert_eq!(
        store.remove(&id, None).await.unwrap(),
        vec!["GOOGLE_API_KEY"]
    );
    assert!(store.read(&id).await.unwrap().is_none());
    assert!(store.list(None, None).await.unwrap().is_empty());
}

/// `polydev credentials … --backend vault` (the real binary) with `args`, `stdin` fed.
fn operator_cli(
    bao: &OpenBao,
    token_file: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> (i32, String, String) {
    let token = format!("--vault-token-file={}", token_file.display());
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain(["--backend=vault", &token])
        .collect();
    let env = [
        ("VAULT_ADDR", bao.address.as_str()),
        ("VAULT_CACERT", bao.ca_file.to_str().unwrap()),
    ];
    support::real::credentials_cli_with_env(&args, &bao.dir().join("data"), &env, stdin)
}

#[test]
fn the_operator_cli_writes_lists_and_removes_entries_in_vault() {
    let bao = OpenBao::start();
    let VaultAuth::TokenFile(token) = token_file(&bao, &bao.root_token) else {
        unreachable!()
    };
    let set = [
        "set",
        "--namespace",
        "default",
        "--user",
        "user_123",
        "--provider",
        "openai",
    ];
    let (code, out, err) = operator_cli(&bao, &token, &set, "sk-from-the-cli-0001\n");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("secret/polydev/default/user_123/openai"),
        "{out}"
    );
    assert_eq!(
        bao.must(&[
            "kv",
            "get",
            "-field=OPENAI_API_KEY",
            "secret/polydev/default/user_123/openai"
        ])
        .trim(),
        "sk-from-the-cli-0001"
    );
    let shared = ["set", "--shared", "--provider", "anthropic"];
    let (code, out, err) = operator_cli(&bao, &token, &shared, "sk-ant-shared-0001");
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = operator_cli(&bao, &token, &["list"], "");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("default    user_123  openai"), "{out}");
    assert!(
        out.contains("(shared)") && out.contains("ANTHROPIC_API_KEY"),
        "{out}"
    );
    assert!(!out.contains("sk-"), "list shows no value: {out}");
    let rm = [
        "rm",
        "--namespace",
        "default",
        "--user",
        "user_123",
        "--provider",
        "openai",
    ];
    let (code, out, err) = operator_cli(&bao, &token, &rm, "");
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = bao.cli(&["kv", "get", "secret/polydev/default/user_123/openai"]);
    assert_ne!(code, Some(0), "the entry is gone");
    let (code, _, err) = operator_cli(&bao, &token, &rm, "");
    assert_eq!(code, 1);
    assert!(
        err.contains("Vault has no entry at secret/polydev/default/user_123/openai"),
        "{err}"
    );
    // No server named: a usage error saying how to name one.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_polydev"))
        .args(["credentials", "list", "--backend", "vault"])
        .env_remove("VAULT_ADDR")
        .env_remove("BAO_ADDR")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vault-address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_asked_in_a_fixed_order_vault_store_environment() {
    use polydev::credentials::{CredentialError, CredentialKey, FileStore};
    let mut bao = OpenBao::start();
    let data = tempfile::tempdir().unwrap();
    let plugin = polydev::config::PluginConfig {
        data_dir: data.path().join("data"),
        credentials_key_file: data.path().join("keys/credentials.key"),
        ..Default::default()
    };
    let store = FileStore::new(&plugin.data_dir, &plugin.credentials_key_file);
    let set = |id: &EntryId, value: &str| {
        store
            .set(id, "OPENAI_API_KEY", &value.to_string().into())
            .unwrap();
    };
    set(&user("default", "u1"), "sk-store-u1");
    set(&user("default", "u2"), "sk-store-u2");
    set(&EntryId::shared("openai").unwrap(), "sk-store-shared");
    bao.put(
        "polydev/default/u1/openai",
        &[("OPENAI_API_KEY", "sk-vault-u1")],
    );
    let auth = token_file(&bao, &bao.root_token);
    let vault = connected(&bao, auth, Duration::from_millis(1)).await;
    let env = vec![("OPENAI_API_KEY".to_string(), "sk-env".to_string())];
    let source = polydev::credentials::source_for(&plugin, env, Some(vault));
    let resolve = async |user: Option<&str>| {
        let key = CredentialKey {
            namespace: "default".into(),
            user_id: user.map(str::to_string),
            provider: "openai".into(),
        };
        source
            .resolve(&key, &["OPENAI_API_KEY".to_string()], &[])
            .await
            .map(|found| found[0].1.expose_secret().to_string())
    };
    assert_eq!(
        resolve(Some("u1")).await.unwrap(),
        "sk-vault-u1",
        "Vault first"
    );
    assert_eq!(
        resolve(Some("u2")).await.unwrap(),
        "sk-store-u2",
        "then the store"
    );
    assert_eq!(
        resolve(None).await.unwrap(),
        "sk-store-shared",
        "shared: the store"
    );
    store
        .remove(&EntryId::shared("openai").unwrap(), None)
        .unwrap();
    assert_eq!(
        resolve(None).await.unwrap(),
        "sk-env",
        "shared: then the environment"
    );
    bao.put(
        "polydev/_shared/_node/openai",
        &[("OPENAI_API_KEY", "sk-vault-shared")],
    );
    assert_eq!(
        resolve(None).await.unwrap(),
        "sk-vault-shared",
        "shared: Vault first"
    );
    let missing = resolve(Some("u3")).await.unwrap_err();
    assert!(
        matches!(missing, CredentialError::NotInVault { .. }),
        "{missing:?}"
    );
    assert!(
        missing
            .to_string()
            .contains("secret/polydev/default/u3/openai")
    );
    // Vault down: no fallback to the store's older copy; a retryable error instead.
    bao.stop();
    let down = resolve(Some("u2")).await.unwrap_err();
    assert!(matches!(down, CredentialError::Unavailable(_)), "{down:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_namespace_is_sent_as_the_namespace_header() {
    let bao = OpenBao::start();
    bao.must(&["namespace", "create", "team-ns"]);
    bao.must(&[
        "secrets",
        "enable",
        "-namespace=team-ns",
        "-path=secret",
        "kv-v2",
    ]);
    bao.must(&[
        "kv",
        "put",
        "-namespace=team-ns",
        "secret/polydev/default/u1/openai",
        "OPENAI_API_KEY=sk-in-a-namespace-0001",
    ]);
    let auth = token_file(&bao, &bao.root_token);
    let mut settings = config(&bao, auth, Duration::from_millis(1));
    let outside = VaultStore::connect(&settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(key_of(&outside, &user("default", "u1")).await, None);
    settings.namespace = Some("team-ns".into());
    let inside = VaultStore::connect(&settings, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        key_of(&inside, &user("default", "u1")).await.as_deref(),
        Some("sk-in-a-namespace-0001")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_vault_is_a_retryable_error_that_says_so() {
    let bao = OpenBao::start();
    bao.put(
        "polydev/default/u1/openai",
        &[("OPENAI_API_KEY", "sk-sealed-0001")],
    );
    let auth = token_file(&bao, &bao.root_token);
    let store = connected(&bao, auth, Duration::from_millis(1)).await;
    bao.must(&["operator", "seal"]);
    let err = store.read(&user("default", "u1")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("sealed"), "{err}");
    assert!(matches!(store.health(), VaultHealth::Unhealthy(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_down_at_connect_reads_give_its_error_and_recover_once_it_answers() {
    let mut bao = OpenBao::start();
    bao.stop();
    let auth = token_file(&bao, &bao.root_token);
    let store = connected(&bao, auth, Duration::from_millis(1)).await;
    assert!(matches!(store.health(), VaultHealth::Unhealthy(_)));
    let err = store.read(&user("default", "u1")).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("cannot reach Vault"), "{err}");
    bao.resume();
    bao.put(
        "polydev/default/u1/openai",
        &[("OPENAI_API_KEY", "sk-late-0001")],
    );
    assert_eq!(
        key_of(&store, &user("default", "u1")).await.as_deref(),
        Some("sk-late-0001")
    );
}
