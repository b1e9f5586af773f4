//! polydev: a Nomad task driver for LLM coding CLIs.
pub mod logging;
pub mod plugin;
pub mod runtime;
#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/protos.rs"));
}
