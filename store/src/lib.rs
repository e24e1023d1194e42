//! eastwall's central store: policy for every node in one place, on etcd.
//!
//! - [`layout`]: where everything is, under one prefix;
//! - [`snapshot`]: the configuration values (registry head, one value per workload, policy),
//!   built from files, validated together, hashed (pure);
//! - [`history`]: versions, changes between snapshots, replay (pure);
//! - [`etcd`]: the client: read the configuration in force, apply guarded by the version
//!   read, history, rollback, node status;
//! - [`follow`]: following the version in force (reconnect, back off, catch up);
//! - [`status`]: a node's state against the version in force (pure).

pub mod etcd;
pub mod follow;
pub mod history;
pub mod layout;
pub mod snapshot;
pub mod status;

pub use crate::etcd::{ApplyError, Current, Store, StoreSpec};
pub use crate::history::{Change, Version};
pub use crate::layout::Keys;
pub use crate::snapshot::{Part, Snapshot, Validated};
pub use crate::status::NodeState;
pub use etcd_client;
