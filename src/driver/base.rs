//! `BasePlugin`: PluginInfo, ConfigSchema, SetConfig.

use tonic::{Request, Response, Status};

use super::{PLUGIN_NAME, PolydevDriver, status};
use crate::config;
use crate::pb::hashicorp::nomad::plugins::base::proto::{
    ConfigSchemaRequest, ConfigSchemaResponse, PluginInfoRequest, PluginInfoResponse, PluginType,
    SetConfigRequest, SetConfigResponse, base_plugin_server::BasePlugin,
};

/// The only driver API version Nomad speaks (`drivers.ApiVersion010`).
pub const API_VERSION: &str = "0.1.0";

#[tonic::async_trait]
impl BasePlugin for PolydevDriver {
    async fn plugin_info(
        &self,
        _request: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        Ok(Response::new(PluginInfoResponse {
            r#type: PluginType::Driver as i32,
            plugin_api_versions: vec![API_VERSION.to_string()],
            plugin_version: env!("CARGO_PKG_VERSION").to_string(),
            name: PLUGIN_NAME.to_string(),
        }))
    }

    async fn config_schema(
        &self,
        _request: Request<ConfigSchemaRequest>,
    ) -> Result<Response<ConfigSchemaResponse>, Status> {
        Ok(Response::new(ConfigSchemaResponse {
            spec: Some(config::plugin_config_schema()),
        }))
    }

    async fn set_config(
        &self,
        request: Request<SetConfigRequest>,
    ) -> Result<Response<SetConfigResponse>, Status> {
        let request = request.into_inner();
        let config =
            config::decode_plugin_config(&request.msgpack_config).map_err(status::from_config)?;
        if !self.is_current(&request.msgpack_config) {
            self.check_task_user(&config).await?;
        }
        // Nomad's validation launch (no nomad_config) is killed right after SetConfig: it must
        // not log in (an AppRole secret id may allow one use) nor leave a token behind.
        let vault = if self.is_current(&request.msgpack_config) || request.nomad_config.is_none() {
            None
        } else {
            self.connect_vault(&config).await?
        };
        self.configure(&request.msgpack_config, config, vault)?;
        // Nomad's validation launch sends no nomad_config and is killed right after: it must not
        // touch containers. The long-lived instance sends it (and opens Fingerprint, which also
        // starts the background work, for agents that do not).
        if request.nomad_config.is_some() {
            self.core()?.start_background();
        }
        tracing::info!(
            api_version = %request.plugin_api_version,
            validation_only = request.nomad_config.is_none(),
            "plugin configured"
        );
        Ok(Response::new(SetConfigResponse {}))
    }
}
