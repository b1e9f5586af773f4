//! `polydev pool status`: the warm pool as Docker and the slots directory show it.
//!
//! The pool lives inside the plugin process; this command reads the same facts the plugin acts
//! on — polydev's labels in Docker and the slot markers under `<data_dir>/slots` — so it works
//! whether or not the plugin runs, and never talks to the plugin.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::core::{LABEL_DATA_DIR, LABEL_MANAGED, LABEL_PROVIDER};
use crate::docker::DockerRuntime;
use crate::pool::LABEL_SLOT;
use crate::pool::slots::SlotRoot;
use crate::runtime::ContainerRuntime;

const USAGE: &str = "usage: polydev pool status [--data-dir DIR] [--docker-endpoint E]";

#[derive(Default)]
struct Counts {
    idle: usize,
    running_tasks: usize,
    other: usize,
    oldest_idle_secs: Option<u64>,
}

pub fn main(args: &[String]) -> i32 {
    if args.first().map(String::as_str) != Some("status") {
        eprintln!("{USAGE}");
        return 2;
    }
    let mut data_dir = crate::config::plugin::DEFAULT_DATA_DIR.to_string();
    let mut endpoint = crate::config::plugin::DEFAULT_DOCKER_ENDPOINT.to_string();
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        let value = rest.next();
        match (arg.as_str(), value) {
            ("--data-dir", Some(v)) => data_dir = v.clone(),
            ("--docker-endpoint", Some(v)) => endpoint = v.clone(),
            _ => {
                eprintln!("polydev pool: unexpected {arg:?}\n{USAGE}");
                return 2;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("polydev pool: {e}");
            return 1;
        }
    };
    match runtime.block_on(status(&data_dir, &endpoint)) {
        Ok(table) => {
            print!("{table}");
            0
        }
        Err(message) => {
            eprintln!("polydev pool: {message}");
            1
        }
    }
}

async fn status(data_dir: &str, endpoint: &str) -> Result<String, String> {
    let docker = DockerRuntime::connect(endpoint).map_err(|e| e.to_string())?;
    let containers = docker
        .list(LABEL_MANAGED, "true")
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let slots = SlotRoot::new(std::path::Path::new(data_dir));
    let mut by_provider: BTreeMap<String, Counts> = BTreeMap::new();
    for container in containers {
        if container.labels.get(LABEL_DATA_DIR).map(String::as_str) != Some(data_dir) {
            continue;
        }
        let provider = container
            .labels
            .get(LABEL_PROVIDER)
            .cloned()
            .unwrap_or_default();
        let counts = by_provider.entry(provider).or_default();
        let running = container.state == "running";
        match container.labels.get(LABEL_SLOT) {
            Some(slot) if !slots.is_claimed(slot) && running => {
                counts.idle += 1;
                let age = SystemTime::now()
                    .duration_since(container.created_at)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                counts.oldest_idle_secs = Some(counts.oldest_idle_secs.unwrap_or(0).max(age));
            }
            _ if running => counts.running_tasks += 1,
            _ => counts.other += 1,
        }
    }
    let mut table = format!(
        "{:<12} {:>5} {:>13} {:>14} {:>12}\n",
        "PROVIDER", "IDLE", "RUNNING TASKS", "STOPPED/OTHER", "OLDEST IDLE"
    );
    for (provider, counts) in &by_provider {
        let oldest = counts
            .oldest_idle_secs
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "-".into());
        table.push_str(&format!(
            "{provider:<12} {:>5} {:>13} {:>14} {oldest:>12}\n",
            counts.idle, counts.running_tasks, counts.other
        ));
    }
    if by_provider.is_empty() {
        table.push_str(&format!(
            "(no polydev containers for data dir {data_dir})\n"
        ));
    }
    Ok(table)
}
