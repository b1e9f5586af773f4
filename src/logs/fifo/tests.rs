use std::time::{Duration, Instant};

use super::*;
use crate::logs::test_support::{mkfifo, spawn_reader, spawn_reader_limited};

fn quick() -> SinkOptions {
    SinkOptions {
        open_timeout: Duration::from_millis(300),
        retry_interval: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn dev_null_is_discarded_without_opening() {
    let mut sink = Sink::open(Path::new("/dev/null"), &quick()).await.unwrap();
    assert!(matches!(sink.target, Target::Discard));
    sink.write_all(b"gone").await.unwrap();
    sink.close().await.unwrap();
}

#[tokio::test]
async fn a_planted_file_or_symlink_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "root-only\n").unwrap();
    let as_file = dir.path().join("file.fifo");
    std::fs::write(&as_file, "planted\n").unwrap();
    let as_link = dir.path().join("link.fifo");
    std::os::unix::fs::symlink(&victim, &as_link).unwrap();
    let real_fifo = mkfifo(dir.path(), "real.fifo");
    let _reader = spawn_reader(&real_fifo);
    let to_fifo = dir.path().join("to-fifo.fifo");
    std::os::unix::fs::symlink(&real_fifo, &to_fifo).unwrap();

    for (path, says) in [
        (&as_file, "is a regular file, not a FIFO"),
        (&as_link, "is a symlink"),
        (&to_fifo, "is a symlink"),
    ] {
        let err = Sink::open(path, &quick()).await.unwrap_err();
        assert!(
            matches!(err, LogError::Unsafe(_)),
            "{}: {err}",
            path.display()
        );
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root-only\n");
    assert_eq!(std::fs::read_to_string(&as_file).unwrap(), "planted\n");
    let mut sink = Sink::open(&real_fifo, &quick()).await.unwrap();
    sink.write_all(b"done").await.unwrap();
}

#[tokio::test]
async fn the_test_only_file_sink_appends_without_following_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.log");
    let mut first = Sink::append_file(&path).await.unwrap();
    first.write_all(b"one\n").await.unwrap();
    first.close().await.unwrap();
    let mut second = Sink::append_file(&path).await.unwrap();
    second.write_all(b"two").await.unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"one\ntwo",
        "flushed per write"
    );
    let link = dir.path().join("link.log");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    assert!(Sink::append_file(&link).await.is_err());
}

#[tokio::test]
async fn a_fifo_with_a_slow_reader_gets_every_byte_with_back_pressure() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfifo(dir.path(), "stdout.fifo");
    let reader = spawn_reader(&path);
    let mut sink = Sink::open(&path, &SinkOptions::default()).await.unwrap();
    assert!(matches!(sink.target, Target::Fifo(_)));
    // 4 MiB is far more than a pipe buffer (64 KiB): writes must wait for the reader.
    let data: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    for chunk in data.chunks(100_000) {
        sink.write_all(chunk).await.unwrap();
    }
    sink.close().await.unwrap();
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data);
}

#[tokio::test]
async fn a_fifo_without_reader_fails_clearly_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfifo(dir.path(), "stderr.fifo");
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(20), Sink::open(&path, &quick()))
        .await
        .expect("open must give up on its own");
    println!("no-reader open gave up after {:?}", started.elapsed());
    let err = result.unwrap_err();
    assert!(matches!(err, LogError::NoReader { .. }), "{err}");
    assert!(err.to_string().contains("stderr.fifo"), "{err}");
}

#[tokio::test]
async fn a_missing_path_fails_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let err = Sink::open(&dir.path().join("absent.fifo"), &quick())
        .await
        .unwrap_err();
    assert!(matches!(err, LogError::SinkMissing { .. }), "{err}");
}

#[tokio::test]
async fn a_reader_that_goes_away_gives_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfifo(dir.path(), "stdout.fifo");
    let reader = spawn_reader_limited(&path, 10);
    let mut sink = Sink::open(&path, &quick()).await.unwrap();
    sink.write_all(b"0123456789").await.unwrap();
    let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, b"0123456789");
    // The reader has closed: the next write sees EPIPE, reopens once, finds no reader, fails.
    let err = sink.write_all(b"more").await.unwrap_err();
    assert!(matches!(err, LogError::NoReader { .. }), "{err}");
}

#[tokio::test]
async fn a_reader_that_comes_back_is_reopened_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = mkfifo(dir.path(), "stdout.fifo");
    let first = spawn_reader_limited(&path, 3);
    let options = SinkOptions {
        open_timeout: Duration::from_secs(10),
        ..quick()
    };
    let mut sink = Sink::open(&path, &options).await.unwrap();
    sink.write_all(b"abc").await.unwrap();
    let got = tokio::task::spawn_blocking(move || first.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, b"abc");
    // The new reader arrives only after the write has hit EPIPE and started waiting to reopen.
    let later = path.clone();
    let second = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        spawn_reader(&later).join().unwrap()
    });
    sink.write_all(b"def").await.unwrap();
    sink.close().await.unwrap();
    let got = tokio::task::spawn_blocking(move || second.join().unwrap())
        .await
        .unwrap();
    assert_eq!(got, b"def");
}

#[tokio::test]
async fn both_sinks_open_together() {
    let dir = tempfile::tempdir().unwrap();
    let out = mkfifo(dir.path(), "out.fifo");
    let err = mkfifo(dir.path(), "err.fifo");
    let (r_out, r_err) = (spawn_reader(&out), spawn_reader(&err));
    let mut sinks = LogSinks::open(&out, &err, &quick()).await.unwrap();
    sinks
        .get_mut(LogStream::Stdout)
        .write_all(b"o")
        .await
        .unwrap();
    sinks
        .get_mut(LogStream::Stderr)
        .write_all(b"e")
        .await
        .unwrap();
    sinks.close().await.unwrap();
    assert_eq!(
        tokio::task::spawn_blocking(move || r_out.join().unwrap())
            .await
            .unwrap(),
        b"o"
    );
    assert_eq!(
        tokio::task::spawn_blocking(move || r_err.join().unwrap())
            .await
            .unwrap(),
        b"e"
    );
}
