//! polydev: a HashiCorp Nomad task driver that runs LLM coding CLIs (OpenAI Codex, Anthropic
//! Claude Code, Google Gemini CLI) as PID 1 of one-shot, non-root Docker containers, and injects
//! each user's provider credentials itself.
//!
//! # Layout
//!
//! Dependencies point inward: `plugin → driver → core ← docker`, and `assembly` (the composition
//! root) plugs `docker` into `core`; `core`, `logs`, `broker` and `credentials` never name tonic
//! or bollard types, and `core` never names HTTP types.
//! `core` and `pool` never name each other: both build containers from `container_parts`, and
//! `core` reaches the pool only through the `pool_port` trait, which `assembly` wires in.
//! `assembly` is the composition root: the only module that names `docker`, `vault`, the
//! forwarder process (`logs::forward::ProcessForwarder`) and the credential policy
//! (`credentials::source_for`). SetConfig (`driver`), `polydev run` (`cli`) and the
//! `forward-logs` process get their parts from it, so `driver` names none of `broker`,
//! `credentials`, `docker`, `logs`, `pool`, `task_user` or `vault`, and `logs` never names
//! `docker`.
//! `config` and `vault` never name `credentials`, and `config` never names `vault`: what they
//! share with it — the credential name rules, `EntryId`, `CredentialKey`, the `CredentialStore`
//! trait and its `StoreError` — is the leaf `credential_model`, which names nothing else of the
//! crate. `credentials` builds its lookup policy from `config` and the stores it is handed (the
//! root hands it Vault's), never naming `vault`, and asks every store (Vault, the node's store)
//! only through that trait, as the operator CLI does. These rules are tests (`layout_rules`).
//!
//! - [`assembly`]: the composition root — builds the engine, credential source, log forwarder,
//!   broker and warm pool the core runs with, for the plugin, `polydev run` and the tests, and
//!   starts the `forward-logs` process over Docker.
//! - [`plugin`]: the go-plugin server side — magic cookie, unix socket, handshake line,
//!   `GRPCController/Shutdown`, health `plugin`, signals.
//! - [`driver`]: Nomad's `BasePlugin` and `Driver` gRPC services; protobuf ⇄ domain, the one
//!   error → `Status` mapping, the Fingerprint and TaskEvents streams.
//! - [`core`]: the task lifecycle (start, supervise, stop, destroy, recover, stats, exec), and
//!   what each CLI is given at launch (`core::cli_launch`, from the facts in `config::known_cli`).
//! - [`broker`]: the per-task credential broker — a listener inside each broker-mode task's
//!   network namespace that forwards the CLI's API requests with the real key, and the egress
//!   allowlist; the key never enters the container.
//! - [`pool`]: the warm pool — idle containers per provider, claimed by StartTask, refilled and
//!   reconciled in the background.
//! - [`container_parts`]: what every polydev container is made with, task or warm — labels, the
//!   task user and its home, hardening, network mode; a leaf that `core` and `pool` both use.
//! - [`task_user`]: the start-time check that no host account or group has the ids tasks run as.
//! - [`pool_port`]: the warm pool as `core` sees it — the trait `pool` implements and
//!   `assembly` wires in, so `core` and `pool` never name each other.
//! - [`config`]: hclspec schemas and cty-msgpack decoding of the plugin and task configuration;
//!   the one table of facts about the built-in CLIs (`config::known_cli`).
//! - [`credential_model`]: the vocabulary of stored credentials — name rules, `EntryId`,
//!   `CredentialKey`, the `CredentialStore` trait (Vault and the node's store) and `StoreError`;
//!   a leaf that `config`, `vault` and `credentials` all use.
//! - [`credentials`]: where a task's provider credentials come from, and in which order (Vault,
//!   the node's encrypted store, the agent's environment): an ordered list of stores.
//! - [`usage_model`]: what one model request through the broker used, and whose task made it;
//!   a leaf for the broker's metering, the usage ledger and the metrics (issue 16).
//! - [`tls`]: the TLS client settings of every HTTPS client (broker upstreams, Vault).
//! - [`vault`]: users' keys from Vault or OpenBao (KV v2) — token lifecycle, a per-entry cache,
//!   health for the fingerprint.
//! - [`logs`]: the log pump — container output → Nomad's FIFOs, resumable, redacted — and the
//!   forwarder process that keeps it running across plugin restarts.
//! - [`engine`]: the container-engine port (`ContainerEngine`), `engine::watch` that follows
//!   the engine's events and outages for the pool and the task supervisors, and the in-memory
//!   `engine::fake` (tests and the `fake-engine` feature only).
//! - [`docker`]: the port implemented with bollard against a real Docker engine
//!   (`DockerEngine`); named by `assembly` alone.
//! - [`cli`]: the operator CLI (`polydev run`, `polydev credentials set|list|rm` on the local
//!   store or `--backend vault`, `polydev pool status|drain`, `polydev version`, `polydev help`).
//! - `private_file`: files only this uid may read or write (0700/0600, owner, no symlinks, atomic
//!   writes), for the credential store and the Vault token files.
//! - [`request_path`]: the one plain form of a request path that the broker checks and
//!   forwards, and `api_paths` matching; a leaf that `config` (to check `api_paths`) and `broker` use.
//! - [`safe_open`]: opening paths a task can write (its log FIFOs, the directories bound into its
//!   container) as root without following what the task planted there.
//! - [`logging`]: hclog-shaped JSON on stderr, which Nomad's agent understands.
//! - [`mountinfo`]: `/proc/<pid>/mountinfo` parsed, for the pool's slots and the cgroup writer.
//! - [`pb`]: code generated from the vendored protos (`proto/`).

// This crate's docs are for the engineers of the plugin, and are built with its private items
// (tests/run.sh: `cargo doc --document-private-items`), so the layout above links to them.
#![allow(rustdoc::private_intra_doc_links)]

pub mod assembly;
pub mod broker;
pub mod cli;
pub mod config;
pub mod container_parts;
pub mod core;
pub mod credential_model;
pub mod credentials;
pub mod docker;
pub mod driver;
pub mod engine;
pub mod logging;
pub mod logs;
pub mod mountinfo;
pub mod plugin;
pub(crate) mod pool;
pub(crate) mod pool_port;
pub(crate) mod private_file;
pub(crate) mod request_path;
pub(crate) mod safe_open;
pub(crate) mod task_user;
pub(crate) mod tls;
pub mod usage_model;
pub mod vault;

#[cfg(test)]
mod layout_rules;

/// Generated protobuf and gRPC code (Nomad v2.0.5 and go-plugin v1.8.0 protos).
#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}
