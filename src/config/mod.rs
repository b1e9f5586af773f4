//! Plugin (agent) and task (jobspec) configuration: the hclspec schemas polydev hands Nomad, and
//! the decoders that turn Nomad's cty-msgpack payloads into typed, validated values.
//!
//! Invariants:
//! - Schema and decoder live side by side per config ([`plugin`], [`task`]); tests check that
//!   every schema key is read by its decoder and that the schemas are well formed for Nomad
//!   (named attrs under defaults, whitelisted HCL types).
//! - Decoding is pure and deterministic: the same bytes always give the same value or the same
//!   error, so repeated `SetConfig` calls are idempotent.
//! - Decoders never panic on any input; every rejection is a [`ConfigError`] naming the field and
//!   the fix.
//! - Nothing here holds a secret: configs carry credential *names*, never values.
//! - Every fact about a built-in CLI (command, image, key and base-URL variables, auth, headless
//!   settings) is in one table, [`known_cli`].

pub mod broker;
mod cty;
pub mod duration;
mod error;
pub mod hclspec;
pub mod known_cli;
pub mod plugin;
pub mod pool;
pub mod provider;
mod provider_block;
mod resolved;
pub mod task;
pub mod vault;

pub use broker::{BrokerConfig, EgressRule};
pub use error::ConfigError;
pub use known_cli::{ApiAuth, CliFacts, KnownCli};
pub use plugin::{
    ContainerLogConfig, DockerEndpoint, NetworkMode, PluginConfig, SecurityConfig,
    decode_plugin_config, plugin_config_schema,
};
pub use pool::{PoolConfig, WhenEmpty};
pub use provider::{ApiRoute, CredentialMode, ProviderConfig};
pub use provider_block::{RawProvider, set_provider};
pub use resolved::ResolvedProvider;
pub use task::{RawTaskConfig, TaskConfig, decode_task_config, task_config_schema};
pub use vault::{VaultAuth, VaultConfig};
