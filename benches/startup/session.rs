//! One plugin process as the benchmark drives it: spawned and configured like Nomad does, its
//! pool observed through Docker and the Fingerprint stream, tasks prepared (FIFOs, configs),
//! started with timing, told apart as warm or cold, and destroyed.

use super::*;

impl Session {
    pub(super) async fn open(run: &Run, name: &str, image: &str, pool: Pool) -> Result<Session> {
        let data_dir = run.root.path().join(name);
        std::fs::create_dir_all(&data_dir)?;
        let config = plugin_config(image, &data_dir, pool);
        polydev::config::decode_plugin_config(&config)
            .map_err(|e| anyhow::anyhow!("the harness's plugin config is invalid: {e}"))?;
        let plugin = Plugin::spawn(&[("OPENAI_API_KEY", run.key.as_str())]);
        let pid = plugin.pid();
        PLUGIN_PIDS.lock().push(pid);
        let (mut base, driver) = plugin.clients().await;
        base.set_config(support::set_config_request(config, false))
            .await
            .with_context(|| format!("SetConfig; plugin log:\n{}", plugin.stderr()))?;

        let events = Arc::new(Mutex::new(Vec::new()));
        let mut stream = driver
            .clone()
            .task_events(nomad::TaskEventsRequest {})
            .await?
            .into_inner();
        let sink = events.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                sink.lock().push((event.task_id, event.message));
            }
        });
        let fingerprint = Arc::new(Mutex::new(FingerprintSeen::default()));
        let mut stream = driver
            .clone()
            .fingerprint(nomad::FingerprintRequest {})
            .await?
            .into_inner();
        let sink = fingerprint.clone();
        tokio::spawn(async move {
            while let Some(Ok(response)) = stream.next().await {
                let idle = response
                    .attributes
                    .get(IDLE_ATTR)
                    .and_then(|a| a.value.clone())
                    .and_then(|v| match v {
                        AttrValue::IntVal(n) => Some(n),
                        AttrValue::FloatVal(f) => Some(f as i64),
                        AttrValue::StringVal(s) => s.parse().ok(),
                        AttrValue::BoolVal(_) => None,
                    });
                let mut seen = sink.lock();
                seen.updates += 1;
                if idle.is_some() {
                    seen.idle = idle;
                }
            }
        });
        let bollard =
            bollard::Docker::connect_with_unix(DOCKER_ENDPOINT, 120, bollard::API_DEFAULT_VERSION)?
                .negotiate_version()
                .await?;
        Ok(Session {
            plugin: Some(plugin),
            pid,
            driver,
            docker: DockerEngine::connect(DOCKER_ENDPOINT)?,
            bollard,
            image: image.to_string(),
            data_dir,
            events,
            fingerprint,
        })
    }

    /// Running containers of this session's image alias that run no task of ours: the idle pool.
    pub(super) async fn idle_containers(&self, busy: usize) -> Result<usize> {
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(false)
            .build();
        let listed = self.bollard.list_containers(Some(options)).await?;
        let running = listed
            .iter()
            .filter(|c| c.image.as_deref() == Some(self.image.as_str()))
            .count();
        Ok(running.saturating_sub(busy))
    }

    /// Wait for the pool's first fill. `seen` is false when, after 10 s, neither Docker nor the
    /// fingerprint showed any pool container (the pool is not implemented in this build).
    pub(super) async fn initial_fill(&self, target: usize) -> Result<Fill> {
        let t0 = Instant::now();
        loop {
            let idle = self.idle_containers(0).await?;
            let attr = self.fingerprint.lock().idle;
            if idle >= target || attr.is_some_and(|n| n >= target as i64) {
                return Ok(Fill {
                    seen: true,
                    reached: true,
                    took: t0.elapsed(),
                });
            }
            let elapsed = t0.elapsed();
            if (idle == 0 && attr.is_none() && elapsed >= Duration::from_secs(10))
                || elapsed >= Duration::from_secs(120)
            {
                return Ok(Fill {
                    seen: idle > 0 || attr.is_some(),
                    reached: false,
                    took: elapsed,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Between sequential starts: wait until `target` idle containers run again, as Docker shows
    /// them or as a fingerprint sent since the wait began reports them, and at least [`SETTLE`].
    /// Without any sign of a pool (or after 3 waits that timed out) it only settles.
    pub(super) async fn wait_refill(
        &self,
        target: usize,
        seen: bool,
        waits: &mut Waits,
    ) -> Result<()> {
        let settle = tokio::time::sleep(SETTLE);
        if !seen || waits.timed_out >= 3 {
            settle.await;
            waits.fallback += 1;
            return Ok(());
        }
        let t0 = Instant::now();
        let updates_before = self.fingerprint.lock().updates;
        loop {
            let reported = {
                let fp = self.fingerprint.lock();
                fp.updates > updates_before && fp.idle.is_some_and(|n| n >= target as i64)
            };
            if reported || self.idle_containers(0).await? >= target {
                waits.filled.push(t0.elapsed());
                settle.await;
                return Ok(());
            }
            if t0.elapsed() >= Duration::from_secs(30) {
                waits.timed_out += 1;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Alloc dir, FIFOs with logmon-like readers and the TaskConfig: everything not timed.
    pub(super) fn prepare(
        &self,
        run: &Run,
        phase: &str,
        options: &TaskOptions,
        ttfb: bool,
    ) -> Prepared {
        let id = run.task_id(phase);
        let alloc = AllocDir::new("bench");
        let (first_tx, first_rx) = if ttfb {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let stdout = TimedFifo::start(&alloc.fifo("stdout"), first_tx);
        let stderr = TimedFifo::start(&alloc.fifo("stderr"), None);
        let config = task_config(&id, Some(alloc.root.path()), options);
        Prepared {
            id,
            alloc,
            stdout,
            stderr,
            first_byte: first_rx,
            config,
        }
    }

    /// StartTask, timed from request sent to response received.
    pub(super) async fn start(&self, prepared: Prepared) -> Result<Running> {
        let mut driver = self.driver.clone();
        let request = nomad::StartTaskRequest {
            task: Some(prepared.config),
        };
        let sent_wall = SystemTime::now();
        let sent = Instant::now();
        let response = driver.start_task(request).await;
        let latency = sent.elapsed();
        let handle = response
            .with_context(|| format!("StartTask {}", prepared.id))?
            .into_inner()
            .handle
            .context("StartTask returned no handle")?;
        let state = DriverState::decode(&handle.driver_state)?;
        Ok(Running {
            id: prepared.id,
            container: state.container_id,
            _alloc: prepared.alloc,
            stdout: prepared.stdout,
            stderr: prepared.stderr,
            first_byte: prepared.first_byte,
            sent,
            sent_wall,
            latency,
        })
    }

    /// Whether the task's container was started before its StartTask was sent (a warm claim).
    pub(super) async fn prestarted(&self, task: &Running) -> Option<bool> {
        let state = self.docker.inspect(&task.container).await.ok()?;
        Some(state.started_at? < task.sent_wall)
    }

    /// Destroy `tasks`, four at a time (as Nomad's client would on a busy node).
    pub(super) async fn destroy_all(&self, tasks: Vec<Running>) -> Result<()> {
        let destroys = futures::stream::iter(tasks.into_iter().map(|t| self.destroy(t)))
            .buffer_unordered(4)
            .collect::<Vec<_>>()
            .await;
        destroys.into_iter().collect()
    }

    /// DestroyTask (force) and drain the FIFO readers. Not timed.
    pub(super) async fn destroy(&self, task: Running) -> Result<()> {
        self.driver
            .clone()
            .destroy_task(nomad::DestroyTaskRequest {
                task_id: task.id.clone(),
                force: true,
            })
            .await
            .with_context(|| format!("DestroyTask {}", task.id))?;
        task.stdout.finish(Duration::from_secs(5)).await;
        task.stderr.finish(Duration::from_secs(5)).await;
        Ok(())
    }

    pub(super) async fn wait_exit(&self, id: &str) -> Result<i64> {
        let response = tokio::time::timeout(
            Duration::from_secs(120),
            self.driver.clone().wait_task(nomad::WaitTaskRequest {
                task_id: id.to_string(),
            }),
        )
        .await
        .context("WaitTask timed out")??
        .into_inner();
        Ok(response.result.map_or(-1, |r| r.exit_code as i64))
    }

    /// What TaskEvents said about a task's start.
    pub(super) fn event_kind(&self, task_id: &str) -> EventKind {
        let events = self.events.lock();
        let mut kind = EventKind::None;
        for (_, message) in events.iter().filter(|(id, _)| id == task_id) {
            if message.contains(WARM_EVENT) {
                kind = EventKind::Warm;
            } else if message.contains(COLD_EVENT) && kind == EventKind::None {
                kind = EventKind::Cold;
            }
        }
        kind
    }

    /// Kill the plugin and remove what it left behind (idle pool containers, forwarders).
    pub(super) fn close(&mut self) {
        let Some(mut plugin) = self.plugin.take() else {
            return;
        };
        plugin.kill9();
        PLUGIN_PIDS.lock().retain(|pid| *pid != self.pid);
        // A killed plugin leaves its socket directory behind.
        if let Some(dir) = plugin.socket.parent()
            && dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("polydev-plugin-"))
        {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::thread::sleep(Duration::from_millis(200));
        let left = remove_run_containers(std::slice::from_ref(&self.image));
        LEFTOVER_CONTAINERS.fetch_add(left, Ordering::Relaxed);
        stop_forwarders(&self.data_dir);
    }
}
