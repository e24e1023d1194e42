//! Where connections enter the pipeline: [`capture`] (transparent TCP listeners, and the
//! spoofing attempts capture dropped), [`udp`] (transparent UDP listeners and the session
//! table), [`packets`] (the first packets of other protocols' flows, queued by the kernel)
//! and [`tunnel`] (streams from other nodes, TCP or UDP). Each turns what it accepted
//! into two ends, plans, and refuses or carries (`crate::conn`).

pub(crate) mod capture;
pub(crate) mod packets;
pub(crate) mod tunnel;
pub(crate) mod udp;

/// The size of the future an entry point's connection task runs, without calling it: the
/// per-connection state the `capture` and `tunnel` tests hold to a budget.
#[cfg(test)]
pub(crate) mod future_size {
    pub(crate) fn of4<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    pub(crate) fn of5<A, B, C, D, E, F: Future>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
}
