//! The per-task credential broker: the real key never enters a task's container.
//!
//! A broker-mode task container has no network (`network_mode = none`). polydev binds a TCP
//! listener on `127.0.0.1:<port>` *inside* the container's network namespace ([`netns`]) and
//! gives the CLI that address as its API base URL, with a placeholder where the key would be.
//! Each request that arrives there is the task's — the listener itself says which task is
//! calling, so there is no token to steal — and is forwarded to the provider's API over TLS
//! ([`upstream`]) with the task's current key put where the provider expects it (`proxy`).
//! `CONNECT` to destinations the operator allowed is tunnelled (`egress`, `tunnel`); nothing
//! else is reachable from the container.
//!
//! `core` uses it through [`Broker::open`] (the address a task's CLI is given, as a
//! [`BrokerLease`]) and [`BrokerLease::close`] (the task stopped); it never sees HTTP types.
//!
//! Guarantees:
//! - The key is looked up at every request, so a rotated key reaches running tasks and a
//!   removed one gets a 401 naming namespace, user and provider (never a value).
//! - A lease serves one task; a second task's container cannot reach it (another namespace).
//!   Closing the lease (stop, exit, destroy) or the plugin's shutdown stops the listener and
//!   every connection of it.
//! - No path leaves the provider's `api_paths` or upstream prefix ([`crate::request_path`]), and no answer
//!   carries the key back to the container ([`scrub`]).
//! - Each task holds at most `max_connections` connections, CONNECT tunnels included for as
//!   long as they last (`tunnel`); a tunnel idle for `tunnel_idle_timeout` is closed.
//! - No task can take what another task needs: each lease reserves the descriptors its task
//!   can cost at most out of the plugin's budget, or is refused (`limits`); each task has an
//!   API client — connection pool, HTTP/2 streams — of its own (`upstream`); a request body
//!   may keep the broker waiting `request_body_timeout` in total (`client_body`).
//! - Bad, huge or slow requests and failing upstreams get an HTTP error (`reply`), never a
//!   panic, and touch no other task.
//!
//! What a plugin crash does: the listener lives in the plugin process, so in-flight requests
//! fail and new connections are refused until Nomad's RecoverTask, which binds the same port in
//! the container again (see `core::recover`); the CLIs retry.

mod addresses;
mod body;
mod client_body;
mod egress;
pub mod limits;
pub mod netns;
mod proxy;
mod reply;
pub mod scrub;
mod trailers;
mod tunnel;
pub mod upstream;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerConfig, EgressRule, PluginConfig, ResolvedProvider};
use crate::credentials::{CredentialKey, CredentialSource};
use limits::{BudgetExhausted, DescriptorBudget, Reservation};
pub use netns::{BindError, ListenerSite};
use tunnel::ConnectionSlot;
use upstream::{Upstream, UpstreamError};

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Why a broker could not be set up or opened.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("provider {0:?} is not in broker mode")]
    NotBrokered(String),
    #[error(
        "provider {0:?} is no longer configured on this node, so its task's credential broker \
         cannot serve; put its provider block back in the plugin config, or let Nomad restart \
         the task"
    )]
    ProviderGone(String),
    #[error(transparent)]
    Budget(#[from] BudgetExhausted),
}

/// The task a lease serves.
#[derive(Debug, Clone)]
pub struct BrokeredTask {
    pub task_id: String,
    /// Whose key is presented.
    pub key: CredentialKey,
    /// The variable holding the key (the provider's first credential).
    pub key_variable: String,
}

impl BrokeredTask {
    /// What the broker of task `task_id` of `provider` serves: the key of `key`, from the
    /// provider's key variable. Refused for a provider that is not in broker mode.
    pub fn new(
        task_id: &str,
        key: CredentialKey,
        provider: &ResolvedProvider,
    ) -> Result<Self, BrokerError> {
        match (provider.route(), provider.key_variable()) {
            (Some(_), Some(variable)) => Ok(BrokeredTask {
                task_id: task_id.to_string(),
                key,
                key_variable: variable.to_string(),
            }),
            _ => Err(BrokerError::NotBrokered(provider.name().to_string())),
        }
    }
}

/// What each connection of one task's listener needs.
struct TaskContext {
    task_id: String,
    key: CredentialKey,
    key_variable: String,
    /// The provider's API, with a connection pool of this task's own.
    upstream: Arc<Upstream>,
    credentials: Arc<dyn CredentialSource>,
    limits: BrokerConfig,
    egress: Arc<[EgressRule]>,
    /// Cancelled when the lease closes: the listener and every connection end.
    closed: CancellationToken,
    /// The task's share of the plugin's descriptors, held by every connection and tunnel.
    reservation: Arc<Reservation>,
}

/// The broker of one plugin process (or `polydev run`).
pub struct Broker {
    limits: BrokerConfig,
    egress: Arc<[EgressRule]>,
    credentials: Arc<dyn CredentialSource>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    /// Descriptors the leases of this process may reserve (one broker per process).
    budget: Arc<DescriptorBudget>,
    shutdown: CancellationToken,
    /// Bind every listener here instead of in the container (tests with the fake runtime).
    site_override: Option<ListenerSite>,
}

/// A task's broker, serving until closed. Dropping it closes it too.
#[derive(Debug)]
pub struct BrokerLease {
    port: u16,
    closed: CancellationToken,
}

impl BrokerLease {
    /// The port the broker listens on inside the container (at `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop listening and drop every connection of this task.
    pub fn close(&self) {
        self.closed.cancel();
    }
}

impl Drop for BrokerLease {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

impl Broker {
    /// A broker for every broker-mode provider of `config`; its listeners end with `shutdown`.
    /// Its descriptor budget is sized from the process's open file limit now.
    pub fn new(
        config: &PluginConfig,
        credentials: Arc<dyn CredentialSource>,
        shutdown: CancellationToken,
    ) -> Result<Self, BrokerError> {
        let budget = Arc::new(DescriptorBudget::from_process_limit());
        tracing::debug!(
            capacity = budget.capacity(),
            per_task = limits::descriptors_per_task(config.broker.max_connections),
            "credential broker descriptor budget"
        );
        Ok(Broker {
            limits: config.broker.clone(),
            egress: config.egress.clone().into(),
            credentials,
            upstreams: upstream::upstreams(config)?,
            budget,
            shutdown,
            site_override: None,
        })
    }

    /// Size the descriptor budget for a process limit of `limit` instead of the real one
    /// (tests of the budget).
    pub fn with_descriptor_limit(mut self, limit: usize) -> Self {
        self.budget = Arc::new(DescriptorBudget::for_limit(limit));
        self
    }

    /// Bind every task's listener on the host's loopback instead of in its container: for
    /// tests against the fake runtime, whose containers have no network namespace. Never used
    /// for a real task, whose container would then not reach its broker.
    pub fn binding_on_host_loopback(mut self) -> Self {
        self.site_override = Some(ListenerSite::HostLoopback);
        self
    }

    /// Whether the egress allowlist has any entry (then the CLI is given the proxy settings).
    pub fn egress_enabled(&self) -> bool {
        !self.egress.is_empty()
    }

    /// Start serving `task` on `127.0.0.1:<port>` (`0`: any free port) at `site`.
    pub async fn open(
        &self,
        task: BrokeredTask,
        site: ListenerSite,
        port: u16,
    ) -> Result<BrokerLease, BrokerError> {
        let upstream = self
            .upstreams
            .get(&task.key.provider)
            .ok_or_else(|| BrokerError::NotBrokered(task.key.provider.clone()))?;
        let reservation = Arc::new(self.budget.reserve(self.limits.max_connections)?);
        let upstream = Arc::new(upstream.for_task(self.limits.max_connections));
        let site = self.site_override.clone().unwrap_or(site);
        let listener = netns::bind_loopback(site, port).await?;
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
        let listener =
            TcpListener::from_std(listener).map_err(|source| BindError::Bind { port, source })?;
        let closed = self.shutdown.child_token();
        let context = Arc::new(TaskContext {
            task_id: task.task_id,
            key: task.key,
            key_variable: task.key_variable,
            upstream,
            credentials: self.credentials.clone(),
            limits: self.limits.clone(),
            egress: self.egress.clone(),
            closed: closed.clone(),
            reservation,
        });
        tokio::spawn(accept_loop(listener, context));
        Ok(BrokerLease { port, closed })
    }
}

/// Accept the task's connections until its lease closes, at most `max_connections` at a time:
/// a connection's place is free again when it closes or, if it became a CONNECT tunnel, when
/// the tunnel ends. Connections beyond it wait in the listener's backlog.
async fn accept_loop(listener: TcpListener, ctx: Arc<TaskContext>) {
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections));
    loop {
        let permit = tokio::select! {
            _ = ctx.closed.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = ctx.closed.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!(task_id = %ctx.task_id, error = %err, "the credential broker cannot accept a connection");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let slot = ConnectionSlot::new(permit, ctx.reservation.clone());
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_connection(stream, &ctx, slot).await;
        });
    }
}

/// Serve one client connection; each request carries the connection's `slot`, which a CONNECT
/// hands on to its tunnel.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    ctx: &Arc<TaskContext>,
    slot: ConnectionSlot,
) {
    let for_requests = ctx.clone();
    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        let ctx = for_requests.clone();
        request.extensions_mut().insert(slot.clone());
        async move { Ok::<_, Infallible>(proxy::serve(ctx, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.client_timeout)
        .max_header_size(ctx.limits.max_header_bytes)
        .max_buf_size(ctx.limits.max_header_bytes.max(8192) + 8192);
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::select! {
        _ = ctx.closed.cancelled() => {}
        served = connection => if let Err(err) = served {
            tracing::debug!(task_id = %ctx.task_id, error = %err, "a broker connection ended with an error");
        }
    }
}
