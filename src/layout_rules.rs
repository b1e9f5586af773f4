//! The "never" rules of `lib.rs`'s layout section, checked on the source text: which module may
//! name which. The compiler allows any path inside one crate; these tests are what keeps the
//! layers apart. A rule that fails names the file and the module it must not name. (`lib.rs`,
//! which states the rules, and this file are not checked against them.)

/// Modules named only by the composition root ([`crate::assembly`]) and themselves: the
/// choices that differ between production, the operator CLI and the tests.
const ONLY_THE_ROOT_NAMES: [&str; 2] = ["docker", "vault"];

/// Items named only by the composition root and the module that defines them.
const ONLY_THE_ROOT_USES: [(&str, &str); 2] =
    [("ProcessForwarder", "logs"), ("source_for", "credentials")];

/// What the gRPC adapter never names: it asks the root for the core, and talks to the core.
const DRIVER_NEVER_NAMES: [&str; 7] = [
    "broker",
    "credentials",
    "docker",
    "logs",
    "pool",
    "task_user",
    "vault",
];

/// The crate modules `text` names through paths from the crate root, also inside `{…}` groups
/// of a `use`.
fn crate_modules_named(text: &str) -> Vec<String> {
    let root = concat!("crate", "::");
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut named = Vec::new();
    for (at, _) in text.match_indices(root) {
        let rest = &text[at + root.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            // Only the first segment of each path in the group is a module of the crate.
            let (mut depth, mut expecting, mut word) = (0, true, String::new());
            for c in group[..end].chars().chain(std::iter::once(' ')) {
                if is_ident(c) {
                    word.push(c);
                    continue;
                }
                if !word.is_empty() {
                    if expecting && depth == 0 {
                        named.push(std::mem::take(&mut word));
                    }
                    word.clear();
                    expecting = false;
                }
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => expecting = true,
                    _ => {}
                }
            }
        } else {
            let module: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !module.is_empty() {
                named.push(module);
            }
        }
    }
    named
}

/// Every `.rs` file under `src/<dir>`, with its text.
fn sources(dir: &str) -> Vec<(std::path::PathBuf, String)> {
    let mut pending = vec![
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(dir),
    ];
    let mut found = Vec::new();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            found.push((path, text));
        }
    }
    assert!(!found.is_empty(), "no sources under src/{dir}");
    found
}

#[test]
fn crate_paths_are_found_also_in_groups() {
    let text = concat!(
        "use crate",
        "::config::VaultConfig;\nuse crate",
        "::{\n    tls,\n    vault::{kv, http},\n};\n",
        "let x = crate",
        "::credentials::names::check(a, b);"
    );
    assert_eq!(
        crate_modules_named(text),
        ["config", "tls", "vault", "credentials"]
    );
}

/// `credential_model` is a leaf, and `config` and `vault` never name
/// `credentials` (nor `config` `vault`), so there is no cycle between the three.
#[test]
fn the_leaf_names_nothing_and_config_and_vault_never_name_credentials() {
    for (path, text) in sources("credential_model") {
        let named = crate_modules_named(&text);
        assert!(named.is_empty(), "{} names {named:?}", path.display());
        assert!(
            !text.contains(concat!("super", "::super")),
            "{}",
            path.display()
        );
    }
    for (dir, forbidden) in [
        ("config", &["credentials", "vault"][..]),
        ("vault", &["credentials"][..]),
    ] {
        for (path, text) in sources(dir) {
            let named = crate_modules_named(&text);
            for module in forbidden {
                assert!(
                    !named.iter().any(|m| m == module),
                    "{} names {module}",
                    path.display()
                );
            }
        }
    }
}

/// `docker` and `vault` are named by the root alone (so `logs` never names `docker`, and
/// `credentials` builds its policy from any [`crate::credential_model::CredentialStore`]).
#[test]
fn only_the_composition_root_names_docker_and_vault() {
    for (path, text) in sources("") {
        let relative = path_in_src(&path);
        let own_module = relative
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs");
        if ["assembly", "layout_rules", "lib", "main"].contains(&own_module) {
            continue;
        }
        let named = crate_modules_named(&text);
        for module in ONLY_THE_ROOT_NAMES {
            assert!(
                own_module == module || !named.iter().any(|m| m == module),
                "src/{relative} names {module}: ask crate::assembly for it"
            );
        }
    }
}

/// The process forwarder and the credential policy are built by the root alone.
#[test]
fn only_the_composition_root_builds_the_forwarder_process_and_the_credential_policy() {
    for (path, text) in sources("") {
        let relative = path_in_src(&path);
        let own_module = relative
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs");
        for (item, home) in ONLY_THE_ROOT_USES {
            if ["assembly", "layout_rules", "lib", home].contains(&own_module) {
                continue;
            }
            assert!(
                !names_identifier(&text, item),
                "src/{relative} names {item}: ask crate::assembly for it"
            );
        }
    }
}

/// The gRPC adapter needs about half the modules it needed when it wired the parts itself.
#[test]
fn the_driver_asks_the_root_and_names_no_part_it_does_not_call() {
    for (path, text) in sources("driver") {
        let named = crate_modules_named(&text);
        for module in DRIVER_NEVER_NAMES {
            assert!(
                !named.iter().any(|m| m == module),
                "{} names {module}",
                path.display()
            );
        }
    }
}

/// `path` relative to `src/`, with `/` separators.
fn path_in_src(path: &std::path::Path) -> String {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    path.strip_prefix(&src)
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Whether `text` has `identifier` as a whole word.
fn names_identifier(text: &str, identifier: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(identifier).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + identifier.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn identifiers_are_matched_as_whole_words() {
    assert!(names_identifier("use x::source_for;", "source_for"));
    assert!(!names_identifier("fn source_for_tests()", "source_for"));
    assert!(!names_identifier("my_source_for", "source_for"));
}

/// The configuration is decoded below every part that runs: `config` names only itself, the
/// leaves it shares with the others and the generated protos (its hclspec schemas).
#[test]
fn config_names_only_leaves() {
    const CONFIG_MAY_NAME: [&str; 4] = ["config", "credential_model", "pb", "request_path"];
    for (path, text) in sources("config") {
        for module in crate_modules_named(&text) {
            assert!(
                CONFIG_MAY_NAME.contains(&module.as_str()),
                "src/{} names {module}: config may name only {CONFIG_MAY_NAME:?}",
                path_in_src(&path)
            );
        }
    }
}

/// `core` and `pool` never name each other (the core reaches the pool through `pool_port`), and
/// `container_parts`, which both build containers from, names neither.
#[test]
fn core_and_pool_never_name_each_other() {
    for (dir, forbidden) in [
        ("core", &["pool"][..]),
        ("pool", &["core"][..]),
        ("container_parts.rs", &["core", "pool"][..]),
    ] {
        for (path, text) in sources(dir) {
            let named = crate_modules_named(&text);
            for module in forbidden {
                assert!(
                    !named.iter().any(|m| m == module),
                    "src/{} names {module}",
                    path_in_src(&path)
                );
            }
        }
    }
}
