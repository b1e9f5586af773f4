//! The launch spec: what the driver writes to a task container's stdin to start the task.
//!
//! The container's entrypoint (`containers/entrypoint.sh`) waits for this text, exports the env,
//! changes to the working directory, checks the required credentials and `exec`s the argv, so
//! the task's command becomes the container's PID 1. Format, one item per line, every value
//! standard base64 so any byte (spaces, quotes, newlines, `=`) survives:
//!
//! ```text
//! polydev-launch-v2
//! arg <b64>            argv, in order; at least one
//! env <b64 NAME=VALUE> zero or more
//! cwd <b64>            optional
//! require <b64 NAME>   credential variables that must be present and non-empty
//! file <b64 PATH> <b64 CONTENT>   written before the exec; PATH relative to $HOME (v2)
//! end
//! ```
//!
//! v2 added `file` (the settings a CLI needs to use the credential broker); the entrypoint
//! still reads v1.
//!
//! Invariant: the encoded bytes hold secrets, so they live in a [`Zeroizing`] buffer that is wiped
//! when dropped, and they are never logged or persisted.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// First line of every spec; bump the version when the format changes.
pub const MAGIC: &str = "polydev-launch-v2";

/// What the entrypoint needs to start the task.
#[derive(Default)]
pub struct LaunchSpec {
    pub argv: Vec<String>,
    /// Plain (non-secret) environment, e.g. Nomad's task env.
    pub env: Vec<(String, String)>,
    /// Credentials; written to the spec and nowhere else.
    pub secret_env: Vec<(String, SecretString)>,
    pub work_dir: Option<String>,
    /// Variables the entrypoint must find non-empty before it execs.
    pub required: Vec<String>,
    /// Files written before the exec: (path relative to `$HOME`, content). Never secret.
    pub files: Vec<(String, String)>,
}

impl LaunchSpec {
    /// Encode the spec for the entrypoint. Later env entries override earlier ones there, and
    /// secrets come last so nothing in the task env can shadow an injected credential.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(256));
        let mut line = |keyword: &str, value: &[u8]| {
            out.extend_from_slice(keyword.as_bytes());
            out.push(b' ');
            out.extend_from_slice(STANDARD.encode(value).as_bytes());
            out.push(b'\n');
        };
        for arg in &self.argv {
            line("arg", arg.as_bytes());
        }
        for (name, value) in &self.env {
            line("env", format!("{name}={value}").as_bytes());
        }
        for (name, value) in &self.secret_env {
            let pair = Zeroizing::new(format!("{name}={}", value.expose_secret()));
            line("env", pair.as_bytes());
        }
        if let Some(dir) = &self.work_dir {
            line("cwd", dir.as_bytes());
        }
        for name in &self.required {
            line("require", name.as_bytes());
        }
        for (path, content) in &self.files {
            out.extend_from_slice(b"file ");
            out.extend_from_slice(STANDARD.encode(path).as_bytes());
            out.push(b' ');
            out.extend_from_slice(STANDARD.encode(content).as_bytes());
            out.push(b'\n');
        }
        let mut spec = Zeroizing::new(Vec::with_capacity(out.len() + 32));
        spec.extend_from_slice(MAGIC.as_bytes());
        spec.push(b'\n');
        spec.extend_from_slice(&out);
        spec.extend_from_slice(b"end\n");
        spec
    }
}

/// Whether `name` is a valid environment variable name for the entrypoint.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decode a spec the way the entrypoint does, for round-trip checks.
    fn decode(spec: &[u8]) -> (Vec<String>, Vec<String>, Option<String>, Vec<String>) {
        let text = std::str::from_utf8(spec).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(MAGIC));
        let (mut argv, mut env, mut cwd, mut req) = (vec![], vec![], None, vec![]);
        for line in lines {
            if line == "end" {
                break;
            }
            let (keyword, value) = line.split_once(' ').unwrap();
            if keyword == "file" {
                continue;
            }
            let value = String::from_utf8(STANDARD.decode(value).unwrap()).unwrap();
            match keyword {
                "arg" => argv.push(value),
                "env" => env.push(value),
                "cwd" => cwd = Some(value),
                "require" => req.push(value),
                other => panic!("unknown keyword {other}"),
            }
        }
        (argv, env, cwd, req)
    }

    #[test]
    fn encodes_every_part_and_ends_with_end() {
        let spec = LaunchSpec {
            argv: vec![
                "codex".into(),
                "exec".into(),
                "a b\n\"c\"".into(),
                String::new(),
            ],
            env: vec![("EMPTY".into(), String::new())],
            secret_env: vec![("OPENAI_API_KEY".into(), SecretString::from("sk-123"))],
            work_dir: Some("/local".into()),
            required: vec!["OPENAI_API_KEY".into()],
            files: vec![],
        };
        let bytes = spec.encode();
        assert!(bytes.ends_with(b"end\n"));
        let (argv, env, cwd, req) = decode(&bytes);
        assert_eq!(argv, spec.argv);
        assert_eq!(
            env,
            vec!["EMPTY=".to_string(), "OPENAI_API_KEY=sk-123".to_string()]
        );
        assert_eq!(cwd.as_deref(), Some("/local"));
        assert_eq!(req, vec!["OPENAI_API_KEY".to_string()]);
        // The secret never appears in clear text in the encoded spec.
        assert!(!String::from_utf8_lossy(&bytes).contains("sk-123"));
    }

    #[test]
    fn files_carry_path_and_content_base64_encoded() {
        let spec = LaunchSpec {
            argv: vec!["codex".into()],
            files: vec![(".codex/config.toml".into(), "a = \"b c\"\n".into())],
            ..Default::default()
        };
        let bytes = spec.encode();
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().find(|l| l.starts_with("file ")).unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert_eq!(STANDARD.decode(parts[1]).unwrap(), b".codex/config.toml");
        assert_eq!(STANDARD.decode(parts[2]).unwrap(), b"a = \"b c\"\n");
    }

    #[test]
    fn env_names() {
        assert!(is_valid_env_name("OPENAI_API_KEY"));
        assert!(is_valid_env_name("_x1"));
        assert!(!is_valid_env_name("1X"));
        assert!(!is_valid_env_name("A-B"));
        assert!(!is_valid_env_name(""));
    }

    proptest! {
        #[test]
        fn any_argv_round_trips(argv in proptest::collection::vec(".*", 1..6), cwd in proptest::option::of("/[^\n]*")) {
            let spec = LaunchSpec { argv: argv.clone(), work_dir: cwd.clone(), ..Default::default() };
            let (decoded, _, decoded_cwd, _) = decode(&spec.encode());
            prop_assert_eq!(decoded, argv);
            prop_assert_eq!(decoded_cwd, cwd);
        }
    }
}
