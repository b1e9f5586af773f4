//! The one mapping from domain errors to `tonic::Status`.
//!
//! Nomad's client only distinguishes two things (nomad-protocol.md §5.8): whether a StartTask
//! failure carries a `RecoverableError{recoverable: true}` detail (then the task is retried), and
//! the `Unavailable` code, which it reads as "the plugin process died". So:
//! - retryable failures get `FAILED_PRECONDITION` plus the detail, wrapped in a `google.rpc.Status`
//!   whose code equals the gRPC status code (grpc-go rejects the details otherwise);
//! - nothing here ever returns `Unavailable`: a Docker outage is not a dead plugin.

use prost::Message;
use tonic::{Code, Status};

use crate::assembly::AssemblyError;
use crate::config::ConfigError;
use crate::core::CoreError;
use crate::pb::hashicorp::nomad::plugins::shared::structs::RecoverableError;
use crate::pool_port::ClaimError;

const RECOVERABLE_TYPE_URL: &str =
    "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError";

/// `google.rpc.Status`, the envelope gRPC uses for status details.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// A status carrying Nomad's RecoverableError detail.
pub fn with_recoverable(code: Code, message: String, recoverable: bool) -> Status {
    let detail = prost_types::Any {
        type_url: RECOVERABLE_TYPE_URL.to_string(),
        value: RecoverableError { recoverable }.encode_to_vec(),
    };
    let envelope = RpcStatus {
        code: code as i32,
        message: message.clone(),
        details: vec![detail],
    };
    Status::with_details(code, message, envelope.encode_to_vec().into())
}

/// Map a lifecycle error. Retryable ones carry `RecoverableError{recoverable: true}`.
pub fn from_core(err: CoreError) -> Status {
    if err.is_retryable() {
        return with_recoverable(Code::FailedPrecondition, err.to_string(), true);
    }
    let code = match &err {
        CoreError::UnknownTask(_) | CoreError::ContainerGone { .. } => Code::NotFound,
        CoreError::DuplicateTask(_) => Code::AlreadyExists,
        CoreError::InvalidSignal(_) | CoreError::BadDriverState(_) => Code::InvalidArgument,
        CoreError::StillRunning(_)
        | CoreError::NotRunning(_)
        | CoreError::WritableLogsDir { .. }
        | CoreError::Credentials(_)
        | CoreError::ImageMissing { .. }
        | CoreError::TaskDirs(_) => Code::FailedPrecondition,
        CoreError::Runtime(_) | CoreError::Pool(ClaimError::Slot(_)) => Code::Internal,
        CoreError::Pool(_) | CoreError::Broker(_) | CoreError::StoppedBeforeStart { .. } => {
            Code::FailedPrecondition
        }
    };
    Status::new(code, err.to_string())
}

/// Bad configuration is never worth retrying.
pub fn from_config(err: ConfigError) -> Status {
    Status::invalid_argument(err.to_string())
}

/// SetConfig could not build the parts: every cause is the operator's to fix, in the plugin
/// config or on the host, so never retried. Vault's and the broker's errors get the `plugin
/// config: ` context here; the task user's carries it already, and the engine's keeps its own
/// words.
pub fn from_assembly(err: &AssemblyError) -> Status {
    Status::invalid_argument(match err {
        AssemblyError::Vault(_) | AssemblyError::Broker(_) => format!("plugin config: {err}"),
        AssemblyError::Engine(_) | AssemblyError::TaskUser(_) => err.to_string(),
    })
}

/// RPCs that need SetConfig first.
pub fn not_configured() -> Status {
    Status::failed_precondition(
        "polydev is not configured yet: Nomad calls SetConfig before any task RPC",
    )
}

/// Decode the RecoverableError detail of a status, if any (used by tests and the CLI).
pub fn recoverable_detail(status: &Status) -> Option<bool> {
    let envelope = RpcStatus::decode(status.details()).ok()?;
    envelope
        .details
        .iter()
        .find(|d| d.type_url == RECOVERABLE_TYPE_URL)
        .and_then(|d| RecoverableError::decode(d.value.as_slice()).ok())
        .map(|r| r.recoverable)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    #[test]
    fn retryable_errors_carry_the_detail_with_a_matching_code() {
        let status = from_core(CoreError::Runtime(EngineError::Unavailable("down".into())));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(recoverable_detail(&status), Some(true));
        let envelope = RpcStatus::decode(status.details()).unwrap();
        assert_eq!(envelope.code, Code::FailedPrecondition as i32);
    }

    #[test]
    fn permanent_errors_have_no_detail_and_never_unavailable() {
        let status = from_core(CoreError::InvalidSignal("SIGNOPE".into()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(recoverable_detail(&status), None);
        let status = from_core(CoreError::Runtime(EngineError::Rejected("bad".into())));
        assert_ne!(status.code(), Code::Unavailable);
    }
}
