//! The jobspec `config { ... }` of a `driver = "polydev"` task: its schema and its decoder, in
//! two steps — Nomad's msgpack parsed into typed options ([`RawTaskConfig`]), then checked and
//! resolved against the node's plugin config ([`RawTaskConfig::resolve`]), which `polydev run`
//! calls with options it builds itself.
//!
//! ```hcl
//! config {
//!   provider = "openai"                      # required; a provider configured on the node
//!   user_id  = "user_123"                    # whose credentials to inject
//!   args     = ["exec", "Write a hello world function"]
//!   labels   = [{ team = "search" }]
//! }
//! ```
//!
//! Invariants of a decoded [`TaskConfig`]:
//! - `provider` is a provider of the node's [`PluginConfig`], resolved once: the task carries
//!   its shared settings ([`ResolvedProvider`]), so nothing later looks it up by name again. The
//!   credential names come only from there; `image` too, unless the operator allows overrides.
//! - `argv` is never empty; no element contains a NUL byte.
//! - `user_id`, when present, matches `^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$` and has no `..`, so it
//!   is safe as a path component and a label value.
//! - `work_dir` is absolute; `labels` have no key in the `io.polydev.` or
//!   `com.hashicorp.nomad.` namespaces.
//! - Empty bytes are an error: Nomad sends none when it recovers a task after an agent restart,
//!   and recovery must use the task handle's driver state instead.

use std::collections::BTreeMap;

use super::ConfigError;
use super::cty::{self, Obj};
use super::hclspec::{Spec, attr, default, hcl_string, literal, object};
use super::plugin::PluginConfig;
use super::provider::is_single_word;
use super::resolved::ResolvedProvider;
use crate::credential_model::names::is_user_id;

const WHAT: &str = "task config";

/// Default for `work_dir`: the task's local dir as Nomad mounts it in the container.
pub const DEFAULT_WORK_DIR: &str = "/local";

/// Label key prefixes a task may not set: polydev's own and Nomad's.
pub const RESERVED_LABEL_PREFIXES: [&str; 2] = ["io.polydev.", "com.hashicorp.nomad."];

/// The decoded, validated task configuration, resolved against the node's plugin config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskConfig {
    /// The task's provider, with the node's settings for it.
    pub provider: ResolvedProvider,
    /// The image to run: the provider's, or the task's override when allowed.
    pub image: String,
    /// What the entrypoint executes: `[command] + args`.
    pub argv: Vec<String>,
    /// Whose credentials to inject; `None` = no per-user credentials.
    pub user_id: Option<String>,
    /// Working directory inside the container; absolute.
    pub work_dir: String,
    /// Extra container labels, merged in order (later maps win).
    pub labels: BTreeMap<String, String>,
    /// The entrypoint prints what it launches (names only, never values).
    pub debug: bool,
}

/// The hclspec of the task `config {}` block, returned by `Driver.TaskConfigSchema`.
pub fn task_config_schema() -> Spec {
    object([
        ("provider", attr("provider", "string", true)),
        ("user_id", attr("user_id", "string", false)),
        ("command", attr("command", "string", false)),
        ("args", attr("args", "list(string)", false)),
        (
            "work_dir",
            default(
                attr("work_dir", "string", false),
                literal(&hcl_string(DEFAULT_WORK_DIR)),
            ),
        ),
        ("image", attr("image", "string", false)),
        ("labels", attr("labels", "list(map(string))", false)),
        (
            "debug",
            default(attr("debug", "bool", false), literal("false")),
        ),
    ])
}

/// A task's `config {}` options as given, typed but not yet checked: what a jobspec sets
/// (parsed from Nomad's msgpack by [`decode_task_config`]) or what `polydev run` builds from its
/// arguments. [`RawTaskConfig::resolve`] applies every check, so both get the same errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawTaskConfig {
    pub provider: Option<String>,
    pub user_id: Option<String>,
    pub command: Option<String>,
    pub args: Vec<String>,
    /// `None`: [`DEFAULT_WORK_DIR`].
    pub work_dir: Option<String>,
    pub image: Option<String>,
    /// Label maps in order (later maps win).
    pub labels: Vec<Vec<(String, String)>>,
    pub debug: bool,
}

/// Decodes `TaskConfig.msgpack_driver_config` and resolves it against `plugin`. Pure.
pub fn decode_task_config(
    msgpack: &[u8],
    plugin: &PluginConfig,
) -> Result<TaskConfig, ConfigError> {
    RawTaskConfig::parse(msgpack)?.resolve(plugin)
}

/// The name of field `key` in error messages.
fn name_of(key: &str) -> String {
    format!("{WHAT}: {key}")
}

impl RawTaskConfig {
    /// The options in Nomad's cty msgpack, checked for their types only.
    fn parse(msgpack: &[u8]) -> Result<Self, ConfigError> {
        if msgpack.is_empty() {
            return Err(ConfigError::Empty {
                what: WHAT,
                fix: "Nomad sends no task config when it recovers a task after an agent \
                      restart; the driver must recover the task from its handle's driver state \
                      instead",
            });
        }
        let value = cty::parse(msgpack, WHAT)?;
        let root = Obj::new(&value, WHAT, format!("{WHAT}: "))?;
        Ok(RawTaskConfig {
            provider: root.string("provider")?,
            user_id: root.string("user_id")?,
            command: root.string("command")?,
            args: root.strings("args")?.unwrap_or_default(),
            work_dir: root.string("work_dir")?,
            image: root.string("image")?,
            labels: root.string_maps("labels")?,
            debug: root.bool("debug")?.unwrap_or(false),
        })
    }

    /// Check the options and resolve them against the node's `plugin` config. Pure.
    pub fn resolve(self, plugin: &PluginConfig) -> Result<TaskConfig, ConfigError> {
        let known = || {
            plugin
                .providers
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        };
        let provider = self.provider.ok_or_else(|| {
            ConfigError::missing(
                name_of("provider"),
                format!("set provider to one of: {}", known()),
            )
        })?;
        let Some(resolved) = plugin.provider(&provider) else {
            return Err(ConfigError::UnknownProvider {
                name: provider,
                known: known(),
            });
        };
        let p = resolved.settings();

        if let Some(id) = &self.user_id {
            check_user_id(id, &name_of("user_id"))?;
        }

        let command = match self.command {
            None => p.command.clone(),
            Some(c) if is_single_word(&c) => c,
            Some(c) => {
                return Err(ConfigError::invalid(
                    name_of("command"),
                    format!("{c:?} is not a single program name or path"),
                    format!(
                        "name only the program (the provider's default is {:?}) and put its \
                         arguments in args, or remove command to use the default",
                        p.command
                    ),
                ));
            }
        };
        if let Some(i) = self.args.iter().position(|a| a.contains('\0')) {
            return Err(ConfigError::invalid(
                format!("{}[{i}]", name_of("args")),
                "contains a NUL byte, which a process argument cannot hold",
                "remove the NUL character from the argument",
            ));
        }
        let mut argv = Vec::with_capacity(self.args.len() + 1);
        argv.push(command);
        argv.extend(self.args);

        let work_dir = self.work_dir.unwrap_or_else(|| DEFAULT_WORK_DIR.to_owned());
        if !work_dir.starts_with('/') || work_dir.contains('\0') {
            return Err(ConfigError::invalid(
                name_of("work_dir"),
                format!("{work_dir:?} is not an absolute path"),
                format!("use an absolute path inside the container, such as {DEFAULT_WORK_DIR:?}"),
            ));
        }

        let image = match self.image {
            None => p.image.clone(),
            Some(_) if !plugin.security.allow_image_override => {
                return Err(ConfigError::invalid(
                    name_of("image"),
                    "this node does not allow tasks to choose their image",
                    format!(
                        "remove image to run the provider's image ({:?}), or have the operator \
                         set allow_image_override = true in the security block of the agent's \
                         plugin \"polydev\" config",
                        p.image
                    ),
                ));
            }
            Some(i) if is_single_word(&i) => i,
            Some(i) => {
                return Err(ConfigError::invalid(
                    name_of("image"),
                    format!("{i:?} is not an image reference"),
                    "use a reference without spaces such as \"registry.local/codex:1.2\"",
                ));
            }
        };

        Ok(TaskConfig {
            provider: resolved.clone(),
            image,
            argv,
            user_id: self.user_id,
            work_dir,
            labels: labels(self.labels)?,
            debug: self.debug,
        })
    }
}

fn check_user_id(id: &str, field: &str) -> Result<(), ConfigError> {
    if is_user_id(id) {
        return Ok(());
    }
    // Never echo the value: it may be anything a dispatcher passed in.
    Err(ConfigError::invalid(
        field,
        format!("the value (length {}) is not a valid user id", id.len()),
        "use 1 to 128 characters: a letter or digit first, then letters, digits, '_', '.', '@' \
         or '-', with no \"..\", no '/' and no whitespace, e.g. \"user_123\"",
    ))
}

fn labels(maps: Vec<Vec<(String, String)>>) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut merged = BTreeMap::new();
    for (i, map) in maps.into_iter().enumerate() {
        for (key, value) in map {
            let field = format!("{}[{i}]", name_of("labels"));
            if key.is_empty() {
                return Err(ConfigError::invalid(
                    field,
                    "has an empty label key",
                    "give every label a non-empty key such as \"team\"",
                ));
            }
            if let Some(prefix) = RESERVED_LABEL_PREFIXES.iter().find(|p| key.starts_with(*p)) {
                return Err(ConfigError::invalid(
                    field,
                    format!("label {key:?} is in the reserved {prefix:?} namespace"),
                    "rename the label: keys starting with \"io.polydev.\" belong to polydev and \
                     keys starting with \"com.hashicorp.nomad.\" to Nomad",
                ));
            }
            merged.insert(key, value);
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests;
