//! A scriptable, in-memory [`ContainerEngine`] for fast, deterministic tests of the whole core.
//!
//! The test plays the container's workload: it decides what a container prints ([`FakeEngine::emit`]),
//! when it ends ([`FakeEngine::exit`]) and how it reacts to signals ([`FakeEngine::exit_on_signal`]).
//! Every call made through the trait is appended to a call log ([`FakeEngine::calls`]), and any
//! operation can be made to fail once ([`FakeEngine::fail_next`]) or always
//! ([`FakeEngine::set_unavailable`]).
//!
//! Invariants, mirroring the Docker engine closely enough for the core's logic:
//! - Ids are `fake-<n>`, never reused. An unknown or removed id gives [`EngineError::NotFound`].
//! - Log timestamps handed out by [`FakeEngine::emit`] strictly increase across all containers;
//!   [`FakeEngine::emit_at`] forces one (the clock then continues after it).
//! - `logs(id, since)` replays stored records with `timestamp >= since * 1e9`, then follows live
//!   ones, and ends only once the container is no longer running and every record was delivered
//!   (like `docker logs --follow --timestamps`). [`FakeEngine::interrupt_logs`] makes the log
//!   streams open at that moment fail, as a dropped engine connection would.
//! - `wait` resolves once the container has exited, whether called before or after, by any number
//!   of callers.
//! - The call is recorded before fault injection is applied, so failed attempts show in the log.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::watch;

use super::{
    ContainerEngine, ContainerEvent, ContainerEventKind, ContainerExit, ContainerSpec,
    ContainerState, ContainerSummary, EngineError, EngineResult, ExecInput, ExecOutput,
    ExecSession, LogRecord, LogStream, ResourceLimits, StatsSample,
};

/// The first timestamp the fake clock hands out: 2023-11-14T22:13:20Z, in nanoseconds.
/// The init PID every running fake container reports.
pub const FAKE_INIT_PID: u32 = 4242;
pub const FAKE_EPOCH_NANOS: i128 = 1_700_000_000 * 1_000_000_000;

/// One call made through the [`ContainerEngine`] trait, with the arguments that matter.
#[derive(Debug, Clone, PartialEq)]
pub enum FakeCall {
    Version,
    RemapsUsers,
    ImageExists {
        image: String,
    },
    Create {
        spec: Box<ContainerSpec>,
    },
    Start {
        id: String,
    },
    UpdateLimits {
        id: String,
        limits: ResourceLimits,
    },
    /// Only the length of the spec is logged; the bytes are in [`FakeEngine::launch_spec`].
    SendLaunchSpec {
        id: String,
        len: usize,
    },
    Wait {
        id: String,
    },
    Inspect {
        id: String,
    },
    Kill {
        id: String,
        signal: String,
    },
    Remove {
        id: String,
    },
    Logs {
        id: String,
        since_unix_secs: i64,
    },
    Stats {
        id: String,
    },
    List {
        label_key: String,
        label_value: String,
    },
    Exec {
        id: String,
        user: String,
        argv: Vec<String>,
        tty: bool,
    },
}

/// Names of the trait's operations, for [`FakeEngine::fail_next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    Version,
    RemapsUsers,
    ImageExists,
    Create,
    Start,
    UpdateLimits,
    SendLaunchSpec,
    Wait,
    Inspect,
    Kill,
    Remove,
    Logs,
    Stats,
    List,
    Exec,
}

/// What a scripted `exec` prints and how it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FakeExecResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i64,
}

/// Answers `exec(id, user, argv, tty)` calls; see [`FakeEngine::set_exec_handler`].
pub type ExecHandler = Arc<dyn Fn(&str, &[String]) -> FakeExecResult + Send + Sync>;

/// Which containers an [`FakeEngine::exit_on_signal`] rule applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignalTarget {
    All,
    Container(String),
}

/// The scriptable fake engine. Cloning is cheap and shares the engine.
#[derive(Clone, Default)]
pub struct FakeEngine {
    inner: Arc<Mutex<FakeState>>,
}

struct FakeState {
    next_id: u64,
    /// Last timestamp handed out, in nanoseconds since the epoch.
    clock_nanos: i128,
    clock_step_nanos: i128,
    containers: BTreeMap<String, FakeContainer>,
    calls: Vec<FakeCall>,
    failures: HashMap<FakeOp, VecDeque<EngineError>>,
    unavailable: bool,
    images: BTreeSet<String>,
    version: String,
    /// What `remaps_users` answers ([`FakeEngine::set_remaps_users`]).
    remaps_users: bool,
    stats: StatsSample,
    /// `(target, normalised signal) -> exit code`.
    signal_exits: BTreeMap<(SignalTarget, String), i64>,
    exec_handler: Option<ExecHandler>,
    /// Every container's events, for `events` streams (and the engine going away).
    events: tokio::sync::broadcast::Sender<FakeEvent>,
    /// How long each `start` takes ([`FakeEngine::set_start_delay`]).
    start_delay: Duration,
    /// `start` calls under way now, and the most there ever were at once.
    starts_in_flight: usize,
    peak_concurrent_starts: usize,
}

/// What the fake's event channel carries.
#[derive(Clone)]
enum FakeEvent {
    Container {
        labels: BTreeMap<String, String>,
        event: ContainerEvent,
    },
    /// [`FakeEngine::set_unavailable`]: open event streams fail, as a lost engine's would.
    EngineGone,
}

impl Default for FakeState {
    fn default() -> Self {
        FakeState {
            next_id: 0,
            clock_nanos: FAKE_EPOCH_NANOS,
            clock_step_nanos: 1_000,
            containers: BTreeMap::new(),
            calls: Vec::new(),
            failures: HashMap::new(),
            unavailable: false,
            images: BTreeSet::new(),
            version: "20.10.24+fake".to_string(),
            remaps_users: false,
            stats: StatsSample::default(),
            signal_exits: BTreeMap::new(),
            exec_handler: None,
            events: tokio::sync::broadcast::channel(1024).0,
            start_delay: Duration::ZERO,
            starts_in_flight: 0,
            peak_concurrent_starts: 0,
        }
    }
}

struct FakeContainer {
    spec: ContainerSpec,
    limits: ResourceLimits,
    created_at: SystemTime,
    started_at: Option<SystemTime>,
    finished_at: Option<SystemTime>,
    running: bool,
    exit: Option<ContainerExit>,
    launch_spec: Option<Vec<u8>>,
    records: Vec<LogRecord>,
    /// Bumped by [`FakeEngine::interrupt_logs`]; a log stream from an older generation fails.
    log_generation: u64,
    /// Bumped on every change a waiter or log follower may care about.
    changed: watch::Sender<u64>,
    id: String,
    events: tokio::sync::broadcast::Sender<FakeEvent>,
}

impl FakeContainer {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn state_word(&self) -> &'static str {
        match (self.running, self.exit.is_some()) {
            (true, _) => "running",
            (false, true) => "exited",
            (false, false) => "created",
        }
    }

    fn end(&mut self, exit: ContainerExit) {
        self.running = false;
        self.exit = Some(exit);
        self.finished_at = Some(SystemTime::now());
        self.notify();
        if exit.oom_killed {
            self.emit(ContainerEventKind::Oom);
        }
        self.emit(ContainerEventKind::Die {
            exit_code: Some(exit.exit_code),
        });
    }

    fn emit(&self, kind: ContainerEventKind) {
        let _ = self.events.send(FakeEvent::Container {
            labels: self.spec.labels.clone(),
            event: ContainerEvent {
                id: self.id.clone(),
                kind,
            },
        });
    }
}

fn not_found(id: &str) -> EngineError {
    EngineError::NotFound {
        kind: "container",
        id: id.to_string(),
    }
}

/// `SIGKILL`, `kill`, `KILL` and `9` all name the same signal; this maps them to `KILL`.
fn normalise_signal(signal: &str) -> String {
    let upper = signal.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    match name {
        "9" => "KILL".to_string(),
        "15" => "TERM".to_string(),
        "2" => "INT".to_string(),
        "1" => "HUP".to_string(),
        other => other.to_string(),
    }
}

fn nanos_to_system_time(nanos: i128) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos.max(0)).unwrap_or(u64::MAX))
}

impl FakeState {
    /// Records `call`, then applies fault injection for `op`.
    fn enter(&mut self, op: FakeOp, call: FakeCall) -> EngineResult<()> {
        self.calls.push(call);
        if self.unavailable {
            return Err(EngineError::Unavailable(
                "fake engine set unavailable".to_string(),
            ));
        }
        match self.failures.get_mut(&op).and_then(VecDeque::pop_front) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    fn container(&self, id: &str) -> EngineResult<&FakeContainer> {
        self.containers.get(id).ok_or_else(|| not_found(id))
    }

    fn container_mut(&mut self, id: &str) -> EngineResult<&mut FakeContainer> {
        self.containers.get_mut(id).ok_or_else(|| not_found(id))
    }

    fn tick(&mut self) -> i128 {
        self.clock_nanos += self.clock_step_nanos;
        self.clock_nanos
    }
}

impl FakeEngine {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        // A panicking test thread must not hide the engine from the others.
        self.inner.lock()
    }

    // ---- inspection -------------------------------------------------------------------------

    /// Every call made through the trait so far, oldest first.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.state().calls.clone()
    }

    /// Forget the call log.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// The launch spec written to the container's stdin, if any.
    pub fn launch_spec(&self, id: &str) -> Option<Vec<u8>> {
        self.state()
            .containers
            .get(id)
            .and_then(|c| c.launch_spec.clone())
    }

    /// The spec the container was created from.
    pub fn spec(&self, id: &str) -> Option<ContainerSpec> {
        self.state().containers.get(id).map(|c| c.spec.clone())
    }

    /// The container's current limits (as created, then as updated).
    pub fn limits(&self, id: &str) -> Option<ResourceLimits> {
        self.state().containers.get(id).map(|c| c.limits.clone())
    }

    /// Ids of all containers the fake still holds.
    pub fn container_ids(&self) -> Vec<String> {
        self.state().containers.keys().cloned().collect()
    }

    /// All log records the container has produced so far.
    pub fn records(&self, id: &str) -> Vec<LogRecord> {
        self.state()
            .containers
            .get(id)
            .map(|c| c.records.clone())
            .unwrap_or_default()
    }

    // ---- configuration ----------------------------------------------------------------------

    pub fn set_version(&self, version: &str) {
        self.state().version = version.to_string();
    }

    /// Whether the fake engine claims to run containers in user namespaces of their own.
    pub fn set_remaps_users(&self, remaps: bool) {
        self.state().remaps_users = remaps;
    }

    pub fn add_image(&self, image: &str) {
        self.state().images.insert(image.to_string());
    }

    pub fn remove_image(&self, image: &str) {
        self.state().images.remove(image);
    }

    /// The sample every `stats` call returns.
    pub fn set_stats(&self, sample: StatsSample) {
        self.state().stats = sample;
    }

    /// Make every `start` take `delay` (as a real engine's does), so concurrent starts overlap.
    pub fn set_start_delay(&self, delay: Duration) {
        self.state().start_delay = delay;
    }

    /// The most `start` calls that were ever under way at once.
    pub fn peak_concurrent_starts(&self) -> usize {
        self.state().peak_concurrent_starts
    }

    /// Advance of the fake clock per emitted record (default 1 µs).
    pub fn set_clock_step(&self, step: Duration) {
        self.state().clock_step_nanos = step.as_nanos().max(1) as i128;
    }

    /// Make the next call of `op` fail with `err` (errors queue up, one per call).
    pub fn fail_next(&self, op: FakeOp, err: EngineError) {
        self.state().failures.entry(op).or_default().push_back(err);
    }

    /// While `true`, every call fails with [`EngineError::Unavailable`].
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut engine = self.state();
        engine.unavailable = unavailable;
        if unavailable {
            let _ = engine.events.send(FakeEvent::EngineGone);
        }
    }

    /// When `signal` reaches a matching running container, it exits with `exit_code`.
    /// A container-specific rule wins over an `All` rule. `SIGKILL` always exits with 137.
    pub fn exit_on_signal(&self, target: SignalTarget, signal: &str, exit_code: i64) {
        self.state()
            .signal_exits
            .insert((target, normalise_signal(signal)), exit_code);
    }

    /// Answer `exec` calls with `handler` instead of rejecting them.
    pub fn set_exec_handler(&self, handler: ExecHandler) {
        self.state().exec_handler = Some(handler);
    }

    // ---- the workload -----------------------------------------------------------------------

    /// The running container prints `bytes` on `stream`; returns the record's timestamp.
    pub fn emit(&self, id: &str, stream: LogStream, bytes: impl Into<Bytes>) -> EngineResult<i128> {
        let mut engine = self.state();
        engine.container(id)?;
        let ts = engine.tick();
        push_record(&mut engine, id, stream, bytes.into(), ts)
    }

    /// Like [`FakeEngine::emit`] with a forced timestamp (several records may share one).
    pub fn emit_at(
        &self,
        id: &str,
        stream: LogStream,
        bytes: impl Into<Bytes>,
        timestamp_nanos: i128,
    ) -> EngineResult<i128> {
        let mut engine = self.state();
        engine.clock_nanos = engine.clock_nanos.max(timestamp_nanos);
        push_record(&mut engine, id, stream, bytes.into(), timestamp_nanos)
    }

    /// The running container ends with `exit_code`.
    pub fn exit(&self, id: &str, exit_code: i64, oom_killed: bool) -> EngineResult<()> {
        let mut engine = self.state();
        let c = engine.container_mut(id)?;
        if !c.running {
            return Err(EngineError::NotRunning(id.to_string()));
        }
        c.end(ContainerExit {
            exit_code,
            oom_killed,
        });
        Ok(())
    }

    /// Log streams of `id` that are open now fail with [`EngineError::Unavailable`] after
    /// delivering what they already had in hand; later `logs` calls work normally.
    pub fn interrupt_logs(&self, id: &str) -> EngineResult<()> {
        let mut engine = self.state();
        let c = engine.container_mut(id)?;
        c.log_generation += 1;
        c.notify();
        Ok(())
    }
}

fn push_record(
    state: &mut FakeState,
    id: &str,
    stream: LogStream,
    bytes: Bytes,
    ts: i128,
) -> EngineResult<i128> {
    let c = state.container_mut(id)?;
    if !c.running {
        return Err(EngineError::NotRunning(id.to_string()));
    }
    c.records.push(LogRecord {
        stream,
        timestamp_nanos: ts,
        bytes,
    });
    c.notify();
    Ok(ts)
}

/// Where one `logs` follower has got to.
struct LogFollower {
    fake: FakeEngine,
    id: String,
    since_nanos: i128,
    next_index: usize,
    generation: u64,
    done: bool,
}

impl LogFollower {
    async fn next(mut self) -> Option<(EngineResult<LogRecord>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let fake = self.fake.clone();
            let mut changed = {
                let engine = fake.state();
                let Some(c) = engine.containers.get(&self.id) else {
                    self.done = true;
                    return Some((Err(not_found(&self.id)), self));
                };
                while let Some(record) = c.records.get(self.next_index) {
                    self.next_index += 1;
                    if record.timestamp_nanos >= self.since_nanos {
                        return Some((Ok(record.clone()), self));
                    }
                }
                if c.log_generation != self.generation {
                    self.done = true;
                    let err = EngineError::Unavailable("log stream interrupted".to_string());
                    return Some((Err(err), self));
                }
                if !c.running {
                    return None;
                }
                c.changed.subscribe()
            };
            // The receiver was created under the lock, so any change since then wakes it; an error
            // means the container was removed, which the next loop reports.
            let _ = changed.changed().await;
        }
    }
}

#[async_trait]
impl ContainerEngine for FakeEngine {
    async fn version(&self) -> EngineResult<String> {
        let mut engine = self.state();
        engine.enter(FakeOp::Version, FakeCall::Version)?;
        Ok(engine.version.clone())
    }

    async fn remaps_users(&self) -> EngineResult<bool> {
        let mut engine = self.state();
        engine.enter(FakeOp::RemapsUsers, FakeCall::RemapsUsers)?;
        Ok(engine.remaps_users)
    }

    async fn image_id(&self, image: &str) -> EngineResult<Option<String>> {
        let mut engine = self.state();
        engine.enter(
            FakeOp::ImageExists,
            FakeCall::ImageExists {
                image: image.to_string(),
            },
        )?;
        Ok(engine
            .images
            .contains(image)
            .then(|| format!("sha256:fake-{image}")))
    }

    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        let mut engine = self.state();
        engine.enter(
            FakeOp::Create,
            FakeCall::Create {
                spec: Box::new(spec.clone()),
            },
        )?;
        if !engine.images.contains(&spec.image) {
            // Docker answers 404 "No such image" for a create with a missing image.
            return Err(EngineError::NotFound {
                kind: "image",
                id: spec.image.clone(),
            });
        }
        if engine.containers.values().any(|c| c.spec.name == spec.name) {
            return Err(EngineError::Rejected(format!(
                "container name {} already in use",
                spec.name
            )));
        }
        engine.next_id += 1;
        let id = format!("fake-{}", engine.next_id);
        let container = FakeContainer {
            spec: spec.clone(),
            limits: spec.limits.clone(),
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            running: false,
            exit: None,
            launch_spec: None,
            records: Vec::new(),
            log_generation: 0,
            changed: watch::channel(0).0,
            id: id.clone(),
            events: engine.events.clone(),
        };
        engine.containers.insert(id.clone(), container);
        Ok(id)
    }

    async fn start(&self, id: &str) -> EngineResult<()> {
        let delay = {
            let mut engine = self.state();
            engine.starts_in_flight += 1;
            engine.peak_concurrent_starts =
                engine.peak_concurrent_starts.max(engine.starts_in_flight);
            engine.start_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut engine = self.state();
        engine.starts_in_flight -= 1;
        engine.enter(FakeOp::Start, FakeCall::Start { id: id.to_string() })?;
        let c = engine.container_mut(id)?;
        if c.exit.is_some() {
            return Err(EngineError::Rejected(format!(
                "container {id} has already run (one-shot)"
            )));
        }
        if !c.running {
            c.running = true;
            c.started_at = Some(SystemTime::now());
            c.notify();
            c.emit(ContainerEventKind::Start);
        }
        Ok(())
    }

    async fn update_limits(
        &self,
        id: &str,
        _cgroup_pid: Option<u32>,
        limits: &ResourceLimits,
    ) -> EngineResult<()> {
        let mut engine = self.state();
        let call = FakeCall::UpdateLimits {
            id: id.to_string(),
            limits: limits.clone(),
        };
        engine.enter(FakeOp::UpdateLimits, call)?;
        engine.container_mut(id)?.limits = limits.clone();
        Ok(())
    }

    async fn send_launch_spec(&self, id: &str, spec: &[u8]) -> EngineResult<()> {
        let mut engine = self.state();
        let call = FakeCall::SendLaunchSpec {
            id: id.to_string(),
            len: spec.len(),
        };
        engine.enter(FakeOp::SendLaunchSpec, call)?;
        let c = engine.container_mut(id)?;
        if !c.running {
            return Err(EngineError::NotRunning(id.to_string()));
        }
        if c.launch_spec.is_some() {
            return Err(EngineError::Rejected(format!(
                "stdin of container {id} is already closed"
            )));
        }
        c.launch_spec = Some(spec.to_vec());
        Ok(())
    }

    async fn wait(&self, id: &str) -> EngineResult<ContainerExit> {
        let mut changed = {
            let mut engine = self.state();
            engine.enter(FakeOp::Wait, FakeCall::Wait { id: id.to_string() })?;
            engine.container(id)?.changed.subscribe()
        };
        loop {
            {
                let engine = self.state();
                if let Some(exit) = engine.container(id)?.exit {
                    return Ok(exit);
                }
                changed.borrow_and_update();
            }
            if changed.changed().await.is_err() {
                return Err(not_found(id));
            }
        }
    }

    async fn inspect(&self, id: &str) -> EngineResult<ContainerState> {
        let mut engine = self.state();
        engine.enter(FakeOp::Inspect, FakeCall::Inspect { id: id.to_string() })?;
        let c = engine.container(id)?;
        Ok(ContainerState {
            id: id.to_string(),
            running: c.running,
            exit: c.exit,
            started_at: c.started_at,
            finished_at: c.finished_at,
            labels: c.spec.labels.clone(),
            cgroup_pid: c.running.then_some(FAKE_INIT_PID),
            init_pid: c.running.then_some(FAKE_INIT_PID),
        })
    }

    async fn kill(&self, id: &str, signal: &str) -> EngineResult<()> {
        let mut engine = self.state();
        engine.enter(
            FakeOp::Kill,
            FakeCall::Kill {
                id: id.to_string(),
                signal: signal.to_string(),
            },
        )?;
        let name = normalise_signal(signal);
        let rule = |target: SignalTarget| engine.signal_exits.get(&(target, name.clone())).copied();
        let code = if name == "KILL" {
            Some(137)
        } else {
            rule(SignalTarget::Container(id.to_string())).or_else(|| rule(SignalTarget::All))
        };
        let c = engine.container_mut(id)?;
        if !c.running {
            return Err(EngineError::NotRunning(id.to_string()));
        }
        if let Some(exit_code) = code {
            c.end(ContainerExit {
                exit_code,
                oom_killed: false,
            });
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> EngineResult<()> {
        let mut engine = self.state();
        engine.enter(FakeOp::Remove, FakeCall::Remove { id: id.to_string() })?;
        let mut c = engine.containers.remove(id).ok_or_else(|| not_found(id))?;
        if c.running {
            c.end(ContainerExit {
                exit_code: 137,
                oom_killed: false,
            });
        }
        c.emit(ContainerEventKind::Destroy);
        // Dropping `c` drops the watch sender: waiters and followers wake and see NotFound.
        Ok(())
    }

    fn logs(&self, id: &str, since_unix_secs: i64) -> BoxStream<'static, EngineResult<LogRecord>> {
        let generation = {
            let mut engine = self.state();
            let call = FakeCall::Logs {
                id: id.to_string(),
                since_unix_secs,
            };
            if let Err(err) = engine.enter(FakeOp::Logs, call) {
                return futures::stream::once(async move { Err(err) }).boxed();
            }
            match engine.container(id) {
                Ok(c) => c.log_generation,
                Err(err) => return futures::stream::once(async move { Err(err) }).boxed(),
            }
        };
        let follower = LogFollower {
            fake: self.clone(),
            id: id.to_string(),
            since_nanos: i128::from(since_unix_secs) * 1_000_000_000,
            next_index: 0,
            generation,
            done: false,
        };
        futures::stream::unfold(follower, LogFollower::next).boxed()
    }

    async fn stats(&self, id: &str) -> EngineResult<StatsSample> {
        let mut engine = self.state();
        engine.enter(FakeOp::Stats, FakeCall::Stats { id: id.to_string() })?;
        engine.container(id)?;
        let mut sample = engine.stats.clone();
        sample
            .read_at
            .get_or_insert_with(|| nanos_to_system_time(engine.clock_nanos));
        Ok(sample)
    }

    fn still_running(&self, id: &str, _init_pid: u32) -> Option<bool> {
        Some(self.state().containers.get(id).is_some_and(|c| c.running))
    }

    fn events(
        &self,
        label_key: &str,
        label_value: &str,
    ) -> BoxStream<'static, EngineResult<ContainerEvent>> {
        let engine = self.state();
        if engine.unavailable {
            let err = EngineError::Unavailable("fake engine unavailable".into());
            return futures::stream::once(async move { Err(err) }).boxed();
        }
        let (key, value) = (label_key.to_string(), label_value.to_string());
        tokio_stream::wrappers::BroadcastStream::new(engine.events.subscribe())
            .filter_map(move |item| {
                let wanted = match item {
                    Ok(FakeEvent::Container { labels, event }) => {
                        (labels.get(&key) == Some(&value)).then_some(Ok(event))
                    }
                    Ok(FakeEvent::EngineGone) => Some(Err(EngineError::Unavailable(
                        "fake engine went away".into(),
                    ))),
                    // A lagging test reader: skip, like a reconnecting client would.
                    Err(_) => None,
                };
                futures::future::ready(wanted)
            })
            .scan(false, |failed, item| {
                // The stream ends after its first error, as a dropped connection's would.
                let next = (!*failed).then(|| {
                    *failed = item.is_err();
                    item
                });
                futures::future::ready(next)
            })
            .boxed()
    }

    async fn list(
        &self,
        label_key: &str,
        label_value: &str,
    ) -> EngineResult<Vec<ContainerSummary>> {
        let mut engine = self.state();
        let call = FakeCall::List {
            label_key: label_key.to_string(),
            label_value: label_value.to_string(),
        };
        engine.enter(FakeOp::List, call)?;
        Ok(engine
            .containers
            .iter()
            .filter(|(_, c)| c.spec.labels.get(label_key).map(String::as_str) == Some(label_value))
            .map(|(id, c)| ContainerSummary {
                id: id.clone(),
                name: c.spec.name.clone(),
                image: c.spec.image.clone(),
                labels: c.spec.labels.clone(),
                state: c.state_word().to_string(),
                created_at: c.created_at,
            })
            .collect())
    }

    async fn exec(
        &self,
        id: &str,
        user: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> EngineResult<ExecSession> {
        let handler = {
            let mut engine = self.state();
            let call = FakeCall::Exec {
                id: id.to_string(),
                user: user.to_string(),
                argv: argv.clone(),
                tty,
            };
            engine.enter(FakeOp::Exec, call)?;
            if !engine.container(id)?.running {
                return Err(EngineError::NotRunning(id.to_string()));
            }
            engine.exec_handler.clone()
        };
        let Some(handler) = handler else {
            return Err(EngineError::Rejected(
                "exec not supported by the fake".to_string(),
            ));
        };
        let result = handler(id, &argv);
        let mut output = Vec::new();
        if !result.stdout.is_empty() {
            output.push(Ok(ExecOutput::Stdout(Bytes::from(result.stdout))));
        }
        if !result.stderr.is_empty() {
            output.push(Ok(ExecOutput::Stderr(Bytes::from(result.stderr))));
        }
        // Input is accepted and discarded; the receiver lives as long as the output stream.
        let (input, input_rx) = tokio::sync::mpsc::channel::<ExecInput>(16);
        let output = futures::stream::iter(output).map(move |item| {
            let _keep_input_open = &input_rx;
            item
        });
        let exit_code = result.exit_code;
        Ok(ExecSession {
            output: output.boxed(),
            input,
            exit_code: Box::pin(async move { Ok(exit_code) }),
        })
    }
}

#[cfg(test)]
mod tests;
