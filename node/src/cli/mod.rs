//! The `eastwall` command's families, one module each; every one is a thin layer over the
//! libraries (`eastwall_node` for the daemon and the CA, `eastwall_policy`, `eastwall_ids`).

pub(crate) mod ca;
pub(crate) mod demo;
pub(crate) mod flows;
pub(crate) mod ids;
pub(crate) mod node;
pub(crate) mod observe;
pub(crate) mod policy;
pub(crate) mod store;
