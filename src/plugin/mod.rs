//! The go-plugin server side, as Nomad's plugin loader expects it (nomad-protocol.md §1).
//!
//! Job: turn this process into a go-plugin gRPC plugin: check the environment, bind a unix
//! socket, print the one handshake line on stdout, serve the driver's gRPC routes together with
//! go-plugin's controller, stdio and health services, and shut down promptly on request.
//!
//! Invariants:
//! - Generic: nothing here names a Nomad driver type; the driver layer hands [`serve`] its
//!   services as [`tonic::service::Routes`] and holds child tokens of the shutdown token.
//! - stdout carries exactly one line, the handshake, and only once the socket accepts
//!   connections.
//! - One [`tokio_util::sync::CancellationToken`] governs shutdown; `GRPCController/Shutdown` and
//!   SIGTERM cancel it, SIGINT is ignored, closed client connections are not a reason to stop.
//!
//! Modules: [`handshake`] (pure env and line logic), [`socket`] (bind, group, cleanup),
//! [`services`] (go-plugin's gRPC services), [`signals`] (SIGINT/SIGTERM policy), and the server
//! loop.

pub mod handshake;
mod server;
pub mod services;
pub mod signals;
pub mod socket;

pub use server::{DRAIN_TIMEOUT, PluginError, serve, serve_with};
