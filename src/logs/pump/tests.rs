//! The pump against the fake engine, with regular files and real FIFOs as sinks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;
use crate::engine::fake::{FAKE_EPOCH_NANOS, FakeEngine, FakeOp};
use crate::engine::{ContainerSpec, LogStream::Stderr, LogStream::Stdout};
use crate::logs::fifo::{Sink, SinkOptions};
use crate::logs::test_support::{mkfifo, spawn_reader, spawn_reader_limited};

const LAUNCH: &[u8] = ENTRYPOINT_LAUNCH_SENTINEL;

fn spec() -> ContainerSpec {
    ContainerSpec {
        name: "task".to_string(),
        image: "img".to_string(),
        user: "1000:1000".to_string(),
        env: Vec::new(),
        labels: Default::default(),
        limits: Default::default(),
        mounts: Vec::new(),
        security: Default::default(),
        work_dir: None,
        network_mode: None,
        log_max_size: "10m".to_string(),
        log_max_files: 1,
    }
}

async fn started() -> (FakeEngine, String) {
    let fake = FakeEngine::new();
    fake.add_image(&spec().image);
    let id = fake.create(&spec()).await.unwrap();
    fake.start(&id).await.unwrap();
    (fake, id)
}

struct Files {
    dir: tempfile::TempDir,
    out: PathBuf,
    err: PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
        Files { dir, out, err }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    async fn sinks(&self) -> LogSinks {
        LogSinks {
            stdout: Sink::append_file(&self.out).await.unwrap(),
            stderr: Sink::append_file(&self.err).await.unwrap(),
        }
    }

    fn read(&self) -> (Vec<u8>, Vec<u8>) {
        (
            std::fs::read(&self.out).unwrap_or_default(),
            std::fs::read(&self.err).unwrap_or_default(),
        )
    }

    fn spawn(
        &self,
        fake: &FakeEngine,
        id: &str,
        sinks: LogSinks,
        redactor: Redactor,
        cancel: &CancellationToken,
    ) -> tokio::task::JoinHandle<Result<PumpEnd, LogError>> {
        let cursor = CursorFile::open(&self.state(), id).unwrap();
        let engine: Arc<dyn ContainerEngine> = Arc::new(fake.clone());
        tokio::spawn(run_pump(
            engine,
            id.to_string(),
            sinks,
            cursor,
            redactor,
            cancel.clone(),
        ))
    }

    /// Runs a pump to completion over what the (already exited) container produced.
    async fn pump_to_end(
        &self,
        fake: &FakeEngine,
        id: &str,
        redactor: Redactor,
    ) -> (Vec<u8>, Vec<u8>) {
        let sinks = self.sinks().await;
        let end = self
            .spawn(fake, id, sinks, redactor, &CancellationToken::new())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(end, PumpEnd::Completed);
        self.read()
    }
}

/// Waits until `path` holds `len` bytes (the pump has caught up); panics after 20 s.
async fn wait_for_len(path: &Path, len: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let have = std::fs::metadata(path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        if have == len {
            return;
        }
        assert!(
            have < len,
            "{} grew past {len} bytes to {have}",
            path.display()
        );
        assert!(
            Instant::now() < deadline,
            "{} stuck at {have} of {len} bytes",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn streams_are_byte_exact_and_kept_apart_including_partial_lines() {
    let (fake, id) = started().await;
    let files = Files::new();
    for (stream, bytes) in [
        (
            Stderr,
            &b"polydev-entrypoint: provider=openai uid=1000\n"[..],
        ),
        (Stderr, LAUNCH),
        (Stdout, b"hello "),
        (Stderr, b"warn: half a li"),
        (Stdout, b"world\n"),
        (Stderr, b"ne\n"),
        (Stdout, b"\0\xff binary\r\n"),
        (Stdout, b""),
        (Stdout, b"no newline at end"),
    ] {
        fake.emit(&id, stream, bytes.to_vec()).unwrap();
    }
    fake.exit(&id, 0, false).unwrap();
    let (out, err) = files.pump_to_end(&fake, &id, Redactor::none()).await;
    assert_eq!(out, b"hello world\n\0\xff binary\r\nno newline at end");
    assert_eq!(err, b"warn: half a line\n");
    let cursor = *CursorFile::open(&files.state(), &id).unwrap().cursor();
    assert!(cursor.launched && cursor.finished);
}

#[tokio::test]
async fn the_banner_is_dropped_and_everything_after_the_sentinel_kept() {
    let (fake, id) = started().await;
    let files = Files::new();
    let cancel = CancellationToken::new();
    let pump = files.spawn(&fake, &id, files.sinks().await, Redactor::none(), &cancel);
    fake.emit(&id, Stderr, "banner line 1\n").unwrap();
    fake.emit(&id, Stdout, "stdout before launch\n").unwrap();
    // A look-alike that does not start a line is not the sentinel.
    fake.emit(&id, Stderr, "echo polydev-entrypoint: launch\n")
        .unwrap();
    fake.emit(
        &id,
        Stderr,
        "banner line 2\npolydev-entrypoint: launch\nfirst task line\n",
    )
    .unwrap();
    fake.emit(&id, Stderr, LAUNCH).unwrap();
    fake.emit(&id, Stderr, "second task line\n").unwrap();
    fake.exit(&id, 1, false).unwrap();
    assert_eq!(pump.await.unwrap().unwrap(), PumpEnd::Completed);
    let (out, err) = files.read();
    assert_eq!(out, b"stdout before launch\n");
    // Only the first sentinel is special: a later identical line is task output.
    assert_eq!(
        err,
        [&b"first task line\n"[..], LAUNCH, b"second task line\n"].concat()
    );
}

#[tokio::test]
async fn without_a_sentinel_the_banner_is_shown_at_the_end() {
    let (fake, id) = started().await;
    let files = Files::new();
    fake.emit(&id, Stderr, "polydev-entrypoint: openai\n")
        .unwrap();
    fake.emit(&id, Stdout, "out\n").unwrap();
    fake.emit(
        &id,
        Stderr,
        "polydev-entrypoint: missing OPENAI_API_KEY sk-do-not-show-this\n",
    )
    .unwrap();
    fake.exit(&id, 64, false).unwrap();
    let redactor = Redactor::new(["sk-do-not-show-this"]);
    let (out, err) = files.pump_to_end(&fake, &id, redactor).await;
    assert_eq!(out, b"out\n");
    assert_eq!(
        err,
        b"polydev-entrypoint: openai\npolydev-entrypoint: missing OPENAI_API_KEY [REDACTED]\n"
    );
}

#[tokio::test]
async fn secrets_split_across_records_are_redacted_per_stream() {
    let (fake, id) = started().await;
    let files = Files::new();
    fake.emit(&id, Stderr, LAUNCH).unwrap();
    fake.emit(&id, Stdout, "key: sk-live-").unwrap();
    fake.emit(&id, Stderr, "sk-live-").unwrap(); // stderr's own prefix, never completed
    fake.emit(&id, Stdout, "0123").unwrap();
    fake.emit(&id, Stdout, "456789 done\nsk-live-01").unwrap();
    fake.emit(&id, Stderr, "\n").unwrap();
    fake.exit(&id, 0, false).unwrap();
    let (out, err) = files
        .pump_to_end(&fake, &id, Redactor::new(["sk-live-0123456789"]))
        .await;
    assert_eq!(
        out, b"key: [REDACTED] done\nsk-live-01",
        "an unfinished prefix is flushed at the end"
    );
    assert_eq!(err, b"sk-live-\n", "streams are redacted separately");
}

#[tokio::test]
async fn restarts_resume_with_no_loss_and_no_duplicate() {
    let (fake, id) = started().await;
    // 0.3 s per record: `since` (whole seconds) makes the engine replay records the cursor skips.
    fake.set_clock_step(Duration::from_millis(300));
    let files = Files::new();
    let redactor = Redactor::new(["tok-abcdefghijklmnop"]);
    let launch = std::str::from_utf8(LAUNCH).unwrap();
    let same = FAKE_EPOCH_NANOS + 10_000_000_000;
    // Each phase is followed by a restart of the pump (cancel, new pump on the same cursor file).
    let phases: Vec<Vec<(LogStream, &str, Option<i128>)>> = vec![
        vec![(Stderr, "banner\n", None), (Stdout, "o1\n", None)],
        vec![(Stderr, launch, None), (Stderr, "e1\n", None)],
        // Identical timestamps across a restart, on both streams.
        vec![
            (Stdout, "s1\n", Some(same)),
            (Stdout, "s2\n", Some(same)),
            (Stderr, "x1\n", Some(same)),
        ],
        vec![
            (Stdout, "s3\n", Some(same)),
            (Stderr, "x2\n", Some(same)),
            (Stdout, "o2 tok-abcdefg", None),
        ],
        // The secret continues after the restart: the cursor holds a partially written record.
        vec![(Stdout, "hijklmnop o3\n", None), (Stderr, "e2", None)],
        vec![(Stderr, "\n", None), (Stdout, "last", None)],
    ];
    // What must have been written so far: the raw output through a streaming redactor.
    let (mut model_out, mut model_err) = (redactor.stream(), redactor.stream());
    let (mut want_out, mut want_err) = (Vec::new(), Vec::new());
    let mut after_launch = false;
    for phase in phases {
        let cancel = CancellationToken::new();
        let pump = files.spawn(&fake, &id, files.sinks().await, redactor.clone(), &cancel);
        for (stream, text, at) in phase {
            match at {
                Some(ts) => fake.emit_at(&id, stream, text.to_string(), ts).unwrap(),
                None => fake.emit(&id, stream, text.to_string()).unwrap(),
            };
            match stream {
                Stdout => model_out.push(text.as_bytes(), &mut want_out),
                Stderr if after_launch => model_err.push(text.as_bytes(), &mut want_err),
                Stderr => after_launch = text == launch,
            }
        }
        wait_for_len(&files.out, want_out.len()).await;
        wait_for_len(&files.err, want_err.len()).await;
        cancel.cancel();
        assert_eq!(pump.await.unwrap().unwrap(), PumpEnd::Cancelled);
    }
    model_out.finish(&mut want_out);
    model_err.finish(&mut want_err);
    fake.exit(&id, 0, false).unwrap();
    let (out, err) = files.pump_to_end(&fake, &id, redactor).await;
    assert_eq!(
        String::from_utf8_lossy(&out),
        "o1\ns1\ns2\ns3\no2 [REDACTED] o3\nlast"
    );
    assert_eq!(out, want_out);
    assert_eq!(String::from_utf8_lossy(&err), "e1\nx1\nx2\ne2\n");
    assert_eq!(err, want_err);
    let since: Vec<i64> = fake
        .calls()
        .iter()
        .filter_map(|c| match c {
            crate::engine::fake::FakeCall::Logs {
                since_unix_secs, ..
            } => Some(*since_unix_secs),
            _ => None,
        })
        .collect();
    assert!(
        since.iter().any(|&s| s > 0),
        "restarts asked for a later `since`: {since:?}"
    );
    // A finished cursor makes another pump complete without writing anything.
    let (out2, err2) = files.pump_to_end(&fake, &id, Redactor::none()).await;
    assert_eq!((out2, err2), (out, err));
}

#[tokio::test]
async fn the_pump_follows_again_after_the_stream_fails() {
    let (fake, id) = started().await;
    let files = Files::new();
    fake.fail_next(
        FakeOp::Logs,
        EngineError::Unavailable("engine restarting".to_string()),
    );
    let pump = files.spawn(
        &fake,
        &id,
        files.sinks().await,
        Redactor::none(),
        &CancellationToken::new(),
    );
    fake.emit(&id, Stderr, LAUNCH).unwrap();
    fake.emit(&id, Stdout, "a\n").unwrap();
    wait_for_len(&files.out, 2).await;
    fake.interrupt_logs(&id).unwrap();
    fake.emit(&id, Stdout, "b\n").unwrap();
    fake.emit(&id, Stderr, "c\n").unwrap();
    fake.exit(&id, 0, false).unwrap();
    assert_eq!(pump.await.unwrap().unwrap(), PumpEnd::Completed);
    assert_eq!(files.read(), (b"a\nb\n".to_vec(), b"c\n".to_vec()));
    let follows = fake
        .calls()
        .iter()
        .filter(|c| matches!(c, crate::engine::fake::FakeCall::Logs { .. }))
        .count();
    assert!(
        follows >= 3,
        "failed once, interrupted once, then followed to the end: {follows}"
    );
}

#[tokio::test]
async fn a_removed_container_finishes_the_pump() {
    let (fake, id) = started().await;
    let files = Files::new();
    let pump = files.spawn(
        &fake,
        &id,
        files.sinks().await,
        Redactor::none(),
        &CancellationToken::new(),
    );
    fake.emit(&id, Stdout, "x").unwrap();
    wait_for_len(&files.out, 1).await;
    fake.remove(&id).await.unwrap();
    assert_eq!(pump.await.unwrap().unwrap(), PumpEnd::Completed);
}

#[tokio::test]
async fn dev_null_sinks_complete() {
    let (fake, id) = started().await;
    let files = Files::new();
    fake.emit(&id, Stderr, LAUNCH).unwrap();
    fake.emit(&id, Stdout, "dropped\n").unwrap();
    fake.exit(&id, 0, false).unwrap();
    let null = Path::new("/dev/null");
    let sinks = LogSinks::open(null, null, &SinkOptions::default())
        .await
        .unwrap();
    let end = files
        .spawn(
            &fake,
            &id,
            sinks,
            Redactor::none(),
            &CancellationToken::new(),
        )
        .await
        .unwrap();
    assert_eq!(end.unwrap(), PumpEnd::Completed);
    assert!(
        CursorFile::open(&files.state(), &id)
            .unwrap()
            .cursor()
            .finished
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_through_fifos_nothing_lost() {
    let (fake, id) = started().await;
    let files = Files::new();
    let (out_fifo, err_fifo) = (
        mkfifo(files.dir.path(), "out.fifo"),
        mkfifo(files.dir.path(), "err.fifo"),
    );
    let (r_out, r_err) = (spawn_reader(&out_fifo), spawn_reader(&err_fifo));
    let sinks = LogSinks::open(&out_fifo, &err_fifo, &SinkOptions::default())
        .await
        .unwrap();
    fake.emit(&id, Stderr, LAUNCH).unwrap();
    // Docker splits long lines into 16 KiB records.
    const RECORD: usize = 16 * 1024;
    const TOTAL: usize = 50 * 1024 * 1024;
    let mut want_out = Vec::with_capacity(TOTAL);
    let mut want_err = Vec::new();
    let mut i = 0u32;
    while want_out.len() + want_err.len() < TOTAL {
        let bytes: Vec<u8> = (0..RECORD)
            .map(|j| b'a' + ((i as usize + j) % 26) as u8)
            .collect();
        let stream = if i % 10 == 9 { Stderr } else { Stdout };
        fake.emit(&id, stream, bytes.clone()).unwrap();
        if stream == Stdout {
            want_out.extend(bytes)
        } else {
            want_err.extend(bytes)
        }
        i += 1;
    }
    fake.exit(&id, 0, false).unwrap();
    let total = want_out.len() + want_err.len();
    let started = Instant::now();
    let redactor = Redactor::new(["sk-never-appears-in-output"]);
    let end = files
        .spawn(&fake, &id, sinks, redactor, &CancellationToken::new())
        .await
        .unwrap()
        .unwrap();
    let (got_out, got_err) =
        tokio::task::spawn_blocking(move || (r_out.join().unwrap(), r_err.join().unwrap()))
            .await
            .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(end, PumpEnd::Completed);
    assert!(got_out == want_out && got_err == want_err, "output differs");
    println!(
        "pump: {:.1} MB in {:?} = {:.1} MB/s ({} records, redaction on, FIFOs)",
        total as f64 / 1e6,
        elapsed,
        total as f64 / 1e6 / elapsed.as_secs_f64(),
        i
    );
}

#[tokio::test]
async fn a_fifo_reader_that_goes_away_ends_the_pump_with_an_error() {
    let (fake, id) = started().await;
    let files = Files::new();
    let (out_fifo, err_fifo) = (
        mkfifo(files.dir.path(), "out.fifo"),
        mkfifo(files.dir.path(), "err.fifo"),
    );
    let (r_out, _r_err) = (spawn_reader_limited(&out_fifo, 4), spawn_reader(&err_fifo));
    let quick = SinkOptions {
        open_timeout: Duration::from_millis(200),
        retry_interval: Duration::from_millis(20),
    };
    let sinks = LogSinks::open(&out_fifo, &err_fifo, &quick).await.unwrap();
    let pump = files.spawn(
        &fake,
        &id,
        sinks,
        Redactor::none(),
        &CancellationToken::new(),
    );
    fake.emit(&id, Stdout, "abcd").unwrap();
    assert_eq!(
        tokio::task::spawn_blocking(move || r_out.join().unwrap())
            .await
            .unwrap(),
        b"abcd"
    );
    fake.emit(&id, Stdout, "efgh").unwrap();
    let err = pump.await.unwrap().unwrap_err();
    assert!(
        matches!(err, LogError::NoReader { .. } | LogError::Write { .. }),
        "{err}"
    );
}
