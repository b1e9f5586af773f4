//! The pool growing under a burst of claims and shrinking back, over the fake engine: the
//! refiller, the demand estimate, `max`, the memory check and the claim path together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use tokio_util::sync::CancellationToken;

use super::{MeminfoSource, WarmPool};
use crate::config::{PluginConfig, PoolConfig};
use crate::engine::fake::{FakeCall, FakeEngine};
use crate::engine::*;
use crate::pool_port::{PoolStatus, WarmPoolPort};

pub(super) const PROVIDER: &str = "openai";
pub(super) const GIB_KB: u64 = 1 << 20;

pub(super) struct Harness {
    pub(super) pool: Arc<WarmPool>,
    /// Creations go through it: closed, they hang until it opens.
    pub(super) engine: Arc<GatedCreates>,
    pub(super) data_dir: tempfile::TempDir,
    pub(super) shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A pool of `openai` alone over `fake` (behind a gate, open), its memory read from
/// `available_kb`.
fn harness_over(
    fake: Arc<FakeEngine>,
    settings: PoolConfig,
    available_kb: Arc<AtomicU64>,
) -> Harness {
    harness_behind(
        GatedCreates::open_before_create(fake),
        settings,
        available_kb,
    )
}

/// The plugin config of a pool of `openai` alone, with `settings`, on `data_dir`.
pub(super) fn pool_config(data_dir: &std::path::Path, settings: PoolConfig) -> PluginConfig {
    let mut config = PluginConfig {
        data_dir: data_dir.to_path_buf(),
        ..PluginConfig::default()
    };
    for name in config.providers.keys() {
        let off = PoolConfig {
            target: 0,
            ..PoolConfig::default()
        };
        config.pools.insert(name.clone(), off);
    }
    config.pools.insert(PROVIDER.to_string(), settings);
    config
}

/// A pool of `openai` alone whose creations go through `engine`, its refillers started.
pub(super) fn harness_behind(
    engine: GatedCreates,
    settings: PoolConfig,
    available_kb: Arc<AtomicU64>,
) -> Harness {
    let engine = Arc::new(engine);
    let data_dir = tempfile::tempdir().unwrap();
    let config = pool_config(data_dir.path(), settings);
    let meminfo: MeminfoSource = Arc::new(move || {
        Ok(format!(
            "MemTotal: {} kB\nMemAvailable: {} kB\n",
            64 * GIB_KB,
            available_kb.load(Ordering::SeqCst)
        ))
    });
    let pool = WarmPool::with_meminfo(engine.clone(), &config, "node-1", meminfo);
    // Claims give creations held at the gate a moment, not the default seconds.
    pool.set_creation_wait(Duration::from_millis(100));
    let shutdown = CancellationToken::new();
    pool.spawn_refillers(&shutdown);
    Harness {
        pool,
        engine,
        data_dir,
        shutdown,
    }
}

/// Permits of an open gate (far more than any test creates).
const OPEN: usize = 4096;

pub(super) fn fake_with_image() -> Arc<FakeEngine> {
    let fake = Arc::new(FakeEngine::new());
    fake.add_image(&PluginConfig::default().providers[PROVIDER].image);
    fake
}

pub(super) fn settings(target: u32, max: u32, scale_down_after: Duration) -> PoolConfig {
    PoolConfig {
        target,
        max,
        scale_down_after,
        ..PoolConfig::default()
    }
}

pub(super) fn status(pool: &WarmPool) -> PoolStatus {
    pool.status()[PROVIDER].clone()
}

/// Wait (bounded) until `done` holds for the pool's status, checking on every look that the
/// pool never holds more than `max` containers of its own making beside the tasks.
pub(super) async fn until(
    pool: &WarmPool,
    what: &str,
    done: impl Fn(&PoolStatus) -> bool,
) -> PoolStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = status(pool);
        assert!(
            now.idle + now.creating <= now.max as usize,
            "over max: {now:?}"
        );
        if done(&now) {
            return now;
        }
        assert!(Instant::now() < deadline, "never {what}: {now:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `count` claims at once, as StartTasks would make them (a cold start counts as a task too);
/// returns how many were warm. Every claim must answer at once, warm or cold.
async fn burst(pool: &WarmPool, count: usize) -> usize {
    let mut warm = 0;
    for i in 0..count {
        let claimed = tokio::time::timeout(
            Duration::from_secs(5),
            pool.claim(PROVIDER, None, &format!("t{i}")),
        )
        .await
        .expect("a claim never waits for the pool")
        .expect("a claim under when_empty = cold never fails");
        match claimed {
            Some(_) => warm += 1,
            None => pool.task_started(PROVIDER),
        }
    }
    warm
}

fn release(pool: &WarmPool, count: usize) {
    for _ in 0..count {
        pool.task_released(PROVIDER);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_grows_the_pool_and_the_next_one_is_served_warm() {
    // The burst is remembered long past the test, so however slow the machine, the pool grows.
    let h = harness_over(
        fake_with_image(),
        settings(2, 16, Duration::from_secs(300)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    let before = until(&h.pool, "filled to target", |s| s.idle == 2).await;
    assert_eq!(before.desired, 2, "no demand yet: the target");

    // The burst comes faster than the pool refills: creations hang while it runs (with an open
    // gate, a fast refill could keep up with some of the claims, and the pool would never run
    // dry for them, so how much of the burst counts would depend on the scheduler).
    h.engine.close();
    let first_warm = burst(&h.pool, 8).await;
    assert_eq!(
        first_warm, 2,
        "the two idle containers served the burst first"
    );
    h.engine.open();
    // The burst asks for 8, and max 16 leaves room for 8 beside its 8 tasks.
    let grown = until(&h.pool, "grown to the burst", |s| s.idle == 8).await;
    assert_eq!(grown.desired, 8);
    assert_eq!(grown.growth_limit, None);
    release(&h.pool, 8);

    // The next burst of the same size is served warm entirely (within 10 s of the first, it
    // counts as part of the same burst, so the pool may grow further, up to max).
    assert_eq!(
        burst(&h.pool, 8).await,
        8,
        "a second burst finds a warm pool"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_claims_for_scale_down_after_the_pool_shrinks_back_to_the_target() {
    let fake = fake_with_image();
    let h = harness_over(
        fake.clone(),
        settings(2, 16, Duration::from_secs(2)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    until(&h.pool, "filled to target", |s| s.idle == 2).await;
    h.engine.close();
    let first_warm = burst(&h.pool, 8).await;
    h.engine.open();
    release(&h.pool, 8);
    // The pool grows while the burst is remembered (how far depends on the machine's speed),
    // then, 2 s without claims later, goes back to the target: the extra containers removed (the
    // claimed ones stay: this test never destroys its tasks).
    let shrunk = until(&h.pool, "shrunk back", |s| {
        s.idle == 2 && s.desired == 2 && s.creating == 0
    })
    .await;
    assert_eq!(shrunk.in_use, 0);
    let removed = || {
        fake.calls()
            .iter()
            .filter(|c| matches!(c, FakeCall::Remove { .. }))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.container_ids().len() != 2 + first_warm {
        assert!(
            Instant::now() < deadline,
            "removed containers left in the engine: {:?}",
            fake.container_ids()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        removed() >= 1,
        "the pool grew and shrank back: it removed what it grew"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_stops_at_max_and_says_so() {
    let h = harness_over(
        fake_with_image(),
        settings(2, 6, Duration::from_secs(300)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    until(&h.pool, "filled to target", |s| s.idle == 2).await;
    h.engine.close();
    burst(&h.pool, 10).await;
    h.engine.open();
    release(&h.pool, 10);
    let held = until(&h.pool, "grown to max", |s| s.idle == 6).await;
    assert_eq!((held.desired, held.max), (6, 6));
    let limit = held.growth_limit.expect("max holds the pool back");
    assert!(limit.contains("10 idle containers wanted"), "{limit}");
    assert!(limit.contains("max = 6"), "{limit}");
    assert!(limit.contains("pool \"openai\" { max }"), "{limit}");
    // It stays there: no pass adds a seventh.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&h.pool).idle, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_memory_holds_the_pool_back_and_claims_go_cold() {
    // 600 MiB available: less than idle_memory (256 MiB) plus the 512 MiB kept free.
    let available = Arc::new(AtomicU64::new(600 << 10));
    let h = harness_over(
        fake_with_image(),
        settings(2, 16, Duration::from_secs(300)),
        available.clone(),
    );
    let held = until(&h.pool, "held back by memory", |s| s.growth_limit.is_some()).await;
    assert_eq!((held.idle, held.creating), (0, 0));
    let limit = held.growth_limit.unwrap();
    for needed in [
        "held by memory",
        "600 MiB available (MemAvailable)",
        "idle_memory of 256 MiB",
        "512 MiB kept free",
    ] {
        assert!(limit.contains(needed), "{limit}");
    }
    assert_eq!(burst(&h.pool, 3).await, 0, "cold starts, none refused");
    release(&h.pool, 3);
    // Memory frees up: the pool fills and the attribute goes.
    available.store(64 * GIB_KB, Ordering::SeqCst);
    let filled = until(&h.pool, "filled once memory freed", |s| {
        s.idle == 3 && s.growth_limit.is_none()
    })
    .await;
    assert_eq!(filled.desired, 3, "the burst of three is remembered");
}

/// The fake engine whose `create` waits while the test keeps the gate closed: creations in
/// flight for as long as the test likes.
pub(super) struct GatedCreates {
    pub(super) inner: Arc<FakeEngine>,
    gate: tokio::sync::Semaphore,
    /// Where a creation waits: before the engine makes the container (the default), or after,
    /// as a create call whose answer is slow to come back.
    at: GateAt,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum GateAt {
    BeforeCreate,
    AfterCreate,
}

impl GatedCreates {
    fn open_before_create(inner: Arc<FakeEngine>) -> Self {
        GatedCreates {
            inner,
            gate: tokio::sync::Semaphore::new(OPEN),
            at: GateAt::BeforeCreate,
        }
    }

    /// A closed gate that holds each creation at `at`.
    pub(super) fn closed(inner: Arc<FakeEngine>, at: GateAt) -> Self {
        GatedCreates {
            inner,
            gate: tokio::sync::Semaphore::new(0),
            at,
        }
    }

    pub(super) fn close(&self) {
        self.gate.forget_permits(usize::MAX);
    }

    pub(super) fn open(&self) {
        self.gate.add_permits(OPEN);
    }

    async fn pass(&self) {
        // Each creation uses up its permit, so closing the gate holds every later one.
        if let Ok(permit) = self.gate.acquire().await {
            permit.forget();
        }
    }
}

#[async_trait]
impl ContainerEngine for GatedCreates {
    async fn version(&self) -> EngineResult<String> {
        self.inner.version().await
    }
    async fn remaps_users(&self) -> EngineResult<bool> {
        self.inner.remaps_users().await
    }
    async fn image_id(&self, image: &str) -> EngineResult<Option<String>> {
        self.inner.image_id(image).await
    }
    async fn create(&self, spec: &ContainerSpec) -> EngineResult<String> {
        if self.at == GateAt::BeforeCreate {
            self.pass().await;
        }
        let created = self.inner.create(spec).await;
        if self.at == GateAt::AfterCreate {
            self.pass().await;
        }
        created
    }
    async fn start(&self, id: &str) -> EngineResult<()> {
        self.inner.start(id).await
    }
    async fn update_limits(
        &self,
        id: &str,
        cgroup_pid: Option<u32>,
        limits: &ResourceLimits,
    ) -> EngineResult<()> {
        self.inner.update_limits(id, cgroup_pid, limits).await
    }
    async fn send_launch_spec(&self, id: &str, spec: &[u8]) -> EngineResult<()> {
        self.inner.send_launch_spec(id, spec).await
    }
    async fn wait(&self, id: &str) -> EngineResult<ContainerExit> {
        self.inner.wait(id).await
    }
    async fn inspect(&self, id: &str) -> EngineResult<ContainerState> {
        self.inner.inspect(id).await
    }
    fn still_running(&self, id: &str, init_pid: u32) -> Option<bool> {
        self.inner.still_running(id, init_pid)
    }
    async fn kill(&self, id: &str, signal: &str) -> EngineResult<()> {
        self.inner.kill(id, signal).await
    }
    async fn remove(&self, id: &str) -> EngineResult<()> {
        self.inner.remove(id).await
    }
    fn logs(&self, id: &str, since: i64) -> BoxStream<'static, EngineResult<LogRecord>> {
        self.inner.logs(id, since)
    }
    async fn stats(&self, id: &str) -> EngineResult<StatsSample> {
        self.inner.stats(id).await
    }
    fn events(&self, key: &str, value: &str) -> BoxStream<'static, EngineResult<ContainerEvent>> {
        self.inner.events(key, value)
    }
    async fn list(&self, key: &str, value: &str) -> EngineResult<Vec<ContainerSummary>> {
        self.inner.list(key, value).await
    }
    async fn exec(
        &self,
        id: &str,
        user: &str,
        argv: Vec<String>,
        tty: bool,
    ) -> EngineResult<ExecSession> {
        self.inner.exec(id, user, argv, tty).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_never_fail_and_wait_for_growth_at_most_the_creation_wait() {
    let h = harness_over(
        fake_with_image(),
        settings(2, 32, Duration::from_secs(300)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    until(&h.pool, "filled to target", |s| s.idle == 2).await;
    // From here on every creation hangs until the gate opens.
    h.engine.close();
    let warm = burst(&h.pool, 12).await;
    assert_eq!(warm, 2);
    // max 32 leaves room beside 12 tasks (a refiller pass that ran in the middle of the burst
    // saw less of it: wait for the one after its last claim).
    until(&h.pool, "creating towards 12", |s| {
        s.creating == 2 && s.desired == 12
    })
    .await;
    // More claims while the growth is stuck: each answers (cold) once the creation wait is up.
    assert_eq!(burst(&h.pool, 5).await, 0);
    h.engine.open();
    release(&h.pool, 17);
    until(&h.pool, "grown after the gate opened", |s| s.idle == 17).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_finds_the_pool_empty_takes_a_creation_under_way() {
    let h = harness_over(
        fake_with_image(),
        settings(2, 32, Duration::from_secs(300)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    h.pool.set_creation_wait(Duration::from_secs(30));
    until(&h.pool, "filled to target", |s| s.idle == 2).await;
    h.engine.close();
    assert_eq!(burst(&h.pool, 2).await, 2);
    until(&h.pool, "refilling", |s| s.creating == 2).await;
    // The third claim finds none idle and waits for one of the two creations under way.
    let pool = h.pool.clone();
    let third = tokio::spawn(async move { pool.claim(PROVIDER, None, "third").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!third.is_finished(), "it waits instead of starting cold");
    h.engine.open();
    let claimed = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .expect("answers once the creation is done")
        .unwrap()
        .unwrap();
    assert!(
        claimed.is_some(),
        "the container under way, not a cold start"
    );
    assert_eq!(status(&h.pool).in_use, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refills_hold_back_while_cold_starts_make_their_containers() {
    let h = harness_over(
        fake_with_image(),
        settings(2, 32, Duration::from_secs(300)),
        Arc::new(AtomicU64::new(64 * GIB_KB)),
    );
    until(&h.pool, "filled to target", |s| s.idle == 2).await;
    let cold = h.pool.cold_start(PROVIDER);
    assert_eq!(burst(&h.pool, 2).await, 2);
    // While the cold start is under way, the two claims start no refill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = status(&h.pool);
    assert_eq!((held.idle, held.creating), (0, 0), "{held:?}");
    drop(cold);
    until(&h.pool, "refilled once the cold start ended", |s| {
        s.idle >= 2
    })
    .await;
}
