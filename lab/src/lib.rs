//! eastwall's test lab and demo: a private cloud on one machine for `eastwall demo` and the
//! end-to-end tests. It owns the namespaces lab ([`Lab`]: hosts and workloads as Linux
//! namespaces on a bridged LAN, nodes and the CA service started on them), a throwaway
//! OpenLDAP server ([`slapd`]), a recording HTTP server for workloads ([`http_server`]), and
//! the demo's scenes ([`demo`], run by the `eastwall-demo` binary that `eastwall demo` execs).
//! It needs root, and drives the real `eastwall` binary and real processes (`ip`, `unshare`,
//! `nsenter`, `slapd`) exactly as an operator would; it does not link the node's library.
#![forbid(unsafe_code)]

pub mod browser;
pub mod console;
pub mod demo;
pub mod etcd;
pub mod http_server;
mod lab;
pub mod slapd;

pub use lab::{
    CaHandle, DnsAnswer, Host, LAB_CA_PORT, LAB_CERT_TTL, Lab, NodeHandle, Outcome, Probe,
    UdpProbe, Workload, enter_netns, in_netns,
};
