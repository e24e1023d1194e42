//! Where connections enter the pipeline: [`capture`] (transparent TCP listeners, and the
//! spoofing attempts capture dropped), [`udp`] (transparent UDP listeners and the session
//! table), [`packets`] (the first packets of other protocols' flows, queued by the kernel)
//! and [`tunnel`] (streams from other nodes, TCP or UDP). Each turns what it accepted
//! into two ends, plans, and refuses or carries (`crate::conn`).

pub(crate) mod capture;
pub(crate) mod packets;
pub(crate) mod tunnel;
pub(crate) mod udp;
