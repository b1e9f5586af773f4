//! Following the container engine: its event stream for this plugin's containers, and whether
//! it is there at all.
//!
//! One background loop per plugin process subscribes to the engine's events for the
//! containers carrying this plugin's `data_dir` label and passes on what the rest needs as
//! [`EngineNews`]: a container died or was removed (the pool drops an idle one at once), the
//! engine went away, the engine is back (the pool resyncs with what the engine has). It also
//! keeps a short history of outages, so a task whose container died while the engine stopped
//! can say so ([`EngineWatch::interrupted`]).
//!
//! Guarantees:
//! - When the stream breaks, the loop reconnects with backoff (200 ms doubling to 5 s) and
//!   announces [`EngineNews::Back`] once the engine answers again; events missed meanwhile are
//!   made up for by the receivers' resync, never replayed.
//! - The loop ends with the plugin's shutdown token; nothing else stops it.
//! - News is broadcast: a slow receiver loses old news (it is told, and resyncs), never blocks
//!   the loop.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::engine::{ContainerEngine, ContainerEventKind};

/// Reconnect backoff bounds.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Outages remembered (the oldest are forgotten).
const OUTAGES_KEPT: usize = 16;

/// What happened in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineNews {
    /// A container of this plugin stopped.
    Died { id: String },
    /// A container of this plugin was removed.
    Destroyed { id: String },
    /// The engine stopped answering (its event stream broke).
    Lost,
    /// The engine answers again after being lost.
    Back,
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    began: SystemTime,
    ended: Option<SystemTime>,
}

/// The engine as this plugin process sees it.
pub struct EngineWatch {
    news: broadcast::Sender<EngineNews>,
    outages: Mutex<VecDeque<Outage>>,
}

impl EngineWatch {
    /// Start following containers with label `key=value` until `shutdown`.
    pub fn spawn(
        engine: Arc<dyn ContainerEngine>,
        label_key: &str,
        label_value: &str,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        let watch = Arc::new(EngineWatch::new());
        let (key, value) = (label_key.to_string(), label_value.to_string());
        tokio::spawn(watch.clone().follow(engine, key, value, shutdown));
        watch
    }

    fn new() -> Self {
        EngineWatch {
            news: broadcast::channel(1024).0,
            outages: Mutex::new(VecDeque::new()),
        }
    }

    /// News from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineNews> {
        self.news.subscribe()
    }

    /// Whether the engine is away now.
    #[cfg(test)]
    fn is_lost(&self) -> bool {
        self.outages().back().is_some_and(|o| o.ended.is_none())
    }

    /// Whether an outage overlapped `from..=to` (one still under way counts).
    pub fn lost_between(&self, from: SystemTime, to: SystemTime) -> bool {
        self.outages()
            .iter()
            .any(|o| o.began <= to && o.ended.is_none_or(|ended| ended >= from))
    }

    /// Whether the engine was lost around `finished_at` — from `before` earlier (the engine
    /// stops containers, then its API) — or goes away within `grace` from now.
    pub async fn interrupted(
        &self,
        finished_at: SystemTime,
        before: Duration,
        grace: Duration,
    ) -> bool {
        let mut news = self.subscribe();
        let from = finished_at.checked_sub(before).unwrap_or(finished_at);
        if self.lost_between(from, SystemTime::now()) {
            return true;
        }
        let lost = async {
            loop {
                match news.recv().await {
                    Ok(EngineNews::Lost) => return true,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::time::timeout(grace, lost).await.unwrap_or(false)
    }

    fn outages(&self) -> parking_lot::MutexGuard<'_, VecDeque<Outage>> {
        self.outages.lock()
    }

    fn mark_lost(&self) {
        let mut outages = self.outages();
        if outages.back().is_some_and(|o| o.ended.is_none()) {
            return;
        }
        if outages.len() == OUTAGES_KEPT {
            outages.pop_front();
        }
        outages.push_back(Outage {
            began: SystemTime::now(),
            ended: None,
        });
        drop(outages);
        tracing::warn!("the container engine went away; following it again when it is back");
        let _ = self.news.send(EngineNews::Lost);
    }

    fn mark_reachable(&self) {
        let mut outages = self.outages();
        let Some(open) = outages.back_mut().filter(|o| o.ended.is_none()) else {
            return;
        };
        open.ended = Some(SystemTime::now());
        drop(outages);
        tracing::info!("the container engine is back");
        let _ = self.news.send(EngineNews::Back);
    }

    async fn follow(
        self: Arc<Self>,
        engine: Arc<dyn ContainerEngine>,
        key: String,
        value: String,
        shutdown: CancellationToken,
    ) {
        let mut backoff = RETRY_MIN;
        loop {
            // Subscribe first, then check the engine answers: an event between the two is in
            // the stream, and anything before it is for the receivers' resync.
            let mut events = engine.events(&key, &value);
            let reachable = tokio::select! {
                _ = shutdown.cancelled() => return,
                version = engine.version() => version.is_ok(),
            };
            if reachable {
                self.mark_reachable();
                backoff = RETRY_MIN;
                loop {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        item = events.next() => item,
                    };
                    match item {
                        Some(Ok(event)) => {
                            let news = match event.kind {
                                ContainerEventKind::Die { .. } => EngineNews::Died { id: event.id },
                                ContainerEventKind::Destroy => {
                                    EngineNews::Destroyed { id: event.id }
                                }
                                ContainerEventKind::Start | ContainerEventKind::Oom => continue,
                            };
                            let _ = self.news.send(news);
                        }
                        Some(Err(err)) => {
                            tracing::debug!(error = %err, "the engine's event stream broke");
                            break;
                        }
                        None => break,
                    }
                }
            }
            self.mark_lost();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(RETRY_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::FakeEngine;

    #[tokio::test]
    async fn deaths_outages_and_returns_are_news() {
        let fake = FakeEngine::new();
        fake.add_image("img");
        let shutdown = CancellationToken::new();
        let watch = EngineWatch::spawn(Arc::new(fake.clone()), "k", "v", shutdown.clone());
        let mut news = watch.subscribe();
        // Let the loop subscribe.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let spec = crate::engine::ContainerSpec {
            name: "c".into(),
            image: "img".into(),
            user: "1000:1000".into(),
            env: vec![],
            labels: [("k".to_string(), "v".to_string())].into(),
            limits: Default::default(),
            mounts: vec![],
            security: Default::default(),
            work_dir: None,
            network_mode: None,
            log_max_size: "1m".into(),
            log_max_files: 1,
        };
        let id = fake.create(&spec).await.unwrap();
        fake.start(&id).await.unwrap();
        fake.exit(&id, 143, false).unwrap();
        assert_eq!(
            news.recv().await.unwrap(),
            EngineNews::Died { id: id.clone() }
        );

        let before = SystemTime::now();
        fake.set_unavailable(true);
        assert_eq!(news.recv().await.unwrap(), EngineNews::Lost);
        assert!(watch.is_lost());
        fake.set_unavailable(false);
        let back = tokio::time::timeout(Duration::from_secs(10), news.recv()).await;
        assert_eq!(back.unwrap().unwrap(), EngineNews::Back);
        assert!(!watch.is_lost());
        assert!(watch.lost_between(before, SystemTime::now()));
        let later = SystemTime::now() + Duration::from_secs(60);
        assert!(!watch.lost_between(later, later));
        // A container that died just before the engine went away counts as its victim.
        assert!(
            watch
                .interrupted(before, Duration::from_secs(1), Duration::ZERO)
                .await
        );
        shutdown.cancel();
    }
}
