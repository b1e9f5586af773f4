use std::sync::Arc;

use rmpv::Value;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::engine::fake::FakeEngine;

/// The plugin config of `fields` (msgpack, as Nomad sends it), with its data dir in `data_dir`.
fn plugin_config(data_dir: &Path, mut fields: Vec<(Value, Value)>) -> PluginConfig {
    fields.push((
        Value::from("data_dir"),
        Value::from(data_dir.to_str().unwrap()),
    ));
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &Value::Map(fields)).unwrap();
    crate::config::decode_plugin_config(&bytes).unwrap()
}

/// `provider "openai" { upstream_ca_file = path }`.
fn openai_ca_file(path: &str) -> Vec<(Value, Value)> {
    vec![(
        Value::from("provider"),
        Value::Map(vec![(
            Value::from("openai"),
            Value::Map(vec![(Value::from("upstream_ca_file"), Value::from(path))]),
        )]),
    )]
}

#[tokio::test]
async fn the_plugin_core_is_built_over_the_given_engine_without_calling_it() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeEngine::new();
    let wiring = Wiring::in_process(Arc::new(fake.clone()), vec![]);
    let shutdown = CancellationToken::new();
    let config = plugin_config(dir.path(), vec![]);
    let core = wiring
        .plugin_core(config, None, EventBus::default(), &shutdown)
        .unwrap();
    assert!(core.tasks().is_empty());
    // Building starts nothing: the warm pool fills only once the driver starts the background.
    assert_eq!(fake.calls(), vec![]);
    shutdown.cancel();
}

#[tokio::test]
async fn a_broker_that_cannot_read_its_ca_file_fails_in_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let config = plugin_config(dir.path(), openai_ca_file(missing.to_str().unwrap()));
    let wiring = Wiring::in_process(Arc::new(FakeEngine::new()), vec![]);
    let shutdown = CancellationToken::new();
    let err = wiring
        .plugin_core(config.clone(), None, EventBus::default(), &shutdown)
        .err()
        .expect("a CA file that does not exist is refused");
    assert!(matches!(err, AssemblyError::Broker(_)), "{err:?}");
    let words = format!(
        "provider \"openai\": cannot read upstream_ca_file {}",
        missing.display()
    );
    assert!(err.to_string().starts_with(&words), "{err}");
    // SetConfig says where the setting is; `polydev run` (its own flags) does not.
    let status = crate::driver::status::from_assembly(&err);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(status.message(), format!("plugin config: {err}"));
    let err = Wiring::operator_run()
        .operator_core(config, dir.path(), Duration::from_secs(60), &shutdown)
        .err()
        .expect("the same config fails `polydev run` too");
    assert!(err.to_string().starts_with(&words), "{err}");
}

#[tokio::test]
async fn without_a_vault_block_no_vault_is_connected() {
    let dir = tempfile::tempdir().unwrap();
    let config = plugin_config(dir.path(), vec![]);
    let wiring = Wiring::in_process(Arc::new(FakeEngine::new()), vec![]);
    let vault = wiring
        .connect_vault(&config, CancellationToken::new())
        .await
        .unwrap();
    assert!(vault.is_none());
}

#[test]
fn log_state_lives_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let config = plugin_config(dir.path(), vec![]);
    assert_eq!(log_state_dir(&config), dir.path().join("logs"));
}
