//! Tests of [`super`]: payloads built the way go-cty encodes them.
use super::super::cty::fixtures::{encode, map, obj, s, strs, unknown};
use super::super::hclspec::checks::{object_keys, problems};
use super::super::plugin::decode_plugin_config;
use super::super::provider::{CredentialMode, ProviderConfig};
use super::*;
use crate::pb::hashicorp::nomad::plugins::shared::hclspec::spec::Block as Kind;
use proptest::prelude::*;
use rmpv::Value;

const KEYS: [&str; 8] = [
    "args", "command", "debug", "image", "labels", "provider", "user_id", "work_dir",
];

/// What Nomad sends for `config { provider = "openai" }`: every key, defaults applied.
fn fields() -> Vec<(&'static str, Value)> {
    vec![
        ("args", Value::Nil),
        ("command", Value::Nil),
        ("debug", Value::Boolean(false)),
        ("image", Value::Nil),
        ("labels", Value::Nil),
        ("provider", s("openai")),
        ("user_id", Value::Nil),
        ("work_dir", s("/local")),
    ]
}

fn payload(overrides: Vec<(&'static str, Value)>) -> Vec<u8> {
    let mut fields = fields();
    for (k, v) in overrides {
        fields.iter_mut().find(|(key, _)| *key == k).expect(k).1 = v;
    }
    encode(&obj(fields))
}

fn plugin() -> PluginConfig {
    PluginConfig::default()
}

fn overridable() -> PluginConfig {
    let mut p = PluginConfig::default();
    p.security.allow_image_override = true;
    p
}

fn decode(overrides: Vec<(&'static str, Value)>) -> Result<TaskConfig, ConfigError> {
    decode_task_config(&payload(overrides), &plugin())
}

fn assert_err(overrides: Vec<(&'static str, Value)>, field: &str, fix: &str) {
    let e = decode(overrides).unwrap_err().to_string();
    assert!(e.starts_with(&format!("task config: {field}")), "{e}");
    assert!(e.contains(fix), "{e}");
}

fn labels(maps: Vec<Vec<(&str, &str)>>) -> Value {
    Value::Array(
        maps.into_iter()
            .map(|m| map(m.into_iter().map(|(k, v)| (k, s(v))).collect()))
            .collect(),
    )
}

#[test]
fn minimal_task_takes_everything_from_the_provider() {
    for (name, image, command, creds, optional) in [
        (
            "openai",
            "polydev-openai-runtime:latest",
            "codex",
            vec!["OPENAI_API_KEY"],
            vec![],
        ),
        (
            "anthropic",
            "polydev-anthropic-runtime:latest",
            "claude",
            vec!["ANTHROPIC_API_KEY"],
            vec![],
        ),
        (
            "google",
            "polydev-google-runtime:latest",
            "gemini",
            vec!["GOOGLE_API_KEY"],
            vec!["GOOGLE_PROJECT_ID"],
        ),
    ] {
        let t = decode(vec![("provider", s(name))]).unwrap();
        let provider = plugin().provider(name).unwrap();
        assert_eq!(provider.credentials(), creds);
        assert_eq!(provider.optional_credentials(), optional);
        assert_eq!(
            t,
            TaskConfig {
                provider,
                image: image.into(),
                argv: vec![command.into()],
                user_id: None,
                work_dir: "/local".into(),
                labels: BTreeMap::new(),
                debug: false,
            }
        );
    }
}

#[test]
fn null_defaults_are_applied_by_the_decoder_too() {
    let nils = payload(vec![("debug", Value::Nil), ("work_dir", Value::Nil)]);
    assert_eq!(
        decode_task_config(&nils, &plugin()),
        decode(vec![]),
        "nil debug/work_dir must mean false and /local"
    );
}

#[test]
fn every_option_overrides() {
    let t = decode_task_config(
        &payload(vec![
            ("provider", s("anthropic")),
            ("user_id", s("user_123@example.com")),
            ("command", s("/usr/local/bin/claude")),
            ("args", strs(&["-p", "Write a hello world function", ""])),
            ("work_dir", s("/local/repo")),
            ("image", s("registry.local/claude:2")),
            (
                "labels",
                labels(vec![
                    vec![("team", "search"), ("tier", "a")],
                    vec![("tier", "b")],
                ]),
            ),
            ("debug", Value::Boolean(true)),
        ]),
        &overridable(),
    )
    .unwrap();
    assert_eq!(t.provider.name(), "anthropic");
    assert_eq!(t.user_id.as_deref(), Some("user_123@example.com"));
    assert_eq!(
        t.argv,
        [
            "/usr/local/bin/claude",
            "-p",
            "Write a hello world function",
            ""
        ]
    );
    assert_eq!(t.work_dir, "/local/repo");
    assert_eq!(t.image, "registry.local/claude:2");
    assert_eq!(
        t.labels,
        BTreeMap::from([
            ("team".into(), "search".into()),
            ("tier".into(), "b".into())
        ])
    );
    assert!(t.debug);
    assert_eq!(t.provider.credentials(), ["ANTHROPIC_API_KEY"]);
}

#[test]
fn a_custom_provider_from_the_plugin_config_resolves() {
    let mut p = PluginConfig::default();
    p.providers.insert(
        "aider".into(),
        std::sync::Arc::new(ProviderConfig {
            image: "aider:1".into(),
            command: "aider".into(),
            credentials: vec!["OPENAI_API_KEY".into()],
            optional_credentials: vec!["AIDER_X".into()],
            credential_mode: CredentialMode::Env,
            cli: None,
        }),
    );
    let t = decode_task_config(&payload(vec![("provider", s("aider"))]), &p).unwrap();
    assert_eq!(
        (t.image.as_str(), t.argv.as_slice()),
        ("aider:1", &["aider".to_owned()][..])
    );
    assert_eq!(t.provider.optional_credentials(), ["AIDER_X"]);
    assert!(!t.provider.is_brokered());
}

#[test]
fn provider_errors() {
    assert_eq!(
        decode(vec![("provider", s("opnai"))])
            .unwrap_err()
            .to_string(),
        "task config: provider \"opnai\" is not configured on this node; use one of: \
         anthropic, google, openai"
    );
    assert_err(
        vec![("provider", Value::Nil)],
        "provider is required but missing",
        "set provider to one of: anthropic, google, openai",
    );
    assert_err(
        vec![("provider", Value::from(3))],
        "provider: expected a string",
        "restart",
    );
}

#[test]
fn empty_payload_is_an_error_that_points_at_recovery() {
    let e = decode_task_config(&[], &plugin()).unwrap_err();
    assert!(matches!(
        e,
        ConfigError::Empty {
            what: "task config",
            ..
        }
    ));
    assert!(
        e.to_string()
            .contains("recover the task from its handle's driver state"),
        "{e}"
    );
}

#[test]
fn malformed_payloads_are_rejected() {
    for bytes in [&[0xc0][..], &[0x05], &[0x91, 0xc0]] {
        let e = decode_task_config(bytes, &plugin())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("task config: expected an object"), "{e}");
    }
    let e = decode_task_config(&[0x82, 0xa1], &plugin())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("task config: the payload is not valid cty msgpack"),
        "{e}"
    );
}

#[test]
fn user_id_rule() {
    let max = format!("a{}", "b".repeat(127));
    for ok in ["user_123", "a", "9", "A.b@c-d_e", "x.y", max.as_str()] {
        assert_eq!(
            decode(vec![("user_id", s(ok))]).unwrap().user_id.as_deref(),
            Some(ok)
        );
    }
    let long = "a".repeat(129);
    for bad in [
        "", "../etc", "a/b", "a b", "a..b", ".a", "-a", "_a", "@a", "a\n", "ü", "a\0", &long,
    ] {
        let e = decode(vec![("user_id", s(bad))]).unwrap_err().to_string();
        assert!(
            e.starts_with("task config: user_id: the value"),
            "{bad:?}: {e}"
        );
        assert!(e.contains("no \"..\", no '/' and no whitespace"), "{e}");
        if bad.len() > 2 {
            assert!(!e.contains(bad), "the value must not be echoed: {e}");
        }
    }
}

#[test]
fn command_args_and_work_dir_errors() {
    assert_err(
        vec![("command", s(""))],
        "command: \"\" is not a single program",
        "provider's default is \"codex\"",
    );
    assert_err(
        vec![("command", s("codex exec"))],
        "command",
        "put its arguments in args",
    );
    assert_err(
        vec![("args", strs(&["ok", "a\0b"]))],
        "args[1]: contains a NUL byte",
        "remove the NUL",
    );
    assert_err(
        vec![("args", Value::Array(vec![Value::Nil]))],
        "args[0]: is null",
        "remove the null element",
    );
    assert_err(
        vec![("args", s("exec"))],
        "args: expected a list of strings",
        "restart",
    );
    assert_err(
        vec![("args", Value::Array(vec![Value::from(1)]))],
        "args[0]: expected a string",
        "restart",
    );
    for bad in ["local", "", "./x"] {
        assert_err(vec![("work_dir", s(bad))], "work_dir", "such as \"/local\"");
    }
    assert_err(
        vec![("debug", s("true"))],
        "debug: expected a bool",
        "restart",
    );
}

#[test]
fn image_override_needs_the_operator() {
    assert_err(
        vec![("image", s("evil:latest"))],
        "image: this node does not allow tasks to choose their image",
        "allow_image_override = true in the security block of the agent's plugin \"polydev\" config",
    );
    let e = decode_task_config(&payload(vec![("image", s("a b"))]), &overridable())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("task config: image: \"a b\" is not an image reference"),
        "{e}"
    );
    // the operator switch, decoded from the plugin config, is what enables it
    let plugin = decode_plugin_config(&encode(&obj(vec![(
        "security",
        obj(vec![("allow_image_override", Value::Boolean(true))]),
    )])))
    .unwrap();
    let t = decode_task_config(&payload(vec![("image", s("mine:1"))]), &plugin).unwrap();
    assert_eq!(t.image, "mine:1");
}

#[test]
fn label_errors() {
    for key in ["io.polydev.pool", "com.hashicorp.nomad.alloc_id"] {
        assert_err(
            vec![("labels", labels(vec![vec![("ok", "1")], vec![(key, "x")]]))],
            &format!("labels[1]: label {key:?} is in the reserved"),
            "rename the label",
        );
    }
    // prefixes without the dot are someone else's namespace
    let t = decode(vec![(
        "labels",
        labels(vec![vec![
            ("io.polydevx", "1"),
            ("com.hashicorp.nomadic", "2"),
        ]]),
    )])
    .unwrap();
    assert_eq!(t.labels.len(), 2);
    assert_err(
        vec![("labels", labels(vec![vec![("", "x")]]))],
        "labels[0]: has an empty label key",
        "non-empty key",
    );
    assert_err(
        vec![("labels", map(vec![("team", s("x"))]))],
        "labels: expected a list of maps",
        "restart",
    );
    assert_err(
        vec![(
            "labels",
            Value::Array(vec![map(vec![("team", Value::from(1))])]),
        )],
        "labels[0].team: expected a string",
        "restart",
    );
    assert_err(
        vec![(
            "labels",
            Value::Array(vec![map(vec![("team", Value::Nil)])]),
        )],
        "labels[0].team: is null",
        "give the entry a string value",
    );
    assert_err(
        vec![("labels", Value::Array(vec![Value::Nil]))],
        "labels[0]: is null",
        "remove the null element",
    );
}

#[test]
fn schema_is_well_formed_for_nomad() {
    let spec = task_config_schema();
    assert_eq!(problems(&spec), Vec::<String>::new());
    assert_eq!(object_keys(&spec), KEYS);
    let Some(Kind::Object(o)) = spec.block else {
        panic!()
    };
    let Some(Kind::Attr(provider)) = &o.attributes["provider"].block else {
        panic!()
    };
    assert!(provider.required);
    assert_eq!(
        o.attributes["labels"],
        attr("labels", "list(map(string))", false)
    );
    let literal_of = |key: &str| match &o.attributes[key].block {
        Some(Kind::Default(d)) => d.default.as_deref().cloned(),
        _ => None,
    };
    assert_eq!(literal_of("work_dir"), Some(literal("\"/local\"")));
    assert_eq!(literal_of("debug"), Some(literal("false")));
}

#[test]
fn every_schema_key_is_read_by_the_decoder() {
    for key in KEYS {
        let e = decode_task_config(&payload(vec![(key, unknown())]), &overridable()).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnknownValue { field, .. } if *field == format!("task config: {key}")),
            "{key}: {e}"
        );
    }
}

fn user_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}".prop_filter("no ..", |s| !s.contains(".."))
}

fn label_maps() -> impl Strategy<Value = Vec<Vec<(String, String)>>> {
    let key = "[a-z][a-z0-9._/-]{0,24}".prop_filter("not reserved", |k| {
        !RESERVED_LABEL_PREFIXES.iter().any(|p| k.starts_with(p))
    });
    proptest::collection::vec(proptest::collection::vec((key, "\\PC{0,16}"), 0..4), 0..4)
}

proptest! {
    #[test]
    fn valid_values_round_trip(
        id in user_id(),
        args in proptest::collection::vec("[^\u{0}]{0,40}", 0..6),
        maps in label_maps(),
        debug in any::<bool>(),
    ) {
        let label_value = Value::Array(
            maps.iter()
                .map(|m| Value::Map(m.iter().map(|(k, v)| (s(k), s(v))).collect()))
                .collect(),
        );
        let arg_value = Value::Array(args.iter().map(|a| s(a)).collect());
        let t = decode_task_config(
            &payload(vec![
                ("user_id", s(&id)),
                ("args", arg_value),
                ("labels", label_value),
                ("debug", Value::Boolean(debug)),
            ]),
            &plugin(),
        )
        .unwrap();
        prop_assert_eq!(t.user_id, Some(id));
        prop_assert_eq!(&t.argv[0], "codex");
        prop_assert_eq!(&t.argv[1..], &args[..]);
        let mut want = BTreeMap::new();
        for m in maps {
            want.extend(m);
        }
        prop_assert_eq!(t.labels, want);
        prop_assert_eq!(t.debug, debug);
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128)) {
        let _ = decode_task_config(&bytes, &plugin());
    }

    #[test]
    fn random_values_under_schema_keys_never_panic(
        idx in 0..KEYS.len(),
        v in prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::F64),
            "\\PC{0,12}".prop_map(Value::from),
            proptest::collection::vec("\\PC{0,4}".prop_map(Value::from), 0..3).prop_map(Value::Array),
            Just(unknown()),
            Just(Value::Binary(vec![1, 2])),
        ],
    ) {
        let bytes = payload(vec![(KEYS[idx], v)]);
        prop_assert_eq!(decode_task_config(&bytes, &overridable()), decode_task_config(&bytes, &overridable()));
    }
}
