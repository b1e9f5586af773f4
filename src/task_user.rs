//! The start-time check that the uid and gid tasks run as (`security.task_uid`,
//! `security.task_gid`) belong to no account or group of the host.
//!
//! Without a user namespace, a container's uid is a host uid. A host account with the task's uid
//! may `ptrace` the task's processes (gdb, `/proc/<pid>/mem`), read their environment
//! (`/proc/<pid>/environ`, where env-mode keys live) and make API calls through the task's
//! credential broker from inside its network namespace. A host group with the task's gid can
//! read and write the files the task leaves group-accessible in its alloc dir. So the plugin
//! refuses to start with ids the host's account database (`getpwuid`/`getgrgid`: `/etc/passwd`,
//! `/etc/group` and every NSS source, LDAP and SSSD included) knows, and with ids inside a user's
//! subordinate ranges (`/etc/subuid`, `/etc/subgid`): `newuidmap` lets that user become any of
//! them in a user namespace of their own, still in the host's pid namespace, and so read the
//! task's `/proc/<pid>/environ`.
//!
//! Invariants:
//! - A refusal names every account and group found and says how to fix it; a lookup that fails
//!   refuses too (fail closed), naming the error.
//! - The ids are accepted despite a host owner only when the engine says it runs every container
//!   in a user namespace of its own (Docker's `userns-remap`, or a rootless engine): the task's
//!   host uid is then a subordinate id, not the account's. The engine is asked only in that
//!   case, so a plugin whose ids are free starts without it.
//! - The check runs when the configuration is applied (`SetConfig`, `polydev run`); an account
//!   created later with the same id is the operator's to avoid (README: "Task user").

use std::time::Duration;

use crate::config::SecurityConfig;
use crate::config::plugin::DEFAULT_TASK_ID;
use crate::engine::ContainerEngine;

/// How long the engine may take to say whether it remaps users.
const ENGINE_QUESTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks up ids in an account database.
pub trait AccountDatabase {
    /// The name of the account with this uid, `None` if there is none.
    fn user_name(&self, uid: u32) -> Result<Option<String>, String>;
    /// The name of the group with this gid, `None` if there is none.
    fn group_name(&self, gid: u32) -> Result<Option<String>, String>;
    /// Who may map `id` into a user namespace of their own (`/etc/subuid` or `/etc/subgid`,
    /// what `newuidmap` grants): such a user can become that id without being root.
    fn subordinate_owner(&self, _kind: SubordinateIds, _id: u32) -> Result<Option<String>, String> {
        Ok(None)
    }
}

/// The two files of subordinate id ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubordinateIds {
    Uids,
    Gids,
}

impl SubordinateIds {
    fn file(self) -> &'static str {
        match self {
            SubordinateIds::Uids => "/etc/subuid",
            SubordinateIds::Gids => "/etc/subgid",
        }
    }
}

/// The owner of the first range of a subid file's `text` (`name:start:count` lines) that holds
/// `id`.
pub fn subordinate_owner_in(text: &str, id: u32) -> Option<String> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let (owner, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let start: u64 = start.parse().ok()?;
        let count: u64 = count.parse().ok()?;
        let id = u64::from(id);
        (!owner.is_empty() && !owner.starts_with('#') && start <= id && id < start + count)
            .then(|| owner.to_string())
    })
}

/// The host's own database, through libc's `getpwuid_r`/`getgrgid_r` (so NSS is consulted).
pub struct HostAccounts;

impl AccountDatabase for HostAccounts {
    fn user_name(&self, uid: u32) -> Result<Option<String>, String> {
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .map(|user| user.map(|u| u.name))
            .map_err(|errno| errno.desc().to_string())
    }

    fn group_name(&self, gid: u32) -> Result<Option<String>, String> {
        nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
            .map(|group| group.map(|g| g.name))
            .map_err(|errno| errno.desc().to_string())
    }

    fn subordinate_owner(&self, kind: SubordinateIds, id: u32) -> Result<Option<String>, String> {
        match std::fs::read_to_string(kind.file()) {
            Ok(text) => Ok(subordinate_owner_in(&text, id)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(format!("{}: {err}", kind.file())),
        }
    }
}

/// What the host's account database says of the task's ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOwners {
    pub uid: u32,
    pub gid: u32,
    /// The account with the task's uid.
    pub account: Option<String>,
    /// The group with the task's gid.
    pub group: Option<String>,
    /// The user whose subordinate uids (`/etc/subuid`) hold the task's uid.
    pub subuid_owner: Option<String>,
    /// The user whose subordinate gids (`/etc/subgid`) hold the task's gid.
    pub subgid_owner: Option<String>,
}

impl HostOwners {
    fn is_empty(&self) -> bool {
        self.account.is_none()
            && self.group.is_none()
            && self.subuid_owner.is_none()
            && self.subgid_owner.is_none()
    }

    /// `uid 1000 is the host account "alice"` and/or `gid 1000 is the host group "alice"`.
    fn describe(&self) -> String {
        let account = self
            .account
            .as_ref()
            .map(|name| format!("task_uid {} is the host account {name:?}", self.uid));
        let group = self
            .group
            .as_ref()
            .map(|name| format!("task_gid {} is the host group {name:?}", self.gid));
        let subuid = self.subuid_owner.as_ref().map(|name| {
            format!(
                "task_uid {} is in {name:?}'s subordinate uids (/etc/subuid)",
                self.uid
            )
        });
        let subgid = self.subgid_owner.as_ref().map(|name| {
            format!(
                "task_gid {} is in {name:?}'s subordinate gids (/etc/subgid)",
                self.gid
            )
        });
        [account, group, subuid, subgid]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// Why the task's ids cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskUserError {
    #[error(
        "plugin config: security: {owners}, and {engine}: that account could attach a debugger \
         to every task, read its environment (and its key in env mode) and call the provider's \
         API through its credential broker; fix: set security.task_uid and security.task_gid to \
         ids no host account or group has (the default {DEFAULT_TASK_ID} is one on most hosts; \
         `getent passwd <id>` and `getent group <id>` must print nothing), or run Docker with \
         userns-remap so that container ids are not host ids",
        owners = owners.describe()
    )]
    HostOwned {
        owners: Box<HostOwners>,
        engine: String,
    },
    #[error(
        "plugin config: security.{field}: cannot check whether a host {kind} has {kind_id} {id}: \
         {reason}; polydev refuses ids it cannot check (fix the host's account database or NSS \
         configuration, then restart the Nomad agent)"
    )]
    Lookup {
        field: &'static str,
        kind: &'static str,
        kind_id: &'static str,
        id: u32,
        reason: String,
    },
}

/// Who on the host has the task's ids, by `accounts`.
pub fn host_owners(
    security: &SecurityConfig,
    accounts: &dyn AccountDatabase,
) -> Result<HostOwners, TaskUserError> {
    let (uid, gid) = (security.task_uid, security.task_gid);
    let account = accounts
        .user_name(uid)
        .map_err(|reason| TaskUserError::Lookup {
            field: "task_uid",
            kind: "account",
            kind_id: "uid",
            id: uid,
            reason,
        })?;
    let group = accounts
        .group_name(gid)
        .map_err(|reason| TaskUserError::Lookup {
            field: "task_gid",
            kind: "group",
            kind_id: "gid",
            id: gid,
            reason,
        })?;
    let subordinate = |kind: SubordinateIds, id: u32, field: &'static str| {
        accounts
            .subordinate_owner(kind, id)
            .map_err(|reason| TaskUserError::Lookup {
                field,
                kind: "user's subordinate range",
                kind_id: "id",
                id,
                reason,
            })
    };
    Ok(HostOwners {
        uid,
        gid,
        account,
        group,
        subuid_owner: subordinate(SubordinateIds::Uids, uid, "task_uid")?,
        subgid_owner: subordinate(SubordinateIds::Gids, gid, "task_gid")?,
    })
}

/// Accept `owners` if nobody on the host has the ids, or if `engine` runs containers in user
/// namespaces of their own. `Ok(Some(note))`: accepted only thanks to the user namespace (log it).
pub async fn clear(
    owners: HostOwners,
    engine: &dyn ContainerEngine,
) -> Result<Option<String>, TaskUserError> {
    if owners.is_empty() {
        return Ok(None);
    }
    let engine = match tokio::time::timeout(ENGINE_QUESTION_TIMEOUT, engine.remaps_users()).await {
        Ok(Ok(true)) => {
            return Ok(Some(format!(
                "{}, but the container engine runs every container in a user namespace of its \
                 own, so the task's processes run as a subordinate host id",
                owners.describe()
            )));
        }
        Ok(Ok(false)) => "the container engine does not remap container users".to_string(),
        Ok(Err(err)) => {
            format!("the container engine could not say whether it remaps container users ({err})")
        }
        Err(_) => format!(
            "the container engine did not say within {}s whether it remaps container users",
            ENGINE_QUESTION_TIMEOUT.as_secs()
        ),
    };
    Err(TaskUserError::HostOwned {
        owners: Box::new(owners),
        engine,
    })
}

/// The whole check against this host's account database and `engine`.
pub async fn check_on_host(
    security: &SecurityConfig,
    engine: &dyn ContainerEngine,
) -> Result<Option<String>, TaskUserError> {
    let for_lookup = security.clone();
    // getpwuid_r may wait on a network NSS source (LDAP, SSSD): not on the async workers.
    let owners = tokio::task::spawn_blocking(move || host_owners(&for_lookup, &HostAccounts))
        .await
        .unwrap_or_else(|join| {
            Err(TaskUserError::Lookup {
                field: "task_uid",
                kind: "account",
                kind_id: "uid",
                id: security.task_uid,
                reason: format!("the lookup thread failed: {join}"),
            })
        })?;
    clear(owners, engine).await
}

#[cfg(test)]
mod tests;
