//! One plugin process as the benchmark drives it: spawned and configured the way Nomad does it
//! (handshake, SetConfig), every provider's API set to the stand-in, one pool setting for all
//! three providers; tasks started, waited for and destroyed; their TaskEvents kept to tell warm
//! starts from cold ones.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::real::Plugin;
use crate::support::upstream::StandIn;
use crate::support::{cty_object, encode};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use polydev::pb::hashicorp::nomad::plugins::drivers::proto::{
    self as nomad, driver_client::DriverClient,
};
use rmpv::Value;
use tonic::transport::Channel;

use super::cli::CLIS;

const WARM_EVENT: &str = "claimed warm container";
const COLD_EVENT: &str = "pool empty";

/// The pool of every provider in a session.
#[derive(Clone, Copy)]
pub struct PoolSetting {
    pub target: u32,
    pub max: u32,
}

pub struct Session {
    plugin: Plugin,
    driver: DriverClient<Channel>,
    pub data_dir: PathBuf,
    events: Arc<Mutex<BTreeMap<String, Vec<String>>>>,
}

impl Session {
    /// A plugin whose providers use `api` and whose pools are `pools` (by provider, others off).
    pub async fn open(
        root: &Path,
        name: &str,
        key: &str,
        api: &StandIn,
        pools: &[(&str, PoolSetting)],
    ) -> Result<Session> {
        let data_dir = root.join(name);
        std::fs::create_dir_all(&data_dir)?;
        let env: Vec<(&str, &str)> = CLIS.iter().map(|c| (c.key_variable, key)).collect();
        let plugin = Plugin::spawn(&env);
        super::PLUGIN_PIDS.lock().push(plugin.pid());
        super::DATA_DIRS.lock().push(data_dir.clone());
        let (mut base, driver) = plugin.clients().await;
        base.set_config(crate::support::set_config_request(
            config(&data_dir, api, pools),
            true,
        ))
        .await
        .with_context(|| format!("SetConfig; plugin log:\n{}", plugin.stderr()))?;
        let events = Arc::new(Mutex::new(BTreeMap::<String, Vec<String>>::new()));
        let mut stream = driver
            .clone()
            .task_events(nomad::TaskEventsRequest {})
            .await?
            .into_inner();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                sink.lock()
                    .entry(event.task_id)
                    .or_default()
                    .push(event.message);
            }
        });
        Ok(Session {
            plugin,
            driver,
            data_dir,
            events,
        })
    }

    pub async fn start(&self, task: nomad::TaskConfig) -> Result<nomad::TaskHandle> {
        let response = self
            .driver
            .clone()
            .start_task(nomad::StartTaskRequest { task: Some(task) })
            .await
            .with_context(|| format!("StartTask; plugin log tail:\n{}", self.log_tail()))?;
        response
            .into_inner()
            .handle
            .context("StartTask answered without a handle")
    }

    /// The task's exit code, or `None` if it did not exit within `limit`.
    pub async fn wait(&self, id: &str, limit: Duration) -> Option<i32> {
        let mut driver = self.driver.clone();
        let wait = driver.wait_task(nomad::WaitTaskRequest {
            task_id: id.to_string(),
        });
        let response = tokio::time::timeout(limit, wait).await.ok()?.ok()?;
        response.into_inner().result.map(|r| r.exit_code)
    }

    pub async fn destroy(&self, id: &str) {
        let _ = self
            .driver
            .clone()
            .destroy_task(nomad::DestroyTaskRequest {
                task_id: id.to_string(),
                force: true,
            })
            .await;
    }

    /// Whether the task's start was a warm claim, from its TaskEvents. The claim's event is sent
    /// while StartTask runs; a start without one within half a second was cold (a pool that is
    /// off sends no event at all).
    pub async fn was_warm(&self, id: &str) -> bool {
        for _ in 0..50 {
            if let Some(messages) = self.events.lock().get(id) {
                if messages.iter().any(|m| m.contains(WARM_EVENT)) {
                    return true;
                }
                if messages.iter().any(|m| m.contains(COLD_EVENT)) {
                    return false;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// The messages of the task's TaskEvents so far.
    pub fn events_of(&self, id: &str) -> Vec<String> {
        self.events.lock().get(id).cloned().unwrap_or_default()
    }

    /// Idle warm containers of `provider`, as the plugin reports them to Nomad.
    /// `None` also when the plugin does not answer within 5 s.
    pub async fn reported_idle(&self, provider: &str) -> Option<i64> {
        let probe = crate::support::tasks::reported_idle(&self.driver, provider);
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .ok()
            .flatten()
    }

    /// Wait (bounded) until the pool of `provider` reports at least `count` idle containers.
    pub async fn wait_for_idle(&self, provider: &str, count: i64, limit: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + limit;
        while self.reported_idle(provider).await.unwrap_or(0) < count {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "the {provider} pool never reported {count} idle containers within {limit:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The plugin's warnings and errors so far (its last 20).
    pub fn log_warnings(&self) -> String {
        let log = self.plugin.stderr();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn log_tail(&self) -> String {
        let log = self.plugin.stderr();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.plugin.kill9();
        remove_everything_of(&self.data_dir);
    }
}

/// Remove the containers of the plugin that used `data_dir`, and unmount its slots.
pub fn remove_everything_of(data_dir: &Path) {
    crate::support::tasks::remove_containers_of(&data_dir.to_string_lossy());
    let _ = std::process::Command::new("umount")
        .args(["-R", "-l"])
        .arg(data_dir.join("slots"))
        .output();
}

/// The agent's `plugin "polydev" { config {} }` for a session.
fn config(data_dir: &Path, api: &StandIn, pools: &[(&str, PoolSetting)]) -> Vec<u8> {
    // cty maps are sorted by key, as Nomad encodes them.
    let mut providers: Vec<&str> = CLIS.iter().map(|c| c.provider).collect();
    providers.sort();
    let provider = || {
        cty_object(vec![
            ("api_upstream", Value::from(api.origin())),
            ("upstream_ca_file", Value::from(api.ca_path())),
        ])
    };
    let pool = |name: &str| {
        let setting = pools
            .iter()
            .find(|(p, _)| *p == name)
            .map(|(_, s)| *s)
            .unwrap_or(PoolSetting { target: 0, max: 64 });
        cty_object(vec![
            ("target", Value::from(setting.target)),
            ("max", Value::from(setting.max)),
            ("when_empty", Value::from("cold")),
        ])
    };
    let cold_start_parallelism = super::knob("BENCH_COLD_PARALLELISM", 0);
    encode(&cty_object(vec![
        (
            "cold_start_parallelism",
            Value::from(cold_start_parallelism as u64),
        ),
        (
            "credentials_key_file",
            Value::from(crate::support::key_file(data_dir).to_str().unwrap()),
        ),
        ("data_dir", Value::from(data_dir.to_str().unwrap())),
        (
            "pool",
            Value::Map(
                providers
                    .iter()
                    .map(|p| (Value::from(*p), pool(p)))
                    .collect(),
            ),
        ),
        (
            "provider",
            Value::Map(
                providers
                    .iter()
                    .map(|p| (Value::from(*p), provider()))
                    .collect(),
            ),
        ),
    ]))
}
