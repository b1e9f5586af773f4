//! `polydev credentials set|list|rm`: the operator's side of the encrypted credential store
//! (`crate::credentials::FileStore`) that the plugin reads at every StartTask, or with
//! `--backend vault` of the cluster's Vault ([`vault`]). Both are reached only through the
//! [`CredentialStore`](crate::credential_model::CredentialStore) trait the plugin's lookup policy uses; `--backend` picks which.
//!
//! Invariants:
//! - A value only ever enters through stdin — never argv, where `ps` and shell history see it —
//!   lives in zeroized buffers, and is never printed: `list` shows names only.
//! - Exit codes: 0 done, 1 the store refused or failed, 2 usage (unknown command or option, a
//!   missing or invalid name).
//! - The CLI must run as the uid the plugin runs as (root): the store refuses files of another
//!   owner.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::args::{Command, Opt, Outcome};
use crate::config;
use crate::credential_model::names::{self, NameKind};
use crate::credential_model::{EntryId, Listing, StoreScope};
use crate::credentials::FileStore;
use crate::credentials::sealed::secret_from_utf8;
use crate::credentials::store::MAX_VALUE_LEN;

mod backend;
mod vault;

use backend::{failure, place, with_backend};

const NAMESPACE: Opt = Opt::Value {
    name: "namespace",
    value: "NS",
    help: "the Nomad namespace whose jobs may use the key",
};
const USER: Opt = Opt::Value {
    name: "user",
    value: "ID",
    help: "the user id tasks name in their config's user_id",
};
const PROVIDER: Opt = Opt::Value {
    name: "provider",
    value: "P",
    help: "openai, anthropic, google, or a provider of your own",
};
const VARIABLE: Opt = Opt::Value {
    name: "variable",
    value: "VAR",
    help: "the variable (default: the provider's first credential,\nOPENAI_API_KEY, ANTHROPIC_API_KEY or GOOGLE_API_KEY)",
};
const SHARED: Opt = Opt::Flag {
    name: "shared",
    help: "the node's shared key, for tasks that set no user_id\n(instead of --namespace and --user)",
};
const DATA_DIR: Opt = Opt::Value {
    name: "data-dir",
    value: "DIR",
    help: "the plugin's data_dir (default /var/lib/polydev)",
};
const KEY_FILE: Opt = Opt::Value {
    name: "key-file",
    value: "FILE",
    help: "the plugin's credentials_key_file, the key that seals\nthe entries (default /etc/polydev/credentials.key)",
};

/// Options of the commands that name one entry (`set`, `rm`).
const ENTRY_OPTIONS: &[Opt] = &[
    NAMESPACE,
    USER,
    SHARED,
    PROVIDER,
    VARIABLE,
    DATA_DIR,
    KEY_FILE,
    vault::BACKEND,
    vault::ADDRESS,
    vault::TOKEN_FILE,
    vault::MOUNT,
    vault::PREFIX,
    vault::CA_FILE,
    vault::NAMESPACE,
];

const SET: Command = Command {
    name: "credentials set",
    summary:
        "Store the value read from stdin (one trailing newline is dropped) as VAR of user ID in \
Nomad namespace NS, or with --shared as the node's shared key, encrypted under the plugin's
data_dir. The value never comes from the command line, where ps and shell history would see it.
Replaces an entry that has become unreadable.",
    options: ENTRY_OPTIONS,
    operands: None,
    notes: "Examples:\n  printf %s \"$KEY\" | polydev credentials set --namespace default --user user_123 --provider openai\n  printf %s \"$KEY\" | polydev credentials set --shared --provider anthropic\n  printf %s \"$KEY\" | polydev credentials set --backend vault --namespace default --user user_123 --provider openai",
};
const LIST: Command = Command {
    name: "credentials list",
    summary: "Show the stored entries: namespace, user, provider, when each was last changed \
(UTC), and variable names — never values.",
    options: &[
        NAMESPACE,
        USER,
        DATA_DIR,
        vault::BACKEND,
        vault::ADDRESS,
        vault::TOKEN_FILE,
        vault::MOUNT,
        vault::PREFIX,
        vault::CA_FILE,
        vault::NAMESPACE,
    ],
    operands: None,
    notes: "",
};
const RM: Command = Command {
    name: "credentials rm",
    summary: "Remove one variable, or the user's (or with --shared the node's) whole entry for the \
provider, also an entry that has become unreadable.",
    options: ENTRY_OPTIONS,
    operands: None,
    notes: "",
};

/// Usage of every subcommand (for `polydev credentials --help`).
fn overview() -> String {
    [SET, LIST, RM]
        .iter()
        .map(super::args::usage)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Run `polydev credentials ARGS` with the process's stdin/stdout/stderr; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let stdin = std::io::stdin();
    let is_terminal = stdin.is_terminal();
    run(
        args,
        &mut stdin.lock(),
        is_terminal,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
    )
}

enum Failure {
    Usage(String),
    Failed(String),
}

/// Parsed options of one subcommand.
#[derive(Debug, Default, PartialEq)]
struct Options {
    namespace: Option<String>,
    user: Option<String>,
    provider: Option<String>,
    variable: Option<String>,
    shared: bool,
    data_dir: Option<PathBuf>,
    key_file: Option<String>,
    /// `--backend vault`.
    in_vault: bool,
    vault: vault::VaultOptions,
}

impl Options {
    /// `None`: `--help` was asked for (and printed).
    fn parse(
        command: &Command,
        args: &[String],
        stdout: &mut dyn Write,
    ) -> Result<Option<Self>, Failure> {
        let parsed = match super::args::parse(command, args).map_err(Failure::Usage)? {
            Outcome::Help(text) => {
                let _ = stdout.write_all(text.as_bytes());
                return Ok(None);
            }
            Outcome::Run(parsed) => parsed,
        };
        let text = |name: &str| parsed.get(name).map(str::to_string);
        Ok(Some(Options {
            namespace: text("namespace"),
            user: text("user"),
            provider: text("provider"),
            variable: text("variable"),
            shared: parsed.flag("shared"),
            data_dir: text("data-dir").map(PathBuf::from),
            key_file: text("key-file"),
            in_vault: match parsed.get("backend") {
                None | Some("file") => false,
                Some("vault") => true,
                Some(other) => {
                    return Err(Failure::Usage(format!(
                        "--backend {other:?}: use file (this node's store) or vault"
                    )));
                }
            },
            vault: vault::VaultOptions {
                address: text("vault-address"),
                token_file: text("vault-token-file"),
                mount: text("vault-mount"),
                prefix: text("vault-prefix"),
                ca_file: text("vault-ca-file"),
                namespace: text("vault-namespace"),
            },
        }))
    }

    fn entry(&self) -> Result<EntryId, Failure> {
        let need = |value: &Option<String>, name: &str| {
            value
                .clone()
                .ok_or_else(|| Failure::Usage(format!("--{name} is required")))
        };
        let provider = need(&self.provider, "provider")?;
        let entry = if self.shared {
            if self.namespace.is_some() || self.user.is_some() {
                return Err(Failure::Usage(
                    "--shared is the node's key for tasks without a user: drop --namespace and \
                     --user, or drop --shared to name a user's key"
                        .into(),
                ));
            }
            EntryId::shared(&provider)
        } else {
            let namespace = need(&self.namespace, "namespace")?;
            let user = need(&self.user, "user")?;
            EntryId::new(&namespace, &user, &provider)
        };
        entry.map_err(|e| Failure::Usage(e.to_string()))
    }

    /// The node's store at `--data-dir`, sealed with `--key-file` (checked as the plugin checks
    /// `credentials_key_file`).
    fn store(&self) -> Result<FileStore, Failure> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(config::plugin::DEFAULT_DATA_DIR));
        let key_file = match &self.key_file {
            None => PathBuf::from(config::plugin::DEFAULT_CREDENTIALS_KEY_FILE),
            Some(given) => config::plugin::credentials_key_file(given, &data_dir, "--key-file")
                .map_err(|e| Failure::Usage(e.to_string()))?,
        };
        Ok(FileStore::new(data_dir, key_file))
    }
}

/// The testable core of [`main`].
fn run(
    args: &[String],
    stdin: &mut dyn Read,
    stdin_is_terminal: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let rest = args.get(1..).unwrap_or_default();
    let (command, result) = match args.first().map(String::as_str) {
        Some("help" | "--help" | "-h") => {
            let _ = stdout.write_all(overview().as_bytes());
            return 0;
        }
        Some("set") => (
            Some(&SET),
            Options::parse(&SET, rest, stdout).and_then(|o| match o {
                Some(o) => set(&o, stdin, stdin_is_terminal, stdout, stderr),
                None => Ok(0),
            }),
        ),
        Some("list") => (
            Some(&LIST),
            Options::parse(&LIST, rest, stdout).and_then(|o| match o {
                Some(o) => list(&o, stdout),
                None => Ok(0),
            }),
        ),
        Some("rm") => (
            Some(&RM),
            Options::parse(&RM, rest, stdout).and_then(|o| match o {
                Some(o) => rm(&o, stdout),
                None => Ok(0),
            }),
        ),
        Some(other) => (
            None,
            Err(Failure::Usage(format!("unknown command {other:?}"))),
        ),
        None => (
            None,
            Err(Failure::Usage("name a command: set, list or rm".into())),
        ),
    };
    let name = command.map(|c| c.name).unwrap_or("credentials");
    match result {
        Ok(code) => code,
        Err(Failure::Usage(message)) => {
            let usage = command.map(super::args::usage).unwrap_or_else(overview);
            let _ = write!(stderr, "polydev {name}: {message}\n\n{usage}");
            2
        }
        Err(Failure::Failed(message)) => {
            let _ = writeln!(stderr, "polydev {name}: {message}");
            1
        }
    }
}

/// The variable `set` and `rm` default to: the provider's first required credential.
fn default_variable(provider: &str) -> Result<String, Failure> {
    let defaults = config::decode_plugin_config(&[]).map_err(|e| Failure::Failed(e.to_string()))?;
    match defaults.providers.get(provider) {
        Some(p) => p.key_variable().map(str::to_owned).ok_or_else(|| {
            Failure::Usage(format!(
                "provider {provider:?} requires no credential; name one with --variable"
            ))
        }),
        None => Err(Failure::Usage(format!(
            "provider {provider:?} is not built in ({}), so there is no default variable: name \
             it with --variable",
            defaults
                .providers
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn set(
    options: &Options,
    stdin: &mut dyn Read,
    stdin_is_terminal: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> Result<i32, Failure> {
    let id = options.entry()?;
    let variable = match &options.variable {
        Some(variable) => variable.clone(),
        None => default_variable(id.provider())?,
    };
    names::check(NameKind::Variable, &variable).map_err(|e| Failure::Usage(e.to_string()))?;
    let builtin = config::decode_plugin_config(&[])
        .ok()
        .and_then(|c| c.providers.get(id.provider()).cloned());
    if let Some(provider) = builtin.filter(|p| {
        !p.credentials.contains(&variable) && !p.optional_credentials.contains(&variable)
    }) {
        let _ = writeln!(
            stderr,
            "polydev credentials set: note: the built-in provider {:?} does not use {variable} \
             (it uses {}); storing it anyway",
            id.provider(),
            [
                &provider.credentials[..],
                &provider.optional_credentials[..]
            ]
            .concat()
            .join(", ")
        );
    }
    if stdin_is_terminal {
        let _ = writeln!(
            stderr,
            "polydev credentials set: reading the value of {variable} from stdin (it is echoed); \
             end with Ctrl-D. Prefer a pipe: printf %s \"$KEY\" | polydev credentials set …"
        );
    }
    let value = read_value(stdin)?;
    let (replaced, location) = with_backend(options, async |store| {
        let replaced = store
            .set(&id, &variable, &value)
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        Ok((replaced, place(store, &id)))
    })?;
    if let Some(problem) = replaced {
        let _ = writeln!(
            stderr,
            "polydev credentials set: the entry of {id} was unreadable ({problem}); it now holds \
             only {variable}: register its other variables again"
        );
    }
    let _ = writeln!(stdout, "stored {variable} for {id} in {location}");
    if options.in_vault {
        vault::note_node_copy(options, &id, &variable, stderr);
    }
    Ok(0)
}

/// The value on stdin, without one trailing newline; refuses empty, oversized or non-UTF-8 input.
fn read_value(stdin: &mut dyn Read) -> Result<SecretString, Failure> {
    let limit = MAX_VALUE_LEN + 2; // room for "\r\n"
    // Sized up front so reading never reallocates and leaves a copy behind.
    let mut buffer = Zeroizing::new(Vec::with_capacity(limit + 1));
    stdin
        .take(limit as u64 + 1)
        .read_to_end(&mut buffer)
        .map_err(|e| Failure::Failed(format!("cannot read the value from stdin: {e}")))?;
    if buffer.len() > limit {
        return Err(Failure::Failed(format!(
            "the value on stdin is longer than {MAX_VALUE_LEN} bytes"
        )));
    }
    let mut end = buffer.len();
    if buffer[..end].ends_with(b"\n") {
        end -= 1;
        if buffer[..end].ends_with(b"\r") {
            end -= 1;
        }
    }
    if end == 0 {
        return Err(Failure::Failed(
            "the value on stdin is empty: pipe the credential in, e.g. \
             printf %s \"$KEY\" | polydev credentials set …"
                .into(),
        ));
    }
    secret_from_utf8(&buffer[..end])
        .ok_or_else(|| Failure::Failed("the value on stdin is not UTF-8 text".into()))
}

fn list(options: &Options, stdout: &mut dyn Write) -> Result<i32, Failure> {
    let listed = with_backend(options, async |store| {
        store
            .list(options.namespace.as_deref(), options.user.as_deref())
            .await
            .map_err(failure)
    })?;
    let _ = stdout.write_all(render_list(&listed).as_bytes());
    Ok(if listed.iter().any(|l| l.variables.is_err()) {
        1
    } else {
        0
    })
}

/// Aligned columns: NAMESPACE USER PROVIDER UPDATED VARIABLES.
fn render_list(listed: &[Listing]) -> String {
    let rows: Vec<[String; 5]> = listed
        .iter()
        .map(|l| {
            let (namespace, user) = match l.id.is_shared() {
                true => ("*", "(shared)"),
                false => (l.id.namespace(), l.id.user()),
            };
            [
                namespace.to_string(),
                user.to_string(),
                l.id.provider().to_string(),
                l.updated.map(utc).unwrap_or_else(|| "-".into()),
                match &l.variables {
                    Ok(names) => names.join(","),
                    Err(problem) => format!("(unreadable: {problem})"),
                },
            ]
        })
        .collect();
    let header = ["NAMESPACE", "USER", "PROVIDER", "UPDATED", "VARIABLES"].map(String::from);
    let width = |i: usize| {
        std::iter::once(&header)
            .chain(&rows)
            .map(|r| r[i].len())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2), width(3)];
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        for (i, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", row[i]));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    out
}

/// `2026-12-01T13:05:00Z`.
fn utc(at: std::time::SystemTime) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from(at)
        .format(&format)
        .unwrap_or_else(|_| "-".into())
}

fn rm(options: &Options, stdout: &mut dyn Write) -> Result<i32, Failure> {
    let id = options.entry()?;
    let (removed, from) = with_backend(options, async |store| {
        let removed = store
            .remove(&id, options.variable.as_deref())
            .await
            .map_err(failure)?;
        // This node's store goes unnamed, as `polydev credentials rm` always has.
        let from = match store.scope() {
            StoreScope::Node => String::new(),
            StoreScope::Cluster => format!(" from {}", place(store, &id)),
        };
        Ok((removed, from))
    })?;
    let _ = writeln!(stdout, "removed {} of {id}{from}", removed.join(", "));
    Ok(0)
}

#[cfg(test)]
mod tests;
