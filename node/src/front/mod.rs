//! Where connections enter the pipeline: [`capture`] (transparent listeners, and the
//! spoofing attempts capture dropped) and [`tunnel`] (streams from other nodes). Each turns
//! what it accepted into two ends, plans, and refuses or carries (`crate::conn`).

pub(crate) mod capture;
pub(crate) mod tunnel;
