//! The operator CLI: what the binary does when Nomad did not start it as a plugin.
//!
//! - `polydev run --provider P [options] -- CMD ARGS…` runs one task through the same core the
//!   plugin uses (same container settings, launch spec, credentials and log pump), streams its
//!   output to this terminal and exits with the task's exit code.
//! - `polydev credentials set|list|rm` manages the encrypted per-user credential store
//!   (`cli::credentials`).
//! - `polydev pool status|drain` shows the warm pool, or removes its idle containers.
//! - `polydev version` prints the version; `polydev help` explains both modes.
//!
//! Every command parses its arguments with `cli::args` (`--help` everywhere, `--opt=value`, unknown
//! options named) and writes to the inherited descriptors 1 and 2.

mod args;
mod credentials;
mod pool;
mod run;

use std::io::Write;

use args::Command;

const HELP: &str = "\
polydev — a HashiCorp Nomad task driver that runs LLM coding CLIs (Codex, Claude Code,
Gemini CLI) in one-shot, non-root Docker containers, with each user's credentials.

As a Nomad plugin: put this binary in the agent's plugin_dir and add a
`plugin \"polydev\" { config { ... } }` block; Nomad starts it (with NOMAD_PLUGIN_MAGIC_COOKIE
set) and talks to it over gRPC. Jobs use `driver = \"polydev\"`.

As an operator tool:
  polydev run [OPTIONS] -- COMMAND [ARGS...]     run one task as the driver would
  polydev credentials set|list|rm [OPTIONS]      manage the per-user credential store
  polydev pool status|drain [OPTIONS]            the warm pool's containers; remove idle ones
  polydev version                                print the version
  polydev help                                   this text

Every command takes --help. Options take their value as `--opt value` or `--opt=value`.
";

/// Run the CLI with `args` (without the program name); returns the process exit code.
pub fn main(args: Vec<String>) -> i32 {
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        None => {
            print_err(HELP);
            2
        }
        Some("help" | "--help" | "-h") => {
            print_out(HELP);
            0
        }
        Some("version" | "--version" | "-V") => {
            print_out(&format!(
                "polydev {} (Nomad driver API 0.1.0)\n",
                env!("CARGO_PKG_VERSION")
            ));
            0
        }
        Some("run") => run::main(rest),
        Some("pool") => pool::main(rest),
        Some("credentials") => credentials::main(rest),
        Some(other) => {
            print_err(&format!(
                "polydev: unknown command {other:?}\nRun `polydev help` for usage.\n"
            ));
            2
        }
    }
}

/// Write to this process's stdout (fd 1); a closed pipe is not an error worth a panic.
pub(crate) fn print_out(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Write a line (or lines) to stderr (fd 2).
pub(crate) fn print_err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = stderr.write_all(b"\n");
    }
}

/// Report a usage error of `command` and return exit code 2.
pub(crate) fn usage_error(command: &Command, message: &str) -> i32 {
    print_err(&format!(
        "polydev {}: {message}\n\n{}",
        command.name,
        args::usage(command)
    ));
    2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn unknown_commands_exit_2_help_and_version_0() {
        assert_eq!(main(args("frobnicate")), 2);
        assert_eq!(main(args("version")), 0);
        assert_eq!(main(args("help")), 0);
        assert_eq!(main(args("run --help")), 0);
    }
}
