//! The eastwall node: everything that touches the host.
//!
//! Data path of one connection (see `docs/ARCHITECTURE.md`):
//! 1. [`capture`] installs one nftables table (TPROXY) and policy routing, so TCP connections
//!    of this host's workloads land on transparent listeners: outbound ones (from workload
//!    interfaces, optionally the host's own processes) on 15001, inbound ones (for local
//!    workloads) on 15006. Without a listener the table drops them: fail closed.
//! 2. [`proxy`] accepts, recovers the original destination from the socket, finds both ends in
//!    the registry, asks the pure `eastwall_policy` engine, and either resets the connection or
//!    connects to the original destination from the workload's own address and relays.
//! 3. [`flow`] writes a Suricata-EVE-shaped record per connection; [`metrics`] counts; [`admin`]
//!    serves `/healthz`, `/metrics`, `/flows` on loopback.
//!
//! [`identity`] holds the local workloads' certificates, from files or from the CA service
//! ([`ca`], which is also `eastwall ca init|issue|serve`).

pub mod admin;
pub mod ca;
pub mod capture;
pub mod config;
pub mod directory;
pub mod flow;
pub mod identity;
pub mod ids;
mod l7;
pub mod live;
pub mod metrics;
pub mod proxy;
mod relay;
pub mod reload;
pub mod run;
pub mod sniff;
pub mod state;
pub mod tunnel;
