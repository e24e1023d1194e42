//! Identity types for eastwall.
//!
//! A connection has a *source* and a *destination*; each is known to eastwall by what it can
//! prove. Today that is a workload from the registry located by address; the tunnel adds SPIFFE
//! identities taken from verified X.509 certificates, and the directory adds users and groups.
//! This crate owns the vocabulary for those identities ([`SpiffeId`]); it knows nothing about
//! policy, which consumes these types.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod spiffe;

pub use spiffe::{SpiffeId, SpiffeIdError};
