use super::super::cty::fixtures::{encode, map, obj, s, strs};
use super::super::{PluginConfig, decode_plugin_config};
use super::*;
use rmpv::Value;

/// A plugin config with one `provider "<name>" {}` block of `fields`.
fn with_provider(name: &str, fields: Vec<(&str, Value)>) -> Result<PluginConfig, ConfigError> {
    decode_plugin_config(&encode(&map(vec![(
        "provider",
        map(vec![(name, obj(fields))]),
    )])))
}

#[test]
fn a_builtin_keeps_broker_mode_and_takes_a_new_upstream_and_ca() {
    let c = with_provider(
        "openai",
        vec![
            ("api_upstream", s("https://gw.internal:8443/openai/")),
            ("upstream_ca_file", s("/etc/polydev/ca.pem")),
        ],
    )
    .unwrap();
    let route = c.providers["openai"]
        .credential_mode
        .route()
        .unwrap()
        .clone();
    assert_eq!(route.upstream_origin, "https://gw.internal:8443");
    assert_eq!(route.upstream_path, "/openai");
    assert_eq!(route.ca_file, Some(PathBuf::from("/etc/polydev/ca.pem")));
    assert_eq!(route.auth, ApiAuth::Bearer);
    assert_eq!(c.providers["openai"].cli, Some(KnownCli::Codex));
}

#[test]
fn a_builtin_can_go_to_env_mode_but_then_takes_no_broker_settings() {
    let c = with_provider("anthropic", vec![("credential_mode", s("env"))]).unwrap();
    assert_eq!(
        c.providers["anthropic"].credential_mode,
        CredentialMode::Env
    );
    let err = with_provider(
        "anthropic",
        vec![
            ("credential_mode", s("env")),
            ("api_upstream", s("https://x")),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("api_upstream") && err.contains("env mode"),
        "{err}"
    );
}

#[test]
fn custom_providers_default_to_env_and_need_every_broker_setting_for_broker_mode() {
    let base = || {
        vec![
            ("image", s("aider:1")),
            ("command", s("aider")),
            ("credentials", strs(&["OPENAI_API_KEY"])),
        ]
    };
    let c = with_provider("aider", base()).unwrap();
    assert_eq!(c.providers["aider"].credential_mode, CredentialMode::Env);

    let mut broker = base();
    broker.push(("credential_mode", s("broker")));
    let err = with_provider("aider", broker.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_upstream"), "{err}");
    broker.push(("api_upstream", s("https://api.openai.com")));
    let err = with_provider("aider", broker.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("api_auth"), "{err}");
    broker.push(("api_auth", s("bearer")));
    let err = with_provider("aider", broker.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("base_url_env"), "{err}");
    broker.push(("base_url_env", strs(&["OPENAI_API_BASE"])));
    broker.push(("base_url_path", s("/v1")));
    let c = with_provider("aider", broker).unwrap();
    let route = c.providers["aider"]
        .credential_mode
        .route()
        .unwrap()
        .clone();
    assert_eq!(route.base_url_env, vec!["OPENAI_API_BASE".to_string()]);
    assert_eq!(route.base_url_path, "/v1");
    assert_eq!(c.providers["aider"].cli, None);
}

#[test]
fn bad_broker_settings_name_the_field_and_the_fix() {
    let cases: Vec<(Vec<(&str, Value)>, &str)> = vec![
        (
            vec![("api_upstream", s("http://api.openai.com"))],
            "clear text",
        ),
        (vec![("api_upstream", s("ftp://x"))], "https://"),
        (vec![("api_upstream", s("https://u:p@x"))], "user"),
        (vec![("api_upstream", s("https://x/?a=1"))], "query"),
        (vec![("api_upstream", s("https://x/../y"))], "path"),
        (vec![("api_upstream", s("not a url"))], "https://"),
        (vec![("upstream_ca_file", s("ca.pem"))], "absolute"),
        (vec![("api_auth", s("basic"))], "\"bearer\""),
        (vec![("credential_mode", s("vault"))], "\"broker\""),
        (
            vec![("base_url_env", strs(&["lower"]))],
            "environment variable",
        ),
        (vec![("base_url_path", s("v1 x"))], "/v1"),
        (vec![("credentials", strs(&[]))], "key variable"),
        (vec![("api_paths", strs(&["v1"]))], "path prefix"),
        (
            vec![("api_paths", strs(&["/v1/messages/../files"]))],
            "dot segment",
        ),
        (
            vec![("api_paths", strs(&["/v1/%6Dodels"]))],
            "\"/v1/models\"",
        ),
    ];
    for (fields, fix) in cases {
        let err = with_provider("openai", fields).unwrap_err().to_string();
        assert!(err.contains("provider \"openai\""), "{err}");
        assert!(err.contains(fix), "{err} should say {fix}");
    }
}
