//! The `polydev` binary: a Nomad task-driver plugin when Nomad starts it, an operator CLI
//! otherwise.
//!
//! Mode selection: if `NOMAD_PLUGIN_MAGIC_COOKIE` is set (to any value) this is plugin mode and
//! the value is then checked strictly by `polydev::plugin::serve`. In plugin mode stdout belongs
//! to the go-plugin handshake: nothing here prints to it.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use polydev::assembly::Wiring;
use polydev::driver::PolydevDriver;
use polydev::logs::forward::FORWARD_SUBCOMMAND;
use polydev::plugin::handshake::MAGIC_COOKIE_KEY;
use tokio_util::sync::CancellationToken;

/// How long the runtime may take to stop leftover tasks after the server has returned.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_millis(200);

/// How long after the stop request the driver's background work may take to wind down (the
/// warm pool's creations under way). With [`RUNTIME_SHUTDOWN_TIMEOUT`] it stays inside the 2 s
/// go-plugin waits after Shutdown before it sends SIGKILL.
const WIND_DOWN_BUDGET: Duration = Duration::from_millis(1700);

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
        let driver = PolydevDriver::new(Wiring::production(), shutdown.child_token());
        let wind_down_by = wind_down_deadline(shutdown.clone());
        let served = polydev::plugin::serve(driver.clone().routes(), shutdown).await;
        // The warm pool finishes or undoes the containers it is making (dockerd would complete
        // a create we hung up on, and nobody would remove the container): wait for it, within
        // go-plugin's grace.
        let deadline = wind_down_by
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now());
        if tokio::time::timeout_at(deadline, driver.stopped())
            .await
            .is_err()
        {
            tracing::warn!(budget = ?WIND_DOWN_BUDGET, "the warm pool did not wind down in time; the next plugin process removes what it left half-made");
        }
        served
    });
    // Do not wait on stragglers (e.g. blocking tasks): go-plugin SIGKILLs us 2 s after Shutdown.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    Ok(result?)
}

/// When the driver's wind-down must end: [`WIND_DOWN_BUDGET`] after `shutdown` is cancelled.
/// The wind-down runs from that moment, beside the server's drain.
fn wind_down_deadline(
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<tokio::time::Instant> {
    tokio::spawn(async move {
        shutdown.cancelled().await;
        tokio::time::Instant::now() + WIND_DOWN_BUDGET
    })
}

/// Operator CLI mode, and the internal `forward-logs` process the plugin starts per task.
fn run_cli() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.first().map(String::as_str) == Some(FORWARD_SUBCOMMAND) {
        polydev::logging::init_plugin_logging();
        polydev::assembly::forward_logs_main(&args[1..])
    } else {
        polydev::logging::init_cli_logging(std::env::var_os("POLYDEV_VERBOSE").is_some());
        polydev::cli::main(args)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
