//! kedge edgecore: the agent on an edge gateway.
//!
//! Where to start reading:
//! - [`store`]: the sled store (the only module that touches sled), with
//!   move-aside recovery and the kill -9 torture.
//! - [`meta`]: MetaManager, the edge's cache of everything the cloud sent
//!   (one writer task, many cheap readers, group commit).
//! - [`outbox`]: the durable, coalescing queue of upstream writes.
//! - [`hub`]: EdgeHub, the link to cloudcore ([`hub::link`] is the pure
//!   protocol state machine, the rest is IO).
//! - [`node`]: what the edge reports about itself (HELLO facts, Node status,
//!   Lease renewals).
//! - [`join`]: `edgecore join` / `reset` (token, CA pinning, CSR, files);
//!   [`service`] its systemd unit (`--install-service`).
//! - [`runtime`]: runs the node's pods through CRI (containerd), offline too.
//! - [`run`]: wires everything for `edgecore run`; [`cli`] is the command line.
//! - [`memory`]: gives back the pages of code run only at start-up.
//! - [`config`], [`pki`], [`telemetry`], [`status`], [`backoff`]: the rest.

pub mod backoff;
pub mod bus;
pub mod cli;
pub mod config;
pub mod driver;
pub mod hub;
pub mod join;
pub mod memory;
pub mod meta;
pub mod node;
pub mod outbox;
pub mod pki;
pub mod run;
pub mod runtime;
pub mod satoken;
pub mod service;
pub mod status;
pub mod store;
pub mod telemetry;
