//! Durations as Nomad operators write them (`"90s"`, `"1h30m"`, `"250ms"`, `"2h 15m"`): one
//! parser (humantime's) for every duration option, each with its own bounds.
//!
//! Invariant: a decoded duration is never zero and never above the option's maximum, so a typo
//! cannot turn a timeout off or make it practically infinite.

use std::time::Duration;

use super::ConfigError;
use super::cty::Obj;

/// Parse a duration; `None` if it is not one.
pub fn parse(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// A duration attribute `key` of `obj`, `default` when absent; must be positive and at most
/// `max`.
pub(crate) fn field(
    obj: &Obj<'_>,
    key: &str,
    default: &str,
    max: Duration,
) -> Result<Duration, ConfigError> {
    let text = obj.string(key)?.unwrap_or_else(|| default.to_string());
    checked(&text, max).ok_or_else(|| {
        ConfigError::invalid(
            obj.field(key),
            format!(
                "{text:?} is not a duration from 1ms to {}",
                humantime::format_duration(max)
            ),
            format!("write a duration such as {default:?}, \"90s\" or \"1h30m\""),
        )
    })
}

/// `text` as a duration in `(0, max]`.
pub fn checked(text: &str, max: Duration) -> Option<Duration> {
    parse(text).filter(|d| !d.is_zero() && *d <= max)
}

/// A built-in default, known to parse.
pub fn default(text: &str) -> Duration {
    parse(text).expect("a valid default duration")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_nomad_operators_write_parses() {
        assert_eq!(parse("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse("2h 15m"), Some(Duration::from_secs(8100)));
        assert_eq!(parse("5m"), Some(Duration::from_secs(300)));
        for bad in ["", "5", "s", "-1s", "1 parsec", "1.5s.2"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn zero_and_huge_are_refused() {
        let day = Duration::from_secs(86_400);
        assert_eq!(checked("0s", day), None);
        assert_eq!(checked("25h", day), None);
        assert_eq!(checked("18446744073709551615ms", day), None);
        assert_eq!(checked("24h", day), Some(day));
    }
}
