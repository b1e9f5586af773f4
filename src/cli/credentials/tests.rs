//! Tests of `polydev credentials`: argument parsing, stdin handling, exit codes, listings.
use super::*;
use secrecy::ExposeSecret;

const VALUE: &str = "sk-cli-test-0123456789abcdef";

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn cli(args: &str, stdin: &str, data_dir: &std::path::Path) -> Outcome {
    let mut args: Vec<String> = args.split_whitespace().map(String::from).collect();
    if matches!(
        args.first().map(String::as_str),
        Some("set" | "list" | "rm")
    ) {
        args.push(format!("--data-dir={}", data_dir.display()));
    }
    if matches!(args.first().map(String::as_str), Some("set" | "rm")) {
        args.push(format!("--key-file={}", test_key_file(data_dir).display()));
    }
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let code = run(
        &args,
        &mut stdin.as_bytes(),
        false,
        &mut stdout,
        &mut stderr,
    );
    let outcome = Outcome {
        code,
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    };
    assert!(!outcome.stdout.contains(VALUE) && !outcome.stderr.contains(VALUE));
    outcome
}

fn stored(
    data_dir: &std::path::Path,
    ns: &str,
    user: &str,
    provider: &str,
    var: &str,
) -> Option<String> {
    let id = EntryId::new(ns, user, provider).unwrap();
    FileStore::new(data_dir, test_key_file(data_dir))
        .get_many(&id, &[var.to_string()])
        .unwrap()
        .pop()
        .map(|(_, v)| v.expose_secret().to_string())
}

#[test]
fn set_reads_stdin_strips_one_newline_and_defaults_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli(
        "set --namespace ns-a --user user1 --provider openai",
        &format!("{VALUE}\n"),
        dir.path(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("stored OPENAI_API_KEY for namespace \"ns-a\""),
        "{}",
        out.stdout
    );
    assert_eq!(
        stored(dir.path(), "ns-a", "user1", "openai", "OPENAI_API_KEY").unwrap(),
        VALUE
    );

    // Only one newline goes; CRLF counts as one; inner and leading whitespace stays.
    cli(
        "set --namespace ns-a --user user1 --provider google --variable GOOGLE_PROJECT_ID",
        " p 1\n\n",
        dir.path(),
    );
    assert_eq!(
        stored(dir.path(), "ns-a", "user1", "google", "GOOGLE_PROJECT_ID").unwrap(),
        " p 1\n"
    );
    cli(
        "set --namespace ns-a --user user1 --provider anthropic",
        "k-1\r\n",
        dir.path(),
    );
    assert_eq!(
        stored(
            dir.path(),
            "ns-a",
            "user1",
            "anthropic",
            "ANTHROPIC_API_KEY"
        )
        .unwrap(),
        "k-1"
    );

    // A variable the provider does not use is stored, with a note.
    let out = cli(
        "set --namespace ns-a --user user1 --provider openai --variable EXTRA",
        "x",
        dir.path(),
    );
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("does not use EXTRA"), "{}", out.stderr);
}

#[test]
fn bad_input_is_refused_with_the_right_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let base = "set --namespace ns-a --user user1 --provider openai";
    for stdin in ["", "\n", "\r\n"] {
        let out = cli(base, stdin, dir.path());
        assert_eq!(out.code, 1, "{stdin:?}");
        assert!(out.stderr.contains("empty"), "{}", out.stderr);
    }
    let out = cli(base, &"x".repeat(MAX_VALUE_LEN + 3), dir.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("longer than"), "{}", out.stderr);
    assert!(
        cli(
            base,
            &format!("{}\n", "x".repeat(MAX_VALUE_LEN)),
            dir.path()
        )
        .code
            == 0
    );
    let mut bytes = &b"\xff\xfe"[..];
    let (mut o, mut e) = (Vec::new(), Vec::new());
    let args: Vec<String> = base
        .split(' ')
        .map(String::from)
        .chain([format!("--data-dir={}", dir.path().display())])
        .collect();
    assert_eq!(run(&args, &mut bytes, false, &mut o, &mut e), 1);

    for (args, expect) in [
        (
            "set --namespace ns-a --user user1 --provider aider",
            "name it with --variable",
        ),
        (
            "set --namespace ns-a --user user1",
            "--provider is required",
        ),
        (
            "set --namespace a/b --user user1 --provider openai",
            "invalid namespace",
        ),
        (
            "set --namespace ns-a --user ../x --provider openai",
            "invalid user id",
        ),
        (
            "set --namespace ns-a --user u --provider openai --variable lower",
            "invalid variable",
        ),
        (
            "set --namespace ns-a --user u --provider openai --value sk-x",
            "never from the command line",
        ),
        ("set --namespace", "needs a value"),
        ("list --provider openai", "unknown option"),
        ("rm --namespace ns-a --user u", "--provider is required"),
        ("frob x", "unknown command"),
    ] {
        let out = cli(args, VALUE, dir.path());
        assert_eq!(out.code, 2, "{args}: {}", out.stderr);
        assert!(
            out.stderr.contains(expect) && out.stderr.contains("usage: polydev credentials"),
            "{args}: {}",
            out.stderr
        );
    }
    assert_eq!(
        run(&[], &mut &b""[..], false, &mut Vec::new(), &mut Vec::new()),
        2
    );
    let mut help = Vec::new();
    assert_eq!(
        run(
            &["--help".into()],
            &mut &b""[..],
            false,
            &mut help,
            &mut Vec::new()
        ),
        0
    );
    assert!(
        String::from_utf8(help)
            .unwrap()
            .contains("polydev credentials set")
    );
}

#[test]
fn list_shows_names_only_and_rm_removes() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        cli("list --namespace ns-a", "", dir.path()).stdout,
        "NAMESPACE  USER  PROVIDER  UPDATED  VARIABLES\n"
    );
    for (ns, user, provider, var) in [
        ("ns-a", "user1", "openai", "OPENAI_API_KEY"),
        ("ns-a", "user1", "google", "GOOGLE_API_KEY"),
        ("ns-a", "user1", "google", "GOOGLE_PROJECT_ID"),
        (
            "ns-b",
            "someone@example.com",
            "anthropic",
            "ANTHROPIC_API_KEY",
        ),
    ] {
        let out = cli(
            &format!("set --namespace {ns} --user {user} --provider {provider} --variable {var}"),
            VALUE,
            dir.path(),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let out = cli("list x", "", dir.path());
    assert_eq!(out.code, 2, "positional arguments are refused");
    let mut stdout = Vec::new();
    let args = vec![
        "list".to_string(),
        "--data-dir".into(),
        dir.path().display().to_string(),
    ];
    assert_eq!(
        run(&args, &mut &b""[..], false, &mut stdout, &mut Vec::new()),
        0
    );
    // Every row: the names, when it was written (today, UTC), the variables — never a value.
    let listed = String::from_utf8(stdout).unwrap();
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAMESPACE", "USER", "PROVIDER", "UPDATED", "VARIABLES"]
    );
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let expected = [
        [
            "ns-a",
            "user1",
            "google",
            "GOOGLE_API_KEY,GOOGLE_PROJECT_ID",
        ],
        ["ns-a", "user1", "openai", "OPENAI_API_KEY"],
        [
            "ns-b",
            "someone@example.com",
            "anthropic",
            "ANTHROPIC_API_KEY",
        ],
    ];
    assert_eq!(rows.len(), 4, "{listed}");
    for (row, want) in rows[1..].iter().zip(expected) {
        assert_eq!([row[0], row[1], row[2], row[4]], want, "{listed}");
        assert!(
            row[3].starts_with(&today) && row[3].ends_with('Z'),
            "{listed}"
        );
    }
    let out = cli("list --user someone@example.com", "", dir.path());
    assert_eq!(out.stdout.lines().count(), 2);

    let out = cli(
        "rm --namespace ns-a --user user1 --provider google --variable GOOGLE_PROJECT_ID",
        "",
        dir.path(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("removed GOOGLE_PROJECT_ID of namespace \"ns-a\""),
        "{}",
        out.stdout
    );
    assert!(stored(dir.path(), "ns-a", "user1", "google", "GOOGLE_API_KEY").is_some());
    let out = cli(
        "rm --namespace ns-a --user user1 --provider google",
        "",
        dir.path(),
    );
    assert_eq!(out.code, 0);
    assert!(stored(dir.path(), "ns-a", "user1", "google", "GOOGLE_API_KEY").is_none());
    let out = cli(
        "rm --namespace ns-a --user user1 --provider google",
        "",
        dir.path(),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("nothing is stored for"),
        "{}",
        out.stderr
    );

    // An unreadable entry is shown as such and makes list exit 1.
    let path = FileStore::new(dir.path(), test_key_file(dir.path()))
        .entry_path(&EntryId::new("ns-a", "user1", "openai").unwrap());
    std::fs::write(path, "junk\n").unwrap();
    let out = cli("list --namespace ns-a", "", dir.path());
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("(unreadable: "), "{}", out.stdout);
}

#[test]
fn shared_keys_are_set_listed_and_removed_without_a_namespace_or_user() {
    let dir = tempfile::tempdir().unwrap();
    let out = cli("set --shared --provider anthropic", VALUE, dir.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with("stored ANTHROPIC_API_KEY for the node's shared key of provider"),
        "{}",
        out.stdout
    );
    let shared = EntryId::shared("anthropic").unwrap();
    let got = FileStore::new(dir.path(), test_key_file(dir.path()))
        .get_many(&shared, &["ANTHROPIC_API_KEY".to_string()])
        .unwrap();
    assert_eq!(got[0].1.expose_secret(), VALUE);

    cli(
        "set --namespace ns-a --user user1 --provider openai",
        VALUE,
        dir.path(),
    );
    let out = cli("list", "", dir.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shared_row = out
        .stdout
        .lines()
        .find(|line| line.contains("anthropic"))
        .unwrap_or_else(|| panic!("no shared row in\n{}", out.stdout));
    assert!(
        shared_row.starts_with("*") && shared_row.contains("(shared)"),
        "{shared_row}"
    );
    // Narrowing to a namespace shows that namespace's users only.
    let out = cli("list --namespace ns-a", "", dir.path());
    assert!(!out.stdout.contains("anthropic"), "{}", out.stdout);

    // --shared names no user: mixing them is a usage error that says so.
    for args in [
        "set --shared --user user1 --provider openai",
        "rm --shared --namespace ns-a --provider openai",
    ] {
        let out = cli(args, VALUE, dir.path());
        assert_eq!(out.code, 2, "{args}: {}", out.stderr);
        assert!(
            out.stderr.contains("drop --namespace and --user"),
            "{}",
            out.stderr
        );
    }
    let out = cli("rm --shared --provider anthropic", "", dir.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        FileStore::new(dir.path(), test_key_file(dir.path()))
            .get_many(&shared, &["ANTHROPIC_API_KEY".to_string()])
            .unwrap()
            .is_empty()
    );
}

/// The test store's key: in a directory of its own, outside `<data_dir>/credentials`.
fn test_key_file(data_dir: impl AsRef<std::path::Path>) -> std::path::PathBuf {
    data_dir.as_ref().join("sealing/credentials.key")
}
