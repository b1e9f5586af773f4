//! The `polydev` binary: a Nomad task-driver plugin when Nomad starts it, an operator CLI
//! otherwise.
//!
//! Mode selection: if `NOMAD_PLUGIN_MAGIC_COOKIE` is set (to any value) this is plugin mode and
//! the value is then checked strictly by `polydev::plugin::serve`. In plugin mode stdout belongs
//! to the go-plugin handshake: nothing here prints to it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use polydev::driver::{PolydevDriver, Wiring};
use polydev::logs::forward::FORWARD_SUBCOMMAND;
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
    // Every task's broker connections are descriptors of this process: as many as allowed.
    polydev::broker::limits::raise_descriptor_limit_logged();
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
/// `shutdown` is cancelled when the plugin is told to stop; tasks keep running.
fn driver_routes(shutdown: CancellationToken) -> Routes {
    PolydevDriver::new(Wiring::production(), shutdown).routes()
}

/// Operator CLI mode, and the internal `forward-logs` process the plugin starts per task.
fn run_cli() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.first().map(String::as_str) == Some(FORWARD_SUBCOMMAND) {
        polydev::logging::init_plugin_logging();
        polydev::logs::forward::forwarder_main(&args[1..])
    } else {
        polydev::logging::init_cli_logging(std::env::var_os("POLYDEV_VERBOSE").is_some());
        polydev::cli::main(args)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
