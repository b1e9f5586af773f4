//! The names that address a stored credential: namespace, user id, provider and variable.
//!
//! Every one of them becomes part of a file path (or, for variables, a line of a file), so every
//! one is checked against a strict rule before it is used:
//!
//! | name | rule |
//! |---|---|
//! | namespace | `^[a-zA-Z0-9-]{1,128}$` (Nomad's own rule) |
//! | user id | `^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$` and no `..` (the task config's rule) |
//! | provider | `^[a-z][a-z0-9_-]{0,31}$` (the plugin config's rule) |
//! | variable | `^[A-Z_][A-Z0-9_]*$`, at most 128 bytes |
//!
//! Invariant: a name that passes cannot be empty, `.`, `..`, contain `/`, NUL, whitespace or a
//! non-ASCII byte, so joining it to a directory never leaves that directory. Rejections never echo
//! the user id (it may be anything a dispatcher passed in); they give its length instead.

use std::fmt;

/// Which name a [`NameError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    Namespace,
    User,
    Provider,
    Variable,
}

impl NameKind {
    fn rule(self) -> &'static str {
        match self {
            NameKind::Namespace => "1 to 128 letters, digits or '-' (Nomad's namespace rule)",
            NameKind::User => {
                "1 to 128 characters: a letter or digit first, then letters, digits, '_', '.', '@' \
                 or '-', with no \"..\""
            }
            NameKind::Provider => {
                "a lowercase letter, then up to 31 lowercase letters, digits, '_' or '-'"
            }
            NameKind::Variable => {
                "an environment variable name: uppercase letters, digits and '_', not starting \
                 with a digit, at most 128 characters"
            }
        }
    }

    fn noun(self) -> &'static str {
        match self {
            NameKind::Namespace => "namespace",
            NameKind::User => "user id",
            NameKind::Provider => "provider",
            NameKind::Variable => "variable",
        }
    }
}

/// A name that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub kind: NameKind,
    /// The offending value, quoted — or only its length, for user ids.
    shown: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} {}: use {}",
            self.kind.noun(),
            self.shown,
            self.kind.rule()
        )
    }
}

impl std::error::Error for NameError {}

fn reject(kind: NameKind, value: &str) -> NameError {
    let shown = match kind {
        NameKind::User => format!("(length {})", value.len()),
        _ => format!("{value:?}"),
    };
    NameError { kind, shown }
}

/// Check `value` against the rule of `kind`.
pub fn check(kind: NameKind, value: &str) -> Result<(), NameError> {
    let ok = match kind {
        NameKind::Namespace => is_namespace(value),
        NameKind::User => is_user_id(value),
        NameKind::Provider => is_provider(value),
        NameKind::Variable => is_variable(value),
    };
    if ok { Ok(()) } else { Err(reject(kind, value)) }
}

fn is_namespace(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$` and no `..`: a task's `user_id` (the task config's
/// decoder checks it with this too).
pub(crate) fn is_user_id(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=128).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'@' | b'-'))
        && !s.contains("..")
}

/// `^[a-z][a-z0-9_-]{0,31}$`: a provider name (the plugin config's decoder checks it with
/// this too).
pub(crate) fn is_provider(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

fn is_variable(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=128).contains(&b.len())
        && (b[0].is_ascii_uppercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Directory names of the shared entries (not valid as a namespace or a user id).
pub const SHARED_NAMESPACE: &str = "_shared";
pub const SHARED_USER: &str = "_node";

/// The identity of one stored entry — (namespace, user id, provider) — with every part checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    namespace: String,
    user: String,
    provider: String,
}

impl EntryId {
    /// Check all three names; the first one that breaks its rule is the error.
    pub fn new(namespace: &str, user: &str, provider: &str) -> Result<Self, NameError> {
        check(NameKind::Namespace, namespace)?;
        check(NameKind::User, user)?;
        check(NameKind::Provider, provider)?;
        Ok(EntryId {
            namespace: namespace.to_string(),
            user: user.to_string(),
            provider: provider.to_string(),
        })
    }

    /// The node's shared key of `provider`, for tasks that name no user. Its namespace and user
    /// (`_shared`, `_node`) break the name rules on purpose: no Nomad namespace or user id can
    /// name this entry.
    pub fn shared(provider: &str) -> Result<Self, NameError> {
        check(NameKind::Provider, provider)?;
        Ok(EntryId {
            namespace: SHARED_NAMESPACE.to_string(),
            user: SHARED_USER.to_string(),
            provider: provider.to_string(),
        })
    }

    /// Whether this is a node-wide shared entry ([`EntryId::shared`]).
    pub fn is_shared(&self) -> bool {
        self.namespace == SHARED_NAMESPACE && self.user == SHARED_USER
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn user(&self) -> &str {
        &self.user
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_shared() {
            return write!(f, "the node's shared key of provider {:?}", self.provider);
        }
        write!(
            f,
            "namespace {:?}, user {:?}, provider {:?}",
            self.namespace, self.user, self.provider
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        for ok in ["default", "team-a", "A1", &"n".repeat(128)] {
            assert!(check(NameKind::Namespace, ok).is_ok(), "{ok}");
        }
        for bad in ["", "a_b", "a/b", "..", ".", "a b", "ü", &"n".repeat(129)] {
            assert!(check(NameKind::Namespace, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_namespace_and_user_can_name_the_shared_entry() {
        let shared = EntryId::shared("openai").unwrap();
        assert!(shared.is_shared());
        assert!(EntryId::new(SHARED_NAMESPACE, SHARED_USER, "openai").is_err());
        assert!(check(NameKind::Namespace, SHARED_NAMESPACE).is_err());
        assert!(check(NameKind::User, SHARED_USER).is_err());
        assert!(EntryId::shared("Not A Provider").is_err());
    }

    #[test]
    fn user_ids_follow_the_task_config_rule_and_are_never_echoed() {
        for ok in ["user_123", "a", "u@example.com", "A.b-c", &"u".repeat(128)] {
            assert!(check(NameKind::User, ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "..",
            ".a",
            "-a",
            "_a",
            "@a",
            "a..b",
            "a/b",
            "../x",
            "a b",
            "a\0",
            "ü",
            &"u".repeat(129),
        ] {
            let err = check(NameKind::User, bad).unwrap_err().to_string();
            assert!(err.contains(&format!("length {}", bad.len())), "{err}");
        }
        let err = check(NameKind::User, "x/../secret-name").unwrap_err();
        assert!(!err.to_string().contains("secret-name"), "{err}");
    }

    #[test]
    fn providers() {
        for ok in ["openai", "a", "my-cli_2", &format!("a{}", "b".repeat(31))] {
            assert!(check(NameKind::Provider, ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "OpenAI",
            "1ai",
            "-a",
            "a/b",
            "a.b",
            &format!("a{}", "b".repeat(32)),
        ] {
            let err = check(NameKind::Provider, bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid provider"), "{err}");
        }
    }

    #[test]
    fn entry_ids_check_every_part() {
        let id = EntryId::new("team-a", "user_1", "openai").unwrap();
        assert_eq!(
            id.to_string(),
            r#"namespace "team-a", user "user_1", provider "openai""#
        );
        assert_eq!(
            EntryId::new("a/b", "u", "openai").unwrap_err().kind,
            NameKind::Namespace
        );
        assert_eq!(
            EntryId::new("a", "../u", "openai").unwrap_err().kind,
            NameKind::User
        );
        assert_eq!(
            EntryId::new("a", "u", "../x").unwrap_err().kind,
            NameKind::Provider
        );
    }

    #[test]
    fn variables() {
        for ok in ["OPENAI_API_KEY", "_X", "A1"] {
            assert!(check(NameKind::Variable, ok).is_ok(), "{ok}");
        }
        for bad in ["", "1A", "a", "A-B", "A B", "A=B", "A\n", &"A".repeat(129)] {
            assert!(check(NameKind::Variable, bad).is_err(), "{bad:?}");
        }
    }
}
