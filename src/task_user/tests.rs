//! Tests of [`super`]: an account database given by hand, the fake engine, and this host's own
//! database.
use std::collections::BTreeMap;

use super::*;
use crate::engine::EngineError;
use crate::engine::fake::{FakeCall, FakeEngine, FakeOp};

/// An account database holding exactly these entries; `broken` makes every lookup fail.
#[derive(Default)]
struct Accounts {
    users: BTreeMap<u32, &'static str>,
    groups: BTreeMap<u32, &'static str>,
    broken: bool,
}

impl AccountDatabase for Accounts {
    fn user_name(&self, uid: u32) -> Result<Option<String>, String> {
        if self.broken {
            return Err("NSS source unavailable".into());
        }
        Ok(self.users.get(&uid).map(|name| name.to_string()))
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, String> {
        if self.broken {
            return Err("NSS source unavailable".into());
        }
        Ok(self.groups.get(&gid).map(|name| name.to_string()))
    }
}

/// The host of the issue: uid and gid 1000 belong to "alice".
fn alice_at_1000() -> Accounts {
    Accounts {
        users: BTreeMap::from([(0, "root"), (1000, "alice")]),
        groups: BTreeMap::from([(0, "root"), (1000, "alice"), (1001, "staff")]),
        broken: false,
    }
}

fn ids(uid: u32, gid: u32) -> SecurityConfig {
    SecurityConfig {
        task_uid: uid,
        task_gid: gid,
        ..SecurityConfig::default()
    }
}

async fn check(security: &SecurityConfig, accounts: &Accounts, engine: &FakeEngine) -> String {
    let owners = match host_owners(security, accounts) {
        Ok(owners) => owners,
        Err(err) => return err.to_string(),
    };
    match clear(owners, engine).await {
        Ok(None) => "accepted".into(),
        Ok(Some(note)) => format!("accepted with a note: {note}"),
        Err(err) => err.to_string(),
    }
}

fn engine_was_asked(engine: &FakeEngine) -> bool {
    engine.calls().contains(&FakeCall::RemapsUsers)
}

#[tokio::test]
async fn ids_no_host_account_has_are_accepted_without_asking_the_engine() {
    let engine = FakeEngine::new();
    let verdict = check(&SecurityConfig::default(), &alice_at_1000(), &engine).await;
    assert_eq!(verdict, "accepted");
    assert!(!engine_was_asked(&engine));
    // 1000 stays possible, when the operator chooses it and nobody on the host has it.
    let verdict = check(&ids(1000, 1000), &Accounts::default(), &engine).await;
    assert_eq!(verdict, "accepted");
}

#[tokio::test]
async fn a_uid_a_host_account_has_is_refused_naming_the_account_and_the_fix() {
    let engine = FakeEngine::new();
    let verdict = check(&ids(1000, 2_100_000_000), &alice_at_1000(), &engine).await;
    assert!(engine_was_asked(&engine));
    assert!(
        verdict.starts_with(
            "plugin config: security: task_uid 1000 is the host account \"alice\", and the \
             container engine does not remap container users: that account could attach a \
             debugger to every task"
        ),
        "{verdict}"
    );
    for fix in [
        "set security.task_uid and security.task_gid to ids no host account or group has",
        "the default 2100000000",
        "userns-remap",
    ] {
        assert!(verdict.contains(fix), "{fix}: {verdict}");
    }
}

#[tokio::test]
async fn a_gid_a_host_group_has_is_refused_and_both_owners_are_named() {
    let engine = FakeEngine::new();
    let verdict = check(&ids(2_100_000_000, 1001), &alice_at_1000(), &engine).await;
    assert!(
        verdict
            .starts_with("plugin config: security: task_gid 1001 is the host group \"staff\", and"),
        "{verdict}"
    );
    let verdict = check(&ids(1000, 1000), &alice_at_1000(), &engine).await;
    assert!(
        verdict.contains(
            "task_uid 1000 is the host account \"alice\" and task_gid 1000 is the host group \
             \"alice\""
        ),
        "{verdict}"
    );
}

#[tokio::test]
async fn host_ids_are_accepted_when_the_engine_remaps_container_users() {
    let engine = FakeEngine::new();
    engine.set_remaps_users(true);
    let verdict = check(&ids(1000, 1000), &alice_at_1000(), &engine).await;
    assert!(
        verdict.starts_with(
            "accepted with a note: task_uid 1000 is the host account \"alice\" and task_gid 1000 \
             is the host group \"alice\", but the container engine runs every container in a \
             user namespace of its own"
        ),
        "{verdict}"
    );
}

#[tokio::test]
async fn an_engine_that_cannot_answer_does_not_clear_host_ids() {
    let engine = FakeEngine::new();
    engine.set_remaps_users(true);
    engine.fail_next(
        FakeOp::RemapsUsers,
        EngineError::Unavailable("connection refused".into()),
    );
    let verdict = check(&ids(1000, 2_100_000_000), &alice_at_1000(), &engine).await;
    assert!(
        verdict.starts_with(
            "plugin config: security: task_uid 1000 is the host account \"alice\", and the \
             container engine could not say whether it remaps container users (container engine \
             unavailable: connection refused): "
        ),
        "{verdict}"
    );
}

#[tokio::test]
async fn a_failed_lookup_refuses_the_ids() {
    let engine = FakeEngine::new();
    let broken = Accounts {
        broken: true,
        ..Accounts::default()
    };
    let verdict = check(&SecurityConfig::default(), &broken, &engine).await;
    assert_eq!(
        verdict,
        "plugin config: security.task_uid: cannot check whether a host account has uid \
         2100000000: NSS source unavailable; polydev refuses ids it cannot check (fix the host's \
         account database or NSS configuration, then restart the Nomad agent)"
    );
    assert!(!engine_was_asked(&engine));
}

#[test]
fn the_host_database_is_read_through_libc() {
    // Every Linux host has root at 0 in both databases.
    assert_eq!(HostAccounts.user_name(0).unwrap().as_deref(), Some("root"));
    assert_eq!(HostAccounts.group_name(0).unwrap().as_deref(), Some("root"));
    // The first account of /etc/passwd is found under its own uid.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let (name, uid) = passwd
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            Some((
                fields.first()?.to_string(),
                fields.get(2)?.parse::<u32>().ok()?,
            ))
        })
        .find(|(_, uid)| *uid != 0)
        .expect("an account other than root in /etc/passwd");
    let owners = host_owners(&ids(uid, 2_100_000_000), &HostAccounts).unwrap();
    assert!(owners.account.is_some(), "uid {uid} ({name})");
}

#[test]
fn subordinate_ranges_are_read_from_subid_lines() {
    let text = "# comment\nalice:100000:65536\nbob:2100000000:65536\n1001:300000:10\n";
    assert_eq!(subordinate_owner_in(text, 100000).as_deref(), Some("alice"));
    assert_eq!(subordinate_owner_in(text, 165535).as_deref(), Some("alice"));
    assert_eq!(subordinate_owner_in(text, 165536), None);
    assert_eq!(
        subordinate_owner_in(text, 2_100_000_000).as_deref(),
        Some("bob")
    );
    assert_eq!(subordinate_owner_in(text, 300_005).as_deref(), Some("1001"));
    assert_eq!(subordinate_owner_in("garbage\n:1:2\nx:y:z\n", 1), None);
}

/// A database whose subordinate ranges give `owner` every id.
struct Subordinates {
    owner: &'static str,
}

impl AccountDatabase for Subordinates {
    fn user_name(&self, _uid: u32) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn group_name(&self, _gid: u32) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn subordinate_owner(&self, _kind: SubordinateIds, _id: u32) -> Result<Option<String>, String> {
        Ok(Some(self.owner.to_string()))
    }
}

#[tokio::test]
async fn an_id_in_a_users_subordinate_range_is_refused_naming_the_file() {
    let security = SecurityConfig::default();
    let owners = host_owners(&security, &Subordinates { owner: "mallory" }).unwrap();
    let fake = FakeEngine::new();
    let err = clear(owners, &fake).await.unwrap_err().to_string();
    assert!(
        err.contains("is in \"mallory\"'s subordinate uids (/etc/subuid)"),
        "{err}"
    );
    assert!(err.contains("(/etc/subgid)"), "{err}");
}
