//! Where a task's provider credentials come from.
//!
//! A [`CredentialSource`] resolves the variables a provider needs for one
//! [`CredentialKey`] — (Nomad namespace, user id, provider) — at StartTask. Values are
//! [`SecretString`]s: they are handed to the launch spec and to the log redactor and nowhere
//! else; no `Debug`, error message or log line of this module ever contains one.
//!
//! Sources:
//! - [`EnvSource`]: the plugin's own environment (which Nomad's agent passes down), one shared key
//!   per provider variable, captured once at startup.

use std::collections::BTreeMap;

use secrecy::SecretString;

/// Who a credential is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CredentialKey {
    pub namespace: String,
    pub user_id: Option<String>,
    pub provider: String,
}

impl std::fmt::Display for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "namespace {:?}, user {:?}, provider {:?}",
            self.namespace,
            self.user_id.as_deref().unwrap_or("(none)"),
            self.provider
        )
    }
}

/// Why credentials could not be resolved. Never carries a secret value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(
        "missing credential {variable} for {key}: set {variable} in the Nomad agent's environment \
         (the polydev plugin inherits it), or register it for this user"
    )]
    Missing {
        key: CredentialKey,
        variable: String,
    },
    #[error("credential source unavailable: {0}")]
    Unavailable(String),
}

/// Resolved credentials: variable name → value.
pub type Credentials = Vec<(String, SecretString)>;

/// A place credentials are looked up.
pub trait CredentialSource: Send + Sync + 'static {
    /// Resolve every `required` variable (all must exist and be non-empty) and whichever
    /// `optional` ones exist for `key`.
    fn resolve(
        &self,
        key: &CredentialKey,
        required: &[String],
        optional: &[String],
    ) -> Result<Credentials, CredentialError>;
}

/// Credentials from the plugin's environment, shared by every user of a provider.
pub struct EnvSource {
    values: BTreeMap<String, SecretString>,
}

impl EnvSource {
    /// Capture the current process environment.
    pub fn from_process_env() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Build from explicit pairs (tests, the operator CLI).
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

impl CredentialSource for EnvSource {
    fn resolve(
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

impl CredentialSource for NoSource {
    fn resolve(
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
            user_id: Some("u1".into()),
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
            .resolve(
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
            .resolve(&key(), &["OPENAI_API_KEY".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("OPENAI_API_KEY"), "{err}");
        assert!(err.contains("\"u1\""), "{err}");
        assert!(!err.contains("secret-value"));
        let err = NoSource
            .resolve(&key(), &["OPENAI_API_KEY".into()], &[])
            .unwrap_err();
        assert!(err.to_string().contains("OPENAI_API_KEY"));
    }
}
