//! `polydev pool status|drain`: the warm pool as Docker and the slots directory show it.
//!
//! The pool lives inside the plugin process; these commands read the same facts the plugin acts
//! on — polydev's labels in Docker and the slot markers under `<data_dir>/slots` — so they work
//! whether or not the plugin runs, and never talk to the plugin. What the pool *wants* (its
//! desired size after a burst, and what holds it back) exists only in the plugin: `status` shows
//! it from the file the running plugin keeps fresh ([`crate::pool::status_file`]), and `-` when
//! there is none recent. `drain` removes the idle
//! containers (and stopped, unclaimed pool containers) with their slots, and leaves running tasks
//! alone: the last step of removing polydev from a node, since idle containers outlive an agent
//! that never comes back.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::args::{Command, Opt, Outcome};
use crate::container_parts::{LABEL_DATA_DIR, LABEL_MANAGED, LABEL_PROVIDER, LABEL_SLOT};
use crate::engine::{ContainerEngine, ContainerSummary};
use crate::pool::slots::SlotRoot;
use crate::pool::status_file;

const OPTIONS: &[Opt] = &[
    Opt::Value {
        name: "data-dir",
        value: "DIR",
        help: "the plugin's data_dir (default /var/lib/polydev)",
    },
    Opt::Value {
        name: "docker-endpoint",
        value: "E",
        help: "Docker socket (default unix:///var/run/docker.sock)",
    },
];

const STATUS: Command = Command {
    name: "pool status",
    summary: "Per provider: idle warm containers, how many the running plugin wants (DESIRED), running \
tasks, stopped containers, the oldest idle one; then what holds a pool back, if anything.",
    options: OPTIONS,
    operands: None,
    notes: "",
};

const DRAIN: Command = Command {
    name: "pool drain",
    summary:
        "Remove the idle warm containers of this data dir, and stopped pool containers nobody \
claims, with their slots; leave running tasks alone. A running plugin refills its pool: stop
the Nomad agent first when removing polydev from a node.",
    options: OPTIONS,
    operands: None,
    notes: "",
};

#[derive(Default)]
struct Counts {
    idle: usize,
    running_tasks: usize,
    other: usize,
    oldest_idle_secs: Option<u64>,
}

pub fn main(args: &[String]) -> i32 {
    let (command, rest) = match args.first().map(String::as_str) {
        Some("status") => (&STATUS, &args[1..]),
        Some("drain") => (&DRAIN, &args[1..]),
        Some("help" | "--help" | "-h") => {
            super::print_out(&format!(
                "{}\n{}",
                super::args::usage(&STATUS),
                super::args::usage(&DRAIN)
            ));
            return 0;
        }
        _ => {
            super::print_err(
                "polydev pool: name a command: status or drain (see polydev pool --help)",
            );
            return 2;
        }
    };
    let parsed = match super::args::parse(command, rest) {
        Ok(Outcome::Help(text)) => {
            super::print_out(&text);
            return 0;
        }
        Ok(Outcome::Run(parsed)) => parsed,
        Err(message) => return super::usage_error(command, &message),
    };
    let data_dir = parsed
        .get("data-dir")
        .unwrap_or(crate::config::plugin::DEFAULT_DATA_DIR)
        .to_string();
    let endpoint = parsed
        .get("docker-endpoint")
        .unwrap_or(crate::config::plugin::DEFAULT_DOCKER_ENDPOINT)
        .to_string();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            super::print_err(&format!("polydev pool: {e}"));
            return 1;
        }
    };
    let done = if std::ptr::eq(command, &DRAIN) {
        runtime.block_on(drain(&data_dir, &endpoint))
    } else {
        runtime.block_on(status(&data_dir, &endpoint))
    };
    match done {
        Ok(text) => {
            super::print_out(&text);
            0
        }
        Err(message) => {
            super::print_err(&format!("polydev {}: {message}", command.name));
            1
        }
    }
}

/// The pool containers of `data_dir` and whether each is idle (running, slot not claimed).
async fn pool_containers(
    docker: &dyn ContainerEngine,
    data_dir: &str,
    slots: &SlotRoot,
) -> Result<Vec<(ContainerSummary, Option<String>, bool)>, String> {
    let containers = docker
        .list(LABEL_MANAGED, "true")
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    Ok(containers
        .into_iter()
        .filter(|c| c.labels.get(LABEL_DATA_DIR).map(String::as_str) == Some(data_dir))
        .map(|c| {
            let slot = c.labels.get(LABEL_SLOT).cloned();
            let idle = slot
                .as_ref()
                .is_some_and(|slot| !slots.is_claimed(slot) && c.state == "running");
            (c, slot, idle)
        })
        .collect())
}

async fn drain(data_dir: &str, endpoint: &str) -> Result<String, String> {
    let docker = crate::assembly::connect_docker(endpoint).map_err(|e| e.to_string())?;
    let slots = SlotRoot::new(std::path::Path::new(data_dir));
    let (mut removed, mut tasks) = (0, 0);
    let mut report = String::new();
    for (container, slot, idle) in pool_containers(docker.as_ref(), data_dir, &slots).await? {
        let unclaimed_stopped = slot
            .as_ref()
            .is_some_and(|slot| !slots.is_claimed(slot) && container.state != "running");
        if !(idle || unclaimed_stopped) {
            tasks += 1;
            continue;
        }
        docker
            .remove(&container.id)
            .await
            .or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })
            .map_err(|e| format!("cannot remove {}: {e}", container.name))?;
        if let Some(slot) = &slot {
            slots.release(slot);
        }
        removed += 1;
        report.push_str(&format!(
            "removed {} ({})\n",
            container.name, container.state
        ));
    }
    report.push_str(&format!(
        "drained: {removed} pool containers removed with their slots; {tasks} task containers left running\n"
    ));
    Ok(report)
}

async fn status(data_dir: &str, endpoint: &str) -> Result<String, String> {
    let docker = crate::assembly::connect_docker(endpoint).map_err(|e| e.to_string())?;
    let slots = SlotRoot::new(std::path::Path::new(data_dir));
    let mut by_provider: BTreeMap<String, Counts> = BTreeMap::new();
    for (container, _, idle) in pool_containers(docker.as_ref(), data_dir, &slots).await? {
        let provider = container
            .labels
            .get(LABEL_PROVIDER)
            .cloned()
            .unwrap_or_default();
        let counts = by_provider.entry(provider).or_default();
        if idle {
            counts.idle += 1;
            let age = SystemTime::now()
                .duration_since(container.created_at)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            counts.oldest_idle_secs = Some(counts.oldest_idle_secs.unwrap_or(0).max(age));
        } else if container.state == "running" {
            counts.running_tasks += 1;
        } else {
            counts.other += 1;
        }
    }
    let data_dir = std::path::Path::new(data_dir);
    for provider in status_file::providers(data_dir) {
        by_provider.entry(provider).or_default();
    }
    let now = SystemTime::now();
    let mut table = format!(
        "{:<12} {:>5} {:>7} {:>13} {:>14} {:>12}\n",
        "PROVIDER", "IDLE", "DESIRED", "RUNNING TASKS", "STOPPED/OTHER", "OLDEST IDLE"
    );
    let mut held_back = String::new();
    for (provider, counts) in &by_provider {
        let oldest = counts
            .oldest_idle_secs
            .map(|s| format!("{s}s"))
            .unwrap_or_else(|| "-".into());
        let written = status_file::read(data_dir, provider).filter(|s| s.is_fresh(now));
        let desired = written
            .as_ref()
            .map_or_else(|| "-".to_string(), |s| s.desired.to_string());
        if let Some(limit) = written.and_then(|s| s.growth_limit) {
            held_back.push_str(&format!("{provider}: {limit}\n"));
        }
        table.push_str(&format!(
            "{provider:<12} {:>5} {desired:>7} {:>13} {:>14} {oldest:>12}\n",
            counts.idle, counts.running_tasks, counts.other
        ));
    }
    if by_provider.is_empty() {
        table.push_str(&format!(
            "(no polydev containers for data dir {})\n",
            data_dir.display()
        ));
    }
    table.push_str(&held_back);
    Ok(table)
}
