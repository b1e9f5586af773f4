//! A `provider "<name>" {}` block as given ([`RawProvider`]), and how blocks are applied to the
//! built-ins ([`set_provider`]): the plugin config's decoder parses its blocks into raw
//! providers, `polydev run` builds one from its options, and both go through the same checks
//! (`super::provider`), so both get the same errors.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ConfigError;
use super::cty::Obj;
use super::provider::{ProviderConfig, builtin_providers, provider};
use crate::credential_model::names::is_provider;

const WHAT: &str = "plugin config";

/// A `provider "<name>" {}` block as given, typed but not yet checked or merged with the
/// built-in of its name: what the plugin config sets, or what `polydev run` overrides.
/// [`set_provider`] applies every check, so both get the same errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawProvider {
    pub image: Option<String>,
    pub command: Option<String>,
    pub credentials: Option<Vec<String>>,
    pub optional_credentials: Option<Vec<String>>,
    pub credential_mode: Option<String>,
    pub api_upstream: Option<String>,
    pub upstream_ca_file: Option<String>,
    pub api_auth: Option<String>,
    pub base_url_env: Option<Vec<String>>,
    pub base_url_path: Option<String>,
    pub api_paths: Option<Vec<String>>,
}

impl RawProvider {
    pub(super) fn parse(obj: &Obj<'_>) -> Result<Self, ConfigError> {
        Ok(RawProvider {
            image: obj.string("image")?,
            command: obj.string("command")?,
            credentials: obj.strings("credentials")?,
            optional_credentials: obj.strings("optional_credentials")?,
            credential_mode: obj.string("credential_mode")?,
            api_upstream: obj.string("api_upstream")?,
            upstream_ca_file: obj.string("upstream_ca_file")?,
            api_auth: obj.string("api_auth")?,
            base_url_env: obj.strings("base_url_env")?,
            base_url_path: obj.string("base_url_path")?,
            api_paths: obj.strings("api_paths")?,
        })
    }

    /// Whether the block sets the broker setting `key`.
    pub(super) fn sets(&self, key: &str) -> bool {
        match key {
            "api_upstream" => self.api_upstream.is_some(),
            "upstream_ca_file" => self.upstream_ca_file.is_some(),
            "api_auth" => self.api_auth.is_some(),
            "base_url_env" => self.base_url_env.is_some(),
            "base_url_path" => self.base_url_path.is_some(),
            "api_paths" => self.api_paths.is_some(),
            _ => false,
        }
    }
}

/// Every provider: the built-ins, overridden and extended by the `provider` blocks.
pub(crate) fn providers(
    root: &Obj<'_>,
) -> Result<BTreeMap<String, Arc<ProviderConfig>>, ConfigError> {
    let mut providers = builtin_providers();
    for (name, value) in root.labelled_objects("provider")? {
        let at = check_name(&name)?;
        let obj = Obj::new(value, &at, format!("{at}."))?;
        set_provider(&mut providers, &name, &RawProvider::parse(&obj)?)?;
    }
    Ok(providers)
}

/// Apply block `raw` to the provider `name` of `providers`: the built-in (or one set before)
/// overridden, or a provider of the operator's own added.
pub fn set_provider(
    providers: &mut BTreeMap<String, Arc<ProviderConfig>>,
    name: &str,
    raw: &RawProvider,
) -> Result<(), ConfigError> {
    let at = format!("{}.", check_name(name)?);
    let merged = provider(name, providers.get(name).map(|p| &**p), raw, &at)?;
    providers.insert(name.to_string(), Arc::new(merged));
    Ok(())
}

/// `name` checked as a provider name; returns how errors name its block.
fn check_name(name: &str) -> Result<String, ConfigError> {
    let field = format!("{WHAT}: provider {name:?}");
    if !is_provider(name) {
        return Err(ConfigError::invalid(
            &field,
            "the provider name is not allowed",
            "use 1 to 32 characters: a lower-case letter, then lower-case letters, digits, \
             '_' or '-'",
        ));
    }
    Ok(field)
}

/// The name of field `key` of the block named `at` (`plugin config: provider "x".`).
pub(super) fn field(at: &str, key: &str) -> String {
    format!("{at}{key}")
}
