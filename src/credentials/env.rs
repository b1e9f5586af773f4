//! [`EnvSource`]: the node's shared credentials, from the plugin's environment (which the Nomad
//! agent passes down), one key per provider variable, captured once at startup; and
//! [`NoSource`], which has nothing.
//!
//! Invariant: values are held as [`SecretString`]s and leave only through
//! [`CredentialSource::resolve`]; errors name the variable, never a value.

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::{CredentialError, CredentialKey, CredentialSource, Credentials};

/// Credentials from the plugin's environment, shared by every user of a provider.
pub struct EnvSource {
    values: BTreeMap<String, SecretString>,
}

impl EnvSource {
    /// Capture the current process environment.
    pub fn from_process_env() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Build from explicit pairs (tests, the operator CLI). Empty values count as absent.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        EnvSource {
            values: pairs
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k, SecretString::from(v)))
                .collect(),
        }
    }
}

#[async_trait::async_trait]
impl CredentialSource for EnvSource {
    async fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        self.lookup(key, required, optional)
    }
}

impl EnvSource {
    /// [`CredentialSource::resolve`], without waiting: the values are in memory.
    pub fn lookup(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        let mut found = Vec::with_capacity(required.len() + optional.len());
        for variable in required {
            let value = self
                .values
                .get(variable)
                .ok_or_else(|| CredentialError::Missing {
                    key: key.clone(),
                    variable: variable.clone(),
                })?;
            found.push((variable.clone(), value.clone()));
        }
        for variable in optional {
            if let Some(value) = self.values.get(variable) {
                found.push((variable.clone(), value.clone()));
            }
        }
        Ok(found)
    }
}

/// A source that never has anything: used when the operator disabled every source.
pub struct NoSource;

#[async_trait::async_trait]
impl CredentialSource for NoSource {
    async fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        _optional: &[String],
    ) -> Result<Credentials, CredentialError> {
        match required.first() {
            Some(variable) => Err(CredentialError::Missing {
                key: key.clone(),
                variable: variable.clone(),
            }),
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn key() -> CredentialKey {
        CredentialKey {
            namespace: "default".into(),
            user_id: None,
            provider: "openai".into(),
        }
    }

    #[test]
    fn resolves_required_and_present_optional() {
        let source = EnvSource::from_pairs([
            ("OPENAI_API_KEY".to_string(), "sk-live".to_string()),
            ("EMPTY".to_string(), String::new()),
        ]);
        let found = source
            .lookup(
                &key(),
                &["OPENAI_API_KEY".into()],
                &["EMPTY".into(), "NOPE".into()],
            )
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].0, "OPENAI_API_KEY");
        assert_eq!(found[0].1.expose_secret(), "sk-live");
    }

    #[test]
    fn missing_names_variable_and_key_but_never_a_value() {
        let source = EnvSource::from_pairs([("OTHER".to_string(), "secret-value".to_string())]);
        let err = source
            .lookup(&key(), &["OPENAI_API_KEY".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(err.contains("\"default\""), "{err}");
        assert!(!err.contains("secret-value"));
        let err =
            futures::executor::block_on(NoSource.resolve(&key(), &["OPENAI_API_KEY".into()], &[]))
                .unwrap_err();
        assert!(err.to_string().contains("OPENAI_API_KEY"));
        assert!(
            futures::executor::block_on(NoSource.resolve(&key(), &[], &["X".into()]))
                .unwrap()
                .is_empty()
        );
    }
}
