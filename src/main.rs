//! The `polydev` binary: a Nomad task-driver plugin when Nomad starts it, an operator CLI
//! otherwise.
//!
//! Mode selection: if `NOMAD_PLUGIN_MAGIC_COOKIE` is set (to any value) this is plugin mode and
//! the value is then checked strictly by `polydev::plugin::serve`. In plugin mode stdout belongs
//! to the go-plugin handshake: nothing here prints to it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use polydev::plugin::handshake::MAGIC_COOKIE_KEY;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

/// How long the runtime may take to stop leftover tasks after the server has returned.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    if std::env::var_os(MAGIC_COOKIE_KEY).is_some() {
        run_plugin()
    } else {
        run_cli()
    }
}

/// Plugin mode: hclog JSON on stderr, serve until Nomad asks us to stop, exit 0.
fn run_plugin() -> ExitCode {
    polydev::logging::init_plugin_logging();
    match serve_plugin() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A plain `[ERROR]` line: readable by a person who ran the binary by hand, and
            // go-plugin's non-JSON path still files it at ERROR in the agent's log.
            polydev::logging::write_stderr_line(&format!("[ERROR] polydev: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn serve_plugin() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let routes = driver_routes(shutdown.child_token());
        polydev::plugin::serve(routes, shutdown).await
    });
    // Do not wait on stragglers (e.g. blocking tasks): go-plugin SIGKILLs us 2 s after Shutdown.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    Ok(result?)
}

/// The driver's gRPC services (Nomad's `BasePlugin` and `Driver`), served beside go-plugin's.
///
/// **Agreed seam, temporarily empty:** the driver layer replaces this body at merge with its
/// services, built around `shutdown` (a child of the root token, cancelled when the plugin is
/// told to stop). Until then the plugin answers only go-plugin's own services.
fn driver_routes(shutdown: CancellationToken) -> Routes {
    drop(shutdown);
    Routes::builder().routes()
}

/// Operator CLI mode.
///
/// **Agreed seam, temporary:** the operator CLI is written separately and replaces this
/// function; for now it explains the two modes and exits 2.
fn run_cli() -> ExitCode {
    use std::io::Write as _;
    let help = format!(
        "polydev {version}: a Nomad task driver for LLM coding CLIs\n\
         \n\
         Modes:\n  \
         plugin  Nomad starts this binary as a task-driver plugin (it sets {MAGIC_COOKIE_KEY});\n          \
         install it in the agent's plugin_dir and configure it with a plugin \"polydev\" block.\n  \
         CLI     run by an operator without that variable; the operator commands are not\n          \
         available in this build yet.\n\
         \n\
         Logging: POLYDEV_LOG takes an EnvFilter directive (plugin default: debug, HTTP/2 crates at info).\n",
        version = env!("CARGO_PKG_VERSION"),
    );
    let _ = std::io::stdout().lock().write_all(help.as_bytes());
    ExitCode::from(2)
}
