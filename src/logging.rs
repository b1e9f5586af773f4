//! Logging: hclog-shaped JSON lines on stderr in plugin mode, plain text for the operator CLI.
//!
//! Job: make every `tracing` event show up in the Nomad agent's log at the right level, with its
//! fields, by writing the JSON that go-plugin's `logStderr` parses (nomad-protocol.md §1.6):
//! `{"@level":"info","@message":"...","@module":"<target>","@timestamp":"2026-01-02T03:04:05.123456Z",...}`.
//!
//! Invariants:
//! - One event is one line: a JSON object with `@level` (one of `trace|debug|info|warn|error`),
//!   `@message` (always a string), `@module` (the event's target) and `@timestamp` (UTC, exactly
//!   6 fractional digits, `Z`), plus the fields of the event and its spans as JSON strings,
//!   numbers or booleans. go-plugin asserts `@message`/`@level`/`@timestamp` are strings and
//!   would panic the agent otherwise.
//! - A line stays under [`MAX_LINE_BYTES`] (go-plugin reads stderr with a 64 KiB buffer).
//! - Writing to stderr never panics and never reports an error: after an agent crash the pipe is
//!   gone and every write fails with EPIPE ([`IgnoreErrors`]). Nothing here uses `eprintln!`.
//! - A panic is logged at error level through the same path ([`install_panic_hook`]).
//! - The filter comes from [`LOG_ENV`] (`EnvFilter` syntax); plugin mode defaults to polydev's
//!   own `debug` (the agent filters again by its own level) and `warn` for every dependency
//!   ([`PLUGIN_DEFAULT_FILTER`]), the CLI to `warn`.

use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write};

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variable holding the log filter (`EnvFilter` syntax, e.g. `info,polydev=trace`).
pub const LOG_ENV: &str = "POLYDEV_LOG";
/// Default filter in plugin mode: polydev's own `debug`, dependencies at `warn`. At debug the
/// transport crates log every HTTP/2 frame and bollard copies whole `docker inspect` documents
/// ("Decoded into string: {…}", ~5 KB per call), which would flood an agent running at DEBUG
/// (`nomad agent -dev` does). `POLYDEV_LOG=debug` turns every crate's debug on;
/// `POLYDEV_LOG=warn,polydev=debug,bollard=debug` one crate's.
pub const PLUGIN_DEFAULT_FILTER: &str = "warn,polydev=debug";
/// Longest line written, newline included; go-plugin splits lines at 64 KiB.
pub const MAX_LINE_BYTES: usize = 32 * 1024;
/// Longest `@message`, in bytes before JSON escaping (escaping at most sextuples it).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// Longest string field value, in bytes before JSON escaping.
pub const MAX_VALUE_BYTES: usize = 1024;

const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Installs hclog JSON logging on stderr as the global subscriber, plus the panic hook. Does
/// nothing if a global subscriber is already set.
pub fn init_plugin_logging() {
    let (filter, bad_filter) = filter_from_env(PLUGIN_DEFAULT_FILTER);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(HclogLayer::new(stderr))
        .try_init()
        .is_ok();
    if installed {
        install_panic_hook();
        if let Some(error) = bad_filter {
            tracing::warn!(%error, "{LOG_ENV} is not a valid filter; using {PLUGIN_DEFAULT_FILTER}");
        }
    }
}

/// Installs human-readable logging on stderr for the operator CLI: `warn` by default, `debug`
/// with `verbose`, or whatever [`LOG_ENV`] says. Does nothing if a global subscriber is set.
pub fn init_cli_logging(verbose: bool) {
    let default = if verbose { "debug" } else { "warn" };
    let (filter, bad_filter) = filter_from_env(default);
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(verbose)
        .try_init()
        .is_ok();
    if installed && let Some(error) = bad_filter {
        tracing::warn!(%error, "{LOG_ENV} is not a valid filter; using {default}");
    }
}

/// The filter from [`LOG_ENV`], or `default` (with the parse error) when it is unset or bad.
fn filter_from_env(default: &str) -> (EnvFilter, Option<String>) {
    match std::env::var(LOG_ENV) {
        Ok(spec) if !spec.trim().is_empty() => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(default), Some(e.to_string())),
        },
        _ => (EnvFilter::new(default), None),
    }
}

/// Replaces the panic hook with one that logs the panic at error level through `tracing`
/// (Rust's default "thread … panicked" text would reach Nomad as an unlevelled DEBUG line).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(log_panic));
}

fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)");
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    let thread = std::thread::current();
    let backtrace = std::backtrace::Backtrace::capture();
    let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
        .then(|| backtrace.to_string());
    tracing::error!(
        target: "panic",
        location = location.as_deref(),
        thread = thread.name().unwrap_or("<unnamed>"),
        backtrace = backtrace.as_deref(),
        "panic: {message}"
    );
}

/// A writer that reports success whatever happens underneath, so a dead stderr pipe (EPIPE)
/// can never turn into a panic or an error path.
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreErrors<W>(pub W);

impl<W: Write> Write for IgnoreErrors<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Claim the whole buffer on failure so `write_all` does not loop.
        Ok(self.0.write(buf).unwrap_or(buf.len()))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let _ = self.0.write_all(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

/// Stderr behind [`IgnoreErrors`]; as a `fn() -> W` this is a [`MakeWriter`].
#[must_use]
pub fn stderr() -> IgnoreErrors<io::Stderr> {
    IgnoreErrors(io::stderr())
}

/// Writes one plain line to stderr, ignoring failure (for messages meant for a human, e.g. a
/// startup error before or instead of JSON logging).
pub fn write_stderr_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(format!("{line}\n").as_bytes());
}

/// A [`Layer`] that writes each event as one hclog JSON line to its writer.
#[derive(Debug)]
pub struct HclogLayer<W> {
    make_writer: W,
}

impl<W> HclogLayer<W>
where
    W: for<'w> MakeWriter<'w> + 'static,
{
    /// A layer writing through `make_writer`; wrap fallible writers in [`IgnoreErrors`] — the
    /// layer ignores write errors itself too.
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

impl<S, W> Layer<S> for HclogLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut fields = JsonFields::default();
            attrs.record(&mut fields);
            span.extensions_mut().insert(SpanFields(fields.fields));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>()
        {
            let mut visitor = JsonFields {
                message: None,
                fields: std::mem::take(fields),
            };
            values.record(&mut visitor);
            *fields = visitor.fields;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // Span fields, outermost first, so inner spans and then the event override them.
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(span_fields)) = span.extensions().get::<SpanFields>() {
                    fields.extend(span_fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
            }
        }
        let mut visitor = JsonFields {
            message: None,
            fields,
        };
        event.record(&mut visitor);
        let metadata = event.metadata();
        let line = format_line(
            *metadata.level(),
            metadata.target(),
            visitor.message.as_deref().unwrap_or(""),
            visitor.fields,
            OffsetDateTime::now_utc(),
        );
        let mut writer = self.make_writer.make_writer_for(metadata);
        let _ = writer.write_all(line.as_bytes());
    }
}

/// A span's recorded fields, kept in its extensions.
struct SpanFields(Map<String, Value>);

/// Renders one hclog JSON line, newline included, at most [`MAX_LINE_BYTES`] long. Fields named
/// like the `@` keys are overridden by them.
#[must_use]
pub fn format_line(
    level: Level,
    target: &str,
    message: &str,
    mut fields: Map<String, Value>,
    at: OffsetDateTime,
) -> String {
    let level = match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    };
    let timestamp = format_timestamp(at);
    let insert_hclog_keys = |fields: &mut Map<String, Value>| {
        fields.insert("@level".into(), level.into());
        fields.insert(
            "@message".into(),
            truncate(message, MAX_MESSAGE_BYTES).into(),
        );
        fields.insert("@module".into(), truncate(target, MAX_VALUE_BYTES).into());
        fields.insert("@timestamp".into(), timestamp.clone().into());
    };
    insert_hclog_keys(&mut fields);
    let mut line = Value::Object(fields).to_string();
    if line.len() + 1 > MAX_LINE_BYTES {
        // Keep what Nomad needs; say how much was dropped.
        let mut fields = Map::new();
        insert_hclog_keys(&mut fields);
        fields.insert("log_line_truncated".into(), true.into());
        line = Value::Object(fields).to_string();
    }
    line.push('\n');
    line
}

/// `2026-01-02T03:04:05.123456Z`: the layout go-plugin parses (`2006-01-02T15:04:05.000000Z07:00`).
#[must_use]
pub fn format_timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(TIMESTAMP_FORMAT)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

/// Cuts `s` to at most `max` bytes on a char boundary, marking the cut with `…`.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Collects fields as JSON values, `message` apart.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: Value) {
        self.fields.insert(field.name().to_owned(), value);
    }

    fn put_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(truncate(value, MAX_MESSAGE_BYTES));
        } else {
            self.put(field, truncate(value, MAX_VALUE_BYTES).into());
        }
    }
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put_str(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put_str(field, &format!("{value:?}"));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        self.put_str(field, &text);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        match i64::try_from(value) {
            Ok(v) => self.put(field, v.into()),
            Err(_) => self.put_str(field, &value.to_string()),
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        match u64::try_from(value) {
            Ok(v) => self.put(field, v.into()),
            Err(_) => self.put_str(field, &value.to_string()),
        }
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(n) => self.put(field, Value::Number(n)),
            None => self.put_str(field, &value.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;
    use tracing_subscriber::Registry;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Capture {
        type Writer = Capture;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    /// Runs `f` under an hclog subscriber (no filter) and returns the parsed lines.
    fn capture(f: impl FnOnce()) -> Vec<Map<String, Value>> {
        let out = Capture::default();
        let subscriber = Registry::default().with(HclogLayer::new(out.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| match serde_json::from_str(l).unwrap() {
                Value::Object(m) => m,
                other => panic!("not an object: {other}"),
            })
            .collect()
    }

    fn assert_hclog_shape(line: &Map<String, Value>) {
        let level = line["@level"].as_str().unwrap();
        assert!(["trace", "debug", "info", "warn", "error"].contains(&level));
        assert!(line["@message"].is_string());
        assert!(line["@module"].is_string());
        let ts = line["@timestamp"].as_str().unwrap();
        let parsed = time::PrimitiveDateTime::parse(
            ts.strip_suffix('Z').unwrap(),
            format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]"
            ),
        );
        assert!(parsed.is_ok(), "{ts}");
        let fraction = ts.rsplit_once('.').unwrap().1;
        assert_eq!(fraction.len(), 7, "{ts}"); // 6 digits + Z
    }

    #[test]
    fn line_shape_levels_and_fields() {
        let lines = capture(|| {
            tracing::trace!("t");
            tracing::debug!("d");
            tracing::info!(target: "pool", task_id = "a/b", count = 3u64, neg = -4i64,
                           ok = true, ratio = 0.5, nan = f64::NAN, big = u128::MAX,
                           dbg = ?vec![1, 2], shown = %"x\"y", "container {} checked out", 7);
            tracing::warn!("w");
            tracing::error!(
                error = &io::Error::other("boom") as &dyn std::error::Error,
                "e"
            );
        });
        assert_eq!(lines.len(), 5);
        for line in &lines {
            assert_hclog_shape(line);
        }
        let levels: Vec<_> = lines
            .iter()
            .map(|l| l["@level"].as_str().unwrap())
            .collect();
        assert_eq!(levels, ["trace", "debug", "info", "warn", "error"]);
        let info = &lines[2];
        assert_eq!(info["@message"], "container 7 checked out");
        assert_eq!(info["@module"], "pool");
        assert_eq!(info["task_id"], "a/b");
        assert_eq!(info["count"], 3);
        assert_eq!(info["neg"], -4);
        assert_eq!(info["ok"], true);
        assert_eq!(info["ratio"], 0.5);
        assert_eq!(info["nan"], "NaN");
        assert_eq!(info["big"], u128::MAX.to_string());
        assert_eq!(info["dbg"], "[1, 2]");
        assert_eq!(info["shown"], "x\"y");
        assert_eq!(lines[4]["error"], "boom");
        assert_eq!(lines[0]["@module"], module_path!());
    }

    #[test]
    fn message_is_a_string_even_when_absent_or_structured() {
        let lines = capture(|| {
            tracing::info!(answer = 42);
            tracing::info!(message = 5);
        });
        for line in &lines {
            assert!(line["@message"].is_string(), "{line:?}");
        }
        assert_eq!(lines[0]["@message"], "");
    }

    #[test]
    fn span_fields_are_included_and_overridable() {
        let lines = capture(|| {
            let outer = tracing::info_span!("task", task_id = "t1", alloc = "a1");
            let _o = outer.enter();
            let inner = tracing::info_span!("exec", task_id = "t2", late = tracing::field::Empty);
            inner.record("late", 9);
            let _i = inner.enter();
            tracing::info!(alloc = "a2", "inside");
        });
        assert_eq!(lines[0]["task_id"], "t2");
        assert_eq!(lines[0]["alloc"], "a2");
        assert_eq!(lines[0]["late"], 9);
    }

    #[test]
    fn reserved_keys_cannot_be_overridden_by_fields() {
        let mut fields = Map::new();
        fields.insert("@level".into(), 5.into());
        fields.insert("@timestamp".into(), 1.into());
        let line = format_line(Level::INFO, "m", "hi", fields, OffsetDateTime::UNIX_EPOCH);
        assert_eq!(
            line,
            "{\"@level\":\"info\",\"@message\":\"hi\",\"@module\":\"m\",\
             \"@timestamp\":\"1970-01-01T00:00:00.000000Z\"}\n"
        );
    }

    #[test]
    fn default_filters_parse() {
        for spec in [PLUGIN_DEFAULT_FILTER, "warn", "debug"] {
            EnvFilter::try_new(spec).unwrap();
        }
    }

    #[test]
    fn timestamp_has_exactly_six_digits() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC);
        assert_eq!(format_timestamp(at), "2026-01-02T03:04:05.123456Z");
        let whole = time::macros::datetime!(2026-01-02 03:04:05 UTC);
        assert_eq!(format_timestamp(whole), "2026-01-02T03:04:05.000000Z");
        let offset = time::macros::datetime!(2026-01-02 05:04:05.5 +02:00);
        assert_eq!(format_timestamp(offset), "2026-01-02T03:04:05.500000Z");
    }

    #[test]
    fn long_lines_stay_under_the_cap_and_valid() {
        let huge = "\u{1}".repeat(200_000);
        let lines = capture(|| {
            tracing::info!(a = %huge, b = %huge, c = %huge, d = %huge, e = %huge, f = %huge,
                           g = %huge, h = %huge, i = %huge, j = %huge, k = %huge, l = %huge,
                           m = %huge, n = %huge, o = %huge, p = %huge, q = %huge, r = %huge,
                           s = %huge, t = %huge, u = %huge, v = %huge, w = %huge, x = %huge,
                           "{huge}");
            tracing::info!(field = %"é".repeat(5_000), "{}", "ü".repeat(10_000));
        });
        assert_eq!(lines.len(), 2);
        for line in &lines {
            assert_hclog_shape(line);
            assert!(Value::Object(line.clone()).to_string().len() < MAX_LINE_BYTES);
        }
        assert_eq!(lines[0]["log_line_truncated"], true);
        assert!(lines[0]["@message"].as_str().unwrap().ends_with('…'));
        let field = lines[1]["field"].as_str().unwrap();
        assert!(field.len() <= MAX_VALUE_BYTES && field.ends_with('…'));
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn a_closed_writer_never_panics_or_errors() {
        let mut w = IgnoreErrors(Closed);
        assert!(w.write_all(b"x\n").is_ok());
        assert_eq!(w.write(b"abc").unwrap(), 3);
        assert!(w.flush().is_ok());
        assert!(writeln!(w, "formatted {}", 1).is_ok());

        let subscriber = Registry::default().with(HclogLayer::new(|| Closed));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("nobody hears this");
        });
    }

    #[test]
    fn panic_hook_logs_at_error() {
        // Uses only the hook's formatting path: run it under a scoped subscriber.
        let out = Capture::default();
        let subscriber = Registry::default().with(HclogLayer::new(out.clone()));
        // Chain the test harness's hook so a panic on another test thread is still reported.
        let previous: Arc<dyn Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync> =
            Arc::from(std::panic::take_hook());
        let chained = Arc::clone(&previous);
        std::panic::set_hook(Box::new(move |info| {
            log_panic(info);
            chained(info);
        }));
        tracing::subscriber::with_default(subscriber, || {
            let r = std::panic::catch_unwind(|| panic!("kaboom {}", 7));
            assert!(r.is_err());
        });
        std::panic::set_hook(Box::new(move |info| previous(info)));
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        let line: Map<String, Value> = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(line["@level"], "error");
        assert_eq!(line["@message"], "panic: kaboom 7");
        assert_eq!(line["@module"], "panic");
        assert!(line["location"].as_str().unwrap().contains("logging.rs"));
    }
}
