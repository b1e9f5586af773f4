//! The one error type of the config module.
//!
//! Every message says *where* (the block and field, e.g. `plugin config: security.pids_limit`),
//! *what* was wrong and *how to fix it*, because operators read these in agent logs and job
//! authors read them as task events. Messages never contain credential values: the config
//! carries only credential *names*.

/// Why a plugin or task configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The payload had no bytes where some were required.
    #[error("{what}: the payload is empty; {fix}")]
    Empty {
        /// `"plugin config"` or `"task config"`.
        what: &'static str,
        /// How to resolve it.
        fix: &'static str,
    },
    /// The bytes are not one well-formed msgpack value of the expected shape.
    #[error(
        "{what}: the payload is not valid cty msgpack ({detail}); the Nomad client and polydev \
         disagree about the wire format, please report this as a polydev bug"
    )]
    Malformed {
        /// `"plugin config"` or `"task config"`.
        what: &'static str,
        /// What the parser found.
        detail: String,
    },
    /// A field holds a value of another type than the schema declares.
    #[error(
        "{field}: expected {expected}, found {found}; the schema Nomad decoded with does not match \
         this polydev binary, restart the Nomad client after upgrading polydev"
    )]
    WrongType {
        /// Full path of the field.
        field: String,
        /// The type the schema declares.
        expected: &'static str,
        /// A short description of what arrived (never a string's contents).
        found: String,
    },
    /// A field holds cty's "unknown value" (a msgpack extension), which Nomad should never send.
    #[error(
        "{field}: the value is unknown at decode time (cty unknown value, msgpack extension type \
         {ext_type}); set it to a literal or to a variable Nomad can resolve when it places the task"
    )]
    UnknownValue {
        /// Full path of the field.
        field: String,
        /// The msgpack extension type that arrived.
        ext_type: i8,
    },
    /// A required field is absent or null.
    #[error("{field} is required but missing; {fix}")]
    Missing {
        /// Full path of the field.
        field: String,
        /// How to resolve it.
        fix: String,
    },
    /// The task names a provider this node does not configure.
    #[error("task config: provider {name:?} is not configured on this node; use one of: {known}")]
    UnknownProvider {
        /// The provider the task asked for.
        name: String,
        /// The configured providers, comma separated, sorted.
        known: String,
    },
    /// A field is well typed but its value breaks a rule.
    #[error("{field}: {problem}; {fix}")]
    Invalid {
        /// Full path of the field.
        field: String,
        /// What is wrong with the value.
        problem: String,
        /// How to resolve it.
        fix: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn missing(field: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Missing {
            field: field.into(),
            fix: fix.into(),
        }
    }
}
