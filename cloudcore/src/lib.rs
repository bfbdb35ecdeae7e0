//! kedge cloudcore: the controller in the central cluster.
//!
//! - `cli`: the command line (`standalone`, `run`, `config`, `completions`).
//! - `config`: typed, layered configuration (defaults ← TOML file ← environment ← flags),
//!   validated before anything binds a port.
//! - `telemetry`: tracing (text or JSON) and the Prometheus `/metrics` + health endpoint.
//! - `standalone`: the embedded API server plus everything `run` does, on one machine.
//! - `crds`: kedge's CRDs, compiled in from `deploy/crds/`.

pub mod cli;
pub mod config;
pub mod crds;
pub mod standalone;
pub mod telemetry;
