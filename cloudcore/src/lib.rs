//! kedge cloudcore: the controller in the central cluster.
//!
//! - `cli`: the command line (`standalone`, `run`, `config`, `completions`).
//! - `config`: typed, layered configuration (defaults ← TOML file ← environment ← flags),
//!   validated before anything binds a port.
//! - `telemetry`: tracing (text or JSON) and the Prometheus `/metrics` + health endpoint.
//! - `standalone`: the embedded API server plus everything `run` does, on one machine.
//! - `crds`: kedge's CRDs, compiled in from `deploy/crds/`.
//! - `control`: what `run` and `standalone` both start (caches, bootstrap, hub, lifecycle).
//! - `edge`: the watch caches: what each edge node should hold, and per-node changes.
//! - `join`: bootstrap (`GET /ca.crt`, `POST /join`), the hub's TLS config, revocation.
//! - `nodeca`: the node CA (Secret `kedge-system/kedge-node-ca`) and certificate minting.
//! - `token`: join tokens (`K10<ca-hash>::<id>.<secret>`), stored hashed as Secrets.
//! - `hub`: CloudHub — the TLS port for bootstrap and the edge WebSocket, per-node sessions.
//! - `lifecycle`: Node + Lease of connected edges, the node-lifecycle controller emulation.
//! - `nodes`: `cloudcore nodes`, the operator's view of edge nodes.

pub mod cli;
pub mod config;
pub mod control;
pub mod crds;
pub mod edge;
pub mod hub;
pub mod join;
pub mod lifecycle;
pub mod nodeca;
pub mod nodes;
pub mod standalone;
pub mod telemetry;
pub mod token;
pub mod webhook;
