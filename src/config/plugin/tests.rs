//! Tests of [`super`]: payloads built the way go-cty encodes them.
use super::super::cty::fixtures::{encode, map, obj, s, strs, unknown};
use super::super::hclspec::checks::{object_keys, problems};
use super::*;
use crate::config::{ApiAuth, CredentialMode, KnownCli};
use proptest::prelude::*;
use rmpv::Value;

/// What Nomad sends for `plugin "polydev" {}` with no config block: defaults applied,
/// empty block map, null blocks.
fn nomad_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("broker", Value::Nil),
        ("cold_start_parallelism", Value::from(0)),
        ("container_log", Value::Nil),
        ("credentials_from_env", Value::Boolean(true)),
        ("credentials_from_store", Value::Boolean(true)),
        ("credentials_key_file", s(DEFAULT_CREDENTIALS_KEY_FILE)),
        ("data_dir", s(DEFAULT_DATA_DIR)),
        ("disable_log_collection", Value::Boolean(false)),
        ("docker_endpoint", s(DEFAULT_DOCKER_ENDPOINT)),
        ("egress", Value::Nil),
        ("orphan_grace", s(DEFAULT_ORPHAN_GRACE)),
        ("pool", map(vec![])),
        ("provider", map(vec![])),
        ("security", Value::Nil),
        ("vault", Value::Nil),
    ]
}

/// The default payload with `overrides` replacing keys.
fn payload(overrides: Vec<(&'static str, Value)>) -> Vec<u8> {
    let mut fields = nomad_defaults();
    for (k, v) in overrides {
        fields.iter_mut().find(|(key, _)| *key == k).expect(k).1 = v;
    }
    encode(&obj(fields))
}

/// A `security {}` block as Nomad sends it, with `overrides`.
fn security_block(overrides: Vec<(&'static str, Value)>) -> Value {
    let mut fields = vec![
        ("allow_image_override", Value::Boolean(false)),
        ("network_mode", s("")),
        ("pids_limit", Value::from(512)),
        ("read_only_rootfs", Value::Boolean(false)),
        ("runtime", s("")),
        ("task_gid", Value::from(DEFAULT_TASK_ID)),
        ("task_uid", Value::from(DEFAULT_TASK_ID)),
    ];
    for (k, v) in overrides {
        fields.iter_mut().find(|(key, _)| *key == k).expect(k).1 = v;
    }
    obj(fields)
}

fn log_block(max_size: Value, max_files: Value) -> Value {
    obj(vec![("max_files", max_files), ("max_size", max_size)])
}

/// A provider block with every attribute, null unless given.
fn provider_block(set: Vec<(&'static str, Value)>) -> Value {
    let mut fields = vec![
        ("api_auth", Value::Nil),
        ("api_upstream", Value::Nil),
        ("base_url_env", Value::Nil),
        ("base_url_path", Value::Nil),
        ("command", Value::Nil),
        ("credential_mode", Value::Nil),
        ("credentials", Value::Nil),
        ("image", Value::Nil),
        ("optional_credentials", Value::Nil),
        ("upstream_ca_file", Value::Nil),
    ];
    for (k, v) in set {
        fields.iter_mut().find(|(key, _)| *key == k).expect(k).1 = v;
    }
    obj(fields)
}

fn providers(entries: Vec<(&str, Value)>) -> Vec<u8> {
    payload(vec![("provider", map(entries))])
}

fn err(bytes: &[u8]) -> String {
    decode_plugin_config(bytes).unwrap_err().to_string()
}

fn assert_err(bytes: &[u8], field: &str, fix: &str) {
    let e = err(bytes);
    assert!(e.starts_with(&format!("plugin config: {field}")), "{e}");
    assert!(e.contains(fix), "{e}");
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = PluginConfig::default();
    assert_eq!(c.docker_endpoint.to_string(), "unix:///var/run/docker.sock");
    assert_eq!(
        c.docker_endpoint.socket_path(),
        Path::new("/var/run/docker.sock")
    );
    assert_eq!(c.data_dir, Path::new("/var/lib/polydev"));
    assert_eq!(
        c.security,
        SecurityConfig {
            pids_limit: 512,
            read_only_rootfs: false,
            runtime: None,
            allow_image_override: false,
            network_mode: None,
            task_uid: 2_100_000_000,
            task_gid: 2_100_000_000,
        }
    );
    assert_eq!(
        c.container_log,
        ContainerLogConfig {
            max_size: "100m".into(),
            max_files: 3
        }
    );
    assert!(!c.disable_log_collection);
    assert!(c.credentials_from_env);
    assert_eq!(c.providers.len(), 3);
    let expect = [
        (
            "openai",
            "polydev-openai-runtime:latest",
            "codex",
            "OPENAI_API_KEY",
            "https://api.openai.com",
            ApiAuth::Bearer,
            KnownCli::Codex,
        ),
        (
            "anthropic",
            "polydev-anthropic-runtime:latest",
            "claude",
            "ANTHROPIC_API_KEY",
            "https://api.anthropic.com",
            ApiAuth::XApiKey,
            KnownCli::ClaudeCode,
        ),
        (
            "google",
            "polydev-google-runtime:latest",
            "gemini",
            "GOOGLE_API_KEY",
            "https://generativelanguage.googleapis.com",
            ApiAuth::XGoogApiKey,
            KnownCli::GeminiCli,
        ),
    ];
    for (name, image, command, key, upstream, auth, cli) in expect {
        let p = &c.providers[name];
        assert_eq!((p.image.as_str(), p.command.as_str()), (image, command));
        assert_eq!(p.credentials, vec![key.to_string()]);
        assert_eq!(p.cli, Some(cli));
        let route = p
            .credential_mode
            .route()
            .expect("built-ins default to broker mode");
        assert_eq!(
            (route.upstream_origin.as_str(), route.upstream_path.as_str()),
            (upstream, "")
        );
        assert_eq!((route.auth, route.ca_file.as_ref()), (auth, None));
    }
    assert_eq!(
        c.providers["google"].optional_credentials,
        vec!["GOOGLE_PROJECT_ID".to_string()]
    );
    assert_eq!(c.broker, crate::config::BrokerConfig::default());
    assert!(c.egress.is_empty());
}

#[test]
fn every_form_of_no_configuration_gives_the_defaults() {
    let all_nil = encode(&obj(nomad_defaults()
        .into_iter()
        .map(|(k, _)| (k, Value::Nil))
        .collect()));
    let empty_blocks = payload(vec![
        ("security", security_block(vec![])),
        ("container_log", log_block(s("100m"), Value::from(3))),
    ]);
    for bytes in [vec![], vec![0xc0], payload(vec![]), all_nil, empty_blocks] {
        assert_eq!(
            decode_plugin_config(&bytes).unwrap(),
            PluginConfig::default(),
            "{bytes:02x?}"
        );
    }
}

#[test]
fn decoding_is_idempotent() {
    let bytes = payload(vec![
        ("data_dir", s("/srv/polydev")),
        (
            "provider",
            map(vec![("openai", provider_block(vec![("image", s("x:1"))]))]),
        ),
    ]);
    assert_eq!(decode_plugin_config(&bytes), decode_plugin_config(&bytes));
}

#[test]
fn top_level_overrides() {
    let c = decode_plugin_config(&payload(vec![
        ("docker_endpoint", s("unix:///run/user/1000/docker.sock")),
        ("data_dir", s("/srv/polydev")),
        ("disable_log_collection", Value::Boolean(true)),
        ("credentials_from_env", Value::Boolean(false)),
    ]))
    .unwrap();
    assert_eq!(
        c.docker_endpoint,
        DockerEndpoint::Unix("/run/user/1000/docker.sock".into())
    );
    assert_eq!(c.data_dir, Path::new("/srv/polydev"));
    assert!(c.disable_log_collection);
    assert!(!c.credentials_from_env);
    assert_eq!(c.providers, builtin_providers());
}

#[test]
fn security_overrides() {
    let c = decode_plugin_config(&payload(vec![(
        "security",
        security_block(vec![
            ("pids_limit", Value::from(200)), // cc c8
            ("read_only_rootfs", Value::Boolean(true)),
            ("runtime", s("runsc")),
            ("allow_image_override", Value::Boolean(true)),
            ("network_mode", s("none")),
            ("task_uid", Value::from(1000)),
            ("task_gid", Value::from(2_147_483_647)),
        ]),
    )]))
    .unwrap();
    assert_eq!(
        c.security,
        SecurityConfig {
            pids_limit: 200,
            read_only_rootfs: true,
            runtime: Some("runsc".into()),
            allow_image_override: true,
            network_mode: Some(NetworkMode::None),
            task_uid: 1000,
            task_gid: 2_147_483_647,
        }
    );
    for (mode, want) in [
        ("bridge", NetworkMode::Bridge),
        ("host", NetworkMode::Host),
        ("none", NetworkMode::None),
    ] {
        let c = decode_plugin_config(&payload(vec![(
            "security",
            security_block(vec![("network_mode", s(mode))]),
        )]))
        .unwrap();
        assert_eq!(c.security.network_mode, Some(want));
        assert_eq!(want.as_str(), mode);
    }
}

#[test]
fn pids_limit_accepts_every_cty_number_form() {
    let raw_payload = |pids: &[u8]| {
        // security object encoded by hand so the number bytes are exactly cty's.
        let mut sec = encode(&s("allow_image_override"));
        sec.insert(0, 0x85);
        sec.push(0xc2);
        sec.extend(encode(&s("network_mode")));
        sec.extend(encode(&s("")));
        sec.extend(encode(&s("pids_limit")));
        sec.extend_from_slice(pids);
        sec.extend(encode(&s("read_only_rootfs")));
        sec.push(0xc2);
        sec.extend(encode(&s("runtime")));
        sec.extend(encode(&s("")));
        let mut out = encode(&obj(nomad_defaults()
            .into_iter()
            .filter(|(k, _)| *k != "security")
            .collect()));
        out[0] += 1; // one more key in the fixmap
        // "security" sorts last, so appending keeps the keys sorted.
        out.extend(encode(&s("security")));
        out.extend(sec);
        decode_plugin_config(&out).map(|c| c.security.pids_limit)
    };
    assert_eq!(raw_payload(&[0x05]), Ok(5));
    assert_eq!(raw_payload(&[0xcc, 0xc8]), Ok(200));
    assert_eq!(raw_payload(&[0xcd, 0x01, 0x2c]), Ok(300));
    assert_eq!(raw_payload(&[0xcb, 0x40, 0x80, 0, 0, 0, 0, 0, 0]), Ok(512));
    assert_eq!(raw_payload(&[0xa4, b'1', b'0', b'2', b'4']), Ok(1024));
    let e = raw_payload(&[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0])
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("plugin config: security.pids_limit: 1.5 is not a whole number"),
        "{e}"
    );
    let e = raw_payload(&[0xff]).unwrap_err().to_string();
    assert!(
        e.starts_with("plugin config: security.pids_limit: -1 is not"),
        "{e}"
    );
}

#[test]
fn security_errors() {
    let sec = |k, v| payload(vec![("security", security_block(vec![(k, v)]))]);
    assert_err(
        &sec("pids_limit", Value::from(0)),
        "security.pids_limit: 0",
        "from 1 to 4194304, such as 512",
    );
    assert_err(
        &sec("pids_limit", Value::from(-5)),
        "security.pids_limit: -5",
        "from 1 to",
    );
    assert_err(
        &sec("pids_limit", Value::from(1_i64 << 40)),
        "security.pids_limit: 1099511627776",
        "from 1 to",
    );
    assert_err(
        &sec("pids_limit", s("many")),
        "security.pids_limit: expected a number",
        "restart",
    );
    assert_err(
        &sec("network_mode", s("overlay")),
        "security.network_mode: \"overlay\" is not a supported",
        "use one of: bridge, none, host",
    );
    assert_err(
        &sec("runtime", s("run sc")),
        "security.runtime: \"run sc\"",
        "such as \"runsc\"",
    );
    assert_err(
        &sec("read_only_rootfs", s("yes")),
        "security.read_only_rootfs: expected a bool",
        "restart",
    );
    assert_err(
        &payload(vec![("security", strs(&["x"]))]),
        "security: expected an object",
        "restart",
    );
}

#[test]
fn task_ids_are_never_root_nor_past_two_to_the_31() {
    let sec = |k, v| payload(vec![("security", security_block(vec![(k, v)]))]);
    for (key, kind) in [("task_uid", "uid"), ("task_gid", "gid")] {
        assert_err(
            &sec(key, Value::from(0)),
            &format!("security.{key}: 0 is root's {kind}: tasks never run as root"),
            &format!(
                "set a {kind} from 1 to 2147483647 that no host account or group has, such as \
                 2100000000 (the default)"
            ),
        );
        for bad in [-1_i64, 2_147_483_648, 4_294_967_295, 1 << 40] {
            assert_err(
                &sec(key, Value::from(bad)),
                &format!("security.{key}: {bad} is not a usable {kind}"),
                "from 1 to 2147483647",
            );
        }
        assert_err(
            &sec(key, Value::from(1.5)),
            &format!("security.{key}: 1.5 is not a whole number"),
            "",
        );
    }
}

#[test]
fn container_log_overrides_and_errors() {
    let log = |size, files| payload(vec![("container_log", log_block(size, files))]);
    let c = decode_plugin_config(&log(s("10m"), Value::from(7))).unwrap();
    assert_eq!(
        c.container_log,
        ContainerLogConfig {
            max_size: "10m".into(),
            max_files: 7
        }
    );
    for ok in ["1", "500k", "2g", "0010m"] {
        assert_eq!(
            decode_plugin_config(&log(s(ok), Value::Nil))
                .unwrap()
                .container_log
                .max_size,
            ok
        );
    }
    for bad in ["", "10M", "10mb", "m", "0", "0k", "-1m", "1.5m", " 1m"] {
        assert_err(
            &log(s(bad), Value::from(3)),
            "container_log.max_size",
            "positive number with an optional k, m or g suffix",
        );
    }
    for bad in [Value::from(0), Value::from(-1), Value::from(1_u64 << 33)] {
        assert_err(
            &log(s("1m"), bad),
            "container_log.max_files",
            "keep at least 1 file",
        );
    }
}

#[test]
fn endpoint_and_data_dir_errors() {
    for bad in [
        "tcp://127.0.0.1:2375",
        "",
        "/var/run/docker.sock",
        "npipe:////./pipe/docker",
    ] {
        assert_err(
            &payload(vec![("docker_endpoint", s(bad))]),
            "docker_endpoint",
            "use a unix socket URL such as \"unix:///var/run/docker.sock\"",
        );
    }
    assert_err(
        &payload(vec![("docker_endpoint", s("unix://var/run/docker.sock"))]),
        "docker_endpoint: \"unix://var/run/docker.sock\" does not name an absolute",
        "unix:///var/run/docker.sock",
    );
    for bad in ["", "var/lib/polydev", "./x"] {
        assert_err(
            &payload(vec![("data_dir", s(bad))]),
            "data_dir",
            "use an absolute directory such as \"/var/lib/polydev\"",
        );
    }
    assert_err(
        &payload(vec![("data_dir", Value::from(1))]),
        "data_dir: expected a string",
        "restart",
    );
}

#[test]
fn the_key_file_is_outside_the_entries_it_seals() {
    let defaults = decode_plugin_config(&payload(vec![])).unwrap();
    assert_eq!(
        defaults.credentials_key_file,
        Path::new("/etc/polydev/credentials.key")
    );
    assert!(
        !defaults
            .credentials_key_file
            .starts_with(&defaults.data_dir)
    );
    let moved = decode_plugin_config(&payload(vec![
        ("data_dir", s("/srv/polydev")),
        ("credentials_key_file", s("/srv/keys/polydev.key")),
    ]))
    .unwrap();
    assert_eq!(
        moved.credentials_key_file,
        Path::new("/srv/keys/polydev.key")
    );
    for bad in [
        "/srv/polydev/credentials/credentials.key",
        "/srv/polydev/credentials.key",
        "/srv/polydev/credentials/default/k",
        "/srv/keys/../polydev/credentials/k",
    ] {
        assert_err(
            &payload(vec![
                ("data_dir", s("/srv/polydev")),
                ("credentials_key_file", s(bad)),
            ]),
            "credentials_key_file",
            "beside the entries it seals",
        );
    }
    for bad in ["", "keys/credentials.key", "/etc/polydev/"] {
        assert_err(
            &payload(vec![("credentials_key_file", s(bad))]),
            "credentials_key_file",
            "is not an absolute file path",
        );
    }
}

#[test]
fn builtin_provider_block_overrides_only_what_it_sets() {
    let c = decode_plugin_config(&providers(vec![
        (
            "openai",
            provider_block(vec![("image", s("registry.local/codex:1.2"))]),
        ),
        (
            "google",
            provider_block(vec![
                ("command", s("/usr/local/bin/gemini")),
                ("optional_credentials", strs(&[])),
            ]),
        ),
        (
            "anthropic",
            provider_block(vec![("credentials", strs(&["ANTHROPIC_API_KEY", "X_1"]))]),
        ),
    ]))
    .unwrap();
    let mut want = builtin_providers();
    fn edit<'a>(
        want: &'a mut BTreeMap<String, std::sync::Arc<ProviderConfig>>,
        name: &str,
    ) -> &'a mut ProviderConfig {
        std::sync::Arc::make_mut(want.get_mut(name).unwrap())
    }
    edit(&mut want, "openai").image = "registry.local/codex:1.2".into();
    let google = edit(&mut want, "google");
    google.command = "/usr/local/bin/gemini".into();
    google.optional_credentials = vec![];
    edit(&mut want, "anthropic").credentials = vec!["ANTHROPIC_API_KEY".into(), "X_1".into()];
    assert_eq!(c.providers, want);
}

#[test]
fn custom_provider_is_added_next_to_the_builtins() {
    let c = decode_plugin_config(&providers(vec![(
        "aider-2",
        provider_block(vec![
            ("image", s("aider:latest")),
            ("command", s("aider")),
            ("credentials", strs(&["OPENAI_API_KEY"])),
            ("optional_credentials", strs(&["_EXTRA"])),
        ]),
    )]))
    .unwrap();
    assert_eq!(c.providers.len(), 4);
    assert_eq!(
        *c.providers["aider-2"],
        ProviderConfig {
            image: "aider:latest".into(),
            command: "aider".into(),
            credentials: vec!["OPENAI_API_KEY".into()],
            optional_credentials: vec!["_EXTRA".into()],
            credential_mode: CredentialMode::Env,
            cli: None,
        }
    );
    // credentials may be omitted for a custom provider
    let c = decode_plugin_config(&providers(vec![(
        "local",
        provider_block(vec![("image", s("l:1")), ("command", s("l"))]),
    )]))
    .unwrap();
    assert!(c.providers["local"].credentials.is_empty());
}

#[test]
fn provider_errors() {
    let one = |name, set| providers(vec![(name, provider_block(set))]);
    assert_err(
        &one("aider", vec![("command", s("aider"))]),
        "provider \"aider\".image is required but missing",
        "must set both image and command",
    );
    assert_err(
        &one("aider", vec![("image", s("aider:1"))]),
        "provider \"aider\".command is required but missing",
        "must set both image and command",
    );
    for bad in ["Aider", "1x", "a b", "", "a.b", &"a".repeat(33)] {
        let bytes = providers(vec![(
            bad,
            provider_block(vec![("image", s("i")), ("command", s("c"))]),
        )]);
        assert_err(
            &bytes,
            &format!("provider {bad:?}: the provider name"),
            "a lower-case letter, then",
        );
    }
    assert_err(
        &one("openai", vec![("credentials", strs(&["openai_key"]))]),
        "provider \"openai\".credentials[0]: \"openai_key\" is not an environment variable name",
        "upper-case letters, digits and '_'",
    );
    assert_err(
        &one("openai", vec![("credentials", strs(&["OK", "9LIVES"]))]),
        "provider \"openai\".credentials[1]",
        "not starting with a digit",
    );
    assert_err(
        &one(
            "google",
            vec![("optional_credentials", strs(&["GOOGLE_API_KEY"]))],
        ),
        "provider \"google\".optional_credentials[0]: \"GOOGLE_API_KEY\" is listed more than once",
        "list each variable once",
    );
    assert_err(
        &one("openai", vec![("image", s("my image"))]),
        "provider \"openai\".image: \"my image\" is not an image reference",
        "without spaces",
    );
    assert_err(
        &one("openai", vec![("image", s(""))]),
        "provider \"openai\".image",
        "without spaces",
    );
    assert_err(
        &one("openai", vec![("command", s("npx codex"))]),
        "provider \"openai\".command",
        "tasks pass arguments with args",
    );
    assert_err(
        &one(
            "openai",
            vec![("credentials", Value::Array(vec![Value::Nil]))],
        ),
        "provider \"openai\".credentials[0]: is null",
        "remove the null element",
    );
    assert_err(
        &providers(vec![("openai", Value::Nil)]),
        "provider \"openai\": is null",
        "remove the empty block",
    );
    assert_err(
        &payload(vec![("provider", strs(&[]))]),
        "provider: expected a map of blocks",
        "restart",
    );
}

#[test]
fn malformed_payloads_are_rejected() {
    for bytes in [&[0x05][..], &[0xa1, b'x'], &[0x90]] {
        let e = err(bytes);
        assert!(e.starts_with("plugin config: expected an object"), "{e}");
    }
    let e = err(&[0x81]);
    assert!(
        e.starts_with("plugin config: the payload is not valid cty msgpack"),
        "{e}"
    );
}

#[test]
fn schema_is_well_formed_for_nomad() {
    let spec = plugin_config_schema();
    assert_eq!(problems(&spec), Vec::<String>::new());
    let mut want: Vec<String> = nomad_defaults()
        .into_iter()
        .map(|(k, _)| k.to_owned())
        .collect();
    want.sort();
    assert_eq!(object_keys(&spec), want);
}

#[test]
fn schema_defaults_match_the_decoder_defaults() {
    use crate::pb::hashicorp::nomad::plugins::shared::hclspec::spec::Block as Kind;
    let Some(Kind::Object(root)) = plugin_config_schema().block else {
        panic!()
    };
    let literal_of = |spec: &Spec| match &spec.block {
        Some(Kind::Default(d)) => match d.default.as_deref().and_then(|d| d.block.as_ref()) {
            Some(Kind::Literal(l)) => l.value.clone(),
            _ => panic!("default without literal"),
        },
        _ => panic!("not a default"),
    };
    let nested = |key: &str| match &root.attributes[key].block {
        Some(Kind::BlockValue(b)) => match b.nested.as_deref().and_then(|n| n.block.as_ref()) {
            Some(Kind::Object(o)) => o.attributes.clone(),
            _ => panic!(),
        },
        _ => panic!(),
    };
    assert_eq!(
        literal_of(&root.attributes["docker_endpoint"]),
        "\"unix:///var/run/docker.sock\""
    );
    assert_eq!(
        literal_of(&root.attributes["data_dir"]),
        "\"/var/lib/polydev\""
    );
    assert_eq!(
        literal_of(&root.attributes["disable_log_collection"]),
        "false"
    );
    assert_eq!(literal_of(&root.attributes["credentials_from_env"]), "true");
    let sec = nested("security");
    assert_eq!(literal_of(&sec["pids_limit"]), "512");
    assert_eq!(literal_of(&sec["read_only_rootfs"]), "false");
    assert_eq!(literal_of(&sec["runtime"]), "\"\"");
    assert_eq!(literal_of(&sec["allow_image_override"]), "false");
    assert_eq!(literal_of(&sec["network_mode"]), "\"\"");
    assert_eq!(literal_of(&sec["task_uid"]), "2100000000");
    assert_eq!(literal_of(&sec["task_gid"]), "2100000000");
    let log = nested("container_log");
    assert_eq!(literal_of(&log["max_size"]), "\"100m\"");
    assert_eq!(literal_of(&log["max_files"]), "3");
}

#[test]
fn every_schema_key_is_read_by_the_decoder() {
    // An unknown value under a key is only reported if the decoder reads that key.
    for (key, _) in nomad_defaults() {
        let e = decode_plugin_config(&payload(vec![(key, unknown())])).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownValue { field, .. } if *field == format!("plugin config: {key}")),
            "{key}: {e}"
        );
    }
    for key in [
        "allow_image_override",
        "network_mode",
        "pids_limit",
        "read_only_rootfs",
        "runtime",
        "task_gid",
        "task_uid",
    ] {
        let e = err(&payload(vec![(
            "security",
            security_block(vec![(key, unknown())]),
        )]));
        assert!(
            e.starts_with(&format!(
                "plugin config: security.{key}: the value is unknown"
            )),
            "{e}"
        );
    }
    for (size, files, key) in [
        (unknown(), Value::from(1), "max_size"),
        (s("1m"), unknown(), "max_files"),
    ] {
        let e = err(&payload(vec![("container_log", log_block(size, files))]));
        assert!(
            e.starts_with(&format!(
                "plugin config: container_log.{key}: the value is unknown"
            )),
            "{e}"
        );
    }
    for key in ["command", "credentials", "image", "optional_credentials"] {
        let e = err(&providers(vec![(
            "openai",
            provider_block(vec![(key, unknown())]),
        )]));
        assert!(
            e.starts_with(&format!(
                "plugin config: provider \"openai\".{key}: the value is unknown"
            )),
            "{e}"
        );
    }
}

fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Nil),
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::F64),
        "[a-z0-9/:._ -]{0,12}".prop_map(Value::from),
        Just(unknown()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..4).prop_map(|kv| {
                Value::Map(kv.into_iter().map(|(k, v)| (Value::from(k), v)).collect())
            }),
        ]
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_plugin_config(&bytes);
    }

    #[test]
    fn random_values_under_schema_keys_never_panic(
        idx in 0..7_usize,
        v in arb_value(),
    ) {
        let key = nomad_defaults()[idx].0;
        let bytes = payload(vec![(key, v)]);
        let a = decode_plugin_config(&bytes);
        prop_assert_eq!(a, decode_plugin_config(&bytes));
    }
}

#[test]
fn cold_start_parallelism_defaults_to_four_per_cpu_and_takes_a_bounded_number() {
    let defaults = decode_plugin_config(&payload(vec![])).unwrap();
    assert_eq!(defaults.cold_start_parallelism, 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(defaults.cold_starts_at_once(), cpus * 4);

    let set = decode_plugin_config(&payload(vec![("cold_start_parallelism", Value::from(3))]));
    assert_eq!(set.unwrap().cold_starts_at_once(), 3);

    for bad in [Value::from(-1), Value::from(257)] {
        let err = decode_plugin_config(&payload(vec![("cold_start_parallelism", bad)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cold_start_parallelism"), "{err}");
        assert!(err.contains("out of range"), "{err}");
        assert!(err.contains("up to 256"), "{err}");
    }
}
