//! Identity types for eastwall.
//!
//! A connection has a *source* and a *destination*; each is known to eastwall by what it can
//! prove. Today that is a workload from the registry located by address; the tunnel adds SPIFFE
//! identities taken from verified X.509 certificates, and the directory adds users and groups.
//! This crate owns the vocabulary for those identities ([`SpiffeId`]) and reads them from
//! certificates ([`spiffe_id_from_der`], [`validity_from_der`]). The [`directory`] module maps
//! a user name to its groups (LDAP / Active Directory, a static file, and a cache in front of
//! either). [`socket_owner`] finds the local user behind a connection the host itself made (socket
//! owner uid by netlink `sock_diag`, name by NSS). The crate knows nothing about policy, which
//! consumes these types.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cert;
pub mod directory;
pub mod socket_owner;
mod spiffe;

pub use cert::{CertIdentityError, spiffe_id_from_der, validity_from_der};
pub use directory::{
    CacheConfig, CachedDirectory, DirectoryError, DirectoryMetrics, GroupDirectory, Groups,
    LdapConfig, LdapDirectory, StaticDirectory,
};
pub use socket_owner::{SocketOwner, SocketOwnerError, tcp_socket_owner, user_name};
pub use spiffe::{SpiffeId, SpiffeIdError};
