//! The core's view of a task: what to run ([`TaskSpec`]), how it ended ([`ExitOutcome`]) and what
//! Nomad keeps for us between plugin processes ([`DriverState`]).
//!
//! Invariant: [`DriverState`] is self-sufficient for recovery (Nomad does not persist the task's
//! msgpack config) and never holds a credential — it is stored unencrypted in Nomad's state DB.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::TaskConfig;
use crate::engine::ResourceLimits;

/// Everything the core needs to start one task, already validated.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    /// Nomad's task id (`<alloc>/<task>/<random>`); new for every (re)start.
    pub id: String,
    pub name: String,
    pub alloc_id: String,
    pub job_name: String,
    pub namespace: String,
    /// Nomad's task env (NOMAD_* and the jobspec's `env {}`), handed to the task.
    pub env: BTreeMap<String, String>,
    pub limits: ResourceLimits,
    /// Host path of the allocation dir; `None` outside Nomad (operator CLI).
    pub alloc_dir: Option<String>,
    /// Nomad's log FIFOs; `None` when log collection is disabled.
    pub logs: Option<LogPaths>,
    pub config: TaskConfig,
}

/// Where the task's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPaths {
    pub stdout: String,
    pub stderr: String,
}

/// How a task ended, as WaitTask reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitOutcome {
    pub exit_code: i32,
    pub signal: i32,
    pub oom_killed: bool,
    /// Set for any unsuccessful end; Nomad shows it in the Terminated event.
    pub err: Option<String>,
}

impl ExitOutcome {
    /// Translate a container's end into Nomad's terms, as Nomad's docker driver does: a
    /// non-zero code or an OOM kill is an error.
    pub fn from_container(exit_code: i64, oom_killed: bool) -> Self {
        let exit_code = i32::try_from(exit_code).unwrap_or(i32::MAX);
        let err = if oom_killed {
            Some("OOM Killed".to_string())
        } else if exit_code != 0 {
            Some(format!(
                "container exited with non-zero exit code: {exit_code}"
            ))
        } else {
            None
        };
        ExitOutcome {
            exit_code,
            signal: 0,
            oom_killed,
            err,
        }
    }

    /// The engine stopped (or restarted without live-restore) and killed the container:
    /// `exit_code` is the container's, 128 + the signal that killed it.
    pub fn engine_stopped(exit_code: i32) -> Self {
        let signal = if exit_code > 128 { exit_code - 128 } else { 0 };
        ExitOutcome {
            exit_code,
            signal,
            oom_killed: false,
            err: Some(format!(
                "the Docker engine stopped or restarted; the container was killed (exit code \
                 {exit_code}, signal {signal}); enable live-restore in the engine's daemon.json \
                 to keep tasks running across engine restarts"
            )),
        }
    }

    /// An end the driver could not observe (container vanished, engine lost it).
    pub fn failed(message: impl Into<String>) -> Self {
        ExitOutcome {
            exit_code: -1,
            signal: 0,
            oom_killed: false,
            err: Some(message.into()),
        }
    }
}

/// Version of [`DriverState`]'s encoding, sent as `TaskHandle.version`.
pub const HANDLE_VERSION: i32 = 1;

/// What `TaskHandle.driver_state` holds (msgpack with field names, so fields can be added).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverState {
    pub container_id: String,
    pub provider: String,
    pub namespace: String,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Unix nanoseconds when StartTask finished.
    pub started_at_unix_nanos: i64,
    /// `None` when log collection is disabled.
    #[serde(default)]
    pub logs: Option<LogPaths>,
    /// Credential variables whose values are redacted from the task's output.
    #[serde(default)]
    pub redacted_variables: Vec<String>,
    /// The warm-pool slot the task's directories are mounted into (warm starts only).
    #[serde(default)]
    pub slot: Option<String>,
    /// The port of the task's credential broker inside its container (broker mode); a new
    /// plugin process binds it again at RecoverTask.
    #[serde(default)]
    pub broker_port: Option<u16>,
    /// Whether the task was given its alloc's `logs/` read-only (`Some(false)`: it had no alloc
    /// dir). `None`: the handle is from a release that gave it writable, so RecoverTask does
    /// not adopt such a task while it runs.
    #[serde(default)]
    pub alloc_logs_read_only: Option<bool>,
}

impl DriverState {
    pub fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("DriverState always encodes")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn exit_outcomes_match_docker_driver() {
        assert_eq!(ExitOutcome::from_container(0, false).err, None);
        assert!(
            ExitOutcome::from_container(3, false)
                .err
                .unwrap()
                .contains('3')
        );
        let oom = ExitOutcome::from_container(137, true);
        assert!(oom.oom_killed);
        assert_eq!(oom.err.as_deref(), Some("OOM Killed"));
    }

    proptest! {
        #[test]
        fn driver_state_round_trips(id in "[a-f0-9]{64}", user in proptest::option::of("[a-z0-9_]{1,20}"), nanos in any::<i64>(), vars in proptest::collection::vec("[A-Z_]{1,12}", 0..3)) {
            let state = DriverState {
                container_id: id,
                provider: "openai".into(),
                namespace: "default".into(),
                user_id: user,
                started_at_unix_nanos: nanos,
                logs: Some(LogPaths { stdout: "/a/.t.stdout.fifo".into(), stderr: "/a/.t.stderr.fifo".into() }),
                redacted_variables: vars,
                slot: Some("0123abcd".into()),
                broker_port: Some(41234),
                alloc_logs_read_only: Some(false),
            };
            prop_assert_eq!(DriverState::decode(&state.encode()).unwrap(), state);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = DriverState::decode(&bytes);
        }
    }
}
