//! The warm pool's settings: `pool "<provider>" { … }` blocks of the plugin config.
//!
//! Every configured provider has a pool; a block overrides the defaults for its provider.
//! `target = 0` turns a provider's pool off (every task then starts cold).

use std::collections::BTreeMap;
use std::time::Duration;

use rmpv::Value;

use super::ConfigError;
use super::cty::Obj;
use super::duration;
use super::hclspec::{Spec, attr, default, hcl_string, literal, object};

/// Idle containers kept ready per provider.
pub const DEFAULT_TARGET: u32 = 2;
/// Upper bound on a provider's containers on the node (idle + running tasks).
pub const DEFAULT_MAX: u32 = 32;
/// Idle containers older than this are replaced.
pub const DEFAULT_MAX_IDLE_AGE: &str = "1h";
/// Idle containers above the pool's target that are older than this are removed once demand
/// has fallen: long enough that a second burst a few minutes later still finds a warm pool.
pub const DEFAULT_SCALE_DOWN_AFTER: &str = "5m";
/// Containers created at once while refilling.
pub const DEFAULT_REFILL_PARALLELISM: u32 = 2;
/// CPU of an idle container, in cores.
pub const DEFAULT_IDLE_CPUS: f64 = 0.1;
/// Memory of an idle container, in MB.
pub const DEFAULT_IDLE_MEMORY_MB: i64 = 256;
/// How long a claim waits for an idle container under `when_empty = "wait"`.
pub const DEFAULT_WAIT_TIMEOUT: &str = "30s";
/// Largest `idle_cpus` (cores) and `idle_memory` (MB, 1 TiB): more is a unit mistake.
const MAX_IDLE_CPUS: f64 = 1024.0;
const MAX_IDLE_MEMORY_MB: i64 = 1 << 20;
/// Bounds of the pool's durations.
const MAX_WAIT_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_IDLE_AGE: Duration = Duration::from_secs(30 * 86_400);
const MAX_SCALE_DOWN_AFTER: Duration = Duration::from_secs(86_400);

/// What a StartTask does when its provider's pool has no idle container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// Create a container on the spot (the default).
    Cold,
    /// Wait up to the timeout for the refill, then fail with a retryable error.
    Wait(Duration),
    /// Fail at once with a retryable error (Nomad retries the task later).
    Fail,
}

/// One provider's pool settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    /// Idle containers kept ready at least (the floor).
    pub target: u32,
    /// Containers of the provider on the node at most, idle and running tasks together.
    pub max: u32,
    pub max_idle_age: Duration,
    /// How long the pool remembers a burst of claims, and how old an idle container above the
    /// target must be before it is removed (see `pool::demand`).
    pub scale_down_after: Duration,
    pub refill_parallelism: u32,
    /// CPU quota of an idle container, in 1e-9 CPUs (Docker `NanoCpus`).
    pub idle_nano_cpus: i64,
    pub idle_memory_bytes: i64,
    pub when_empty: WhenEmpty,
}

impl Eq for PoolConfig {}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            target: DEFAULT_TARGET,
            max: DEFAULT_MAX,
            max_idle_age: duration::default(DEFAULT_MAX_IDLE_AGE),
            scale_down_after: duration::default(DEFAULT_SCALE_DOWN_AFTER),
            refill_parallelism: DEFAULT_REFILL_PARALLELISM,
            idle_nano_cpus: (DEFAULT_IDLE_CPUS * 1e9) as i64,
            idle_memory_bytes: DEFAULT_IDLE_MEMORY_MB << 20,
            when_empty: WhenEmpty::Cold,
        }
    }
}

/// The object inside a `pool "<provider>" {}` block.
pub fn pool_schema() -> Spec {
    fn with_default<'a>(name: &'a str, ty: &str, value: String) -> (&'a str, Spec) {
        (name, default(attr(name, ty, false), literal(&value)))
    }
    object([
        with_default("target", "number", DEFAULT_TARGET.to_string()),
        with_default("max", "number", DEFAULT_MAX.to_string()),
        with_default("max_idle_age", "string", hcl_string(DEFAULT_MAX_IDLE_AGE)),
        with_default(
            "scale_down_after",
            "string",
            hcl_string(DEFAULT_SCALE_DOWN_AFTER),
        ),
        with_default(
            "refill_parallelism",
            "number",
            DEFAULT_REFILL_PARALLELISM.to_string(),
        ),
        with_default("idle_cpus", "number", DEFAULT_IDLE_CPUS.to_string()),
        with_default("idle_memory", "number", DEFAULT_IDLE_MEMORY_MB.to_string()),
        with_default("when_empty", "string", hcl_string("cold")),
        with_default("wait_timeout", "string", hcl_string(DEFAULT_WAIT_TIMEOUT)),
    ])
}

/// Pool settings for every provider: the defaults, overridden by the `pool` blocks.
pub(crate) fn pools(
    root: &Obj<'_>,
    what: &str,
    providers: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, PoolConfig>, ConfigError> {
    let mut pools: BTreeMap<String, PoolConfig> = providers
        .into_iter()
        .map(|name| (name, PoolConfig::default()))
        .collect();
    for (name, value) in root.labelled_objects("pool")? {
        let field = format!("{what}: pool {name:?}");
        if !pools.contains_key(&name) {
            let known: Vec<&str> = pools.keys().map(String::as_str).collect();
            return Err(ConfigError::invalid(
                &field,
                "no provider of that name is configured",
                format!(
                    "name one of the providers ({}) or add a provider block for it",
                    known.join(", ")
                ),
            ));
        }
        let obj = Obj::new(value, &field, format!("{field}."))?;
        pools.insert(name, pool(&obj)?);
    }
    Ok(pools)
}

fn pool(obj: &Obj<'_>) -> Result<PoolConfig, ConfigError> {
    let d = PoolConfig::default();
    let count = |key: &str, fallback: u32, min: u32| -> Result<u32, ConfigError> {
        match obj.integer(key)? {
            None => Ok(fallback),
            Some(n) => u32::try_from(n).ok().filter(|n| *n >= min).ok_or_else(|| {
                ConfigError::invalid(
                    obj.field(key),
                    format!("{n} is out of range"),
                    format!("use a whole number of at least {min}"),
                )
            }),
        }
    };
    let target = count("target", d.target, 0)?;
    let max = count("max", d.max, 1)?;
    if target > max {
        return Err(ConfigError::invalid(
            obj.field("target"),
            format!("{target} idle containers cannot fit under max = {max}"),
            "lower target or raise max",
        ));
    }
    let duration =
        |key: &str, fallback: &str, max: Duration| duration::field(obj, key, fallback, max);
    let idle_cpus = match obj.get("idle_cpus")? {
        None | Some(Value::Nil) => DEFAULT_IDLE_CPUS,
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_i64().map(|n| n as f64))
            .or_else(|| v.as_u64().map(|n| n as f64))
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|c| c.is_finite() && (0.01..=MAX_IDLE_CPUS).contains(c))
            .ok_or_else(|| {
                ConfigError::invalid(
                    obj.field("idle_cpus"),
                    "not a usable CPU amount",
                    format!("give cores as a number from 0.01 to {MAX_IDLE_CPUS}, such as 0.1"),
                )
            })?,
    };
    let idle_memory_mb = match obj.integer("idle_memory")? {
        None => DEFAULT_IDLE_MEMORY_MB,
        Some(mb) if (6..=MAX_IDLE_MEMORY_MB).contains(&mb) => mb,
        Some(mb) => {
            return Err(ConfigError::invalid(
                obj.field("idle_memory"),
                format!("{mb} MB is out of range"),
                format!(
                    "give MB from Docker's minimum of 6 to {MAX_IDLE_MEMORY_MB}, such as \
                     {DEFAULT_IDLE_MEMORY_MB}"
                ),
            ));
        }
    };
    let when_empty = match obj.string("when_empty")?.as_deref() {
        None | Some("cold") => WhenEmpty::Cold,
        Some("fail") => WhenEmpty::Fail,
        Some("wait") => WhenEmpty::Wait(duration(
            "wait_timeout",
            DEFAULT_WAIT_TIMEOUT,
            MAX_WAIT_TIMEOUT,
        )?),
        Some(other) => {
            return Err(ConfigError::invalid(
                obj.field("when_empty"),
                format!("{other:?} is not a policy"),
                "use \"cold\" (start a container on the spot), \"wait\" (up to wait_timeout) or \
                 \"fail\" (a retryable error)",
            ));
        }
    };
    Ok(PoolConfig {
        target,
        max,
        max_idle_age: duration("max_idle_age", DEFAULT_MAX_IDLE_AGE, MAX_IDLE_AGE)?,
        scale_down_after: duration(
            "scale_down_after",
            DEFAULT_SCALE_DOWN_AFTER,
            MAX_SCALE_DOWN_AFTER,
        )?,
        refill_parallelism: count("refill_parallelism", d.refill_parallelism, 1)?,
        idle_nano_cpus: (idle_cpus * 1e9).round() as i64,
        idle_memory_bytes: idle_memory_mb << 20,
        when_empty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::cty::fixtures::{encode, map, obj, s};
    use super::super::{PluginConfig, decode_plugin_config};

    fn with_pool(provider: &str, fields: Vec<(&str, Value)>) -> Result<PluginConfig, ConfigError> {
        decode_plugin_config(&encode(&map(vec![(
            "pool",
            map(vec![(provider, obj(fields))]),
        )])))
    }

    #[test]
    fn a_pool_block_overrides_its_provider_only() {
        let config = with_pool(
            "openai",
            vec![
                ("target", Value::from(5)),
                ("max", Value::from(7)),
                ("idle_cpus", Value::F64(0.25)),
                ("idle_memory", Value::from(128)),
                ("when_empty", s("wait")),
                ("wait_timeout", s("250ms")),
                ("max_idle_age", s("1h30m")),
                ("scale_down_after", s("90s")),
            ],
        )
        .unwrap();
        let openai = &config.pools["openai"];
        assert_eq!((openai.target, openai.max), (5, 7));
        assert_eq!(openai.idle_nano_cpus, 250_000_000);
        assert_eq!(openai.idle_memory_bytes, 128 << 20);
        assert_eq!(
            openai.when_empty,
            WhenEmpty::Wait(Duration::from_millis(250))
        );
        assert_eq!(openai.max_idle_age, Duration::from_secs(5400));
        assert_eq!(openai.scale_down_after, Duration::from_secs(90));
        assert_eq!(config.pools["google"], PoolConfig::default());
    }

    #[test]
    fn bad_pool_values_name_the_field_and_the_fix() {
        let cases = [
            (
                "nope",
                vec![("target", Value::from(1))],
                "no provider of that name",
            ),
            (
                "openai",
                vec![("target", Value::from(9)), ("max", Value::from(3))],
                "lower target or raise max",
            ),
            ("openai", vec![("when_empty", s("later"))], "\"cold\""),
            ("openai", vec![("max_idle_age", s("soon"))], "\"1h30m\""),
            ("openai", vec![("max_idle_age", s("90days"))], "30days"),
            ("openai", vec![("scale_down_after", s("5"))], "\"5m\""),
            ("openai", vec![("scale_down_after", s("0s"))], "from 1ms"),
            ("openai", vec![("scale_down_after", s("2days"))], "1day"),
            (
                "openai",
                vec![("idle_memory", Value::from(2))],
                "minimum of 6",
            ),
            // 2^44 MB shifted into bytes would be 0; 2^43 negative.
            (
                "openai",
                vec![("idle_memory", Value::from(17_592_186_044_416_i64))],
                "out of range",
            ),
            (
                "openai",
                vec![("idle_memory", Value::from(8_796_093_022_208_i64))],
                "out of range",
            ),
            ("openai", vec![("idle_cpus", Value::F64(1e300))], "1024"),
            ("openai", vec![("idle_cpus", Value::F64(0.0))], "from 0.01"),
            ("openai", vec![("max", Value::from(0))], "at least 1"),
        ];
        for (provider, fields, fix) in cases {
            let err = with_pool(provider, fields).unwrap_err().to_string();
            assert!(err.contains("pool"), "{err}");
            assert!(err.contains(fix), "{err} should say {fix}");
        }
    }

    #[test]
    fn defaults_match_the_documented_seed_figures() {
        let d = PoolConfig::default();
        assert_eq!(d.idle_nano_cpus, 100_000_000);
        assert_eq!(d.idle_memory_bytes, 256 << 20);
        assert_eq!(d.when_empty, WhenEmpty::Cold);
        assert_eq!(d.max_idle_age, Duration::from_secs(3600));
        assert_eq!(d.scale_down_after, Duration::from_secs(300));
    }
}
